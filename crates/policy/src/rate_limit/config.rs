//! Configuration of the rate limiters.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, ensure};

/// Configuration of a [`RateLimiter`](super::RateLimiter) or
/// [`KeyedRateLimiter`](super::KeyedRateLimiter): `limit` calls `per` period, with bursts of
/// up to `burst` calls.
///
/// Telegram's per-bot limit, for example, is 30 per second; its per-group limit 20 per minute:
///
/// ```
/// # use ferrule_policy::rate_limit::RateLimitConfig;
/// let per_group: RateLimitConfig = toml::from_str(r#"
///     limit = 20
///     per = "60s"
/// "#).unwrap();
/// assert!(per_group.validate().is_ok());
/// assert_eq!(per_group.burst, None); // the whole 20 may go at once
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Calls admitted per period (at least 1; default 1).
    pub limit: u32,
    /// The period (default 1 s; must be greater than zero).
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    /// How many calls may go at once after a quiet spell (at least 1; default `limit`).
    pub burst: Option<u32>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            limit: 1,
            per: Duration::from_secs(1),
            burst: None,
        }
    }
}

/// The longest span `governor`'s nanosecond arithmetic handles safely (about 146 years).
const MAX_SPAN_NANOS: u128 = (u64::MAX / 4) as u128;

impl RateLimitConfig {
    /// `limit` calls per `per`.
    pub fn new(limit: u32, per: Duration) -> Self {
        RateLimitConfig {
            limit,
            per,
            burst: None,
        }
    }

    /// The same config with bursts of up to `burst` calls.
    #[must_use]
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Checks every field; the error names the field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.quota().map(|_| ())
    }

    /// The `governor` quota: one cell every `per / limit`, bursts of `burst`.
    pub(crate) fn quota(&self) -> Result<Quota, ConfigError> {
        let limit = NonZeroU32::new(self.limit)
            .ok_or_else(|| ConfigError::new("limit", "must be at least 1"))?;
        ensure(
            self.per > Duration::ZERO,
            "per",
            "must be greater than zero",
        )?;
        ensure(
            self.per.as_nanos() >= u128::from(self.limit),
            "per",
            "is too short for `limit`: at most one call per nanosecond",
        )?;
        let burst = match self.burst {
            None => limit,
            Some(b) => {
                NonZeroU32::new(b).ok_or_else(|| ConfigError::new("burst", "must be at least 1"))?
            }
        };
        let interval = self.per / limit.get();
        ensure(
            interval.as_nanos().saturating_mul(u128::from(burst.get())) <= MAX_SPAN_NANOS,
            "per",
            "is too long: `per` / `limit` × `burst` must be under 146 years",
        )?;
        Quota::with_period(interval)
            .map(|q| q.allow_burst(burst))
            .ok_or_else(|| ConfigError::new("per", "must be greater than zero"))
    }
}
