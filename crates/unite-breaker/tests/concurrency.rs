//! Many tasks and threads racing through one breaker: no extra trial calls, no lost or
//! duplicated transitions. Time is a manual clock; nothing sleeps.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use support::{builder, fail};
use tokio::sync::broadcast::Receiver;
use unite_breaker::{CircuitBreaker, ManualClock, Reason, State, StateChange};

const TASKS: usize = 64;
const TRIALS: u32 = 5;

fn drain(events: &mut Receiver<StateChange>) -> Vec<StateChange> {
    let mut out = Vec::new();
    loop {
        match events.try_recv() {
            Ok(c) => out.push(c),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => return out,
            Err(e) => panic!("event stream broken: {e}"),
        }
    }
}

/// Every event starts where the previous one ended.
fn assert_chain(first_from: State, changes: &[StateChange]) {
    let mut at = first_from;
    for c in changes {
        assert_eq!(c.from, at, "lost or duplicated transition in {changes:#?}");
        assert_ne!((c.from, c.to), (State::HalfOpen, State::HalfOpen));
        at = c.to;
    }
}

fn open_wait_left(b: &CircuitBreaker) -> Duration {
    Duration::from_millis(b.snapshot().retry_after_ms.expect("breaker is open"))
}

/// A hang (a task neither let in nor refused) fails the test instead of stalling the run.
/// This is a safety net, not a timing assertion: the tests finish in well under a second.
const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_racing_through_half_open_get_exactly_the_permitted_trials() {
    tokio::time::timeout(DEADLINE, half_open_race())
        .await
        .expect("the half-open race hung");
}

