//! TLS against Postgres servers of the test's own that accept only TLS.

use unite_pool::unite_breaker::State;
use unite_pool::{Error, Pool, TlsMode};
use unite_testkit::{PostgresOptions, PostgresServer, TestCerts};

use crate::support::builder;

fn tls_pool(url: &str, mode: TlsMode, ca: Option<&TestCerts>) -> unite_pool::PoolBuilder {
    let b = builder(url)
        .connect_timeout(std::time::Duration::from_secs(5))
        .checkout_timeout(std::time::Duration::from_secs(5))
        .tls_mode(mode);
    match ca {
        Some(certs) => b.tls_ca_file(certs.ca_path()),
        None => b,
    }
}

fn connect_error(err: &Error) -> &unite_pool::ConnectError {
    match err {
        Error::Connect(e) => e,
        other => panic!("expected a connect error, got {other:?}"),
    }
}

#[tokio::test]
async fn tls_modes_against_a_tls_only_server() {
    // The certificate names "localhost" only.
    let certs = TestCerts::generate(&["localhost"]).unwrap();
    let server = PostgresServer::start_with(PostgresOptions::default().tls_only(&certs)).unwrap();
    let by_ip = server.url();
    let by_name = by_ip.replace("127.0.0.1", "localhost");

    // verify-full, the right CA, the name in the certificate: connects, encrypted.
    let pool = tls_pool(&by_name, TlsMode::VerifyFull, Some(&certs))
        .build()
        .await
        .unwrap();
    let row = pool
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "the session is encrypted");
    pool.health().await.unwrap();

    // verify-full with another CA (same CA name, other key): refused, and the error says why.
    let other = TestCerts::generate(&["localhost"]).unwrap();
    let pool = tls_pool(&by_name, TlsMode::VerifyFull, Some(&other))
        .build()
        .await
        .unwrap();
    let err = pool.query("SELECT 1", &[]).await.unwrap_err();
    assert!(connect_error(&err).is_tls(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("TLS handshake failed"), "{text}");
    assert!(text.contains("invalid peer certificate"), "{text}");
    assert!(err.is_backend_failure());

    // verify-full with the right CA but a host name the certificate does not hold.
    let pool = tls_pool(&by_ip, TlsMode::VerifyFull, Some(&certs))
        .build()
        .await
        .unwrap();
    let err = pool.query("SELECT 1", &[]).await.unwrap_err();
    assert!(connect_error(&err).is_tls(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("certificate not valid for name"), "{text}");

    // require encrypts without verifying: the wrong name and an unknown CA both pass.
    let pool: Pool = tls_pool(&by_ip, TlsMode::Require, None)
        .build()
        .await
        .unwrap();
    let row = pool
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));

    // disable against a server that accepts only TLS: refused by the server, clearly.
    let pool = tls_pool(&by_name, TlsMode::Disable, None)
        .build()
        .await
        .unwrap();
    let err = pool.query("SELECT 1", &[]).await.unwrap_err();
    assert!(!connect_error(&err).is_tls(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("no encryption"), "{text}");
    assert_eq!(
        pool.breaker().state(),
        State::Closed,
        "one failure does not open it"
    );
}

#[tokio::test]
async fn a_server_limited_to_tls_1_1_is_refused() {
    let certs = TestCerts::generate(&["localhost"]).unwrap();
    let server = PostgresServer::start_with(
        PostgresOptions::default()
            .tls_only(&certs)
            .setting("ssl_min_protocol_version", "TLSv1")
            .setting("ssl_max_protocol_version", "TLSv1.1"),
    )
    .unwrap();
    let url = server.url().replace("127.0.0.1", "localhost");
    let pool = tls_pool(&url, TlsMode::VerifyFull, Some(&certs))
        .build()
        .await
        .unwrap();
    let err = pool.query("SELECT 1", &[]).await.unwrap_err();
    assert!(connect_error(&err).is_tls(), "{err:?}");
    // rustls speaks TLS 1.2 and 1.3 only; the server answers with a protocol-version alert.
    let text = err.to_string();
    assert!(text.contains("TLS handshake failed"), "{text}");
    assert!(text.contains("ProtocolVersion"), "{text}");
}
