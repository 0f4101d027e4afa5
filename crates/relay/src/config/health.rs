//! `[health]`: when a dependency counts as degraded or unhealthy.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[health]`: when a dependency counts as degraded or unhealthy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Failures in a row that make a dependency unhealthy (default 3; one failure is degraded).
    pub failure_threshold: u32,
    /// Successes in a row that make an unhealthy or degraded dependency healthy again (2).
    pub recovery_threshold: u32,
    /// How long `/readyz`, `/status` and `/metrics` wait for the store before they report it
    /// unavailable (default 1s): a probe must answer even while the database does not.
    #[serde(with = "humantime_serde")]
    pub store_timeout: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            failure_threshold: 3,
            recovery_threshold: 2,
            store_timeout: Duration::from_secs(1),
        }
    }
}
