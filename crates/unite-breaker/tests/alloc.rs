//! Refusing a call allocates nothing; neither does a steady-state call through a closed
//! breaker. (This test binary counts allocations with a global allocator wrapper.)

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use support::{fail, ready};
use unite_breaker::{CallError, CircuitBreaker, ManualClock, State, Window};

fn breaker(clock: &ManualClock) -> CircuitBreaker {
    CircuitBreaker::builder()
        .window(Window::Count(10))
        .minimum_calls(5)
        .open_duration(Duration::from_secs(60))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

#[test]
fn rejection_allocates_nothing() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    for _ in 0..5 {
        fail(&b);
    }
    assert_eq!(b.state(), State::Open);
    let info = allocation_counter::measure(|| {
        for _ in 0..1_000 {
            assert!(b.try_acquire().is_err());
            let r = ready(b.call(async { Ok::<u32, Infallible>(1) }));
            assert!(matches!(r, Err(CallError::Open { .. })));
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
    assert_eq!(b.snapshot().rejected, 2_000);
}

#[test]
fn half_open_rejection_allocates_nothing() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    for _ in 0..5 {
        fail(&b);
    }
    clock.advance(Duration::from_secs(60));
    let trials: Vec<_> = (0..b.config().half_open_calls)
        .map(|_| b.try_acquire().unwrap())
        .collect();
    let info = allocation_counter::measure(|| {
        for _ in 0..1_000 {
            assert!(b.try_acquire().is_err());
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
    drop(trials);
}

#[test]
fn closed_calls_allocate_nothing_in_steady_state() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    let info = allocation_counter::measure(|| {
        for i in 0..1_000_u32 {
            let r = ready(b.call(async move { Ok::<u32, Infallible>(i) }));
            assert_eq!(r.unwrap(), i);
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
}

#[test]
fn the_counter_does_see_allocations() {
    let info = allocation_counter::measure(|| {
        std::hint::black_box(Box::new(1_u64));
    });
    assert!(
        info.count_total >= 1,
        "the measurement above is not vacuous"
    );
}
