//! The typed pool configuration: database URL (password redacted), pool sizes, timeouts, TLS,
//! PgBouncer mode and breaker settings.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use tokio_postgres::config::{Host, SslMode};
use unite_breaker::{CircuitBreaker, Window};

use crate::Error;

/// A Postgres connection string (`postgres://user:password@host:port/db?…` or the
/// `key=value` form), parsed once. Its `Debug` and `Display` hide the password:
/// `postgres://app:***@db.internal:5432/app`.
#[derive(Clone)]
pub struct DatabaseUrl {
    config: tokio_postgres::Config,
    redacted: String,
}

impl DatabaseUrl {
    /// Parses a connection string.
    ///
    /// # Errors
    /// [`Error::Config`] with field `url` when it does not parse or names no user. The message
    /// never repeats the string.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let config = tokio_postgres::Config::from_str(url).map_err(|e| {
            Error::config(
                "url",
                format!("does not parse: {}", crate::error::chain(&e)),
            )
        })?;
        Self::from_config(config)
    }

    /// Wraps an already built driver config.
    ///
    /// # Errors
    /// [`Error::Config`] with field `url` when it names no user.
    pub fn from_config(config: tokio_postgres::Config) -> Result<Self, Error> {
        if config.get_user().is_none_or(str::is_empty) {
            return Err(Error::config("url", "names no user"));
        }
        let redacted = redact(&config);
        Ok(Self { config, redacted })
    }

    /// The URL with the password replaced by `***` (for logs and `config` commands).
    #[must_use]
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// `true` when the URL carries a password.
    #[must_use]
    pub fn has_password(&self) -> bool {
        self.config.get_password().is_some()
    }

    /// The parsed driver config (its own `Debug` also hides the password).
    #[must_use]
    pub fn pg_config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// `true` when at least one host is a TCP host name or address (what `verify-full`
    /// checks the certificate against).
    pub(crate) fn has_tcp_host(&self) -> bool {
        self.config
            .get_hosts()
            .iter()
            .any(|h| matches!(h, Host::Tcp(name) if !name.is_empty()))
    }
}

impl FromStr for DatabaseUrl {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl").field(&self.redacted).finish()
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `postgres://user[:***]@host[:port][,host[:port]…]/dbname`, built from the parsed parts so
/// nothing secret can slip through.
fn redact(config: &tokio_postgres::Config) -> String {
    let mut out = String::from("postgres://");
    if let Some(user) = config.get_user() {
        out.push_str(&percent_encode(user));
        if config.get_password().is_some() {
            out.push_str(":***");
        }
        out.push('@');
    }
    let hosts = config.get_hosts();
    let ports = config.get_ports();
    let mut parts = Vec::with_capacity(hosts.len());
    for (i, host) in hosts.iter().enumerate() {
        let mut part = match host {
            Host::Tcp(name) if name.contains(':') => format!("[{name}]"),
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => percent_encode(&path.to_string_lossy()),
        };
        let port = if ports.len() == hosts.len() {
            ports.get(i)
        } else {
            ports.first()
        };
        if let Some(port) = port {
            part.push(':');
            part.push_str(&port.to_string());
        }
        parts.push(part);
    }
    out.push_str(&parts.join(","));
    out.push('/');
    if let Some(db) = config.get_dbname() {
        out.push_str(&percent_encode(db));
    }
    out
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How connections are secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum TlsMode {
    /// Plaintext. The default, for local development; a server that accepts only TLS refuses
    /// the connection.
    #[default]
    Disable,
    /// TLS is required, but the server's certificate is **not verified**: this protects
    /// against passive eavesdropping only, not against an active man in the middle. Use
    /// `verify-full` wherever the network is not trusted.
    Require,
    /// TLS is required and the certificate must chain to a trusted root (the CA file if one
    /// is set, the operating system's store otherwise) and name the host connected to.
    VerifyFull,
}

impl TlsMode {
    /// `"disable"`, `"require"` or `"verify-full"` (the serde form too).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Require => "require",
            Self::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TlsMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "disable" => Ok(Self::Disable),
            "require" => Ok(Self::Require),
            "verify-full" => Ok(Self::VerifyFull),
            other => Err(Error::config(
                "tls.mode",
                format!("`{other}` is not one of disable, require, verify-full"),
            )),
        }
    }
}

/// TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// Disable (default), require, or verify-full.
    pub mode: TlsMode,
    /// PEM file of the certificate authorities trusted for `verify-full` (and only those);
    /// without it, the operating system's roots are used.
    pub ca_file: Option<PathBuf>,
}

impl TlsConfig {
    /// TLS settings with `mode` and no CA file.
    #[must_use]
    pub fn new(mode: TlsMode) -> Self {
        Self {
            mode,
            ca_file: None,
        }
    }

    /// Trusts the certificate authorities in the PEM file at `path`.
    #[must_use]
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }
}

/// Settings of the pool's circuit breaker (see `unite-breaker`). Ignored when a ready
/// breaker is given to [`PoolBuilder::breaker`](crate::PoolBuilder::breaker).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Open when this share of the window's calls failed (`0 < t <= 1`). Default `0.5`.
    pub failure_rate_threshold: f64,
    /// Open when this share of the window's calls were slow (`0 < t <= 1`). Default `1.0`.
    pub slow_call_rate_threshold: f64,
    /// A call slower than this is slow. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub slow_call_duration: Duration,
    /// The window holds the last this many calls. Default 20.
    pub window_size: u32,
    /// When set, the window holds the calls of this last duration instead of a count.
    #[serde(with = "humantime_serde")]
    pub window_duration: Option<Duration>,
    /// The window is judged only once it holds this many calls. Default 10.
    pub minimum_calls: u32,
    /// The first wait in Open. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub open_duration: Duration,
    /// The cap of the wait in Open as it doubles with repeated opens. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub max_open_duration: Duration,
    /// Trial calls let through in HalfOpen. Default 3.
    pub half_open_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 1.0,
            slow_call_duration: Duration::from_secs(60),
            window_size: 20,
            window_duration: None,
            minimum_calls: 10,
            open_duration: Duration::from_secs(5),
            max_open_duration: Duration::from_secs(60),
            half_open_calls: 3,
        }
    }
}

impl BreakerConfig {
    /// Builds a breaker named `name` from these settings.
    ///
    /// # Errors
    /// [`Error::Config`] with field `breaker` and the breaker's reason (which names its own
    /// setting).
    pub fn build(&self, name: &str) -> Result<CircuitBreaker, Error> {
        let window = match self.window_duration {
            Some(d) => Window::Time(d),
            None => Window::Count(self.window_size),
        };
        CircuitBreaker::builder()
            .name(name)
            .failure_rate_threshold(self.failure_rate_threshold)
            .slow_call_rate_threshold(self.slow_call_rate_threshold)
            .slow_call_duration(self.slow_call_duration)
            .window(window)
            .minimum_calls(self.minimum_calls)
            .open_duration(self.open_duration)
            .max_open_duration(self.max_open_duration)
            .half_open_calls(self.half_open_calls)
            .build()
            .map_err(|e| Error::config("breaker", e.to_string()))
    }
}

