//! `[store]`: which store, its durability and how long it keeps what.

use std::time::Duration;

use ferrule_store::{DeadLetterPolicy, Synchronous};
use serde::{Deserialize, Serialize};

use super::Secret;
use super::secret::show_url;

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://path` (default `sqlite://ferrule.db`) or `postgres://…`; shown without its
    /// password.
    #[serde(serialize_with = "show_url")]
    pub url: Secret,
    /// SQLite `synchronous`: `full` (default) or `normal`.
    pub synchronous: Synchronous,
    /// How long an idempotency key stays unique per destination (default 24 h).
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// Delivered messages, inbound events, schedule occurrences and the alert log's entries
    /// are purged after this long (default 7 days).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Whether a dead message blocks later ones with its ordering key (`skip` or `block`).
    pub fifo_dead_letter_policy: DeadLetterPolicy,
    /// Longest one store operation may take, waits for a connection or a lock included; past
    /// it the caller gets `store_busy` (HTTP 503) instead of hanging (default 10 s).
    #[serde(with = "humantime_serde")]
    pub operation_timeout: Duration,
    /// A wait for a PostgreSQL pool connection longer than this logs a warning (at most one a
    /// minute, with how many waits were slow since the last; default 100 ms).
    #[serde(with = "humantime_serde")]
    pub pool_wait_warn: Duration,
    /// How long the per-minute rollups behind `GET /v1/stats` and `ferrule stats` are kept
    /// (default 14 days); `"0"` turns rollups off: nothing is recorded or written.
    #[serde(with = "humantime_serde")]
    pub rollup_retention: Duration,
}

impl StoreConfig {
    /// Whether the relay records rollups (`rollup_retention` is not zero).
    pub fn rollups(&self) -> bool {
        !self.rollup_retention.is_zero()
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: Secret::new("sqlite://ferrule.db"),
            synchronous: Synchronous::Full,
            idempotency_window: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(7 * 24 * 3600),
            fifo_dead_letter_policy: DeadLetterPolicy::Skip,
            rollup_retention: Duration::from_secs(14 * 24 * 3600),
            operation_timeout: Duration::from_secs(10),
            pool_wait_warn: Duration::from_millis(100),
        }
    }
}
