//! `/livez`, `/readyz`, `/status` and `/metrics`.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferrule_policy::CircuitState;
use ferrule_store::{Store, StoreError};
use serde_json::{Value, json};

use super::error::ApiError;
use crate::health::storage::Episode;
use crate::health::{HealthSnapshot, HealthStatus, LastError};
use crate::state::AppState;
use crate::time::rfc3339;

/// `GET /livez`: the process is up.
pub(crate) async fn livez() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when the store answers within `health.store_timeout`, its disk is not
/// full and the relay is not draining; else 503 with the reason.
///
/// While the disk is full (a write was refused for lack of space and none has succeeded
/// since) the probe writes instead of reading, so it notices by itself when space comes back
/// even if no client submits meanwhile.
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.draining() {
        return Err(ApiError::unavailable(
            "shutting_down",
            "the relay is shutting down",
            5,
        ));
    }
    let answer = if state.storage.is_full() {
        let now = state.clock.system_now();
        let written = state
            .within_probe_deadline(state.store.set_meta("relay.readyz", &rfc3339(now)))
            .await;
        if let Some(result) = &written {
            state.storage.observe(now, result);
        }
        written.map(|r| r.map(drop))
    } else {
        state
            .within_probe_deadline(state.store.get_meta("relay.readyz"))
            .await
            .map(|r| r.map(drop))
    };
    match answer {
        Some(Ok(())) => Ok(Json(json!({"status": "ready"}))),
        Some(Err(e @ StoreError::StorageFull { .. })) => {
            tracing::debug!(error = %e, "readiness probe: the store's disk is full");
            Err(ApiError::from(e))
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, "readiness probe: store unreachable");
            Err(ApiError::unavailable(
                "store_unavailable",
                "the store is unreachable",
                5,
            ))
        }
        None => {
            let reason = state.probe_timed_out();
            tracing::warn!(error = %reason, "readiness probe: store unreachable");
            Err(ApiError::unavailable("store_unavailable", reason, 5))
        }
    }
}

/// The relay's overall state in `/status`, which `ferrule status` turns into its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Overall {
    /// Everything works.
    Ok,
    /// Messages are taken, but some do not get through: a destination's breaker is open,
    /// forced open or half-open, or a destination (or its inbound side) is unhealthy.
    Degraded,
    /// The store is unhealthy (failing reads, no answer, or a full disk).
    Unhealthy,
    /// A shutdown was requested: no new messages are taken.
    Draining,
}

impl Overall {
    fn as_str(self) -> &'static str {
        match self {
            Overall::Ok => "ok",
            Overall::Degraded => "degraded",
            Overall::Unhealthy => "unhealthy",
            Overall::Draining => "draining",
        }
    }
}

