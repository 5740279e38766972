//! The invalidation window: time from `set` on instance A returning to instance B (which had
//! the old value in its L1) no longer serving the old value. Two caches on the Redis at
//! `REDIS_URL`, one namespace; prints p50 / p90 / p99 / max over 1000 writes.
//!
//! `cargo bench -p unite-benches --bench cache_invalidation_window`

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use unite_cache::Cache;
use unite_testkit::TestRedis;

const WARMUP: usize = 50;
const SAMPLES: usize = 1000;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let redis = TestRedis::new().await;
        let build = || async {
            Cache::builder()
                .redis_url(redis.url())
                .namespace(redis.prefix())
                .build()
                .await
                .expect("cache")
        };
        let (a, b) = (build().await, build().await);
        let ttl = Duration::from_secs(600);
        let mut windows = Vec::with_capacity(SAMPLES);
        a.set("doc", &0_u64, ttl).await.expect("set");
        for i in 1..=(WARMUP + SAMPLES) as u64 {
            // B holds the previous value in L1.
            loop {
                if b.get::<u64>("doc").await.expect("get") == Some(i - 1) {
                    break;
                }
                tokio::task::yield_now().await;
            }
            a.set("doc", &i, ttl).await.expect("set");
            let written = Instant::now();
            let mut polls = 0_u64;
            loop {
                if b.get::<u64>("doc").await.expect("get") == Some(i) {
                    break;
                }
                polls += 1;
                assert!(polls < 50_000_000, "B never saw write {i}");
                tokio::task::yield_now().await;
            }
            if i as usize > WARMUP {
                windows.push(written.elapsed());
            }
        }
        windows.sort();
        let at = |q: f64| {
            let idx = ((windows.len() as f64 - 1.0) * q).round() as usize;
            windows[idx]
        };
        println!(
            "invalidation window over {SAMPLES} writes: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
            at(0.50),
            at(0.90),
            at(0.99),
            windows[windows.len() - 1]
        );
        let sb = b.stats();
        println!(
            "B: invalidations received {}, L1 hits {}, L2 hits {}",
            sb.l2.as_ref().map_or(0, |l2| l2.invalidations_received),
            sb.l1.hits,
            sb.l2.as_ref().map_or(0, |l2| l2.hits)
        );
    });
}
