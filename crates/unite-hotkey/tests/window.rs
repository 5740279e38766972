//! The sliding window and the alerts, driven by a fake clock (no test sleeps).

use std::num::NonZeroU64;
use std::time::Duration;

use tokio::sync::broadcast::error::TryRecvError;
use unite_hotkey::{HotKeyDetector, HotKeyEvent, ManualClock};

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn detector(clock: &ManualClock) -> HotKeyDetector {
    HotKeyDetector::builder()
        .clock(clock.clone())
        .hash_seed(1)
        .build()
        .expect("valid configuration")
}

fn record(d: &HotKeyDetector, key: &str, times: usize) {
    for _ in 0..times {
        d.record(key);
    }
}

fn keys_of(d: &HotKeyDetector) -> Vec<String> {
    d.top(100).into_iter().map(|h| h.key).collect()
}

#[test]
fn a_key_hot_a_minute_ago_is_gone_and_its_alert_cleared() {
    let clock = ManualClock::new();
    let d = detector(&clock);
    let mut events = d.subscribe();
    clock.set(secs(2.0));
    record(&d, "was-hot", 5000);
    // Background traffic keeps the detector busy (and rotating) while the hot key is silent;
    // nothing evaluates alerts before the minute has passed.
    for t in [12.0, 25.0, 33.0, 47.0, 58.0, 61.0] {
        clock.set(secs(t));
        record(&d, &format!("background-{t}"), 10);
    }
    // Rotations evaluated alerts while the key was still within the window: it alerted then,
    // which is right. What matters: one minute later it is gone and its alert is cleared.
    assert!(
        !keys_of(&d).contains(&"was-hot".to_owned()),
        "{:?}",
        keys_of(&d)
    );
    assert_eq!(d.estimate("was-hot"), 0);
    assert!(d.active_alerts().is_empty(), "{:?}", d.active_alerts());
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    assert!(
        matches!(seen.last(), Some(HotKeyEvent::Cleared(a)) if a.key == "was-hot" && a.per_minute == 0),
        "{seen:?}"
    );
}

#[test]
fn a_key_silent_for_a_minute_before_any_evaluation_raises_nothing() {
    let clock = ManualClock::new();
    let d = detector(&clock);
    let mut events = d.subscribe();
    clock.set(secs(1.0));
    record(&d, "burst", 3000);
    // No record, top or tick until a minute later: alerts are not evaluated per record.
    clock.set(secs(61.0));
    assert!(d.top(10).is_empty());
    assert!(d.tick().is_empty());
    assert!(d.active_alerts().is_empty());
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
}

#[test]
fn the_window_covers_the_current_and_five_previous_sub_windows() {
    let clock = ManualClock::new();
    let d = detector(&clock);
    clock.set(secs(5.0)); // sub-window 0
    record(&d, "early", 700);
    clock.set(secs(15.0)); // sub-window 1
    record(&d, "early", 300);
    record(&d, "later", 50);
    clock.set(secs(59.9)); // sub-window 5: everything still counts
    assert_eq!(d.estimate("early"), 1000);
    let top = d.top(2);
    assert_eq!(top[0].key, "early");
    assert_eq!(top[0].per_minute, 1000);
    assert_eq!(top[1].key, "later");
    clock.set(secs(60.0)); // sub-window 6 replaces sub-window 0
    assert_eq!(d.estimate("early"), 300);
    assert_eq!(d.top(1)[0].per_minute, 300);
    clock.set(secs(70.0)); // sub-window 1 is gone too
    assert_eq!(d.estimate("early"), 0);
    assert!(d.top(10).is_empty());
}

#[test]
fn a_long_pause_empties_everything() {
    let clock = ManualClock::new();
    let d = detector(&clock);
    record(&d, "k", 100);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(d.estimate("k"), 0);
    record(&d, "k", 7);
    assert_eq!(d.estimate("k"), 7);
}

#[test]
fn alerts_are_raised_on_evaluation_not_on_record() {
    let clock = ManualClock::new();
    let d = detector(&clock);
    let mut events = d.subscribe();
    clock.set(secs(3.0));
    record(&d, "hot", 1200);
    assert!(
        matches!(events.try_recv(), Err(TryRecvError::Empty)),
        "no evaluation yet"
    );
    let raised = d.tick();
    let [HotKeyEvent::Raised(alert)] = raised.as_slice() else {
        panic!("expected one alert, got {raised:?}");
    };
    assert_eq!(alert.key, "hot");
    assert_eq!(alert.per_minute, 1200);
    assert_eq!(alert.threshold_per_minute, 1000);
    assert_eq!(alert.window, Duration::from_secs(60));
    assert!(alert.raised_at >= alert.first_seen);
    assert_eq!(events.try_recv().ok(), Some(raised[0].clone()));
    assert_eq!(d.active_alerts().len(), 1);

    // A rotation also evaluates: a second key crossing the threshold in the next sub-window
    // alerts when the sub-window after it starts, triggered by any record.
    clock.set(secs(12.0));
    record(&d, "hot-too", 1000);
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
    clock.set(secs(21.0));
    d.record("anything");
    let e = events.try_recv().expect("rotation raised an alert");
    assert!(
        matches!(&e, HotKeyEvent::Raised(a) if a.key == "hot-too"),
        "{e:?}"
    );
}

