//! Lock-free pool statistics, their serializable snapshot, and the `metrics` facade.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use histogram::AtomicHistogram;
use metrics::{Counter, Gauge, Histogram};
use serde::{Deserialize, Serialize};
use unite_breaker::State;

/// Latency histogram: microseconds, 2^7 sub-buckets per power of two (relative error under
/// 0.8 %, exact below 128 µs), values up to 2^32 µs (71 min; longer calls land in the top
/// bucket).
const GROUPING_POWER: u8 = 7;
const MAX_VALUE_POWER: u8 = 32;
const MAX_MICROS: u64 = (1 << MAX_VALUE_POWER) - 1;

/// How a pool call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It worked.
    Success,
    /// The database answered with an error that is the caller's (constraint, syntax…).
    CallerError,
    /// The backend failed (connection, timeout, server shutting down…).
    Failure,
}

/// Keeps a hot counter on its own cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// Counters and histogram, updated with relaxed atomics only (no lock on the hot path).
#[derive(Debug)]
pub(crate) struct Stats {
    successes: Padded,
    caller_errors: Padded,
    failures: Padded,
    rejected: Padded,
    checkout_timeouts: Padded,
    latency_sum_nanos: Padded,
    waiters: Padded,
    histogram: Option<AtomicHistogram>,
    metrics: Handles,
}

impl Stats {
    pub(crate) fn new(pool: &str) -> Self {
        // The parameters are constants the histogram crate accepts (a unit test checks it),
        // so this is always `Some`; were it ever refused, percentiles would read 0.
        let histogram = AtomicHistogram::new(GROUPING_POWER, MAX_VALUE_POWER).ok();
        Self {
            successes: Padded::default(),
            caller_errors: Padded::default(),
            failures: Padded::default(),
            rejected: Padded::default(),
            checkout_timeouts: Padded::default(),
            latency_sum_nanos: Padded::default(),
            waiters: Padded::default(),
            histogram,
            metrics: Handles::new(pool),
        }
    }

    /// Records a finished call and its latency.
    pub(crate) fn record(&self, outcome: Outcome, elapsed: Duration) {
        let counter = match outcome {
            Outcome::Success => {
                self.metrics.success.increment(1);
                &self.successes
            }
            Outcome::CallerError => {
                self.metrics.caller_error.increment(1);
                &self.caller_errors
            }
            Outcome::Failure => {
                self.metrics.failure.increment(1);
                &self.failures
            }
        };
        counter.0.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_nanos.0.fetch_add(nanos, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        if let Some(h) = &self.histogram {
            // In range by construction (clamped), so this cannot fail.
            let _ = h.increment(micros.min(MAX_MICROS));
        }
        self.metrics.duration.record(elapsed.as_secs_f64());
    }

    /// Records a call the breaker refused (no latency: nothing ran).
    pub(crate) fn record_rejected(&self) {
        self.rejected.0.fetch_add(1, Ordering::Relaxed);
        self.metrics.rejected.increment(1);
    }

    pub(crate) fn record_checkout_timeout(&self) {
        self.checkout_timeouts.0.fetch_add(1, Ordering::Relaxed);
        self.metrics.checkout_timeouts.increment(1);
    }

    /// Counts a caller waiting for a checkout until the guard drops.
    pub(crate) fn waiting(&self) -> WaiterGuard<'_> {
        self.waiters.0.fetch_add(1, Ordering::Relaxed);
        WaiterGuard(&self.waiters.0)
    }

