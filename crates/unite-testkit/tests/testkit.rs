//! The testkit's own tests, against the real local Postgres and Redis.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use unite_testkit::{
    FaultProxy, Mode, PostgresOptions, PostgresServer, RedisOptions, RedisServer, TestCerts,
    TestPostgres, TestRedis, free_port,
};

/// Sends one inline Redis command on `stream` and reads the reply (raw RESP, so the test sees
/// exactly what the proxy does, with no client reconnection logic in between).
async fn redis_cmd(stream: &mut TcpStream, cmd: &str) -> std::io::Result<String> {
    stream.write_all(format!("{cmd}\r\n").as_bytes()).await?;
    let mut buf = vec![0u8; 512];
    let n = stream.read(&mut buf).await?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

async fn redis_proxy() -> (TestRedis, FaultProxy) {
    let redis = TestRedis::new().await;
    let proxy = FaultProxy::start_for_url(redis.url()).await.unwrap();
    (redis, proxy)
}

#[tokio::test]
async fn pass_forwards_to_the_real_redis() {
    let (redis, proxy) = redis_proxy().await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    let key = redis.key("k");
    assert_eq!(
        redis_cmd(&mut s, &format!("SET {key} v1")).await.unwrap(),
        "+OK\r\n"
    );
    assert_eq!(
        redis_cmd(&mut s, &format!("GET {key}")).await.unwrap(),
        "$2\r\nv1\r\n"
    );
    assert_eq!(proxy.connections_accepted(), 1);
    assert_eq!(proxy.mode(), Mode::Pass);
}

#[tokio::test]
async fn delay_holds_each_round_trip_at_least_the_delay() {
    let (_redis, proxy) = redis_proxy().await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(redis_cmd(&mut s, "PING").await.unwrap(), "+PONG\r\n");
    proxy.set_mode(Mode::Delay(Duration::from_millis(50)));
    let start = Instant::now();
    assert_eq!(redis_cmd(&mut s, "PING").await.unwrap(), "+PONG\r\n");
    // A lower bound, not a speed goal: the proxy must not hand the bytes on sooner.
    assert!(
        start.elapsed() >= Duration::from_millis(50),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn blackhole_never_answers_until_it_passes_again() {
    let (_redis, proxy) = redis_proxy().await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(redis_cmd(&mut s, "PING").await.unwrap(), "+PONG\r\n");
    proxy.set_mode(Mode::Blackhole);
    let mut held = TcpStream::connect(proxy.addr()).await.unwrap(); // accepted ...
    let r = timeout(Duration::from_millis(300), redis_cmd(&mut s, "PING")).await;
    assert!(r.is_err(), "a blackholed GET must time out, got {r:?}");
    let r = timeout(Duration::from_millis(300), redis_cmd(&mut held, "PING")).await;
    assert!(r.is_err(), "... and so must a new connection, got {r:?}");
    // Healing delivers what was held: both connections get their answer.
    proxy.set_mode(Mode::Pass);
    let mut buf = vec![0u8; 64];
    let n = timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("+PONG"));
    let n = timeout(Duration::from_secs(5), held.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("+PONG"));
}

#[tokio::test]
async fn reset_fails_open_and_new_connections_at_once() {
    let (_redis, proxy) = redis_proxy().await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(redis_cmd(&mut s, "PING").await.unwrap(), "+PONG\r\n");
    proxy.set_mode(Mode::Reset);
    // Fails, not hangs: the bound is only there so a broken proxy cannot stall the suite.
    let r = timeout(Duration::from_secs(5), redis_cmd(&mut s, "PING")).await;
    assert!(matches!(r, Ok(Err(_))), "expected a failed read, got {r:?}");
    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    let r = timeout(Duration::from_secs(5), redis_cmd(&mut fresh, "PING")).await;
    assert!(matches!(r, Ok(Err(_))), "expected a failed read, got {r:?}");
    proxy.set_mode(Mode::Pass);
    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(redis_cmd(&mut again, "PING").await.unwrap(), "+PONG\r\n");
}

#[tokio::test]
async fn refuse_closes_the_port_and_pass_reopens_it() {
    let (_redis, proxy) = redis_proxy().await;
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(redis_cmd(&mut open, "PING").await.unwrap(), "+PONG\r\n");
    proxy.set_mode(Mode::Refuse);
    let mut refused = false;
    for _ in 0..100 {
        match TcpStream::connect(proxy.addr()).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::task::yield_now().await,
        }
    }
    assert!(refused, "new connections must be refused");
    let r = timeout(Duration::from_secs(5), redis_cmd(&mut open, "PING")).await;
    assert!(
        matches!(r, Ok(Err(_))),
        "open connections are closed, got {r:?}"
    );
    proxy.set_mode(Mode::Pass);
    let mut back = None;
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect(proxy.addr()).await {
            back = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut back = back.expect("the proxy listens again after Pass");
    assert_eq!(redis_cmd(&mut back, "PING").await.unwrap(), "+PONG\r\n");
}

#[tokio::test]
async fn postgres_through_every_mode() {
    let pg = TestPostgres::new().await;
    let proxy = FaultProxy::start_for_url(pg.url()).await.unwrap();
    let url = proxy.proxied_url(pg.url());
    let connect = |url: String| async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok::<_, tokio_postgres::Error>(client)
    };

    let client = connect(url.clone()).await.unwrap();
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let path: String = client
        .query_one("SHOW search_path", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(path, pg.schema(), "the test URL pins the test's schema");

    proxy.set_mode(Mode::Blackhole);
    let r = timeout(
        Duration::from_millis(300),
        client.query_one("SELECT 1", &[]),
    )
    .await;
    assert!(r.is_err(), "a blackholed query must time out");
    let r = timeout(Duration::from_millis(300), connect(url.clone())).await;
    assert!(r.is_err(), "a blackholed connect must time out");

    proxy.set_mode(Mode::Reset);
    let r = timeout(Duration::from_secs(5), client.query_one("SELECT 1", &[])).await;
    assert!(matches!(r, Ok(Err(_))), "reset fails the open connection");
    let r = timeout(Duration::from_secs(5), connect(url.clone())).await;
    assert!(
        matches!(r, Ok(Err(_))),
        "reset fails new connections at once"
    );

    proxy.set_mode(Mode::Refuse);
    tokio::task::yield_now().await;
    let r = timeout(Duration::from_secs(5), connect(url.clone())).await;
    assert!(matches!(r, Ok(Err(_))), "refuse fails new connections");

    proxy.set_mode(Mode::Pass);
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(c) = connect(url.clone()).await {
            let one: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
            ok = one == 1;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ok, "after Pass, new connections work again");
}

#[tokio::test]
async fn a_missing_postgres_fails_with_the_url_and_the_fix() {
    let port = free_port().unwrap();
    let url = format!("postgres://app:hunter2@127.0.0.1:{port}/postgres");
    let err = TestPostgres::connect_to(&url)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("scripts/services.sh up"), "{err}");
    assert!(err.contains("DATABASE_URL"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the password must not show: {err}"
    );
}

#[tokio::test]
async fn a_silent_postgres_fails_within_the_connect_timeout_not_a_hang() {
    let pg = TestPostgres::new().await;
    let proxy = FaultProxy::start_for_url(pg.base_url()).await.unwrap();
    proxy.set_mode(Mode::Blackhole);
    let url = proxy.proxied_url(pg.base_url());
    // The testkit's own bound (5 s) must fire well before this outer one.
    let r = timeout(Duration::from_secs(20), TestPostgres::connect_to(&url)).await;
    let err = r
        .expect("connect_to must give up by itself")
        .unwrap_err()
        .to_string();
    assert!(err.contains("did not answer"), "{err}");
    assert!(err.contains("scripts/services.sh up"), "{err}");
}

#[tokio::test]
async fn a_missing_redis_fails_with_the_url_and_the_fix() {
    let port = free_port().unwrap();
    let url = format!("redis://:hunter2@127.0.0.1:{port}");
    let err = TestRedis::connect_to(&url).await.unwrap_err().to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("scripts/services.sh up"), "{err}");
    assert!(err.contains("REDIS_URL"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn test_redis_deletes_its_keys_on_drop() {
    use fred::prelude::*;
    let redis = TestRedis::new().await;
    let other = redis.new_client().await;
    let key = redis.key("left-behind");
    let _: () = redis
        .client()
        .set(&key, "x", None, None, false)
        .await
        .unwrap();
    assert!(redis.prefix().starts_with("unite-test:"));
    drop(redis);
    let n: i64 = other.exists(&key).await.unwrap();
    assert_eq!(n, 0, "the test's keys are gone after drop");
}

#[tokio::test]
async fn test_postgres_drops_its_schema_on_drop() {
    let pg = TestPostgres::new().await;
    pg.client()
        .await
        .batch_execute("CREATE TABLE t (id int)")
        .await
        .unwrap();
    let schema = pg.schema().to_owned();
    let base = pg.base_url().to_owned();
    drop(pg);
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn redis_server_of_its_own_can_crash_and_come_back() {
    let mut server = RedisServer::start().unwrap();
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    assert_eq!(redis_cmd(&mut s, "PING").await.unwrap(), "+PONG\r\n");
    server.stop();
    assert!(!server.is_running());
    assert!(TcpStream::connect(server.addr()).await.is_err());
    server.restart().unwrap();
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    assert_eq!(redis_cmd(&mut s, "PING").await.unwrap(), "+PONG\r\n");
}

#[tokio::test]
async fn tls_only_redis_does_not_speak_plaintext() {
    let certs = TestCerts::generate(&["localhost", "127.0.0.1"]).unwrap();
    let server = RedisServer::start_with(RedisOptions::default().tls(&certs)).unwrap();
    assert!(server.url().starts_with("rediss://"));
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    let r = timeout(Duration::from_secs(5), redis_cmd(&mut s, "PING")).await;
    assert!(
        !matches!(&r, Ok(Ok(reply)) if reply.starts_with("+PONG")),
        "a TLS-only Redis must not answer plaintext: {r:?}"
    );
}

#[tokio::test]
async fn postgres_server_of_its_own_plain_and_tls_only() {
    let plain = PostgresServer::start().unwrap();
    let (client, conn) = tokio_postgres::connect(&plain.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let port: String = client.query_one("SHOW port", &[]).await.unwrap().get(0);
    assert_eq!(port, plain.port().to_string());

    let certs = TestCerts::generate(&["localhost", "127.0.0.1"]).unwrap();
    let tls = PostgresServer::start_with(PostgresOptions::default().tls_only(&certs)).unwrap();
    let err = tokio_postgres::connect(&tls.url(), tokio_postgres::NoTls)
        .await
        .err()
        .expect("plaintext to a TLS-only Postgres must fail");
    let text = format!("{err:?}");
    assert!(
        text.contains("no encryption") || text.contains("pg_hba"),
        "{text}"
    );
}

#[tokio::test]
async fn postgres_replica_streams_from_its_primary_and_stops_on_drop() {
    let primary = PostgresServer::start_primary().unwrap_or_else(|e| panic!("{e}"));
    let replica = primary.start_replica().unwrap_or_else(|e| panic!("{e}"));
    assert!(replica.is_replica() && !primary.is_replica());
    assert_ne!(replica.port(), primary.port());

    let connect = async |url: String| {
        let (client, conn) = timeout(
            Duration::from_secs(10),
            tokio_postgres::connect(&url, tokio_postgres::NoTls),
        )
        .await
        .expect("connect within 10 s")
        .unwrap();
        tokio::spawn(conn);
        client
    };
    let p = connect(primary.url()).await;
    let r = connect(replica.url()).await;
    let in_recovery = async |c: &tokio_postgres::Client| {
        c.query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .unwrap()
            .get::<_, bool>(0)
    };
    assert!(!in_recovery(&p).await);
    assert!(in_recovery(&r).await);

    p.batch_execute("CREATE TABLE replicated (v int); INSERT INTO replicated VALUES (42)")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = r
            .query_opt("SELECT v FROM replicated", &[])
            .await
            .ok()
            .flatten()
            .map(|row| row.get::<_, i32>(0));
        if seen == Some(42) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica did not show the primary's row within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = r
        .batch_execute("INSERT INTO replicated VALUES (1)")
        .await
        .expect_err("a replica refuses writes");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
    );

    let addr = replica.addr();
    drop(replica);
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "the replica still listens after drop"
    );
}
