//! Tests of the fallback: it answers only the configured kinds, standalone and as a layer.

use std::time::Duration;

use tower::{Layer, ServiceExt, service_fn};

use super::*;
use crate::bulkhead::BulkheadFull;
use crate::chaos::{Fault, Injected};
use crate::error::{BoxError, ErrorKind};
use crate::event::Recorder;
use crate::rate_limit::RateLimited;
use crate::timeout::Elapsed;
use crate::{CircuitOpen, CircuitState, Context, Error, Outcome};

fn every_kind() -> Vec<(FallbackOn, Error<&'static str>)> {
    let elapsed = Elapsed {
        after: Duration::from_secs(1),
    };
    vec![
        (FallbackOn::Inner, Error::inner("boom")),
        (
            FallbackOn::Rejected,
            Error::new(ErrorKind::Rejected(Outcome::Transient)),
        ),
        (
            FallbackOn::CircuitOpen,
            CircuitOpen {
                state: CircuitState::Open,
                remaining: None,
            }
            .into(),
        ),
        (FallbackOn::Timeout, Error::new(ErrorKind::Timeout(elapsed))),
        (
            FallbackOn::DeadlineExceeded,
            Error::new(ErrorKind::DeadlineExceeded(elapsed)),
        ),
        (
            FallbackOn::BulkheadFull,
            BulkheadFull {
                max_concurrent: 1,
                max_queue: 0,
            }
            .into(),
        ),
        (
            FallbackOn::RateLimited,
            RateLimited {
                wait: Duration::from_secs(1),
                ready_at: std::time::Instant::now(),
            }
            .into(),
        ),
        (
            FallbackOn::Injected,
            Injected {
                fault: Fault::Error,
            }
            .into(),
        ),
    ]
}

#[test]
fn config_defaults_validation_and_toml() {
    assert_eq!(FallbackConfig::default().on, FallbackOn::ALL.to_vec());
    assert_eq!(FallbackConfig::on([]).validate().unwrap_err().field(), "on");
    assert!(Fallback::new(FallbackConfig::on([])).is_err());
    let c: FallbackConfig =
        toml::from_str(r#"on = ["inner", "rejected", "deadline_exceeded", "bulkhead_full", "rate_limited", "injected"]"#)
            .unwrap();
    assert_eq!(c.on.len(), 6);
    assert!(toml::from_str::<FallbackConfig>(r#"on = ["sometimes"]"#).is_err());
}

#[test]
fn handles_exactly_the_configured_kinds() {
    let all = Fallback::new(FallbackConfig::default()).unwrap();
    for (kind, error) in every_kind() {
        assert!(all.handles(&error), "{kind:?}");
        assert_eq!(FallbackOn::of(error.kind()), kind);
        let only = Fallback::new(FallbackConfig::on([kind])).unwrap();
        for (other, error) in every_kind() {
            assert_eq!(only.handles(&error), other == kind, "{kind:?} vs {other:?}");
        }
    }
}

#[tokio::test]
async fn call_uses_the_fallback_only_when_configured() {
    let recorder = Recorder::new();
    let ctx = Context::new("fb").with_observer(recorder.clone());
    let fallback = Fallback::with_context(
        FallbackConfig::on([FallbackOn::CircuitOpen, FallbackOn::Timeout]),
        ctx,
    )
    .unwrap();
    let open = || async {
        Err::<u32, Error<&str>>(
            CircuitOpen {
                state: CircuitState::ForcedOpen,
                remaining: None,
            }
            .into(),
        )
    };
    let r = fallback
        .call(open, |e| async move {
            assert!(matches!(e.kind(), ErrorKind::CircuitOpen(_)));
            Ok(7)
        })
        .await;
    assert_eq!(r.unwrap(), 7);
    assert_eq!(recorder.count("fallback_used"), 1);

    // An inner error is not configured: returned untouched, fallback not run.
    let r: Result<u32, Error<&str>> = fallback
        .call(
            || async { Err(Error::inner("boom")) },
            |_| async { panic!("fallback must not run") },
        )
        .await;
    assert!(matches!(r.unwrap_err().kind(), ErrorKind::Inner("boom")));

    // Success never runs it, and the fallback's own failure is returned.
    let r: Result<u32, Error<&str>> = fallback
        .call(
            || async { Ok(1) },
            |_| async { panic!("fallback must not run") },
        )
        .await;
    assert_eq!(r.unwrap(), 1);
    let r: Result<u32, Error<&str>> = fallback
        .call(
            || async {
                Err(Error::new(ErrorKind::Timeout(Elapsed {
                    after: Duration::from_secs(1),
                })))
            },
            |_| async { Err(Error::inner("fallback failed too")) },
        )
        .await;
    assert!(matches!(
        r.unwrap_err().kind(),
        ErrorKind::Inner("fallback failed too")
    ));
    assert_eq!(recorder.count("fallback_used"), 2);
}

#[tokio::test]
async fn composes_with_a_timeout() {
    use crate::ManualClock;
    use crate::timeout::{Timeout, TimeoutConfig};
    let clock = ManualClock::new();
    let timeout = Timeout::with_context(
        TimeoutConfig::new(Duration::from_secs(2)),
        Context::new("t").with_clock(clock.shared()),
    )
    .unwrap();
    let fallback = Fallback::new(FallbackConfig::on([FallbackOn::Timeout])).unwrap();
    let handle = tokio::spawn(async move {
        fallback
            .call(
                || timeout.call(std::future::pending::<Result<&str, ()>>),
                |_| async { Ok("fallback") },
            )
            .await
    });
    while clock.pending_sleeps() == 0 {
        tokio::task::yield_now().await;
    }
    clock.advance(Duration::from_secs(2));
    assert_eq!(handle.await.unwrap().unwrap(), "fallback");
}

#[tokio::test]
async fn tower_layer_answers_configured_boxed_errors() {
    let recorder = Recorder::new();
    let fallback = Fallback::with_context(
        FallbackConfig::on([FallbackOn::RateLimited, FallbackOn::Timeout]),
        Context::new("fb").with_observer(recorder.clone()),
    )
    .unwrap();
    let inner = service_fn(|req: u8| async move {
        let err: BoxError = match req {
            0 => return Ok("real"),
            1 => Box::new(RateLimited {
                wait: Duration::from_secs(1),
                ready_at: std::time::Instant::now(),
            }),
            2 => Box::new(Elapsed {
                after: Duration::from_secs(1),
            }),
            3 => Box::new(BulkheadFull {
                max_concurrent: 1,
                max_queue: 0,
            }),
            _ => "inner".into(),
        };
        Err(err)
    });
    let svc = FallbackLayer::new(fallback, |_e: BoxError| Ok("fallback")).layer(inner);
    assert_eq!(svc.clone().oneshot(0).await.unwrap(), "real");
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), "fallback");
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), "fallback");
    let err = svc.clone().oneshot(3).await.unwrap_err();
    assert!(err.downcast_ref::<BulkheadFull>().is_some());
    assert_eq!(svc.oneshot(4).await.unwrap_err().to_string(), "inner");
    assert_eq!(recorder.count("fallback_used"), 2);
}
