//! Saving a hot-key detector's top keys (the `hotkey` feature), against a real Redis.

use std::time::Duration;

use unite_hotkey::HotKeyDetector;
use unite_testkit::TestRedis;
use unite_warm::{CancellationToken, HotKeyStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_the_hottest_keys_without_truncated_ones() {
    let redis = TestRedis::new().await;
    let detector = HotKeyDetector::builder().max_key_bytes(32).build().unwrap();
    let long = format!("session:{}", "z".repeat(64));
    for (key, n) in [("contact:1", 50), ("contact:2", 30), ("contact:3", 10)] {
        detector.record_n(key, n);
    }
    detector.record_n(&long, 40);

    let store = HotKeyStore::new(redis.client(), redis.key("hot"));
    assert_eq!(store.save_top(&detector, 10).await.unwrap(), 3);
    assert_eq!(
        store.load().await.unwrap(),
        ["contact:1", "contact:2", "contact:3"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saver_saves_once_more_at_shutdown() {
    let redis = TestRedis::new().await;
    let detector = HotKeyDetector::new();
    let store = HotKeyStore::new(redis.client(), redis.key("hot"));
    let shutdown = CancellationToken::new();
    // A period far beyond the test: only the shutdown save can write.
    let saver = store.spawn_saver(
        detector.clone(),
        5,
        Duration::from_secs(3600),
        shutdown.clone(),
    );
    detector.record_n("user:9", 12);
    detector.record_n("user:4", 3);
    assert!(store.load().await.unwrap().is_empty());
    shutdown.cancel();
    assert_eq!(saver.await.unwrap().unwrap(), 2);
    assert_eq!(store.load().await.unwrap(), ["user:9", "user:4"]);
}
