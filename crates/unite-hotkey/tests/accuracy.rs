//! Accuracy against exact counts: a seeded Zipf(s = 1.0) stream of 10 M accesses over 1 M
//! distinct keys, and a uniform stream that must raise no alert.
//!
//! The stream is spread over one minute of fake time (six sub-windows of 10 s), so the reported
//! counts are sums over the six sketches of the window, and recorded by two threads at once.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use unite_hotkey::{HotKeyDetector, HotKeyEvent, ManualClock};

const DISTINCT: usize = 1_000_000;
const ACCESSES: usize = 10_000_000;
const THREADS: usize = 2;
const SUB_WINDOWS: usize = 6;

fn key_names() -> Vec<String> {
    (0..DISTINCT).map(|i| format!("user:{i}:profile")).collect()
}

/// Records `stream` (indices into `keys`) over six sub-windows of fake time, with `THREADS`
/// threads per sub-window.
fn record_over_one_minute(
    detector: &HotKeyDetector,
    clock: &ManualClock,
    keys: &[String],
    stream: &[u32],
) {
    let per_window = stream.len().div_ceil(SUB_WINDOWS);
    for (w, window) in stream.chunks(per_window).enumerate() {
        // The middle of sub-window `w`.
        clock.set(Duration::from_secs(10 * w as u64 + 5));
        let per_thread = window.len().div_ceil(THREADS);
        std::thread::scope(|s| {
            for part in window.chunks(per_thread) {
                s.spawn(move || {
                    for &i in part {
                        detector.record(&keys[i as usize]);
                    }
                });
            }
        });
    }
}

fn detector(clock: &ManualClock) -> HotKeyDetector {
    HotKeyDetector::builder()
        .clock(clock.clone())
        .hash_seed(0x00c0_ffee)
        .build()
        .expect("default configuration is valid")
}

#[test]
fn zipf_top10_precision_and_count_error() {
    let keys = key_names();
    let zipf = Zipf::new(DISTINCT as f64, 1.0).expect("valid Zipf parameters");
    // Two seeded generators, one per thread (the debug build is slow at sampling).
    let stream: Vec<u32> = std::thread::scope(|s| {
        let parts: Vec<_> = (0..THREADS as u64)
            .map(|t| {
                s.spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(20_261_122 + t);
                    (0..ACCESSES / THREADS)
                        .map(|_| zipf.sample(&mut rng) as u32 - 1)
                        .collect::<Vec<u32>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("generator thread"))
            .collect()
    });
    assert_eq!(stream.len(), ACCESSES);
    let mut exact = vec![0u32; DISTINCT];
    for &i in &stream {
        exact[i as usize] += 1;
    }
    let mut by_count: Vec<usize> = (0..DISTINCT).collect();
    let order = |a: &usize, b: &usize| exact[*b].cmp(&exact[*a]).then(a.cmp(b));
    by_count.select_nth_unstable_by(10, order);
    by_count[..10].sort_by(order);
    assert!(
        exact[by_count[9]] > exact[by_count[10]],
        "the true top 10 is well defined"
    );
    let true_top: Vec<&str> = by_count[..10].iter().map(|&i| keys[i].as_str()).collect();

    let clock = ManualClock::new();
    let detector = detector(&clock);
    record_over_one_minute(&detector, &clock, &keys, &stream);

    let top = detector.top(10);
    assert_eq!(top.len(), 10);
    let hits = top
        .iter()
        .filter(|h| true_top.contains(&h.key.as_str()))
        .count();
    let precision = hits as f64 / 10.0;
    assert!(
        precision >= 0.9,
        "top-10 precision {precision}: reported {top:?}, true {true_top:?}"
    );

    for &i in &by_count[..10] {
        let truth = f64::from(exact[i]);
        let estimate = detector.estimate(&keys[i]) as f64;
        let error = (estimate - truth).abs() / truth;
        assert!(
            error <= 0.05,
            "{}: estimate {estimate}, true {truth}, error {:.2}%",
            keys[i],
            error * 100.0
        );
        // HeavyKeeper never overestimates (barring fingerprint collisions).
        assert!(estimate <= truth, "{}: {estimate} > {truth}", keys[i]);
        if let Some(reported) = top.iter().find(|h| h.key == keys[i]) {
            assert_eq!(
                reported.per_minute as f64, estimate,
                "top and estimate agree"
            );
        }
    }
    // The stream is hot enough that the hottest keys alert (default 1000/min).
    let alerts = detector.active_alerts();
    assert!(alerts.iter().any(|a| a.key == true_top[0]), "{alerts:?}");
    assert!(detector.memory_bytes() <= 1 << 20);
}

#[test]
fn uniform_stream_raises_no_alert() {
    let keys = key_names();
    let mut rng = SmallRng::seed_from_u64(7);
    let stream: Vec<u32> = (0..ACCESSES)
        .map(|_| rng.random_range(0..DISTINCT as u32))
        .collect();
    let mut exact = vec![0u32; DISTINCT];
    for &i in &stream {
        exact[i as usize] += 1;
    }
    let max_true = *exact.iter().max().unwrap_or(&0);
    assert!(
        max_true < 1000,
        "the stream itself has no hot key ({max_true})"
    );

    let clock = ManualClock::new();
    let detector = detector(&clock);
    let mut events = detector.subscribe();
    record_over_one_minute(&detector, &clock, &keys, &stream);

    let raised = detector.tick();
    assert!(raised.is_empty(), "{raised:?}");
    let top = detector.top(10);
    assert_eq!(top.len(), 10, "the busiest keys are still listed");
    for h in &top {
        assert!(
            h.per_minute <= u64::from(max_true),
            "{} estimated at {}/min, no key was accessed more than {max_true} times",
            h.key,
            h.per_minute
        );
    }
    assert!(detector.active_alerts().is_empty());
    match events.try_recv() {
        Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {}
        other => panic!("no event expected, got {other:?}"),
    }

    // Control: the same detector does alert once a key really is hot.
    for _ in 0..1500 {
        detector.record("now-hot");
    }
    let raised = detector.tick();
    assert!(
        matches!(raised.as_slice(), [HotKeyEvent::Raised(a)] if a.key == "now-hot"),
        "{raised:?}"
    );
}
