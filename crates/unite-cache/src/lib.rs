#![doc = include_str!("../README.md")]

mod cache;
mod clock;
mod codec;
mod config;
mod error;
mod invalidation;
mod l1;
mod redis;
mod stats;

pub use cache::{Cache, CacheValue};
pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::Codec;
pub use config::{CacheBuilder, CacheConfig, DEFAULT_NAMESPACE};
pub use error::{Error, Result};
pub use stats::{CacheStats, L1Stats, L2Stats, LoadStats, Provider, Status};

/// Re-exported so callers can name the breaker and its state without another dependency.
pub use unite_breaker::{CircuitBreaker, State as CircuitState};

/// A key that carries a schema version: `"{kind}:v{version}:{id}"`.
///
/// Bump the version when the cached type changes shape: old entries are simply never read
/// again and expire by themselves, so a deploy never decodes yesterday's layout.
///
/// ```
/// assert_eq!(unite_cache::versioned_key("contact", 3, 42), "contact:v3:42");
/// ```
#[must_use]
pub fn versioned_key(kind: &str, version: u32, id: impl std::fmt::Display) -> String {
    format!("{kind}:v{version}:{id}")
}
