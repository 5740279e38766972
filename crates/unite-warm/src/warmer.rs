//! The warmer: reads a source in batches and writes them into the cache.

use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use unite_cache::{Cache, CacheValue};

use crate::progress::{Phase, WarmProgress, WarmSummary};
use crate::source::{ItemFailure, SourceContext, WarmItem, WarmSource};
use crate::{BoxError, WarmError, WarmHandle};

/// The settings of a [`Warmer`]. Start from [`Default`] (or [`Warmer::builder`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WarmConfig {
    /// Items per batch: one `set_many` (one Redis pipeline) each. Default 500.
    pub batch_size: NonZeroUsize,
    /// Batch writes in flight at once. Default 4.
    pub concurrency: NonZeroUsize,
    /// While back-pressure is on (pool waiters), how often it is checked again. Default 50 ms.
    pub throttle_poll: Duration,
    /// Round each TTL down to a multiple of this, so items with close TTLs (sessions with
    /// their own expiry) share one `set_many`; a TTL shorter than it is kept as is.
    /// `None`: exact TTLs (items are grouped by equal TTL). Default `None`.
    pub ttl_granularity: Option<Duration>,
    /// Cap on items read per second, to warm gently under load. `None`: no cap. Default `None`.
    pub max_items_per_second: Option<NonZeroU32>,
    /// Error messages kept in the summary. Default 10.
    pub max_error_samples: usize,
}

impl Default for WarmConfig {
    fn default() -> Self {
        Self {
            batch_size: NonZeroUsize::new(500).unwrap_or(NonZeroUsize::MIN),
            concurrency: NonZeroUsize::new(4).unwrap_or(NonZeroUsize::MIN),
            throttle_poll: Duration::from_millis(50),
            ttl_granularity: None,
            max_items_per_second: None,
            max_error_samples: 10,
        }
    }
}

impl WarmConfig {
    /// Checks every field; the error names the first field at fault.
    ///
    /// # Errors
    /// [`WarmError::Config`].
    pub fn validate(&self) -> Result<(), WarmError> {
        if self.throttle_poll.is_zero() {
            return Err(WarmError::config(
                "throttle_poll",
                "must be greater than zero",
            ));
        }
        if self.ttl_granularity.is_some_and(|g| g.is_zero()) {
            return Err(WarmError::config(
                "ttl_granularity",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

/// Back-pressure signal: `true` while the warmer should pause.
type Pressure = Arc<dyn Fn() -> bool + Send + Sync>;

/// Builds a [`Warmer`].
#[must_use]
pub struct WarmerBuilder {
    cache: Cache,
    config: WarmConfig,
    pressure: Option<Pressure>,
}

impl fmt::Debug for WarmerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WarmerBuilder")
            .field("cache", &self.cache)
            .field("config", &self.config)
            .field("pressure", &self.pressure.is_some())
            .finish()
    }
}

impl WarmerBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: WarmConfig) -> Self {
        self.config = config;
        self
    }

    /// See [`WarmConfig::batch_size`].
    pub fn batch_size(mut self, n: NonZeroUsize) -> Self {
        self.config.batch_size = n;
        self
    }

    /// See [`WarmConfig::concurrency`].
    pub fn concurrency(mut self, n: NonZeroUsize) -> Self {
        self.config.concurrency = n;
        self
    }

    /// See [`WarmConfig::throttle_poll`].
    pub fn throttle_poll(mut self, every: Duration) -> Self {
        self.config.throttle_poll = every;
        self
    }

    /// See [`WarmConfig::ttl_granularity`].
    pub fn ttl_granularity(mut self, granularity: Duration) -> Self {
        self.config.ttl_granularity = Some(granularity);
        self
    }

    /// See [`WarmConfig::max_items_per_second`].
    pub fn max_items_per_second(mut self, rate: NonZeroU32) -> Self {
        self.config.max_items_per_second = Some(rate);
        self
    }

    /// See [`WarmConfig::max_error_samples`].
    pub fn max_error_samples(mut self, n: usize) -> Self {
        self.config.max_error_samples = n;
        self
    }

    /// Pause reading batches while `pressure` returns `true` (checked before each batch, then
    /// every `throttle_poll`). The writes in flight finish.
    pub fn throttle_when(mut self, pressure: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.pressure = Some(Arc::new(pressure));
        self
    }

    /// Pause reading batches while `pool` has callers waiting for a connection
    /// (`stats().waiters > 0`): the service's requests come before warming. Requires the
    /// `postgres` feature.
    #[cfg(feature = "postgres")]
    pub fn throttle_on_pool(self, pool: &unite_pool::Pool) -> Self {
        let pool = pool.clone();
        self.throttle_when(move || pool.stats().waiters > 0)
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// [`WarmError::Config`] naming the field at fault.
    pub fn build(self) -> Result<Warmer, WarmError> {
        self.config.validate()?;
        Ok(Warmer {
            cache: self.cache,
            config: self.config,
            pressure: self.pressure,
        })
    }
}

/// Fills a [`Cache`] from a [`WarmSource`]: batches read from the source are written with
/// `set_many` (one Redis pipeline each, and L1), several in flight at once.
///
/// - Runs inline ([`run`](Self::run)) or in the background ([`spawn`](Self::spawn), with
///   progress events, cancellation and a summary).
/// - Pauses while the database pool has waiters ([`WarmerBuilder::throttle_on_pool`]).
/// - A batch with errors is counted and the run goes on; a source that fails as a whole ends
///   the run with [`WarmError::Source`]. `written` counts only items whose batch write
///   succeeded.
/// - Idempotent: warming twice from the same data writes the same keys with the same values
///   (each key is a plain overwrite; keys are expected to be unique within a source).
///
/// Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct Warmer {
    cache: Cache,
    config: WarmConfig,
    pressure: Option<Pressure>,
}

impl fmt::Debug for Warmer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Warmer")
            .field("cache", &self.cache)
            .field("config", &self.config)
            .field("pressure", &self.pressure.is_some())
            .finish()
    }
}

