//! The retry policy's serde configuration: attempts, elapsed time, backoff, jitter and budget.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::config::{ensure, ensure_ratio};

/// How a [`Retry`](super::Retry) behaves; every field has a default.
///
/// ```
/// use std::time::Duration;
/// use ferrule_policy::retry::{Backoff, Jitter, RetryConfig};
///
/// let config: RetryConfig = toml::from_str(r#"
///     max_attempts = 6
///     max_elapsed = "2m"
///     backoff = { kind = "exponential", base = "200ms", multiplier = 2.0, cap = "30s" }
///     jitter = "full"
///     budget = { retries_per_success = 0.2, min_per_second = 10, ttl = "10s" }
/// "#).unwrap();
/// assert_eq!(config.max_attempts, 6);
/// assert_eq!(config.backoff, Backoff::Exponential {
///     base: Duration::from_millis(200),
///     multiplier: 2.0,
///     cap: Duration::from_secs(30),
/// });
/// assert_eq!(config.jitter, Jitter::Full);
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Most attempts in all, counting the first one (≥ 1; 1 means never retry). Default 3.
    pub max_attempts: u32,
    /// Give up once this much time has passed since the first attempt started; a retry whose
    /// delay would end past it is not scheduled. Default: no limit.
    #[serde(with = "humantime_serde::option")]
    pub max_elapsed: Option<Duration>,
    /// The delay between attempts before jitter. Default: exponential from 100 ms, ×2, capped at 30 s.
    pub backoff: Backoff,
    /// How the delay is randomised. Default [`Jitter::Full`].
    pub jitter: Jitter,
    /// The longest `Retry-After` the policy will honour. Default 5 minutes.
    ///
    /// A [`RetryAfter`](crate::Outcome::RetryAfter) longer than this makes the policy give up
    /// ([`GiveUpReason::RetryAfterTooLong`](super::GiveUpReason::RetryAfterTooLong)) rather than
    /// wait: retrying sooner than the server asked would break "never earlier", and waiting
    /// longer than this is better left to a durable scheduler.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// A retry budget shared by every call through the policy. Default: none.
    pub budget: Option<BudgetConfig>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            max_elapsed: None,
            backoff: Backoff::default(),
            jitter: Jitter::default(),
            max_retry_after: Duration::from_secs(5 * 60),
            budget: None,
        }
    }
}

impl RetryConfig {
    /// Checks every field; the error names the first bad one (e.g. `backoff.multiplier`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(self.max_attempts >= 1, "max_attempts", "must be at least 1")?;
        if let Some(max_elapsed) = self.max_elapsed {
            ensure(
                !max_elapsed.is_zero(),
                "max_elapsed",
                "must be longer than zero (leave it out for no limit)",
            )?;
        }
        self.backoff.validate()?;
        if let Some(budget) = &self.budget {
            budget.validate().map_err(|e| e.within("budget"))?;
        }
        Ok(())
    }
}

fn default_multiplier() -> f64 {
    2.0
}

fn default_cap() -> Duration {
    Duration::from_secs(30)
}

/// The delay before each retry, before [`Jitter`].
///
/// In TOML: `{ kind = "fixed", delay = "1s" }`, `{ kind = "linear", base = "1s", step = "1s",
/// cap = "30s" }` or `{ kind = "exponential", base = "100ms", multiplier = 2.0, cap = "30s" }`
/// (`multiplier` defaults to 2 and `cap` to 30 s).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Backoff {
    /// The same delay before every retry.
    Fixed {
        /// The delay.
        #[serde(with = "humantime_serde")]
        delay: Duration,
    },
    /// `base + step × (n − 1)` before retry `n`, at most `cap`.
    Linear {
        /// The first delay.
        #[serde(with = "humantime_serde")]
        base: Duration,
        /// Added for each further retry.
        #[serde(with = "humantime_serde")]
        step: Duration,
        /// The longest delay.
        #[serde(with = "humantime_serde", default = "default_cap")]
        cap: Duration,
    },
    /// `base × multiplier^(n − 1)` before retry `n`, at most `cap`.
    Exponential {
        /// The first delay.
        #[serde(with = "humantime_serde")]
        base: Duration,
        /// Growth factor per retry (finite, ≥ 1).
        #[serde(default = "default_multiplier")]
        multiplier: f64,
        /// The longest delay.
        #[serde(with = "humantime_serde", default = "default_cap")]
        cap: Duration,
    },
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::Exponential {
            base: Duration::from_millis(100),
            multiplier: default_multiplier(),
            cap: default_cap(),
        }
    }
}

impl Backoff {
    /// Checks the parameters; field names are prefixed with `backoff.`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            Backoff::Fixed { .. } => Ok(()),
            Backoff::Linear { base, cap, .. } => ensure(
                cap >= base,
                "backoff.cap",
                "must not be shorter than `base`",
            ),
            Backoff::Exponential {
                base,
                multiplier,
                cap,
            } => {
                ensure_ratio(multiplier, "backoff.multiplier", 1.0, 1e6)?;
                ensure(
                    cap >= base,
                    "backoff.cap",
                    "must not be shorter than `base`",
                )
            }
        }
    }
}

/// How a backoff delay `d` is randomised so that many clients do not retry in lock-step.
///
/// In TOML: `jitter = "none" | "full" | "equal" | "decorrelated"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Exactly `d`.
    None,
    /// Uniform in `[0, d]` (the AWS "full jitter" recommendation).
    #[default]
    Full,
    /// `d/2` plus uniform in `[0, d/2]`.
    Equal,
    /// AWS "decorrelated jitter": uniform in `[base, previous delay × 3]`, at most `cap`; it
    /// ignores the backoff's growth shape and uses only its base and cap.
    Decorrelated,
}

/// A retry budget: a token bucket refilled by successes, so retries cannot multiply load
/// during an outage (as in Finagle and `tower::retry::budget`).
///
/// Within any `ttl` window, retries may use `retries_per_success` per successful call plus
/// `min_per_second × ttl` for low-traffic periods. Deposits and withdrawals expire after
/// `ttl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Retries earned by each success (0 to 1000), e.g. 0.2 = at most one retry per five successes.
    pub retries_per_success: f64,
    /// Retries per second always allowed, even without successes.
    pub min_per_second: u32,
    /// How long deposits and withdrawals count (> 0).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            retries_per_success: 0.2,
            min_per_second: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

impl BudgetConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure_ratio(self.retries_per_success, "retries_per_success", 0.0, 1000.0)?;
        ensure(!self.ttl.is_zero(), "ttl", "must be longer than zero")
    }
}