async fn half_open_race() {
    let clock = ManualClock::new();
    let breaker = builder(&clock)
        .half_open_calls(TRIALS)
        .max_open_duration(Duration::from_secs(3600))
        .event_capacity(1024)
        .build()
        .unwrap();
    let mut events = breaker.subscribe();
    for _ in 0..5 {
        fail(&breaker);
    }
    let rounds = 30;
    for round in 0..rounds {
        // The wait is over: all tasks race both the Open -> HalfOpen move and the trial slots.
        clock.advance(open_wait_left(&breaker));
        let trials_fail = round % 2 == 1;
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let (release, released) = tokio::sync::watch::channel(false);
        let entered = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let breaker = breaker.clone();
                let barrier = Arc::clone(&barrier);
                let mut released = released.clone();
                let entered = Arc::clone(&entered);
                let refused = Arc::clone(&refused);
                tokio::spawn(async move {
                    barrier.wait().await;
                    let result = breaker
                        .call(async {
                            entered.fetch_add(1, Ordering::SeqCst);
                            // Hold the trial slot until every task has tried.
                            let _ = released.wait_for(|go| *go).await;
                            if trials_fail {
                                Err("backend down")
                            } else {
                                Ok(())
                            }
                        })
                        .await;
                    if matches!(result, Err(ref e) if e.is_open()) {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        // Wait (without sleeping) until every task was either let in or refused.
        while entered.load(Ordering::SeqCst) + refused.load(Ordering::SeqCst) < TASKS as u64 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            entered.load(Ordering::SeqCst),
            u64::from(TRIALS),
            "round {round}"
        );
        assert_eq!(breaker.state(), State::HalfOpen);
        release.send(true).unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        let expected = if trials_fail {
            State::Open
        } else {
            State::Closed
        };
        assert_eq!(breaker.state(), expected, "round {round}");
        if !trials_fail {
            for _ in 0..5 {
                fail(&breaker);
            }
        }
        let changes = drain(&mut events);
        let half_opens = changes
            .iter()
            .filter(|c| c.reason == Reason::OpenDurationElapsed)
            .count();
        assert_eq!(half_opens, 1, "round {round}: {changes:#?}");
    }
    let snap = breaker.snapshot();
    assert_eq!(snap.rejected, (TASKS as u64 - u64::from(TRIALS)) * rounds);
}

#[test]
fn threads_racing_through_half_open_get_exactly_the_permitted_trials() {
    let clock = ManualClock::new();
    let breaker = builder(&clock).half_open_calls(TRIALS).build().unwrap();
    for round in 0..20 {
        for _ in 0..5 {
            fail(&breaker);
        }
        clock.advance(open_wait_left(&breaker));
        let threads = 16;
        let start = Arc::new(Barrier::new(threads));
        let tried = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let breaker = breaker.clone();
                let start = Arc::clone(&start);
                let tried = Arc::clone(&tried);
                std::thread::spawn(move || {
                    start.wait();
                    let permit = breaker.try_acquire();
                    tried.wait(); // hold any slot until every thread has tried
                    match permit {
                        Ok(p) => {
                            p.success();
                            true
                        }
                        Err(_) => false,
                    }
                })
            })
            .collect();
        let admitted = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&admitted| admitted)
            .count();
        assert_eq!(admitted, TRIALS as usize, "round {round}");
        assert_eq!(breaker.state(), State::Closed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_failures_open_the_breaker_once() {
    tokio::time::timeout(DEADLINE, failure_race())
        .await
        .expect("the failure race hung");
}

async fn failure_race() {
    let clock = ManualClock::new();
    let breaker = builder(&clock)
        .window(unite_breaker::Window::Count(100))
        .minimum_calls(10)
        .event_capacity(1024)
        .build()
        .unwrap();
    let mut events = breaker.subscribe();
    let rounds = 40;
    for round in 0..rounds {
        breaker.reset();
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let breaker = breaker.clone();
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    let _ = breaker.call(async { Err::<(), _>("down") }).await;
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let changes = drain(&mut events);
        assert_eq!(changes.len(), 2, "round {round}: {changes:#?}");
        assert_eq!(changes[0].reason, Reason::Reset);
        assert_eq!(
            (changes[1].from, changes[1].to),
            (State::Closed, State::Open)
        );
        assert_eq!(breaker.state(), State::Open);
    }
    let snap = breaker.snapshot();
    assert_eq!(snap.opened_count, rounds);
    assert_eq!(snap.calls + snap.rejected, TASKS as u64 * rounds);
    assert_eq!(snap.calls, snap.failures);
}

/// A small deterministic generator so the stress test needs no extra crate.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn mixed_stress_keeps_counters_and_transitions_consistent() {
    let clock = ManualClock::new();
    let breaker = builder(&clock)
        .half_open_calls(3)
        .minimum_calls(5)
        .event_capacity(1 << 16)
        .build()
        .unwrap();
    let mut events = breaker.subscribe();
    let threads = 8;
    let ops = 5_000;
    let attempts = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let breaker = breaker.clone();
            let clock = clock.clone();
            let attempts = Arc::clone(&attempts);
            std::thread::spawn(move || {
                let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
                let mut held = Vec::new();
                for _ in 0..ops {
                    let r = rng.next();
                    if r.is_multiple_of(7) {
                        clock.advance(Duration::from_millis(r % 700));
                    }
                    attempts.fetch_add(1, Ordering::Relaxed);
                    match breaker.try_acquire() {
                        Ok(p) if r.is_multiple_of(11) => held.push(p),
                        Ok(p) => match r % 5 {
                            0 => p.ignore(),
                            1 | 2 => p.failure(),
                            _ => p.success(),
                        },
                        Err(_) => {}
                    }
                    if held.len() > 3 {
                        let p = held.remove(0);
                        p.record(r.is_multiple_of(3));
                    }
                }
                drop(held);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let snap = breaker.snapshot();
    assert_eq!(snap.calls + snap.rejected, attempts.load(Ordering::Relaxed));
    assert_eq!(snap.calls, snap.successes + snap.failures + snap.ignored);
    let changes = drain(&mut events);
    assert!(snap.opened_count > 0, "the mix must exercise opening");
    assert_eq!(
        changes.iter().filter(|c| c.to == State::Open).count() as u64,
        snap.opened_count
    );
    assert_chain(State::Closed, &changes);
    assert_eq!(changes.last().map_or(State::Closed, |c| c.to), snap.state);
}