impl Warmer {
    /// A builder for a warmer filling `cache`, with the default [`WarmConfig`].
    pub fn builder(cache: Cache) -> WarmerBuilder {
        WarmerBuilder {
            cache,
            config: WarmConfig::default(),
            pressure: None,
        }
    }

    /// A warmer filling `cache` with the default [`WarmConfig`] and no back-pressure.
    #[must_use]
    pub fn new(cache: Cache) -> Self {
        Self {
            cache,
            config: WarmConfig::default(),
            pressure: None,
        }
    }

    /// The cache it fills.
    #[must_use]
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &WarmConfig {
        &self.config
    }

    /// Warms from `source` and waits for the end.
    ///
    /// # Errors
    /// [`WarmError::Source`] when the source fails as a whole.
    pub async fn run<T, S>(&self, source: S) -> Result<WarmSummary, WarmError>
    where
        T: CacheValue,
        S: WarmSource<T>,
    {
        let (tx, _rx) = watch::channel(WarmProgress::opening(source.name()));
        self.execute(source, CancellationToken::new(), &tx).await
    }

    /// Warms from `source` in a background task and returns at once: the handle gives the
    /// progress events, cancels, and waits for the summary. Dropping the handle does not stop
    /// the run. Must be called within a Tokio runtime.
    pub fn spawn<T, S>(&self, source: S) -> WarmHandle
    where
        T: CacheValue,
        S: WarmSource<T>,
    {
        self.spawn_with_cancel(source, CancellationToken::new())
    }

    /// Like [`spawn`](Self::spawn), cancelled by `cancel` (e.g. a child of the service's
    /// shutdown token).
    pub fn spawn_with_cancel<T, S>(&self, source: S, cancel: CancellationToken) -> WarmHandle
    where
        T: CacheValue,
        S: WarmSource<T>,
    {
        let (tx, rx) = watch::channel(WarmProgress::opening(source.name()));
        let warmer = self.clone();
        let token = cancel.clone();
        let join = tokio::spawn(async move { warmer.execute(source, token, &tx).await });
        WarmHandle::new(join, rx, cancel)
    }

    /// The run itself, shared by [`run`](Self::run) and [`spawn`](Self::spawn).
    async fn execute<T, S>(
        &self,
        source: S,
        cancel: CancellationToken,
        progress: &watch::Sender<WarmProgress>,
    ) -> Result<WarmSummary, WarmError>
    where
        T: CacheValue,
        S: WarmSource<T>,
    {
        let name = source.name();
        let mut tally = Tally::new(name.clone(), self.config.max_error_samples);
        tracing::info!(source = %name, namespace = %self.cache.namespace(), "cache warm-up started");

        let ctx = SourceContext::new(self.config.batch_size, cancel.clone());
        let opened = tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            opened = source.open(ctx) => Some(opened),
        };
        let opened = match opened {
            None => return Ok(tally.finish(Phase::Cancelled, progress)),
            Some(Err(cause)) => return Err(tally.fail(cause, progress)),
            Some(Ok(opened)) => opened,
        };
        tally.total = opened.total;
        progress.send_replace(tally.progress(Phase::Running));

