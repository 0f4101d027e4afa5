//! Events every policy emits, the [`Observer`] that receives them, and ready-made observers for
//! `tracing` and the `metrics` crate.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use crate::breaker::CircuitState;
use crate::chaos::Fault;
use crate::classify::Outcome;
use crate::duration::millis;

/// Something a policy did. `name` is the policy's name from its [`Context`](crate::Context).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// An attempt finished with `outcome` after `duration`.
    Attempt {
        /// Policy name.
        name: &'a str,
        /// 1-based attempt number.
        attempt: u32,
        /// How the attempt was classified.
        outcome: Outcome,
        /// How long the attempt took.
        duration: Duration,
    },
    /// A retry will run after `delay`.
    RetryScheduled {
        /// Policy name.
        name: &'a str,
        /// The attempt that just failed (1-based).
        attempt: u32,
        /// How long until the next attempt.
        delay: Duration,
        /// The failed attempt's outcome.
        outcome: Outcome,
    },
    /// The retry policy stopped trying.
    RetryGaveUp {
        /// Policy name.
        name: &'a str,
        /// Attempts made.
        attempts: u32,
        /// Why: `permanent`, `max_attempts`, `max_elapsed`, `budget` or `retry_after_too_long`.
        reason: &'static str,
    },
    /// The circuit breaker changed state.
    BreakerTransition {
        /// Policy name.
        name: &'a str,
        /// Previous state.
        from: CircuitState,
        /// New state.
        to: CircuitState,
    },
    /// The circuit breaker rejected a call.
    BreakerRejected {
        /// Policy name.
        name: &'a str,
        /// State that rejected it.
        state: CircuitState,
        /// Time left before a probe may run; `None` when forced open.
        remaining: Option<Duration>,
    },
    /// An attempt timed out.
    Timeout {
        /// Policy name.
        name: &'a str,
        /// The limit.
        after: Duration,
    },
    /// The overall deadline passed.
    DeadlineExceeded {
        /// Policy name.
        name: &'a str,
        /// The limit.
        after: Duration,
    },
    /// The bulkhead rejected a call.
    BulkheadRejected {
        /// Policy name.
        name: &'a str,
    },
    /// The rate limiter refused a call.
    RateLimited {
        /// Policy name.
        name: &'a str,
        /// How long until a call would be admitted.
        wait: Duration,
    },
    /// The chaos policy injected a fault.
    ChaosInjected {
        /// Policy name.
        name: &'a str,
        /// What it injected.
        fault: Fault,
    },
    /// The fallback produced the result.
    FallbackUsed {
        /// Policy name.
        name: &'a str,
    },
}

impl Event<'_> {
    /// A short stable name for the event kind, e.g. `retry_scheduled`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Attempt { .. } => "attempt",
            Event::RetryScheduled { .. } => "retry_scheduled",
            Event::RetryGaveUp { .. } => "retry_gave_up",
            Event::BreakerTransition { .. } => "breaker_transition",
            Event::BreakerRejected { .. } => "breaker_rejected",
            Event::Timeout { .. } => "timeout",
            Event::DeadlineExceeded { .. } => "deadline_exceeded",
            Event::BulkheadRejected { .. } => "bulkhead_rejected",
            Event::RateLimited { .. } => "rate_limited",
            Event::ChaosInjected { .. } => "chaos_injected",
            Event::FallbackUsed { .. } => "fallback_used",
        }
    }

    /// The name of the policy that emitted it.
    pub fn name(&self) -> &str {
        match *self {
            Event::Attempt { name, .. }
            | Event::RetryScheduled { name, .. }
            | Event::RetryGaveUp { name, .. }
            | Event::BreakerTransition { name, .. }
            | Event::BreakerRejected { name, .. }
            | Event::Timeout { name, .. }
            | Event::DeadlineExceeded { name, .. }
            | Event::BulkheadRejected { name }
            | Event::RateLimited { name, .. }
            | Event::ChaosInjected { name, .. }
            | Event::FallbackUsed { name } => name,
        }
    }
}

