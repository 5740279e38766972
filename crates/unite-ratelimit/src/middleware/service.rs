use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::Service;

use super::ResponseFuture;
use super::layer::Settings;
use crate::client_ip::mask_ipv6;
use crate::{ClientAddr, EndpointClass, RateLimitSubject, RateLimiter, Subject, Tier};

static WARNED_NO_PEER: AtomicBool = AtomicBool::new(false);

/// The service made by [`RateLimitLayer`](super::RateLimitLayer).
#[derive(Clone)]
pub struct RateLimitService<S> {
    inner: S,
    limiter: RateLimiter,
    settings: Arc<Settings>,
}

impl<S: fmt::Debug> fmt::Debug for RateLimitService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitService")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S> RateLimitService<S> {
    pub(crate) fn new(inner: S, limiter: RateLimiter, settings: Arc<Settings>) -> Self {
        Self {
            inner,
            limiter,
            settings,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl Settings {
    fn class_of<B>(&self, req: &Request<B>) -> EndpointClass {
        if let Some(class) = req.extensions().get::<EndpointClass>() {
            return *class;
        }
        if let Some(class) = self
            .classify
            .as_ref()
            .and_then(|f| f(req.method(), req.uri()))
        {
            return class;
        }
        let path = req.uri().path();
        self.routes
            .iter()
            .find(|(prefix, _)| {
                path.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .map_or(EndpointClass::Default, |(_, class)| *class)
    }

    pub(crate) fn identify<B>(&self, req: &Request<B>) -> (Subject, Tier, EndpointClass) {
        let class = self.class_of(req);
        if let Some(s) = req.extensions().get::<RateLimitSubject>() {
            return (Subject::User(Arc::clone(&s.user_id)), s.tier, class);
        }
        let peer = self
            .peer
            .as_ref()
            .and_then(|f| f(req.extensions()))
            .or_else(|| req.extensions().get::<ClientAddr>().map(|a| a.0.ip()));
        let ip = match peer {
            Some(peer) => self.trusted.client_ip(req.headers(), peer),
            None => {
                if !WARNED_NO_PEER.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "rate limit: no peer address on the request (set `peer_addr_with` or \
                         insert `ClientAddr`); anonymous requests share one budget"
                    );
                }
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            }
        };
        (
            Subject::Ip(mask_ipv6(ip, self.ipv6_prefix)),
            Tier::Public,
            class,
        )
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimitService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: From<String>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (subject, tier, class) = self.settings.identify(&req);
        let check = self.limiter.check(&subject, tier, class);
        // The inner service was made ready by `poll_ready`; keep that one for this request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(check, inner, req)
    }
}
