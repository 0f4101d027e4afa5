//! `[dispatcher]`: how many deliveries run at once and how messages are claimed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[dispatcher]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatcherConfig {
    /// Deliveries running at once across all destinations (default 256).
    pub concurrency: usize,
    /// Most messages claimed at once (default 256).
    pub batch: usize,
    /// Lease on a claimed message; extended every third of it while a delivery runs (60 s).
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Longest idle wait between claims when no wake-up arrives (default 1 s).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// When a full bulkhead or a busy half-open circuit defers a message, it is due again
    /// after this long (default 1 s).
    #[serde(with = "humantime_serde")]
    pub defer_for: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            concurrency: 256,
            batch: 256,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            defer_for: Duration::from_secs(1),
        }
    }
}