    pub(crate) fn snapshot(&self, pool: PoolState, circuit_state: State) -> PoolStats {
        let successes = self.successes.0.load(Ordering::Relaxed);
        let caller_errors = self.caller_errors.0.load(Ordering::Relaxed);
        let failures = self.failures.0.load(Ordering::Relaxed);
        let rejected = self.rejected.0.load(Ordering::Relaxed);
        let timed = successes + caller_errors + failures;
        let total_requests = timed + rejected;
        let success_rate = if total_requests == 0 {
            1.0
        } else {
            ratio(successes, total_requests)
        };
        let average_response_time_ms = if timed == 0 {
            0.0
        } else {
            ratio(self.latency_sum_nanos.0.load(Ordering::Relaxed), timed) / 1e6
        };
        let [p50, p95, p99] = self.percentiles_ms();
        let waiters = self.waiters.0.load(Ordering::Relaxed);
        self.metrics.refresh(pool, waiters);
        PoolStats {
            total_requests,
            successes,
            failures,
            caller_errors,
            rejected,
            success_rate,
            average_response_time_ms,
            p50_response_time_ms: p50,
            p95_response_time_ms: p95,
            p99_response_time_ms: p99,
            circuit_state,
            size: pool.size,
            idle: pool.idle,
            in_use: pool.size.saturating_sub(pool.idle),
            max_size: pool.max_size,
            waiters,
            checkout_timeouts: self.checkout_timeouts.0.load(Ordering::Relaxed),
            replicas: Vec::new(),
        }
    }

    pub(crate) fn refresh_gauges(&self, pool: PoolState) {
        self.metrics
            .refresh(pool, self.waiters.0.load(Ordering::Relaxed));
    }

    /// p50, p95, p99 in milliseconds: the upper bound of the bucket holding each quantile.
    fn percentiles_ms(&self) -> [f64; 3] {
        let Some(histogram) = &self.histogram else {
            return [0.0; 3];
        };
        let snapshot = histogram.load();
        let mut out = [None, None, None];
        if snapshot
            .quantile_buckets_into(&[0.5, 0.95, 0.99], &mut out)
            .is_err()
        {
            return [0.0; 3];
        }
        out.map(|b| b.map_or(0.0, |b| micros_to_ms(b.end())))
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "counts far below 2^52 in practice"
)]
fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b as f64
}

#[expect(clippy::cast_precision_loss, reason = "at most 2^32 µs")]
fn micros_to_ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// Decrements the waiter gauge on drop (also when the checkout is cancelled).
#[derive(Debug)]
pub(crate) struct WaiterGuard<'a>(&'a AtomicU64);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connection counts read from bb8.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolState {
    pub(crate) size: u32,
    pub(crate) idle: u32,
    pub(crate) max_size: u32,
}

/// A point-in-time view of a pool, for health endpoints. Serialized with snake_case names:
/// `total_requests`, `successes`, `failures`, `success_rate`, `average_response_time_ms`,
/// `p50_response_time_ms`, `p95_response_time_ms`, `p99_response_time_ms`, `circuit_state`
/// (`"closed"`, `"open"`, `"half_open"`), `size`, `idle`, `in_use`, `waiters`,
/// `checkout_timeouts`, and also `caller_errors`, `rejected`, `max_size`. The top-level
/// fields describe the primary; `replicas` holds one [`ReplicaStats`] per read replica (an
/// empty list without replicas).
///
/// A request is one pool call: a checkout through [`get`](crate::Pool::get), a query or
/// execute (checkout included), a [`transaction`](crate::Pool::transaction), a
/// [`health`](crate::Pool::health) check. Counts are totals since the pool was built;
/// latencies cover every call that ran (not the refused ones), from the call to its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PoolStats {
    /// `successes + failures + caller_errors + rejected`.
    pub total_requests: u64,
    /// Calls that returned `Ok`.
    pub successes: u64,
    /// Calls that failed because of the backend (what the breaker counts as failures:
    /// connect errors, checkout timeouts, timeouts, server errors such as shutdowns).
    pub failures: u64,
    /// Calls that failed with the caller's error (constraint violation, syntax error,
    /// statement timeout…): the database answered.
    pub caller_errors: u64,
    /// Calls the open breaker refused without touching the database.
    pub rejected: u64,
    /// `successes / total_requests`; `1.0` before the first request.
    pub success_rate: f64,
    /// Mean latency of the calls that ran, in milliseconds.
    pub average_response_time_ms: f64,
    /// Median latency in milliseconds (bucket upper bound; relative error under 1 %).
    pub p50_response_time_ms: f64,
    /// 95th percentile latency in milliseconds.
    pub p95_response_time_ms: f64,
    /// 99th percentile latency in milliseconds.
    pub p99_response_time_ms: f64,
    /// The breaker's state.
    pub circuit_state: State,
    /// Connections open (idle + in use).
    pub size: u32,
    /// Connections open and idle.
    pub idle: u32,
    /// Connections checked out.
    pub in_use: u32,
    /// The pool's `max_size`.
    pub max_size: u32,
    /// Callers waiting for a checkout right now.
    pub waiters: u64,
    /// Checkouts that found no free connection within the checkout timeout.
    pub checkout_timeouts: u64,
    /// The read replicas, in configuration order.
    #[serde(default)]
    pub replicas: Vec<ReplicaStats>,
}

