//! The tiered limiter: overrides, then the shared budget in Redis, or the local limiter.

use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use fred::clients::Client;
use serde::Serialize;
use tokio::task::AbortHandle;
use unite_breaker::{BreakerSnapshot, CircuitBreaker, Clock, Permit, Window};

use crate::local::AnyLocal;
use crate::overrides::{OverrideSet, OverrideStore};
use crate::reserve::{Reservations, Want};
use crate::{
    Config, Decision, DecisionSource, EndpointClass, Error, Override, OverrideEntry, PenaltyConfig,
    Quota, RedisGcra, Subject, Tier, TierQuotas, Tiers,
};

/// A tiered rate limiter. Cheap to clone (an `Arc` inside); clones share all state.
///
/// Built without Redis it limits in process (governor). Built with a Redis client, every
/// instance shares one budget per key through one atomic script per decision, falls back to
/// the in-process limiter at its share of the quota when Redis fails, and sees overrides set
/// on any instance within a second. See the [crate docs](crate) for an example.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    local: AnyLocal,
    shared: Option<Shared>,
    overrides: ArcSwap<OverrideSet>,
    overrides_writer: Mutex<()>,
    /// Counts this instance's own override writes (under `overrides_writer`), so a refresh
    /// that read Redis before one of them does not put the older set back.
    local_override_writes: AtomicU64,
    /// `false` while the set is empty: the common case skips the lookup entirely.
    has_overrides: AtomicBool,
    counters: crate::metrics::DecisionCounters,
    /// The refresh task, spawned once `Inner` exists (a task spawned while it is still being
    /// built could run first, find nothing to upgrade and end for good).
    refresher: OnceLock<AbortHandle>,
}

struct Shared {
    gcra: RedisGcra,
    store: OverrideStore,
    breaker: CircuitBreaker,
    version: AtomicI64,
    /// Keys Redis answered "blocked" for, until when: feeds the active-penalty gauge.
    observed_blocks: DashMap<(EndpointClass, Subject), Instant>,
    /// Decisions reserved from the shared budget; `None` with `reserve_max` 1.
    reservations: Option<Reservations>,
}

impl Shared {
    fn observe_block(&self, d: &Decision, subject: &Subject, max_keys: usize) {
        let Some(wait) = d.retry_after.filter(|_| d.blocked) else {
            return;
        };
        if self.observed_blocks.len() < max_keys {
            self.observed_blocks
                .insert((d.class, subject.clone()), Instant::now() + wait);
        }
    }

    fn active_blocks(&self) -> usize {
        let now = Instant::now();
        self.observed_blocks.retain(|_, until| *until > now);
        self.observed_blocks.len()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.refresher.get() {
            task.abort();
        }
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &*self.inner;
        f.debug_struct("RateLimiter")
            .field("mode", &self.mode())
            .field("config", &i.config)
            .field("local", &i.local)
            .field("breaker", &i.shared.as_ref().map(|s| &s.breaker))
            .finish_non_exhaustive()
    }
}

/// Builds a [`RateLimiter`]; see [`RateLimiter::builder`].
#[must_use]
pub struct Builder {
    config: Config,
    redis: Option<Client>,
    breaker: Option<CircuitBreaker>,
    clock: Option<Arc<dyn Clock>>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("redis", &self.redis.is_some())
            .field("breaker", &self.breaker)
            .field("clock", &self.clock)
            .finish()
    }
}

impl Builder {
    /// Replaces the whole configuration (e.g. one read from a file).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The quotas of every tier.
    pub fn tiers(mut self, tiers: Tiers) -> Self {
        self.config.tiers = tiers;
        self
    }

    /// The quotas of one tier.
    pub fn tier(mut self, tier: Tier, quotas: TierQuotas) -> Self {
        *self.config.tiers.get_mut(tier) = quotas;
        self
    }

    /// Escalating penalties ([`PenaltyConfig::disabled`] to switch them off).
    pub fn penalty(mut self, penalty: PenaltyConfig) -> Self {
        self.config.penalty = penalty;
        self
    }

