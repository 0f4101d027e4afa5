//! Configuration of the chaos policy and the environments it may run in.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::classify::Outcome;
use crate::config::{ConfigError, ensure, ensure_ratio};

/// Where the process runs; chaos is refused in [`Environment::Production`] unless allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// A developer's machine.
    #[default]
    Development,
    /// Automated tests.
    Test,
    /// A pre-production environment.
    Staging,
    /// Production.
    Production,
}

/// An [`Outcome`] as written in configuration, e.g.
/// `outcome = { class = "retry_after", retry_after = "5s" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case", deny_unknown_fields)]
pub enum InjectedOutcome {
    /// [`Outcome::Success`].
    Success,
    /// [`Outcome::Transient`].
    Transient,
    /// [`Outcome::RetryAfter`].
    RetryAfter {
        /// The delay the outcome demands.
        #[serde(with = "humantime_serde")]
        retry_after: Duration,
    },
    /// [`Outcome::Permanent`].
    Permanent,
    /// [`Outcome::Ignored`].
    Ignored,
}

impl From<InjectedOutcome> for Outcome {
    fn from(o: InjectedOutcome) -> Self {
        match o {
            InjectedOutcome::Success => Outcome::Success,
            InjectedOutcome::Transient => Outcome::Transient,
            InjectedOutcome::RetryAfter { retry_after } => Outcome::RetryAfter(retry_after),
            InjectedOutcome::Permanent => Outcome::Permanent,
            InjectedOutcome::Ignored => Outcome::Ignored,
        }
    }
}

impl From<Outcome> for InjectedOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Success => InjectedOutcome::Success,
            Outcome::Transient => InjectedOutcome::Transient,
            Outcome::RetryAfter(retry_after) => InjectedOutcome::RetryAfter { retry_after },
            Outcome::Permanent => InjectedOutcome::Permanent,
            Outcome::Ignored => InjectedOutcome::Ignored,
        }
    }
}

/// Configuration of a [`Chaos`](super::Chaos) policy. Off unless `enabled`.
///
/// Each call draws at most one fault: an error with probability `error_rate`, added latency
/// with `latency_rate`, a dropped call with `drop_rate`, an injected outcome with
/// `outcome_rate`; the rates must add up to at most 1.
///
/// ```
/// # use ferrule_policy::chaos::{ChaosConfig, InjectedOutcome};
/// # use std::time::Duration;
/// let config: ChaosConfig = toml::from_str(r#"
///     enabled = true
///     error_rate = 0.05
///     latency_rate = 0.1
///     latency = "200ms"
///     latency_max = "2s"
///     outcome_rate = 0.01
///     outcome = { class = "retry_after", retry_after = "5s" }
///     seed = 42
/// "#).unwrap();
/// assert!(config.validate().is_ok());
/// assert_eq!(config.outcome, InjectedOutcome::RetryAfter { retry_after: Duration::from_secs(5) });
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChaosConfig {
    /// Whether any fault is injected (default false).
    pub enabled: bool,
    /// Probability that a call is replaced by an injected error (0 to 1; default 0).
    pub error_rate: f64,
    /// Probability that latency is added before a call (0 to 1; default 0).
    pub latency_rate: f64,
    /// The latency added (default 1 s); the minimum when `latency_max` is set.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// If set, the added latency is drawn uniformly from `latency..=latency_max`.
    #[serde(with = "humantime_serde::option")]
    pub latency_max: Option<Duration>,
    /// Probability that a call is dropped: it never completes (0 to 1; default 0).
    pub drop_rate: f64,
    /// Probability that a call's outcome is replaced by `outcome` (0 to 1; default 0).
    pub outcome_rate: f64,
    /// The outcome injected (default `transient`).
    pub outcome: InjectedOutcome,
    /// Seed of the random sequence: the same seed gives the same faults (default: random).
    pub seed: Option<u64>,
    /// Allows enabled chaos in [`Environment::Production`] (default false).
    pub allow_in_production: bool,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        ChaosConfig {
            enabled: false,
            error_rate: 0.0,
            latency_rate: 0.0,
            latency: Duration::from_secs(1),
            latency_max: None,
            drop_rate: 0.0,
            outcome_rate: 0.0,
            outcome: InjectedOutcome::Transient,
            seed: None,
            allow_in_production: false,
        }
    }
}

/// Rounding slack when checking that the rates add up to at most 1.
const SUM_SLACK: f64 = 1e-9;

impl ChaosConfig {
    /// Checks every field; the error names the field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure_ratio(self.error_rate, "error_rate", 0.0, 1.0)?;
        ensure_ratio(self.latency_rate, "latency_rate", 0.0, 1.0)?;
        ensure_ratio(self.drop_rate, "drop_rate", 0.0, 1.0)?;
        ensure_ratio(self.outcome_rate, "outcome_rate", 0.0, 1.0)?;
        let sum = self.error_rate + self.latency_rate + self.drop_rate + self.outcome_rate;
        if sum > 1.0 + SUM_SLACK {
            return Err(ConfigError::new(
                "error_rate + latency_rate + drop_rate + outcome_rate",
                format!("the rates must add up to at most 1, got {sum}"),
            ));
        }
        if let Some(max) = self.latency_max {
            ensure(
                max >= self.latency,
                "latency_max",
                "must be at least `latency`",
            )?;
        }
        Ok(())
    }

    /// Checks the config and that it may run in `environment`.
    pub fn validate_for(&self, environment: Environment) -> Result<(), ConfigError> {
        self.validate()?;
        ensure(
            !(self.enabled && environment == Environment::Production && !self.allow_in_production),
            "allow_in_production",
            "chaos is enabled in a production environment; set `allow_in_production = true` \
             to inject faults there on purpose",
        )
    }
}