/// Receives policy events. Called inline on the calling task: keep it quick.
pub trait Observer: Send + Sync + fmt::Debug + 'static {
    /// Handles one event.
    fn on_event(&self, event: &Event<'_>);
}

/// An observer shared between policies.
pub type SharedObserver = Arc<dyn Observer>;

/// Ignores every event (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl Observer for NoopObserver {
    #[inline]
    fn on_event(&self, _event: &Event<'_>) {}
}

static NOOP: LazyLock<SharedObserver> = LazyLock::new(|| Arc::new(NoopObserver));

/// The shared [`NoopObserver`].
pub fn noop() -> SharedObserver {
    NOOP.clone()
}

/// Logs events with `tracing`, durations as whole milliseconds in fields named `…_ms`:
///
/// - `warn`: a circuit opening (or forced open), a retry giving up, a deadline passing;
/// - `info`: a circuit closing, half-opening or disabled again, a retry scheduled, a timeout, a
///   chaos fault, a fallback;
/// - `debug`: every attempt, and every call a breaker, bulkhead or rate limiter refused. Those
///   refusals come one per call (one per queued message in the relay) while a dependency is
///   down, so they are counted (`MetricsObserver`) rather than logged one line each at `info`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingObserver;

impl Observer for TracingObserver {
    fn on_event(&self, event: &Event<'_>) {
        match *event {
            Event::Attempt {
                name,
                attempt,
                outcome,
                duration,
            } => tracing::debug!(
                policy = name,
                attempt,
                outcome = outcome.as_str(),
                duration_ms = millis(duration),
                "attempt finished"
            ),
            Event::RetryScheduled {
                name,
                attempt,
                delay,
                outcome,
            } => tracing::info!(
                policy = name,
                attempt,
                delay_ms = millis(delay),
                outcome = outcome.as_str(),
                "retry scheduled"
            ),
            Event::RetryGaveUp {
                name,
                attempts,
                reason,
            } => tracing::warn!(policy = name, attempts, reason, "retry gave up"),
            Event::BreakerTransition { name, from, to } => match to {
                CircuitState::Open | CircuitState::ForcedOpen => tracing::warn!(
                    policy = name,
                    from = from.as_str(),
                    to = to.as_str(),
                    "circuit breaker transition"
                ),
                CircuitState::Closed | CircuitState::HalfOpen | CircuitState::Disabled => {
                    tracing::info!(
                        policy = name,
                        from = from.as_str(),
                        to = to.as_str(),
                        "circuit breaker transition"
                    )
                }
            },
            Event::BreakerRejected {
                name,
                state,
                remaining,
            } => tracing::debug!(
                policy = name,
                state = state.as_str(),
                // Absent when forced open: only an operator closes it.
                remaining_ms = remaining.map(millis),
                "circuit breaker rejected call"
            ),
            Event::Timeout { name, after } => {
                tracing::info!(policy = name, after_ms = millis(after), "attempt timed out")
            }
            Event::DeadlineExceeded { name, after } => {
                tracing::warn!(policy = name, after_ms = millis(after), "deadline exceeded")
            }
            Event::BulkheadRejected { name } => tracing::debug!(policy = name, "bulkhead full"),
            Event::RateLimited { name, wait } => {
                tracing::debug!(policy = name, wait_ms = millis(wait), "rate limited")
            }
            Event::ChaosInjected { name, fault } => {
                tracing::info!(
                    policy = name,
                    fault = fault.as_str(),
                    "chaos fault injected"
                )
            }
            Event::FallbackUsed { name } => tracing::info!(policy = name, "fallback used"),
        }
    }
}

