//! L1-only behaviour (no Redis): round trips, expiry, negative caching, refresh-ahead,
//! stale-if-error, single-flight, bad input. Time is driven by a `ManualClock` wherever the
//! behaviour is about entry lifetimes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use unite_cache::{Cache, CacheStats, Error, ManualClock, Provider, Status};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Contact {
    id: u64,
    name: String,
    tags: Vec<String>,
}

fn contact(id: u64) -> Contact {
    Contact {
        id,
        name: format!("contact {id}"),
        tags: vec!["vip".into(), format!("t{id}")],
    }
}

#[derive(Debug)]
struct Boom;
impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("backend exploded")
    }
}
impl std::error::Error for Boom {}

async fn memory_cache(clock: &ManualClock) -> Cache {
    Cache::builder()
        .clock(Arc::new(clock.clone()))
        .ttl_jitter(0.0)
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn l1_only_round_trips_and_reports_in_memory() {
    let cache = Cache::builder().build().await.unwrap();
    assert_eq!(cache.provider(), Provider::InMemory);
    assert_eq!(cache.status(), Status::Healthy);
    assert!(cache.breaker().is_none());

    let ttl = Duration::from_secs(60);
    assert_eq!(cache.get::<Contact>("c:1").await.unwrap(), None);
    cache.set("c:1", &contact(1), ttl).await.unwrap();
    assert_eq!(cache.get::<Contact>("c:1").await.unwrap(), Some(contact(1)));

    cache
        .set_many(&[("c:2", contact(2)), ("c:3", contact(3))], ttl)
        .await
        .unwrap();
    let many: Vec<Option<Contact>> = cache
        .get_many(&["c:1", "c:2", "nope", "c:3"])
        .await
        .unwrap();
    assert_eq!(
        many,
        vec![Some(contact(1)), Some(contact(2)), None, Some(contact(3))]
    );

    cache.delete("c:2").await.unwrap();
    assert_eq!(cache.get::<Contact>("c:2").await.unwrap(), None);
    cache.delete_many(&["c:1", "c:3"]).await.unwrap();
    assert_eq!(cache.get::<Contact>("c:1").await.unwrap(), None);

    let loaded = cache
        .get_or_load("c:9", || async { Ok::<_, Boom>(Some(contact(9))) })
        .await
        .unwrap();
    assert_eq!(loaded, Some(contact(9)));
    assert_eq!(cache.get::<Contact>("c:9").await.unwrap(), Some(contact(9)));

    let stats = cache.stats();
    assert_eq!(stats.writes, 3);
    assert_eq!(stats.deletes, 3);
    assert_eq!(stats.loads.loads, 1);
    assert_eq!(stats.total_operations, stats.hits + stats.misses);
    assert!(stats.l2.is_none());
    assert!(stats.circuit_state.is_none());
}

#[tokio::test]
async fn stats_serialize_in_the_health_shape() {
    let cache = Cache::builder().build().await.unwrap();
    cache
        .set("k", &1_u32, Duration::from_secs(5))
        .await
        .unwrap();
    let _ = cache.get::<u32>("k").await.unwrap();
    let _ = cache.get::<u32>("missing").await.unwrap();
    cache.run_pending_tasks().await;
    let stats: CacheStats = cache.stats();
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["status"], "healthy");
    assert_eq!(json["provider"], "in-memory");
    assert_eq!(json["hits"], 1);
    assert_eq!(json["misses"], 1);
    assert_eq!(json["total_operations"], 2);
    assert_eq!(json["hit_rate"], 0.5);
    assert_eq!(json["l1"]["hits"], 1);
    assert_eq!(json["l1"]["entries"], 1);
    assert!(json["l1"]["bytes"].as_u64().unwrap() > 0);
    assert!(json["l2"].is_null());
    assert!(json["circuit_state"].is_null());
}

