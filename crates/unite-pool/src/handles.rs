//! `Reader` and `Writer`, the read and write handles of a pool, and `Session`, which keeps
//! one caller's reads consistent with its own writes.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Row, Transaction};

use crate::pool::{
    Node, Params, TypedParams, op_batch_execute, op_execute, op_execute_typed, op_query,
    op_query_one, op_query_opt, op_query_typed, op_query_typed_one,
};
use crate::replica::Replica;
use crate::{Error, Lsn, Pool, PooledConnection};

/// Runs `$call` (an expression using the node `$n`) on a replica, or on the primary when
/// none qualifies or the replica failed; returns from the enclosing method. A macro rather
/// than a function taking an `AsyncFn(&Node)`: with such a closure, rustc cannot prove the
/// returned future `Send` (its higher-ranked lifetimes), and callers in axum handlers need
/// it to be.
macro_rules! route {
    ($reader:ident, $n:ident => $call:expr) => {{
        if let Some(replica) = $reader.pool.pick_replica($reader.session) {
            let $n: &Node = &replica.node;
            match $call.await {
                Ok(value) => return Ok(value),
                Err(e) => {
                    if !$reader.fall_back(replica, &e) {
                        return Err(e);
                    }
                }
            }
        }
        let $n: &Node = $reader.pool.primary();
        $call.await
    }};
}

/// Reads that a replica may serve: from [`Pool::read`] or [`Session::read`].
///
/// Each call goes to a healthy replica, taken in turn: one whose last lag check succeeded
/// with a lag within `replicas.max_lag`, on which no read has failed since, and whose breaker
/// is not open. With a session, the replica must also have replayed the session's last write.
/// When no replica qualifies the call goes to the primary. A call that fails on a replica
/// because of the backend (connection refused or lost, `query_timeout`, server shutting
/// down… see [`Error::is_backend_failure`]) takes the replica out of the rotation until the
/// monitor's next good check and runs again on the primary, so a replica going away costs
/// latency, not errors. Errors that are the caller's (a syntax error, a write refused by the
/// read-only replica) are returned as they are.
///
/// ```no_run
/// # async fn demo(pool: &unite_pool::Pool) -> Result<(), unite_pool::Error> {
/// let rows = pool.read().query("SELECT id, name FROM contacts WHERE owner = $1", &[&7i64]).await?;
/// # let _ = rows; Ok(()) }
/// ```
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    pool: &'a Pool,
    session: Option<&'a Session>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(pool: &'a Pool, session: Option<&'a Session>) -> Self {
        Self { pool, session }
    }

    /// Whether a replica's error sends the call to the primary (marking the replica failed
    /// when it was the backend's).
    fn fall_back(&self, replica: &Replica, error: &Error) -> bool {
        if error.is_circuit_open() {
            return true;
        }
        if error.is_backend_failure() {
            replica.mark_failed(error);
            tracing::debug!(
                pool = %self.pool.config().name,
                replica = %replica.name,
                error = %error,
                "read failed on a replica; running it on the primary"
            );
            return true;
        }
        false
    }

    /// Runs a read and returns its rows (see [`Pool::query`]).
    ///
    /// # Errors
    /// As [`Pool::query`], for the server that ran it last (the primary after a fallback).
    pub async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        route!(self, n => n.plain(async |n: &Node, c: &mut Client| op_query(n, c, sql, params).await))
    }

    /// Runs a read that returns exactly one row (see [`Pool::query_one`]).
    ///
    /// # Errors
    /// As [`Pool::query_one`].
    pub async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, Error> {
        route!(self, n => n.plain(async |n: &Node, c: &mut Client| op_query_one(n, c, sql, params).await))
    }

    /// Runs a read that returns zero or one row (see [`Pool::query_opt`]).
    ///
    /// # Errors
    /// As [`Pool::query_opt`].
    pub async fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, Error> {
        route!(self, n => n.plain(async |n: &Node, c: &mut Client| op_query_opt(n, c, sql, params).await))
    }

    /// Runs a read with typed parameters in one round trip (see [`Pool::query_typed`]).
    ///
    /// # Errors
    /// As [`Pool::query_typed`].
    pub async fn query_typed(&self, sql: &str, params: TypedParams<'_>) -> Result<Vec<Row>, Error> {
        route!(self, n => n.plain(async |n: &Node, c: &mut Client| op_query_typed(n, c, sql, params).await))
    }

    /// Like [`query_typed`](Self::query_typed), for exactly one row.
    ///
    /// # Errors
    /// As [`Pool::query_typed_one`].
    pub async fn query_typed_one(&self, sql: &str, params: TypedParams<'_>) -> Result<Row, Error> {
        route!(self, n => n.plain(async |n: &Node, c: &mut Client| op_query_typed_one(n, c, sql, params).await))
    }

    /// Checks out a connection to a replica (or to the primary, as for any read). Calls made
    /// on it are outside the breaker, the statistics and the fallback; a replica connection
    /// refuses writes (`25006 read_only_sql_transaction`).
    ///
    /// # Errors
    /// As [`Pool::get`], from the primary when no replica could give a connection.
    pub async fn get(&self) -> Result<PooledConnection, Error> {
        route!(self, n => n.get())
    }

    /// Runs `f` in a transaction on a replica (or the primary), as [`Pool::transaction`]
    /// (for several reads from one snapshot, start `f` with `SET TRANSACTION ISOLATION LEVEL
    /// REPEATABLE READ`). It falls back to the primary only when the replica could not give a
    /// connection (`f` runs once, so a failure while it runs is returned).
    ///
    /// # Errors
    /// `f`'s error, or the pool's errors converted into `E`.
    pub async fn transaction<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut Transaction<'_>) -> Result<T, E>,
        E: From<Error>,
    {
        if let Some(replica) = self.pool.pick_replica(self.session) {
            match replica.node.start_transaction().await {
                Ok((call, pooled)) => {
                    return replica
                        .node
                        .transaction_on(call, pooled, f, false)
                        .await
                        .map(|(value, _)| value);
                }
                Err(e) => {
                    if !self.fall_back(replica, &e) {
                        return Err(E::from(e));
                    }
                }
            }
        }
        self.pool
            .primary()
            .transaction(f, false)
            .await
            .map(|(value, _)| value)
    }
}

