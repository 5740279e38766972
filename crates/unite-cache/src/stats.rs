//! Counters, the serializable snapshot, and the `metrics` facade.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use serde::Serialize;
use unite_breaker::State;

/// `"healthy"` or `"degraded"` (Redis configured but failing: the breaker is not closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// Every configured layer works.
    Healthy,
    /// Redis is configured but its breaker is open or testing it: the cache runs on L1 and the
    /// loader, skips L2 writes, and comes back by itself.
    Degraded,
}

impl Status {
    /// `"healthy"` or `"degraded"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
        }
    }
}

/// Where shared entries live: `"redis"`, or `"in-memory"` when no Redis is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum Provider {
    /// L1 in front of Redis.
    #[serde(rename = "redis")]
    Redis,
    /// L1 only.
    #[serde(rename = "in-memory")]
    InMemory,
}

impl Provider {
    /// `"redis"` or `"in-memory"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::InMemory => "in-memory",
        }
    }
}

/// A point-in-time view of a cache, shaped for the health endpoint.
///
/// Counters are totals since the cache was built. `hits`/`misses` count lookups (`get`, each
/// key of `get_many`, `get_or_load`): a hit was served by L1 or L2, a miss was not (the loader
/// ran, or nothing was found). `total_operations = hits + misses`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CacheStats {
    /// `healthy` or `degraded`.
    pub status: Status,
    /// `redis` or `in-memory`.
    pub provider: Provider,
    /// `hits / (hits + misses)`, `0.0` before any lookup.
    pub hit_rate: f64,
    /// Lookups served from L1 or L2.
    pub hits: u64,
    /// Lookups that found nothing fresh in any layer.
    pub misses: u64,
    /// `hits + misses`.
    pub total_operations: u64,
    /// Keys written by `set` / `set_many`.
    pub writes: u64,
    /// Keys removed by `delete` / `delete_many`.
    pub deletes: u64,
    /// Hits on a cached "not found".
    pub negative_hits: u64,
    /// Stale values served because the loader or Redis failed (stale-if-error).
    pub stale_served: u64,
    /// Loader activity.
    pub loads: LoadStats,
    /// The in-process layer.
    pub l1: L1Stats,
    /// The Redis layer; `None` when running in memory only.
    pub l2: Option<L2Stats>,
    /// The Redis breaker's state; `None` when running in memory only.
    pub circuit_state: Option<State>,
}

/// Loader activity (`get_or_load`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct LoadStats {
    /// Loader calls.
    pub loads: u64,
    /// Loader calls that failed (error, timeout or panic).
    pub errors: u64,
    /// Mean loader latency, milliseconds.
    pub avg_ms: f64,
    /// Callers that waited on another caller's load of the same key instead of loading.
    pub coalesced: u64,
    /// Refresh-ahead loads started in the background.
    pub refreshes: u64,
    /// Loaded values over `max_value_bytes`: returned to the caller, not cached.
    pub oversize: u64,
    /// Cross-instance load locks taken.
    pub lock_acquired: u64,
    /// Loads that found another instance's lock and waited.
    pub lock_waits: u64,
    /// Waits that ended with the other instance's value (no load here).
    pub lock_wait_hits: u64,
    /// Waits that gave up after `lock_wait` and loaded locally.
    pub lock_timeouts: u64,
}

/// The in-process layer (moka).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct L1Stats {
    /// `false` when L1 is disabled.
    pub enabled: bool,
    /// Fresh entries found.
    pub hits: u64,
    /// Lookups that found nothing fresh.
    pub misses: u64,
    /// `hits / (hits + misses)`.
    pub hit_rate: f64,
    /// Entries held (approximate: moka applies writes in batches).
    pub entries: u64,
    /// Weighted bytes held (key + encoded value + overhead), approximate.
    pub bytes: u64,
    /// The byte bound.
    pub max_bytes: u64,
    /// Entries evicted for size.
    pub evictions: u64,
    /// Entries that expired.
    pub expirations: u64,
}