#[tokio::test]
async fn l1_entries_expire_after_their_ttl() {
    // moka's clock cannot be injected: a short TTL and a short sleep.
    let cache = Cache::builder().ttl_jitter(0.0).build().await.unwrap();
    cache
        .set("short", &"v".to_owned(), Duration::from_millis(50))
        .await
        .unwrap();
    cache
        .set("long", &"v".to_owned(), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(cache.get::<String>("short").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(150)).await;
    cache.run_pending_tasks().await;
    assert_eq!(cache.get::<String>("short").await.unwrap(), None);
    assert!(cache.get::<String>("long").await.unwrap().is_some());
}

#[tokio::test]
async fn l1_time_to_idle_evicts_unread_entries() {
    let cache = Cache::builder()
        .l1_tti(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    cache
        .set("idle", &1_u8, Duration::from_secs(60))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(cache.get::<u8>("idle").await.unwrap(), None);
}

#[tokio::test]
async fn logical_expiry_follows_the_injected_clock() {
    let clock = ManualClock::starting_now();
    let cache = memory_cache(&clock).await;
    cache
        .set("k", &7_u64, Duration::from_secs(30))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(29));
    assert_eq!(cache.get::<u64>("k").await.unwrap(), Some(7));
    clock.advance(Duration::from_secs(1));
    assert_eq!(cache.get::<u64>("k").await.unwrap(), None);
}

#[tokio::test]
async fn l1_is_bounded_by_weighted_bytes() {
    let cache = Cache::builder()
        .l1_max_bytes(64 * 1024)
        .build()
        .await
        .unwrap();
    let value = "x".repeat(1024);
    for i in 0..500 {
        cache
            .set(&format!("k{i}"), &value, Duration::from_secs(60))
            .await
            .unwrap();
    }
    cache.run_pending_tasks().await;
    let stats = cache.stats();
    assert!(stats.l1.bytes <= 64 * 1024, "{} bytes held", stats.l1.bytes);
    assert!(stats.l1.entries < 500);
    assert!(stats.l1.evictions > 0);
}

#[tokio::test]
async fn ttl_jitter_spreads_expiry() {
    let clock = ManualClock::starting_now();
    let cache = Cache::builder()
        .clock(Arc::new(clock.clone()))
        .ttl_jitter(0.5)
        .build()
        .await
        .unwrap();
    for i in 0..200 {
        cache
            .set(&format!("k{i}"), &i, Duration::from_secs(100))
            .await
            .unwrap();
    }
    // Jittered TTLs lie in 50..=100 s: at 49 s all live, at 75 s some are gone, at 100 s all.
    clock.advance(Duration::from_secs(49));
    let alive = |cache: Cache| async move {
        let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        let got: Vec<Option<i32>> = cache.get_many(&keys).await.unwrap();
        got.iter().filter(|v| v.is_some()).count()
    };
    assert_eq!(alive(cache.clone()).await, 200);
    clock.advance(Duration::from_secs(26));
    let at_75 = alive(cache.clone()).await;
    assert!(at_75 > 0 && at_75 < 200, "{at_75} alive at 75 s");
    clock.advance(Duration::from_secs(25));
    assert_eq!(alive(cache).await, 0);
}

#[tokio::test]
async fn not_found_is_cached_for_the_negative_ttl() {
    let clock = ManualClock::starting_now();
    let cache = Cache::builder()
        .clock(Arc::new(clock.clone()))
        .negative_ttl(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let load = |calls: Arc<AtomicUsize>| async move {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok::<Option<Contact>, Boom>(None)
    };
    for _ in 0..3 {
        let c = Arc::clone(&calls);
        assert_eq!(
            cache.get_or_load("ghost", move || load(c)).await.unwrap(),
            None
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.get::<Contact>("ghost").await.unwrap(), None);
    assert!(cache.stats().negative_hits >= 2);

    clock.advance(Duration::from_secs(11));
    let c = Arc::clone(&calls);
    assert_eq!(
        cache.get_or_load("ghost", move || load(c)).await.unwrap(),
        None
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn zero_negative_ttl_disables_negative_caching() {
    let cache = Cache::builder()
        .negative_ttl(Duration::ZERO)
        .build()
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let c = Arc::clone(&calls);
        let v: Option<u8> = cache
            .get_or_load("ghost", move || async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Boom>(None)
            })
            .await
            .unwrap();
        assert_eq!(v, None);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// Polls `f` until it returns true, yielding to the runtime in between (bounded).
async fn eventually(mut f: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[tokio::test]
async fn refresh_ahead_serves_the_old_value_and_refreshes_once() {
    let clock = ManualClock::starting_now();
    let cache = Cache::builder()
        .clock(Arc::new(clock.clone()))
        .ttl_jitter(0.0)
        .refresh_ahead(0.5)
        .default_ttl(Duration::from_secs(100))
        .build()
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let loader = |calls: &Arc<AtomicUsize>| {
        let calls = Arc::clone(calls);
        move || async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) as u64 + 1;
            Ok::<_, Boom>(Some(n))
        }
    };
    assert_eq!(
        cache.get_or_load("r", loader(&calls)).await.unwrap(),
        Some(1)
    );
    clock.advance(Duration::from_secs(40));
    assert_eq!(
        cache.get_or_load("r", loader(&calls)).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "not due before half the lifetime"
    );

    clock.advance(Duration::from_secs(20));
    for _ in 0..10 {
        // Due: served at once from L1, refreshed in the background once.
        assert_eq!(
            cache.get_or_load("r", loader(&calls)).await.unwrap(),
            Some(1)
        );
    }
    assert!(eventually(async || cache.get::<u64>("r").await.unwrap() == Some(2)).await);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(cache.stats().loads.refreshes, 1);
    // The refreshed entry lives a full TTL from the refresh.
    clock.advance(Duration::from_secs(45));
    assert_eq!(cache.get::<u64>("r").await.unwrap(), Some(2));
}

#[tokio::test]
async fn stale_value_is_served_when_the_loader_fails_within_the_grace() {
    let clock = ManualClock::starting_now();
    let cache = Cache::builder()
        .clock(Arc::new(clock.clone()))
        .ttl_jitter(0.0)
        .stale_grace(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let ok = cache
        .get_or_load_with_ttl("s", Duration::from_secs(10), || async {
            Ok::<_, Boom>(Some(contact(1)))
        })
        .await
        .unwrap();
    assert_eq!(ok, Some(contact(1)));

    clock.advance(Duration::from_secs(15));
    // Expired: a plain get does not serve it (nothing failed) ...
    assert_eq!(cache.get::<Contact>("s").await.unwrap(), None);
    // ... but a failing load does.
    let stale = cache
        .get_or_load("s", || async { Err::<Option<Contact>, _>(Boom) })
        .await
        .unwrap();
    assert_eq!(stale, Some(contact(1)));
    let stats = cache.stats();
    assert_eq!(stats.stale_served, 1);
    assert_eq!(stats.loads.errors, 1);

    clock.advance(Duration::from_secs(60));
    let err = cache
        .get_or_load("s", || async { Err::<Option<Contact>, _>(Boom) })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Loader(_)), "{err:?}");
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert_eq!(source.as_deref(), Some("backend exploded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_misses_load_once() {
    let cache = Cache::builder().build().await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (open, gate) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let cache = cache.clone();
        let calls = Arc::clone(&calls);
        let mut gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load("cold", move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    // Hold the load until the test opens the gate, so callers pile up.
                    let _ = gate.wait_for(|open| *open).await;
                    Ok::<_, Boom>(Some(contact(42)))
                })
                .await
        }));
    }
    // While the load is held, every other caller must join it: wait until all have.
    for _ in 0..2000 {
        if cache.stats().loads.coalesced == 9_999 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    open.send_replace(true);
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), Some(contact(42)));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!(stats.loads.loads, 1);
    assert_eq!(stats.loads.coalesced, 9_999);
    assert_eq!(stats.total_operations, 10_000);
    // Afterwards the value is an L1 hit.
    let c = Arc::clone(&calls);
    let again = cache
        .get_or_load("cold", move || async move {
            c.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Boom>(None)
        })
        .await
        .unwrap();
    assert_eq!(again, Some(contact(42)));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_panicking_loader_is_contained() {
    let cache = Cache::builder().build().await.unwrap();
    let err = cache
        .get_or_load::<u8, _, _, Boom>("p", || async { panic!("loader bug") })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LoaderPanicked), "{err:?}");
    // The key is usable again.
    let v = cache
        .get_or_load("p", || async { Ok::<_, Boom>(Some(5_u8)) })
        .await
        .unwrap();
    assert_eq!(v, Some(5));
}

