//! The in-process limiter: governor's keyed GCRA over a state store of our own (a `DashMap`
//! with a fast seeded hasher, which counts the keys it adds and can be cleared), escalating
//! penalties mirrored from the Redis script, and a hard bound on the number of keys held.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock as GovernorClock, QuantaClock, Reference};
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed, StateStore};

use crate::{Decision, DecisionSource, EndpointClass, PenaltyConfig, Quota, Subject, Tier, Tiers};

/// The key of a penalty state: one per (endpoint class, subject). (The GCRA states are keyed
/// by subject alone: each tier and class has a limiter of its own.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LocalKey {
    pub(crate) class: EndpointClass,
    pub(crate) subject: Subject,
}

/// The hasher of every in-process map: seeded per process (so keys an attacker picks do not
/// collide on purpose), and several times cheaper than the standard library's SipHash for
/// keys this small.
type FastState = foldhash::fast::RandomState;

/// Counts keys added to any store of one limiter and says when a sweep is due; shared by all
/// of its stores, so the bound holds over their total.
#[derive(Debug)]
struct Growth {
    added: AtomicU64,
    /// A power of two: a sweep is due after this many new keys.
    every: u64,
    due: AtomicBool,
}

impl Growth {
    /// A key was added: every `every`-th addition makes a sweep due.
    fn added(&self) {
        let n = self.added.fetch_add(1, Ordering::Relaxed) + 1;
        if n & (self.every - 1) == 0 {
            self.due.store(true, Ordering::Relaxed);
        }
    }
}

/// governor's state store, over a `DashMap` we keep a handle to: governor's own dashmap store
/// hashes with SipHash, cannot count the keys it adds and cannot be cleared. The hot path is
/// governor's (`get`, then one compare-and-swap); only a new key touches the growth counter.
#[derive(Clone)]
pub(crate) struct Store {
    map: Arc<DashMap<Subject, InMemoryState, FastState>>,
    growth: Arc<Growth>,
}

impl Store {
    fn new(growth: &Arc<Growth>) -> Self {
        Self {
            map: Arc::new(DashMap::with_hasher(FastState::default())),
            growth: Arc::clone(growth),
        }
    }

    fn clear(&self) {
        self.map.clear();
        self.map.shrink_to_fit();
    }
}

impl StateStore for Store {
    type Key = Subject;