/// The Redis layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct L2Stats {
    /// Fresh entries found.
    pub hits: u64,
    /// Lookups that found nothing fresh (including unreadable payloads).
    pub misses: u64,
    /// `hits / (hits + misses)`.
    pub hit_rate: f64,
    /// Failed or timed-out Redis calls.
    pub errors: u64,
    /// Redis calls skipped because the breaker was open.
    pub skipped: u64,
    /// Payloads that could not be read (not an envelope, other codec, wrong type): treated as
    /// misses.
    pub corrupt: u64,
    /// Payload bytes read.
    pub bytes_read: u64,
    /// Payload bytes written.
    pub bytes_written: u64,
    /// Invalidation messages published (one per `set`/`delete` call, any number of keys).
    pub invalidations_sent: u64,
    /// Keys evicted from L1 on another instance's message.
    pub invalidations_received: u64,
    /// Times L1 was cleared because invalidations may have been missed (subscriber
    /// reconnected or fell behind).
    pub resyncs: u64,
    /// Whether the command connection is up.
    pub connected: bool,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) negative_hits: AtomicU64,
    pub(crate) stale_served: AtomicU64,
    pub(crate) l1_hits: AtomicU64,
    pub(crate) l1_misses: AtomicU64,
    pub(crate) l1_evictions: AtomicU64,
    pub(crate) l1_expirations: AtomicU64,
    pub(crate) l2_hits: AtomicU64,
    pub(crate) l2_misses: AtomicU64,
    pub(crate) l2_errors: AtomicU64,
    pub(crate) l2_skipped: AtomicU64,
    pub(crate) l2_corrupt: AtomicU64,
    pub(crate) l2_bytes_read: AtomicU64,
    pub(crate) l2_bytes_written: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) load_errors: AtomicU64,
    pub(crate) load_nanos: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) oversize: AtomicU64,
    pub(crate) lock_acquired: AtomicU64,
    pub(crate) lock_waits: AtomicU64,
    pub(crate) lock_wait_hits: AtomicU64,
    pub(crate) lock_timeouts: AtomicU64,
    pub(crate) invalidations_sent: AtomicU64,
    pub(crate) invalidations_received: AtomicU64,
    pub(crate) resyncs: AtomicU64,
}

