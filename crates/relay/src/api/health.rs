//! `/livez`, `/readyz`, `/status` and `/metrics`.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferrule_policy::CircuitState;
use ferrule_store::Store;
use serde_json::{Value, json};

use super::error::ApiError;
use crate::health::HealthStatus;
use crate::state::AppState;
use crate::time::rfc3339;

/// `GET /livez`: the process is up.
pub(crate) async fn livez() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when the store answers and the relay is not draining, else 503.
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.draining() {
        return Err(ApiError::unavailable(
            "shutting_down",
            "the relay is shutting down",
            5,
        ));
    }
    match state.store.get_meta("relay.readyz").await {
        Ok(_) => Ok(Json(json!({"status": "ready"}))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness probe: store unreachable");
            Err(ApiError::unavailable(
                "store_unavailable",
                "the store is unreachable",
                5,
            ))
        }
    }
}

/// `GET /status`: uptime, counters, depths, breakers and per-dependency health.
pub(crate) async fn status(State(state): State<AppState>) -> Json<Value> {
    state.refresh_depths().await;
    let c = &state.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut destinations = serde_json::Map::new();
    for d in state.destinations.values() {
        let breaker = d.breaker.status();
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
        destinations.insert(
            d.name.clone(),
            json!({"breaker": breaker, "health": health}),
        );
    }
    let store = state.store_health.snapshot();
    let last_error = state
        .destinations
        .values()
        .filter_map(|d| d.health.snapshot().last_error.map(|e| (d.name.clone(), e)))
        .chain(store.last_error.clone().map(|e| ("store".to_owned(), e)))
        .max_by(|a, b| a.1.at.cmp(&b.1.at))
        .map(|(dependency, e)| json!({"dependency": dependency, "at": e.at, "message": e.message}));
    Json(json!({
        "status": if state.draining() { "draining" } else { "running" },
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
        },
        "queue_depth": state.depths.queue_now(),
        "dead_letter_depth": load(&state.depths.dead),
        "dependencies": {
            "store": store,
            "destinations": destinations,
        },
        "last_error": last_error,
    }))
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    state.refresh_depths().await;
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
