//! Spans reach OpenTelemetry with the request's trace id (in-memory exporter).

mod support;

use axum::body::Body;
use axum::routing::get;
use axum::{Extension, Router};
use http::Request;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use support::{Buffer, str_field};
use tower::ServiceExt;
use tracing_subscriber::prelude::*;
use unite_telemetry::{CorrelationId, CorrelationLayer, json_layer, otel, semconv};

async fn handler(Extension(id): Extension<CorrelationId>) -> String {
    let query = tracing::info_span!(
        semconv::spans::POOL_QUERY,
        { semconv::OTEL_NAME } = semconv::db_span_name("SELECT", Some("contacts")),
        { semconv::OTEL_KIND } = semconv::KIND_CLIENT,
        { semconv::DB_SYSTEM_NAME } = semconv::DB_SYSTEM_POSTGRESQL,
        { semconv::DB_OPERATION_NAME } = "SELECT",
        { semconv::ERROR_TYPE } = tracing::field::Empty,
        { semconv::OTEL_STATUS_CODE } = tracing::field::Empty,
    );
    query.in_scope(|| tracing::info!("querying"));
    semconv::record_error(&query, "timeout");
    id.to_string()
}

struct Harness {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
    logs: Buffer,
}

fn harness(provider_builder: opentelemetry_sdk::trace::TracerProviderBuilder) -> Harness {
    let exporter = InMemorySpanExporter::default();
    let provider = provider_builder
        .with_simple_exporter(exporter.clone())
        .build();
    Harness {
        exporter,
        provider,
        logs: Buffer::default(),
    }
}

impl Harness {
    async fn send(&self, headers: &[(&str, &str)]) -> http::Response<Body> {
        let subscriber = tracing_subscriber::registry()
            .with(json_layer(self.logs.clone()))
            .with(otel::layer(&self.provider));
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = Router::new()
            .route("/contacts", get(handler))
            .layer(CorrelationLayer::new());
        let mut req = Request::builder()
            .uri("/contacts")
            .body(Body::empty())
            .unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let res = app.oneshot(req).await.unwrap();
        self.provider.force_flush().unwrap();
        res
    }

    fn spans(&self) -> Vec<SpanData> {
        self.exporter.get_finished_spans().unwrap()
    }
}

fn header(res: &http::Response<Body>, name: &str) -> String {
    res.headers()[name].to_str().unwrap().to_owned()
}

fn find<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no span {name}: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

#[tokio::test]
async fn the_request_span_is_exported_with_the_request_id_as_trace_id() {
    let h = harness(otel::tracer_provider_builder());
    let res = h.send(&[]).await;
    let request_id = header(&res, "x-request-id");
    let traceparent = header(&res, "traceparent");
    assert!(
        traceparent.ends_with("-01"),
        "sampled by the default sampler: {traceparent}"
    );

    let spans = h.spans();
    let server = find(&spans, "GET");
    assert_eq!(
        server.span_context.trace_id(),
        TraceId::from_hex(&request_id).unwrap()
    );
    assert_eq!(
        server.span_context.span_id(),
        SpanId::from_hex(&traceparent[36..52]).unwrap()
    );
    assert_eq!(server.parent_span_id, SpanId::INVALID, "a root span");
    assert_eq!(server.span_kind, opentelemetry::trace::SpanKind::Server);

    let query = find(&spans, "SELECT contacts");
    assert_eq!(
        query.span_context.trace_id(),
        server.span_context.trace_id()
    );
    assert_eq!(query.parent_span_id, server.span_context.span_id());
    assert_eq!(query.span_kind, opentelemetry::trace::SpanKind::Client);
    let attr = |key: &str| {
        query
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attr("db.system.name").as_deref(), Some("postgresql"));
    assert_eq!(attr("db.operation.name").as_deref(), Some("SELECT"));
    assert_eq!(attr("error.type").as_deref(), Some("timeout"));
    assert!(matches!(
        query.status,
        opentelemetry::trace::Status::Error { .. }
    ));

    // The log lines carry the same ids.
    let lines = h.logs.lines();
    let line = lines
        .iter()
        .find(|l| str_field(l, "message") == Some("querying"))
        .unwrap();
    assert_eq!(str_field(line, "trace_id"), Some(request_id.as_str()));
    assert_eq!(str_field(line, "span_id"), Some(&traceparent[36..52]));
}

#[tokio::test]
async fn an_inbound_traceparent_becomes_the_parent() {
    let h = harness(otel::tracer_provider_builder());
    let res = h
        .send(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )])
        .await;
    assert_eq!(
        header(&res, "x-request-id"),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let spans = h.spans();
    let server = find(&spans, "GET");
    assert_eq!(
        server.span_context.trace_id(),
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
    );
    assert_eq!(
        server.parent_span_id,
        SpanId::from_hex("00f067aa0ba902b7").unwrap()
    );
    assert!(server.parent_span_is_remote);
}

#[tokio::test]
async fn a_uuid_request_id_becomes_the_trace_id() {
    let h = harness(otel::tracer_provider_builder());
    let res = h
        .send(&[("x-request-id", "0af76519-16cd-43dd-8448-eb211c80319c")])
        .await;
    assert_eq!(
        header(&res, "x-request-id"),
        "0af7651916cd43dd8448eb211c80319c"
    );
    let spans = h.spans();
    assert_eq!(
        find(&spans, "GET").span_context.trace_id(),
        TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap()
    );
}

#[tokio::test]
async fn the_callers_decision_not_to_sample_is_kept() {
    let h = harness(otel::tracer_provider_builder());
    let res = h
        .send(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )])
        .await;
    assert!(header(&res, "traceparent").ends_with("-00"));
    assert!(h.spans().is_empty(), "not sampled, not exported");
}

#[tokio::test]
async fn a_ratio_of_zero_samples_nothing() {
    let h =
        harness(otel::tracer_provider_builder().with_sampler(otel::ratio_sampler(0.0).unwrap()));
    let res = h.send(&[]).await;
    assert!(header(&res, "traceparent").ends_with("-00"));
    assert!(h.spans().is_empty());
    assert!(otel::ratio_sampler(1.5).is_err());
}

#[tokio::test]
async fn a_provider_without_our_id_generator_still_keeps_one_id() {
    // The provider picks its own ids; the layer adopts them so request id == trace id.
    let h = harness(SdkTracerProvider::builder());
    let res = h
        .send(&[("x-request-id", "0af7651916cd43dd8448eb211c80319c")])
        .await;
    let request_id = header(&res, "x-request-id");
    let spans = h.spans();
    let server = find(&spans, "GET");
    assert_eq!(
        server.span_context.trace_id(),
        TraceId::from_hex(&request_id).unwrap()
    );
    let lines = h.logs.lines();
    let line = lines
        .iter()
        .find(|l| str_field(l, "message") == Some("querying"))
        .unwrap();
    assert_eq!(str_field(line, "correlation_id"), Some(request_id.as_str()));
}

#[test]
fn otlp_needs_a_tokio_runtime() {
    let err = otel::otlp_tracer_provider("svc", None).unwrap_err();
    assert!(
        matches!(err, unite_telemetry::TelemetryError::NoTokioRuntime),
        "{err}"
    );
}

#[tokio::test]
async fn otlp_provider_builds_inside_a_runtime_without_connecting() {
    // The gRPC channel connects lazily: building sends nothing anywhere.
    let provider = otel::otlp_tracer_provider("svc", Some(0.5)).unwrap();
    assert!(otel::otlp_tracer_provider("svc", Some(-0.1)).is_err());
    drop(provider);
}
