//! What [`crate::init`] installs.

use std::fmt;
use std::io;
use std::num::NonZeroUsize;
use std::str::FromStr;

use crate::TelemetryError;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LogFormat {
    /// One JSON object per line (see [`crate::json`]): for production and log shippers.
    #[default]
    Json,
    /// Multi-line, human-friendly output with span context: for development.
    Pretty,
}

impl FromStr for LogFormat {
    type Err = TelemetryError;

    /// `json` or `pretty` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("json") {
            Ok(Self::Json)
        } else if s.eq_ignore_ascii_case("pretty") {
            Ok(Self::Pretty)
        } else {
            Err(TelemetryError::InvalidConfig(
                "log format must be `json` or `pretty`",
            ))
        }
    }
}

/// Where log lines go.
#[non_exhaustive]
#[derive(Default)]
pub enum LogOutput {
    /// Standard output (the default).
    #[default]
    Stdout,
    /// Standard error.
    Stderr,
    /// Any writer (a file, a pipe, a buffer in tests).
    Writer(Box<dyn io::Write + Send + 'static>),
}

impl LogOutput {
    /// Logs to `writer`.
    pub fn writer(writer: impl io::Write + Send + 'static) -> Self {
        Self::Writer(Box::new(writer))
    }
}

impl fmt::Debug for LogOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdout => f.write_str("Stdout"),
            Self::Stderr => f.write_str("Stderr"),
            Self::Writer(_) => f.write_str("Writer(..)"),
        }
    }
}

/// Whether spans are exported through OTLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OtlpMode {
    /// Export when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set, following
    /// the standard `OTEL_*` variables (see [`crate::otel::otlp_enabled_from_env`]).
    #[default]
    FromEnv,
    /// Never export, whatever the environment says.
    Disabled,
}

/// Settings for [`crate::init`]. Start from [`TelemetryConfig::new`] and chain the setters.
///
/// ```
/// use unite_telemetry::{LogFormat, TelemetryConfig};
///
/// let config = TelemetryConfig::new("unite-hub")
///     .format(LogFormat::Pretty)
///     .filter("info,unite_pool=debug")
///     .sampling_ratio(0.25);
/// assert_eq!(config.service_name, "unite-hub");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct TelemetryConfig {
    /// The service name (OpenTelemetry `service.name` unless `OTEL_SERVICE_NAME` is set).
    pub service_name: String,
    /// JSON lines or pretty output.
    pub format: LogFormat,
    /// `RUST_LOG`-style directives. `None` (the default): read `RUST_LOG`, else `info`.
    pub filter: Option<String>,
    /// Lines the non-blocking writer queues before it drops (and counts) new ones.
    pub queue_capacity: NonZeroUsize,
    /// Where lines go.
    pub output: LogOutput,
    /// OTLP export.
    pub otlp: OtlpMode,
    /// Trace sampling ratio (parent-based). `None`: `OTEL_TRACES_SAMPLER(_ARG)`, else always on.
    pub sampling_ratio: Option<f64>,
    /// Install the Prometheus recorder for the `metrics` facade (default `true`).
    pub prometheus: bool,
}

/// Default queue length of the non-blocking writer.
pub const DEFAULT_QUEUE_CAPACITY: NonZeroUsize = match NonZeroUsize::new(65_536) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

impl TelemetryConfig {
    /// The defaults for a service named `service_name`: JSON to stdout, `RUST_LOG` or `info`,
    /// a 65 536-line queue, OTLP from the environment, Prometheus on.
    #[must_use]
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            format: LogFormat::Json,
            filter: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            output: LogOutput::Stdout,
            otlp: OtlpMode::FromEnv,
            sampling_ratio: None,
            prometheus: true,
        }
    }

    /// Sets the line format.
    #[must_use]
    pub fn format(mut self, format: LogFormat) -> Self {
        self.format = format;
        self
    }

    /// Sets the filter directives (they win over `RUST_LOG`).
    #[must_use]
    pub fn filter(mut self, directives: impl Into<String>) -> Self {
        self.filter = Some(directives.into());
        self
    }

    /// Sets the writer's queue length.
    #[must_use]
    pub fn queue_capacity(mut self, lines: NonZeroUsize) -> Self {
        self.queue_capacity = lines;
        self
    }

    /// Sets where lines go.
    #[must_use]
    pub fn output(mut self, output: LogOutput) -> Self {
        self.output = output;
        self
    }

    /// Sets the OTLP mode.
    #[must_use]
    pub fn otlp(mut self, mode: OtlpMode) -> Self {
        self.otlp = mode;
        self
    }

    /// Sets the trace sampling ratio (0.0..=1.0, checked by `init`).
    #[must_use]
    pub fn sampling_ratio(mut self, ratio: f64) -> Self {
        self.sampling_ratio = Some(ratio);
        self
    }

    /// Turns the Prometheus recorder on or off.
    #[must_use]
    pub fn prometheus(mut self, enabled: bool) -> Self {
        self.prometheus = enabled;
        self
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self::new("unknown_service")
    }
}
