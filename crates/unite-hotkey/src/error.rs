//! The crate's error type.

/// What can go wrong building a detector or talking to Redis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range; fix the named field.
    #[error("invalid hot-key configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A Redis command failed (cluster view only); the local detector keeps working, retry later.
    #[cfg(feature = "cluster")]
    #[error("hot-key cluster view: redis error: {0}")]
    Redis(#[from] fred::error::Error),
}