    fn measure_and_replace<T, F, E>(&self, key: &Subject, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.map.get(key) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        let state = self.map.entry(key.clone()).or_insert_with(|| {
            self.growth.added();
            InMemoryState::default()
        });
        state.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

/// The state's theoretical arrival time, read without changing it (the closure declines the
/// update and hands back what it saw); 0 for a fresh state.
fn tat(state: &InMemoryState) -> u64 {
    let seen: Result<((), Nanos), Option<Nanos>> =
        state.measure_and_replace(&NotKeyed::NonKey, Err);
    match seen {
        Err(t) => t.map_or(0, Nanos::as_u64),
        Ok(_) => 0,
    }
}

impl ShrinkableKeyedStateStore<Subject> for Store {
    fn retain_recent(&self, drop_below: Nanos) {
        // As governor's own store: a state at or below `drop_below` is indistinguishable from
        // a fresh one.
        let drop_below = drop_below.as_u64();
        self.map.retain(|_, state| tat(state) > drop_below);
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// governor's keyed limiter over [`Store`], answering with state snapshots, so a decision can
/// report the remaining burst.
pub(crate) type KeyedLimiter<C> =
    governor::RateLimiter<Subject, Store, C, StateInformationMiddleware>;

/// Most distinct custom quotas (from overrides) kept at once; past it the set is rebuilt.
const MAX_CUSTOM_QUOTAS: usize = 256;

/// A governor clock reading an injected [`unite_breaker::Clock`], for tests.
#[derive(Clone, Debug)]
pub(crate) struct InjectedClock(pub(crate) Arc<dyn unite_breaker::Clock>);

impl GovernorClock for InjectedClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.0.now()
    }
}

/// The penalty state of one key; times are offsets from the limiter's origin.
#[derive(Debug, Clone, Copy, Default)]
struct PenaltyState {
    strikes: u32,
    last: Duration,
    until: Duration,
}

impl PenaltyState {
    /// Strikes left after the quiet periods since the last violation (one forgiven per period).
    fn effective(&self, now: Duration, decay: Duration) -> u32 {
        if self.strikes == 0 {
            return 0;
        }
        let quiet = now.saturating_sub(self.last).as_micros();
        let periods = quiet / decay.as_micros().max(1);
        let periods = u32::try_from(periods).unwrap_or(u32::MAX);
        self.strikes.saturating_sub(periods)
    }

    /// Indistinguishable from no state at all.
    fn is_spent(&self, now: Duration, decay: Duration) -> bool {
        now >= self.until && self.effective(now, decay) == 0
    }
}

/// One quota's limiter, with what a decision reports about the quota computed once.
struct Fixed<C: GovernorClock> {
    limiter: KeyedLimiter<C>,
    /// The limiter's store (governor gives no access to it once built).
    store: Store,
    quota: Quota,
    interval: Duration,
    /// `interval × (burst − 1)`: how far ahead of now a key's state may run.
    tau: Duration,
}

impl<C: GovernorClock + Clone> Fixed<C> {
    fn new(quota: Quota, clock: &C, growth: &Arc<Growth>) -> Self {
        let interval = quota.emission_interval();
        let store = Store::new(growth);
        Self {
            limiter: new_keyed(quota, clock, store.clone()),
            store,
            quota,
            interval,
            tau: interval * (quota.burst().get() - 1),
        }
    }

    fn store(&self) -> &Store {
        &self.store
    }
}

/// Limiters of custom quotas set by overrides, by quota and endpoint class.
type CustomMap<C> = HashMap<(Quota, EndpointClass), Arc<Fixed<C>>>;

/// The limiters of every tier and endpoint class, and of the custom quotas set by overrides.
/// Each keeps its own keys, so a key is the subject alone: a decision hashes and compares only
/// the subject, and looks it up without cloning it.
struct Limiters<C: GovernorClock> {
    /// `fixed[tier * 2 + class]`.
    fixed: Vec<Fixed<C>>,
    custom: RwLock<CustomMap<C>>,
}

impl<C: GovernorClock + Clone> Limiters<C> {
    fn new(tiers: &Tiers, clock: &C, growth: &Arc<Growth>) -> Self {
        let fixed = Tier::ALL
            .iter()
            .flat_map(|&tier| {
                EndpointClass::ALL
                    .iter()
                    .map(move |&class| Fixed::new(tiers.quota(tier, class), clock, growth))
            })
            .collect();
        Self {
            fixed,
            custom: RwLock::new(HashMap::new()),
        }
    }

    #[inline]
    fn fixed(&self, tier: Tier, class: EndpointClass) -> &Fixed<C> {
        &self.fixed[tier.index() * EndpointClass::ALL.len() + class.index()]
    }

    fn custom_map(&self) -> std::sync::RwLockReadGuard<'_, CustomMap<C>> {
        self.custom.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.fixed.iter().map(|f| f.store().len()).sum::<usize>()
            + self
                .custom_map()
                .values()
                .map(|f| f.store().len())
                .sum::<usize>()
    }

    fn retain_recent(&self) {
        for f in &self.fixed {
            f.limiter.retain_recent();
            f.limiter.shrink_to_fit();
        }
        for f in self.custom_map().values() {
            f.limiter.retain_recent();
            f.limiter.shrink_to_fit();
        }
    }

    /// Forgets every key (a flood of distinct keys left no other way to keep the bound).
    fn clear(&self) {
        for f in &self.fixed {
            f.store().clear();
        }
        self.custom
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn custom(
        &self,
        quota: Quota,
        class: EndpointClass,
        clock: &C,
        growth: &Arc<Growth>,
    ) -> Arc<Fixed<C>> {
        if let Some(l) = self.custom_map().get(&(quota, class)) {
            return Arc::clone(l);
        }
        let mut map = self.custom.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_CUSTOM_QUOTAS && !map.contains_key(&(quota, class)) {
            map.clear();
        }
        Arc::clone(
            map.entry((quota, class))
                .or_insert_with(|| Arc::new(Fixed::new(quota, clock, growth))),
        )
    }
}

fn new_keyed<C: GovernorClock + Clone>(quota: Quota, clock: &C, store: Store) -> KeyedLimiter<C> {
    governor::RateLimiter::<Subject, Store, C, NoOpMiddleware<C::Instant>>::new(
        quota.to_governor(),
        store,
        clock.clone(),
    )
    .with_middleware::<StateInformationMiddleware>()
}

/// The largest power of two not above `n` (`n >= 1`).
fn prev_power_of_two(n: usize) -> u64 {
    let n = u64::try_from(n.max(1)).unwrap_or(u64::MAX);
    1 << (63 - n.leading_zeros())
}

/// Counters of the in-process limiter's housekeeping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LocalStats {
    pub(crate) keys: usize,
    pub(crate) penalty_keys: usize,
    pub(crate) penalties_active: usize,
    pub(crate) resets: u64,
}

/// The in-process limiter over a governor clock `C`.
pub(crate) struct LocalLimiter<C: GovernorClock> {
    clock: C,
    origin: C::Instant,
    tiers: Tiers,
    penalty: PenaltyConfig,
    max_keys: usize,
    limiters: Limiters<C>,
    growth: Arc<Growth>,
    penalties: DashMap<LocalKey, PenaltyState, FastState>,
    has_penalties: AtomicBool,
    resets: AtomicU64,
    /// Blocks observed elsewhere (in Redis), added to the active-penalty gauge.
    extra_active: AtomicUsize,
    maintenance: Mutex<()>,
}

impl<C: GovernorClock> fmt::Debug for LocalLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("max_keys", &self.max_keys)
            .field("penalty_keys", &self.penalties.len())
            .finish_non_exhaustive()
    }
}

