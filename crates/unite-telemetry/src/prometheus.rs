//! Prometheus exposition for the `metrics` facade.

use std::fmt;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_appender::non_blocking::ErrorCounter;

use crate::TelemetryError;
use crate::names::{self, MetricKind};

/// Histogram buckets (seconds) for every `*_seconds` metric: 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `Content-Type` of [`MetricsHandle::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A Prometheus recorder builder with Unite's settings: every `*_seconds` metric is a real
/// histogram with [`LATENCY_BUCKETS`]. Use it to build a recorder of your own (for tests:
/// `build_recorder()` and `metrics::with_local_recorder`); [`crate::init`] installs one
/// globally.
///
/// # Errors
/// Never with the built-in buckets; the `Result` mirrors the exporter's API.
pub fn prometheus_builder() -> Result<PrometheusBuilder, TelemetryError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
        .map_err(|e| TelemetryError::Metrics(Box::new(e)))
}

/// Registers the help text and unit of every metric in [`names::CATALOG`] with the current
/// recorder, so `/metrics` shows `# HELP` lines. [`crate::init`] calls it.
pub fn describe_metrics() {
    for def in names::CATALOG {
        match (def.kind, def.unit) {
            (MetricKind::Counter, Some(unit)) => {
                metrics::describe_counter!(def.name, unit, def.help)
            }
            (MetricKind::Counter, None) => metrics::describe_counter!(def.name, def.help),
            (MetricKind::Gauge, Some(unit)) => metrics::describe_gauge!(def.name, unit, def.help),
            (MetricKind::Gauge, None) => metrics::describe_gauge!(def.name, def.help),
            (MetricKind::Histogram, Some(unit)) => {
                metrics::describe_histogram!(def.name, unit, def.help);
            }
            (MetricKind::Histogram, None) => metrics::describe_histogram!(def.name, def.help),
        }
    }
}

/// Renders the Prometheus exposition text for a `/metrics` route. Cheap to clone.
///
/// ```no_run
/// # async fn demo(handle: unite_telemetry::MetricsHandle) {
/// use axum::{Router, routing::get, http::header};
///
/// let app: Router = Router::new().route(
///     "/metrics",
///     get(move || async move {
///         ([(header::CONTENT_TYPE, unite_telemetry::prometheus::CONTENT_TYPE)], handle.render())
///     }),
/// );
/// # }
/// ```
#[derive(Clone)]
pub struct MetricsHandle {
    handle: PrometheusHandle,
    log_errors: Option<ErrorCounter>,
}

impl MetricsHandle {
    /// Wraps a handle of a recorder built with [`prometheus_builder`].
    #[must_use]
    pub fn new(handle: PrometheusHandle) -> Self {
        Self {
            handle,
            log_errors: None,
        }
    }

    pub(crate) fn with_log_errors(mut self, counter: ErrorCounter) -> Self {
        self.log_errors = Some(counter);
        self
    }

    /// The exposition text (Prometheus text format 0.0.4).
    #[must_use]
    pub fn render(&self) -> String {
        self.sync();
        self.handle.render()
    }

    /// Drains histogram samples into their buckets; [`crate::init`] runs it periodically.
    pub fn run_upkeep(&self) {
        self.sync();
        self.handle.run_upkeep();
    }

    /// The wrapped exporter handle.
    #[must_use]
    pub fn prometheus(&self) -> &PrometheusHandle {
        &self.handle
    }

    /// Copies the log writer's drop count into `unite_telemetry_log_dropped_total`.
    fn sync(&self) {
        if let Some(counter) = &self.log_errors {
            let dropped = u64::try_from(counter.dropped_lines()).unwrap_or(u64::MAX);
            metrics::counter!(names::TELEMETRY_LOG_DROPPED_TOTAL).absolute(dropped);
        }
    }
}

impl fmt::Debug for MetricsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsHandle")
            .field("tracks_log_drops", &self.log_errors.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_metrics_render_as_histograms_with_help() {
        let recorder = prometheus_builder().unwrap().build_recorder();
        let handle = MetricsHandle::new(recorder.handle());
        metrics::with_local_recorder(&recorder, || {
            describe_metrics();
            metrics::histogram!(names::POOL_QUERY_DURATION_SECONDS).record(0.003);
            metrics::counter!(names::CACHE_REQUESTS_TOTAL, "layer" => "l1", "result" => "hit")
                .increment(3);
        });
        let text = handle.render();
        assert!(
            text.contains("# TYPE unite_pool_query_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("unite_pool_query_duration_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("unite_pool_query_duration_seconds_bucket{le=\"0.0025\"} 0"),
            "{text}"
        );
        assert!(text.contains("# HELP unite_cache_requests_total"), "{text}");
        assert!(
            text.contains("unite_cache_requests_total{layer=\"l1\",result=\"hit\"} 3"),
            "{text}"
        );
    }
}
