//! `[defaults]`: the policies of every destination that does not override them.

use std::time::Duration;

use ferrule_policy::ConfigError;
use ferrule_policy::breaker::{BreakerConfig, Window};
use ferrule_policy::bulkhead::BulkheadConfig;
use ferrule_policy::chaos::ChaosConfig;
use ferrule_policy::rate_limit::RateLimitConfig;
use ferrule_policy::retry::{Backoff, Jitter, RetryConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::load::tables_stay_tables;

/// `[defaults]`: the policies of every destination that does not override them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyDefaults {
    /// Durable retries: exponential 1 s → 1 h, 10 attempts, full jitter. `max_elapsed` counts
    /// from the first attempt since the message was created or last replayed; decorrelated
    /// jitter grows from the previous delay as the message's timeline records it.
    pub retry: RetryConfig,
    /// Circuit breaker: last 20 calls, at least 10, 50 % failures; open 30 s growing ×2 to 10 min.
    pub breaker: BreakerConfig,
    /// Rate limit (default: none).
    pub rate_limit: Option<RateLimitConfig>,
    /// Concurrent deliveries per destination (default 256, the dispatcher's default
    /// concurrency, no queue). Lower it to keep one slow destination from taking every
    /// dispatcher slot; a delivery refused by a full bulkhead is deferred by `defer_for`.
    pub bulkhead: BulkheadConfig,
    /// Per-attempt timeout (default 15 s).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Fault injection (default off).
    pub chaos: ChaosConfig,
}

impl Default for PolicyDefaults {
    fn default() -> Self {
        PolicyDefaults {
            retry: RetryConfig {
                max_attempts: 10,
                max_elapsed: None,
                backoff: Backoff::Exponential {
                    base: Duration::from_secs(1),
                    multiplier: 2.0,
                    cap: Duration::from_secs(3600),
                },
                jitter: Jitter::Full,
                max_retry_after: Duration::from_secs(24 * 3600),
                budget: None,
            },
            breaker: BreakerConfig {
                window: Window::Count(20),
                min_calls: 10,
                failure_rate: 0.5,
                open_for: Duration::from_secs(30),
                open_backoff: 2.0,
                max_open_for: Some(Duration::from_secs(600)),
                ..BreakerConfig::default()
            },
            rate_limit: None,
            bulkhead: BulkheadConfig {
                max_concurrent: 256,
                ..BulkheadConfig::default()
            },
            timeout: Duration::from_secs(15),
            chaos: ChaosConfig::default(),
        }
    }
}

/// `base` with the fields of `over` (a table from the file) laid on top, as `T`.
pub(super) fn overlay<T: Serialize + DeserializeOwned>(
    base: &T,
    over: Option<&serde_json::Value>,
    field: &str,
) -> Result<T, ConfigError> {
    let mut value = serde_json::to_value(base)
        .map_err(|e| ConfigError::new(field.to_owned(), e.to_string()))?;
    if let Some(over) = over {
        tables_stay_tables(over, &value, field)?;
        merge(&mut value, over);
    }
    // The path inside the table names the field at fault: `destinations[0].retry.max_attempts`
    // rather than the whole table.
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let field = match inner.as_str() {
            "." | "" => field.to_owned(),
            inner => format!("{field}.{inner}"),
        };
        ConfigError::new(field, e.into_inner().to_string())
    })
}

/// Lays `over` onto `base`, table by table.
pub(super) fn merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    // A tagged or exclusive table (backoff, window) is replaced whole.
                    Some(slot) if k != "backoff" && k != "window" => merge(slot, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}