/// `GET /status`: the overall state, uptime, counters, depths, breakers and per-dependency
/// health.
pub(crate) async fn status(State(state): State<AppState>) -> Json<Value> {
    state.refresh_depths().await;
    let c = &state.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut overall = Overall::Ok;
    let mut destinations = serde_json::Map::new();
    for d in state.destinations.values() {
        let breaker = state.shared_breakers.status(d, state.clock.system_now());
        let mut health = d.health.snapshot();
        // An open circuit is an unhealthy dependency whatever the recent calls say.
        match breaker.state {
            CircuitState::Open | CircuitState::ForcedOpen => {
                health.status = HealthStatus::Unhealthy;
            }
            CircuitState::HalfOpen if health.status == HealthStatus::Healthy => {
                health.status = HealthStatus::Degraded;
            }
            _ => {}
        }
        if health.status == HealthStatus::Unhealthy || breaker.state == CircuitState::HalfOpen {
            overall = overall.max(Overall::Degraded);
        }
        let paused = state.paused.get(&d.name).await;
        let mut entry = json!({"breaker": breaker, "health": health, "paused": crate::destination::paused::view(paused.as_ref())});
        if let Some(inbound) = &d.inbound {
            let health = inbound.health.snapshot();
            if health.status == HealthStatus::Unhealthy {
                overall = overall.max(Overall::Degraded);
            }
            entry["inbound"] = json!({"mode": inbound.mode, "health": health});
        }
        if let Some(check) = &d.health_check {
            let check = check.snapshot();
            match check.health.status {
                HealthStatus::Unhealthy if check.critical => {
                    overall = overall.max(Overall::Unhealthy);
                }
                HealthStatus::Unhealthy | HealthStatus::Degraded => {
                    overall = overall.max(Overall::Degraded);
                }
                HealthStatus::Healthy => {}
            }
            entry["health_check"] = json!(check);
        }
        if let Some(rate) = rate_limit_state(d) {
            entry["rate_limit"] = rate;
        }
        destinations.insert(d.name.clone(), entry);
    }
    let mut store = state.store_health.snapshot();
    let storage_full = state.storage.current();
    if let Some(episode) = &storage_full {
        // A full disk is an unhealthy store however its reads are doing.
        store.status = HealthStatus::Unhealthy;
        store.last_error = Some(LastError {
            at: episode.since.clone(),
            message: format!("storage full: {}", episode.reason),
        });
    }
    let last_error = state
        .destinations
        .values()
        .filter_map(|d| d.health.snapshot().last_error.map(|e| (d.name.clone(), e)))
        .chain(state.destinations.values().filter_map(|d| {
            let e = d.inbound.as_ref()?.health.snapshot().last_error?;
            Some((format!("{}.inbound", d.name), e))
        }))
        .chain(state.destinations.values().filter_map(|d| {
            let e = d.health_check.as_ref()?.health.snapshot().last_error?;
            Some((format!("{}.health_check", d.name), e))
        }))
        .chain(store.last_error.clone().map(|e| ("store".to_owned(), e)))
        .max_by(|a, b| a.1.at.cmp(&b.1.at))
        .map(|(dependency, e)| json!({"dependency": dependency, "at": e.at, "message": e.message}));
    if store.status == HealthStatus::Unhealthy {
        overall = overall.max(Overall::Unhealthy);
    }
    if state.draining() {
        overall = Overall::Draining;
    }
    Json(json!({
        "status": overall.as_str(),
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": rfc3339(std::time::SystemTime::now() - state.started.elapsed()),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "counters": {
            "submitted": load(&c.submitted),
            "delivered": load(&c.delivered),
            "retried": load(&c.retried),
            "dead": load(&c.dead),
            "deferred": load(&c.deferred),
            "panics": load(&c.panics),
            "inbound": load(&c.inbound),
            "inbound_duplicates": load(&c.inbound_duplicates),
            "inbound_emails": load(&c.inbound_emails),
            "inbound_email_duplicates": load(&c.inbound_email_duplicates),
            "inbound_emails_refused": load(&c.inbound_emails_refused),
        },
        "email_sources": state.email_sources.keys().collect::<Vec<_>>(),
        "queue_depth": state.depths.queue_now(),
        "scheduled_depth": state.depths.scheduled_now(),
        "dead_letter_depth": load(&state.depths.dead),
        "store": state.store.load(),
        "dependencies": {
            "store": store_entry(store, storage_full),
            "destinations": destinations,
        },
        "last_error": last_error,
    }))
}

/// What `d`'s send limits are doing now, when it has one: the deferrals of the last minute,
/// the next slot, and a Telegram bot's windows.
pub(crate) fn rate_limit_state(d: &crate::destination::Destination) -> Option<Value> {
    if d.rate_limit.is_none() && d.telegram_limits.is_none() && d.write_pace.is_none() {
        return None;
    }
    let mut state = json!(d.rate_watch.snapshot());
    if let Some(limits) = &d.telegram_limits {
        state["telegram"] = json!(limits.windows());
    }
    Some(state)
}

/// The store's entry in `/status`: its health, and `storage_full` while the disk is full.
fn store_entry(health: HealthSnapshot, storage_full: Option<Episode>) -> Value {
    let mut entry = json!(health);
    if let Some(episode) = storage_full {
        entry["storage_full"] = json!(episode);
    }
    entry
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    state.refresh_depths().await;
    crate::telemetry::prometheus::collect_process();
    crate::health::pool::export(&state.store.load());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