impl<C: GovernorClock + Clone> LocalLimiter<C> {
    /// `tiers` are the quotas this instance enforces on its own (already divided by the
    /// instance count when it backs a shared limiter).
    pub(crate) fn new(clock: C, tiers: Tiers, penalty: PenaltyConfig, max_keys: usize) -> Self {
        let max_keys = max_keys.max(1);
        let origin = clock.now();
        let growth = Arc::new(Growth {
            added: AtomicU64::new(0),
            // Between two sweeps at most `every` new keys can arrive (in the limiters and the
            // penalty map), so sweeping when fewer than that are left under the cap keeps the
            // count under the cap.
            every: prev_power_of_two((max_keys / 8).clamp(1, 1024)),
            due: AtomicBool::new(false),
        });
        Self {
            origin,
            limiters: Limiters::new(&tiers, &clock, &growth),
            growth,
            tiers,
            penalty,
            max_keys,
            penalties: DashMap::with_hasher(FastState::default()),
            has_penalties: AtomicBool::new(false),
            resets: AtomicU64::new(0),
            extra_active: AtomicUsize::new(0),
            maintenance: Mutex::new(()),
            clock,
        }
    }

    fn now(&self) -> Duration {
        self.clock.now().duration_since(self.origin).into()
    }

    /// The quota this limiter enforces for `tier` and `class`.
    pub(crate) fn quota(&self, tier: Tier, class: EndpointClass) -> Quota {
        self.tiers.quota(tier, class)
    }

    /// Decides one request. `custom` is an override's quota (already shared out).
    #[inline(always)]
    pub(crate) fn decide(
        &self,
        subject: &Subject,
        tier: Tier,
        class: EndpointClass,
        custom: Option<Quota>,
        source: DecisionSource,
    ) -> Decision {
        let decision = match custom {
            None => {
                let fixed = self.limiters.fixed(tier, class);
                self.decide_with(fixed, subject, tier, class, false, source)
            }
            Some(q) => {
                let fixed = self.limiters.custom(q, class, &self.clock, &self.growth);
                self.decide_with(&fixed, subject, tier, class, true, source)
            }
        };
        if self.growth.due.load(Ordering::Relaxed) {
            self.maintain();
        }
        decision
    }

