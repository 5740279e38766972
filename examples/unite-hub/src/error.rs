//! Every error leaves the service as one JSON shape:
//! `{"error": {"code": "...", "message": "...", "correlation_id": "..."}}`.
//!
//! Handlers return [`ApiError`]; [`error_envelope`] (applied just inside the correlation
//! layer) adds the request's correlation id, and also rewrites errors that did not come from a
//! handler (an extractor's rejection, the body limit, an unknown route) into the same shape.
//! No stack trace, SQL text or backend message ever reaches a response.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error a handler returns.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with a status, a stable code and a message safe to show.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 503 `unavailable`: a backing service is down; the client may retry after the hint.
    pub fn unavailable(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self {
            retry_after,
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// 500 `internal`: the detail goes to the log, never to the client.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl From<unite_pool::Error> for ApiError {
    fn from(e: unite_pool::Error) -> Self {
        match &e {
            unite_pool::Error::CircuitOpen { retry_after } => {
                Self::unavailable("the database is unavailable", Some(*retry_after))
            }
            unite_pool::Error::CheckoutTimeout { .. } => {
                Self::unavailable("the database is busy", Some(Duration::from_secs(1)))
            }
            _ => {
                tracing::warn!(error = %e, "database error");
                Self::unavailable(
                    "the database could not answer",
                    Some(Duration::from_secs(1)),
                )
            }
        }
    }
}

/// What [`error_envelope`] needs from a handler's error, carried in the response extensions.
#[derive(Debug, Clone)]
struct ErrorInfo {
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response.extensions_mut().insert(ErrorInfo {
            code: self.code,
            message: self.message,
        });
        response
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: ErrorFields<'a>,
}

#[derive(Serialize)]
struct ErrorFields<'a> {
    code: &'a str,
    message: &'a str,
    correlation_id: &'a str,
}

/// A stable code for an error status that did not come with one.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::GATEWAY_TIMEOUT => "timeout",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}

/// Turns an error response into the JSON envelope with the correlation id `id` (the request's,
/// taken before the request went down the stack); any other response is returned as it is.
pub fn error_envelope(response: Response, id: Option<unite_telemetry::CorrelationId>) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let info = response.extensions().get::<ErrorInfo>().cloned();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if info.is_none() && is_json {
        // Already an envelope (the rate limiter writes its own 429 body): add nothing.
        return response;
    }
    let (code, message) = match &info {
        Some(i) => (i.code, i.message.as_str()),
        None => (
            code_for(status),
            status.canonical_reason().unwrap_or("error"),
        ),
    };
    let id = id.map(|c| c.as_str().to_owned()).unwrap_or_default();
    let body = serde_json::to_vec(&Envelope {
        error: ErrorFields {
            code,
            message,
            correlation_id: &id,
        },
    })
    .unwrap_or_default();
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        assert_eq!(code_for(StatusCode::PAYLOAD_TOO_LARGE), "payload_too_large");
        assert_eq!(code_for(StatusCode::IM_A_TEAPOT), "bad_request");
        assert_eq!(code_for(StatusCode::BAD_GATEWAY), "internal");
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        let r = ApiError::unavailable("x", Some(Duration::from_millis(200))).into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = ApiError::unavailable("x", Some(Duration::from_millis(2500))).into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
    }
}
