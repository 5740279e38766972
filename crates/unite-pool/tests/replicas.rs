//! Read replicas against real servers: a primary and a streaming replica started by
//! `unite-testkit` from the OS binaries (`initdb`, `pg_basebackup -R`), stopped on drop.
//!
//! No assertion is about timing: state changes are awaited by polling with a bounded
//! deadline, and each test as a whole is bounded too.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};
use unite_pool::unite_breaker::State;
use unite_pool::{Error, Pool};
use unite_testkit::{FaultProxy, Mode, PostgresServer, free_port};

/// Bound on each test.
const TEST_LIMIT: Duration = Duration::from_secs(120);
/// Bound on waiting for one state change.
const DEADLINE: Duration = Duration::from_secs(30);

struct Cluster {
    primary: PostgresServer,
    replica: PostgresServer,
}

/// A primary and one streaming replica of it; fails the test with the reason when either
/// cannot start.
async fn cluster() -> Cluster {
    tokio::task::spawn_blocking(|| {
        let primary = PostgresServer::start_primary().unwrap_or_else(|e| {
            panic!("replica tests need a local primary Postgres and could not start one: {e}")
        });
        let replica = primary.start_replica().unwrap_or_else(|e| {
            panic!("replica tests need a streaming replica and could not start one: {e}")
        });
        Cluster { primary, replica }
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

async fn pool_for(cluster: &Cluster) -> Pool {
    Pool::builder()
        .url(cluster.primary.url())
        .replica(cluster.replica.url())
        .max_size(4)
        .connect_timeout(Duration::from_secs(2))
        .checkout_timeout(Duration::from_secs(2))
        .health_timeout(Duration::from_secs(2))
        .query_timeout(Duration::from_secs(5))
        .replica_check_interval(Duration::from_millis(50))
        .build()
        .await
        .expect("pool with a replica builds")
}

async fn direct(url: &str) -> Client {
    let (client, conn) =
        tokio::time::timeout(Duration::from_secs(10), tokio_postgres::connect(url, NoTls))
            .await
            .expect("connect within 10 s")
            .expect("connect");
    tokio::spawn(conn);
    client
}

/// Polls `check` until it returns true; fails naming `what` past the deadline.
async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where a read ran: `true` on the replica (in recovery), `false` on the primary.
async fn read_on_replica(pool: &Pool) -> Result<bool, Error> {
    let row = pool
        .read()
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await?;
    Ok(row.get(0))
}

fn healthy(pool: &Pool) -> bool {
    pool.stats().replicas[0].healthy
}

#[tokio::test]
async fn reads_land_on_the_replica_and_writes_on_the_primary() {
    tokio::time::timeout(TEST_LIMIT, async {
        let cluster = cluster().await;
        let pool = pool_for(&cluster).await;
        assert!(pool.has_replicas());
        wait_for("the replica to be healthy", async || healthy(&pool)).await;

        for _ in 0..20 {
            assert!(
                read_on_replica(&pool).await.unwrap(),
                "read went to the primary"
            );
        }
        let on_primary = |row: tokio_postgres::Row| !row.get::<_, bool>(0);
        let sql = "SELECT pg_is_in_recovery()";
        assert!(on_primary(pool.write().query_one(sql, &[]).await.unwrap()));
        assert!(on_primary(pool.query_one(sql, &[]).await.unwrap()));
        // A write through the read handle is the caller's mistake: refused by the replica,
        // returned as it is, not retried on the primary.
        let err = pool
            .read()
            .query("CREATE TABLE nope (id int)", &[])
            .await
            .unwrap_err();
        assert_eq!(err.code().map(|c| c.code()), Some("25006"), "{err:?}");
        assert!(!err.is_backend_failure());

        // Transactions and raw connections from the read handle are on the replica too.
        let in_recovery: bool = pool
            .read()
            .transaction(async |tx| Ok::<_, Error>(tx.query_one(sql, &[]).await?.get::<_, bool>(0)))
            .await
            .unwrap();
        assert!(in_recovery);
        let conn = pool.read().get().await.unwrap();
        assert!(conn.query_one(sql, &[]).await.unwrap().get::<_, bool>(0));
        drop(conn);

        let stats = pool.stats();
        let replica = &stats.replicas[0];
        assert!(replica.healthy, "{replica:?}");
        assert_eq!(replica.circuit_state, State::Closed);
        assert_eq!(replica.name, "postgres-replica-0");
        assert!(replica.lag_ms.is_some_and(|ms| ms <= 100.0), "{replica:?}");
        assert!(replica.replay_lsn.is_some());
        assert!(replica.total_requests >= 23, "{replica:?}");
        let json = serde_json::to_value(&stats).unwrap();
        let first = &json["replicas"][0];
        for field in ["lag_ms", "healthy", "circuit_state", "replay_lsn", "url"] {
            assert!(first.get(field).is_some(), "{field} missing from {first}");
        }
        assert_eq!(first["circuit_state"], "closed");
    })
    .await
    .expect("test finished within its time limit");
}

#[tokio::test]
async fn a_lagging_replica_is_skipped_until_it_catches_up() {
    tokio::time::timeout(TEST_LIMIT, async {
        let cluster = cluster().await;
        let pool = pool_for(&cluster).await;
        pool.batch_execute("CREATE TABLE lag_probe (id serial PRIMARY KEY, at timestamptz)")
            .await
            .unwrap();
        wait_for("the replica to be healthy", async || healthy(&pool)).await;
        assert!(read_on_replica(&pool).await.unwrap());

        let replica = direct(&cluster.replica.url()).await;
        replica
            .batch_execute("SELECT pg_wal_replay_pause()")
            .await
            .unwrap();
        pool.write()
            .execute("INSERT INTO lag_probe (at) VALUES (now())", &[])
            .await
            .unwrap();

        // Lag grows past 100 ms: reads move to the primary, none fails on the way.
        wait_for("reads to move to the primary", async || {
            !read_on_replica(&pool).await.expect("no read fails")
        })
        .await;
        let stats = pool.stats().replicas[0].clone();
        assert!(!stats.healthy, "{stats:?}");
        let reason = stats.last_error.clone().unwrap_or_default();
        assert!(
            reason.contains("lag") && reason.contains("100 ms limit"),
            "{stats:?}"
        );
        for _ in 0..20 {
            assert!(!read_on_replica(&pool).await.unwrap());
        }

        replica
            .batch_execute("SELECT pg_wal_replay_resume()")
            .await
            .unwrap();
        wait_for("reads to return to the replica", async || {
            read_on_replica(&pool).await.expect("no read fails")
        })
        .await;
        // The primary is idle now: a caught-up replica is at lag 0, however old its last
        // replayed transaction.
        wait_for("lag 0 on an idle primary", async || {
            pool.stats().replicas[0].lag_ms == Some(0.0)
        })
        .await;
        assert!(healthy(&pool));
    })
    .await
    .expect("test finished within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_costs_no_failed_read() {
    tokio::time::timeout(TEST_LIMIT, async {
        let Cluster {
            primary,
            mut replica,
        } = cluster().await;
        let pool = Pool::builder()
            .url(primary.url())
            .replica(replica.url())
            .max_size(4)
            .connect_timeout(Duration::from_secs(2))
            .checkout_timeout(Duration::from_secs(2))
            .health_timeout(Duration::from_secs(2))
            .query_timeout(Duration::from_secs(5))
            .replica_check_interval(Duration::from_millis(50))
            .build()
            .await
            .unwrap();
        wait_for("the replica to be healthy", async || healthy(&pool)).await;

        // Readers run all along, on several tasks (so some reads are in flight on replica
        // connections when it stops).
        let stop = Arc::new(AtomicBool::new(false));
        let on_replica = Arc::new(AtomicU64::new(0));
        let on_primary = Arc::new(AtomicU64::new(0));
        let mut readers = Vec::new();
        for _ in 0..4 {
            let (pool, stop) = (pool.clone(), Arc::clone(&stop));
            let (on_replica, on_primary) = (Arc::clone(&on_replica), Arc::clone(&on_primary));
            readers.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match read_on_replica(&pool).await {
                        Ok(true) => on_replica.fetch_add(1, Ordering::Relaxed),
                        Ok(false) => on_primary.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            failures.push(e.to_string());
                            0
                        }
                    };
                }
                failures
            }));
        }
        wait_for("reads on the replica", async || {
            on_replica.load(Ordering::Relaxed) >= 20
        })
        .await;

        let replica_url = replica.url();
        let replica = tokio::task::spawn_blocking(move || {
            replica.stop();
            replica
        })
        .await
        .unwrap();
        wait_for("the replica to be marked unhealthy", async || {
            !healthy(&pool)
        })
        .await;
        let primary_before = on_primary.load(Ordering::Relaxed);
        wait_for("more reads, now on the primary", async || {
            on_primary.load(Ordering::Relaxed) >= primary_before + 50
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for reader in readers {
            failures.extend(reader.await.unwrap());
        }
        assert!(failures.is_empty(), "reads failed: {failures:?}");

        let stats = pool.stats().replicas[0].clone();
        assert!(!stats.healthy, "{stats:?}");
        assert!(stats.last_error.is_some(), "{stats:?}");
        assert!(
            !stats.last_error.unwrap_or_default().contains(&replica_url),
            "errors never repeat the URL"
        );
        drop(replica);
    })
    .await
    .expect("test finished within its time limit");
}

#[tokio::test]
async fn a_session_reads_its_own_writes_at_once() {
    tokio::time::timeout(TEST_LIMIT, async {
        let cluster = cluster().await;
        let pool = pool_for(&cluster).await;
        pool.batch_execute("CREATE TABLE ryw (id int PRIMARY KEY)")
            .await
            .unwrap();
        wait_for("the replica to be healthy", async || healthy(&pool)).await;

        let session = pool.session();
        assert_eq!(session.last_write(), None);
        let mut last = None;
        for id in 0..200i32 {
            session
                .write()
                .execute("INSERT INTO ryw (id) VALUES ($1)", &[&id])
                .await
                .unwrap();
            let lsn = session.last_write().expect("a write records its position");
            assert!(last.is_none_or(|l| lsn > l), "positions only grow");
            last = Some(lsn);
            let row = session
                .read()
                .query_opt("SELECT id FROM ryw WHERE id = $1", &[&id])
                .await
                .unwrap();
            assert!(
                row.is_some(),
                "write {id} not visible to its session's read"
            );
        }

        // With replay paused the replica cannot see new writes at all; the session still
        // reads each of its own.
        let replica = direct(&cluster.replica.url()).await;
        replica
            .batch_execute("SELECT pg_wal_replay_pause()")
            .await
            .unwrap();
        for id in 1000..1050i32 {
            session
                .write()
                .transaction(async |tx| {
                    tx.execute("INSERT INTO ryw (id) VALUES ($1)", &[&id])
                        .await?;
                    Ok::<_, Error>(())
                })
                .await
                .unwrap();
            let n: i64 = session
                .read()
                .query_one("SELECT count(*) FROM ryw WHERE id = $1", &[&id])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 1, "write {id} not visible to its session's read");
        }
        // The position travels as text (a cookie, a header) and resumes a session.
        let token = serde_json::to_string(&session.last_write().unwrap()).unwrap();
        let resumed = pool.session_after(serde_json::from_str(&token).unwrap());
        let n: i64 = resumed
            .read()
            .query_one("SELECT count(*) FROM ryw WHERE id = 1049", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1);

        // Once the replica has replayed the session's writes, its reads go there again.
        replica
            .batch_execute("SELECT pg_wal_replay_resume()")
            .await
            .unwrap();
        wait_for("the session's reads to return to the replica", async || {
            session
                .read()
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .unwrap()
                .get::<_, bool>(0)
        })
        .await;
    })
    .await
    .expect("test finished within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_replica_costs_no_failed_read() {
    tokio::time::timeout(TEST_LIMIT, async {
        let cluster = cluster().await;
        let proxy = FaultProxy::start_for_url(&cluster.replica.url())
            .await
            .expect("proxy starts");
        let pool = Pool::builder()
            .url(cluster.primary.url())
            .replica(proxy.proxied_url(&cluster.replica.url()))
            .max_size(4)
            .connect_timeout(Duration::from_millis(500))
            .checkout_timeout(Duration::from_millis(500))
            .health_timeout(Duration::from_millis(500))
            .query_timeout(Duration::from_millis(1000))
            .replica_check_interval(Duration::from_millis(50))
            .build()
            .await
            .unwrap();
        wait_for("the replica to be healthy", async || healthy(&pool)).await;
        for _ in 0..10 {
            assert!(read_on_replica(&pool).await.unwrap());
        }

        // The replica stops answering (connections accepted, nothing comes back): reads in
        // flight time out there and run again on the primary; then it is out of rotation.
        proxy.set_mode(Mode::Blackhole);
        let reads = (0..4).map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                for _ in 0..5 {
                    results.push(read_on_replica(&pool).await.map_err(|e| e.to_string()));
                }
                results
            })
        });
        for reader in reads.collect::<Vec<_>>() {
            for result in reader.await.unwrap() {
                assert_eq!(result, Ok(false), "every read is served, by the primary");
            }
        }
        // The first reads started while the replica was still in rotation (the monitor
        // needs health_timeout to give up on it), so the fallback path did run.
        assert!(pool.stats().replicas[0].failures >= 1, "{:?}", pool.stats());
        wait_for("the monitor to mark the replica unhealthy", async || {
            pool.stats().replicas[0].lag_ms.is_none() && !healthy(&pool)
        })
        .await;

        proxy.set_mode(Mode::Pass);
        wait_for("reads to return to the replica", async || {
            read_on_replica(&pool).await.expect("no read fails")
        })
        .await;
    })
    .await
    .expect("test finished within its time limit");
}

