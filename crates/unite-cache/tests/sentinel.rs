//! The cache behind Redis Sentinel (master, replica, three sentinels, started from the OS
//! binaries by the testkit): the master is killed (SIGKILL) under a steady stream of cache
//! writes; the cache follows the sentinels to the promoted replica by itself.
//!
//! Printed (for the README): how many writes failed to reach Redis during the failover, how
//! many writes Redis acknowledged but lost (asynchronous replication), how long the sentinels
//! took, and how long the cache was without Redis. Nothing here asserts a duration.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::*;
use unite_cache::{Cache, Status};
use unite_testkit::RedisSentinelGroup;

const OUTER: Duration = Duration::from_secs(30);
/// The whole stream lasts this long; the master is killed `KILL_AFTER` into it.
const STREAM: Duration = Duration::from_secs(15);
const KILL_AFTER: Duration = Duration::from_secs(5);
const EVERY: Duration = Duration::from_millis(10);
const TTL: Duration = Duration::from_secs(600);

async fn direct_client(url: &str) -> Client {
    let client = Builder::from_config(Config::from_url(url).expect("url"))
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(5))
        .build()
        .expect("client builds");
    tokio::time::timeout(OUTER, client.init())
        .await
        .expect("connects in time")
        .expect("connects");
    client
}

async fn eventually(mut f: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < OUTER {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// One write of the stream: when it returned, and whether its Redis part succeeded.
struct Write {
    seq: u64,
    at: Instant,
    l2_ok: bool,
}

fn l2_failures(cache: &Cache) -> u64 {
    let l2 = cache.stats().l2.expect("an L2");
    l2.errors + l2.skipped
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_the_promoted_replica_after_the_master_is_killed() {
    let mut group =
        tokio::task::block_in_place(RedisSentinelGroup::start).expect("the sentinel group starts");
    let build = || {
        Cache::builder()
            .redis_url(group.url())
            .namespace("st:")
            .ttl_jitter(0.0)
            .build()
    };
    let a = build().await.expect("cache a");
    let b = build().await.expect("cache b");
    assert_eq!(a.status(), Status::Healthy, "{:?}", a.stats());

    // One writer (so each write's L2 outcome is the change in the L2 failure counters).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let a = a.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut writes = Vec::new();
            let start = Instant::now();
            let mut seq = 0u64;
            while start.elapsed() < STREAM && !stop.load(Ordering::Relaxed) {
                let before = l2_failures(&a);
                a.set(&format!("w:{seq}"), &seq, TTL)
                    .await
                    .expect("a cache write never fails, Redis or not");
                writes.push(Write {
                    seq,
                    at: Instant::now(),
                    l2_ok: l2_failures(&a) == before,
                });
                seq += 1;
                tokio::time::sleep(EVERY).await;
            }
            writes
        })
    };

    tokio::time::sleep(KILL_AFTER).await;
    let killed_at = Instant::now();
    let failover = tokio::task::block_in_place(|| group.kill_master());
    let failover = match failover {
        Ok(f) => f,
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            panic!("the sentinels did not fail over: {e}");
        }
    };
    assert_eq!(
        failover.new_master,
        group.replica_addr(),
        "the former replica is the new master"
    );
    let writes = tokio::time::timeout(STREAM + OUTER, writer)
        .await
        .expect("the writer ends")
        .expect("the writer did not panic");

    let failed: Vec<&Write> = writes.iter().filter(|w| !w.l2_ok).collect();
    let first_ok_after_kill = writes.iter().find(|w| w.at > killed_at && w.l2_ok);
    let recovered = first_ok_after_kill.map(|w| w.at - killed_at);

    // Every write whose Redis part succeeded is on the new master, except those the old
    // master acknowledged in its last moments and had not replicated yet.
    let new_master = direct_client(&group.replica_url()).await;
    let mut lost = Vec::new();
    for w in writes.iter().filter(|w| w.l2_ok) {
        let v: Option<Vec<u8>> = new_master
            .get(a.redis_key(&format!("w:{}", w.seq)))
            .await
            .unwrap();
        if v.is_none() {
            lost.push(w);
        }
    }
    eprintln!(
        "cache sentinel failover: {} writes, {} failed to reach Redis, {} acknowledged then lost; \
         sentinels promoted the replica in {:?}; the cache wrote to Redis again {:?} after the kill",
        writes.len(),
        failed.len(),
        lost.len(),
        failover.took,
        recovered
    );
    assert!(
        recovered.is_some(),
        "no write reached Redis after the failover: {} writes, {} failed",
        writes.len(),
        failed.len()
    );
    for w in &lost {
        assert!(
            w.at <= killed_at && killed_at - w.at < Duration::from_secs(1),
            "write {} was lost though acknowledged {:?} before the kill (only the unreplicated \
             tail may be lost)",
            w.seq,
            killed_at.saturating_duration_since(w.at)
        );
    }

    // After the failover the cache works against the new master: writes land there, and
    // invalidation (the subscriber reconnected through the sentinels) reaches the other
    // instance.
    assert!(
        eventually(async || a.status() == Status::Healthy).await,
        "cache a healthy again: {:?}",
        a.stats()
    );
    a.set("after", &1u64, TTL).await.unwrap();
    let stored: Option<Vec<u8>> = new_master.get(a.redis_key("after")).await.unwrap();
    assert!(
        stored.is_some(),
        "the write after the failover is on the former replica"
    );
    assert_eq!(b.get::<u64>("after").await.unwrap(), Some(1));
    let received = b.stats().l2.unwrap().invalidations_received;
    assert!(
        eventually(async || {
            a.set("after", &2u64, TTL).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            b.stats().l2.unwrap().invalidations_received > received
        })
        .await,
        "B receives A's invalidations through the new master: {:?}",
        b.stats().l2
    );
    assert_eq!(b.get::<u64>("after").await.unwrap(), Some(2));
    let _ = new_master.quit().await;
}
