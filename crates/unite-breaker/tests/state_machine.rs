//! Behaviour of the state machine, driven step by step on a manual clock.

mod support;

use std::cell::Cell;
use std::future::{Future, pending};
use std::io;
use std::task::Poll;
use std::time::Duration;

use support::{breaker, builder, fail, ok, poll_once, ready, timed};
use unite_breaker::{CallError, CircuitBreaker, ManualClock, Reason, Rejected, State, Window};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Opens a `support::breaker` with five failures.
fn trip(b: &CircuitBreaker) {
    for _ in 0..5 {
        fail(b);
    }
    assert_eq!(b.state(), State::Open);
}

fn rejection(b: &CircuitBreaker) -> Rejected {
    match b.try_acquire() {
        Err(r) => r,
        Ok(_) => panic!("expected the breaker to refuse"),
    }
}

#[test]
fn stays_closed_until_minimum_calls() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    for _ in 0..4 {
        fail(&b);
        assert_eq!(
            b.state(),
            State::Closed,
            "fewer than minimum_calls are never judged"
        );
    }
    fail(&b);
    assert_eq!(b.state(), State::Open);
    let snap = b.snapshot();
    assert_eq!(snap.failures, 5);
    assert_eq!(snap.opened_count, 1);
}

#[test]
fn threshold_is_inclusive_and_rate_below_it_keeps_closed() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    // 4 failures in 10 calls: 40 % < 50 %.
    for _ in 0..6 {
        ok(&b);
    }
    for _ in 0..4 {
        fail(&b);
    }
    assert_eq!(b.state(), State::Closed);
    assert!((b.snapshot().failure_rate - 0.4).abs() < 1e-9);
    // The 11th call evicts the oldest success: 5 of 10 = 50 % opens.
    fail(&b);
    assert_eq!(b.state(), State::Open);
}

#[test]
fn count_window_forgets_old_failures() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    for _ in 0..6 {
        ok(&b);
    }
    for _ in 0..4 {
        fail(&b);
    }
    assert_eq!(b.state(), State::Closed);
    for _ in 0..10 {
        ok(&b);
    }
    // The four failures have left the 10-call window.
    let snap = b.snapshot();
    assert_eq!(snap.window_calls, 10);
    assert_eq!(snap.failure_rate, 0.0);
    for _ in 0..4 {
        fail(&b);
    }
    assert_eq!(b.state(), State::Closed);
    fail(&b);
    assert_eq!(b.state(), State::Open);
}

#[test]
fn time_window_forgets_old_failures() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .window(Window::Time(secs(10)))
        .minimum_calls(3)
        .build()
        .unwrap();
    fail(&b);
    fail(&b);
    clock.advance(secs(11));
    assert_eq!(
        b.snapshot().window_calls,
        0,
        "calls older than the window are gone"
    );
    fail(&b);
    fail(&b);
    assert_eq!(
        b.state(),
        State::Closed,
        "two calls in the window < minimum of 3"
    );
    clock.advance(secs(5));
    fail(&b);
    assert_eq!(b.state(), State::Open);
}

#[test]
fn time_window_ages_out_one_bucket_at_a_time() {
    // 20 s window = 20 buckets of 1 s.
    let clock = ManualClock::new();
    let b = builder(&clock)
        .window(Window::Time(secs(20)))
        .minimum_calls(1)
        .build()
        .unwrap();
    clock.set(Duration::from_millis(500));
    ok(&b);
    clock.set(Duration::from_millis(19_999));
    assert_eq!(b.snapshot().window_calls, 1);
    clock.set(secs(20));
    assert_eq!(b.snapshot().window_calls, 0);
}

