//! One dependency's health for `/status`: healthy, degraded or unhealthy, with thresholds.
//!
//! One failure makes a healthy dependency degraded; `failure_threshold` failures in a row make
//! it unhealthy; `recovery_threshold` successes in a row make it healthy again.

use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use crate::config::HealthConfig;

/// How a dependency is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Working.
    Healthy,
    /// Failing sometimes.
    Degraded,
    /// Failing.
    Unhealthy,
}

/// The last error a dependency reported.
#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    /// When (RFC 3339).
    pub at: String,
    /// What (never contains secrets: connectors keep them out of their details).
    pub message: String,
}

/// A dependency's health as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct HealthSnapshot {
    /// The status.
    pub status: HealthStatus,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Successes in a row.
    pub consecutive_successes: u32,
    /// Failures in a row that make it unhealthy.
    pub failure_threshold: u32,
    /// Successes in a row that make it healthy again.
    pub recovery_threshold: u32,
    /// The most recent error, if any.
    pub last_error: Option<LastError>,
}

#[derive(Debug)]
struct State {
    status: HealthStatus,
    failures: u32,
    successes: u32,
    last_error: Option<LastError>,
}

/// The health of one dependency.
#[derive(Debug)]
pub struct Health {
    config: HealthConfig,
    state: Mutex<State>,
}

impl Health {
    /// A healthy dependency judged with `config`.
    pub fn new(config: HealthConfig) -> Self {
        Health {
            config,
            state: Mutex::new(State {
                status: HealthStatus::Healthy,
                failures: 0,
                successes: 0,
                last_error: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a success.
    pub fn success(&self) {
        let mut s = self.lock();
        s.failures = 0;
        s.successes = s.successes.saturating_add(1);
        if s.status != HealthStatus::Healthy && s.successes >= self.config.recovery_threshold {
            s.status = HealthStatus::Healthy;
        }
    }

    /// Records a failure with its message.
    pub fn failure(&self, at: SystemTime, message: impl Into<String>) {
        let mut s = self.lock();
        s.successes = 0;
        s.failures = s.failures.saturating_add(1);
        s.status =
            if s.failures >= self.config.failure_threshold || s.status == HealthStatus::Unhealthy {
                HealthStatus::Unhealthy
            } else {
                HealthStatus::Degraded
            };
        s.last_error = Some(LastError {
            at: crate::time::rfc3339(at),
            message: message.into(),
        });
    }

    /// Records a failure that makes the dependency unhealthy at once, whatever the threshold
    /// (e.g. a conflict no retry will fix by itself).
    pub fn mark_unhealthy(&self, at: SystemTime, message: impl Into<String>) {
        let mut s = self.lock();
        s.successes = 0;
        s.failures = s.failures.saturating_add(1);
        s.status = HealthStatus::Unhealthy;
        s.last_error = Some(LastError {
            at: crate::time::rfc3339(at),
            message: message.into(),
        });
    }

    /// The current status.
    pub fn status(&self) -> HealthStatus {
        self.lock().status
    }

    /// A snapshot for `/status`.
    pub fn snapshot(&self) -> HealthSnapshot {
        let s = self.lock();
        HealthSnapshot {
            status: s.status,
            consecutive_failures: s.failures,
            consecutive_successes: s.successes,
            failure_threshold: self.config.failure_threshold,
            recovery_threshold: self.config.recovery_threshold,
            last_error: s.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degrades_fails_and_recovers_at_the_thresholds() {
        let h = Health::new(HealthConfig {
            failure_threshold: 3,
            recovery_threshold: 2,
            ..HealthConfig::default()
        });
        let now = SystemTime::now();
        assert_eq!(h.status(), HealthStatus::Healthy);
        h.failure(now, "boom");
        assert_eq!(h.status(), HealthStatus::Degraded);
        h.failure(now, "boom");
        h.failure(now, "boom");
        assert_eq!(h.status(), HealthStatus::Unhealthy);
        h.success();
        assert_eq!(h.status(), HealthStatus::Unhealthy);
        h.success();
        assert_eq!(h.status(), HealthStatus::Healthy);
        assert_eq!(h.snapshot().last_error.unwrap().message, "boom");
        h.mark_unhealthy(now, "conflict");
        assert_eq!(h.status(), HealthStatus::Unhealthy);
        assert_eq!(h.snapshot().last_error.unwrap().message, "conflict");
        h.success();
        h.success();
        assert_eq!(h.status(), HealthStatus::Healthy);
    }
}
