//! The Redis layer: fred clients, per-command timeouts, and the breaker around every call.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fred::bytes::Bytes;
use fred::clients::{Client, Pipeline, Pool, SubscriberClient, WithOptions};
use fred::error::{Error as RedisError, ErrorKind};
use fred::interfaces::{ClientLike, KeysInterface, PubsubInterface};
use fred::types::config::{Config as RedisConfig, Options, ReconnectPolicy, UnresponsiveConfig};
use fred::types::{
    Builder, ClientState, ClusterHash, CustomCommand, Expiration, SetOptions, Value,
};
use unite_breaker::{CircuitBreaker, State};

use crate::config::RedisSource;
use crate::stats::Stats;
use crate::{CacheConfig, Error};

/// Deletes the lock only if it still holds our token (a lock that expired and was taken by
/// another instance is left alone).
const RELEASE_LOCK: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                            return redis.call('DEL', KEYS[1]) else return 0 end";

/// Capacity of the subscriber's message channel (fred's default of 32 is easily outrun by a
/// burst of writes; a lagging receiver costs an L1 resync).
const SUBSCRIBER_CHANNEL_CAPACITY: usize = 4096;

/// Redis did not serve the call: it failed, timed out, or the breaker refused it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unavailable;

enum Backend {
    Client(Client),
    Pool(Pool),
}

impl Backend {
    fn client(&self) -> &Client {
        match self {
            Self::Client(c) => c,
            Self::Pool(p) => p.next_connected(),
        }
    }
}

/// Writes sent as one pipeline (one round trip).
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) sets: Vec<(String, Bytes, Duration)>,
    pub(crate) dels: Vec<String>,
    pub(crate) unlock: Option<(String, String)>,
    pub(crate) publish: Option<String>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.sets.is_empty()
            && self.dels.is_empty()
            && self.unlock.is_none()
            && self.publish.is_none()
    }
}

pub(crate) struct L2 {
    backend: Backend,
    /// Built by the cache (from a URL or config): quit on drop.
    owned: bool,
    subscriber: Option<SubscriberClient>,
    pub(crate) breaker: CircuitBreaker,
    /// `command_timeout` and fail-fast on every command (and pipeline): fred enforces the
    /// timeout itself, so no extra timer is armed per call.
    options: Options,
    pub(crate) channel: String,
    clustered: bool,
    stats: Arc<Stats>,
}

fn default_policy() -> ReconnectPolicy {
    ReconnectPolicy::new_exponential(0, 100, 2_000, 2)
}

fn builder_for(mut redis: RedisConfig, config: &CacheConfig, policy: ReconnectPolicy) -> Builder {
    // Keep trying in the background when the server is down at start-up, instead of failing
    // `build` (the cache starts degraded and picks Redis up when it answers).
    redis.fail_fast = false;
    let max_timeout = (config.command_timeout * 4).max(Duration::from_secs(1));
    let mut b = Builder::from_config(redis);
    b.with_connection_config(|c| {
        c.connection_timeout = config.connect_timeout;
        c.internal_command_timeout = config.connect_timeout;
        // A connection that swallows commands (a blackholed peer) is closed and reconnected.
        c.unresponsive = UnresponsiveConfig {
            max_timeout: Some(max_timeout),
            interval: max_timeout / 4,
        };
    })
    .with_performance_config(|p| p.default_command_timeout = config.command_timeout)
    .set_policy(policy);
    b
}

fn is_backend_fault(e: &RedisError) -> bool {
    // Errors that say the request was wrong, not that Redis is unwell, do not trip the breaker.
    !matches!(
        e.kind(),
        ErrorKind::InvalidArgument
            | ErrorKind::InvalidCommand
            | ErrorKind::Parse
            | ErrorKind::NotFound
    )
}

