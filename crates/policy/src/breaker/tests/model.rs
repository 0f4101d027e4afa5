//! Model-based property test: the breaker must agree with a plain reference state machine.
//!
//! The model keeps a `Vec` window and no atomics; random operations drive both, and state,
//! admit/reject decisions, window totals and event counts are compared at every step.

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;

use super::super::*;
use crate::clock::ManualClock;
use crate::event::Recorder;
use crate::{Context, Outcome};

/// The reference breaker. It follows the documented rules as directly as possible.
#[derive(Debug)]
struct Model {
    config: BreakerConfig,
    state: CircuitState,
    /// Incremented on every transition: permits of an earlier period are ignored.
    period: u64,
    /// Count window: the last N (failure, slow) outcomes.
    recent: VecDeque<(bool, bool)>,
    /// Time window: (epoch, failure, slow) of every recorded call since the last clear.
    timed: Vec<(u64, bool, bool)>,
    consecutive: u32,
    open_wait: Duration,
    open_until: Duration,
    probes: u32,
    successes: u32,
    now: Duration,
    transitions: usize,
    rejections: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Closed,
    Probe,
    Pass,
}

#[derive(Debug, Clone, Copy)]
struct ModelPermit {
    period: u64,
    admission: Admission,
    start: Duration,
}

impl Model {
    fn new(config: BreakerConfig) -> Self {
        Model {
            open_wait: config.open_for,
            config,
            state: CircuitState::Closed,
            period: 0,
            recent: VecDeque::new(),
            timed: Vec::new(),
            consecutive: 0,
            open_until: Duration::ZERO,
            probes: 0,
            successes: 0,
            now: Duration::ZERO,
            transitions: 0,
            rejections: 0,
        }
    }

    fn epoch(&self, at: Duration) -> u64 {
        match self.config.window {
            Window::Time { duration, buckets } => {
                let bucket = (duration.as_nanos() / u128::from(buckets)).max(1);
                (at.as_nanos() / bucket) as u64
            }
            Window::Count(_) => 0,
        }
    }

    /// (calls, failures, slow) in the window now.
    fn totals(&self) -> (u64, u64, u64) {
        let mut t = (0, 0, 0);
        let mut add = |failure: bool, slow: bool| {
            t.0 += 1;
            t.1 += u64::from(failure);
            t.2 += u64::from(slow);
        };
        match self.config.window {
            Window::Count(_) => self.recent.iter().for_each(|&(f, s)| add(f, s)),
            Window::Time { buckets, .. } => {
                let now = self.epoch(self.now);
                for &(epoch, f, s) in &self.timed {
                    if epoch + u64::from(buckets) > now {
                        add(f, s);
                    }
                }
            }
        }
        t
    }

    fn transition(&mut self, to: CircuitState, claim_probe: bool) {
        let from = self.state;
        match to {
            CircuitState::Open => {
                if from == CircuitState::HalfOpen && self.config.open_backoff > 1.0 {
                    self.open_wait = Duration::try_from_secs_f64(
                        self.open_wait.as_secs_f64() * self.config.open_backoff,
                    )
                    .unwrap_or(Duration::MAX);
                }
                if let Some(cap) = self.config.max_open_for {
                    self.open_wait = self.open_wait.min(cap);
                }
                self.open_until = self.now.saturating_add(self.open_wait);
            }
            CircuitState::Closed => self.clear(),
            _ => {}
        }
        self.state = to;
        self.period += 1;
        self.probes = u32::from(claim_probe);
        self.successes = 0;
        self.transitions += 1;
    }

    fn clear(&mut self) {
        self.recent.clear();
        self.timed.clear();
        self.consecutive = 0;
        self.open_wait = self.config.open_for;
    }

    /// The lazy open → half-open move.
    fn refresh(&mut self) -> CircuitState {
        if self.state == CircuitState::Open && self.now >= self.open_until {
            self.transition(CircuitState::HalfOpen, false);
        }
        self.state
    }

    fn acquire(&mut self) -> Result<ModelPermit, CircuitOpen> {
        let permit = |period, admission, start| ModelPermit {
            period,
            admission,
            start,
        };
        let rejected = match self.state {
            CircuitState::Closed => return Ok(permit(self.period, Admission::Closed, self.now)),
            CircuitState::Disabled => return Ok(permit(self.period, Admission::Pass, self.now)),
            CircuitState::ForcedOpen => (CircuitState::ForcedOpen, None),
            CircuitState::Open if self.now < self.open_until => {
                (CircuitState::Open, Some(self.open_until - self.now))
            }
            CircuitState::Open => {
                self.transition(CircuitState::HalfOpen, true);
                return Ok(permit(self.period, Admission::Probe, self.now));
            }
            CircuitState::HalfOpen if self.probes >= self.config.half_open_probes => {
                (CircuitState::HalfOpen, Some(Duration::ZERO))
            }
            CircuitState::HalfOpen => {
                self.probes += 1;
                return Ok(permit(self.period, Admission::Probe, self.now));
            }
        };
        self.rejections += 1;
        Err(CircuitOpen {
            state: rejected.0,
            remaining: rejected.1,
        })
    }

