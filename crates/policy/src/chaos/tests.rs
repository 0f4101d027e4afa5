//! Tests of the chaos policy: seeded sequences, rates, production refusal, each fault.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;
use crate::clock::ManualClock;
use crate::error::{BoxError, ErrorKind};
use crate::event::Recorder;
use crate::timeout::{Elapsed, Timeout, TimeoutConfig, TimeoutLayer};
use crate::{Context, Error, Outcome};

fn enabled(seed: u64) -> ChaosConfig {
    ChaosConfig {
        enabled: true,
        seed: Some(seed),
        ..Default::default()
    }
}

fn chaos(config: ChaosConfig) -> (Chaos, ManualClock, Arc<Recorder>) {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let ctx = Context::new("chaos")
        .with_clock(clock.shared())
        .with_observer(recorder.clone());
    let chaos = Chaos::with_context(config, Environment::Test, ctx).unwrap();
    (chaos, clock, recorder)
}

#[test]
fn validation_names_the_field() {
    let field = |c: ChaosConfig| c.validate().unwrap_err().field().to_owned();
    let base = enabled(1);
    assert_eq!(
        field(ChaosConfig {
            error_rate: 1.5,
            ..base.clone()
        }),
        "error_rate"
    );
    assert_eq!(
        field(ChaosConfig {
            latency_rate: -0.1,
            ..base.clone()
        }),
        "latency_rate"
    );
    assert_eq!(
        field(ChaosConfig {
            drop_rate: f64::NAN,
            ..base.clone()
        }),
        "drop_rate"
    );
    assert_eq!(
        field(ChaosConfig {
            outcome_rate: f64::INFINITY,
            ..base.clone()
        }),
        "outcome_rate"
    );
    let sum = ChaosConfig {
        error_rate: 0.5,
        latency_rate: 0.3,
        drop_rate: 0.2,
        outcome_rate: 0.1,
        ..base.clone()
    };
    assert!(field(sum).contains("latency_rate"));
    assert_eq!(
        field(ChaosConfig {
            latency: Duration::from_secs(2),
            latency_max: Some(Duration::from_secs(1)),
            ..base.clone()
        }),
        "latency_max"
    );
    // Rates that add up to exactly 1 (with float rounding) are fine.
    let full = ChaosConfig {
        error_rate: 0.1,
        latency_rate: 0.2,
        drop_rate: 0.3,
        outcome_rate: 0.4,
        ..base
    };
    assert!(full.validate().is_ok());
}

#[test]
fn refused_in_production_unless_allowed() {
    let config = ChaosConfig {
        error_rate: 0.1,
        ..enabled(1)
    };
    let err = Chaos::new(config.clone(), Environment::Production).unwrap_err();
    assert_eq!(err.field(), "allow_in_production");
    assert!(err.message().contains("production"));
    for env in [
        Environment::Development,
        Environment::Test,
        Environment::Staging,
    ] {
        assert!(Chaos::new(config.clone(), env).is_ok());
    }
    let allowed = ChaosConfig {
        allow_in_production: true,
        ..config.clone()
    };
    assert!(Chaos::new(allowed, Environment::Production).is_ok());
    let disabled = ChaosConfig {
        enabled: false,
        ..config
    };
    assert!(Chaos::new(disabled, Environment::Production).is_ok());
}

