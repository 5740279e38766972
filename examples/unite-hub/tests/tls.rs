//! TLS end to end (issue #11): the service started against a TLS-only Redis and a TLS-only
//! Postgres of the test's own, with certificates from a throwaway CA.
//!
//! verify-full works (a request goes through both); a wrong CA, a host name the certificate
//! does not hold, and plaintext to a TLS-only server each stop the start with an error that
//! names the problem; a Postgres limited to TLS 1.0/1.1 is refused (rustls speaks 1.2 and 1.3).
//!
//! ```text
//! cargo test -p unite-hub --test tls -- --nocapture
//! ```

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use reqwest::StatusCode;
use support::{Hub, client, create_user, get_json, sign_in};
use unite_testkit::{PostgresOptions, PostgresServer, RedisOptions, RedisServer, TestCerts};

/// The certificate of every server here names `localhost` only (not 127.0.0.1).
fn certs() -> TestCerts {
    TestCerts::generate(&["localhost"]).expect("test certificates")
}

fn redis_tls(certs: &TestCerts) -> RedisServer {
    RedisServer::start_with(RedisOptions::default().tls(certs)).expect(
        "a TLS-only redis-server of the test's own starts (is redis-server built with TLS?)",
    )
}

fn postgres_tls(certs: &TestCerts) -> PostgresServer {
    PostgresServer::start_with(PostgresOptions::default().tls_only(certs)).expect(
        "a TLS-only Postgres of the test's own starts (are the PostgreSQL binaries installed?)",
    )
}

/// `postgres://postgres@localhost:<port>/postgres`: by the name in the certificate.
fn by_name(url: &str) -> String {
    url.replace("127.0.0.1", "localhost")
}

