//! A Postgres query, streamed through a server-side cursor.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};
use unite_cache::CacheValue;
use unite_pool::{Pool, PooledConnection};

use crate::BoxError;
use crate::source::{ItemFailure, OpenedSource, SourceContext, WarmBatch, WarmItem, WarmSource};

const CURSOR: &str = "unite_warm_cursor";

type RowMap<T> = Arc<dyn Fn(&Row) -> Result<WarmItem<T>, BoxError> + Send + Sync>;
type Param = (Box<dyn ToSql + Send + Sync>, Type);

/// Why the Postgres source failed: the step, and the database's (or the pool's) error.
#[derive(Debug, thiserror::Error)]
#[error("postgres source: {step} failed: {detail}")]
struct PgSourceError {
    step: &'static str,
    /// The cause and its sources, joined: the driver's own message is only "db error", the
    /// server's text is in its source.
    detail: String,
    #[source]
    cause: BoxError,
}

fn step_error(step: &'static str) -> impl FnOnce(BoxError) -> BoxError {
    move |cause| {
        let mut detail = cause.to_string();
        let mut next = cause.source();
        while let Some(e) = next {
            detail.push_str(": ");
            detail.push_str(&e.to_string());
            next = e.source();
        }
        Box::new(PgSourceError {
            step,
            detail,
            cause,
        })
    }
}

/// Warms from a Postgres query: each row is mapped to a (key, value, TTL) item.
///
/// The query runs through a server-side cursor in a read-only transaction on one connection
/// of the [`Pool`] (`DECLARE … NO SCROLL CURSOR`, then `FETCH batch_size` per batch), so at
/// most one batch of rows is in memory, and each `FETCH` is a statement of its own (a slow
/// or paused warm-up does not run into `statement_timeout`). Statements are unnamed, so it
/// works behind PgBouncer in transaction mode. The pool's `query_timeout`, when set, bounds
/// each step. The checkout passes through the pool's breaker; the statements on the
/// checked-out connection are not counted in the pool's statistics.
///
/// A row the mapping refuses is counted as that item's failure and the run goes on; a query
/// that cannot run (a missing table, a lost connection) fails the source. When the run is
/// cancelled mid-way the connection is closed rather than returned with an open
/// transaction.
///
/// ```no_run
/// # async fn demo(pool: unite_pool::Pool, cache: unite_cache::Cache) -> Result<(), unite_warm::WarmError> {
/// use std::time::Duration;
/// use unite_warm::{PostgresSource, WarmItem, Warmer};
///
/// let source = PostgresSource::new(
///     pool,
///     "SELECT id, name FROM contacts WHERE updated_at > now() - interval '1 day'",
///     |row| {
///         let id: i64 = row.try_get(0)?;
///         let name: String = row.try_get(1)?;
///         Ok::<_, tokio_postgres::Error>(WarmItem::new(format!("contact:{id}"), name, Duration::from_secs(600)))
///     },
/// )
/// .count_query("SELECT count(*) FROM contacts WHERE updated_at > now() - interval '1 day'");
/// let summary = Warmer::new(cache).run(source).await?;
/// println!("{} contacts warmed", summary.written);
/// # Ok(()) }
/// ```
#[must_use]
pub struct PostgresSource<T> {
    name: String,
    pool: Pool,
    sql: String,
    params: Vec<Param>,
    count_sql: Option<String>,
    total: Option<u64>,
    map: RowMap<T>,
}

impl<T> fmt::Debug for PostgresSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSource")
            .field("name", &self.name)
            .field("sql", &self.sql)
            .field("params", &self.params.len())
            .field("count_sql", &self.count_sql)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl<T: CacheValue> PostgresSource<T> {
    /// Rows of `sql` (a `SELECT`, without a trailing `;`), each mapped by `map`.
    pub fn new<F, E>(pool: Pool, sql: impl Into<String>, map: F) -> Self
    where
        F: Fn(&Row) -> Result<WarmItem<T>, E> + Send + Sync + 'static,
        E: Into<BoxError>,
    {
        Self {
            name: "postgres".to_owned(),
            pool,
            sql: sql.into(),
            params: Vec::new(),
            count_sql: None,
            total: None,
            map: Arc::new(move |row| map(row).map_err(Into::into)),
        }
    }

    /// Binds the next parameter (`$1`, `$2`… in order) with its type.
    pub fn param(mut self, value: impl ToSql + Send + Sync + 'static, ty: Type) -> Self {
        self.params.push((Box::new(value), ty));
        self
    }

    /// A query returning one `bigint` (`SELECT count(*) …`, without parameters) run first,
    /// so progress events carry a total.
    pub fn count_query(mut self, sql: impl Into<String>) -> Self {
        self.count_sql = Some(sql.into());
        self
    }

    /// The number of rows expected, when known without a query.
    pub fn total(mut self, total: u64) -> Self {
        self.total = Some(total);
        self
    }

    /// The name shown in logs, metrics and the summary. Default `"postgres"`.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    async fn count(&self, sql: &str) -> Result<u64, BoxError> {
        let row = self.pool.query_typed_one(sql, &[]).await?;
        let n: i64 = row.try_get(0)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// The cursor's connection: returned to the pool once the transaction is committed, closed
/// if dropped before (the transaction is still open).
struct CursorConn(Option<PooledConnection>);

impl Drop for CursorConn {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            conn.discard();
        }
    }
}

