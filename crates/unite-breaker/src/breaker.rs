//! The breaker itself: lock-free admission, outcome recording under a short lock.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use crate::clock::duration_to_nanos;
use crate::window::{Outcome, SlidingWindow, Tally};
use crate::{
    BreakerSnapshot, Builder, CallError, Clock, Config, Reason, Rejected, State, StateChange,
};

// ---- the packed admission word -------------------------------------------------------------
//
// `word` = epoch (high 32 bits) | forced flag (bit 8) | state code (low 2 bits).
// Every transition bumps the epoch, so a permit knows whether the state it was issued in is
// still the current one when it completes.
//
// `trial` = epoch (high 32 bits) | trial slots taken (low 32 bits), valid only while the state
// word is HalfOpen with the same epoch. Leaving HalfOpen "seals" it (slots = SEALED) before the
// new state is published, so a racing acquirer can never take a slot of a finished HalfOpen.

const CODE_CLOSED: u64 = 0;
const CODE_OPEN: u64 = 1;
const CODE_HALF_OPEN: u64 = 2;
const CODE_MASK: u64 = 0b11;
const FORCED_BIT: u64 = 1 << 8;
const SEALED: u32 = u32::MAX;

fn pack_word(epoch: u32, state: State, forced: bool) -> u64 {
    let code = match state {
        State::Closed => CODE_CLOSED,
        State::Open => CODE_OPEN,
        State::HalfOpen => CODE_HALF_OPEN,
    };
    (u64::from(epoch) << 32) | if forced { FORCED_BIT } else { 0 } | code
}

fn unpack_word(word: u64) -> (u32, State) {
    let state = match word & CODE_MASK {
        CODE_OPEN => State::Open,
        CODE_HALF_OPEN => State::HalfOpen,
        _ => State::Closed,
    };
    (epoch_of(word), state)
}

fn epoch_of(word: u64) -> u32 {
    // The high 32 bits of a u64 always fit a u32.
    u32::try_from(word >> 32).unwrap_or(u32::MAX)
}

fn pack_trial(epoch: u32, taken: u32) -> u64 {
    (u64::from(epoch) << 32) | u64::from(taken)
}

fn trial_taken(trial: u64) -> u32 {
    u32::try_from(trial & u64::from(u32::MAX)).unwrap_or(u32::MAX)
}

/// Keeps a hot atomic on its own cache line(s) so writers of one do not slow readers of
/// another.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// Atomics read on every admission.
#[derive(Debug)]
struct Admission {
    word: AtomicU64,
    /// Clock nanos at which an Open breaker lets trial calls through (`u64::MAX` when forced).
    open_until: AtomicU64,
    trial: AtomicU64,
}

/// Everything mutated only under the lock.
#[derive(Debug)]
struct Inner {
    state: State,
    forced: bool,
    epoch: u32,
    window: SlidingWindow,
    trial: Tally,
    open_until: u64,
    consecutive_opens: u32,
    successes: u64,
    failures: u64,
    slow_calls: u64,
    ignored: u64,
    opened_count: u64,
}

struct Shared {
    admission: Padded<Admission>,
    calls: Padded<AtomicU64>,
    /// Refusals, striped so threads refusing at once do not fight over one cache line.
    rejected: [Padded<AtomicU64>; STRIPES],
    inner: Mutex<Inner>,
    config: Config,
    slow_nanos: u64,
    half_open_calls: u32,
    half_open_retry_after: Duration,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<StateChange>,
}

/// A circuit breaker. Cheap to clone (an `Arc` inside); clones share one state.
///
/// Build one with [`CircuitBreaker::builder`]. See the [crate docs](crate) for an example.
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (_, state) = unpack_word(self.shared.admission.0.word.load(Ordering::Acquire));
        f.debug_struct("CircuitBreaker")
            .field("name", &self.shared.config.name)
            .field("state", &state)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// What the caller decided about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Success,
    Failure,
    Ignore,
}

impl CircuitBreaker {
    /// A [`Builder`] holding the default [`Config`].
    pub fn builder() -> Builder {
        Builder::new()
    }