#[test]
fn slow_call_rate_opens_and_slow_means_strictly_longer() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    // Exactly the slow-call duration is not slow.
    for _ in 0..5 {
        timed(&b, &clock, secs(1), false);
    }
    assert_eq!(b.snapshot().slow_calls, 0);
    assert_eq!(b.state(), State::Closed);
    // Three successes slower than 1 s in the window of 8 calls... 3/8 < 50 %.
    for _ in 0..3 {
        timed(&b, &clock, Duration::from_millis(1001), false);
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot().slow_calls, 3);
    // Two more: 5 slow of 10 = 50 %.
    let mut events = b.subscribe();
    timed(&b, &clock, secs(2), false);
    timed(&b, &clock, secs(2), false);
    assert_eq!(b.state(), State::Open);
    let change = events.try_recv().unwrap();
    assert_eq!(change.reason, Reason::SlowCallRateExceeded);
    assert_eq!(b.snapshot().failures, 0, "slow successes are not failures");
}

#[test]
fn slow_failure_counts_as_both() {
    let clock = ManualClock::new();
    let b = builder(&clock).minimum_calls(1).build().unwrap();
    let mut events = b.subscribe();
    timed(&b, &clock, secs(3), true);
    let snap = b.snapshot();
    assert_eq!((snap.failures, snap.slow_calls), (1, 1));
    // Failure rate is checked first.
    assert_eq!(
        events.try_recv().unwrap().reason,
        Reason::FailureRateExceeded
    );
}

#[test]
fn rejection_while_open_carries_retry_after() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    trip(&b);
    let r = rejection(&b);
    assert_eq!(r.retry_after, secs(1));
    assert_eq!(r.state, State::Open);
    clock.advance(Duration::from_millis(300));
    assert_eq!(rejection(&b).retry_after, Duration::from_millis(700));
    let snap = b.snapshot();
    assert_eq!(snap.rejected, 2);
    assert_eq!(snap.retry_after_ms, Some(700));
    assert_eq!(snap.state, State::Open);
    // One nanosecond before the end of the wait it still refuses; at the end it half-opens.
    clock.advance(Duration::from_millis(700) - Duration::from_nanos(1));
    assert_eq!(rejection(&b).retry_after, Duration::from_nanos(1));
    assert_eq!(b.snapshot().retry_after_ms, Some(1), "rounded up");
    clock.advance(Duration::from_nanos(1));
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.snapshot().retry_after_ms, None);
}

#[test]
fn call_while_open_never_polls_the_future() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    trip(&b);
    let polled = Cell::new(false);
    let fut = async {
        polled.set(true);
        Ok::<u32, io::Error>(1)
    };
    match ready(b.call(fut)) {
        Err(CallError::Open { retry_after }) => assert_eq!(retry_after, secs(1)),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(!polled.get(), "the guarded future must not run while open");
}

#[test]
fn call_reports_inner_errors_and_values() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    assert_eq!(ready(b.call(async { Ok::<_, io::Error>(7) })).unwrap(), 7);
    let err = ready(b.call(async { Err::<(), _>(io::Error::other("boom")) })).unwrap_err();
    assert!(!err.is_open());
    assert_eq!(err.retry_after(), None);
    let source = std::error::Error::source(&err).expect("inner error is the source");
    assert_eq!(source.to_string(), "boom");
    assert_eq!(err.into_inner().unwrap().to_string(), "boom");
    let snap = b.snapshot();
    assert_eq!((snap.calls, snap.successes, snap.failures), (2, 1, 1));
}

#[derive(Debug)]
enum DbError {
    UniqueViolation,
    ConnectionLost,
}

#[test]
fn predicate_decides_which_errors_count() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    let is_backend_fault = |e: &DbError| matches!(e, DbError::ConnectionLost);
    for _ in 0..10 {
        let r = ready(b.call_with(is_backend_fault, async {
            Err::<(), _>(DbError::UniqueViolation)
        }));
        assert!(matches!(r, Err(CallError::Inner(DbError::UniqueViolation))));
    }
    assert_eq!(
        b.state(),
        State::Closed,
        "the caller's faults do not open the breaker"
    );
    let snap = b.snapshot();
    assert_eq!((snap.successes, snap.failures), (10, 0));
    for _ in 0..5 {
        let _ = ready(b.call_with(is_backend_fault, async {
            Err::<(), _>(DbError::ConnectionLost)
        }));
    }
    assert_eq!(
        b.state(),
        State::Open,
        "5 backend faults in 10 calls = 50 %"
    );
}