/// The service's variables for TLS to both, `verify-full` with `ca` for both.
fn vars(pg_url: &str, redis_url: &str, ca: &Path) -> Vec<(String, String)> {
    let ca = ca.display().to_string();
    [
        ("DATABASE_URL", pg_url.to_owned()),
        ("DATABASE_TLS", "verify-full".to_owned()),
        ("DATABASE_CA_FILE", ca.clone()),
        ("REDIS_URL", redis_url.to_owned()),
        ("REDIS_CA_FILE", ca),
        ("ADMIN_TOKEN", support::ADMIN.to_owned()),
        ("WARM_ON_START", "false".to_owned()),
        ("DATABASE_CONNECT_TIMEOUT", "2s".to_owned()),
        ("DATABASE_CHECKOUT_TIMEOUT", "2s".to_owned()),
        ("REDIS_TIMEOUT", "500ms".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Runs the service's start (state build and migrations) with `vars`: the error text, whole
/// chain, when it fails.
async fn start_error(vars: &[(String, String)]) -> String {
    let map: BTreeMap<String, String> = vars.iter().cloned().collect();
    let config = unite_hub::Config::from_vars(&map).expect("test config is valid");
    let started = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        unite_hub::serve::prepare(config, None),
    )
    .await
    .expect("the start ends (succeeds or fails) within 30 s");
    match started {
        Ok(_) => panic!("the start should have been refused"),
        Err(e) => format!("{e:#}"),
    }
}

/// One refused start: what, the variables, what the error must say.
type Case = (&'static str, Vec<(String, String)>, &'static [&'static str]);

fn with(vars: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    let mut out: Vec<_> = vars.iter().filter(|(k, _)| k != name).cloned().collect();
    out.push((name.to_owned(), value.to_owned()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_to_both_backends_round_trips() {
    let certs = certs();
    let redis = redis_tls(&certs);
    let pg = postgres_tls(&certs);
    let pg_url = by_name(&pg.url());
    let redis_url = by_name(&redis.url());
    let vars = vars(&pg_url, &redis_url, &certs.ca_path());
    let extra: Vec<(&str, &str)> = vars
        .iter()
        .filter(|(k, _)| k != "DATABASE_URL")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let hub = Hub::start(&pg_url, &extra).await;

    // Postgres: the service's own session is encrypted.
    let row = hub
        .state
        .pool
        .query_one(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("query through the pool");
    let (ssl, version): (bool, Option<String>) = (row.get(0), row.get(1));
    assert!(ssl, "the pool's session is encrypted");

    // A request round trip through both: sign-in writes Postgres and the cache (Redis), the
    // validation reads it back.
    let c = client();
    let db = hub.state.pool.get().await.expect("a connection");
    let (uid, email) = create_user(&db, "pro").await;
    drop(db);
    let token = sign_in(&c, &hub, &email).await;
    let (status, body) = get_json(&c, &hub.url("/api/sessions/validate"), &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], uid, "{body}");
    let (status, health) = support::health(&c, &hub).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["checks"]["cache"]["provider"], "redis", "{health}");
    assert_eq!(health["checks"]["cache"]["status"], "healthy", "{health}");
    let (_, redis_doc) = get_json(&c, &hub.url("/api/health/redis"), "").await;
    assert_eq!(redis_doc["ping"]["ok"], true, "PING over TLS: {redis_doc}");
    eprintln!(
        "tls/verify-full: Postgres session ssl={ssl} {}, Redis PING {} ms over TLS, validate 200",
        version.unwrap_or_default(),
        redis_doc["ping"]["ms"]
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfigured_tls_stops_the_start_naming_the_problem() {
    let certs = certs();
    let other_ca = certs_other();
    let redis = redis_tls(&certs);
    let pg = postgres_tls(&certs);
    let pg_url = by_name(&pg.url());
    let redis_url = by_name(&redis.url());
    let good = vars(&pg_url, &redis_url, &certs.ca_path());
    let other = other_ca.ca_path().display().to_string();

    let mut figures = Vec::new();
    let cases: Vec<Case> = vec![
        (
            "Postgres, wrong CA",
            with(&good, "DATABASE_CA_FILE", &other),
            &["TLS handshake failed", "invalid peer certificate"],
        ),
        (
            "Postgres, name not in the certificate",
            with(&good, "DATABASE_URL", &pg.url()),
            &["certificate not valid for name"],
        ),
        (
            "Postgres, plaintext to a TLS-only server",
            with(&good, "DATABASE_TLS", "disable")
                .into_iter()
                .filter(|(k, _)| k != "DATABASE_CA_FILE")
                .collect(),
            &["no encryption"],
        ),
        (
            "Redis, wrong CA",
            with(&good, "REDIS_CA_FILE", &other),
            &["TLS", "certificate"],
        ),
        (
            "Redis, name not in the certificate",
            with(&good, "REDIS_URL", &redis.url()),
            &["TLS", "certificate"],
        ),
    ];
    for (what, vars, expected) in cases {
        let text = start_error(&vars).await;
        for needle in expected {
            assert!(
                text.to_lowercase().contains(&needle.to_lowercase()),
                "{what}: the error names the problem ({needle:?}): {text}"
            );
        }
        figures.push(format!("{what}: {text}"));
    }
    for line in &figures {
        eprintln!("tls/refused: {line}");
    }
}

/// Plaintext `redis://` to a TLS-only Redis: the server drops the connection, which the
/// client cannot tell from Redis being down, so the service starts degraded (the design:
/// Redis down never stops the start) and says so in the health document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_to_tls_only_redis_runs_degraded_and_says_so() {
    let certs = certs();
    let redis = redis_tls(&certs);
    let pg = postgres_tls(&certs);
    let pg_url = by_name(&pg.url());
    let plain = by_name(&redis.url()).replace("rediss://", "redis://");
    let vars = vars(&pg_url, &plain, &certs.ca_path());
    let extra: Vec<(&str, &str)> = vars
        .iter()
        .filter(|(k, _)| k != "DATABASE_URL" && k != "REDIS_CA_FILE")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let hub = Hub::start(&pg_url, &extra).await;
    let c = client();
    let (_, doc) = get_json(&c, &hub.url("/api/health/redis"), "").await;
    eprintln!("tls/plaintext-redis: /api/health/redis = {doc}");
    assert_eq!(doc["ping"]["ok"], false, "{doc}");
    hub.stop().await;
}

/// A Postgres that speaks only TLS 1.0/1.1 (older than rustls allows) is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_limited_to_tls_1_1_is_refused_at_start() {
    let certs = certs();
    let pg = PostgresServer::start_with(
        PostgresOptions::default()
            .tls_only(&certs)
            .setting("ssl_min_protocol_version", "TLSv1")
            .setting("ssl_max_protocol_version", "TLSv1.1"),
    )
    .expect("a TLS 1.1-only Postgres starts");
    let pg_url = by_name(&pg.url());
    let mut vars = vars(&pg_url, "rediss://localhost:1", &certs.ca_path());
    vars.retain(|(k, _)| k != "REDIS_URL" && k != "REDIS_CA_FILE");
    let text = start_error(&vars).await;
    eprintln!("tls/postgres-tls1.1: {text}");
    assert!(text.contains("TLS handshake failed"), "{text}");
    assert!(text.contains("ProtocolVersion"), "{text}");
}

fn certs_other() -> TestCerts {
    certs()
}
