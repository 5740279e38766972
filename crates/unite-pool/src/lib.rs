#![doc = include_str!("../README.md")]

mod builder;
mod config;
mod error;
mod handles;
mod lsn;
mod manager;
mod pool;
mod replica;
mod stats;
mod tls;

pub use builder::PoolBuilder;
pub use config::{BreakerConfig, DatabaseUrl, PoolConfig, ReplicasConfig, TlsConfig, TlsMode};
pub use error::{ConnectError, Error, TlsError, is_backend_failure};
pub use handles::{Reader, Session, Writer};
pub use lsn::Lsn;
pub use pool::{Pool, PooledConnection};
pub use stats::{PoolStats, ReplicaStats};

/// The driver, re-exported so callers use the same version (`Row`, `types::ToSql`,
/// `Transaction`…).
pub use tokio_postgres;
/// The breaker crate, re-exported for its `State`, `ManualClock` and builder.
pub use unite_breaker;
