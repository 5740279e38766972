use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderValue, Response};
use tracing::Span;

use super::{CorrelationId, TRACEPARENT, X_REQUEST_ID};

pin_project_lite::pin_project! {
    /// Response future of [`CorrelationService`](super::CorrelationService): polls the inner
    /// future inside the request span, then sets `x-request-id` and `traceparent` on the
    /// response and records its status on the span.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        pub(crate) inner: F,
        pub(crate) span: Span,
        pub(crate) id: CorrelationId,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut response = ready!(this.inner.poll(cx))?;
        let status = response.status();
        this.span
            .record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            this.span.record("otel.status_code", "ERROR");
        }
        set_response_headers(response.headers_mut(), this.id);
        Poll::Ready(Ok(response))
    }
}

pub(crate) fn set_response_headers(headers: &mut http::HeaderMap, id: &CorrelationId) {
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        headers.insert(X_REQUEST_ID, v);
    }
    let mut buf = [0u8; 55];
    id.write_traceparent(&mut buf);
    if let Ok(v) = HeaderValue::from_bytes(&buf) {
        headers.insert(TRACEPARENT, v);
    }
}