    /// Share the budget across instances through this Redis client (it may be shared with
    /// other users, e.g. a cache).
    pub fn redis(mut self, client: Client) -> Self {
        self.redis = Some(client);
        self
    }

    /// The circuit breaker around Redis (e.g. one shared with the cache). Default: a breaker
    /// named `ratelimit-redis` that opens at 50 % failures over the last 20 calls (at least
    /// 5), for 1 s growing to 30 s.
    pub fn breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Prefix of every Redis key. Default `unite-rl:`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.shared.key_prefix = prefix.into();
        self
    }

    /// The longest a decision waits for Redis. Default 50 ms.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.config.shared.command_timeout = timeout;
        self
    }

    /// How many instances share the budget (each enforces its share while Redis is down).
    pub fn expected_instances(mut self, n: NonZeroU32) -> Self {
        self.config.shared.expected_instances = n;
        self
    }

    /// Refuse every request while Redis is unreachable, instead of limiting locally.
    pub fn fail_closed(mut self, fail_closed: bool) -> Self {
        self.config.shared.fail_closed = fail_closed;
        self
    }

    /// How often overrides are re-read from Redis (1 ms ..= 1 s). Default 250 ms.
    pub fn override_refresh(mut self, every: Duration) -> Self {
        self.config.shared.override_refresh = every;
        self
    }

    /// Lets one round trip reserve up to `max` decisions of a busy key for this instance,
    /// spent within `lasts` (see [`SharedConfig::reserve_max`](crate::SharedConfig)).
    /// `max` 1 (the default) is one round trip per decision.
    pub fn reserve(mut self, max: NonZeroU32, lasts: Duration) -> Self {
        self.config.shared.reserve_max = max;
        self.config.shared.reserve_for = lasts;
        self
    }

    /// The most keys the in-process limiter holds. Default 100 000.
    pub fn max_keys(mut self, max: NonZeroUsize) -> Self {
        self.config.local.max_keys = max;
        self
    }

    /// The clock of the in-process limiter and of the default breaker (default: the system
    /// monotonic clock). Inject a `ManualClock` in tests so windows pass without sleeping.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates the configuration and builds the limiter. Inside a tokio runtime it spawns a
    /// background task (override refresh with Redis; sweeping of idle keys and the penalty
    /// gauge in any mode), stopped when the last clone is dropped. With Redis it must run
    /// inside a runtime; it does not wait for Redis (the script is loaded on first use).
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad field; [`Error::NoRuntime`] with Redis outside a
    /// runtime.
    pub fn build(self) -> Result<RateLimiter, Error> {
        let config = self.config;
        config.validate()?;
        let divisor = if self.redis.is_some() {
            config.shared.expected_instances
        } else {
            NonZeroU32::MIN
        };
        let mut local_tiers = config.tiers;
        for tier in Tier::ALL {
            let q = local_tiers.get_mut(tier);
            q.default = q.default.share(divisor);
            q.ai = q.ai.share(divisor);
        }
        let local = AnyLocal::new(
            self.clock.clone(),
            local_tiers,
            config.penalty,
            config.local.max_keys.get(),
        );
        let shared = match self.redis {
            None => None,
            Some(client) => {
                let breaker = match self.breaker {
                    Some(b) => b,
                    None => default_breaker(self.clock.clone())?,
                };
                let s = &config.shared;
                Some(Shared {
                    gcra: RedisGcra::new(client.clone(), &s.key_prefix, s.command_timeout),
                    store: OverrideStore::new(client, &s.key_prefix, s.command_timeout),
                    breaker,
                    version: AtomicI64::new(-1),
                    observed_blocks: DashMap::new(),
                    reservations: (s.reserve_max.get() > 1).then(|| {
                        Reservations::new(
                            s.reserve_max.get(),
                            s.reserve_for,
                            config.local.max_keys.get(),
                        )
                    }),
                })
            }
        };
        let refresh = config.shared.override_refresh;
        // With Redis the task is required (overrides from other instances); without, it only
        // sweeps idle keys and publishes the penalty gauge, which decisions also do as keys
        // arrive, so a limiter built outside a runtime works without it.
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(rt) => Some(rt),
            Err(_) if shared.is_none() => None,
            Err(_) => return Err(Error::NoRuntime),
        };
        let inner = Arc::new(Inner {
            config,
            local,
            shared,
            overrides: ArcSwap::from_pointee(OverrideSet::default()),
            overrides_writer: Mutex::new(()),
            local_override_writes: AtomicU64::new(0),
            has_overrides: AtomicBool::new(false),
            counters: crate::metrics::DecisionCounters::register(),
            refresher: OnceLock::new(),
        });
        if let Some(rt) = runtime {
            let task = rt.spawn(refresh_loop(Arc::downgrade(&inner), refresh));
            let _ = inner.refresher.set(task.abort_handle());
        }
        Ok(RateLimiter { inner })
    }
}

