//! Metric names and recording (through the `metrics` facade; this crate installs no recorder).
//!
//! The decision counters are registered when a limiter is built: install the recorder first.

use metrics::Counter;

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

/// The decision counters of one limiter, registered once when it is built: a decision then
/// increments a handle instead of looking its name and labels up in the recorder's registry.
/// The name and every label are literals (the tests check they match the constants).
pub(crate) struct DecisionCounters {
    /// `[tier][allowed, limited, blocked]`.
    by: [[Counter; 3]; 4],
}

macro_rules! decision_counters {
    ($tier:literal) => {
        [
            ::metrics::counter!("unite_ratelimit_decisions_total", "tier" => $tier, "result" => "allowed"),
            ::metrics::counter!("unite_ratelimit_decisions_total", "tier" => $tier, "result" => "limited"),
            ::metrics::counter!("unite_ratelimit_decisions_total", "tier" => $tier, "result" => "blocked"),
        ]
    };
}

impl DecisionCounters {
    /// Registers the counters with the recorder installed now.
    pub(crate) fn register() -> Self {
        let by = [
            decision_counters!("public"),
            decision_counters!("free"),
            decision_counters!("pro"),
            decision_counters!("enterprise"),
        ];
        debug_assert!(
            Tier::ALL.iter().enumerate().all(|(i, t)| t.index() == i),
            "tier order"
        );
        Self { by }
    }

    #[inline]
    pub(crate) fn record(&self, d: &Decision) {
        let result = if d.allowed {
            0
        } else if d.blocked {
            2
        } else {
            1
        };
        self.by[d.tier.index()][result].increment(1);
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