        let mut batches = opened.batches;
        let mut writes: JoinSet<WriteOutcome> = JoinSet::new();
        let mut source_done = false;
        let mut failure: Option<BoxError> = None;
        let mut paced_until: Option<Instant> = None;
        let mut throttled_since: Option<Instant> = None;
        let concurrency = self.config.concurrency.get();

        loop {
            if cancel.is_cancelled() || (source_done && writes.is_empty()) {
                break;
            }
            let want_more = !source_done && writes.len() < concurrency;
            // Back-pressure and pacing: wait before reading the next batch.
            let mut gate = None;
            if want_more {
                if self.pressure.as_ref().is_some_and(|p| p()) {
                    if throttled_since.is_none() {
                        throttled_since = Some(Instant::now());
                        tracing::debug!(source = %name, "cache warm-up paused: the database pool has waiters");
                        progress.send_replace(tally.progress(Phase::Throttled));
                    }
                    gate = Some(Instant::now() + self.config.throttle_poll);
                } else {
                    if let Some(since) = throttled_since.take() {
                        tally.throttled += since.elapsed();
                        progress.send_replace(tally.progress(Phase::Running));
                    }
                    gate = paced_until.filter(|at| *at > Instant::now());
                }
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(joined) = writes.join_next(), if !writes.is_empty() => {
                    tally.apply(joined.unwrap_or_else(|_| WriteOutcome::lost()));
                    progress.send_replace(tally.progress(phase(throttled_since)));
                }
                () = sleep_until(gate), if gate.is_some() => {}
                next = batches.next(), if want_more && gate.is_none() => match next {
                    None => source_done = true,
                    Some(Err(cause)) => {
                        failure = Some(cause);
                        break;
                    }
                    Some(Ok(batch)) => {
                        let read = batch.items.len() + batch.failures.len();
                        let had_failures = !batch.failures.is_empty();
                        tally.source_failures(batch.failures);
                        tally.skipped += batch.skipped;
                        let items = self.prepare(batch.items, &mut tally);
                        if items.is_empty() {
                            tally.batch_done(had_failures);
                            progress.send_replace(tally.progress(phase(throttled_since)));
                        } else {
                            let cache = self.cache.clone();
                            let granularity = self.config.ttl_granularity;
                            writes.spawn(async move {
                                let n = items.len() as u64;
                                let mut out = AssertUnwindSafe(write_batch(&cache, items, granularity))
                                    .catch_unwind()
                                    .await
                                    .unwrap_or_else(|_| WriteOutcome::panicked(n));
                                out.source_failed = had_failures;
                                out
                            });
                        }
                        if let Some(rate) = self.config.max_items_per_second {
                            let step = Duration::from_secs_f64(read as f64 / f64::from(rate.get()));
                            let from = paced_until.map_or_else(Instant::now, |at| at.max(Instant::now()));
                            paced_until = Some(from + step);
                        }
                    }
                },
            }
        }
        if let Some(since) = throttled_since.take() {
            tally.throttled += since.elapsed();
        }
        let cancelled = failure.is_none() && !source_done;
        // Stop the source (this releases its connection) before waiting for the writes.
        drop(batches);
        if cancelled {
            progress.send_replace(tally.progress(Phase::Cancelling));
        }
        // Writes in flight always finish: a write given up half-way would leave keys in Redis
        // that the summary does not count.
        while let Some(joined) = writes.join_next().await {
            tally.apply(joined.unwrap_or_else(|_| WriteOutcome::lost()));
            let ph = if cancelled {
                Phase::Cancelling
            } else {
                Phase::Running
            };
            progress.send_replace(tally.progress(ph));
        }
        match failure {
            Some(cause) => Err(tally.fail(cause, progress)),
            None if cancelled => Ok(tally.finish(Phase::Cancelled, progress)),
            None => Ok(tally.finish(Phase::Done, progress)),
        }
    }

    /// Drops items with a zero TTL (counted as skipped) and resolves default TTLs.
    fn prepare<T>(&self, items: Vec<WarmItem<T>>, tally: &mut Tally) -> Vec<(String, T, Duration)> {
        let default_ttl = self.cache.config().default_ttl;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let ttl = item.ttl.unwrap_or(default_ttl);
            if ttl.is_zero() {
                tally.skipped += 1;
            } else {
                out.push((item.key, item.value, ttl));
            }
        }
        out
    }
}