impl fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("pool", &self.pool.config().name)
            .field("session", &self.session)
            .finish()
    }
}

/// Writes, and reads that must see the latest data: the primary. From [`Pool::write`] (the
/// same as the pool's own call methods) or [`Session::write`], which also records each
/// write's log position so the session's reads can wait for it.
///
/// ```no_run
/// # async fn demo(pool: &unite_pool::Pool) -> Result<(), unite_pool::Error> {
/// pool.write().execute("UPDATE contacts SET name = $1 WHERE id = $2", &[&"Ada", &1i64]).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy)]
pub struct Writer<'a> {
    pool: &'a Pool,
    session: Option<&'a Session>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(pool: &'a Pool, session: Option<&'a Session>) -> Self {
        Self { pool, session }
    }

    /// The session to record writes in, when there is one and replicas to wait for.
    fn tracking(&self) -> Option<&'a Session> {
        self.session.filter(|_| self.pool.has_replicas())
    }

    fn record<T>(session: Option<&Session>, result: &Result<(T, Option<Lsn>), Error>) {
        let Some(session) = session else { return };
        match result {
            Ok((_, lsn)) => session.record(*lsn),
            // The write may have committed before the failure (a timeout, a lost
            // connection): wait out the window.
            Err(e) if e.is_backend_failure() => session.record(None),
            Err(_) => {}
        }
    }

    async fn call<T, F>(&self, op: F) -> Result<T, Error>
    where
        F: AsyncFnOnce(&Node, &mut Client) -> Result<T, Error>,
    {
        let session = self.tracking();
        let result = self.pool.primary().call(session.is_some(), op).await;
        Self::record(session, &result);
        result.map(|(value, _)| value)
    }

    /// Runs a statement on the primary and returns its rows (see [`Pool::query`]).
    ///
    /// # Errors
    /// As [`Pool::query`].
    pub async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        self.call(async |n: &Node, c: &mut Client| op_query(n, c, sql, params).await)
            .await
    }

    /// Runs a statement that returns exactly one row (see [`Pool::query_one`]).
    ///
    /// # Errors
    /// As [`Pool::query_one`].
    pub async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, Error> {
        self.call(async |n: &Node, c: &mut Client| op_query_one(n, c, sql, params).await)
            .await
    }

    /// Runs a statement that returns zero or one row (see [`Pool::query_opt`]).
    ///
    /// # Errors
    /// As [`Pool::query_opt`].
    pub async fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, Error> {
        self.call(async |n: &Node, c: &mut Client| op_query_opt(n, c, sql, params).await)
            .await
    }

    /// Runs a statement and returns the number of rows it changed (see [`Pool::execute`]).
    ///
    /// # Errors
    /// As [`Pool::execute`].
    pub async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, Error> {
        self.call(async |n: &Node, c: &mut Client| op_execute(n, c, sql, params).await)
            .await
    }

    /// Runs a statement with typed parameters in one round trip (see [`Pool::query_typed`]).
    ///
    /// # Errors
    /// As [`Pool::query_typed`].
    pub async fn query_typed(&self, sql: &str, params: TypedParams<'_>) -> Result<Vec<Row>, Error> {
        self.call(async |n: &Node, c: &mut Client| op_query_typed(n, c, sql, params).await)
            .await
    }

    /// Like [`query_typed`](Self::query_typed), for exactly one row.
    ///
    /// # Errors
    /// As [`Pool::query_typed_one`].
    pub async fn query_typed_one(&self, sql: &str, params: TypedParams<'_>) -> Result<Row, Error> {
        self.call(async |n: &Node, c: &mut Client| op_query_typed_one(n, c, sql, params).await)
            .await
    }

    /// Like [`query_typed`](Self::query_typed), returning the number of rows changed.
    ///
    /// # Errors
    /// As [`Pool::execute_typed`].
    pub async fn execute_typed(&self, sql: &str, params: TypedParams<'_>) -> Result<u64, Error> {
        self.call(async |n: &Node, c: &mut Client| op_execute_typed(n, c, sql, params).await)
            .await
    }

    /// Runs statements separated by `;` with the simple query protocol (see
    /// [`Pool::batch_execute`]).
    ///
    /// # Errors
    /// As [`Pool::batch_execute`].
    pub async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
        self.call(async |_: &Node, c: &mut Client| op_batch_execute(c, sql).await)
            .await
    }

    /// Runs `f` in a transaction on the primary (see [`Pool::transaction`]); in a session,
    /// the commit's log position is recorded.
    ///
    /// # Errors
    /// `f`'s error, or the pool's errors converted into `E`.
    pub async fn transaction<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut Transaction<'_>) -> Result<T, E>,
        E: From<Error>,
    {
        let session = self.tracking();
        let result = self.pool.primary().transaction(f, session.is_some()).await;
        match (session, &result) {
            (Some(session), Ok((_, lsn))) => session.record(*lsn),
            // `E` may hide a lost COMMIT reply (the commit may have happened): wait out the
            // read-your-writes window rather than risk a stale read.
            (Some(session), Err(_)) => session.record(None),
            (None, _) => {}
        }
        result.map(|(value, _)| value)
    }

    /// Checks out a connection to the primary (see [`Pool::get`]). Writes made on it are not
    /// seen by a session: call [`Session::mark_written`] after them.
    ///
    /// # Errors
    /// As [`Pool::get`].
    pub async fn get(&self) -> Result<PooledConnection, Error> {
        self.pool.primary().get().await
    }
}

