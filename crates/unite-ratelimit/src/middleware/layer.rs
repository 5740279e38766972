use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::{Extensions, Method, Uri};
use tower::Layer;

use super::RateLimitService;
use crate::{EndpointClass, RateLimiter, TrustedProxies};

type PeerFn = dyn Fn(&Extensions) -> Option<IpAddr> + Send + Sync;
type ClassifyFn = dyn Fn(&Method, &Uri) -> Option<EndpointClass> + Send + Sync;

/// How the layer identifies a request; shared by every clone of the service.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) trusted: TrustedProxies,
    pub(crate) peer: Option<Arc<PeerFn>>,
    pub(crate) classify: Option<Arc<ClassifyFn>>,
    pub(crate) routes: Vec<(String, EndpointClass)>,
    pub(crate) ipv6_prefix: u8,
}

/// A tower [`Layer`] that rate-limits every request through a [`RateLimiter`].
///
/// Per request it finds:
/// - the **subject**: the [`RateLimitSubject`](crate::RateLimitSubject) extension (a user and
///   tier, set by authentication), else the client IP in the `public` tier. The IP is the socket
///   peer (from [`peer_addr_with`](Self::peer_addr_with), else the
///   [`ClientAddr`](crate::ClientAddr) extension), or the forwarded client address when the
///   peer is a [trusted proxy](Self::trusted_proxies). IPv6 clients are counted per /64.
/// - the **endpoint class**: an [`EndpointClass`] extension, else
///   [`classify_with`](Self::classify_with), else [`route_class`](Self::route_class) prefixes,
///   else `default`.
///
/// Refused requests get `429 Too Many Requests` with a JSON body and `Retry-After`; every
/// response carries `RateLimit-Policy`, `RateLimit` and the legacy `X-RateLimit-*` fields. The
/// service's error type is the inner service's, so in axum it is `Infallible` and the layer
/// fits `Router::layer`.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
    settings: Arc<Settings>,
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .field("trusted_proxies", &self.settings.trusted)
            .field("routes", &self.settings.routes)
            .field("ipv6_prefix", &self.settings.ipv6_prefix)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// A layer deciding through `limiter`, trusting no proxy.
    #[must_use]
    pub fn new(limiter: RateLimiter) -> Self {
        Self {
            limiter,
            settings: Arc::new(Settings {
                trusted: TrustedProxies::none(),
                peer: None,
                classify: None,
                routes: Vec::new(),
                ipv6_prefix: 64,
            }),
        }
    }

    fn settings(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// Read the client address from forwarding headers when the socket peer is in one of
    /// these networks.
    #[must_use]
    pub fn trusted_proxies(mut self, trusted: TrustedProxies) -> Self {
        self.settings().trusted = trusted;
        self
    }

    /// Where the socket peer address lives in the request extensions. With axum:
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use axum::extract::ConnectInfo;
    /// # let limiter = unite_ratelimit::RateLimiter::builder().build().unwrap();
    ///
    /// let layer = unite_ratelimit::RateLimitLayer::new(limiter)
    ///     .peer_addr_with(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()));
    /// ```
    ///
    /// Without it (or when it finds nothing), the [`ClientAddr`](crate::ClientAddr) extension
    /// is used.
    #[must_use]
    pub fn peer_addr_with<F>(mut self, f: F) -> Self
    where
        F: Fn(&Extensions) -> Option<IpAddr> + Send + Sync + 'static,
    {
        self.settings().peer = Some(Arc::new(f));
        self
    }

    /// Requests whose path is `prefix` or lies under it (`/api/ai` matches `/api/ai` and
    /// `/api/ai/chat`, not `/api/aide`) belong to `class`. The first matching prefix wins.
    #[must_use]
    pub fn route_class(mut self, prefix: impl Into<String>, class: EndpointClass) -> Self {
        let prefix = prefix.into().trim_end_matches('/').to_owned();
        self.settings().routes.push((prefix, class));
        self
    }

    /// A function choosing the class from the method and URI (`None`: fall through to the
    /// route prefixes).
    #[must_use]
    pub fn classify_with<F>(mut self, f: F) -> Self
    where
        F: Fn(&Method, &Uri) -> Option<EndpointClass> + Send + Sync + 'static,
    {
        self.settings().classify = Some(Arc::new(f));
        self
    }

    /// How many leading bits of an IPv6 client address identify one client (default 64; 128
    /// counts every address apart).
    #[must_use]
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.settings().ipv6_prefix = bits.min(128);
        self
    }

    /// The limiter behind the layer.
    #[must_use]
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService::new(inner, self.limiter.clone(), Arc::clone(&self.settings))
    }
}
