//! The crate's error type.

use std::sync::Arc;

/// What can go wrong when using a [`Cache`](crate::Cache).
///
/// Redis being slow or down is never an error here: the cache falls back to L1 and the loader
/// and reports `degraded`. Errors are about the caller's input, the configuration, or a loader
/// that failed with no stale value to serve.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The encoded value is larger than `max_value_bytes`; nothing was written anywhere.
    #[error("value too large for the cache: {size} bytes encoded, limit {limit} bytes")]
    ValueTooLarge {
        /// Encoded size of the value, in bytes.
        size: usize,
        /// The configured `max_value_bytes`.
        limit: usize,
    },
    /// The key cannot be used (empty, too long, or in the reserved `__` space).
    #[error("invalid cache key: {reason}")]
    InvalidKey {
        /// Why the key was refused.
        reason: &'static str,
    },
    /// A TTL of zero was given.
    #[error("invalid TTL: it must be greater than zero")]
    InvalidTtl,
    /// The value could not be serialized (or, on a type mismatch between callers sharing a
    /// load, deserialized) by the configured codec.
    #[error("cache codec error: {0}")]
    Codec(Arc<str>),
    /// The loader failed and no stale value within the grace period was available.
    #[error("cache loader failed")]
    Loader(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The loader did not finish within `load_timeout` and no stale value was available.
    #[error("cache loader timed out")]
    LoadTimeout,
    /// The loader panicked; the panic was contained and every waiter got this error.
    #[error("cache loader panicked")]
    LoaderPanicked,
    /// The configuration was refused; `field` names the setting at fault.
    #[error("invalid cache config: `{field}` {reason}")]
    Config {
        /// The builder method / config field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The circuit breaker configuration was refused.
    #[error("invalid cache circuit breaker config")]
    Breaker(#[from] unite_breaker::ConfigError),
    /// The Redis client could not be created from the configuration (a bad URL or config).
    /// A server that is merely unreachable is not an error: the cache starts degraded.
    #[error("cannot create the Redis client")]
    Redis(#[source] fred::error::Error),
}

impl Error {
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Config {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn codec(e: impl std::fmt::Display) -> Self {
        Self::Codec(Arc::from(e.to_string()))
    }
}

/// Shorthand for `Result<T, unite_cache::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
