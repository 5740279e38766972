//! The handle of a background warm-up.

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{WarmError, WarmProgress, WarmSummary};

/// A warm-up running in the background (see [`Warmer::spawn`](crate::Warmer::spawn)).
///
/// Dropping the handle does not stop the run; [`cancel`](Self::cancel) does.
#[derive(Debug)]
pub struct WarmHandle {
    join: JoinHandle<Result<WarmSummary, WarmError>>,
    progress: watch::Receiver<WarmProgress>,
    cancel: CancellationToken,
}

impl WarmHandle {
    pub(crate) fn new(
        join: JoinHandle<Result<WarmSummary, WarmError>>,
        progress: watch::Receiver<WarmProgress>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            join,
            progress,
            cancel,
        }
    }

    /// A receiver of progress events: `changed().await` wakes after each batch and phase
    /// change, `borrow()` reads the latest. It can be cloned and kept after the handle is
    /// gone (e.g. by a readiness check: `rx.borrow().phase.is_finished()`).
    #[must_use]
    pub fn progress(&self) -> watch::Receiver<WarmProgress> {
        self.progress.clone()
    }

    /// The latest progress event.
    #[must_use]
    pub fn latest(&self) -> WarmProgress {
        self.progress.borrow().clone()
    }

    /// Asks the run to stop: no new batch is read, the writes in flight finish, and the
    /// summary says `cancelled`. Idempotent.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The run's cancellation token (cancelling it is [`cancel`](Self::cancel)).
    #[must_use]
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// `true` once the run has ended (done, cancelled or failed) and its summary is ready.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.join.is_finished()
    }

    /// Waits for the end of the run.
    ///
    /// # Errors
    /// [`WarmError::Source`] when the source failed, [`WarmError::Aborted`] when the task
    /// panicked or was aborted.
    pub async fn wait(self) -> Result<WarmSummary, WarmError> {
        self.join.await.unwrap_or(Err(WarmError::Aborted))
    }

    /// [`cancel`](Self::cancel), then [`wait`](Self::wait).
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub async fn cancel_and_wait(self) -> Result<WarmSummary, WarmError> {
        self.cancel();
        self.wait().await
    }
}
