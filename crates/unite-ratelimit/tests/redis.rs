//! Against the real Redis: shared budgets, penalties, overrides, fallback.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::config::ReconnectPolicy;
use unite_ratelimit::{
    Decision, DecisionSource, EndpointClass, ManualClock, Override, OverrideEntry, PenaltyConfig,
    Quota, RateLimiter, RedisGcra, Subject, Tier, TierQuotas,
};
use unite_testkit::{FaultProxy, Mode, RedisServer, TestRedis};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// A generous bound for anything that must come back; never a timing assertion.
const OUTER: Duration = Duration::from_secs(20);

/// Polls `done` every 20 ms until it holds or `OUTER` has passed; the caller asserts after.
async fn wait_until(mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() && started.elapsed() < OUTER {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn free_tier(quota: Quota) -> TierQuotas {
    TierQuotas::new(quota, quota)
}

async fn client_for(url: &str) -> Client {
    let config = fred::prelude::Config::from_url(url).unwrap();
    let client = Builder::from_config(config)
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(2))
        .set_policy(ReconnectPolicy::new_constant(0, 50))
        .build()
        .unwrap();
    client.init().await.unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_exactly_one_budget() {
    let redis = TestRedis::new().await;
    // 100 per hour: no refill during the test, so exactly 100 may pass.
    let quota = Quota::per_hour(nz(100));
    let build = |client: Client| {
        RateLimiter::builder()
            .redis(client)
            .key_prefix(redis.prefix())
            .tier(Tier::Free, free_tier(quota))
            .penalty(PenaltyConfig::disabled())
            .command_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let a = build(redis.client());
    let b = build(redis.new_client().await);
    let subject = Subject::user("shared-budget");
    let mut tasks = Vec::new();
    for i in 0..150 {
        let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
        let subject = subject.clone();
        tasks.push(tokio::spawn(async move {
            limiter
                .check(&subject, Tier::Free, EndpointClass::Default)
                .await
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        let d = tokio::time::timeout(OUTER, t).await.unwrap().unwrap();
        assert_eq!(d.source, DecisionSource::Shared, "{d:?}");
        allowed += usize::from(d.allowed);
    }
    assert_eq!(allowed, 100);
    // Another user and the ai class are budgets of their own.
    let other = a
        .check(&Subject::user("other"), Tier::Free, EndpointClass::Default)
        .await;
    assert!(other.allowed);
    let ai = b.check(&subject, Tier::Free, EndpointClass::Ai).await;
    assert!(ai.allowed);
}

#[tokio::test]
async fn penalties_grow_cap_and_decay_in_the_script() {
    let redis = TestRedis::new().await;
    let gcra = RedisGcra::new(redis.client(), redis.prefix(), Duration::from_secs(5));
    let penalty = PenaltyConfig::new(Duration::from_secs(1), Duration::from_secs(8))
        .with_decay_after(Duration::from_secs(100));
    let quota = Quota::per_second(nz(1));
    let s = Subject::Ip("192.0.2.10".parse().unwrap());
    let mut now = Duration::from_secs(1_700_000_000);
    let check = |at: Duration| {
        gcra.check(
            &s,
            Tier::Public,
            EndpointClass::Default,
            quota,
            "default",
            &penalty,
            Some(at),
        )
    };
    let mut waits = Vec::new();
    for strike in 1..=5 {
        assert!(check(now).await.unwrap().allowed);
        let d = check(now).await.unwrap();
        assert!(!d.allowed && d.blocked, "{d:?}");
        assert_eq!(d.strikes, strike);
        let wait = d.retry_after.unwrap();
        waits.push(wait.as_secs());
        now += wait / 2;
        let during = check(now).await.unwrap();
        assert!(!during.allowed);
        assert_eq!(
            during.strikes, strike,
            "refusals during a block do not add strikes"
        );
        assert_eq!(during.retry_after, Some(wait - wait / 2));
        now += wait - wait / 2;
    }
    assert_eq!(waits, [1, 2, 4, 8, 8]);
    // 250 quiet seconds forgive two strikes.
    now += Duration::from_secs(250);
    assert!(check(now).await.unwrap().allowed);
    let d = check(now).await.unwrap();
    assert_eq!(d.strikes, 4);
    assert_eq!(d.retry_after, Some(Duration::from_secs(8)));
    // A long quiet period forgives all of them.
    now += Duration::from_secs(10_000);
    let d = check(now).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.strikes, 0);

    // One key, under a hash tag naming the class and the subject.
    let key = gcra.key(&s, EndpointClass::Default);
    assert!(key.starts_with(redis.prefix()), "{key}");
    assert!(key.contains("{default:"), "{key}");
}

#[tokio::test]
async fn a_state_the_script_did_not_write_starts_afresh_and_a_streak_outlives_its_budget() {
    let redis = TestRedis::new().await;
    let client = redis.client();
    let gcra = RedisGcra::new(client.clone(), redis.prefix(), Duration::from_secs(5));
    let s = Subject::Ip("192.0.2.12".parse().unwrap());
    let key = gcra.key(&s, EndpointClass::Default);
    let quota = Quota::per_second(nz(1));
    let penalty = PenaltyConfig::default();
    let check = || {
        gcra.check(
            &s,
            Tier::Public,
            EndpointClass::Default,
            quota,
            "default",
            &penalty,
            None,
        )
    };
    for junk in ["", "not a number", "1:2", "-5", "12:x:3:4"] {
        let _: () = client.set(&key, junk, None, None, false).await.unwrap();
        let d = check().await.unwrap_or_else(|e| panic!("{junk:?}: {e}"));
        assert!(d.allowed, "{junk:?} reads as a fresh key: {d:?}");
        let stored: String = client.get(&key).await.unwrap();
        assert!(
            stored.parse::<u64>().is_ok(),
            "{junk:?} replaced by {stored:?}"
        );
    }
    // An arrival time further ahead than this quota ever leaves it (a lowered quota, a
    // server clock that went back) is brought back within the quota: one interval to wait.
    let _: () = client
        .set(&key, "99999999999999999", None, None, false)
        .await
        .unwrap();
    let d = check().await.unwrap();
    assert!(!d.allowed, "{d:?}");
    assert!(d.retry_after.unwrap() <= Duration::from_secs(1), "{d:?}");
    let _: () = client.del(&key).await.unwrap();
    assert!(check().await.unwrap().allowed);
    // A violation: the value now carries the streak, and the key lives as long as the streak
    // can matter (60 s decay per strike), not just as long as the 1 s budget.
    let d = check().await.unwrap();
    assert!(!d.allowed && d.strikes == 1, "{d:?}");
    let stored: String = client.get(&key).await.unwrap();
    assert_eq!(stored.split(':').count(), 4, "{stored}");
    let ttl: i64 = client.pttl(&key).await.unwrap();
    assert!(ttl > 50_000, "the streak's key expires in {ttl} ms");
    // Forgiving strips the streak and keeps the arrival time.
    gcra.forgive(&s).await.unwrap();
    let after: String = client.get(&key).await.unwrap();
    assert_eq!(Some(after.as_str()), stored.split(':').next());
}

#[tokio::test]
async fn penalties_with_the_server_clock_and_forgive() {
    let redis = TestRedis::new().await;
    let limiter = RateLimiter::builder()
        .redis(redis.client())
        .key_prefix(redis.prefix())
        .tier(Tier::Public, free_tier(Quota::per_hour(nz(1))))
        .command_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let s = Subject::Ip("192.0.2.11".parse().unwrap());
    let check = || limiter.check(&s, Tier::Public, EndpointClass::Default);
    assert!(check().await.allowed);
    let first = check().await;
    assert!(!first.allowed && first.blocked);
    assert_eq!(first.strikes, 1);
    assert_eq!(first.source, DecisionSource::Shared);
    // The quota wants an hour; the block is shorter, so the hour is what the client is told.
    assert!(first.retry_after.unwrap() > Duration::from_secs(3000));
    // Within the 1 s block, refusals keep the streak at 1.
    let during = check().await;
    assert!(!during.allowed);
    assert!(during.strikes <= 2);
    limiter.forgive(&s).await.unwrap();
    let after = check().await;
    assert!(!after.allowed, "forgiving clears penalties, not the quota");
    assert_eq!(after.strikes, 1);
}

/// The other instance picks overrides up on its refresh (every 100 ms here; the period is
/// validated to at most a second). The waits below are generous, not the period: a test never
/// asserts a timing, so a loaded machine cannot fail it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_set_or_cleared_on_one_instance_reach_the_other() {
    let redis = TestRedis::new().await;
    let build = |client: Client| {
        RateLimiter::builder()
            .redis(client)
            .key_prefix(redis.prefix())
            .command_timeout(Duration::from_secs(5))
            .override_refresh(Duration::from_millis(100))
            .build()
            .unwrap()
    };
    let a = build(redis.client());
    let b = build(redis.new_client().await);
    let vip = Subject::user("vip");
    let abuser = Subject::Ip("198.51.100.66".parse().unwrap());

    a.set_override(OverrideEntry::new(abuser.clone(), Override::Block).reason("abuse"))
        .await
        .unwrap();
    a.set_override(OverrideEntry::new(
        vip.clone(),
        Override::quota(Quota::per_minute(nz(5000))),
    ))
    .await
    .unwrap();
    // The writer applies it at once.
    let d = a.check(&abuser, Tier::Public, EndpointClass::Default).await;
    assert!(!d.allowed && d.blocked);
    assert_eq!((d.source, d.policy), (DecisionSource::Override, "blocked"));

    // The other instance (polling its cache, which counts nothing). `vip` was written last;
    // one refresh reads the whole hash, so both arrive together.
    wait_until(|| b.cached_override(&vip).is_some()).await;
    let seen = b.check(&abuser, Tier::Public, EndpointClass::Default).await;
    assert!(!seen.allowed && seen.blocked, "{seen:?}");
    assert_eq!(seen.source, DecisionSource::Override);
    let d = b.check(&vip, Tier::Free, EndpointClass::Default).await;
    assert_eq!((d.limit, d.policy), (5000, "override"));
    // The ai class keeps the tier's quota.
    let d = b.check(&vip, Tier::Free, EndpointClass::Ai).await;
    assert_eq!((d.limit, d.policy), (10, "ai"));

    let listed = b.list_overrides().await.unwrap();
    let subjects: Vec<_> = listed.iter().map(|e| e.subject.to_string()).collect();
    assert_eq!(subjects, ["ip:198.51.100.66", "user:vip"]);
    assert_eq!(listed[0].reason.as_deref(), Some("abuse"));

    // Clearing on b reaches a.
    assert!(b.clear_override(&abuser).await.unwrap());
    assert!(!b.clear_override(&abuser).await.unwrap());
    wait_until(|| a.cached_override(&abuser).is_none()).await;
    assert!(a.cached_override(&abuser).is_none());
    let d = a.check(&abuser, Tier::Public, EndpointClass::Default).await;
    assert!(d.allowed);
    assert_eq!(d.source, DecisionSource::Shared);

    // An exempt subject is never counted; an expired override is listed no more.
    a.set_override(OverrideEntry::new(abuser.clone(), Override::Exempt))
        .await
        .unwrap();
    for _ in 0..30 {
        let d = a.check(&abuser, Tier::Public, EndpointClass::Default).await;
        assert!(d.allowed);
        assert_eq!(d.policy, "exempt");
    }
    a.set_override(
        OverrideEntry::new(Subject::user("temp"), Override::Block)
            .expires_at(std::time::SystemTime::now() - Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let listed = a.list_overrides().await.unwrap();
    assert!(listed.iter().all(|e| e.subject != Subject::user("temp")));
    assert_eq!(listed.len(), 2);
}

/// Every limiter built keeps refreshing: its background task starts only once the limiter
/// exists (a task started during construction could run first and end at once, leaving that
/// instance blind to other instances' overrides for good). That race depends on scheduling,
/// so against the old code this test failed only sometimes (four runs of five on a busy
/// two-core machine); many instances raise the odds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_built_keeps_refreshing_overrides() {
    let redis = TestRedis::new().await;
    let build = || {
        RateLimiter::builder()
            .redis(redis.client())
            .key_prefix(redis.prefix())
            .command_timeout(Duration::from_secs(5))
            .override_refresh(Duration::from_millis(100))
            .build()
            .unwrap()
    };
    let instances: Vec<RateLimiter> = (0..128).map(|_| build()).collect();
    let writer = build();
    let subject = Subject::user("seen-everywhere");
    writer
        .set_override(OverrideEntry::new(subject.clone(), Override::Exempt))
        .await
        .unwrap();
    // How many instances disagree with `present`.
    let disagreeing = |present: bool| {
        instances
            .iter()
            .filter(|l| l.cached_override(&subject).is_some() != present)
            .count()
    };
    wait_until(|| disagreeing(true) == 0).await;
    assert_eq!(
        disagreeing(true),
        0,
        "instances that never saw the override"
    );
    // And a clear reaches them all too.
    assert!(writer.clear_override(&subject).await.unwrap());
    wait_until(|| disagreeing(false) == 0).await;
    assert_eq!(disagreeing(false), 0, "instances that never saw the clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_redis_falls_back_locally_and_recovers() {
    let redis = TestRedis::new().await;
    let proxy = FaultProxy::start_for_url(redis.url()).await.unwrap();
    let client = client_for(&proxy.proxied_url(redis.url())).await;
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder()
        .redis(client)
        .key_prefix(redis.prefix())
        .clock(Arc::new(clock.clone()))
        .tier(Tier::Free, free_tier(Quota::per_hour(nz(10))))
        .penalty(PenaltyConfig::disabled())
        .expected_instances(nz(2))
        .command_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let s = Subject::user("fallback");
    let check = || async {
        tokio::time::timeout(OUTER, limiter.check(&s, Tier::Free, EndpointClass::Default))
            .await
            .expect("a decision always comes back")
    };
    let d = check().await;
    assert_eq!(d.source, DecisionSource::Shared);
    assert!(d.allowed);

    proxy.set_mode(Mode::Blackhole);
    // Each instance enforces half of the quota on its own: 5 per hour.
    let decisions: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..8 {
            v.push(check().await);
        }
        v
    };
    assert!(
        decisions
            .iter()
            .all(|d| d.source == DecisionSource::Fallback)
    );
    let allowed = decisions.iter().filter(|d| d.allowed).count();
    assert_eq!(allowed, 5);
    assert_eq!(decisions[0].limit, 5);
    // The breaker opened: further decisions do not wait for Redis at all.
    assert_eq!(
        limiter.breaker().unwrap().state(),
        unite_breaker::State::Open
    );

    proxy.set_mode(Mode::Pass);
    // Past the breaker's wait, a trial call reaches Redis again.
    clock.advance(Duration::from_secs(60));
    let mut recovered = None;
    for _ in 0..100 {
        let d = check().await;
        if d.source == DecisionSource::Shared {
            recovered = Some(d);
            break;
        }
        clock.advance(Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = recovered.expect("shared decisions resume after the proxy passes again");
    assert!(d.allowed, "{d:?}");
    // Two decisions reached Redis in the open; the calls that timed out in the blackhole were
    // held by the proxy and delivered when it healed, so Redis may have counted them too (as
    // a real partition would): never more than those.
    let failures = limiter.breaker().unwrap().snapshot().failures;
    assert!(failures >= 1);
    let floor = 8u32.saturating_sub(u32::try_from(failures).unwrap());
    assert!(
        (floor..=8).contains(&d.remaining),
        "{} not in {floor}..=8",
        d.remaining
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_while_redis_is_unreachable() {
    let redis = TestRedis::new().await;
    let proxy = FaultProxy::start_for_url(redis.url()).await.unwrap();
    let client = client_for(&proxy.proxied_url(redis.url())).await;
    let limiter = RateLimiter::builder()
        .redis(client)
        .key_prefix(redis.prefix())
        .fail_closed(true)
        .command_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let s = Subject::user("closed");
    assert!(
        limiter
            .check(&s, Tier::Pro, EndpointClass::Default)
            .await
            .allowed
    );
    proxy.set_mode(Mode::Blackhole);
    for _ in 0..3 {
        let d = tokio::time::timeout(OUTER, limiter.check(&s, Tier::Pro, EndpointClass::Default))
            .await
            .expect("a decision always comes back");
        assert!(!d.allowed);
        assert_eq!(d.source, DecisionSource::Unavailable);
        assert!(d.retry_after.unwrap() >= Duration::from_secs(1));
    }
}

#[tokio::test]
async fn the_script_is_reloaded_after_script_flush() {
    let server = RedisServer::start().unwrap();
    let client = client_for(&server.url()).await;
    let limiter = RateLimiter::builder()
        .redis(client.clone())
        .command_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let s = Subject::user("noscript");
    let d = limiter.check(&s, Tier::Free, EndpointClass::Default).await;
    assert_eq!((d.source, d.remaining), (DecisionSource::Shared, 99));
    let _: () = client.script_flush(false).await.unwrap();
    let d = limiter.check(&s, Tier::Free, EndpointClass::Default).await;
    assert_eq!((d.source, d.remaining), (DecisionSource::Shared, 98));
    let exists: Vec<bool> = client
        .script_exists(
            unite_ratelimit::RedisGcra::new(client.clone(), "", Duration::from_secs(1))
                .script_sha(),
        )
        .await
        .unwrap();
    assert_eq!(exists, [true]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_save_round_trips_and_never_allow_more_than_the_quota_together() {
    let redis = TestRedis::new().await;
    // 1,600 per hour: no meaningful refill during the test; the largest reservation is
    // min(64, 1600 / 16) = 64 decisions.
    let quota = Quota::per_hour(nz(1_600));
    let build = |client: Client| {
        RateLimiter::builder()
            .redis(client)
            .key_prefix(redis.prefix())
            .tier(Tier::Free, free_tier(quota))
            .reserve(nz(64), Duration::from_secs(1))
            .command_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let a = build(redis.client());
    let b = build(redis.new_client().await);
    let subject = Subject::user("reserving");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
        let subject = subject.clone();
        tasks.push(tokio::spawn(async move {
            let (mut allowed, mut reserved, mut refused) = (0u32, 0u32, 0u32);
            for _ in 0..400 {
                let d = limiter
                    .check(&subject, Tier::Free, EndpointClass::Default)
                    .await;
                assert_ne!(d.source, DecisionSource::Fallback, "{d:?}");
                allowed += u32::from(d.allowed);
                reserved += u32::from(d.source == DecisionSource::Reserved);
                refused += u32::from(!d.allowed);
            }
            (allowed, reserved, refused)
        }));
    }
    let (mut allowed, mut reserved, mut refused) = (0, 0, 0);
    for t in tasks {
        let (x, y, z) = tokio::time::timeout(OUTER, t).await.unwrap().unwrap();
        allowed += x;
        reserved += y;
        refused += z;
    }
    eprintln!("allowed {allowed} of 3,200 (quota 1,600), {reserved} of them reserved");
    assert_eq!(allowed + refused, 3_200);
    assert!(allowed <= 1_600, "never more than the quota: {allowed}");
    // What the two instances reserved and had not spent when every task was done is lost,
    // at most one largest reservation each.
    assert!(
        allowed >= 1_600 - 2 * 64,
        "at most two reservations lost: {allowed}"
    );
    assert!(
        reserved >= 800,
        "most allowed decisions came from reservations: {reserved} of {allowed}"
    );
    assert!(a.stats().reserved_keys == 1 && b.stats().reserved_keys == 1);
}

/// The server's time in microseconds, read before anything it is compared with.
async fn server_micros(client: &Client) -> i64 {
    let time: Vec<i64> = client
        .custom(
            fred::types::CustomCommand::new_static("TIME", fred::types::ClusterHash::Random, false),
            Vec::<fred::types::Value>::new(),
        )
        .await
        .unwrap();
    time[0] * 1_000_000 + time[1]
}

/// One decision of `s` in the default class, by the server's clock.
async fn decide(gcra: &RedisGcra, s: &Subject, quota: Quota, penalty: &PenaltyConfig) -> Decision {
    gcra.check(
        s,
        Tier::Free,
        EndpointClass::Default,
        quota,
        "default",
        penalty,
        None,
    )
    .await
    .unwrap()
}

/// A key's plain state, in the server's microseconds.
struct PlainState {
    /// Read before the key, so the expiry computed from it is never later than the real one.
    now: i64,
    tat: i64,
    ttl_ms: i64,
}

impl PlainState {
    async fn read(client: &Client, key: &str) -> Self {
        let now = server_micros(client).await;
        let tat = client.get::<String, _>(key).await.unwrap().parse().unwrap();
        let ttl_ms = client.pttl(key).await.unwrap();
        Self { now, tat, ttl_ms }
    }

    /// The script's expiry rule: at least a second past the arrival time (the slack covers
    /// the millisecond rounding of PTTL and the time between reading the clock and PTTL), and
    /// not long after it.
    fn assert_expiry_rule(&self, what: &str) {
        let (tat, ttl_ms) = (self.tat, self.ttl_ms);
        assert!(
            ttl_ms > 0,
            "{what}: the plain state has an expiry ({ttl_ms})"
        );
        let expires = self.now + ttl_ms * 1000;
        assert!(
            expires >= tat + 500_000,
            "{what}: expires at {expires}, less than a second after its arrival time {tat}"
        );
        assert!(
            expires <= tat + 3_000_000,
            "{what}: expires at {expires}, long after its arrival time {tat}"
        );
    }
}

#[tokio::test]
async fn a_synced_clock_reads_the_server_clock_and_decides_as_the_script_would() {
    let redis = TestRedis::new().await;
    let synced = RedisGcra::new(redis.client(), redis.prefix(), Duration::from_secs(5));
    let unsynced = RedisGcra::new(redis.client(), redis.prefix(), Duration::from_secs(5));
    assert_eq!(
        synced.server_time(),
        None,
        "no reading before the first sync"
    );
    synced.sync_clock().await.unwrap();
    let read = synced.server_time().expect("a reading after a sync");
    let server = server_micros(&redis.client()).await;
    let read = i64::try_from(
        read.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap();
    // A wrong offset (a unit or a sign) is off by years; a right one by a round trip.
    assert!(
        (read - server).abs() < 1_000_000,
        "this instance reads {read}, the server said {server}"
    );
    // The instance sending its reading and the one letting the script read TIME share one
    // budget of 10 an hour: exactly 10 pass between them.
    let quota = Quota::per_hour(nz(10));
    let s = Subject::user("clock");
    let penalty = PenaltyConfig::disabled();
    let mut allowed = 0;
    for i in 0..30 {
        let gcra = if i % 2 == 0 { &synced } else { &unsynced };
        let d = decide(gcra, &s, quota, &penalty).await;
        allowed += u32::from(d.allowed);
        if d.allowed {
            assert_eq!(d.remaining, 10 - allowed, "{d:?}");
        }
    }
    assert_eq!(allowed, 10);
}

#[tokio::test]
async fn a_key_never_expires_before_its_arrival_time() {
    let redis = TestRedis::new().await;
    let client = redis.client();
    let gcra = RedisGcra::new(client.clone(), redis.prefix(), Duration::from_secs(5));
    gcra.sync_clock().await.unwrap();
    // 1,000 a second with a burst of 100,000: the arrival time may run 100 s ahead, so
    // reservations of 1,000 move it a whole second each (a new expiry every time) and single
    // decisions move it within one second (the expiry kept).
    let quota = Quota::per_second(nz(1000)).with_burst(nz(100_000));
    let penalty = PenaltyConfig::disabled();
    let s = Subject::user("expiry");
    let key = gcra.key(&s, EndpointClass::Default);
    // A live key whose arrival time is seconds in the past (an idle key with a long expiry, as
    // a value written with a longer expiry leaves it): the decision jumps it to now, and the
    // expiry must follow the new arrival time, not the old one.
    let stale = server_micros(&client).await - 5_000_000;
    let _: () = client
        .set(&key, stale, Some(Expiration::EX(60)), None, false)
        .await
        .unwrap();
    for i in 0..200u32 {
        let want = if i % 4 == 0 { 1000 } else { 1 + i % 7 };
        let (d, granted) = gcra
            .reserve(
                &s,
                Tier::Free,
                EndpointClass::Default,
                quota,
                "default",
                &penalty,
                None,
                want,
            )
            .await
            .unwrap();
        assert!(
            d.allowed && granted == want,
            "{i}: {d:?}, {granted} of {want}"
        );
        let state = PlainState::read(&client, &key).await;
        state.assert_expiry_rule(&format!("decision {i}"));
        // The reply's reset is the arrival time, from the server's clock.
        let reset = i64::try_from(d.reset.as_micros()).unwrap();
        assert!((state.tat - state.now - reset).abs() < 1_000_000);
    }

    // Forgiving a streak leaves the plain state with the same expiry rule.
    let strict = Quota::per_hour(nz(1));
    let penalty = PenaltyConfig::default();
    let s = Subject::user("forgiven");
    let key = gcra.key(&s, EndpointClass::Default);
    for _ in 0..2 {
        decide(&gcra, &s, strict, &penalty).await;
    }
    gcra.forgive(&s).await.unwrap();
    PlainState::read(&client, &key)
        .await
        .assert_expiry_rule("forgiven");

    // A value Redis cannot add to is written afresh, with the same rule.
    let s = Subject::user("junk");
    let key = gcra.key(&s, EndpointClass::Default);
    for junk in ["1.5", "0x10", " 5", "-inf"] {
        let _: () = client.set(&key, junk, None, None, false).await.unwrap();
        let d = decide(&gcra, &s, quota, &penalty).await;
        assert!(d.allowed, "{junk:?}: {d:?}");
        PlainState::read(&client, &key)
            .await
            .assert_expiry_rule(&format!("{junk:?}"));
    }
}

#[tokio::test]
async fn without_penalties_an_arrival_time_far_ahead_is_brought_back_and_kept() {
    let redis = TestRedis::new().await;
    let client = redis.client();
    let gcra = RedisGcra::new(client.clone(), redis.prefix(), Duration::from_secs(5));
    let quota = Quota::per_second(nz(1));
    let penalty = PenaltyConfig::disabled();
    for (i, far) in ["inf", "99999999999999999"].into_iter().enumerate() {
        let s = Subject::user(format!("far-{i}"));
        let key = gcra.key(&s, EndpointClass::Default);
        // No expiry: only what the script writes can ever free this key.
        let _: () = client.set(&key, far, None, None, false).await.unwrap();
        let d = decide(&gcra, &s, quota, &penalty).await;
        assert!(!d.allowed, "{far}: {d:?}");
        assert!(
            d.retry_after.unwrap() <= Duration::from_secs(1),
            "{far}: {d:?}"
        );
        let stored: String = client.get(&key).await.unwrap();
        assert!(stored.parse::<i64>().is_ok(), "{far} kept as {stored:?}");
        let ttl: i64 = client.pttl(&key).await.unwrap();
        assert!(
            ttl > 0,
            "{far}: the brought-back state has an expiry ({ttl})"
        );
        // One interval later the key is served again.
        tokio::time::sleep(d.retry_after.unwrap() + Duration::from_millis(100)).await;
        let d = decide(&gcra, &s, quota, &penalty).await;
        assert!(d.allowed, "{far}: still refused after the interval: {d:?}");
    }
    // A small overshoot (another instance's reading of the clock slightly ahead) is refused
    // without a write: refusals do not move the budget.
    let s = Subject::user("slightly-ahead");
    let key = gcra.key(&s, EndpointClass::Default);
    let ahead = server_micros(&client).await + 1_500_000; // t = 1 s, tau = 0: 0.5 s over
    let _: () = client
        .set(&key, ahead, Some(Expiration::EX(60)), None, false)
        .await
        .unwrap();
    let d = decide(&gcra, &s, quota, &penalty).await;
    assert!(!d.allowed, "{d:?}");
    let stored: i64 = client
        .get::<String, _>(&key)
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(stored, ahead, "a refusal wrote the key");
}
