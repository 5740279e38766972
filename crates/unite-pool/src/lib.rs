#![doc = include_str!("../README.md")]

mod builder;
mod config;
mod error;
mod manager;
mod pool;
mod stats;
mod tls;

pub use builder::PoolBuilder;
pub use config::{BreakerConfig, DatabaseUrl, PoolConfig, TlsConfig, TlsMode};
pub use error::{ConnectError, Error, TlsError, is_backend_failure};
pub use pool::{Pool, PooledConnection};
pub use stats::PoolStats;

/// The driver, re-exported so callers use the same version (`Row`, `types::ToSql`,
/// `Transaction`…).
pub use tokio_postgres;
/// The breaker crate, re-exported for its `State`, `ManualClock` and builder.
pub use unite_breaker;
