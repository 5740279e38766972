//! Quotas, tiers, endpoint classes, and the limiter configuration.

use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

const fn nz(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

/// A GCRA quota: `limit` requests per `window`, with up to `burst` at once.
///
/// The emission interval (the time one request "costs") is `window / limit`, rounded down to
/// the microsecond (the unit the Redis script works in); a fresh key may send `burst` requests
/// at once. A zero limit or burst cannot be written (`NonZeroU32`), and deserializing one fails
/// with a message that says so.
///
/// ```
/// use std::num::NonZeroU32;
/// use unite_ratelimit::Quota;
///
/// let q = Quota::per_minute(NonZeroU32::new(100).unwrap())
///     .with_burst(NonZeroU32::new(150).unwrap());
/// assert_eq!(q.limit().get(), 100);
/// assert_eq!(q.burst().get(), 150);
/// assert_eq!(q.emission_interval().as_millis(), 600);
///
/// // From a config file: `burst` defaults to `limit`, `window_s` to 60.
/// let q: Quota = serde_json::from_str(r#"{ "limit": 20 }"#).unwrap();
/// assert_eq!(q, Quota::per_minute(NonZeroU32::new(20).unwrap()));
/// let err = serde_json::from_str::<Quota>(r#"{ "limit": 0 }"#).unwrap_err();
/// assert!(err.to_string().contains("`limit` must be at least 1"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: NonZeroU32,
    window: Duration,
    burst: NonZeroU32,
}

impl Quota {
    /// `limit` requests per second; burst = limit.
    #[must_use]
    pub const fn per_second(limit: NonZeroU32) -> Self {
        Self {
            limit,
            window: Duration::from_secs(1),
            burst: limit,
        }
    }

    /// `limit` requests per minute; burst = limit.
    #[must_use]
    pub const fn per_minute(limit: NonZeroU32) -> Self {
        Self {
            limit,
            window: Duration::from_secs(60),
            burst: limit,
        }
    }

    /// `limit` requests per hour; burst = limit.
    #[must_use]
    pub const fn per_hour(limit: NonZeroU32) -> Self {
        Self {
            limit,
            window: Duration::from_secs(3600),
            burst: limit,
        }
    }

    /// `limit` requests per `window`; burst = limit.
    ///
    /// # Errors
    /// [`Error::Config`] when `window / limit` is under one microsecond (that includes a zero
    /// window): the shared limiter could not represent the rate.
    pub fn new(limit: NonZeroU32, window: Duration) -> Result<Self, Error> {
        let q = Self {
            limit,
            window,
            burst: limit,
        };
        if q.emission_micros_exact() == 0 {
            return Err(Error::config(
                "window",
                format!(
                    "({window:?}) divided by the limit ({limit}) is under one microsecond: \
                     the rate is too fine to enforce"
                ),
            ));
        }
        Ok(q)
    }

    /// The same quota allowing up to `burst` requests at once.
    #[must_use]
    pub const fn with_burst(self, burst: NonZeroU32) -> Self {
        Self { burst, ..self }
    }

    /// Requests per window.
    #[must_use]
    pub const fn limit(&self) -> NonZeroU32 {
        self.limit
    }

    /// The window `limit` is counted over.
    #[must_use]
    pub const fn window(&self) -> Duration {
        self.window
    }

    /// The most requests a fresh key may send at once.
    #[must_use]
    pub const fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    fn emission_micros_exact(&self) -> u64 {
        let micros = u64::try_from(self.window.as_micros()).unwrap_or(u64::MAX);
        micros / u64::from(self.limit.get())
    }

    /// The time one request costs: `window / limit`, rounded down to the microsecond, at least
    /// one microsecond.
    #[must_use]
    pub fn emission_interval(&self) -> Duration {
        Duration::from_micros(self.emission_micros())
    }

    pub(crate) fn emission_micros(&self) -> u64 {
        self.emission_micros_exact().max(1)
    }

    /// The share of this quota one of `instances` instances enforces on its own while the
    /// shared store is unreachable: limit and burst divided (rounded down, at least 1).
    #[must_use]
    pub fn share(&self, instances: NonZeroU32) -> Self {
        let n = instances.get();
        Self {
            limit: nz(self.limit.get() / n),
            window: self.window,
            burst: nz(self.burst.get() / n),
        }
    }

