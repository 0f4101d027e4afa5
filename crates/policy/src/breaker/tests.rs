//! Tests of the circuit breaker: config, transitions, model, concurrency and the tower layer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::error::ErrorKind;
use crate::event::Recorder;
use crate::{Context, Outcome};

mod model;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// A breaker on a manual clock with a recorder; `slow_call_duration` off unless set.
fn breaker(config: BreakerConfig) -> (CircuitBreaker, ManualClock, Arc<Recorder>) {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let ctx = Context::new("test")
        .with_clock(clock.shared())
        .with_observer(recorder.clone());
    let breaker = CircuitBreaker::with_context(config, ctx).expect("valid config");
    (breaker, clock, recorder)
}

fn count_config(n: u32, min_calls: u32) -> BreakerConfig {
    BreakerConfig {
        window: Window::Count(n),
        min_calls,
        slow_call_duration: None,
        ..BreakerConfig::default()
    }
}

fn record(b: &CircuitBreaker, outcome: Outcome) {
    b.try_acquire().expect("admitted").record(outcome);
}

fn transitions(recorder: &Recorder) -> Vec<String> {
    recorder
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("breaker_transition"))
        .map(|l| {
            let from = l.split("from: ").nth(1).and_then(|s| s.split(',').next());
            let to = l.split("to: ").nth(1).and_then(|s| s.split(' ').next());
            format!("{}->{}", from.unwrap_or("?"), to.unwrap_or("?"))
        })
        .collect()
}

