//! Span names and OpenTelemetry semantic-convention field names for the other Unite crates.
//!
//! Libraries only use `tracing`; the OpenTelemetry layer turns span fields into span
//! attributes under the same names. So the rule for a library is: name the span with one of
//! the [`spans`] constants and give it the fields below, declared up front
//! (`tracing::field::Empty` for what is known later). Constant field names go in braces:
//!
//! ```
//! use unite_telemetry::semconv::{self, spans};
//! use tracing::field::Empty;
//!
//! let span = tracing::info_span!(
//!     spans::POOL_QUERY,
//!     { semconv::OTEL_NAME } = semconv::db_span_name("SELECT", Some("contacts")),
//!     { semconv::OTEL_KIND } = semconv::KIND_CLIENT,
//!     { semconv::DB_SYSTEM_NAME } = semconv::DB_SYSTEM_POSTGRESQL,
//!     { semconv::DB_OPERATION_NAME } = "SELECT",
//!     { semconv::DB_COLLECTION_NAME } = "contacts",
//!     { semconv::SERVER_ADDRESS } = "db.internal",
//!     { semconv::SERVER_PORT } = 5432,
//!     { semconv::ERROR_TYPE } = Empty,
//!     { semconv::OTEL_STATUS_CODE } = Empty,
//! );
//! // on failure:
//! semconv::record_error(&span, "timeout");
//! ```
//!
//! | operation | span name | fields |
//! |---|---|---|
//! | Postgres query | [`spans::POOL_QUERY`] | `db.system.name` = `postgresql`, `db.operation.name` (`SELECT`…), `db.collection.name` (table), `db.namespace` (database), `db.query.summary` (`SELECT contacts`), `server.address`, `server.port`, `error.type` |
//! | pool checkout | [`spans::POOL_CHECKOUT`] | `db.system.name`, `db.namespace`, `server.address`, `error.type` |
//! | cache operation | [`spans::CACHE_GET`], [`spans::CACHE_SET`], [`spans::CACHE_DELETE`] | `unite.cache.layer` (`l1`/`l2`), `unite.cache.result` (`hit`/`miss`), and for Redis: `db.system.name` = `redis`, `db.operation.name` (`GET`, `MGET`…), `db.namespace` (database index), `server.address`, `server.port` |
//! | cache-aside load | [`spans::CACHE_LOAD`] | `unite.cache.coalesced` (bool), `error.type` |
//! | rate-limit decision | [`spans::RATELIMIT_CHECK`] | `unite.ratelimit.tier`, `unite.ratelimit.result` (`allowed`/`limited`/`blocked`), `unite.ratelimit.store` (`local`/`redis`) |
//! | breaker call | (the caller's span) | `unite.breaker.name`, `unite.breaker.state` |
//! | HTTP request | `request` (the correlation layer) | `http.request.method`, `url.path`, `http.route`, `http.response.status_code` |
//!
//! Never put keys, user ids or query text with values in span fields that end up in logs
//! and traces: `db.query.summary` is the operation and table, not the SQL.

/// Span names (use them as the name in `tracing::info_span!(spans::…, …)`).
pub mod spans {
    /// One query through the Postgres pool.
    pub const POOL_QUERY: &str = "pool.query";
    /// Waiting for and checking out a pooled connection.
    pub const POOL_CHECKOUT: &str = "pool.checkout";
    /// A cache read (any layer).
    pub const CACHE_GET: &str = "cache.get";
    /// A cache write.
    pub const CACHE_SET: &str = "cache.set";
    /// A cache delete / invalidation.
    pub const CACHE_DELETE: &str = "cache.delete";
    /// A cache-aside loader call.
    pub const CACHE_LOAD: &str = "cache.load";
    /// A rate-limit decision.
    pub const RATELIMIT_CHECK: &str = "ratelimit.check";
    /// A cache-warming run.
    pub const WARM_RUN: &str = "warm.run";
}

/// Overrides the OpenTelemetry span name (a `String` or `&str` field).
pub const OTEL_NAME: &str = "otel.name";
/// The OpenTelemetry span kind: [`KIND_CLIENT`], [`KIND_SERVER`], [`KIND_INTERNAL`]…
pub const OTEL_KIND: &str = "otel.kind";
/// The OpenTelemetry span status: `OK` or `ERROR`.
pub const OTEL_STATUS_CODE: &str = "otel.status_code";
/// The OpenTelemetry status description (with [`OTEL_STATUS_CODE`] = `ERROR`).
pub const OTEL_STATUS_DESCRIPTION: &str = "otel.status_description";

