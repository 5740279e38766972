//! What the multi-instance and replica tests share: the service started in process on a
//! loopback port, an HTTP client, users made straight in the database, bounded polling.

#![allow(dead_code, reason = "each test file uses part of it")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use unite_hub::Config;

/// The admin token of every test instance.
pub(crate) const ADMIN: &str = "test-admin-token-0123456789";
/// The password of every test user.
pub(crate) const PASSWORD: &str = "pw-123456";

/// One service instance on `127.0.0.1:<free port>`, stopped by [`Hub::stop`].
pub(crate) struct Hub {
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
    /// Its state (pool, cache...), for looking inside.
    pub(crate) state: unite_hub::AppState,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Hub {
    /// Starts an instance: migrations, then serving; `extra` variables override the defaults
    /// (no warm-up, short timeouts).
    pub(crate) async fn start(database_url: &str, extra: &[(&str, &str)]) -> Self {
        let mut vars: BTreeMap<String, String> = [
            ("DATABASE_URL", database_url),
            ("ADMIN_TOKEN", ADMIN),
            ("WARM_ON_START", "false"),
            ("DATABASE_CONNECT_TIMEOUT", "2s"),
            ("DATABASE_CHECKOUT_TIMEOUT", "2s"),
            ("REDIS_TIMEOUT", "200ms"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in extra {
            vars.insert((*k).into(), (*v).into());
        }
        let config = Config::from_vars(&vars).expect("test config is valid");
        let state = unite_hub::serve::prepare(config, None).await.expect(
            "the service starts (are Postgres and Redis running? scripts/run.sh starts them)",
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback port");
        let addr: SocketAddr = listener.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(unite_hub::serve::run(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        Self {
            base: format!("http://{addr}"),
            state,
            stop: Some(stop),
            task,
        }
    }

    /// The URL of `path` on this instance.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops serving and waits (bounded) for the drain.
    pub(crate) async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.task).await;
    }
}

/// An HTTP client with a bound on every request.
pub(crate) fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client builds")
}

/// A connection straight to the database (outside the service).
pub(crate) async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_postgres::connect(url, tokio_postgres::NoTls),
    )
    .await
    .expect("connect within 10 s")
    .expect("connect to Postgres");
    tokio::spawn(conn);
    client
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) * 1_000_003 + u64::from(std::process::id())
}

/// Creates a user with [`PASSWORD`] straight in the database: (id, email).
pub(crate) async fn create_user(db: &tokio_postgres::Client, plan: &str) -> (i64, String) {
    let email = format!("scale{}-{}@example.com", unique(), rand_tag());
    let hash = unite_hub::auth::hash_password(PASSWORD).expect("hash");
    let id: i64 = db
        .query_one(
            "INSERT INTO users (email, name, password_hash, plan) VALUES ($1, 'T', $2, $3) RETURNING id",
            &[&email, &hash, &plan],
        )
        .await
        .expect("insert user")
        .get(0);
    (id, email)
}

fn rand_tag() -> String {
    unite_hub::auth::new_token()[..8].to_ascii_lowercase()
}

/// Signs in on `hub`: the session token.
pub(crate) async fn sign_in(c: &reqwest::Client, hub: &Hub, email: &str) -> String {
    let r = c
        .post(hub.url("/api/sessions"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("sign-in answered");
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.expect("JSON");
    body["token"].as_str().expect("token").to_owned()
}

/// `GET path` with a bearer token: (status, JSON body or null).
pub(crate) async fn get_json(c: &reqwest::Client, url: &str, token: &str) -> (StatusCode, Value) {
    let r = c
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("answered");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The health document and its status code.
pub(crate) async fn health(c: &reqwest::Client, hub: &Hub) -> (StatusCode, Value) {
    let r = c
        .get(hub.url("/api/health"))
        .send()
        .await
        .expect("health answered");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls `check` every 20 ms until it is true; fails naming `what` after `deadline`.
pub(crate) async fn wait_for(what: &str, deadline: Duration, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