/// Trips a count-window breaker (min_calls ≤ n) with failures.
fn trip(b: &CircuitBreaker) {
    while b.raw_state() == CircuitState::Closed {
        record(b, Outcome::Transient);
    }
    assert_eq!(b.raw_state(), CircuitState::Open);
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[test]
fn default_config_is_valid_and_documented_values() {
    let c = BreakerConfig::default();
    c.validate().unwrap();
    assert_eq!(c.window, Window::Count(100));
    assert_eq!(c.min_calls, 10);
    assert_eq!(c.failure_rate, 0.5);
    assert_eq!(c.slow_call_rate, 1.0);
    assert_eq!(c.slow_call_duration, Some(secs(10)));
    assert_eq!(c.open_for, secs(30));
    assert_eq!(c.open_backoff, 1.0);
    assert_eq!(c.half_open_probes, 1);
    assert_eq!(c.half_open_successes, 1);
    assert!(!c.permanent_is_failure);
}

#[test]
fn toml_window_forms() {
    let c: BreakerConfig = toml::from_str("window = { count = 50 }").unwrap();
    assert_eq!(c.window, Window::Count(50));
    let c: BreakerConfig = toml::from_str(r#"window = { time = "60s", buckets = 12 }"#).unwrap();
    assert_eq!(
        c.window,
        Window::Time {
            duration: secs(60),
            buckets: 12
        }
    );
    let c: BreakerConfig = toml::from_str(r#"window = { time = "2m" }"#).unwrap();
    assert_eq!(
        c.window,
        Window::Time {
            duration: secs(120),
            buckets: 10
        }
    );
    for bad in [
        r#"window = { count = 5, time = "1s" }"#,
        "window = { buckets = 5 }",
        "window = { count = 5, buckets = 5 }",
        "window = {}",
        "window = { size = 5 }",
        "windows = { count = 5 }",
    ] {
        assert!(toml::from_str::<BreakerConfig>(bad).is_err(), "{bad}");
    }
}

#[test]
fn toml_full_config_and_round_trip() {
    let c: BreakerConfig = toml::from_str(
        r#"
        window = { time = "30s", buckets = 6 }
        min_calls = 20
        failure_rate = 0.7
        slow_call_rate = 0.8
        slow_call_duration = "2s 500ms"
        consecutive_failures = 5
        open_for = "45s"
        open_backoff = 2.0
        max_open_for = "10m"
        half_open_probes = 3
        half_open_successes = 2
        permanent_is_failure = true
        "#,
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.slow_call_duration, Some(ms(2500)));
    assert_eq!(c.consecutive_failures, Some(5));
    assert_eq!(c.max_open_for, Some(secs(600)));
    let text = toml::to_string(&c).unwrap();
    assert_eq!(toml::from_str::<BreakerConfig>(&text).unwrap(), c);
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<BreakerConfig>(&json).unwrap(), c);
}

#[test]
fn slow_call_tracking_can_be_switched_off() {
    let c: BreakerConfig = toml::from_str(r#"slow_call_duration = "off""#).unwrap();
    assert_eq!(c.slow_call_duration, None);
    let text = toml::to_string(&c).unwrap();
    assert!(text.contains(r#"slow_call_duration = "off""#), "{text}");
    assert_eq!(toml::from_str::<BreakerConfig>(&text).unwrap(), c);
    let c: BreakerConfig = serde_json::from_str(r#"{"slow_call_duration": null}"#).unwrap();
    assert_eq!(c.slow_call_duration, None);
    assert!(toml::from_str::<BreakerConfig>(r#"slow_call_duration = "soon""#).is_err());
    // Absent means the default.
    let c: BreakerConfig = toml::from_str("").unwrap();
    assert_eq!(c.slow_call_duration, Some(secs(10)));
}

#[test]
fn validate_names_each_bad_field() {
    let base = BreakerConfig::default;
    let cases: Vec<(BreakerConfig, &str)> = vec![
        (
            BreakerConfig {
                window: Window::Count(0),
                min_calls: 0,
                ..base()
            },
            "window.count",
        ),
        (
            BreakerConfig {
                window: Window::Count(2_000_000),
                ..base()
            },
            "window.count",
        ),
        (
            BreakerConfig {
                window: Window::Count(5),
                ..base()
            },
            "min_calls",
        ),
        (
            BreakerConfig {
                min_calls: 0,
                ..base()
            },
            "min_calls",
        ),
        (
            BreakerConfig {
                window: Window::Time {
                    duration: Duration::ZERO,
                    buckets: 1,
                },
                ..base()
            },
            "window.time",
        ),
        (
            BreakerConfig {
                window: Window::Time {
                    duration: secs(10),
                    buckets: 0,
                },
                ..base()
            },
            "window.buckets",
        ),
        (
            BreakerConfig {
                window: Window::Time {
                    duration: ms(5),
                    buckets: 6,
                },
                ..base()
            },
            "window.buckets",
        ),
        (
            BreakerConfig {
                window: Window::Time {
                    duration: secs(100_000),
                    buckets: 20_000,
                },
                ..base()
            },
            "window.buckets",
        ),
        (
            BreakerConfig {
                failure_rate: 1.5,
                ..base()
            },
            "failure_rate",
        ),
        (
            BreakerConfig {
                failure_rate: f64::NAN,
                ..base()
            },
            "failure_rate",
        ),
        (
            BreakerConfig {
                slow_call_rate: -0.1,
                ..base()
            },
            "slow_call_rate",
        ),
        (
            BreakerConfig {
                slow_call_duration: Some(Duration::ZERO),
                ..base()
            },
            "slow_call_duration",
        ),
        (
            BreakerConfig {
                consecutive_failures: Some(0),
                ..base()
            },
            "consecutive_failures",
        ),
        (
            BreakerConfig {
                open_for: Duration::ZERO,
                ..base()
            },
            "open_for",
        ),
        (
            BreakerConfig {
                open_backoff: 0.5,
                ..base()
            },
            "open_backoff",
        ),
        (
            BreakerConfig {
                open_backoff: f64::INFINITY,
                ..base()
            },
            "open_backoff",
        ),
        (
            BreakerConfig {
                max_open_for: Some(secs(10)),
                ..base()
            },
            "max_open_for",
        ),
        (
            BreakerConfig {
                half_open_probes: 0,
                ..base()
            },
            "half_open_probes",
        ),
        (
            BreakerConfig {
                half_open_probes: 70_000,
                ..base()
            },
            "half_open_probes",
        ),
        (
            BreakerConfig {
                half_open_successes: 0,
                ..base()
            },
            "half_open_successes",
        ),
        (
            BreakerConfig {
                half_open_successes: u32::MAX,
                ..base()
            },
            "half_open_successes",
        ),
    ];
    for (config, field) in cases {
        let err = config.validate().expect_err(field);
        assert_eq!(err.field(), field, "{err}");
        assert_eq!(CircuitBreaker::new(config).expect_err(field).field(), field);
    }
}

#[test]
fn extreme_but_valid_values_do_not_panic() {
    let (b, clock, _) = breaker(BreakerConfig {
        window: Window::Time {
            duration: Duration::MAX,
            buckets: 10_000,
        },
        min_calls: 1,
        open_for: Duration::MAX,
        slow_call_duration: Some(Duration::MAX),
        ..BreakerConfig::default()
    });
    record(&b, Outcome::Transient);
    assert_eq!(b.state(), CircuitState::Open);
    clock.advance(secs(1_000_000_000));
    assert_eq!(b.state(), CircuitState::Open);
    assert!(b.try_acquire().is_err());
    // At the very end of representable time the wait saturates and the circuit half-opens.
    clock.advance(Duration::MAX);
    let _ = b.status();
    let _ = b.retry_at();
    b.try_acquire().expect("probe").record(Outcome::Transient);

    // A huge backoff saturates instead of overflowing.
    let (b, clock, _) = breaker(BreakerConfig {
        open_for: secs(1),
        open_backoff: f64::MAX,
        ..count_config(1, 1)
    });
    record(&b, Outcome::Transient);
    clock.advance(secs(1));
    record(&b, Outcome::Transient); // failed probe: the wait becomes "forever"
    assert_eq!(b.state(), CircuitState::Open);
    assert!(b.remaining_open().unwrap() > secs(100 * 365 * 24 * 3600));
    let _ = b.retry_at();
}

// ---------------------------------------------------------------------------------------------
// Closed → Open

#[test]
fn opens_on_failure_rate_once_min_calls_reached() {
    let (b, _, rec) = breaker(count_config(10, 4));
    record(&b, Outcome::Transient);
    record(&b, Outcome::Transient);
    record(&b, Outcome::Transient);
    // 3 of 3 failed, but min_calls is 4.
    assert_eq!(b.state(), CircuitState::Closed);
    record(&b, Outcome::Success);
    // 3 of 4 = 75% ≥ 50%.
    assert_eq!(b.state(), CircuitState::Open);
    assert_eq!(transitions(&rec), ["Closed->Open"]);
    let status = b.status();
    assert_eq!((status.calls, status.failed_calls), (4, 3));
    assert_eq!(status.failure_rate, 0.75);
}

#[test]
fn stays_closed_below_failure_rate_and_slides() {
    let (b, _, _) = breaker(BreakerConfig {
        failure_rate: 0.5,
        ..count_config(4, 4)
    });
    for outcome in [
        Outcome::Transient,
        Outcome::Success,
        Outcome::Success,
        Outcome::Success,
    ] {
        record(&b, outcome);
    }
    assert_eq!(b.status().failed_calls, 1);
    // The old failure slides out as new successes arrive.
    record(&b, Outcome::Success);
    let status = b.status();
    assert_eq!((status.calls, status.failed_calls), (4, 0));
    record(&b, Outcome::Transient);
    assert_eq!(b.state(), CircuitState::Closed);
    record(&b, Outcome::Transient);
    // Window: S S T T → 50%.
    assert_eq!(b.state(), CircuitState::Open);
}

#[test]
fn failure_rate_threshold_is_exact_for_decimal_rates() {
    let (b, _, _) = breaker(BreakerConfig {
        failure_rate: 0.3,
        ..count_config(10, 10)
    });
    for i in 0..10 {
        record(
            &b,
            if i < 3 {
                Outcome::Transient
            } else {
                Outcome::Success
            },
        );
    }
    assert_eq!(b.state(), CircuitState::Open, "3 of 10 is 0.3");
}

#[test]
fn zero_failure_rate_means_any_failure() {
    let (b, _, _) = breaker(BreakerConfig {
        failure_rate: 0.0,
        ..count_config(5, 2)
    });
    for _ in 0..10 {
        record(&b, Outcome::Success);
    }
    assert_eq!(b.state(), CircuitState::Closed);
    record(&b, Outcome::Transient);
    assert_eq!(b.state(), CircuitState::Open);
}

#[test]
fn opens_on_slow_call_rate() {
    let (b, clock, _) = breaker(BreakerConfig {
        slow_call_duration: Some(secs(2)),
        slow_call_rate: 0.5,
        failure_rate: 1.0,
        ..count_config(4, 4)
    });
    let slow = |b: &CircuitBreaker| {
        let permit = b.try_acquire().unwrap();
        clock.advance(secs(2));
        permit.record(Outcome::Success);
    };
    record(&b, Outcome::Success);
    slow(&b);
    record(&b, Outcome::Success);
    assert_eq!(b.state(), CircuitState::Closed);
    let status = b.status();
    assert_eq!(
        (status.calls, status.slow_calls, status.failed_calls),
        (3, 1, 0)
    );
    // A call just under the limit is not slow.
    let permit = b.try_acquire().unwrap();
    clock.advance(ms(1999));
    permit.record(Outcome::Success);
    assert_eq!(b.status().slow_calls, 1);
    assert_eq!(b.state(), CircuitState::Closed);
    slow(&b);
    // The first call slid out: slow, fast, fast, slow is 2 of 4.
    assert_eq!(b.state(), CircuitState::Open);
    assert_eq!(
        b.status().failed_calls,
        0,
        "slow successes are not failures"
    );
}

#[test]
fn slow_failures_count_as_both() {
    let (b, clock, _) = breaker(BreakerConfig {
        slow_call_duration: Some(secs(1)),
        failure_rate: 1.0,
        slow_call_rate: 1.0,
        ..count_config(4, 4)
    });
    let permit = b.try_acquire().unwrap();
    clock.advance(secs(1));
    permit.record(Outcome::Transient);
    record(&b, Outcome::Success);
    let status = b.status();
    assert_eq!(
        (status.calls, status.failed_calls, status.slow_calls),
        (2, 1, 1)
    );
}

#[test]
fn opens_on_consecutive_failures_regardless_of_window() {
    let (b, _, rec) = breaker(BreakerConfig {
        consecutive_failures: Some(3),
        failure_rate: 1.0,
        ..count_config(100, 100)
    });
    for _ in 0..50 {
        record(&b, Outcome::Success);
    }
    record(&b, Outcome::Transient);
    record(&b, Outcome::Transient);
    record(&b, Outcome::Success); // breaks the run
    record(&b, Outcome::Transient);
    record(&b, Outcome::Ignored); // does not break it
    record(&b, Outcome::Transient);
    assert_eq!(b.status().consecutive_failures, 2);
    assert_eq!(b.state(), CircuitState::Closed);
    record(&b, Outcome::RetryAfter(secs(1)));
    assert_eq!(b.state(), CircuitState::Open);
    assert_eq!(transitions(&rec), ["Closed->Open"]);
}

#[test]
fn permanent_counts_as_success_by_default() {
    let (b, _, _) = breaker(count_config(4, 4));
    for _ in 0..4 {
        record(&b, Outcome::Permanent);
    }
    assert_eq!(b.state(), CircuitState::Closed);
    assert_eq!(b.status().calls, 4);
    assert_eq!(b.status().failed_calls, 0);

    let (b, _, _) = breaker(BreakerConfig {
        permanent_is_failure: true,
        ..count_config(4, 4)
    });
    for _ in 0..4 {
        record(&b, Outcome::Permanent);
    }
    assert_eq!(b.state(), CircuitState::Open);
}

#[test]
fn ignored_and_dropped_calls_are_not_counted() {
    let (b, _, _) = breaker(count_config(4, 1));
    record(&b, Outcome::Ignored);
    drop(b.try_acquire().unwrap());
    drop(b.try_acquire_owned().unwrap());
    let status = b.status();
    assert_eq!(status.calls, 0);
    assert_eq!(status.total_calls, 3);
}

#[test]
fn time_window_buckets_expire_as_the_clock_moves() {
    let (b, clock, _) = breaker(BreakerConfig {
        window: Window::Time {
            duration: secs(10),
            buckets: 5,
        },
        min_calls: 4,
        slow_call_duration: None,
        ..BreakerConfig::default()
    });
    record(&b, Outcome::Transient); // bucket [0, 2s)
    clock.advance(secs(2));
    record(&b, Outcome::Transient); // [2, 4)
    record(&b, Outcome::Success);
    clock.advance(secs(7)); // t = 9s: everything still in the last 10 s
    assert_eq!(b.status().calls, 3);
    clock.advance(secs(1)); // t = 10s: the first bucket has left the window
    let status = b.status();
    assert_eq!((status.calls, status.failed_calls), (2, 1));
    record(&b, Outcome::Success); // 1 failure of 3
    record(&b, Outcome::Success); // 1 of 4 → stays closed
    assert_eq!(b.state(), CircuitState::Closed);
    clock.advance(secs(4)); // t = 14s: the [2, 4) bucket is gone too
    assert_eq!(b.status().calls, 2);
    record(&b, Outcome::Transient);
    record(&b, Outcome::Transient); // 2 of 4 = 50%
    assert_eq!(b.state(), CircuitState::Open);
    // A long pause empties the window; buckets are reused for new epochs.
    b.reset();
    clock.advance(secs(3600));
    assert_eq!(b.status().calls, 0);
    record(&b, Outcome::Transient);
    assert_eq!(b.status().calls, 1);
}

// ---------------------------------------------------------------------------------------------
// Open, half-open and back

fn open_config() -> BreakerConfig {
    BreakerConfig {
        open_for: secs(30),
        ..count_config(2, 2)
    }
}

#[test]
fn open_rejects_with_remaining_then_half_opens_after_the_wait() {
    let (b, clock, rec) = breaker(open_config());
    trip(&b);
    let err = b.try_acquire().unwrap_err();
    assert_eq!(
        err,
        CircuitOpen {
            state: CircuitState::Open,
            remaining: Some(secs(30))
        }
    );
    clock.advance(secs(29));
    assert_eq!(b.remaining_open(), Some(secs(1)));
    assert_eq!(b.try_acquire().unwrap_err().remaining, Some(secs(1)));
    assert_eq!(rec.count("breaker_rejected"), 2);
    clock.advance(secs(1));
    let probe = b.try_acquire().expect("probe admitted");
    assert_eq!(probe.state(), CircuitState::HalfOpen);
    assert_eq!(b.raw_state(), CircuitState::HalfOpen);
    assert_eq!(b.remaining_open(), None);
    assert_eq!(transitions(&rec), ["Closed->Open", "Open->HalfOpen"]);
    assert_eq!(b.status().probes_in_flight, 1);
    drop(probe);
}

#[test]
fn state_moves_to_half_open_lazily() {
    let (b, clock, rec) = breaker(open_config());
    trip(&b);
    clock.advance(secs(31));
    assert_eq!(
        b.raw_state(),
        CircuitState::Open,
        "nothing happens by itself"
    );
    assert_eq!(b.state(), CircuitState::HalfOpen);
    assert_eq!(b.state(), CircuitState::HalfOpen);
    assert_eq!(transitions(&rec), ["Closed->Open", "Open->HalfOpen"]);
}

#[test]
fn half_open_admits_exactly_k_probes() {
    let (b, clock, _) = breaker(BreakerConfig {
        half_open_probes: 3,
        half_open_successes: 3,
        ..open_config()
    });
    trip(&b);
    clock.advance(secs(30));
    let probes: Vec<_> = (0..3).map(|_| b.try_acquire().expect("probe")).collect();
    let busy = b.try_acquire().unwrap_err();
    assert_eq!(
        busy,
        CircuitOpen {
            state: CircuitState::HalfOpen,
            remaining: Some(Duration::ZERO)
        }
    );
    assert_eq!(b.status().probes_in_flight, 3);
    // Error::policy_outcome turns a busy half-open circuit into a plain transient failure.
    let e: crate::Error<()> = busy.into();
    assert_eq!(e.policy_outcome(), Some(Outcome::Transient));
    let mut probes = probes.into_iter();
    probes.next().unwrap().record(Outcome::Success);
    // One slot freed: one more probe, then full again.
    let fourth = b.try_acquire().expect("freed slot");
    assert!(b.try_acquire().is_err());
    drop(fourth); // ignored: frees the slot without counting
    assert_eq!(b.status().probes_in_flight, 2);
    probes.next().unwrap().record(Outcome::Success);
    assert_eq!(b.state(), CircuitState::HalfOpen, "2 of 3 successes");
    probes.next().unwrap().record(Outcome::Success);
    assert_eq!(b.state(), CircuitState::Closed);
}

#[test]
fn m_successes_close_and_clear_the_window() {
    let (b, clock, rec) = breaker(BreakerConfig {
        half_open_successes: 2,
        consecutive_failures: Some(5),
        ..open_config()
    });
    trip(&b);
    assert!(b.status().calls > 0);
    clock.advance(secs(30));
    record(&b, Outcome::Success);
    assert_eq!(b.state(), CircuitState::HalfOpen);
    record(&b, Outcome::Ignored);
    assert_eq!(
        b.state(),
        CircuitState::HalfOpen,
        "ignored probes do not count"
    );
    record(&b, Outcome::Success);
    assert_eq!(b.state(), CircuitState::Closed);
    let status = b.status();
    assert_eq!((status.calls, status.consecutive_failures), (0, 0));
    assert_eq!(
        transitions(&rec),
        ["Closed->Open", "Open->HalfOpen", "HalfOpen->Closed"]
    );
    // The window starts afresh: one failure of one call is below min_calls.
    record(&b, Outcome::Transient);
    assert_eq!(b.state(), CircuitState::Closed);
}

#[test]
fn probe_failure_reopens_with_growing_capped_wait() {
    let (b, clock, rec) = breaker(BreakerConfig {
        open_for: secs(10),
        open_backoff: 2.0,
        max_open_for: Some(secs(35)),
        ..count_config(2, 2)
    });
    trip(&b);
    let mut waits = vec![b.remaining_open().unwrap()];
    for _ in 0..4 {
        clock.advance(b.remaining_open().unwrap());
        record(&b, Outcome::Transient); // the probe fails
        assert_eq!(b.raw_state(), CircuitState::Open);
        waits.push(b.remaining_open().unwrap());
        assert_eq!(b.status().open_wait, *waits.last().unwrap());
    }
    assert_eq!(waits, [secs(10), secs(20), secs(35), secs(35), secs(35)]);
    // Closing resets the wait to open_for.
    clock.advance(secs(35));
    record(&b, Outcome::Success);
    assert_eq!(b.state(), CircuitState::Closed);
    assert_eq!(b.status().open_wait, secs(10));
    trip(&b);
    assert_eq!(b.remaining_open(), Some(secs(10)));
    assert_eq!(rec.count("breaker_transition"), 1 + 4 * 2 + 2 + 1);
}

#[test]
fn fractional_backoff_without_cap() {
    let (b, clock, _) = breaker(BreakerConfig {
        open_for: secs(10),
        open_backoff: 1.5,
        ..count_config(2, 2)
    });
    trip(&b);
    for expected in [secs(15), ms(22_500)] {
        clock.advance(b.remaining_open().unwrap());
        record(&b, Outcome::Transient);
        assert_eq!(b.remaining_open(), Some(expected));
    }
}

#[test]
fn slow_probe_reopens() {
    let (b, clock, _) = breaker(BreakerConfig {
        slow_call_duration: Some(secs(1)),
        ..open_config()
    });
    trip(&b);
    clock.advance(secs(30));
    let probe = b.try_acquire().unwrap();
    clock.advance(secs(1));
    probe.record(Outcome::Success);
    assert_eq!(b.raw_state(), CircuitState::Open);
}

#[test]
fn stale_permits_are_ignored() {
    let (b, clock, _) = breaker(open_config());
    let old = b.try_acquire().unwrap(); // admitted while closed
    trip(&b);
    clock.advance(secs(30));
    let probe = b.try_acquire().unwrap();
    // A failure from before the circuit opened does not judge the probe period...
    old.record(Outcome::Transient);
    assert_eq!(b.raw_state(), CircuitState::HalfOpen);
    assert_eq!(b.status().probes_in_flight, 1);
    probe.record(Outcome::Success);
    assert_eq!(b.state(), CircuitState::Closed);
    // ...nor does a probe permit outliving its period.
    let (b, clock, _) = breaker(BreakerConfig {
        half_open_probes: 2,
        ..open_config()
    });
    trip(&b);
    clock.advance(secs(30));
    let first = b.try_acquire().unwrap();
    let second = b.try_acquire().unwrap();
    first.record(Outcome::Success);
    assert_eq!(b.state(), CircuitState::Closed);
    second.record(Outcome::Transient);
    assert_eq!(b.state(), CircuitState::Closed);
    assert_eq!(b.status().calls, 0);
}

// ---------------------------------------------------------------------------------------------
// Operator overrides

#[test]
fn forced_open_rejects_without_remaining_until_reset() {
    let (b, clock, rec) = breaker(open_config());
    b.force_open();
    b.force_open();
    assert_eq!(b.state(), CircuitState::ForcedOpen);
    let err = b.try_acquire().unwrap_err();
    assert_eq!(
        err,
        CircuitOpen {
            state: CircuitState::ForcedOpen,
            remaining: None
        }
    );
    clock.advance(secs(3600));
    assert!(b.try_acquire_owned().is_err());
    assert_eq!(b.remaining_open(), None);
    assert_eq!(b.retry_at(), None);
    b.reset();
    assert_eq!(b.state(), CircuitState::Closed);
    assert!(b.try_acquire().is_ok());
    assert_eq!(
        transitions(&rec),
        ["Closed->ForcedOpen", "ForcedOpen->Closed"]
    );
    assert_eq!(rec.count("breaker_rejected"), 2);
    let e: crate::Error<()> = err.into();
    assert_eq!(e.policy_outcome(), Some(Outcome::Permanent));
}

#[test]
fn disabled_admits_everything_and_records_nothing() {
    let (b, _, rec) = breaker(BreakerConfig {
        consecutive_failures: Some(1),
        ..count_config(2, 1)
    });
    b.disable();
    for _ in 0..100 {
        let permit = b.try_acquire().unwrap();
        assert_eq!(permit.state(), CircuitState::Disabled);
        permit.record(Outcome::Transient);
    }
    let status = b.status();
    assert_eq!(status.state, CircuitState::Disabled);
    assert_eq!((status.calls, status.consecutive_failures), (0, 0));
    assert_eq!(status.total_calls, 100);
    b.reset();
    record(&b, Outcome::Transient);
    assert_eq!(b.state(), CircuitState::Open);
    assert_eq!(
        transitions(&rec),
        ["Closed->Disabled", "Disabled->Closed", "Closed->Open"]
    );
}

#[test]
fn reset_clears_the_window_from_any_state() {
    let (b, clock, rec) = breaker(BreakerConfig {
        open_backoff: 2.0,
        ..count_config(4, 4)
    });
    record(&b, Outcome::Transient);
    record(&b, Outcome::Transient);
    record(&b, Outcome::Transient);
    b.reset(); // already closed: no transition, but a fresh window
    assert!(rec.lines().is_empty());
    assert_eq!(b.status().calls, 0);
    record(&b, Outcome::Transient);
    assert_eq!(b.state(), CircuitState::Closed, "only 1 call since reset");
    trip(&b);
    clock.advance(secs(30));
    record(&b, Outcome::Transient); // probe fails: wait doubles
    assert_eq!(b.status().open_wait, secs(60));
    b.reset();
    let status = b.status();
    assert_eq!(status.state, CircuitState::Closed);
    assert_eq!(status.open_wait, secs(30));
    assert_eq!(status.calls, 0);
}

// ---------------------------------------------------------------------------------------------
// Status, retry_at, standalone calls

#[test]
fn status_serialises_for_the_status_page() {
    let (b, clock, _) = breaker(open_config());
    trip(&b);
    let _ = b.try_acquire();
    clock.advance(ms(12_500));
    let status = b.status();
    assert_eq!(status.name, "test");
    assert_eq!(status.state, CircuitState::Open);
    assert_eq!(status.remaining_open, Some(ms(17_500)));
    assert_eq!(status.total_rejected, 1);
    assert_eq!(status.total_transitions, 1);
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["state"], "open");
    assert_eq!(json["remaining_open_ms"], 17_500);
    assert_eq!(json["open_wait_ms"], 30_000);
    assert_eq!(json["calls"], 2);
    assert_eq!(json["failed_calls"], 2);
    assert_eq!(json["failure_rate"], 1.0);
    assert_eq!(json["total_calls"], 2);
}

#[test]
fn status_durations_serialise_as_milliseconds_rounded_up() {
    let (b, clock, _) = breaker(open_config());
    let json = serde_json::to_value(b.status()).unwrap();
    assert_eq!(json["remaining_open_ms"], serde_json::Value::Null, "closed");
    assert!(json.get("remaining_open").is_none(), "{json}");
    trip(&b);
    clock.advance(Duration::from_nanos(26_846_607_469));
    let json = serde_json::to_value(b.status()).unwrap();
    // 3s 153ms 392us 531ns left: never 0 ms while the circuit is open.
    assert_eq!(json["remaining_open_ms"], 3_154);
    clock.advance(ms(3_153));
    let json = serde_json::to_value(b.status()).unwrap();
    assert_eq!(json["state"], "open");
    assert_eq!(json["remaining_open_ms"], 1);
}

#[test]
fn retry_at_says_when_a_probe_may_run() {
    let (b, clock, _) = breaker(open_config());
    let now = || crate::Clock::now(&clock);
    assert_eq!(b.retry_at(), Some(now()));
    trip(&b);
    let opened = now();
    clock.advance(secs(10));
    assert_eq!(b.retry_at(), Some(opened + secs(30)));
    clock.advance(secs(20));
    assert_eq!(b.retry_at(), Some(now()));
    assert_eq!(b.state(), CircuitState::HalfOpen);
}

#[tokio::test]
async fn call_records_and_rejects() {
    let (b, _, _) = breaker(BreakerConfig {
        failure_rate: 1.0,
        ..count_config(2, 2)
    });
    let ok: Result<u32, crate::Error<std::io::Error>> = b.call(|| async { Ok(7) }).await;
    assert_eq!(ok.unwrap(), 7);
    for _ in 0..2 {
        let err = b
            .call(|| async { Err::<u32, _>(std::io::Error::other("down")) })
            .await
            .unwrap_err();
        assert_eq!(err.as_inner().unwrap().to_string(), "down");
    }
    assert_eq!(b.state(), CircuitState::Open);
    let ran = AtomicUsize::new(0);
    let err = b
        .call(|| async {
            ran.fetch_add(1, Ordering::Relaxed);
            Ok::<u32, std::io::Error>(1)
        })
        .await
        .unwrap_err();
    assert_eq!(ran.load(Ordering::Relaxed), 0, "rejected calls do not run");
    assert!(err.is_rejection());
    assert!(matches!(
        err.kind(),
        ErrorKind::CircuitOpen(CircuitOpen {
            state: CircuitState::Open,
            ..
        })
    ));
}

#[tokio::test]
async fn call_classified_judges_ok_values_and_returns_them() {
    let (b, _, _) = breaker(count_config(2, 2));
    let by_status = |r: &Result<u16, ()>| match r {
        Ok(s) if *s >= 500 => Outcome::Transient,
        _ => Outcome::Success,
    };
    for _ in 0..2 {
        let reply = b
            .call_classified(&by_status, || async { Ok::<_, ()>(503) })
            .await;
        assert_eq!(reply.unwrap(), 503);
    }
    assert_eq!(b.state(), CircuitState::Open);
}

#[tokio::test]
async fn cancelled_call_frees_its_probe_slot() {
    let (b, clock, _) = breaker(open_config());
    trip(&b);
    clock.advance(secs(30));
    let b2 = b.clone();
    let task = tokio::spawn(async move {
        b2.call(std::future::pending::<Result<(), ()>>).await.ok();
    });
    while b.status().probes_in_flight == 0 {
        tokio::task::yield_now().await;
    }
    assert!(b.try_acquire().is_err(), "the only probe slot is taken");
    task.abort();
    let _ = task.await;
    assert_eq!(b.status().probes_in_flight, 0);
    assert_eq!(b.state(), CircuitState::HalfOpen);
    record(&b, Outcome::Success);
    assert_eq!(b.state(), CircuitState::Closed);
}

// ---------------------------------------------------------------------------------------------
// Tower layer

#[tokio::test]
async fn tower_layer_opens_and_rejects_with_a_downcastable_error() {
    use tower::{Service, ServiceBuilder, ServiceExt};

    let (b, clock, _) = breaker(BreakerConfig {
        failure_rate: 1.0,
        ..count_config(2, 2)
    });
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let mut service = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(b.clone()))
        .service_fn(move |fail: bool| {
            counter.fetch_add(1, Ordering::Relaxed);
            async move {
                if fail {
                    Err(std::io::Error::other("boom"))
                } else {
                    Ok("ok")
                }
            }
        });
    assert_eq!(
        service.ready().await.unwrap().call(false).await.unwrap(),
        "ok"
    );
    for _ in 0..2 {
        let err = service.ready().await.unwrap().call(true).await.unwrap_err();
        assert_eq!(
            err.downcast_ref::<std::io::Error>().unwrap().to_string(),
            "boom"
        );
    }
    assert_eq!(b.state(), CircuitState::Open);
    let err = service
        .ready()
        .await
        .unwrap()
        .call(false)
        .await
        .unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().expect("CircuitOpen");
    assert_eq!(open.state, CircuitState::Open);
    assert_eq!(
        calls.load(Ordering::Relaxed),
        3,
        "rejected call never reached the service"
    );
    clock.advance(secs(30));
    assert_eq!(
        service.ready().await.unwrap().call(false).await.unwrap(),
        "ok"
    );
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test]
async fn tower_layer_uses_the_classifier() {
    use tower::{ServiceBuilder, ServiceExt};

    let (b, _, _) = breaker(count_config(2, 2));
    let layer = CircuitBreakerLayer::new(b.clone()).with_classifier(
        |r: &Result<u16, std::convert::Infallible>| match r {
            Ok(503) => Outcome::Transient,
            _ => Outcome::Success,
        },
    );
    let service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|code: u16| async move { Ok::<_, std::convert::Infallible>(code) });
    assert_eq!(service.clone().oneshot(503).await.unwrap(), 503);
    assert_eq!(service.clone().oneshot(200).await.unwrap(), 200);
    assert_eq!(b.status().failed_calls, 1);
    // 1 failure of 2 calls reaches the 50% threshold.
    assert_eq!(b.state(), CircuitState::Open);
    let err = service.oneshot(200).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
}

// ---------------------------------------------------------------------------------------------
// Concurrency

#[test]
fn half_open_never_admits_more_than_k_probes_under_contention() {
    const K: u32 = 3;
    const THREADS: usize = 8;
    let (b, clock, rec) = breaker(BreakerConfig {
        half_open_probes: K,
        half_open_successes: 10_000,
        ..open_config()
    });
    trip(&b);
    clock.advance(secs(30));
    let in_flight = AtomicU32::new(0);
    let max_seen = AtomicU32::new(0);
    let admitted = AtomicUsize::new(0);
    let barrier = std::sync::Barrier::new(THREADS);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                barrier.wait();
                for i in 0..2_000 {
                    if let Ok(permit) = b.try_acquire() {
                        assert_eq!(permit.state(), CircuitState::HalfOpen);
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        max_seen.fetch_max(now, Ordering::SeqCst);
                        admitted.fetch_add(1, Ordering::Relaxed);
                        std::hint::spin_loop();
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        if i % 2 == 0 {
                            permit.record(Outcome::Ignored);
                        } else {
                            drop(permit);
                        }
                    }
                }
            });
        }
    });
    assert!(max_seen.load(Ordering::SeqCst) <= K);
    assert!(admitted.load(Ordering::Relaxed) > 0);
    assert_eq!(b.status().probes_in_flight, 0);
    assert_eq!(transitions(&rec), ["Closed->Open", "Open->HalfOpen"]);
}