#[test]
fn alerts_are_debounced_per_key() {
    let clock = ManualClock::new();
    let d = HotKeyDetector::builder()
        .clock(clock.clone())
        .threshold_per_minute(NonZeroU64::new(100).expect("non-zero"))
        .debounce(Duration::from_secs(120))
        .build()
        .expect("valid configuration");
    let raised = |evs: &[HotKeyEvent]| {
        evs.iter()
            .filter(|e| matches!(e, HotKeyEvent::Raised(_)))
            .count()
    };

    clock.set(secs(1.0));
    record(&d, "flappy", 150);
    assert_eq!(raised(&d.tick()), 1);
    record(&d, "flappy", 150);
    assert_eq!(raised(&d.tick()), 0, "still active: no second alert");

    clock.set(secs(65.0)); // aged out: cleared
    let evs = d.tick();
    assert!(
        matches!(evs.as_slice(), [HotKeyEvent::Cleared(a)] if a.key == "flappy"),
        "{evs:?}"
    );
    record(&d, "flappy", 150); // hot again 64 s after the alert: debounced
    assert_eq!(raised(&d.tick()), 0);
    assert!(d.active_alerts().is_empty());

    clock.set(secs(125.0)); // 124 s after the first alert: may alert again
    record(&d, "flappy", 150);
    assert_eq!(raised(&d.tick()), 1);
    // Other keys are not affected by flappy's debounce.
    record(&d, "other", 150);
    let evs = d.tick();
    assert!(
        matches!(evs.as_slice(), [HotKeyEvent::Raised(a)] if a.key == "other"),
        "{evs:?}"
    );
}

#[test]
fn without_alerts_nothing_is_raised() {
    let clock = ManualClock::new();
    let d = HotKeyDetector::builder()
        .clock(clock.clone())
        .without_alerts()
        .build()
        .expect("valid configuration");
    record(&d, "hot", 5000);
    assert!(d.tick().is_empty());
    assert!(d.active_alerts().is_empty());
    assert_eq!(d.top(1)[0].per_minute, 5000);
    assert_eq!(d.snapshot(1).config.threshold_per_minute, None);
}

#[test]
fn counts_are_scaled_to_a_minute() {
    let clock = ManualClock::new();
    let d = HotKeyDetector::builder()
        .clock(clock.clone())
        .window(Duration::from_secs(30))
        .sub_windows(3)
        .build()
        .expect("valid configuration");
    record(&d, "k", 600);
    assert_eq!(d.estimate("k"), 1200, "600 in 30 s is 1200 per minute");
    assert!(matches!(d.tick().as_slice(), [HotKeyEvent::Raised(a)] if a.per_minute == 1200));
}

#[test]
fn the_top_list_is_ordered_and_bounded() {
    let clock = ManualClock::new();
    let d = HotKeyDetector::builder()
        .clock(clock.clone())
        .capacity(5)
        .build()
        .expect("valid configuration");
    for (i, key) in ["a", "b", "c", "d", "e", "f", "g"].iter().enumerate() {
        record(&d, key, 100 * (i + 1));
    }
    let top = d.top(10);
    let keys: Vec<&str> = top.iter().map(|h| h.key.as_str()).collect();
    assert_eq!(keys, ["g", "f", "e", "d", "c"], "capacity bounds the list");
    assert!(top.windows(2).all(|w| w[0].per_minute >= w[1].per_minute));
    assert_eq!(d.top(2).len(), 2);
    assert!(d.top(0).is_empty());
}

/// A fake clock that claims to be costly, so records only sample it (like the system clock).
#[derive(Debug, Clone, Default)]
struct SampledClock(ManualClock);

impl unite_hotkey::Clock for SampledClock {
    fn now(&self) -> Duration {
        self.0.now()
    }
    fn cheap_to_read(&self) -> bool {
        false
    }
}

#[test]
fn with_a_sampled_clock_records_still_move_the_window() {
    use unite_hotkey::Clock as _;
    let clock = SampledClock::default();
    let d = HotKeyDetector::builder()
        .clock(clock.clone())
        .build()
        .expect("valid configuration");
    let mut events = d.subscribe();
    clock.0.set(secs(5.0));
    record(&d, "k", 1500);
    assert!(matches!(d.tick().as_slice(), [HotKeyEvent::Raised(_)]));
    assert!(matches!(events.try_recv(), Ok(HotKeyEvent::Raised(_))));
    // A minute later, records alone (no top or tick) notice the new sub-window within a few
    // records and age the key out.
    clock.0.set(secs(65.0));
    record(&d, "other", 1000);
    assert!(
        matches!(events.try_recv(), Ok(HotKeyEvent::Cleared(a)) if a.key == "k"),
        "a record rotated the window"
    );
    assert!(clock.now() >= secs(65.0));
    // The few records made before the first sample saw the new time went into the old
    // sub-window, which had left the window and was emptied with it (after a whole idle window
    // only; otherwise they count in the sub-window before). Very few, almost surely.
    let other = d.estimate("other");
    assert!((900..=1000).contains(&other), "{other}");
}
