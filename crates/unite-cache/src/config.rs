//! Cache settings and the builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fred::clients::{Client, Pool};
use fred::types::config::{Config as RedisConfig, ReconnectPolicy};
use unite_breaker::CircuitBreaker;

use crate::{Cache, Clock, Codec, Error, SystemClock};

/// The default namespace: every Redis key and the invalidation channel start with it.
pub const DEFAULT_NAMESPACE: &str = "unite-hub:";

/// The settings of a [`Cache`]. Start from [`Default`] (or [`Cache::builder`]) and change what
/// you need; [`CacheBuilder::build`] validates them and names the first field at fault.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Prefix of every Redis key and of the invalidation channel. Two caches share entries
    /// only when their namespaces are equal. Default [`DEFAULT_NAMESPACE`].
    pub namespace: String,
    /// TTL of values stored by `get_or_load`. Default 5 min.
    pub default_ttl: Duration,
    /// TTL of a cached "not found" (the loader returned `Ok(None)`); zero disables negative
    /// caching. Default 30 s.
    pub negative_ttl: Duration,
    /// Every TTL is shortened by a random amount up to this fraction (`0.0..1.0`), so entries
    /// written together do not expire together. Default `0.1`.
    pub ttl_jitter: f64,
    /// After expiry an entry is kept this long so it can be served when the loader or Redis
    /// fails (stale-if-error). Zero disables it. Default zero.
    pub stale_grace: Duration,
    /// When a `get_or_load` hit finds an entry past this fraction of its lifetime (`0.0..1.0`),
    /// it is served and refreshed once in the background. `None` disables it. Default `None`.
    pub refresh_ahead: Option<f64>,
    /// Use the in-process layer. Default `true`.
    pub l1_enabled: bool,
    /// L1 bound in weighted bytes (key + encoded value + a fixed per-entry overhead).
    /// Default 64 MiB.
    pub l1_max_bytes: u64,
    /// Cap on how long an entry stays in L1 (whatever its TTL), bounding how stale L1 can be
    /// if an invalidation message is lost. `None`: the entry's TTL. Default `None`.
    pub l1_ttl: Option<Duration>,
    /// Evict an L1 entry not read for this long. Default `None`.
    pub l1_tti: Option<Duration>,
    /// Largest encoded value accepted, in bytes. Default 1 MiB.
    pub max_value_bytes: usize,
    /// Longest key accepted, in bytes (before the namespace). Default 1024.
    pub max_key_bytes: usize,
    /// Value encoding. Default [`Codec::MessagePack`].
    pub codec: Codec,
    /// Timeout of each Redis command (and pipeline). Default 250 ms.
    pub command_timeout: Duration,
    /// How long `build` waits for the first Redis connection before starting degraded (the
    /// client keeps reconnecting in the background). Default 2 s.
    pub connect_timeout: Duration,
    /// Connections in the Redis pool built from a URL or config. Default 2.
    pub pool_size: usize,
    /// Take a short Redis lock around loads so one instance loads a key while the others
    /// wait for its value. Default `true`.
    pub distributed_lock: bool,
    /// Expiry of that lock (a dead holder frees it after this). Default 3 s.
    pub lock_ttl: Duration,
    /// How long a waiter polls for the holder's value before loading itself. Default 3 s.
    pub lock_wait: Duration,
    /// Poll interval while waiting. Default 10 ms.
    pub lock_poll: Duration,
    /// Give up on a loader after this long (treated as a loader error). Default `None`.
    pub load_timeout: Option<Duration>,
    /// Publish writes and deletes, and evict other instances' writes from L1. Default `true`.
    pub invalidation: bool,
    /// While the Redis breaker is not closed, how often a PING is offered to it as a trial
    /// call (so L2 returns even when all reads are L1 hits). Default 500 ms.
    pub probe_interval: Duration,
    /// How often the `unite_cache_entries` / `unite_cache_bytes` gauges are refreshed.
    /// Default 10 s.
    pub metrics_interval: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            default_ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(30),
            ttl_jitter: 0.1,
            stale_grace: Duration::ZERO,
            refresh_ahead: None,
            l1_enabled: true,
            l1_max_bytes: 64 * 1024 * 1024,
            l1_ttl: None,
            l1_tti: None,
            max_value_bytes: 1024 * 1024,
            max_key_bytes: 1024,
            codec: Codec::MessagePack,
            command_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(2),
            pool_size: 2,
            distributed_lock: true,
            lock_ttl: Duration::from_secs(3),
            lock_wait: Duration::from_secs(3),
            lock_poll: Duration::from_millis(10),
            load_timeout: None,
            invalidation: true,
            probe_interval: Duration::from_millis(500),
            metrics_interval: Duration::from_secs(10),
        }
    }
}

