//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use unite_breaker::{Builder, CircuitBreaker, ManualClock, Window};

/// A builder on a manual clock: count window of 10, 5 calls minimum, threshold 50 %,
/// slow after 1 s, open 1 s growing x2 up to 8 s, 3 trial calls.
pub(crate) fn builder(clock: &ManualClock) -> Builder {
    CircuitBreaker::builder()
        .name("test")
        .failure_rate_threshold(0.5)
        .slow_call_rate_threshold(0.5)
        .slow_call_duration(Duration::from_secs(1))
        .window(Window::Count(10))
        .minimum_calls(5)
        .open_duration(Duration::from_secs(1))
        .max_open_duration(Duration::from_secs(8))
        .backoff_multiplier(2.0)
        .half_open_calls(3)
        .clock(Arc::new(clock.clone()))
}

pub(crate) fn breaker(clock: &ManualClock) -> CircuitBreaker {
    builder(clock).build().expect("valid test config")
}

/// One successful call through the permit API. Panics if refused.
pub(crate) fn ok(b: &CircuitBreaker) {
    b.try_acquire().expect("call let through").success();
}

/// One failed call through the permit API. Panics if refused.
pub(crate) fn fail(b: &CircuitBreaker) {
    b.try_acquire().expect("call let through").failure();
}

/// One call that takes `took` on the manual clock, then reports `failed`.
pub(crate) fn timed(b: &CircuitBreaker, clock: &ManualClock, took: Duration, failed: bool) {
    let permit = b.try_acquire().expect("call let through");
    clock.advance(took);
    permit.record(failed);
}

/// Polls a future once with a no-op waker.
pub(crate) fn poll_once<F: Future>(fut: F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut fut = pin!(fut);
    fut.as_mut().poll(&mut cx)
}

/// Drives a future that must be ready at once.
pub(crate) fn ready<F: Future>(fut: F) -> F::Output {
    match poll_once(fut) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("future was not ready"),
    }
}
