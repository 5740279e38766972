//! The router and its middleware, in the order requests meet them:
//! correlation id → trace (request log and metrics) and error envelope → limits (body, time) →
//! identify (session → rate-limit subject) → rate limit → auth (per route) → handler.
//!
//! Identification resolves a bearer token through the cache *before* the rate limiter, so a
//! signed-in user is limited by their id and plan; it never refuses a request itself. Routes
//! that need a user or the admin token refuse in their extractors (the auth step). Health and
//! metrics routes skip identification and the rate limit: load balancers and scrapers poll them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{LazyLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower::{Layer, Service, ServiceBuilder};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use unite_ratelimit::{EndpointClass, RateLimitLayer, TrustedProxies};
use unite_telemetry::CorrelationLayer;

use crate::error::{ApiError, error_envelope};
use crate::routes::{admin, contacts, health, reports, sessions};
use crate::state::AppState;

/// The whole service as a router (testable with `oneshot`; serve it with connect info so the
/// rate limiter sees the client address).
pub fn app(state: AppState) -> Router {
    let ops = Router::new()
        .route("/api/health", get(health::health))
        .route("/api/health/redis", get(health::redis))
        .route("/api/health/hotkeys", get(health::hotkeys))
        .route("/metrics", get(health::metrics));

    let limit_layer = RateLimitLayer::new(state.limiter.clone())
        .trusted_proxies(TrustedProxies::new(state.config.trusted_proxies.clone()))
        .peer_addr_with(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
        .route_class("/api/reports", EndpointClass::Ai);
    let api = Router::new()
        .route("/api/sessions", post(sessions::sign_in))
        .route("/api/sessions/validate", get(sessions::validate))
        .route("/api/contacts", get(contacts::list).post(contacts::create))
        .route(
            "/api/contacts/{id}",
            get(contacts::get)
                .put(contacts::update)
                .delete(contacts::delete),
        )
        .route("/api/reports/contacts", get(reports::contacts))
        .route(
            "/api/admin/ratelimit/overrides",
            get(admin::list_overrides)
                .put(admin::set_override)
                .delete(admin::clear_override),
        )
        .route("/api/admin/cache/invalidate", post(admin::invalidate))
        .route("/api/admin/warm", post(admin::warm))
        .route("/api/admin/warm/status", get(admin::warm_status))
        .fallback(|| async { ApiError::not_found("route") })
        // One `layer` call per stack: axum boxes each route's service once per call, and every
        // request clones each of those boxes.
        .layer(
            ServiceBuilder::new()
                .layer(sessions::IdentifyLayer::new(state.clone()))
                .layer(limit_layer),
        );

    // A route with no middleware at all, for the load script's side-by-side baseline.
    let bare_route = Router::new().route("/bench/bare", get(bare));

    with_common_layers(ops.merge(api), &state)
        .with_state(state)
        .merge(bare_route)
}

/// Correlation id → trace and error envelope → body and time limits, outermost first, in one
/// `layer` call.
fn with_common_layers(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    router.layer(
        ServiceBuilder::new()
            .layer(CorrelationLayer::new())
            .layer(TraceLayer)
            .layer(RequestBodyLimitLayer::new(state.config.max_body_bytes))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                state.config.request_timeout,
            )),
    )
}

async fn bare() -> &'static str {
    "ok"
}

/// The trace step: one log line and the HTTP metrics per request, inside the request's span;
/// error responses become the JSON envelope (so the log and the metrics see the final status).
/// A tower layer rather than `middleware::from_fn`, which boxes and clones the inner service on
/// every request: this one calls it in place.
#[derive(Clone, Copy)]
struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace { inner }
    }
}

/// The service of [`TraceLayer`].
#[derive(Clone)]
struct Trace<S> {
    inner: S,
}

impl<S> Service<Request> for Trace<S>
where
    S: Service<Request, Error = Infallible>,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let start = Instant::now();
        let method = request.method().clone();
        let id = request
            .extensions()
            .get::<unite_telemetry::CorrelationId>()
            .copied();
        let matched = request.extensions().get::<MatchedPath>().cloned();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = match future.await {
                Ok(response) => error_envelope(response.into_response(), id),
                Err(never) => match never {},
            };
            let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
            let elapsed = start.elapsed();
            let status = response.status().as_u16();
            HTTP_METRICS.record(&method, route, status, elapsed);
            let elapsed_ms = elapsed.as_secs_f64() * 1e3;
            if status >= 500 {
                tracing::warn!(%method, route, status, elapsed_ms, "request");
            } else {
                tracing::info!(%method, route, status, elapsed_ms, "request");
            }
            Ok(response)
        })
    }
}

/// The HTTP metrics' handles, registered once per route, method and status rather than looked
/// up by freshly allocated labels on every request. They bind to the metrics recorder in
/// place at their first request: the service installs telemetry before it serves.
static HTTP_METRICS: LazyLock<HttpMetrics> = LazyLock::new(HttpMetrics::default);

#[derive(Default)]
struct HttpMetrics {
    by_route: RwLock<HashMap<String, Vec<HttpHandles>, foldhash::fast::RandomState>>,
}

struct HttpHandles {
    method: &'static str,
    status: u16,
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

impl HttpMetrics {
    fn record(&self, method: &http::Method, route: &str, status: u16, elapsed: Duration) {
        let method = method_label(method);
        let seconds = elapsed.as_secs_f64();
        {
            let by_route = self.by_route.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(h) = by_route
                .get(route)
                .and_then(|hs| hs.iter().find(|h| h.method == method && h.status == status))
            {
                h.requests.increment(1);
                h.duration.record(seconds);
                return;
            }
        }
        use unite_telemetry::names;
        let labels = [
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status", status.to_string()),
        ];
        let h = HttpHandles {
            method,
            status,
            requests: metrics::counter!(names::HTTP_REQUESTS_TOTAL, &labels),
            duration: metrics::histogram!(
                names::HTTP_REQUEST_DURATION_SECONDS,
                "method" => method,
                "route" => route.to_owned()
            ),
        };
        h.requests.increment(1);
        h.duration.record(seconds);
        let mut by_route = self
            .by_route
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let hs = by_route.entry(route.to_owned()).or_default();
        if !hs.iter().any(|x| x.method == method && x.status == status) {
            hs.push(h);
        }
    }
}

/// The method as a metric label: the standard ones by name, anything else as `other`, so a
/// client cannot mint label values.
fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}
