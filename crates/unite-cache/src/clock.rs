//! Wall-clock time for entry expiry, injectable for tests.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time source of a [`Cache`](crate::Cache): milliseconds since the Unix epoch.
///
/// Entries carry their written-at and expires-at times in this clock, in L1 and in Redis alike,
/// so every instance judges freshness the same way. It is wall-clock time on purpose: two
/// instances must agree on it (monotonic clocks have per-process origins).
///
/// Inject a [`ManualClock`] in tests to move past TTLs, refresh points and grace periods
/// without sleeping.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> u64;
}

/// The default clock: [`SystemTime::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to; clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use unite_cache::{Clock, ManualClock};
///
/// let clock = ManualClock::starting_now();
/// let before = clock.now_millis();
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now_millis(), before + 60_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    millis: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `millis` since the Unix epoch.
    #[must_use]
    pub fn new(millis: u64) -> Self {
        Self {
            millis: Arc::new(AtomicU64::new(millis)),
        }
    }

    /// A clock standing at the current system time (so Redis TTLs derived from it look
    /// ordinary).
    #[must_use]
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now_millis())
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.millis.fetch_add(ms, Ordering::AcqRel);
    }

    /// Sets the clock to `millis` since the Unix epoch.
    pub fn set(&self, millis: u64) {
        self.millis.store(millis, Ordering::Release);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> u64 {
        self.millis.load(Ordering::Acquire)
    }
}