impl CacheConfig {
    /// Checks every field; the error names the first field at fault.
    ///
    /// # Errors
    /// [`Error::Config`].
    pub fn validate(&self) -> Result<(), Error> {
        let positive = |field: &'static str, d: Duration| {
            if d.is_zero() {
                Err(Error::config(field, "must be greater than zero"))
            } else {
                Ok(())
            }
        };
        if self.namespace.chars().any(char::is_whitespace) {
            return Err(Error::config("namespace", "must not contain whitespace"));
        }
        positive("default_ttl", self.default_ttl)?;
        if !(0.0..1.0).contains(&self.ttl_jitter) {
            return Err(Error::config("ttl_jitter", "must be in 0.0..1.0"));
        }
        if let Some(f) = self.refresh_ahead
            && !(f > 0.0 && f < 1.0)
        {
            return Err(Error::config(
                "refresh_ahead",
                "must be in the open range 0.0..1.0",
            ));
        }
        if self.l1_max_bytes == 0 {
            return Err(Error::config("l1_max_bytes", "must be greater than zero"));
        }
        if let Some(d) = self.l1_ttl {
            positive("l1_ttl", d)?;
        }
        if let Some(d) = self.l1_tti {
            positive("l1_tti", d)?;
        }
        if self.max_value_bytes == 0 {
            return Err(Error::config(
                "max_value_bytes",
                "must be greater than zero",
            ));
        }
        if self.max_key_bytes == 0 {
            return Err(Error::config("max_key_bytes", "must be greater than zero"));
        }
        positive("command_timeout", self.command_timeout)?;
        positive("connect_timeout", self.connect_timeout)?;
        if self.pool_size == 0 {
            return Err(Error::config("pool_size", "must be at least 1"));
        }
        positive("lock_ttl", self.lock_ttl)?;
        positive("lock_poll", self.lock_poll)?;
        if let Some(d) = self.load_timeout {
            positive("load_timeout", d)?;
        }
        positive("probe_interval", self.probe_interval)?;
        positive("metrics_interval", self.metrics_interval)?;
        Ok(())
    }
}

/// Where the Redis layer comes from.
#[derive(Clone)]
pub(crate) enum RedisSource {
    Url(String),
    Config(Box<RedisConfig>),
    Client(Client),
    Pool(Pool),
}

impl fmt::Debug for RedisSource {
    // Never prints credentials: a URL is shown without its password, a config not at all.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url(url) => f.debug_tuple("Url").field(&redact_url(url)).finish(),
            Self::Config(_) => f.write_str("Config(..)"),
            Self::Client(c) => f.debug_tuple("Client").field(&c.id()).finish(),
            Self::Pool(p) => f.debug_tuple("Pool").field(&p.size()).finish(),
        }
    }
}

use fred::interfaces::ClientLike as _;

/// `scheme://user:***@host/..`: the password of a URL hidden.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "<unparsable url>".to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let user = authority[..at].split(':').next().unwrap_or("");
    format!("{}{user}:***{}", &url[..scheme_end + 3], &rest[at..])
}

/// Builds a [`Cache`]. Every setter has the default of [`CacheConfig`]; without a Redis source
/// the cache runs in memory only.
#[must_use]
pub struct CacheBuilder {
    pub(crate) config: CacheConfig,
    pub(crate) redis: Option<RedisSource>,
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) reconnect: Option<ReconnectPolicy>,
    pub(crate) clock: Arc<dyn Clock>,
    /// `true` once `clock` was called: L1 hits then always check freshness with that clock.
    pub(crate) custom_clock: bool,
    #[cfg(feature = "hotkey")]
    pub(crate) hotkeys: Option<unite_hotkey::HotKeyDetector>,
}

impl fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("config", &self.config)
            .field("redis", &self.redis)
            .field("breaker", &self.breaker)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Default for CacheBuilder {
    fn default() -> Self {
        Self {
            config: CacheConfig::default(),
            redis: None,
            breaker: None,
            reconnect: None,
            clock: Arc::new(SystemClock),
            custom_clock: false,
            #[cfg(feature = "hotkey")]
            hotkeys: None,
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$name = value;
            self
        }
    };
}

