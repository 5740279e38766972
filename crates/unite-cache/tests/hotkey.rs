//! The `hotkey` feature: accesses feed the detector, and hot keys are refreshed ahead of
//! expiry even without `refresh_ahead`.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use unite_cache::{Cache, ManualClock};
use unite_hotkey::HotKeyDetector;

#[derive(Debug)]
struct Boom;
impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}
impl std::error::Error for Boom {}

fn counting(
    calls: &Arc<AtomicUsize>,
) -> impl FnOnce() -> std::future::Ready<Result<Option<u64>, Boom>> + Send + 'static {
    let calls = Arc::clone(calls);
    move || {
        let n = calls.fetch_add(1, Ordering::SeqCst) as u64 + 1;
        std::future::ready(Ok(Some(n)))
    }
}

#[tokio::test]
async fn hot_keys_are_recorded_and_refreshed_ahead() {
    let detector = HotKeyDetector::builder()
        .threshold_per_minute(NonZeroU64::new(20).unwrap())
        .build()
        .unwrap();
    let clock = ManualClock::starting_now();
    let cache = Cache::builder()
        .clock(Arc::new(clock.clone()))
        .ttl_jitter(0.0)
        .default_ttl(Duration::from_secs(100))
        .hotkeys(detector.clone())
        .build()
        .await
        .unwrap();
    let (hot, cold) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    for _ in 0..100 {
        assert_eq!(
            cache.get_or_load("hot", counting(&hot)).await.unwrap(),
            Some(1)
        );
    }
    assert_eq!(
        cache.get_or_load("cold", counting(&cold)).await.unwrap(),
        Some(1)
    );
    let top = detector.top(1);
    assert_eq!(top[0].key, "hot");
    assert!(cache.hotkeys().is_some());

    // Past 80 % of the lifetime: the hot key is served and refreshed, the cold one is not.
    clock.advance(Duration::from_secs(85));
    assert_eq!(
        cache.get_or_load("hot", counting(&hot)).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        cache.get_or_load("cold", counting(&cold)).await.unwrap(),
        Some(1)
    );
    let mut refreshed = false;
    for _ in 0..500 {
        if cache.get::<u64>("hot").await.unwrap() == Some(2) {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refreshed, "the hot key was refreshed in the background");
    assert_eq!(hot.load(Ordering::SeqCst), 2);
    assert_eq!(cold.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().loads.refreshes, 1);
}
