//! Shared helpers of the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use unite_cache::Cache;
use unite_testkit::TestRedis;

/// A session-like value (about 200 bytes encoded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: i64,
    pub user_id: i64,
    pub token: String,
    pub data: String,
}

impl Session {
    /// The value the test table holds for `id`.
    pub fn expected(id: i64) -> Self {
        Self {
            id,
            user_id: id % 97,
            token: format!("tok-{id}"),
            data: "x".repeat(150),
        }
    }
}

/// `CREATE TABLE sessions` with `n` rows matching [`Session::expected`].
pub const CREATE_SESSIONS: &str = "CREATE TABLE sessions AS \
     SELECT g::int8 AS id, (g % 97)::int8 AS user_id, 'tok-' || g AS token, repeat('x', 150) AS data \
     FROM generate_series(1, $1::int8) AS g";

/// The namespace of a test's cache: under the test prefix, so its keys are cleaned up.
pub fn namespace(redis: &TestRedis, name: &str) -> String {
    format!("{}{name}:", redis.prefix())
}

/// A cache with Redis L2 in the test's namespace.
pub async fn cache(redis: &TestRedis, name: &str) -> Cache {
    Cache::builder()
        .redis_url(redis.url())
        .namespace(namespace(redis, name))
        // Generous: the shared test machine is busy; a timeout here would fail a write.
        .command_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("cache builds")
}

/// PTTL of every key, in one pipeline (-2: missing, -1: no TTL).
pub async fn pttls(client: &Client, keys: &[String]) -> Vec<i64> {
    let pipeline = client.pipeline();
    for key in keys {
        let _: () = pipeline.pttl(key.as_str()).await.expect("queued");
    }
    pipeline.all().await.expect("pipeline runs")
}

/// Which of `keys` exist, in one pipeline.
pub async fn present(client: &Client, keys: &[String]) -> Vec<bool> {
    pttls(client, keys)
        .await
        .into_iter()
        .map(|t| t != -2)
        .collect()
}

/// Every key under `pattern`.
pub async fn scan(client: &Client, pattern: &str) -> Vec<String> {
    use futures::TryStreamExt as _;
    let keys: Vec<Key> = client
        .scan_buffered(pattern, Some(1000), None)
        .try_collect()
        .await
        .expect("scan runs");
    let mut keys: Vec<String> = keys.into_iter().filter_map(|k| k.into_string()).collect();
    keys.sort();
    keys
}
