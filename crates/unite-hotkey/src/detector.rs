//! The detector: a ring of HeavyKeeper sketches (one per sub-window), a small candidate set that
//! keeps the text of the keys that may be hot, and the alert state.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use crate::Error;
use crate::clock::{Clock, SystemClock};
use crate::config::HotKeyConfig;
use crate::sketch::{self, Probe, Sketch, mix64};
use crate::types::{HotKey, HotKeyAlert, HotKeyEvent, HotKeySnapshot, SnapshotConfig};

/// Most candidates re-examined when making room for one new candidate.
const MAX_EVICTION_PROBES: usize = 16;

/// With a clock that is costly to read, a record reads it with probability 1 / CLOCK_SAMPLE.
const CLOCK_SAMPLE: u32 = 16;

/// Detects hot keys: cheap concurrent [`record`](Self::record), then [`top`](Self::top),
/// alerts and a [`snapshot`](Self::snapshot) for a health endpoint.
///
/// Cloning is cheap and clones share the same state.
#[derive(Clone)]
pub struct HotKeyDetector {
    inner: Arc<Inner>,
}

struct Inner {
    config: HotKeyConfig,
    clock: Arc<dyn Clock>,
    /// Read the clock on every record (see [`Clock::cheap_to_read`]).
    cheap_clock: bool,
    hasher: foldhash::fast::FixedState,
    /// One sketch per sub-window; epoch `e` lives in `slots[e % len]`.
    slots: Box<[Sketch]>,
    sub_nanos: u64,
    window_nanos: u64,
    /// The newest sub-window epoch, and the clock reading (ns) at which it ends.
    cur_epoch: AtomicU64,
    cur_end: AtomicU64,
    /// A lower bound of the smallest window count among candidates once the set is full (0 while
    /// it has room): keys below it are not worth the lock.
    admit_min: AtomicU64,
    /// Lock-free mirror of the candidate hashes (open addressing, 0 = empty), so a record of a
    /// key that is already a candidate never takes the lock.
    tags: Box<[AtomicU64]>,
    state: Mutex<State>,
    events: broadcast::Sender<HotKeyEvent>,
    /// Wall-clock time matching `mono_origin` on the injected clock.
    wall_origin: SystemTime,
    mono_origin: u64,
}

#[derive(Default)]
struct State {
    candidates: HashMap<u64, Candidate>,
    alerts: HashMap<u64, AlertState>,
}

struct Candidate {
    key: Box<str>,
    first_seen: u64,
    /// Window count at the last refresh (a lower bound of the current one within a sub-window).
    cached: u64,
}

struct AlertState {
    key: Box<str>,
    first_seen: u64,
    raised_at: u64,
    per_minute: u64,
    active: bool,
}

/// Builds a [`HotKeyDetector`]; every setter has the default of [`HotKeyConfig`].
#[must_use]
#[derive(Debug, Default)]
pub struct HotKeyDetectorBuilder {
    config: HotKeyConfig,
    clock: Option<Arc<dyn Clock>>,
}

impl HotKeyDetectorBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: HotKeyConfig) -> Self {
        self.config = config;
        self
    }

    /// Sliding window length (default 60 s).
    pub fn window(mut self, window: Duration) -> Self {
        self.config.window = window;
        self
    }

    /// Number of sub-windows (default 6).
    pub fn sub_windows(mut self, n: u32) -> Self {
        self.config.sub_windows = n;
        self
    }

    /// Alert threshold in accesses per minute (default 1000).
    pub fn threshold_per_minute(mut self, threshold: NonZeroU64) -> Self {
        self.config.threshold_per_minute = Some(threshold);
        self
    }

    /// Turns alerts off.
    pub fn without_alerts(mut self) -> Self {
        self.config.threshold_per_minute = None;
        self
    }

    /// Least time between two alerts for the same key (default 60 s).
    pub fn debounce(mut self, debounce: Duration) -> Self {
        self.config.debounce = debounce;
        self
    }

    /// Buckets per sketch row, rounded up to a power of two (default 4096).
    pub fn width(mut self, width: usize) -> Self {
        self.config.width = width;
        self
    }

    /// Rows per sketch (default 2).
    pub fn depth(mut self, depth: usize) -> Self {
        self.config.depth = depth;
        self
    }

    /// Most keys tracked for `top` and alerts (default 100).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.config.capacity = capacity;
        self
    }

    /// Longest key text kept, in bytes (default 256).
    pub fn max_key_bytes(mut self, bytes: usize) -> Self {
        self.config.max_key_bytes = bytes;
        self
    }

    /// Events buffered per subscriber (default 256).
    pub fn event_buffer(mut self, n: usize) -> Self {
        self.config.event_buffer = n;
        self
    }

    /// A fixed hash seed (default: random per detector). Handy for reproducible tests.
    pub fn hash_seed(mut self, seed: u64) -> Self {
        self.config.hash_seed = Some(seed);
        self
    }

    /// The time source (default [`SystemClock`]); tests pass a [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Validates the configuration and builds the detector.
    pub fn build(self) -> Result<HotKeyDetector, Error> {
        self.config.validate()?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock::new()));
        Ok(HotKeyDetector::from_valid(self.config, clock))
    }
}

