//! The `WarmSource` trait and what sources hand to the warmer.

use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;
use unite_cache::CacheValue;

use crate::BoxError;

/// One entry to write: a cache key (without the cache's namespace), its value, and its TTL.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WarmItem<T> {
    /// The cache key, as given to [`Cache::get`](unite_cache::Cache::get).
    pub key: String,
    /// The value.
    pub value: T,
    /// How long the entry lives; `None`: the cache's `default_ttl`. A zero TTL (an entry
    /// that has already expired, such as a session past its end) is skipped, not written.
    pub ttl: Option<Duration>,
}

impl<T> WarmItem<T> {
    /// An item that lives for `ttl`.
    pub fn new(key: impl Into<String>, value: T, ttl: Duration) -> Self {
        Self {
            key: key.into(),
            value,
            ttl: Some(ttl),
        }
    }

    /// An item that lives for the cache's `default_ttl`.
    pub fn with_default_ttl(key: impl Into<String>, value: T) -> Self {
        Self {
            key: key.into(),
            value,
            ttl: None,
        }
    }
}

/// An item the source could not produce (its loader failed, its row did not map).
#[derive(Debug)]
#[non_exhaustive]
pub struct ItemFailure {
    /// The key, when the source knows it.
    pub key: Option<String>,
    /// What went wrong.
    pub error: BoxError,
}

impl ItemFailure {
    /// A failure for `key` (or for an item whose key is unknown).
    pub fn new(key: Option<String>, error: impl Into<BoxError>) -> Self {
        Self {
            key,
            error: error.into(),
        }
    }
}

impl fmt::Display for ItemFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{key}: {}", self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

/// One batch from a source: the items to write, the items it failed to produce, and how many
/// it had nothing for (a loader's `Ok(None)`).
///
/// A batch with failures is counted as a failed batch; its good items are still written.
#[derive(Debug)]
#[non_exhaustive]
pub struct WarmBatch<T> {
    /// Items to write.
    pub items: Vec<WarmItem<T>>,
    /// Items the source could not produce.
    pub failures: Vec<ItemFailure>,
    /// Keys the source had no value for (nothing to cache; not an error).
    pub skipped: u64,
}

impl<T> WarmBatch<T> {
    /// A batch of items, without failures.
    #[must_use]
    pub fn new(items: Vec<WarmItem<T>>) -> Self {
        Self {
            items,
            failures: Vec::new(),
            skipped: 0,
        }
    }

    /// Adds failures.
    #[must_use]
    pub fn with_failures(mut self, failures: Vec<ItemFailure>) -> Self {
        self.failures = failures;
        self
    }

    /// Adds a count of skipped keys.
    #[must_use]
    pub fn with_skipped(mut self, skipped: u64) -> Self {
        self.skipped = skipped;
        self
    }
}

/// The batches of an opened source. An `Err` ends the run with
/// [`WarmError::Source`](crate::WarmError::Source); errors of single items go in
/// [`WarmBatch::failures`] instead.
pub type BatchStream<T> = BoxStream<'static, Result<WarmBatch<T>, BoxError>>;

/// A source, opened: how many items it expects (when it knows) and its batches.
#[non_exhaustive]
pub struct OpenedSource<T> {
    /// Items expected in total, for progress; `None` when unknown.
    pub total: Option<u64>,
    /// The batches, in any order.
    pub batches: BatchStream<T>,
}

impl<T> OpenedSource<T> {
    /// An opened source.
    #[must_use]
    pub fn new(total: Option<u64>, batches: BatchStream<T>) -> Self {
        Self { total, batches }
    }
}

impl<T> fmt::Debug for OpenedSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedSource")
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

/// What the warmer tells a source when it opens it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SourceContext {
    /// Items per batch the warmer wants (a source may yield smaller batches).
    pub batch_size: NonZeroUsize,
    /// Cancelled when the run is cancelled; a source may stop early on it (the warmer stops
    /// pulling batches either way).
    pub cancel: CancellationToken,
}

impl SourceContext {
    /// A context (sources are normally opened by the [`Warmer`](crate::Warmer); this is for
    /// driving a source by hand, e.g. in a test).
    #[must_use]
    pub fn new(batch_size: NonZeroUsize, cancel: CancellationToken) -> Self {
        Self { batch_size, cancel }
    }
}

/// Where a warm-up reads from: something that yields (key, value, TTL) in batches.
///
/// Built in: [`PostgresSource`](crate::PostgresSource) (a query, streamed),
/// [`HotKeySource`](crate::HotKeySource) (the key list saved by the previous run, reloaded
/// through a loader), and [`KeyListSource`](crate::KeyListSource) (keys and a loader).
///
/// Write your own by returning an [`OpenedSource`] whose stream yields [`WarmBatch`]es:
///
/// ```
/// use futures::StreamExt as _;
/// use unite_warm::{BoxError, OpenedSource, SourceContext, WarmBatch, WarmItem, WarmSource};
///
/// struct Countries;
///
/// impl WarmSource<String> for Countries {
///     fn name(&self) -> String {
///         "countries".into()
///     }
///
///     async fn open(self, _ctx: SourceContext) -> Result<OpenedSource<String>, BoxError> {
///         let items = vec![
///             WarmItem::with_default_ttl("country:fr", "France".to_owned()),
///             WarmItem::with_default_ttl("country:de", "Germany".to_owned()),
///         ];
///         let batches = futures::stream::iter([Ok(WarmBatch::new(items))]).boxed();
///         Ok(OpenedSource::new(Some(2), batches))
///     }
/// }
/// ```
pub trait WarmSource<T: CacheValue>: Send + 'static {
    /// A short name for logs, metrics and the summary (`"postgres"`, `"hot-keys"`…).
    fn name(&self) -> String;

    /// Opens the source: runs the query, reads the key list… An error here ends the run
    /// with [`WarmError::Source`](crate::WarmError::Source).
    fn open(
        self,
        ctx: SourceContext,
    ) -> impl Future<Output = Result<OpenedSource<T>, BoxError>> + Send
    where
        Self: Sized;

    /// This source behind a box, so that sources of different types can be chosen at run
    /// time (a CLI flag, an admin request).
    fn boxed(self) -> BoxedSource<T>
    where
        Self: Sized,
    {
        let name = self.name();
        BoxedSource {
            name,
            open: Box::new(move |ctx| self.open(ctx).boxed()),
        }
    }
}

type OpenFn<T> =
    Box<dyn FnOnce(SourceContext) -> BoxFuture<'static, Result<OpenedSource<T>, BoxError>> + Send>;

/// Any source, boxed (see [`WarmSource::boxed`]).
pub struct BoxedSource<T> {
    name: String,
    open: OpenFn<T>,
}

impl<T> fmt::Debug for BoxedSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxedSource")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<T: CacheValue> WarmSource<T> for BoxedSource<T> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn open(
        self,
        ctx: SourceContext,
    ) -> impl Future<Output = Result<OpenedSource<T>, BoxError>> + Send {
        (self.open)(ctx)
    }

    fn boxed(self) -> BoxedSource<T> {
        self
    }
}
