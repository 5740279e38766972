//! Progress events and the final summary.

use std::time::Duration;

use serde::{Serialize, Serializer};

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Opening the source (running the query, reading the key list).
    Opening,
    /// Reading batches and writing them.
    Running,
    /// Paused because the database pool has waiters (or the custom pressure signal is on).
    Throttled,
    /// Cancelled: no new batch is read; the writes in flight are finishing.
    Cancelling,
    /// Finished: the source is exhausted and every write has completed.
    Done,
    /// Finished early because the run was cancelled.
    Cancelled,
    /// Finished early because the source failed.
    Failed,
}

impl Phase {
    /// `true` for `done`, `cancelled` and `failed`.
    #[must_use]
    pub const fn is_finished(self) -> bool {
        matches!(self, Self::Done | Self::Cancelled | Self::Failed)
    }

    /// The phase in snake_case.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Opening => "opening",
            Self::Running => "running",
            Self::Throttled => "throttled",
            Self::Cancelling => "cancelling",
            Self::Done => "done",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }
}

fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A progress event: the state of a run, sent after every batch and every phase change
/// (through a `tokio::sync::watch` channel: a slow reader sees the latest state, never a
/// backlog).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct WarmProgress {
    /// The source's name.
    pub source: String,
    /// Where the run is.
    pub phase: Phase,
    /// Items written (their batch write succeeded).
    pub done: u64,
    /// Items the source expects in total, when it knows.
    pub total: Option<u64>,
    /// Items lost to errors (not produced by the source, or not written).
    pub errors: u64,
    /// Items with nothing to cache (a loader's `Ok(None)`, a zero TTL).
    pub skipped: u64,
    /// Batches finished.
    pub batches: u64,
    /// Batches finished with at least one error.
    pub failed_batches: u64,
    /// Items written per second since the start.
    pub rate_per_sec: f64,
    /// Time since the start.
    #[serde(rename = "elapsed_ms", serialize_with = "millis")]
    pub elapsed: Duration,
    /// Time spent paused by back-pressure.
    #[serde(rename = "throttled_ms", serialize_with = "millis")]
    pub throttled: Duration,
}

impl WarmProgress {
    pub(crate) fn opening(source: String) -> Self {
        Self {
            source,
            phase: Phase::Opening,
            done: 0,
            total: None,
            errors: 0,
            skipped: 0,
            batches: 0,
            failed_batches: 0,
            rate_per_sec: 0.0,
            elapsed: Duration::ZERO,
            throttled: Duration::ZERO,
        }
    }

    /// Items handled so far (written, failed or skipped) over `total`, in `0.0..=1.0`, when the
    /// total is known: what a progress bar shows.
    #[must_use]
    #[expect(clippy::cast_precision_loss, reason = "a ratio for display")]
    pub fn fraction(&self) -> Option<f64> {
        let total = self.total?;
        if total == 0 {
            return Some(1.0);
        }
        let handled = self.done + self.errors + self.skipped;
        Some((handled as f64 / total as f64).min(1.0))
    }
}

/// What a run did, when it ended.
///
/// Every item counted in `written` is in the cache (its batch write succeeded); nothing that
/// was only partly written is counted.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct WarmSummary {
    /// The source's name.
    pub source: String,
    /// Items written.
    pub written: u64,
    /// Items the source expected, when it knew.
    pub total: Option<u64>,
    /// Items with nothing to cache (a loader's `Ok(None)`, a zero TTL).
    pub skipped: u64,
    /// Items lost to errors: not produced by the source (a loader or row-mapping error), or
    /// refused by the cache, or sent in a Redis write that failed.
    pub errors: u64,
    /// Batches finished.
    pub batches: u64,
    /// Batches with at least one error.
    pub failed_batches: u64,
    /// The first few error messages (see `WarmConfig::max_error_samples`).
    pub error_samples: Vec<String>,
    /// How long the run took.
    #[serde(rename = "elapsed_ms", serialize_with = "millis")]
    pub elapsed: Duration,
    /// Time spent paused by back-pressure.
    #[serde(rename = "throttled_ms", serialize_with = "millis")]
    pub throttled: Duration,
    /// `true` when the run was cancelled before the source was exhausted.
    pub cancelled: bool,
    /// Items written per second.
    pub rate_per_sec: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_serializes_in_snake_case_with_milliseconds() {
        let mut p = WarmProgress::opening("pg".into());
        p.phase = Phase::Throttled;
        p.done = 3;
        p.total = Some(12);
        p.skipped = 1;
        p.elapsed = Duration::from_millis(1500);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["phase"], "throttled");
        assert_eq!(json["elapsed_ms"], 1500);
        assert_eq!(json["throttled_ms"], 0);
        assert_eq!(p.fraction(), Some(4.0 / 12.0));
        p.total = None;
        assert_eq!(p.fraction(), None);
        assert!(!p.phase.is_finished());
        assert!(Phase::Cancelled.is_finished());
    }
}
