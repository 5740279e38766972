//! The crate's error type, and which errors count as backend failures for the breaker.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::{DbError, SqlState};

/// Everything that can go wrong in this crate.
///
/// Messages never contain SQL text, parameter values or passwords: a database error shows its
/// SQLSTATE (and a short description of well-known codes); the server's own message is on
/// [`source`](std::error::Error::source) / [`as_db_error`](Self::as_db_error) for whoever wants
/// it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The breaker refused the call without touching the database. Back off for `retry_after`
    /// (a fit value for a `Retry-After` header).
    #[error("the database circuit breaker is open; retry after {} ms", retry_after.as_millis())]
    CircuitOpen {
        /// How long until the breaker lets trial calls through.
        retry_after: Duration,
    },
    /// No connection became free within the checkout timeout (the pool is exhausted).
    #[error(
        "no database connection became free within the checkout timeout ({} ms)",
        timeout.as_millis()
    )]
    CheckoutTimeout {
        /// The checkout timeout that passed.
        timeout: Duration,
    },
    /// A checkout needed a new connection and opening it failed (refused, reset, timed out,
    /// TLS refused, authentication refused…).
    #[error("could not connect to the database: {0}")]
    Connect(#[source] Arc<ConnectError>),
    /// The database did not answer a call within the pool's `query_timeout` (or a health
    /// check within `health_timeout`). The connection was discarded.
    #[error("the database did not answer within {} ms", timeout.as_millis())]
    Timeout {
        /// The bound that passed.
        timeout: Duration,
    },
    /// The configuration was refused; `field` names the setting at fault.
    #[error("invalid pool config: `{field}` {reason}")]
    Config {
        /// The config field (serde name, dotted for nested fields), e.g. `"max_size"`,
        /// `"tls.ca_file"`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS could not be set up (no usable root certificates, rustls refused the settings).
    #[error("TLS setup failed: {0}")]
    Tls(#[source] TlsError),
    /// The database (or the driver) returned an error for a call.
    #[error("database error: {}", describe(.0))]
    Backend(#[source] tokio_postgres::Error),
}

impl Error {
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Config {
            field,
            reason: reason.into(),
        }
    }

    /// `true` when the error says the backend is unwell (and so counted as a failure by the
    /// breaker); `false` for errors that are the caller's doing. See
    /// [`is_backend_failure`](crate::is_backend_failure) for the rules.
    #[must_use]
    pub fn is_backend_failure(&self) -> bool {
        match self {
            Self::CheckoutTimeout { .. } | Self::Connect(_) | Self::Timeout { .. } => true,
            Self::Backend(e) => is_backend_failure(e),
            Self::CircuitOpen { .. } | Self::Config { .. } | Self::Tls(_) => false,
        }
    }

    /// `true` when the breaker refused the call.
    #[must_use]
    pub fn is_circuit_open(&self) -> bool {
        matches!(self, Self::CircuitOpen { .. })
    }

    /// How long to wait before retrying, when the breaker refused the call.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::CircuitOpen { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// The SQLSTATE of a database error.
    #[must_use]
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            Self::Backend(e) => e.code(),
            _ => None,
        }
    }

    /// The server's error (message, detail, constraint…) of a database error. It may hold
    /// SQL fragments and data values: treat it as sensitive.
    #[must_use]
    pub fn as_db_error(&self) -> Option<&DbError> {
        match self {
            Self::Backend(e) => e.as_db_error(),
            _ => None,
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Backend(e)
    }
}

/// Why a new connection could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The connection (TCP, TLS and start-up) was not ready within the connect timeout.
    #[error("no answer within the connect timeout ({} ms)", timeout.as_millis())]
    Timeout {
        /// The connect timeout.
        timeout: Duration,
    },
    /// The TLS handshake failed: untrusted certificate, name mismatch, protocol refused, or a
    /// server without TLS.
    #[error("TLS handshake failed: {}", chain(.0))]
    Tls(#[source] tokio_postgres::Error),
    /// Anything else: refused, reset, authentication or `pg_hba.conf` refusal, server
    /// shutting down…
    #[error("{}", chain(.0))]
    Failed(#[source] tokio_postgres::Error),
}

impl ConnectError {
    pub(crate) fn from_pg(e: tokio_postgres::Error) -> Self {
        if is_tls_error(&e) {
            Self::Tls(e)
        } else {
            Self::Failed(e)
        }
    }

    /// `true` for a TLS handshake failure.
    #[must_use]
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    /// The driver's error, unless the connect timed out.
    #[must_use]
    pub fn postgres_error(&self) -> Option<&tokio_postgres::Error> {
        match self {
            Self::Tls(e) | Self::Failed(e) => Some(e),
            Self::Timeout { .. } => None,
        }
    }
}

/// TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// `verify-full` without a CA file, and the operating system store gave no certificate.
    #[error("no trusted root certificate found in the operating system store ({reason})")]
    NoNativeRoots {
        /// What the loader reported.
        reason: String,
    },
    /// rustls refused the settings.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

/// `true` when `err` says the database is unwell rather than that the caller made a mistake.
///
/// Counted as backend failures (they feed the breaker):
/// - every error without a SQLSTATE except the driver's caller-side ones: I/O errors, a closed
///   connection, protocol errors, TLS and connect errors, timeouts;
/// - SQLSTATE class `08` (connection exception; but `08P01`, which a parameter-count mismatch
///   raises, is the caller's), `53` (insufficient resources: too many
///   connections, disk full, out of memory), `58` (system error, I/O error), `XX` (internal
///   error, corruption), and `57P01`–`57P05` (admin or crash shutdown, cannot connect now,
///   database dropped, idle session timeout).
///
/// Not counted (the database answered; the call was at fault): every other SQLSTATE — unique
/// and other constraint violations (class `23`), syntax and access errors (class `42`),
/// serialization failures and deadlocks (class `40`), lock timeouts (`55P03`), and
/// `57014 query_canceled`, which is what a `statement_timeout` raises: a statement that runs
/// past the budget the caller set is the statement's problem, and a server that is slow for
/// every call shows up in the breaker's slow-call rate instead. Also not counted: the driver's
/// parameter-serialization, column-decoding and row-count errors.
#[must_use]
pub fn is_backend_failure(err: &tokio_postgres::Error) -> bool {
    match err.code() {
        Some(code) => is_backend_sqlstate(code.code()),
        None => !is_caller_side_driver_error(err),
    }
}

fn is_backend_sqlstate(code: &str) -> bool {
    // 08P01 (protocol violation) is what a parameter-count mismatch raises: the caller's.
    let class = code.get(..2).unwrap_or("");
    (matches!(class, "08" | "53" | "58" | "XX") && code != "08P01") || code.starts_with("57P0")
}

/// The driver's errors that the caller causes (wrong parameter type or count, bad column,
/// unexpected row count). tokio-postgres exposes no error kind, so the kind is read from the
/// error's own one-line description (without its cause), which is fixed per kind.
fn is_caller_side_driver_error(err: &tokio_postgres::Error) -> bool {
    let text = err.to_string();
    const CALLER_KINDS: [&str; 5] = [
        "error serializing parameter",
        "error deserializing column",
        "invalid column",
        "query returned an unexpected number of",
        "expected ",
    ];
    CALLER_KINDS.iter().any(|k| text.starts_with(k))
}

fn is_tls_error(err: &tokio_postgres::Error) -> bool {
    if err.to_string() == "error performing TLS handshake" {
        return true;
    }
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if s.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// A short description of well-known SQLSTATEs, for messages.
fn sqlstate_description(code: &str) -> Option<&'static str> {
    Some(match code {
        "57014" => "query canceled: statement timeout or cancel request",
        "23505" => "unique violation",
        "23503" => "foreign key violation",
        "23502" => "not-null violation",
        "23514" => "check violation",
        "40001" => "serialization failure",
        "40P01" => "deadlock detected",
        "42601" => "syntax error",
        "42P01" => "undefined table",
        "42703" => "undefined column",
        "42501" => "insufficient privilege",
        "55P03" => "lock not available",
        "25P02" => "in failed transaction",
        "25006" => "read-only transaction",
        "53300" => "too many connections",
        "57P01" => "server shutting down (admin shutdown)",
        "57P02" => "server crashed (crash shutdown)",
        "57P03" => "server cannot accept connections now",
        "28P01" | "28000" => "authentication refused",
        _ => match code.get(..2)? {
            "08" => "connection exception",
            "53" => "insufficient resources",
            "58" => "system error",
            "XX" => "internal error",
            _ => return None,
        },
    })
}

/// The message of [`Error::Backend`]: SQLSTATE and a description, never the server's text.
fn describe(err: &tokio_postgres::Error) -> String {
    match err.code() {
        Some(code) => {
            let code = code.code();
            match sqlstate_description(code) {
                Some(d) => format!("SQLSTATE {code} ({d})"),
                None => format!("SQLSTATE {code}"),
            }
        }
        None => chain(err),
    }
}

/// An error and its sources on one line (for driver errors without a SQLSTATE: connection,
/// TLS and I/O errors, whose texts hold no SQL).
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            let _ = write!(out, ": {text}");
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_cross_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Error>();
        send_sync::<ConnectError>();
        send_sync::<crate::Pool>();
        send_sync::<crate::PooledConnection>();
        send_sync::<crate::PoolStats>();
        send_sync::<crate::Session>();
        send_sync::<crate::Reader<'static>>();
        send_sync::<crate::Writer<'static>>();
    }

    #[test]
    fn sqlstate_classes() {
        for code in [
            "08006", "08001", "53300", "53100", "57P01", "57P02", "57P03", "58030", "XX000",
        ] {
            assert!(
                is_backend_sqlstate(code),
                "{code} should be a backend failure"
            );
        }
        for code in [
            "23505", "42601", "42P01", "40001", "40P01", "57014", "55P03", "22012", "08P01",
        ] {
            assert!(!is_backend_sqlstate(code), "{code} should be the caller's");
        }
    }

    #[test]
    fn descriptions() {
        assert_eq!(
            sqlstate_description("57014"),
            Some("query canceled: statement timeout or cancel request")
        );
        assert_eq!(sqlstate_description("08003"), Some("connection exception"));
        assert_eq!(sqlstate_description("22012"), None);
    }

    #[test]
    fn classification_of_pool_errors() {
        assert!(
            Error::CheckoutTimeout {
                timeout: Duration::from_millis(5)
            }
            .is_backend_failure()
        );
        assert!(
            Error::Timeout {
                timeout: Duration::from_millis(5)
            }
            .is_backend_failure()
        );
        let open = Error::CircuitOpen {
            retry_after: Duration::from_millis(1500),
        };
        assert!(!open.is_backend_failure());
        assert!(open.is_circuit_open());
        assert_eq!(open.retry_after(), Some(Duration::from_millis(1500)));
        assert_eq!(
            open.to_string(),
            "the database circuit breaker is open; retry after 1500 ms"
        );
        assert!(!Error::config("max_size", "must be at least 1").is_backend_failure());
    }
}