/// A point-in-time view of one read replica, for health endpoints (snake_case):
///
/// ```json
/// { "name": "postgres-replica-0", "url": "postgres://app:***@db-replica-1:5432/app",
///   "healthy": true, "lag_ms": 0.0, "replay_lsn": "0/3000148", "circuit_state": "closed",
///   "last_error": null, "total_requests": 812, "failures": 0, "success_rate": 1.0,
///   "average_response_time_ms": 0.38, "p95_response_time_ms": 0.9, "size": 3, "idle": 3 }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplicaStats {
    /// `<pool name>-replica-<index>`: the `pool` label of its metrics and its breaker's name.
    pub name: String,
    /// Its URL with the password replaced by `***`.
    pub url: String,
    /// `true` when reads may go to it now: its last lag check succeeded, it is a replica
    /// (in recovery), its lag is within `max_lag`, no read failed on it since, and its
    /// breaker is not open.
    pub healthy: bool,
    /// Replication lag at the last check, in milliseconds (0 when it had replayed the
    /// primary's current log position); `None` when unknown (check failed, or nothing to
    /// measure it by).
    pub lag_ms: Option<f64>,
    /// The last log position it had replayed at the last check.
    pub replay_lsn: Option<crate::Lsn>,
    /// Its breaker's state.
    pub circuit_state: State,
    /// Why it is not healthy, when it is not (no password, no SQL).
    pub last_error: Option<String>,
    /// Calls sent to it (as [`PoolStats::total_requests`]); a read that failed on it and was
    /// retried on the primary counts here as a failure and on the primary as a request.
    pub total_requests: u64,
    /// Calls that failed on it because of the backend.
    pub failures: u64,
    /// `successes / total_requests`.
    pub success_rate: f64,
    /// Mean latency of its calls, in milliseconds.
    pub average_response_time_ms: f64,
    /// 95th percentile latency of its calls, in milliseconds.
    pub p95_response_time_ms: f64,
    /// Connections open to it.
    pub size: u32,
    /// Connections open to it and idle.
    pub idle: u32,
}

/// Handles into the installed `metrics` recorder, registered once when the pool is built
/// (install the recorder before building pools).
#[derive(Debug)]
struct Handles {
    success: Counter,
    caller_error: Counter,
    failure: Counter,
    rejected: Counter,
    checkout_timeouts: Counter,
    duration: Histogram,
    idle: Gauge,
    in_use: Gauge,
    waiters: Gauge,
}

