#![doc = include_str!("../README.md")]

mod clock;
mod config;
mod detector;
mod error;
mod serde_util;
mod sketch;
mod types;

#[cfg(feature = "cluster")]
pub mod cluster;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::HotKeyConfig;
pub use detector::{HotKeyDetector, HotKeyDetectorBuilder};
pub use error::Error;
pub use types::{HotKey, HotKeyAlert, HotKeyEvent, HotKeySnapshot, SnapshotConfig};

/// Re-exported so subscribers can name the receiver and its errors without depending on tokio.
pub use tokio::sync::broadcast;