fn default_breaker(clock: Option<Arc<dyn Clock>>) -> Result<CircuitBreaker, Error> {
    let mut b = CircuitBreaker::builder()
        .name("ratelimit-redis")
        .failure_rate_threshold(0.5)
        .window(Window::Count(20))
        .minimum_calls(5)
        .open_duration(Duration::from_secs(1))
        .max_open_duration(Duration::from_secs(30))
        .half_open_calls(2);
    if let Some(c) = clock {
        b = b.clock(c);
    }
    b.build()
        .map_err(|e| Error::config("breaker", e.to_string()))
}

/// Re-reads the overrides whenever their version changes, measures the offset to the Redis
/// server's clock, and sweeps the local limiter.
async fn refresh_loop(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let limiter = RateLimiter { inner };
        if let Err(error) = limiter.refresh_if_changed().await {
            tracing::debug!(%error, "rate-limit override refresh failed; keeping the cached set");
        }
        if let Some(shared) = &limiter.inner.shared {
            if shared.breaker.state() != unite_breaker::State::Open
                && let Err(error) = shared.gcra.sync_clock().await
            {
                tracing::debug!(%error, "rate-limit clock sync failed; keeping the last offset");
            }
            limiter.inner.local.set_extra_active(shared.active_blocks());
            if let Some(reservations) = &shared.reservations {
                reservations.sweep();
            }
        }
        limiter.inner.local.maintain();
    }
}

/// An override that decides by itself, without the quota.
#[derive(Clone, Copy)]
enum Decisive {
    Exempt,
    Block(Option<SystemTime>),
}

/// A Redis round trip still to make: the breaker's permit and what to ask.
struct SharedCall {
    permit: Permit,
    quota: Quota,
    custom: Option<Quota>,
    policy: &'static str,
    /// With reservations: how many decisions to ask for.
    want: Option<Want>,
}

/// The future of [`RateLimiter::check`]: already complete unless Redis must be asked.
#[must_use = "futures do nothing unless polled"]
pub struct Check {
    state: CheckState,
}

enum CheckState {
    Ready(Option<Decision>),
    Shared(Pin<Box<dyn Future<Output = Decision> + Send>>),
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            CheckState::Ready(d) => f.debug_tuple("Check::Ready").field(d).finish(),
            CheckState::Shared(_) => f.write_str("Check::Shared"),
        }
    }
}

impl Future for Check {
    type Output = Decision;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Decision> {
        match &mut self.state {
            CheckState::Ready(d) => match d.take() {
                Some(d) => Poll::Ready(d),
                // Polled again after completion: nothing left to produce.
                None => Poll::Pending,
            },
            CheckState::Shared(f) => f.as_mut().poll(cx),
        }
    }
}

