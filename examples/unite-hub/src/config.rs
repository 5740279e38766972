//! The service's configuration, read from environment variables and validated at start.
//!
//! Every variable is listed, with its default, in `.env.example`. `Config::from_env` reports
//! every missing or bad variable at once, each by name.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// How the database connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbTls {
    /// Plaintext.
    Disable,
    /// Encrypted, server not verified.
    Require,
    /// Encrypted, certificate and host name verified.
    VerifyFull,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line.
    Json,
    /// Human-readable, for development.
    Pretty,
}

/// The effective configuration.
#[derive(Clone)]
pub struct Config {
    /// `BIND_ADDR`.
    pub bind_addr: SocketAddr,
    /// `DATABASE_URL` (holds a password: never printed as is).
    pub database_url: String,
    /// `DATABASE_POOL_MAX`.
    pub database_pool_max: u32,
    /// `DATABASE_POOL_MIN`.
    pub database_pool_min: u32,
    /// `DATABASE_CONNECT_TIMEOUT`.
    pub database_connect_timeout: Duration,
    /// `DATABASE_CHECKOUT_TIMEOUT`.
    pub database_checkout_timeout: Duration,
    /// `DATABASE_STATEMENT_TIMEOUT`.
    pub database_statement_timeout: Duration,
    /// `DATABASE_TLS`.
    pub database_tls: DbTls,
    /// `DATABASE_CA_FILE`.
    pub database_ca_file: Option<PathBuf>,
    /// `DATABASE_REPLICA_URLS`: read replicas, comma-separated (each may hold a password:
    /// never printed as is). Empty: every query goes to `DATABASE_URL`.
    pub database_replica_urls: Vec<String>,
    /// `DATABASE_REPLICA_MAX_LAG`: a replica further behind the primary is skipped.
    pub database_replica_max_lag: Duration,
    /// `REDIS_URL`: absent means the in-memory cache and local limits.
    pub redis_url: Option<String>,
    /// `REDIS_TIMEOUT`.
    pub redis_timeout: Duration,
    /// `REDIS_CA_FILE`: the CA (PEM) that signs the Redis server's certificate, for `rediss://`
    /// (verified, host name included). Unset: the system's roots.
    pub redis_ca_file: Option<PathBuf>,
    /// `ADMIN_TOKEN`.
    pub admin_token: String,
    /// `CACHE_NAMESPACE`.
    pub cache_namespace: String,
    /// `CACHE_TTL`.
    pub cache_ttl: Duration,
    /// `CACHE_L1_MAX_BYTES`.
    pub cache_l1_max_bytes: u64,
    /// `SESSION_TTL`.
    pub session_ttl: Duration,
    /// `TRUSTED_PROXIES`: CIDRs whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `RATE_LIMIT_INSTANCES`: how many instances share the quota when Redis is down.
    pub rate_limit_instances: u32,
    /// `RATE_LIMIT_RESERVE`: the most rate-limit decisions of one busy key a Redis round trip
    /// may reserve for this instance (1: every decision is a round trip).
    pub rate_limit_reserve: u32,
    /// `MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// `REQUEST_TIMEOUT`.
    pub request_timeout: Duration,
    /// `HEADER_READ_TIMEOUT`: how long a client may take to send a request head (slow-client
    /// defence: the connection is closed when it runs out).
    pub header_read_timeout: Duration,
    /// `SHUTDOWN_GRACE`.
    pub shutdown_grace: Duration,
    /// `WARM_ON_START`.
    pub warm_on_start: bool,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `RUST_LOG`.
    pub log_filter: String,
}

