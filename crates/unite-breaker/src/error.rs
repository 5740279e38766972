//! Error types: rejected calls, wrapped call errors, and configuration errors.

use std::time::Duration;

use crate::State;

/// The breaker refused a call: it is open, or half-open with every trial slot taken.
///
/// Returned by [`CircuitBreaker::try_acquire`](crate::CircuitBreaker::try_acquire). Creating one
/// allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker is {state}; retry after {retry_after:?}")]
#[non_exhaustive]
pub struct Rejected {
    /// How long the caller should wait before trying again (a hint suitable for `Retry-After`).
    pub retry_after: Duration,
    /// The state that refused the call: [`State::Open`] or [`State::HalfOpen`].
    pub state: State,
}

impl Rejected {
    pub(crate) fn new(retry_after: Duration, state: State) -> Self {
        Self { retry_after, state }
    }
}

/// The error of a call made through [`CircuitBreaker::call`](crate::CircuitBreaker::call).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError<E> {
    /// The breaker refused the call without running it.
    #[error("circuit breaker is open; retry after {retry_after:?}")]
    Open {
        /// How long the caller should wait before trying again.
        retry_after: Duration,
    },
    /// The call ran and returned this error.
    #[error("the call guarded by the circuit breaker failed")]
    Inner(#[source] E),
}

impl<E> CallError<E> {
    /// `true` when the breaker refused the call.
    #[must_use]
    pub fn is_open(&self) -> bool {
        matches!(self, Self::Open { .. })
    }

    /// The wait hint when the breaker refused the call.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Open { retry_after } => Some(*retry_after),
            Self::Inner(_) => None,
        }
    }

    /// The call's own error, if the call ran.
    #[must_use]
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            Self::Open { .. } => None,
        }
    }

    /// Maps the inner error, keeping a rejection as it is.
    pub fn map_inner<F, E2>(self, f: F) -> CallError<E2>
    where
        F: FnOnce(E) -> E2,
    {
        match self {
            Self::Open { retry_after } => CallError::Open { retry_after },
            Self::Inner(e) => CallError::Inner(f(e)),
        }
    }
}

impl<E> From<Rejected> for CallError<E> {
    fn from(r: Rejected) -> Self {
        Self::Open {
            retry_after: r.retry_after,
        }
    }
}

/// A configuration refused by [`Builder::build`](crate::Builder::build).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field holds a value the breaker cannot work with.
    #[error("invalid circuit breaker config: `{field}` {reason}")]
    Invalid {
        /// The builder method / config field at fault, e.g. `"failure_rate_threshold"`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// The name of the field at fault.
    #[must_use]
    pub fn field(&self) -> &'static str {
        match self {
            Self::Invalid { field, .. } => field,
        }
    }
}