impl Default for HotKeyDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for HotKeyDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HotKeyDetector")
            .field("config", &self.inner.config)
            .field("clock", &self.inner.clock)
            .field("tracked_keys", &self.inner.lock().candidates.len())
            .finish_non_exhaustive()
    }
}

impl HotKeyDetector {
    /// A detector with the default configuration and the system clock.
    #[must_use]
    pub fn new() -> Self {
        Self::from_valid(HotKeyConfig::default(), Arc::new(SystemClock::new()))
    }

    /// A builder starting from the default configuration.
    pub fn builder() -> HotKeyDetectorBuilder {
        HotKeyDetectorBuilder::default()
    }

    /// Builds from a configuration that passed [`HotKeyConfig::validate`].
    fn from_valid(config: HotKeyConfig, clock: Arc<dyn Clock>) -> Self {
        let width = config.width.next_power_of_two();
        let slots = (0..config.sub_windows)
            .map(|_| Sketch::new(width, config.depth))
            .collect();
        let seed = config
            .hash_seed
            .unwrap_or_else(|| std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64));
        let window_nanos = u64::try_from(config.window.as_nanos()).unwrap_or(u64::MAX);
        let sub_nanos = (window_nanos / u64::from(config.sub_windows)).max(1);
        let tags = (0..(config.capacity * 2).next_power_of_two())
            .map(|_| AtomicU64::new(0))
            .collect();
        let (events, _) = broadcast::channel(config.event_buffer);
        let mono_origin = nanos(clock.now());
        let epoch = mono_origin / sub_nanos;
        let state = State {
            candidates: HashMap::with_capacity(config.capacity),
            alerts: HashMap::new(),
        };
        Self {
            inner: Arc::new(Inner {
                hasher: foldhash::fast::FixedState::with_seed(seed),
                slots,
                sub_nanos,
                window_nanos,
                cur_epoch: AtomicU64::new(epoch),
                cur_end: AtomicU64::new(epoch.saturating_add(1).saturating_mul(sub_nanos)),
                admit_min: AtomicU64::new(0),
                tags,
                state: Mutex::new(state),
                events,
                wall_origin: SystemTime::now(),
                mono_origin,
                cheap_clock: clock.cheap_to_read(),
                clock,
                config,
            }),
        }
    }

    /// Records one access to `key`.
    ///
    /// Lock-free in the common case: the key is hashed once (a long key is read once, never
    /// copied) and its `depth` 64-bit buckets, in one cache line, are updated by compare-and-swap.
    /// Only a key that becomes a candidate takes a lock, once, and its text (up to
    /// `max_key_bytes`) is copied then. The first record after a sub-window ends rotates the
    /// window (with a costly clock, one of the next few records: see
    /// [`Clock::cheap_to_read`]).
    #[inline]
    pub fn record(&self, key: &str) {
        let hash = self.inner.hash(key);
        self.inner.record_hash(hash, key, 1);
    }

    /// Records `n` accesses to `key` at once (e.g. a batch read).
    pub fn record_n(&self, key: &str, n: u32) {
        if n == 0 {
            return;
        }
        let hash = self.inner.hash(key);
        self.inner.record_hash(hash, key, n);
    }

    /// The estimated accesses per minute of any key (0 if it is not in the sketch). Never more
    /// than the true count, barring a 32-bit fingerprint collision in a shared bucket.
    #[must_use]
    pub fn estimate(&self, key: &str) -> u64 {
        let now = self.inner.now_nanos();
        let events = self.inner.maybe_advance(now);
        self.inner.publish(events);
        let hash = self.inner.hash(key);
        self.inner.per_minute(self.inner.window_estimate_of(hash))
    }

    /// The `k` hottest keys with their estimated accesses per minute, hottest first (at most
    /// `capacity` keys; keys silent for a whole window are gone). Also evaluates alerts.
    #[must_use]
    pub fn top(&self, k: usize) -> Vec<HotKey> {
        let (top, events) = {
            let now = self.inner.now_nanos();
            let mut events = self.inner.maybe_advance(now);
            let mut st = self.inner.lock();
            events.extend(self.inner.refresh(&mut st, now));
            (self.inner.top_locked(&st, k), events)
        };
        self.inner.publish(events);
        top
    }

    /// Rotates the window if a sub-window has ended and evaluates alerts; returns the events
    /// raised (they also go to subscribers). Call it periodically if nothing else calls `top`.
    pub fn tick(&self) -> Vec<HotKeyEvent> {
        let events = {
            let now = self.inner.now_nanos();
            let mut events = self.inner.maybe_advance(now);
            let mut st = self.inner.lock();
            events.extend(self.inner.refresh(&mut st, now));
            events
        };
        self.inner.publish(events.clone());
        events
    }

    /// Subscribes to alert events. A subscriber that falls more than `event_buffer` events behind
    /// gets [`RecvError::Lagged`](tokio::sync::broadcast::error::RecvError::Lagged) and then the
    /// newest events.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<HotKeyEvent> {
        self.inner.events.subscribe()
    }

    /// Alerts currently active, hottest first (as of the last evaluation).
    #[must_use]
    pub fn active_alerts(&self) -> Vec<HotKeyAlert> {
        let st = self.inner.lock();
        self.inner.active_alerts_locked(&st)
    }

    /// Top `k` keys, active alerts, configuration and memory, for a health endpoint.
    #[must_use]
    pub fn snapshot(&self, k: usize) -> HotKeySnapshot {
        let (snapshot, events) = {
            let now = self.inner.now_nanos();
            let mut events = self.inner.maybe_advance(now);
            let mut st = self.inner.lock();
            events.extend(self.inner.refresh(&mut st, now));
            let cfg = &self.inner.config;
            let snapshot = HotKeySnapshot {
                top: self.inner.top_locked(&st, k),
                alerts: self.inner.active_alerts_locked(&st),
                config: SnapshotConfig {
                    window: cfg.window,
                    sub_windows: cfg.sub_windows,
                    threshold_per_minute: cfg.threshold_per_minute.map(NonZeroU64::get),
                    capacity: cfg.capacity,
                },
                tracked_keys: st.candidates.len(),
                memory_bytes: self.inner.memory_locked(&st),
            };
            (snapshot, events)
        };
        self.inner.publish(events);
        snapshot
    }

    /// Estimated bytes held by the detector: sketches, candidate table and candidate keys, alert
    /// state and the fixed parts. Bounded by the configuration, whatever the number of distinct
    /// keys recorded.
    #[must_use]
    pub fn memory_bytes(&self) -> usize {
        let st = self.inner.lock();
        self.inner.memory_locked(&st)
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &HotKeyConfig {
        &self.inner.config
    }
}

