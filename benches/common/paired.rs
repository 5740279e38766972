//! Interleaved pairs: a raw call and the unite call run alternately, so the drifting load of a
//! shared machine falls on both sides alike, and each side keeps every call's time for a ratio
//! of means and one of medians.

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

/// Every call's time on each side over every interleaved pair (warm-up included).
#[derive(Default)]
pub(crate) struct Totals {
    raw: RefCell<Vec<Duration>>,
    unite: RefCell<Vec<Duration>>,
}

impl Totals {
    /// Prints the paired ratios (unite over raw) of the means and of the medians.
    pub(crate) fn report(&self, what: &str) {
        let raw = self.raw.borrow();
        let unite = self.unite.borrow();
        let (raw_mean, unite_mean) = (mean_micros(&raw), mean_micros(&unite));
        let (raw_median, unite_median) = (median_micros(&raw), median_micros(&unite));
        eprintln!(
            "paired ratio {what}: {:.3} of means ({unite_mean:.2} µs vs {raw_mean:.2} µs), \
             {:.3} of medians ({unite_median:.2} µs vs {raw_median:.2} µs), over {} interleaved \
             pairs",
            unite_mean / raw_mean,
            unite_median / raw_median,
            raw.len()
        );
    }
}

#[expect(clippy::cast_precision_loss, reason = "a bench report")]
fn mean_micros(times: &[Duration]) -> f64 {
    times.iter().sum::<Duration>().as_secs_f64() * 1e6 / times.len().max(1) as f64
}

fn median_micros(times: &[Duration]) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    sorted
        .get(sorted.len() / 2)
        .map_or(0.0, |d| d.as_secs_f64() * 1e6)
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
    let mut raw_times = Vec::with_capacity(usize::try_from(iters).unwrap_or(0));
    let mut unite_times = Vec::with_capacity(raw_times.capacity());
    for i in 0..iters {
        let raw_first = i % 2 == 0;
        for turn in 0..2 {
            let start = Instant::now();
            if (turn == 0) == raw_first {
                black_box(raw().await);
                let took = start.elapsed();
                raw_total += took;
                raw_times.push(took);
            } else {
                black_box(unite().await);
                let took = start.elapsed();
                unite_total += took;
                unite_times.push(took);
            }
        }
    }
    totals.raw.borrow_mut().extend(raw_times);
    totals.unite.borrow_mut().extend(unite_times);
    match timed {
        Timed::Raw => raw_total,
        Timed::Unite => unite_total,
    }
}
