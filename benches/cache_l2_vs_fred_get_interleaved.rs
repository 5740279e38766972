//! A drift-resistant cross-check of the `l2_hit` criterion group, in alternating rounds of 300
//! calls so that load from other processes on a shared machine hits every side alike: a raw
//! fred GET + decode, the same with the cache's per-command options (timeout, fail-fast), and
//! `Cache::get` with L1 disabled (default pool of 2; pool of 1 without invalidation). Needs
//! Redis at `REDIS_URL`.
//!
//! `cargo bench -p unite-benches --bench cache_l2_vs_fred_get_interleaved`

#![allow(clippy::print_stdout)]
use fred::bytes::Bytes;
use fred::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
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
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let redis = unite_testkit::TestRedis::new().await;
    let cache = unite_cache::Cache::builder()
        .redis_url(redis.url())
        .namespace(redis.prefix())
        .l1_enabled(false)
        .build()
        .await
        .unwrap();
    let cache1 = unite_cache::Cache::builder()
        .redis_url(redis.url())
        .namespace(redis.prefix())
        .l1_enabled(false)
        .pool_size(1)
        .invalidation(false)
        .build()
        .await
        .unwrap();
    cache
        .set("c", &contact(1), Duration::from_secs(600))
        .await
        .unwrap();
    let raw = redis.new_client().await;
    let _: () = raw
        .set(
            redis.key("raw"),
            rmp_serde::to_vec_named(&contact(1)).unwrap(),
            None,
            None,
            false,
        )
        .await
        .unwrap();
    let rk = redis.key("raw");
    let opts = Options {
        timeout: Some(Duration::from_millis(250)),
        fail_fast: true,
        ..Default::default()
    };
    let mut tot = [Duration::ZERO; 5];
    let n = 300;
    for _round in 0..10 {
        let t = Instant::now();
        for _ in 0..n {
            let b: Option<Bytes> = raw.get(rk.as_str()).await.unwrap();
            let v: Contact = rmp_serde::from_slice(&b.unwrap()).unwrap();
            std::hint::black_box(v);
        }
        tot[0] += t.elapsed();
        let t = Instant::now();
        for _ in 0..n {
            let c = raw.with_options(&opts);
            let b: Option<Bytes> = c.get(rk.as_str()).await.unwrap();
            let v: Contact = rmp_serde::from_slice(&b.unwrap()).unwrap();
            std::hint::black_box(v);
        }
        tot[1] += t.elapsed();
        let t = Instant::now();
        for _ in 0..n {
            let v: Option<Contact> = cache.get("c").await.unwrap();
            std::hint::black_box(v.unwrap());
        }
        tot[2] += t.elapsed();
        let t = Instant::now();
        for _ in 0..n {
            let v: Option<Contact> = cache1.get("c").await.unwrap();
            std::hint::black_box(v.unwrap());
        }
        tot[3] += t.elapsed();
    }
    let names = ["raw", "raw+opts", "cache pool2", "cache pool1 noinval"];
    for (i, n2) in names.iter().enumerate() {
        println!("{n2}: {:?}/op", tot[i] / (n * 10));
    }
}