    pub(crate) fn from_parts(config: Config, clock: Arc<dyn Clock>) -> Self {
        let (events, _) = broadcast::channel(config.event_capacity);
        let inner = Inner {
            state: State::Closed,
            forced: false,
            epoch: 0,
            window: SlidingWindow::new(config.window),
            trial: Tally::default(),
            open_until: 0,
            consecutive_opens: 0,
            successes: 0,
            failures: 0,
            slow_calls: 0,
            ignored: 0,
            opened_count: 0,
        };
        let shared = Shared {
            admission: Padded(Admission {
                word: AtomicU64::new(pack_word(0, State::Closed, false)),
                open_until: AtomicU64::new(0),
                trial: AtomicU64::new(pack_trial(0, SEALED)),
            }),
            calls: Padded(AtomicU64::new(0)),
            rejected: Default::default(),
            inner: Mutex::new(inner),
            slow_nanos: duration_to_nanos(config.slow_call_duration),
            half_open_calls: config.half_open_calls,
            half_open_retry_after: config.open_duration.min(config.slow_call_duration),
            config,
            clock,
            events,
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// The configuration this breaker was built with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The breaker's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Runs `fut` if the breaker lets the call through; every `Err` counts as a failure.
    ///
    /// While the breaker refuses calls this returns [`CallError::Open`] at once, without
    /// polling `fut` and without allocating. A call slower than `slow_call_duration` also
    /// counts as slow. If the returned future is dropped before `fut` completes (cancelled,
    /// or timed out from outside), the call is neither a success nor a failure; to count a
    /// timeout as a failure, put the timeout inside: `breaker.call(timeout(d, fut))`.
    ///
    /// # Errors
    /// [`CallError::Open`] when refused, [`CallError::Inner`] with `fut`'s error.
    pub async fn call<F, T, E>(&self, fut: F) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.call_with(|_: &E| true, fut).await
    }

    /// Like [`call`](Self::call), but `is_failure` decides which errors count as failures.
    /// An error for which it returns `false` (say, a unique-constraint violation: the
    /// caller's fault, not the backend's) counts as a success for the breaker. It is still
    /// returned to the caller as [`CallError::Inner`].
    ///
    /// # Errors
    /// [`CallError::Open`] when refused, [`CallError::Inner`] with `fut`'s error.
    pub async fn call_with<P, F, T, E>(&self, is_failure: P, fut: F) -> Result<T, CallError<E>>
    where
        P: FnOnce(&E) -> bool,
        F: Future<Output = Result<T, E>>,
    {
        // A guard borrowing the breaker (no reference-count traffic); dropping it undecided,
        // e.g. when this future is cancelled, ignores the call.
        let mut guard = CallGuard {
            shared: &self.shared,
            ticket: self.shared.admit()?,
            done: false,
        };
        let result = fut.await;
        // Decide first: if the predicate panics, the guard still gives the call (and any
        // HalfOpen trial slot) back on drop.
        let verdict = match &result {
            Ok(_) => Verdict::Success,
            Err(e) if is_failure(e) => Verdict::Failure,
            Err(_) => Verdict::Success,
        };
        guard.done = true;
        self.shared.complete(guard.ticket, verdict);
        result.map_err(CallError::Inner)
    }

    /// Asks to make one call, for code that cannot wrap a single future (e.g. a pool checkout
    /// followed by a query). Report the outcome on the [`Permit`]; the time from here to that
    /// report decides whether the call was slow.
    ///
    /// Refusing is lock-free and allocation-free.
    ///
    /// # Errors
    /// [`Rejected`] while open, or while half-open with every trial slot taken.
    pub fn try_acquire(&self) -> Result<Permit, Rejected> {
        let ticket = self.shared.admit()?;
        Ok(Permit {
            shared: Arc::clone(&self.shared),
            ticket,
            done: false,
        })
    }

    /// The current state. An Open breaker whose wait is over moves to HalfOpen here (and emits
    /// the event), so a health endpoint sees the state the next call would meet.
    #[must_use]
    pub fn state(&self) -> State {
        let s = &*self.shared;
        let a = &s.admission.0;
        let word = a.word.load(Ordering::Acquire);
        let (epoch, state) = unpack_word(word);
        if state == State::Open {
            let now = s.now_nanos();
            if now >= a.open_until.load(Ordering::Acquire) {
                s.try_half_open(epoch, now);
                return unpack_word(a.word.load(Ordering::Acquire)).1;
            }
        }
        state
    }

    /// `true` while an operator's [`force_open`](Self::force_open) or
    /// [`force_closed`](Self::force_closed) holds the state.
    #[must_use]
    pub fn is_forced(&self) -> bool {
        self.shared.admission.0.word.load(Ordering::Acquire) & FORCED_BIT != 0
    }

    /// Counters, state and current window rates.
    #[must_use]
    pub fn snapshot(&self) -> BreakerSnapshot {
        // Moves an Open breaker whose wait is over to HalfOpen first.
        let _ = self.state();
        let s = &*self.shared;
        let now = s.now_nanos();
        let mut inner = s.lock();
        let tally = match inner.state {
            State::Closed => inner.window.tally(now),
            State::HalfOpen => inner.trial,
            State::Open => Tally::default(),
        };
        let retry_after_ms = (inner.state == State::Open).then(|| {
            let d = s.retry_after(inner.open_until, now);
            u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
        });
        BreakerSnapshot {
            name: s.config.name.clone(),
            state: inner.state,
            forced: inner.forced,
            calls: s.calls.0.load(Ordering::Relaxed),
            successes: inner.successes,
            failures: inner.failures,
            slow_calls: inner.slow_calls,
            ignored: inner.ignored,
            rejected: s.rejected.iter().map(|c| c.0.load(Ordering::Relaxed)).sum(),
            opened_count: inner.opened_count,
            failure_rate: tally.failure_rate(),
            slow_call_rate: tally.slow_rate(),
            window_calls: tally.calls,
            retry_after_ms,
        }
    }

    /// State changes from now on. Events are sent in the order the changes happen; a
    /// receiver that falls more than `event_capacity` behind gets `RecvError::Lagged`.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.shared.events.subscribe()
    }

