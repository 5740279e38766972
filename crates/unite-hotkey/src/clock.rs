//! Time sources: the detector reads time only through [`Clock`], so tests drive the sliding
//! window with a [`ManualClock`] instead of sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonic time source.
///
/// [`now`](Clock::now) returns the time elapsed since an arbitrary fixed origin; it must never go
/// backwards. The detector reads it on [`record`](crate::HotKeyDetector::record) (every time, or
/// a sample of the records, see [`cheap_to_read`](Clock::cheap_to_read)) and on every query.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Time elapsed since this clock's origin.
    fn now(&self) -> Duration;

    /// Whether reading the clock is cheap enough to do on every record (the default: `true`).
    ///
    /// When `false`, as for [`SystemClock`], a record reads it only about once in 16 records on
    /// each thread (at random) and otherwise writes into the current sub-window: after a
    /// sub-window ends, the window moves on a few records late, and those records count in the
    /// sub-window before (or, after a whole window without any record or query, are emptied
    /// with it). At a 10 s granularity nobody can tell. `top`, `tick`, `snapshot` and
    /// `estimate` always read the clock.
    fn cheap_to_read(&self) -> bool {
        true
    }
}

/// The real monotonic clock, with its origin at construction.
///
/// Reads the CPU's time-stamp counter through `quanta` where it is invariant (scaled to
/// nanoseconds against the OS monotonic clock, calibrated once per process), and the OS monotonic
/// clock elsewhere. On the machines measured here [`std::time::Instant::now`] costs 35–60 ns and
/// the counter about 20 ns, a large share of a record: so records sample this clock rather than
/// read it every time (see [`Clock::cheap_to_read`]).
#[derive(Clone)]
pub struct SystemClock {
    clock: quanta::Clock,
    origin: quanta::Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    #[must_use]
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.now();
        Self { clock, origin }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SystemClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemClock")
            .field("elapsed", &self.now())
            .finish()
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Duration {
        self.clock.now().saturating_duration_since(self.origin)
    }

    fn cheap_to_read(&self) -> bool {
        false
    }
}

/// A clock that only moves when told to; clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use unite_hotkey::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let seen_by_detector = clock.clone();
/// clock.advance(Duration::from_secs(10));
/// assert_eq!(seen_by_detector.now(), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by` (saturating at about 584 years).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let mut cur = self.nanos.load(Ordering::Relaxed);
        loop {
            let next = cur.saturating_add(by);
            match self
                .nanos
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Sets the clock to `at`, unless that would move it backwards (a clock never does).
    pub fn set(&self, at: Duration) {
        let at = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_max(at, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_forward() {
        let c = ManualClock::new();
        assert_eq!(c.now(), Duration::ZERO);
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now(), Duration::from_millis(1500));
        c.set(Duration::from_secs(1));
        assert_eq!(c.now(), Duration::from_millis(1500), "set never goes back");
        c.set(Duration::from_secs(3));
        assert_eq!(c.clone().now(), Duration::from_secs(3));
        c.advance(Duration::MAX);
        assert_eq!(c.now(), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn system_clock_follows_real_time() {
        let c = SystemClock::new();
        let a = c.now();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(5) {
            std::hint::spin_loop();
        }
        let b = c.now();
        assert!(b >= a + Duration::from_millis(4), "{a:?} -> {b:?}");
        assert!(b < a + Duration::from_secs(5), "{a:?} -> {b:?}");
        assert!(format!("{c:?}").contains("SystemClock"));
    }
}