#[tokio::test]
async fn a_slow_loader_times_out() {
    let cache = Cache::builder()
        .load_timeout(Duration::from_millis(20))
        .build()
        .await
        .unwrap();
    let err = cache
        .get_or_load("slow", || async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, Boom>(Some(1_u8))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LoadTimeout), "{err:?}");
}

#[tokio::test]
async fn bad_input_is_refused_with_clear_errors() {
    let cache = Cache::builder()
        .max_value_bytes(1024)
        .build()
        .await
        .unwrap();
    let ttl = Duration::from_secs(5);
    assert!(matches!(
        cache.set("", &1, ttl).await,
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        cache.get::<u8>("__lock:x").await,
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        cache.get::<u8>(&"k".repeat(2000)).await,
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        cache.set("k", &1, Duration::ZERO).await,
        Err(Error::InvalidTtl)
    ));

    let big = "x".repeat(4096);
    match cache.set("big", &big, ttl).await {
        Err(Error::ValueTooLarge { size, limit }) => {
            assert!(size > 4096);
            assert_eq!(limit, 1024);
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    assert_eq!(cache.get::<String>("big").await.unwrap(), None);
    let msg = cache.set("big", &big, ttl).await.unwrap_err().to_string();
    assert!(msg.contains("too large") && msg.contains("1024"), "{msg}");

    // set_many refuses the whole batch.
    let r = cache
        .set_many(&[("ok", "small".to_owned()), ("big", big.clone())], ttl)
        .await;
    assert!(matches!(r, Err(Error::ValueTooLarge { .. })));
    assert_eq!(cache.get::<String>("ok").await.unwrap(), None);

    // A loaded value over the limit is returned, not cached.
    let v = cache
        .get_or_load("big", move || async move { Ok::<_, Boom>(Some(big)) })
        .await
        .unwrap();
    assert_eq!(v.map(|s| s.len()), Some(4096));
    assert_eq!(cache.stats().loads.oversize, 1);
    assert_eq!(cache.get::<String>("big").await.unwrap(), None);
}

#[tokio::test]
async fn a_key_read_as_another_type_is_a_miss() {
    let cache = Cache::builder().build().await.unwrap();
    cache
        .set("n", &5_u32, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(cache.get::<String>("n").await.unwrap(), None);
    assert_eq!(cache.get::<u32>("n").await.unwrap(), Some(5));
}

#[tokio::test]
async fn invalid_config_names_the_field() {
    let err = Cache::builder().ttl_jitter(1.5).build().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                field: "ttl_jitter",
                ..
            }
        ),
        "{err:?}"
    );
    let err = Cache::builder()
        .refresh_ahead(1.0)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                field: "refresh_ahead",
                ..
            }
        ),
        "{err:?}"
    );
    let err = Cache::builder()
        .command_timeout(Duration::ZERO)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                field: "command_timeout",
                ..
            }
        ),
        "{err:?}"
    );
    let err = Cache::builder()
        .redis_url("not a url")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Redis(_)), "{err:?}");
}

#[tokio::test]
async fn debug_output_hides_redis_passwords() {
    let builder = Cache::builder().redis_url("redis://app:s3cret@127.0.0.1:6379/0");
    let shown = format!("{builder:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("app:***@127.0.0.1"), "{shown}");
}
