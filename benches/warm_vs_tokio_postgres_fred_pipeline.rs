//! Warming 1,000 and 10,000 session-like rows (~200-byte values) from Postgres into Redis and
//! L1, against the raw path in the same run: one tokio-postgres query, then one fred pipeline
//! of `SET … PX` with the same MessagePack payloads (no L1, no envelope, no invalidation).
//!
//! Needs the local Postgres and Redis (`scripts/services.sh up`).

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use fred::prelude::*;
use serde::{Deserialize, Serialize};
use tokio_postgres::types::Type;
use unite_cache::Cache;
use unite_pool::Pool;
use unite_testkit::{TestPostgres, TestRedis};
use unite_warm::{PostgresSource, WarmItem, Warmer};

const TTL: Duration = Duration::from_secs(3600);
const SQL: &str = "SELECT id, user_id, token, data FROM sessions WHERE id <= $1";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    id: i64,
    user_id: i64,
    token: String,
    data: String,
}

fn session(row: &tokio_postgres::Row) -> Result<Session, tokio_postgres::Error> {
    Ok(Session {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        token: row.try_get(2)?,
        data: row.try_get(3)?,
    })
}

struct Env {
    _pg: TestPostgres,
    redis: TestRedis,
    pool: Pool,
    raw_pg: tokio_postgres::Client,
    warmer: Warmer,
}

async fn setup() -> Env {
    let pg = TestPostgres::new().await;
    let redis = TestRedis::new().await;
    let raw_pg = pg.client().await;
    raw_pg
        .batch_execute(
            "CREATE TABLE sessions AS SELECT g::int8 AS id, (g % 97)::int8 AS user_id, \
             md5(g::text) AS token, repeat('s', 120) AS data FROM generate_series(1, 10000) AS g; \
             ALTER TABLE sessions ADD PRIMARY KEY (id); ANALYZE sessions",
        )
        .await
        .expect("table created");
    let pool = Pool::builder()
        .url(pg.url())
        .max_size(4)
        .min_idle(2)
        .build()
        .await
        .expect("pool");
    let cache = Cache::builder()
        .redis_url(redis.url())
        .namespace(format!("{}bench:", redis.prefix()))
        .command_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("cache");
    let warmer = Warmer::builder(cache)
        .throttle_on_pool(&pool)
        .build()
        .expect("warmer");
    Env {
        _pg: pg,
        redis,
        pool,
        raw_pg,
        warmer,
    }
}

async fn warm(env: &Env, n: i64) {
    let source = PostgresSource::new(env.pool.clone(), SQL, |row| {
        let s = session(row)?;
        Ok::<_, tokio_postgres::Error>(WarmItem::new(format!("session:{}", s.id), s, TTL))
    })
    .param(n, Type::INT8);
    let summary = env.warmer.run(source).await.expect("warm-up");
    assert_eq!(summary.written, u64::try_from(n).unwrap_or(0));
}

async fn raw(env: &Env, n: i64) {
    let rows = env.raw_pg.query(SQL, &[&n]).await.expect("query");
    let pipeline = env.redis.client().pipeline();
    let prefix = format!("{}raw:", env.redis.prefix());
    for row in &rows {
        let s = session(row).expect("row");
        let payload = rmp_serde::to_vec_named(&s).expect("encode");
        let _: () = pipeline
            .set(
                format!("{prefix}session:{}", s.id),
                payload,
                Some(Expiration::PX(3_600_000)),
                None,
                false,
            )
            .await
            .expect("queued");
    }
    let _: Vec<Value> = pipeline.all().await.expect("pipeline");
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let env = rt.block_on(setup());
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = c.benchmark_group("warm_sessions");
    for n in [1_000i64, 10_000] {
        group.throughput(Throughput::Elements(u64::try_from(n).unwrap_or(0)));
        group.bench_with_input(BenchmarkId::new("unite_warm", n), &n, |b, &n| {
            b.to_async(&rt).iter(|| warm(&env, n));
        });
        group.bench_with_input(BenchmarkId::new("raw_pg_fred_pipeline", n), &n, |b, &n| {
            b.to_async(&rt).iter(|| raw(&env, n));
        });
    }
    group.finish();
    c.final_summary();
    rt.block_on(async move { drop(env) });
}