#[test]
fn racing_threads_emit_each_transition_once() {
    const THREADS: usize = 8;
    let (b, clock, rec) = breaker(BreakerConfig {
        half_open_probes: THREADS as u32,
        ..count_config(50, 10)
    });
    let barrier = std::sync::Barrier::new(THREADS);
    let hammer = |outcome: Outcome| {
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    barrier.wait();
                    for _ in 0..500 {
                        if let Ok(permit) = b.try_acquire() {
                            permit.record(outcome);
                        }
                    }
                });
            }
        });
    };
    hammer(Outcome::Transient); // closed → open, once
    assert_eq!(b.raw_state(), CircuitState::Open);
    clock.advance(secs(30));
    hammer(Outcome::Transient); // open → half-open → open, once each
    assert_eq!(b.raw_state(), CircuitState::Open);
    clock.advance(secs(30));
    hammer(Outcome::Success); // open → half-open → closed, once each
    assert_eq!(b.raw_state(), CircuitState::Closed);
    assert_eq!(
        transitions(&rec),
        [
            "Closed->Open",
            "Open->HalfOpen",
            "HalfOpen->Open",
            "Open->HalfOpen",
            "HalfOpen->Closed"
        ]
    );
    assert_eq!(b.status().total_transitions, 5);
}

#[test]
fn concurrent_closed_recording_keeps_counts_in_range() {
    const THREADS: usize = 8;
    let (b, _, _) = breaker(BreakerConfig {
        failure_rate: 1.0,
        ..count_config(3, 3)
    });
    let barrier = std::sync::Barrier::new(THREADS);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let b = &b;
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for i in 0..5_000 {
                    let outcome = if (i + t) % 3 == 0 {
                        Outcome::Transient
                    } else {
                        Outcome::Success
                    };
                    if let Ok(p) = b.try_acquire() {
                        p.record(outcome);
                    }
                    let status = b.status();
                    assert!(status.calls <= 3, "{status:?}");
                    assert!(status.failed_calls <= status.calls, "{status:?}");
                    assert!((0.0..=1.0).contains(&status.failure_rate), "{status:?}");
                }
            });
        }
    });
}

