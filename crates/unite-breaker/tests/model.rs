//! Property test: random call sequences drive the breaker and a plain reference model side by
//! side; state, rejections, counters, window contents and events must agree after every step.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::select;
use unite_breaker::{CallError, CircuitBreaker, ManualClock, Permit, Reason, State, Window};

/// Drives a future that must be ready at once.
fn ready<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("future was not ready"),
    }
}

const SLOW_NS: u64 = 100_000_000; // slow_call_duration = 100 ms
const MS: u64 = 1_000_000;
const BUCKETS: u64 = 20;

#[derive(Debug, Clone, Copy)]
enum Win {
    Count(usize),
    TimeMs(u64),
}

#[derive(Debug, Clone)]
struct Params {
    window: Win,
    minimum: u32,
    failure_threshold: f64,
    slow_threshold: f64,
    half_open: u32,
    open_ms: u64,
    max_ms: u64,
    multiplier: f64,
}

#[derive(Debug, Clone)]
enum Op {
    /// A call that fails or not and takes `took_ns` (around the slow-call duration).
    /// `via_call` picks `call_with` (a future) over the permit API.
    Call {
        failed: bool,
        took_ns: u64,
        via_call: bool,
    },
    /// A call whose permit is dropped without an outcome.
    Ignore,
    Advance(u64),
    /// Take a permit and keep it across later steps (at most one held).
    Hold,
    /// Report the held permit.
    Release {
        failed: bool,
    },
    ForceOpen,
    ForceClosed,
    Reset,
}

/// The breaker as a plain, obviously-correct, single-threaded model.
#[derive(Debug)]
struct Model {
    p: Params,
    now: u64,
    state: State,
    forced: bool,
    epoch: u64,
    /// Closed-state outcomes: (completed at, failed, slow).
    window: Vec<(u64, bool, bool)>,
    trial_taken: u32,
    trial: Vec<(bool, bool)>,
    until: u64,
    consecutive: u32,
    events: Vec<(State, State, Reason)>,
    calls: u64,
    successes: u64,
    failures: u64,
    slow_calls: u64,
    ignored: u64,
    rejected: u64,
    opened: u64,
}

impl Model {
    fn new(p: Params) -> Self {
        Self {
            p,
            now: 0,
            state: State::Closed,
            forced: false,
            epoch: 0,
            window: Vec::new(),
            trial_taken: 0,
            trial: Vec::new(),
            until: 0,
            consecutive: 0,
            events: Vec::new(),
            calls: 0,
            successes: 0,
            failures: 0,
            slow_calls: 0,
            ignored: 0,
            rejected: 0,
            opened: 0,
        }
    }

    fn max_wait(&self) -> Duration {
        Duration::from_millis(self.p.max_ms)
    }