/// One variable that is missing or bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The variable's name.
    pub var: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// Every problem found in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<Problem>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "configuration has {} problem(s) (see .env.example):",
            self.0.len()
        )?;
        for p in &self.0 {
            writeln!(f, "  {}: {}", p.var, p.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads variables from a map (the process environment, or a test's own map).
struct Reader<'a> {
    vars: &'a BTreeMap<String, String>,
    problems: Vec<Problem>,
}

impl<'a> Reader<'a> {
    fn raw(&self, var: &str) -> Option<&'a str> {
        self.vars
            .get(var)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    fn bad(&mut self, var: &'static str, reason: impl Into<String>) {
        self.problems.push(Problem {
            var,
            reason: reason.into(),
        });
    }

    fn required(&mut self, var: &'static str) -> String {
        match self.raw(var) {
            Some(v) => v.to_owned(),
            None => {
                self.bad(var, "is required and not set");
                String::new()
            }
        }
    }

    fn parse<T: FromStr>(&mut self, var: &'static str, default: T, what: &str) -> T {
        let Some(raw) = self.raw(var) else {
            return default;
        };
        match raw.parse() {
            Ok(v) => v,
            Err(_) => {
                let shown = shown_value(raw);
                self.bad(var, format!("{shown} is not {what}"));
                default
            }
        }
    }

    fn duration(&mut self, var: &'static str, default: Duration) -> Duration {
        let Some(raw) = self.raw(var) else {
            return default;
        };
        match humantime::parse_duration(raw) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.bad(var, "must be longer than zero");
                default
            }
            Err(_) => {
                let shown = shown_value(raw);
                self.bad(
                    var,
                    format!("{shown} is not a duration (e.g. 250ms, 5s, 2m)"),
                );
                default
            }
        }
    }

    fn bool(&mut self, var: &'static str, default: bool) -> bool {
        let Some(raw) = self.raw(var) else {
            return default;
        };
        match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => {
                let shown = shown_value(raw);
                self.bad(var, format!("{shown} is not true or false"));
                default
            }
        }
    }
}

/// `DATABASE_REPLICA_URLS`: comma-separated Postgres URLs. A bad entry is named by its
/// position, never quoted (it may hold a password).
fn replica_urls(r: &mut Reader<'_>) -> Vec<String> {
    const VAR: &str = "DATABASE_REPLICA_URLS";
    let Some(list) = r.raw(VAR) else {
        return Vec::new();
    };
    let mut urls = Vec::new();
    for (i, url) in list.split(',').map(str::trim).enumerate() {
        let n = i + 1;
        if url.is_empty() {
            // A trailing or doubled comma, as TRUSTED_PROXIES allows.
        } else if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            r.bad(
                VAR,
                format!("entry {n} must start with postgres:// or postgresql://"),
            );
        } else if unite_pool::DatabaseUrl::parse(url).is_err() {
            r.bad(
                VAR,
                format!("entry {n} is not a Postgres URL with a user (postgres://user[:password]@host[:port]/db)"),
            );
        } else {
            urls.push(url.to_owned());
        }
    }
    urls
}

