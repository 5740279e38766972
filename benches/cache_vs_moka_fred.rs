//! unite-cache against its raw peers, side by side in one run (needs Redis at `REDIS_URL`):
//!
//! - `l1_hit`: `Cache::get` served by L1 vs `moka::future::Cache::get` of the same value type.
//! - `l2_hit`: `Cache::get` with L1 disabled vs a raw fred `GET` + MessagePack decode.
//! - `get_many_100`: `Cache::get_many` of 100 keys (one MGET) vs 100 sequential raw GETs.
//! - `single_flight_100`: 100 concurrent `get_or_load` on one cold key vs moka's
//!   `try_get_with` (both coalesce to one init).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use fred::bytes::Bytes;
use fred::prelude::*;
use serde::{Deserialize, Serialize};
use unite_cache::Cache;
use unite_testkit::TestRedis;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Contact {
    id: u64,
    name: String,
    email: String,
    tags: Vec<String>,
    score: f64,
}

fn contact(id: u64) -> Contact {
    Contact {
        id,
        name: format!("Contact number {id}"),
        email: format!("contact{id}@example.com"),
        tags: vec![
            "customer".into(),
            "newsletter".into(),
            format!("segment-{}", id % 7),
        ],
        score: id as f64 * 1.5,
    }
}

#[derive(Debug)]
struct Never;
impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}
impl std::error::Error for Never {}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn l1_hit(c: &mut Criterion) {
    let rt = runtime();
    let cache = rt.block_on(async {
        let cache = Cache::builder().build().await.expect("cache");
        cache
            .set("contact:1", &contact(1), Duration::from_secs(3600))
            .await
            .expect("set");
        cache
    });
    let moka: moka::future::Cache<String, Contact> = moka::future::Cache::new(10_000);
    rt.block_on(moka.insert("contact:1".to_owned(), contact(1)));

    let mut g = c.benchmark_group("l1_hit");
    g.bench_function("unite_cache_get", |b| {
        b.to_async(&rt).iter(|| async {
            let v: Option<Contact> = cache.get("contact:1").await.expect("get");
            std::hint::black_box(v)
        });
    });
    g.bench_function("raw_moka_get", |b| {
        b.to_async(&rt)
            .iter(|| async { std::hint::black_box(moka.get("contact:1").await) });
    });
    g.finish();
}

fn l2_hit(c: &mut Criterion) {
    let rt = runtime();
    let (redis, cache, raw) = rt.block_on(async {
        let redis = TestRedis::new().await;
        let cache = Cache::builder()
            .redis_url(redis.url())
            .namespace(redis.prefix())
            .l1_enabled(false)
            .build()
            .await
            .expect("cache");
        cache
            .set("contact:1", &contact(1), Duration::from_secs(3600))
            .await
            .expect("set");
        let raw = redis.new_client().await;
        let payload = rmp_serde::to_vec_named(&contact(1)).expect("encode");
        let _: () = raw
            .set(redis.key("raw:contact:1"), payload, None, None, false)
            .await
            .expect("raw set");
        (redis, cache, raw)
    });
    let raw_key = redis.key("raw:contact:1");

    let mut g = c.benchmark_group("l2_hit");
    g.bench_function("unite_cache_get_l1_disabled", |b| {
        b.to_async(&rt).iter(|| async {
            let v: Option<Contact> = cache.get("contact:1").await.expect("get");
            assert!(v.is_some());
            std::hint::black_box(v)
        });
    });
    g.bench_function("raw_fred_get_and_decode", |b| {
        b.to_async(&rt).iter(|| async {
            let bytes: Option<Bytes> = raw.get(raw_key.as_str()).await.expect("get");
            let v: Contact = rmp_serde::from_slice(&bytes.expect("present")).expect("decode");
            std::hint::black_box(v)
        });
    });
    g.finish();
    rt.block_on(async move {
        drop(cache);
        let _ = raw.quit().await;
    });
    drop(redis);
}

fn get_many_100(c: &mut Criterion) {
    let rt = runtime();
    let keys: Vec<String> = (0..100).map(|i| format!("contact:{i}")).collect();
    let (redis, cache, raw) = rt.block_on(async {
        let redis = TestRedis::new().await;
        let cache = Cache::builder()
            .redis_url(redis.url())
            .namespace(redis.prefix())
            .l1_enabled(false)
            .build()
            .await
            .expect("cache");
        let items: Vec<(String, Contact)> = (0..100)
            .map(|i| (format!("contact:{i}"), contact(i)))
            .collect();
        cache
            .set_many(&items, Duration::from_secs(3600))
            .await
            .expect("set_many");
        let raw = redis.new_client().await;
        for i in 0..100 {
            let payload = rmp_serde::to_vec_named(&contact(i)).expect("encode");
            let _: () = raw
                .set(
                    redis.key(&format!("raw:contact:{i}")),
                    payload,
                    None,
                    None,
                    false,
                )
                .await
                .expect("raw set");
        }
        (redis, cache, raw)
    });
    let raw_keys: Vec<String> = (0..100)
        .map(|i| redis.key(&format!("raw:contact:{i}")))
        .collect();

    let mut g = c.benchmark_group("get_many_100");
    g.bench_function("unite_cache_get_many_l1_disabled", |b| {
        b.to_async(&rt).iter(|| async {
            let v: Vec<Option<Contact>> = cache.get_many(&keys).await.expect("get_many");
            assert!(v.iter().all(Option::is_some));
            std::hint::black_box(v)
        });
    });
    g.bench_function("raw_fred_100_sequential_gets", |b| {
        b.to_async(&rt).iter(|| async {
            let mut out = Vec::with_capacity(100);
            for key in &raw_keys {
                let bytes: Option<Bytes> = raw.get(key.as_str()).await.expect("get");
                let v: Contact = rmp_serde::from_slice(&bytes.expect("present")).expect("decode");
                out.push(v);
            }
            std::hint::black_box(out)
        });
    });
    g.finish();
    rt.block_on(async move {
        drop(cache);
        let _ = raw.quit().await;
    });
    drop(redis);
}

fn single_flight_100(c: &mut Criterion) {
    let rt = runtime();
    let cache = rt.block_on(async { Cache::builder().build().await.expect("cache") });
    let moka: moka::future::Cache<String, Contact> = moka::future::Cache::new(1_000_000);
    let next = Arc::new(AtomicU64::new(0));

    let mut g = c.benchmark_group("single_flight_100");
    g.bench_function("unite_cache_get_or_load", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let cache = cache.clone();
            let next = Arc::clone(&next);
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let key = format!("k{}", next.fetch_add(1, Ordering::Relaxed));
                    let calls = (0..100).map(|_| {
                        cache.get_or_load(&key, || async { Ok::<_, Never>(Some(contact(1))) })
                    });
                    let out = futures::future::join_all(calls).await;
                    std::hint::black_box(out);
                }
                start.elapsed()
            }
        });
    });
    g.bench_function("raw_moka_try_get_with", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let moka = moka.clone();
            let next = Arc::clone(&next);
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let key = format!("k{}", next.fetch_add(1, Ordering::Relaxed));
                    let calls = (0..100).map(|_| {
                        moka.try_get_with_by_ref(key.as_str(), async { Ok::<_, Never>(contact(1)) })
                    });
                    let out = futures::future::join_all(calls).await;
                    std::hint::black_box(out);
                }
                start.elapsed()
            }
        });
    });
    g.finish();
}

criterion_group!(benches, l1_hit, l2_hit, get_many_100, single_flight_100);
criterion_main!(benches);
