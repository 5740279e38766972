//! Empty keys, very long keys and odd calls are handled without panics or unbounded memory.

use std::num::NonZeroU64;

use unite_hotkey::{Error, HotKeyDetector, ManualClock};

fn detector() -> HotKeyDetector {
    HotKeyDetector::builder()
        .clock(ManualClock::new())
        .build()
        .expect("valid configuration")
}

#[test]
fn the_empty_key_is_a_key_like_any_other() {
    let d = detector();
    for _ in 0..1500 {
        d.record("");
    }
    d.record("x");
    assert_eq!(d.estimate(""), 1500);
    let top = d.top(2);
    assert_eq!(top[0].key, "");
    assert_eq!(top[0].per_minute, 1500);
    assert_eq!(d.active_alerts()[0].key, "");
}

#[test]
fn a_one_mib_key_is_hashed_in_full_and_kept_truncated() {
    let d = HotKeyDetector::builder()
        .clock(ManualClock::new())
        .threshold_per_minute(NonZeroU64::new(100).expect("non-zero"))
        .build()
        .expect("valid configuration");
    let mut long_a = "a".repeat(1 << 20);
    let mut long_b = long_a.clone();
    long_a.push('1');
    long_b.push('2'); // same first MiB, differs only in the last byte
    for _ in 0..120 {
        d.record(&long_a);
    }
    for _ in 0..30 {
        d.record(&long_b);
    }
    // The whole key is hashed: keys differing in their last byte are told apart.
    assert_eq!(d.estimate(&long_a), 120);
    assert_eq!(d.estimate(&long_b), 30);
    let top = d.top(2);
    assert_eq!(top.len(), 2);
    assert_eq!(top[0].per_minute, 120);
    // Only a bounded prefix is kept (and shown).
    let max = d.config().max_key_bytes;
    for h in &top {
        assert!(h.key.len() <= max, "{} bytes kept", h.key.len());
        assert!(h.key.starts_with("aaaa") && h.key.ends_with('…'));
    }
    assert!(
        d.memory_bytes() < 1 << 20,
        "two 1 MiB keys were not stored: {} bytes",
        d.memory_bytes()
    );
    let alert = &d.active_alerts()[0];
    assert!(alert.key.len() <= max);
}

#[test]
fn multibyte_keys_are_cut_on_a_character_boundary() {
    let d = HotKeyDetector::builder()
        .clock(ManualClock::new())
        .max_key_bytes(16)
        .build()
        .expect("valid configuration");
    let key = "ключ-".repeat(10);
    d.record_n(&key, 5);
    let top = d.top(1);
    assert!(top[0].key.len() <= 16);
    assert!(top[0].key.starts_with("ключ"));
    assert!(top[0].key.ends_with('…'));
}

#[test]
fn zero_and_huge_batches() {
    let d = detector();
    d.record_n("k", 0);
    assert_eq!(d.estimate("k"), 0);
    assert!(d.top(1).is_empty());
    d.record_n("k", u32::MAX);
    d.record_n("k", u32::MAX);
    assert_eq!(
        d.estimate("k"),
        u64::from(u32::MAX),
        "saturates, never wraps"
    );
}

#[test]
fn bad_configurations_are_refused_with_the_field_named() {
    let err = HotKeyDetector::builder().depth(0).build().unwrap_err();
    assert!(
        matches!(err, Error::InvalidConfig { field: "depth", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("depth"));
    let err = HotKeyDetector::builder()
        .sub_windows(0)
        .build()
        .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidConfig {
            field: "sub_windows",
            ..
        }
    ));
    let err = HotKeyDetector::builder().capacity(0).build().unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidConfig {
            field: "capacity",
            ..
        }
    ));
    // A width that is not a power of two is rounded up, not refused.
    let d = HotKeyDetector::builder()
        .width(1000)
        .build()
        .expect("rounded up");
    assert_eq!(d.config().width, 1000);
}
