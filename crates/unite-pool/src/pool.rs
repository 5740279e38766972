//! The pool: checkouts and calls through the breaker, with statistics; the primary and the
//! read replicas are each a `Node`.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row, Transaction};
use unite_breaker::{CircuitBreaker, Permit};

use crate::manager::{ConnectFailures, Manager, PgConn};
use crate::replica::Replica;
use crate::stats::{Outcome, PoolState, Stats};
use crate::{Error, Lsn, PoolBuilder, PoolConfig, PoolStats, Reader, Session, Writer};

/// A Postgres connection pool whose every checkout and call passes through a circuit breaker.
///
/// Cheap to clone (an `Arc` inside); clones share the connections, the breakers and the
/// statistics. Build one with [`Pool::builder`] or [`Pool::connect`]; see the
/// [crate docs](crate) for an example.
///
/// The pool's own call methods ([`query`](Self::query), [`execute`](Self::execute),
/// [`transaction`](Self::transaction)…) go to the primary, as do those of
/// [`write`](Self::write). With read replicas configured, [`read`](Self::read) spreads reads
/// over the healthy ones, and a [`Session`] keeps one caller's reads consistent with its own
/// writes.
#[derive(Clone)]
pub struct Pool {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) config: PoolConfig,
    /// The primary: every write, and the reads no replica can take.
    pub(crate) primary: Node,
    /// The read replicas, each a node with its own breaker and statistics, and the state
    /// the lag monitor keeps for it.
    pub(crate) replicas: Vec<Arc<Replica>>,
    /// Round-robin position of the next read.
    next: AtomicUsize,
}

/// One database server: its connections, breaker and statistics.
pub(crate) struct Node {
    pub(crate) pool: bb8::Pool<Manager>,
    pub(crate) breaker: CircuitBreaker,
    pub(crate) stats: Stats,
    pub(crate) failures: ConnectFailures,
    pub(crate) checkout_timeout: Duration,
    pub(crate) query_timeout: Option<Duration>,
    pub(crate) health_timeout: Duration,
    pub(crate) max_size: u32,
    pub(crate) pgbouncer: bool,
    /// `SET LOCAL statement_timeout = …`, sent at the start of each transaction in PgBouncer
    /// mode when a statement timeout is set.
    pub(crate) set_local: Option<String>,
}

/// A call let through by the breaker, not yet settled.
pub(crate) struct Call {
    permit: Permit,
    start: Instant,
}

impl Node {
    pub(crate) fn admit(&self) -> Result<Call, Error> {
        match self.breaker.try_acquire() {
            Ok(permit) => Ok(Call {
                permit,
                start: Instant::now(),
            }),
            Err(rejected) => {
                self.stats.record_rejected();
                Err(Error::CircuitOpen {
                    retry_after: rejected.retry_after,
                })
            }
        }
    }

    fn settle(&self, call: Call, outcome: Outcome) {
        let elapsed = call.start.elapsed();
        call.permit.record(outcome == Outcome::Failure);
        self.stats.record(outcome, elapsed);
    }

    fn finish<T>(&self, call: Call, result: Result<T, Error>) -> Result<T, Error> {
        self.settle(call, outcome_of(&result));
        result
    }

