//! Secrets logged through the helpers never reach a log line.

mod support;

use support::Buffer;
use tracing_subscriber::prelude::*;
use unite_telemetry::{RedactedHeaders, Secret, json_layer, redact_header, redact_url};

const PASSWORD: &str = "hunter2-pa55";
const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.sig";
const ADMIN_KEY: &str = "adm-7f3c9e";

#[derive(Debug)]
#[allow(dead_code)]
struct Config {
    database_url: Secret<String>,
    admin_token: Secret<String>,
    port: u16,
}

#[test]
fn urls_headers_and_config_never_show_the_secret() {
    let buf = Buffer::default();
    let url = format!(
        "postgres://app:{PASSWORD}@db.internal:5432/app?sslmode=verify-full&password={PASSWORD}"
    );
    let redis = format!("rediss://default:{PASSWORD}@cache:6380/0");
    let dsn = format!("host=db user=app password='{PASSWORD}' dbname=app");
    let bearer = format!("Bearer {TOKEN}");
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", bearer.parse().unwrap());
    headers.insert("x-admin-key", ADMIN_KEY.parse().unwrap());
    headers.insert("cookie", format!("sid={TOKEN}").parse().unwrap());
    headers.insert("accept", "application/json".parse().unwrap());
    let config = Config {
        database_url: Secret::new(url.clone()),
        admin_token: Secret::new(ADMIN_KEY.to_owned()),
        port: 8080,
    };

    tracing::subscriber::with_default(
        tracing_subscriber::registry().with(json_layer(buf.clone())),
        || {
            tracing::info!(url = %redact_url(&url), redis = %redact_url(&redis), dsn = %redact_url(&dsn), "connecting");
            tracing::info!(authorization = %redact_header("authorization", &bearer), "auth header");
            tracing::info!(headers = ?RedactedHeaders(&headers), "request headers");
            tracing::info!(?config, "effective config");
            tracing::error!(error = %format!("connection to {} refused", redact_url(&url)), "failed");
        },
    );

    let text = buf.text();
    for secret in [PASSWORD, TOKEN, ADMIN_KEY, "c2VjcmV0"] {
        assert!(!text.contains(secret), "secret {secret:?} leaked: {text}");
    }
    let lines = buf.lines();
    assert_eq!(lines.len(), 5);
    assert_eq!(
        lines[0]["url"],
        "postgres://app:***@db.internal:5432/app?sslmode=verify-full&password=***"
    );
    assert_eq!(lines[0]["redis"], "rediss://default:***@cache:6380/0");
    assert_eq!(lines[0]["dsn"], "host=db user=app password=*** dbname=app");
    assert_eq!(lines[1]["authorization"], "Bearer ***");
    let shown = lines[2]["headers"].as_str().unwrap();
    assert!(
        shown.contains("Bearer ***") && shown.contains("application/json"),
        "{shown}"
    );
    assert!(lines[3]["config"].as_str().unwrap().contains("port: 8080"));
}
