//! The pool builder.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use tokio::sync::watch;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;
use unite_breaker::CircuitBreaker;

use crate::manager::{LogSink, Manager};
use crate::pool::Node;
use crate::replica::{Monitor, Replica, spawn_monitor};
use crate::stats::Stats;
use crate::{
    BreakerConfig, DatabaseUrl, Error, Pool, PoolConfig, ReplicasConfig, TlsConfig, TlsMode,
};

/// Builds a [`Pool`]; start with [`Pool::builder`]. Every setter overrides one field of the
/// [`PoolConfig`] (see there for defaults); nothing is checked before [`build`](Self::build).
#[must_use = "a builder does nothing until `build` is called"]
#[derive(Default)]
pub struct PoolBuilder {
    config: PoolConfig,
    url_error: Option<Error>,
    replica_error: Option<Error>,
    breaker: Option<CircuitBreaker>,
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `PoolConfig`'s Debug shows the URL with its password redacted.
        f.debug_struct("PoolBuilder")
            .field("config", &self.config)
            .field("url_error", &self.url_error)
            .field("replica_error", &self.replica_error)
            .field("breaker", &self.breaker)
            .finish()
    }
}

impl PoolBuilder {
    /// A builder holding the default [`PoolConfig`] (no URL yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from a whole config (setters called afterwards override single fields).
    pub fn config(mut self, config: PoolConfig) -> Self {
        self.config = config;
        self
    }

    /// The primary's connection string. A string that does not parse makes
    /// [`build`](Self::build) fail naming `url` (the message never repeats the string).
    pub fn url(mut self, url: impl AsRef<str>) -> Self {
        match DatabaseUrl::parse(url.as_ref()) {
            Ok(url) => {
                self.config.url = Some(url);
                self.url_error = None;
            }
            Err(e) => {
                self.config.url = None;
                self.url_error = Some(e);
            }
        }
        self
    }

    /// The primary's connection string, already parsed.
    pub fn database_url(mut self, url: DatabaseUrl) -> Self {
        self.config.url = Some(url);
        self.url_error = None;
        self
    }

    /// Label of the breaker, metrics and logs.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Most connections open at once.
    pub fn max_size(mut self, max_size: u32) -> Self {
        self.config.max_size = max_size;
        self
    }

    /// Idle connections kept open.
    pub fn min_idle(mut self, min_idle: u32) -> Self {
        self.config.min_idle = min_idle;
        self
    }

    /// Bound on opening one connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Bound on waiting for a free connection.
    pub fn checkout_timeout(mut self, timeout: Duration) -> Self {
        self.config.checkout_timeout = timeout;
        self
    }

