//! The one list of metric names used by every Unite crate.
//!
//! Scheme: `unite_<crate>_<what>_<unit>`, counters end in `_total`, durations are histograms
//! in seconds (`_seconds`), sizes are in bytes (`_bytes`). Labels are few and bounded: never a
//! key, a user id, a URL or anything a client chooses. Every crate records through the
//! [`metrics`] facade with these constants, so dashboards and alerts can rely on the strings:
//!
//! ```
//! use unite_telemetry::names;
//!
//! metrics::counter!(names::CACHE_REQUESTS_TOTAL, "layer" => "l1", "result" => "hit").increment(1);
//! metrics::histogram!(names::POOL_QUERY_DURATION_SECONDS).record(0.0021);
//! ```
//!
//! [`CATALOG`] describes each metric (kind, labels, help text); [`crate::describe_metrics`]
//! registers those descriptions with the installed recorder.

/// Pool checkouts and queries by outcome. Labels: `result` (`success`, `failure`, `timeout`,
/// `rejected`).
pub const POOL_REQUESTS_TOTAL: &str = "unite_pool_requests_total";
/// Query latency through the pool, in seconds (histogram).
pub const POOL_QUERY_DURATION_SECONDS: &str = "unite_pool_query_duration_seconds";
/// Pool connections by state. Labels: `state` (`idle`, `in_use`, `waiting`).
pub const POOL_CONNECTIONS: &str = "unite_pool_connections";

/// Circuit breaker state: 0 closed, 1 half-open, 2 open (see [`breaker_state`]). Labels: `name`.
pub const BREAKER_STATE: &str = "unite_breaker_state";
/// Calls through a breaker by outcome. Labels: `name`, `result` (`success`, `failure`, `slow`,
/// `rejected`).
pub const BREAKER_CALLS_TOTAL: &str = "unite_breaker_calls_total";

/// Cache lookups. Labels: `layer` (`l1`, `l2`), `result` (`hit`, `miss`, `error`).
pub const CACHE_REQUESTS_TOTAL: &str = "unite_cache_requests_total";
/// Time spent in cache-aside loaders, in seconds (histogram).
pub const CACHE_LOAD_DURATION_SECONDS: &str = "unite_cache_load_duration_seconds";
/// Entries held. Labels: `layer`.
pub const CACHE_ENTRIES: &str = "unite_cache_entries";
/// Bytes held (weighted size). Labels: `layer`.
pub const CACHE_BYTES: &str = "unite_cache_bytes";

/// Rate-limit decisions. Labels: `tier` (`public`, `free`, `pro`, `enterprise`, `ai`),
/// `result` (`allowed`, `limited`, `blocked`).
pub const RATELIMIT_DECISIONS_TOTAL: &str = "unite_ratelimit_decisions_total";
/// Keys currently under an escalating penalty (gauge).
pub const RATELIMIT_PENALTIES_ACTIVE: &str = "unite_ratelimit_penalties_active";
/// Decisions taken by the local limiter because the shared store was unreachable.
pub const RATELIMIT_FALLBACKS_TOTAL: &str = "unite_ratelimit_fallbacks_total";

/// Hot-key alerts raised (a key passed the per-minute threshold). No key label: keys are
/// unbounded; the keys themselves are in the health endpoint and the alert events.
pub const HOTKEY_ALERTS_TOTAL: &str = "unite_hotkey_alerts_total";

/// Entries written by the cache warmer.
pub const WARM_ENTRIES_TOTAL: &str = "unite_warm_entries_total";

/// HTTP requests served. Labels: `method`, `route` (the route template, never the raw path),
/// `status` (the numeric code).
pub const HTTP_REQUESTS_TOTAL: &str = "unite_http_requests_total";
/// HTTP request latency in seconds (histogram). Labels: `method`, `route`.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "unite_http_request_duration_seconds";

/// Log lines dropped because the non-blocking writer's queue was full.
pub const TELEMETRY_LOG_DROPPED_TOTAL: &str = "unite_telemetry_log_dropped_total";
/// Requests whose inbound correlation id was malformed and replaced.
pub const TELEMETRY_CORRELATION_REPLACED_TOTAL: &str = "unite_telemetry_correlation_replaced_total";

/// Values of [`BREAKER_STATE`].
pub mod breaker_state {
    /// The breaker lets calls through.
    pub const CLOSED: f64 = 0.0;
    /// The breaker lets a few trial calls through.
    pub const HALF_OPEN: f64 = 1.0;
    /// The breaker rejects calls.
    pub const OPEN: f64 = 2.0;
}

/// Label keys, so every crate spells them the same way.
pub mod labels {
    /// Outcome of an operation.
    pub const RESULT: &str = "result";
    /// Cache layer: `l1` or `l2`.
    pub const LAYER: &str = "layer";
    /// Pool connection state.
    pub const STATE: &str = "state";
    /// Breaker name.
    pub const NAME: &str = "name";
    /// Rate-limit tier.
    pub const TIER: &str = "tier";
    /// HTTP method.
    pub const METHOD: &str = "method";
    /// HTTP route template (`/api/contacts/{id}`), never the raw path.
    pub const ROUTE: &str = "route";
    /// HTTP status code.
    pub const STATUS: &str = "status";
}

/// The kind of a metric in [`CATALOG`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricKind {
    /// Monotonic counter (`_total`).
    Counter,
    /// Value that goes up and down.
    Gauge,
    /// Distribution, exported as a Prometheus histogram.
    Histogram,
}

/// One entry of [`CATALOG`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricDef {
    /// The metric name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The label keys it carries (all bounded).
    pub labels: &'static [&'static str],
    /// The unit, if any.
    pub unit: Option<metrics::Unit>,
    /// The `# HELP` text.
    pub help: &'static str,
}

