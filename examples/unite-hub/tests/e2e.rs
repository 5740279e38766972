//! The service end to end over HTTP, against the real Postgres and Redis.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use unite_hub::Config;
use unite_testkit::{FaultProxy, Mode, TestPostgres, TestRedis};

const ADMIN: &str = "test-admin-token-0123456789";

struct Hub {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Hub {
    async fn start(database_url: &str, redis_url: Option<&str>, namespace: &str) -> Self {
        Self::start_with(database_url, redis_url, namespace, &[]).await
    }

    async fn start_with(
        database_url: &str,
        redis_url: Option<&str>,
        namespace: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        let mut vars: BTreeMap<String, String> = [
            ("DATABASE_URL", database_url),
            ("ADMIN_TOKEN", ADMIN),
            ("CACHE_NAMESPACE", namespace),
            ("WARM_ON_START", "false"),
            ("DATABASE_CONNECT_TIMEOUT", "500ms"),
            ("DATABASE_CHECKOUT_TIMEOUT", "500ms"),
            ("REDIS_TIMEOUT", "200ms"),
            ("MAX_BODY_BYTES", "16384"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        if let Some(url) = redis_url {
            vars.insert("REDIS_URL".into(), url.into());
        }
        for (k, v) in extra {
            vars.insert((*k).into(), (*v).into());
        }
        let config = Config::from_vars(&vars).expect("test config is valid");
        let state = unite_hub::serve::prepare(config, None)
            .await
            .expect("state builds");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(unite_hub::serve::run(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        Self {
            base: format!("http://{addr}"),
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.task).await;
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Creates a user directly in the database and returns (id, email, password).
async fn user(pg: &TestPostgres, plan: &str) -> (i64, String) {
    let email = format!("u{}@example.com", rand_suffix());
    let hash = unite_hub::auth::hash_password("pw-123456").unwrap();
    let id: i64 = pg
        .client()
        .await
        .query_one(
            "INSERT INTO users (email, name, password_hash, plan) VALUES ($1, 'T', $2, $3) RETURNING id",
            &[&email, &hash, &plan],
        )
        .await
        .unwrap()
        .get(0);
    (id, email)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) * 1_000_003 + u64::from(std::process::id())
}

async fn sign_in(c: &reqwest::Client, hub: &Hub, email: &str) -> String {
    let r = c
        .post(hub.url("/api/sessions"))
        .json(&json!({ "email": email, "password": "pw-123456" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    let id = body["error"]["correlation_id"].as_str().unwrap_or_default();
    assert_eq!(
        id.len(),
        32,
        "every error carries the correlation id: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_validate_and_contacts_round_trip() {
    let pg = TestPostgres::new().await;
    let redis = TestRedis::new().await;
    let hub = Hub::start(
        pg.url(),
        Some(redis.url()),
        &format!("{}hub:", redis.prefix()),
    )
    .await;
    let c = client();
    let (uid, email) = user(&pg, "pro").await;

    // Wrong password and unknown users look the same.
    let r = c
        .post(hub.url("/api/sessions"))
        .json(&json!({ "email": email, "password": "nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_error(&r.json().await.unwrap(), "unauthorized");

    let token = sign_in(&c, &hub, &email).await;
    let r = c
        .get(hub.url("/api/sessions/validate"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers().contains_key("ratelimit"),
        "rate-limit fields on every response"
    );
    assert!(r.headers().contains_key("x-request-id"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["user_id"], uid);
    assert_eq!(v["plan"], "pro");

    // Create, read (ETag), read again with If-None-Match (304), update, read, delete.
    let r = c
        .post(hub.url("/api/contacts"))
        .bearer_auth(&token)
        .json(&json!({ "name": "Ada", "email": "ada@example.com", "company": "Analytical" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_i64().unwrap();
    let path = format!("/api/contacts/{id}");

    let r = c
        .get(hub.url(&path))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(r.headers()["cache-control"], "private, no-cache");
    let r = c
        .get(hub.url(&path))
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    let r = c
        .put(hub.url(&path))
        .bearer_auth(&token)
        .json(&json!({ "name": "Ada Lovelace" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(hub.url(&path))
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the old ETag no longer matches");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"], "Ada Lovelace");

    // Another user cannot read it.
    let (_, other_email) = user(&pg, "free").await;
    let other = sign_in(&c, &hub, &other_email).await;
    let r = c
        .get(hub.url(&path))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let r = c
        .delete(hub.url(&path))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c
        .get(hub.url(&path))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_instance_is_seen_by_the_other() {
    let pg = TestPostgres::new().await;
    let redis = TestRedis::new().await;
    let ns = format!("{}hub:", redis.prefix());
    let a = Hub::start(pg.url(), Some(redis.url()), &ns).await;
    let b = Hub::start(pg.url(), Some(redis.url()), &ns).await;
    let c = client();
    let (_, email) = user(&pg, "free").await;
    let token = sign_in(&c, &a, &email).await;
    let r = c
        .post(a.url("/api/contacts"))
        .bearer_auth(&token)
        .json(&json!({ "name": "v1" }))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let path = format!("/api/contacts/{id}");
    // B reads (and caches) v1.
    let v: Value = c
        .get(b.url(&path))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["name"], "v1");
    // A writes v2; B must stop serving v1 once the invalidation arrives (bounded poll).
    c.put(a.url(&path))
        .bearer_auth(&token)
        .json(&json!({ "name": "v2" }))
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    for _ in 0..100 {
        let v: Value = c
            .get(b.url(&path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen = v["name"].as_str().unwrap_or_default().to_owned();
        if seen == "v2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, "v2", "B still serves the old value after 2 s");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_429_with_headers_and_the_ai_class_is_separate() {
    let pg = TestPostgres::new().await;
    let redis = TestRedis::new().await;
    let hub = Hub::start(
        pg.url(),
        Some(redis.url()),
        &format!("{}hub:", redis.prefix()),
    )
    .await;
    let c = client();
    let (_, email) = user(&pg, "free").await;
    let token = sign_in(&c, &hub, &email).await;

    // The ai class: 10 a minute in every tier.
    let mut statuses = Vec::new();
    for _ in 0..11 {
        let r = c
            .get(hub.url("/api/reports/contacts"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        statuses.push(r.status());
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers().contains_key("retry-after"));
            assert!(r.headers().contains_key("ratelimit-policy"));
            assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(statuses[10], StatusCode::TOO_MANY_REQUESTS);
    // ... while the default class of the same user still answers.
    let r = c
        .get(hub.url("/api/sessions/validate"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Anonymous traffic: 20 a minute by IP.
    let mut limited = false;
    for _ in 0..21 {
        let r = c.get(hub.url("/api/contacts")).send().await.unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert!(limited, "the public quota applies by IP");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_the_token_and_overrides_apply() {
    let pg = TestPostgres::new().await;
    let redis = TestRedis::new().await;
    let hub = Hub::start(
        pg.url(),
        Some(redis.url()),
        &format!("{}hub:", redis.prefix()),
    )
    .await;
    let c = client();
    let (uid, email) = user(&pg, "free").await;
    let token = sign_in(&c, &hub, &email).await;
    let body = json!({ "subject": format!("user:{uid}"), "rule": { "kind": "block" } });

    let r = c
        .put(hub.url("/api/admin/ratelimit/overrides"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .put(hub.url("/api/admin/ratelimit/overrides"))
        .bearer_auth("wrong-token-wrong-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_error(&r.json().await.unwrap(), "forbidden");
    // A user's session token is not an admin token either.
    let r = c
        .put(hub.url("/api/admin/ratelimit/overrides"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // No side effect so far: the user is not blocked.
    let r = c
        .get(hub.url("/api/sessions/validate"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let r = c
        .put(hub.url("/api/admin/ratelimit/overrides"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(hub.url("/api/sessions/validate"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the block applies"
    );
    let list: Value = c
        .get(hub.url("/api/admin/ratelimit/overrides"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let r = c
        .delete(hub.url(&format!(
            "/api/admin/ratelimit/overrides?subject=user:{uid}"
        )))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(hub.url("/api/sessions/validate"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "cleared");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_healthy_then_degraded_without_redis() {
    let pg = TestPostgres::new().await;
    let redis = TestRedis::new().await;
    let proxy = FaultProxy::start_for_url(redis.url()).await.unwrap();
    let redis_url = proxy.proxied_url(redis.url());
    let hub = Hub::start(
        pg.url(),
        Some(&redis_url),
        &format!("{}hub:", redis.prefix()),
    )
    .await;
    let c = client();
    let (_, email) = user(&pg, "free").await;
    let token = sign_in(&c, &hub, &email).await;

    let r = c.get(hub.url("/api/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["status"], "healthy", "{doc}");
    assert_eq!(doc["checks"]["cache"]["provider"], "redis", "{doc}");
    let ts = doc["timestamp"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(ts).is_ok(), "RFC 3339: {ts}");
    for field in [
        "total_requests",
        "success_rate",
        "average_response_time_ms",
        "circuit_state",
    ] {
        assert!(
            !doc["checks"]["database"]["pool"][field].is_null(),
            "{field}: {doc}"
        );
    }

    proxy.set_mode(Mode::Blackhole);
    // Every request still answers while Redis is silent.
    for _ in 0..20 {
        let r = c
            .get(hub.url("/api/sessions/validate"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let mut doc = Value::Null;
    for _ in 0..50 {
        doc = c
            .get(hub.url("/api/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if doc["checks"]["cache"]["status"] == "degraded" {
            break;
        }
        // Unknown tokens miss L1 and ask Redis, which does not answer: each still gets its 401.
        let unknown = unite_hub::auth::new_token();
        let r = c
            .get(hub.url("/api/sessions/validate"))
            .bearer_auth(&unknown)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(doc["status"], "degraded", "{doc}");
    assert_eq!(doc["checks"]["cache"]["provider"], "in-memory", "{doc}");
    proxy.set_mode(Mode::Pass);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_is_unhealthy_and_cached_sessions_still_answer() {
    let pg = TestPostgres::new().await;
    let redis = TestRedis::new().await;
    let proxy = FaultProxy::start_for_url(pg.url()).await.unwrap();
    let db_url = proxy.proxied_url(pg.url());
    let hub = Hub::start(
        &db_url,
        Some(redis.url()),
        &format!("{}hub:", redis.prefix()),
    )
    .await;
    let c = client();
    let (_, email) = user(&pg, "free").await;
    let token = sign_in(&c, &hub, &email).await;
    let r = c
        .get(hub.url("/api/sessions/validate"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    proxy.set_mode(Mode::Refuse);
    let r = c.get(hub.url("/api/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["status"], "unhealthy", "{doc}");
    let r = c
        .get(hub.url("/api/sessions/validate"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the cached session still validates"
    );
    // A route that needs the database fails fast and says when to retry.
    let r = c
        .get(hub.url("/api/contacts"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    assert_error(&r.json().await.unwrap(), "unavailable");
    proxy.set_mode(Mode::Pass);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_4xx_json_never_500() {
    let pg = TestPostgres::new().await;
    let hub = Hub::start(pg.url(), None, "unite-hub-test:").await;
    let c = client();
    let (_, email) = user(&pg, "enterprise").await;
    let token = sign_in(&c, &hub, &email).await;

    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            c.post(hub.url("/api/sessions"))
                .header("content-type", "application/json")
                .body("{nope"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            c.post(hub.url("/api/sessions"))
                .json(&json!({ "email": 5 })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            c.post(hub.url("/api/contacts"))
                .bearer_auth(&token)
                .json(&json!({ "name": "x".repeat(40_000) })),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            c.post(hub.url("/api/contacts"))
                .bearer_auth(&token)
                .json(&json!({ "name": "" })),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            c.get(hub.url("/api/contacts/abc")).bearer_auth(&token),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            c.get(hub.url("/api/contacts/-5")).bearer_auth(&token),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            c.get(hub.url("/api/contacts?limit=100000"))
                .bearer_auth(&token),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            c.get(hub.url("/api/sessions/validate"))
                .bearer_auth("x".repeat(43)),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            c.get(hub.url("/api/sessions/validate"))
                .bearer_auth("short"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            c.get(hub.url("/api/nothing-here")),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            c.post(hub.url("/api/admin/cache/invalidate"))
                .bearer_auth(ADMIN)
                .json(&json!({ "keys": [] })),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ];
    for (request, status, code) in cases {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), status);
        let body: Value = r.json().await.unwrap();
        assert_error(&body, code);
        let text = body.to_string().to_lowercase();
        assert!(
            !text.contains("select") && !text.contains("panick"),
            "{text}"
        );
    }
    // Still up.
    let r = c.get(hub.url("/api/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_fills_the_cache_from_postgres_through_the_admin_route() {
    let pg = TestPostgres::new().await;
    let redis = TestRedis::new().await;
    let hub = Hub::start(
        pg.url(),
        Some(redis.url()),
        &format!("{}hub:", redis.prefix()),
    )
    .await;
    let c = client();
    let (uid, _) = user(&pg, "pro").await;
    // Sessions written straight to the database: only warming can put them in the cache.
    let tokens: Vec<String> = (0..25).map(|_| unite_hub::auth::new_token()).collect();
    let db = pg.client().await;
    for t in &tokens {
        let hash = unite_hub::auth::token_hash(t);
        db.execute(
            "INSERT INTO sessions (token_hash, user_id, expires_at) VALUES ($1, $2, now() + interval '1 hour')",
            &[&hash.as_slice(), &uid],
        )
        .await
        .unwrap();
    }
    let r = c.post(hub.url("/api/admin/warm")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .post(hub.url("/api/admin/warm"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut status = Value::Null;
    for _ in 0..100 {
        status = c
            .get(hub.url("/api/admin/warm/status"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["progress"]["running"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status["progress"]["running"], false, "{status}");
    let sessions = &status["progress"]["finished"][0];
    assert_eq!(sessions["source"], "sessions", "{status}");
    assert_eq!(sessions["written"], 25, "{status}");
    // Every warmed session is now served from memory: the database is not asked.
    for t in &tokens {
        let r = c
            .get(hub.url("/api/sessions/validate"))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let health: Value = c
        .get(hub.url("/api/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let l1_hits = health["checks"]["cache"]["l1"]["hits"]
        .as_u64()
        .unwrap_or(0);
    assert!(l1_hits >= 25, "warmed sessions are L1 hits: {health}");
    hub.stop().await;
}
