//! The metrics the limiter records, through a local debugging recorder.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;

use futures::FutureExt;
use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use unite_ratelimit::{
    DecisionSource, EndpointClass, ManualClock, Quota, RateLimiter, Subject, Tier, TierQuotas,
    metrics as names,
};

/// Every metric of one snapshot (taking a snapshot drains the recorder).
type Metrics = Vec<(CompositeKey, DebugValue)>;

fn take(snap: &Snapshotter) -> Metrics {
    snap.snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect()
}

fn counter(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> u64 {
    m.iter()
        .find_map(|(key, value)| {
            let key = key.key();
            let matches = key.name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v));
            match (matches, value) {
                (true, DebugValue::Counter(n)) => Some(*n),
                _ => None,
            }
        })
        .unwrap_or(0)
}

fn gauge(m: &Metrics, name: &str) -> Option<f64> {
    m.iter().find_map(|(key, value)| match value {
        DebugValue::Gauge(g) if key.key().name() == name => Some(g.into_inner()),
        _ => None,
    })
}

#[test]
fn decisions_and_penalties_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let one = Quota::per_minute(NonZeroU32::new(1).unwrap());
    let s = Subject::Ip("192.0.2.1".parse().unwrap());
    metrics::with_local_recorder(&recorder, || {
        // Built under the recorder: the limiter registers its decision counters then.
        let limiter = RateLimiter::builder()
            .tier(Tier::Public, TierQuotas::new(one, one))
            // A tiny cap sweeps after every new key or penalty state, so the gauge is current.
            .max_keys(NonZeroUsize::new(8).unwrap())
            .clock(Arc::new(ManualClock::new()))
            .build()
            .unwrap();
        for _ in 0..3 {
            limiter
                .check(&s, Tier::Public, EndpointClass::Default)
                .now_or_never()
                .unwrap();
        }
        limiter
            .check(&Subject::user("u"), Tier::Pro, EndpointClass::Default)
            .now_or_never()
            .unwrap();
    });
    let m = take(&snap);
    let d = |tier, result| {
        counter(
            &m,
            names::DECISIONS_TOTAL,
            &[("tier", tier), ("result", result)],
        )
    };
    assert_eq!(d("public", "allowed"), 1);
    // The first refusal starts a penalty block; the second is refused by the block.
    assert_eq!(d("public", "blocked"), 2);
    assert_eq!(d("public", "limited"), 0);
    assert_eq!(d("pro", "allowed"), 1);
    assert_eq!(gauge(&m, names::PENALTIES_ACTIVE), Some(1.0));
    assert_eq!(counter(&m, names::FALLBACKS_TOTAL, &[]), 0);
}

#[tokio::test]
async fn fallbacks_are_counted_when_the_breaker_is_open() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    // A client that never connects: with the breaker forced open it is never used.
    let client = fred::prelude::Builder::default_centralized()
        .build()
        .unwrap();
    let s = Subject::user("u");
    metrics::with_local_recorder(&recorder, || {
        let limiter = RateLimiter::builder().redis(client).build().unwrap();
        limiter.breaker().unwrap().force_open();
        for _ in 0..4 {
            let d = limiter
                .check(&s, Tier::Free, EndpointClass::Default)
                .now_or_never()
                .expect("an open breaker answers at once");
            assert_eq!(d.source, DecisionSource::Fallback);
            assert!(d.allowed);
        }
    });
    let m = take(&snap);
    assert_eq!(counter(&m, names::FALLBACKS_TOTAL, &[]), 4);
    assert_eq!(counter(&m, names::REDIS_ERRORS_TOTAL, &[]), 0);
    let allowed = counter(
        &m,
        names::DECISIONS_TOTAL,
        &[("tier", "free"), ("result", "allowed")],
    );
    assert_eq!(allowed, 4);
}

#[test]
fn every_metric_name_is_the_documented_one() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let client = fred::prelude::Builder::default_centralized()
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let limiter = metrics::with_local_recorder(&recorder, || {
        RateLimiter::builder()
            .redis(client)
            .max_keys(NonZeroUsize::new(1).unwrap())
            .build()
            .unwrap()
    });
    limiter.breaker().unwrap().force_open();
    metrics::with_local_recorder(&recorder, || {
        limiter
            .check(&Subject::user("x"), Tier::Free, EndpointClass::Default)
            .now_or_never()
            .unwrap();
    });
    let m = take(&snap);
    let mut seen: Vec<&str> = m.iter().map(|(k, _)| k.key().name()).collect();
    seen.sort_unstable();
    // Each decision counter (one per tier and result) is registered when the limiter is built.
    seen.dedup();
    assert_eq!(
        seen,
        [
            names::DECISIONS_TOTAL,
            names::FALLBACKS_TOTAL,
            names::PENALTIES_ACTIVE
        ]
    );
}
