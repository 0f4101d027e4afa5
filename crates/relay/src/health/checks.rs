//! Active health checks of the destinations (`[destinations.health_check]`): one task per
//! checked destination asks its connector, every `interval`, whether the dependency answers
//! ([`ferrule_connectors::CheckTarget`]), and feeds what it finds to
//!
//! - the check's own [`Health`] (its `failure_threshold` and `recovery_threshold`), shown in
//!   `/status`, where an unhealthy `critical` check makes the relay `unhealthy` and another one
//!   `degraded`;
//! - `/metrics` (`ferrule_health_check_up`, `ferrule_health_checks_total`);
//! - the alerts, once per transition to unhealthy and back (de-duplicated like the breaker's);
//! - the destination's circuit breaker: while it is open, a passing check half-opens it at
//!   once (deliveries resume without waiting out the open period) and a failing one holds it
//!   open until the next check (no delivery is spent probing a dependency known to be down).
//!
//! Checks are never deliveries: they count in no delivery metric and in no breaker window.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ferrule_connectors::{CheckResult, CheckTarget};
use serde::Serialize;

use super::{Health, HealthSnapshot, HealthStatus};
use crate::alerts::Alert;
use crate::config::{HealthCheckConfig, HealthConfig};
use crate::destination::Destination;
use crate::state::AppState;
use crate::telemetry::prometheus::{HEALTH_CHECK_UP, HEALTH_CHECKS};
use crate::time::rfc3339;

/// One destination's check: its configuration and what it has found.
#[derive(Debug)]
pub struct ActiveCheck {
    /// As configured.
    pub config: HealthCheckConfig,
    /// Passed and failed checks against the thresholds.
    pub health: Health,
    /// Failed checks before this time are not counted (`grace_period` from the start).
    counts_from: SystemTime,
    /// The last passed check: when, and what it said.
    last_passed: Mutex<Option<LastPassed>>,
}

/// The last check that passed.
#[derive(Debug, Clone, Serialize)]
pub struct LastPassed {
    /// When (RFC 3339).
    pub at: String,
    /// What the dependency answered, e.g. `answered 200` or `bot @acme_bot`.
    pub detail: String,
}

/// A check as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckSnapshot {
    /// Healthy, degraded or unhealthy, with the thresholds and the last error.
    #[serde(flatten)]
    pub health: HealthSnapshot,
    /// Whether an unhealthy check makes the relay unhealthy (else degraded).
    pub critical: bool,
    /// Milliseconds between checks.
    pub interval_ms: u64,
    /// The last check that passed, if one has.
    pub last_passed: Option<LastPassed>,
}

impl ActiveCheck {
    /// A check configured by `config`, for a relay started at `started`.
    pub fn new(config: HealthCheckConfig, started: SystemTime) -> Self {
        let health = Health::new(HealthConfig {
            failure_threshold: config.failure_threshold,
            recovery_threshold: config.recovery_threshold,
            ..HealthConfig::default()
        });
        ActiveCheck {
            counts_from: started + config.grace_period,
            config,
            health,
            last_passed: Mutex::new(None),
        }
    }

    /// What `/status` shows.
    pub fn snapshot(&self) -> CheckSnapshot {
        CheckSnapshot {
            health: self.health.snapshot(),
            critical: self.config.critical,
            interval_ms: u64::try_from(self.config.interval.as_millis()).unwrap_or(u64::MAX),
            last_passed: self
                .last_passed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    fn target(&self) -> CheckTarget {
        CheckTarget {
            // Validated when the configuration was loaded.
            url: self.config.url.as_deref().and_then(|u| u.parse().ok()),
            expect_status: self.config.expect_status.clone(),
            timeout: self.config.timeout,
        }
    }
}

/// Starts the check of every destination that has one, until the relay stops.
pub fn spawn(state: &AppState) {
    for destination in state.destinations.values() {
        if destination.health_check.is_some() {
            state.tasks.spawn(run(state.clone(), destination.clone()));
        }
    }
}

/// Checks `destination` now and every `interval` after, until the relay stops.
async fn run(state: AppState, destination: Arc<Destination>) {
    let Some(check) = &destination.health_check else {
        return;
    };
    let target = check.target();
    loop {
        let result = tokio::select! {
            () = state.shutdown.cancelled() => return,
            result = destination.connector.check(&target) => result,
        };
        record(&state, &destination, check, result);
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = state.clock.sleep(check.config.interval) => {}
        }
    }
}

/// Feeds one check's `result` to the check's health, the metrics, the breaker and the alerts.
fn record(state: &AppState, destination: &Destination, check: &ActiveCheck, result: CheckResult) {
    let name = destination.name.as_str();
    let now = state.clock.system_now();
    let before = check.health.status();
    let outcome = match result {
        Ok(detail) => {
            check.health.success();
            *check.last_passed.lock().unwrap_or_else(|e| e.into_inner()) = Some(LastPassed {
                at: rfc3339(now),
                detail,
            });
            if destination.breaker.end_open_period() {
                tracing::info!(
                    destination = name,
                    "health check passed while the circuit was open: it half-opens now"
                );
            }
            "pass"
        }
        Err(detail) => {
            if now < check.counts_from {
                tracing::debug!(destination = name, error = %detail, "health check failed within the grace period");
            } else {
                tracing::debug!(destination = name, error = %detail, "health check failed");
                check.health.failure(now, detail);
            }
            destination
                .breaker
                .extend_open_period(check.config.interval);
            "fail"
        }
    };
    let after = check.health.status();
    // Counted once the check's health has moved, so whoever sees the count sees the status.
    metrics::counter!(HEALTH_CHECKS.name, "destination" => name.to_owned(), "result" => outcome)
        .increment(1);
    metrics::gauge!(HEALTH_CHECK_UP.name, "destination" => name.to_owned()).set(
        if after == HealthStatus::Unhealthy {
            0.0
        } else {
            1.0
        },
    );
    let error = || {
        check
            .health
            .snapshot()
            .last_error
            .map(|e| e.message)
            .unwrap_or_default()
    };
    if before != HealthStatus::Unhealthy && after == HealthStatus::Unhealthy {
        let error = error();
        tracing::warn!(destination = name, error = %error, "health check: unhealthy");
        state
            .alerts
            .raise_soon(Alert::health_check_failing(name, &error, now));
    } else if before == HealthStatus::Unhealthy && after == HealthStatus::Healthy {
        tracing::info!(destination = name, "health check: healthy again");
        state
            .alerts
            .raise_soon(Alert::health_check_recovered(name, now));
    }
}
