//! Pipeline tests: the policies composed, on a manual clock.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::breaker::{BreakerConfig, CircuitBreaker, Window};
use crate::bulkhead::BulkheadConfig;
use crate::chaos::{ChaosConfig, Environment};
use crate::clock::ManualClock;
use crate::error::{BoxError, ErrorKind};
use crate::event::Recorder;
use crate::fallback::{FallbackConfig, FallbackOn};
use crate::retry::{Backoff, Jitter, Retry, RetryConfig};
use crate::timeout::Elapsed;
use crate::{CircuitOpen, CircuitState, Context, Error, Outcome};

use super::{Pipeline, PipelineConfig, PipelineLayer};

const MS: Duration = Duration::from_millis(1);

fn ctx(clock: &ManualClock, recorder: &Arc<Recorder>) -> Context {
    Context::new("test")
        .with_clock(clock.shared())
        .with_observer(recorder.clone())
}

fn fixed_retry(attempts: u32, delay: Duration) -> RetryConfig {
    RetryConfig {
        max_attempts: attempts,
        backoff: Backoff::Fixed { delay },
        jitter: Jitter::None,
        ..RetryConfig::default()
    }
}

/// Runs `fut` to completion, moving the manual clock to each pending sleep whenever the task
/// has nothing else to do. Returns the output and how far the clock moved.
async fn drive<F>(clock: &ManualClock, fut: F) -> (F::Output, Duration)
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    let start = clock.elapsed();
    let handle = tokio::spawn(fut);
    let mut idle = 0;
    while !handle.is_finished() {
        tokio::task::yield_now().await;
        if clock.pending_sleeps() > 0 {
            // Let every runnable task register before moving time.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            clock.advance_to_next_sleep();
            idle = 0;
        } else {
            idle += 1;
            assert!(idle < 10_000, "the call is stuck without a pending sleep");
        }
    }
    (handle.await.unwrap(), clock.elapsed() - start)
}

/// An operation that fails `failures` times with "boom", then returns the attempt number.
fn flaky(
    failures: u32,
) -> (
    Arc<AtomicU32>,
    impl FnMut() -> std::future::Ready<Result<u32, &'static str>> + Send + 'static,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let op = move || {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        std::future::ready(if n <= failures { Err("boom") } else { Ok(n) })
    };
    (calls, op)
}

#[tokio::test]
async fn empty_pipeline_runs_the_call_once() {
    let pipeline = Pipeline::builder().build().unwrap();
    let (calls, op) = flaky(1);
    let err = pipeline.call(op).await.unwrap_err();
    assert_eq!(err.as_inner(), Some(&"boom"));
    assert_eq!(err.attempts(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn retries_transient_failures_on_the_schedule() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let pipeline = Pipeline::builder()
        .context(ctx(&clock, &recorder))
        .retry(fixed_retry(5, 100 * MS))
        .build()
        .unwrap();
    let (calls, op) = flaky(3);
    let (result, waited) = drive(&clock, async move { pipeline.call(op).await }).await;
    assert_eq!(result.unwrap(), 4);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(waited, 300 * MS, "three retries, 100 ms apart");
    assert_eq!(recorder.count("retry_scheduled"), 3);
}

#[tokio::test]
async fn final_error_reports_attempts() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let pipeline = Pipeline::builder()
        .context(ctx(&clock, &recorder))
        .retry(fixed_retry(3, 10 * MS))
        .build()
        .unwrap();
    let (_, op) = flaky(u32::MAX);
    let (result, _) = drive(&clock, async move { pipeline.call(op).await }).await;
    let err = result.unwrap_err();
    assert_eq!(err.attempts(), 3);
    assert_eq!(err.as_inner(), Some(&"boom"));
    assert_eq!(recorder.count("retry_gave_up"), 1);
}

#[tokio::test]
async fn ok_judged_a_failure_is_retried_and_returned_when_retries_stop() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let classify = |r: &Result<u16, ()>| match r {
        Ok(status) if *status < 500 => Outcome::Success,
        _ => Outcome::Transient,
    };
    let pipeline = Pipeline::builder()
        .context(ctx(&clock, &recorder))
        .retry(fixed_retry(3, 10 * MS))
        .classify(classify)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let (result, _) = drive(&clock, async move {
        pipeline
            .call(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                std::future::ready(Ok::<u16, ()>(503))
            })
            .await
    })
    .await;
    assert_eq!(result.unwrap(), 503, "the last response is returned");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn retry_after_is_never_undercut() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let classify = |r: &Result<u32, &str>| match r {
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::RetryAfter(Duration::from_secs(7)),
    };
    let pipeline = Pipeline::builder()
        .context(ctx(&clock, &recorder))
        .retry(fixed_retry(3, 10 * MS))
        .classify(classify)
        .build()
        .unwrap();
    let (_, op) = flaky(1);
    let (result, waited) = drive(&clock, async move { pipeline.call(op).await }).await;
    assert_eq!(result.unwrap(), 2);
    assert_eq!(waited, Duration::from_secs(7));
}

