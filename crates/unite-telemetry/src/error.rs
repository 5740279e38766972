//! The crate's one error type.

use std::error::Error as StdError;

/// Everything that can go wrong in `unite-telemetry`.
///
/// No variant ever carries a rejected inbound id or any other request data, so an error can
/// be logged as it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The log filter (the `RUST_LOG`-style directives) did not parse.
    #[error("invalid log filter: {0}")]
    Filter(#[source] Box<dyn StdError + Send + Sync>),

    /// A global subscriber (or `log` logger, or `metrics` recorder) was already installed:
    /// `init` can run once per process.
    #[error("telemetry is already initialised: {0}")]
    AlreadyInitialized(#[source] Box<dyn StdError + Send + Sync>),

    /// The OTLP exporter needs a Tokio runtime: call `init` from inside one
    /// (for example in `#[tokio::main]`).
    #[error(
        "OTEL_EXPORTER_OTLP_ENDPOINT is set but no Tokio runtime is running: call init() inside the runtime"
    )]
    NoTokioRuntime,

    /// The OTLP exporter could not be built (bad endpoint, bad headers, bad timeout…).
    #[error("cannot build the OTLP span exporter: {0}")]
    Otlp(#[source] Box<dyn StdError + Send + Sync>),

    /// The Prometheus recorder could not be built.
    #[error("cannot build the Prometheus recorder: {0}")]
    Metrics(#[source] Box<dyn StdError + Send + Sync>),

    /// A configuration value is out of range; the message names the setting.
    #[error("invalid telemetry configuration: {0}")]
    InvalidConfig(&'static str),

    /// An inbound trace or request id was rejected. The message says why; the rejected value
    /// itself is deliberately not kept.
    #[error("invalid id: {0}")]
    InvalidId(&'static str),
}
