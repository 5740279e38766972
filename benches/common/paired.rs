//! Interleaved pairs: a raw call and the unite call run alternately, so the drifting load of a
//! shared machine falls on both sides alike; each side keeps its total for a ratio of means and
//! an even sample of its call times for a ratio of medians.

use std::cell::RefCell;
use std::future::Future;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Which side of a pair criterion times.
#[derive(Clone, Copy)]
pub(crate) enum Timed {
    Raw,
    Unite,
}

/// Each side's calls over every interleaved pair (warm-up included).
#[derive(Default)]
pub(crate) struct Totals {
    raw: RefCell<Samples>,
    unite: RefCell<Samples>,
}

/// At most this many call times are kept a side (4 MiB); beyond it every other one is dropped
/// and the stride doubles, so the kept ones stay spread evenly over the run.
const MAX_KEPT: usize = 1 << 20;

/// One side's calls: the exact total, and an even sample of call times for the median.
struct Samples {
    total: Duration,
    calls: u64,
    stride: u64,
    kept: Vec<u32>,
}

impl Default for Samples {
    fn default() -> Self {
        Self {
            total: Duration::ZERO,
            calls: 0,
            stride: 1,
            kept: Vec::new(),
        }
    }
}

impl Samples {
    fn push(&mut self, took: Duration) {
        // Whole pairs of consecutive calls are kept or dropped together: the order within a
        // pair alternates, and the sample must keep both orders alike.
        if (self.calls / 2).is_multiple_of(self.stride) {
            self.kept
                .push(u32::try_from(took.as_nanos()).unwrap_or(u32::MAX));
            if self.kept.len() >= MAX_KEPT {
                let mut i = 0usize;
                self.kept.retain(|_| {
                    i += 1;
                    ((i - 1) / 2).is_multiple_of(2)
                });
                self.stride *= 2;
            }
        }
        self.total += took;
        self.calls += 1;
    }

    #[expect(clippy::cast_precision_loss, reason = "a bench report")]
    fn mean_micros(&self) -> f64 {
        self.total.as_secs_f64() * 1e6 / self.calls.max(1) as f64
    }

    fn median_micros(&self) -> f64 {
        let mut sorted = self.kept.clone();
        sorted.sort_unstable();
        sorted
            .get(sorted.len() / 2)
            .map_or(0.0, |&ns| f64::from(ns) / 1e3)
    }
}

impl Totals {
    /// Prints the paired ratios (unite over raw) of the means and of the medians.
    pub(crate) fn report(&self, what: &str) {
        let raw = self.raw.borrow();
        let unite = self.unite.borrow();
        let (raw_mean, unite_mean) = (raw.mean_micros(), unite.mean_micros());
        let (raw_median, unite_median) = (raw.median_micros(), unite.median_micros());
        eprintln!(
            "paired ratio {what}: {:.3} of means ({unite_mean:.2} µs vs {raw_mean:.2} µs), \
             {:.3} of medians ({unite_median:.2} µs vs {raw_median:.2} µs), over {} interleaved \
             pairs",
            unite_mean / raw_mean,
            unite_median / raw_median,
            raw.calls
        );
    }
}

/// Runs the raw and the unite call alternately `iters` times (which goes first alternates
/// too); returns the time of the side criterion measures, and keeps both sides in `totals`.
pub(crate) async fn paired<R, RF, U, UF, A, B>(
    iters: u64,
    timed: Timed,
    raw: R,
    unite: U,
    totals: &Totals,
) -> Duration
where
    R: Fn() -> RF,
    RF: Future<Output = A>,
    U: Fn() -> UF,
    UF: Future<Output = B>,
{
    let (mut raw_total, mut unite_total) = (Duration::ZERO, Duration::ZERO);
    for i in 0..iters {
        let raw_first = i % 2 == 0;
        for turn in 0..2 {
            let start = Instant::now();
            if (turn == 0) == raw_first {
                black_box(raw().await);
                let took = start.elapsed();
                raw_total += took;
                totals.raw.borrow_mut().push(took);
            } else {
                black_box(unite().await);
                let took = start.elapsed();
                unite_total += took;
                totals.unite.borrow_mut().push(took);
            }
        }
    }
    match timed {
        Timed::Raw => raw_total,
        Timed::Unite => unite_total,
    }
}
