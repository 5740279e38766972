//! The tower layer through axum, with `ServiceExt::oneshot` (no server).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use http::{HeaderValue, Request, Response, StatusCode};
use proptest::prelude::*;
use tower::ServiceExt;
use unite_ratelimit::{
    ClientAddr, EndpointClass, ManualClock, PenaltyConfig, Quota, RateLimitLayer, RateLimitSubject,
    RateLimiter, Tier, TierQuotas, TrustedProxies,
};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// Public 3/min (ai 1/min), a frozen clock, penalties off: exact header values.
fn limiter() -> RateLimiter {
    RateLimiter::builder()
        .tier(
            Tier::Public,
            TierQuotas::new(Quota::per_minute(nz(3)), Quota::per_minute(nz(1))),
        )
        .penalty(PenaltyConfig::disabled())
        .clock(Arc::new(ManualClock::new()))
        .build()
        .unwrap()
}

fn app(layer: RateLimitLayer) -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/api/ai/chat", get(|| async { "thinking" }))
        .route(
            "/who",
            get(|ConnectInfo(addr): ConnectInfo<SocketAddr>| async move { addr.to_string() }),
        )
        .layer(layer)
}

fn request(path: &str, peer: &str) -> Request<Body> {
    let mut req = Request::get(path).body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ClientAddr(peer.parse::<SocketAddr>().unwrap()));
    req
}

fn header<'a>(res: &'a Response<Body>, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
}

