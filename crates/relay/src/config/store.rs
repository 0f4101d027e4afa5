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
    /// Delivered messages are purged after this long (default 7 days).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Whether a dead message blocks later ones with its ordering key (`skip` or `block`).
    pub fifo_dead_letter_policy: DeadLetterPolicy,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: Secret::new("sqlite://ferrule.db"),
            synchronous: Synchronous::Full,
            idempotency_window: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(7 * 24 * 3600),
            fifo_dead_letter_policy: DeadLetterPolicy::Skip,
        }
    }
}
