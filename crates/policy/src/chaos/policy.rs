//! The [`Chaos`] policy: decides which fault to inject and applies it to calls.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::config::{ChaosConfig, Environment};
use super::error::{Fault, Injected};
use crate::classify::{Classify, ErrorsAreTransient, Outcome};
use crate::config::ConfigError;
use crate::context::Context;
use crate::error::{Error, ErrorKind};
use crate::event::Event;

/// What the chaos policy does to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injection {
    /// Nothing: the call runs normally.
    None,
    /// The call is not run; it fails with [`Injected`] (`fault: Error`).
    Error,
    /// The call runs after this added delay.
    Latency(Duration),
    /// The call never completes: only a timeout around it ends it.
    Drop,
    /// The call runs, then reports this outcome instead of its own classification.
    Outcome(Outcome),
}

impl Injection {
    /// The fault injected, or `None` for [`Injection::None`].
    pub fn fault(&self) -> Option<Fault> {
        match self {
            Injection::None => None,
            Injection::Error => Some(Fault::Error),
            Injection::Latency(_) => Some(Fault::Latency),
            Injection::Drop => Some(Fault::Drop),
            Injection::Outcome(_) => Some(Fault::Outcome),
        }
    }
}

/// splitmix64's increment (the golden ratio in 64 bits).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's output function.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Inner {
    enabled: bool,
    /// Cumulative rates: error, +latency, +drop, +outcome.
    thresholds: [f64; 4],
    latency: Duration,
    /// Width of the latency range in nanoseconds (0: fixed latency).
    latency_span: u64,
    outcome: Outcome,
    /// splitmix64 state: one atomic add per draw, so draws are lock-free.
    state: AtomicU64,
    ctx: Context,
}

impl Inner {
    #[inline]
    fn next_u64(&self) -> u64 {
        mix(self
            .state
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA))
    }

    /// A uniform number in `[0, 1)` with 53 bits of precision.
    #[inline]
    fn next_unit(&self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn draw_latency(&self) -> Duration {
        if self.latency_span == 0 {
            return self.latency;
        }
        // Uniform in 0..=span: the high half of a 64×64-bit product.
        let offset =
            ((u128::from(self.next_u64()) * (u128::from(self.latency_span) + 1)) >> 64) as u64;
        self.latency.saturating_add(Duration::from_nanos(offset))
    }
}

/// Injects faults into calls — errors, latency, dropped calls, outcomes — to test how the rest
/// of the system copes. Off unless enabled, and refused in production unless explicitly allowed.
///
/// Draws come from a lock-free splitmix64 sequence; with a `seed`, single-threaded use gives
/// the same faults every run. Cheap to clone: clones share the sequence.
///
/// ```
/// use ferrule_policy::chaos::{Chaos, ChaosConfig, Environment, Injection};
///
/// let config = ChaosConfig { enabled: true, error_rate: 1.0, seed: Some(7), ..Default::default() };
/// let chaos = Chaos::new(config.clone(), Environment::Staging).unwrap();
/// assert_eq!(chaos.decide(), Injection::Error);
///
/// // Production refuses it unless `allow_in_production` is set.
/// let refused = Chaos::new(config, Environment::Production).unwrap_err();
/// assert_eq!(refused.field(), "allow_in_production");
/// ```
#[derive(Clone)]
pub struct Chaos {
    inner: Arc<Inner>,
}

impl fmt::Debug for Chaos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chaos")
            .field("name", &self.inner.ctx.name())
            .field("enabled", &self.inner.enabled)
            .field("thresholds", &self.inner.thresholds)
            .finish_non_exhaustive()
    }
}

impl Chaos {
    /// A chaos policy with the default [`Context`] (system clock, no observer).
    ///
    /// Fails if the config is invalid, or if it is enabled in [`Environment::Production`]
    /// without `allow_in_production` (the error names `allow_in_production`).
    pub fn new(config: ChaosConfig, environment: Environment) -> Result<Self, ConfigError> {
        Self::with_context(config, environment, Context::default())
    }

