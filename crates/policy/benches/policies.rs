//! Per-call overhead of every policy on its happy path, side by side with peer crates.
//!
//! Run with `cargo bench -p ferrule-policy --bench policies`. Every async call is polled once
//! with a no-op waker ([`ready_now`]), so the figures are the policies' own cost with no
//! executor in the way; a future that is not ready on its first poll is a bug in the
//! benchmark and panics. `AllocProfiler` is the global allocator, so allocations are counted for
//! every row; divan prints the alloc lines only under subjects that allocate, so a row without
//! them made none. Results and verdicts live in `docs/BENCHMARKS.md`.

#![allow(missing_docs)]

use std::convert::Infallible;
use std::future::{Future, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use divan::{AllocProfiler, Bencher, black_box};
use ferrule_policy::Outcome;
use ferrule_policy::Pipeline;
use ferrule_policy::breaker::{BreakerConfig, CircuitBreaker, Window};
use ferrule_policy::bulkhead::{Bulkhead, BulkheadConfig};
use ferrule_policy::rate_limit::{RateLimitConfig, RateLimiter};
use ferrule_policy::retry::{Retry, RetryConfig};
use ferrule_policy::timeout::{Timeout, TimeoutConfig};
use tower_service::Service;

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

/// Iterations per sample, set on every group. Divan's automatic choice stays at 1 or 2 for a
/// subject with a rare slow call (a page fault, a preemption on this shared machine), and a
/// 1-call sample is at the mercy of the timer's 20 ns precision; 1000 calls per sample make
/// every row comparable. `--sample-size` on the command line still overrides it.
const SAMPLE_SIZE: u32 = 1000;

/// Longer samples for the contended runs: the two threads only contend while both are on a
/// core, and on a shared machine a short sample often runs them one after the other.
const CONTENDED_SAMPLE_SIZE: u32 = 50_000;

fn main() {
    divan::main();
}

/// Polls `fut` once with a no-op waker and returns its output; panics if it is pending.
#[inline]
fn ready_now<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the benchmarked future was not ready on its first poll"),
    }
}

/// Calls run before measuring, so one-off costs (lazy statics, the TSC calibration, first-use
/// allocations) neither count nor mislead divan's choice of sample size.
const WARM_UP: usize = 10_000;

/// Warms `op` up, then measures it on this thread.
fn bench<O>(bencher: Bencher<'_, '_>, mut op: impl FnMut() -> O) {
    for _ in 0..WARM_UP {
        black_box(op());
    }
    bencher.bench_local(op);
}

/// Warms `op` up, then measures it on every thread divan runs the benchmark on.
fn bench_shared<O>(bencher: Bencher<'_, '_>, op: impl Fn() -> O + Sync) {
    for _ in 0..WARM_UP {
        black_box(op());
    }
    bencher.bench(op);
}

/// Drives one request through a `tower` service: `poll_ready`, `call`, one poll of the future.
#[inline]
fn serve<S: Service<u64>>(service: &mut S, request: u64) -> S::Response {
    let mut cx = Context::from_waker(Waker::noop());
    match service.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("the benchmarked service was not ready"),
    }
    match ready_now(service.call(request)) {
        Ok(response) => response,
        Err(_) => panic!("the benchmarked service failed"),
    }
}

/// The innermost service of every `tower` benchmark: answers at once.
fn echo() -> impl Service<u64, Response = u64, Error = Infallible, Future: Send> + Clone + Send {
    tower::service_fn(|request: u64| ready(Ok::<u64, Infallible>(request)))
}

/// A current-thread runtime with the time driver, for timers created by timeouts.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
}

/// A count-window breaker with slow-call tracking off (no clock read per call).
fn breaker_slow_off() -> CircuitBreaker {
    CircuitBreaker::new(BreakerConfig {
        window: Window::Count(100),
        slow_call_duration: None,
        ..BreakerConfig::default()
    })
    .expect("valid breaker config")
}

/// The default breaker: a 100-call count window with slow-call tracking at 10 s.
fn breaker_default() -> CircuitBreaker {
    CircuitBreaker::new(BreakerConfig::default()).expect("valid breaker config")
}

/// A breaker opened the normal way (one failure over a one-call window), open for an hour.
fn breaker_opened() -> CircuitBreaker {
    let breaker = CircuitBreaker::new(BreakerConfig {
        window: Window::Count(1),
        min_calls: 1,
        open_for: Duration::from_secs(3600),
        ..BreakerConfig::default()
    })
    .expect("valid breaker config");
    breaker
        .try_acquire()
        .expect("closed")
        .record(Outcome::Transient);
    assert!(breaker.try_acquire().is_err(), "the breaker should be open");
    breaker
}