/// A health summary of the limiter, for the health endpoint.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct RateLimitStats {
    /// `shared` (Redis) or `local`.
    pub mode: &'static str,
    /// Keys held by the in-process limiter.
    pub local_keys: usize,
    /// Penalty states held by the in-process limiter.
    pub local_penalty_keys: usize,
    /// Keys of the in-process limiter under a penalty block now.
    pub local_penalties_active: usize,
    /// How often the in-process state was reset because too many keys were active at once.
    pub local_resets: u64,
    /// Overrides in the local cache.
    pub overrides: usize,
    /// Keys holding decisions reserved from the shared budget (`reserve_max` above 1).
    pub reserved_keys: usize,
    /// The breaker around Redis, in shared mode.
    pub breaker: Option<BreakerSnapshot>,
}

impl RateLimiter {
    /// A [`Builder`] with the default [`Config`].
    pub fn builder() -> Builder {
        Builder {
            config: Config::default(),
            redis: None,
            breaker: None,
            clock: None,
        }
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// `shared` when built with Redis, else `local`.
    #[must_use]
    pub fn mode(&self) -> &'static str {
        if self.inner.shared.is_some() {
            "shared"
        } else {
            "local"
        }
    }

    /// The breaker around Redis, in shared mode.
    #[must_use]
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.inner.shared.as_ref().map(|s| &s.breaker)
    }

    /// Decides one request of `subject` (of `tier`) to an endpoint of `class`, and records
    /// the decision in the metrics.
    ///
    /// Never fails: when Redis does not answer within the command timeout (or its breaker is
    /// open), the in-process limiter decides at this instance's share of the quota, or, when
    /// fail-closed, the request is refused.
    ///
    /// Everything but the Redis round trip happens here, synchronously: without Redis (and for
    /// overrides, or while the breaker is open) the returned [`Check`] is already complete, so
    /// `check(..).now_or_never()` answers without a runtime.
    pub fn check(&self, subject: &Subject, tier: Tier, class: EndpointClass) -> Check {
        let Some(shared) = &self.inner.shared else {
            // The in-process path, with the decision built in place (see `check_now`).
            return Check {
                state: CheckState::Ready(self.check_now(subject, tier, class)),
            };
        };
        match self.decide_now(shared, subject, tier, class) {
            Ok(d) => {
                self.inner.counters.record(&d);
                Check {
                    state: CheckState::Ready(Some(d)),
                }
            }
            Err(call) => {
                let limiter = self.clone();
                let subject = subject.clone();
                Check {
                    state: CheckState::Shared(Box::pin(async move {
                        let d = limiter.decide_shared(call, &subject, tier, class).await;
                        limiter.inner.counters.record(&d);
                        d
                    })),
                }
            }
        }
    }

    /// Decides one request in process, without a future: the same decision as [`check`]
    /// (overrides, penalties, metrics) for a limiter built without Redis. `None` for a limiter
    /// built with Redis, whose decisions need a round trip: use [`check`] there.
    ///
    /// ```
    /// use unite_ratelimit::{EndpointClass, RateLimiter, Subject, Tier};
    /// let limiter = RateLimiter::builder().build()?;
    /// let subject = Subject::Ip("192.0.2.7".parse()?);
    /// let d = limiter.check_now(&subject, Tier::Public, EndpointClass::Default).unwrap();
    /// assert!(d.allowed);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// [`check`]: RateLimiter::check
    #[must_use]
    pub fn check_now(
        &self,
        subject: &Subject,
        tier: Tier,
        class: EndpointClass,
    ) -> Option<Decision> {
        let inner = &*self.inner;
        if inner.shared.is_some() {
            return None;
        }
        let d = match self.overridden(subject, class) {
            Ok(custom) => inner
                .local
                .decide(subject, tier, class, custom, DecisionSource::Local),
            Err(rule) => self.override_decision(rule, tier, class),
        };
        inner.counters.record(&d);
        Some(d)
    }

    /// The custom quota of a live quota override of `subject` (`Ok(None)` without one), or the
    /// override that decides by itself (exempt, block).
    #[inline(always)]
    fn overridden(
        &self,
        subject: &Subject,
        class: EndpointClass,
    ) -> Result<Option<Quota>, Decisive> {
        let inner = &*self.inner;
        if !inner.has_overrides.load(Ordering::Acquire) {
            return Ok(None);
        }
        let overrides = inner.overrides.load();
        match overrides.get(subject) {
            Some(entry) if entry.is_live(SystemTime::now()) => match entry.rule {
                Override::Exempt => Err(Decisive::Exempt),
                Override::Block => Err(Decisive::Block(entry.expires_at)),
                Override::Quota { .. } => Ok(entry.rule.quota_for(class)),
            },
            _ => Ok(None),
        }
    }

    #[cold]
    fn override_decision(&self, rule: Decisive, tier: Tier, class: EndpointClass) -> Decision {
        match rule {
            Decisive::Exempt => self.exempt(tier, class),
            Decisive::Block(until) => self.blocked(tier, class, until),
        }
    }

    /// The synchronous part of a shared-mode decision; `Err` when Redis must be asked.
    #[inline]
    fn decide_now(
        &self,
        shared: &Shared,
        subject: &Subject,
        tier: Tier,
        class: EndpointClass,
    ) -> Result<Decision, SharedCall> {
        let inner = &*self.inner;
        let custom = match self.overridden(subject, class) {
            Ok(custom) => custom,
            Err(rule) => return Ok(self.override_decision(rule, tier, class)),
        };
        let quota = custom.unwrap_or_else(|| inner.config.tiers.quota(tier, class));
        let policy = if custom.is_some() {
            "override"
        } else {
            class.as_str()
        };
        let want = match &shared.reservations {
            None => None,
            Some(reservations) => match reservations.take(subject, tier, class, quota, policy) {
                Ok(reserved) => return Ok(reserved),
                Err(want) => Some(want),
            },
        };
        match shared.breaker.try_acquire() {
            Ok(permit) => Err(SharedCall {
                permit,
                quota,
                custom,
                policy,
                want,
            }),
            Err(rejected) => {
                let error = Error::CircuitOpen {
                    retry_after: rejected.retry_after,
                };
                Ok(self.fallback(&error, subject, tier, class, quota, custom, policy))
            }
        }
    }

    async fn decide_shared(
        &self,
        call: SharedCall,
        subject: &Subject,
        tier: Tier,
        class: EndpointClass,
    ) -> Decision {
        let inner = &*self.inner;
        let Some(shared) = &inner.shared else {
            // Unreachable: a `SharedCall` is only made in shared mode.
            return inner
                .local
                .decide(subject, tier, class, call.custom, DecisionSource::Local);
        };
        let r = shared
            .gcra
            .reserve(
                subject,
                tier,
                class,
                call.quota,
                call.policy,
                &inner.config.penalty,
                None,
                call.want.map_or(1, |w| w.n),
            )
            .await;
        match r {
            Ok((mut d, granted)) => {
                call.permit.success();
                if let (Some(reservations), Some(want)) = (&shared.reservations, call.want) {
                    reservations.granted(subject, call.quota, want, granted, &d);
                    // What this instance now holds is still this key's to spend.
                    d.remaining = d.remaining.saturating_add(granted.saturating_sub(1));
                }
                if d.blocked {
                    shared.observe_block(&d, subject, inner.config.local.max_keys.get());
                }
                d
            }
            Err(error) => {
                call.permit.failure();
                crate::metrics::record_redis_error();
                self.fallback(
                    &error,
                    subject,
                    tier,
                    class,
                    call.quota,
                    call.custom,
                    call.policy,
                )
            }
        }
    }

    /// Redis is unreachable: decide locally at this instance's share, or refuse.
    #[allow(clippy::too_many_arguments)]
    fn fallback(
        &self,
        error: &Error,
        subject: &Subject,
        tier: Tier,
        class: EndpointClass,
        quota: Quota,
        custom: Option<Quota>,
        policy: &'static str,
    ) -> Decision {
        let inner = &*self.inner;
        tracing::debug!(%error, "rate limit: redis unavailable, deciding locally");
        crate::metrics::record_fallback();
        if inner.config.shared.fail_closed {
            let retry = match error {
                Error::CircuitOpen { retry_after } => *retry_after,
                _ => Duration::from_secs(1),
            }
            .max(Duration::from_secs(1));
            return Decision {
                allowed: false,
                limit: quota.limit().get(),
                window: quota.window(),
                remaining: 0,
                reset: retry,
                retry_after: Some(retry),
                tier,
                class,
                policy,
                source: DecisionSource::Unavailable,
                strikes: 0,
                blocked: false,
            };
        }
        let custom = custom.map(|q| q.share(inner.config.shared.expected_instances));
        inner
            .local
            .decide(subject, tier, class, custom, DecisionSource::Fallback)
    }

    fn exempt(&self, tier: Tier, class: EndpointClass) -> Decision {
        let q = self.inner.config.tiers.quota(tier, class);
        Decision {
            allowed: true,
            limit: q.limit().get(),
            window: q.window(),
            remaining: q.burst().get(),
            reset: Duration::ZERO,
            retry_after: None,
            tier,
            class,
            policy: "exempt",
            source: DecisionSource::Override,
            strikes: 0,
            blocked: false,
        }
    }

    fn blocked(&self, tier: Tier, class: EndpointClass, until: Option<SystemTime>) -> Decision {
        let q = self.inner.config.tiers.quota(tier, class);
        // An open-ended block asks the client to come back after one window.
        let wait = until
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .unwrap_or_else(|| q.window());
        Decision {
            allowed: false,
            limit: q.limit().get(),
            window: q.window(),
            remaining: 0,
            reset: wait,
            retry_after: Some(wait),
            tier,
            class,
            policy: "blocked",
            source: DecisionSource::Override,
            strikes: 0,
            blocked: true,
        }
    }

    /// Sets (or replaces) an override. With Redis it is written there and reaches every
    /// instance within the refresh period (≤ 1 s); this instance applies it at once.
    ///
    /// # Errors
    /// [`Error::Redis`] / [`Error::Timeout`] when Redis cannot be written (nothing changes).
    pub async fn set_override(&self, entry: OverrideEntry) -> Result<(), Error> {
        if let Some(shared) = &self.inner.shared {
            shared.store.set(&entry).await?;
        }
        self.update_cache(|set| set.insert(entry));
        Ok(())
    }

    /// Clears the override of `subject`; `true` when there was one.
    ///
    /// # Errors
    /// [`Error::Redis`] / [`Error::Timeout`] when Redis cannot be written.
    pub async fn clear_override(&self, subject: &Subject) -> Result<bool, Error> {
        let removed_remote = match &self.inner.shared {
            Some(shared) => shared.store.clear(std::slice::from_ref(subject)).await? > 0,
            None => false,
        };
        let mut removed_local = false;
        self.update_cache(|set| removed_local = set.remove(subject));
        Ok(removed_remote || removed_local)
    }

    /// Every override in force (expired ones are left out, and deleted from Redis). With
    /// Redis this reads Redis, so it sees changes made on other instances at once.
    ///
    /// # Errors
    /// [`Error::Redis`] / [`Error::Timeout`].
    pub async fn list_overrides(&self) -> Result<Vec<OverrideEntry>, Error> {
        let now = SystemTime::now();
        let all = match &self.inner.shared {
            Some(shared) => shared.store.load().await?,
            None => self.inner.overrides.load().entries().cloned().collect(),
        };
        let (live, expired): (Vec<_>, Vec<_>) = all.into_iter().partition(|e| e.is_live(now));
        if !expired.is_empty() {
            let subjects: Vec<Subject> = expired.into_iter().map(|e| e.subject).collect();
            if let Some(shared) = &self.inner.shared {
                shared.store.clear(&subjects).await?;
            }
            self.update_cache(|set| {
                for s in &subjects {
                    set.remove(s);
                }
            });
        }
        let mut live = live;
        live.sort_by(|a, b| a.subject.cmp(&b.subject));
        Ok(live)
    }

    /// The override of `subject` in this instance's cache, if any is in force.
    #[must_use]
    pub fn cached_override(&self, subject: &Subject) -> Option<OverrideEntry> {
        self.inner
            .overrides
            .load()
            .get(subject)
            .filter(|e| e.is_live(SystemTime::now()))
            .cloned()
    }

    /// Re-reads the overrides from Redis now (the background task does it every refresh
    /// period). A no-op without Redis.
    ///
    /// # Errors
    /// [`Error::Redis`] / [`Error::Timeout`].
    pub async fn refresh_overrides(&self) -> Result<(), Error> {
        let Some(shared) = &self.inner.shared else {
            return Ok(());
        };
        let writes = self.inner.local_override_writes.load(Ordering::Acquire);
        let version = shared.store.version().await?;
        let entries = shared.store.load().await?;
        let set = OverrideSet::from_entries(entries);
        let _writer = self
            .inner
            .overrides_writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.inner.local_override_writes.load(Ordering::Acquire) != writes {
            // This instance wrote an override since Redis was read: what was read may predate
            // it. The version stays old, so the next refresh reads again.
            return Ok(());
        }
        self.store_overrides(set);
        shared.version.store(version, Ordering::Release);
        Ok(())
    }

    async fn refresh_if_changed(&self) -> Result<(), Error> {
        let Some(shared) = &self.inner.shared else {
            return Ok(());
        };
        if shared.breaker.state() == unite_breaker::State::Open {
            return Ok(());
        }
        let version = shared.store.version().await?;
        if version != shared.version.load(Ordering::Acquire) {
            self.refresh_overrides().await?;
        }
        Ok(())
    }

    /// Publishes a new override set; the caller holds `overrides_writer`.
    fn store_overrides(&self, set: OverrideSet) {
        let non_empty = !set.is_empty();
        self.inner.overrides.store(Arc::new(set));
        self.inner.has_overrides.store(non_empty, Ordering::Release);
    }

    fn update_cache(&self, f: impl FnOnce(&mut OverrideSet)) {
        let _writer = self
            .inner
            .overrides_writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut set = self.inner.overrides.load().clone_set();
        f(&mut set);
        self.store_overrides(set);
        self.inner
            .local_override_writes
            .fetch_add(1, Ordering::AcqRel);
    }

    /// Clears the penalty state (strikes and blocks) of `subject` in every class, in Redis and
    /// in process.
    ///
    /// # Errors
    /// [`Error::Redis`] / [`Error::Timeout`].
    pub async fn forgive(&self, subject: &Subject) -> Result<(), Error> {
        if let Some(shared) = &self.inner.shared {
            shared.gcra.forgive(subject).await?;
        }
        self.inner.local.forget(subject);
        Ok(())
    }

    /// A health summary.
    #[must_use]
    pub fn stats(&self) -> RateLimitStats {
        let local = self.inner.local.stats();
        RateLimitStats {
            mode: self.mode(),
            local_keys: local.keys,
            local_penalty_keys: local.penalty_keys,
            local_penalties_active: local.penalties_active,
            local_resets: local.resets,
            overrides: self.inner.overrides.load().len(),
            reserved_keys: self
                .inner
                .shared
                .as_ref()
                .and_then(|s| s.reservations.as_ref())
                .map_or(0, Reservations::len),
            breaker: self.breaker().map(CircuitBreaker::snapshot),
        }
    }

    /// The quota the in-process limiter enforces for `tier` and `class` (the full quota
    /// without Redis, this instance's share with it).
    #[must_use]
    pub fn local_quota(&self, tier: Tier, class: EndpointClass) -> Quota {
        self.inner.local.quota(tier, class)
    }
}
