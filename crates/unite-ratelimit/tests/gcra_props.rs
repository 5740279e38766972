//! Property test: the in-process limiter (governor) and the Redis script give the same answers
//! for the same sequence of requests at the same times.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use unite_ratelimit::{
    DecisionSource, EndpointClass, ManualClock, PenaltyConfig, Quota, RateLimiter, RedisGcra,
    Subject, Tier, TierQuotas,
};
use unite_testkit::TestRedis;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

#[derive(Debug, Clone)]
struct Case {
    limit: u32,
    window_ms: u64,
    burst: u32,
    penalty: Option<(u64, u64, u64, u32)>,
    /// (microseconds to advance before the request, which of three clients sends it)
    steps: Vec<(u64, u8)>,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        1u32..30,
        100u64..120_000,
        1u32..10,
        proptest::option::of((1u64..2_000, 1u64..20_000, 1u64..30_000, 0u32..3)),
        proptest::collection::vec(
            (
                prop_oneof![Just(0u64), 0u64..50_000, 0u64..5_000_000],
                0u8..3,
            ),
            1..60,
        ),
    )
        .prop_map(|(limit, window_ms, burst, penalty, steps)| Case {
            limit,
            window_ms,
            burst,
            penalty,
            steps,
        })
}

async fn run(case: Case) -> Result<(), TestCaseError> {
    let redis = TestRedis::new().await;
    let quota = Quota::new(nz(case.limit), Duration::from_millis(case.window_ms))
        .unwrap()
        .with_burst(nz(case.burst));
    let penalty = match case.penalty {
        None => PenaltyConfig::disabled(),
        Some((base_ms, extra_ms, decay_ms, free)) => PenaltyConfig::new(
            Duration::from_millis(base_ms),
            Duration::from_millis(base_ms + extra_ms),
        )
        .with_decay_after(Duration::from_millis(decay_ms))
        .with_free_strikes(free),
    };
    let clock = ManualClock::new();
    let local = RateLimiter::builder()
        .tier(Tier::Public, TierQuotas::new(quota, quota))
        .penalty(penalty)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let shared = RedisGcra::new(redis.client(), redis.prefix(), Duration::from_secs(5));
    // Any epoch works: the script only ever subtracts times.
    let epoch = Duration::from_secs(1_700_000_000) + Duration::from_micros(123_457);
    for (i, (advance_us, client)) in case.steps.iter().enumerate() {
        clock.advance(Duration::from_micros(*advance_us));
        let subject = Subject::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, *client)));
        let l = local
            .check(&subject, Tier::Public, EndpointClass::Default)
            .await;
        let at = epoch + unite_ratelimit::Clock::now(&clock);
        let r = shared
            .check(
                &subject,
                Tier::Public,
                EndpointClass::Default,
                quota,
                "default",
                &penalty,
                Some(at),
            )
            .await
            .unwrap();
        prop_assert_eq!(l.source, DecisionSource::Local);
        prop_assert_eq!(
            (l.allowed, l.remaining, l.retry_after, l.strikes, l.blocked),
            (r.allowed, r.remaining, r.retry_after, r.strikes, r.blocked),
            "step {} of {:?}",
            i,
            case
        );
        if l.allowed {
            // The local reset is an upper bound, exact to one emission interval.
            prop_assert!(
                l.reset >= r.reset,
                "step {}: {:?} < {:?}",
                i,
                l.reset,
                r.reset
            );
            prop_assert!(l.reset - r.reset < quota.emission_interval());
        } else {
            prop_assert_eq!(l.reset, r.reset, "step {}", i);
        }
    }
    Ok(())
}

proptest! {
    // Each case makes up to 60 Redis round trips.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn local_and_redis_agree(case in cases()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(case))?;
    }
}

/// A reservation of `n` at one instant grants exactly what `n` single decisions at that
/// instant would allow (stopping at the first refusal), and leaves the same state behind.
/// Penalties off: a short grant is not a violation, while the single decision that finds the
/// budget spent is one.
async fn run_reserve(case: Case, wants: Vec<u32>) -> Result<(), TestCaseError> {
    let redis = TestRedis::new().await;
    let quota = Quota::new(nz(case.limit), Duration::from_millis(case.window_ms))
        .unwrap()
        .with_burst(nz(case.burst));
    let penalty = PenaltyConfig::disabled();
    let gcra = |name: &str| {
        RedisGcra::new(
            redis.client(),
            format!("{}{name}:", redis.prefix()),
            Duration::from_secs(5),
        )
    };
    let (reserving, single) = (gcra("r"), gcra("s"));
    let (tier, class) = (Tier::Public, EndpointClass::Default);
    let mut at = Duration::from_secs(1_700_000_000);
    for (i, ((advance_us, client), want)) in case.steps.iter().zip(&wants).enumerate() {
        at += Duration::from_micros(*advance_us);
        let subject = Subject::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, *client)));
        let (r, granted) = reserving
            .reserve(
                &subject,
                tier,
                class,
                quota,
                "default",
                &penalty,
                Some(at),
                *want,
            )
            .await
            .unwrap();
        let mut singles = Vec::new();
        while singles.len() < *want as usize {
            let d = single
                .check(&subject, tier, class, quota, "default", &penalty, Some(at))
                .await
                .unwrap();
            let refused = !d.allowed;
            singles.push(d);
            if refused {
                break;
            }
        }
        let allowed: Vec<_> = singles.iter().filter(|d| d.allowed).collect();
        prop_assert_eq!(
            granted as usize,
            allowed.len(),
            "step {} wanting {}: {:?}",
            i,
            want,
            case
        );
        let expect = allowed.last().copied().unwrap_or(&singles[0]);
        prop_assert_eq!(
            (r.allowed, r.remaining, r.reset, r.retry_after),
            (
                expect.allowed,
                expect.remaining,
                expect.reset,
                expect.retry_after
            ),
            "step {} wanting {}: {:?}",
            i,
            want,
            case
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_reservation_grants_what_single_decisions_would(
        case in cases(),
        wants in proptest::collection::vec(1u32..12, 60),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_reserve(case, wants))?;
    }
}
