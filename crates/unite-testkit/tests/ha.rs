//! The Sentinel and Cluster groups of the testkit, from the OS binaries.

use std::time::Duration;

use fred::prelude::*;
use unite_testkit::{RedisClusterGroup, RedisSentinelGroup};

const OUTER: Duration = Duration::from_secs(30);

async fn connect(config: Config) -> Client {
    let client = Builder::from_config(config)
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(2))
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(2))
        .set_policy(ReconnectPolicy::new_constant(0, 100))
        .build()
        .expect("client builds");
    tokio::time::timeout(OUTER, client.init())
        .await
        .expect("connects in time")
        .expect("connects");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_spreads_keys_over_three_masters() {
    let cluster = RedisClusterGroup::start().expect("cluster starts");
    assert!(cluster.url().starts_with("redis-cluster://127.0.0.1:"));
    let client = connect(cluster.config().unwrap()).await;
    assert!(client.is_clustered());
    for i in 0..60 {
        let _: () = client
            .set(format!("k{i}"), i, None, None, false)
            .await
            .expect("SET on the owning node");
    }
    let per_node = cluster.keys_per_node();
    assert_eq!(per_node.len(), 3);
    assert!(
        per_node.iter().all(|n| n.is_some_and(|n| n > 0)),
        "every master holds some of 60 keys: {per_node:?}"
    );
    assert_eq!(per_node.iter().flatten().sum::<i64>(), 60);
    let _ = client.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_group_fails_over_to_the_replica() {
    let mut group = RedisSentinelGroup::start().expect("sentinel group starts");
    assert_eq!(group.current_master(), Some(group.master_addr()));
    let client = connect(group.config().unwrap()).await;
    let _: () = client.set("before", 1, None, None, false).await.unwrap();
    let _: i64 = client.wait(1, 2_000).await.unwrap();

    let failover = tokio::task::block_in_place(|| group.kill_master()).expect("fails over");
    assert_eq!(failover.new_master, group.replica_addr());
    eprintln!("failover took {:?}", failover.took);

    // The client finds the new master through the sentinels; the replicated key survived.
    let after = tokio::time::timeout(OUTER, async {
        loop {
            match client.get::<Option<i64>, _>("before").await {
                Ok(v) => {
                    let _: () = client.set("after", 2, None, None, false).await.unwrap();
                    return v;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("the client reaches the new master");
    assert_eq!(after, Some(1));
    let direct = connect(Config::from_url(&group.replica_url()).unwrap()).await;
    let role: Vec<Value> = direct
        .custom(fred::cmd!("ROLE"), Vec::<String>::new())
        .await
        .unwrap();
    assert_eq!(
        role.first().and_then(Value::as_str).as_deref(),
        Some("master")
    );
    assert_eq!(
        direct.get::<Option<i64>, _>("after").await.unwrap(),
        Some(2)
    );
    let _ = client.quit().await;
    let _ = direct.quit().await;
}