/// Read replicas: where they are, how far behind they may be, how often that is checked,
/// and how long a [`Session`](crate::Session)'s reads stay on the primary after a write whose
/// log position is unknown. Every other setting (sizes, timeouts, TLS, PgBouncer mode, breaker
/// settings) is the pool's, applied to each replica as to the primary.
///
/// ```
/// let config: unite_pool::PoolConfig = serde_json::from_str(r#"{
///     "url": "postgres://app:s3cret@db-primary:5432/app",
///     "replicas": {
///         "urls": ["postgres://app:s3cret@db-replica-1:5432/app"],
///         "max_lag": "250ms"
///     }
/// }"#).unwrap();
/// assert_eq!(config.replicas.urls.len(), 1);
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ReplicasConfig {
    /// The replicas' connection strings (their `Debug` hides the passwords). Default none:
    /// every read goes to the primary.
    pub urls: Vec<DatabaseUrl>,
    /// A replica further behind the primary than this is skipped (its reads go to the
    /// primary) until it catches up. A replica that has replayed the primary's current log
    /// position is at lag 0, however long the primary has been idle. Default 100 ms; 0 means
    /// "fully caught up at the last check".
    #[serde(with = "humantime_serde")]
    pub max_lag: Duration,
    /// How often the background monitor measures each replica's lag (one small query on the
    /// primary and one on each replica, on connections of its own). Default 250 ms.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// After a [`Session`](crate::Session) write whose log position could not be read (or a
    /// write it was told about with [`mark_written`](crate::Session::mark_written)), its
    /// reads stay on the primary this long. Writes with a known position keep reads on the
    /// primary until a replica has replayed it, with no time limit. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub read_your_writes_window: Duration,
}

impl Default for ReplicasConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            max_lag: Duration::from_millis(100),
            check_interval: Duration::from_millis(250),
            read_your_writes_window: Duration::from_secs(1),
        }
    }
}

fn default_name() -> String {
    "postgres".to_owned()
}
const fn default_max_size() -> u32 {
    10
}
const fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
const fn default_checkout_timeout() -> Duration {
    Duration::from_secs(5)
}
const fn default_health_timeout() -> Duration {
    Duration::from_secs(3)
}
#[expect(clippy::unnecessary_wraps, reason = "serde default of an Option field")]
const fn default_idle_timeout() -> Option<Duration> {
    Some(Duration::from_secs(600))
}
#[expect(clippy::unnecessary_wraps, reason = "serde default of an Option field")]
const fn default_max_lifetime() -> Option<Duration> {
    Some(Duration::from_secs(1800))
}
const fn default_true() -> bool {
    true
}

/// Everything a [`Pool`](crate::Pool) is built from. Read it from a file or the environment
/// with serde (durations as `"300ms"`, `"5s"`, `"10m"`), or set it through
/// [`Pool::builder`](crate::Pool::builder).
///
/// ```
/// let config: unite_pool::PoolConfig = serde_json::from_str(r#"{
///     "url": "postgres://app:s3cret@db.internal:5432/app",
///     "max_size": 20,
///     "checkout_timeout": "2s",
///     "statement_timeout": "30s",
///     "tls": { "mode": "verify-full", "ca_file": "/etc/ssl/db-ca.pem" }
/// }"#).unwrap();
/// assert_eq!(config.max_size, 20);
/// // The password never shows:
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PoolConfig {
    /// The primary's connection string. Required (build fails naming `url` without it).
    #[serde(default)]
    pub url: Option<DatabaseUrl>,
    /// Label of the breaker, the metrics (`pool` label) and logs. Default `"postgres"`.
    #[serde(default = "default_name")]
    pub name: String,
    /// Most connections open at once. Default 10.
    #[serde(default = "default_max_size")]
    pub max_size: u32,
    /// Idle connections kept open (`<= max_size`). Default 0. When above 0,
    /// [`build`](crate::PoolBuilder::build) opens them before returning.
    #[serde(default)]
    pub min_idle: u32,
    /// Bound on opening one connection (TCP, TLS, start-up, authentication). Default 5 s.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bound on waiting for a connection from the pool. Default 5 s.
    #[serde(default = "default_checkout_timeout", with = "humantime_serde")]
    pub checkout_timeout: Duration,
    /// Server-side bound on each statement (`statement_timeout`), sent in the start-up
    /// `options` (or with `SET LOCAL` per transaction in PgBouncer mode). Default none.
    #[serde(default, with = "humantime_serde")]
    pub statement_timeout: Option<Duration>,
    /// Client-side bound on each pool call after checkout (a query, or a whole
    /// [`transaction`](crate::Pool::transaction)); when it passes the call fails with
    /// [`Error::Timeout`] and the connection is discarded. It is what notices a server that
    /// went silent mid-call (a partition), which `statement_timeout` cannot. Default none.
    #[serde(default, with = "humantime_serde")]
    pub query_timeout: Option<Duration>,
    /// Bound on [`health`](crate::Pool::health) (checkout and `SELECT 1`). Default 3 s.
    #[serde(default = "default_health_timeout", with = "humantime_serde")]
    pub health_timeout: Duration,
    /// Idle connections beyond `min_idle` are closed after this long. Default 10 min.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// Connections are closed after this age. Default 30 min.
    #[serde(default = "default_max_lifetime", with = "humantime_serde")]
    pub max_lifetime: Option<Duration>,
    /// `application_name` sent at start-up (shown in `pg_stat_activity`). Default: the URL's.
    #[serde(default)]
    pub application_name: Option<String>,
    /// TLS settings. Default: disabled.
    #[serde(default)]
    pub tls: TlsConfig,
    /// PgBouncer transaction-pooling mode: no session state and no named prepared statements
    /// outside transactions (see the crate docs). Default false.
    #[serde(default)]
    pub pgbouncer: bool,
    /// Check each connection with an empty query when it is checked out. Default true.
    #[serde(default = "default_true")]
    pub test_on_checkout: bool,
    /// The breaker's settings (each replica gets a breaker of its own with the same
    /// settings).
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Read replicas, reached through [`Pool::read`](crate::Pool::read). Default none.
    #[serde(default)]
    pub replicas: ReplicasConfig,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            url: None,
            name: default_name(),
            max_size: default_max_size(),
            min_idle: 0,
            connect_timeout: default_connect_timeout(),
            checkout_timeout: default_checkout_timeout(),
            statement_timeout: None,
            query_timeout: None,
            health_timeout: default_health_timeout(),
            idle_timeout: default_idle_timeout(),
            max_lifetime: default_max_lifetime(),
            application_name: None,
            tls: TlsConfig::default(),
            pgbouncer: false,
            test_on_checkout: true,
            breaker: BreakerConfig::default(),
            replicas: ReplicasConfig::default(),
        }
    }
}

