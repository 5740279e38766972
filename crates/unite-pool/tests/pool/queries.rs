use std::time::Duration;

use unite_pool::{Error, Pool};
use unite_testkit::TestPostgres;

use crate::support::builder;

#[tokio::test]
async fn queries_run_with_and_without_parameters() {
    let pg = TestPostgres::new().await;
    let pool = builder(pg.url()).build().await.unwrap();

    pool.batch_execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)")
        .await
        .unwrap();
    let n = pool
        .execute(
            "INSERT INTO items VALUES ($1, $2), ($3, $4)",
            &[&1i32, &"one", &2i32, &"two"],
        )
        .await
        .unwrap();
    assert_eq!(n, 2);

    let rows = pool
        .query("SELECT id, name FROM items ORDER BY id", &[])
        .await
        .unwrap();
    let got: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![(1, "one".to_owned()), (2, "two".to_owned())]);

    let row = pool
        .query_one("SELECT name FROM items WHERE id = $1", &[&2i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "two");
    assert!(
        pool.query_opt("SELECT name FROM items WHERE id = $1", &[&3i32])
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        pool.execute("DELETE FROM items WHERE id = 1", &[])
            .await
            .unwrap(),
        1
    );

    use unite_pool::tokio_postgres::types::Type;
    let row = pool
        .query_typed_one("SELECT $1::int4 + 1", &[(&41i32, Type::INT4)])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);

    // The checked-out client is the driver's.
    let conn = pool.get().await.unwrap();
    let row = conn
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
}

#[tokio::test]
async fn caller_errors_are_reported_but_do_not_count_against_the_breaker() {
    let pg = TestPostgres::new().await;
    let pool = builder(pg.url()).build().await.unwrap();
    pool.batch_execute("CREATE TABLE uniq (id int PRIMARY KEY)")
        .await
        .unwrap();
    pool.execute("INSERT INTO uniq VALUES (1)", &[])
        .await
        .unwrap();

    let dup = pool
        .execute("INSERT INTO uniq VALUES (1)", &[])
        .await
        .unwrap_err();
    assert_eq!(
        dup.code(),
        Some(&unite_pool::tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    );
    assert!(!dup.is_backend_failure());
    assert_eq!(
        dup.to_string(),
        "database error: SQLSTATE 23505 (unique violation)"
    );

    let syntax = pool.query("SELEC 1", &[]).await.unwrap_err();
    assert_eq!(syntax.code().map(|c| c.code()), Some("42601"));
    assert!(
        !syntax.to_string().contains("SELEC"),
        "no SQL in messages: {syntax}"
    );

    // Driver-side caller errors: wrong parameter type, wrong row count.
    let wrong_type = pool.query("SELECT $1::text", &[&1i32]).await.unwrap_err();
    assert!(matches!(wrong_type, Error::Backend(_)), "{wrong_type:?}");
    assert!(!wrong_type.is_backend_failure(), "{wrong_type}");
    let none = pool
        .query_one("SELECT 1 WHERE false", &[])
        .await
        .unwrap_err();
    assert!(!none.is_backend_failure(), "{none}");

    let snap = pool.breaker().snapshot();
    assert_eq!(snap.failures, 0, "{snap:?}");
    let stats = pool.stats();
    assert_eq!(stats.caller_errors, 4, "{stats:?}");
    assert_eq!(stats.failures, 0, "{stats:?}");
}

#[tokio::test]
async fn transactions_commit_and_roll_back() {
    let pg = TestPostgres::new().await;
    let pool = builder(pg.url()).build().await.unwrap();
    pool.batch_execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)")
        .await
        .unwrap();

    let id: i32 = pool
        .transaction(async |tx| {
            tx.execute("INSERT INTO accounts VALUES (1, 100)", &[])
                .await?;
            let row = tx
                .query_one(
                    "INSERT INTO accounts VALUES ($1, $2) RETURNING id",
                    &[&2i32, &50i32],
                )
                .await?;
            Ok::<_, Error>(row.get(0))
        })
        .await
        .unwrap();
    assert_eq!(id, 2);

    #[derive(Debug)]
    enum AppError {
        Insufficient,
        Pool(#[allow(dead_code)] Error),
    }
    impl From<Error> for AppError {
        fn from(e: Error) -> Self {
            Self::Pool(e)
        }
    }
    let err = pool
        .transaction(async |tx| {
            tx.execute(
                "UPDATE accounts SET balance = balance - 80 WHERE id = 2",
                &[],
            )
            .await
            .map_err(Error::from)?;
            let row = tx
                .query_one("SELECT balance FROM accounts WHERE id = 2", &[])
                .await
                .map_err(Error::from)?;
            if row.get::<_, i32>(0) < 0 {
                return Err(AppError::Insufficient);
            }
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, AppError::Insufficient), "{err:?}");

    let rows = pool
        .query("SELECT id, balance FROM accounts ORDER BY id", &[])
        .await
        .unwrap();
    let got: Vec<(i32, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![(1, 100), (2, 50)],
        "the failed transaction was rolled back"
    );

    // A failed statement inside the transaction rolls it back too.
    let err = pool
        .transaction(async |tx| {
            tx.execute("INSERT INTO accounts VALUES (3, 1)", &[])
                .await?;
            tx.execute("INSERT INTO accounts VALUES (1, 1)", &[])
                .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("23505"));
    let count = pool
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap();
    assert_eq!(count.get::<_, i64>(0), 2);

    let stats = pool.stats();
    assert_eq!(stats.failures, 0, "caller errors only: {stats:?}");
    assert_eq!(pool.breaker().snapshot().failures, 0);
}

#[tokio::test]
async fn pool_futures_can_be_spawned() {
    let pg = TestPostgres::new().await;
    let pool = builder(pg.url()).build().await.unwrap();
    let p = pool.clone();
    let spawned = tokio::spawn(async move {
        let a = p.query_one("SELECT 1::int4", &[]).await?.get::<_, i32>(0);
        let b = p
            .transaction(async |tx| {
                let row = tx.query_one("SELECT $1::int4", &[&2i32]).await?;
                Ok::<i32, Error>(row.get(0))
            })
            .await?;
        let conn = p.get().await?;
        let c: i32 = conn.query_one("SELECT 3", &[]).await?.get(0);
        Ok::<_, Error>(a + b + c)
    });
    assert_eq!(spawned.await.unwrap().unwrap(), 6);
}

#[tokio::test]
async fn statement_timeout_cancels_long_statements() {
    let pg = TestPostgres::new().await;
    let pool = builder(pg.url())
        .statement_timeout(Duration::from_millis(200))
        .query_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let setting = pool.query_one("SHOW statement_timeout", &[]).await.unwrap();
    assert_eq!(setting.get::<_, String>(0), "200ms");

    let err = pool.execute("SELECT pg_sleep(5)", &[]).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err:?}");
    assert_eq!(
        err.to_string(),
        "database error: SQLSTATE 57014 (query canceled: statement timeout or cancel request)"
    );
    // Decision: a statement timeout is the statement's fault, not the backend's.
    assert!(!err.is_backend_failure());
    assert_eq!(pool.breaker().snapshot().failures, 0);
    // The search_path option of the test URL survived next to the statement timeout.
    let path = pool.query_one("SHOW search_path", &[]).await.unwrap();
    assert_eq!(path.get::<_, String>(0), pg.schema());
}

#[tokio::test]
async fn query_timeout_bounds_a_call_and_discards_its_connection() {
    let pg = TestPostgres::new().await;
    let pool = builder(pg.url())
        .max_size(1)
        .query_timeout(Duration::from_millis(1000))
        .build()
        .await
        .unwrap();
    let pid: i32 = pool
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let err = pool.execute("SELECT pg_sleep(10)", &[]).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.is_backend_failure());
    // The connection that timed out was not reused.
    let next: i32 = pool
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(pid, next);
}