    /// The equivalent governor quota (same emission interval and burst, so the in-process and
    /// the Redis decisions agree to the microsecond).
    pub(crate) fn to_governor(self) -> governor::Quota {
        match governor::Quota::with_period(self.emission_interval()) {
            Some(q) => q.allow_burst(self.burst),
            // Unreachable: the emission interval is at least one microsecond.
            None => governor::Quota::per_second(self.limit).allow_burst(self.burst),
        }
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Quota({}/{:?}, burst {})",
            self.limit, self.window, self.burst
        )
    }
}

/// The serialized form of a [`Quota`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaRepr {
    limit: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    window_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    window_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    burst: Option<u64>,
}

fn nonzero_field(field: &str, value: u64) -> Result<NonZeroU32, String> {
    let value = u32::try_from(value)
        .map_err(|_| format!("`{field}` ({value}) is larger than {}", u32::MAX))?;
    NonZeroU32::new(value).ok_or_else(|| {
        format!(
            "`{field}` must be at least 1: a quota of zero would refuse every request \
             (to refuse a client, set a block override instead)"
        )
    })
}

impl TryFrom<QuotaRepr> for Quota {
    type Error = String;

    fn try_from(r: QuotaRepr) -> Result<Self, String> {
        let limit = nonzero_field("limit", r.limit)?;
        let window = match (r.window_s, r.window_ms) {
            (Some(_), Some(_)) => {
                return Err("give either `window_s` or `window_ms`, not both".to_owned());
            }
            (Some(s), None) => Duration::from_secs(s),
            (None, Some(ms)) => Duration::from_millis(ms),
            (None, None) => Duration::from_secs(60),
        };
        if window.is_zero() {
            return Err("the window must be longer than zero".to_owned());
        }
        let quota = Quota::new(limit, window).map_err(|e| e.to_string())?;
        match r.burst {
            Some(b) => Ok(quota.with_burst(nonzero_field("burst", b)?)),
            None => Ok(quota),
        }
    }
}

impl Serialize for Quota {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let whole_secs = self.window.subsec_nanos() == 0;
        QuotaRepr {
            limit: u64::from(self.limit.get()),
            window_s: whole_secs.then_some(self.window.as_secs()),
            window_ms: (!whole_secs)
                .then(|| u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX)),
            burst: (self.burst != self.limit).then(|| u64::from(self.burst.get())),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Quota {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let repr = QuotaRepr::deserialize(d)?;
        Quota::try_from(repr).map_err(serde::de::Error::custom)
    }
}

/// A customer tier. Anonymous clients are [`Tier::Public`] and keyed by IP; the others are
/// keyed by user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Anonymous traffic, keyed by client IP. Default 20/min.
    Public,
    /// Signed-in users on the free plan. Default 100/min.
    Free,
    /// Pro plan. Default 1000/min.
    Pro,
    /// Enterprise plan. Default 10000/min.
    Enterprise,
}

impl Tier {
    /// Every tier, in order.
    pub const ALL: [Tier; 4] = [Tier::Public, Tier::Free, Tier::Pro, Tier::Enterprise];

    /// The tier's name: `public`, `free`, `pro`, `enterprise` (also its metrics label).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Tier::Public => "public",
            Tier::Free => "free",
            Tier::Pro => "pro",
            Tier::Enterprise => "enterprise",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::config(
                    "tier",
                    format!("unknown tier {s:?}; expected public, free, pro or enterprise"),
                )
            })
    }
}

/// A class of endpoints with a quota of its own. Put one in the request extensions (or use a
/// route matcher on the layer) to mark an expensive endpoint.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum EndpointClass {
    /// Every endpoint not marked otherwise.
    #[default]
    Default,
    /// Expensive AI endpoints: 10/min in every tier by default.
    Ai,
}

impl EndpointClass {
    /// Both classes.
    pub const ALL: [EndpointClass; 2] = [EndpointClass::Default, EndpointClass::Ai];

    /// `default` or `ai` (also the policy name in the `RateLimit` headers).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            EndpointClass::Default => "default",
            EndpointClass::Ai => "ai",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for EndpointClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The quotas of one tier: one per endpoint class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TierQuotas {
    /// Every endpoint not in another class.
    pub default: Quota,
    /// The `ai` class.
    #[serde(default = "default_ai")]
    pub ai: Quota,
}

impl TierQuotas {
    /// `default` for ordinary endpoints, `ai` for the AI class.
    #[must_use]
    pub const fn new(default: Quota, ai: Quota) -> Self {
        Self { default, ai }
    }

