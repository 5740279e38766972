//! The shared limiter: one atomic Lua script in Redis per decision.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use fred::clients::{Client, WithOptions};
use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::config::Options;
use fred::types::{ClusterHash, CustomCommand, Value};

use crate::{Decision, DecisionSource, EndpointClass, Error, PenaltyConfig, Quota, Subject, Tier};

/// The decision script (GCRA with escalating penalties). Its SHA-1 is what `EVALSHA` sends.
pub const GCRA_SCRIPT: &str = include_str!("lua/gcra.lua");

/// Strips the penalty streak from a key's state and keeps its arrival time, with the expiry the
/// decision script gives a plain state by the server's clock (ARGV[1]: now, as for a decision).
const FORGIVE_SCRIPT: &str = "local v = redis.call('GET', KEYS[1]) \
    local tat = v and tonumber(string.match(v, '^(%d+):')) \
    if tat then local now = tonumber(ARGV[1]) \
    if now < 0 then local time = redis.call('TIME') now = time[1] * 1000000 + time[2] end \
    local expires = (math.floor(tat / 1000000) + 2) * 1000000 \
    redis.call('SET', KEYS[1], tat, 'PX', math.max(math.ceil((expires - now) / 1000), 1)) end";

/// The shortest expiry the script gives a key, in milliseconds: 1 by the server's clock, 10
/// minutes under a test clock, so keys outlive the test by the real clock.
const MIN_TTL_MS: i64 = 1;
const TEST_CLOCK_MIN_TTL_MS: i64 = 600_000;

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn from_micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

/// This instance's reading of the Redis server's clock: the server's `TIME` less a local
/// monotonic clock, measured by [`RedisGcra::sync_clock`]. Decisions send the server's time
/// from it, so every instance decides by one clock without the script reading it (`TIME` is
/// the dearest command of a decision after the write). Its error is at most half the round
/// trip of the last measurement, plus the drift of the local clock since (parts per million).
struct ServerClock {
    anchor: Instant,
    /// Server microseconds since the Unix epoch less local microseconds since `anchor`;
    /// `UNSYNCED` until the first measurement, and the script reads `TIME` itself.
    offset: AtomicI64,
}

const UNSYNCED: i64 = i64::MIN;

impl ServerClock {
    fn new() -> Self {
        Self {
            anchor: Instant::now(),
            offset: AtomicI64::new(UNSYNCED),
        }
    }

    /// The server's time in microseconds since the Unix epoch, or -1 (read it in the script).
    fn now_micros(&self) -> i64 {
        match self.offset.load(Ordering::Relaxed) {
            UNSYNCED => -1,
            offset => micros(self.anchor.elapsed()).saturating_add(offset),
        }
    }
}

/// The Redis side of the shared limiter: one `EVALSHA` (one round trip) per decision, so any
/// number of instances share one budget per key.
///
/// The script is loaded with `SCRIPT LOAD` the first time Redis answers `NOSCRIPT` (after a
/// restart or a failover too), and the call is retried once. Every command carries the command
/// timeout, and the whole exchange is bounded by it as well.
///
/// Most code uses [`RateLimiter`](crate::RateLimiter), which adds overrides, a circuit breaker
/// and the local fallback; this type is public for tests and tools that drive the script
/// directly, e.g. with an explicit clock.
#[derive(Clone)]
pub struct RedisGcra {
    client: WithOptions<Client>,
    sha: Arc<str>,
    prefix: Arc<str>,
    timeout: Duration,
    clock: Arc<ServerClock>,
}

impl fmt::Debug for RedisGcra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisGcra")
            .field("sha", &self.sha)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("clock_synced", &(self.clock.now_micros() >= 0))
            .finish_non_exhaustive()
    }
}

impl RedisGcra {
    /// Keys go under `key_prefix`; each command waits at most `timeout`.
    #[must_use]
    pub fn new(client: Client, key_prefix: impl Into<String>, timeout: Duration) -> Self {
        let options = Options {
            timeout: Some(timeout),
            fail_fast: true,
            ..Options::default()
        };
        Self {
            client: client.with_options(&options),
            sha: fred::util::sha1_hash(GCRA_SCRIPT).into(),
            prefix: key_prefix.into().into(),
            timeout,
            clock: Arc::new(ServerClock::new()),
        }
    }

