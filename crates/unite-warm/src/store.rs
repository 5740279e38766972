//! The hot-key list kept in Redis between runs, and the source that warms it.

use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::clients::Client;
use fred::interfaces::KeysInterface as _;
use fred::types::Expiration;
use serde::{Deserialize, Serialize};
use unite_cache::CacheValue;

use crate::keys::{KeyListSource, erase};
use crate::source::{OpenedSource, SourceContext, WarmSource};
use crate::{BoxError, WarmError};

/// Format version of the saved document.
const FORMAT: u32 = 1;

/// A saved list older than this is not worth warming: by default it expires after a week.
const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// At most this many keys are saved by default.
const DEFAULT_MAX_KEYS: NonZeroUsize = NonZeroUsize::new(10_000).expect("10000 is not zero");

#[derive(Serialize)]
struct SavedRef<'a> {
    v: u32,
    saved_at_unix_ms: u64,
    keys: &'a [&'a str],
}

#[derive(Deserialize)]
struct Saved {
    v: u32,
    keys: Vec<String>,
}

/// The hot keys of one run, saved in Redis so the next run can warm them first.
///
/// The list is one JSON document under one Redis key (written with a single `SET`, so a
/// reader never sees half a list), with a TTL so a list from long ago is not replayed. Save it
/// periodically and at shutdown (with the `hotkey` feature, [`spawn_saver`] does both from a
/// [`HotKeyDetector`](unite_hotkey::HotKeyDetector)); warm it with [`HotKeySource`].
///
/// It uses the fred client it is given (the one the service already has; it must be
/// connected), and the Redis key as given: put it under your namespace.
///
/// [`spawn_saver`]: HotKeyStore::spawn_saver
#[derive(Clone)]
#[must_use]
pub struct HotKeyStore {
    client: Client,
    key: String,
    ttl: Option<Duration>,
    max_keys: NonZeroUsize,
}

impl fmt::Debug for HotKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HotKeyStore")
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

impl HotKeyStore {
    /// A store writing under `redis_key` through `client`.
    pub fn new(client: Client, redis_key: impl Into<String>) -> Self {
        Self {
            client,
            key: redis_key.into(),
            ttl: Some(DEFAULT_TTL),
            max_keys: DEFAULT_MAX_KEYS,
        }
    }

    /// How long a saved list lives in Redis. Default 7 days.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Keep the saved list until it is overwritten or cleared.
    pub fn without_ttl(mut self) -> Self {
        self.ttl = None;
        self
    }

    /// Most keys saved (the first ones given, hottest first). Default 10,000.
    pub fn max_keys(mut self, n: NonZeroUsize) -> Self {
        self.max_keys = n;
        self
    }

    /// The Redis key of the list.
    #[must_use]
    pub fn redis_key(&self) -> &str {
        &self.key
    }

    /// Replaces the saved list with `keys` (empty keys and duplicates dropped, at most
    /// `max_keys` kept, in order). Returns how many were saved.
    ///
    /// # Errors
    /// [`WarmError::Store`] when Redis fails.
    pub async fn save<I, K>(&self, keys: I) -> Result<usize, WarmError>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<str>,
    {
        let owned: Vec<K> = keys.into_iter().collect();
        let mut seen = std::collections::HashSet::new();
        let keys: Vec<&str> = owned
            .iter()
            .map(AsRef::as_ref)
            .filter(|k| !k.is_empty() && seen.insert(*k))
            .take(self.max_keys.get())
            .collect();
        let saved_at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let doc = SavedRef {
            v: FORMAT,
            saved_at_unix_ms,
            keys: &keys,
        };
        let json = serde_json::to_string(&doc).map_err(|e| WarmError::StoreFormat {
            key: self.key.clone(),
            reason: e.to_string(),
        })?;
        let expire = self
            .ttl
            .map(|t| Expiration::PX(i64::try_from(t.as_millis()).unwrap_or(i64::MAX).max(1)));
        self.client
            .set::<(), _, _>(&self.key, json, expire, None, false)
            .await
            .map_err(|cause| WarmError::Store { op: "save", cause })?;
        tracing::debug!(key = %self.key, saved = keys.len(), "hot-key list saved");
        Ok(keys.len())
    }

