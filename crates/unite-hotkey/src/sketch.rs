//! A lock-free HeavyKeeper sketch (Gong et al., "HeavyKeeper: An Accurate Algorithm for Finding
//! Top-k Elephant Flows", USENIX ATC 2018).
//!
//! `depth` rows of `width` buckets. A bucket is one `AtomicU64` holding a 32-bit fingerprint (high
//! half) and a 32-bit count (low half), so it is updated with a single compare-and-swap and never
//! needs a lock. For a key with fingerprint `f`, in each row:
//!
//! - an empty bucket (count 0) or one holding `f` is incremented and takes `f`;
//! - a bucket holding another fingerprint with count `c` is decayed by one with probability
//!   `b^-c` (`b` = 1.08); a bucket decayed to zero is taken over by `f` with count 1.
//!
//! The estimate of a key is the largest count among the buckets holding its fingerprint. A bucket's
//! count only grows on its owner's arrivals and restarts at 1 when ownership changes, so an
//! estimate never exceeds the key's true count unless two keys share a bucket *and* a 32-bit
//! fingerprint. Heavy keys hold their buckets almost surely (the decay probability of a count of
//! 300 is below 2^-32), so their estimates are close to exact.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::MAX_DEPTH;

/// Decay base `b` of the paper (its recommended value).
const DECAY_BASE: f64 = 1.08;

/// Counts at or above this never decay: `1.08^-288 * 2^32 < 1`.
const DECAY_TABLE_LEN: usize = 288;

/// `DECAY_THRESHOLDS[c]` = `b^-c * 2^32`, compared with a uniform `u32`.
static DECAY_THRESHOLDS: [u64; DECAY_TABLE_LEN] = decay_table();

const fn decay_table() -> [u64; DECAY_TABLE_LEN] {
    let mut table = [0u64; DECAY_TABLE_LEN];
    let mut p = 1.0f64;
    let mut i = 0;
    while i < DECAY_TABLE_LEN {
        // Saturating float-to-int cast: p = 1 gives exactly 2^32 (always decays).
        table[i] = (p * 4_294_967_296.0) as u64;
        p /= DECAY_BASE;
        i += 1;
    }
    table
}

#[inline]
fn decay_threshold(count: u32) -> u64 {
    DECAY_THRESHOLDS.get(count as usize).copied().unwrap_or(0)
}

/// Probability (as a fraction of 2^32) that a bucket with this count decays.
#[cfg(test)]
pub(crate) fn decay_probability(count: u32) -> f64 {
    decay_threshold(count) as f64 / 4_294_967_296.0
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(rng_seed());
}

fn rng_seed() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0x853c_49e6_748f_ea9b);
    let s = NEXT.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    mix64(s) | 1
}

/// A uniform `u32` from a per-thread xorshift64* generator (decay decisions need speed, not
/// cryptographic quality; no shared state, so threads never contend on it).
#[inline]
fn next_u32() -> u32 {
    RNG.with(|cell| {
        let mut x = cell.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        cell.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    })
}

/// True with probability 1 / `n` (`n` a power of two), from the same per-thread generator.
#[inline]
pub(crate) fn one_in(n: u32) -> bool {
    next_u32() & (n - 1) == 0
}

/// A uniform `f64` in (0, 1].
fn next_unit() -> f64 {
    (f64::from(next_u32()) + 1.0) / 4_294_967_296.0
}

/// The murmur3 64-bit finaliser: a cheap bijective mixer.
#[inline]
pub(crate) const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

#[inline]
const fn pack(fp: u32, count: u32) -> u64 {
    ((fp as u64) << 32) | count as u64
}

#[inline]
const fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