    /// The quota of `class`.
    #[must_use]
    pub const fn get(&self, class: EndpointClass) -> Quota {
        match class {
            EndpointClass::Default => self.default,
            EndpointClass::Ai => self.ai,
        }
    }
}

const fn default_ai() -> Quota {
    Quota::per_minute(nz(10))
}

/// The quotas of every tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Tiers {
    /// Anonymous clients, by IP. Default 20/min, ai 10/min.
    pub public: TierQuotas,
    /// Default 100/min, ai 10/min.
    pub free: TierQuotas,
    /// Default 1000/min, ai 10/min.
    pub pro: TierQuotas,
    /// Default 10000/min, ai 10/min.
    pub enterprise: TierQuotas,
}

impl Default for Tiers {
    fn default() -> Self {
        Self {
            public: TierQuotas::new(Quota::per_minute(nz(20)), default_ai()),
            free: TierQuotas::new(Quota::per_minute(nz(100)), default_ai()),
            pro: TierQuotas::new(Quota::per_minute(nz(1000)), default_ai()),
            enterprise: TierQuotas::new(Quota::per_minute(nz(10_000)), default_ai()),
        }
    }
}

impl Tiers {
    /// The quotas of `tier`.
    #[must_use]
    pub const fn get(&self, tier: Tier) -> &TierQuotas {
        match tier {
            Tier::Public => &self.public,
            Tier::Free => &self.free,
            Tier::Pro => &self.pro,
            Tier::Enterprise => &self.enterprise,
        }
    }

    /// A mutable reference to the quotas of `tier`.
    pub fn get_mut(&mut self, tier: Tier) -> &mut TierQuotas {
        match tier {
            Tier::Public => &mut self.public,
            Tier::Free => &mut self.free,
            Tier::Pro => &mut self.pro,
            Tier::Enterprise => &mut self.enterprise,
        }
    }

    /// The quota of `class` in `tier`.
    #[must_use]
    pub const fn quota(&self, tier: Tier, class: EndpointClass) -> Quota {
        self.get(tier).get(class)
    }
}

/// Escalating penalties: each violation in a streak blocks the key for twice as long as the
/// last (`base`, `2·base`, `4·base`, … capped at `max`); the streak shrinks by one for every
/// `decay_after` without a violation.
///
/// A violation is a request refused by the quota. Requests refused while a block is in force do
/// not lengthen it. The first `free_strikes` violations of a streak only get the quota's own
/// retry time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PenaltyConfig {
    /// Off: a refused request waits only for the quota. Default on.
    pub enabled: bool,
    /// The first block. Default 1 s.
    #[serde(rename = "base_ms", with = "duration_ms")]
    pub base: Duration,
    /// The longest block. Default 10 min.
    #[serde(rename = "max_ms", with = "duration_ms")]
    pub max: Duration,
    /// Each quiet period this long forgives one violation of the streak. Default 60 s.
    #[serde(rename = "decay_after_ms", with = "duration_ms")]
    pub decay_after: Duration,
    /// Violations of a streak that get no block. Default 0.
    pub free_strikes: u32,
}

impl Default for PenaltyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
            decay_after: Duration::from_secs(60),
            free_strikes: 0,
        }
    }
}

impl PenaltyConfig {
    /// Penalties on, blocking for `base`, doubling up to `max`; the other fields at their
    /// defaults.
    #[must_use]
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            ..Self::default()
        }
    }

    /// The quiet period that forgives one strike.
    #[must_use]
    pub fn with_decay_after(self, decay_after: Duration) -> Self {
        Self {
            decay_after,
            ..self
        }
    }

    /// Violations of a streak that get no block.
    #[must_use]
    pub fn with_free_strikes(self, free_strikes: u32) -> Self {
        Self {
            free_strikes,
            ..self
        }
    }

    /// Penalties switched off.
    #[must_use]
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// The block that the `strikes`-th violation of a streak earns (zero when none).
    #[must_use]
    pub fn block_for(&self, strikes: u32) -> Duration {
        if !self.enabled || strikes <= self.free_strikes {
            return Duration::ZERO;
        }
        let doublings = (strikes - self.free_strikes - 1).min(63);
        let factor = 1u64 << doublings;
        let base = u64::try_from(self.base.as_micros()).unwrap_or(u64::MAX);
        let max = u64::try_from(self.max.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(base.saturating_mul(factor).min(max))
    }

    fn validate(&self) -> Result<(), Error> {
        if !self.enabled {
            return Ok(());
        }
        if self.base < Duration::from_micros(1) {
            return Err(Error::config("penalty.base", "must be at least 1 µs"));
        }
        if self.max < self.base {
            return Err(Error::config(
                "penalty.max",
                format!(
                    "({:?}) is shorter than penalty.base ({:?})",
                    self.max, self.base
                ),
            ));
        }
        if self.decay_after < Duration::from_micros(1) {
            return Err(Error::config(
                "penalty.decay_after",
                "must be at least 1 µs",
            ));
        }
        Ok(())
    }
}

