//! The bb8 connection manager: bb8-postgres's manager with a bound on each connect, failures
//! published to waiting checkouts, and connections that can be marked broken.

use std::sync::Arc;
use std::time::Duration;

use bb8_postgres::PostgresConnectionManager;
use tokio::sync::watch;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::ConnectError;

/// A pooled connection: the driver's client and whether the pool must drop it on return.
#[derive(Debug)]
pub(crate) struct PgConn {
    pub(crate) client: Client,
    /// Set when a call on it timed out: what the server will send next is unknown.
    pub(crate) broken: bool,
}

/// The latest connect failure, published to every checkout waiting at that moment.
pub(crate) type ConnectFailures = watch::Sender<Option<Arc<ConnectError>>>;

pub(crate) struct Manager {
    inner: PostgresConnectionManager<MakeRustlsConnect>,
    connect_timeout: Duration,
    failures: ConnectFailures,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The driver config's own Debug hides the password; print nothing of it anyway.
        f.debug_struct("Manager")
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl Manager {
    pub(crate) fn new(
        config: tokio_postgres::Config,
        tls: MakeRustlsConnect,
        connect_timeout: Duration,
        failures: ConnectFailures,
    ) -> Self {
        Self {
            inner: PostgresConnectionManager::new(config, tls),
            connect_timeout,
            failures,
        }
    }
}

impl bb8::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = Arc<ConnectError>;

    async fn connect(&self) -> Result<PgConn, Arc<ConnectError>> {
        let attempt = tokio::time::timeout(self.connect_timeout, self.inner.connect()).await;
        let error = match attempt {
            Ok(Ok(client)) => {
                return Ok(PgConn {
                    client,
                    broken: false,
                });
            }
            Ok(Err(e)) => ConnectError::from_pg(e),
            Err(_) => ConnectError::Timeout {
                timeout: self.connect_timeout,
            },
        };
        let error = Arc::new(error);
        self.failures.send_replace(Some(Arc::clone(&error)));
        Err(error)
    }

    async fn is_valid(&self, conn: &mut PgConn) -> Result<(), Arc<ConnectError>> {
        conn.client
            .simple_query("")
            .await
            .map(|_| ())
            .map_err(|e| Arc::new(ConnectError::Failed(e)))
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.broken || conn.client.is_closed()
    }
}

/// Logs what bb8 reports in the background (failed connects, connections that failed their
/// checkout test). Messages hold no password: connect errors never repeat the URL.
#[derive(Debug, Clone)]
pub(crate) struct LogSink {
    pub(crate) pool: String,
}

impl bb8::ErrorSink<Arc<ConnectError>> for LogSink {
    fn sink(&self, error: Arc<ConnectError>) {
        tracing::warn!(pool = %self.pool, error = %error, "database connection failed");
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<Arc<ConnectError>>> {
        Box::new(self.clone())
    }
}
