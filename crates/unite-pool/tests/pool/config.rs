//! Bad configurations are refused at build time naming the field; secrets never show.

use std::time::Duration;

use unite_pool::{BreakerConfig, Error, Pool, PoolBuilder, PoolConfig, TlsMode};

const SECRET: &str = "Sup3r-S3cret-pw";

fn url_with_password() -> String {
    // Port 1 on loopback: nothing listens there, so connecting fails at once.
    format!("postgres://app:{SECRET}@127.0.0.1:1/app")
}

async fn refused(builder: PoolBuilder) -> (&'static str, String) {
    match builder.build().await {
        Err(Error::Config { field, reason }) => (field, reason),
        Err(other) => panic!("expected a config error, got {other:?}"),
        Ok(pool) => panic!("expected a config error, got a pool: {pool:?}"),
    }
}

#[tokio::test]
async fn bad_settings_are_refused_naming_the_field() {
    let url = url_with_password();
    let base = || Pool::builder().url(&url);

    assert_eq!(refused(base().max_size(0)).await.0, "max_size");
    assert_eq!(refused(base().max_size(2).min_idle(3)).await.0, "min_idle");
    assert_eq!(
        refused(Pool::builder().url("postgres://app:x@db:notaport/app"))
            .await
            .0,
        "url"
    );
    assert_eq!(
        refused(Pool::builder().url("definitely not a url = ="))
            .await
            .0,
        "url"
    );
    assert_eq!(refused(Pool::builder().max_size(3)).await.0, "url");
    assert_eq!(
        refused(base().checkout_timeout(Duration::ZERO)).await.0,
        "checkout_timeout"
    );
    assert_eq!(
        refused(base().connect_timeout(Duration::ZERO)).await.0,
        "connect_timeout"
    );
    assert_eq!(
        refused(base().statement_timeout(Duration::ZERO)).await.0,
        "statement_timeout"
    );

    let missing = std::env::temp_dir().join("unite-pool-no-such-ca.pem");
    let (field, reason) = refused(base().tls_mode(TlsMode::VerifyFull).tls_ca_file(&missing)).await;
    assert_eq!(field, "tls.ca_file");
    assert!(reason.contains("unite-pool-no-such-ca.pem"), "{reason}");

    let (field, reason) = refused(
        Pool::builder()
            .url("host=/var/run/postgresql user=app dbname=app")
            .tls_mode(TlsMode::VerifyFull),
    )
    .await;
    assert_eq!(field, "url");
    assert!(reason.contains("no host name"), "{reason}");

    assert_eq!(
        refused(Pool::builder().url("postgres://app@db/app?sslmode=require"))
            .await
            .0,
        "tls.mode"
    );
    assert_eq!(
        refused(base().breaker_config({
            let mut b = BreakerConfig::default();
            b.failure_rate_threshold = 1.5;
            b
        }))
        .await
        .0,
        "breaker"
    );
}

#[tokio::test]
async fn passwords_never_show_in_debug_or_errors() {
    let url = url_with_password();

    let builder = Pool::builder().url(&url).max_size(1);
    assert!(!format!("{builder:?}").contains(SECRET));

    let config: PoolConfig = serde_json::from_value(serde_json::json!({
        "url": url,
        "connect_timeout": "300ms",
        "checkout_timeout": "500ms",
        "breaker": { "minimum_calls": 1, "window_size": 1, "failure_rate_threshold": 1.0 }
    }))
    .unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(
        debug.contains("postgres://app:***@127.0.0.1:1/app"),
        "{debug}"
    );

    // Every error a caller can meet with this URL.
    let mut errors: Vec<Error> = Vec::new();
    let pool = Pool::connect(config).await.unwrap();
    assert!(!format!("{pool:?}").contains(SECRET));
    errors.push(pool.query("SELECT 1", &[]).await.unwrap_err()); // connect refused
    errors.push(pool.query("SELECT 1", &[]).await.unwrap_err()); // circuit open
    assert!(matches!(errors[0], Error::Connect(_)), "{:?}", errors[0]);
    assert!(
        matches!(errors[1], Error::CircuitOpen { .. }),
        "{:?}",
        errors[1]
    );
    errors.push(
        Pool::builder()
            .url(format!("postgres://app:{SECRET}@127.0.0.1:notaport/app"))
            .build()
            .await
            .unwrap_err(),
    );
    errors.push(
        Pool::builder()
            .url(&url)
            .max_size(0)
            .build()
            .await
            .unwrap_err(),
    );
    for e in &errors {
        let shown = format!("{e} / {e:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            assert!(!s.to_string().contains(SECRET), "{s}");
            source = s.source();
        }
    }

    // A serde error on a bad URL does not repeat it either.
    let bad = serde_json::from_value::<PoolConfig>(serde_json::json!({
        "url": format!("postgres://app:{SECRET}@db:notaport/app")
    }))
    .unwrap_err();
    assert!(!bad.to_string().contains(SECRET), "{bad}");
}

#[test]
fn config_reads_from_serde_with_human_durations() {
    let config: PoolConfig = serde_json::from_value(serde_json::json!({
        "url": "postgres://app@db.internal:6432/app",
        "name": "primary",
        "max_size": 32,
        "min_idle": 4,
        "connect_timeout": "2s",
        "checkout_timeout": "750ms",
        "statement_timeout": "30s",
        "query_timeout": "35s",
        "idle_timeout": "5m",
        "application_name": "unite-hub",
        "tls": { "mode": "require" },
        "pgbouncer": true,
        "breaker": { "open_duration": "10s", "half_open_calls": 5 }
    }))
    .unwrap();
    assert_eq!(config.name, "primary");
    assert_eq!((config.max_size, config.min_idle), (32, 4));
    assert_eq!(config.connect_timeout, Duration::from_secs(2));
    assert_eq!(config.checkout_timeout, Duration::from_millis(750));
    assert_eq!(config.statement_timeout, Some(Duration::from_secs(30)));
    assert_eq!(config.query_timeout, Some(Duration::from_secs(35)));
    assert_eq!(config.idle_timeout, Some(Duration::from_secs(300)));
    assert_eq!(
        config.max_lifetime,
        Some(Duration::from_secs(1800)),
        "default kept"
    );
    assert_eq!(config.tls.mode, TlsMode::Require);
    assert!(config.pgbouncer);
    assert_eq!(config.breaker.open_duration, Duration::from_secs(10));
    assert_eq!(config.breaker.half_open_calls, 5);
    assert_eq!(config.breaker.minimum_calls, 10, "default kept");
    config.validate().unwrap();

    let unknown = serde_json::from_value::<PoolConfig>(serde_json::json!({
        "url": "postgres://app@db/app", "max_sise": 3
    }))
    .unwrap_err();
    assert!(unknown.to_string().contains("max_sise"), "{unknown}");
}