impl CacheBuilder {
    /// A builder with the default configuration, in memory only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: CacheConfig) -> Self {
        self.config = config;
        self
    }

    /// Key prefix of this cache in Redis (see [`CacheConfig::namespace`]).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = namespace.into();
        self
    }

    setter!(/// See [`CacheConfig::default_ttl`].
        default_ttl: Duration);
    setter!(/// See [`CacheConfig::negative_ttl`].
        negative_ttl: Duration);
    setter!(/// See [`CacheConfig::ttl_jitter`].
        ttl_jitter: f64);
    setter!(/// See [`CacheConfig::stale_grace`].
        stale_grace: Duration);
    setter!(/// See [`CacheConfig::l1_enabled`].
        l1_enabled: bool);
    setter!(/// See [`CacheConfig::l1_max_bytes`].
        l1_max_bytes: u64);
    setter!(/// See [`CacheConfig::max_value_bytes`].
        max_value_bytes: usize);
    setter!(/// See [`CacheConfig::max_key_bytes`].
        max_key_bytes: usize);
    setter!(/// See [`CacheConfig::codec`].
        codec: Codec);
    setter!(/// See [`CacheConfig::command_timeout`].
        command_timeout: Duration);
    setter!(/// See [`CacheConfig::connect_timeout`].
        connect_timeout: Duration);
    setter!(/// See [`CacheConfig::pool_size`].
        pool_size: usize);
    setter!(/// See [`CacheConfig::distributed_lock`].
        distributed_lock: bool);
    setter!(/// See [`CacheConfig::lock_ttl`].
        lock_ttl: Duration);
    setter!(/// See [`CacheConfig::lock_wait`].
        lock_wait: Duration);
    setter!(/// See [`CacheConfig::lock_poll`].
        lock_poll: Duration);
    setter!(/// See [`CacheConfig::invalidation`].
        invalidation: bool);
    setter!(/// See [`CacheConfig::probe_interval`].
        probe_interval: Duration);
    setter!(/// See [`CacheConfig::metrics_interval`].
        metrics_interval: Duration);

    /// See [`CacheConfig::refresh_ahead`].
    pub fn refresh_ahead(mut self, fraction: f64) -> Self {
        self.config.refresh_ahead = Some(fraction);
        self
    }

    /// See [`CacheConfig::l1_ttl`].
    pub fn l1_ttl(mut self, ttl: Duration) -> Self {
        self.config.l1_ttl = Some(ttl);
        self
    }

    /// See [`CacheConfig::l1_tti`].
    pub fn l1_tti(mut self, tti: Duration) -> Self {
        self.config.l1_tti = Some(tti);
        self
    }

    /// See [`CacheConfig::load_timeout`].
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.config.load_timeout = Some(timeout);
        self
    }

    /// Use Redis at this URL (`redis://`, `rediss://`, `redis-sentinel://`, `redis-cluster://`;
    /// see fred's `Config::from_url`). The cache builds its own pool with `command_timeout`,
    /// fail-fast commands and a reconnect policy.
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis = Some(RedisSource::Url(url.into()));
        self
    }

    /// Use Redis with a full fred config (standalone, Sentinel or Cluster, TLS, credentials).
    /// The cache builds its own pool from it, as with [`redis_url`](Self::redis_url).
    pub fn redis_config(mut self, config: RedisConfig) -> Self {
        self.redis = Some(RedisSource::Config(Box::new(config)));
        self
    }

    /// Use an existing fred client (shared with other code). The cache connects it if it is
    /// not connected yet, and never quits it. Each command still gets `command_timeout` and
    /// fail-fast through per-command options; the client's own reconnect policy applies.
    pub fn redis_client(mut self, client: Client) -> Self {
        self.redis = Some(RedisSource::Client(client));
        self
    }

    /// Use an existing fred pool, like [`redis_client`](Self::redis_client).
    pub fn redis_pool(mut self, pool: Pool) -> Self {
        self.redis = Some(RedisSource::Pool(pool));
        self
    }

    /// The breaker around every Redis call. Default: one named `"cache-redis"` that opens at
    /// a 50 % failure rate over the last 20 calls (at least 10), stays open 1 s (doubling up to
    /// 30 s on repeated opens) and lets 3 trial calls through.
    pub fn breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// The reconnect policy of the pool the cache builds. Default: exponential from 100 ms to
    /// 2 s, forever.
    pub fn reconnect_policy(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = Some(policy);
        self
    }

    /// The time source for entry expiry (default [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self.custom_clock = true;
        self
    }

    /// Record every access in this hot-key detector; keys it reports above its threshold are
    /// refreshed ahead of expiry (at 80 % of their lifetime unless
    /// [`refresh_ahead`](Self::refresh_ahead) says otherwise). Requires the `hotkey` feature.
    #[cfg(feature = "hotkey")]
    pub fn hotkeys(mut self, detector: unite_hotkey::HotKeyDetector) -> Self {
        self.hotkeys = Some(detector);
        self
    }

    /// Validates the configuration, builds L1, and connects to Redis if one was given.
    ///
    /// A Redis server that does not answer within `connect_timeout` is not an error: the cache
    /// starts degraded and picks Redis up when it answers. Must be called within a Tokio
    /// runtime.
    ///
    /// # Errors
    /// [`Error::Config`] / [`Error::Breaker`] for a bad setting, [`Error::Redis`] for a Redis
    /// URL or config that cannot make a client.
    pub async fn build(self) -> Result<Cache, Error> {
        Cache::from_builder(self).await
    }
}