    /// A connection from bb8. Fails at once when a connect attempt fails while waiting (the
    /// server is unreachable: waiting out the checkout timeout would tell nothing more).
    async fn checkout(&self) -> Result<bb8::PooledConnection<'static, Manager>, Error> {
        let _waiting = self.stats.waiting();
        let mut failures = self.failures.subscribe();
        let get = self.pool.get_owned();
        tokio::pin!(get);
        loop {
            tokio::select! {
                biased;
                got = &mut get => return self.checked_out(got),
                changed = failures.changed() => {
                    if changed.is_err() {
                        return self.checked_out(get.await);
                    }
                    if let Some(e) = failures.borrow_and_update().clone() {
                        return Err(Error::Connect(e));
                    }
                }
            }
        }
    }

    fn checked_out(
        &self,
        got: Result<
            bb8::PooledConnection<'static, Manager>,
            bb8::RunError<Arc<crate::ConnectError>>,
        >,
    ) -> Result<bb8::PooledConnection<'static, Manager>, Error> {
        match got {
            Ok(conn) => Ok(conn),
            Err(bb8::RunError::User(e)) => Err(Error::Connect(e)),
            Err(bb8::RunError::TimedOut) => {
                self.stats.record_checkout_timeout();
                Err(Error::CheckoutTimeout {
                    timeout: self.checkout_timeout,
                })
            }
        }
    }

    /// Admits, checks out, runs `op` under the query timeout, settles.
    async fn run<T, F>(&self, op: F) -> Result<T, Error>
    where
        F: AsyncFnOnce(&mut Client) -> Result<T, Error>,
    {
        let call = self.admit()?;
        let result = self.run_admitted(op).await;
        self.finish(call, result)
    }

    async fn run_admitted<T, F>(&self, op: F) -> Result<T, Error>
    where
        F: AsyncFnOnce(&mut Client) -> Result<T, Error>,
    {
        let mut pooled = self.checkout().await?;
        let conn: &mut PgConn = &mut pooled;
        match self.query_timeout {
            None => op(&mut conn.client).await,
            Some(limit) => {
                let result = tokio::time::timeout(limit, op(&mut conn.client)).await;
                result.unwrap_or_else(|_| {
                    conn.broken = true;
                    Err(Error::Timeout { timeout: limit })
                })
            }
        }
    }

    /// PgBouncer mode runs a call in a transaction when it has parameters (named statements
    /// are safe only inside one) or when a statement timeout must be set with `SET LOCAL`.
    fn wrap_in_transaction(&self, params: usize) -> bool {
        self.pgbouncer && (params > 0 || self.set_local.is_some())
    }

    async fn begin<'c>(&self, client: &'c mut Client) -> Result<Transaction<'c>, Error> {
        let tx = client.transaction().await?;
        if let Some(sql) = &self.set_local {
            tx.batch_execute(sql).await?;
        }
        Ok(tx)
    }

    pub(crate) fn pool_state(&self) -> PoolState {
        let state = self.pool.state();
        PoolState {
            size: state.connections,
            idle: state.idle_connections,
            max_size: self.max_size,
        }
    }

    pub(crate) fn refresh_gauges(&self) {
        self.stats.refresh_gauges(self.pool_state());
    }
}

fn outcome_of<T>(result: &Result<T, Error>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(e) => classify(e),
    }
}

fn classify(error: &Error) -> Outcome {
    if error.is_backend_failure() {
        Outcome::Failure
    } else {
        Outcome::CallerError
    }
}

pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];
pub(crate) type TypedParams<'a> = &'a [(&'a (dyn ToSql + Sync), Type)];

/// The primary's current insert position: at or past the end of every commit made so far,
/// flushed or not (so also right with `synchronous_commit = off`). `None` when it cannot be
/// read (a server in recovery, a lost connection): callers fall back to a time window.
async fn insert_lsn(client: &Client) -> Option<Lsn> {
    let messages = client
        .simple_query("SELECT pg_current_wal_insert_lsn(), current_setting('wal_block_size')")
        .await
        .ok()?;
    let row = crate::replica::first_row(&messages)?;
    let lsn: Lsn = row.get(0)?.parse().ok()?;
    let block_size = row.get(1).and_then(|s| s.parse::<u64>().ok());
    Some(block_size.map_or(lsn, |size| to_record_boundary(lsn, size)))
}

/// The insert position just after a page header, moved back to the page boundary.
///
/// When the insert position is at the start of a WAL page, Postgres reports it past the page
/// header (24 bytes, 40 on a segment's first page), while a replica that replayed every
/// record reports the end of the last one: the page boundary. Without this, an idle primary
/// would keep a session's reads on the primary until more WAL is written. It is safe: no
/// record can end within the first 40 bytes of a page except one that started on the page
/// before (a record is at least 24 bytes and starts after the header), and then no record
/// ends at the boundary itself, so "replayed up to the boundary" still means "replayed the
/// commit".
fn to_record_boundary(lsn: Lsn, block_size: u64) -> Lsn {
    const LONG_PAGE_HEADER: u64 = 40;
    if !block_size.is_power_of_two() || block_size < 1024 {
        return lsn;
    }
    let raw = lsn.as_u64();
    let offset = raw % block_size;
    if offset > 0 && offset <= LONG_PAGE_HEADER {
        Lsn::from_u64(raw - offset)
    } else {
        lsn
    }
}

// The calls themselves, shared by the pool, `Reader` and `Writer`. Each runs on a checked-out
// client of `node`.

pub(crate) async fn op_query(
    node: &Node,
    c: &mut Client,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, Error> {
    if node.wrap_in_transaction(params.len()) {
        let tx = node.begin(c).await?;
        let rows = tx.query(sql, params).await?;
        tx.commit().await?;
        Ok(rows)
    } else if params.is_empty() {
        Ok(c.query_typed(sql, &[]).await?)
    } else {
        Ok(c.query(sql, params).await?)
    }
}

pub(crate) async fn op_query_one(
    node: &Node,
    c: &mut Client,
    sql: &str,
    params: Params<'_>,
) -> Result<Row, Error> {
    if node.wrap_in_transaction(params.len()) {
        let tx = node.begin(c).await?;
        let row = tx.query_one(sql, params).await?;
        tx.commit().await?;
        Ok(row)
    } else if params.is_empty() {
        Ok(c.query_typed_one(sql, &[]).await?)
    } else {
        Ok(c.query_one(sql, params).await?)
    }
}

pub(crate) async fn op_query_opt(
    node: &Node,
    c: &mut Client,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, Error> {
    if node.wrap_in_transaction(params.len()) {
        let tx = node.begin(c).await?;
        let row = tx.query_opt(sql, params).await?;
        tx.commit().await?;
        Ok(row)
    } else if params.is_empty() {
        Ok(c.query_typed_opt(sql, &[]).await?)
    } else {
        Ok(c.query_opt(sql, params).await?)
    }
}

pub(crate) async fn op_execute(
    node: &Node,
    c: &mut Client,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, Error> {
    if node.wrap_in_transaction(params.len()) {
        let tx = node.begin(c).await?;
        let n = tx.execute(sql, params).await?;
        tx.commit().await?;
        Ok(n)
    } else if params.is_empty() {
        Ok(c.execute_typed(sql, &[]).await?)
    } else {
        Ok(c.execute(sql, params).await?)
    }
}

pub(crate) async fn op_query_typed(
    node: &Node,
    c: &mut Client,
    sql: &str,
    params: TypedParams<'_>,
) -> Result<Vec<Row>, Error> {
    if node.wrap_in_transaction(0) {
        let tx = node.begin(c).await?;
        let rows = tx.query_typed(sql, params).await?;
        tx.commit().await?;
        Ok(rows)
    } else {
        Ok(c.query_typed(sql, params).await?)
    }
}

pub(crate) async fn op_query_typed_one(
    node: &Node,
    c: &mut Client,
    sql: &str,
    params: TypedParams<'_>,
) -> Result<Row, Error> {
    if node.wrap_in_transaction(0) {
        let tx = node.begin(c).await?;
        let row = tx.query_typed_one(sql, params).await?;
        tx.commit().await?;
        Ok(row)
    } else {
        Ok(c.query_typed_one(sql, params).await?)
    }
}

pub(crate) async fn op_execute_typed(
    node: &Node,
    c: &mut Client,
    sql: &str,
    params: TypedParams<'_>,
) -> Result<u64, Error> {
    if node.wrap_in_transaction(0) {
        let tx = node.begin(c).await?;
        let n = tx.execute_typed(sql, params).await?;
        tx.commit().await?;
        Ok(n)
    } else {
        Ok(c.execute_typed(sql, params).await?)
    }
}

pub(crate) async fn op_batch_execute(c: &mut Client, sql: &str) -> Result<(), Error> {
    Ok(c.batch_execute(sql).await?)
}

/// A checked-out connection of a node.
pub(crate) type Pooled = bb8::PooledConnection<'static, Manager>;

impl Node {
    /// Runs `op` through the breaker, with statistics; with `track`, also reads the primary's
    /// log position after it, on the same connection.
    pub(crate) async fn call<T, F>(&self, track: bool, op: F) -> Result<(T, Option<Lsn>), Error>
    where
        F: AsyncFnOnce(&Node, &mut Client) -> Result<T, Error>,
    {
        self.run(async |c: &mut Client| {
            let value = op(self, c).await?;
            let lsn = if track { insert_lsn(c).await } else { None };
            Ok((value, lsn))
        })
        .await
    }

    /// [`call`](Self::call) without tracking.
    pub(crate) async fn plain<T, F>(&self, op: F) -> Result<T, Error>
    where
        F: AsyncFnOnce(&Node, &mut Client) -> Result<T, Error>,
    {
        self.call(false, op).await.map(|(value, _)| value)
    }

    pub(crate) async fn get(&self) -> Result<PooledConnection, Error> {
        let call = self.admit()?;
        let result = self.checkout().await.map(|conn| PooledConnection { conn });
        self.finish(call, result)
    }

    /// Admits and checks out, settling the call when the checkout fails: the part of a
    /// transaction a reader may still retry elsewhere.
    pub(crate) async fn start_transaction(&self) -> Result<(Call, Pooled), Error> {
        let call = self.admit()?;
        match self.checkout().await {
            Ok(conn) => Ok((call, conn)),
            Err(e) => {
                self.settle(call, classify(&e));
                Err(e)
            }
        }
    }

    /// The rest of a transaction: `BEGIN`, `f`, `COMMIT` or `ROLLBACK`, settled; with
    /// `track`, the primary's log position after the commit.
    pub(crate) async fn transaction_on<T, E, F>(
        &self,
        call: Call,
        mut pooled: Pooled,
        f: F,
        track: bool,
    ) -> Result<(T, Option<Lsn>), E>
    where
        F: AsyncFnOnce(&mut Transaction<'_>) -> Result<T, E>,
        E: From<Error>,
    {
        let conn: &mut PgConn = &mut pooled;
        let outcome = match self.query_timeout {
            None => run_transaction(self, &mut conn.client, f, track).await,
            Some(limit) => {
                let result =
                    tokio::time::timeout(limit, run_transaction(self, &mut conn.client, f, track))
                        .await;
                result.unwrap_or_else(|_| {
                    conn.broken = true;
                    TxOutcome::Pool(Error::Timeout { timeout: limit })
                })
            }
        };
        match outcome {
            TxOutcome::Done(value, lsn) => {
                self.settle(call, Outcome::Success);
                Ok((value, lsn))
            }
            TxOutcome::User { error, lost } => {
                let lost = lost || conn.client.is_closed();
                self.settle(
                    call,
                    if lost {
                        Outcome::Failure
                    } else {
                        Outcome::CallerError
                    },
                );
                Err(error)
            }
            TxOutcome::Pool(e) => {
                self.settle(call, classify(&e));
                Err(E::from(e))
            }
        }
    }

    pub(crate) async fn transaction<T, E, F>(
        &self,
        f: F,
        track: bool,
    ) -> Result<(T, Option<Lsn>), E>
    where
        F: AsyncFnOnce(&mut Transaction<'_>) -> Result<T, E>,
        E: From<Error>,
    {
        let (call, pooled) = self.start_transaction().await?;
        self.transaction_on(call, pooled, f, track).await
    }

    pub(crate) fn snapshot(&self) -> PoolStats {
        self.stats.snapshot(self.pool_state(), self.breaker.state())
    }
}

impl Pool {
    /// A [`PoolBuilder`] holding the default [`PoolConfig`].
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }

    /// Builds a pool from a whole config (see [`PoolBuilder::build`]).
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub async fn connect(config: PoolConfig) -> Result<Self, Error> {
        PoolBuilder::new().config(config).build().await
    }

    pub(crate) fn from_parts(config: PoolConfig, primary: Node, replicas: Vec<Replica>) -> Self {
        let shared = Arc::new(Shared {
            config,
            primary,
            replicas: replicas.into_iter().map(Arc::new).collect(),
            next: AtomicUsize::new(0),
        });
        spawn_gauge_refresher(Arc::downgrade(&shared));
        Self { shared }
    }

    fn node(&self) -> &Node {
        &self.shared.primary
    }

    pub(crate) fn primary(&self) -> &Node {
        &self.shared.primary
    }

    /// A replica that may take a read now (and, for a session, has replayed its writes),
    /// taken in turn; `None` sends the read to the primary.
    pub(crate) fn pick_replica(&self, session: Option<&Session>) -> Option<&Arc<Replica>> {
        let replicas = &self.shared.replicas;
        if replicas.is_empty() {
            return None;
        }
        let window = self.shared.config.replicas.read_your_writes_window;
        let start = self.shared.next.fetch_add(1, Ordering::Relaxed);
        (0..replicas.len())
            .map(|i| &replicas[start.wrapping_add(i) % replicas.len()])
            .find(|r| r.routable() && session.is_none_or(|s| s.allows(r, window)))
    }

    /// `true` when read replicas are configured.
    #[must_use]
    pub fn has_replicas(&self) -> bool {
        !self.shared.replicas.is_empty()
    }

    /// The handle for reads that may be served by a replica: each call goes to a healthy
    /// replica (in turn), or to the primary when none is healthy. A read that fails on a
    /// replica because of the backend is run again on the primary. Without replicas it is
    /// the primary.
    ///
    /// These reads may lag the primary by up to `replicas.max_lag`; use a [`Session`]
    /// ([`Pool::session`]) to read a caller's own writes, or [`write`](Self::write) for reads
    /// that must see the latest data.
    #[must_use]
    pub fn read(&self) -> Reader<'_> {
        Reader::new(self, None)
    }

    /// The handle for writes (and reads that must see the latest data): the primary. The
    /// same as the pool's own call methods; it names the intent at the call site.
    #[must_use]
    pub fn write(&self) -> Writer<'_> {
        Writer::new(self, None)
    }

    /// A new read-your-writes [`Session`] (see there): after a write through
    /// `session.write()`, `session.read()` stays on the primary until a replica has replayed
    /// it.
    #[must_use]
    pub fn session(&self) -> Session {
        Session::new(self.clone(), None)
    }

    /// A [`Session`] whose reads wait for a replica that has replayed `lsn` (a position an
    /// earlier session returned from [`Session::last_write`], carried in a cookie or a
    /// header across requests).
    #[must_use]
    pub fn session_after(&self, lsn: Lsn) -> Session {
        Session::new(self.clone(), Some(lsn))
    }

    /// The configuration the pool was built from.
    #[must_use]
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// The breaker guarding the primary (for its state, events, and operator actions such as
    /// `force_open`).
    #[must_use]
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.node().breaker
    }

    /// The breaker guarding the read replica at `index` (in configuration order), if there
    /// is one. Forcing it open takes the replica out of the read rotation.
    #[must_use]
    pub fn replica_breaker(&self, index: usize) -> Option<&CircuitBreaker> {
        self.shared.replicas.get(index).map(|r| &r.node.breaker)
    }

    /// A snapshot of the statistics (counters, latency percentiles, connections, breaker
    /// state) of the primary, and the state of each replica (lag, health, breaker), ready to
    /// serialize into a health document.
    #[must_use]
    pub fn stats(&self) -> PoolStats {
        let mut stats = self.node().snapshot();
        stats.replicas = self.shared.replicas.iter().map(|r| r.stats()).collect();
        stats
    }

    /// Checks out a connection to the primary.
    ///
    /// Calls made directly on the returned connection's [`Client`] are not seen by the
    /// breaker or the statistics (only the checkout is); prefer the pool's own
    /// [`query`](Self::query)… and [`transaction`](Self::transaction) methods. In PgBouncer
    /// mode, the client's `query(&str, params)` prepares a named statement: use
    /// `query_typed`, or a transaction, there.
    ///
    /// # Errors
    /// [`Error::CircuitOpen`] at once while the breaker is open; [`Error::CheckoutTimeout`]
    /// when no connection became free in time; [`Error::Connect`] when a new connection was
    /// needed and could not be opened.
    pub async fn get(&self) -> Result<PooledConnection, Error> {
        self.node().get().await
    }

    /// Runs a statement on the primary and returns its rows.
    ///
    /// A statement without parameters runs as one unnamed statement in one round trip. With
    /// parameters it is prepared and executed (in PgBouncer mode, inside a transaction).
    ///
    /// # Errors
    /// The checkout errors of [`get`](Self::get), [`Error::Timeout`] past `query_timeout`,
    /// [`Error::Backend`] for the database's and the driver's errors.
    pub async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        self.write().query(sql, params).await
    }

    /// Runs a statement that returns exactly one row.
    ///
    /// # Errors
    /// As [`query`](Self::query); a row count other than one is an [`Error::Backend`] that
    /// does not count against the breaker.
    pub async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, Error> {
        self.write().query_one(sql, params).await
    }

    /// Runs a statement that returns zero or one row.
    ///
    /// # Errors
    /// As [`query`](Self::query); more than one row is an [`Error::Backend`] that does not
    /// count against the breaker.
    pub async fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, Error> {
        self.write().query_opt(sql, params).await
    }

    /// Runs a statement and returns the number of rows it changed.
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, Error> {
        self.write().execute(sql, params).await
    }

    /// Runs a statement whose parameter types are given, as one unnamed statement in one
    /// round trip — the fast path behind PgBouncer (no named statement, no transaction
    /// needed).
    ///
    /// ```no_run
    /// # async fn demo(pool: &unite_pool::Pool) -> Result<(), unite_pool::Error> {
    /// use tokio_postgres::types::Type;
    /// let rows = pool.query_typed("SELECT $1::int4 + 1", &[(&41i32, Type::INT4)]).await?;
    /// assert_eq!(rows[0].get::<_, i32>(0), 42);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn query_typed(&self, sql: &str, params: TypedParams<'_>) -> Result<Vec<Row>, Error> {
        self.write().query_typed(sql, params).await
    }

    /// Like [`query_typed`](Self::query_typed), for a statement that returns exactly one row.
    ///
    /// # Errors
    /// As [`query_one`](Self::query_one).
    pub async fn query_typed_one(&self, sql: &str, params: TypedParams<'_>) -> Result<Row, Error> {
        self.write().query_typed_one(sql, params).await
    }

    /// Like [`query_typed`](Self::query_typed), returning the number of rows changed.
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn execute_typed(&self, sql: &str, params: TypedParams<'_>) -> Result<u64, Error> {
        self.write().execute_typed(sql, params).await
    }

    /// Runs one or more statements separated by `;` with the simple query protocol (no
    /// parameters, no prepared statement). In PgBouncer mode no statement timeout is applied
    /// to it (it would need session state).
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
        self.write().batch_execute(sql).await
    }

    /// Runs `f` in a transaction on the primary: committed when `f` returns `Ok`, rolled back
    /// when it returns `Err` (or when the returned future is dropped).
    ///
    /// ```no_run
    /// # async fn demo(pool: &unite_pool::Pool) -> Result<(), unite_pool::Error> {
    /// let id: i64 = pool
    ///     .transaction(async |tx| {
    ///         let row = tx.query_one("INSERT INTO contacts (name) VALUES ($1) RETURNING id", &[&"Ada"]).await?;
    ///         tx.execute("INSERT INTO audit (what) VALUES ('contact created')", &[]).await?;
    ///         Ok::<_, unite_pool::Error>(row.get(0))
    ///     })
    ///     .await?;
    /// # let _ = id; Ok(()) }
    /// ```
    ///
    /// `E` is any error a [`unite_pool::Error`](Error) converts into (so `?` works on the
    /// driver's errors inside `f` with `E = unite_pool::Error`). For the breaker and the
    /// statistics the call is a backend failure when the checkout, `BEGIN`, `COMMIT` or
    /// `ROLLBACK` failed that way, when `query_timeout` passed (it bounds the whole
    /// transaction), or when the connection was lost while `f` ran; an `Err` that `f` returns
    /// on a healthy connection is the caller's. In PgBouncer mode the transaction starts with
    /// `SET LOCAL statement_timeout` when a statement timeout is set.
    ///
    /// # Errors
    /// `f`'s error, or the pool's errors converted into `E`.
    pub async fn transaction<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut Transaction<'_>) -> Result<T, E>,
        E: From<Error>,
    {
        self.write().transaction(f).await
    }

    /// Checks the primary: a checkout and `SELECT 1`, within `health_timeout`, through the
    /// breaker. Returns the round-trip time. (Replicas are checked by the lag monitor; their
    /// state is in [`stats`](Self::stats).)
    ///
    /// # Errors
    /// [`Error::CircuitOpen`] while the breaker is open, [`Error::Timeout`] past
    /// `health_timeout`, or the checkout and database errors of [`query`](Self::query).
    pub async fn health(&self) -> Result<Duration, Error> {
        let node = self.node();
        let call = node.admit()?;
        let started = Instant::now();
        let limit = node.health_timeout;
        let deadline = tokio::time::Instant::from_std(started + limit);
        let result = async {
            let mut pooled = tokio::time::timeout_at(deadline, node.checkout())
                .await
                .map_err(|_| Error::Timeout { timeout: limit })??;
            let conn: &mut PgConn = &mut pooled;
            match tokio::time::timeout_at(deadline, conn.client.simple_query("SELECT 1")).await {
                Ok(answer) => answer.map(|_| started.elapsed()).map_err(Error::from),
                Err(_) => {
                    conn.broken = true;
                    Err(Error::Timeout { timeout: limit })
                }
            }
        }
        .await;
        node.finish(call, result)
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let node = self.node();
        f.debug_struct("Pool")
            .field("name", &self.shared.config.name)
            .field("circuit_state", &node.breaker.state())
            .field("state", &node.pool.state())
            .field("replicas", &self.shared.replicas.len())
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

enum TxOutcome<T, E> {
    Done(T, Option<Lsn>),
    User { error: E, lost: bool },
    Pool(Error),
}

async fn run_transaction<T, E, F>(
    node: &Node,
    client: &mut Client,
    f: F,
    track: bool,
) -> TxOutcome<T, E>
where
    F: AsyncFnOnce(&mut Transaction<'_>) -> Result<T, E>,
{
    let mut tx = match node.begin(client).await {
        Ok(tx) => tx,
        Err(e) => return TxOutcome::Pool(e),
    };
    match f(&mut tx).await {
        Ok(value) => match tx.commit().await {
            Ok(()) => {
                let lsn = if track {
                    insert_lsn(client).await
                } else {
                    None
                };
                TxOutcome::Done(value, lsn)
            }
            Err(e) => TxOutcome::Pool(e.into()),
        },
        Err(error) => {
            let lost = tx.rollback().await.is_err();
            TxOutcome::User { error, lost }
        }
    }
}

/// A connection checked out of a [`Pool`] (of the primary's connections, or a replica's
/// when it came from [`Reader::get`]); it derefs to the driver's [`Client`] and goes back to
/// the pool when dropped.
pub struct PooledConnection {
    conn: bb8::PooledConnection<'static, Manager>,
}

impl PooledConnection {
    /// Closes the connection instead of returning it to the pool: for a connection left in a
    /// state the next user must not inherit (a changed session setting, an abandoned
    /// `COPY`).
    pub fn discard(mut self) {
        self.conn.broken = true;
    }
}

impl Deref for PooledConnection {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.conn.client
    }
}

impl DerefMut for PooledConnection {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.conn.client
    }
}

impl fmt::Debug for PooledConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConnection")
            .field("closed", &self.conn.client.is_closed())
            .finish_non_exhaustive()
    }
}

fn spawn_gauge_refresher(shared: std::sync::Weak<Shared>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let Some(shared) = shared.upgrade() else {
                break;
            };
            shared.primary.refresh_gauges();
            for replica in &shared.replicas {
                replica.node.refresh_gauges();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_positions_after_a_page_header_move_back_to_the_boundary() {
        let at = |raw: u64| Lsn::from_u64(raw);
        // Short header (24 bytes) and long header (40 bytes) after an 8 KiB boundary.
        assert_eq!(to_record_boundary(at(0x0300_2018), 8192), at(0x0300_2000));
        assert_eq!(to_record_boundary(at(0x0400_0028), 8192), at(0x0400_0000));
        // Anywhere else in a page, and exact boundaries, stay.
        assert_eq!(to_record_boundary(at(0x0300_2030), 8192), at(0x0300_2030));
        assert_eq!(to_record_boundary(at(0x0300_2000), 8192), at(0x0300_2000));
        // A bigger page: 0x...2018 is mid-page there.
        assert_eq!(to_record_boundary(at(0x0300_2018), 32768), at(0x0300_2018));
        // A nonsense block size changes nothing.
        assert_eq!(to_record_boundary(at(0x0300_2018), 1000), at(0x0300_2018));
    }
}
