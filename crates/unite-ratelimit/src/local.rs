//! The in-process limiter: governor's keyed GCRA, escalating penalties mirrored from the Redis
//! script, and a hard bound on the number of keys held.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use governor::clock::{Clock as GovernorClock, QuantaClock, Reference};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;

use crate::{Decision, DecisionSource, EndpointClass, PenaltyConfig, Quota, Subject, Tier, Tiers};

/// The key of the in-process state: one GCRA state per (endpoint class, subject).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LocalKey {
    pub(crate) class: EndpointClass,
    pub(crate) subject: Subject,
}

/// governor's keyed limiter (DashMap store) answering with state snapshots, so a decision can
/// report the remaining burst.
pub(crate) type KeyedLimiter<C> = governor::RateLimiter<
    LocalKey,
    DefaultKeyedStateStore<LocalKey>,
    C,
    StateInformationMiddleware,
>;

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

/// One set of governor limiters; replaced whole when the key bound cannot be kept otherwise.
struct Generation<C: GovernorClock> {
    /// One limiter per distinct tier quota.
    fixed: Vec<KeyedLimiter<C>>,
    /// `index[tier][class]` into `fixed`.
    index: [[usize; 2]; 4],
    /// Limiters of custom quotas set by overrides.
    custom: RwLock<HashMap<Quota, Arc<KeyedLimiter<C>>>>,
}

impl<C: GovernorClock + Clone> Generation<C> {
    fn new(tiers: &Tiers, clock: &C) -> Self {
        let mut quotas: Vec<Quota> = Vec::new();
        let mut index = [[0usize; 2]; 4];
        for tier in Tier::ALL {
            for class in EndpointClass::ALL {
                let q = tiers.quota(tier, class);
                let i = match quotas.iter().position(|&x| x == q) {
                    Some(i) => i,
                    None => {
                        quotas.push(q);
                        quotas.len() - 1
                    }
                };
                index[tier.index()][class.index()] = i;
            }
        }
        let fixed = quotas.iter().map(|q| new_keyed(*q, clock)).collect();
        Self {
            fixed,
            index,
            custom: RwLock::new(HashMap::new()),
        }
    }

    fn len(&self) -> usize {
        let custom = self.custom.read().unwrap_or_else(PoisonError::into_inner);
        self.fixed.iter().map(KeyedLimiter::len).sum::<usize>()
            + custom.values().map(|l| l.len()).sum::<usize>()
    }

    fn retain_recent(&self) {
        for l in &self.fixed {
            l.retain_recent();
            l.shrink_to_fit();
        }
        let custom = self.custom.read().unwrap_or_else(PoisonError::into_inner);
        for l in custom.values() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    fn custom(&self, quota: Quota, clock: &C) -> Arc<KeyedLimiter<C>> {
        if let Some(l) = self
            .custom
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&quota)
        {
            return Arc::clone(l);
        }
        let mut map = self.custom.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_CUSTOM_QUOTAS && !map.contains_key(&quota) {
            map.clear();
        }
        Arc::clone(
            map.entry(quota)
                .or_insert_with(|| Arc::new(new_keyed(quota, clock))),
        )
    }
}

fn new_keyed<C: GovernorClock + Clone>(quota: Quota, clock: &C) -> KeyedLimiter<C> {
    governor::RateLimiter::dashmap_with_clock(quota.to_governor(), clock.clone())
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
    sweep_every: u64,
    generation: ArcSwap<Generation<C>>,
    penalties: DashMap<LocalKey, PenaltyState>,
    has_penalties: AtomicBool,
    decisions: AtomicU64,
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
        let generation = Generation::new(&tiers, &clock);
        Self {
            origin,
            tiers,
            penalty,
            max_keys,
            // Between two sweeps at most `sweep_every` new keys can arrive, so sweeping when
            // fewer than that are left under the cap keeps the count under the cap.
            // A power of two, so the hot path tests it with a mask.
            sweep_every: prev_power_of_two((max_keys / 8).clamp(1, 1024)),
            generation: ArcSwap::from_pointee(generation),
            penalties: DashMap::new(),
            has_penalties: AtomicBool::new(false),
            decisions: AtomicU64::new(0),
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
    pub(crate) fn decide(
        &self,
        subject: &Subject,
        tier: Tier,
        class: EndpointClass,
        custom: Option<Quota>,
        source: DecisionSource,
    ) -> Decision {
        let key = LocalKey {
            class,
            subject: subject.clone(),
        };
        let generation = self.generation.load();
        let custom_limiter;
        let (limiter, quota, policy) = match custom {
            None => {
                let i = generation.index[tier.index()][class.index()];
                (
                    &generation.fixed[i],
                    self.tiers.quota(tier, class),
                    class.as_str(),
                )
            }
            Some(q) => {
                custom_limiter = generation.custom(q, &self.clock);
                (&*custom_limiter, q, "override")
            }
        };
        let decision = self.decide_with(limiter, key, quota, tier, class, policy, source);
        drop(generation);
        self.after_decision();
        decision
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_with(
        &self,
        limiter: &KeyedLimiter<C>,
        key: LocalKey,
        quota: Quota,
        tier: Tier,
        class: EndpointClass,
        policy: &'static str,
        source: DecisionSource,
    ) -> Decision {
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
        let t_interval = quota.emission_interval();
        match limiter.check_key(&key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                d.allowed = true;
                d.remaining = remaining;
                // governor does not expose the TAT; this is exact to within one interval
                // (an upper bound).
                d.reset = t_interval * quota.burst().get().saturating_sub(remaining);
                d
            }
            Err(not_until) => {
                let mut retry = not_until.wait_time_from(self.clock.now());
                let tau = t_interval * (quota.burst().get() - 1);
                let mut reset = retry + tau;
                if penalties {
                    let t = now.unwrap_or_else(|| self.now());
                    let mut state = self.penalties.entry(key).or_default();
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

    fn after_decision(&self) {
        let n = self.decisions.fetch_add(1, Ordering::Relaxed) + 1;
        if n & (self.sweep_every - 1) == 0 {
            self.maintain();
        }
    }

    /// Keeps the key count under the cap: evicts idle keys first, then, if the limiter is still
    /// three-quarters full (a flood of distinct keys), starts a fresh generation. Also drops
    /// spent penalty states and publishes the active-penalty gauge.
    pub(crate) fn maintain(&self) {
        let Ok(_guard) = self.maintenance.try_lock() else {
            return;
        };
        let headroom = usize::try_from(self.sweep_every).unwrap_or(usize::MAX);
        let generation = self.generation.load();
        if generation.len().saturating_add(headroom) > self.max_keys {
            generation.retain_recent();
            if generation.len() > self.max_keys / 4 * 3 {
                self.generation
                    .store(Arc::new(Generation::new(&self.tiers, &self.clock)));
                self.resets.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    max_keys = self.max_keys,
                    "rate limiter: too many distinct keys are active; local limiter state reset"
                );
            }
        }
        drop(generation);

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
            keys: self.generation.load().len(),
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