/// How the limiter uses Redis, and what it does when Redis is unreachable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SharedConfig {
    /// Prefix of every Redis key the limiter writes. Default `unite-rl:`. Must not contain `{`
    /// or `}` (the limiter adds its own hash tags).
    pub key_prefix: String,
    /// The longest a decision waits for Redis before falling back. Default 50 ms.
    #[serde(rename = "command_timeout_ms", with = "duration_ms")]
    pub command_timeout: Duration,
    /// How many instances share the budget; while Redis is unreachable each enforces
    /// `quota / expected_instances` locally. Default 1.
    pub expected_instances: NonZeroU32,
    /// While Redis is unreachable, refuse every request instead of limiting locally.
    /// Default `false`.
    pub fail_closed: bool,
    /// How often each instance checks Redis for changed overrides (at most 1 s). Default
    /// 250 ms.
    #[serde(rename = "override_refresh_ms", with = "duration_ms")]
    pub override_refresh: Duration,
    /// The most decisions one round trip may reserve for this instance. Default 1: every
    /// decision is one round trip, and instances share each budget exactly.
    ///
    /// Above 1, a key this instance decides often reserves several decisions at once (the
    /// reservation doubles while it is spent within `reserve_for`, halves when it lapses, and
    /// never exceeds 1/16 of the quota's burst) and spends them without a round trip. The
    /// instances together still never allow more than the quota; what a reservation leaves
    /// unspent when it lapses is lost, so a key may get up to this many decisions fewer per
    /// instance. Near the limit reservations fall back to one decision a round trip. One
    /// refill per key is on its way at a time (ahead of time, when a quarter is left); a
    /// reserved decision is spent at most twice `reserve_for` after Redis counted it.
    pub reserve_max: NonZeroU32,
    /// How long reserved decisions may be spent (1 ms to 1 s). Default 100 ms.
    #[serde(rename = "reserve_for_ms", with = "duration_ms")]
    pub reserve_for: Duration,
}

impl Default for SharedConfig {
    fn default() -> Self {
        Self {
            key_prefix: "unite-rl:".to_owned(),
            command_timeout: Duration::from_millis(50),
            expected_instances: NonZeroU32::MIN,
            fail_closed: false,
            override_refresh: Duration::from_millis(250),
            reserve_max: NonZeroU32::MIN,
            reserve_for: Duration::from_millis(100),
        }
    }
}

/// Bounds of the in-process state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LocalConfig {
    /// The most keys the in-process limiter holds (rate-limit states and penalty states
    /// each). Idle keys are evicted first; if that is not enough, the state is reset.
    /// Default 100 000.
    pub max_keys: NonZeroUsize,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            max_keys: NonZeroUsize::new(100_000).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

/// The whole limiter configuration; `Default` gives the documented defaults, and every field
/// can be read from a config file (serde, unknown fields refused).
///
/// ```
/// let cfg: unite_ratelimit::Config = serde_json::from_str(r#"{
///     "tiers": { "pro": { "default": { "limit": 2000, "burst": 2500 } } },
///     "shared": { "expected_instances": 4, "fail_closed": false }
/// }"#).unwrap();
/// assert_eq!(cfg.tiers.pro.default.limit().get(), 2000);
/// assert_eq!(cfg.tiers.pro.ai.limit().get(), 10); // not given: the default
/// assert_eq!(cfg.tiers.free.default.limit().get(), 100);
///
/// let err = serde_json::from_str::<unite_ratelimit::Config>(
///     r#"{ "shared": { "expected_instances": 0 } }"#).unwrap_err();
/// assert!(err.to_string().contains("nonzero"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Quotas per tier and endpoint class.
    pub tiers: Tiers,
    /// Escalating penalties.
    pub penalty: PenaltyConfig,
    /// Redis use and fallback.
    pub shared: SharedConfig,
    /// In-process memory bounds.
    pub local: LocalConfig,
}

