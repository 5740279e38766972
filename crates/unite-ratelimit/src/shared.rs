//! The shared limiter: one atomic Lua script in Redis per decision.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fred::clients::{Client, WithOptions};
use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::config::Options;

use crate::{Decision, DecisionSource, EndpointClass, Error, PenaltyConfig, Quota, Subject, Tier};

/// The decision script (GCRA with escalating penalties). Its SHA-1 is what `EVALSHA` sends.
pub const GCRA_SCRIPT: &str = include_str!("lua/gcra.lua");

/// Strips the penalty streak from a key's state and keeps its arrival time (and its TTL).
const FORGIVE_SCRIPT: &str = "local v = redis.call('GET', KEYS[1]) \
    if v then local tat = string.match(v, '^(%d+):') \
    if tat then redis.call('SET', KEYS[1], tat, 'KEEPTTL') end end";

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn from_micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
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
}

impl fmt::Debug for RedisGcra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisGcra")
            .field("sha", &self.sha)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
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
        }
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
        let (base, max) = if penalty.enabled {
            (micros(penalty.base).max(1), micros(penalty.max).max(1))
        } else {
            (0, 0)
        };
        let args = [
            i64::try_from(quota.emission_micros()).unwrap_or(i64::MAX),
            i64::from(quota.burst().get()),
            base,
            max,
            micros(penalty.decay_after).max(1),
            i64::from(penalty.free_strikes),
            at.map_or(-1, micros),
            i64::from(want.max(1)),
        ];
        let call = async {
            // The key is cloned only for the rare retry after NOSCRIPT.
            match self
                .client
                .evalsha::<Vec<i64>, _, _, _>(&*self.sha, key.as_str(), args.to_vec())
                .await
            {
                Err(e) if e.details().starts_with("NOSCRIPT") => {
                    self.client
                        .script_load_cluster::<(), _>(GCRA_SCRIPT)
                        .await?;
                    self.client
                        .evalsha::<Vec<i64>, _, _, _>(&*self.sha, key.as_str(), args.to_vec())
                        .await
                }
                other => other,
            }
        };
        let reply = match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r?,
            Err(_) => return Err(Error::Timeout(self.timeout)),
        };
        let [granted, remaining, reset, retry, strikes, blocked] = reply[..] else {
            return Err(Error::Protocol(format!(
                "expected 6 integers, got {}",
                reply.len()
            )));
        };
        let granted = u32::try_from(granted).unwrap_or(0).min(want.max(1));
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
                Vec::<i64>::new(),
            );
            match tokio::time::timeout(self.timeout, strip).await {
                Ok(r) => r?,
                Err(_) => return Err(Error::Timeout(self.timeout)),
            }
        }
        Ok(())
    }
}