    /// The Redis server's time as this instance reads it from its last
    /// [`sync_clock`](Self::sync_clock); `None` before the first one.
    #[must_use]
    pub fn server_time(&self) -> Option<std::time::SystemTime> {
        let now = u64::try_from(self.clock.now_micros()).ok()?;
        std::time::UNIX_EPOCH.checked_add(Duration::from_micros(now))
    }

    /// Measures this instance's offset to the Redis server's clock (`TIME`, one round trip),
    /// which decisions then send instead of having the script read the clock. Until the first
    /// measurement succeeds the script reads it itself, so decisions are right either way;
    /// [`RateLimiter`](crate::RateLimiter) measures at start and on every refresh (≤ 1 s).
    ///
    /// # Errors
    /// [`Error::Redis`], [`Error::Timeout`], or [`Error::Protocol`] on an unexpected reply.
    pub async fn sync_clock(&self) -> Result<(), Error> {
        // One node in a cluster (the one holding slot 0), so readings do not hop between nodes.
        let time = CustomCommand::new_static("TIME", ClusterHash::Custom(0), false);
        let before = self.clock.anchor.elapsed();
        let reply = match tokio::time::timeout(
            self.timeout,
            self.client.custom::<Vec<i64>, Value>(time, Vec::new()),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => return Err(Error::Timeout(self.timeout)),
        };
        let after = self.clock.anchor.elapsed();
        let [secs, us] = reply[..] else {
            return Err(Error::Protocol(format!(
                "TIME: expected 2 integers, got {}",
                reply.len()
            )));
        };
        // The server read its clock somewhere within the round trip: the middle of it.
        let local = micros(before + (after - before) / 2);
        let offset = secs
            .saturating_mul(1_000_000)
            .saturating_add(us)
            .saturating_sub(local);
        self.clock.offset.store(offset, Ordering::Relaxed);
        Ok(())
    }

    /// The SHA-1 of the script.
    #[must_use]
    pub fn script_sha(&self) -> &str {
        &self.sha
    }

    /// Loads the script (`SCRIPT LOAD`, on every primary of a cluster). Optional: a decision
    /// loads it on `NOSCRIPT` by itself.
    ///
    /// # Errors
    /// [`Error::Redis`] or [`Error::Timeout`].
    pub async fn load(&self) -> Result<(), Error> {
        let load = self.client.script_load_cluster::<(), _>(GCRA_SCRIPT);
        match tokio::time::timeout(self.timeout, load).await {
            Ok(r) => r.map_err(Error::from),
            Err(_) => Err(Error::Timeout(self.timeout)),
        }
    }

    /// The key holding the state of `subject` in `class`: its GCRA arrival time and, after a
    /// violation, its penalty streak. It carries the hash tag `{<class>:<subject>}`.
    #[must_use]
    pub fn key(&self, subject: &Subject, class: EndpointClass) -> String {
        format!("{}{{{class}:{subject}}}:gcra", self.prefix)
    }

    /// Decides one request against the shared budget.
    ///
    /// `at` overrides the script's clock (time since the Unix epoch) and exists for tests that
    /// replay a sequence of requests at chosen times; pass `None` in production, so every
    /// instance uses the Redis server's clock.
    ///
    /// # Errors
    /// [`Error::Redis`], [`Error::Timeout`], or [`Error::Protocol`] on an unexpected reply.
    #[allow(clippy::too_many_arguments)]
    pub async fn check(
        &self,
        subject: &Subject,
        tier: Tier,
        class: EndpointClass,
        quota: Quota,
        policy: &'static str,
        penalty: &PenaltyConfig,
        at: Option<Duration>,
    ) -> Result<Decision, Error> {
        let (decision, _) = self
            .reserve(subject, tier, class, quota, policy, penalty, at, 1)
            .await?;
        Ok(decision)
    }