impl L2 {
    pub(crate) async fn connect(
        source: RedisSource,
        config: &CacheConfig,
        breaker: CircuitBreaker,
        policy: Option<ReconnectPolicy>,
        stats: Arc<Stats>,
    ) -> Result<Self, Error> {
        let policy = policy.unwrap_or_else(default_policy);
        let (backend, owned, sub_builder) = match source {
            RedisSource::Url(url) => {
                let redis = RedisConfig::from_url(&url).map_err(Error::Redis)?;
                let b = builder_for(redis, config, policy);
                let pool = b.build_pool(config.pool_size).map_err(Error::Redis)?;
                (Backend::Pool(pool), true, b)
            }
            RedisSource::Config(redis) => {
                let b = builder_for(*redis, config, policy);
                let pool = b.build_pool(config.pool_size).map_err(Error::Redis)?;
                (Backend::Pool(pool), true, b)
            }
            RedisSource::Client(client) => {
                let b = builder_for(
                    client.client_config(),
                    config,
                    client.client_reconnect_policy().unwrap_or(policy),
                );
                (Backend::Client(client), false, b)
            }
            RedisSource::Pool(pool) => {
                let first = pool.next();
                let b = builder_for(
                    first.client_config(),
                    config,
                    first.client_reconnect_policy().unwrap_or(policy),
                );
                (Backend::Pool(pool), false, b)
            }
        };

        let clustered = backend.client().is_clustered();
        match &backend {
            Backend::Pool(pool) => {
                for client in pool.clients() {
                    if client.state() == ClientState::Disconnected {
                        client.connect();
                    }
                }
            }
            Backend::Client(client) => {
                if client.state() == ClientState::Disconnected {
                    client.connect();
                }
            }
        }
        let connected = tokio::time::timeout(config.connect_timeout, async {
            match &backend {
                Backend::Pool(pool) => pool.wait_for_connect().await,
                Backend::Client(client) => client.wait_for_connect().await,
            }
        })
        .await;
        if !matches!(connected, Ok(Ok(()))) {
            tracing::warn!(
                namespace = %config.namespace,
                "redis did not answer at start-up; the cache starts degraded and reconnects in the background"
            );
        }

        let subscriber = if config.invalidation {
            let mut b = sub_builder;
            b.with_performance_config(|p| {
                p.broadcast_channel_capacity = SUBSCRIBER_CHANNEL_CAPACITY
            });
            let sub = b.build_subscriber_client().map_err(Error::Redis)?;
            sub.connect();
            Some(sub)
        } else {
            None
        };

        let options = Options {
            timeout: Some(config.command_timeout),
            fail_fast: true,
            ..Options::default()
        };
        Ok(Self {
            backend,
            owned,
            subscriber,
            breaker,
            options,
            channel: format!("{}__invalidate", config.namespace),
            clustered,
            stats,
        })
    }

    pub(crate) fn subscriber(&self) -> Option<&SubscriberClient> {
        self.subscriber.as_ref()
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.backend.client().is_connected()
    }

    fn cmd(&self) -> WithOptions<Client> {
        self.backend.client().with_options(&self.options)
    }

    /// Runs one Redis call through the breaker.
    async fn call<T, F>(&self, fut: F) -> Result<T, Unavailable>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        let Ok(permit) = self.breaker.try_acquire() else {
            self.stats.l2_skipped();
            return Err(Unavailable);
        };
        match fut.await {
            Ok(v) => {
                permit.success();
                Ok(v)
            }
            Err(e) => {
                permit.record(is_backend_fault(&e));
                self.stats.l2_error();
                tracing::debug!(kind = ?e.kind(), error = %e, "redis cache call failed");
                Err(Unavailable)
            }
        }
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Bytes>, Unavailable> {
        let c = self.cmd();
        self.call(c.get::<Option<Bytes>, _>(key)).await
    }

    /// One MGET (standalone, Sentinel) or one pipeline of GETs (Cluster, where MGET cannot
    /// span slots).
    pub(crate) async fn mget(&self, keys: Vec<String>) -> Result<Vec<Option<Bytes>>, Unavailable> {
        let c = self.cmd();
        if self.clustered {
            let pipeline = Pipeline::from(c);
            let fut = async {
                for key in keys {
                    pipeline.get::<(), _>(key).await?;
                }
                pipeline.all::<Vec<Option<Bytes>>>().await
            };
            self.call(fut).await
        } else {
            self.call(c.mget::<Vec<Option<Bytes>>, _>(keys)).await
        }
    }

