//! Sliding windows of call outcomes.

use crate::config::{TIME_WINDOW_BUCKETS, Window};

/// The outcome of one completed call, as far as the breaker is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) failed: bool,
    pub(crate) slow: bool,
}

/// Calls, failures and slow calls over some span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl Tally {
    pub(crate) fn add(&mut self, o: Outcome) {
        self.calls += 1;
        self.failures += u64::from(o.failed);
        self.slow += u64::from(o.slow);
    }

    fn remove(&mut self, other: Self) {
        self.calls = self.calls.saturating_sub(other.calls);
        self.failures = self.failures.saturating_sub(other.failures);
        self.slow = self.slow.saturating_sub(other.slow);
    }

    #[allow(clippy::cast_precision_loss)] // rates of counts far below 2^52
    pub(crate) fn failure_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.failures as f64 / self.calls as f64
        }
    }

    #[allow(clippy::cast_precision_loss)]
    pub(crate) fn slow_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.slow as f64 / self.calls as f64
        }
    }
}

/// A count- or time-based sliding window. Not synchronised: lives under the breaker's lock.
#[derive(Debug)]
pub(crate) enum SlidingWindow {
    Count(CountWindow),
    Time(TimeWindow),
}

impl SlidingWindow {
    pub(crate) fn new(window: Window) -> Self {
        match window {
            Window::Count(n) => Self::Count(CountWindow::new(n)),
            Window::Time(d) => Self::Time(TimeWindow::new(crate::clock::duration_to_nanos(d))),
        }
    }

    pub(crate) fn record(&mut self, o: Outcome, now: u64) {
        match self {
            Self::Count(w) => w.record(o),
            Self::Time(w) => w.record(o, now),
        }
    }

    pub(crate) fn tally(&mut self, now: u64) -> Tally {
        match self {
            Self::Count(w) => w.tally,
            Self::Time(w) => {
                w.advance(now);
                w.tally
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        match self {
            Self::Count(w) => w.clear(),
            Self::Time(w) => w.clear(),
        }
    }
}

const FAILED: u8 = 1;
const SLOW: u8 = 2;

/// The last N outcomes in a ring.
#[derive(Debug)]
pub(crate) struct CountWindow {
    ring: Box<[u8]>,
    next: usize,
    len: usize,
    tally: Tally,
}

impl CountWindow {
    fn new(size: u32) -> Self {
        let size = usize::try_from(size).unwrap_or(usize::MAX).max(1);
        Self {
            ring: vec![0; size].into_boxed_slice(),
            next: 0,
            len: 0,
            tally: Tally::default(),
        }
    }

    fn record(&mut self, o: Outcome) {
        let cap = self.ring.len();
        if self.len == cap {
            let old = self.ring[self.next];
            self.tally.remove(Tally {
                calls: 1,
                failures: u64::from(old & FAILED != 0),
                slow: u64::from(old & SLOW != 0),
            });
        } else {
            self.len += 1;
        }
        self.ring[self.next] = (u8::from(o.failed) * FAILED) | (u8::from(o.slow) * SLOW);
        self.tally.add(o);
        self.next = (self.next + 1) % cap;
    }

    fn clear(&mut self) {
        self.next = 0;
        self.len = 0;
        self.tally = Tally::default();
    }
}

/// The outcomes of the last `TIME_WINDOW_BUCKETS` buckets of `width` nanoseconds each.
///
/// A call completed at time `t` lies in absolute bucket `t / width`; at time `now` the window
/// holds the buckets `now / width - BUCKETS + 1 ..= now / width`.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Tally]>,
    width: u64,
    /// Absolute index of the newest bucket.
    head: u64,
    tally: Tally,
}

impl TimeWindow {
    fn new(span_nanos: u64) -> Self {
        let n = u64::from(TIME_WINDOW_BUCKETS);
        Self {
            buckets: vec![Tally::default(); TIME_WINDOW_BUCKETS as usize].into_boxed_slice(),
            width: span_nanos.div_ceil(n).max(1),
            head: 0,
            tally: Tally::default(),
        }
    }

    fn slot(&self, index: u64) -> usize {
        // The modulo is below TIME_WINDOW_BUCKETS, so it fits a usize.
        usize::try_from(index % self.buckets.len() as u64).unwrap_or(0)
    }

