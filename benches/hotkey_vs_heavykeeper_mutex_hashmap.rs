//! `record` cost, single-threaded and with two threads contending, against the peers in the same
//! run:
//!
//! - `mutex_hashmap`: a `HashMap<String, u64>` behind a `Mutex`, the naive exact counter the old
//!   service used (one global lock, memory growing with every distinct key);
//! - `heavykeeper_crate`: the `heavykeeper` crate's `TopK<String>` (the same algorithm, `&mut self`
//!   so behind a `Mutex`, no sliding window).
//!
//! Keys follow a Zipf(s = 1.0) distribution over 1 M distinct keys, as in the accuracy test (a
//! sequence of 2^20 accesses, replayed).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Zipf};
use unite_hotkey::HotKeyDetector;

const DISTINCT: usize = 1_000_000;
const SEQUENCE: usize = 1 << 20;

/// The keys of a Zipf-distributed access sequence, laid out one after the other so that reading
/// the next key costs what it costs in a service, where the key was just built: the benchmark
/// measures the recorder, not cache misses on a table of a million strings.
struct Workload {
    text: String,
    /// `ends[i]`: end of the `i`-th key in `text` (it starts at `ends[i - 1]`).
    ends: Vec<u32>,
}

impl Workload {
    fn new() -> Self {
        use std::fmt::Write as _;
        let zipf = Zipf::new(DISTINCT as f64, 1.0).expect("valid Zipf parameters");
        let mut rng = SmallRng::seed_from_u64(42);
        let mut text = String::with_capacity(SEQUENCE * 20);
        let mut ends = Vec::with_capacity(SEQUENCE);
        for _ in 0..SEQUENCE {
            let rank = zipf.sample(&mut rng) as u64;
            let _ = write!(text, "user:{rank}:profile");
            ends.push(u32::try_from(text.len()).expect("fits"));
        }
        Self { text, ends }
    }

    #[inline]
    fn key(&self, i: usize) -> &str {
        let i = i & (SEQUENCE - 1);
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }
}

/// What is being benchmarked: anything that counts one access to a key.
trait Recorder: Sync {
    fn record(&self, key: &str);
}

impl Recorder for HotKeyDetector {
    #[inline]
    fn record(&self, key: &str) {
        HotKeyDetector::record(self, key);
    }
}

/// The naive peer: exact counts in one map behind one lock.
#[derive(Default)]
struct MutexHashMap(Mutex<HashMap<String, u64>>);

impl Recorder for MutexHashMap {
    #[inline]
    fn record(&self, key: &str) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                map.insert(key.to_owned(), 1);
            }
        }
    }
}

/// The crate peer: heavykeeper's TopK (k = 100, 4096 × 2 buckets, decay 1.08 as ours).
struct HeavyKeeperCrate(Mutex<heavykeeper::TopK<String>>);

impl HeavyKeeperCrate {
    fn new() -> Self {
        Self(Mutex::new(heavykeeper::TopK::new(100, 4096, 2, 1.08)))
    }
}

impl Recorder for HeavyKeeperCrate {
    #[inline]
    fn record(&self, key: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .add(key, 1);
    }
}

fn single_thread(c: &mut Criterion, w: &Workload) {
    let mut group = c.benchmark_group("record/1-thread");
    let peers: [(&str, Box<dyn Recorder>); 3] = [
        ("unite_hotkey", Box::new(HotKeyDetector::new())),
        ("mutex_hashmap", Box::new(MutexHashMap::default())),
        ("heavykeeper_crate", Box::new(HeavyKeeperCrate::new())),
    ];
    for (name, recorder) in &peers {
        let mut i = 0usize;
        group.bench_function(*name, |b| {
            b.iter(|| {
                recorder.record(black_box(w.key(i)));
                i = i.wrapping_add(1);
            });
        });
    }
    group.finish();
}

/// Which key the `i`-th record uses.
type KeyFn<'w> = dyn Fn(usize) -> &'w str + Sync + 'w;

/// Two threads record `iters` keys each at the same time; the result is wall time / `iters`,
/// i.e. the time one record takes while the other thread records too.
fn contended<'w>(recorder: &dyn Recorder, iters: u64, key: &KeyFn<'w>) -> Duration {
    let barrier = Barrier::new(2);
    let start = std::thread::scope(|s| {
        for t in 0..2usize {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                let offset = t * (SEQUENCE / 2);
                for i in 0..iters as usize {
                    recorder.record(black_box(key(offset + i)));
                }
            });
        }
        Instant::now()
    });
    start.elapsed()
}

fn two_threads(c: &mut Criterion, w: &Workload) {
    let mut group = c.benchmark_group("record/2-threads");
    let zipf_key = |i: usize| w.key(i);
    let same_key = |_: usize| "the-one-hot-key";
    let cases: [(&str, Box<dyn Recorder>, &KeyFn<'_>); 4] = [
        ("unite_hotkey", Box::new(HotKeyDetector::new()), &zipf_key),
        (
            "unite_hotkey_same_key",
            Box::new(HotKeyDetector::new()),
            &same_key,
        ),
        (
            "mutex_hashmap",
            Box::new(MutexHashMap::default()),
            &zipf_key,
        ),
        (
            "heavykeeper_crate",
            Box::new(HeavyKeeperCrate::new()),
            &zipf_key,
        ),
    ];
    for (name, recorder, key) in &cases {
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| contended(recorder.as_ref(), iters, *key));
        });
    }
    group.finish();
}

fn top(c: &mut Criterion, w: &Workload) {
    let d = HotKeyDetector::new();
    for i in 0..SEQUENCE {
        d.record(w.key(i));
    }
    c.bench_function("top/10_of_100_candidates", |b| {
        b.iter(|| black_box(d.top(10)))
    });
}

fn benches(c: &mut Criterion) {
    let w = Workload::new();
    single_thread(c, &w);
    two_threads(c, &w);
    top(c, &w);
}

criterion_group!(hotkey, benches);
criterion_main!(hotkey);
