#![doc = include_str!("../README.md")]

mod error;
mod handle;
mod keys;
#[cfg(feature = "postgres")]
mod postgres;
mod progress;
mod source;
mod store;
mod warmer;

pub use error::{BoxError, WarmError};
pub use handle::WarmHandle;
pub use keys::KeyListSource;
#[cfg(feature = "postgres")]
pub use postgres::PostgresSource;
pub use progress::{Phase, WarmProgress, WarmSummary};
pub use source::{
    BatchStream, BoxedSource, ItemFailure, OpenedSource, SourceContext, WarmBatch, WarmItem,
    WarmSource,
};
pub use store::{HotKeySource, HotKeyStore};
pub use warmer::{WarmConfig, Warmer, WarmerBuilder};

/// The Postgres driver, re-exported so row mappings can name `Row` and parameter types
/// without another dependency. Requires the `postgres` feature.
#[cfg(feature = "postgres")]
pub use tokio_postgres;

/// Re-exported so callers can hold a cancellation token without another dependency.
pub use tokio_util::sync::CancellationToken;
