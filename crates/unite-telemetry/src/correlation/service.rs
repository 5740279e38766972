use std::task::{Context, Poll};

use http::{HeaderMap, HeaderValue, Request, Response};
use tower::Service;
use tracing::{Level, Span};

use super::id::parse_request_id;
use super::{
    CorrelationId, CorrelationLayer, IdSource, ResponseFuture, TRACEPARENT, TraceParent,
    X_CORRELATION_ID, X_REQUEST_ID,
};
use crate::names;

/// The service made by [`CorrelationLayer`]. See the [module docs](super).
#[derive(Debug, Clone)]
pub struct CorrelationService<S> {
    inner: S,
    config: CorrelationLayer,
}

impl<S> CorrelationService<S> {
    /// Wraps `inner` with the settings of `layer`.
    pub const fn new(inner: S, layer: CorrelationLayer) -> Self {
        Self {
            inner,
            config: layer,
        }
    }

    /// The wrapped service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The outcome of reading the inbound headers.
pub(crate) struct Inbound {
    pub(crate) id: CorrelationId,
    pub(crate) remote: Option<TraceParent>,
    /// Which of traceparent / x-request-id / x-correlation-id were present but malformed.
    pub(crate) malformed: [bool; 3],
}

impl Inbound {
    fn any_malformed(&self) -> bool {
        self.malformed.iter().any(|&m| m)
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &http::HeaderName) -> Option<Result<&'h str, ()>> {
    headers.get(name).map(|v| v.to_str().map_err(|_| ()))
}

/// Reads the request's id from its headers (see the module docs for the rules).
///
/// Every id header present is checked, not only the one that wins, so that a malformed one is
/// flagged (and removed from the request) even beside a valid one.
pub(crate) fn extract(headers: &HeaderMap, trust_inbound: bool) -> Inbound {
    if !trust_inbound {
        return Inbound {
            id: CorrelationId::generate().with_source(IdSource::Generated),
            remote: None,
            malformed: [false; 3],
        };
    }
    let traceparent =
        header_str(headers, &TRACEPARENT).map(|v| v.ok().and_then(|v| TraceParent::parse(v).ok()));
    let request_id =
        header_str(headers, &X_REQUEST_ID).map(|v| v.ok().and_then(|v| parse_request_id(v).ok()));
    let correlation_id = header_str(headers, &X_CORRELATION_ID)
        .map(|v| v.ok().and_then(|v| parse_request_id(v).ok()));
    let malformed = [
        matches!(traceparent, Some(None)),
        matches!(request_id, Some(None)),
        matches!(correlation_id, Some(None)),
    ];
    if let Some(Some(tp)) = traceparent {
        return Inbound {
            id: CorrelationId::from_trace_parent(&tp),
            remote: Some(tp),
            malformed,
        };
    }
    for (slot, parsed, source) in [
        (1, request_id, IdSource::RequestId),
        (2, correlation_id, IdSource::CorrelationId),
    ] {
        if let Some(Some(trace_id)) = parsed {
            let id = CorrelationId::new(
                trace_id,
                super::id::random_nonzero_u64(),
                None,
                false,
                source,
            );
            // Replaced: a header of higher precedence was sent and refused.
            return Inbound {
                id: id.with_replaced(malformed[..slot].iter().any(|&m| m)),
                remote: None,
                malformed,
            };
        }
    }
    let any = malformed.iter().any(|&m| m);
    Inbound {
        id: CorrelationId::generate()
            .with_source(IdSource::Generated)
            .with_replaced(any),
        remote: None,
        malformed,
    }
}

macro_rules! request_span {
    ($level:expr, $method:expr, $path:expr, $id:expr) => {
        tracing::span!(
            parent: None,
            $level,
            "request",
            otel.name = $method,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = $method,
            url.path = $path,
            http.response.status_code = tracing::field::Empty,
            correlation_id = $id.as_str(),
            trace_id = $id.as_str(),
            span_id = $id.span_id_str(),
        )
    };
}

fn make_span(level: Level, method: &str, path: &str, id: &CorrelationId) -> Span {
    match level {
        Level::TRACE => request_span!(Level::TRACE, method, path, id),
        Level::DEBUG => request_span!(Level::DEBUG, method, path, id),
        Level::INFO => request_span!(Level::INFO, method, path, id),
        Level::WARN => request_span!(Level::WARN, method, path, id),
        _ => request_span!(Level::ERROR, method, path, id),
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CorrelationService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let inbound = extract(req.headers(), self.config.trust_inbound);
        if inbound.any_malformed() {
            metrics::counter!(names::TELEMETRY_CORRELATION_REPLACED_TOTAL).increment(1);
        }
        let span = make_span(
            self.config.span_level,
            req.method().as_str(),
            req.uri().path(),
            &inbound.id,
        );
        let id = crate::otel::start_request_span(&span, inbound.id, inbound.remote.as_ref());

        // Nothing downstream may see (or forward) an id that was rejected, nor, when inbound
        // ids are not trusted, any id the client chose.
        let headers = req.headers_mut();
        if !self.config.trust_inbound {
            headers.remove(&TRACEPARENT);
            headers.remove(&X_CORRELATION_ID);
        }
        for (malformed, name) in
            inbound
                .malformed
                .iter()
                .zip([&TRACEPARENT, &X_REQUEST_ID, &X_CORRELATION_ID])
        {
            if *malformed {
                headers.remove(name);
            }
        }
        if let Ok(v) = HeaderValue::from_str(id.as_str()) {
            headers.insert(X_REQUEST_ID, v);
        }
        req.extensions_mut().insert(id);

        let inner = {
            let _entered = span.enter();
            if inbound.any_malformed() {
                tracing::debug!(
                    target: "unite_telemetry::correlation",
                    "malformed inbound correlation id replaced"
                );
            }
            self.inner.call(req)
        };
        ResponseFuture { inner, span, id }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn precedence_and_fallback() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let rid = "0af7651916cd43dd8448eb211c80319c";
        let got = extract(
            &headers(&[
                ("traceparent", tp.as_bytes()),
                ("x-request-id", rid.as_bytes()),
            ]),
            true,
        );
        assert_eq!(got.id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(got.id.source(), IdSource::TraceParent);
        assert!(got.remote.is_some());

        let got = extract(
            &headers(&[
                ("traceparent", b"garbage"),
                ("x-request-id", rid.as_bytes()),
            ]),
            true,
        );
        assert_eq!(got.id.as_str(), rid);
        assert_eq!(got.id.source(), IdSource::RequestId);
        assert_eq!(got.malformed, [true, false, false]);
        assert!(got.id.was_replaced());

        let got = extract(&headers(&[("x-correlation-id", rid.as_bytes())]), true);
        assert_eq!(got.id.source(), IdSource::CorrelationId);
        assert_eq!(got.id.as_str(), rid);

        let got = extract(&headers(&[("x-request-id", rid.as_bytes())]), false);
        assert_ne!(got.id.as_str(), rid);
        assert_eq!(got.id.source(), IdSource::Generated);
        assert!(!got.any_malformed());
    }

    #[test]
    fn non_utf8_is_malformed() {
        let got = extract(&headers(&[("x-request-id", b"\xff\xfe")]), true);
        assert_eq!(got.malformed, [false, true, false]);
        assert_eq!(got.id.source(), IdSource::Generated);
        assert!(got.id.was_replaced());
    }

    #[test]
    fn a_malformed_header_beside_a_valid_one_is_flagged() {
        // Found by tests/fuzz_props.rs: the lower-precedence headers went unchecked.
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let got = extract(
            &headers(&[
                ("traceparent", tp.as_bytes()),
                ("x-correlation-id", b"<script>"),
            ]),
            true,
        );
        assert_eq!(got.id.source(), IdSource::TraceParent);
        assert_eq!(got.malformed, [false, false, true]);
        assert!(!got.id.was_replaced());
    }

    #[test]
    fn absent_is_generated_not_replaced() {
        let got = extract(&HeaderMap::new(), true);
        assert_eq!(got.id.source(), IdSource::Generated);
        assert!(!got.id.was_replaced());
    }
}