/// A value quoted for an error message, cut short so a pasted secret is not echoed whole.
fn shown_value(raw: &str) -> String {
    let cut: String = raw.chars().take(24).collect();
    if cut.len() < raw.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads the given variables (the environment, or a test's map).
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut r = Reader {
            vars,
            problems: Vec::new(),
        };
        let bind_addr = r.parse(
            "BIND_ADDR",
            SocketAddr::from(([127, 0, 0, 1], 8080)),
            "a socket address (host:port)",
        );
        let database_url = r.required("DATABASE_URL");
        let postgres_scheme =
            database_url.starts_with("postgres://") || database_url.starts_with("postgresql://");
        if !database_url.is_empty() && !postgres_scheme {
            r.bad(
                "DATABASE_URL",
                "must start with postgres:// or postgresql://",
            );
        }
        let database_pool_max = r.parse("DATABASE_POOL_MAX", 16u32, "a whole number");
        if database_pool_max == 0 {
            r.bad("DATABASE_POOL_MAX", "must be at least 1");
        }
        let database_pool_min = r.parse("DATABASE_POOL_MIN", 0u32, "a whole number");
        if database_pool_min > database_pool_max {
            r.bad("DATABASE_POOL_MIN", "must not exceed DATABASE_POOL_MAX");
        }
        let database_connect_timeout =
            r.duration("DATABASE_CONNECT_TIMEOUT", Duration::from_secs(3));
        let database_checkout_timeout =
            r.duration("DATABASE_CHECKOUT_TIMEOUT", Duration::from_secs(2));
        let database_statement_timeout =
            r.duration("DATABASE_STATEMENT_TIMEOUT", Duration::from_secs(10));
        let database_tls = match r
            .raw("DATABASE_TLS")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("disable") => DbTls::Disable,
            Some("require") => DbTls::Require,
            Some("verify-full") => DbTls::VerifyFull,
            Some(other) => {
                let shown = shown_value(other);
                r.bad(
                    "DATABASE_TLS",
                    format!("{shown} is not one of disable, require, verify-full"),
                );
                DbTls::Disable
            }
        };
        let database_ca_file = r.raw("DATABASE_CA_FILE").map(PathBuf::from);
        if let Some(path) = database_ca_file.as_ref().filter(|p| !p.is_file()) {
            // Cut short like every bad value: a secret pasted here must not be echoed whole.
            let reason = format!(
                "{} is not a readable file",
                shown_value(&path.to_string_lossy())
            );
            r.bad("DATABASE_CA_FILE", reason);
        }
        let database_replica_urls = replica_urls(&mut r);
        let database_replica_max_lag =
            r.duration("DATABASE_REPLICA_MAX_LAG", Duration::from_millis(100));
        let redis_url = r.raw("REDIS_URL").map(str::to_owned);
        const REDIS_SCHEMES: [&str; 6] = [
            "redis://",
            "rediss://",
            "redis-sentinel://",
            "rediss-sentinel://",
            "redis-cluster://",
            "rediss-cluster://",
        ];
        if let Some(url) = &redis_url {
            if !REDIS_SCHEMES.iter().any(|scheme| url.starts_with(scheme)) {
                r.bad(
                    "REDIS_URL",
                    "must start with redis://, rediss://, redis[s]-sentinel:// or redis[s]-cluster://",
                );
            } else if fred::types::config::Config::from_url(url).is_err() {
                // fred's own message may quote the URL: not repeated.
                r.bad(
                    "REDIS_URL",
                    "does not parse (a Sentinel URL needs ?sentinelServiceName=<master>; \
                     further nodes go in &node=host:port; see .env.example)",
                );
            }
        }
        let redis_timeout = r.duration("REDIS_TIMEOUT", Duration::from_millis(250));
        let redis_ca_file = r.raw("REDIS_CA_FILE").map(PathBuf::from);
        if let Some(path) = redis_ca_file.as_ref().filter(|p| !p.is_file()) {
            let reason = format!(
                "{} is not a readable file",
                shown_value(&path.to_string_lossy())
            );
            r.bad("REDIS_CA_FILE", reason);
        } else if redis_ca_file.is_some()
            && !redis_url
                .as_deref()
                .is_some_and(|u| u.starts_with("rediss"))
        {
            r.bad(
                "REDIS_CA_FILE",
                "is set but REDIS_URL is not rediss:// (TLS): set both or neither",
            );
        }
        let admin_token = r.required("ADMIN_TOKEN");
        if !admin_token.is_empty() && admin_token.len() < 16 {
            r.bad("ADMIN_TOKEN", "must be at least 16 characters");
        }
        let cache_namespace = r.raw("CACHE_NAMESPACE").unwrap_or("unite-hub:").to_owned();
        let cache_ttl = r.duration("CACHE_TTL", Duration::from_secs(300));
        let cache_l1_max_bytes = r.parse("CACHE_L1_MAX_BYTES", 64u64 << 20, "a number of bytes");
        let session_ttl = r.duration("SESSION_TTL", Duration::from_secs(24 * 3600));
        let trusted_proxies = match r.raw("TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(list) => {
                let mut nets = Vec::new();
                for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    match item
                        .parse::<ipnet::IpNet>()
                        .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    {
                        Ok(net) => nets.push(net),
                        Err(_) => {
                            let shown = shown_value(item);
                            r.bad("TRUSTED_PROXIES", format!("{shown} is not an IP or CIDR"));
                        }
                    }
                }
                nets
            }
        };
        let rate_limit_instances = r.parse("RATE_LIMIT_INSTANCES", 1u32, "a whole number");
        if rate_limit_instances == 0 {
            r.bad("RATE_LIMIT_INSTANCES", "must be at least 1");
        }
        let rate_limit_reserve = r.parse("RATE_LIMIT_RESERVE", 256u32, "a whole number");
        if rate_limit_reserve == 0 {
            r.bad("RATE_LIMIT_RESERVE", "must be at least 1");
        }
        let max_body_bytes = r.parse("MAX_BODY_BYTES", 64usize * 1024, "a number of bytes");
        let request_timeout = r.duration("REQUEST_TIMEOUT", Duration::from_secs(15));
        let header_read_timeout = r.duration("HEADER_READ_TIMEOUT", Duration::from_secs(10));
        let shutdown_grace = r.duration("SHUTDOWN_GRACE", Duration::from_secs(20));
        let warm_on_start = r.bool("WARM_ON_START", true);
        let log_format = match r.raw("LOG_FORMAT").map(str::to_ascii_lowercase).as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => {
                let shown = shown_value(other);
                r.bad("LOG_FORMAT", format!("{shown} is not json or pretty"));
                LogFormat::Json
            }
        };
        let log_filter = r.raw("RUST_LOG").unwrap_or("info").to_owned();

        if !r.problems.is_empty() {
            return Err(ConfigError(r.problems));
        }
        Ok(Self {
            bind_addr,
            database_url,
            database_pool_max,
            database_pool_min,
            database_connect_timeout,
            database_checkout_timeout,
            database_statement_timeout,
            database_tls,
            database_ca_file,
            database_replica_urls,
            database_replica_max_lag,
            redis_url,
            redis_timeout,
            redis_ca_file,
            admin_token,
            cache_namespace,
            cache_ttl,
            cache_l1_max_bytes,
            session_ttl,
            trusted_proxies,
            rate_limit_instances,
            rate_limit_reserve,
            max_body_bytes,
            request_timeout,
            header_read_timeout,
            shutdown_grace,
            warm_on_start,
            log_format,
            log_filter,
        })
    }

    /// The effective configuration as `NAME=value` lines, secrets redacted.
    pub fn redacted_lines(&self) -> Vec<String> {
        let d = |v: Duration| humantime::format_duration(v).to_string();
        let tls = match self.database_tls {
            DbTls::Disable => "disable",
            DbTls::Require => "require",
            DbTls::VerifyFull => "verify-full",
        };
        vec![
            format!("BIND_ADDR={}", self.bind_addr),
            format!(
                "DATABASE_URL={}",
                unite_telemetry::redact_url(&self.database_url)
            ),
            format!("DATABASE_POOL_MAX={}", self.database_pool_max),
            format!("DATABASE_POOL_MIN={}", self.database_pool_min),
            format!(
                "DATABASE_CONNECT_TIMEOUT={}",
                d(self.database_connect_timeout)
            ),
            format!(
                "DATABASE_CHECKOUT_TIMEOUT={}",
                d(self.database_checkout_timeout)
            ),
            format!(
                "DATABASE_STATEMENT_TIMEOUT={}",
                d(self.database_statement_timeout)
            ),
            format!("DATABASE_TLS={tls}"),
            format!(
                "DATABASE_CA_FILE={}",
                self.database_ca_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            format!(
                "DATABASE_REPLICA_URLS={}",
                self.database_replica_urls
                    .iter()
                    .map(|u| unite_telemetry::redact_url(u))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            format!(
                "DATABASE_REPLICA_MAX_LAG={}",
                d(self.database_replica_max_lag)
            ),
            format!(
                "REDIS_URL={}",
                self.redis_url
                    .as_deref()
                    .map(|u| unite_telemetry::redact_url(u).into_owned())
                    .unwrap_or_default()
            ),
            format!("REDIS_TIMEOUT={}", d(self.redis_timeout)),
            format!(
                "REDIS_CA_FILE={}",
                self.redis_ca_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            "ADMIN_TOKEN=***".to_owned(),
            format!("CACHE_NAMESPACE={}", self.cache_namespace),
            format!("CACHE_TTL={}", d(self.cache_ttl)),
            format!("CACHE_L1_MAX_BYTES={}", self.cache_l1_max_bytes),
            format!("SESSION_TTL={}", d(self.session_ttl)),
            format!(
                "TRUSTED_PROXIES={}",
                self.trusted_proxies
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            format!("RATE_LIMIT_INSTANCES={}", self.rate_limit_instances),
            format!("RATE_LIMIT_RESERVE={}", self.rate_limit_reserve),
            format!("MAX_BODY_BYTES={}", self.max_body_bytes),
            format!("REQUEST_TIMEOUT={}", d(self.request_timeout)),
            format!("HEADER_READ_TIMEOUT={}", d(self.header_read_timeout)),
            format!("SHUTDOWN_GRACE={}", d(self.shutdown_grace)),
            format!("WARM_ON_START={}", self.warm_on_start),
            format!(
                "LOG_FORMAT={}",
                match self.log_format {
                    LogFormat::Json => "json",
                    LogFormat::Pretty => "pretty",
                }
            ),
            format!("RUST_LOG={}", self.log_filter),
        ]
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.redacted_lines()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("DATABASE_URL", "postgres://app:pa55word@127.0.0.1/hub"),
            ("ADMIN_TOKEN", "admin-token-0123456789"),
        ]
    }

    fn problems(extra: &[(&str, &str)]) -> Vec<&'static str> {
        let mut v = base();
        v.extend_from_slice(extra);
        match Config::from_vars(&vars(&v)) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.into_iter().map(|p| p.var).collect(),
        }
    }

    #[test]
    fn defaults_from_the_minimum() {
        let c = Config::from_vars(&vars(&base())).unwrap();
        assert_eq!(c.bind_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.redis_url, None);
        assert_eq!(c.database_pool_max, 16);
        assert_eq!(c.cache_namespace, "unite-hub:");
    }

    #[test]
    fn every_missing_variable_is_named_at_once() {
        let err = Config::from_vars(&BTreeMap::new()).unwrap_err();
        let names: Vec<_> = err.0.iter().map(|p| p.var).collect();
        assert_eq!(names, ["DATABASE_URL", "ADMIN_TOKEN"]);
        let text = err.to_string();
        assert!(text.contains("DATABASE_URL: is required"), "{text}");
    }

    #[test]
    fn each_kind_of_bad_value_is_named() {
        assert_eq!(problems(&[("BIND_ADDR", "localhost")]), ["BIND_ADDR"]);
        assert_eq!(
            problems(&[("DATABASE_POOL_MAX", "0")]),
            ["DATABASE_POOL_MAX"]
        );
        assert_eq!(
            problems(&[("DATABASE_POOL_MAX", "many")]),
            ["DATABASE_POOL_MAX"]
        );
        assert_eq!(
            problems(&[("DATABASE_POOL_MIN", "20"), ("DATABASE_POOL_MAX", "4")]),
            ["DATABASE_POOL_MIN"]
        );
        assert_eq!(
            problems(&[("REDIS_CA_FILE", "/nonexistent/ca.pem")]),
            ["REDIS_CA_FILE"]
        );
        // A CA for Redis without TLS to Redis is a mistake, named.
        assert_eq!(
            problems(&[
                ("REDIS_URL", "redis://127.0.0.1:6379"),
                ("REDIS_CA_FILE", "Cargo.toml")
            ]),
            ["REDIS_CA_FILE"]
        );
        assert_eq!(
            problems(&[("DATABASE_CONNECT_TIMEOUT", "soon")]),
            ["DATABASE_CONNECT_TIMEOUT"]
        );
        assert_eq!(
            problems(&[("DATABASE_CHECKOUT_TIMEOUT", "0s")]),
            ["DATABASE_CHECKOUT_TIMEOUT"]
        );
        assert_eq!(problems(&[("DATABASE_TLS", "maybe")]), ["DATABASE_TLS"]);
        assert_eq!(
            problems(&[("DATABASE_CA_FILE", "/nonexistent/ca.pem")]),
            ["DATABASE_CA_FILE"]
        );
        assert_eq!(problems(&[("REDIS_URL", "http://x")]), ["REDIS_URL"]);
        assert_eq!(
            problems(&[("REDIS_URL", "redis-sentinel://10.0.0.1:26379")]),
            ["REDIS_URL"],
            "a Sentinel URL names its master"
        );
        assert_eq!(
            problems(&[("REDIS_URL", "redis-cluster://h1:7000,h2:7001")]),
            ["REDIS_URL"],
            "nodes are not comma-separated"
        );
        assert_eq!(problems(&[("ADMIN_TOKEN", "short")]), ["ADMIN_TOKEN"]);
        assert_eq!(
            problems(&[("TRUSTED_PROXIES", "10.0.0.0/8,nope")]),
            ["TRUSTED_PROXIES"]
        );
        assert_eq!(problems(&[("WARM_ON_START", "perhaps")]), ["WARM_ON_START"]);
        assert_eq!(problems(&[("LOG_FORMAT", "xml")]), ["LOG_FORMAT"]);
        assert_eq!(
            problems(&[("HEADER_READ_TIMEOUT", "0s")]),
            ["HEADER_READ_TIMEOUT"]
        );
        assert_eq!(problems(&[("MAX_BODY_BYTES", "-1")]), ["MAX_BODY_BYTES"]);
        assert_eq!(
            problems(&[("RATE_LIMIT_INSTANCES", "0")]),
            ["RATE_LIMIT_INSTANCES"]
        );
        assert_eq!(
            problems(&[("RATE_LIMIT_RESERVE", "0")]),
            ["RATE_LIMIT_RESERVE"]
        );
        assert_eq!(problems(&[("DATABASE_URL", "mysql://x")]), ["DATABASE_URL"]);
        for bad in [
            "mysql://u@r1/db",
            "postgres://u@r1/db,postgres://r2/db",
            "postgres://u@r1:notaport/db",
        ] {
            assert_eq!(
                problems(&[("DATABASE_REPLICA_URLS", bad)]),
                ["DATABASE_REPLICA_URLS"],
                "{bad}"
            );
        }
        assert_eq!(
            problems(&[("DATABASE_REPLICA_MAX_LAG", "0s")]),
            ["DATABASE_REPLICA_MAX_LAG"]
        );
    }

    #[test]
    fn replicas_are_read_and_their_passwords_never_show() {
        let mut v = base();
        v.push((
            "DATABASE_REPLICA_URLS",
            "postgres://app:r3plica-pw@10.0.0.2:5432/hub, postgresql://app:r3plica-pw@10.0.0.3/hub",
        ));
        v.push(("DATABASE_REPLICA_MAX_LAG", "250ms"));
        let c = Config::from_vars(&vars(&v)).unwrap();
        assert_eq!(c.database_replica_urls.len(), 2);
        assert_eq!(c.database_replica_max_lag, Duration::from_millis(250));
        let shown = format!("{c:?} {}", c.redacted_lines().join("\n"));
        assert!(!shown.contains("r3plica-pw"), "{shown}");
        assert!(shown.contains("10.0.0.3"), "{shown}");
        // A bad entry is named by position, never quoted.
        v.push((
            "DATABASE_REPLICA_URLS",
            "postgres://app:r3plica-pw@10.0.0.2:bad/hub",
        ));
        let err = Config::from_vars(&vars(&v)).unwrap_err().to_string();
        assert!(err.contains("DATABASE_REPLICA_URLS: entry 1"), "{err}");
        assert!(!err.contains("r3plica-pw"), "{err}");
        let c = Config::from_vars(&vars(&base())).unwrap();
        assert!(c.database_replica_urls.is_empty());
        assert_eq!(c.database_replica_max_lag, Duration::from_millis(100));
    }

    #[test]
    fn secrets_never_show() {
        let c = Config::from_vars(&vars(&base())).unwrap();
        let shown = format!("{c:?} {}", c.redacted_lines().join("\n"));
        assert!(!shown.contains("pa55word"), "{shown}");
        assert!(!shown.contains("admin-token-0123456789"), "{shown}");
        // A bad value is quoted cut short, so a secret pasted into the wrong variable is not echoed whole.
        let err = Config::from_vars(&vars(&[
            ("DATABASE_URL", "postgres://x@y/z"),
            ("ADMIN_TOKEN", "admin-token-0123456789"),
            (
                "BIND_ADDR",
                "a-very-long-secret-value-that-should-not-appear-whole",
            ),
        ]))
        .unwrap_err()
        .to_string();
        assert!(!err.contains("should-not-appear-whole"), "{err}");
    }
}
