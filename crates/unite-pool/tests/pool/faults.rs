//! The breaker under real faults: Postgres behind a `FaultProxy` that refuses, resets or
//! blackholes connections.

use unite_pool::unite_breaker::{ManualClock, State};
use unite_pool::{Error, Pool};
use unite_testkit::{FaultProxy, Mode, TestPostgres};

use crate::support::{OPEN, breaker, builder};

const FAILURES: u32 = 3;

async fn breaker_opens_and_recovers(mode: Mode) {
    let pg = TestPostgres::new().await;
    let proxy = FaultProxy::start_for_url(pg.url()).await.unwrap();
    let clock = ManualClock::new();
    let pool: Pool = builder(&proxy.proxied_url(pg.url()))
        .breaker(breaker(&clock, FAILURES))
        .build()
        .await
        .unwrap();

    // Healthy: a connection is opened and kept idle.
    pool.query("SELECT 1", &[]).await.unwrap();
    assert_eq!(pool.breaker().state(), State::Closed);

    proxy.set_mode(mode);
    for i in 0..FAILURES {
        let err = pool.query("SELECT 1", &[]).await.unwrap_err();
        assert!(
            err.is_backend_failure(),
            "{mode:?}: call {i} should fail as a backend failure, got {err:?}"
        );
        assert!(!err.is_circuit_open(), "{mode:?}: call {i}: {err:?}");
    }
    assert_eq!(pool.breaker().state(), State::Open, "{mode:?}");

    // Open: refused at once, without touching the proxy.
    let accepted = proxy.connections_accepted();
    for _ in 0..20 {
        let err = pool.query("SELECT 1", &[]).await.unwrap_err();
        let Error::CircuitOpen { retry_after } = err else {
            panic!("{mode:?}: expected CircuitOpen, got {err:?}");
        };
        assert!(retry_after <= OPEN);
        assert!(matches!(pool.get().await, Err(Error::CircuitOpen { .. })));
        assert!(matches!(
            pool.health().await,
            Err(Error::CircuitOpen { .. })
        ));
        let tx = pool
            .transaction(async |_tx| Ok::<_, Error>(()))
            .await
            .unwrap_err();
        assert!(tx.is_circuit_open(), "{tx:?}");
    }
    assert_eq!(
        proxy.connections_accepted(),
        accepted,
        "{mode:?}: no connection attempt while open"
    );
    let stats = pool.stats();
    assert_eq!(stats.rejected, 80, "{stats:?}");
    assert_eq!(stats.failures, u64::from(FAILURES), "{stats:?}");
    assert_eq!(stats.circuit_state, State::Open);

    // The server is back; once the open duration has passed a trial call closes the breaker.
    proxy.set_mode(Mode::Pass);
    clock.advance(OPEN);
    assert_eq!(pool.breaker().state(), State::HalfOpen);
    let row = pool.query_one("SELECT 41 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(pool.breaker().state(), State::Closed, "{mode:?}");
    for _ in 0..5 {
        pool.query("SELECT 1", &[]).await.unwrap();
    }
    assert_eq!(pool.stats().circuit_state, State::Closed);
}

#[tokio::test]
async fn breaker_opens_when_connections_are_refused() {
    breaker_opens_and_recovers(Mode::Refuse).await;
}

#[tokio::test]
async fn breaker_opens_when_connections_are_reset() {
    breaker_opens_and_recovers(Mode::Reset).await;
}

#[tokio::test]
async fn breaker_opens_when_the_server_goes_silent() {
    breaker_opens_and_recovers(Mode::Blackhole).await;
}

#[tokio::test]
async fn a_failed_trial_reopens_the_breaker() {
    let pg = TestPostgres::new().await;
    let proxy = FaultProxy::start_for_url(pg.url()).await.unwrap();
    let clock = ManualClock::new();
    let pool = builder(&proxy.proxied_url(pg.url()))
        .breaker(breaker(&clock, FAILURES))
        .build()
        .await
        .unwrap();
    proxy.set_mode(Mode::Refuse);
    for _ in 0..FAILURES {
        let err = pool.query("SELECT 1", &[]).await.unwrap_err();
        let Error::Connect(cause) = &err else {
            panic!("expected a connect error, got {err:?}");
        };
        assert!(!cause.is_tls());
        assert!(
            err.to_string()
                .starts_with("could not connect to the database: "),
            "{err}"
        );
    }
    assert_eq!(pool.breaker().state(), State::Open);
    clock.advance(OPEN);
    // Still refused: the trial fails and the breaker opens again (for longer).
    assert!(
        pool.query("SELECT 1", &[])
            .await
            .unwrap_err()
            .is_backend_failure()
    );
    assert_eq!(pool.breaker().state(), State::Open);
    assert!(
        pool.query("SELECT 1", &[])
            .await
            .unwrap_err()
            .is_circuit_open()
    );
    proxy.set_mode(Mode::Pass);
    clock.advance(OPEN);
    pool.query("SELECT 1", &[]).await.unwrap();
    assert_eq!(pool.breaker().state(), State::Closed);
}

#[tokio::test]
async fn health_reports_a_silent_server_within_its_timeout() {
    let pg = TestPostgres::new().await;
    let proxy = FaultProxy::start_for_url(pg.url()).await.unwrap();
    let pool = builder(&proxy.proxied_url(pg.url()))
        .health_timeout(std::time::Duration::from_millis(400))
        .checkout_timeout(std::time::Duration::from_secs(5))
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    pool.health().await.unwrap();
    proxy.set_mode(Mode::Blackhole);
    let err = pool.health().await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(err.to_string(), "the database did not answer within 400 ms");
    proxy.set_mode(Mode::Pass);
    pool.health().await.unwrap();
}