/// One billion calls per second with a burst as large: never refuses at benchmark speed.
const NEVER_REFUSE_PER_SECOND: u32 = 1_000_000_000;

/// A rate limiter that admits every call of the benchmark.
fn limiter_never_refusing() -> RateLimiter {
    RateLimiter::new(RateLimitConfig::new(
        NEVER_REFUSE_PER_SECOND,
        Duration::from_secs(1),
    ))
    .expect("valid rate limit config")
}

/// The default retry: 3 attempts, exponential backoff from 100 ms with full jitter.
fn retry_default() -> Retry {
    Retry::new(RetryConfig::default()).expect("valid retry config")
}

/// A timeout no benchmarked call comes near.
fn timeout_15s() -> Timeout {
    Timeout::new(TimeoutConfig::new(Duration::from_secs(15))).expect("valid timeout config")
}

/// The default bulkhead: 64 concurrent calls, no queue.
fn bulkhead_default() -> Bulkhead {
    Bulkhead::new(BulkheadConfig::default()).expect("valid bulkhead config")
}

/// Circuit breaker, happy path: admit a call and record its success.
#[divan::bench_group(sample_size = SAMPLE_SIZE)]
mod breaker {
    use super::*;

    #[divan::bench]
    fn ferrule_slow_call_off(bencher: Bencher<'_, '_>) {
        let breaker = breaker_slow_off();
        bench(bencher, || {
            black_box(&breaker)
                .try_acquire()
                .expect("closed")
                .record(black_box(Outcome::Success));
        });
    }

    #[divan::bench]
    fn ferrule_default_config(bencher: Bencher<'_, '_>) {
        let breaker = breaker_default();
        bench(bencher, || {
            black_box(&breaker)
                .try_acquire()
                .expect("closed")
                .record(black_box(Outcome::Success));
        });
    }

    #[divan::bench]
    fn recloser(bencher: Bencher<'_, '_>) {
        let recloser = recloser::Recloser::default();
        bench(bencher, || {
            black_box(&recloser)
                .call(|| Ok::<u64, ()>(black_box(1)))
                .expect("closed")
        });
    }

    #[divan::bench]
    fn failsafe(bencher: Bencher<'_, '_>) {
        use failsafe::CircuitBreaker as _;
        let breaker = failsafe::Config::new().build();
        bench(bencher, || {
            black_box(&breaker)
                .call(|| Ok::<u64, ()>(black_box(1)))
                .expect("closed")
        });
    }
}

/// Retry, happy path: one attempt on a future that is ready with `Ok`.
#[divan::bench_group(sample_size = SAMPLE_SIZE)]
mod retry {
    use super::*;

    #[divan::bench]
    fn ferrule(bencher: Bencher<'_, '_>) {
        let retry = retry_default();
        bench(bencher, || {
            ready_now(black_box(&retry).call(|| ready(Ok::<u64, Infallible>(black_box(1)))))
                .expect("ok")
        });
    }

    #[divan::bench]
    fn backon(bencher: Bencher<'_, '_>) {
        use backon::{ExponentialBuilder, Retryable as _};
        let builder = ExponentialBuilder::default().with_max_times(2);
        bench(bencher, || {
            ready_now((|| ready(Ok::<u64, Infallible>(black_box(1)))).retry(*black_box(&builder)))
                .expect("ok")
        });
    }
}

/// Timeout, happy path: wrap a ready future (the timer is created, never registered).
#[divan::bench_group(sample_size = SAMPLE_SIZE)]
mod timeout {
    use super::*;

    #[divan::bench]
    fn ferrule(bencher: Bencher<'_, '_>) {
        let runtime = runtime();
        let _guard = runtime.enter();
        let timeout = timeout_15s();
        bench(bencher, || {
            ready_now(black_box(&timeout).wrap(ready(black_box(1_u64)))).expect("in time")
        });
    }

    #[divan::bench]
    fn tokio_bare(bencher: Bencher<'_, '_>) {
        let runtime = runtime();
        let _guard = runtime.enter();
        let limit = Duration::from_secs(15);
        bench(bencher, || {
            ready_now(tokio::time::timeout(
                black_box(limit),
                ready(black_box(1_u64)),
            ))
            .expect("in time")
        });
    }
}

/// Rate limiter, happy path: a check against a limit that never refuses.
#[divan::bench_group(sample_size = SAMPLE_SIZE)]
mod rate_limit {
    use super::*;

    #[divan::bench]
    fn ferrule(bencher: Bencher<'_, '_>) {
        let limiter = limiter_never_refusing();
        bench(bencher, || black_box(&limiter).check().expect("admitted"));
    }

