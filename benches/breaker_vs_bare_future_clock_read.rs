//! Criterion benchmarks for the breaker.
//!
//! - `rejection/*`: refusing a call while open (goal: well under 1 µs).
//! - `closed/*`: a call through a closed breaker against its peer, awaiting the bare future.
//!
//! Futures here are ready at once, so each is driven by a single poll with a no-op waker:
//! the figures hold the breaker's cost and nothing of an executor's.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use unite_breaker::{CallError, CircuitBreaker, State, Window};

/// Polls a future that must be ready at once.
fn poll_ready<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmark future was not ready"),
    }
}

fn breaker(window: Window) -> CircuitBreaker {
    CircuitBreaker::builder()
        .name("bench")
        .window(window)
        .minimum_calls(10)
        .open_duration(Duration::from_secs(3600))
        .max_open_duration(Duration::from_secs(3600))
        .build()
        .expect("valid bench config")
}

/// A breaker opened by real failures (not forced), with an hour to wait.
fn open_breaker() -> CircuitBreaker {
    let b = breaker(Window::Count(10));
    for _ in 0..10 {
        let _ = poll_ready(b.call(async { Err::<(), _>("down") }));
    }
    assert_eq!(b.state(), State::Open);
    b
}

/// Runs `op` `iters` times on each of two threads started together; the slower thread's time.
fn two_threads<F>(iters: u64, op: F) -> Duration
where
    F: Fn() + Clone + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let op = op.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                for _ in 0..iters {
                    op();
                }
                start.elapsed()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("bench thread"))
        .max()
        .unwrap_or_default()
}

fn rejection(c: &mut Criterion) {
    let mut g = c.benchmark_group("rejection");
    let b = open_breaker();
    g.bench_function("try_acquire_open", |bench| {
        bench.iter(|| black_box(b.try_acquire()).is_err());
    });
    // The peer of a refusal: one read of the monotonic clock, which a refusal needs anyway.
    g.bench_function("clock_read_peer", |bench| {
        bench.iter(|| black_box(Instant::now()));
    });
    g.bench_function("call_open", |bench| {
        bench.iter(|| {
            let r = poll_ready(b.call(async { Ok::<u64, Infallible>(black_box(1)) }));
            matches!(black_box(r), Err(CallError::Open { .. }))
        });
    });
    // Two threads refusing at once on the same breaker (this machine has 2 cores), beside two
    // threads only reading the clock: the difference is what sharing the breaker costs.
    g.bench_function("try_acquire_open_2_threads", |bench| {
        bench.iter_custom(|iters| {
            let b = b.clone();
            two_threads(iters, move || {
                let _ = black_box(b.try_acquire());
            })
        });
    });
    g.bench_function("clock_read_peer_2_threads", |bench| {
        bench.iter_custom(|iters| {
            two_threads(iters, || {
                black_box(Instant::now());
            })
        });
    });
    g.finish();
}

fn closed(c: &mut Criterion) {
    let mut g = c.benchmark_group("closed");
    g.bench_function("bare_ready_future", |bench| {
        bench.iter(|| poll_ready(async { Ok::<u64, Infallible>(black_box(1)) }));
    });
    let count = breaker(Window::Count(100));
    g.bench_function("call_ready_future_count_window", |bench| {
        bench.iter(|| poll_ready(count.call(async { Ok::<u64, Infallible>(black_box(1)) })));
    });
    let time = breaker(Window::Time(Duration::from_secs(10)));
    g.bench_function("call_ready_future_time_window", |bench| {
        bench.iter(|| poll_ready(time.call(async { Ok::<u64, Infallible>(black_box(1)) })));
    });
    g.bench_function("try_acquire_success", |bench| {
        bench.iter(|| match count.try_acquire() {
            Ok(p) => p.success(),
            Err(e) => panic!("closed breaker refused: {e}"),
        });
    });
    g.finish();
}

criterion_group!(benches, rejection, closed);
criterion_main!(benches);