#[test]
fn breaker_and_owned_permit_are_send_and_sync() {
    fn is<T: Send + Sync + 'static>() {}
    is::<CircuitBreaker>();
    is::<OwnedPermit>();
    is::<BreakerStatus>();
}

#[test]
fn a_passing_health_check_ends_the_open_period_and_a_failing_one_extends_it() {
    let (b, clock, _) = breaker(BreakerConfig {
        open_for: secs(30),
        ..count_config(4, 2)
    });
    // Only an open circuit is changed.
    assert!(!b.end_open_period());
    assert!(!b.extend_open_period(secs(60)));
    assert_eq!(b.state(), CircuitState::Closed);
    trip(&b);
    assert_eq!(b.remaining_open(), Some(secs(30)));
    // A failing check holds it open until the next one, never shorter than it was.
    assert!(b.extend_open_period(secs(10)));
    assert_eq!(b.remaining_open(), Some(secs(30)));
    assert!(b.extend_open_period(secs(45)));
    assert_eq!(b.remaining_open(), Some(secs(45)));
    clock.advance(secs(40));
    assert_eq!(b.state(), CircuitState::Open);
    // A passing check half-opens it now: the next call is a probe.
    assert!(b.end_open_period());
    assert_eq!(b.state(), CircuitState::HalfOpen);
    b.try_acquire().unwrap().record(Outcome::Success);
    assert_eq!(b.state(), CircuitState::Closed);
    // An operator's state stays.
    b.force_open();
    assert!(!b.end_open_period());
    assert_eq!(b.state(), CircuitState::ForcedOpen);
}