const fn def(
    name: &'static str,
    kind: MetricKind,
    labels: &'static [&'static str],
    unit: Option<metrics::Unit>,
    help: &'static str,
) -> MetricDef {
    MetricDef {
        name,
        kind,
        labels,
        unit,
        help,
    }
}

use MetricKind::{Counter, Gauge, Histogram};
use metrics::Unit::{Bytes, Count, Seconds};

/// Every Unite metric with its kind, labels, unit and help text.
pub const CATALOG: &[MetricDef] = &[
    def(
        POOL_REQUESTS_TOTAL,
        Counter,
        &["result"],
        Some(Count),
        "Pool checkouts and queries by outcome.",
    ),
    def(
        POOL_QUERY_DURATION_SECONDS,
        Histogram,
        &[],
        Some(Seconds),
        "Query latency through the pool.",
    ),
    def(
        POOL_CONNECTIONS,
        Gauge,
        &["state"],
        Some(Count),
        "Pool connections by state.",
    ),
    def(
        BREAKER_STATE,
        Gauge,
        &["name"],
        None,
        "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
    ),
    def(
        BREAKER_CALLS_TOTAL,
        Counter,
        &["name", "result"],
        Some(Count),
        "Calls through a circuit breaker by outcome.",
    ),
    def(
        CACHE_REQUESTS_TOTAL,
        Counter,
        &["layer", "result"],
        Some(Count),
        "Cache lookups by layer and result.",
    ),
    def(
        CACHE_LOAD_DURATION_SECONDS,
        Histogram,
        &[],
        Some(Seconds),
        "Time spent in cache-aside loaders.",
    ),
    def(
        CACHE_ENTRIES,
        Gauge,
        &["layer"],
        Some(Count),
        "Entries held per cache layer.",
    ),
    def(
        CACHE_BYTES,
        Gauge,
        &["layer"],
        Some(Bytes),
        "Bytes held per cache layer.",
    ),
    def(
        RATELIMIT_DECISIONS_TOTAL,
        Counter,
        &["tier", "result"],
        Some(Count),
        "Rate-limit decisions by tier and result.",
    ),
    def(
        RATELIMIT_PENALTIES_ACTIVE,
        Gauge,
        &[],
        Some(Count),
        "Keys currently under an escalating penalty.",
    ),
    def(
        RATELIMIT_FALLBACKS_TOTAL,
        Counter,
        &[],
        Some(Count),
        "Decisions taken locally because the shared store was unreachable.",
    ),
    def(
        HOTKEY_ALERTS_TOTAL,
        Counter,
        &[],
        Some(Count),
        "Hot-key alerts raised.",
    ),
    def(
        WARM_ENTRIES_TOTAL,
        Counter,
        &[],
        Some(Count),
        "Entries written by the cache warmer.",
    ),
    def(
        HTTP_REQUESTS_TOTAL,
        Counter,
        &["method", "route", "status"],
        Some(Count),
        "HTTP requests served.",
    ),
    def(
        HTTP_REQUEST_DURATION_SECONDS,
        Histogram,
        &["method", "route"],
        Some(Seconds),
        "HTTP request latency.",
    ),
    def(
        TELEMETRY_LOG_DROPPED_TOTAL,
        Counter,
        &[],
        Some(Count),
        "Log lines dropped because the writer queue was full.",
    ),
    def(
        TELEMETRY_CORRELATION_REPLACED_TOTAL,
        Counter,
        &[],
        Some(Count),
        "Inbound correlation ids that were malformed and replaced.",
    ),
];

/// Every metric name, in [`CATALOG`] order.
pub const ALL: &[&str] = &{
    let mut out = [""; CATALOG.len()];
    let mut i = 0;
    while i < CATALOG.len() {
        out[i] = CATALOG[i].name;
        i += 1;
    }
    out
};

/// Whether `name` is a Unite metric, also accepting the series Prometheus derives from a
/// histogram (`_bucket`, `_sum`, `_count`).
#[must_use]
pub fn is_known(name: &str) -> bool {
    if ALL.contains(&name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|base| {
            CATALOG
                .iter()
                .any(|d| d.name == base && d.kind == MetricKind::Histogram)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_scheme() {
        for d in CATALOG {
            assert!(d.name.starts_with("unite_"), "{}", d.name);
            assert!(
                d.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                d.name
            );
            match d.kind {
                MetricKind::Counter => assert!(d.name.ends_with("_total"), "{}", d.name),
                MetricKind::Histogram => assert!(d.name.ends_with("_seconds"), "{}", d.name),
                MetricKind::Gauge => assert!(!d.name.ends_with("_total"), "{}", d.name),
            }
        }
    }

    #[test]
    fn names_are_unique_and_all_is_complete() {
        let mut names: Vec<_> = ALL.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOG.len());
        assert!(ALL.iter().all(|n| !n.is_empty()));
    }

    #[test]
    fn the_readme_lists_every_name() {
        let readme = include_str!("../README.md");
        for name in ALL {
            assert!(
                readme.contains(&format!("| `{name}` |")),
                "README lacks {name}"
            );
        }
    }

    #[test]
    fn is_known_accepts_histogram_series_only_for_histograms() {
        assert!(is_known(HTTP_REQUESTS_TOTAL));
        assert!(is_known("unite_pool_query_duration_seconds_bucket"));
        assert!(is_known("unite_pool_query_duration_seconds_count"));
        assert!(!is_known("unite_cache_entries_bucket"));
        assert!(!is_known("unite_hotkey_top_per_minute"));
    }
}
