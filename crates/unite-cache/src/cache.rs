//! The `Cache` type: lookups, writes, single-flight loads, invalidation.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use fred::bytes::Bytes;
use fred::interfaces::ClientLike as _;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::AbortHandle;
use unite_breaker::{CircuitBreaker, State, Window};

use crate::codec::{self, Envelope, Times};
use crate::config::CacheBuilder;
use crate::l1::{self, AnyValue, L1, Slot, millis};
use crate::redis::{Batch, L2};
use crate::stats::{self, CacheStats, L1Stats, L2Stats, Provider, Stats, Status, read};
use crate::{CacheConfig, Clock, Error, invalidation};

/// What a cache can hold: any owned serde type that is `Clone + Send + Sync`.
///
/// L1 keeps the decoded value (a hit clones it, it is never decoded again); L2 keeps it
/// encoded with the cache's [`Codec`](crate::Codec). Wrap a large value in `Arc` (serde's `rc`
/// feature) to make L1 hits a reference-count increment.
pub trait CacheValue: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

impl<T> CacheValue for T where T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

/// Number of invalidation epochs keys are spread over (see `Inner::fill_l1`).
const EPOCH_SLOTS: usize = 64;

/// Refresh point used for hot keys when `refresh_ahead` is not set.
#[cfg(feature = "hotkey")]
const HOT_KEY_REFRESH: f64 = 0.8;

/// Keys with this prefix are reserved for the cache's own entries (load locks).
const RESERVED_PREFIX: &str = "__";

/// A layered cache: moka in process (L1) in front of an optional Redis (L2).
///
/// Cheap to clone (an `Arc` inside); clones share everything. See the [crate docs](crate).
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("namespace", &self.inner.cfg.namespace)
            .field("provider", &self.provider())
            .field("instance_id", &self.inner.instance_id)
            .finish_non_exhaustive()
    }
}

/// Where a flight's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    L1,
    L2,
    Loader,
    Stale,
}

/// The shared outcome of one load.
#[derive(Clone)]
struct Loaded {
    value: Option<AnyValue>,
    /// The envelope, when there is one, so a waiter that asked for another type can decode.
    bytes: Option<Bytes>,
    source: Source,
}

impl Loaded {
    fn typed<T: CacheValue>(&self, codec: crate::Codec) -> Result<Option<T>, Error> {
        let Some(value) = &self.value else {
            return Ok(None);
        };
        if let Some(t) = value.downcast_ref::<T>() {
            return Ok(Some(t.clone()));
        }
        match self.bytes.clone().and_then(|b| Envelope::parse(b, codec)) {
            Some(env) => env.decode::<T>(codec),
            None => Err(Error::codec(
                "the key was loaded as another type by a concurrent caller",
            )),
        }
    }
}

type Flight = Shared<BoxFuture<'static, Result<Loaded, Error>>>;

/// A miss loads when nothing fresh is found; a refresh also passes over entries that are due.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Miss,
    Refresh(f64),
}

impl Mode {
    fn accepts(self, times: &Times, now: u64) -> bool {
        times.is_fresh(now)
            && match self {
                Self::Miss => true,
                Self::Refresh(f) => !times.is_due(now, f),
            }
    }
}

enum L2Read {
    /// A fresh entry, decoded into an L1 slot.
    Hit(Arc<Slot>, Bytes),
    /// Nothing usable; maybe an expired or due entry still within the grace period.
    Miss(Option<Envelope>),
    /// Redis failed or the breaker is open.
    Unavailable,
}

enum Waited {
    Value(Loaded),
    Acquired,
    GaveUp,
    Unavailable,
}

/// The best value to serve if the load fails.
struct Fallback {
    value: Option<AnyValue>,
    bytes: Option<Bytes>,
    written_at: u64,
}

pub(crate) struct Inner {
    cfg: CacheConfig,
    /// L1's own expiry is the end of freshness (system clock, no stale grace, no refresh
    /// ahead): moka never returns an entry past it, so a hit needs no clock read.
    trust_l1_expiry: bool,
    l1: Option<L1>,
    l2: Option<L2>,
    clock: Arc<dyn Clock>,
    stats: Arc<Stats>,
    flights: Mutex<HashMap<String, Flight>>,
    epochs: Box<[AtomicU64]>,
    hasher: RandomState,
    instance_id: String,
    tasks: Mutex<Vec<AbortHandle>>,
    #[cfg(feature = "hotkey")]
    hotkeys: Option<unite_hotkey::HotKeyDetector>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes a flight from the map when its task ends, however it ends.
struct FlightGuard {
    inner: Arc<Inner>,
    key: String,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        lock(&self.inner.flights).remove(&self.key);
    }
}

fn default_breaker(cfg: &CacheConfig) -> Result<CircuitBreaker, Error> {
    Ok(CircuitBreaker::builder()
        .name("cache-redis")
        .failure_rate_threshold(0.5)
        .window(Window::Count(20))
        .minimum_calls(10)
        .open_duration(Duration::from_secs(1))
        .max_open_duration(Duration::from_secs(30))
        .half_open_calls(3)
        .slow_call_duration(cfg.command_timeout)
        .build()?)
}

impl Cache {
    /// A builder with the default configuration (in memory only until a Redis source is set).
    pub fn builder() -> CacheBuilder {
        CacheBuilder::new()
    }