#[test]
fn another_process_can_hold_the_circuit_open_from_any_state_but_an_operators() {
    let (b, clock, _) = breaker(BreakerConfig {
        open_for: secs(30),
        ..count_config(4, 2)
    });
    // From closed: open for the longer of the usual wait and what was asked.
    assert!(b.hold_open(secs(50)));
    assert_eq!(b.state(), CircuitState::Open);
    assert_eq!(b.remaining_open(), Some(secs(50)));
    assert!(matches!(b.try_acquire(), Err(CircuitOpen { .. })));
    // Open: never shortened.
    assert!(b.hold_open(secs(5)));
    assert_eq!(b.remaining_open(), Some(secs(50)));
    // Half-open: the probe slots are released and the circuit opens again.
    clock.advance(secs(50));
    assert_eq!(b.state(), CircuitState::HalfOpen);
    let probe = b.try_acquire().unwrap();
    assert!(b.hold_open(secs(1)));
    assert_eq!(b.state(), CircuitState::Open);
    probe.record(Outcome::Success);
    assert_eq!(
        b.state(),
        CircuitState::Open,
        "a stale probe changes nothing"
    );
    // An operator's state stays.
    b.reset();
    b.disable();
    assert!(!b.hold_open(secs(10)));
    assert_eq!(b.state(), CircuitState::Disabled);
    b.force_open();
    assert!(!b.hold_open(secs(10)));
    assert_eq!(b.state(), CircuitState::ForcedOpen);
}

