//! The shared limiter behind Redis Sentinel (master, replica, three sentinels, started from
//! the OS binaries by the testkit): the master is killed (SIGKILL) under a steady stream of
//! decisions; the limiter falls back to its local share meanwhile and returns to the shared
//! budget on the promoted replica by itself.
//!
//! The budget is not reset by the failover: state replicated before the kill survives
//! exactly, and the shared state of a key goes back by at most the decisions the old master
//! acknowledged but had not replicated (Redis replication is asynchronous). Printed for the
//! README: decisions made without Redis, decisions lost, how long the sentinels took, and how
//! long the limiter was without Redis. Nothing here asserts a duration.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::*;
use unite_ratelimit::{
    DecisionSource, EndpointClass, PenaltyConfig, Quota, RateLimiter, RedisGcra, Subject, Tier,
    TierQuotas,
};
use unite_testkit::RedisSentinelGroup;

const OUTER: Duration = Duration::from_secs(30);
const STREAM: Duration = Duration::from_secs(15);
const KILL_AFTER: Duration = Duration::from_secs(5);
const EVERY: Duration = Duration::from_millis(10);
const PREFIX: &str = "rl-st:";

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn per_day(n: u32) -> Quota {
    Quota::new(nz(n), Duration::from_secs(86_400)).expect("a valid quota")
}

async fn client(config: Config) -> Client {
    let client = Builder::from_config(config)
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(1))
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(5))
        .set_policy(ReconnectPolicy::new_constant(0, 100))
        .build()
        .expect("client builds");
    tokio::time::timeout(OUTER, client.init())
        .await
        .expect("connects in time")
        .expect("connects");
    client
}

/// The GCRA state (theoretical arrival time, µs) of `subject` on the server of `redis`.
async fn tat(redis: &Client, subject: &Subject) -> i64 {
    let key = RedisGcra::new(redis.clone(), PREFIX, Duration::from_secs(5))
        .key(subject, EndpointClass::Default);
    let v: Option<String> = redis.get(key).await.expect("GET the GCRA state");
    v.expect("the GCRA state exists")
        .split(':')
        .next()
        .expect("split yields a first part")
        .parse()
        .expect("an integer")
}