#[test]
fn config_and_environment_from_toml() {
    #[derive(serde::Deserialize)]
    struct Doc {
        environment: Environment,
        chaos: ChaosConfig,
    }
    let doc: Doc = toml::from_str(
        r#"
        environment = "staging"
        [chaos]
        enabled = true
        drop_rate = 0.01
        outcome_rate = 0.2
        outcome = { class = "retry_after", retry_after = "5s" }
        "#,
    )
    .unwrap();
    assert_eq!(doc.environment, Environment::Staging);
    let o: Outcome = doc.chaos.outcome.into();
    assert_eq!(o, Outcome::RetryAfter(Duration::from_secs(5)));
    let c: ChaosConfig = toml::from_str(r#"outcome = { class = "permanent" }"#).unwrap();
    assert_eq!(c.outcome, InjectedOutcome::Permanent);
    assert!(toml::from_str::<ChaosConfig>(r#"outcome = { class = "sometimes" }"#).is_err());
    assert!(toml::from_str::<ChaosConfig>("eror_rate = 0.1").is_err());
    assert!(toml::from_str::<Environment>("\"Production\"").is_err());
    for o in [
        Outcome::Success,
        Outcome::Transient,
        Outcome::RetryAfter(Duration::from_millis(3)),
        Outcome::Permanent,
        Outcome::Ignored,
    ] {
        assert_eq!(Outcome::from(InjectedOutcome::from(o)), o);
    }
}

#[test]
fn disabled_injects_nothing() {
    let (c, _clock, recorder) = chaos(ChaosConfig {
        enabled: false,
        error_rate: 1.0,
        ..Default::default()
    });
    assert!(!c.is_enabled());
    assert!((0..1000).all(|_| c.decide() == Injection::None));
    assert_eq!(recorder.count("chaos_injected"), 0);
}

#[test]
fn same_seed_same_sequence() {
    let config = |seed| ChaosConfig {
        error_rate: 0.2,
        latency_rate: 0.2,
        latency_max: Some(Duration::from_secs(5)),
        drop_rate: 0.2,
        outcome_rate: 0.2,
        ..enabled(seed)
    };
    let draw = |seed| {
        let (c, _, _) = chaos(config(seed));
        (0..500).map(|_| c.decide()).collect::<Vec<_>>()
    };
    assert_eq!(draw(42), draw(42));
    assert_ne!(draw(42), draw(43));
}

#[test]
fn rates_are_respected_over_many_draws() {
    let (c, _clock, recorder) = chaos(ChaosConfig {
        error_rate: 0.1,
        latency_rate: 0.2,
        drop_rate: 0.05,
        outcome_rate: 0.15,
        latency: Duration::from_millis(100),
        latency_max: Some(Duration::from_millis(300)),
        ..enabled(2026)
    });
    let n = 10_000;
    let mut counts = [0u32; 5];
    for _ in 0..n {
        let i = match c.decide() {
            Injection::None => 0,
            Injection::Error => 1,
            Injection::Latency(d) => {
                assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(300));
                2
            }
            Injection::Drop => 3,
            Injection::Outcome(o) => {
                assert_eq!(o, Outcome::Transient);
                4
            }
        };
        counts[i] += 1;
    }
    let expected = [0.5, 0.1, 0.2, 0.05, 0.15];
    for (count, p) in counts.iter().zip(expected) {
        let observed = f64::from(*count) / f64::from(n);
        // 5 standard deviations of a binomial proportion at n = 10,000 is at most 0.025.
        assert!((observed - p).abs() < 0.025, "{counts:?}");
    }
    let injected = n - counts[0];
    assert_eq!(recorder.count("chaos_injected"), injected as usize);
}

#[test]
fn fixed_latency_and_full_rates() {
    let (c, _, _) = chaos(ChaosConfig {
        latency_rate: 1.0,
        latency: Duration::from_millis(250),
        ..enabled(9)
    });
    assert!((0..100).all(|_| c.decide() == Injection::Latency(Duration::from_millis(250))));
    let (c, _, _) = chaos(ChaosConfig {
        drop_rate: 1.0,
        ..enabled(9)
    });
    assert!((0..100).all(|_| c.decide() == Injection::Drop));
    assert_eq!(Injection::Drop.fault(), Some(Fault::Drop));
    assert_eq!(Injection::None.fault(), None);
}

#[tokio::test]
async fn injected_error_does_not_run_the_call() {
    let (c, _, recorder) = chaos(ChaosConfig {
        error_rate: 1.0,
        ..enabled(1)
    });
    let ran = AtomicU32::new(0);
    let r: Result<(), Error<()>> = c
        .call(|| {
            ran.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
        .await;
    let err = r.unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::Injected(Injected {
            fault: Fault::Error
        })
    ));
    assert_eq!(err.policy_outcome(), Some(Outcome::Transient));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(recorder.count("chaos_injected"), 1);
}

#[tokio::test]
async fn latency_sleeps_on_the_clock_before_the_call() {
    let (c, clock, _) = chaos(ChaosConfig {
        latency_rate: 1.0,
        latency: Duration::from_secs(3),
        ..enabled(1)
    });
    let ran = Arc::new(AtomicU32::new(0));
    let r2 = ran.clone();
    let handle = tokio::spawn(async move {
        c.call(|| {
            r2.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, ()>(5) }
        })
        .await
    });
    while clock.pending_sleeps() == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(clock.next_sleep_in(), Some(Duration::from_secs(3)));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    clock.advance(Duration::from_secs(3));
    assert_eq!(handle.await.unwrap().unwrap(), 5);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn dropped_call_ends_only_by_timeout() {
    let (c, clock, _) = chaos(ChaosConfig {
        drop_rate: 1.0,
        ..enabled(1)
    });
    let timeout = Timeout::with_context(
        TimeoutConfig::new(Duration::from_secs(30)),
        Context::new("t").with_clock(clock.shared()),
    )
    .unwrap();
    let handle =
        tokio::spawn(async move { timeout.wrap(c.call(|| async { Ok::<_, ()>(()) })).await });
    while clock.pending_sleeps() == 0 {
        tokio::task::yield_now().await;
    }
    clock.advance(Duration::from_secs(29));
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    assert!(!handle.is_finished());
    clock.advance(Duration::from_secs(1));
    assert!(handle.await.unwrap().is_err());
}

#[tokio::test]
async fn injected_outcome_replaces_the_verdict() {
    let (c, _, _) = chaos(ChaosConfig {
        outcome_rate: 1.0,
        outcome: InjectedOutcome::RetryAfter {
            retry_after: Duration::from_secs(5),
        },
        ..enabled(1)
    });
    let ran = AtomicU32::new(0);
    let r: Result<u8, Error<()>> = c
        .call(|| {
            ran.fetch_add(1, Ordering::SeqCst);
            async { Ok(1) }
        })
        .await;
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    let err = r.unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::Rejected(Outcome::RetryAfter(d)) if *d == Duration::from_secs(5)
    ));
    let r: Result<u8, Error<&str>> = c.call(|| async { Err("inner") }).await;
    assert!(matches!(r.unwrap_err().kind(), ErrorKind::Rejected(_)));

    // A non-failure injected outcome leaves the result alone, even against the classifier.
    let (c, _, _) = chaos(ChaosConfig {
        outcome_rate: 1.0,
        outcome: InjectedOutcome::Success,
        ..enabled(1)
    });
    let always_transient = |_: &Result<u8, ()>| Outcome::Transient;
    let r = c
        .call_classified(&always_transient, || async { Ok::<u8, ()>(3) })
        .await;
    assert_eq!(r.unwrap(), 3);
}