    /// Takes up to `want` decisions from the shared budget in one round trip: as many as the
    /// budget holds, at most `want`. Answers the decision for this request (allowed when at
    /// least one was granted; its `remaining` counts what is left after all of them) and how
    /// many were granted. A refusal is a violation like any other, for penalties.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    #[allow(clippy::too_many_arguments)]
    pub async fn reserve(
        &self,
        subject: &Subject,
        tier: Tier,
        class: EndpointClass,
        quota: Quota,
        policy: &'static str,
        penalty: &PenaltyConfig,
        at: Option<Duration>,
        want: u32,
    ) -> Result<(Decision, u32), Error> {
        let key = self.key(subject, class);
        let t = i64::try_from(quota.emission_micros()).unwrap_or(i64::MAX);
        let tau = t.saturating_mul(i64::from(quota.burst().get()) - 1);
        let want = want.max(1);
        let (base, max) = if penalty.enabled {
            (micros(penalty.base).max(1), micros(penalty.max).max(1))
        } else {
            (0, 0)
        };
        let (now, min_ttl) = match at {
            Some(at) => (micros(at), TEST_CLOCK_MIN_TTL_MS),
            None => (self.clock.now_micros(), MIN_TTL_MS),
        };
        let settings = format!(
            "{base} {max} {} {} {min_ttl}",
            micros(penalty.decay_after).max(1),
            penalty.free_strikes
        );
        let args = [
            Value::Integer(t),
            Value::Integer(tau),
            Value::Integer(now),
            Value::Integer(i64::from(want)),
            Value::String(settings.into()),
        ];
        let call = async {
            // The key is cloned only for the rare retry after NOSCRIPT.
            match self
                .client
                .evalsha::<Value, _, _, _>(&*self.sha, key.as_str(), args.to_vec())
                .await
            {
                Err(e) if e.details().starts_with("NOSCRIPT") => {
                    self.client
                        .script_load_cluster::<(), _>(GCRA_SCRIPT)
                        .await?;
                    self.client
                        .evalsha::<Value, _, _, _>(&*self.sha, key.as_str(), args.to_vec())
                        .await
                }
                other => other,
            }
        };
        let reply = match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r?,
            Err(_) => return Err(Error::Timeout(self.timeout)),
        };
        let (granted, remaining, reset, retry, strikes, blocked) = match reply {
            // Everything wanted was granted, with no streak to report: the reset alone.
            Value::Integer(reset) => {
                let remaining = tau.saturating_add(t).saturating_sub(reset).max(0) / t.max(1);
                (i64::from(want), remaining, reset, 0, 0, 0)
            }
            Value::Array(values) => match values[..] {
                [
                    Value::Integer(granted),
                    Value::Integer(remaining),
                    Value::Integer(reset),
                    Value::Integer(retry),
                    Value::Integer(strikes),
                    Value::Integer(blocked),
                ] => (granted, remaining, reset, retry, strikes, blocked),
                _ => {
                    return Err(Error::Protocol(format!(
                        "expected 6 integers, got {values:?}"
                    )));
                }
            },
            other => {
                return Err(Error::Protocol(format!(
                    "expected an integer or 6 integers, got {other:?}"
                )));
            }
        };
        let granted = u32::try_from(granted).unwrap_or(0).min(want);
        let allowed = granted > 0;
        let decision = Decision {
            allowed,
            limit: quota.limit().get(),
            window: quota.window(),
            remaining: u32::try_from(remaining).unwrap_or(0),
            reset: from_micros(reset),
            retry_after: (!allowed).then(|| from_micros(retry)),
            tier,
            class,
            policy,
            source: DecisionSource::Shared,
            strikes: u32::try_from(strikes).unwrap_or(u32::MAX),
            blocked: blocked == 1,
        };
        Ok((decision, granted))
    }

    /// Clears the penalty streak of `subject` in every class (strikes and blocks); the budget
    /// already spent stays spent.
    ///
    /// # Errors
    /// [`Error::Redis`] or [`Error::Timeout`].
    pub async fn forgive(&self, subject: &Subject) -> Result<(), Error> {
        for class in EndpointClass::ALL {
            // One key per call, so each call stays within one cluster slot.
            let strip = self.client.eval::<(), _, _, _>(
                FORGIVE_SCRIPT,
                self.key(subject, class),
                self.clock.now_micros(),
            );
            match tokio::time::timeout(self.timeout, strip).await {
                Ok(r) => r?,
                Err(_) => return Err(Error::Timeout(self.timeout)),
            }
        }
        Ok(())
    }
}
