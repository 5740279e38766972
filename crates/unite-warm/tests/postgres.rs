//! Warming from a real Postgres into a real Redis (and L1).

mod support;

use std::num::NonZeroUsize;
use std::time::Duration;

use support::{CREATE_SESSIONS, Session};
use unite_pool::Pool;
use unite_testkit::{TestPostgres, TestRedis};
use unite_warm::tokio_postgres::Row;
use unite_warm::tokio_postgres::types::Type;
use unite_warm::{Phase, PostgresSource, WarmError, WarmItem, Warmer};

const HOUR: Duration = Duration::from_secs(3600);

async fn setup(rows: i64) -> (TestPostgres, Pool) {
    let pg = TestPostgres::new().await;
    let client = pg.client().await;
    client
        .execute(CREATE_SESSIONS, &[&rows])
        .await
        .expect("table created");
    let pool = Pool::builder()
        .url(pg.url())
        .max_size(2)
        .build()
        .await
        .expect("pool builds");
    (pg, pool)
}

fn session_item(row: &Row) -> Result<WarmItem<Session>, unite_warm::tokio_postgres::Error> {
    let session = Session {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        token: row.try_get(2)?,
        data: row.try_get(3)?,
    };
    Ok(WarmItem::new(
        format!("session:{}", session.id),
        session,
        HOUR,
    ))
}

fn sessions(pool: &Pool) -> PostgresSource<Session> {
    PostgresSource::new(
        pool.clone(),
        "SELECT id, user_id, token, data FROM sessions",
        session_item,
    )
    .count_query("SELECT count(*) FROM sessions")
}