    /// Server-side `statement_timeout` (`None` = the server's default).
    pub fn statement_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.statement_timeout = timeout.into();
        self
    }

    /// Client-side bound on each call after checkout (`None` = unbounded).
    pub fn query_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.query_timeout = timeout.into();
        self
    }

    /// Bound on [`Pool::health`].
    pub fn health_timeout(mut self, timeout: Duration) -> Self {
        self.config.health_timeout = timeout;
        self
    }

    /// Idle connections beyond `min_idle` are closed after this (`None` = never).
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.idle_timeout = timeout.into();
        self
    }

    /// Connections are closed after this age (`None` = never).
    pub fn max_lifetime(mut self, lifetime: impl Into<Option<Duration>>) -> Self {
        self.config.max_lifetime = lifetime.into();
        self
    }

    /// `application_name` sent at start-up.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.config.application_name = Some(name.into());
        self
    }

    /// The TLS settings.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.config.tls = tls;
        self
    }

    /// The TLS mode.
    pub fn tls_mode(mut self, mode: TlsMode) -> Self {
        self.config.tls.mode = mode;
        self
    }

    /// PEM file of the certificate authorities `verify-full` trusts.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.tls.ca_file = Some(path.into());
        self
    }

    /// PgBouncer transaction-pooling mode.
    pub fn pgbouncer(mut self, enabled: bool) -> Self {
        self.config.pgbouncer = enabled;
        self
    }

    /// Check connections with an empty query at checkout.
    pub fn test_on_checkout(mut self, enabled: bool) -> Self {
        self.config.test_on_checkout = enabled;
        self
    }

    /// The settings of the breaker the pool builds.
    pub fn breaker_config(mut self, breaker: BreakerConfig) -> Self {
        self.config.breaker = breaker;
        self
    }

    /// Adds a read replica's connection string. A string that does not parse makes
    /// [`build`](Self::build) fail naming `replicas.urls` (the message never repeats the
    /// string).
    pub fn replica(mut self, url: impl AsRef<str>) -> Self {
        match DatabaseUrl::parse(url.as_ref()) {
            Ok(url) => self.config.replicas.urls.push(url),
            Err(e) => {
                if self.replica_error.is_none() {
                    let reason = match e {
                        Error::Config { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    self.replica_error = Some(Error::config("replicas.urls", reason));
                }
            }
        }
        self
    }

    /// Adds a read replica's connection string, already parsed.
    pub fn replica_database_url(mut self, url: DatabaseUrl) -> Self {
        self.config.replicas.urls.push(url);
        self
    }

    /// All the replica settings at once (replaces the replicas added before).
    pub fn replicas(mut self, replicas: ReplicasConfig) -> Self {
        self.config.replicas = replicas;
        self.replica_error = None;
        self
    }

    /// A replica further behind than this is skipped (default 100 ms).
    pub fn max_replica_lag(mut self, lag: Duration) -> Self {
        self.config.replicas.max_lag = lag;
        self
    }

    /// How often replication lag is measured (default 250 ms).
    pub fn replica_check_interval(mut self, interval: Duration) -> Self {
        self.config.replicas.check_interval = interval;
        self
    }

    /// How long a session's reads stay on the primary after a write of unknown log position
    /// (default 1 s).
    pub fn read_your_writes_window(mut self, window: Duration) -> Self {
        self.config.replicas.read_your_writes_window = window;
        self
    }

    /// Uses this breaker (built elsewhere: shared, or with a `ManualClock` in tests) instead
    /// of building one from the breaker settings.
    pub fn breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Validates the config, sets up TLS and builds the pool. With `min_idle` above 0 it opens
    /// those connections to the primary before returning; otherwise it connects nothing yet
    /// (call [`Pool::health`] to check the server). With read replicas it runs one lag check
    /// (each bounded by `health_timeout`; a replica that does not answer is only marked
    /// unhealthy) and starts the lag monitor. Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field at fault, [`Error::Tls`] when TLS cannot be set up,
    /// [`Error::Connect`] when the `min_idle` connections cannot be opened.
    pub async fn build(self) -> Result<Pool, Error> {
        if let Some(e) = self.url_error {
            return Err(e);
        }
        if let Some(e) = self.replica_error {
            return Err(e);
        }
        let config = self.config;
        config.validate()?;
        let url = config
            .url
            .as_ref()
            .ok_or_else(|| Error::config("url", "is missing"))?;
        let breaker = match self.breaker {
            Some(b) => b,
            None => config.breaker.build(&config.name)?,
        };
        let tls = crate::tls::connector(&config.tls)?;

        let (node, primary_connector) =
            build_node(&config, url, &tls, breaker, &config.name, true).await?;
        let mut replicas = Vec::with_capacity(config.replicas.urls.len());
        for (i, replica_url) in config.replicas.urls.iter().enumerate() {
            let name = format!("{}-replica-{i}", config.name);
            let breaker = config.breaker.build(&name)?;
            let (node, connector) =
                build_node(&config, replica_url, &tls, breaker, &name, false).await?;
            replicas.push(Replica::new(
                node,
                &config.name,
                name,
                replica_url.redacted().to_owned(),
                connector,
            ));
        }
        tracing::debug!(
            pool = %config.name,
            url = %url,
            replicas = replicas.len(),
            max_size = config.max_size,
            tls = %config.tls.mode,
            pgbouncer = config.pgbouncer,
            "database pool built"
        );
        let interval = config.replicas.check_interval;
        let has_replicas = !replicas.is_empty();
        let pool = Pool::from_parts(config, node, replicas);
        if has_replicas {
            let mut monitor = Monitor::new(primary_connector);
            monitor.tick(&pool.shared).await;
            spawn_monitor(monitor, Arc::downgrade(&pool.shared), interval);
        }
        Ok(pool)
    }
}

/// Builds one server's node, and a connector of its own for the lag monitor. Only the
/// primary opens `min_idle` connections at build (a replica that is down must not fail it).
async fn build_node(
    config: &PoolConfig,
    url: &DatabaseUrl,
    tls: &MakeRustlsConnect,
    breaker: CircuitBreaker,
    name: &str,
    primary: bool,
) -> Result<(Node, Manager), Error> {
    let mut pg = url.pg_config().clone();
    pg.connect_timeout(config.connect_timeout);
    pg.ssl_mode(match config.tls.mode {
        TlsMode::Disable => SslMode::Disable,
        TlsMode::Require | TlsMode::VerifyFull => SslMode::Require,
    });
    if let Some(app) = &config.application_name {
        pg.application_name(app);
    }
    let monitor_pg = pg.clone();
    let mut set_local = None;
    if let Some(timeout) = config.statement_timeout {
        let ms = millis_ceil(timeout);
        if config.pgbouncer {
            set_local = Some(format!("SET LOCAL statement_timeout = {ms}"));
        } else {
            let option = format!("-c statement_timeout={ms}");
            let options = match pg.get_options() {
                Some(existing) if !existing.trim().is_empty() => format!("{existing} {option}"),
                _ => option,
            };
            pg.options(options);
        }
    }

    let (failures, _) = watch::channel(None);
    let manager = Manager::new(pg, tls.clone(), config.connect_timeout, failures.clone());
    let builder = bb8::Pool::builder()
        .max_size(config.max_size)
        .min_idle((config.min_idle > 0).then_some(config.min_idle))
        .test_on_check_out(config.test_on_checkout)
        .max_lifetime(config.max_lifetime)
        .idle_timeout(config.idle_timeout)
        .connection_timeout(config.checkout_timeout)
        // A failed connect fails the waiting checkouts at once (and feeds the breaker)
        // rather than being retried quietly until the checkout timeout.
        .retry_connection(false)
        .error_sink(Box::new(LogSink {
            pool: name.to_owned(),
        }));
    let pool = if primary && config.min_idle > 0 {
        builder.build(manager).await.map_err(Error::Connect)?
    } else {
        builder.build_unchecked(manager)
    };
    let node = Node {
        pool,
        breaker,
        stats: Stats::new(name),
        failures,
        checkout_timeout: config.checkout_timeout,
        query_timeout: config.query_timeout,
        health_timeout: config.health_timeout,
        max_size: config.max_size,
        pgbouncer: config.pgbouncer,
        set_local,
    };
    let (monitor_failures, _) = watch::channel(None);
    let connector = Manager::new(
        monitor_pg,
        tls.clone(),
        config.connect_timeout,
        monitor_failures,
    );
    Ok((node, connector))
}

/// Whole milliseconds, rounded up (a sub-millisecond timeout still times out).
fn millis_ceil(d: Duration) -> u128 {
    d.as_nanos().div_ceil(1_000_000).max(1)
}

#[cfg(test)]
mod tests {
    use super::millis_ceil;
    use std::time::Duration;

    #[test]
    fn rounds_up_to_whole_milliseconds() {
        assert_eq!(millis_ceil(Duration::from_millis(200)), 200);
        assert_eq!(millis_ceil(Duration::from_micros(200_001)), 201);
        assert_eq!(millis_ceil(Duration::from_nanos(1)), 1);
    }
}