impl CursorConn {
    fn client(&self) -> Result<&PooledConnection, BoxError> {
        self.0
            .as_ref()
            .ok_or_else(|| "the cursor is already closed".into())
    }

    async fn step<R>(
        &self,
        step: &'static str,
        limit: Option<Duration>,
        fut: impl Future<Output = Result<R, tokio_postgres::Error>>,
    ) -> Result<R, BoxError> {
        let result = match limit {
            Some(limit) => tokio::time::timeout(limit, fut)
                .await
                .map_err(|_| format!("timed out after {limit:?} (query_timeout)"))?,
            None => fut.await,
        };
        result.map_err(|e| step_error(step)(Box::new(e)))
    }

    /// Commits and gives the connection back to the pool.
    async fn close(&mut self, limit: Option<Duration>) -> Result<(), BoxError> {
        let client = self.client()?;
        self.step("COMMIT", limit, client.batch_execute("COMMIT"))
            .await?;
        drop(self.0.take());
        Ok(())
    }
}

struct Cursor<T> {
    conn: CursorConn,
    map: RowMap<T>,
    fetch: String,
    batch_size: usize,
    limit: Option<Duration>,
    done: bool,
}

impl<T: CacheValue> Cursor<T> {
    async fn next_batch(&mut self) -> Option<Result<WarmBatch<T>, BoxError>> {
        if self.done {
            return None;
        }
        let rows = match self.fetch_rows().await {
            Ok(rows) => rows,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        if rows.len() < self.batch_size {
            // The last batch: end the transaction now rather than one round trip later.
            self.done = true;
            if let Err(e) = self.conn.close(self.limit).await {
                return Some(Err(e));
            }
            if rows.is_empty() {
                return None;
            }
        }
        let mut items = Vec::with_capacity(rows.len());
        let mut failures = Vec::new();
        for row in &rows {
            match (self.map)(row) {
                Ok(item) => items.push(item),
                Err(e) => failures.push(ItemFailure::new(None, e)),
            }
        }
        Some(Ok(WarmBatch::new(items).with_failures(failures)))
    }

    async fn fetch_rows(&self) -> Result<Vec<Row>, BoxError> {
        let client = self.conn.client()?;
        self.conn
            .step("FETCH", self.limit, client.query_typed(&self.fetch, &[]))
            .await
    }
}

impl<T: CacheValue> WarmSource<T> for PostgresSource<T> {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn open(self, ctx: SourceContext) -> Result<OpenedSource<T>, BoxError> {
        let total = match (&self.total, &self.count_sql) {
            (Some(n), _) => Some(*n),
            (None, Some(sql)) => Some(self.count(sql).await.map_err(step_error("count query"))?),
            (None, None) => None,
        };
        let limit = self.pool.config().query_timeout;
        let conn = self
            .pool
            .get()
            .await
            .map_err(|e| step_error("checkout")(Box::new(e)))?;
        let conn = CursorConn(Some(conn));
        let client = conn.client()?;
        conn.step("BEGIN", limit, client.batch_execute("BEGIN READ ONLY"))
            .await?;
        let sql = self.sql.trim().trim_end_matches(';');
        let declare = format!("DECLARE {CURSOR} NO SCROLL CURSOR FOR {sql}");
        let params: Vec<(&(dyn ToSql + Sync), Type)> = self
            .params
            .iter()
            .map(|(value, ty)| (&**value as &(dyn ToSql + Sync), ty.clone()))
            .collect();
        conn.step("query", limit, client.execute_typed(&declare, &params))
            .await?;
        let cursor = Cursor {
            conn,
            map: self.map,
            fetch: format!("FETCH FORWARD {} FROM {CURSOR}", ctx.batch_size),
            batch_size: ctx.batch_size.get(),
            limit,
            done: false,
        };
        let batches = futures::stream::unfold(cursor, |mut cursor| async move {
            let next = cursor.next_batch().await?;
            Some((next, cursor))
        })
        .boxed();
        Ok(OpenedSource::new(total, batches))
    }
}
