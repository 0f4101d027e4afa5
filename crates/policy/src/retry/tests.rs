//! Tests of the retry policy: backoff and jitter, limits, `Retry-After`, budget, hooks, events,
//! the call variants and the tower service, all on a manual clock.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;
use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;
use crate::breaker::{CircuitOpen, CircuitState};
use crate::classify::HttpClassifier;
use crate::clock::{Clock, Sleep};
use crate::event::Recorder;
use crate::timeout::Elapsed;
use crate::{Context, Error, ErrorKind, ManualClock, Outcome};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ctx(clock: &ManualClock) -> Context {
    Context::new("test").with_clock(clock.shared())
}

fn recorded(clock: &ManualClock) -> (Context, Arc<Recorder>) {
    let recorder = Recorder::new();
    (ctx(clock).with_observer(recorder.clone()), recorder)
}

/// Runs `handle` to completion, advancing `clock` to each sleep it waits on; returns its
/// output and the sleeps in order.
async fn drive<T>(clock: &ManualClock, handle: tokio::task::JoinHandle<T>) -> (T, Vec<Duration>) {
    let mut sleeps = Vec::new();
    loop {
        if handle.is_finished() {
            return (handle.await.expect("task panicked"), sleeps);
        }
        if let Some(step) = clock.advance_to_next_sleep() {
            sleeps.push(step);
        }
        tokio::task::yield_now().await;
    }
}

/// Awaits a call that is expected to finish without sleeping on a manual clock: a policy that
/// wrongly sleeps fails the test (after a few real seconds) instead of hanging it.
async fn without_sleeping<F: Future>(call: F) -> F::Output {
    tokio::time::timeout(secs(5), call)
        .await
        .expect("the call slept on the manual clock")
}

/// An operation that fails `failures` times with `"boom"`, then returns the attempt number.
fn flaky(
    failures: u32,
    calls: &Arc<AtomicU32>,
) -> impl FnMut() -> std::future::Ready<Result<u32, &'static str>> + Send + 'static {
    let calls = calls.clone();
    move || {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        std::future::ready(if n <= failures { Err("boom") } else { Ok(n) })
    }
}