fn keys(n: i64) -> Vec<String> {
    (1..=n).map(|id| format!("session:{id}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warms_ten_thousand_rows_into_l1_and_redis() {
    let (_pg, pool) = setup(10_000).await;
    let redis = TestRedis::new().await;
    let cache = support::cache(&redis, "warm").await;
    let warmer = Warmer::builder(cache.clone())
        .throttle_on_pool(&pool)
        .build()
        .unwrap();

    let summary = warmer.run(sessions(&pool)).await.unwrap();
    assert_eq!(summary.written, 10_000, "{summary:?}");
    assert_eq!(summary.total, Some(10_000));
    assert_eq!(
        (summary.errors, summary.failed_batches, summary.skipped),
        (0, 0, 0),
        "{summary:?}"
    );
    assert_eq!(summary.batches, 20, "500 rows a batch");
    assert!(!summary.cancelled);
    assert!(summary.rate_per_sec > 0.0);

    // Every key is an L1 hit: L1 hits grow by 10,000, misses do not.
    let keys = keys(10_000);
    let before = cache.stats();
    for (i, key) in keys.iter().enumerate() {
        let got: Option<Session> = cache.get(key).await.unwrap();
        assert_eq!(got, Some(Session::expected(i as i64 + 1)), "{key}");
    }
    let after = cache.stats();
    assert_eq!(after.l1.hits - before.l1.hits, 10_000);
    assert_eq!(after.l1.misses, before.l1.misses);
    assert_eq!(after.misses, before.misses);

    // Every key is in Redis with its TTL (the cache shortens TTLs by up to 10 % jitter).
    let redis_keys: Vec<String> = keys.iter().map(|k| cache.redis_key(k)).collect();
    let ttls = support::pttls(&redis.client(), &redis_keys).await;
    assert!(
        ttls.iter().all(|&t| t > 0 && t <= 3_600_000),
        "a key is missing or has no TTL: {:?}",
        ttls.iter().find(|&&t| t <= 0 || t > 3_600_000)
    );

    // Idempotent: a second run writes the same keys with the same values.
    let again = warmer.run(sessions(&pool)).await.unwrap();
    assert_eq!(again.written, 10_000);
    let pattern = format!("{}*", cache.namespace());
    assert_eq!(support::scan(&redis.client(), &pattern).await.len(), 10_000);
    let reader = support::cache(&redis, "warm").await;
    let values: Vec<Option<Session>> = reader.get_many(&keys).await.unwrap();
    for (i, v) in values.into_iter().enumerate() {
        assert_eq!(v, Some(Session::expected(i as i64 + 1)));
    }
    let reader_stats = reader.stats();
    assert_eq!(
        reader_stats.l2.as_ref().map(|l2| l2.hits),
        Some(10_000),
        "read from Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_parameters_and_counts_rows_that_do_not_map() {
    let (_pg, pool) = setup(300).await;
    let redis = TestRedis::new().await;
    let cache = support::cache(&redis, "params").await;
    let warmer = Warmer::builder(cache.clone())
        .batch_size(NonZeroUsize::new(64).unwrap())
        .build()
        .unwrap();
    let source = PostgresSource::new(
        pool.clone(),
        "SELECT id, user_id, token, data FROM sessions WHERE id <= $1 ORDER BY id;",
        |row: &Row| {
            let id: i64 = row.try_get(0)?;
            if id % 25 == 0 {
                return Err(format!("row {id} is not a session").into());
            }
            session_item(row).map_err(Into::<unite_warm::BoxError>::into)
        },
    )
    .param(200i64, Type::INT8)
    .total(200)
    .named("sessions");

    let summary = warmer.run(source).await.unwrap();
    assert_eq!(summary.source, "sessions");
    assert_eq!(summary.written, 192);
    assert_eq!(summary.errors, 8);
    assert_eq!(summary.batches, 4);
    assert_eq!(
        summary.failed_batches, 4,
        "rows 25..200 step 25 fall in all four batches"
    );
    assert!(
        summary
            .error_samples
            .iter()
            .any(|e| e == "row 50 is not a session"),
        "{:?}",
        summary.error_samples
    );
    let present = support::present(
        &redis.client(),
        &keys(300)
            .iter()
            .map(|k| cache.redis_key(k))
            .collect::<Vec<_>>(),
    )
    .await;
    for (i, p) in present.iter().enumerate() {
        let id = i as i64 + 1;
        assert_eq!(*p, id <= 200 && id % 25 != 0, "session:{id}");
    }
    // The connection went back to the pool with its transaction committed.
    let row = pool
        .query_typed_one("SHOW transaction_read_only", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_cannot_run_ends_with_a_source_error() {
    let (_pg, pool) = setup(10).await;
    let redis = TestRedis::new().await;
    let cache = support::cache(&redis, "fail").await;
    let source = PostgresSource::new(pool.clone(), "SELECT id FROM no_such_table", |row: &Row| {
        Ok::<_, unite_warm::tokio_postgres::Error>(WarmItem::new(
            row.try_get::<_, i64>(0)?.to_string(),
            0u8,
            HOUR,
        ))
    });
    let handle = Warmer::new(cache).spawn(source);
    let progress = handle.progress();
    let err = handle.wait().await.unwrap_err();
    let WarmError::Source { name, partial, .. } = &err else {
        panic!("expected a source error, got {err:?}");
    };
    assert_eq!(name, "postgres");
    assert_eq!(partial.written, 0);
    let message = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(message.contains("no_such_table"), "{message}");
    assert!(message.contains("query failed"), "{message}");
    assert_eq!(progress.borrow().phase, Phase::Failed);
    // The failed transaction did not leak: the pool's connections are usable and idle.
    for _ in 0..3 {
        let row = pool
            .query_typed_one("SHOW transaction_read_only", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "off");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_postgres_warm_up_releases_its_connection_cleanly() {
    let (_pg, pool) = setup(5_000).await;
    let redis = TestRedis::new().await;
    let cache = support::cache(&redis, "pgcancel").await;
    let warmer = Warmer::builder(cache.clone())
        .batch_size(NonZeroUsize::new(50).unwrap())
        .concurrency(NonZeroUsize::MIN)
        .max_items_per_second(std::num::NonZeroU32::new(5_000).unwrap())
        .build()
        .unwrap();
    let handle = warmer.spawn(sessions(&pool));
    let mut progress = handle.progress();
    progress.wait_for(|p| p.done > 0).await.unwrap();
    let summary = handle.cancel_and_wait().await.unwrap();
    assert!(summary.cancelled, "{summary:?}");
    assert!(summary.written < 5_000);
    let redis_keys: Vec<String> = keys(5_000).iter().map(|k| cache.redis_key(k)).collect();
    let present = support::present(&redis.client(), &redis_keys).await;
    assert_eq!(
        present.iter().filter(|p| **p).count() as u64,
        summary.written
    );
    // The cursor's connection was closed, not returned inside its read-only transaction.
    for _ in 0..3 {
        let row = pool
            .query_typed_one("SHOW transaction_read_only", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "off");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_while_the_pool_has_waiters() {
    let (_pg, pool) = setup(100).await;
    let redis = TestRedis::new().await;
    let cache = support::cache(&redis, "throttle").await;
    let busy = Pool::builder()
        .url(_pg.url())
        .max_size(1)
        .build()
        .await
        .unwrap();
    let warmer = Warmer::builder(cache.clone())
        .batch_size(NonZeroUsize::new(10).unwrap())
        .throttle_on_pool(&busy)
        .throttle_poll(Duration::from_millis(5))
        .build()
        .unwrap();

    // The busy pool's only connection is held, and a caller waits for it.
    let held = busy.get().await.unwrap();
    let waiter = tokio::spawn({
        let busy = busy.clone();
        async move {
            let conn = busy.get().await.unwrap();
            drop(conn);
        }
    });
    while busy.stats().waiters == 0 {
        tokio::task::yield_now().await;
    }

    let handle = warmer.spawn(sessions(&pool));
    let mut progress = handle.progress();
    let seen = progress
        .wait_for(|p| p.phase == Phase::Throttled)
        .await
        .unwrap()
        .clone();
    assert_eq!(seen.done, 0, "nothing is read while the pool has waiters");

    drop(held);
    waiter.await.unwrap();
    let summary = handle.wait().await.unwrap();
    assert_eq!(summary.written, 100);
    assert!(summary.throttled > Duration::ZERO);
}