    fn record(&mut self, permit: ModelPermit, outcome: Outcome) {
        if permit.period != self.period || permit.admission == Admission::Pass {
            return;
        }
        let failure = match outcome {
            Outcome::Ignored => None,
            Outcome::Success => Some(false),
            Outcome::Permanent => Some(self.config.permanent_is_failure),
            Outcome::Transient | Outcome::RetryAfter(_) => Some(true),
        };
        let slow = self
            .config
            .slow_call_duration
            .is_some_and(|limit| self.now - permit.start >= limit);
        match permit.admission {
            Admission::Probe => match failure {
                None => self.probes -= 1,
                Some(true) => self.transition(CircuitState::Open, false),
                Some(false) if slow => self.transition(CircuitState::Open, false),
                Some(false) => {
                    if self.successes + 1 >= self.config.half_open_successes {
                        self.transition(CircuitState::Closed, false);
                    } else {
                        self.probes -= 1;
                        self.successes += 1;
                    }
                }
            },
            Admission::Closed => {
                let Some(failure) = failure else { return };
                if failure {
                    self.consecutive += 1;
                } else {
                    self.consecutive = 0;
                }
                match self.config.window {
                    Window::Count(n) => {
                        self.recent.push_back((failure, slow));
                        if self.recent.len() > n as usize {
                            self.recent.pop_front();
                        }
                    }
                    Window::Time { .. } => self.timed.push((self.epoch(self.now), failure, slow)),
                }
                let (calls, failures, slows) = self.totals();
                let by_rate = calls >= u64::from(self.config.min_calls)
                    && ((failures > 0
                        && failures as f64 / calls as f64 >= self.config.failure_rate)
                        || (slows > 0
                            && slows as f64 / calls as f64 >= self.config.slow_call_rate));
                let by_run = self
                    .config
                    .consecutive_failures
                    .is_some_and(|n| self.consecutive >= n);
                if by_rate || by_run {
                    self.transition(CircuitState::Open, false);
                }
            }
            Admission::Pass => {}
        }
    }