#[inline]
const fn fingerprint(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// Outcome of `n` arrivals of a foreign key at an occupied bucket.
enum Decay {
    /// The owner keeps the bucket, now with this count.
    Kept(u32),
    /// The bucket decayed to zero and the arriving key took it with this count.
    TakenOver(u32),
}

/// Applies `n` decay trials to a bucket of count `count` (> 0).
#[inline]
fn decay(count: u32, n: u32) -> Decay {
    if n == 1 {
        // The hot path: one trial.
        if u64::from(next_u32()) < decay_threshold(count) {
            return if count == 1 {
                Decay::TakenOver(1)
            } else {
                Decay::Kept(count - 1)
            };
        }
        return Decay::Kept(count);
    }
    // Several arrivals at once: jump from one successful trial to the next with a geometric
    // sample instead of looping `n` times.
    let mut count = count;
    let mut remaining = n;
    loop {
        let p = decay_threshold(count) as f64 / 4_294_967_296.0;
        if p <= 0.0 {
            return Decay::Kept(count);
        }
        // Trials up to and including the next successful one (>= 1).
        let trials = if p >= 1.0 {
            1
        } else {
            let t = (next_unit().ln() / (1.0 - p).ln()).floor() + 1.0;
            if t > f64::from(remaining) {
                return Decay::Kept(count);
            }
            t as u32
        };
        remaining -= trials;
        count -= 1;
        if count == 0 {
            // The successful trial itself is the first arrival counted for the new owner.
            return Decay::TakenOver(remaining + 1);
        }
        if remaining == 0 {
            return Decay::Kept(count);
        }
    }
}

/// A key's fingerprint and bucket positions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    fp: u32,
    cells: [usize; MAX_DEPTH],
    depth: usize,
}

/// Eight buckets: one cache line.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Line([AtomicU64; 8]);

/// The HeavyKeeper buckets of one sub-window.
///
/// A key's `depth` buckets lie in one cache line (a record touches one line, not `depth`): the
/// line is chosen by one part of the hash, the buckets within it by another, as `depth` distinct
/// slots out of eight.
#[derive(Debug)]
pub(crate) struct Sketch {
    lines: Box<[Line]>,
    depth: usize,
}

impl Sketch {
    /// At least `width × depth` buckets (rounded up to a power-of-two number of lines);
    /// `depth` in `1..=8`.
    pub(crate) fn new(width: usize, depth: usize) -> Self {
        debug_assert!((1..=MAX_DEPTH).contains(&depth));
        let lines = Self::lines_for(width, depth);
        Self {
            lines: (0..lines).map(|_| Line::default()).collect(),
            depth,
        }
    }