async fn body_json(res: Response<Body>) -> serde_json::Value {
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn headers_on_200_and_429() {
    let app = app(RateLimitLayer::new(limiter()));
    let peer = "203.0.113.5:1000";
    for (remaining, reset) in [(2, 20), (1, 40), (0, 60)] {
        let res = app.clone().oneshot(request("/", peer)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "ratelimit-policy"), r#""default";q=3;w=60"#);
        assert_eq!(
            header(&res, "ratelimit"),
            format!(r#""default";r={remaining};t={reset}"#)
        );
        assert_eq!(header(&res, "x-ratelimit-limit"), "3");
        assert_eq!(header(&res, "x-ratelimit-remaining"), remaining.to_string());
        assert_eq!(header(&res, "x-ratelimit-reset"), reset.to_string());
        assert!(res.headers().get("retry-after").is_none());
    }
    let res = app.clone().oneshot(request("/", peer)).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "content-type"), "application/json");
    assert_eq!(header(&res, "retry-after"), "20");
    assert_eq!(header(&res, "ratelimit-policy"), r#""default";q=3;w=60"#);
    assert_eq!(header(&res, "ratelimit"), r#""default";r=0;t=60"#);
    assert_eq!(header(&res, "x-ratelimit-remaining"), "0");
    let body = body_json(res).await;
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["retry_after_s"], 20);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("3 per 60 s")
    );

    // Another client is not affected.
    let res = app.oneshot(request("/", "203.0.113.6:1000")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn ai_routes_and_extensions_pick_the_class() {
    let layer = RateLimitLayer::new(limiter()).route_class("/api/ai", EndpointClass::Ai);
    let app = app(layer);
    let peer = "198.51.100.1:1";
    let res = app
        .clone()
        .oneshot(request("/api/ai/chat", peer))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "ratelimit-policy"), r#""ai";q=1;w=60"#);
    let res = app
        .clone()
        .oneshot(request("/api/ai/chat", peer))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // The default class of the same client is a separate budget.
    let res = app.clone().oneshot(request("/", peer)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // An extension marks a route as `ai` too.
    let mut req = request("/", "198.51.100.2:1");
    req.extensions_mut().insert(EndpointClass::Ai);
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(header(&res, "ratelimit-policy"), r#""ai";q=1;w=60"#);
}

#[tokio::test]
async fn signed_in_users_are_limited_by_id_and_tier() {
    let app = app(RateLimitLayer::new(limiter()));
    let mut req = request("/", "198.51.100.3:1");
    req.extensions_mut()
        .insert(RateLimitSubject::new("u-1", Tier::Enterprise));
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(
        header(&res, "ratelimit-policy"),
        r#""default";q=10000;w=60"#
    );
    assert_eq!(header(&res, "x-ratelimit-remaining"), "9999");
}

#[tokio::test]
async fn spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let layer = RateLimitLayer::new(limiter())
        .trusted_proxies(TrustedProxies::parse("10.0.0.0/8").unwrap());
    let app = app(layer);
    // The attacker rotates X-Forwarded-For; it connects directly, so it is one client.
    for i in 0..3 {
        let mut req = request("/", "192.0.2.66:4000");
        req.headers_mut().insert(
            "x-forwarded-for",
            HeaderValue::from_str(&format!("1.1.1.{i}")).unwrap(),
        );
        assert_eq!(
            app.clone().oneshot(req).await.unwrap().status(),
            StatusCode::OK
        );
    }
    let mut req = request("/", "192.0.2.66:4000");
    req.headers_mut()
        .insert("x-forwarded-for", HeaderValue::from_static("1.1.1.99"));
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_trusted_proxy_passes_on_the_client_ip() {
    let layer = RateLimitLayer::new(limiter())
        .trusted_proxies(TrustedProxies::parse("10.0.0.0/8").unwrap());
    let app = app(layer);
    // Three clients behind one proxy each get their own budget.
    for client in ["198.51.100.10", "198.51.100.11", "198.51.100.12"] {
        for _ in 0..3 {
            let mut req = request("/", "10.0.0.2:80");
            req.headers_mut().insert(
                "x-forwarded-for",
                HeaderValue::from_str(&format!("6.6.6.6, {client}")).unwrap(),
            );
            assert_eq!(
                app.clone().oneshot(req).await.unwrap().status(),
                StatusCode::OK
            );
        }
    }
    let mut req = request("/", "10.0.0.2:80");
    req.headers_mut()
        .insert("forwarded", HeaderValue::from_static("for=198.51.100.10"));
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // The proxy itself, without a forwarding header, is a client of its own.
    let res = app.oneshot(request("/", "10.0.0.2:80")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn axum_connect_info_is_read_through_peer_addr_with() {
    let layer = RateLimitLayer::new(limiter()).peer_addr_with(|ext| {
        ext.get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
    });
    let app = app(layer);
    let make = |peer: &str| {
        let mut req = Request::get("/who").body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        req
    };
    for _ in 0..3 {
        let res = app.clone().oneshot(make("192.0.2.1:5")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = app.clone().oneshot(make("192.0.2.1:6")).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let res = app.oneshot(make("192.0.2.2:5")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn ipv6_clients_share_a_budget_per_64() {
    let app = app(RateLimitLayer::new(limiter()));
    for host in [
        "[2001:db8:1:2::1]",
        "[2001:db8:1:2::2]",
        "[2001:db8:1:2:ffff::3]",
    ] {
        let res = app
            .clone()
            .oneshot(request("/", &format!("{host}:80")))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = app
        .clone()
        .oneshot(request("/", "[2001:db8:1:2::9]:80"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let res = app
        .oneshot(request("/", "[2001:db8:1:3::1]:80"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_forwarding_headers_fall_back_to_the_proxy() {
    let layer = RateLimitLayer::new(limiter())
        .trusted_proxies(TrustedProxies::parse("10.0.0.0/8").unwrap());
    let app = app(layer);
    let long = "9".repeat(10_000);
    let values: Vec<HeaderValue> = vec![
        HeaderValue::from_bytes(b"\xff\xfe1.2.3.4").unwrap(),
        HeaderValue::from_static("not an ip"),
        HeaderValue::from_static("[2001:db8::1"),
        HeaderValue::from_static("[2001:db8::1]:99999999999"),
        HeaderValue::from_str(&long).unwrap(),
    ];
    for v in values {
        let mut req = request("/", "10.0.0.9:80");
        req.headers_mut().insert("x-forwarded-for", v.clone());
        req.headers_mut().insert("forwarded", v);
        let res = app.clone().oneshot(req).await.unwrap();
        assert_ne!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(res.headers().contains_key("ratelimit"));
    }
    // All five were counted against the proxy itself (3/min): the last two were refused.
    let res = app.oneshot(request("/", "10.0.0.9:80")).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary header bytes never panic the layer and never go unanswered.
    #[test]
    fn arbitrary_forwarding_bytes_never_panic(
        xff in proptest::collection::vec(any::<u8>(), 0..2048),
        fwd in proptest::collection::vec(any::<u8>(), 0..256),
        peer in any::<[u8; 16]>(),
        trusted_peer in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let app = app(RateLimitLayer::new(limiter())
            .trusted_proxies(TrustedProxies::parse("10.0.0.0/8, ::/0").unwrap()));
        let peer_ip = if trusted_peer {
            IpAddr::from([10, 0, 0, 1])
        } else {
            IpAddr::from(peer)
        };
        let mut req = Request::get("/").body(Body::empty()).unwrap();
        req.extensions_mut().insert(ClientAddr(SocketAddr::new(peer_ip, 1)));
        // Values with bytes a header cannot hold (NUL, CR, LF) are refused by `http` itself.
        if let Ok(v) = HeaderValue::from_bytes(&xff) {
            req.headers_mut().insert("x-forwarded-for", v);
        }
        if let Ok(v) = HeaderValue::from_bytes(&fwd) {
            req.headers_mut().append("forwarded", v);
        }
        let res = rt.block_on(app.oneshot(req)).unwrap();
        prop_assert!(res.status() == StatusCode::OK || res.status() == StatusCode::TOO_MANY_REQUESTS);
        prop_assert!(res.headers().contains_key("ratelimit-policy"));
    }
}
