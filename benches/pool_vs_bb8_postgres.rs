//! unite-pool against a raw bb8-postgres pool (same size, same server, same runtime, calls
//! interleaved), and the cost of a call refused by the open breaker.
//!
//! Needs the Postgres at `DATABASE_URL` (default: the local server; `scripts/services.sh up`).

use std::hint::black_box;
use std::time::Duration;

mod common;
use common::paired::{Timed, Totals, paired};

use bb8_postgres::PostgresConnectionManager;
use criterion::{Criterion, criterion_group, criterion_main};
use tokio_postgres::NoTls;
use unite_pool::Pool;

const POOL_SIZE: u32 = 4;

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    }
}

fn checkout_and_select_1(c: &mut Criterion) {
    let rt = runtime();
    let url = unite_testkit::database_url();
    let (raw, pool) = rt.block_on(async {
        let manager = match PostgresConnectionManager::new_from_stringlike(&url, NoTls) {
            Ok(m) => m,
            Err(e) => panic!("DATABASE_URL does not parse: {e}"),
        };
        let raw = match bb8::Pool::builder()
            .max_size(POOL_SIZE)
            .connection_timeout(Duration::from_secs(5))
            .build(manager)
            .await
        {
            Ok(p) => p,
            Err(e) => panic!("raw pool: {e} ({})", unite_testkit::START_SERVICES_HINT),
        };
        let pool = match Pool::builder()
            .url(&url)
            .max_size(POOL_SIZE)
            .checkout_timeout(Duration::from_secs(5))
            .build()
            .await
        {
            Ok(p) => p,
            Err(e) => panic!("unite pool: {e}"),
        };
        // Open the connections of both pools before measuring.
        for _ in 0..POOL_SIZE {
            let c = raw.get().await.map(drop);
            let p = pool.query("SELECT 1", &[]).await.map(drop);
            if c.is_err() || p.is_err() {
                panic!("Postgres at DATABASE_URL does not answer");
            }
        }
        (raw, pool)
    });

    // The same work through each pool: a checkout, then the same driver call.
    let raw_get_query = || async {
        let conn = raw.get().await.ok();
        match &conn {
            Some(conn) => conn.query("SELECT 1", &[]).await.ok(),
            None => None,
        }
    };
    let unite_get_query = || async {
        let conn = pool.get().await.ok();
        match &conn {
            Some(conn) => conn.query("SELECT 1", &[]).await.ok(),
            None => None,
        }
    };
    // The pool's convenience call runs a parameterless statement as `query_typed` (one round
    // trip); its raw peer does the same.
    let raw_get_query_typed = || async {
        let conn = raw.get().await.ok();
        match &conn {
            Some(conn) => conn.query_typed("SELECT 1", &[]).await.ok(),
            None => None,
        }
    };
    let unite_query = || async { pool.query("SELECT 1", &[]).await.ok() };

    // The machine is shared and its load drifts: every benchmark runs the raw and the unite
    // call alternately and times one side; `Totals` keeps both sides for a paired ratio.
    let get_query = Totals::default();
    let query = Totals::default();
    let mut group = c.benchmark_group("checkout_select_1");
    group.bench_function("raw_bb8_postgres/get+query", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            paired(
                iters,
                Timed::Raw,
                raw_get_query,
                unite_get_query,
                &get_query,
            )
        });
    });
    group.bench_function("unite_pool/get+query", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            paired(
                iters,
                Timed::Unite,
                raw_get_query,
                unite_get_query,
                &get_query,
            )
        });
    });
    group.bench_function("raw_bb8_postgres/get+query_typed", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            paired(iters, Timed::Raw, raw_get_query_typed, unite_query, &query)
        });
    });
    group.bench_function("unite_pool/query", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            paired(
                iters,
                Timed::Unite,
                raw_get_query_typed,
                unite_query,
                &query,
            )
        });
    });
    group.finish();
    get_query.report("unite_pool/get+query vs raw_bb8_postgres/get+query");
    query.report("unite_pool/query vs raw_bb8_postgres/get+query_typed");
}

/// A checkout and its return alone, without the checkout test (no network): what the pool
/// adds on top of bb8 in CPU time.
fn checkout_only(c: &mut Criterion) {
    let rt = runtime();
    let url = unite_testkit::database_url();
    let (raw, pool) = rt.block_on(async {
        let manager = match PostgresConnectionManager::new_from_stringlike(&url, NoTls) {
            Ok(m) => m,
            Err(e) => panic!("DATABASE_URL does not parse: {e}"),
        };
        let raw = match bb8::Pool::builder()
            .max_size(POOL_SIZE)
            .test_on_check_out(false)
            .build(manager)
            .await
        {
            Ok(p) => p,
            Err(e) => panic!("raw pool: {e} ({})", unite_testkit::START_SERVICES_HINT),
        };
        let pool = match Pool::builder()
            .url(&url)
            .max_size(POOL_SIZE)
            .test_on_checkout(false)
            .build()
            .await
        {
            Ok(p) => p,
            Err(e) => panic!("unite pool: {e}"),
        };
        if raw.get().await.is_err() || pool.get().await.is_err() {
            panic!("Postgres at DATABASE_URL does not answer");
        }
        (raw, pool)
    });
    let raw_get = || async { raw.get().await.is_ok() };
    let unite_get = || async { pool.get().await.is_ok() };
    let totals = Totals::default();
    let mut group = c.benchmark_group("checkout_only");
    group.bench_function("raw_bb8_postgres/get", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| paired(iters, Timed::Raw, raw_get, unite_get, &totals));
    });
    group.bench_function("unite_pool/get", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| paired(iters, Timed::Unite, raw_get, unite_get, &totals));
    });
    group.finish();
    totals.report("unite_pool/get vs raw_bb8_postgres/get (no checkout test)");
}

fn rejection_while_open(c: &mut Criterion) {
    let rt = runtime();
    let pool = rt.block_on(async {
        // Never connects: the breaker is forced open before the first call.
        match Pool::builder()
            .url("postgres://bench@127.0.0.1:1/bench")
            .build()
            .await
        {
            Ok(p) => p,
            Err(e) => panic!("unite pool: {e}"),
        }
    });
    pool.breaker().force_open();
    let breaker = pool.breaker().clone();

    let mut group = c.benchmark_group("rejection_while_open");
    group.bench_function("unite_pool/query", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(pool.query("SELECT 1", &[]).await.is_err()) });
    });
    group.bench_function("unite_pool/get", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(pool.get().await.is_err()) });
    });
    group.bench_function("unite_breaker/try_acquire", |b| {
        b.iter(|| black_box(breaker.try_acquire().is_err()));
    });
    group.finish();
}

criterion_group!(
    benches,
    checkout_and_select_1,
    checkout_only,
    rejection_while_open
);
criterion_main!(benches);