fn breaker_config() -> BreakerConfig {
    BreakerConfig {
        window: Window::Count(4),
        min_calls: 4,
        failure_rate: 0.5,
        open_for: Duration::from_secs(30),
        half_open_probes: 1,
        half_open_successes: 1,
        slow_call_duration: None,
        ..BreakerConfig::default()
    }
}

#[tokio::test]
async fn an_opening_circuit_makes_the_retry_wait_for_the_half_open_probe() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let context = ctx(&clock, &recorder);
    let breaker = CircuitBreaker::with_context(breaker_config(), context.clone()).unwrap();
    let pipeline = Pipeline::builder()
        .context(context)
        .retry(fixed_retry(10, 10 * MS))
        .circuit_breaker(breaker.clone())
        .build()
        .unwrap();
    // Four failures open the circuit; the fifth attempt is rejected with the remaining open
    // time, which the retry honours; the probe after 30 s succeeds and closes the circuit.
    let (calls, op) = flaky(4);
    let (result, waited) = drive(&clock, async move { pipeline.call(op).await }).await;
    assert_eq!(result.unwrap(), 5);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "the rejected attempt never ran"
    );
    assert_eq!(waited, 3 * 10 * MS + Duration::from_secs(30));
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(
        recorder.count("breaker_transition"),
        3,
        "{:#?}",
        recorder.lines()
    );
    assert_eq!(recorder.count("breaker_rejected"), 1);
}

#[tokio::test]
async fn forced_open_circuit_fails_fast_without_retrying() {
    let breaker = CircuitBreaker::new(breaker_config()).unwrap();
    breaker.force_open();
    let pipeline = Pipeline::builder()
        .retry(fixed_retry(5, MS))
        .circuit_breaker(breaker)
        .build()
        .unwrap();
    let (calls, op) = flaky(0);
    let err = pipeline.call(op).await.unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::CircuitOpen(CircuitOpen {
            state: CircuitState::ForcedOpen,
            remaining: None
        })
    ));
    assert_eq!(err.attempts(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn timeout_cuts_each_attempt_and_counts_as_a_breaker_failure() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let context = ctx(&clock, &recorder);
    let breaker = CircuitBreaker::with_context(breaker_config(), context.clone()).unwrap();
    let pipeline = Pipeline::builder()
        .context(context)
        .retry(fixed_retry(2, 10 * MS))
        .circuit_breaker(breaker.clone())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let (result, waited) = drive(&clock, async move {
        pipeline.call(std::future::pending::<Result<(), ()>>).await
    })
    .await;
    let err = result.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Timeout(Elapsed { after }) if *after == Duration::from_secs(2))
    );
    assert_eq!(err.attempts(), 2);
    assert_eq!(waited, Duration::from_secs(4) + 10 * MS);
    assert_eq!(breaker.status().failed_calls, 2);
}