fn no_jitter(backoff: Backoff) -> RetryBuilder {
    Retry::builder().backoff(backoff).jitter(Jitter::None)
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[test]
fn defaults() {
    let config = RetryConfig::default();
    assert_eq!(config.max_attempts, 3);
    assert_eq!(config.max_elapsed, None);
    assert_eq!(config.jitter, Jitter::Full);
    assert_eq!(config.max_retry_after, secs(300));
    assert_eq!(config.budget, None);
    assert_eq!(
        config.backoff,
        Backoff::Exponential {
            base: ms(100),
            multiplier: 2.0,
            cap: secs(30)
        }
    );
    config.validate().unwrap();
    BudgetConfig::default().validate().unwrap();
}

#[test]
fn every_backoff_kind_parses_from_toml() {
    let parse = |s: &str| toml::from_str::<RetryConfig>(s).unwrap().backoff;
    assert_eq!(
        parse(r#"backoff = { kind = "fixed", delay = "1s" }"#),
        Backoff::Fixed { delay: secs(1) }
    );
    assert_eq!(
        parse(r#"backoff = { kind = "linear", base = "1s", step = "500ms", cap = "10s" }"#),
        Backoff::Linear {
            base: secs(1),
            step: ms(500),
            cap: secs(10)
        }
    );
    assert_eq!(
        parse(
            r#"backoff = { kind = "exponential", base = "100ms", multiplier = 3.0, cap = "1m" }"#
        ),
        Backoff::Exponential {
            base: ms(100),
            multiplier: 3.0,
            cap: secs(60)
        }
    );
    // multiplier and cap have defaults.
    assert_eq!(
        parse(r#"backoff = { kind = "exponential", base = "250ms" }"#),
        Backoff::Exponential {
            base: ms(250),
            multiplier: 2.0,
            cap: secs(30)
        }
    );
    for jitter in ["none", "full", "equal", "decorrelated"] {
        let config: RetryConfig = toml::from_str(&format!("jitter = \"{jitter}\"")).unwrap();
        assert_eq!(serde_json::to_value(config.jitter).unwrap(), jitter);
    }
}

#[test]
fn config_round_trips_through_toml() {
    let config = RetryConfig {
        max_attempts: 7,
        max_elapsed: Some(secs(90)),
        backoff: Backoff::Linear {
            base: secs(1),
            step: secs(2),
            cap: secs(20),
        },
        jitter: Jitter::Decorrelated,
        max_retry_after: secs(60),
        budget: Some(BudgetConfig::default()),
    };
    let text = toml::to_string(&config).unwrap();
    assert_eq!(toml::from_str::<RetryConfig>(&text).unwrap(), config);
}

#[test]
fn unknown_fields_are_rejected() {
    for text in [
        "max_attempt = 3",
        r#"backoff = { kind = "fixed", delay = "1s", cap = "2s" }"#,
        r#"backoff = { kind = "fibonacci", base = "1s" }"#,
        r#"budget = { retries_per_success = 0.1, per_second = 3 }"#,
        r#"jitter = "some""#,
    ] {
        assert!(toml::from_str::<RetryConfig>(text).is_err(), "{text}");
    }
}

#[test]
fn validation_names_the_field() {
    let field = |config: RetryConfig| Retry::new(config).unwrap_err().field().to_owned();
    let base = RetryConfig::default;
    assert_eq!(
        field(RetryConfig {
            max_attempts: 0,
            ..base()
        }),
        "max_attempts"
    );
    assert_eq!(
        field(RetryConfig {
            max_elapsed: Some(Duration::ZERO),
            ..base()
        }),
        "max_elapsed"
    );
    for multiplier in [f64::NAN, f64::INFINITY, 0.5, -2.0] {
        let backoff = Backoff::Exponential {
            base: ms(1),
            multiplier,
            cap: secs(1),
        };
        assert_eq!(
            field(RetryConfig { backoff, ..base() }),
            "backoff.multiplier"
        );
    }
    let backoff = Backoff::Linear {
        base: secs(2),
        step: secs(1),
        cap: secs(1),
    };
    assert_eq!(field(RetryConfig { backoff, ..base() }), "backoff.cap");
    let budget = |b: BudgetConfig| RetryConfig {
        budget: Some(b),
        ..base()
    };
    assert_eq!(
        field(budget(BudgetConfig {
            retries_per_success: -0.1,
            ..Default::default()
        })),
        "budget.retries_per_success"
    );
    assert_eq!(
        field(budget(BudgetConfig {
            ttl: Duration::ZERO,
            ..Default::default()
        })),
        "budget.ttl"
    );
    // The builder validates too.
    assert!(Retry::fixed(secs(1)).max_attempts(0).build().is_err());
}

// ---------------------------------------------------------------------------------------------
// Backoff and jitter

#[test]
fn exponential_backoff_doubles_up_to_the_cap() {
    let b = Backoff::Exponential {
        base: ms(100),
        multiplier: 2.0,
        cap: secs(1),
    };
    let delays: Vec<_> = (1..=6).map(|n| b.base_delay(n)).collect();
    assert_eq!(
        delays,
        [ms(100), ms(200), ms(400), ms(800), secs(1), secs(1)]
    );
    assert_eq!(b.base_delay(0), ms(100));
    assert_eq!(b.base_delay(u32::MAX), secs(1));

    let b = Backoff::Exponential {
        base: ms(100),
        multiplier: 1.5,
        cap: secs(60),
    };
    assert_eq!(b.base_delay(3), ms(225));
    let b = Backoff::Exponential {
        base: Duration::MAX,
        multiplier: 1e6,
        cap: Duration::MAX,
    };
    assert_eq!(b.base_delay(u32::MAX), Duration::MAX);
}

#[test]
fn linear_and_fixed_backoff() {
    let b = Backoff::Linear {
        base: secs(1),
        step: ms(500),
        cap: secs(2),
    };
    let delays: Vec<_> = (1..=4).map(|n| b.base_delay(n)).collect();
    assert_eq!(delays, [secs(1), ms(1500), secs(2), secs(2)]);
    assert_eq!(b.base_delay(u32::MAX), secs(2));
    let b = Backoff::Fixed { delay: ms(300) };
    assert_eq!(b.base_delay(1), ms(300));
    assert_eq!(b.base_delay(u32::MAX), ms(300));
}

#[test]
fn no_jitter_is_the_base_delay() {
    let b = Backoff::default();
    let mut rng = fastrand::Rng::with_seed(1);
    for n in 1..20 {
        assert_eq!(b.delay(n, Jitter::None, None, &mut rng), b.base_delay(n));
    }
}

#[test]
fn full_jitter_spreads_over_zero_to_delay() {
    let b = Backoff::Fixed { delay: secs(1) };
    let mut rng = fastrand::Rng::with_seed(2);
    let draws: Vec<_> = (0..1000)
        .map(|_| b.delay(1, Jitter::Full, None, &mut rng))
        .collect();
    assert!(draws.iter().all(|d| *d <= secs(1)));
    assert!(draws.iter().any(|d| *d < ms(100)));
    assert!(draws.iter().any(|d| *d > ms(900)));
}

#[test]
fn equal_jitter_stays_in_the_upper_half() {
    let b = Backoff::Fixed { delay: secs(1) };
    let mut rng = fastrand::Rng::with_seed(3);
    let draws: Vec<_> = (0..1000)
        .map(|_| b.delay(1, Jitter::Equal, None, &mut rng))
        .collect();
    assert!(draws.iter().all(|d| (ms(500)..=secs(1)).contains(d)));
    assert!(draws.iter().any(|d| *d < ms(550)));
    assert!(draws.iter().any(|d| *d > ms(950)));
}

#[test]
fn decorrelated_jitter_grows_from_the_previous_delay() {
    let b = Backoff::Exponential {
        base: ms(100),
        multiplier: 2.0,
        cap: secs(10),
    };
    let mut rng = fastrand::Rng::with_seed(4);
    let first = b.delay(1, Jitter::Decorrelated, None, &mut rng);
    assert!((ms(100)..=ms(300)).contains(&first), "{first:?}");
    let mut prev = first;
    for n in 2..200 {
        let d = b.delay(n, Jitter::Decorrelated, Some(prev), &mut rng);
        assert!(
            d >= ms(100) && d <= secs(10) && d <= prev * 3,
            "{d:?} after {prev:?}"
        );
        prev = d;
    }
    // A long previous delay is capped.
    let d = b.delay(2, Jitter::Decorrelated, Some(secs(100)), &mut rng);
    assert!((ms(100)..=secs(10)).contains(&d));
}

#[test]
fn seeded_jitter_is_reproducible() {
    let b = Backoff::default();
    let run = || {
        let mut rng = fastrand::Rng::with_seed(42);
        let mut prev = None;
        (1..10)
            .map(|n| {
                let d = b.delay(n, Jitter::Decorrelated, prev, &mut rng);
                prev = Some(d);
                d
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[tokio::test]
async fn every_jitter_mode_sleeps_within_bounds_on_the_clock() {
    let backoff = Backoff::Exponential {
        base: ms(100),
        multiplier: 2.0,
        cap: ms(800),
    };
    for jitter in [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ] {
        let clock = ManualClock::new();
        let retry = Retry::builder()
            .backoff(backoff)
            .jitter(jitter)
            .max_attempts(6)
            .seed(9)
            .context(ctx(&clock))
            .build()
            .unwrap();
        let calls = Arc::new(AtomicU32::new(0));
        let op = flaky(u32::MAX, &calls);
        let r = retry.clone();
        let handle = tokio::spawn(async move { r.call(op).await });
        let (result, sleeps) = drive(&clock, handle).await;
        assert_eq!(result.unwrap_err().attempts(), 6, "{jitter:?}");
        // Zero-length sleeps complete without registering, so fewer may be seen.
        assert!(sleeps.len() <= 5);
        let mut rng = fastrand::Rng::with_seed(9);
        let mut prev = None;
        let expected: Vec<_> = (1..=5)
            .map(|n| {
                let d = backoff.delay(n, jitter, prev, &mut rng);
                prev = Some(d);
                d
            })
            .filter(|d| !d.is_zero())
            .collect();
        assert_eq!(sleeps, expected, "{jitter:?}");
        for (n, d) in (1..).zip(&sleeps) {
            assert!(*d <= ms(800));
            match jitter {
                Jitter::None => assert_eq!(*d, backoff.base_delay(n)),
                Jitter::Equal => assert!(*d * 2 >= backoff.base_delay(n)),
                Jitter::Decorrelated => assert!(*d >= ms(100)),
                Jitter::Full => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The call loop on a manual clock

#[tokio::test]
async fn retries_until_success_with_exact_sleeps() {
    let clock = ManualClock::new();
    let retry = Retry::exponential(ms(100), secs(30))
        .jitter(Jitter::None)
        .max_attempts(5)
        .context(ctx(&clock))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let op = flaky(3, &calls);
    let handle = tokio::spawn(async move { retry.call(op).await });
    let (result, sleeps) = drive(&clock, handle).await;
    assert_eq!(result.unwrap(), 4);
    assert_eq!(sleeps, [ms(100), ms(200), ms(400)]);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn max_attempts_returns_the_last_error_with_the_count() {
    let clock = ManualClock::new();
    let (ctx, recorder) = recorded(&clock);
    let retry = no_jitter(Backoff::Fixed { delay: secs(1) })
        .max_attempts(3)
        .context(ctx)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let op = move || {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Err::<(), _>(format!("failure {n}")) }
    };
    let handle = tokio::spawn(async move { retry.call(op).await });
    let (result, sleeps) = drive(&clock, handle).await;
    let err = result.unwrap_err();
    assert_eq!(err.attempts(), 3);
    assert_eq!(err.as_inner().map(String::as_str), Some("failure 3"));
    assert_eq!(err.to_string(), "failure 3 (after 3 attempts)");
    assert_eq!(sleeps, [secs(1), secs(1)]);
    assert_eq!(recorder.count("attempt"), 3);
    assert_eq!(recorder.count("retry_scheduled"), 2);
    assert_eq!(recorder.count("retry_gave_up"), 1);
    let lines = recorder.lines();
    assert!(
        lines.last().unwrap().contains("reason: \"max_attempts\""),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("attempt: 2") && l.starts_with("retry_scheduled"))
    );
}

#[tokio::test]
async fn one_attempt_means_no_retry() {
    let retry = Retry::builder().max_attempts(1).build().unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let err = retry.call(flaky(5, &calls)).await.unwrap_err();
    assert_eq!(err.attempts(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn permanent_failures_are_not_retried() {
    let clock = ManualClock::new();
    let (ctx, recorder) = recorded(&clock);
    let retry = Retry::builder().context(ctx).build().unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let classifier = |_: &Result<u32, &str>| Outcome::Permanent;
    let err = without_sleeping(retry.call_classified(&classifier, flaky(5, &calls)))
        .await
        .unwrap_err();
    assert_eq!(err.attempts(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(recorder.lines()[1].contains("\"permanent\""));
}

#[tokio::test]
async fn success_emits_nothing() {
    let clock = ManualClock::new();
    let (ctx, recorder) = recorded(&clock);
    let retry = Retry::builder().context(ctx).build().unwrap();
    assert_eq!(retry.call(|| async { Ok::<_, ()>(1) }).await.unwrap(), 1);
    assert!(recorder.lines().is_empty());
}

#[tokio::test]
async fn attempt_events_carry_the_attempt_duration() {
    let clock = ManualClock::new();
    let (ctx, recorder) = recorded(&clock);
    let retry = no_jitter(Backoff::Fixed { delay: secs(1) })
        .max_attempts(2)
        .context(ctx)
        .build()
        .unwrap();
    let shared = clock.shared();
    let op = move || {
        let sleep = shared.sleep(ms(250));
        async move {
            sleep.await;
            Err::<(), _>("slow failure")
        }
    };
    let handle = tokio::spawn(async move { retry.call(op).await });
    let (_, sleeps) = drive(&clock, handle).await;
    assert_eq!(sleeps, [ms(250), secs(1), ms(250)]);
    let attempts: Vec<_> = recorder
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("attempt "))
        .collect();
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts.iter().all(|l| l.contains("duration: 250ms")),
        "{attempts:?}"
    );
}

#[tokio::test]
async fn max_elapsed_gives_up_before_sleeping_past_it() {
    let clock = ManualClock::new();
    let (ctx, recorder) = recorded(&clock);
    let retry = no_jitter(Backoff::Fixed { delay: secs(1) })
        .max_attempts(100)
        .max_elapsed(ms(2500))
        .context(ctx)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let op = flaky(u32::MAX, &calls);
    let handle = tokio::spawn(async move { retry.call(op).await });
    let (result, sleeps) = drive(&clock, handle).await;
    assert_eq!(result.unwrap_err().attempts(), 3);
    assert_eq!(sleeps, [secs(1), secs(1)]);
    assert_eq!(clock.elapsed(), secs(2));
    assert!(recorder.lines().last().unwrap().contains("\"max_elapsed\""));
}

#[tokio::test]
async fn max_elapsed_counts_time_spent_in_attempts() {
    let clock = ManualClock::new();
    let retry = no_jitter(Backoff::Fixed { delay: secs(1) })
        .max_attempts(100)
        .max_elapsed(secs(10))
        .context(ctx(&clock))
        .build()
        .unwrap();
    let shared = clock.shared();
    let op = move || {
        let sleep = shared.sleep(secs(3));
        async move {
            sleep.await;
            Err::<(), _>("slow")
        }
    };
    let handle = tokio::spawn(async move { retry.call(op).await });
    let (result, _) = drive(&clock, handle).await;
    // 3 s + 1 s + 3 s + 1 s + 3 s = 11 s would start a fourth attempt past 10 s: three attempts.
    assert_eq!(result.unwrap_err().attempts(), 3);
    assert_eq!(clock.elapsed(), secs(11));
}

#[tokio::test]
async fn retry_after_is_honoured_exactly() {
    let clock = ManualClock::new();
    let retry = no_jitter(Backoff::Fixed { delay: secs(1) })
        .max_attempts(4)
        .context(ctx(&clock))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let op = flaky(3, &calls);
    // Attempt 1 asks for 7 s, attempt 2 for less than the backoff, attempt 3 for 90 s.
    let classifier = |r: &Result<u32, &str>| match r {
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Transient,
    };
    let asks = [secs(7), ms(10), secs(90)];
    let counter = calls.clone();
    let classify = move |r: &Result<u32, &str>| match classifier(r) {
        Outcome::Transient => {
            let n = counter.load(Ordering::SeqCst) as usize;
            Outcome::RetryAfter(asks[n - 1])
        }
        other => other,
    };
    let handle = tokio::spawn(async move { retry.call_classified(&classify, op).await });
    let (result, sleeps) = drive(&clock, handle).await;
    assert_eq!(result.unwrap(), 4);
    assert_eq!(sleeps, [secs(7), secs(1), secs(90)]);
}

#[tokio::test]
async fn retry_after_longer_than_the_maximum_gives_up() {
    let clock = ManualClock::new();
    let (ctx, recorder) = recorded(&clock);
    let retry = Retry::builder()
        .max_retry_after(secs(60))
        .context(ctx)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let classifier = |r: &Result<u32, &str>| match r {
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::RetryAfter(secs(61)),
    };
    let handle = tokio::spawn({
        let op = flaky(1, &calls);
        async move { retry.call_classified(&classifier, op).await }
    });
    let (result, sleeps) = drive(&clock, handle).await;
    assert_eq!(result.unwrap_err().attempts(), 1);
    assert!(sleeps.is_empty());
    assert!(
        recorder
            .lines()
            .last()
            .unwrap()
            .contains("\"retry_after_too_long\"")
    );
}

#[tokio::test]
async fn ok_judged_a_failure_is_returned_when_retrying_stops() {
    let clock = ManualClock::new();
    let retry = no_jitter(Backoff::Fixed { delay: secs(1) })
        .max_attempts(3)
        .context(ctx(&clock))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let op = move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<u16, ()>(503) }
    };
    let classifier = |r: &Result<u16, ()>| match r {
        Ok(200) => Outcome::Success,
        _ => Outcome::Transient,
    };
    let handle = tokio::spawn(async move { retry.call_classified(&classifier, op).await });
    let (result, sleeps) = drive(&clock, handle).await;
    assert_eq!(result.unwrap(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(sleeps.len(), 2);
}

#[tokio::test]
async fn ignored_outcomes_are_returned_at_once() {
    let retry = Retry::builder().build().unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let classifier = |_: &Result<u32, &str>| Outcome::Ignored;
    let err = retry
        .call_classified(&classifier, flaky(5, &calls))
        .await
        .unwrap_err();
    assert_eq!(err.attempts(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn on_retry_hook_sees_each_retry() {
    let clock = ManualClock::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let retry = no_jitter(Backoff::Linear {
        base: secs(1),
        step: secs(1),
        cap: secs(10),
    })
    .max_attempts(4)
    .on_retry(move |info| log.lock().unwrap().push(*info))
    .context(ctx(&clock))
    .build()
    .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let op = flaky(2, &calls);
    let handle = tokio::spawn(async move { retry.call(op).await });
    let (result, _) = drive(&clock, handle).await;
    assert_eq!(result.unwrap(), 3);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            RetryInfo {
                attempt: 1,
                delay: secs(1),
                outcome: Outcome::Transient
            },
            RetryInfo {
                attempt: 2,
                delay: secs(2),
                outcome: Outcome::Transient
            },
        ]
    );
}

#[tokio::test]
async fn the_hook_runs_before_the_sleep() {
    let clock = ManualClock::new();
    let at = Arc::new(Mutex::new(Vec::new()));
    let (log, shared) = (at.clone(), clock.clone());
    let retry = no_jitter(Backoff::Fixed { delay: secs(5) })
        .max_attempts(2)
        .on_retry(move |_| log.lock().unwrap().push(shared.elapsed()))
        .context(ctx(&clock))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let op = flaky(1, &calls);
    let handle = tokio::spawn(async move { retry.call(op).await });
    drive(&clock, handle).await.0.unwrap();
    assert_eq!(*at.lock().unwrap(), [Duration::ZERO]);
}

// ---------------------------------------------------------------------------------------------
// Budget

#[tokio::test]
async fn budget_exhaustion_and_refill() {
    let clock = ManualClock::new();
    let (ctx, recorder) = recorded(&clock);
    let retry = no_jitter(Backoff::Fixed { delay: ms(10) })
        .max_attempts(5)
        .budget(BudgetConfig {
            retries_per_success: 0.0,
            min_per_second: 1,
            ttl: secs(1),
        })
        .context(ctx)
        .build()
        .unwrap();
    let always_failing = |retry: Retry| {
        let calls = Arc::new(AtomicU32::new(0));
        let op = flaky(u32::MAX, &calls);
        tokio::spawn(async move { retry.call(op).await.unwrap_err().attempts() })
    };
    // The reserve allows one retry per second.
    assert_eq!(drive(&clock, always_failing(retry.clone())).await.0, 2);
    assert_eq!(drive(&clock, always_failing(retry.clone())).await.0, 1);
    assert!(recorder.lines().last().unwrap().contains("\"budget\""));
    // Once the withdrawal leaves the window, a retry is allowed again.
    clock.advance(secs(1));
    assert_eq!(drive(&clock, always_failing(retry.clone())).await.0, 2);
}

#[tokio::test]
async fn successes_refill_the_budget() {
    let clock = ManualClock::new();
    let retry = no_jitter(Backoff::Fixed { delay: ms(10) })
        .max_attempts(10)
        .budget(BudgetConfig {
            retries_per_success: 1.0,
            min_per_second: 0,
            ttl: secs(60),
        })
        .context(ctx(&clock))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let first = without_sleeping(retry.call(flaky(1, &calls))).await;
    assert_eq!(first.unwrap_err().attempts(), 1);
    for _ in 0..3 {
        retry.call(|| async { Ok::<_, ()>(()) }).await.unwrap();
    }
    let calls = Arc::new(AtomicU32::new(0));
    let op = flaky(u32::MAX, &calls);
    let r = retry.clone();
    let handle = tokio::spawn(async move { r.call(op).await });
    let (result, sleeps) = drive(&clock, handle).await;
    assert_eq!(result.unwrap_err().attempts(), 4);
    assert_eq!(sleeps.len(), 3);
}

#[tokio::test]
async fn clones_share_the_budget() {
    let clock = ManualClock::new();
    let retry = Retry::builder()
        .budget(BudgetConfig {
            retries_per_success: 1.0,
            min_per_second: 0,
            ttl: secs(60),
        })
        .context(ctx(&clock))
        .build()
        .unwrap();
    let other = retry.clone();
    other.on_success();
    let mut state = retry.start();
    assert!(matches!(
        retry.on_failure(&mut state, Outcome::Transient),
        RetryDecision::Retry(_)
    ));
    assert_eq!(
        retry.on_failure(&mut state, Outcome::Transient),
        RetryDecision::GiveUp(GiveUpReason::Budget)
    );
}

// ---------------------------------------------------------------------------------------------
// Nested policies

#[tokio::test]
async fn nested_calls_follow_policy_outcomes() {
    let clock = ManualClock::new();
    let retry = no_jitter(Backoff::Fixed { delay: secs(1) })
        .max_attempts(5)
        .context(ctx(&clock))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    // Open circuit (wait 4 s), then a timeout, then the op's own error, then success.
    let op = move || {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            match n {
                1 => Err(Error::from(CircuitOpen {
                    state: CircuitState::Open,
                    remaining: Some(secs(4)),
                })),
                2 => Err(Error::new(ErrorKind::Timeout(Elapsed { after: secs(2) }))),
                3 => Err(Error::inner("boom").with_attempts(9)),
                _ => Ok(n),
            }
        }
    };
    let handle = tokio::spawn(async move { retry.call_nested(op).await });
    let (result, sleeps) = drive(&clock, handle).await;
    assert_eq!(result.unwrap(), 4);
    assert_eq!(sleeps, [secs(4), secs(1), secs(1)]);
}

#[tokio::test]
async fn nested_final_error_keeps_its_kind_and_our_attempts() {
    let clock = ManualClock::new();
    let retry = no_jitter(Backoff::Fixed { delay: secs(1) })
        .max_attempts(3)
        .context(ctx(&clock))
        .build()
        .unwrap();
    let op = || async {
        Err::<(), _>(
            Error::<&str>::new(ErrorKind::Timeout(Elapsed { after: secs(2) })).with_attempts(7),
        )
    };
    let handle = tokio::spawn(async move { retry.call_nested(op).await });
    let (result, sleeps) = drive(&clock, handle).await;
    let err = result.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Timeout(_)));
    assert_eq!(err.attempts(), 3);
    assert_eq!(sleeps.len(), 2);

    // A passed deadline is permanent; an inner error judged permanent too.
    let retry = Retry::builder().context(ctx(&clock)).build().unwrap();
    let err = without_sleeping(retry.call_nested(|| async {
        Err::<(), _>(Error::<&str>::new(ErrorKind::DeadlineExceeded(Elapsed {
            after: secs(2),
        })))
    }))
    .await
    .unwrap_err();
    assert_eq!(err.attempts(), 1);
    let permanent = |_: &Result<(), &str>| Outcome::Permanent;
    let err = without_sleeping(
        retry.call_nested_classified(&permanent, || async { Err::<(), _>(Error::inner("bad")) }),
    )
    .await
    .unwrap_err();
    assert_eq!((err.attempts(), err.into_inner()), (1, Some("bad")));
}

// ---------------------------------------------------------------------------------------------
// Pure decisions and the pipeline primitives

#[test]
fn next_delay_is_pure() {
    let retry = no_jitter(Backoff::Fixed { delay: secs(2) })
        .max_attempts(3)
        .max_elapsed(secs(10))
        .max_retry_after(secs(30))
        .build()
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(1);
    let retry_in = |s| RetryDecision::Retry(secs(s));
    let give_up = RetryDecision::GiveUp;
    assert_eq!(
        retry.next_delay(1, Outcome::Transient, None, &mut rng),
        retry_in(2)
    );
    assert_eq!(
        retry.next_delay(2, Outcome::RetryAfter(secs(30)), None, &mut rng),
        retry_in(30)
    );
    assert_eq!(
        retry.next_delay(1, Outcome::RetryAfter(secs(31)), None, &mut rng),
        give_up(GiveUpReason::RetryAfterTooLong)
    );
    assert_eq!(
        retry.next_delay(3, Outcome::Transient, None, &mut rng),
        give_up(GiveUpReason::MaxAttempts)
    );
    for outcome in [Outcome::Permanent, Outcome::Success, Outcome::Ignored] {
        assert_eq!(
            retry.next_delay(1, outcome, None, &mut rng),
            give_up(GiveUpReason::Permanent)
        );
    }
    // `next_delay` ignores max_elapsed; the elapsed variant applies it.
    assert_eq!(
        retry.next_delay_with_elapsed(1, Outcome::Transient, None, secs(8), &mut rng),
        retry_in(2)
    );
    assert_eq!(
        retry.next_delay_with_elapsed(1, Outcome::Transient, None, ms(8001), &mut rng),
        give_up(GiveUpReason::MaxElapsed)
    );
    assert_eq!(
        retry.next_delay_with_elapsed(1, Outcome::RetryAfter(secs(9)), None, secs(2), &mut rng),
        give_up(GiveUpReason::MaxElapsed)
    );
}

#[test]
fn give_up_reasons_have_stable_names() {
    let names: Vec<_> = [
        GiveUpReason::Permanent,
        GiveUpReason::MaxAttempts,
        GiveUpReason::MaxElapsed,
        GiveUpReason::Budget,
        GiveUpReason::RetryAfterTooLong,
    ]
    .iter()
    .map(|r| (r.as_str(), r.to_string(), serde_json::to_value(r).unwrap()))
    .collect();
    for (name, display, json) in names {
        assert_eq!(name, display);
        assert_eq!(json, name);
    }
}

#[test]
fn pipeline_primitives_count_attempts() {
    let clock = ManualClock::new();
    let retry = no_jitter(Backoff::Fixed { delay: secs(1) })
        .max_attempts(3)
        .context(ctx(&clock))
        .build()
        .unwrap();
    let mut state = retry.start();
    assert_eq!((state.attempts(), state.last_delay()), (1, None));
    assert_eq!(
        retry.on_failure(&mut state, Outcome::Transient),
        RetryDecision::Retry(secs(1))
    );
    assert_eq!((state.attempts(), state.last_delay()), (2, Some(secs(1))));
    assert_eq!(
        retry.on_failure(&mut state, Outcome::RetryAfter(secs(3))),
        RetryDecision::Retry(secs(3))
    );
    assert_eq!(
        retry.on_failure(&mut state, Outcome::Transient),
        RetryDecision::GiveUp(GiveUpReason::MaxAttempts)
    );
    assert_eq!(state.attempts(), 3);
}

/// A clock that counts how often it is read.
#[derive(Debug, Default)]
struct CountingClock {
    inner: ManualClock,
    reads: AtomicUsize,
}

impl Clock for CountingClock {
    fn now(&self) -> Instant {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.now()
    }

    fn system_now(&self) -> SystemTime {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.system_now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        self.inner.sleep(duration)
    }
}

#[tokio::test]
async fn the_success_path_reads_the_clock_only_when_needed() {
    let clock = Arc::new(CountingClock::default());
    let ctx = Context::new("t").with_clock(clock.clone());
    let retry = Retry::builder().context(ctx.clone()).build().unwrap();
    retry.call(|| async { Ok::<_, ()>(()) }).await.unwrap();
    assert_eq!(clock.reads.load(Ordering::SeqCst), 0);

    let retry = Retry::builder()
        .max_elapsed(secs(5))
        .context(ctx)
        .build()
        .unwrap();
    let _state = retry.start();
    assert_eq!(clock.reads.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------------
// tower

#[tokio::test]
async fn tower_service_retries_on_the_manual_clock() {
    let clock = ManualClock::new();
    let retry = no_jitter(Backoff::Exponential {
        base: secs(1),
        multiplier: 3.0,
        cap: secs(60),
    })
    .max_attempts(4)
    .context(ctx(&clock))
    .build()
    .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let inner = service_fn(move |request: String| {
        let n = {
            let mut seen = log.lock().unwrap();
            seen.push(request.clone());
            seen.len()
        };
        async move {
            if n < 3 {
                Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
            } else {
                Ok(format!("{request} #{n}"))
            }
        }
    });
    let service = RetryLayer::new(retry).layer(inner);
    let handle = tokio::spawn(service.oneshot("hello".to_owned()));
    let (result, sleeps) = drive(&clock, handle).await;
    assert_eq!(result.unwrap(), "hello #3");
    assert_eq!(sleeps, [secs(1), secs(3)]);
    assert_eq!(*seen.lock().unwrap(), ["hello", "hello", "hello"]);
}

#[tokio::test]
async fn tower_service_boxes_the_last_inner_error() {
    let clock = ManualClock::new();
    let retry = no_jitter(Backoff::Fixed { delay: secs(1) })
        .max_attempts(2)
        .context(ctx(&clock))
        .build()
        .unwrap();
    let inner = service_fn(|_: ()| async {
        Err::<(), _>(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "too slow",
        ))
    });
    let service = RetryLayer::with_classifier(retry, crate::classify::IoClassifier).layer(inner);
    let handle = tokio::spawn(service.oneshot(()));
    let (result, sleeps) = drive(&clock, handle).await;
    let err = result.unwrap_err();
    let io = err.downcast_ref::<std::io::Error>().expect("an io::Error");
    assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(sleeps, [secs(1)]);
}

#[tokio::test]
async fn tower_service_returns_the_last_failed_response() {
    let clock = ManualClock::new();
    let retry = no_jitter(Backoff::Fixed { delay: secs(1) })
        .max_attempts(3)
        .context(ctx(&clock))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let inner = service_fn(move |_: ()| {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            http::Response::builder()
                .status(503)
                .header("retry-after", "4")
                .body(())
        }
    });
    let classifier = HttpClassifier::default().with_clock(clock.shared());
    let service = RetryLayer::with_classifier(retry, classifier).layer(inner);
    let handle = tokio::spawn(service.oneshot(()));
    let (result, sleeps) = drive(&clock, handle).await;
    assert_eq!(result.unwrap().status(), 503);
    assert_eq!(sleeps, [secs(4), secs(4)]);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn tower_service_is_reusable_and_clonable() {
    let retry = Retry::fixed(ms(1)).build().unwrap();
    let mut service = RetryService::new(
        service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n + 1) }),
        retry,
        crate::ErrorsAreTransient,
    );
    for n in 0..3 {
        let response = service.ready().await.unwrap().call(n).await.unwrap();
        assert_eq!(response, n + 1);
    }
    assert_eq!(service.clone().oneshot(10).await.unwrap(), 11);
}

// ---------------------------------------------------------------------------------------------
// Properties

fn any_backoff() -> impl Strategy<Value = Backoff> {
    let duration = prop_oneof![
        (0u64..10_000_000_000).prop_map(Duration::from_nanos),
        (0u64..u64::MAX).prop_map(Duration::from_secs),
        Just(Duration::MAX),
        Just(Duration::ZERO),
    ];
    prop_oneof![
        duration.clone().prop_map(|delay| Backoff::Fixed { delay }),
        (duration.clone(), duration.clone(), duration.clone())
            .prop_map(|(base, step, cap)| Backoff::Linear { base, step, cap }),
        (
            duration.clone(),
            prop_oneof![
                1.0..10.0f64,
                1.0..1e6f64,
                Just(f64::INFINITY),
                Just(f64::NAN)
            ],
            duration
        )
            .prop_map(|(base, multiplier, cap)| Backoff::Exponential {
                base,
                multiplier,
                cap
            }),
    ]
}

fn any_jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated)
    ]
}

proptest! {
    #[test]
    fn every_delay_is_within_zero_and_cap(
        backoff in any_backoff(),
        jitter in any_jitter(),
        seed in any::<u64>(),
        huge in any::<u32>(),
    ) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut prev = None;
        for attempt in (0..=1000).chain([huge, u32::MAX]) {
            let d = backoff.delay(attempt, jitter, prev, &mut rng);
            prop_assert!(d <= backoff.cap(), "{d:?} > cap at attempt {attempt}");
            prev = Some(d);
        }
    }

    #[test]
    fn a_schedule_never_exceeds_max_elapsed(
        base_ms in 0u64..5_000,
        multiplier in 1.0..4.0f64,
        jitter in any_jitter(),
        max_elapsed_ms in 1u64..120_000,
        retry_after_ms in proptest::option::of(0u64..10_000),
        seed in any::<u64>(),
    ) {
        let retry = Retry::builder()
            .backoff(Backoff::Exponential { base: ms(base_ms), multiplier, cap: secs(30) })
            .jitter(jitter)
            .max_attempts(u32::MAX)
            .max_elapsed(ms(max_elapsed_ms))
            .build()
            .unwrap();
        let outcome = retry_after_ms.map_or(Outcome::Transient, |r| Outcome::RetryAfter(ms(r)));
        let mut rng = fastrand::Rng::with_seed(seed);
        let (mut elapsed, mut prev) = (Duration::ZERO, None);
        for attempt in 1..=10_000u32 {
            match retry.next_delay_with_elapsed(attempt, outcome, prev, elapsed, &mut rng) {
                RetryDecision::Retry(d) => {
                    elapsed += d;
                    prev = Some(d);
                    prop_assert!(elapsed <= ms(max_elapsed_ms));
                }
                RetryDecision::GiveUp(reason) => {
                    prop_assert_eq!(reason, GiveUpReason::MaxElapsed);
                    break;
                }
            }
            // Attempts take time too; zero-delay schedules still reach the limit.
            elapsed += ms(7);
        }
    }

    #[test]
    fn retry_after_is_never_undercut(
        backoff in any_backoff(),
        jitter in any_jitter(),
        wait in any::<u64>().prop_map(Duration::from_nanos),
        attempt in 1u32..1000,
        seed in any::<u64>(),
    ) {
        let config = RetryConfig {
            backoff,
            jitter,
            max_attempts: u32::MAX,
            max_retry_after: Duration::MAX,
            ..RetryConfig::default()
        };
        // Invalid backoffs are rejected by `build`; the property is about valid ones.
        let Ok(retry) = Retry::new(config) else { return Ok(()) };
        let mut rng = fastrand::Rng::with_seed(seed);
        let decision = retry.next_delay(attempt, Outcome::RetryAfter(wait), None, &mut rng);
        prop_assert!(matches!(decision, RetryDecision::Retry(d) if d >= wait), "{decision:?}");
    }
}

/// Keeps `call`'s future `Send` so it can run in spawned tasks and tower stacks.
#[allow(dead_code)]
fn call_future_is_send(retry: &Retry) -> impl Future<Output = Result<(), Error<()>>> + Send + '_ {
    retry.call(|| async { Ok(()) })
}