impl fmt::Debug for Writer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("pool", &self.pool.config().name)
            .field("session", &self.session)
            .finish()
    }
}

/// What a session has written.
#[derive(Debug, Clone, Copy, Default)]
struct WriteMark {
    /// The furthest log position of its writes.
    lsn: Option<Lsn>,
    /// The last write whose position is unknown.
    unknown_since: Option<Instant>,
}

/// Read-your-writes for one caller (a request, a user, a job): after a write through
/// [`write`](Self::write), reads through [`read`](Self::read) go to the primary until a
/// replica has replayed that write (its log position, read on the primary right after it,
/// against each replica's replay position from the lag monitor), and to the replicas again
/// after that.
///
/// A write whose position could not be read (or one reported with
/// [`mark_written`](Self::mark_written)) keeps the reads on the primary for
/// `replicas.read_your_writes_window` instead. Without replicas a session costs nothing: no
/// position is read.
///
/// Cheap to clone; clones share the record of writes. To carry it across requests, send
/// [`last_write`](Self::last_write) to the client (it serializes as `"0/3000148"`) and
/// resume with [`Pool::session_after`].
///
/// ```no_run
/// # async fn demo(pool: &unite_pool::Pool) -> Result<(), unite_pool::Error> {
/// let session = pool.session();
/// session.write().execute("INSERT INTO contacts (name) VALUES ($1)", &[&"Ada"]).await?;
/// // Sees the insert, even if the replicas have not replayed it yet (then it reads the primary).
/// let row = session.read().query_one("SELECT count(*) FROM contacts WHERE name = $1", &[&"Ada"]).await?;
/// let token = session.last_write(); // Some("0/3000148"), for the next request
/// # let _ = (row, token); Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    pool: Pool,
    mark: Arc<Mutex<WriteMark>>,
}