    #[divan::bench]
    fn governor(bencher: Bencher<'_, '_>) {
        let quota = governor::Quota::per_second(
            std::num::NonZeroU32::new(NEVER_REFUSE_PER_SECOND).expect("non-zero"),
        );
        let limiter = governor::RateLimiter::direct(quota);
        bench(bencher, || black_box(&limiter).check().expect("admitted"));
    }
}

/// Bulkhead, happy path: take a free slot and give it back.
#[divan::bench_group(sample_size = SAMPLE_SIZE)]
mod bulkhead {
    use super::*;

    #[divan::bench]
    fn ferrule(bencher: Bencher<'_, '_>) {
        let bulkhead = bulkhead_default();
        bench(bencher, || {
            drop(black_box(&bulkhead).try_acquire().expect("free slot"))
        });
    }

    #[divan::bench]
    fn tokio_semaphore(bencher: Bencher<'_, '_>) {
        let semaphore = tokio::sync::Semaphore::new(64);
        bench(bencher, || {
            drop(black_box(&semaphore).try_acquire().expect("free slot"))
        });
    }
}

/// The 5-policy pipeline (retry → breaker → rate limit → bulkhead → timeout) on a ready `Ok`.
#[divan::bench_group(sample_size = SAMPLE_SIZE)]
mod pipeline {
    use super::*;

    fn five_policies(breaker: CircuitBreaker) -> Pipeline {
        Pipeline::builder()
            .retry(retry_default())
            .circuit_breaker(breaker)
            .rate_limit(limiter_never_refusing())
            .bulkhead(bulkhead_default())
            .timeout(timeout_15s())
            .build()
            .expect("valid pipeline")
    }

    fn bench_pipeline(bencher: Bencher<'_, '_>, pipeline: &Pipeline) {
        let runtime = runtime();
        let _guard = runtime.enter();
        bench(bencher, || {
            ready_now(black_box(pipeline).call(|| ready(Ok::<u64, Infallible>(black_box(1)))))
                .expect("ok")
        });
    }

    #[divan::bench]
    fn ferrule_five_policies(bencher: Bencher<'_, '_>) {
        bench_pipeline(bencher, &five_policies(breaker_default()));
    }

    #[divan::bench]
    fn ferrule_five_policies_slow_call_off(bencher: Bencher<'_, '_>) {
        bench_pipeline(bencher, &five_policies(breaker_slow_off()));
    }
}

/// The same policies as `tower` layers around a service that answers at once.
#[divan::bench_group(sample_size = SAMPLE_SIZE)]
mod tower_layers {
    use super::*;
    use ::tower_layer::Layer as _;

    mod breaker {
        use super::*;

        #[divan::bench]
        fn ferrule_slow_call_off(bencher: Bencher<'_, '_>) {
            let layer = ferrule_policy::breaker::CircuitBreakerLayer::new(breaker_slow_off());
            let mut service = layer.layer(echo());
            bench(bencher, || serve(&mut service, black_box(1)));
        }

        #[divan::bench]
        fn ferrule_default_config(bencher: Bencher<'_, '_>) {
            let layer = ferrule_policy::breaker::CircuitBreakerLayer::new(breaker_default());
            let mut service = layer.layer(echo());
            bench(bencher, || serve(&mut service, black_box(1)));
        }

        #[divan::bench]
        fn tower_resilience(bencher: Bencher<'_, '_>) {
            let layer = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
                .failure_rate_threshold(0.5)
                .sliding_window_size(100)
                .build()
                .expect("valid breaker config");
            let mut service = layer.layer(echo());
            bench(bencher, || serve(&mut service, black_box(1)));
        }
    }

    mod retry {
        use super::*;

        #[divan::bench]
        fn ferrule(bencher: Bencher<'_, '_>) {
            let layer = ferrule_policy::retry::RetryLayer::new(retry_default());
            let mut service = layer.layer(echo());
            bench(bencher, || serve(&mut service, black_box(1)));
        }

        #[divan::bench]
        fn tower_resilience(bencher: Bencher<'_, '_>) {
            let layer = tower_resilience::retry::RetryLayer::<u64, u64, Infallible>::builder()
                .max_attempts(3)
                .exponential_backoff(Duration::from_millis(100))
                .build();
            let mut service = layer.layer(echo());
            bench(bencher, || serve(&mut service, black_box(1)));
        }
    }

    mod timeout {
        use super::*;

        #[divan::bench]
        fn ferrule(bencher: Bencher<'_, '_>) {
            let runtime = runtime();
            let _guard = runtime.enter();
            let layer = ferrule_policy::timeout::TimeoutLayer::new(timeout_15s());
            let mut service = layer.layer(echo());
            bench(bencher, || serve(&mut service, black_box(1)));
        }

