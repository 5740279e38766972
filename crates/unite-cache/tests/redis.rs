//! Behaviour against the real Redis (REDIS_URL): round trips, TTLs, prefixes, single-flight
//! across instances, invalidation, bad payloads; and, on a private redis-server the test kit
//! starts from the OS binary, that an idle cache keeps its connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use unite_cache::{Cache, CacheBuilder, Codec, Error, ManualClock, Provider, Status};
use unite_testkit::TestRedis;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Contact {
    id: u64,
    name: String,
}

fn contact(id: u64) -> Contact {
    Contact {
        id,
        name: format!("contact {id}"),
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

/// A cache on the test's Redis, in the test's own key prefix (cleaned up on drop).
fn builder(redis: &TestRedis) -> CacheBuilder {
    Cache::builder()
        .redis_url(redis.url())
        .namespace(redis.prefix())
        .ttl_jitter(0.0)
}

async fn exists(redis: &TestRedis, key: &str) -> bool {
    let n: i64 = redis.client().exists(key).await.unwrap();
    n == 1
}

async fn pttl(redis: &TestRedis, key: &str) -> i64 {
    redis.client().pttl(key).await.unwrap()
}

/// Polls `f` until it returns true (bounded: about 10 s).
async fn eventually(mut f: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn every_operation_round_trips_through_redis() {
    let redis = TestRedis::new().await;
    let a = builder(&redis).build().await.unwrap();
    let b = builder(&redis).build().await.unwrap();
    assert_eq!(a.provider(), Provider::Redis);
    assert_eq!(a.status(), Status::Healthy);
    let ttl = Duration::from_secs(60);

    a.set("c:1", &contact(1), ttl).await.unwrap();
    assert!(exists(&redis, &redis.key("c:1")).await);
    assert_eq!(a.redis_key("c:1"), redis.key("c:1"));
    // B has nothing in L1: this is an L2 hit, then kept in B's L1.
    assert_eq!(b.get::<Contact>("c:1").await.unwrap(), Some(contact(1)));
    assert_eq!(b.stats().l2.unwrap().hits, 1);
    assert_eq!(b.get::<Contact>("c:1").await.unwrap(), Some(contact(1)));
    assert_eq!(b.stats().l1.hits, 1);

    a.set_many(&[("c:2", contact(2)), ("c:3", contact(3))], ttl)
        .await
        .unwrap();
    assert!(exists(&redis, &redis.key("c:2")).await && exists(&redis, &redis.key("c:3")).await);
    // c:1 from B's L1, c:2 and c:3 from one MGET, c:4 nowhere.
    let many: Vec<Option<Contact>> = b.get_many(&["c:1", "c:2", "c:3", "c:4"]).await.unwrap();
    assert_eq!(
        many,
        vec![Some(contact(1)), Some(contact(2)), Some(contact(3)), None]
    );
    let l2 = b.stats().l2.unwrap();
    assert_eq!((l2.hits, l2.misses), (3, 1));

    a.delete("c:2").await.unwrap();
    assert!(!exists(&redis, &redis.key("c:2")).await);
    assert_eq!(a.get::<Contact>("c:2").await.unwrap(), None);
    a.delete_many(&["c:1", "c:3"]).await.unwrap();
    assert!(!exists(&redis, &redis.key("c:1")).await && !exists(&redis, &redis.key("c:3")).await);

    let loaded = a
        .get_or_load("c:9", || async { Ok::<_, Boom>(Some(contact(9))) })
        .await
        .unwrap();
    assert_eq!(loaded, Some(contact(9)));
    assert!(exists(&redis, &redis.key("c:9")).await);
    // The load lock is gone once the value is stored.
    assert!(!exists(&redis, &redis.key("__lock:c:9")).await);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let from_b = b
        .get_or_load("c:9", move || async move {
            c.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Boom>(Some(contact(0)))
        })
        .await
        .unwrap();
    assert_eq!(from_b, Some(contact(9)), "B reads A's load from Redis");
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    let json = serde_json::to_value(a.stats()).unwrap();
    assert_eq!(json["provider"], "redis");
    assert_eq!(json["status"], "healthy");
    assert_eq!(json["circuit_state"], "closed");
    assert!(json["l2"]["bytes_written"].as_u64().unwrap() > 0);
    assert_eq!(json["l2"]["connected"], true);
}

#[tokio::test]
async fn json_codec_round_trips_and_is_readable_in_redis() {
    let redis = TestRedis::new().await;
    let cache = builder(&redis).codec(Codec::Json).build().await.unwrap();
    cache
        .set("j", &contact(5), Duration::from_secs(30))
        .await
        .unwrap();
    let raw: Vec<u8> = redis
        .client()
        .get::<fred::bytes::Bytes, _>(redis.key("j"))
        .await
        .unwrap()
        .to_vec();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains(r#""name":"contact 5""#), "{text}");
    let other = builder(&redis).codec(Codec::Json).build().await.unwrap();
    assert_eq!(other.get::<Contact>("j").await.unwrap(), Some(contact(5)));
}

#[tokio::test]
async fn ttls_are_honoured_in_redis() {
    let redis = TestRedis::new().await;
    let cache = builder(&redis)
        .negative_ttl(Duration::from_secs(7))
        .build()
        .await
        .unwrap();
    cache
        .set("t", &1_u8, Duration::from_secs(10))
        .await
        .unwrap();
    let ms = pttl(&redis, &redis.key("t")).await;
    assert!((9_000..=10_000).contains(&ms), "PTTL {ms}");

    let none: Option<u8> = cache
        .get_or_load("gone", || async { Ok::<_, Boom>(None) })
        .await
        .unwrap();
    assert_eq!(none, None);
    let ms = pttl(&redis, &redis.key("gone")).await;
    assert!((6_000..=7_000).contains(&ms), "negative entry PTTL {ms}");

    // With a stale grace, Redis keeps the entry for TTL + grace.
    let graced = builder(&redis)
        .stale_grace(Duration::from_secs(20))
        .build()
        .await
        .unwrap();
    graced
        .set("g", &1_u8, Duration::from_secs(10))
        .await
        .unwrap();
    let ms = pttl(&redis, &redis.key("g")).await;
    assert!((29_000..=30_000).contains(&ms), "PTTL with grace {ms}");

    // Jitter only ever shortens a TTL.
    let jittered = builder(&redis).ttl_jitter(0.5).build().await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20 {
        let key = format!("j{i}");
        jittered
            .set(&key, &i, Duration::from_secs(100))
            .await
            .unwrap();
        let ms = pttl(&redis, &redis.key(&key)).await;
        assert!((49_000..=100_000).contains(&ms), "jittered PTTL {ms}");
        seen.insert(ms / 1000);
    }
    assert!(seen.len() > 1, "jitter spread the TTLs: {seen:?}");
}

#[tokio::test]
async fn redis_expiry_is_seen_by_a_fresh_instance() {
    let redis = TestRedis::new().await;
    let cache = builder(&redis).build().await.unwrap();
    cache
        .set("short", &1_u8, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(
        eventually(async || !exists(&redis, &redis.key("short")).await).await,
        "Redis expired the key"
    );
    let fresh = builder(&redis).l1_enabled(false).build().await.unwrap();
    assert_eq!(fresh.get::<u8>("short").await.unwrap(), None);
}

#[tokio::test]
async fn namespaces_isolate_caches() {
    let redis = TestRedis::new().await;
    let one = Cache::builder()
        .redis_url(redis.url())
        .namespace(redis.key("one:"))
        .build()
        .await
        .unwrap();
    let two = Cache::builder()
        .redis_url(redis.url())
        .namespace(redis.key("two:"))
        .build()
        .await
        .unwrap();
    one.set("k", &"one".to_owned(), Duration::from_secs(30))
        .await
        .unwrap();
    two.set("k", &"two".to_owned(), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(exists(&redis, &redis.key("one:k")).await);
    assert!(exists(&redis, &redis.key("two:k")).await);
    let fresh_one = Cache::builder()
        .redis_url(redis.url())
        .namespace(redis.key("one:"))
        .build()
        .await
        .unwrap();
    assert_eq!(
        fresh_one.get::<String>("k").await.unwrap().as_deref(),
        Some("one")
    );
    two.delete("k").await.unwrap();
    assert!(exists(&redis, &redis.key("one:k")).await);
    // Invalidations stay within a namespace too.
    assert_eq!(
        one.get::<String>("k").await.unwrap().as_deref(),
        Some("one")
    );
    assert_eq!(one.stats().l2.unwrap().invalidations_received, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_on_two_instances_load_once_in_total() {
    let redis = TestRedis::new().await;
    // Generous timeouts: this is about the lock protocol, not about a slow Redis (a Redis
    // call that times out rightly makes an instance load on its own).
    let make = || {
        builder(&redis)
            .command_timeout(Duration::from_secs(2))
            .lock_wait(Duration::from_secs(10))
            .build()
    };
    let a = make().await.unwrap();
    let b = make().await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..10_000 {
        let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (a, b) = (a.clone(), b.clone());
        let calls = Arc::clone(&calls);
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load("cold", move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    // Hold the load until the other instance is waiting on the Redis lock
                    // (bounded, so a regression shows as a count, not a hang).
                    for _ in 0..500 {
                        if a.stats().loads.lock_waits + b.stats().loads.lock_waits > 0 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Ok::<_, Boom>(Some(contact(7)))
                })
                .await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), Some(contact(7)));
    }
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one load across both instances: {sa:?} {sb:?}"
    );
    assert_eq!(sa.loads.loads + sb.loads.loads, 1);
    assert_eq!(sa.loads.lock_acquired + sb.loads.lock_acquired, 1);
    assert_eq!(sa.loads.lock_wait_hits + sb.loads.lock_wait_hits, 1);
    assert!(!exists(&redis, &redis.key("__lock:cold")).await);
}

#[tokio::test]
async fn a_dead_lock_holder_does_not_block_loading() {
    let redis = TestRedis::new().await;
    let cache = builder(&redis)
        .lock_ttl(Duration::from_millis(300))
        .lock_poll(Duration::from_millis(20))
        .build()
        .await
        .unwrap();
    // Another instance took the lock and died: the lock expires, then this one loads.
    let _: () = redis
        .client()
        .set(
            redis.key("__lock:orphan"),
            "dead-instance",
            Some(Expiration::PX(300)),
            None,
            false,
        )
        .await
        .unwrap();
    let v = cache
        .get_or_load("orphan", || async { Ok::<_, Boom>(Some(3_u8)) })
        .await
        .unwrap();
    assert_eq!(v, Some(3));
    let loads = cache.stats().loads;
    assert_eq!(
        (loads.lock_waits, loads.lock_acquired, loads.loads),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn a_set_on_one_instance_evicts_the_key_from_the_others() {
    let redis = TestRedis::new().await;
    let a = builder(&redis).build().await.unwrap();
    let b = builder(&redis).build().await.unwrap();
    let ttl = Duration::from_secs(60);
    a.set("doc", &"v1".to_owned(), ttl).await.unwrap();
    // Let A's first message land before B reads, or it would evict what B reads now.
    assert!(eventually(async || b.stats().l2.unwrap().invalidations_received >= 1).await);
    assert_eq!(b.get::<String>("doc").await.unwrap().as_deref(), Some("v1"));
    assert_eq!(b.get::<String>("doc").await.unwrap().as_deref(), Some("v1"));
    assert_eq!(b.stats().l1.hits, 1, "B now serves v1 from its L1");

    a.set("doc", &"v2".to_owned(), ttl).await.unwrap();
    assert!(
        eventually(async || b.stats().l2.unwrap().invalidations_received >= 2).await,
        "B received A's invalidation"
    );
    // Once the message is in, B never serves v1 again.
    for _ in 0..10 {
        assert_eq!(b.get::<String>("doc").await.unwrap().as_deref(), Some("v2"));
    }
    // An instance ignores its own messages.
    assert_eq!(a.stats().l2.unwrap().invalidations_received, 0);
    assert_eq!(a.stats().l2.unwrap().invalidations_sent, 2);

    a.delete("doc").await.unwrap();
    assert!(eventually(async || b.stats().l2.unwrap().invalidations_received >= 3).await);
    assert_eq!(b.get::<String>("doc").await.unwrap(), None);
}

#[tokio::test]
async fn oversized_values_never_reach_redis() {
    let redis = TestRedis::new().await;
    let cache = builder(&redis).max_value_bytes(1000).build().await.unwrap();
    let err = cache
        .set("big", &"x".repeat(5000), Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ValueTooLarge { limit: 1000, .. }),
        "{err:?}"
    );
    assert!(!exists(&redis, &redis.key("big")).await);
    let v = cache
        .get_or_load("big", || async { Ok::<_, Boom>(Some("x".repeat(5000))) })
        .await
        .unwrap();
    assert_eq!(v.map(|s| s.len()), Some(5000));
    assert!(!exists(&redis, &redis.key("big")).await);
}

#[tokio::test]
async fn corrupt_payloads_are_misses_and_get_reloaded() {
    let redis = TestRedis::new().await;
    let cache = builder(&redis).build().await.unwrap();
    let raw = redis.client();
    let garbage: &[&[u8]] = &[
        b"",
        b"\xc1",
        b"not an envelope at all",
        b"\xc1\x10\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00",
        b"\xc1\x10\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\x7f\x93\xc0",
    ];
    for (i, bytes) in garbage.iter().enumerate() {
        let key = format!("bad{i}");
        let _: () = raw
            .set(
                redis.key(&key),
                bytes.to_vec(),
                Some(Expiration::EX(60)),
                None,
                false,
            )
            .await
            .unwrap();
        assert_eq!(
            cache.get::<Contact>(&key).await.unwrap(),
            None,
            "payload {i}"
        );
        let many: Vec<Option<Contact>> = cache.get_many(&[key.as_str()]).await.unwrap();
        assert_eq!(many, vec![None]);
        let reloaded = cache
            .get_or_load(&key, move || async move {
                Ok::<_, Boom>(Some(contact(i as u64)))
            })
            .await
            .unwrap();
        assert_eq!(reloaded, Some(contact(i as u64)));
    }
    assert!(cache.stats().l2.unwrap().corrupt >= 5);
    // The reloaded values replaced the garbage in Redis.
    let fresh = builder(&redis).build().await.unwrap();
    assert_eq!(
        fresh.get::<Contact>("bad2").await.unwrap(),
        Some(contact(2))
    );

    // A well-formed envelope holding another type is a miss too.
    cache
        .set("typed", &"a string".to_owned(), Duration::from_secs(30))
        .await
        .unwrap();
    let other = builder(&redis).build().await.unwrap();
    assert_eq!(other.get::<Contact>("typed").await.unwrap(), None);
}

#[tokio::test]
async fn stale_value_in_redis_is_served_when_the_loader_fails() {
    let redis = TestRedis::new().await;
    let clock = ManualClock::starting_now();
    let make = || {
        builder(&redis)
            .clock(Arc::new(clock.clone()))
            .stale_grace(Duration::from_secs(120))
    };
    let writer = make().build().await.unwrap();
    writer
        .set("s", &contact(1), Duration::from_secs(10))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(30));
    // A fresh instance (empty L1) finds the expired copy in Redis and serves it when its
    // loader fails.
    let reader = make().build().await.unwrap();
    let v = reader
        .get_or_load("s", || async { Err::<Option<Contact>, _>(Boom) })
        .await
        .unwrap();
    assert_eq!(v, Some(contact(1)));
    assert_eq!(reader.stats().stale_served, 1);
}

#[tokio::test]
async fn a_prebuilt_fred_client_can_be_shared() {
    let redis = TestRedis::new().await;
    let client = redis.new_client().await;
    let cache = Cache::builder()
        .redis_client(client.clone())
        .namespace(redis.prefix())
        .build()
        .await
        .unwrap();
    cache
        .set("shared", &1_u8, Duration::from_secs(30))
        .await
        .unwrap();
    let raw: Option<fred::bytes::Bytes> = client.get(redis.key("shared")).await.unwrap();
    assert!(raw.is_some());
    drop(cache);
    // The cache never quits a client it did not build.
    let pong: String = client.ping(None).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn an_unreachable_redis_starts_degraded_and_never_fails_requests() {
    let port = unite_testkit::free_port().unwrap();
    let cache = Cache::builder()
        .redis_url(format!("redis://127.0.0.1:{port}"))
        .connect_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    assert_eq!(cache.provider(), Provider::Redis);
    assert_eq!(cache.status(), Status::Degraded);
    for i in 0..30_u64 {
        let key = format!("k{i}");
        let v = cache
            .get_or_load(&key, move || async move { Ok::<_, Boom>(Some(i)) })
            .await
            .unwrap();
        assert_eq!(v, Some(i));
        cache.set(&key, &i, Duration::from_secs(5)).await.unwrap();
        assert_eq!(cache.get::<u64>(&key).await.unwrap(), Some(i));
    }
    let stats = cache.stats();
    assert_eq!(stats.status, Status::Degraded);
    let l2 = stats.l2.unwrap();
    assert!(l2.errors + l2.skipped > 0);
}

/// Connections the server has accepted since it started.
async fn connections_received(client: &Client) -> u64 {
    let info: String = client
        .info(Some(fred::types::InfoKind::Stats))
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("INFO stats has total_connections_received")
}

/// An idle cache keeps its connections: none is taken for unresponsive and reopened. (With
/// fred's `replicas` feature on, the `ROLE` it sends after connecting left the connection
/// looking unresponsive once idle, and it was reset about every second, with a warning each
/// time.) A server of this test's own, so no other test's connections are counted.
#[tokio::test]
async fn an_idle_cache_keeps_its_connections() {
    let server = unite_testkit::RedisServer::start()
        .unwrap_or_else(|e| panic!("starting a private redis-server: {e}"));
    // Pinned, not defaults: several pool connections that no command touches while measured
    // (a reply clears what the bug left set), and the unresponsive bound this test waits out
    // (4 × the command timeout, at least 1 s).
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("idle:")
        .pool_size(4)
        .command_timeout(Duration::from_millis(250))
        .build()
        .await
        .unwrap();
    assert_eq!(cache.provider(), Provider::Redis);
    let observer = Client::new(Config::from_url(&server.url()).unwrap(), None, None, None);
    observer.init().await.unwrap();

    // No command from the cache meanwhile; over twice the 1 s bound.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = connections_received(&observer).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let after = connections_received(&observer).await;
    assert_eq!(
        after - before,
        0,
        "the idle cache reconnected {} times in 2.5 s",
        after - before
    );
    // And the connections it kept still work.
    cache
        .set("k", &contact(1), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(cache.get::<Contact>("k").await.unwrap(), Some(contact(1)));
    observer.quit().await.unwrap();
}
