use std::sync::Arc;
use std::time::Duration;

use unite_pool::unite_breaker::{CircuitBreaker, ManualClock, Window};
use unite_pool::{Pool, PoolBuilder};

/// Short timeouts so failure tests are quick, with room for a loaded CI machine (a healthy
/// connect through the proxy takes a few milliseconds).
pub(crate) const CONNECT: Duration = Duration::from_millis(1000);
pub(crate) const CHECKOUT: Duration = Duration::from_millis(1000);
pub(crate) const OPEN: Duration = Duration::from_millis(200);

/// A builder for `url` with short timeouts.
pub(crate) fn builder(url: &str) -> PoolBuilder {
    Pool::builder()
        .url(url)
        .max_size(2)
        .connect_timeout(CONNECT)
        .checkout_timeout(CHECKOUT)
        .query_timeout(Duration::from_secs(2))
}

/// A breaker on a manual clock that opens after `failures` failed calls out of as many, and
/// closes after one good trial call.
pub(crate) fn breaker(clock: &ManualClock, failures: u32) -> CircuitBreaker {
    CircuitBreaker::builder()
        .name("postgres-test")
        .window(Window::Count(failures))
        .minimum_calls(failures)
        .failure_rate_threshold(1.0)
        .open_duration(OPEN)
        .max_open_duration(OPEN)
        .half_open_calls(1)
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("valid breaker")
}
