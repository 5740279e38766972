//! The crate's error type.

use std::time::Duration;

/// Everything that can go wrong in this crate.
///
/// Rate-limit decisions themselves never fail: when Redis does not answer, a decision falls back
/// to the local limiter (or refuses, when fail-closed). These errors come from building a
/// limiter and from the admin API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value the limiter cannot work with; `field` names it.
    #[error("invalid rate-limit config: `{field}` {reason}")]
    Config {
        /// The field at fault, e.g. `"penalty.max"`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Redis answered with an error, or the connection failed.
    #[error("redis command failed: {0}")]
    Redis(#[source] fred::error::Error),
    /// Redis did not answer within the command timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The circuit breaker around Redis is open: Redis was failing, so it was not called.
    #[error("redis is unavailable (circuit open); retry after {retry_after:?}")]
    CircuitOpen {
        /// When the breaker lets a trial call through.
        retry_after: Duration,
    },
    /// The script answered something this version does not understand.
    #[error("unexpected answer from the rate-limit script: {0}")]
    Protocol(String),
    /// An override could not be encoded or decoded.
    #[error("malformed override: {0}")]
    Override(String),
    /// A limiter with Redis needs a tokio runtime (for the override refresh task).
    #[error("a rate limiter with Redis must be built inside a tokio runtime")]
    NoRuntime,
}

impl Error {
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Config {
            field,
            reason: reason.into(),
        }
    }

    /// `true` when the error says Redis is unreachable or failing (as opposed to a bad
    /// argument or config).
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Redis(_) | Self::Timeout(_) | Self::CircuitOpen { .. }
        )
    }
}

impl From<fred::error::Error> for Error {
    fn from(e: fred::error::Error) -> Self {
        Self::Redis(e)
    }
}
