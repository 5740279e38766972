//! The correlation layer through axum (`oneshot`, no server).

mod support;

use axum::body::Body;
use axum::routing::get;
use axum::{Extension, Router};
use http::{HeaderValue, Request, StatusCode};
use support::{Buffer, is_lower_hex, str_field};
use tower::ServiceExt;
use tracing_subscriber::prelude::*;
use unite_telemetry::{CorrelationId, CorrelationLayer, IdSource, TraceParent, json_layer, names};

async fn handler(Extension(id): Extension<CorrelationId>, req_headers: http::HeaderMap) -> String {
    tracing::info!(seen = %id, "handling");
    let forwarded = req_headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    format!("{id} {forwarded} {:?}", id.source())
}

async fn failing() -> StatusCode {
    StatusCode::INTERNAL_SERVER_ERROR
}

fn app() -> Router {
    Router::new()
        .route("/hello", get(handler))
        .route("/fail", get(failing))
        .layer(CorrelationLayer::new())
}

fn request(headers: &[(&str, &[u8])]) -> Request<Body> {
    let mut req = Request::builder()
        .uri("/hello")
        .body(Body::empty())
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v).unwrap(),
        );
    }
    req
}

struct Outcome {
    status: StatusCode,
    request_id: String,
    traceparent: String,
    body: String,
    logs: Buffer,
}

async fn send(app: Router, req: Request<Body>) -> Outcome {
    let logs = Buffer::default();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(json_layer(logs.clone())),
    );
    let res = app.oneshot(req).await.unwrap();
    let status = res.status();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let request_id = header("x-request-id");
    let traceparent = header("traceparent");
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    Outcome {
        status,
        request_id,
        traceparent,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
        logs,
    }
}

#[tokio::test]
async fn makes_an_id_when_none_is_sent() {
    let out = send(app(), request(&[])).await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(is_lower_hex(&out.request_id, 32), "{}", out.request_id);
    let tp = TraceParent::parse(&out.traceparent).expect("valid traceparent on the response");
    assert_eq!(
        format!("{:032x}", tp.trace_id()),
        out.request_id,
        "request id == trace id"
    );
    assert!(
        !tp.is_sampled(),
        "nothing records the trace without OpenTelemetry"
    );
    // The handler saw the same id in the extension and in the request header.
    assert_eq!(out.body, format!("{0} {0} Generated", out.request_id));
    let lines = out.logs.lines();
    let line = lines
        .iter()
        .find(|l| str_field(l, "message") == Some("handling"))
        .unwrap();
    assert_eq!(
        str_field(line, "correlation_id"),
        Some(out.request_id.as_str())
    );
    assert_eq!(str_field(line, "trace_id"), Some(out.request_id.as_str()));
    assert_eq!(str_field(line, "span_id"), Some(&out.traceparent[36..52]));
    assert_eq!(str_field(line, "seen"), Some(out.request_id.as_str()));
}

