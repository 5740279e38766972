//! A flood of distinct keys cannot grow the in-process state past its cap.

use std::net::{IpAddr, Ipv4Addr};
use std::num::{NonZeroU32, NonZeroUsize};

use unite_ratelimit::{EndpointClass, Quota, RateLimiter, Subject, Tier, TierQuotas};

const CAP: usize = 10_000;

fn ip(n: u32) -> Subject {
    Subject::Ip(IpAddr::V4(Ipv4Addr::from(n)))
}

#[tokio::test]
async fn a_million_distinct_keys_stay_under_the_cap() {
    let limiter = RateLimiter::builder()
        .max_keys(NonZeroUsize::new(CAP).unwrap())
        .build()
        .unwrap();
    let mut most = 0;
    for i in 0..1_000_000u32 {
        let d = limiter
            .check(&ip(i), Tier::Public, EndpointClass::Default)
            .await;
        assert!(d.allowed);
        if i % 1000 == 999 {
            let keys = limiter.stats().local_keys;
            assert!(keys <= CAP, "{keys} keys after {} requests", i + 1);
            most = most.max(keys);
        }
    }
    // The cap was really approached (the limiter did hold keys), and a reset was needed.
    assert!(most > CAP / 2, "{most}");
    assert!(limiter.stats().local_resets > 0);
}

#[tokio::test]
async fn a_flood_of_violators_keeps_penalty_state_under_the_cap() {
    let one = Quota::per_minute(NonZeroU32::new(1).unwrap());
    let limiter = RateLimiter::builder()
        .tier(Tier::Public, TierQuotas::new(one, one))
        .max_keys(NonZeroUsize::new(CAP).unwrap())
        .build()
        .unwrap();
    for i in 0..100_000u32 {
        let s = ip(i);
        assert!(
            limiter
                .check(&s, Tier::Public, EndpointClass::Default)
                .await
                .allowed
        );
        let d = limiter
            .check(&s, Tier::Public, EndpointClass::Default)
            .await;
        assert!(!d.allowed && d.blocked);
        if i % 1000 == 999 {
            let stats = limiter.stats();
            assert!(stats.local_keys <= CAP, "{stats:?}");
            assert!(stats.local_penalty_keys <= CAP, "{stats:?}");
        }
    }
}