    /// One decision against `fixed` (`custom`: an override's quota, reported as the policy
    /// `override`). Always inlined, with a flag rather than the policy name as an argument, so
    /// the [`Decision`] is written once, in place: returned through two calls and a `&str`
    /// passed on the stack, its copies cost more than governor's own work (store-forwarding
    /// stalls in the profile).
    #[inline(always)]
    fn decide_with(
        &self,
        fixed: &Fixed<C>,
        subject: &Subject,
        tier: Tier,
        class: EndpointClass,
        custom: bool,
        source: DecisionSource,
    ) -> Decision {
        let quota = fixed.quota;
        let policy = if custom { "override" } else { class.as_str() };
        let mut d = Decision {
            allowed: false,
            limit: quota.limit().get(),
            window: quota.window(),
            remaining: 0,
            reset: Duration::ZERO,
            retry_after: None,
            tier,
            class,
            policy,
            source,
            strikes: 0,
            blocked: false,
        };
        let penalties = self.penalty.enabled;
        let mut now = None;
        if penalties && self.has_penalties.load(Ordering::Acquire) {
            let t = self.now();
            now = Some(t);
            let key = LocalKey {
                class,
                subject: subject.clone(),
            };
            if let Some(state) = self.penalties.get(&key) {
                if t < state.until {
                    let wait = state.until - t;
                    d.retry_after = Some(wait);
                    d.reset = wait;
                    d.strikes = state.strikes;
                    d.blocked = true;
                    return d;
                }
                d.strikes = state.effective(t, self.penalty.decay_after);
            }
        }
        match fixed.limiter.check_key(subject) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                d.allowed = true;
                d.remaining = remaining;
                // governor does not expose the TAT; this is exact to within one interval
                // (an upper bound).
                d.reset = fixed.interval * quota.burst().get().saturating_sub(remaining);
                d
            }
            Err(not_until) => {
                let mut retry = not_until.wait_time_from(self.clock.now());
                let mut reset = retry + fixed.tau;
                if penalties {
                    let t = now.unwrap_or_else(|| self.now());
                    let key = LocalKey {
                        class,
                        subject: subject.clone(),
                    };
                    let mut state = self.penalties.entry(key).or_insert_with(|| {
                        self.growth.added();
                        PenaltyState::default()
                    });
                    let strikes = state
                        .effective(t, self.penalty.decay_after)
                        .saturating_add(1);
                    let block = self.penalty.block_for(strikes);
                    state.strikes = strikes;
                    state.last = t;
                    if block.is_zero() {
                        state.until = Duration::ZERO;
                    } else {
                        state.until = t + block;
                        d.blocked = true;
                        retry = retry.max(block);
                        reset = reset.max(retry);
                    }
                    drop(state);
                    self.has_penalties.store(true, Ordering::Release);
                    d.strikes = strikes;
                }
                d.retry_after = Some(retry);
                d.reset = reset;
                d
            }
        }
    }

    /// Keeps the key count under the cap: evicts idle keys first, then, if the limiter is still
    /// three-quarters full (a flood of distinct keys), forgets every key. Also drops spent
    /// penalty states and publishes the active-penalty gauge. Runs after every
    /// `growth.every` new keys, and from the limiter's background task.
    pub(crate) fn maintain(&self) {
        let Ok(_guard) = self.maintenance.try_lock() else {
            return;
        };
        self.growth.due.store(false, Ordering::Relaxed);
        let headroom = usize::try_from(self.growth.every).unwrap_or(usize::MAX);
        if self.limiters.len().saturating_add(headroom) > self.max_keys {
            self.limiters.retain_recent();
            if self.limiters.len() > self.max_keys / 4 * 3 {
                self.limiters.clear();
                self.resets.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    max_keys = self.max_keys,
                    "rate limiter: too many distinct keys are active; local limiter state reset"
                );
            }
        }

        let now = self.now();
        let decay = self.penalty.decay_after;
        if self.has_penalties.load(Ordering::Acquire) {
            self.penalties.retain(|_, s| !s.is_spent(now, decay));
            if self.penalties.len().saturating_add(headroom) > self.max_keys {
                // Keep the keys blocked right now; forget streaks first.
                self.penalties.retain(|_, s| now < s.until);
                if self.penalties.len().saturating_add(headroom) > self.max_keys {
                    self.penalties.clear();
                }
            }
            self.penalties.shrink_to_fit();
            if self.penalties.is_empty() {
                self.has_penalties.store(false, Ordering::Release);
                // A decision may have recorded a penalty between the check and the store.
                if !self.penalties.is_empty() {
                    self.has_penalties.store(true, Ordering::Release);
                }
            }
        }
        let extra = self.extra_active.load(Ordering::Relaxed);
        crate::metrics::set_penalties_active(self.penalties_active(now).saturating_add(extra));
    }

    pub(crate) fn set_extra_active(&self, n: usize) {
        self.extra_active.store(n, Ordering::Relaxed);
    }

    fn penalties_active(&self, now: Duration) -> usize {
        self.penalties.iter().filter(|e| now < e.until).count()
    }

    pub(crate) fn stats(&self) -> LocalStats {
        LocalStats {
            keys: self.limiters.len(),
            penalty_keys: self.penalties.len(),
            penalties_active: self.penalties_active(self.now()),
            resets: self.resets.load(Ordering::Relaxed),
        }
    }

    /// Forgets the state of `subject` in every class (an admin reset).
    pub(crate) fn forget(&self, subject: &Subject) {
        for class in EndpointClass::ALL {
            self.penalties.remove(&LocalKey {
                class,
                subject: subject.clone(),
            });
        }
    }
}