/// A manual clock whose coarse time lags: it moves in steps of `step` (the exact time rounded
/// down), as the system clock's does between two ticks.
#[derive(Debug)]
struct SteppedClock {
    manual: ManualClock,
    step: Duration,
}

impl crate::Clock for SteppedClock {
    fn now(&self) -> std::time::Instant {
        self.manual.now()
    }
    fn now_nanos(&self) -> u64 {
        self.manual.now_nanos()
    }
    fn coarse_nanos(&self) -> u64 {
        let step = u64::try_from(self.step.as_nanos()).unwrap();
        self.manual.now_nanos() / step * step
    }
    fn coarse_resolution(&self) -> Duration {
        self.step
    }
    fn system_now(&self) -> std::time::SystemTime {
        self.manual.system_now()
    }
    fn sleep(&self, duration: Duration) -> crate::clock::Sleep {
        self.manual.sleep(duration)
    }
}

/// A breaker on a [`SteppedClock`] with 1 ms steps.
fn stepped_breaker(config: BreakerConfig) -> (CircuitBreaker, ManualClock) {
    let manual = ManualClock::new();
    let clock = Arc::new(SteppedClock {
        manual: manual.clone(),
        step: ms(1),
    });
    let ctx = Context::new("stepped").with_clock(clock);
    let breaker = CircuitBreaker::with_context(config, ctx).expect("valid config");
    (breaker, manual)
}

