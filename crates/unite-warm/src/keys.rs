//! A list of keys and a loader: the source behind [`KeyListSource`] and
//! [`HotKeySource`](crate::HotKeySource).

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use unite_cache::CacheValue;

use crate::BoxError;
use crate::source::{ItemFailure, OpenedSource, SourceContext, WarmBatch, WarmItem, WarmSource};

/// Loads concurrently by default: enough to hide a database round trip, few enough not to
/// crowd a pool of 10.
const DEFAULT_CONCURRENCY: NonZeroUsize = NonZeroUsize::new(8).expect("8 is not zero");

/// A type-erased loader: key in, value (or "none") out.
pub(crate) type Loader<T> =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<Option<T>, BoxError>> + Send + Sync>;

pub(crate) fn erase<T, F, Fut, E>(loader: F) -> Loader<T>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
    E: Into<BoxError>,
{
    Arc::new(move |key| {
        let fut = loader(key);
        async move { fut.await.map_err(Into::into) }.boxed()
    })
}

/// A loader panicked; the panic was contained and counted as that key's failure.
#[derive(Debug, thiserror::Error)]
#[error("the loader panicked")]
struct LoaderPanicked;

/// Warms a list of keys, loading each value through an async loader, with bounded
/// concurrency.
///
/// A loader's `Ok(None)` means "nothing to cache" (counted as skipped); an `Err` (or a
/// panic) is counted as that key's failure and the other keys go on. Duplicate keys are
/// loaded once.
///
/// ```
/// use unite_warm::KeyListSource;
///
/// let source = KeyListSource::new(["user:1", "user:2"], |key: String| async move {
///     // Look the value up wherever it lives (a database, a service…).
///     Ok::<_, std::io::Error>(Some(format!("value of {key}")))
/// })
/// .ttl(std::time::Duration::from_secs(600));
/// # let _ = source;
/// ```
#[must_use]
pub struct KeyListSource<T> {
    name: String,
    keys: Vec<String>,
    loader: Loader<T>,
    ttl: Option<Duration>,
    concurrency: NonZeroUsize,
}

impl<T> fmt::Debug for KeyListSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyListSource")
            .field("name", &self.name)
            .field("keys", &self.keys.len())
            .field("ttl", &self.ttl)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl<T: CacheValue> KeyListSource<T> {
    /// Keys and the loader that produces each one's value.
    pub fn new<I, K, F, Fut, E>(keys: I, loader: F) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Self::from_parts(
            "keys",
            keys.into_iter().map(Into::into).collect(),
            erase(loader),
        )
    }

    pub(crate) fn from_parts(name: &str, keys: Vec<String>, loader: Loader<T>) -> Self {
        Self {
            name: name.to_owned(),
            keys: dedup(keys),
            loader,
            ttl: None,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    pub(crate) fn set_keys(&mut self, keys: Vec<String>) {
        self.keys = dedup(keys);
    }

    /// TTL of every entry. Default: the cache's `default_ttl`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Loader calls in flight at once. Default 8.
    pub fn concurrency(mut self, n: NonZeroUsize) -> Self {
        self.concurrency = n;
        self
    }

    /// The name shown in logs, metrics and the summary. Default `"keys"`.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The keys to warm (duplicates removed, in their first order).
    #[must_use]
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    pub(crate) fn open_now(self, ctx: &SourceContext) -> OpenedSource<T> {
        let total = u64::try_from(self.keys.len()).ok();
        let ttl = self.ttl;
        let loader = self.loader;
        let batches = futures::stream::iter(self.keys)
            .map(move |key| {
                let loader = Arc::clone(&loader);
                async move {
                    let outcome = AssertUnwindSafe(async { loader(key.clone()).await })
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| Err(Box::new(LoaderPanicked) as BoxError));
                    (key, outcome)
                }
            })
            .buffer_unordered(self.concurrency.get())
            .chunks(ctx.batch_size.get())
            .map(move |chunk| {
                let mut items = Vec::with_capacity(chunk.len());
                let mut failures = Vec::new();
                let mut skipped = 0;
                for (key, outcome) in chunk {
                    match outcome {
                        Ok(Some(value)) => items.push(WarmItem { key, value, ttl }),
                        Ok(None) => skipped += 1,
                        Err(error) => failures.push(ItemFailure::new(Some(key), error)),
                    }
                }
                Ok(WarmBatch::new(items)
                    .with_failures(failures)
                    .with_skipped(skipped))
            })
            .take_until(ctx.cancel.clone().cancelled_owned())
            .boxed();
        OpenedSource::new(total, batches)
    }
}

fn dedup(keys: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::with_capacity(keys.len());
    keys.into_iter()
        .filter(|k| seen.insert(k.clone()))
        .collect()
}

impl<T: CacheValue> WarmSource<T> for KeyListSource<T> {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn open(self, ctx: SourceContext) -> Result<OpenedSource<T>, BoxError> {
        Ok(self.open_now(&ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    fn ctx(batch: usize) -> SourceContext {
        SourceContext::new(NonZeroUsize::new(batch).unwrap(), CancellationToken::new())
    }

    #[tokio::test]
    async fn batches_split_values_failures_and_skips() {
        let source = KeyListSource::new(
            (0..25).map(|i| format!("k{i}")).chain(["k3".to_owned()]),
            |key: String| async move {
                let n: u32 = key[1..].parse().map_err(|_| "bad key")?;
                match n % 5 {
                    0 => Err("boom"),
                    1 => Ok(None),
                    2 if n == 12 => panic!("loader bug"),
                    _ => Ok(Some(n)),
                }
            },
        );
        assert_eq!(source.keys().len(), 25, "duplicates are dropped");
        let opened = source.open(ctx(10)).await.unwrap();
        assert_eq!(opened.total, Some(25));
        let batches: Vec<_> = opened.batches.collect().await;
        assert_eq!(batches.len(), 3);
        let (mut items, mut failures, mut skipped) = (Vec::new(), Vec::new(), 0);
        for b in batches {
            let b = b.unwrap();
            assert!(b.items.len() + b.failures.len() + b.skipped as usize <= 10);
            items.extend(b.items.into_iter().map(|i| i.value));
            failures.extend(b.failures.into_iter().map(|f| f.to_string()));
            skipped += b.skipped;
        }
        items.sort_unstable();
        let expected: Vec<u32> = (0..25).filter(|n| n % 5 > 1 && *n != 12).collect();
        assert_eq!(items, expected);
        assert_eq!(skipped, 5);
        assert_eq!(failures.len(), 6, "{failures:?}");
        assert!(
            failures.iter().any(|f| f == "k12: the loader panicked"),
            "{failures:?}"
        );
        assert!(failures.iter().any(|f| f == "k5: boom"), "{failures:?}");
    }

    #[tokio::test]
    async fn stops_when_cancelled() {
        let cancel = CancellationToken::new();
        let source =
            KeyListSource::new((0..100).map(|i| i.to_string()), |key: String| async move {
                Ok::<_, BoxError>(Some(key))
            });
        let opened = source
            .open(SourceContext::new(NonZeroUsize::MIN, cancel.clone()))
            .await
            .unwrap();
        let mut batches = opened.batches;
        assert!(batches.next().await.is_some());
        cancel.cancel();
        assert!(batches.next().await.is_none());
    }
}
