//! The health snapshot, its JSON shape, and the memory bound.

use std::time::Duration;

use unite_hotkey::{HotKeyDetector, HotKeySnapshot, ManualClock};

#[test]
fn snapshot_has_the_health_document_shape() {
    let clock = ManualClock::new();
    let d = HotKeyDetector::builder()
        .clock(clock.clone())
        .build()
        .expect("valid configuration");
    clock.set(Duration::from_secs(5));
    for _ in 0..1500 {
        d.record("contacts:42");
    }
    for _ in 0..10 {
        d.record("contacts:7");
    }
    let snap = d.snapshot(10);
    assert_eq!(snap.top.len(), 2);
    assert_eq!(snap.alerts.len(), 1);
    assert_eq!(snap.tracked_keys, 2);
    assert!(snap.memory_bytes > 384 * 1024 && snap.memory_bytes < 1 << 20);

    let json = serde_json::to_value(&snap).expect("serializable");
    assert_eq!(json["top"][0]["key"], "contacts:42");
    assert_eq!(json["top"][0]["per_minute"], 1500);
    assert_eq!(json["top"][1]["key"], "contacts:7");
    assert_eq!(json["alerts"][0]["key"], "contacts:42");
    assert_eq!(json["alerts"][0]["per_minute"], 1500);
    assert_eq!(json["alerts"][0]["threshold_per_minute"], 1000);
    assert_eq!(json["alerts"][0]["window_ms"], 60_000);
    assert!(
        json["alerts"][0]["first_seen_unix_ms"]
            .as_u64()
            .unwrap_or(0)
            > 1_600_000_000_000
    );
    assert!(
        json["alerts"][0]["raised_at_unix_ms"].as_u64()
            >= json["alerts"][0]["first_seen_unix_ms"].as_u64()
    );
    assert_eq!(json["config"]["window_ms"], 60_000);
    assert_eq!(json["config"]["sub_windows"], 6);
    assert_eq!(json["config"]["threshold_per_minute"], 1000);
    assert!(json["memory_bytes"].as_u64().is_some());

    let back: HotKeySnapshot = serde_json::from_value(json).expect("deserializable");
    assert_eq!(back.top, snap.top);
    assert_eq!(back.config, snap.config);

    let event = serde_json::to_value(d.subscribe().resubscribe().try_recv().ok()).expect("json");
    assert!(event.is_null(), "no event was pending for a new subscriber");
}

#[test]
fn default_memory_stays_under_one_mib_after_a_million_distinct_keys() {
    let d = HotKeyDetector::builder()
        .clock(ManualClock::new())
        .build()
        .expect("valid configuration");
    let empty = d.memory_bytes();
    let mut key = String::new();
    for i in 0..1_000_000u32 {
        use std::fmt::Write;
        key.clear();
        let _ = write!(key, "session:{i:08}");
        d.record(&key);
    }
    let full = d.memory_bytes();
    assert!(full <= 1 << 20, "{full} bytes");
    assert!(full - empty < 64 * 1024, "grew by {} bytes", full - empty);
    assert!(d.snapshot(0).tracked_keys <= d.config().capacity);
}