impl Handles {
    fn new(pool: &str) -> Self {
        metrics::describe_counter!(
            "unite_pool_requests_total",
            "Pool calls by result: success, caller_error, backend_failure, rejected."
        );
        metrics::describe_histogram!(
            "unite_pool_query_duration_seconds",
            metrics::Unit::Seconds,
            "Latency of pool calls that ran (checkout included)."
        );
        metrics::describe_gauge!(
            "unite_pool_connections",
            "Open connections by state: idle, in_use."
        );
        metrics::describe_gauge!("unite_pool_waiters", "Callers waiting for a checkout.");
        metrics::describe_counter!(
            "unite_pool_checkout_timeouts_total",
            "Checkouts that found no free connection in time."
        );
        let pool = pool.to_owned();
        let requests = |result: &'static str| metrics::counter!("unite_pool_requests_total", "pool" => pool.clone(), "result" => result);
        Self {
            success: requests("success"),
            caller_error: requests("caller_error"),
            failure: requests("backend_failure"),
            rejected: requests("rejected"),
            checkout_timeouts: metrics::counter!(
                "unite_pool_checkout_timeouts_total",
                "pool" => pool.clone()
            ),
            duration: metrics::histogram!(
                "unite_pool_query_duration_seconds",
                "pool" => pool.clone()
            ),
            idle: metrics::gauge!("unite_pool_connections", "pool" => pool.clone(), "state" => "idle"),
            in_use: metrics::gauge!("unite_pool_connections", "pool" => pool.clone(), "state" => "in_use"),
            waiters: metrics::gauge!("unite_pool_waiters", "pool" => pool),
        }
    }

    fn refresh(&self, pool: PoolState, waiters: u64) {
        self.idle.set(f64::from(pool.idle));
        self.in_use
            .set(f64::from(pool.size.saturating_sub(pool.idle)));
        #[expect(clippy::cast_precision_loss, reason = "a waiter count")]
        self.waiters.set(waiters as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_parameters_are_valid() {
        assert!(AtomicHistogram::new(GROUPING_POWER, MAX_VALUE_POWER).is_ok());
    }

    fn state() -> PoolState {
        PoolState {
            size: 3,
            idle: 1,
            max_size: 5,
        }
    }

    #[test]
    fn snapshot_counts_and_percentiles() {
        let stats = Stats::new("test");
        let empty = stats.snapshot(state(), State::Closed);
        assert_eq!(empty.total_requests, 0);
        assert!((empty.success_rate - 1.0).abs() < f64::EPSILON);
        assert!(empty.p99_response_time_ms.abs() < f64::EPSILON);

        for ms in 1..=100u64 {
            stats.record(Outcome::Success, Duration::from_millis(ms));
        }
        stats.record(Outcome::CallerError, Duration::from_millis(1));
        stats.record(Outcome::Failure, Duration::from_millis(1));
        stats.record_rejected();
        stats.record_checkout_timeout();
        let s = stats.snapshot(state(), State::Open);
        // A checkout timeout is a failure of some request, not a request of its own.
        assert_eq!(s.total_requests, 103);
        assert_eq!(s.successes, 100);
        assert_eq!(s.caller_errors, 1);
        assert_eq!(s.failures, 1);
        assert_eq!(s.rejected, 1);
        assert_eq!(s.checkout_timeouts, 1);
        assert!((s.success_rate - 100.0 / 103.0).abs() < 1e-9);
        // Mean of 1..=100 ms plus two 1 ms calls, over 102 timed calls.
        assert!((s.average_response_time_ms - 5052.0 / 102.0).abs() < 1e-6);
        // 102 samples: the 51st is 49 ms; the 97th is 95 ms; the 101st is 99 ms. Each is
        // reported as its bucket's upper bound (< 0.8 % above).
        assert!(
            (49.0..49.0 * 1.008).contains(&s.p50_response_time_ms),
            "{s:?}"
        );
        assert!(
            (95.0..95.0 * 1.008).contains(&s.p95_response_time_ms),
            "{s:?}"
        );
        assert!(
            (99.0..99.0 * 1.008).contains(&s.p99_response_time_ms),
            "{s:?}"
        );
        assert_eq!((s.size, s.idle, s.in_use, s.max_size), (3, 1, 2, 5));
        assert_eq!(s.circuit_state, State::Open);
    }

    #[test]
    fn waiter_guard_counts_down() {
        let stats = Stats::new("test");
        let a = stats.waiting();
        let b = stats.waiting();
        assert_eq!(stats.snapshot(state(), State::Closed).waiters, 2);
        drop(a);
        drop(b);
        assert_eq!(stats.snapshot(state(), State::Closed).waiters, 0);
    }
}
