//! The shared state: one of each Unite component, built from [`Config`].

use std::num::NonZeroU32;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use unite_cache::Cache;
use unite_hotkey::HotKeyDetector;
use unite_pool::{Pool, PoolConfig, TlsConfig, TlsMode};
use unite_ratelimit::RateLimiter;
use unite_telemetry::MetricsHandle;

use crate::config::{Config, DbTls};

/// Cheap to clone: every handler gets one.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// What the state holds.
pub struct Inner {
    /// The effective configuration.
    pub config: Config,
    /// Postgres.
    pub pool: Pool,
    /// The layered cache (L1 always; L2 when `REDIS_URL` is set).
    pub cache: Cache,
    /// Rate limits (shared through Redis when it is set).
    pub limiter: RateLimiter,
    /// Hot keys of the cache.
    pub hotkeys: HotKeyDetector,
    /// A Redis client of the service's own (limits, hot-key list, checks), when configured.
    pub redis: Option<fred::clients::Client>,
    /// Renders `/metrics`; `None` when no recorder was installed (tests).
    pub metrics: Option<MetricsHandle>,
    /// When the service started.
    pub started: Instant,
    /// The running or last warm-up.
    pub warm: Mutex<crate::tools::WarmState>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .field("provider", &self.cache.provider())
            .field("limiter", &self.limiter.mode())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Connects to Postgres (and Redis, when configured) and builds every component.
    ///
    /// Redis being down does not stop the service: the cache and the limiter start degraded
    /// and recover when it answers. Postgres must answer at start (migrations run).
    pub async fn build(config: Config, metrics: Option<MetricsHandle>) -> anyhow::Result<Self> {
        let pool = Pool::connect(pool_config(&config)?)
            .await
            .context("connecting to Postgres (DATABASE_URL)")?;

        let hotkeys = HotKeyDetector::builder()
            .build()
            .context("building the hot-key detector")?;

        let redis = match &config.redis_url {
            Some(url) => Some(redis_client(url, &config).await?),
            None => None,
        };

        let mut cache = Cache::builder()
            .namespace(config.cache_namespace.clone())
            .default_ttl(config.cache_ttl)
            .l1_max_bytes(config.cache_l1_max_bytes)
            .command_timeout(config.redis_timeout)
            .hotkeys(hotkeys.clone());
        if let Some(url) = &config.redis_url {
            cache = cache.redis_config(redis_config(url, &config)?);
        }
        let cache = cache.build().await.context("building the cache")?;

        let mut limiter = RateLimiter::builder()
            .key_prefix(format!("{}rl:", config.cache_namespace))
            .command_timeout(config.redis_timeout)
            .expected_instances(
                NonZeroU32::new(config.rate_limit_instances).unwrap_or(NonZeroU32::MIN),
            )
            .reserve(
                NonZeroU32::new(config.rate_limit_reserve).unwrap_or(NonZeroU32::MIN),
                Duration::from_millis(100),
            );
        if let Some(client) = &redis {
            limiter = limiter.redis(client.clone());
        }
        let limiter = limiter.build().context("building the rate limiter")?;

        Ok(Self(Arc::new(Inner {
            config,
            pool,
            cache,
            limiter,
            hotkeys,
            redis,
            metrics,
            started: Instant::now(),
            warm: Mutex::new(crate::tools::WarmState::default()),
        })))
    }
}

/// The pool's configuration from the service's.
pub fn pool_config(config: &Config) -> anyhow::Result<PoolConfig> {
    let url = unite_pool::DatabaseUrl::parse(&config.database_url)
        .map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?;
    let mut tls = TlsConfig::new(match config.database_tls {
        DbTls::Disable => TlsMode::Disable,
        DbTls::Require => TlsMode::Require,
        DbTls::VerifyFull => TlsMode::VerifyFull,
    });
    if let Some(ca) = &config.database_ca_file {
        tls = tls.with_ca_file(ca.clone());
    }
    let mut pc = PoolConfig::new(url);
    pc.name = "primary".into();
    pc.max_size = config.database_pool_max;
    pc.min_idle = config.database_pool_min;
    pc.connect_timeout = config.database_connect_timeout;
    pc.checkout_timeout = config.database_checkout_timeout;
    pc.statement_timeout = Some(config.database_statement_timeout);
    pc.application_name = Some("unite-hub".into());
    pc.tls = tls;
    for (i, replica) in config.database_replica_urls.iter().enumerate() {
        let url = unite_pool::DatabaseUrl::parse(replica)
            .map_err(|e| anyhow::anyhow!("DATABASE_REPLICA_URLS entry {}: {e}", i + 1))?;
        pc.replicas.urls.push(url);
    }
    pc.replicas.max_lag = config.database_replica_max_lag;
    Ok(pc)
}