/// The in-process limiter on the production clock, or on an injected one (tests).
#[derive(Debug)]
pub(crate) enum AnyLocal {
    Quanta(LocalLimiter<QuantaClock>),
    Injected(LocalLimiter<InjectedClock>),
}

macro_rules! dispatch {
    ($self:expr, $l:ident => $e:expr) => {
        match $self {
            AnyLocal::Quanta($l) => $e,
            AnyLocal::Injected($l) => $e,
        }
    };
}

impl AnyLocal {
    pub(crate) fn new(
        clock: Option<Arc<dyn unite_breaker::Clock>>,
        tiers: Tiers,
        penalty: PenaltyConfig,
        max_keys: usize,
    ) -> Self {
        match clock {
            None => Self::Quanta(LocalLimiter::new(
                QuantaClock::default(),
                tiers,
                penalty,
                max_keys,
            )),
            Some(c) => Self::Injected(LocalLimiter::new(
                InjectedClock(c),
                tiers,
                penalty,
                max_keys,
            )),
        }
    }

    #[inline(always)]
    pub(crate) fn decide(
        &self,
        subject: &Subject,
        tier: Tier,
        class: EndpointClass,
        custom: Option<Quota>,
        source: DecisionSource,
    ) -> Decision {
        dispatch!(self, l => l.decide(subject, tier, class, custom, source))
    }

    pub(crate) fn quota(&self, tier: Tier, class: EndpointClass) -> Quota {
        dispatch!(self, l => l.quota(tier, class))
    }

    pub(crate) fn maintain(&self) {
        dispatch!(self, l => l.maintain());
    }

    pub(crate) fn stats(&self) -> LocalStats {
        dispatch!(self, l => l.stats())
    }

    pub(crate) fn set_extra_active(&self, n: usize) {
        dispatch!(self, l => l.set_extra_active(n));
    }

