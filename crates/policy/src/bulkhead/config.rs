//! Configuration of the bulkhead.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, ensure};

/// Configuration of a [`Bulkhead`](super::Bulkhead).
///
/// ```
/// # use ferrule_policy::bulkhead::BulkheadConfig;
/// let config: BulkheadConfig = toml::from_str(r#"
///     max_concurrent = 8
///     max_queue = 16
///     max_wait = "2s"
/// "#).unwrap();
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkheadConfig {
    /// How many calls may run at once (at least 1; default 64).
    pub max_concurrent: usize,
    /// How many calls may wait for a slot when all are taken (default 0: reject at once).
    pub max_queue: usize,
    /// How long a queued call may wait for a slot before it is rejected (default: no limit).
    #[serde(with = "humantime_serde::option")]
    pub max_wait: Option<Duration>,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        BulkheadConfig {
            max_concurrent: 64,
            max_queue: 0,
            max_wait: None,
        }
    }
}

impl BulkheadConfig {
    /// Checks every field; the error names the field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            self.max_concurrent >= 1,
            "max_concurrent",
            "must be at least 1",
        )
    }
}