    /// Opens the breaker and holds it open (every call refused) until
    /// [`force_closed`](Self::force_closed) or [`reset`](Self::reset). Refusals then carry
    /// `retry_after = max_open_duration` as a hint.
    pub fn force_open(&self) {
        let s = &*self.shared;
        let now = s.now_nanos();
        let mut inner = s.lock();
        s.transition(&mut inner, State::Open, true, Reason::ForcedOpen, now);
    }

    /// Closes the breaker and holds it closed: every call passes and outcomes are counted,
    /// but no rate opens it until [`reset`](Self::reset) (or [`force_open`](Self::force_open)).
    pub fn force_closed(&self) {
        let s = &*self.shared;
        let now = s.now_nanos();
        let mut inner = s.lock();
        s.transition(&mut inner, State::Closed, true, Reason::ForcedClosed, now);
    }

    /// Back to the initial state: closed, not forced, empty window, no backoff history.
    /// Lifetime counters are kept.
    pub fn reset(&self) {
        let s = &*self.shared;
        let now = s.now_nanos();
        let mut inner = s.lock();
        s.transition(&mut inner, State::Closed, false, Reason::Reset, now);
    }
}

impl Shared {
    /// Lets a call through or refuses it. Refusal touches only atomics.
    fn admit(&self) -> Result<Ticket, Rejected> {
        let a = &self.admission.0;
        loop {
            let word = a.word.load(Ordering::Acquire);
            let (epoch, state) = unpack_word(word);
            match state {
                State::Closed => return Ok(self.ticket(epoch)),
                State::Open => {
                    let now = self.now_nanos();
                    let until = a.open_until.load(Ordering::Acquire);
                    if now < until {
                        return Err(self.reject(self.retry_after(until, now), State::Open));
                    }
                    self.try_half_open(epoch, now);
                }
                State::HalfOpen => {
                    let trial = a.trial.load(Ordering::Acquire);
                    let taken = trial_taken(trial);
                    if epoch_of(trial) != epoch || taken == SEALED {
                        // A transition is being published right now; wait for it to finish.
                        drop(self.lock());
                        continue;
                    }
                    if taken >= self.half_open_calls {
                        return Err(self.reject(self.half_open_retry_after, State::HalfOpen));
                    }
                    if a.trial
                        .compare_exchange_weak(
                            trial,
                            trial + 1,
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        return Ok(self.ticket(epoch));
                    }
                }
            }
        }
    }

