//! The shared limiter against a real three-master Redis Cluster (started from the OS binaries
//! by the testkit): the decision script (one hash-tagged key a decision), its loading on every
//! primary, penalties, forgiveness and overrides, over subjects spread across all masters.
//! Any Redis error (a CROSSSLOT refusal included) would turn a decision into a local
//! fallback, so every decision is checked to be `Shared`.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use fred::prelude::*;
use unite_ratelimit::{
    DecisionSource, EndpointClass, Override, OverrideEntry, PenaltyConfig, Quota, RateLimiter,
    RedisGcra, Subject, Tier, TierQuotas,
};
use unite_testkit::RedisClusterGroup;

const OUTER: Duration = Duration::from_secs(30);

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_budgets_penalties_and_overrides_work_on_a_three_master_cluster() {
    let cluster =
        tokio::task::block_in_place(RedisClusterGroup::start).expect("the cluster starts");
    let quota = Quota::per_hour(nz(5));
    let build = |client: Client| {
        RateLimiter::builder()
            .redis(client)
            .key_prefix("rl:")
            .tier(Tier::Free, TierQuotas::new(quota, quota))
            .penalty(PenaltyConfig::default())
            .command_timeout(Duration::from_secs(5))
            .override_refresh(Duration::from_millis(100))
            .build()
            .expect("limiter builds")
    };
    let direct = cluster_client(&cluster).await;
    let a = build(cluster_client(&cluster).await);
    let b = build(cluster_client(&cluster).await);

    // 60 subjects, 8 requests each, alternating instances: exactly the quota passes per
    // subject, every decision made by the script in Redis.
    for u in 0..60 {
        let subject = Subject::user(format!("user-{u}"));
        let mut allowed = 0;
        for i in 0..8 {
            let limiter = if i % 2 == 0 { &a } else { &b };
            let d = limiter
                .check(&subject, Tier::Free, EndpointClass::Default)
                .await;
            assert_eq!(
                d.source,
                DecisionSource::Shared,
                "decision {i} for {subject} fell back (a Redis error): {d:?}"
            );
            allowed += u32::from(d.allowed);
            if i == 7 {
                assert!(d.strikes >= 1, "penalties count strikes: {d:?}");
            }
        }
        assert_eq!(allowed, 5, "{subject}: one shared budget across instances");
    }
    let per_node = cluster.keys_per_node();
    assert!(
        per_node.iter().all(|n| n.is_some_and(|n| n > 0)),
        "the subjects' keys land on every master: {per_node:?}"
    );

    // Forgive strips the penalty streak in every class (one key per script call).
    let first = Subject::user("user-0");
    a.forgive(&first).await.expect("forgive on the cluster");
    let d = a.check(&first, Tier::Free, EndpointClass::Default).await;
    assert_eq!(d.source, DecisionSource::Shared);
    assert_eq!(d.strikes, 1, "strikes restart after forgiveness: {d:?}");

    // The script is loaded on every primary, and reloaded after a SCRIPT FLUSH on all of
    // them (as after a restart or a failover).
    let gcra = RedisGcra::new(direct.clone(), "rl-direct:", Duration::from_secs(5));
    gcra.load().await.expect("SCRIPT LOAD on every primary");
    let _: () = direct
        .script_flush_cluster(false)
        .await
        .expect("SCRIPT FLUSH everywhere");
    for u in 0..30 {
        let d = gcra
            .check(
                &Subject::user(format!("direct-{u}")),
                Tier::Free,
                EndpointClass::Ai,
                quota,
                "free",
                &PenaltyConfig::disabled(),
                None,
            )
            .await
            .expect("EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA on the owning node");
        assert!(d.allowed);
    }

    // Overrides: one hash and its version counter under one hash tag.
    let vip = Subject::user("vip");
    let abuser = Subject::user("abuser");
    a.set_override(OverrideEntry::new(abuser.clone(), Override::Block))
        .await
        .expect("set override");
    a.set_override(OverrideEntry::new(
        vip.clone(),
        Override::quota(Quota::per_minute(nz(5000))),
    ))
    .await
    .expect("set override");
    let started = Instant::now();
    while b.cached_override(&vip).is_none() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = b.check(&abuser, Tier::Free, EndpointClass::Default).await;
    assert!(!d.allowed && d.blocked, "B sees A's block: {d:?}");
    assert_eq!(d.source, DecisionSource::Override);
    let d = b.check(&vip, Tier::Free, EndpointClass::Default).await;
    assert_eq!((d.limit, d.policy), (5000, "override"));
    assert_eq!(b.list_overrides().await.expect("list").len(), 2);
    assert!(b.clear_override(&abuser).await.expect("clear"));
    let started = Instant::now();
    while a.cached_override(&abuser).is_some() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.cached_override(&abuser).is_none(), "A sees B's clear");

    for (name, limiter) in [("a", &a), ("b", &b)] {
        let stats = limiter.stats();
        assert_eq!(stats.mode, "shared", "{name}: {stats:?}");
        let breaker = stats.breaker.expect("a breaker");
        assert_eq!(
            breaker.failures, 0,
            "{name}: no Redis call failed: {breaker:?}"
        );
    }
    let _ = direct.quit().await;
}