#[tokio::test]
async fn deadline_stops_retries_that_would_sleep_past_it() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let pipeline = Pipeline::builder()
        .context(ctx(&clock, &recorder))
        .retry(fixed_retry(10, Duration::from_secs(4)))
        .deadline(Duration::from_secs(10))
        .build()
        .unwrap();
    let (calls, op) = flaky(u32::MAX);
    let (result, waited) = drive(&clock, async move { pipeline.call(op).await }).await;
    let err = result.unwrap_err();
    // Attempts at 0 s, 4 s and 8 s; a fourth would start at 12 s, past the deadline.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(err.attempts(), 3);
    assert_eq!(waited, Duration::from_secs(8));
    assert_eq!(recorder.count("deadline_exceeded"), 1);
}

#[tokio::test]
async fn deadline_cuts_a_hanging_attempt() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let pipeline = Pipeline::builder()
        .context(ctx(&clock, &recorder))
        .deadline(Duration::from_secs(3))
        .build()
        .unwrap();
    let (result, waited) = drive(&clock, async move {
        pipeline.call(std::future::pending::<Result<(), ()>>).await
    })
    .await;
    assert!(matches!(
        result.unwrap_err().kind(),
        ErrorKind::DeadlineExceeded(_)
    ));
    assert_eq!(waited, Duration::from_secs(3));
}

#[tokio::test]
async fn full_bulkhead_rejects_without_counting_against_the_breaker() {
    let breaker = CircuitBreaker::new(breaker_config()).unwrap();
    let pipeline = Pipeline::builder()
        .circuit_breaker(breaker.clone())
        .bulkhead(BulkheadConfig {
            max_concurrent: 1,
            max_queue: 0,
            max_wait: None,
        })
        .build()
        .unwrap();
    let slot = pipeline.bulkhead().unwrap().try_acquire().unwrap();
    let (calls, op) = flaky(0);
    let err = pipeline.call(op).await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::BulkheadFull(_)));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        breaker.status().calls,
        0,
        "a full bulkhead is not the dependency's failure"
    );
    drop(slot);
    let (_, op) = flaky(0);
    assert_eq!(pipeline.call(op).await.unwrap(), 1);
}

#[tokio::test]
async fn rate_limit_makes_calls_wait_for_their_token() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let pipeline = Pipeline::builder()
        .context(ctx(&clock, &recorder))
        .rate_limit(crate::rate_limit::RateLimitConfig {
            limit: 2,
            per: Duration::from_secs(1),
            burst: Some(1),
        })
        .build()
        .unwrap();
    let (result, waited) = drive(&clock, async move {
        let mut total = 0;
        for _ in 0..3 {
            total += pipeline
                .call(|| std::future::ready(Ok::<u32, ()>(1)))
                .await
                .unwrap();
        }
        total
    })
    .await;
    assert_eq!(result, 3);
    assert_eq!(waited, Duration::from_secs(1), "two waits of 500 ms");
}

#[tokio::test]
async fn chaos_errors_are_seen_by_retry_and_breaker() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let context = ctx(&clock, &recorder);
    let breaker = CircuitBreaker::with_context(breaker_config(), context.clone()).unwrap();
    let pipeline = Pipeline::builder()
        .context(context)
        .retry(fixed_retry(3, MS))
        .circuit_breaker(breaker.clone())
        .chaos(ChaosConfig {
            enabled: true,
            error_rate: 1.0,
            seed: Some(7),
            ..ChaosConfig::default()
        })
        .build()
        .unwrap();
    let (calls, op) = flaky(0);
    let (result, _) = drive(&clock, async move { pipeline.call(op).await }).await;
    assert!(matches!(result.unwrap_err().kind(), ErrorKind::Injected(_)));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(breaker.status().failed_calls, 3);
    assert_eq!(recorder.count("chaos_injected"), 3);
}

#[tokio::test]
async fn chaos_is_refused_in_production() {
    let err = Pipeline::builder()
        .environment(Environment::Production)
        .chaos(ChaosConfig {
            enabled: true,
            error_rate: 0.1,
            ..ChaosConfig::default()
        })
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "chaos.allow_in_production");
}