    fn operator(&mut self, to: CircuitState) {
        if self.state == to {
            if to == CircuitState::Closed {
                self.clear();
            }
        } else {
            self.transition(to, false);
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    /// Record the permit at this index (modulo the number held).
    Record(usize, Outcome),
    /// Record a success after the call took `slow_call_duration` (a slow success).
    RecordSlow(usize),
    Drop(usize),
    Advance(Duration),
    State,
    Status,
    Reset,
    ForceOpen,
    Disable,
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        4 => Just(Outcome::Success),
        4 => Just(Outcome::Transient),
        1 => Just(Outcome::RetryAfter(Duration::from_secs(1))),
        1 => Just(Outcome::Permanent),
        1 => Just(Outcome::Ignored),
    ];
    prop_oneof![
        10 => Just(Op::Acquire),
        10 => (any::<usize>(), outcome).prop_map(|(i, o)| Op::Record(i, o)),
        2 => any::<usize>().prop_map(Op::RecordSlow),
        2 => any::<usize>().prop_map(Op::Drop),
        4 => (0u64..4_000).prop_map(|ms| Op::Advance(Duration::from_millis(ms))),
        2 => Just(Op::State),
        1 => Just(Op::Status),
        1 => prop_oneof![Just(Op::Reset), Just(Op::ForceOpen), Just(Op::Disable)],
    ]
}

fn config() -> impl Strategy<Value = BreakerConfig> {
    let window = prop_oneof![
        (1u32..8).prop_map(Window::Count),
        ((1u64..20), (1u32..6)).prop_map(|(s, b)| Window::Time {
            duration: Duration::from_secs(s),
            buckets: b
        }),
    ];
    (
        window,
        1u32..8,
        prop_oneof![Just(0.0), Just(0.25), Just(0.5), Just(1.0)],
        prop_oneof![Just(0.5), Just(1.0)],
        prop_oneof![Just(None), Just(Some(Duration::from_secs(2)))],
        prop_oneof![Just(None), (1u32..4).prop_map(Some)],
        (1u64..6).prop_map(Duration::from_secs),
        prop_oneof![Just(1.0), Just(1.5), Just(2.0)],
        any::<bool>(),
        (1u32..4, 1u32..4),
        any::<bool>(),
    )
        .prop_map(
            |(window, min, fr, sr, slow, run, open_for, backoff, cap, (k, m), perm)| {
                let min_calls = match window {
                    Window::Count(n) => min.min(n),
                    Window::Time { .. } => min,
                };
                BreakerConfig {
                    window,
                    min_calls,
                    failure_rate: fr,
                    slow_call_rate: sr,
                    slow_call_duration: slow,
                    consecutive_failures: run,
                    open_for,
                    open_backoff: backoff,
                    max_open_for: cap.then(|| open_for * 3),
                    half_open_probes: k,
                    half_open_successes: m,
                    permanent_is_failure: perm,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn breaker_matches_reference_model(config in config(), ops in prop::collection::vec(op(), 1..120)) {
        let clock = ManualClock::new();
        let recorder = Recorder::new();
        let ctx = Context::new("model").with_clock(clock.shared()).with_observer(recorder.clone());
        let breaker = CircuitBreaker::with_context(config.clone(), ctx).unwrap();
        let mut model = Model::new(config.clone());
        let mut held: Vec<(OwnedPermit, ModelPermit)> = Vec::new();

        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Acquire => {
                    let real = breaker.try_acquire_owned();
                    let expected = model.acquire();
                    match (real, expected) {
                        (Ok(r), Ok(m)) => {
                            let state = match m.admission {
                                Admission::Closed => CircuitState::Closed,
                                Admission::Probe => CircuitState::HalfOpen,
                                Admission::Pass => CircuitState::Disabled,
                            };
                            prop_assert_eq!(r.state(), state, "step {}", step);
                            held.push((r, m));
                        }
                        (Err(r), Err(m)) => prop_assert_eq!(r, m, "step {}", step),
                        (r, m) => prop_assert!(false, "step {}: real {:?}, model {:?}", step, r.map(|p| p.state()), m),
                    }
                }
                Op::Record(i, outcome) if !held.is_empty() => {
                    let (real, permit) = held.remove(i % held.len());
                    real.record(outcome);
                    model.record(permit, outcome);
                }
                Op::RecordSlow(i) if !held.is_empty() => {
                    let slow = config.slow_call_duration.unwrap_or(Duration::from_secs(2));
                    clock.advance(slow);
                    model.now += slow;
                    let (real, permit) = held.remove(i % held.len());
                    real.record(Outcome::Success);
                    model.record(permit, Outcome::Success);
                }
                Op::Drop(i) if !held.is_empty() => {
                    let (real, permit) = held.remove(i % held.len());
                    drop(real);
                    model.record(permit, Outcome::Ignored);
                }
                Op::Record(..) | Op::RecordSlow(_) | Op::Drop(_) => {}
                Op::Advance(d) => {
                    clock.advance(d);
                    model.now += d;
                }
                Op::State => {
                    prop_assert_eq!(breaker.state(), model.refresh(), "step {}", step);
                }
                Op::Status => {
                    let expected_state = model.refresh();
                    let status = breaker.status();
                    prop_assert_eq!(status.state, expected_state, "step {}", step);
                    let (calls, failures, slow) = model.totals();
                    prop_assert_eq!((status.calls, status.failed_calls, status.slow_calls), (calls, failures, slow), "step {}", step);
                    prop_assert_eq!(status.consecutive_failures, model.consecutive, "step {}", step);
                    prop_assert_eq!(status.open_wait, model.open_wait, "step {}", step);
                    let remaining = (expected_state == CircuitState::Open).then(|| model.open_until - model.now);
                    prop_assert_eq!(status.remaining_open, remaining, "step {}", step);
                    let probes = if expected_state == CircuitState::HalfOpen { model.probes } else { 0 };
                    prop_assert_eq!(status.probes_in_flight, probes, "step {}", step);
                }
                Op::Reset => {
                    breaker.reset();
                    model.operator(CircuitState::Closed);
                }
                Op::ForceOpen => {
                    breaker.force_open();
                    model.operator(CircuitState::ForcedOpen);
                }
                Op::Disable => {
                    breaker.disable();
                    model.operator(CircuitState::Disabled);
                }
            }
            prop_assert_eq!(breaker.raw_state(), model.state, "step {}: {:?}", step, model);
            prop_assert_eq!(recorder.count("breaker_transition"), model.transitions, "step {}", step);
            prop_assert_eq!(recorder.count("breaker_rejected"), model.rejections, "step {}", step);
        }
    }
}
