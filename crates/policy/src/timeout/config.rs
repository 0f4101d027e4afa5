//! Configuration of the per-attempt timeout and the overall deadline.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, ensure};

/// Configuration of a [`Timeout`](super::Timeout).
///
/// ```
/// # use ferrule_policy::timeout::TimeoutConfig;
/// let config: TimeoutConfig = toml::from_str(r#"timeout = "15s""#).unwrap();
/// assert_eq!(config.timeout, std::time::Duration::from_secs(15));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    /// How long one attempt may take (default 10 s; must be greater than zero).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            timeout: Duration::from_secs(10),
        }
    }
}

impl TimeoutConfig {
    /// A config with this timeout.
    pub fn new(timeout: Duration) -> Self {
        TimeoutConfig { timeout }
    }

    /// Checks every field; the error names the field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            self.timeout > Duration::ZERO,
            "timeout",
            "must be greater than zero",
        )
    }
}

/// Configuration of a [`Deadline`](super::Deadline): a limit on a whole call, across retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadlineConfig {
    /// How long the whole call may take (default 60 s; must be greater than zero).
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
}

impl Default for DeadlineConfig {
    fn default() -> Self {
        DeadlineConfig {
            deadline: Duration::from_secs(60),
        }
    }
}

impl DeadlineConfig {
    /// A config with this deadline.
    pub fn new(deadline: Duration) -> Self {
        DeadlineConfig { deadline }
    }

    /// Checks every field; the error names the field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            self.deadline > Duration::ZERO,
            "deadline",
            "must be greater than zero",
        )
    }
}
