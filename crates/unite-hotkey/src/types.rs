//! Values the detector hands out: top entries, alerts, events and the health snapshot.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// A key and its estimated number of accesses per minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HotKey {
    /// The key (truncated to `max_key_bytes`, with `…` appended, when longer).
    pub key: String,
    /// Estimated accesses per minute over the sliding window.
    pub per_minute: u64,
}

impl HotKey {
    /// A key with its per-minute count.
    #[must_use]
    pub fn new(key: impl Into<String>, per_minute: u64) -> Self {
        Self {
            key: key.into(),
            per_minute,
        }
    }
}

/// A key whose estimated rate reached the alert threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HotKeyAlert {
    /// The key (truncated like [`HotKey::key`]).
    pub key: String,
    /// Estimated accesses per minute when the alert was last evaluated.
    pub per_minute: u64,
    /// The threshold it was compared with.
    pub threshold_per_minute: u64,
    /// Length of the sliding window the count covers.
    #[serde(with = "crate::serde_util::duration_ms", rename = "window_ms")]
    pub window: Duration,
    /// When the detector started tracking the key (it entered the candidate set).
    #[serde(with = "crate::serde_util::unix_ms", rename = "first_seen_unix_ms")]
    pub first_seen: SystemTime,
    /// When the alert was raised.
    #[serde(with = "crate::serde_util::unix_ms", rename = "raised_at_unix_ms")]
    pub raised_at: SystemTime,
}

/// What subscribers receive (see [`HotKeyDetector::subscribe`](crate::HotKeyDetector::subscribe)).
///
/// Alerts are evaluated when a sub-window rotates and on `top`, `snapshot` and `tick`, never on
/// each record. A key raises at most one alert per debounce period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum HotKeyEvent {
    /// The key's rate reached the threshold.
    Raised(HotKeyAlert),
    /// An active alert's key fell below the threshold (or aged out); `per_minute` is its rate now.
    Cleared(HotKeyAlert),
}

impl HotKeyEvent {
    /// The alert this event is about.
    #[must_use]
    pub fn alert(&self) -> &HotKeyAlert {
        match self {
            Self::Raised(a) | Self::Cleared(a) => a,
        }
    }
}

/// The detector's state for a health endpoint (`"hotkeys": { "top": [...], "alerts": [...] }`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HotKeySnapshot {
    /// The hottest keys, hottest first.
    pub top: Vec<HotKey>,
    /// Alerts currently active.
    pub alerts: Vec<HotKeyAlert>,
    /// The settings that give the numbers their meaning.
    pub config: SnapshotConfig,
    /// Number of keys currently tracked as candidates.
    pub tracked_keys: usize,
    /// Estimated bytes the detector holds (see [`HotKeyDetector::memory_bytes`](crate::HotKeyDetector::memory_bytes)).
    pub memory_bytes: usize,
}

/// The part of the configuration shown in a [`HotKeySnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SnapshotConfig {
    /// Sliding window length.
    #[serde(with = "crate::serde_util::duration_ms", rename = "window_ms")]
    pub window: Duration,
    /// Number of sub-windows.
    pub sub_windows: u32,
    /// Alert threshold per minute (`None`: alerts off).
    pub threshold_per_minute: Option<u64>,
    /// Most keys tracked.
    pub capacity: usize,
}