#[tokio::test]
async fn checkout_times_out_when_the_pool_is_exhausted() {
    let pg = TestPostgres::new().await;
    let pool = builder(pg.url()).max_size(1).build().await.unwrap();
    let held = pool.get().await.unwrap();
    let err = pool.get().await.unwrap_err();
    assert!(matches!(err, Error::CheckoutTimeout { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "no database connection became free within the checkout timeout (1000 ms)"
    );
    let stats = pool.stats();
    assert_eq!(stats.checkout_timeouts, 1);
    assert_eq!((stats.size, stats.in_use, stats.idle), (1, 1, 0));
    drop(held);
    pool.query("SELECT 1", &[]).await.unwrap();
    assert_eq!(pool.stats().checkout_timeouts, 1);
}

#[tokio::test]
async fn health_checks_the_server() {
    let pg = TestPostgres::new().await;
    let pool = builder(pg.url()).build().await.unwrap();
    let rtt = pool.health().await.unwrap();
    assert!(rtt > Duration::ZERO);
    let stats = pool.stats();
    assert_eq!((stats.total_requests, stats.successes), (1, 1));
}

#[tokio::test]
async fn discarded_connections_are_not_reused() {
    let pg = TestPostgres::new().await;
    let pool = builder(pg.url()).max_size(1).build().await.unwrap();
    let conn = pool.get().await.unwrap();
    conn.batch_execute("SET TIME ZONE 'Asia/Tokyo'")
        .await
        .unwrap();
    let pid: i32 = conn
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    conn.discard();
    let row = pool
        .query_one("SELECT pg_backend_pid(), current_setting('TimeZone')", &[])
        .await
        .unwrap();
    assert_ne!(row.get::<_, i32>(0), pid);
    assert_ne!(row.get::<_, String>(1), "Asia/Tokyo");
}

#[tokio::test]
async fn application_name_is_sent() {
    let pg = TestPostgres::new().await;
    let pool = builder(pg.url())
        .application_name("unite-pool-test")
        .build()
        .await
        .unwrap();
    let row = pool
        .query_one("SELECT current_setting('application_name')", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "unite-pool-test");
}

#[tokio::test]
async fn min_idle_connections_are_opened_by_build() {
    let pg = TestPostgres::new().await;
    let pool: Pool = builder(pg.url())
        .max_size(3)
        .min_idle(2)
        .build()
        .await
        .unwrap();
    let stats = pool.stats();
    assert_eq!((stats.size, stats.idle), (2, 2), "{stats:?}");
}