#[tokio::test]
async fn without_injection_the_classifier_decides() {
    let (c, _, _) = chaos(ChaosConfig::default());
    let server_error = |r: &Result<u16, ()>| match r {
        Ok(s) if *s >= 500 => Outcome::Transient,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Transient,
    };
    let r = c.call_classified(&server_error, || async { Ok(503) }).await;
    assert!(matches!(
        r.unwrap_err().kind(),
        ErrorKind::Rejected(Outcome::Transient)
    ));
    let r = c.call_classified(&server_error, || async { Ok(200) }).await;
    assert_eq!(r.unwrap(), 200);
    let r = c.call_classified(&server_error, || async { Err(()) }).await;
    assert!(matches!(r.unwrap_err().kind(), ErrorKind::Inner(())));
}

fn echo() -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone {
    service_fn(|x: u32| async move { Ok::<_, BoxError>(x) })
}

#[tokio::test]
async fn tower_layer_injects_each_fault() {
    // Error.
    let (c, clock, _) = chaos(ChaosConfig {
        error_rate: 1.0,
        ..enabled(1)
    });
    let err = ChaosLayer::new(c)
        .layer(echo())
        .oneshot(1)
        .await
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<Injected>(),
        Some(&Injected {
            fault: Fault::Error
        })
    );

    // Latency: the response waits for the clock.
    let (c, clock2, _) = chaos(ChaosConfig {
        latency_rate: 1.0,
        latency: Duration::from_secs(2),
        ..enabled(1)
    });
    let handle = tokio::spawn(ChaosLayer::new(c).layer(echo()).oneshot(7));
    while clock2.pending_sleeps() == 0 {
        tokio::task::yield_now().await;
    }
    assert!(!handle.is_finished());
    clock2.advance(Duration::from_secs(2));
    assert_eq!(handle.await.unwrap().unwrap(), 7);

    // Outcome: a failure outcome replaces the response.
    let (c, _, _) = chaos(ChaosConfig {
        outcome_rate: 1.0,
        outcome: InjectedOutcome::Permanent,
        ..enabled(1)
    });
    let err = ChaosLayer::new(c)
        .layer(echo())
        .oneshot(1)
        .await
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<Injected>(),
        Some(&Injected {
            fault: Fault::Outcome
        })
    );

    // Drop: only the timeout layer outside it ends the request.
    let (c, _, _) = chaos(ChaosConfig {
        drop_rate: 1.0,
        ..enabled(1)
    });
    let timeout = Timeout::with_context(
        TimeoutConfig::new(Duration::from_secs(10)),
        Context::new("t").with_clock(clock.shared()),
    )
    .unwrap();
    let svc = TimeoutLayer::new(timeout).layer(ChaosLayer::new(c).layer(echo()));
    let handle = tokio::spawn(svc.oneshot(1));
    while clock.pending_sleeps() == 0 {
        tokio::task::yield_now().await;
    }
    clock.advance(Duration::from_secs(10));
    let err = handle.await.unwrap().unwrap_err();
    assert!(err.downcast_ref::<Elapsed>().is_some());

    // Disabled: the request passes untouched.
    let (c, _, _) = chaos(ChaosConfig::default());
    assert_eq!(
        ChaosLayer::new(c).layer(echo()).oneshot(9).await.unwrap(),
        9
    );
}
