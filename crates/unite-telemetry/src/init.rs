//! Installing everything at once.

use std::fmt;
use std::io::IsTerminal;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogFormat, LogOutput, OtlpMode, TelemetryConfig};
use crate::prometheus::{MetricsHandle, describe_metrics, prometheus_builder};
use crate::{TelemetryError, otel};

/// How often histogram samples are drained and the drop counter is copied.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the global subscriber, and the OTLP exporter and Prometheus recorder when
/// configured. Call once, early in `main` (inside the Tokio runtime when OTLP may be on), and
/// keep the returned guard alive until the end: dropping it flushes pending spans and log
/// lines.
///
/// # Errors
/// [`TelemetryError::Filter`] for bad directives, [`TelemetryError::AlreadyInitialized`] when
/// a subscriber or recorder is already installed, [`TelemetryError::NoTokioRuntime`] /
/// [`TelemetryError::Otlp`] when OTLP is asked for but cannot start,
/// [`TelemetryError::InvalidConfig`] for a sampling ratio outside 0..=1.
pub fn init(config: TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let filter = build_filter(config.filter.as_deref())?;
    if let Some(ratio) = config.sampling_ratio {
        otel::ratio_sampler(ratio)?;
    }

    let tracer_provider = match config.otlp {
        OtlpMode::FromEnv if otel::otlp_enabled_from_env() => Some(otel::otlp_tracer_provider(
            &config.service_name,
            config.sampling_ratio,
        )?),
        _ => None,
    };

    let ansi = matches!(config.output, LogOutput::Stdout) && std::io::stdout().is_terminal()
        || matches!(config.output, LogOutput::Stderr) && std::io::stderr().is_terminal();
    let builder = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(config.queue_capacity.get())
        .thread_name("unite-telemetry-log");
    let (writer, worker_guard) = match config.output {
        LogOutput::Stdout => builder.finish(std::io::stdout()),
        LogOutput::Stderr => builder.finish(std::io::stderr()),
        LogOutput::Writer(w) => builder.finish(w),
    };
    let log_errors = writer.error_counter();

    let fmt_layer: Box<dyn Layer<Registry> + Send + Sync> = match config.format {
        LogFormat::Json => Box::new(crate::json::json_layer(writer)),
        LogFormat::Pretty => Box::new(
            tracing_subscriber::fmt::layer()
                .pretty()
                .with_ansi(ansi)
                .with_writer(writer),
        ),
    };
    let otel_layer = tracer_provider.as_ref().map(otel::layer);

    let installed = tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .with(filter)
        .try_init();
    if let Err(e) = installed {
        if let Some(provider) = &tracer_provider {
            let _ = provider.shutdown();
        }
        return Err(TelemetryError::AlreadyInitialized(Box::new(e)));
    }
    if let Some(provider) = &tracer_provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
    }

    let mut guard = TelemetryGuard {
        metrics: None,
        upkeep: None,
        tracer_provider,
        log_errors: log_errors.clone(),
        log: Some(worker_guard),
    };
    if config.prometheus {
        let recorder = prometheus_builder()?.build_recorder();
        let handle = MetricsHandle::new(recorder.handle()).with_log_errors(log_errors);
        metrics::set_global_recorder(recorder)
            .map_err(|e| TelemetryError::AlreadyInitialized(Box::new(e)))?;
        describe_metrics();
        guard.upkeep = Some(Upkeep::start(handle.clone())?);
        guard.metrics = Some(handle);
    }
    tracing::debug!(
        target: "unite_telemetry",
        otlp = guard.tracer_provider.is_some(),
        prometheus = guard.metrics.is_some(),
        "telemetry initialised"
    );
    Ok(guard)
}

fn build_filter(directives: Option<&str>) -> Result<EnvFilter, TelemetryError> {
    let from_env = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let directives = directives.or(from_env.as_deref()).unwrap_or("info");
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| TelemetryError::Filter(Box::new(e)))
}

/// A background thread that drains histograms and copies the log-drop count.
struct Upkeep {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Upkeep {
    fn start(handle: MetricsHandle) -> Result<Self, TelemetryError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("unite-telemetry-upkeep".to_owned())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(UPKEEP_EVERY)
                {
                    handle.run_upkeep();
                }
            })
            .map_err(|e| TelemetryError::Metrics(Box::new(e)))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Upkeep {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Keeps telemetry running; dropping it shuts the OTLP exporter down (exporting pending
/// spans) and flushes the log lines still queued.
#[must_use = "dropping the guard stops the log writer and the exporter"]
pub struct TelemetryGuard {
    metrics: Option<MetricsHandle>,
    upkeep: Option<Upkeep>,
    tracer_provider: Option<SdkTracerProvider>,
    log_errors: ErrorCounter,
    log: Option<WorkerGuard>,
}

impl TelemetryGuard {
    /// The `/metrics` renderer, when Prometheus is on.
    #[must_use]
    pub fn metrics(&self) -> Option<&MetricsHandle> {
        self.metrics.as_ref()
    }

    /// The OpenTelemetry tracer provider, when OTLP export is on.
    #[must_use]
    pub fn tracer_provider(&self) -> Option<&SdkTracerProvider> {
        self.tracer_provider.as_ref()
    }

    /// Log lines dropped so far because the writer's queue was full (also exported as
    /// `unite_telemetry_log_dropped_total`).
    #[must_use]
    pub fn dropped_log_lines(&self) -> u64 {
        u64::try_from(self.log_errors.dropped_lines()).unwrap_or(u64::MAX)
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            let _ = provider.shutdown();
        }
        drop(self.upkeep.take());
        // Dropping the worker guard flushes the queue and joins the writer thread.
        drop(self.log.take());
    }
}

impl fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("prometheus", &self.metrics.is_some())
            .field("otlp", &self.tracer_provider.is_some())
            .field("dropped_log_lines", &self.dropped_log_lines())
            .finish()
    }
}