impl Session {
    pub(crate) fn new(pool: Pool, lsn: Option<Lsn>) -> Self {
        Self {
            pool,
            mark: Arc::new(Mutex::new(WriteMark {
                lsn,
                unknown_since: None,
            })),
        }
    }

    fn mark(&self) -> WriteMark {
        *self.mark.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads that see this session's writes (see [`Reader`]).
    #[must_use]
    pub fn read(&self) -> Reader<'_> {
        Reader::new(&self.pool, Some(self))
    }

    /// Writes recorded in this session (see [`Writer`]).
    #[must_use]
    pub fn write(&self) -> Writer<'_> {
        Writer::new(&self.pool, Some(self))
    }

    /// The pool.
    #[must_use]
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The furthest log position of this session's writes (or the one it was resumed from).
    #[must_use]
    pub fn last_write(&self) -> Option<Lsn> {
        self.mark().lsn
    }

    /// Records a write made outside [`write`](Self::write) (on a raw connection, by another
    /// service): reads stay on the primary for `replicas.read_your_writes_window` from now.
    pub fn mark_written(&self) {
        self.record(None);
    }

    pub(crate) fn record(&self, lsn: Option<Lsn>) {
        let mut mark = self.mark.lock().unwrap_or_else(PoisonError::into_inner);
        match lsn {
            Some(lsn) => mark.lsn = Some(mark.lsn.map_or(lsn, |old| old.max(lsn))),
            None => mark.unknown_since = Some(Instant::now()),
        }
    }

    /// Whether `replica` may serve this session's reads.
    pub(crate) fn allows(&self, replica: &Replica, window: Duration) -> bool {
        let mark = self.mark();
        let replayed = mark
            .lsn
            .is_none_or(|lsn| replica.replay_lsn().is_some_and(|r| r >= lsn));
        let waited = mark.unknown_since.is_none_or(|t| t.elapsed() >= window);
        replayed && waited
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = self.mark();
        f.debug_struct("Session")
            .field("pool", &self.pool.config().name)
            .field("last_write", &mark.lsn)
            .field("unknown_write_at", &mark.unknown_since)
            .finish()
    }
}