    /// A chaos policy sleeping on `ctx`'s clock and reporting to its observer.
    pub fn with_context(
        config: ChaosConfig,
        environment: Environment,
        ctx: Context,
    ) -> Result<Self, ConfigError> {
        config.validate_for(environment)?;
        let error = config.error_rate;
        let latency = error + config.latency_rate;
        let drop = latency + config.drop_rate;
        let outcome = drop + config.outcome_rate;
        let span = config
            .latency_max
            .map(|max| max.saturating_sub(config.latency))
            .unwrap_or_default();
        Ok(Chaos {
            inner: Arc::new(Inner {
                enabled: config.enabled,
                thresholds: [error, latency, drop, outcome],
                latency: config.latency,
                latency_span: u64::try_from(span.as_nanos()).unwrap_or(u64::MAX),
                outcome: config.outcome.into(),
                state: AtomicU64::new(config.seed.unwrap_or_else(|| fastrand::u64(..))),
                ctx,
            }),
        })
    }

    pub(crate) fn context(&self) -> &Context {
        &self.inner.ctx
    }

    /// `true` when the policy injects anything at all.
    #[inline]
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Draws what to do to the next call, emitting [`Event::ChaosInjected`] for any fault.
    #[inline]
    pub fn decide(&self) -> Injection {
        if !self.inner.enabled {
            return Injection::None;
        }
        self.draw()
    }

    fn draw(&self) -> Injection {
        let inner = &*self.inner;
        let u = inner.next_unit();
        let [error, latency, drop, outcome] = inner.thresholds;
        let injection = if u < error {
            Injection::Error
        } else if u < latency {
            Injection::Latency(inner.draw_latency())
        } else if u < drop {
            Injection::Drop
        } else if u < outcome {
            Injection::Outcome(inner.outcome)
        } else {
            return Injection::None;
        };
        if let Some(fault) = injection.fault() {
            inner.ctx.emit(Event::ChaosInjected {
                name: inner.ctx.name(),
                fault,
            });
        }
        injection
    }

    /// Runs `op` with whatever fault [`decide`](Self::decide) draws:
    ///
    /// - error: `op` does not run; [`ErrorKind::Injected`] with [`Fault::Error`];
    /// - latency: sleeps on the policy's clock, then runs `op`;
    /// - drop: never completes (only a timeout around the call ends it);
    /// - outcome: runs `op`; an injected failure outcome replaces the result with
    ///   [`ErrorKind::Rejected`]`(outcome)`, a non-failure one leaves the result as it is.
    pub async fn call<T, E, F, Fut>(&self, op: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_classified(&ErrorsAreTransient, op).await
    }

    /// Like [`call`](Self::call), judging `op`'s result with `classifier`: an `Ok` judged a
    /// failure becomes [`ErrorKind::Rejected`]. An injected outcome takes the place of the
    /// classifier's verdict: a failure outcome becomes `ErrorKind::Rejected(outcome)` whatever
    /// `op` returned.
    pub async fn call_classified<T, E, F, Fut>(
        &self,
        classifier: &impl Classify<T, E>,
        mut op: F,
    ) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let injected = match self.decide() {
            Injection::None => None,
            Injection::Error => {
                return Err(Injected {
                    fault: Fault::Error,
                }
                .into());
            }
            Injection::Latency(delay) => {
                self.inner.ctx.clock().sleep(delay).await;
                None
            }
            Injection::Drop => {
                let never: Infallible = std::future::pending().await;
                match never {}
            }
            Injection::Outcome(outcome) => Some(outcome),
        };
        let result = op().await;
        let outcome = injected.unwrap_or_else(|| classifier.classify(&result));
        match result {
            Err(_) if injected.is_some_and(Outcome::is_failure) => {
                Err(Error::new(ErrorKind::Rejected(outcome)))
            }
            Ok(_) if outcome.is_failure() => Err(Error::new(ErrorKind::Rejected(outcome))),
            Ok(value) => Ok(value),
            Err(e) => Err(Error::inner(e)),
        }
    }
}
