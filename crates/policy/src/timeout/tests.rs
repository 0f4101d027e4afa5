//! Tests of the timeout and deadline on a manual clock, and through a tower service.

use std::sync::Arc;
use std::time::Duration;

use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;
use crate::clock::ManualClock;
use crate::error::{BoxError, ErrorKind};
use crate::event::Recorder;
use crate::{Context, Error};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ctx(clock: &ManualClock, recorder: &Arc<Recorder>) -> Context {
    Context::new("t")
        .with_clock(clock.shared())
        .with_observer(recorder.clone())
}

async fn until_sleeping(clock: &ManualClock, n: usize) {
    while clock.pending_sleeps() < n {
        tokio::task::yield_now().await;
    }
}

#[test]
fn config_validation_names_the_field() {
    let err = TimeoutConfig::new(Duration::ZERO).validate().unwrap_err();
    assert_eq!(err.field(), "timeout");
    assert!(Timeout::new(TimeoutConfig::new(Duration::ZERO)).is_err());
    let err = Deadline::new(DeadlineConfig::new(Duration::ZERO)).unwrap_err();
    assert_eq!(err.field(), "deadline");
    assert_eq!(TimeoutConfig::default().timeout, secs(10));
}

#[test]
fn config_from_toml() {
    let c: TimeoutConfig = toml::from_str(r#"timeout = "1500ms""#).unwrap();
    assert_eq!(c.timeout, Duration::from_millis(1500));
    let c: DeadlineConfig = toml::from_str(r#"deadline = "2m""#).unwrap();
    assert_eq!(c.deadline, secs(120));
    assert!(toml::from_str::<TimeoutConfig>("timeot = \"1s\"").is_err());
}

#[tokio::test]
async fn fires_exactly_at_the_limit_and_not_before() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let timeout =
        Timeout::with_context(TimeoutConfig::new(secs(10)), ctx(&clock, &recorder)).unwrap();
    let t = timeout.clone();
    let handle = tokio::spawn(async move { t.wrap(std::future::pending::<()>()).await });
    until_sleeping(&clock, 1).await;
    assert_eq!(clock.next_sleep_in(), Some(secs(10)));
    clock.advance(secs(10) - Duration::from_nanos(1));
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    assert!(!handle.is_finished());
    assert_eq!(recorder.count("timeout"), 0);
    clock.advance(Duration::from_nanos(1));
    assert_eq!(handle.await.unwrap(), Err(Elapsed { after: secs(10) }));
    assert_eq!(recorder.count("timeout"), 1);
}

#[tokio::test]
async fn timer_starts_at_wrap_even_when_first_polled_later() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let timeout =
        Timeout::with_context(TimeoutConfig::new(secs(10)), ctx(&clock, &recorder)).unwrap();
    let wrapped = timeout.clone().wrap_owned(std::future::pending::<()>());
    // Nothing is registered until the first poll finds the call pending...
    assert_eq!(clock.pending_sleeps(), 0);
    clock.advance(secs(4));
    let handle = tokio::spawn(wrapped);
    until_sleeping(&clock, 1).await;
    // ...but the limit still counts from the wrap: 6 s are left, not 10.
    assert_eq!(clock.next_sleep_in(), Some(secs(6)));
    clock.advance(secs(6));
    assert_eq!(handle.await.unwrap(), Err(Elapsed { after: secs(10) }));
}

#[tokio::test]
async fn fast_future_passes_and_unregisters_its_timer() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let timeout =
        Timeout::with_context(TimeoutConfig::new(secs(1)), ctx(&clock, &recorder)).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
    let t = timeout.clone();
    let handle = tokio::spawn(async move { t.wrap(rx).await });
    until_sleeping(&clock, 1).await;
    tx.send(7).unwrap();
    assert_eq!(handle.await.unwrap(), Ok(Ok(7)));
    assert_eq!(clock.pending_sleeps(), 0);
    assert_eq!(recorder.count("timeout"), 0);
}

