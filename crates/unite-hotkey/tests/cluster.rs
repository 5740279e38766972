//! The cluster-wide view against the real Redis (`REDIS_URL`, default the local server), with two
//! detector instances. Each test has its own key prefix; its keys are deleted at the end. When
//! Redis does not answer, the test fails and says which URL it tried and how to start it.

use std::time::Duration;

use fred::prelude::*;
use unite_hotkey::cluster::{ClusterConfig, ClusterHotKey, ClusterView};
use unite_hotkey::{HotKeyDetector, ManualClock};
use unite_testkit::TestRedis;

/// A wide sketch and a fixed seed: the test's few keys never share buckets, so its counts are
/// exact and repeatable (with a random seed a collision could, rarely, lose one).
fn detector() -> HotKeyDetector {
    HotKeyDetector::builder()
        .clock(ManualClock::new())
        .width(1 << 16)
        .hash_seed(0x5eed_0001)
        .build()
        .expect("valid configuration")
}

fn record(d: &HotKeyDetector, key: &str, times: u32) {
    d.record_n(key, times);
}

fn entry(key: &str, per_minute: u64, instances: usize) -> (String, u64, usize) {
    (key.to_owned(), per_minute, instances)
}

fn flat(list: &[ClusterHotKey]) -> Vec<(String, u64, usize)> {
    list.iter()
        .map(|h| (h.key.clone(), h.per_minute, h.instances))
        .collect()
}

async fn views(redis: &TestRedis) -> (HotKeyDetector, ClusterView, HotKeyDetector, ClusterView) {
    let (a, b) = (detector(), detector());
    let config = |id: &str| {
        ClusterConfig::with_prefix(redis.prefix())
            .instance_id(id)
            .ttl(Duration::from_secs(30))
    };
    let view_a = ClusterView::new(redis.client(), a.clone(), config("instance-a")).expect("valid");
    let view_b =
        ClusterView::new(redis.new_client().await, b.clone(), config("instance-b")).expect("valid");
    (a, view_a, b, view_b)
}

#[tokio::test]
async fn two_instances_publish_and_both_read_the_merged_list() {
    let redis = TestRedis::new().await;
    let (a, view_a, b, view_b) = views(&redis).await;
    assert!(view_a.own_key().starts_with(redis.prefix()));
    assert!(
        view_a.own_key().contains("{hotkeys}"),
        "one hash tag for every key"
    );

    record(&a, "contacts:1", 600);
    record(&a, "only-a", 300);
    record(&b, "contacts:1", 500);
    record(&b, "only-b", 900);
    assert_eq!(view_a.publish().await.expect("publish a"), 2);
    assert_eq!(view_b.publish().await.expect("publish b"), 2);

    let expected = vec![
        entry("contacts:1", 1100, 2),
        entry("only-b", 900, 1),
        entry("only-a", 300, 1),
    ];
    assert_eq!(flat(&view_a.merged(10).await.expect("merged")), expected);
    assert_eq!(flat(&view_b.merged(10).await.expect("merged")), expected);
    assert_eq!(
        flat(&view_a.merged(1).await.expect("merged")),
        expected[..1]
    );

    // Each published list carries the TTL.
    let client = redis.client();
    let pttl: i64 = client.pttl(view_a.own_key()).await.expect("pttl");
    assert!(pttl > 0 && pttl <= 30_000, "{pttl}");
    let pttl: i64 = client.pttl(view_a.index_key()).await.expect("pttl");
    assert!(pttl > 0 && pttl <= 30_000, "{pttl}");

    // A new publish replaces the instance's list; it does not add to it.
    record(&a, "only-a", 1000);
    view_a.publish().await.expect("publish a");
    let merged = flat(&view_b.merged(10).await.expect("merged"));
    assert_eq!(merged[0], entry("only-a", 1300, 1));
    assert!(merged.contains(&entry("contacts:1", 1100, 2)));

    // An instance that withdraws drops out of the merged list.
    view_b.withdraw().await.expect("withdraw");
    assert_eq!(
        flat(&view_a.merged(10).await.expect("merged")),
        vec![entry("only-a", 1300, 1), entry("contacts:1", 600, 1)]
    );

    view_a.withdraw().await.expect("withdraw");
    assert!(view_a.merged(10).await.expect("merged").is_empty());
    let left: i64 = client
        .exists(vec![view_a.own_key(), view_b.own_key()])
        .await
        .expect("exists");
    assert_eq!(left, 0, "withdrawn lists are deleted");
    let _: i64 = client.del(view_a.index_key()).await.expect("del");
}

#[tokio::test]
async fn an_expired_instance_is_pruned_by_readers() {
    let redis = TestRedis::new().await;
    let (a, view_a, b, view_b) = views(&redis).await;
    record(&a, "k", 10);
    record(&b, "k", 20);
    view_a.publish().await.expect("publish a");
    view_b.publish().await.expect("publish b");
    let client = redis.client();
    // Stand-in for b's list expiring (b stopped publishing): its sorted set is gone.
    let _: i64 = client.del(view_b.own_key()).await.expect("del");
    assert_eq!(
        flat(&view_a.merged(10).await.expect("merged")),
        vec![entry("k", 10, 1)]
    );
    let members: Vec<String> = client.smembers(view_a.index_key()).await.expect("smembers");
    assert_eq!(members, vec!["instance-a".to_owned()], "b's id was pruned");
    let _: i64 = client
        .del(vec![view_a.own_key(), view_a.index_key()])
        .await
        .expect("del");
}

#[tokio::test]
async fn the_background_task_publishes_periodically() {
    let redis = TestRedis::new().await;
    let d = detector();
    record(&d, "periodic", 42);
    let view = ClusterView::new(
        redis.client(),
        d.clone(),
        ClusterConfig::with_prefix(redis.prefix())
            .instance_id("bg")
            .publish_interval(Duration::from_millis(20)),
    )
    .expect("valid");
    let reader = view.clone();
    let task = view.spawn();
    // The first publish happens at once; later ones pick up new counts. Bounded polling for the
    // network round trips, not for any window.
    let mut seen = Vec::new();
    for _ in 0..200 {
        seen = flat(&reader.merged(10).await.expect("merged"));
        if seen == vec![entry("periodic", 42, 1)] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, vec![entry("periodic", 42, 1)]);
    record(&d, "periodic", 8);
    for _ in 0..200 {
        seen = flat(&reader.merged(10).await.expect("merged"));
        if seen == vec![entry("periodic", 50, 1)] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, vec![entry("periodic", 50, 1)]);
    task.abort();
    let _ = task.await;
    reader.withdraw().await.expect("withdraw");
    let _: i64 = redis.client().del(reader.index_key()).await.expect("del");
}

#[tokio::test]
async fn a_prefix_with_braces_is_refused() {
    let redis = TestRedis::new().await;
    let err = ClusterView::new(
        redis.client(),
        detector(),
        ClusterConfig::with_prefix("bad{tag}:"),
    )
    .expect_err("braces would break the hash tag");
    assert!(err.to_string().contains("prefix"), "{err}");
}