#[tokio::test]
async fn an_unreachable_replica_does_not_fail_the_build_or_the_reads() {
    tokio::time::timeout(TEST_LIMIT, async {
        let primary = tokio::task::spawn_blocking(|| {
            PostgresServer::start_primary()
                .unwrap_or_else(|e| panic!("could not start a local primary Postgres: {e}"))
        })
        .await
        .unwrap();
        let closed = free_port().unwrap();
        let pool = Pool::builder()
            .url(primary.url())
            .replica(format!(
                "postgres://postgres:s3cret@127.0.0.1:{closed}/postgres"
            ))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .await
            .expect("a replica that is down does not fail the build");
        let stats = pool.stats();
        let replica = &stats.replicas[0];
        assert!(!replica.healthy, "{replica:?}");
        assert_eq!(replica.lag_ms, None);
        let reason = replica.last_error.clone().unwrap_or_default();
        assert!(reason.contains("could not connect"), "{reason}");
        assert!(!format!("{stats:?}").contains("s3cret"));
        assert!(!format!("{pool:?}").contains("s3cret"));
        assert!(replica.url.contains(":***@"), "{}", replica.url);
        for _ in 0..10 {
            assert!(!read_on_replica(&pool).await.unwrap());
        }
    })
    .await
    .expect("test finished within its time limit");
}

#[tokio::test]
async fn a_bad_replica_url_is_refused_without_repeating_it() {
    let err = Pool::builder()
        .url("postgres://app@127.0.0.1/app")
        .replica("postgres://app:s3cret@127.0.0.1:notaport/app")
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                field: "replicas.urls",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

/// Compile-time check: the handles' futures are `Send`, so they work in axum handlers and
/// `tokio::spawn`.
#[allow(dead_code, reason = "only compiled")]
fn futures_are_send(pool: &Pool, session: &unite_pool::Session) {
    fn send<T: Send>(_: T) {}
    let reader = pool.read();
    send(reader.query("", &[]));
    send(reader.query_one("", &[]));
    send(reader.query_opt("", &[]));
    send(reader.query_typed("", &[]));
    send(reader.query_typed_one("", &[]));
    send(reader.get());
    send(reader.transaction(async |_tx| Ok::<_, Error>(())));
    let writer = session.write();
    send(writer.query("", &[]));
    send(writer.execute("", &[]));
    send(writer.execute_typed("", &[]));
    send(writer.batch_execute(""));
    send(writer.get());
    send(writer.transaction(async |_tx| Ok::<_, Error>(())));
    send(session.read().query("", &[]));
    send(pool.query("", &[]));
}
