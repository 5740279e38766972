//! Several threads recording at once: no update is lost on a shared key, and hot keys are
//! estimated within the sketch's error while cold keys flood the buckets.

use std::sync::Barrier;

use unite_hotkey::{HotKeyDetector, ManualClock};

const THREADS: usize = 4;

fn detector() -> HotKeyDetector {
    HotKeyDetector::builder()
        .clock(ManualClock::new())
        .without_alerts()
        .build()
        .expect("valid configuration")
}

#[test]
fn one_shared_key_loses_no_update() {
    let d = detector();
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..50_000 {
                    d.record("shared");
                }
            });
        }
    });
    // Alone in its buckets, the key is counted exactly: every compare-and-swap landed.
    assert_eq!(d.estimate("shared"), (THREADS * 50_000) as u64);
    assert_eq!(d.top(1)[0].per_minute, (THREADS * 50_000) as u64);
}

#[test]
fn hot_keys_add_up_across_threads_among_cold_ones() {
    let d = detector();
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (d, barrier) = (&d, &barrier);
            s.spawn(move || {
                barrier.wait();
                for i in 0..60_000 {
                    d.record("hot-a");
                    if i % 3 == 0 {
                        d.record("hot-b");
                    }
                    // 60 000 distinct cold keys per thread, 240 000 in all.
                    d.record(&format!("cold:{t}:{i}"));
                }
            });
        }
    });
    let a_true = (THREADS * 60_000) as f64;
    let b_true = (THREADS * 20_000) as f64;
    let a = d.estimate("hot-a") as f64;
    let b = d.estimate("hot-b") as f64;
    assert!(a <= a_true && a >= 0.95 * a_true, "hot-a: {a} of {a_true}");
    assert!(b <= b_true && b >= 0.95 * b_true, "hot-b: {b} of {b_true}");
    let top = d.top(3);
    assert_eq!(top[0].key, "hot-a");
    assert_eq!(top[1].key, "hot-b");
    if let Some(cold) = top.get(2) {
        assert!(cold.per_minute <= 1, "a cold key stays cold: {cold:?}");
    }
}

#[test]
fn top_and_tick_run_while_threads_record() {
    let d = detector();
    std::thread::scope(|s| {
        for t in 0..2 {
            let d = &d;
            s.spawn(move || {
                for i in 0..40_000 {
                    d.record(&format!("k{}", i % (100 + t)));
                }
            });
        }
        let d = &d;
        s.spawn(move || {
            for _ in 0..200 {
                let top = d.top(10);
                assert!(top.len() <= 10);
                assert!(top.windows(2).all(|w| w[0].per_minute >= w[1].per_minute));
                d.tick();
            }
        });
    });
    let total: u64 = d.top(200).iter().map(|h| h.per_minute).sum();
    assert!(total <= 80_000, "never more than was recorded: {total}");
    assert!(total >= 70_000, "most of it is found again: {total}");
}