/// Span kind of an outgoing call (database, cache).
pub const KIND_CLIENT: &str = "client";
/// Span kind of a served request.
pub const KIND_SERVER: &str = "server";
/// Span kind of in-process work.
pub const KIND_INTERNAL: &str = "internal";

/// `db.system.name`: the database product.
pub const DB_SYSTEM_NAME: &str = "db.system.name";
/// Value of [`DB_SYSTEM_NAME`] for Postgres.
pub const DB_SYSTEM_POSTGRESQL: &str = "postgresql";
/// Value of [`DB_SYSTEM_NAME`] for Redis.
pub const DB_SYSTEM_REDIS: &str = "redis";
/// `db.operation.name`: `SELECT`, `INSERT`, `GET`, `EVALSHA`…
pub const DB_OPERATION_NAME: &str = "db.operation.name";
/// `db.collection.name`: the table.
pub const DB_COLLECTION_NAME: &str = "db.collection.name";
/// `db.namespace`: the database name (Postgres) or index (Redis).
pub const DB_NAMESPACE: &str = "db.namespace";
/// `db.query.summary`: low-cardinality summary such as `SELECT contacts`.
pub const DB_QUERY_SUMMARY: &str = "db.query.summary";
/// `db.response.status_code`: the SQLSTATE or Redis error prefix.
pub const DB_RESPONSE_STATUS_CODE: &str = "db.response.status_code";
/// `server.address`: host name of the backend.
pub const SERVER_ADDRESS: &str = "server.address";
/// `server.port`: port of the backend.
pub const SERVER_PORT: &str = "server.port";
/// `error.type`: a low-cardinality error class (`timeout`, `circuit_open`, a SQLSTATE…).
pub const ERROR_TYPE: &str = "error.type";

/// `http.request.method`.
pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
/// `http.route`: the route template.
pub const HTTP_ROUTE: &str = "http.route";
/// `http.response.status_code`.
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
/// `url.path`.
pub const URL_PATH: &str = "url.path";

/// Cache layer of the operation: `l1` or `l2`.
pub const UNITE_CACHE_LAYER: &str = "unite.cache.layer";
/// Cache result: `hit` or `miss`.
pub const UNITE_CACHE_RESULT: &str = "unite.cache.result";
/// Whether a cache-aside load waited for another caller's load.
pub const UNITE_CACHE_COALESCED: &str = "unite.cache.coalesced";
/// Rate-limit tier.
pub const UNITE_RATELIMIT_TIER: &str = "unite.ratelimit.tier";
/// Rate-limit result: `allowed`, `limited`, `blocked`.
pub const UNITE_RATELIMIT_RESULT: &str = "unite.ratelimit.result";
/// Where the decision was taken: `local` or `redis`.
pub const UNITE_RATELIMIT_STORE: &str = "unite.ratelimit.store";
/// Name of a circuit breaker.
pub const UNITE_BREAKER_NAME: &str = "unite.breaker.name";
/// State of a circuit breaker: `closed`, `open`, `half_open`.
pub const UNITE_BREAKER_STATE: &str = "unite.breaker.state";

/// The span name the database conventions ask for: `"{operation} {target}"`, or the
/// operation alone.
///
/// ```
/// assert_eq!(unite_telemetry::semconv::db_span_name("SELECT", Some("contacts")), "SELECT contacts");
/// assert_eq!(unite_telemetry::semconv::db_span_name("PING", None), "PING");
/// ```
#[must_use]
pub fn db_span_name(operation: &str, target: Option<&str>) -> String {
    match target {
        Some(target) if !target.is_empty() => {
            let mut s = String::with_capacity(operation.len() + 1 + target.len());
            s.push_str(operation);
            s.push(' ');
            s.push_str(target);
            s
        }
        _ => operation.to_owned(),
    }
}

/// Marks `span` as failed: `otel.status_code = "ERROR"` and `error.type = error_type`.
/// Both fields must have been declared on the span (as `Empty`), or `tracing` ignores them.
pub fn record_error(span: &tracing::Span, error_type: &str) {
    span.record(OTEL_STATUS_CODE, "ERROR");
    span.record(ERROR_TYPE, error_type);
}
