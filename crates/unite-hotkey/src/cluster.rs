//! A cluster-wide view of hot keys through Redis (feature `cluster`).
//!
//! Each instance publishes its local top-K as a sorted set (member = key, score = accesses per
//! minute) with a TTL, and registers its id in a set of instances. Any instance reads the merged
//! list: the per-minute counts of a key summed over the live instances.
//!
//! Key names (with the default prefix `unite:`):
//!
//! | key | type | content |
//! |---|---|---|
//! | `unite:{hotkeys}:instances` | set | ids of the instances that published within the TTL |
//! | `unite:{hotkeys}:top:<instance id>` | sorted set | that instance's top-K, expires after the TTL |
//!
//! Every key carries the same hash tag, `{hotkeys}`, so they live in one slot: the publish
//! transaction and the read pipeline work on Redis Cluster as on a single server. An instance
//! that stops publishing drops out when its sorted set expires; readers prune its id.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{KeysInterface, SetsInterface, SortedSetsInterface, TransactionInterface};
use fred::types::Value;
use serde::{Deserialize, Serialize};

use crate::{Error, HotKeyDetector};

/// Settings of the cluster view.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// Prefix of every Redis key (default `unite:`); must not contain `{` or `}` (the names
    /// carry their own hash tag).
    pub prefix: String,
    /// This instance's id (default: random, 16 hex digits).
    pub instance_id: String,
    /// How often [`ClusterView::spawn`] publishes (default 5 s).
    pub publish_interval: Duration,
    /// How long a published list stays without a new publish (default 30 s; at least the
    /// interval).
    pub ttl: Duration,
    /// How many keys each instance publishes (default 100).
    pub top_k: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            prefix: "unite:".to_owned(),
            instance_id: random_id(),
            publish_interval: Duration::from_secs(5),
            ttl: Duration::from_secs(30),
            top_k: 100,
        }
    }
}

impl ClusterConfig {
    /// The default settings under another key prefix.
    #[must_use]
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            ..Self::default()
        }
    }

    /// Sets the instance id.
    #[must_use]
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = id.into();
        self
    }

    /// Sets the publish interval.
    #[must_use]
    pub fn publish_interval(mut self, every: Duration) -> Self {
        self.publish_interval = every;
        self
    }

    /// Sets the TTL of a published list.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets how many keys each instance publishes.
    #[must_use]
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = k;
        self
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |field: &'static str, reason: String| Err(Error::InvalidConfig { field, reason });
        if self.prefix.contains(['{', '}']) {
            return bad(
                "prefix",
                "must not contain `{` or `}` (the key names add their own hash tag)".to_owned(),
            );
        }
        if self.instance_id.is_empty() || self.instance_id.contains(['{', '}']) {
            return bad(
                "instance_id",
                "must be non-empty, without `{` or `}`".to_owned(),
            );
        }
        if self.publish_interval < Duration::from_millis(1) {
            return bad("publish_interval", "must be at least 1 ms".to_owned());
        }
        if self.ttl < self.publish_interval || self.ttl > Duration::from_secs(30 * 24 * 3600) {
            return bad(
                "ttl",
                format!(
                    "must be between the publish interval ({:?}) and 30 days, got {:?}",
                    self.publish_interval, self.ttl
                ),
            );
        }
        if self.top_k == 0 {
            return bad("top_k", "must be at least 1".to_owned());
        }
        Ok(())
    }
}

fn random_id() -> String {
    let n = RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()));
    format!("{n:016x}")
}

/// A key in the merged cluster list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClusterHotKey {
    /// The key.
    pub key: String,
    /// Accesses per minute summed over the instances that list it.
    pub per_minute: u64,
    /// How many instances list it.
    pub instances: usize,
}

/// Publishes one detector's top-K to Redis and reads the merged list of all instances.
#[derive(Clone)]
pub struct ClusterView {
    client: Client,
    detector: HotKeyDetector,
    config: ClusterConfig,
    index_key: String,
    own_key: String,
}

impl std::fmt::Debug for ClusterView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterView")
            .field("config", &self.config)
            .field("index_key", &self.index_key)
            .field("own_key", &self.own_key)
            .finish_non_exhaustive()
    }
}

impl ClusterView {
    /// A view for `detector` over a connected fred `client`.
    pub fn new(
        client: Client,
        detector: HotKeyDetector,
        config: ClusterConfig,
    ) -> Result<Self, Error> {
        config.validate()?;
        let index_key = format!("{}{{hotkeys}}:instances", config.prefix);
        let own_key = top_key(&config.prefix, &config.instance_id);
        Ok(Self {
            client,
            detector,
            config,
            index_key,
            own_key,
        })
    }

    /// The settings in use.
    #[must_use]
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Name of the set of instance ids.
    #[must_use]
    pub fn index_key(&self) -> &str {
        &self.index_key
    }