    /// Number of cache lines for `width × depth` buckets.
    pub(crate) fn lines_for(width: usize, depth: usize) -> usize {
        width
            .saturating_mul(depth)
            .div_ceil(8)
            .max(1)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX / 2 + 1)
    }

    /// Where a key lives in every sketch of this shape (all sub-windows share it): computed once
    /// per record, then used for the update and for the window estimate.
    #[inline]
    pub(crate) fn probe(&self, hash: u64) -> Probe {
        let line = mix64(hash ^ LINE_SEED) as usize & (self.lines.len() - 1);
        let bits = mix64(hash ^ SLOT_SEED) as usize;
        // `start + r × step` with an odd step visits the eight slots without repeating.
        let start = bits & 7;
        let step = ((bits >> 3) & 3) * 2 + 1;
        let mut cells = [0usize; MAX_DEPTH];
        let mut r = 0;
        while r < self.depth {
            cells[r] = line * 8 + ((start + r * step) & 7);
            r += 1;
        }
        Probe {
            fp: fingerprint(hash),
            cells,
            depth: self.depth,
        }
    }

    #[inline]
    fn cell(&self, i: usize) -> &AtomicU64 {
        &self.lines[i >> 3].0[i & 7]
    }

    /// Records `n` arrivals of the key; returns its estimate afterwards.
    #[inline]
    pub(crate) fn add(&self, probe: &Probe, n: u32) -> u32 {
        let fp = probe.fp;
        let mut estimate = 0;
        for &i in &probe.cells[..probe.depth] {
            let cell = self.cell(i);
            let mut cur = cell.load(Ordering::Relaxed);
            loop {
                let (owner, count) = unpack(cur);
                let next = if count == 0 || owner == fp {
                    pack(fp, count.saturating_add(n))
                } else {
                    match decay(count, n) {
                        Decay::Kept(c) if c == count => break,
                        Decay::Kept(c) => pack(owner, c),
                        Decay::TakenOver(c) => pack(fp, c),
                    }
                };
                match cell.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => {
                        let (owner, count) = unpack(next);
                        if owner == fp && count > estimate {
                            estimate = count;
                        }
                        break;
                    }
                    Err(actual) => cur = actual,
                }
            }
        }
        estimate
    }

    /// The estimated count of the key.
    #[inline]
    pub(crate) fn estimate(&self, probe: &Probe) -> u32 {
        let mut estimate = 0;
        for &i in &probe.cells[..probe.depth] {
            let (owner, count) = unpack(self.cell(i).load(Ordering::Relaxed));
            if owner == probe.fp && count > estimate {
                estimate = count;
            }
        }
        estimate
    }

    /// Empties every bucket.
    pub(crate) fn clear(&self) {
        for line in &*self.lines {
            for c in &line.0 {
                c.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Sum of all counts (never more than `depth ×` the arrivals recorded).
    #[cfg(test)]
    pub(crate) fn total_count(&self) -> u64 {
        self.lines
            .iter()
            .flat_map(|l| l.0.iter())
            .map(|c| u64::from(unpack(c.load(Ordering::Relaxed)).1))
            .sum()
    }

    /// Bytes held by the buckets.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.lines.len() * std::mem::size_of::<Line>()
    }
}

/// Seeds of the two hash parts: which line, which slots in it.
const LINE_SEED: u64 = 0x243f_6a88_85a3_08d3;
const SLOT_SEED: u64 = 0x1319_8a2e_0370_7344;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn hash_of(i: u64) -> u64 {
        mix64(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555)
    }

    impl Sketch {
        fn add_h(&self, hash: u64, n: u32) -> u32 {
            self.add(&self.probe(hash), n)
        }
        fn est_h(&self, hash: u64) -> u32 {
            self.estimate(&self.probe(hash))
        }
        fn index(&self, hash: u64, row: usize) -> usize {
            self.probe(hash).cells[row]
        }
    }

    /// Two keys whose first bucket is the same one.
    fn colliding_pair(s: &Sketch) -> (u64, u64) {
        let a = hash_of(1);
        let b = (2..)
            .map(hash_of)
            .find(|&h| s.index(h, 0) == s.index(a, 0))
            .expect("eight slots: found at once");
        (a, b)
    }

    #[test]
    fn decay_table_matches_formula() {
        assert_eq!(decay_threshold(0), 1 << 32, "an empty bucket always yields");
        assert!((decay_probability(1) - 1.0 / 1.08).abs() < 1e-9);
        assert!((decay_probability(10) - 1.08f64.powi(-10)).abs() < 1e-9);
        assert_eq!(decay_threshold(DECAY_TABLE_LEN as u32), 0);
        assert_eq!(decay_threshold(u32::MAX), 0);
        assert!(decay_threshold(DECAY_TABLE_LEN as u32 - 1) <= 1);
    }

    #[test]
    fn a_key_uses_distinct_slots_of_one_line() {
        for depth in 1..=MAX_DEPTH {
            let s = Sketch::new(4096, depth);
            assert_eq!(
                s.memory_bytes(),
                (4096 * depth).div_ceil(8).next_power_of_two() * 64
            );
            for k in 0..200 {
                let p = s.probe(hash_of(k));
                let cells = &p.cells[..depth];
                let line = cells[0] / 8;
                assert!(cells.iter().all(|&c| c / 8 == line));
                let mut sorted = cells.to_vec();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(sorted.len(), depth, "distinct slots: {cells:?}");
            }
        }
        assert_eq!(Sketch::lines_for(1, 1), 1);
        assert_eq!(Sketch::lines_for(4096, 2), 1024);
        assert_eq!(std::mem::align_of::<Line>(), 64);
    }

    #[test]
    fn single_key_is_exact() {
        let s = Sketch::new(64, 2);
        let h = hash_of(7);
        for i in 1..=1000u32 {
            assert_eq!(s.add_h(h, 1), i);
        }
        assert_eq!(s.est_h(h), 1000);
        assert_eq!(s.add_h(h, 500), 1500);
        assert_eq!(s.est_h(hash_of(8)), 0, "other keys are not counted");
        s.clear();
        assert_eq!(s.est_h(h), 0);
    }

    #[test]
    fn counts_saturate_instead_of_wrapping() {
        let s = Sketch::new(16, 1);
        let h = hash_of(1);
        s.add_h(h, u32::MAX - 1);
        s.add_h(h, 5);
        assert_eq!(s.est_h(h), u32::MAX);
    }

    #[test]
    fn heavy_key_survives_a_flood_of_light_keys() {
        // One row of 8 buckets and 10 000 foreign keys: the heavy key keeps its bucket.
        let s = Sketch::new(8, 1);
        let heavy = hash_of(0);
        for _ in 0..2000 {
            s.add_h(heavy, 1);
        }
        for i in 1..10_000 {
            s.add_h(hash_of(i), 1);
        }
        assert_eq!(s.est_h(heavy), 2000);
    }

    #[test]
    fn batched_add_takes_over_a_light_bucket() {
        let s = Sketch::new(1, 1);
        let (a, b) = colliding_pair(&s);
        s.add_h(a, 1);
        // 1000 arrivals against a count of 1: the takeover is certain long before they run out.
        let est = s.add_h(b, 1000);
        assert!(est > 900 && est <= 1000, "estimate {est}");
        assert_eq!(s.est_h(a), 0);
    }

    #[test]
    fn batched_add_against_a_heavy_bucket_leaves_it() {
        let s = Sketch::new(1, 1);
        let (a, b) = colliding_pair(&s);
        s.add_h(a, 100_000);
        s.add_h(b, u32::MAX);
        assert_eq!(s.est_h(a), 100_000);
        assert_eq!(s.est_h(b), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// No estimate exceeds the true count (keys have distinct fingerprints here), and the
        /// buckets never hold more than `depth ×` the arrivals.
        #[test]
        fn estimates_never_exceed_true_counts(
            stream in proptest::collection::vec((0u64..40, 1u32..5), 1..600),
            width_log in 0u32..5,
            depth in 1usize..=4,
        ) {
            let s = Sketch::new(1 << width_log, depth);
            let mut truth: HashMap<u64, u64> = HashMap::new();
            let mut total = 0u64;
            for &(k, n) in &stream {
                let est = s.add_h(hash_of(k), n);
                *truth.entry(k).or_default() += u64::from(n);
                total += u64::from(n);
                prop_assert!(u64::from(est) <= truth[&k]);
            }
            let fps: std::collections::HashSet<u32> =
                truth.keys().map(|&k| fingerprint(hash_of(k))).collect();
            prop_assume!(fps.len() == truth.len());
            for (&k, &t) in &truth {
                prop_assert!(u64::from(s.est_h(hash_of(k))) <= t);
            }
            prop_assert!(s.total_count() <= total * depth as u64);
        }

        /// A key that shares no bucket with another key in some row is counted exactly.
        #[test]
        fn a_key_alone_in_its_bucket_is_exact(
            stream in proptest::collection::vec(0u64..8, 1..400),
        ) {
            let s = Sketch::new(4096, 2);
            let mut truth: HashMap<u64, u32> = HashMap::new();
            for &k in &stream {
                s.add_h(hash_of(k), 1);
                *truth.entry(k).or_default() += 1;
            }
            for (&k, &t) in &truth {
                let alone = (0..2).any(|row| {
                    let mine = s.index(hash_of(k), row);
                    truth.keys().filter(|&&o| o != k).all(|&o| s.index(hash_of(o), row) != mine)
                });
                if alone {
                    prop_assert_eq!(s.est_h(hash_of(k)), t);
                }
            }
        }

        /// `n` arrivals at once never count more than `n` for the arriving key.
        #[test]
        fn batched_adds_are_bounded(owner_count in 1u32..400, n in 1u32..100_000) {
            let s = Sketch::new(1, 1);
            let (a, b) = colliding_pair(&s);
            s.add_h(a, owner_count);
            let est = s.add_h(b, n);
            prop_assert!(est <= n);
            let a_after = s.est_h(a);
            prop_assert!(a_after <= owner_count);
            // Either a still owns the bucket or b took it over; never both.
            prop_assert!(a_after == 0 || est == 0);
        }
    }
}
