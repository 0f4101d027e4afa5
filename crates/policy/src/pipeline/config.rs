//! The pipeline's serde configuration: one optional section per policy.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerConfig;
use crate::bulkhead::BulkheadConfig;
use crate::chaos::ChaosConfig;
use crate::config::{ConfigError, ensure};
use crate::fallback::FallbackConfig;
use crate::rate_limit::RateLimitConfig;
use crate::retry::RetryConfig;

/// A whole pipeline in configuration form, e.g. from TOML:
///
/// ```
/// use ferrule_policy::pipeline::PipelineConfig;
///
/// let config: PipelineConfig = toml::from_str(r#"
///     timeout = "15s"
///     deadline = "2m"
///     [retry]
///     max_attempts = 6
///     backoff = { kind = "exponential", base = "200ms", multiplier = 2.0, cap = "30s" }
///     [breaker]
///     window = { count = 50 }
///     failure_rate = 0.5
///     [rate_limit]
///     limit = 30
///     per = "1s"
/// "#).unwrap();
/// config.validate().unwrap();
/// assert_eq!(config.retry.unwrap().max_attempts, 6);
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Retry policy; absent means one attempt.
    pub retry: Option<RetryConfig>,
    /// Circuit breaker; absent means none.
    pub breaker: Option<BreakerConfig>,
    /// Rate limit (calls wait for a token); absent means unlimited.
    pub rate_limit: Option<RateLimitConfig>,
    /// Bulkhead; absent means unbounded concurrency.
    pub bulkhead: Option<BulkheadConfig>,
    /// Per-attempt timeout; absent means none.
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Overall deadline across attempts; absent means none.
    #[serde(with = "humantime_serde")]
    pub deadline: Option<Duration>,
    /// Fault injection; absent means none.
    pub chaos: Option<ChaosConfig>,
    /// Which failures the fallback of [`Pipeline::call_or_else`](super::Pipeline::call_or_else)
    /// answers; absent means all.
    pub fallback: Option<FallbackConfig>,
}

impl PipelineConfig {
    /// Checks every section; the error names the field with its section, e.g. `retry.max_attempts`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(c) = &self.retry {
            c.validate().map_err(|e| e.within("retry"))?;
        }
        if let Some(c) = &self.breaker {
            c.validate().map_err(|e| e.within("breaker"))?;
        }
        if let Some(c) = &self.rate_limit {
            c.validate().map_err(|e| e.within("rate_limit"))?;
        }
        if let Some(c) = &self.bulkhead {
            c.validate().map_err(|e| e.within("bulkhead"))?;
        }
        if let Some(t) = self.timeout {
            ensure(!t.is_zero(), "timeout", "must be greater than zero")?;
        }
        if let Some(d) = self.deadline {
            ensure(!d.is_zero(), "deadline", "must be greater than zero")?;
        }
        if let Some(c) = &self.chaos {
            c.validate().map_err(|e| e.within("chaos"))?;
        }
        if let Some(c) = &self.fallback {
            c.validate().map_err(|e| e.within("fallback"))?;
        }
        Ok(())
    }
}