fn phase(throttled_since: Option<Instant>) -> Phase {
    if throttled_since.is_some() {
        Phase::Throttled
    } else {
        Phase::Running
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// `ttl` rounded down to a multiple of `granularity` (unchanged when shorter than it).
pub(crate) fn round_ttl(ttl: Duration, granularity: Option<Duration>) -> Duration {
    match granularity {
        Some(g) if ttl >= g && !g.is_zero() => {
            let g_ns = g.as_nanos();
            let rounded = ttl.as_nanos() / g_ns * g_ns;
            u64::try_from(rounded).map_or(ttl, Duration::from_nanos)
        }
        _ => ttl,
    }
}

/// Sum of the cache's Redis errors and skipped calls: if it moved while a write ran, the
/// write may not have reached Redis (the cache then keeps the values in L1 only and does not
/// report it to the caller).
fn l2_faults(cache: &Cache) -> Option<u64> {
    cache.stats().l2.map(|l2| l2.errors + l2.skipped)
}

/// Writes one batch: one `set_many` per distinct TTL. A group the cache refuses as a whole (a
/// bad key, a value too large) is retried item by item, so only the bad items are lost.
async fn write_batch<T: CacheValue>(
    cache: &Cache,
    items: Vec<(String, T, Duration)>,
    granularity: Option<Duration>,
) -> WriteOutcome {
    let mut groups: Vec<(Duration, Vec<(String, T)>)> = Vec::new();
    for (key, value, ttl) in items {
        let ttl = round_ttl(ttl, granularity);
        match groups.iter_mut().find(|(t, _)| *t == ttl) {
            Some((_, group)) => group.push((key, value)),
            None => groups.push((ttl, vec![(key, value)])),
        }
    }
    let mut out = WriteOutcome::default();
    for (ttl, group) in groups {
        let n = group.len() as u64;
        let before = l2_faults(cache);
        match cache.set_many(&group, ttl).await {
            Ok(()) if l2_faults(cache) == before => out.written += n,
            Ok(()) => {
                out.failed += n;
                out.errors.push(format!(
                    "redis did not confirm a write of {n} items (the cache kept them in its local layer only)"
                ));
            }
            Err(batch_error) => {
                tracing::debug!(error = %batch_error, items = n, "cache refused a warm batch; writing its items one by one");
                for (key, value) in group {
                    let before = l2_faults(cache);
                    match cache.set(&key, &value, ttl).await {
                        Ok(()) if l2_faults(cache) == before => out.written += 1,
                        Ok(()) => {
                            out.failed += 1;
                            out.errors
                                .push(format!("{key}: redis did not confirm the write"));
                        }
                        Err(e) => {
                            out.failed += 1;
                            out.errors.push(format!("{key}: {e}"));
                        }
                    }
                }
            }
        }
    }
    out
}

/// What one batch write did.
#[derive(Debug, Default)]
struct WriteOutcome {
    written: u64,
    failed: u64,
    errors: Vec<String>,
    /// The source reported failures in this batch.
    source_failed: bool,
}

impl WriteOutcome {
    fn panicked(n: u64) -> Self {
        Self {
            written: 0,
            failed: n,
            errors: vec!["a batch write panicked".to_owned()],
            source_failed: false,
        }
    }

    fn lost() -> Self {
        Self {
            written: 0,
            failed: 0,
            errors: vec!["a batch write task was aborted".to_owned()],
            source_failed: false,
        }
    }
}

/// Running counts of a run.
struct Tally {
    source: String,
    started: Instant,
    total: Option<u64>,
    written: u64,
    errors: u64,
    skipped: u64,
    batches: u64,
    failed_batches: u64,
    samples: Vec<String>,
    max_samples: usize,
    throttled: Duration,
}

impl Tally {
    fn new(source: String, max_samples: usize) -> Self {
        Self {
            source,
            started: Instant::now(),
            total: None,
            written: 0,
            errors: 0,
            skipped: 0,
            batches: 0,
            failed_batches: 0,
            samples: Vec::new(),
            max_samples,
            throttled: Duration::ZERO,
        }
    }

    fn sample(&mut self, message: String) {
        if self.samples.len() < self.max_samples {
            self.samples.push(message);
        }
    }

    fn source_failures(&mut self, failures: Vec<ItemFailure>) {
        for failure in failures {
            tracing::debug!(source = %self.source, error = %failure, "warm item failed");
            self.errors += 1;
            self.sample(failure.to_string());
        }
    }

    fn batch_done(&mut self, failed: bool) {
        self.batches += 1;
        if failed {
            self.failed_batches += 1;
            metrics::counter!("unite_warm_batches_total", "source" => self.source.clone(), "result" => "failed").increment(1);
        } else {
            metrics::counter!("unite_warm_batches_total", "source" => self.source.clone(), "result" => "ok").increment(1);
        }
    }

    fn apply(&mut self, out: WriteOutcome) {
        self.written += out.written;
        self.errors += out.failed;
        metrics::counter!("unite_warm_items_total", "source" => self.source.clone(), "result" => "written")
            .increment(out.written);
        metrics::counter!("unite_warm_items_total", "source" => self.source.clone(), "result" => "failed")
            .increment(out.failed);
        let failed = out.source_failed || out.failed > 0 || !out.errors.is_empty();
        for e in out.errors {
            self.sample(e);
        }
        self.batch_done(failed);
    }

    #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
    fn rate(&self, elapsed: Duration) -> f64 {
        let secs = elapsed.as_secs_f64();
        if secs > 0.0 {
            self.written as f64 / secs
        } else {
            0.0
        }
    }

    fn progress(&self, phase: Phase) -> WarmProgress {
        let elapsed = self.started.elapsed();
        WarmProgress {
            source: self.source.clone(),
            phase,
            done: self.written,
            total: self.total,
            errors: self.errors,
            skipped: self.skipped,
            batches: self.batches,
            failed_batches: self.failed_batches,
            rate_per_sec: self.rate(elapsed),
            elapsed,
            throttled: self.throttled,
        }
    }

    fn summary(&self) -> WarmSummary {
        let elapsed = self.started.elapsed();
        WarmSummary {
            source: self.source.clone(),
            written: self.written,
            total: self.total,
            skipped: self.skipped,
            errors: self.errors,
            batches: self.batches,
            failed_batches: self.failed_batches,
            error_samples: self.samples.clone(),
            elapsed,
            throttled: self.throttled,
            cancelled: false,
            rate_per_sec: self.rate(elapsed),
        }
    }

    fn finish(&self, phase: Phase, progress: &watch::Sender<WarmProgress>) -> WarmSummary {
        let mut summary = self.summary();
        summary.cancelled = phase == Phase::Cancelled;
        metrics::counter!("unite_warm_items_total", "source" => self.source.clone(), "result" => "skipped")
            .increment(self.skipped);
        metrics::counter!("unite_warm_runs_total", "source" => self.source.clone(), "outcome" => phase.as_str())
            .increment(1);
        metrics::histogram!("unite_warm_run_duration_seconds", "source" => self.source.clone())
            .record(summary.elapsed.as_secs_f64());
        tracing::info!(
            source = %self.source,
            outcome = phase.as_str(),
            written = summary.written,
            errors = summary.errors,
            skipped = summary.skipped,
            failed_batches = summary.failed_batches,
            elapsed_ms = u64::try_from(summary.elapsed.as_millis()).unwrap_or(u64::MAX),
            rate_per_sec = summary.rate_per_sec,
            "cache warm-up finished"
        );
        progress.send_replace(self.progress(phase));
        summary
    }

    fn fail(&self, cause: BoxError, progress: &watch::Sender<WarmProgress>) -> WarmError {
        tracing::warn!(source = %self.source, error = %cause, written = self.written, "cache warm-up source failed");
        let partial = self.finish(Phase::Failed, progress);
        WarmError::Source {
            name: self.source.clone(),
            cause,
            partial: Box::new(partial),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_down_to_the_granularity() {
        let g = Some(Duration::from_secs(60));
        assert_eq!(
            round_ttl(Duration::from_secs(185), g),
            Duration::from_secs(180)
        );
        assert_eq!(
            round_ttl(Duration::from_secs(60), g),
            Duration::from_secs(60)
        );
        assert_eq!(
            round_ttl(Duration::from_secs(59), g),
            Duration::from_secs(59)
        );
        assert_eq!(
            round_ttl(Duration::from_millis(1234), None),
            Duration::from_millis(1234)
        );
    }

    #[test]
    fn config_names_the_bad_field() {
        let mut c = WarmConfig::default();
        c.validate().unwrap();
        c.throttle_poll = Duration::ZERO;
        assert!(matches!(
            c.validate(),
            Err(WarmError::Config {
                field: "throttle_poll",
                ..
            })
        ));
        let c = WarmConfig {
            ttl_granularity: Some(Duration::ZERO),
            ..WarmConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(WarmError::Config {
                field: "ttl_granularity",
                ..
            })
        ));
    }
}