/// Starts a call `offset` past a whole millisecond, lets it run `duration`, records a success;
/// answers whether it counted as slow.
fn timed_call(
    b: &CircuitBreaker,
    clock: &ManualClock,
    offset: Duration,
    duration: Duration,
) -> bool {
    let step = ms(1).as_nanos();
    let into_step = Duration::from_nanos(u64::try_from(clock.elapsed().as_nanos() % step).unwrap());
    clock.advance(ms(1) - into_step + offset);
    let before = b.status().slow_calls;
    let permit = b.try_acquire().expect("closed");
    clock.advance(duration);
    permit.record(Outcome::Success);
    b.status().slow_calls > before
}

#[test]
fn slow_calls_are_judged_exactly_on_the_manual_clock() {
    // The default threshold (10 s) is timed on the coarse time, which on the manual clock is
    // its exact time: the edge is exact.
    let (b, clock, _) = breaker(BreakerConfig {
        window: Window::Count(10),
        ..BreakerConfig::default()
    });
    for (duration, slow) in [
        (secs(10) - Duration::from_nanos(1), false),
        (secs(10), true),
        (Duration::ZERO, false),
        (secs(60), true),
    ] {
        let before = b.status().slow_calls;
        let permit = b.try_acquire().expect("closed");
        clock.advance(duration);
        permit.record(Outcome::Success);
        assert_eq!(b.status().slow_calls > before, slow, "{duration:?}");
    }
}

