//! Memory of the default configuration after 1 M distinct keys, measured two ways:
//!
//! 1. the detector's own accounting, [`HotKeyDetector::memory_bytes`];
//! 2. the growth of the process's resident set (`VmRSS` in `/proc/self/status`, Linux only) across
//!    building the detector and recording the keys.
//!
//! The naive peer (`HashMap<String, u64>` behind a `Mutex`) is measured the same way in the same
//! run. Keys are formatted into one reused buffer, so the benchmark itself allocates nothing per
//! key. Run with `cargo bench -p unite-benches --bench hotkey_memory_vs_mutex_hashmap`.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Mutex;

use unite_hotkey::HotKeyDetector;

const DISTINCT: u32 = 1_000_000;

/// Resident set size in bytes, if the platform reports it.
fn rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn each_key(mut f: impl FnMut(&str)) {
    let mut key = String::with_capacity(32);
    for i in 0..DISTINCT {
        key.clear();
        let _ = write!(key, "user:{i}:profile");
        f(&key);
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let before = rss_bytes();
    let detector = HotKeyDetector::new();
    let built = rss_bytes();
    each_key(|k| detector.record(k));
    let after = rss_bytes();
    let accounted = detector.memory_bytes();
    println!("unite_hotkey (default configuration), {DISTINCT} distinct keys:");
    println!(
        "  memory_bytes()      = {accounted} B ({:.3} MiB)",
        mib(accounted)
    );
    match (before, built, after) {
        (Some(b), Some(m), Some(a)) => println!(
            "  RSS growth          = {} B ({:.3} MiB): {} B when built, {} B more while recording",
            a.saturating_sub(b),
            mib(a.saturating_sub(b)),
            m.saturating_sub(b),
            a.saturating_sub(m)
        ),
        _ => println!("  RSS growth          = not available on this platform"),
    }
    black_box(&detector);

    let before = rss_bytes();
    let naive: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    each_key(|k| {
        let mut map = naive
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry(k.to_owned()).or_insert(0) += 1;
    });
    let after = rss_bytes();
    let len = naive.lock().map(|m| m.len()).unwrap_or(0);
    println!("mutex_hashmap (naive exact counts), {len} keys:");
    match (before, after) {
        (Some(b), Some(a)) => println!(
            "  RSS growth          = {} B ({:.1} MiB)",
            a.saturating_sub(b),
            mib(a.saturating_sub(b))
        ),
        _ => println!("  RSS growth          = not available on this platform"),
    }
    black_box(&naive);
}