    /// The saved list, hottest first; empty when nothing is saved (or it expired).
    ///
    /// # Errors
    /// [`WarmError::Store`] when Redis fails, [`WarmError::StoreFormat`] when the value under
    /// the key is not a list this store wrote.
    pub async fn load(&self) -> Result<Vec<String>, WarmError> {
        let raw: Option<String> = self
            .client
            .get(&self.key)
            .await
            .map_err(|cause| WarmError::Store { op: "load", cause })?;
        let Some(raw) = raw else {
            return Ok(Vec::new());
        };
        let format_error = |reason: String| WarmError::StoreFormat {
            key: self.key.clone(),
            reason,
        };
        let saved: Saved = serde_json::from_str(&raw).map_err(|e| format_error(e.to_string()))?;
        if saved.v != FORMAT {
            return Err(format_error(format!("unknown format version {}", saved.v)));
        }
        Ok(saved.keys)
    }

    /// Removes the saved list.
    ///
    /// # Errors
    /// [`WarmError::Store`] when Redis fails.
    pub async fn clear(&self) -> Result<(), WarmError> {
        self.client
            .del::<(), _>(&self.key)
            .await
            .map_err(|cause| WarmError::Store { op: "clear", cause })
    }
}

#[cfg(feature = "hotkey")]
mod detector {
    use std::time::Duration;

    use tokio::task::JoinHandle;
    use tokio_util::sync::CancellationToken;
    use unite_hotkey::HotKeyDetector;

    use super::HotKeyStore;
    use crate::WarmError;

    impl HotKeyStore {
        /// Saves the detector's `k` hottest keys (see [`HotKeyDetector::top`]). Keys the
        /// detector reports truncated (longer than its `max_key_bytes`) are left out: they
        /// are not real keys. Requires the `hotkey` feature.
        ///
        /// # Errors
        /// As [`save`](Self::save).
        pub async fn save_top(
            &self,
            detector: &HotKeyDetector,
            k: usize,
        ) -> Result<usize, WarmError> {
            let max = detector.config().max_key_bytes;
            let top = detector.top(k);
            let keys = top
                .iter()
                .map(|h| h.key.as_str())
                .filter(|key| !(key.ends_with('…') && key.len() >= max));
            self.save(keys).await
        }

        /// Saves the detector's top `k` keys every `every`, and once more when `shutdown` is
        /// cancelled, then ends; the task returns the last save's result. A failed periodic
        /// save is logged and retried at the next tick. Requires the `hotkey` feature.
        ///
        /// # Errors
        /// The task's result: the final save's error.
        pub fn spawn_saver(
            &self,
            detector: HotKeyDetector,
            k: usize,
            every: Duration,
            shutdown: CancellationToken,
        ) -> JoinHandle<Result<usize, WarmError>> {
            let store = self.clone();
            let every = every.max(Duration::from_millis(1));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => break,
                        _ = tick.tick() => {
                            if let Err(e) = store.save_top(&detector, k).await {
                                tracing::warn!(key = %store.key, error = %e, "saving the hot-key list failed; retrying at the next tick");
                            }
                        }
                    }
                }
                store.save_top(&detector, k).await
            })
        }
    }
}

/// Warms the key list saved by the previous run ([`HotKeyStore`]), reloading each key's
/// value through a loader, with bounded concurrency (like [`KeyListSource`]).
///
/// The list is read when the source opens; a Redis failure there ends the run with
/// [`WarmError::Source`](crate::WarmError::Source). An empty or expired list warms nothing.
#[must_use]
pub struct HotKeySource<T> {
    store: HotKeyStore,
    inner: KeyListSource<T>,
}

impl<T> fmt::Debug for HotKeySource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HotKeySource")
            .field("store", &self.store)
            .field("inner", &self.inner)
            .finish()
    }
}

impl<T: CacheValue> HotKeySource<T> {
    /// Warms the keys saved in `store`, loading each through `loader`.
    pub fn new<F, Fut, E>(store: HotKeyStore, loader: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Self {
            store,
            inner: KeyListSource::from_parts("hot-keys", Vec::new(), erase(loader)),
        }
    }

    /// TTL of every entry. Default: the cache's `default_ttl`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.inner = self.inner.ttl(ttl);
        self
    }

    /// Loader calls in flight at once. Default 8.
    pub fn concurrency(mut self, n: NonZeroUsize) -> Self {
        self.inner = self.inner.concurrency(n);
        self
    }
}

impl<T: CacheValue> WarmSource<T> for HotKeySource<T> {
    fn name(&self) -> String {
        self.inner.name()
    }

    async fn open(self, ctx: SourceContext) -> Result<OpenedSource<T>, BoxError> {
        let keys = self.store.load().await?;
        tracing::debug!(key = %self.store.key, keys = keys.len(), "hot-key list loaded");
        let mut inner = self.inner;
        inner.set_keys(keys);
        Ok(inner.open_now(&ctx))
    }
}
