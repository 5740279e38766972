//! The crate's error type.

use crate::WarmSummary;

/// A boxed error, as returned by loaders, row mappings and sources.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can end a warm-up, or fail a [`HotKeyStore`](crate::HotKeyStore) call.
///
/// Errors of single items or batches (a loader failing for some keys, a value the cache
/// refuses, Redis failing for one pipeline) do not end a warm-up: they are counted in the
/// [`WarmSummary`] and the run goes on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WarmError {
    /// The source failed as a whole (the query could not run, the connection was lost, the
    /// saved key list could not be read). The run stopped; `partial` tells what had been
    /// written before (every item counted there is in the cache).
    #[error("warm source `{name}` failed after {} items were written: {cause}", partial.written)]
    Source {
        /// The source's name (see [`WarmSource::name`](crate::WarmSource::name)).
        name: String,
        /// What went wrong.
        #[source]
        cause: BoxError,
        /// What the run did before the source failed.
        partial: Box<WarmSummary>,
    },
    /// A Redis command of the hot-key store failed; retry later.
    #[error("hot-key store: redis {op} failed")]
    Store {
        /// The operation (`save` or `load`).
        op: &'static str,
        /// The Redis error.
        #[source]
        cause: fred::error::Error,
    },
    /// The saved hot-key list under `key` is not one this crate wrote (it is left untouched).
    #[error("hot-key store: the value under `{key}` is not a saved key list: {reason}")]
    StoreFormat {
        /// The Redis key read.
        key: String,
        /// Why it was refused.
        reason: String,
    },
    /// A setting was refused; `field` names it.
    #[error("invalid warm config: `{field}` {reason}")]
    Config {
        /// The builder method / config field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The background warm-up task panicked or was aborted before it produced a summary.
    #[error("the warm-up task ended without a summary (it panicked or was aborted)")]
    Aborted,
}

impl WarmError {
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Config {
            field,
            reason: reason.into(),
        }
    }

    /// The summary of what was written before the run failed, when it failed in its source.
    #[must_use]
    pub fn partial_summary(&self) -> Option<&WarmSummary> {
        match self {
            Self::Source { partial, .. } => Some(partial),
            _ => None,
        }
    }
}