#[inline]
fn nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

#[inline]
const fn tag_of(hash: u64) -> u64 {
    if hash == 0 { 1 } else { hash }
}

/// `key`, cut to at most `max` bytes at a character boundary, with `…` appended when cut.
fn truncate_key(key: &str, max: usize) -> Box<str> {
    if key.len() <= max {
        return key.into();
    }
    const ELLIPSIS: &str = "…";
    let mut end = max.saturating_sub(ELLIPSIS.len());
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    let mut s = String::with_capacity(end + ELLIPSIS.len());
    s.push_str(&key[..end]);
    s.push_str(ELLIPSIS);
    s.into_boxed_str()
}

/// Approximate heap bytes of a `HashMap` with this capacity and entry size (SwissTable layout:
/// buckets are the next power of two above capacity × 8/7, each with one control byte).
fn map_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8 / 7).next_power_of_two();
    buckets * (entry + 1) + 16
}

impl Inner {
    #[inline]
    fn hash(&self, key: &str) -> u64 {
        mix64(self.hasher.hash_one(key))
    }

    #[inline]
    fn now_nanos(&self) -> u64 {
        nanos(self.clock.now())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wall(&self, mono: u64) -> SystemTime {
        self.wall_origin + Duration::from_nanos(mono.saturating_sub(self.mono_origin))
    }

    #[inline]
    fn per_minute(&self, count: u64) -> u64 {
        let pm = u128::from(count) * 60_000_000_000 / u128::from(self.window_nanos.max(1));
        u64::try_from(pm).unwrap_or(u64::MAX)
    }

    #[inline]
    fn record_hash(&self, hash: u64, key: &str, n: u32) {
        let mut epoch = self.cur_epoch.load(Ordering::Acquire);
        // A costly clock is read about once in CLOCK_SAMPLE records per thread; the others write
        // into the current sub-window, which the next reading (here, or in top/tick/snapshot)
        // moves on when it has ended.
        if self.cheap_clock || sketch::one_in(CLOCK_SAMPLE) {
            let now = self.now_nanos();
            if now >= self.cur_end.load(Ordering::Acquire) {
                let events;
                (epoch, events) = self.advance(now);
                self.publish(events);
            }
        }
        let slot = &self.slots[(epoch % self.slots.len() as u64) as usize];
        let probe = slot.probe(hash);
        let estimate = u64::from(slot.add(&probe, n));
        if estimate == 0 {
            return;
        }
        // Once the candidate set is full, a key is not worth more work when its current
        // sub-window count, spread over the whole window, cannot beat the weakest candidate, nor
        // on its first record in this sub-window (its next record gets the same look).
        let admit = self.admit_min.load(Ordering::Relaxed);
        if admit > 0 && (estimate < 2 || estimate.saturating_mul(self.slots.len() as u64) < admit) {
            return;
        }
        if self.tags_contains(hash) {
            return;
        }
        self.consider(hash, &probe, key);
    }

    /// A key that may deserve a place among the candidates.
    #[cold]
    fn consider(&self, hash: u64, probe: &Probe, key: &str) {
        let count = self.window_estimate(probe);
        if count <= self.admit_min.load(Ordering::Relaxed) {
            return;
        }
        let mut st = self.lock();
        if st.candidates.contains_key(&hash) {
            return;
        }
        let capacity = self.config.capacity;
        if st.candidates.len() >= capacity && !self.make_room(&mut st, count) {
            return;
        }
        st.candidates.insert(
            hash,
            Candidate {
                key: truncate_key(key, self.config.max_key_bytes),
                first_seen: self.now_nanos(),
                cached: count,
            },
        );
        self.tags_insert(hash);
        self.update_admit_min(&st);
    }

    /// Evicts the weakest candidate if it is weaker than `count`; returns whether it did.
    fn make_room(&self, st: &mut State, count: u64) -> bool {
        for _ in 0..MAX_EVICTION_PROBES {
            let Some((&weakest, cand)) = st.candidates.iter().min_by_key(|(_, c)| c.cached) else {
                return true;
            };
            if cand.cached >= count {
                self.admit_min.store(cand.cached, Ordering::Relaxed);
                return false;
            }
            // Cached counts lag behind: look again before evicting.
            let fresh = self.window_estimate_of(weakest);
            if fresh >= count {
                if let Some(c) = st.candidates.get_mut(&weakest) {
                    c.cached = fresh;
                }
                continue;
            }
            st.candidates.remove(&weakest);
            self.tags_rebuild(st);
            return true;
        }
        self.update_admit_min(st);
        false
    }

    fn update_admit_min(&self, st: &State) {
        let min = if st.candidates.len() < self.config.capacity {
            0
        } else {
            st.candidates.values().map(|c| c.cached).min().unwrap_or(0)
        };
        self.admit_min.store(min, Ordering::Relaxed);
    }

    /// Sum of the key's estimates over all sub-windows.
    #[inline]
    fn window_estimate(&self, probe: &Probe) -> u64 {
        let mut sum = 0u64;
        for slot in &*self.slots {
            sum += u64::from(slot.estimate(probe));
        }
        sum
    }

    fn window_estimate_of(&self, hash: u64) -> u64 {
        self.window_estimate(&self.slots[0].probe(hash))
    }

    /// Rotates if `now` is past the current sub-window.
    fn maybe_advance(&self, now: u64) -> Vec<HotKeyEvent> {
        if now >= self.cur_end.load(Ordering::Acquire) {
            self.advance(now).1
        } else {
            Vec::new()
        }
    }

    /// Moves the window to the sub-window holding `now`: empties the sketches of the epochs that
    /// left the window, refreshes candidates, evaluates alerts. Returns the epoch to write to and
    /// the events raised.
    #[cold]
    fn advance(&self, now: u64) -> (u64, Vec<HotKeyEvent>) {
        let mut st = self.lock();
        let cur = self.cur_epoch.load(Ordering::Acquire);
        let target = now / self.sub_nanos;
        if target <= cur {
            return (cur, Vec::new());
        }
        let n = self.slots.len() as u64;
        let first = cur + 1 + (target - cur).saturating_sub(n);
        for epoch in first..=target {
            self.slots[(epoch % n) as usize].clear();
        }
        self.cur_epoch.store(target, Ordering::Release);
        self.cur_end.store(
            target.saturating_add(1).saturating_mul(self.sub_nanos),
            Ordering::Release,
        );
        let events = self.refresh(&mut st, now);
        (target, events)
    }

    /// Recomputes every candidate's window count, drops those that aged out, and evaluates alerts.
    fn refresh(&self, st: &mut State, now: u64) -> Vec<HotKeyEvent> {
        for (&hash, cand) in &mut st.candidates {
            cand.cached = self.window_estimate_of(hash);
        }
        let before = st.candidates.len();
        st.candidates.retain(|_, c| c.cached > 0);
        if st.candidates.len() != before {
            self.tags_rebuild(st);
        }
        self.update_admit_min(st);
        self.evaluate_alerts(st, now)
    }

    fn evaluate_alerts(&self, st: &mut State, now: u64) -> Vec<HotKeyEvent> {
        let mut events = Vec::new();
        let debounce = nanos(self.config.debounce);
        let Some(threshold) = self.config.threshold_per_minute.map(NonZeroU64::get) else {
            st.alerts.clear();
            return events;
        };
        for (&hash, cand) in &st.candidates {
            let pm = self.per_minute(cand.cached);
            if pm < threshold {
                continue;
            }
            match st.alerts.get_mut(&hash) {
                Some(a) if a.active || now.saturating_sub(a.raised_at) < debounce => {
                    a.per_minute = pm;
                }
                _ => {
                    let state = AlertState {
                        key: cand.key.clone(),
                        first_seen: cand.first_seen,
                        raised_at: now,
                        per_minute: pm,
                        active: true,
                    };
                    events.push(HotKeyEvent::Raised(self.alert_of(&state)));
                    st.alerts.insert(hash, state);
                }
            }
        }
        for (&hash, a) in &mut st.alerts {
            if !a.active {
                continue;
            }
            let count = match st.candidates.get(&hash) {
                Some(c) => c.cached,
                None => self.window_estimate_of(hash),
            };
            let pm = self.per_minute(count);
            a.per_minute = pm;
            if pm < threshold {
                a.active = false;
                events.push(HotKeyEvent::Cleared(self.alert_of(a)));
            }
        }
        st.alerts
            .retain(|_, a| a.active || now.saturating_sub(a.raised_at) < debounce);
        events
    }

    fn alert_of(&self, a: &AlertState) -> HotKeyAlert {
        HotKeyAlert {
            key: a.key.to_string(),
            per_minute: a.per_minute,
            threshold_per_minute: self.config.threshold_per_minute.map_or(0, NonZeroU64::get),
            window: self.config.window,
            first_seen: self.wall(a.first_seen),
            raised_at: self.wall(a.raised_at),
        }
    }

    fn active_alerts_locked(&self, st: &State) -> Vec<HotKeyAlert> {
        let mut alerts: Vec<HotKeyAlert> = st
            .alerts
            .values()
            .filter(|a| a.active)
            .map(|a| self.alert_of(a))
            .collect();
        alerts.sort_by(|a, b| b.per_minute.cmp(&a.per_minute).then(a.key.cmp(&b.key)));
        alerts
    }

    fn top_locked(&self, st: &State, k: usize) -> Vec<HotKey> {
        let mut all: Vec<(&Candidate, u64)> = st
            .candidates
            .values()
            .map(|c| (c, c.cached))
            .filter(|&(_, n)| n > 0)
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.key.cmp(&b.0.key)));
        all.into_iter()
            .take(k)
            .map(|(c, n)| HotKey::new(c.key.to_string(), self.per_minute(n)))
            .collect()
    }

    fn memory_locked(&self, st: &State) -> usize {
        let sketches: usize = self.slots.iter().map(Sketch::memory_bytes).sum();
        let fixed = std::mem::size_of::<Inner>()
            + self.slots.len() * std::mem::size_of::<Sketch>()
            + self.tags.len() * std::mem::size_of::<AtomicU64>();
        let candidates = map_bytes(
            st.candidates.capacity(),
            std::mem::size_of::<(u64, Candidate)>(),
        ) + st.candidates.values().map(|c| c.key.len()).sum::<usize>();
        let alerts = map_bytes(
            st.alerts.capacity(),
            std::mem::size_of::<(u64, AlertState)>(),
        ) + st.alerts.values().map(|a| a.key.len()).sum::<usize>();
        // The broadcast ring: one slot (value, position, lock) per buffered event.
        let events = self.config.event_buffer.next_power_of_two()
            * (std::mem::size_of::<Option<HotKeyEvent>>() + 32);
        sketches + fixed + candidates + alerts + events
    }

    fn publish(&self, events: Vec<HotKeyEvent>) {
        for event in events {
            // No subscriber is not an error: the events stay visible through `active_alerts`.
            let _ = self.events.send(event);
        }
    }

    #[inline]
    fn tags_contains(&self, hash: u64) -> bool {
        let tag = tag_of(hash);
        let mask = self.tags.len() - 1;
        let mut i = hash as usize & mask;
        for _ in 0..self.tags.len() {
            match self.tags[i].load(Ordering::Relaxed) {
                t if t == tag => return true,
                0 => return false,
                _ => i = (i + 1) & mask,
            }
        }
        false
    }

    /// Under the state lock only. The table has at least twice as many slots as candidates.
    fn tags_insert(&self, hash: u64) {
        let mask = self.tags.len() - 1;
        let mut i = hash as usize & mask;
        for _ in 0..self.tags.len() {
            if self.tags[i].load(Ordering::Relaxed) == 0 {
                self.tags[i].store(tag_of(hash), Ordering::Relaxed);
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Under the state lock only. A record racing with this may miss a candidate and take the
    /// slow path once, which finds it under the lock: harmless.
    fn tags_rebuild(&self, st: &State) {
        for t in &*self.tags {
            t.store(0, Ordering::Relaxed);
        }
        for &hash in st.candidates.keys() {
            self.tags_insert(hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(&*truncate_key("short", 16), "short");
        let long = "é".repeat(20); // 40 bytes
        let t = truncate_key(&long, 16);
        assert!(t.len() <= 16, "{} bytes", t.len());
        assert!(t.ends_with('…'));
        assert!(t.starts_with("éééééé"));
        let exact = "a".repeat(16);
        assert_eq!(&*truncate_key(&exact, 16), exact.as_str());
    }

    #[test]
    fn tags_find_inserted_and_forget_rebuilt() {
        let d = HotKeyDetector::builder().capacity(4).build().unwrap();
        let inner = &d.inner;
        for h in [0u64, 1, 8, 16, 24, u64::MAX] {
            assert!(!inner.tags_contains(h));
        }
        inner.tags_insert(8);
        inner.tags_insert(16);
        inner.tags_insert(0);
        assert!(inner.tags_contains(8) && inner.tags_contains(16) && inner.tags_contains(0));
        assert!(!inner.tags_contains(24));
        let st = inner.lock();
        inner.tags_rebuild(&st);
        assert!(!inner.tags_contains(8));
    }

    #[test]
    fn per_minute_scales_other_windows() {
        let d = HotKeyDetector::builder()
            .window(Duration::from_secs(30))
            .build()
            .unwrap();
        assert_eq!(d.inner.per_minute(500), 1000);
        let d = HotKeyDetector::new();
        assert_eq!(d.inner.per_minute(500), 500);
    }
}