        #[divan::bench]
        fn tower_resilience(bencher: Bencher<'_, '_>) {
            let runtime = runtime();
            let _guard = runtime.enter();
            let layer = tower_resilience::timelimiter::TimeLimiterLayer::builder()
                .timeout_duration(Duration::from_secs(15))
                .build();
            let mut service = layer.layer(echo());
            bench(bencher, || serve(&mut service, black_box(1)));
        }
    }

    mod rate_limit {
        use super::*;

        #[divan::bench]
        fn ferrule(bencher: Bencher<'_, '_>) {
            let layer = ferrule_policy::rate_limit::RateLimitLayer::new(limiter_never_refusing());
            let mut service = layer.layer(echo());
            bench(bencher, || serve(&mut service, black_box(1)));
        }

        #[divan::bench]
        fn tower_resilience(bencher: Bencher<'_, '_>) {
            let runtime = runtime();
            let _guard = runtime.enter();
            let layer = tower_resilience::ratelimiter::RateLimiterLayer::builder()
                .limit_for_period(NEVER_REFUSE_PER_SECOND as usize)
                .refresh_period(Duration::from_secs(1))
                .build()
                .expect("valid rate limiter config");
            let mut service = layer.layer(echo());
            bench(bencher, || serve(&mut service, black_box(1)));
        }
    }

    mod bulkhead {
        use super::*;

        #[divan::bench]
        fn ferrule(bencher: Bencher<'_, '_>) {
            let layer = ferrule_policy::bulkhead::BulkheadLayer::new(bulkhead_default());
            let mut service = layer.layer(echo());
            bench(bencher, || serve(&mut service, black_box(1)));
        }

        #[divan::bench]
        fn tower_resilience(bencher: Bencher<'_, '_>) {
            let runtime = runtime();
            let _guard = runtime.enter();
            let layer = tower_resilience::bulkhead::BulkheadLayer::builder()
                .max_concurrent_calls(64)
                .build()
                .expect("valid bulkhead config");
            let mut service = layer.layer(echo());
            bench(bencher, || serve(&mut service, black_box(1)));
        }
    }
}

/// Rejection by an open breaker.
#[divan::bench_group(sample_size = SAMPLE_SIZE)]
mod open_breaker {
    use super::*;

    #[divan::bench]
    fn ferrule_opened(bencher: Bencher<'_, '_>) {
        let breaker = breaker_opened();
        bench(bencher, || {
            black_box(&breaker).try_acquire().expect_err("open")
        });
    }

    #[divan::bench]
    fn ferrule_forced_open(bencher: Bencher<'_, '_>) {
        let breaker = breaker_slow_off();
        breaker.force_open();
        bench(bencher, || {
            black_box(&breaker).try_acquire().expect_err("forced open")
        });
    }

    #[divan::bench]
    fn recloser(bencher: Bencher<'_, '_>) {
        let recloser = recloser::Recloser::custom()
            .closed_len(1)
            .open_wait(Duration::from_secs(3600))
            .build();
        for _ in 0..2 {
            let _ = recloser.call(|| Err::<u64, ()>(()));
        }
        bench(bencher, || {
            match black_box(&recloser).call(|| Ok::<u64, ()>(black_box(1))) {
                Err(recloser::Error::Rejected) => {}
                _ => panic!("the recloser should be open"),
            }
        });
    }

    #[divan::bench]
    fn failsafe(bencher: Bencher<'_, '_>) {
        use failsafe::CircuitBreaker as _;
        let policy = failsafe::failure_policy::consecutive_failures(
            1,
            failsafe::backoff::constant(Duration::from_secs(3600)),
        );
        let breaker = failsafe::Config::new().failure_policy(policy).build();
        let _ = breaker.call(|| Err::<u64, ()>(()));
        bench(bencher, || {
            match black_box(&breaker).call(|| Ok::<u64, ()>(black_box(1))) {
                Err(failsafe::Error::Rejected) => {}
                _ => panic!("the failsafe breaker should be open"),
            }
        });
    }
}

/// One breaker shared by 1 and 2 threads, each admitting calls and recording successes.
#[divan::bench_group(sample_size = CONTENDED_SAMPLE_SIZE)]
mod breaker_contention {
    use super::*;

    #[divan::bench(threads = [1, 2])]
    fn ferrule_slow_call_off(bencher: Bencher<'_, '_>) {
        let breaker = breaker_slow_off();
        bench_shared(bencher, || {
            black_box(&breaker)
                .try_acquire()
                .expect("closed")
                .record(black_box(Outcome::Success));
        });
    }

    #[divan::bench(threads = [1, 2])]
    fn recloser(bencher: Bencher<'_, '_>) {
        let recloser = recloser::Recloser::default();
        bench_shared(bencher, || {
            black_box(&recloser)
                .call(|| Ok::<u64, ()>(black_box(1)))
                .expect("closed")
        });
    }
}