    fn ticket(&self, epoch: u32) -> Ticket {
        self.calls.0.fetch_add(1, Ordering::Relaxed);
        Ticket {
            epoch,
            start: self.now_nanos(),
        }
    }

    fn now_nanos(&self) -> u64 {
        duration_to_nanos(self.clock.now())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing under the lock panics; if a panic ever happened there, the data is still a
        // consistent breaker state, so carry on rather than propagate the poison.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn retry_after(&self, until: u64, now: u64) -> Duration {
        Duration::from_nanos(until.saturating_sub(now)).min(self.config.max_open_duration)
    }

    fn reject(&self, retry_after: Duration, state: State) -> Rejected {
        self.rejected[stripe()].0.fetch_add(1, Ordering::Relaxed);
        Rejected::new(retry_after, state)
    }

    /// Open -> HalfOpen, if the breaker is still in the Open of `epoch` and its wait is over.
    fn try_half_open(&self, epoch: u32, now: u64) {
        let mut inner = self.lock();
        if inner.epoch == epoch
            && inner.state == State::Open
            && !inner.forced
            && now >= inner.open_until
        {
            self.transition(
                &mut inner,
                State::HalfOpen,
                false,
                Reason::OpenDurationElapsed,
                now,
            );
        }
    }

    fn complete(&self, ticket: Ticket, verdict: Verdict) {
        let Ticket { epoch, start } = ticket;
        let now = self.now_nanos();
        let slow = verdict != Verdict::Ignore && now.saturating_sub(start) > self.slow_nanos;
        let outcome = Outcome {
            failed: verdict == Verdict::Failure,
            slow,
        };
        let mut inner = self.lock();
        match verdict {
            Verdict::Success => inner.successes += 1,
            Verdict::Failure => inner.failures += 1,
            Verdict::Ignore => inner.ignored += 1,
        }
        inner.slow_calls += u64::from(slow);
        if inner.epoch != epoch {
            // The state the call was let through in is over; its outcome belongs to no window.
            return;
        }
        match inner.state {
            State::Closed => {
                if verdict == Verdict::Ignore {
                    return;
                }
                inner.window.record(outcome, now);
                if inner.forced {
                    return;
                }
                let tally = inner.window.tally(now);
                if tally.calls >= u64::from(self.config.minimum_calls)
                    && let Some(reason) = self.verdict_reason(tally)
                {
                    self.transition(&mut inner, State::Open, false, reason, now);
                }
            }
            State::HalfOpen => {
                if verdict == Verdict::Ignore {
                    // Give the trial slot back. We hold the lock and the epoch matches, so the
                    // trial word is unsealed and counts this permit's slot.
                    self.admission.0.trial.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
                inner.trial.add(outcome);
                if inner.trial.calls >= u64::from(self.half_open_calls) {
                    let tally = inner.trial;
                    match self.verdict_reason(tally) {
                        Some(reason) => {
                            self.transition(&mut inner, State::Open, false, reason, now);
                        }
                        None => self.transition(
                            &mut inner,
                            State::Closed,
                            false,
                            Reason::TrialCallsPassed,
                            now,
                        ),
                    }
                }
            }
            State::Open => {}
        }
    }

    fn verdict_reason(&self, tally: Tally) -> Option<Reason> {
        if tally.failure_rate() >= self.config.failure_rate_threshold {
            Some(Reason::FailureRateExceeded)
        } else if tally.slow_rate() >= self.config.slow_call_rate_threshold {
            Some(Reason::SlowCallRateExceeded)
        } else {
            None
        }
    }

    /// Moves to `to` (under the lock), publishes the new admission word and sends the event.
    fn transition(&self, inner: &mut Inner, to: State, forced: bool, reason: Reason, now: u64) {
        let a = &self.admission.0;
        let from = inner.state;
        inner.epoch = inner.epoch.wrapping_add(1);
        let epoch = inner.epoch;
        if from == State::HalfOpen {
            a.trial.store(pack_trial(epoch, SEALED), Ordering::Release);
        }
        let mut open_for = None;
        match to {
            State::Open => {
                inner.opened_count += 1;
                let until = if forced {
                    u64::MAX
                } else {
                    inner.consecutive_opens = inner.consecutive_opens.saturating_add(1);
                    let wait = self.config.open_wait(inner.consecutive_opens);
                    open_for = Some(wait);
                    now.saturating_add(duration_to_nanos(wait))
                };
                inner.open_until = until;
                a.open_until.store(until, Ordering::Release);
            }
            State::HalfOpen => {
                inner.trial = Tally::default();
                a.trial.store(pack_trial(epoch, 0), Ordering::Release);
            }
            State::Closed => {
                inner.window.clear();
                inner.consecutive_opens = 0;
            }
        }
        inner.state = to;
        inner.forced = forced;
        a.word
            .store(pack_word(epoch, to, forced), Ordering::Release);
        // No receiver is not an error: nobody is listening.
        let _ = self.events.send(StateChange {
            name: self.config.name.clone(),
            from,
            to,
            reason,
            at: SystemTime::now(),
            clock_time: Duration::from_nanos(now),
            open_for,
        });
    }
}

/// Leave to make one call, from [`CircuitBreaker::try_acquire`].
///
/// Consume it with [`success`](Self::success), [`failure`](Self::failure),
/// [`record`](Self::record) or [`ignore`](Self::ignore). Dropping it undecided is
/// [`ignore`](Self::ignore): the call counts neither way and a HalfOpen trial slot is given
/// back for another caller.
#[must_use = "report the call's outcome with success(), failure() or ignore()"]
pub struct Permit {
    shared: Arc<Shared>,
    ticket: Ticket,
    done: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.shared.config.name)
            .field("elapsed", &self.elapsed())
            .finish_non_exhaustive()
    }
}