#[tokio::test]
async fn fallback_answers_only_the_configured_failures() {
    let breaker = CircuitBreaker::new(breaker_config()).unwrap();
    breaker.force_open();
    let pipeline = Pipeline::builder()
        .circuit_breaker(breaker.clone())
        .fallback(FallbackConfig {
            on: vec![FallbackOn::CircuitOpen],
        })
        .build()
        .unwrap();
    let (_, op) = flaky(u32::MAX);
    let value = pipeline
        .call_or_else(op, |_| async { Ok(99) })
        .await
        .unwrap();
    assert_eq!(value, 99, "an open circuit is answered by the fallback");

    breaker.reset();
    let (_, op) = flaky(u32::MAX);
    let err = pipeline
        .call_or_else(op, |_| async { Ok(99) })
        .await
        .unwrap_err();
    assert_eq!(
        err.as_inner(),
        Some(&"boom"),
        "an inner error is not configured"
    );
}

#[tokio::test]
async fn events_from_every_policy_reach_one_observer() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let config: PipelineConfig = toml::from_str(
        r#"
        timeout = "1s"
        [retry]
        max_attempts = 2
        jitter = "none"
        backoff = { kind = "fixed", delay = "10ms" }
        [breaker]
        window = { count = 2 }
        min_calls = 2
        slow_call_duration = "off"
        "#,
    )
    .unwrap();
    let pipeline =
        Pipeline::from_config(&config, ctx(&clock, &recorder), Environment::Test).unwrap();
    let (result, _) = drive(&clock, async move {
        pipeline.call(std::future::pending::<Result<(), ()>>).await
    })
    .await;
    assert!(result.is_err());
    for kind in [
        "timeout",
        "retry_scheduled",
        "breaker_transition",
        "retry_gave_up",
    ] {
        assert!(
            recorder.count(kind) >= 1,
            "no {kind} event in {:#?}",
            recorder.lines()
        );
    }
}

#[test]
fn invalid_config_names_the_field_with_its_stage() {
    let config: PipelineConfig = toml::from_str("[retry]\nmax_attempts = 0\n").unwrap();
    let err = config.validate().unwrap_err();
    assert_eq!(err.field(), "retry.max_attempts");
    let err = Pipeline::from_config(&config, Context::default(), Environment::Test).unwrap_err();
    assert_eq!(err.field(), "retry.max_attempts");

    let err = Pipeline::builder()
        .retry(Retry::fixed(MS).max_attempts(0))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "retry.max_attempts");

    assert!(
        toml::from_str::<PipelineConfig>("retries = 3").is_err(),
        "unknown keys are refused"
    );
}

#[tokio::test]
async fn tower_layer_runs_requests_through_the_pipeline() {
    use tower::{Layer, Service, ServiceExt};

    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let breaker = CircuitBreaker::new(breaker_config()).unwrap();
    let pipeline = Pipeline::builder()
        .context(ctx(&clock, &recorder))
        .retry(fixed_retry(3, 5 * MS))
        .circuit_breaker(breaker.clone())
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let inner = tower::service_fn(move |req: u32| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n < 3 {
                Err::<u32, BoxError>("unavailable".into())
            } else {
                Ok(req * 2)
            }
        }
    });
    let mut service = PipelineLayer::new(pipeline).layer(inner);
    let fut = service.ready().await.unwrap().call(21);
    let (result, waited) = drive(&clock, fut).await;
    assert_eq!(result.unwrap(), 42);
    assert_eq!(waited, 10 * MS);

    breaker.force_open();
    let err = service.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.downcast_ref::<CircuitOpen>().is_some(), "{err}");
}

#[test]
fn error_without_retry_counts_one_attempt() {
    let err: Error<&str> = Error::inner("x");
    assert_eq!(err.attempts(), 1);
}

#[test]
fn manual_clock_is_the_pipeline_clock() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let pipeline = Pipeline::builder()
        .context(ctx(&clock, &recorder))
        .build()
        .unwrap();
    let before = pipeline.context().clock().now();
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        pipeline.context().clock().now() - before,
        Duration::from_secs(1)
    );
}