#[tokio::test]
async fn continues_a_valid_traceparent() {
    let inbound = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let out = send(app(), request(&[("traceparent", inbound.as_bytes())])).await;
    assert_eq!(out.request_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(
        out.traceparent
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    );
    assert!(
        out.traceparent.ends_with("-01"),
        "the caller's sampling decision is kept"
    );
    assert_ne!(
        &out.traceparent[36..52],
        "00f067aa0ba902b7",
        "our span, not the caller's"
    );
    assert!(out.body.ends_with("TraceParent"));
}

#[tokio::test]
async fn uses_x_request_id_and_maps_a_uuid() {
    let out = send(
        app(),
        request(&[("x-request-id", b"0AF76519-16CD-43DD-8448-EB211C80319C")]),
    )
    .await;
    assert_eq!(out.request_id, "0af7651916cd43dd8448eb211c80319c");
    assert!(
        out.traceparent
            .starts_with("00-0af7651916cd43dd8448eb211c80319c-")
    );
    assert!(out.body.ends_with("RequestId"));

    let out = send(
        app(),
        request(&[("x-correlation-id", b"0af7651916cd43dd8448eb211c80319c")]),
    )
    .await;
    assert_eq!(out.request_id, "0af7651916cd43dd8448eb211c80319c");
    assert!(out.body.ends_with("CorrelationId"));
}

#[tokio::test]
async fn malformed_and_hostile_ids_are_replaced_counted_and_never_echoed() {
    let long = "a".repeat(4096);
    let hostile: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "x-request-id",
            long.clone().into_bytes(),
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ),
        (
            "x-request-id",
            b"0af7651916cd43dd\t448eb211c80319c".to_vec(),
            "0af7651916cd43dd",
        ),
        ("x-request-id", b"evil\",\"level\":\"ERROR".to_vec(), "evil"),
        ("x-request-id", b"\xff\xfe\xfd".to_vec(), "\u{fffd}"),
        (
            "x-request-id",
            b"00000000-0000-0000-0000-000000000000".to_vec(),
            "00000000000000000000000000000000",
        ),
        (
            "x-correlation-id",
            b"<script>alert(1)</script>".to_vec(),
            "script",
        ),
        (
            "traceparent",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_vec(),
            "00f067aa0ba902b7",
        ),
        (
            "traceparent",
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec(),
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        (
            "traceparent",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec(),
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        (
            "traceparent",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01".to_vec(),
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        (
            "traceparent",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x".to_vec(),
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
    ];
    let recorder = unite_telemetry::prometheus_builder()
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    for (name, value, fragment) in &hostile {
        let out = send(app(), request(&[(name, value)])).await;
        assert_eq!(out.status, StatusCode::OK);
        assert!(
            is_lower_hex(&out.request_id, 32),
            "{name}: {}",
            out.request_id
        );
        assert!(
            !out.request_id.contains(fragment),
            "{name}: the rejected id was reused"
        );
        assert!(
            out.body
                .ends_with(&format!("{0} {0} Generated", out.request_id)),
            "{name}: {}",
            out.body
        );
        let text = out.logs.text();
        assert!(
            !text.contains(fragment),
            "{name}: the rejected id reached the logs: {text}"
        );
        for line in out.logs.lines() {
            assert_eq!(
                str_field(&line, "correlation_id"),
                Some(out.request_id.as_str())
            );
        }
        let tp = TraceParent::parse(&out.traceparent).unwrap();
        assert_eq!(format!("{:032x}", tp.trace_id()), out.request_id);
    }
    let rendered = handle.render();
    let want = format!(
        "{} {}",
        names::TELEMETRY_CORRELATION_REPLACED_TOTAL,
        hostile.len()
    );
    assert!(rendered.contains(&want), "{rendered}");
}

#[tokio::test]
async fn a_malformed_traceparent_falls_back_to_a_valid_request_id() {
    let out = send(
        app(),
        request(&[
            (
                "traceparent",
                b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
            ("x-request-id", b"0af7651916cd43dd8448eb211c80319c"),
        ]),
    )
    .await;
    assert_eq!(out.request_id, "0af7651916cd43dd8448eb211c80319c");
    assert!(out.body.ends_with("RequestId"));
}

#[tokio::test]
async fn untrusted_mode_ignores_inbound_ids() {
    let app = Router::new()
        .route("/hello", get(handler))
        .layer(CorrelationLayer::new().trust_inbound(false));
    let out = send(
        app,
        request(&[("x-request-id", b"0af7651916cd43dd8448eb211c80319c")]),
    )
    .await;
    assert_ne!(out.request_id, "0af7651916cd43dd8448eb211c80319c");
    assert!(is_lower_hex(&out.request_id, 32));
    assert!(out.body.ends_with("Generated"));
}

#[tokio::test]
async fn error_responses_carry_the_ids_too() {
    let req = Request::builder().uri("/fail").body(Body::empty()).unwrap();
    let out = send(app(), req).await;
    assert_eq!(out.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(is_lower_hex(&out.request_id, 32));
    assert!(TraceParent::parse(&out.traceparent).is_ok());
}

#[tokio::test]
async fn works_on_a_plain_tower_service() {
    let svc = tower::ServiceBuilder::new()
        .layer(CorrelationLayer::new())
        .service_fn(|req: Request<()>| async move {
            let id = req.extensions().get::<CorrelationId>().copied();
            Ok::<_, std::convert::Infallible>(http::Response::new(id))
        });
    let res = svc.oneshot(Request::new(())).await.unwrap();
    let id = res.body().expect("extension set");
    assert_eq!(res.headers()["x-request-id"], id.as_str());
    assert_eq!(id.source(), IdSource::Generated);
}