impl Permit {
    /// The call succeeded.
    pub fn success(mut self) {
        self.finish(Verdict::Success);
    }

    /// The call failed (the backend's fault).
    pub fn failure(mut self) {
        self.finish(Verdict::Failure);
    }

    /// `failed == true` is [`failure`](Self::failure), `false` is [`success`](Self::success).
    pub fn record(mut self, failed: bool) {
        self.finish(if failed {
            Verdict::Failure
        } else {
            Verdict::Success
        });
    }

    /// The call's outcome says nothing about the backend (e.g. it was cancelled).
    pub fn ignore(mut self) {
        self.finish(Verdict::Ignore);
    }

    /// Time since the permit was handed out, by the breaker's clock.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.shared.now_nanos().saturating_sub(self.ticket.start))
    }

    fn finish(&mut self, verdict: Verdict) {
        if !self.done {
            self.done = true;
            self.shared.complete(self.ticket, verdict);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.finish(Verdict::Ignore);
    }
}

/// What admission hands out: the epoch the call was let through in, and when.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    epoch: u32,
    start: u64,
}

/// [`CircuitBreaker::call_with`]'s borrowed permit: ignores the call if dropped undecided.
struct CallGuard<'a> {
    shared: &'a Shared,
    ticket: Ticket,
    done: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.complete(self.ticket, Verdict::Ignore);
        }
    }
}

const STRIPES: usize = 8;

/// This thread's stripe of a striped counter (assigned round-robin on first use).
fn stripe() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.try_with(|s| *s).unwrap_or(0)
}
