//! States, state-change events and snapshots.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Calls pass; outcomes fill the sliding window.
    Closed,
    /// Calls are refused at once until the wait is over.
    Open,
    /// A fixed number of trial calls pass; their outcome closes or re-opens the breaker.
    HalfOpen,
}

impl State {
    /// `"closed"`, `"open"` or `"half_open"` (the serde form too).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// The failure rate (of the window when closed, of the trial calls when half-open) reached
    /// the threshold.
    FailureRateExceeded,
    /// The slow-call rate reached the threshold.
    SlowCallRateExceeded,
    /// The wait in Open is over; trial calls may pass.
    OpenDurationElapsed,
    /// The trial calls in HalfOpen stayed under both thresholds.
    TrialCallsPassed,
    /// An operator called [`force_open`](crate::CircuitBreaker::force_open).
    ForcedOpen,
    /// An operator called [`force_closed`](crate::CircuitBreaker::force_closed).
    ForcedClosed,
    /// An operator called [`reset`](crate::CircuitBreaker::reset).
    Reset,
}

impl Reason {
    /// The snake_case name (the serde form too).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FailureRateExceeded => "failure_rate_exceeded",
            Self::SlowCallRateExceeded => "slow_call_rate_exceeded",
            Self::OpenDurationElapsed => "open_duration_elapsed",
            Self::TrialCallsPassed => "trial_calls_passed",
            Self::ForcedOpen => "forced_open",
            Self::ForcedClosed => "forced_closed",
            Self::Reset => "reset",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change, delivered to every [`subscribe`](crate::CircuitBreaker::subscribe)r.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct StateChange {
    /// The breaker's name.
    pub name: String,
    /// The state before.
    pub from: State,
    /// The state after (may equal `from` for an operator action such as `force_open` on an
    /// open breaker).
    pub to: State,
    /// Why.
    pub reason: Reason,
    /// Wall-clock time of the change.
    pub at: SystemTime,
    /// The breaker clock's reading at the change (deterministic under a
    /// [`ManualClock`](crate::ManualClock)).
    pub clock_time: Duration,
    /// When `to` is [`State::Open`]: how long this open lasts (`None` when forced).
    pub open_for: Option<Duration>,
}

/// A point-in-time view of a breaker, for health endpoints and metrics.
///
/// Counters are totals since the breaker was built; [`reset`](crate::CircuitBreaker::reset)
/// does not zero them (they feed monotonic metrics counters).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// The breaker's name.
    pub name: String,
    /// The current state.
    pub state: State,
    /// `true` while an operator's `force_open` / `force_closed` holds the state.
    pub forced: bool,
    /// Calls let through (permits handed out).
    pub calls: u64,
    /// Calls recorded as successes (including errors the predicate did not count).
    pub successes: u64,
    /// Calls recorded as failures.
    pub failures: u64,
    /// Calls (successes or failures) slower than `slow_call_duration`.
    pub slow_calls: u64,
    /// Calls whose permit was dropped or ignored without an outcome (e.g. cancelled).
    pub ignored: u64,
    /// Calls refused.
    pub rejected: u64,
    /// Times the breaker entered Open (including forced opens).
    pub opened_count: u64,
    /// Failure rate of the current window when closed, of the trial calls so far when
    /// half-open; `0.0` when empty or open.
    pub failure_rate: f64,
    /// Slow-call rate, measured like `failure_rate`.
    pub slow_call_rate: f64,
    /// Calls in the current window (closed) or trial calls recorded so far (half-open).
    pub window_calls: u64,
    /// While open: milliseconds (rounded up) until trial calls are let through.
    pub retry_after_ms: Option<u64>,
}