#[test]
fn dropping_a_call_midway_is_ignored() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    let fut = b.call(pending::<Result<(), io::Error>>());
    assert!(matches!(poll_once(fut), Poll::Pending)); // polled once, then dropped
    let snap = b.snapshot();
    assert_eq!(
        (snap.calls, snap.ignored, snap.successes, snap.failures),
        (1, 1, 0, 0)
    );
    assert_eq!(snap.window_calls, 0);
}

#[test]
fn wait_grows_exponentially_up_to_the_cap_and_resets_on_close() {
    let clock = ManualClock::new();
    let b = breaker(&clock); // open 1 s, x2, max 8 s, 3 trials
    trip(&b);
    let mut expected = Vec::new();
    let mut seen = Vec::new();
    for want in [1, 2, 4, 8, 8, 8] {
        expected.push(secs(want));
        let wait = rejection(&b).retry_after;
        seen.push(wait);
        clock.advance(wait - Duration::from_nanos(1));
        assert_eq!(b.state(), State::Open);
        clock.advance(Duration::from_nanos(1));
        assert_eq!(b.state(), State::HalfOpen);
        // Three failed trials re-open with a longer wait.
        for _ in 0..3 {
            fail(&b);
        }
        assert_eq!(b.state(), State::Open);
    }
    assert_eq!(seen, expected);
    // Three good trials close; the next open starts from the first wait again.
    clock.advance(secs(8));
    for _ in 0..3 {
        ok(&b);
    }
    assert_eq!(b.state(), State::Closed);
    trip(&b);
    assert_eq!(rejection(&b).retry_after, secs(1));
}

#[test]
fn half_open_lets_exactly_the_permitted_trials_through() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    trip(&b);
    clock.advance(secs(1));
    let permits: Vec<_> = (0..3)
        .map(|_| b.try_acquire().expect("trial slot"))
        .collect();
    let r = rejection(&b);
    assert_eq!(r.state, State::HalfOpen);
    assert_eq!(
        r.retry_after,
        secs(1),
        "min(open_duration, slow_call_duration)"
    );
    assert_eq!(b.state(), State::HalfOpen);
    for p in permits {
        p.success();
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn half_open_judges_trials_against_the_threshold() {
    let clock = ManualClock::new();
    // 1 failure of 3 trials = 33 % < 50 %: closes.
    let b = breaker(&clock);
    trip(&b);
    clock.advance(secs(1));
    fail(&b);
    ok(&b);
    assert_eq!(
        b.state(),
        State::HalfOpen,
        "judged only when all trials are in"
    );
    ok(&b);
    assert_eq!(b.state(), State::Closed);

    // 2 failures of 3 = 67 %: re-opens with the longer wait.
    let b = breaker(&clock);
    let mut events = b.subscribe();
    trip(&b);
    clock.advance(secs(1));
    ok(&b);
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), State::Open);
    assert_eq!(rejection(&b).retry_after, secs(2));
    let reasons: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|c| (c.from, c.to, c.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            (State::Closed, State::Open, Reason::FailureRateExceeded),
            (State::Open, State::HalfOpen, Reason::OpenDurationElapsed),
            (State::HalfOpen, State::Open, Reason::FailureRateExceeded),
        ]
    );

    // Slow trials re-open too: 2 slow of 3 >= 50 %.
    let b = breaker(&clock);
    trip(&b);
    clock.advance(secs(1));
    timed(&b, &clock, secs(2), false);
    timed(&b, &clock, secs(2), false);
    ok(&b);
    assert_eq!(b.state(), State::Open);
}