/// fred's configuration for `url`, with `REDIS_CA_FILE` as the only trusted root when set.
pub fn redis_config(url: &str, config: &Config) -> anyhow::Result<fred::types::config::Config> {
    let mut redis_config = fred::types::config::Config::from_url(url)
        .map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?;
    if let (Some(ca), Some(tls)) = (&config.redis_ca_file, redis_config.tls.as_mut()) {
        tls.connector = rustls_connector(ca)?;
    }
    Ok(redis_config)
}

/// A rustls connector (TLS 1.2 and 1.3) that trusts only the CA certificates in `ca`.
fn rustls_connector(ca: &std::path::Path) -> anyhow::Result<fred::types::config::TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("REDIS_CA_FILE: reading {}", ca.display()))?
    {
        let cert = cert.with_context(|| format!("REDIS_CA_FILE: {} is not PEM", ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("REDIS_CA_FILE: a certificate in {}", ca.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("REDIS_CA_FILE: {} holds no certificate", ca.display());
    }
    let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("REDIS_CA_FILE: TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(client.into())
}

/// Whether a Redis connection error is TLS refusing the server (unknown CA, wrong name,
/// protocol), as opposed to Redis being down: a misconfiguration, not an outage.
fn is_tls_refusal(e: &fred::error::Error) -> bool {
    if *e.kind() == fred::error::ErrorKind::Tls {
        return true;
    }
    let text = e.details().to_ascii_lowercase();
    ["certificate", "handshake", "tls", "ssl", "protocolversion"]
        .iter()
        .any(|word| text.contains(word))
}

/// A Redis client that fails commands fast and reconnects by itself.
///
/// Redis down at start makes the service degraded, not dead; a TLS refusal (unknown CA, a host
/// name the certificate does not hold) is a misconfiguration and stops the start with the reason.
pub async fn redis_client(url: &str, config: &Config) -> anyhow::Result<fred::clients::Client> {
    use fred::prelude::*;
    let mut redis_config = redis_config(url, config)?;
    redis_config.fail_fast = true;
    let timeout = config.redis_timeout;
    let client = Builder::from_config(redis_config)
        .with_connection_config(|c| {
            c.connection_timeout = timeout.max(std::time::Duration::from_secs(1));
            c.internal_command_timeout = timeout.max(std::time::Duration::from_secs(1));
        })
        .with_performance_config(|p| p.default_command_timeout = timeout)
        .set_policy(ReconnectPolicy::new_constant(0, 500))
        .build()
        .map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?;
    if let Err(e) = client.init().await {
        if is_tls_refusal(&e) {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), client.quit()).await;
            anyhow::bail!(
                "REDIS_URL: the TLS connection to Redis was refused: {e} \
                 (check REDIS_CA_FILE and that the host name in REDIS_URL is in the server's certificate)"
            );
        }
        tracing::warn!(error = %e, "Redis did not answer at start; running degraded");
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use fred::types::config::{Config, ServerConfig};

    /// The `REDIS_URL` forms `.env.example` and `docs/OPERATIONS.md` give for Sentinel and
    /// Cluster are what fred 10 reads as those deployments.
    #[test]
    fn documented_sentinel_and_cluster_urls_parse_as_such() {
        let sentinel = Config::from_url(
            "redis-sentinel://:pw@10.0.0.1:26379/0?sentinelServiceName=mymaster\
             &node=10.0.0.2:26379&node=10.0.0.3:26379",
        )
        .unwrap();
        match &sentinel.server {
            ServerConfig::Sentinel {
                hosts,
                service_name,
                ..
            } => {
                assert_eq!(hosts.len(), 3, "{hosts:?}");
                assert_eq!(service_name.to_string(), "mymaster");
            }
            other => panic!("not a Sentinel config: {other:?}"),
        }
        assert_eq!(sentinel.password.as_deref(), Some("pw"));

        let cluster = Config::from_url(
            "redis-cluster://:pw@10.0.0.1:7000?node=10.0.0.2:7000&node=10.0.0.3:7000",
        )
        .unwrap();
        match &cluster.server {
            ServerConfig::Clustered { hosts, .. } => assert_eq!(hosts.len(), 3, "{hosts:?}"),
            other => panic!("not a Cluster config: {other:?}"),
        }
        for tls in [
            "rediss-cluster://10.0.0.1:7000",
            "rediss-sentinel://10.0.0.1:26379?sentinelServiceName=m",
        ] {
            assert!(Config::from_url(tls).unwrap().tls.is_some(), "{tls}");
        }
        // Comma-separated hosts are not a form fred reads.
        assert!(Config::from_url("redis-cluster://10.0.0.1:7000,10.0.0.2:7000").is_err());
        assert!(
            Config::from_url("redis-sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster").is_err()
        );
    }
}
