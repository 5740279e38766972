//! Key lists, saved hot keys, failures and cancellation, against a real Redis.

mod support;

use std::collections::HashMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use fred::prelude::*;
use futures::StreamExt as _;
use unite_cache::Cache;
use unite_testkit::TestRedis;
use unite_warm::{
    BoxError, HotKeySource, HotKeyStore, KeyListSource, OpenedSource, Phase, SourceContext,
    WarmBatch, WarmError, WarmItem, WarmSource, Warmer,
};

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

fn user_keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user:{i}")).collect()
}

fn index(key: &str) -> usize {
    key.rsplit(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_run_reports_exactly_what_was_written() {
    let redis = TestRedis::new().await;
    let cache = support::cache(&redis, "cancel").await;
    let warmer = Warmer::builder(cache.clone())
        .batch_size(nz(10))
        .concurrency(nz(2))
        .max_items_per_second(NonZeroU32::new(2_000).unwrap())
        .build()
        .unwrap();
    let keys = user_keys(2_000);
    let source = KeyListSource::new(keys.clone(), |key: String| async move {
        Ok::<_, BoxError>(Some(format!("profile of {key}")))
    })
    .concurrency(nz(4));

    let handle = warmer.spawn(source);
    let mut progress = handle.progress();
    progress.changed().await.unwrap();
    progress.wait_for(|p| p.done > 0).await.unwrap();
    handle.cancel();
    let summary = handle.wait().await.unwrap();

    assert!(summary.cancelled, "{summary:?}");
    assert!(
        summary.written > 0 && summary.written < 2_000,
        "{summary:?}"
    );
    assert_eq!(summary.errors, 0);
    let redis_keys: Vec<String> = keys.iter().map(|k| cache.redis_key(k)).collect();
    let present = support::present(&redis.client(), &redis_keys).await;
    assert_eq!(
        present.iter().filter(|p| **p).count() as u64,
        summary.written
    );
    let last = progress.borrow().clone();
    assert_eq!(last.phase, Phase::Cancelled);
    assert_eq!(last.done, summary.written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_the_source_opens() {
    let redis = TestRedis::new().await;
    let cache = support::cache(&redis, "early").await;
    let cancel = unite_warm::CancellationToken::new();
    cancel.cancel();
    let handle = Warmer::new(cache).spawn_with_cancel(
        KeyListSource::new(["a"], |_k: String| async { Ok::<_, BoxError>(Some(1u8)) }),
        cancel,
    );
    let summary = handle.wait().await.unwrap();
    assert!(summary.cancelled);
    assert_eq!(summary.written, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_hot_key_list_warms_the_next_run() {
    let redis = TestRedis::new().await;
    let store = HotKeyStore::new(redis.client(), redis.key("hotkeys"));
    // Nothing saved yet: nothing to warm.
    assert!(store.load().await.unwrap().is_empty());

    // Run 1: the service saw these keys hot and saved them at shutdown.
    let hot: Vec<String> = (0..300).map(|i| format!("contact:{}", i * 7)).collect();
    assert_eq!(
        store
            .save(hot.iter().chain(hot.iter().take(5)))
            .await
            .unwrap(),
        300,
        "duplicates dropped"
    );
    let ttl: i64 = redis.client().pttl(store.redis_key()).await.unwrap();
    assert!(ttl > 0, "the saved list expires");

    // Run 2: a new cache (empty L1) and a new warmer load exactly those keys.
    let database: Arc<HashMap<String, String>> = Arc::new(
        (0..3_000)
            .map(|i| (format!("contact:{i}"), format!("Contact #{i}")))
            .collect(),
    );
    let loads = Arc::new(AtomicUsize::new(0));
    let cache = support::cache(&redis, "run2").await;
    let source = HotKeySource::new(store.clone(), {
        let database = Arc::clone(&database);
        let loads = Arc::clone(&loads);
        move |key: String| {
            let database = Arc::clone(&database);
            loads.fetch_add(1, Ordering::Relaxed);
            async move { Ok::<_, BoxError>(database.get(&key).cloned()) }
        }
    })
    .ttl(Duration::from_secs(600));
    let summary = Warmer::new(cache.clone()).run(source).await.unwrap();
    assert_eq!(summary.source, "hot-keys");
    assert_eq!(summary.written, 300);
    assert_eq!(summary.total, Some(300));
    assert_eq!(loads.load(Ordering::Relaxed), 300, "one load per saved key");

    let before = cache.stats();
    let values: Vec<Option<String>> = cache.get_many(&hot).await.unwrap();
    for (key, value) in hot.iter().zip(&values) {
        assert_eq!(value.as_deref(), database.get(key).map(String::as_str));
    }
    let after = cache.stats();
    assert_eq!(after.l1.hits - before.l1.hits, 300);
    assert_eq!(after.l1.misses, before.l1.misses);
    let pattern = format!("{}*", cache.namespace());
    assert_eq!(
        support::scan(&redis.client(), &pattern).await.len(),
        300,
        "only the hot keys"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hot_key_store_keeps_its_limits_and_refuses_foreign_values() {
    let redis = TestRedis::new().await;
    let store = HotKeyStore::new(redis.client(), redis.key("hk"))
        .max_keys(nz(3))
        .without_ttl();
    assert_eq!(store.save(["a", "", "b", "a", "c", "d"]).await.unwrap(), 3);
    assert_eq!(store.load().await.unwrap(), ["a", "b", "c"]);
    let ttl: i64 = redis.client().pttl(store.redis_key()).await.unwrap();
    assert_eq!(ttl, -1);

    let _: () = redis
        .client()
        .set(store.redis_key(), "not json", None, None, false)
        .await
        .unwrap();
    let err = store.load().await.unwrap_err();
    assert!(matches!(err, WarmError::StoreFormat { .. }), "{err:?}");
    // A source over it fails as a whole, with the clear error.
    let cache = support::cache(&redis, "foreign").await;
    let source = HotKeySource::new(store.clone(), |_k: String| async {
        Ok::<_, BoxError>(Some(1u8))
    });
    let err = Warmer::new(cache).run(source).await.unwrap_err();
    assert!(matches!(err, WarmError::Source { .. }), "{err:?}");
    assert!(err.to_string().contains("hot-keys"), "{err}");

    store.clear().await.unwrap();
    assert!(store.load().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_errors_fail_their_batch_and_the_rest_is_written() {
    let redis = TestRedis::new().await;
    let cache = support::cache(&redis, "errors").await;
    let keys = user_keys(200);
    let source = KeyListSource::new(keys.clone(), |key: String| async move {
        match index(&key) {
            i if i % 50 == 7 => Err(format!("backend refused {key}")),
            i if i % 50 == 9 => Ok(None),
            i => Ok(Some(i as u64)),
        }
    });
    let warmer = Warmer::builder(cache.clone())
        .batch_size(nz(20))
        .build()
        .unwrap();
    let summary = warmer.run(source).await.unwrap();
    assert_eq!(summary.written, 192, "{summary:?}");
    assert_eq!(summary.errors, 4);
    assert_eq!(summary.skipped, 4);
    assert_eq!(summary.batches, 10);
    assert!((1..=4).contains(&summary.failed_batches), "{summary:?}");
    assert!(
        summary
            .error_samples
            .contains(&"user:57: backend refused user:57".to_owned()),
        "{:?}",
        summary.error_samples
    );
    assert!(!summary.cancelled);

    let redis_keys: Vec<String> = keys.iter().map(|k| cache.redis_key(k)).collect();
    let present = support::present(&redis.client(), &redis_keys).await;
    for (i, p) in present.iter().enumerate() {
        assert_eq!(*p, i % 50 != 7 && i % 50 != 9, "user:{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_cache_refuses_is_written_item_by_item() {
    let redis = TestRedis::new().await;
    let cache = Cache::builder()
        .redis_url(redis.url())
        .namespace(support::namespace(&redis, "refused"))
        .max_value_bytes(256)
        .command_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let keys = user_keys(50);
    let source = KeyListSource::new(keys.clone(), |key: String| async move {
        let size = if index(&key) == 13 { 4096 } else { 10 };
        Ok::<_, BoxError>(Some("v".repeat(size)))
    });
    let summary = Warmer::builder(cache.clone())
        .batch_size(nz(25))
        .build()
        .unwrap()
        .run(source)
        .await
        .unwrap();
    assert_eq!(summary.written, 49);
    assert_eq!(summary.errors, 1);
    assert_eq!(summary.failed_batches, 1);
    assert!(
        summary.error_samples[0].starts_with("user:13: value too large"),
        "{:?}",
        summary.error_samples
    );
    let redis_keys: Vec<String> = keys.iter().map(|k| cache.redis_key(k)).collect();
    let present = support::present(&redis.client(), &redis_keys).await;
    assert_eq!(present.iter().filter(|p| **p).count(), 49);
    assert!(!present[13]);
}

/// Yields one good batch, then fails.
struct FailsAfterOneBatch;

impl WarmSource<u32> for FailsAfterOneBatch {
    fn name(&self) -> String {
        "flaky".into()
    }

    async fn open(self, _ctx: SourceContext) -> Result<OpenedSource<u32>, BoxError> {
        let first = (0..40)
            .map(|i| WarmItem::new(format!("item:{i}"), i, Duration::from_secs(60)))
            .collect();
        let batches = futures::stream::iter([
            Ok(WarmBatch::new(first)),
            Err::<WarmBatch<u32>, BoxError>("the upstream went away".into()),
        ])
        .boxed();
        Ok(OpenedSource::new(None, batches))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_failing_mid_run_reports_what_was_written() {
    let redis = TestRedis::new().await;
    let cache = support::cache(&redis, "flaky").await;
    let err = Warmer::builder(cache.clone())
        .concurrency(nz(1))
        .build()
        .unwrap()
        .run(FailsAfterOneBatch.boxed())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`flaky` failed"), "{err}");
    assert!(err.to_string().contains("the upstream went away"), "{err}");
    let partial = err.partial_summary().expect("a partial summary");
    let keys: Vec<String> = (0..40)
        .map(|i| cache.redis_key(&format!("item:{i}")))
        .collect();
    let present = support::present(&redis.client(), &keys).await;
    assert_eq!(
        present.iter().filter(|p| **p).count() as u64,
        partial.written
    );
    // One write in flight at most: the first batch was written before the failure was read.
    assert_eq!(partial.written, 40, "{partial:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_while_the_pressure_signal_is_on() {
    let redis = TestRedis::new().await;
    let cache = support::cache(&redis, "pressure").await;
    let busy = Arc::new(AtomicBool::new(true));
    let warmer = Warmer::builder(cache)
        .batch_size(nz(5))
        .throttle_poll(Duration::from_millis(2))
        .throttle_when({
            let busy = Arc::clone(&busy);
            move || busy.load(Ordering::Relaxed)
        })
        .build()
        .unwrap();
    let handle = warmer.spawn(KeyListSource::new(user_keys(20), |k: String| async move {
        Ok::<_, BoxError>(Some(k))
    }));
    let mut progress = handle.progress();
    let seen = progress
        .wait_for(|p| p.phase == Phase::Throttled)
        .await
        .unwrap()
        .clone();
    assert_eq!(seen.done, 0);
    assert!(!handle.is_done());
    busy.store(false, Ordering::Relaxed);
    let summary = handle.wait().await.unwrap();
    assert_eq!(summary.written, 20);
    assert!(summary.throttled > Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warms_an_in_memory_cache_and_skips_expired_items() {
    let cache = Cache::builder().build().await.unwrap();
    struct Mixed;
    impl WarmSource<u8> for Mixed {
        fn name(&self) -> String {
            "mixed".into()
        }
        async fn open(self, _ctx: SourceContext) -> Result<OpenedSource<u8>, BoxError> {
            let items = vec![
                WarmItem::new("live", 1, Duration::from_secs(30)),
                WarmItem::new("expired", 2, Duration::ZERO),
                WarmItem::with_default_ttl("default", 3),
            ];
            Ok(OpenedSource::new(
                Some(3),
                futures::stream::iter([Ok(WarmBatch::new(items))]).boxed(),
            ))
        }
    }
    let handle = Warmer::new(cache.clone()).spawn(Mixed);
    let progress = handle.progress();
    let summary = handle.wait().await.unwrap();
    assert_eq!((summary.written, summary.skipped), (2, 1));
    assert_eq!(progress.borrow().phase, Phase::Done);
    assert_eq!(progress.borrow().fraction(), Some(1.0));
    assert_eq!(cache.get::<u8>("live").await.unwrap(), Some(1));
    assert_eq!(cache.get::<u8>("default").await.unwrap(), Some(3));
    assert_eq!(cache.get::<u8>("expired").await.unwrap(), None);
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["written"], 2);
    assert_eq!(json["cancelled"], false);
    assert!(json["elapsed_ms"].is_u64());
}