#[test]
fn dropped_trial_permit_gives_its_slot_back() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    trip(&b);
    clock.advance(secs(1));
    let a = b.try_acquire().unwrap();
    let c = b.try_acquire().unwrap();
    let d = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    drop(c);
    d.ignore();
    let e = b.try_acquire().expect("a released slot is free again");
    let f = b.try_acquire().expect("both released slots are free again");
    assert!(b.try_acquire().is_err());
    a.success();
    e.success();
    assert_eq!(b.state(), State::HalfOpen);
    f.success();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot().ignored, 2);
}

#[test]
fn outcome_of_a_call_from_an_earlier_state_is_not_judged() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    let early = b.try_acquire().unwrap();
    trip(&b);
    clock.advance(secs(1));
    assert_eq!(b.state(), State::HalfOpen);
    // A failure of a call let through while closed says nothing about the trial period.
    early.failure();
    assert_eq!(b.snapshot().window_calls, 0);
    for _ in 0..3 {
        ok(&b);
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(
        b.snapshot().failures,
        6,
        "it is still counted in the totals"
    );
}

#[test]
fn force_open_holds_until_reset() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    let mut events = b.subscribe();
    b.force_open();
    assert!(b.is_forced());
    let r = rejection(&b);
    assert_eq!(r.retry_after, secs(8), "max_open_duration as the hint");
    clock.advance(secs(3600));
    assert_eq!(b.state(), State::Open, "a forced open does not time out");
    let snap = b.snapshot();
    assert!(snap.forced);
    assert_eq!(snap.retry_after_ms, Some(8000));
    b.reset();
    assert!(!b.is_forced());
    assert_eq!(b.state(), State::Closed);
    ok(&b);
    let changes: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|c| (c.to, c.reason, c.open_for))
        .collect();
    assert_eq!(
        changes,
        [
            (State::Open, Reason::ForcedOpen, None),
            (State::Closed, Reason::Reset, None),
        ]
    );
}

#[test]
fn force_closed_never_trips_until_reset() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    trip(&b);
    b.force_closed();
    assert_eq!(b.state(), State::Closed);
    for _ in 0..50 {
        fail(&b);
    }
    assert_eq!(b.state(), State::Closed);
    let snap = b.snapshot();
    assert!(snap.forced);
    assert_eq!(snap.failure_rate, 1.0, "outcomes are still measured");
    b.reset();
    assert_eq!(b.snapshot().window_calls, 0, "reset empties the window");
    trip(&b);
    assert_eq!(
        rejection(&b).retry_after,
        secs(1),
        "reset forgets the backoff"
    );
    assert_eq!(
        b.snapshot().opened_count,
        2,
        "lifetime counters survive reset"
    );
}

#[test]
fn force_open_from_half_open_refuses_the_remaining_trials() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    trip(&b);
    clock.advance(secs(1));
    let trial = b.try_acquire().unwrap();
    b.force_open();
    assert!(b.try_acquire().is_err());
    trial.success(); // stale: must not close a forced-open breaker
    assert_eq!(b.state(), State::Open);
}

#[test]
fn events_describe_a_full_cycle() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    let mut events = b.subscribe();
    clock.set(secs(100));
    trip(&b);
    clock.advance(secs(1));
    assert_eq!(b.state(), State::HalfOpen);
    for _ in 0..3 {
        ok(&b);
    }
    let all: Vec<_> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|c| c.name == "test"));
    assert_eq!(
        (all[0].from, all[0].to, all[0].reason, all[0].open_for),
        (
            State::Closed,
            State::Open,
            Reason::FailureRateExceeded,
            Some(secs(1))
        )
    );
    assert_eq!(all[0].clock_time, secs(100));
    assert_eq!(
        (all[1].to, all[1].reason),
        (State::HalfOpen, Reason::OpenDurationElapsed)
    );
    assert_eq!(all[1].clock_time, secs(101));
    assert_eq!(
        (all[2].to, all[2].reason),
        (State::Closed, Reason::TrialCallsPassed)
    );
}

