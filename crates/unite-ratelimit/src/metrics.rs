//! Metric names and recording (through the `metrics` facade; this crate installs no recorder).

use crate::{Decision, Tier};

/// Counter `unite_ratelimit_decisions_total{tier,result}`; `result` is `allowed`, `limited` or
/// `blocked`.
pub const DECISIONS_TOTAL: &str = "unite_ratelimit_decisions_total";
/// Gauge `unite_ratelimit_penalties_active`: keys this instance knows to be under a penalty
/// block right now.
pub const PENALTIES_ACTIVE: &str = "unite_ratelimit_penalties_active";
/// Counter `unite_ratelimit_fallbacks_total`: decisions taken locally (or refused, when
/// fail-closed) because Redis was unreachable.
pub const FALLBACKS_TOTAL: &str = "unite_ratelimit_fallbacks_total";
/// Counter `unite_ratelimit_redis_errors_total`: failed or timed-out Redis calls.
pub const REDIS_ERRORS_TOTAL: &str = "unite_ratelimit_redis_errors_total";

/// The name and every label are literals, so the key is a `static`: recording builds and hashes
/// nothing (a `const` name would not do; the tests check the literals match the constants).
macro_rules! decision_counter {
    ($tier:literal, $result:literal) => {
        ::metrics::counter!(
            "unite_ratelimit_decisions_total",
            "tier" => $tier,
            "result" => $result
        )
        .increment(1)
    };
}

pub(crate) fn record_decision(d: &Decision) {
    let result = if d.allowed {
        0
    } else if d.blocked {
        2
    } else {
        1
    };
    match (d.tier, result) {
        (Tier::Public, 0) => decision_counter!("public", "allowed"),
        (Tier::Public, 1) => decision_counter!("public", "limited"),
        (Tier::Public, _) => decision_counter!("public", "blocked"),
        (Tier::Free, 0) => decision_counter!("free", "allowed"),
        (Tier::Free, 1) => decision_counter!("free", "limited"),
        (Tier::Free, _) => decision_counter!("free", "blocked"),
        (Tier::Pro, 0) => decision_counter!("pro", "allowed"),
        (Tier::Pro, 1) => decision_counter!("pro", "limited"),
        (Tier::Pro, _) => decision_counter!("pro", "blocked"),
        (Tier::Enterprise, 0) => decision_counter!("enterprise", "allowed"),
        (Tier::Enterprise, 1) => decision_counter!("enterprise", "limited"),
        (Tier::Enterprise, _) => decision_counter!("enterprise", "blocked"),
    }
}

pub(crate) fn record_fallback() {
    ::metrics::counter!("unite_ratelimit_fallbacks_total").increment(1);
}

pub(crate) fn record_redis_error() {
    ::metrics::counter!("unite_ratelimit_redis_errors_total").increment(1);
}

pub(crate) fn set_penalties_active(n: usize) {
    #[allow(clippy::cast_precision_loss)]
    ::metrics::gauge!("unite_ratelimit_penalties_active").set(n as f64);
}
