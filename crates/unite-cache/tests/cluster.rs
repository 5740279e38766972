//! The cache against a real three-master Redis Cluster (started from the OS binaries by the
//! testkit): every operation, the load lock and invalidation, over keys spread across all
//! masters, with no Redis error at all (a CROSSSLOT refusal would show up as an L2 error).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use unite_cache::{Cache, CacheStats, Provider, Status};
use unite_testkit::RedisClusterGroup;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    id: u64,
    name: String,
}

fn item(id: u64) -> Item {
    Item {
        id,
        name: format!("item {id}"),
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

/// Enough distinct keys to land on every master many times over.
const N: u64 = 200;
const TTL: Duration = Duration::from_secs(300);
const OUTER: Duration = Duration::from_secs(30);

fn keys(range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|i| format!("item:{i}")).collect()
}

async fn eventually(mut f: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

async fn cluster_client(cluster: &RedisClusterGroup) -> Client {
    let client = Builder::from_config(cluster.config().expect("cluster config"))
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(5))
        .build()
        .expect("client builds");
    tokio::time::timeout(OUTER, client.init())
        .await
        .expect("cluster client connects in time")
        .expect("cluster client connects");
    client
}

async fn exists(client: &Client, key: &str) -> bool {
    client.exists::<i64, _>(key).await.expect("EXISTS") == 1
}

#[track_caller]
fn assert_no_redis_error(name: &str, stats: &CacheStats) {
    let l2 = stats.l2.as_ref().expect("an L2");
    assert_eq!(
        (l2.errors, l2.skipped),
        (0, 0),
        "cache {name}: every Redis call must succeed on the cluster (a CROSSSLOT refusal \
         counts as an L2 error): {stats:?}"
    );
    assert_eq!(stats.status, Status::Healthy, "cache {name}: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_works_on_a_three_master_cluster() {
    let cluster =
        tokio::task::block_in_place(RedisClusterGroup::start).expect("the cluster starts");
    let build = || {
        Cache::builder()
            .redis_url(cluster.url())
            .namespace("cl:")
            .ttl_jitter(0.0)
            .build()
    };
    let a = build().await.expect("cache a");
    let b = build().await.expect("cache b");
    assert_eq!(a.provider(), Provider::Redis);
    let direct = cluster_client(&cluster).await;

    // set_many / get_many over N keys: a pipeline of GETs on a cluster, not one MGET.
    let all = keys(0..N);
    let items: Vec<(String, Item)> = (0..N).map(|i| (all[i as usize].clone(), item(i))).collect();
    a.set_many(&items, TTL).await.expect("set_many");
    let per_node = cluster.keys_per_node();
    assert!(
        per_node.iter().all(|n| n.is_some_and(|n| n > 0)),
        "the keys land on every master: {per_node:?}"
    );
    let got: Vec<Option<Item>> = b.get_many(&all).await.expect("get_many");
    assert_eq!(got, (0..N).map(|i| Some(item(i))).collect::<Vec<_>>());
    assert_eq!(b.stats().l2.unwrap().hits, N);

    // set / get one by one.
    for i in N..N + 50 {
        a.set(&format!("item:{i}"), &item(i), TTL)
            .await
            .expect("set");
    }
    for i in N..N + 50 {
        let v: Option<Item> = b.get(&format!("item:{i}")).await.expect("get");
        assert_eq!(v, Some(item(i)));
    }

    // delete_many across slots: one DEL per slot, never a CROSSSLOT.
    let doomed = keys(0..100);
    a.delete_many(&doomed).await.expect("delete_many");
    for key in &doomed {
        assert!(
            !exists(&direct, &a.redis_key(key)).await,
            "{key} deleted from the cluster"
        );
    }
    for key in keys(100..N) {
        assert!(exists(&direct, &a.redis_key(&key)).await, "{key} kept");
    }
    a.delete("item:100").await.expect("delete");
    assert!(!exists(&direct, &a.redis_key("item:100")).await);

    // Invalidation: B holds keys in L1; A's writes and deletes evict them through pub/sub.
    for key in keys(150..170) {
        let _: Option<Item> = b.get(&key).await.unwrap();
    }
    let received = b.stats().l2.unwrap().invalidations_received;
    let fresh: Vec<(String, Item)> = (150..160)
        .map(|i| (format!("item:{i}"), item(i + 1000)))
        .collect();
    a.set_many(&fresh, TTL).await.unwrap();
    a.delete_many(&keys(160..170)).await.unwrap();
    assert!(
        eventually(async || b.stats().l2.unwrap().invalidations_received >= received + 2).await,
        "B receives A's invalidations through cluster pub/sub: {:?}",
        b.stats().l2
    );
    for i in 150..160 {
        let v: Option<Item> = b.get(&format!("item:{i}")).await.unwrap();
        assert_eq!(
            v,
            Some(item(i + 1000)),
            "B's L1 copy of item:{i} was evicted"
        );
    }
    for key in keys(160..170) {
        let v: Option<Item> = b.get(&key).await.unwrap();
        assert_eq!(v, None, "B's L1 copy of {key} was evicted");
    }

    // get_or_load with the Redis load lock, on many keys at once from both instances: one
    // load per key, the lock released (by a one-key script) on the key's own node.
    let loads = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..60u64 {
        for cache in [a.clone(), b.clone()] {
            let loads = Arc::clone(&loads);
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_load(&format!("loaded:{i}"), move || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, Never>(Some(item(i)))
                    })
                    .await
            }));
        }
    }
    for t in tasks {
        let v = tokio::time::timeout(OUTER, t)
            .await
            .expect("get_or_load in time")
            .expect("task")
            .expect("get_or_load");
        assert!(v.is_some());
    }
    let loaded = loads.load(Ordering::SeqCst);
    assert!(
        (60..=120).contains(&loaded),
        "at most one load per key and instance: {loaded}"
    );
    for i in 0..60 {
        let key = a.redis_key(&format!("loaded:{i}"));
        assert!(exists(&direct, &key).await, "{key} stored");
    }
    let lock_keys: i64 = {
        let mut n = 0;
        for i in 0..60 {
            n += direct
                .exists::<i64, _>(a.redis_key(&format!("__lock:loaded:{i}")))
                .await
                .unwrap();
        }
        n
    };
    assert_eq!(lock_keys, 0, "every load lock was released");
    let locks = a.stats().loads.lock_acquired + b.stats().loads.lock_acquired;
    assert!(locks >= 60, "the Redis load lock was used: {locks}");

    assert_no_redis_error("a", &a.stats());
    assert_no_redis_error("b", &b.stats());
    let _ = direct.quit().await;
}