impl PoolConfig {
    /// The defaults, with `url`.
    #[must_use]
    pub fn new(url: DatabaseUrl) -> Self {
        Self {
            url: Some(url),
            ..Self::default()
        }
    }

    /// Checks every field (no I/O); the error names the first field at fault.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        let url = self
            .url
            .as_ref()
            .ok_or_else(|| Error::config("url", "is missing"))?;
        if self.name.is_empty() {
            return Err(Error::config("name", "must not be empty"));
        }
        if self.max_size == 0 {
            return Err(Error::config("max_size", "must be at least 1"));
        }
        if self.min_idle > self.max_size {
            return Err(Error::config(
                "min_idle",
                format!("({}) exceeds max_size ({})", self.min_idle, self.max_size),
            ));
        }
        nonzero("connect_timeout", self.connect_timeout)?;
        nonzero("checkout_timeout", self.checkout_timeout)?;
        nonzero("health_timeout", self.health_timeout)?;
        if let Some(d) = self.statement_timeout {
            nonzero("statement_timeout", d)?;
        }
        if let Some(d) = self.query_timeout {
            nonzero("query_timeout", d)?;
        }
        if let Some(d) = self.idle_timeout {
            nonzero("idle_timeout", d)?;
        }
        if let Some(d) = self.max_lifetime {
            nonzero("max_lifetime", d)?;
        }
        if let Some(name) = &self.application_name
            && (name.contains('\0') || name.len() > 63)
        {
            return Err(Error::config(
                "application_name",
                "must be at most 63 bytes without NUL",
            ));
        }
        self.check_tls_for("url", url)?;
        for replica in &self.replicas.urls {
            self.check_tls_for("replicas.urls", replica)?;
        }
        nonzero("replicas.check_interval", self.replicas.check_interval)?;
        if let Some(path) = &self.tls.ca_file {
            if self.tls.mode != TlsMode::VerifyFull {
                return Err(Error::config(
                    "tls.ca_file",
                    format!(
                        "is only used by tls.mode verify-full (mode is {})",
                        self.tls.mode
                    ),
                ));
            }
            if !path.is_file() {
                return Err(Error::config(
                    "tls.ca_file",
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        // The breaker validates its own settings; build one to find out.
        self.breaker.build(&self.name).map(|_| ())
    }

    /// The TLS mode's demands on one URL; `field` names it in the error.
    fn check_tls_for(&self, field: &'static str, url: &DatabaseUrl) -> Result<(), Error> {
        match self.tls.mode {
            TlsMode::Disable => {
                if url.pg_config().get_ssl_mode() == SslMode::Require {
                    return Err(Error::config(
                        if field == "url" { "tls.mode" } else { field },
                        format!(
                            "{}: tls.mode is disable but the URL asks for sslmode=require: set \
                             tls.mode to require or verify-full",
                            url.redacted()
                        ),
                    ));
                }
            }
            TlsMode::Require => {}
            TlsMode::VerifyFull => {
                if !url.has_tcp_host() {
                    return Err(Error::config(
                        field,
                        format!(
                            "{} has no host name, and tls.mode verify-full checks the server \
                             certificate against it",
                            url.redacted()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn nonzero(field: &'static str, d: Duration) -> Result<(), Error> {
    if d.is_zero() {
        Err(Error::config(field, "must be greater than zero"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_password() {
        let url = DatabaseUrl::parse("postgres://app:s3cret%21@db.internal:6432/app_db").unwrap();
        assert_eq!(url.redacted(), "postgres://app:***@db.internal:6432/app_db");
        assert_eq!(format!("{url}"), url.redacted());
        assert_eq!(
            format!("{url:?}"),
            "DatabaseUrl(\"postgres://app:***@db.internal:6432/app_db\")"
        );
        assert!(url.has_password());

        let kv = DatabaseUrl::parse("host=a,b port=1,2 user=u password=hunter2 dbname=d").unwrap();
        assert_eq!(kv.redacted(), "postgres://u:***@a:1,b:2/d");
        assert!(!format!("{kv:?}").contains("hunter2"));
    }

    #[test]
    fn url_errors_name_the_field_and_hide_the_input() {
        let err = DatabaseUrl::parse("postgres://app:s3cret@db:notaport/x").unwrap_err();
        assert!(matches!(err, Error::Config { field: "url", .. }), "{err:?}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let err = DatabaseUrl::parse("postgres://db/x").unwrap_err();
        assert!(err.to_string().contains("names no user"), "{err}");
    }

    #[test]
    fn tls_mode_parses() {
        assert_eq!(
            "verify-full".parse::<TlsMode>().unwrap(),
            TlsMode::VerifyFull
        );
        assert!("verify-ca".parse::<TlsMode>().is_err());
        assert_eq!(TlsMode::Require.to_string(), "require");
    }

    #[test]
    fn replica_settings_validate_and_hide_passwords() {
        let mut config = PoolConfig::new(DatabaseUrl::parse("postgres://u@h/d").unwrap());
        config
            .replicas
            .urls
            .push(DatabaseUrl::parse("host=/var/run/postgresql user=u password=hunter2").unwrap());
        config.validate().unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        config.tls.mode = TlsMode::VerifyFull;
        let err = config.validate().unwrap_err();
        assert!(
            matches!(
                err,
                Error::Config {
                    field: "replicas.urls",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!err.to_string().contains("hunter2"), "{err}");
        config.tls.mode = TlsMode::Disable;
        config.replicas.check_interval = Duration::ZERO;
        let err = config.validate().unwrap_err();
        assert!(
            matches!(
                err,
                Error::Config {
                    field: "replicas.check_interval",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn defaults_validate_with_a_url() {
        let config = PoolConfig::new(DatabaseUrl::parse("postgres://u@h/d").unwrap());
        config.validate().unwrap();
        let err = PoolConfig::default().validate().unwrap_err();
        assert!(matches!(err, Error::Config { field: "url", .. }), "{err:?}");
    }
}