#[test]
fn coarse_timing_is_right_to_within_one_step() {
    // 10 s is at least 100 steps of 1 ms: timed on the coarse time, which may be up to one
    // step off either way, never more.
    let (b, clock) = stepped_breaker(BreakerConfig {
        window: Window::Count(100),
        min_calls: 100,
        ..BreakerConfig::default()
    });
    for offset in [
        Duration::ZERO,
        Duration::from_micros(1),
        Duration::from_micros(999),
    ] {
        assert!(
            timed_call(&b, &clock, offset, secs(10) + ms(1)),
            "a call of 10 s + 1 ms is slow (started {offset:?} into a step)"
        );
        assert!(
            !timed_call(&b, &clock, offset, secs(10) - ms(1)),
            "a call of 10 s - 1 ms is fast (started {offset:?} into a step)"
        );
        assert!(
            !timed_call(&b, &clock, offset, ms(5)),
            "a short call is fast"
        );
    }
    // Within the step the verdict follows the coarse time: 10 s less 1 µs, started at the
    // very end of a step, spans 10 s of steps.
    assert!(timed_call(
        &b,
        &clock,
        Duration::from_micros(999),
        secs(10) - Duration::from_micros(1)
    ));
}

#[test]
fn short_slow_call_thresholds_are_timed_exactly() {
    // 50 ms is less than 100 steps: the breaker reads the exact time, so one step of coarse
    // lag cannot turn a 49.999 ms call into a slow one.
    let (b, clock) = stepped_breaker(BreakerConfig {
        slow_call_duration: Some(ms(50)),
        ..count_config(10, 10)
    });
    assert!(!timed_call(
        &b,
        &clock,
        Duration::from_micros(999),
        ms(50) - Duration::from_micros(1)
    ));
    assert!(timed_call(&b, &clock, Duration::from_micros(999), ms(50)));
    assert!(timed_call(&b, &clock, Duration::ZERO, ms(50)));
    assert!(!timed_call(
        &b,
        &clock,
        Duration::ZERO,
        ms(50) - Duration::from_nanos(1)
    ));
}

#[test]
fn open_period_on_a_lagging_coarse_time_ends_no_earlier_and_at_most_one_step_late() {
    let (b, clock) = stepped_breaker(open_config());
    // Trip half-way through a step: the coarse time lags the exact one by 0.5 ms.
    clock.advance(Duration::from_micros(500));
    trip(&b);
    let remaining = b.try_acquire().unwrap_err().remaining.unwrap();
    assert!(
        remaining <= secs(30),
        "never more left than the wait given: {remaining:?}"
    );
    // Just before the wait is over, exactly: still open.
    clock.advance(secs(30) - Duration::from_nanos(1));
    let err = b.try_acquire().unwrap_err();
    assert_eq!(err.state, CircuitState::Open);
    assert!(err.remaining.unwrap() <= ms(1), "{err:?}");
    // At most one step after it: a probe goes through.
    clock.advance(ms(1));
    let probe = b
        .try_acquire()
        .expect("a probe once the wait and one step have passed");
    assert_eq!(probe.state(), CircuitState::HalfOpen);
}

#[test]
fn ending_the_open_period_admits_the_next_call_on_a_lagging_coarse_time() {
    let (b, clock) = stepped_breaker(open_config());
    clock.advance(Duration::from_micros(700));
    trip(&b);
    clock.advance(secs(3) + Duration::from_micros(200));
    assert!(b.end_open_period());
    assert_eq!(b.state(), CircuitState::HalfOpen);
    let probe = b.try_acquire().expect("the next call is a probe");
    assert_eq!(probe.state(), CircuitState::HalfOpen);
}