    /// Name of this instance's sorted set.
    #[must_use]
    pub fn own_key(&self) -> &str {
        &self.own_key
    }

    /// Publishes the local top-K now, atomically replacing the previous list; returns how many
    /// keys were published.
    pub async fn publish(&self) -> Result<usize, Error> {
        let top = self.detector.top(self.config.top_k);
        let ttl_ms = i64::try_from(self.config.ttl.as_millis()).unwrap_or(i64::MAX);
        let trx = self.client.multi();
        let _: () = trx.del(self.own_key.as_str()).await?;
        if !top.is_empty() {
            let members: Vec<(f64, String)> = top
                .iter()
                .map(|h| (h.per_minute as f64, h.key.clone()))
                .collect();
            let _: () = trx
                .zadd(self.own_key.as_str(), None, None, false, false, members)
                .await?;
            let _: () = trx.pexpire(self.own_key.as_str(), ttl_ms, None).await?;
        }
        let _: () = trx
            .sadd(self.index_key.as_str(), self.config.instance_id.as_str())
            .await?;
        let _: () = trx.pexpire(self.index_key.as_str(), ttl_ms, None).await?;
        let _: Value = trx.exec(true).await?;
        Ok(top.len())
    }

    /// The `k` hottest keys across every live instance, hottest first.
    pub async fn merged(&self, k: usize) -> Result<Vec<ClusterHotKey>, Error> {
        let ids: Vec<String> = self.client.smembers(self.index_key.as_str()).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let pipe = self.client.pipeline();
        for id in &ids {
            let _: () = pipe
                .zrange(
                    top_key(&self.config.prefix, id),
                    0,
                    -1,
                    None,
                    false,
                    None,
                    true,
                )
                .await?;
        }
        let mut sums: HashMap<String, (u64, usize)> = HashMap::new();
        let mut gone = Vec::new();
        for (id, result) in ids.iter().zip(pipe.try_all::<Value>().await) {
            let entries: Vec<(String, f64)> = result?.convert()?;
            if entries.is_empty() {
                gone.push(id.clone());
            }
            for (key, score) in entries {
                let e = sums.entry(key).or_default();
                e.0 = e.0.saturating_add(score.max(0.0) as u64);
                e.1 += 1;
            }
        }
        if !gone.is_empty() {
            // Instances whose list expired (or that published nothing): drop them from the index.
            let _: i64 = self.client.srem(self.index_key.as_str(), gone).await?;
        }
        let mut merged: Vec<ClusterHotKey> = sums
            .into_iter()
            .map(|(key, (per_minute, instances))| ClusterHotKey {
                key,
                per_minute,
                instances,
            })
            .collect();
        merged.sort_by(|a, b| b.per_minute.cmp(&a.per_minute).then(a.key.cmp(&b.key)));
        merged.truncate(k);
        Ok(merged)
    }

    /// Removes this instance's list and id (e.g. on shutdown).
    pub async fn withdraw(&self) -> Result<(), Error> {
        let trx = self.client.multi();
        let _: () = trx.del(self.own_key.as_str()).await?;
        let _: () = trx
            .srem(self.index_key.as_str(), self.config.instance_id.as_str())
            .await?;
        let _: Value = trx.exec(true).await?;
        Ok(())
    }

    /// Publishes every `publish_interval` in a background task until the handle is aborted.
    /// A failed publish is logged (`tracing` warn) and retried at the next interval.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(self.config.publish_interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(error) = self.publish().await {
                    tracing::warn!(%error, key = %self.own_key, "hot-key publish failed");
                }
            }
        })
    }
}

fn top_key(prefix: &str, instance_id: &str) -> String {
    format!("{prefix}{{hotkeys}}:top:{instance_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_share_one_hash_tag() {
        assert_eq!(top_key("app:", "a1"), "app:{hotkeys}:top:a1");
        let cfg = ClusterConfig::with_prefix("app:").instance_id("a1");
        assert_eq!(cfg.prefix, "app:");
        cfg.validate().unwrap();
    }

    #[test]
    fn bad_settings_are_named() {
        let field = |c: ClusterConfig| match c.validate() {
            Err(Error::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        };
        assert_eq!(field(ClusterConfig::with_prefix("a{b}")), "prefix");
        assert_eq!(
            field(ClusterConfig::default().instance_id("")),
            "instance_id"
        );
        assert_eq!(
            field(ClusterConfig::default().publish_interval(Duration::ZERO)),
            "publish_interval"
        );
        assert_eq!(
            field(
                ClusterConfig::default()
                    .publish_interval(Duration::from_secs(10))
                    .ttl(Duration::from_secs(5))
            ),
            "ttl"
        );
        assert_eq!(field(ClusterConfig::default().top_k(0)), "top_k");
    }

    #[test]
    fn default_ids_differ() {
        assert_ne!(ClusterConfig::default().instance_id, random_id());
        assert_eq!(random_id().len(), 16);
    }
}
