//! OpenTelemetry tracing: an id generator that makes the request id the trace id, the OTLP
//! exporter built from the standard `OTEL_*` variables, and the layer that feeds it.

use std::cell::Cell;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SdkTracerProvider, TracerProviderBuilder,
};
use tracing::Span;
use tracing_opentelemetry::{OpenTelemetrySpanExt, SetParentError};
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::TelemetryError;
use crate::correlation::{CorrelationId, TraceParent};

/// The instrumentation scope name of the spans this crate exports.
pub const TRACER_NAME: &str = "unite-telemetry";

thread_local! {
    // The ids the next span started on this thread must take (0 = none). Set by the
    // correlation layer around the synchronous start of the request span only.
    static NEXT_TRACE_ID: Cell<u128> = const { Cell::new(0) };
    static NEXT_SPAN_ID: Cell<u64> = const { Cell::new(0) };
}

/// An OpenTelemetry [`IdGenerator`] that lets the correlation layer choose the ids of the
/// request span, so that the request id and the trace id are one value. Every other span gets
/// random ids, as with the SDK's default generator.
///
/// [`tracer_provider_builder`] installs it; a provider built without it still works, but
/// a request that arrives with an `x-request-id` then gets a trace id of its own (and the
/// correlation layer adopts that trace id as the correlation id).
#[derive(Debug, Clone, Default)]
pub struct CorrelationIdGenerator {
    fallback: RandomIdGenerator,
}

impl IdGenerator for CorrelationIdGenerator {
    fn new_trace_id(&self) -> TraceId {
        match NEXT_TRACE_ID.with(|c| c.replace(0)) {
            0 => self.fallback.new_trace_id(),
            id => TraceId::from(id),
        }
    }

    fn new_span_id(&self) -> SpanId {
        match NEXT_SPAN_ID.with(|c| c.replace(0)) {
            0 => self.fallback.new_span_id(),
            id => SpanId::from(id),
        }
    }
}

/// A tracer provider builder with the [`CorrelationIdGenerator`] in place. Add an exporter
/// (and a sampler, a resource…) and build.
///
/// ```
/// use opentelemetry_sdk::trace::InMemorySpanExporter;
///
/// let exporter = InMemorySpanExporter::default();
/// let provider = unite_telemetry::otel::tracer_provider_builder()
///     .with_simple_exporter(exporter.clone())
///     .build();
/// let layer = unite_telemetry::otel::layer::<tracing_subscriber::Registry>(&provider);
/// # drop(layer);
/// ```
#[must_use]
pub fn tracer_provider_builder() -> TracerProviderBuilder {
    SdkTracerProvider::builder().with_id_generator(CorrelationIdGenerator::default())
}

/// The `tracing` layer that turns spans into OpenTelemetry spans of `provider`.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + 'static
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(TRACER_NAME))
        .with_location(false)
}

/// Whether the standard variables ask for OTLP export: `OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set and not empty, `OTEL_SDK_DISABLED` is not
/// `true`, and `OTEL_TRACES_EXPORTER` is not `none`.
#[must_use]
pub fn otlp_enabled_from_env() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let is = |name: &str, value: &str| {
        std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

/// Builds a tracer provider that exports through OTLP/gRPC, configured by the standard
/// variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
/// `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`, the
/// `OTEL_BSP_*` batch settings).
///
/// `service_name` is used when `OTEL_SERVICE_NAME` is unset. `sampling_ratio`, when given,
/// overrides `OTEL_TRACES_SAMPLER` with `parentbased_traceidratio` at that ratio.
///
/// # Errors
/// [`TelemetryError::NoTokioRuntime`] outside a Tokio runtime (the gRPC client needs one),
/// [`TelemetryError::InvalidConfig`] for a ratio outside 0..=1, [`TelemetryError::Otlp`] when
/// the exporter cannot be built.
pub fn otlp_tracer_provider(
    service_name: &str,
    sampling_ratio: Option<f64>,
) -> Result<SdkTracerProvider, TelemetryError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(TelemetryError::NoTokioRuntime);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| TelemetryError::Otlp(Box::new(e)))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").map_or(true, |v| v.trim().is_empty()) {
        resource = resource.with_service_name(service_name.to_owned());
    }
    let mut builder = tracer_provider_builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build());
    if let Some(ratio) = sampling_ratio {
        builder = builder.with_sampler(ratio_sampler(ratio)?);
    }
    Ok(builder.build())
}

/// `parentbased_traceidratio` at `ratio`: follow the caller's decision when there is one,
/// else sample that fraction of traces.
///
/// # Errors
/// [`TelemetryError::InvalidConfig`] when `ratio` is not within 0..=1.
pub fn ratio_sampler(ratio: f64) -> Result<Sampler, TelemetryError> {
    if !(0.0..=1.0).contains(&ratio) {
        return Err(TelemetryError::InvalidConfig(
            "sampling ratio must be between 0.0 and 1.0",
        ));
    }
    Ok(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
        ratio,
    ))))
}

/// Starts the OpenTelemetry span of a request span (when an OpenTelemetry layer is
/// installed) with the request's ids: trace id = correlation id, span id = the id the
/// correlation layer chose, parent = the caller's `traceparent`. Returns the id updated with
/// the sampling decision (and, if the provider does not use [`CorrelationIdGenerator`], with
/// the ids the provider chose, so request id and trace id stay one value).
pub(crate) fn start_request_span(
    span: &Span,
    id: CorrelationId,
    remote: Option<&TraceParent>,
) -> CorrelationId {
    if span.is_disabled() {
        return id;
    }
    let parent = match remote {
        Some(tp) => opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(tp.trace_id()),
            SpanId::from(tp.parent_id()),
            TraceFlags::new(tp.flags()),
            true,
            TraceState::NONE,
        )),
        // An explicit empty parent: the request span is a root whatever the thread's
        // current OpenTelemetry context is.
        None => opentelemetry::Context::new(),
    };
    match span.set_parent(parent) {
        Ok(()) => {}
        // No OpenTelemetry layer: nothing to start, nothing to pay.
        Err(SetParentError::LayerNotFound | SetParentError::SpanDisabled) => return id,
        Err(SetParentError::AlreadyStarted) => {}
    }
    NEXT_TRACE_ID.with(|c| c.set(id.trace_id()));
    NEXT_SPAN_ID.with(|c| c.set(id.span_id()));
    let cx = span.context();
    NEXT_TRACE_ID.with(|c| c.set(0));
    NEXT_SPAN_ID.with(|c| c.set(0));

    let otel_span = cx.span();
    let sc = otel_span.span_context();
    if !sc.is_valid() {
        return id;
    }
    let trace_id = u128::from_be_bytes(sc.trace_id().to_bytes());
    let span_id = u64::from_be_bytes(sc.span_id().to_bytes());
    let adopted = id.with_span(trace_id, span_id, sc.is_sampled());
    if trace_id != id.trace_id() || span_id != id.span_id() {
        span.record(crate::correlation::CORRELATION_ID_FIELD, adopted.as_str());
        span.record(crate::correlation::TRACE_ID_FIELD, adopted.as_str());
        span.record(crate::correlation::SPAN_ID_FIELD, adopted.span_id_str());
    }
    adopted
}