    /// Sends the batch as one pipeline.
    pub(crate) async fn exec(&self, batch: Batch) -> Result<(), Unavailable> {
        if batch.is_empty() {
            return Ok(());
        }
        let pipeline = Pipeline::from(self.cmd());
        let channel = self.channel.clone();
        let fut = async {
            for (key, bytes, ttl) in batch.sets {
                let px = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
                pipeline
                    .set::<(), _, _>(key, bytes, Some(Expiration::PX(px)), None, false)
                    .await?;
            }
            if self.clustered {
                // One DEL per hash slot: a DEL whose keys span slots is refused (CROSSSLOT).
                for keys in by_slot(batch.dels) {
                    pipeline.del::<(), _>(keys).await?;
                }
            } else if !batch.dels.is_empty() {
                pipeline.del::<(), _>(batch.dels).await?;
            }
            if let Some((key, token)) = batch.unlock {
                // EVAL through a custom command: fred's Lua interface is not available on
                // pipelines or with per-command options. The key is argument 2.
                let eval = CustomCommand::new_static("EVAL", ClusterHash::Offset(2), false);
                let args = vec![RELEASE_LOCK.to_owned(), "1".to_owned(), key, token];
                pipeline.custom::<(), _>(eval, args).await?;
            }
            if let Some(message) = batch.publish {
                pipeline.publish::<(), _, _>(channel, message).await?;
            }
            pipeline.all::<Value>().await.map(drop)
        };
        self.call(fut).await
    }

    /// While the breaker is not closed, sends one PING through it when it lets a trial call
    /// through, so L2 comes back when Redis does even if every read is an L1 hit.
    pub(crate) async fn probe(&self) {
        if self.breaker.state() == State::Closed {
            return;
        }
        let Ok(permit) = self.breaker.try_acquire() else {
            return;
        };
        let c = self.cmd();
        match c.ping::<String>(None).await {
            Ok(_) => permit.success(),
            Err(e) => permit.record(is_backend_fault(&e)),
        }
    }

    /// `SET lock token NX PX ttl`: `true` when taken.
    pub(crate) async fn try_lock(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, Unavailable> {
        let c = self.cmd();
        let px = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let r: Option<String> = self
            .call(c.set(
                key,
                token,
                Some(Expiration::PX(px)),
                Some(SetOptions::NX),
                false,
            ))
            .await?;
        Ok(r.is_some())
    }
}

/// `keys` grouped by Redis Cluster hash slot, so each group can go in one multi-key command.
fn by_slot(keys: Vec<String>) -> impl Iterator<Item = Vec<String>> {
    let mut groups: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
    for key in keys {
        groups
            .entry(fred::util::redis_keyslot(key.as_bytes()))
            .or_default()
            .push(key);
    }
    groups.into_values()
}

impl Drop for L2 {
    fn drop(&mut self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let subscriber = self.subscriber.take();
        let backend = if self.owned {
            match &self.backend {
                Backend::Pool(p) => Some(p.clone()),
                Backend::Client(_) => None,
            }
        } else {
            None
        };
        if subscriber.is_none() && backend.is_none() {
            return;
        }
        handle.spawn(async move {
            if let Some(sub) = subscriber {
                let _ = sub.quit().await;
            }
            if let Some(pool) = backend {
                let _ = pool.quit().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::by_slot;

    #[test]
    fn keys_are_grouped_by_cluster_slot() {
        let keys = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        // "{u1}:a" and "{u1}:b" share a hash tag, hence a slot; "a" and "b" do not.
        let groups: Vec<_> = by_slot(keys(&["{u1}:a", "a", "{u1}:b", "b"])).collect();
        assert_eq!(groups.len(), 3);
        assert!(groups.contains(&keys(&["{u1}:a", "{u1}:b"])));
        assert!(groups.contains(&keys(&["a"])) && groups.contains(&keys(&["b"])));
        assert_eq!(by_slot(Vec::new()).count(), 0);
    }
}