#[test]
fn clones_share_one_breaker() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    let c = b.clone();
    trip(&b);
    assert_eq!(c.state(), State::Open);
    assert!(c.try_acquire().is_err());
    assert_eq!(b.snapshot().rejected, 1);
}

#[test]
fn snapshot_serializes_for_the_health_endpoint() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    ok(&b);
    for _ in 0..4 {
        fail(&b);
    }
    let _ = b.try_acquire();
    let json = serde_json::to_value(b.snapshot()).unwrap();
    assert_eq!(json["name"], "test");
    assert_eq!(json["state"], "open");
    assert_eq!(json["calls"], 5);
    assert_eq!(json["successes"], 1);
    assert_eq!(json["failures"], 4);
    assert_eq!(json["rejected"], 1);
    assert_eq!(json["opened_count"], 1);
    assert_eq!(json["retry_after_ms"], 1000);
    assert_eq!(json["slow_calls"], 0);
    assert!(json["failure_rate"].is_number());
    clock.advance(secs(1));
    let json = serde_json::to_value(b.snapshot()).unwrap();
    assert_eq!(json["state"], "half_open");
    assert!(json["retry_after_ms"].is_null());
}

#[test]
fn state_and_reason_names() {
    for (state, name) in [
        (State::Closed, "closed"),
        (State::Open, "open"),
        (State::HalfOpen, "half_open"),
    ] {
        assert_eq!(state.to_string(), name);
        assert_eq!(serde_json::to_value(state).unwrap(), name);
        assert_eq!(serde_json::from_value::<State>(name.into()).unwrap(), state);
    }
    assert_eq!(
        Reason::FailureRateExceeded.to_string(),
        "failure_rate_exceeded"
    );
    assert_eq!(
        serde_json::to_value(Reason::OpenDurationElapsed).unwrap(),
        "open_duration_elapsed"
    );
}

#[test]
fn error_messages() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    trip(&b);
    let r = rejection(&b);
    assert_eq!(r.to_string(), "circuit breaker is open; retry after 1s");
    let e: CallError<io::Error> = r.into();
    assert!(e.is_open());
    assert_eq!(e.retry_after(), Some(secs(1)));
    assert!(std::error::Error::source(&e).is_none());
    assert!(e.to_string().contains("retry after 1s"));
    let mapped: CallError<String> = CallError::Inner(3_u8).map_inner(|n| n.to_string());
    assert_eq!(mapped.into_inner().as_deref(), Some("3"));
}

#[test]
fn debug_output_names_the_breaker_and_its_state() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    let text = format!("{b:?}");
    assert!(
        text.contains("\"test\"") && text.contains("Closed"),
        "{text}"
    );
    let permit = b.try_acquire().unwrap();
    assert!(format!("{permit:?}").contains("Permit"));
}

#[test]
fn public_types_are_thread_safe() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    fn assert_send<T: Send>(_: &T) {}
    assert_send_sync::<CircuitBreaker>();
    assert_send_sync::<unite_breaker::Permit>();
    assert_send_sync::<CallError<io::Error>>();
    assert_send_sync::<unite_breaker::StateChange>();
    let clock = ManualClock::new();
    let b = breaker(&clock);
    let fut = b.call(async { Ok::<(), io::Error>(()) });
    assert_send(&fut);
    fn is_future<F: Future>(_: F) {}
    is_future(fut);
}

#[test]
fn a_panicking_predicate_gives_the_trial_slot_back() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    trip(&b);
    clock.advance(secs(1));
    for _ in 0..3 {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ready(b.call_with(|_: &io::Error| panic!("predicate bug"), async {
                Err::<(), _>(io::Error::other("down"))
            }))
        }));
        assert!(outcome.is_err());
    }
    assert_eq!(b.snapshot().ignored, 3);
    // All three slots are free again: the trials can still run and close the breaker.
    for _ in 0..3 {
        ok(&b);
    }
    assert_eq!(b.state(), State::Closed);
}
