#![doc = include_str!("../README.md")]

pub mod config;
pub mod correlation;
mod error;
mod init;
pub mod json;
pub mod names;
pub mod otel;
pub mod prometheus;
pub mod redact;
pub mod semconv;

pub use config::{LogFormat, LogOutput, OtlpMode, TelemetryConfig};
pub use correlation::{CorrelationId, CorrelationLayer, CorrelationService, IdSource, TraceParent};
pub use error::TelemetryError;
pub use init::{TelemetryGuard, init};
pub use json::{UtcTime, json_layer, json_layer_with_timer};
pub use prometheus::{MetricsHandle, describe_metrics, prometheus_builder};
pub use redact::{RedactedHeaders, Secret, redact_header, redact_url};