    fn wait(&self, opens: u32) -> Duration {
        let open = Duration::from_millis(self.p.open_ms);
        if opens <= 1 {
            return open;
        }
        let secs = open.as_secs_f64() * self.p.multiplier.powi(opens as i32 - 1);
        if secs >= self.max_wait().as_secs_f64() {
            self.max_wait()
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    fn go(&mut self, to: State, forced: bool, reason: Reason) {
        self.events.push((self.state, to, reason));
        self.epoch += 1;
        match to {
            State::Open => {
                self.opened += 1;
                if forced {
                    self.until = u64::MAX;
                } else {
                    self.consecutive += 1;
                    self.until = self.now + self.wait(self.consecutive).as_nanos() as u64;
                }
            }
            State::HalfOpen => {
                self.trial_taken = 0;
                self.trial.clear();
            }
            State::Closed => {
                self.window.clear();
                self.consecutive = 0;
            }
        }
        self.state = to;
        self.forced = forced;
    }

    /// The lazy Open -> HalfOpen move made by `state()` and by every admission.
    fn refresh(&mut self) {
        if self.state == State::Open && !self.forced && self.now >= self.until {
            self.go(State::HalfOpen, false, Reason::OpenDurationElapsed);
        }
    }

    fn admit(&mut self) -> Result<u64, (Duration, State)> {
        self.refresh();
        match self.state {
            State::Closed => {
                self.calls += 1;
                Ok(self.epoch)
            }
            State::Open => {
                self.rejected += 1;
                let left = Duration::from_nanos(self.until - self.now);
                Err((left.min(self.max_wait()), State::Open))
            }
            State::HalfOpen if self.trial_taken >= self.p.half_open => {
                self.rejected += 1;
                let hint = Duration::from_millis(self.p.open_ms).min(Duration::from_nanos(SLOW_NS));
                Err((hint, State::HalfOpen))
            }
            State::HalfOpen => {
                self.trial_taken += 1;
                self.calls += 1;
                Ok(self.epoch)
            }
        }
    }

    /// Calls, failures and slow calls in the closed window at `now`.
    fn tally(&self) -> (u64, u64, u64) {
        let alive: Vec<_> = match self.p.window {
            Win::Count(n) => self.window.iter().rev().take(n).collect(),
            Win::TimeMs(ms) => {
                let width = (ms * MS).div_ceil(BUCKETS).max(1);
                let current = self.now / width;
                self.window
                    .iter()
                    .filter(|(t, _, _)| t / width + BUCKETS > current)
                    .collect()
            }
        };
        let count =
            |pick: fn(&(u64, bool, bool)) -> bool| alive.iter().filter(|e| pick(e)).count() as u64;
        (alive.len() as u64, count(|e| e.1), count(|e| e.2))
    }

    fn judge(&self, calls: u64, failures: u64, slow: u64) -> Option<Reason> {
        if failures as f64 / calls as f64 >= self.p.failure_threshold {
            Some(Reason::FailureRateExceeded)
        } else if slow as f64 / calls as f64 >= self.p.slow_threshold {
            Some(Reason::SlowCallRateExceeded)
        } else {
            None
        }
    }

    /// `outcome`: `None` = ignored, `Some(failed)` otherwise.
    fn complete(&mut self, epoch: u64, start: u64, outcome: Option<bool>) {
        let slow = outcome.is_some() && self.now - start > SLOW_NS;
        match outcome {
            None => self.ignored += 1,
            Some(true) => self.failures += 1,
            Some(false) => self.successes += 1,
        }
        self.slow_calls += u64::from(slow);
        if epoch != self.epoch {
            return;
        }
        match (self.state, outcome) {
            (State::Closed, Some(failed)) => {
                self.window.push((self.now, failed, slow));
                if self.forced {
                    return;
                }
                let (calls, failures, slows) = self.tally();
                if calls >= u64::from(self.p.minimum)
                    && let Some(reason) = self.judge(calls, failures, slows)
                {
                    self.go(State::Open, false, reason);
                }
            }
            (State::HalfOpen, None) => self.trial_taken -= 1,
            (State::HalfOpen, Some(failed)) => {
                self.trial.push((failed, slow));
                if self.trial.len() as u32 == self.p.half_open {
                    let n = self.trial.len() as u64;
                    let f = self.trial.iter().filter(|t| t.0).count() as u64;
                    let s = self.trial.iter().filter(|t| t.1).count() as u64;
                    match self.judge(n, f, s) {
                        Some(reason) => self.go(State::Open, false, reason),
                        None => self.go(State::Closed, false, Reason::TrialCallsPassed),
                    }
                }
            }
            _ => {}
        }
    }

    fn window_calls(&self) -> u64 {
        match self.state {
            State::Closed => self.tally().0,
            State::HalfOpen => self.trial.len() as u64,
            State::Open => 0,
        }
    }

    fn retry_after_ms(&self) -> Option<u64> {
        (self.state == State::Open).then(|| {
            let left = Duration::from_nanos(self.until - self.now).min(self.max_wait());
            left.as_nanos().div_ceil(1_000_000) as u64
        })
    }
}

fn params() -> impl Strategy<Value = Params> {
    (
        prop_oneof![
            (1usize..=12).prop_map(Win::Count),
            (1u64..=5_000).prop_map(Win::TimeMs)
        ],
        1u32..=12,
        select(vec![0.2, 0.25, 0.5, 0.75, 1.0]),
        select(vec![0.3, 0.5, 1.0]),
        1u32..=4,
        50u64..=2_000,
        select(vec![1u64, 2, 3, 10]),
        select(vec![1.0, 1.5, 2.0, 3.0]),
    )
        .prop_map(
            |(
                window,
                minimum,
                failure_threshold,
                slow_threshold,
                half_open,
                open_ms,
                factor,
                multiplier,
            )| {
                let minimum = match window {
                    Win::Count(n) => minimum.min(n as u32),
                    Win::TimeMs(_) => minimum,
                };
                Params {
                    window,
                    minimum,
                    failure_threshold,
                    slow_threshold,
                    half_open,
                    open_ms,
                    max_ms: open_ms * factor,
                    multiplier,
                }
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (
            any::<bool>(),
            select(vec![0, 0, 0, SLOW_NS - 1, SLOW_NS, SLOW_NS + 1, 3 * SLOW_NS]),
            any::<bool>(),
        )
            .prop_map(|(failed, took_ns, via_call)| Op::Call { failed, took_ns, via_call }),
        1 => Just(Op::Ignore),
        4 => (0u64..3_000).prop_map(Op::Advance),
        1 => Just(Op::Hold),
        1 => any::<bool>().prop_map(|failed| Op::Release { failed }),
        1 => prop_oneof![Just(Op::ForceOpen), Just(Op::ForceClosed), Just(Op::Reset)],
    ]
}

fn build(p: &Params, clock: &ManualClock) -> CircuitBreaker {
    let window = match p.window {
        Win::Count(n) => Window::Count(n as u32),
        Win::TimeMs(ms) => Window::Time(Duration::from_millis(ms)),
    };
    CircuitBreaker::builder()
        .name("model")
        .window(window)
        .minimum_calls(p.minimum)
        .failure_rate_threshold(p.failure_threshold)
        .slow_call_rate_threshold(p.slow_threshold)
        .slow_call_duration(Duration::from_nanos(SLOW_NS))
        .half_open_calls(p.half_open)
        .open_duration(Duration::from_millis(p.open_ms))
        .max_open_duration(Duration::from_millis(p.max_ms))
        .backoff_multiplier(p.multiplier)
        .event_capacity(1024)
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("generated configs are valid")
}

fn check_admission(
    real: &Result<Permit, unite_breaker::Rejected>,
    model: &Result<u64, (Duration, State)>,
) -> Result<(), TestCaseError> {
    match (real, model) {
        (Ok(_), Ok(_)) => Ok(()),
        (Err(r), Err((retry_after, state))) => {
            prop_assert_eq!(r.retry_after, *retry_after);
            prop_assert_eq!(r.state, *state);
            Ok(())
        }
        (real, model) => Err(TestCaseError::fail(format!(
            "admission differs: breaker {real:?}, model {model:?}"
        ))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn breaker_matches_reference_model(p in params(), ops in prop::collection::vec(op(), 1..250)) {
        let clock = ManualClock::new();
        let breaker = build(&p, &clock);
        let mut events = breaker.subscribe();
        let mut model = Model::new(p);
        let mut held: Option<(Permit, u64, u64)> = None;

        for (step, op) in ops.iter().enumerate() {
            match *op {
                Op::Call { failed, took_ns, via_call: true } => {
                    let start = model.now;
                    let expected = model.admit();
                    // The "backend" error is `true` when it should count as a failure.
                    let real = ready(breaker.call_with(|counts: &bool| *counts, async {
                        clock.advance(Duration::from_nanos(took_ns));
                        Err::<(), bool>(failed)
                    }));
                    match (real, expected) {
                        (Err(CallError::Inner(_)), Ok(epoch)) => {
                            model.now += took_ns;
                            model.complete(epoch, start, Some(failed));
                        }
                        (Err(CallError::Open { retry_after }), Err((want, _))) => {
                            prop_assert_eq!(retry_after, want);
                        }
                        (real, expected) => {
                            return Err(TestCaseError::fail(format!(
                                "call differs: breaker {real:?}, model {expected:?}"
                            )));
                        }
                    }
                }
                Op::Call { failed, took_ns, via_call: false } => {
                    let real = breaker.try_acquire();
                    let expected = model.admit();
                    check_admission(&real, &expected)?;
                    if let (Ok(permit), Ok(epoch)) = (real, expected) {
                        let start = model.now;
                        clock.advance(Duration::from_nanos(took_ns));
                        model.now += took_ns;
                        permit.record(failed);
                        model.complete(epoch, start, Some(failed));
                    }
                }
                Op::Ignore => {
                    let real = breaker.try_acquire();
                    let expected = model.admit();
                    check_admission(&real, &expected)?;
                    if let (Ok(permit), Ok(epoch)) = (real, expected) {
                        drop(permit);
                        model.complete(epoch, model.now, None);
                    }
                }
                Op::Advance(ms) => {
                    clock.advance(Duration::from_millis(ms));
                    model.now += ms * MS;
                }
                Op::Hold => {
                    if held.is_none() {
                        let real = breaker.try_acquire();
                        let expected = model.admit();
                        check_admission(&real, &expected)?;
                        if let (Ok(permit), Ok(epoch)) = (real, expected) {
                            held = Some((permit, epoch, model.now));
                        }
                    }
                }
                Op::Release { failed } => {
                    if let Some((permit, epoch, start)) = held.take() {
                        permit.record(failed);
                        model.complete(epoch, start, Some(failed));
                    }
                }
                Op::ForceOpen => {
                    breaker.force_open();
                    model.go(State::Open, true, Reason::ForcedOpen);
                }
                Op::ForceClosed => {
                    breaker.force_closed();
                    model.go(State::Closed, true, Reason::ForcedClosed);
                }
                Op::Reset => {
                    breaker.reset();
                    model.go(State::Closed, false, Reason::Reset);
                }
            }

            model.refresh();
            prop_assert_eq!(breaker.state(), model.state, "step {} {:?}", step, op);
            let snap = breaker.snapshot();
            prop_assert_eq!(snap.forced, model.forced);
            prop_assert_eq!(snap.calls, model.calls);
            prop_assert_eq!(snap.successes, model.successes);
            prop_assert_eq!(snap.failures, model.failures);
            prop_assert_eq!(snap.slow_calls, model.slow_calls);
            prop_assert_eq!(snap.ignored, model.ignored);
            prop_assert_eq!(snap.rejected, model.rejected);
            prop_assert_eq!(snap.opened_count, model.opened);
            prop_assert_eq!(snap.window_calls, model.window_calls(), "step {} {:?}", step, op);
            prop_assert_eq!(snap.retry_after_ms, model.retry_after_ms());
            let real_events: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
                .map(|c| (c.from, c.to, c.reason))
                .collect();
            prop_assert_eq!(&real_events, &model.events, "step {} {:?}", step, op);
            model.events.clear();
        }
    }
}