#[tokio::test]
async fn call_maps_errors() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let timeout =
        Timeout::with_context(TimeoutConfig::new(secs(3)), ctx(&clock, &recorder)).unwrap();
    let r: Result<u8, Error<&str>> = timeout.call(|| async { Err("boom") }).await;
    assert!(matches!(r.unwrap_err().kind(), ErrorKind::Inner("boom")));

    let t = timeout.clone();
    let handle =
        tokio::spawn(async move { t.call(std::future::pending::<Result<u8, &str>>).await });
    until_sleeping(&clock, 1).await;
    clock.advance(secs(3));
    let err = handle.await.unwrap().unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Timeout(Elapsed { after }) if *after == secs(3)));
}

#[tokio::test]
async fn real_clock_sanity() {
    let timeout = Timeout::new(TimeoutConfig::new(Duration::from_millis(5))).unwrap();
    let started = std::time::Instant::now();
    let r = timeout.wrap(std::future::pending::<()>()).await;
    assert_eq!(
        r,
        Err(Elapsed {
            after: Duration::from_millis(5)
        })
    );
    assert!(started.elapsed() >= Duration::from_millis(5));
    assert_eq!(timeout.wrap(async { 1 }).await, Ok(1));
}

#[tokio::test]
async fn deadline_counts_from_the_start_across_attempts() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let deadline =
        Deadline::with_context(DeadlineConfig::new(secs(30)), ctx(&clock, &recorder)).unwrap();
    let start = deadline.start();
    clock.advance(secs(20));
    assert_eq!(deadline.remaining(start), secs(10));
    assert!(!deadline.is_expired(start));

    let d = deadline.clone();
    let handle =
        tokio::spawn(async move { d.wrap_from(start, std::future::pending::<()>()).await });
    until_sleeping(&clock, 1).await;
    assert_eq!(clock.next_sleep_in(), Some(secs(10)));
    clock.advance(secs(9));
    tokio::task::yield_now().await;
    assert!(!handle.is_finished());
    clock.advance(secs(1));
    assert_eq!(handle.await.unwrap(), Err(Elapsed { after: secs(30) }));
    assert_eq!(recorder.count("deadline_exceeded"), 1);
    assert_eq!(recorder.count("timeout"), 0);
    assert!(deadline.is_expired(start));
    assert_eq!(deadline.remaining(start), Duration::ZERO);
}

#[tokio::test]
async fn expired_deadline_fails_at_first_poll() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let deadline =
        Deadline::with_context(DeadlineConfig::new(secs(1)), ctx(&clock, &recorder)).unwrap();
    let start = deadline.start();
    clock.advance(secs(5));
    let r = deadline
        .wrap_from(start, std::future::pending::<()>())
        .await;
    assert_eq!(r, Err(Elapsed { after: secs(1) }));
}

#[tokio::test]
async fn deadline_call_is_deadline_exceeded() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let deadline =
        Deadline::with_context(DeadlineConfig::new(secs(2)), ctx(&clock, &recorder)).unwrap();
    let d = deadline.clone();
    let handle = tokio::spawn(async move { d.call(std::future::pending::<Result<(), ()>>).await });
    until_sleeping(&clock, 1).await;
    clock.advance(secs(2));
    let err = handle.await.unwrap().unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::DeadlineExceeded(_)));
    assert_eq!(err.policy_outcome(), Some(crate::Outcome::Permanent));
}

#[tokio::test]
async fn tower_layer_times_out_and_passes_errors() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let timeout =
        Timeout::with_context(TimeoutConfig::new(secs(5)), ctx(&clock, &recorder)).unwrap();
    let layer = TimeoutLayer::new(timeout);
    let svc = layer.layer(service_fn(|req: u32| async move {
        match req {
            0 => std::future::pending().await,
            1 => Err(std::io::Error::other("inner")),
            n => Ok(n * 2),
        }
    }));

    assert_eq!(svc.clone().oneshot(21).await.unwrap(), 42);
    let err: BoxError = svc.clone().oneshot(1).await.unwrap_err();
    assert!(err.downcast_ref::<std::io::Error>().is_some());

    let mut slow = svc.clone();
    let handle = tokio::spawn(async move {
        slow.ready().await.unwrap();
        slow.call(0).await
    });
    until_sleeping(&clock, 1).await;
    clock.advance(secs(5));
    let err = handle.await.unwrap().unwrap_err();
    assert_eq!(
        err.downcast_ref::<Elapsed>(),
        Some(&Elapsed { after: secs(5) })
    );
    assert_eq!(recorder.count("timeout"), 1);
}