#[inline]
fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[inline]
pub(crate) fn read(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// `metrics` facade handles, registered once when the cache is built (install the recorder
/// before building caches).
pub(crate) struct Metrics {
    l1_hit: Counter,
    l1_miss: Counter,
    l2_hit: Counter,
    l2_miss: Counter,
    load_duration: Histogram,
    pub(crate) l1_entries: Gauge,
    pub(crate) l1_bytes: Gauge,
    l2_errors: Counter,
    loader_errors: Counter,
    coalesced: Counter,
    invalidations_sent: Counter,
    invalidations_received: Counter,
}

impl Metrics {
    fn new() -> Self {
        Self {
            l1_hit: metrics::counter!("unite_cache_requests_total", "layer" => "l1", "result" => "hit"),
            l1_miss: metrics::counter!("unite_cache_requests_total", "layer" => "l1", "result" => "miss"),
            l2_hit: metrics::counter!("unite_cache_requests_total", "layer" => "l2", "result" => "hit"),
            l2_miss: metrics::counter!("unite_cache_requests_total", "layer" => "l2", "result" => "miss"),
            load_duration: metrics::histogram!("unite_cache_load_duration_seconds"),
            l1_entries: metrics::gauge!("unite_cache_entries", "layer" => "l1"),
            l1_bytes: metrics::gauge!("unite_cache_bytes", "layer" => "l1"),
            l2_errors: metrics::counter!("unite_cache_errors_total", "layer" => "l2"),
            loader_errors: metrics::counter!("unite_cache_errors_total", "layer" => "loader"),
            coalesced: metrics::counter!("unite_cache_coalesced_total"),
            invalidations_sent: metrics::counter!("unite_cache_invalidations_total", "direction" => "sent"),
            invalidations_received: metrics::counter!("unite_cache_invalidations_total", "direction" => "received"),
        }
    }
}

/// Counters plus their facade twins; every method is a relaxed atomic add and a facade call.
pub(crate) struct Stats {
    pub(crate) c: Counters,
    pub(crate) m: Metrics,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Self {
            c: Counters::default(),
            m: Metrics::new(),
        }
    }

    #[inline]
    pub(crate) fn hit(&self) {
        bump(&self.c.hits);
    }
    #[inline]
    pub(crate) fn miss(&self) {
        bump(&self.c.misses);
    }
    #[inline]
    pub(crate) fn l1_hit(&self) {
        bump(&self.c.l1_hits);
        self.m.l1_hit.increment(1);
    }
    #[inline]
    pub(crate) fn l1_miss(&self) {
        bump(&self.c.l1_misses);
        self.m.l1_miss.increment(1);
    }
    pub(crate) fn l2_hit(&self, bytes: usize) {
        bump(&self.c.l2_hits);
        self.c
            .l2_bytes_read
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.m.l2_hit.increment(1);
    }
    pub(crate) fn l2_miss(&self) {
        bump(&self.c.l2_misses);
        self.m.l2_miss.increment(1);
    }
    pub(crate) fn l2_error(&self) {
        bump(&self.c.l2_errors);
        self.m.l2_errors.increment(1);
    }
    pub(crate) fn l2_skipped(&self) {
        bump(&self.c.l2_skipped);
    }
    pub(crate) fn l2_corrupt(&self) {
        bump(&self.c.l2_corrupt);
        self.m.l2_errors.increment(1);
    }
    pub(crate) fn l2_written(&self, bytes: usize) {
        self.c
            .l2_bytes_written
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub(crate) fn negative_hit(&self) {
        bump(&self.c.negative_hits);
    }
    pub(crate) fn stale_served(&self) {
        bump(&self.c.stale_served);
    }
    pub(crate) fn writes(&self, n: usize) {
        self.c.writes.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub(crate) fn deletes(&self, n: usize) {
        self.c.deletes.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub(crate) fn load(&self, elapsed: Duration, failed: bool) {
        bump(&self.c.loads);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.c.load_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.m.load_duration.record(elapsed.as_secs_f64());
        if failed {
            bump(&self.c.load_errors);
            self.m.loader_errors.increment(1);
        }
    }
    pub(crate) fn coalesced(&self) {
        bump(&self.c.coalesced);
        self.m.coalesced.increment(1);
    }
    pub(crate) fn refresh(&self) {
        bump(&self.c.refreshes);
    }
    pub(crate) fn oversize(&self) {
        bump(&self.c.oversize);
    }
    pub(crate) fn lock_acquired(&self) {
        bump(&self.c.lock_acquired);
    }
    pub(crate) fn lock_wait(&self) {
        bump(&self.c.lock_waits);
    }
    pub(crate) fn lock_wait_hit(&self) {
        bump(&self.c.lock_wait_hits);
    }
    pub(crate) fn lock_timeout(&self) {
        bump(&self.c.lock_timeouts);
    }
    pub(crate) fn invalidation_sent(&self) {
        bump(&self.c.invalidations_sent);
        self.m.invalidations_sent.increment(1);
    }
    pub(crate) fn invalidation_received(&self, keys: usize) {
        self.c
            .invalidations_received
            .fetch_add(keys as u64, Ordering::Relaxed);
        self.m.invalidations_received.increment(keys as u64);
    }
    pub(crate) fn resync(&self) {
        bump(&self.c.resyncs);
    }
    pub(crate) fn eviction(&self) {
        bump(&self.c.l1_evictions);
    }
    pub(crate) fn expiration(&self) {
        bump(&self.c.l1_expirations);
    }

    pub(crate) fn load_stats(&self) -> LoadStats {
        let c = &self.c;
        let loads = read(&c.loads);
        #[allow(clippy::cast_precision_loss)]
        let avg_ms = if loads == 0 {
            0.0
        } else {
            read(&c.load_nanos) as f64 / loads as f64 / 1e6
        };
        LoadStats {
            loads,
            errors: read(&c.load_errors),
            avg_ms,
            coalesced: read(&c.coalesced),
            refreshes: read(&c.refreshes),
            oversize: read(&c.oversize),
            lock_acquired: read(&c.lock_acquired),
            lock_waits: read(&c.lock_waits),
            lock_wait_hits: read(&c.lock_wait_hits),
            lock_timeouts: read(&c.lock_timeouts),
        }
    }
}

#[allow(clippy::cast_precision_loss)]
pub(crate) fn rate(hits: u64, misses: u64) -> f64 {
    let total = hits + misses;
    if total == 0 {
        0.0
    } else {
        hits as f64 / total as f64
    }
}