/// Records events with the `metrics` crate facade:
///
/// - `ferrule_policy_events_total{policy, event}` counter for every event;
/// - `ferrule_policy_attempt_seconds{policy, outcome}` histogram of attempt durations.
///
/// It keeps no breaker state gauge: a breaker's state is best exported where the breaker is
/// owned and named (the relay exports `ferrule_breaker_state{destination, state}`, one gauge per
/// state), and two gauges for one state only disagree. Transitions are counted here as
/// `event="breaker_transition"`, and [`CircuitBreaker::state`](crate::breaker::CircuitBreaker::state)
/// says the current one.
///
/// Policy names become label values, so keep them low-cardinality (a destination, not a chat id).
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsObserver;

impl Observer for MetricsObserver {
    fn on_event(&self, event: &Event<'_>) {
        let policy = event.name().to_owned();
        metrics::counter!("ferrule_policy_events_total", "policy" => policy.clone(), "event" => event.kind())
            .increment(1);
        if let Event::Attempt {
            outcome, duration, ..
        } = *event
        {
            metrics::histogram!("ferrule_policy_attempt_seconds", "policy" => policy, "outcome" => outcome.as_str())
                .record(duration.as_secs_f64());
        }
    }
}

/// Sends every event to each observer in turn.
#[derive(Debug, Clone, Default)]
pub struct FanOut(pub Vec<SharedObserver>);

impl Observer for FanOut {
    fn on_event(&self, event: &Event<'_>) {
        for observer in &self.0 {
            observer.on_event(event);
        }
    }
}

/// An observer that keeps every event as an owned string line: handy in tests and examples.
#[derive(Debug, Default)]
pub struct Recorder {
    lines: std::sync::Mutex<Vec<String>>,
}

impl Recorder {
    /// A new, empty recorder.
    pub fn new() -> Arc<Self> {
        Arc::new(Recorder::default())
    }

    /// The events recorded so far, formatted with `{:?}`.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many recorded events have this [`Event::kind`].
    pub fn count(&self, kind: &str) -> usize {
        self.lines()
            .iter()
            .filter(|l| l.split_whitespace().next() == Some(kind))
            .count()
    }
}

impl Observer for Recorder {
    fn on_event(&self, event: &Event<'_>) {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{} {event:?}", event.kind()));
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A `tracing` writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `TracingObserver` logs for `events`, one line each, without colours or times.
    fn logged(events: &[Event<'_>]) -> Vec<String> {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for event in events {
                TracingObserver.on_event(event);
            }
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| l.trim().to_owned()).collect()
    }

    #[test]
    fn rejected_calls_log_at_debug_with_plain_milliseconds() {
        let lines = logged(&[
            Event::BreakerRejected {
                name: "hook",
                state: CircuitState::Open,
                remaining: Some(Duration::from_nanos(29_980_211_000)),
            },
            Event::BreakerRejected {
                name: "hook",
                state: CircuitState::ForcedOpen,
                remaining: None,
            },
            Event::BulkheadRejected { name: "hook" },
            Event::RetryScheduled {
                name: "hook",
                attempt: 1,
                delay: Duration::from_nanos(316_428_976),
                outcome: Outcome::Transient,
            },
        ]);
        assert_eq!(
            lines,
            [
                "DEBUG circuit breaker rejected call policy=\"hook\" state=\"open\" remaining_ms=29980",
                "DEBUG circuit breaker rejected call policy=\"hook\" state=\"forced_open\"",
                "DEBUG bulkhead full policy=\"hook\"",
                "INFO retry scheduled policy=\"hook\" attempt=1 delay_ms=316 outcome=\"transient\"",
            ]
        );
    }

    #[test]
    fn a_circuit_opening_warns_and_closing_again_is_info() {
        let transition = |from, to| Event::BreakerTransition {
            name: "hook",
            from,
            to,
        };
        let levels: Vec<String> = logged(&[
            transition(CircuitState::Closed, CircuitState::Open),
            transition(CircuitState::Open, CircuitState::HalfOpen),
            transition(CircuitState::HalfOpen, CircuitState::Closed),
            transition(CircuitState::Closed, CircuitState::ForcedOpen),
        ])
        .iter()
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
        assert_eq!(levels, ["WARN", "INFO", "INFO", "WARN"]);
    }
}