    /// Drops the buckets that have left the window at `now`.
    fn advance(&mut self, now: u64) {
        let index = now / self.width;
        if index <= self.head {
            return; // same bucket, or a clock that went backwards: keep what we have
        }
        let steps = (index - self.head).min(self.buckets.len() as u64);
        for i in 1..=steps {
            let slot = self.slot(self.head + i);
            let old = std::mem::take(&mut self.buckets[slot]);
            self.tally.remove(old);
        }
        self.head = index;
    }

    fn record(&mut self, o: Outcome, now: u64) {
        self.advance(now);
        let slot = self.slot(self.head);
        self.buckets[slot].add(o);
        self.tally.add(o);
    }

    fn clear(&mut self) {
        self.buckets.iter_mut().for_each(|b| *b = Tally::default());
        self.tally = Tally::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const OK: Outcome = Outcome {
        failed: false,
        slow: false,
    };
    const FAIL: Outcome = Outcome {
        failed: true,
        slow: false,
    };
    const SLOW_OK: Outcome = Outcome {
        failed: false,
        slow: true,
    };

    #[test]
    fn count_window_keeps_last_n() {
        let mut w = SlidingWindow::new(Window::Count(3));
        w.record(FAIL, 0);
        w.record(FAIL, 0);
        w.record(OK, 0);
        assert_eq!(
            w.tally(0),
            Tally {
                calls: 3,
                failures: 2,
                slow: 0
            }
        );
        w.record(SLOW_OK, 0); // evicts the first FAIL
        assert_eq!(
            w.tally(0),
            Tally {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        w.record(OK, 0);
        w.record(OK, 0); // evicts FAIL and OK
        assert_eq!(
            w.tally(0),
            Tally {
                calls: 3,
                failures: 0,
                slow: 1
            }
        );
        w.clear();
        assert_eq!(w.tally(0), Tally::default());
        w.record(FAIL, 0);
        assert_eq!(
            w.tally(0),
            Tally {
                calls: 1,
                failures: 1,
                slow: 0
            }
        );
    }

    #[test]
    fn time_window_ages_out_by_bucket() {
        // 20 s window -> 1 s buckets.
        let s = |secs: u64| Duration::from_secs(secs).as_nanos() as u64;
        let mut w = SlidingWindow::new(Window::Time(Duration::from_secs(20)));
        w.record(FAIL, s(0));
        w.record(OK, s(5));
        assert_eq!(w.tally(s(19)).calls, 2);
        // At t = 20 s the bucket of t = 0 leaves (index 20 - 20 + 1 = 1 is the oldest kept).
        assert_eq!(
            w.tally(s(20)),
            Tally {
                calls: 1,
                failures: 0,
                slow: 0
            }
        );
        assert_eq!(w.tally(s(25) - 1).calls, 1);
        assert_eq!(w.tally(s(25)).calls, 0);
        // A long jump clears everything, then recording works again.
        w.record(FAIL, s(1000));
        assert_eq!(
            w.tally(s(1000)),
            Tally {
                calls: 1,
                failures: 1,
                slow: 0
            }
        );
        assert_eq!(w.tally(s(5000)).calls, 0);
    }

    #[test]
    fn time_window_tolerates_clock_going_back() {
        let mut w = SlidingWindow::new(Window::Time(Duration::from_secs(2)));
        w.record(FAIL, 10_000_000_000);
        w.record(OK, 1);
        assert_eq!(w.tally(2).calls, 2);
    }

    #[test]
    fn tiny_time_window_has_nonzero_bucket_width() {
        let mut w = SlidingWindow::new(Window::Time(Duration::from_nanos(1)));
        w.record(FAIL, 0);
        assert_eq!(w.tally(0).calls, 1);
        assert_eq!(w.tally(100).calls, 0);
    }

    #[test]
    fn rates() {
        let t = Tally {
            calls: 4,
            failures: 1,
            slow: 2,
        };
        assert!((t.failure_rate() - 0.25).abs() < f64::EPSILON);
        assert!((t.slow_rate() - 0.5).abs() < f64::EPSILON);
        assert_eq!(Tally::default().failure_rate(), 0.0);
    }
}