    pub(crate) async fn from_builder(b: CacheBuilder) -> Result<Self, Error> {
        let cfg = b.config;
        cfg.validate()?;
        if !cfg.l1_enabled && b.redis.is_none() {
            return Err(Error::config(
                "l1_enabled",
                "cannot be false without Redis: the cache would hold nothing",
            ));
        }
        let stats = Arc::new(Stats::new());
        let l1 = cfg
            .l1_enabled
            .then(|| l1::build(cfg.l1_max_bytes, cfg.l1_tti, Arc::clone(&b.clock), &stats));
        let l2 = match b.redis {
            Some(source) => {
                let breaker = match b.breaker {
                    Some(breaker) => breaker,
                    None => default_breaker(&cfg)?,
                };
                Some(L2::connect(source, &cfg, breaker, b.reconnect, Arc::clone(&stats)).await?)
            }
            None => None,
        };
        let trust_l1_expiry =
            !b.custom_clock && cfg.stale_grace.is_zero() && cfg.refresh_ahead.is_none();
        #[cfg(feature = "hotkey")]
        let trust_l1_expiry = trust_l1_expiry && b.hotkeys.is_none();
        let inner = Arc::new(Inner {
            trust_l1_expiry,
            l1,
            l2,
            clock: b.clock,
            stats,
            flights: Mutex::new(HashMap::new()),
            epochs: (0..EPOCH_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
            instance_id: format!("{:016x}", rand::random::<u64>()),
            tasks: Mutex::new(Vec::new()),
            #[cfg(feature = "hotkey")]
            hotkeys: b.hotkeys,
            cfg,
        });
        inner.start_tasks().await;
        Ok(Self { inner })
    }

    /// Validates `key` (non-empty, at most `max_key_bytes`, not starting with `__`).
    fn check(&self, key: &str) -> Result<(), Error> {
        if key.is_empty() {
            return Err(Error::InvalidKey {
                reason: "the key is empty",
            });
        }
        if key.len() > self.inner.cfg.max_key_bytes {
            return Err(Error::InvalidKey {
                reason: "the key is longer than max_key_bytes",
            });
        }
        if key.starts_with(RESERVED_PREFIX) {
            return Err(Error::InvalidKey {
                reason: "keys starting with `__` are reserved for the cache",
            });
        }
        Ok(())
    }

    /// The value under `key`, from L1, else from Redis (then kept in L1). `Ok(None)` when no
    /// fresh value is cached, or a "not found" is.
    ///
    /// When Redis fails and L1 holds an expired value within `stale_grace`, that value is
    /// served (stale-if-error).
    ///
    /// # Errors
    /// [`Error::InvalidKey`]. Redis failures are not errors.
    pub async fn get<T: CacheValue>(&self, key: &str) -> Result<Option<T>, Error> {
        self.check(key)?;
        let inner = &*self.inner;
        inner.record_access(key);
        let mut stale = None;
        if let Some(l1) = &inner.l1 {
            if let Some(slot) = l1.get(key).await {
                if inner.trust_l1_expiry || slot.times.is_fresh(inner.clock.now_millis()) {
                    if let Some(v) = slot.typed::<T>() {
                        inner.l1_hit(v.is_none());
                        return Ok(v);
                    }
                } else if inner.clock.now_millis() < slot.stale_until {
                    stale = Some(slot);
                }
            }
            inner.stats.l1_miss();
        }
        let Some(l2) = &inner.l2 else {
            inner.stats.miss();
            return Ok(None);
        };
        let epoch = inner.epoch(key);
        match inner.l2_read::<T>(l2, key, Mode::Miss, true).await {
            L2Read::Hit(slot, _) => {
                if let Some(v) = slot.typed::<T>() {
                    inner.stats.hit();
                    if v.is_none() {
                        inner.stats.negative_hit();
                    }
                    inner.fill_l1(key, slot, epoch).await;
                    return Ok(v);
                }
                inner.stats.miss();
                Ok(None)
            }
            L2Read::Miss(_) => {
                inner.stats.miss();
                Ok(None)
            }
            L2Read::Unavailable => {
                if let Some(v) = stale.and_then(|s| s.typed::<T>()) {
                    inner.stats.stale_served();
                    inner.stats.hit();
                    return Ok(v);
                }
                inner.stats.miss();
                Ok(None)
            }
        }
    }

    /// The values under `keys`, in order: L1 first, then one MGET (one pipeline on a
    /// Cluster) for the keys L1 did not have.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for the first bad key (nothing is read then).
    pub async fn get_many<K, T>(&self, keys: &[K]) -> Result<Vec<Option<T>>, Error>
    where
        K: AsRef<str>,
        T: CacheValue,
    {
        for key in keys {
            self.check(key.as_ref())?;
        }
        let inner = &*self.inner;
        let now = inner.clock.now_millis();
        let mut out: Vec<Option<T>> = vec![None; keys.len()];
        let mut missing: Vec<(usize, Option<Arc<Slot>>)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let key = key.as_ref();
            inner.record_access(key);
            let Some(l1) = &inner.l1 else {
                missing.push((i, None));
                continue;
            };
            let mut stale = None;
            if let Some(slot) = l1.get(key).await {
                if slot.times.is_fresh(now) {
                    if let Some(v) = slot.typed::<T>() {
                        inner.l1_hit(v.is_none());
                        out[i] = v;
                        continue;
                    }
                } else if now < slot.stale_until {
                    stale = Some(slot);
                }
            }
            inner.stats.l1_miss();
            missing.push((i, stale));
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let Some(l2) = &inner.l2 else {
            for _ in &missing {
                inner.stats.miss();
            }
            return Ok(out);
        };
        let epochs: Vec<u64> = missing
            .iter()
            .map(|(i, _)| inner.epoch(keys[*i].as_ref()))
            .collect();
        let full: Vec<String> = missing
            .iter()
            .map(|(i, _)| inner.full_key(keys[*i].as_ref()))
            .collect();
        match l2.mget(full).await {
            Ok(values) if values.len() == missing.len() => {
                for (((i, _), bytes), epoch) in missing.iter().zip(values).zip(epochs) {
                    let key = keys[*i].as_ref();
                    let read = match bytes {
                        Some(b) => inner.accept::<T>(b, Mode::Miss, true),
                        None => {
                            inner.stats.l2_miss();
                            L2Read::Miss(None)
                        }
                    };
                    match read {
                        L2Read::Hit(slot, _) => match slot.typed::<T>() {
                            Some(v) => {
                                inner.stats.hit();
                                if v.is_none() {
                                    inner.stats.negative_hit();
                                }
                                out[*i] = v;
                                inner.fill_l1(key, slot, epoch).await;
                            }
                            None => inner.stats.miss(),
                        },
                        L2Read::Miss(_) | L2Read::Unavailable => inner.stats.miss(),
                    }
                }
            }
            _ => {
                for (i, stale) in missing {
                    match stale.and_then(|s| s.typed::<T>()) {
                        Some(v) => {
                            inner.stats.stale_served();
                            inner.stats.hit();
                            out[i] = v;
                        }
                        None => inner.stats.miss(),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Cache-aside with the default TTL: the cached value, or the loader's (then cached).
    /// See [`get_or_load_with_ttl`](Self::get_or_load_with_ttl).
    ///
    /// # Errors
    /// As [`get_or_load_with_ttl`](Self::get_or_load_with_ttl).
    pub async fn get_or_load<T, F, Fut, E>(&self, key: &str, loader: F) -> Result<Option<T>, Error>
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let ttl = self.inner.cfg.default_ttl;
        self.get_or_load_with_ttl(key, ttl, loader).await
    }

    /// Cache-aside: the cached value, or the loader's, which is then cached for `ttl` (minus
    /// jitter) in L1 and Redis. A loader's `Ok(None)` ("not found") is cached for
    /// `negative_ttl`.
    ///
    /// - However many callers miss on one key at once, the loader runs once in this instance
    ///   (the others wait for its result), and once across instances sharing Redis (a short
    ///   Redis lock; the others poll Redis for the value, and load themselves if the holder
    ///   dies or `lock_wait` passes).
    /// - The load runs in its own task: a caller that gives up does not cancel it for the
    ///   others, and a panicking loader is contained ([`Error::LoaderPanicked`]).
    /// - With `refresh_ahead`, a hit on an entry past that fraction of its lifetime is served
    ///   and the loader runs once in the background.
    /// - When the loader fails and an expired value within `stale_grace` is at hand (L1 or
    ///   Redis), that value is served and the error counted.
    /// - When Redis is down, this is L1 + loader; nothing fails because of Redis.
    ///
    /// The loader is `'static` because it may outlive the call (the load is shared, and a
    /// refresh runs in the background): move clones of what it needs into it.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::InvalidTtl`], [`Error::Loader`] /
    /// [`Error::LoadTimeout`] / [`Error::LoaderPanicked`] when the load failed with no stale
    /// value to serve, [`Error::Codec`] when the value cannot be serialized.
    pub async fn get_or_load_with_ttl<T, F, Fut, E>(
        &self,
        key: &str,
        ttl: Duration,
        loader: F,
    ) -> Result<Option<T>, Error>
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        self.check(key)?;
        if ttl.is_zero() {
            return Err(Error::InvalidTtl);
        }
        let inner = &*self.inner;
        inner.record_access(key);
        let mut stale = None;
        if let Some(l1) = &inner.l1 {
            if let Some(slot) = l1.get(key).await {
                if inner.trust_l1_expiry
                    && let Some(v) = slot.typed::<T>()
                {
                    inner.l1_hit(v.is_none());
                    return Ok(v);
                }
                let now = inner.clock.now_millis();
                if slot.times.is_fresh(now) {
                    if let Some(v) = slot.typed::<T>() {
                        inner.l1_hit(v.is_none());
                        if let Some(fraction) = inner.refresh_due(key, &slot.times, now)
                            && !slot.refreshing.swap(true, Ordering::AcqRel)
                        {
                            self.start_refresh(key, ttl, loader, fraction, slot);
                        }
                        return Ok(v);
                    }
                } else if now < slot.stale_until && slot.holds::<T>() {
                    stale = Some(slot);
                }
            }
            inner.stats.l1_miss();
        }
        let (flight, leader) = inner.join_or_start(key, || {
            Inner::spawn_flight(Arc::clone(&self.inner), key, Mode::Miss, ttl, loader, stale)
        });
        if !leader {
            inner.stats.coalesced();
        }
        let loaded = flight.await?;
        match loaded.source {
            Source::L1 | Source::L2 | Source::Stale => {
                inner.stats.hit();
                if loaded.value.is_none() {
                    inner.stats.negative_hit();
                }
            }
            Source::Loader => inner.stats.miss(),
        }
        loaded.typed::<T>(inner.cfg.codec)
    }

    fn start_refresh<T, F, Fut, E>(
        &self,
        key: &str,
        ttl: Duration,
        loader: F,
        fraction: f64,
        slot: Arc<Slot>,
    ) where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let (_, leader) = self.inner.join_or_start(key, || {
            Inner::spawn_flight(
                Arc::clone(&self.inner),
                key,
                Mode::Refresh(fraction),
                ttl,
                loader,
                Some(slot),
            )
        });
        if leader {
            self.inner.stats.refresh();
        }
    }

    /// Stores `value` under `key` for `ttl` (minus jitter) in L1 and Redis, and tells the
    /// other instances to drop their L1 copy.
    ///
    /// A value over `max_value_bytes` is refused before anything is written. When Redis is
    /// down the value is kept in L1 only (and the write counted as an L2 error or skip).
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::InvalidTtl`], [`Error::ValueTooLarge`],
    /// [`Error::Codec`].
    pub async fn set<T: CacheValue>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), Error> {
        self.check(key)?;
        if ttl.is_zero() {
            return Err(Error::InvalidTtl);
        }
        let inner = &*self.inner;
        let now = inner.clock.now_millis();
        let times = inner.times(now, ttl);
        let bytes = codec::encode(
            inner.cfg.codec,
            Some(value),
            times,
            inner.cfg.max_value_bytes,
        )?;
        let any: AnyValue = Arc::new(value.clone());
        inner.write(vec![(key, Some(any), bytes, times)], now).await;
        Ok(())
    }

    /// Stores several values with one TTL: one pipeline to Redis (the SETs and one
    /// invalidation message). Every value is encoded and checked first; if any is refused,
    /// nothing is written.
    ///
    /// # Errors
    /// As [`set`](Self::set), for the first item at fault.
    pub async fn set_many<K, T>(&self, items: &[(K, T)], ttl: Duration) -> Result<(), Error>
    where
        K: AsRef<str>,
        T: CacheValue,
    {
        if ttl.is_zero() {
            return Err(Error::InvalidTtl);
        }
        let inner = &*self.inner;
        let now = inner.clock.now_millis();
        let mut entries = Vec::with_capacity(items.len());
        for (key, value) in items {
            let key = key.as_ref();
            self.check(key)?;
            let times = inner.times(now, ttl);
            let bytes = codec::encode(
                inner.cfg.codec,
                Some(value),
                times,
                inner.cfg.max_value_bytes,
            )?;
            entries.push((key, Some(Arc::new(value.clone()) as AnyValue), bytes, times));
        }
        if !entries.is_empty() {
            inner.write(entries, now).await;
        }
        Ok(())
    }

    /// Removes `key` from L1 and Redis, and from the L1 of the other instances.
    ///
    /// # Errors
    /// [`Error::InvalidKey`]. Redis failures are not errors (the L2 copy then lives until
    /// its TTL).
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        self.delete_many(&[key]).await
    }

    /// Removes several keys: one DEL and one invalidation message.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for the first bad key (nothing is removed then).
    pub async fn delete_many<K: AsRef<str>>(&self, keys: &[K]) -> Result<(), Error> {
        for key in keys {
            self.check(key.as_ref())?;
        }
        if keys.is_empty() {
            return Ok(());
        }
        let inner = &*self.inner;
        let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
        for key in &keys {
            inner.bump_epoch(key);
        }
        if let Some(l2) = &inner.l2 {
            let batch = Batch {
                dels: keys.iter().map(|k| inner.full_key(k)).collect(),
                publish: inner.message(&keys),
                ..Batch::default()
            };
            let publishes = batch.publish.is_some();
            if l2.exec(batch).await.is_ok() && publishes {
                inner.stats.invalidation_sent();
            }
        }
        for key in &keys {
            inner.bump_epoch(key);
            if let Some(l1) = &inner.l1 {
                l1.invalidate(*key).await;
            }
        }
        inner.stats.deletes(keys.len());
        Ok(())
    }

    /// Drops every L1 entry of this instance (Redis is untouched).
    pub fn clear_local(&self) {
        self.inner.clear_l1();
    }

    /// Applies moka's pending maintenance (evictions, expirations, counts) now, so that
    /// [`stats`](Self::stats) reports exact L1 entry and byte counts.
    pub async fn run_pending_tasks(&self) {
        if let Some(l1) = &self.inner.l1 {
            l1.run_pending_tasks().await;
        }
    }

    /// `redis` or `in-memory`.
    #[must_use]
    pub fn provider(&self) -> Provider {
        if self.inner.l2.is_some() {
            Provider::Redis
        } else {
            Provider::InMemory
        }
    }

    /// `degraded` while Redis is configured but its breaker is not closed or the connection
    /// is down; `healthy` otherwise (always, in memory only).
    #[must_use]
    pub fn status(&self) -> Status {
        match &self.inner.l2 {
            Some(l2) if l2.breaker.state() != State::Closed || !l2.is_connected() => {
                Status::Degraded
            }
            _ => Status::Healthy,
        }
    }

    /// The breaker around Redis (`None` in memory only), e.g. to force it open.
    #[must_use]
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.inner.l2.as_ref().map(|l2| &l2.breaker)
    }

    /// The namespace (key prefix in Redis).
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.inner.cfg.namespace
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &CacheConfig {
        &self.inner.cfg
    }

    /// The Redis key of `key`: the namespace followed by `key`.
    #[must_use]
    pub fn redis_key(&self, key: &str) -> String {
        self.inner.full_key(key)
    }

    /// The Redis channel carrying this namespace's invalidations.
    #[must_use]
    pub fn invalidation_channel(&self) -> String {
        format!("{}__invalidate", self.inner.cfg.namespace)
    }

    /// This instance's id, carried in its invalidation messages.
    #[must_use]
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// Counters and state for the health endpoint (also refreshes the entry/byte gauges).
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        let inner = &*self.inner;
        inner.update_gauges();
        let c = &inner.stats.c;
        let hits = read(&c.hits);
        let misses = read(&c.misses);
        let (l1_hits, l1_misses) = (read(&c.l1_hits), read(&c.l1_misses));
        let (entries, bytes) = inner
            .l1
            .as_ref()
            .map_or((0, 0), |l1| (l1.entry_count(), l1.weighted_size()));
        let l1 = L1Stats {
            enabled: inner.l1.is_some(),
            hits: l1_hits,
            misses: l1_misses,
            hit_rate: stats::rate(l1_hits, l1_misses),
            entries,
            bytes,
            max_bytes: inner.cfg.l1_max_bytes,
            evictions: read(&c.l1_evictions),
            expirations: read(&c.l1_expirations),
        };
        let l2 = inner.l2.as_ref().map(|l2| {
            let (h, m) = (read(&c.l2_hits), read(&c.l2_misses));
            L2Stats {
                hits: h,
                misses: m,
                hit_rate: stats::rate(h, m),
                errors: read(&c.l2_errors),
                skipped: read(&c.l2_skipped),
                corrupt: read(&c.l2_corrupt),
                bytes_read: read(&c.l2_bytes_read),
                bytes_written: read(&c.l2_bytes_written),
                invalidations_sent: read(&c.invalidations_sent),
                invalidations_received: read(&c.invalidations_received),
                resyncs: read(&c.resyncs),
                connected: l2.is_connected(),
            }
        });
        CacheStats {
            status: self.status(),
            provider: self.provider(),
            hit_rate: stats::rate(hits, misses),
            hits,
            misses,
            total_operations: hits + misses,
            writes: read(&c.writes),
            deletes: read(&c.deletes),
            negative_hits: read(&c.negative_hits),
            stale_served: read(&c.stale_served),
            loads: inner.stats.load_stats(),
            l1,
            l2,
            circuit_state: inner.l2.as_ref().map(|l2| l2.breaker.state()),
        }
    }

    /// The hot-key detector fed by this cache, if any. Requires the `hotkey` feature.
    #[cfg(feature = "hotkey")]
    #[must_use]
    pub fn hotkeys(&self) -> Option<&unite_hotkey::HotKeyDetector> {
        self.inner.hotkeys.as_ref()
    }
}

impl Inner {
    async fn start_tasks(self: &Arc<Self>) {
        let mut tasks = Vec::new();
        let weak = Arc::downgrade(self);
        tasks.push(
            tokio::spawn(gauges_task(weak.clone(), self.cfg.metrics_interval)).abort_handle(),
        );
        if let Some(l2) = &self.l2 {
            tasks.push(tokio::spawn(breaker_log_task(l2.breaker.clone())).abort_handle());
            tasks.push(
                tokio::spawn(probe_task(weak.clone(), self.cfg.probe_interval)).abort_handle(),
            );
            if let Some(sub) = l2.subscriber() {
                // Let the first connection settle so its connect event is not taken for a
                // reconnect (which would clear L1 right after start-up).
                let _ =
                    tokio::time::timeout(self.cfg.connect_timeout, sub.wait_for_connect()).await;
                let (tx, mut rx) = tokio::sync::watch::channel(false);
                tasks.push(
                    tokio::spawn(invalidation::run(
                        weak,
                        sub.clone(),
                        l2.channel.clone(),
                        tx,
                        self.cfg.connect_timeout,
                    ))
                    .abort_handle(),
                );
                if tokio::time::timeout(self.cfg.connect_timeout, rx.wait_for(|s| *s))
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        namespace = %self.cfg.namespace,
                        "cache invalidation channel not subscribed yet; retrying in the background"
                    );
                }
            }
        }
        lock(&self.tasks).extend(tasks);
    }

    #[inline]
    fn l1_hit(&self, negative: bool) {
        self.stats.l1_hit();
        self.stats.hit();
        if negative {
            self.stats.negative_hit();
        }
    }

    #[inline]
    fn record_access(&self, _key: &str) {
        #[cfg(feature = "hotkey")]
        if let Some(h) = &self.hotkeys {
            h.record(_key);
        }
    }

    /// The refresh fraction if this entry is due for a refresh-ahead.
    fn refresh_due(&self, _key: &str, times: &Times, now: u64) -> Option<f64> {
        if let Some(f) = self.cfg.refresh_ahead {
            return times.is_due(now, f).then_some(f);
        }
        #[cfg(feature = "hotkey")]
        if let Some(h) = &self.hotkeys
            && times.is_due(now, HOT_KEY_REFRESH)
            && let Some(threshold) = h.config().threshold_per_minute
            && h.estimate(_key) >= threshold.get()
        {
            return Some(HOT_KEY_REFRESH);
        }
        None
    }

    fn full_key(&self, key: &str) -> String {
        let mut s = String::with_capacity(self.cfg.namespace.len() + key.len());
        s.push_str(&self.cfg.namespace);
        s.push_str(key);
        s
    }

    fn lock_key(&self, key: &str) -> String {
        format!("{}{RESERVED_PREFIX}lock:{key}", self.cfg.namespace)
    }

    /// Written-at now, expiring after `ttl` shortened by up to `ttl_jitter`.
    fn times(&self, now: u64, ttl: Duration) -> Times {
        let ttl_ms = millis(ttl).max(1);
        let jitter = if self.cfg.ttl_jitter > 0.0 {
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )]
            let max = (ttl_ms as f64 * self.cfg.ttl_jitter) as u64;
            if max == 0 {
                0
            } else {
                rand::random_range(0..=max)
            }
        } else {
            0
        };
        Times {
            written_at: now,
            expires_at: now.saturating_add((ttl_ms - jitter).max(1)),
        }
    }

    /// How long Redis keeps an entry: until expiry plus the stale grace.
    fn redis_ttl(&self, times: &Times, now: u64) -> Duration {
        Duration::from_millis(times.expires_at.saturating_sub(now).max(1)) + self.cfg.stale_grace
    }

    fn slot(&self, value: Option<AnyValue>, times: Times, len: usize, now: u64) -> Arc<Slot> {
        Arc::new(Slot::new(
            value,
            times,
            self.cfg.stale_grace,
            len,
            now,
            self.cfg.l1_ttl,
        ))
    }

    fn epoch_slot(&self, key: &str) -> &AtomicU64 {
        // The modulo keeps the index in range; truncation of the hash is intended.
        #[allow(clippy::cast_possible_truncation)]
        let i = (self.hasher.hash_one(key) % EPOCH_SLOTS as u64) as usize;
        &self.epochs[i]
    }

    fn epoch(&self, key: &str) -> u64 {
        self.epoch_slot(key).load(Ordering::Acquire)
    }

    fn bump_epoch(&self, key: &str) {
        self.epoch_slot(key).fetch_add(1, Ordering::AcqRel);
    }

    /// Puts a value read from Redis or loaded into L1, unless the key was written,
    /// deleted or invalidated since `epoch` was read (which would make it older than what
    /// is now current). A change racing with the insert evicts it again.
    async fn fill_l1(&self, key: &str, slot: Arc<Slot>, epoch: u64) {
        let Some(l1) = &self.l1 else { return };
        if self.epoch(key) != epoch {
            return;
        }
        l1.insert(key.to_owned(), slot).await;
        if self.epoch(key) != epoch {
            l1.invalidate(key).await;
        }
    }

    fn clear_l1(&self) {
        for e in &*self.epochs {
            e.fetch_add(1, Ordering::AcqRel);
        }
        if let Some(l1) = &self.l1 {
            l1.invalidate_all();
        }
    }

    pub(crate) fn resync(&self, why: &'static str) {
        tracing::info!(namespace = %self.cfg.namespace, reason = why, "clearing L1: invalidations may have been missed");
        self.stats.resync();
        self.clear_l1();
    }

    pub(crate) async fn apply_invalidation(&self, payload: &[u8]) {
        let Ok(msg) = serde_json::from_slice::<invalidation::Message<'_>>(payload) else {
            tracing::debug!("ignoring a malformed cache invalidation message");
            return;
        };
        if msg.instance == self.instance_id {
            return;
        }
        for key in &msg.keys {
            self.bump_epoch(key);
            if let Some(l1) = &self.l1 {
                l1.invalidate(*key).await;
            }
        }
        self.stats.invalidation_received(msg.keys.len());
    }

    fn message(&self, keys: &[&str]) -> Option<String> {
        self.cfg
            .invalidation
            .then(|| invalidation::encode(&self.instance_id, keys.to_vec()))
    }

    /// Writes entries: Redis first (one pipeline with the invalidation message), then L1.
    async fn write(&self, entries: Vec<(&str, Option<AnyValue>, Bytes, Times)>, now: u64) {
        for (key, ..) in &entries {
            self.bump_epoch(key);
        }
        if let Some(l2) = &self.l2 {
            let keys: Vec<&str> = entries.iter().map(|(k, ..)| *k).collect();
            let written: usize = entries.iter().map(|(_, _, b, _)| b.len()).sum();
            let batch = Batch {
                sets: entries
                    .iter()
                    .map(|(k, _, b, t)| (self.full_key(k), b.clone(), self.redis_ttl(t, now)))
                    .collect(),
                publish: self.message(&keys),
                ..Batch::default()
            };
            let publishes = batch.publish.is_some();
            if l2.exec(batch).await.is_ok() {
                self.stats.l2_written(written);
                if publishes {
                    self.stats.invalidation_sent();
                }
            }
        }
        let n = entries.len();
        for (key, value, bytes, times) in entries {
            // Bumped again after the Redis write: a fill that read Redis before it cannot
            // land in L1 after the insert below.
            self.bump_epoch(key);
            if let Some(l1) = &self.l1 {
                l1.insert(key.to_owned(), self.slot(value, times, bytes.len(), now))
                    .await;
            }
        }
        self.stats.writes(n);
    }

    /// Parses and decodes an L2 payload as `T`. Anything unreadable is a miss, never a
    /// panic.
    fn accept<T: CacheValue>(&self, bytes: Bytes, mode: Mode, count: bool) -> L2Read {
        self.accept_l2_typed(bytes, mode, count, |env| {
            env.decode::<T>(self.cfg.codec)
                .ok()
                .map(|v| v.map(|t| Arc::new(t) as AnyValue))
        })
    }

    fn accept_l2_typed(
        &self,
        bytes: Bytes,
        mode: Mode,
        count: bool,
        decode: impl FnOnce(&Envelope) -> Option<Option<AnyValue>>,
    ) -> L2Read {
        let len = bytes.len();
        let Some(env) = Envelope::parse(bytes, self.cfg.codec) else {
            self.stats.l2_corrupt();
            if count {
                self.stats.l2_miss();
            }
            return L2Read::Miss(None);
        };
        let now = self.clock.now_millis();
        if !mode.accepts(&env.times, now) {
            if count {
                self.stats.l2_miss();
            }
            return L2Read::Miss(Some(env));
        }
        match decode(&env) {
            Some(value) => {
                if count {
                    self.stats.l2_hit(len);
                }
                let slot = self.slot(value, env.times, len, now);
                L2Read::Hit(slot, env.bytes)
            }
            None => {
                self.stats.l2_corrupt();
                if count {
                    self.stats.l2_miss();
                }
                L2Read::Miss(None)
            }
        }
    }

    fn join_or_start(&self, key: &str, start: impl FnOnce() -> Flight) -> (Flight, bool) {
        let mut flights = lock(&self.flights);
        if let Some(f) = flights.get(key) {
            return (f.clone(), false);
        }
        let f = start();
        flights.insert(key.to_owned(), f.clone());
        (f, true)
    }

    fn spawn_flight<T, F, Fut, E>(
        inner: Arc<Self>,
        key: &str,
        mode: Mode,
        ttl: Duration,
        loader: F,
        stale: Option<Arc<Slot>>,
    ) -> Flight
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let guard = FlightGuard {
            inner,
            key: key.to_owned(),
        };
        let handle = tokio::spawn(async move {
            let guard = guard;
            guard
                .inner
                .run_flight::<T, F, Fut, E>(&guard.key, mode, ttl, loader, stale)
                .await
        });
        async move { handle.await.unwrap_or(Err(Error::LoaderPanicked)) }
            .boxed()
            .shared()
    }

    async fn run_flight<T, F, Fut, E>(
        self: &Arc<Self>,
        key: &str,
        mode: Mode,
        ttl: Duration,
        loader: F,
        stale: Option<Arc<Slot>>,
    ) -> Result<Loaded, Error>
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let epoch = self.epoch(key);
        let now = self.clock.now_millis();
        // A flight that just ended may have filled L1 between our caller's miss and now.
        if let Some(l1) = &self.l1
            && let Some(slot) = l1.get(key).await
            && mode.accepts(&slot.times, now)
            && slot.holds::<T>()
        {
            return Ok(Loaded {
                value: slot.value.clone(),
                bytes: None,
                source: Source::L1,
            });
        }
        let mut fallback = stale.map(|s| Fallback {
            value: s.value.clone(),
            bytes: None,
            written_at: s.times.written_at,
        });
        let mut l2_up = self.l2.is_some();
        let mut held: Option<(String, String)> = None;
        if let Some(l2) = &self.l2 {
            match self.l2_read::<T>(l2, key, mode, true).await {
                L2Read::Hit(slot, bytes) => {
                    let loaded = Loaded {
                        value: slot.value.clone(),
                        bytes: Some(bytes),
                        source: Source::L2,
                    };
                    self.fill_l1(key, slot, epoch).await;
                    return Ok(loaded);
                }
                L2Read::Miss(Some(env)) => self.consider_fallback::<T>(&mut fallback, env, now),
                L2Read::Miss(None) => {}
                L2Read::Unavailable => l2_up = false,
            }
            if l2_up && self.cfg.distributed_lock {
                let lock_key = self.lock_key(key);
                let token = format!("{:032x}", rand::random::<u128>());
                match l2.try_lock(&lock_key, &token, self.cfg.lock_ttl).await {
                    Ok(true) => {
                        self.stats.lock_acquired();
                        held = Some((lock_key, token));
                    }
                    Ok(false) => {
                        self.stats.lock_wait();
                        match self
                            .wait_for_holder::<T>(l2, key, &lock_key, &token, mode, epoch)
                            .await
                        {
                            Waited::Value(loaded) => {
                                self.stats.lock_wait_hit();
                                return Ok(loaded);
                            }
                            Waited::Acquired => {
                                self.stats.lock_acquired();
                                held = Some((lock_key, token));
                            }
                            Waited::GaveUp => self.stats.lock_timeout(),
                            Waited::Unavailable => l2_up = false,
                        }
                    }
                    Err(_) => l2_up = false,
                }
                // Another instance may have stored the value and released its lock between
                // our read and our lock: look once more before loading.
                if let Some(lock) = held.take() {
                    if let L2Read::Hit(slot, bytes) = self.l2_read::<T>(l2, key, mode, false).await
                    {
                        self.release(lock).await;
                        self.stats.l2_hit(bytes.len());
                        let loaded = Loaded {
                            value: slot.value.clone(),
                            bytes: Some(bytes),
                            source: Source::L2,
                        };
                        self.fill_l1(key, slot, epoch).await;
                        return Ok(loaded);
                    }
                    held = Some(lock);
                }
            }
        }

        let started = Instant::now();
        let outcome = self.call_loader(loader).await;
        self.stats.load(started.elapsed(), outcome.is_err());

        match outcome {
            Ok(value) => {
                let result = self
                    .store_loaded(key, value, ttl, epoch, l2_up, held.take())
                    .await;
                if let Some(lock) = held {
                    self.release(lock).await;
                }
                result
            }
            Err(e) => {
                if let Some(lock) = held {
                    self.release(lock).await;
                }
                match fallback {
                    Some(fb) => {
                        tracing::warn!(namespace = %self.cfg.namespace, error = %e, "cache loader failed; serving a stale value");
                        self.stats.stale_served();
                        Ok(Loaded {
                            value: fb.value,
                            bytes: fb.bytes,
                            source: Source::Stale,
                        })
                    }
                    None => Err(e),
                }
            }
        }
    }

    async fn call_loader<T, F, Fut, E>(&self, loader: F) -> Result<Option<T>, Error>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let fut = AssertUnwindSafe(async move { loader().await }).catch_unwind();
        let outcome = match self.cfg.load_timeout {
            Some(limit) => match tokio::time::timeout(limit, fut).await {
                Ok(r) => r,
                Err(_) => return Err(Error::LoadTimeout),
            },
            None => fut.await,
        };
        match outcome {
            Err(_) => Err(Error::LoaderPanicked),
            Ok(Err(e)) => Err(Error::Loader(Arc::from(e.into()))),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Caches a loaded value (or "not found") in Redis and L1, releasing the load lock in
    /// the same pipeline. Skips both when the key changed during the load.
    async fn store_loaded<T: CacheValue>(
        &self,
        key: &str,
        value: Option<T>,
        ttl: Duration,
        epoch: u64,
        l2_up: bool,
        mut held: Option<(String, String)>,
    ) -> Result<Loaded, Error> {
        let cacheable = value.is_some() || !self.cfg.negative_ttl.is_zero();
        let ttl = if value.is_some() {
            ttl
        } else {
            self.cfg.negative_ttl
        };
        let now = self.clock.now_millis();
        let times = self.times(now, ttl);
        let mut bytes = None;
        if cacheable {
            match codec::encode(
                self.cfg.codec,
                value.as_ref(),
                times,
                self.cfg.max_value_bytes,
            ) {
                Ok(b) => bytes = Some(b),
                Err(Error::ValueTooLarge { size, limit }) => {
                    self.stats.oversize();
                    tracing::warn!(namespace = %self.cfg.namespace, size, limit, "loaded value too large to cache; served uncached");
                }
                Err(e) => {
                    if let Some(lock) = held {
                        self.release(lock).await;
                    }
                    return Err(e);
                }
            }
        }
        let any = value.map(|v| Arc::new(v) as AnyValue);
        let unchanged = self.epoch(key) == epoch;
        if let Some(b) = &bytes
            && unchanged
        {
            if l2_up && let Some(l2) = &self.l2 {
                let batch = Batch {
                    sets: vec![(self.full_key(key), b.clone(), self.redis_ttl(&times, now))],
                    unlock: held.take(),
                    ..Batch::default()
                };
                if l2.exec(batch).await.is_ok() {
                    self.stats.l2_written(b.len());
                }
            }
            self.fill_l1(key, self.slot(any.clone(), times, b.len(), now), epoch)
                .await;
        }
        if let Some(lock) = held {
            self.release(lock).await;
        }
        Ok(Loaded {
            value: any,
            bytes,
            source: Source::Loader,
        })
    }

    async fn release(&self, (key, token): (String, String)) {
        if let Some(l2) = &self.l2 {
            let _ = l2
                .exec(Batch {
                    unlock: Some((key, token)),
                    ..Batch::default()
                })
                .await;
        }
    }

    fn consider_fallback<T: CacheValue>(
        &self,
        fallback: &mut Option<Fallback>,
        env: Envelope,
        now: u64,
    ) {
        let grace_end = env
            .times
            .expires_at
            .saturating_add(millis(self.cfg.stale_grace));
        if now >= grace_end
            || fallback
                .as_ref()
                .is_some_and(|f| f.written_at >= env.times.written_at)
        {
            return;
        }
        if let Ok(value) = env.decode::<T>(self.cfg.codec) {
            *fallback = Some(Fallback {
                value: value.map(|v| Arc::new(v) as AnyValue),
                written_at: env.times.written_at,
                bytes: Some(env.bytes),
            });
        }
    }

    async fn l2_read<T: CacheValue>(&self, l2: &L2, key: &str, mode: Mode, count: bool) -> L2Read {
        match l2.get(&self.full_key(key)).await {
            Err(_) => L2Read::Unavailable,
            Ok(None) => {
                if count {
                    self.stats.l2_miss();
                }
                L2Read::Miss(None)
            }
            Ok(Some(bytes)) => self.accept::<T>(bytes, mode, count),
        }
    }

    /// Another instance holds the load lock: poll Redis for its value; take the lock if it
    /// frees up (holder done without a value, or dead and expired); give up after
    /// `lock_wait`.
    async fn wait_for_holder<T: CacheValue>(
        &self,
        l2: &L2,
        key: &str,
        lock_key: &str,
        token: &str,
        mode: Mode,
        epoch: u64,
    ) -> Waited {
        let deadline = tokio::time::Instant::now() + self.cfg.lock_wait;
        loop {
            tokio::time::sleep(self.cfg.lock_poll).await;
            match self.l2_read::<T>(l2, key, mode, false).await {
                L2Read::Hit(slot, bytes) => {
                    self.stats.l2_hit(bytes.len());
                    let loaded = Loaded {
                        value: slot.value.clone(),
                        bytes: Some(bytes),
                        source: Source::L2,
                    };
                    self.fill_l1(key, slot, epoch).await;
                    return Waited::Value(loaded);
                }
                L2Read::Unavailable => return Waited::Unavailable,
                L2Read::Miss(_) => {}
            }
            match l2.try_lock(lock_key, token, self.cfg.lock_ttl).await {
                Ok(true) => return Waited::Acquired,
                Ok(false) => {}
                Err(_) => return Waited::Unavailable,
            }
            if tokio::time::Instant::now() >= deadline {
                return Waited::GaveUp;
            }
        }
    }

    fn update_gauges(&self) {
        if let Some(l1) = &self.l1 {
            #[allow(clippy::cast_precision_loss)]
            {
                self.stats.m.l1_entries.set(l1.entry_count() as f64);
                self.stats.m.l1_bytes.set(l1.weighted_size() as f64);
            }
        }
    }
}

async fn gauges_task(cache: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = cache.upgrade() else { return };
        if let Some(l1) = &inner.l1 {
            l1.run_pending_tasks().await;
        }
        inner.update_gauges();
    }
}

async fn probe_task(cache: Weak<Inner>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = cache.upgrade() else { return };
        if let Some(l2) = &inner.l2 {
            l2.probe().await;
        }
    }
}

async fn breaker_log_task(breaker: CircuitBreaker) {
    let mut events = breaker.subscribe();
    loop {
        match events.recv().await {
            Ok(change) => match change.to {
                State::Open => tracing::warn!(
                    breaker = %change.name, from = %change.from, reason = %change.reason,
                    "redis cache circuit opened: serving from L1 and the loader, skipping L2 writes"
                ),
                State::HalfOpen => {
                    tracing::info!(breaker = %change.name, "redis cache circuit half-open: trying Redis again")
                }
                State::Closed => {
                    tracing::info!(breaker = %change.name, from = %change.from, "redis cache circuit closed: L2 is back")
                }
            },
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
