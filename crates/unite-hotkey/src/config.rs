//! Detector configuration.

use std::num::NonZeroU64;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Most rows a sketch may have.
pub(crate) const MAX_DEPTH: usize = 8;
/// Most sub-windows a window may have.
pub(crate) const MAX_SUB_WINDOWS: u32 = 600;
/// Most buckets a row may have (2^24: 128 MiB per sub-window at depth 1).
pub(crate) const MAX_WIDTH: usize = 1 << 24;
/// Most candidates (keys whose text is kept).
pub(crate) const MAX_CAPACITY: usize = 1 << 16;
/// Shortest key text kept for a candidate before truncation.
pub(crate) const MIN_KEY_BYTES: usize = 16;

/// Configuration of a [`HotKeyDetector`](crate::HotKeyDetector).
///
/// Memory is fixed by `sub_windows × depth × width × 8` bytes of buckets plus at most `capacity`
/// candidate keys of at most `max_key_bytes` each — whatever the number of distinct keys.
/// The defaults (6 × 2 × 4096 × 8 B = 384 KiB of buckets, 100 candidates) keep the whole detector
/// under 1 MiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[serde(default)]
pub struct HotKeyConfig {
    /// Length of the sliding window (default 60 s). Counts are reported per minute: with another
    /// window they are scaled to 60 s.
    #[serde(with = "crate::serde_util::duration_ms", rename = "window_ms")]
    pub window: Duration,
    /// Number of sub-windows the window is cut into (default 6, so 10 s each). Traffic ages out
    /// one sub-window at a time: the window covers the current sub-window and the
    /// `sub_windows - 1` before it.
    pub sub_windows: u32,
    /// Alert when a key's estimated count per minute reaches this (default 1000). `None`: no
    /// alerts.
    pub threshold_per_minute: Option<NonZeroU64>,
    /// After an alert for a key, no new alert for that key within this time (default 60 s),
    /// even if it cools down and heats up again.
    #[serde(with = "crate::serde_util::duration_ms", rename = "debounce_ms")]
    pub debounce: Duration,
    /// Buckets per sketch row, rounded up to a power of two (default 4096).
    pub width: usize,
    /// Rows per sketch (default 2, at most 8).
    pub depth: usize,
    /// Most keys tracked as candidates for `top` and alerts, whose text is kept (default 100).
    pub capacity: usize,
    /// Longest key text kept for a candidate, in bytes (default 256); longer keys are counted
    /// in full but reported truncated at a character boundary, with `…` appended.
    pub max_key_bytes: usize,
    /// Events buffered per subscriber before a slow one starts missing them (default 256).
    pub event_buffer: usize,
    /// Seed of the key hash. `None` (the default): a random seed per detector, so keys that
    /// collide cannot be chosen in advance.
    pub hash_seed: Option<u64>,
}

impl Default for HotKeyConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            sub_windows: 6,
            threshold_per_minute: NonZeroU64::new(1000),
            debounce: Duration::from_secs(60),
            width: 4096,
            depth: 2,
            capacity: 100,
            max_key_bytes: 256,
            event_buffer: 256,
            hash_seed: None,
        }
    }
}

impl HotKeyConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &'static str, reason: String| Err(Error::InvalidConfig { field, reason });
        if self.sub_windows == 0 || self.sub_windows > MAX_SUB_WINDOWS {
            return bad(
                "sub_windows",
                format!("must be 1..={MAX_SUB_WINDOWS}, got {}", self.sub_windows),
            );
        }
        let sub = self.window.as_nanos() / u128::from(self.sub_windows);
        if sub < 1_000_000 {
            return bad(
                "window",
                format!(
                    "each of the {} sub-windows must last at least 1 ms, window is {:?}",
                    self.sub_windows, self.window
                ),
            );
        }
        if self.window > Duration::from_secs(365 * 24 * 3600) {
            return bad(
                "window",
                format!("must be at most a year, got {:?}", self.window),
            );
        }
        if self.width == 0 || self.width > MAX_WIDTH {
            return bad(
                "width",
                format!("must be 1..={MAX_WIDTH}, got {}", self.width),
            );
        }
        if self.depth == 0 || self.depth > MAX_DEPTH {
            return bad(
                "depth",
                format!("must be 1..={MAX_DEPTH}, got {}", self.depth),
            );
        }
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return bad(
                "capacity",
                format!("must be 1..={MAX_CAPACITY}, got {}", self.capacity),
            );
        }
        if self.max_key_bytes < MIN_KEY_BYTES {
            return bad(
                "max_key_bytes",
                format!(
                    "must be at least {MIN_KEY_BYTES}, got {}",
                    self.max_key_bytes
                ),
            );
        }
        if self.event_buffer == 0 || self.event_buffer > usize::MAX / 2 {
            return bad(
                "event_buffer",
                format!("must be at least 1, got {}", self.event_buffer),
            );
        }
        Ok(())
    }

    /// Length of one sub-window.
    #[must_use]
    pub fn sub_window(&self) -> Duration {
        self.window / self.sub_windows.max(1)
    }

    /// Bytes the sketches take with this configuration (the fixed part of the memory).
    #[must_use]
    pub fn sketch_bytes(&self) -> usize {
        let width = self.width.checked_next_power_of_two().unwrap_or(usize::MAX);
        (self.sub_windows as usize)
            .saturating_mul(crate::sketch::Sketch::lines_for(width, self.depth.max(1)))
            .saturating_mul(64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_small() {
        let c = HotKeyConfig::default();
        c.validate().unwrap();
        assert_eq!(c.sub_window(), Duration::from_secs(10));
        assert_eq!(c.sketch_bytes(), 384 * 1024);
    }

    #[test]
    fn each_bad_field_is_named() {
        type Mutate = fn(&mut HotKeyConfig);
        let cases: [(&str, Mutate); 11] = [
            ("sub_windows", |c| c.sub_windows = 0),
            ("sub_windows", |c| c.sub_windows = MAX_SUB_WINDOWS + 1),
            ("window", |c| c.window = Duration::from_micros(10)),
            ("window", |c| c.window = Duration::MAX),
            ("width", |c| c.width = 0),
            ("width", |c| c.width = MAX_WIDTH + 1),
            ("depth", |c| c.depth = 0),
            ("depth", |c| c.depth = MAX_DEPTH + 1),
            ("capacity", |c| c.capacity = 0),
            ("max_key_bytes", |c| c.max_key_bytes = 3),
            ("event_buffer", |c| c.event_buffer = 0),
        ];
        for (field, mutate) in cases {
            let mut c = HotKeyConfig::default();
            mutate(&mut c);
            match c.validate() {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected InvalidConfig, got {other:?}"),
            }
        }
    }

    #[test]
    fn serde_round_trip_uses_milliseconds() {
        let c = HotKeyConfig::default();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["window_ms"], 60_000);
        assert_eq!(json["threshold_per_minute"], 1000);
        let back: HotKeyConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
        let partial: HotKeyConfig = serde_json::from_str(r#"{"sub_windows": 12}"#).unwrap();
        assert_eq!(partial.sub_windows, 12);
        assert_eq!(partial.window, Duration::from_secs(60));
    }
}