/// `master_repl_offset` of the server `redis` is connected to.
async fn repl_offset(redis: &Client) -> i64 {
    let info: String = redis
        .info(Some(fred::types::InfoKind::Replication))
        .await
        .expect("INFO replication");
    info.lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("master_repl_offset")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_follow_the_promoted_replica_and_the_budget_survives() {
    let mut group =
        tokio::task::block_in_place(RedisSentinelGroup::start).expect("the sentinel group starts");
    let limiter = RateLimiter::builder()
        .redis(client(group.config().unwrap()).await)
        .key_prefix(PREFIX)
        .tier(Tier::Free, TierQuotas::new(per_day(100), per_day(100)))
        // A long stream on one key: 1 000 000 a day (one every 86.4 ms) never runs dry here,
        // and every allowed decision moves the key's state forward by exactly one interval.
        .tier(
            Tier::Pro,
            TierQuotas::new(per_day(1_000_000), per_day(1_000_000)),
        )
        .penalty(PenaltyConfig::disabled())
        .command_timeout(Duration::from_millis(250))
        .build()
        .expect("limiter builds");
    let master =
        client(Config::from_url(&format!("redis://{}", group.master_addr())).unwrap()).await;
    let replica = client(Config::from_url(&group.replica_url()).unwrap()).await;

    // A budget spent before the failover, and replicated.
    let budget = Subject::user("budget");
    for i in 0..60 {
        let d = limiter
            .check(&budget, Tier::Free, EndpointClass::Default)
            .await;
        assert!(
            d.allowed && d.source == DecisionSource::Shared,
            "decision {i}: {d:?}"
        );
    }
    let streamed = Subject::user("stream");
    let d = limiter
        .check(&streamed, Tier::Pro, EndpointClass::Default)
        .await;
    assert_eq!(d.source, DecisionSource::Shared);
    let offset = repl_offset(&master).await;
    let start = Instant::now();
    while repl_offset(&replica).await < offset {
        assert!(start.elapsed() < OUTER, "the replica did not catch up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let tat_before = tat(&master, &streamed).await;
    let _ = master.quit().await;

    // The stream: one decision every 10 ms on one key.
    let stop = Arc::new(AtomicBool::new(false));
    let stream = {
        let limiter = limiter.clone();
        let streamed = streamed.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut decisions = Vec::new();
            let start = Instant::now();
            while start.elapsed() < STREAM && !stop.load(Ordering::Relaxed) {
                let d = limiter
                    .check(&streamed, Tier::Pro, EndpointClass::Default)
                    .await;
                decisions.push((Instant::now(), d.source, d.allowed));
                tokio::time::sleep(EVERY).await;
            }
            decisions
        })
    };
    tokio::time::sleep(KILL_AFTER).await;
    let killed_at = Instant::now();
    let failover = match tokio::task::block_in_place(|| group.kill_master()) {
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
    let decisions = tokio::time::timeout(STREAM + OUTER, stream)
        .await
        .expect("the stream ends")
        .expect("the stream did not panic");

    let without_redis = decisions
        .iter()
        .filter(|(_, s, _)| *s != DecisionSource::Shared)
        .count();
    let shared_allowed = decisions
        .iter()
        .filter(|(_, s, a)| *s == DecisionSource::Shared && *a)
        .count();
    let recovered = decisions
        .iter()
        .find(|(at, s, _)| *at > killed_at && *s == DecisionSource::Shared)
        .map(|(at, ..)| *at - killed_at);
    assert!(
        decisions
            .iter()
            .all(|(_, s, _)| matches!(s, DecisionSource::Shared | DecisionSource::Fallback)),
        "fail-open: decisions without Redis come from the local fallback"
    );
    assert!(
        recovered.is_some(),
        "no shared decision after the failover: {} decisions, {without_redis} without Redis",
        decisions.len()
    );

    // How far the key's shared state went back: allowed shared decisions the new master
    // does not know about.
    let interval = i64::try_from(per_day(1_000_000).emission_interval().as_micros()).unwrap();
    let tat_after = tat(&replica, &streamed).await;
    let counted = (tat_after - tat_before) / interval;
    let lost = i64::try_from(shared_allowed).unwrap() - counted;
    let acked_just_before_kill = decisions
        .iter()
        .filter(|(at, s, _)| {
            *s == DecisionSource::Shared
                && *at <= killed_at
                && killed_at - *at < Duration::from_secs(1)
        })
        .count();
    eprintln!(
        "limiter sentinel failover: {} decisions, {without_redis} made without Redis (local \
         fallback), {lost} shared decisions lost (state went back by {lost} requests); \
         sentinels promoted the replica in {:?}; shared decisions again {:?} after the kill",
        decisions.len(),
        failover.took,
        recovered
    );
    assert!(
        lost >= 0,
        "the new master counts more than was decided: {counted} > {shared_allowed}"
    );
    assert!(
        lost <= i64::try_from(acked_just_before_kill).unwrap(),
        "the state went back by {lost} requests, more than the {acked_just_before_kill} \
         acknowledged in the last second before the kill"
    );

    // The budget replicated before the failover survives exactly: 40 of 100 left.
    let mut allowed = 0;
    for _ in 0..60 {
        let d = limiter
            .check(&budget, Tier::Free, EndpointClass::Default)
            .await;
        assert_eq!(d.source, DecisionSource::Shared, "{d:?}");
        allowed += u32::from(d.allowed);
    }
    assert_eq!(allowed, 40, "the failover did not reset the budget");
    let _ = replica.quit().await;
}