    pub(crate) fn forget(&self, subject: &Subject) {
        dispatch!(self, l => l.forget(subject));
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::num::NonZeroU32;

    use unite_breaker::ManualClock;

    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    fn limiter_with(
        clock: &ManualClock,
        quota: Quota,
        penalty: PenaltyConfig,
        max_keys: usize,
    ) -> AnyLocal {
        let mut tiers = Tiers::default();
        tiers.public.default = quota;
        AnyLocal::new(Some(Arc::new(clock.clone())), tiers, penalty, max_keys)
    }

    fn limiter(clock: &ManualClock, penalty: PenaltyConfig, max_keys: usize) -> AnyLocal {
        limiter_with(clock, Quota::per_minute(nz(3)), penalty, max_keys)
    }

    fn ip(n: u32) -> Subject {
        Subject::Ip(IpAddr::V4(Ipv4Addr::from(n)))
    }

    fn check(l: &AnyLocal, s: &Subject) -> Decision {
        l.decide(
            s,
            Tier::Public,
            EndpointClass::Default,
            None,
            DecisionSource::Local,
        )
    }

    #[test]
    fn burst_then_refusal_with_exact_retry() {
        let clock = ManualClock::new();
        let l = limiter(&clock, PenaltyConfig::disabled(), 100);
        let s = ip(1);
        let remaining: Vec<u32> = (0..3).map(|_| check(&l, &s).remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
        let d = check(&l, &s);
        assert!(!d.allowed);
        assert!(!d.blocked);
        // 3/min: one request every 20 s; the next is allowed 20 s after the first.
        assert_eq!(d.retry_after, Some(Duration::from_secs(20)));
        assert_eq!(d.reset, Duration::from_secs(60));
        clock.advance(Duration::from_secs(20));
        assert!(check(&l, &s).allowed);
        // Classes and subjects are counted apart.
        assert!(check(&l, &ip(2)).allowed);
        let ai = l.decide(
            &s,
            Tier::Public,
            EndpointClass::Ai,
            None,
            DecisionSource::Local,
        );
        assert!(ai.allowed);
        assert_eq!(ai.limit, 10);
    }

    #[test]
    fn penalties_escalate_cap_and_decay() {
        let clock = ManualClock::new();
        let penalty = PenaltyConfig {
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
            decay_after: Duration::from_secs(100),
            ..PenaltyConfig::default()
        };
        // One request per second, no burst: the quota alone asks for a 1 s wait.
        let l = limiter_with(&clock, Quota::per_second(nz(1)), penalty, 100);
        let s = ip(7);
        let mut waits = Vec::new();
        for strike in 1..=5 {
            assert!(check(&l, &s).allowed);
            let d = check(&l, &s);
            assert!(!d.allowed && d.blocked);
            assert_eq!(d.strikes, strike);
            let wait = d.retry_after.unwrap();
            waits.push(wait.as_secs());
            // Refusals during the block do not lengthen it.
            clock.advance(wait / 2);
            let during = check(&l, &s);
            assert!(!during.allowed);
            assert_eq!(during.strikes, strike);
            assert_eq!(during.retry_after, Some(wait - wait / 2));
            clock.advance(wait - wait / 2);
        }
        assert_eq!(waits, [1, 2, 4, 8, 8]);
        assert_eq!(l.stats().penalties_active, 0);
        // Each quiet 100 s forgives one strike.
        clock.advance(Duration::from_secs(250));
        assert!(check(&l, &s).allowed);
        let d = check(&l, &s);
        assert_eq!(d.strikes, 4, "5 strikes, 2 forgiven, 1 new");
        assert_eq!(d.retry_after, Some(Duration::from_secs(8)));
        assert_eq!(l.stats().penalties_active, 1);
        l.maintain();
        assert_eq!(l.stats().penalty_keys, 1);
        clock.advance(Duration::from_secs(10_000));
        l.maintain();
        assert_eq!(l.stats().penalty_keys, 0);
    }

    #[test]
    fn key_count_is_bounded_under_a_flood_with_a_frozen_clock() {
        let clock = ManualClock::new();
        let l = limiter(&clock, PenaltyConfig::default(), 1000);
        for i in 0..20_000 {
            assert!(check(&l, &ip(i)).allowed);
            if i % 97 == 0 {
                assert!(l.stats().keys <= 1000, "{:?}", l.stats());
            }
        }
        assert!(l.stats().resets > 0);
    }

    #[test]
    fn idle_keys_are_evicted_before_any_reset() {
        let clock = ManualClock::new();
        let l = limiter(&clock, PenaltyConfig::default(), 1000);
        for i in 0..20_000 {
            check(&l, &ip(i));
            // A key is evicted 40 s after its request (its TAT, 20 s, plus one interval):
            // about 400 keys are live at any time.
            clock.advance(Duration::from_millis(100));
            assert!(l.stats().keys <= 1000);
        }
        assert_eq!(l.stats().resets, 0);
    }
}