impl Config {
    /// Checks the fields that types alone cannot; the error names the field at fault.
    ///
    /// # Errors
    /// [`Error::Config`].
    pub fn validate(&self) -> Result<(), Error> {
        self.penalty.validate()?;
        let s = &self.shared;
        if s.key_prefix.contains(['{', '}']) {
            return Err(Error::config(
                "shared.key_prefix",
                "must not contain `{` or `}`: the limiter adds its own hash tags",
            ));
        }
        if s.command_timeout.is_zero() {
            return Err(Error::config(
                "shared.command_timeout",
                "must be longer than zero",
            ));
        }
        if s.override_refresh.is_zero() || s.override_refresh > Duration::from_secs(1) {
            return Err(Error::config(
                "shared.override_refresh",
                "must be between 1 ms and 1 s (overrides must reach every instance within a second)",
            ));
        }
        if s.reserve_for < Duration::from_millis(1) || s.reserve_for > Duration::from_secs(1) {
            return Err(Error::config(
                "shared.reserve_for",
                "must be between 1 ms and 1 s",
            ));
        }
        Ok(())
    }
}

/// Serde for `Duration` as whole milliseconds.
mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_tiers() {
        let t = Tiers::default();
        let limits: Vec<u32> = Tier::ALL
            .iter()
            .map(|&tier| t.quota(tier, EndpointClass::Default).limit().get())
            .collect();
        assert_eq!(limits, [20, 100, 1000, 10_000]);
        for tier in Tier::ALL {
            assert_eq!(t.quota(tier, EndpointClass::Ai).limit().get(), 10);
            assert_eq!(
                t.quota(tier, EndpointClass::Ai).window(),
                Duration::from_secs(60)
            );
        }
    }

    #[test]
    fn quota_serde_round_trips_and_refuses_zero() {
        let q = Quota::per_minute(nz(100)).with_burst(nz(120));
        let json = serde_json::to_string(&q).unwrap();
        assert_eq!(json, r#"{"limit":100,"window_s":60,"burst":120}"#);
        assert_eq!(serde_json::from_str::<Quota>(&json).unwrap(), q);
        let ms = Quota::new(nz(3), Duration::from_millis(1500)).unwrap();
        let json = serde_json::to_string(&ms).unwrap();
        assert_eq!(json, r#"{"limit":3,"window_ms":1500}"#);
        assert_eq!(serde_json::from_str::<Quota>(&json).unwrap(), ms);

        for bad in [
            r#"{"limit":0}"#,
            r#"{"limit":5,"burst":0}"#,
            r#"{"limit":5,"window_s":0}"#,
            r#"{"limit":5,"window_s":1,"window_ms":1}"#,
            r#"{"limit":5000000000}"#,
            r#"{"limit":5,"extra":1}"#,
        ] {
            assert!(serde_json::from_str::<Quota>(bad).is_err(), "{bad}");
        }
        let err = serde_json::from_str::<Quota>(r#"{"limit":5,"burst":0}"#).unwrap_err();
        assert!(
            err.to_string().contains("`burst` must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn share_divides_and_never_reaches_zero() {
        let q = Quota::per_minute(nz(100)).with_burst(nz(10));
        let s = q.share(nz(3));
        assert_eq!((s.limit().get(), s.burst().get()), (33, 3));
        let s = q.share(nz(1000));
        assert_eq!((s.limit().get(), s.burst().get()), (1, 1));
        assert_eq!(q.share(nz(1)), q);
    }

    #[test]
    fn too_fine_rates_are_refused() {
        assert!(Quota::new(nz(2_000_000), Duration::from_secs(1)).is_err());
        assert!(Quota::new(nz(1), Duration::ZERO).is_err());
        assert!(Quota::new(nz(1_000_000), Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn penalty_blocks_double_and_cap() {
        let p = PenaltyConfig::default();
        let secs: Vec<u64> = (0..=12).map(|n| p.block_for(n).as_secs()).collect();
        assert_eq!(secs, [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(p.block_for(u32::MAX), Duration::from_secs(600));
        let free = PenaltyConfig {
            free_strikes: 2,
            ..p
        };
        assert_eq!(free.block_for(2), Duration::ZERO);
        assert_eq!(free.block_for(3), Duration::from_secs(1));
        assert_eq!(PenaltyConfig::disabled().block_for(5), Duration::ZERO);
    }

    #[test]
    fn validate_names_the_field() {
        let mut c = Config::default();
        assert!(c.validate().is_ok());
        c.shared.key_prefix = "a{b".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("shared.key_prefix")
        );
        let mut c = Config::default();
        c.shared.override_refresh = Duration::from_secs(2);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("override_refresh")
        );
        let mut c = Config::default();
        c.penalty.max = Duration::from_millis(1);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("penalty.max")
        );
    }

    #[test]
    fn tier_parses_case_insensitively() {
        assert_eq!("PRO".parse::<Tier>().unwrap(), Tier::Pro);
        assert!("gold".parse::<Tier>().is_err());
    }
}
