//! Correlation ids for HTTP requests: a tower [`Layer`](tower::Layer) that reads or makes the
//! request's id, opens the request span with it, and returns it on the response.
//!
//! Inbound, in this order, the first valid one wins:
//! 1. `traceparent` (W3C Trace Context, version `00`, strict: lowercase hex, non-zero ids);
//! 2. `x-request-id`, then `x-correlation-id`: 32 hex digits or a UUID, either case (a UUID
//!    maps to the same 32 hex digits).
//!
//! A header that is present but malformed (too long, control characters, all-zero trace id,
//! unknown version, uppercase `traceparent`…) is dropped from the request, counted in
//! [`names::TELEMETRY_CORRELATION_REPLACED_TOTAL`](crate::names::TELEMETRY_CORRELATION_REPLACED_TOTAL),
//! and never echoed or logged. When no valid id arrives, a random one is made.
//!
//! The request id *is* the trace id: 32 lowercase hex digits. The layer
//! - opens a root span `request` with the fields `correlation_id`, `trace_id`, `span_id`,
//!   `http.request.method`, `url.path`, `http.response.status_code`, so every log line under
//!   it carries the ids;
//! - when an OpenTelemetry layer is installed, starts the span's OpenTelemetry span with those
//!   ids (continuing the caller's trace when a `traceparent` came in);
//! - puts the [`CorrelationId`] in the request extensions and sets `x-request-id` on the
//!   request to the normalised id;
//! - sets `x-request-id` and `traceparent` on the response.

mod future;
mod id;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use id::{CorrelationId, IdSource, TraceParent};
pub use layer::CorrelationLayer;
pub use service::CorrelationService;

/// `x-request-id`.
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
/// `x-correlation-id`.
pub const X_CORRELATION_ID: http::HeaderName = http::HeaderName::from_static("x-correlation-id");
/// `traceparent` (W3C Trace Context).
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// The span field holding the correlation id (on the request span, and lifted to the top
/// level of every JSON log line).
pub const CORRELATION_ID_FIELD: &str = "correlation_id";
/// The span field holding the trace id (the same value as the correlation id).
pub const TRACE_ID_FIELD: &str = "trace_id";
/// The span field holding the request span's id.
pub const SPAN_ID_FIELD: &str = "span_id";
