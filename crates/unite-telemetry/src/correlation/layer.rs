use tower::Layer;
use tracing::Level;

use super::CorrelationService;

/// Tower layer that gives every request a correlation id. See the [module docs](super).
///
/// ```
/// use tower::ServiceBuilder;
/// use unite_telemetry::CorrelationLayer;
///
/// let layer = CorrelationLayer::new().span_level(tracing::Level::INFO);
/// let svc = ServiceBuilder::new()
///     .layer(layer)
///     .service_fn(|_req: http::Request<()>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(()))
///     });
/// # drop(svc);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct CorrelationLayer {
    pub(crate) span_level: Level,
    pub(crate) trust_inbound: bool,
}

impl CorrelationLayer {
    /// The defaults: request span at level `ERROR` (so a `warn` filter still keeps the span
    /// and the ids on every line; the span's level never shows in the logs), inbound ids
    /// trusted when valid.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            span_level: Level::ERROR,
            trust_inbound: true,
        }
    }

    /// The level of the request span. A filter that disables it also removes the ids from the
    /// log lines of the request, so keep it at or above the least verbose level you log.
    #[must_use]
    pub const fn span_level(mut self, level: Level) -> Self {
        self.span_level = level;
        self
    }

    /// Whether valid inbound ids are used (`true`, the default) or every request gets a fresh
    /// id and a new trace (for an edge service that does not want clients to choose ids).
    #[must_use]
    pub const fn trust_inbound(mut self, trust: bool) -> Self {
        self.trust_inbound = trust;
        self
    }
}

impl Default for CorrelationLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for CorrelationLayer {
    type Service = CorrelationService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CorrelationService::new(inner, *self)
    }
}
