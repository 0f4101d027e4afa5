//! `POST /v1/destinations/{destination}/pause` and `…/resume`: an operator holds a
//! destination's deliveries (its messages stay queued; no relay sharing the store claims them)
//! and lets them go again; and their part of the OpenAPI document.

use axum::Json;
use axum::extract::State;
use ferrule_store::Paused;
use serde::Deserialize;
use serde_json::{Value, json};

use super::caller::Caller;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use super::openapi::{error, ok, op, query, schema, unavailable};
use crate::audit::{self, Action};
use crate::destination::paused::view;
use crate::state::AppState;

/// Longest `reason` a pause keeps.
const MAX_REASON: usize = 500;

/// A pause's `reason` as given: at most [`MAX_REASON`] characters, blanks included (400
/// `invalid_query` naming `reason` past that, as the OpenAPI document's `maxLength` says), then
/// `None` when absent or blank. Shared by the pauses of destinations and of schedules.
pub(crate) fn pause_reason(reason: Option<String>) -> Result<Option<String>, ApiError> {
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON)
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`reason` must be at most {MAX_REASON} characters"),
        )
        .with_field("reason"));
    }
    Ok(reason.filter(|r| !r.trim().is_empty()))
}

/// Query of `POST /v1/destinations/{destination}/pause`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PauseQuery {
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

/// The answer: the destination and its pause (`null` once resumed).
fn answer(destination: &str, paused: Option<&Paused>) -> Json<Value> {
    Json(json!({"destination": destination, "paused": view(paused)}))
}

fn check_destination(state: &AppState, destination: &str) -> Result<(), ApiError> {
    if state.destinations.contains_key(destination) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "no destination named `{destination}`"
        )))
    }
}

/// `POST /v1/destinations/{destination}/pause?reason=`: pauses the destination in the store
/// (every relay sharing it stops claiming its messages at once) and records it in the audit
/// log. Pausing a paused destination keeps the first pause.
pub(crate) async fn pause(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(destination): ApiPath<String>,
    ApiQuery(q): ApiQuery<PauseQuery>,
) -> Result<Json<Value>, ApiError> {
    check_destination(&state, &destination)?;
    let reason = pause_reason(q.reason)?;
    let paused = state.written(
        state
            .paused
            .pause(&state.store, &destination, &caller, reason.as_deref())
            .await,
    )?;
    tracing::info!(destination, %caller, reason = reason.as_deref().unwrap_or(""), "destination paused by an operator");
    let entry = audit::entry(&caller, Action::DestinationPause)
        .target(&destination)
        .detail(audit::filter_detail(&[("reason", reason.as_deref())]));
    audit::record(&state.store, entry).await;
    Ok(answer(&destination, Some(&paused)))
}

/// `POST /v1/destinations/{destination}/resume`: resumes the destination (its due messages
/// are claimed again, by every relay) and records it in the audit log; a destination that
/// was not paused is answered the same, and nothing is recorded.
pub(crate) async fn resume(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(destination): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    check_destination(&state, &destination)?;
    let was = state.written(state.paused.resume(&state.store, &destination).await)?;
    if was {
        tracing::info!(destination, %caller, "destination resumed by an operator");
        let entry = audit::entry(&caller, Action::DestinationResume).target(&destination);
        audit::record(&state.store, entry).await;
    }
    Ok(answer(&destination, None))
}

/// The pause routes' paths in the OpenAPI document, without their security (added from the
/// routes); `destination` is the schema of a configured destination's name.
pub(crate) fn openapi_paths(destination: Value) -> Value {
    let responses = |what: &str| json!({"200": ok(what, schema("DestinationPause")), "400": error("a bad query parameter (`invalid_query`)"), "404": error("no such destination"), "503": unavailable("the store is unavailable or busy (`store_unavailable`, `store_busy`); try again after `Retry-After`")});
    let path =
        json!({"name": "destination", "in": "path", "required": true, "schema": destination});
    let mut pause = op(
        "pauseDestination",
        "Hold a destination's deliveries",
        responses("paused: who, when, why (a destination already paused keeps its first pause)"),
    );
    pause["description"] = json!(
        "Stored before the answer: from then on no relay sharing the store claims the destination's messages, which stay queued (attempts unspent) until it is resumed; an attempt already running finishes. `/v1/destinations` and `/status` show the pause (within 5 s on other relays sharing a PostgreSQL store). Recorded in the audit log."
    );
    pause["parameters"] = json!([
        path.clone(),
        query(
            "reason",
            "why, kept with the pause (at most 500 characters)",
            json!({"type": "string", "maxLength": 500})
        ),
    ]);
    let mut resume = op(
        "resumeDestination",
        "Let a paused destination's deliveries go again",
        responses("resumed (`paused: null`), or was not paused"),
    );
    resume["description"] = json!(
        "Its due messages are claimed again at once, by every relay sharing the store. Recorded in the audit log when it was paused."
    );
    resume["parameters"] = json!([path]);
    json!({
        "/v1/destinations/{destination}/pause": {"post": pause},
        "/v1/destinations/{destination}/resume": {"post": resume},
    })
}

/// The pause routes' schemas in the OpenAPI document.
pub(crate) fn openapi_schemas() -> Value {
    json!({
        "Pause": {"type": ["object", "null"], "required": ["paused_at", "paused_by", "reason"], "description": "set while an operator holds the destination's deliveries", "properties": {
            "paused_at": {"type": "string", "format": "date-time"},
            "paused_by": {"type": "string", "description": "the caller's token name"},
            "reason": {"type": ["string", "null"]}}},
        "DestinationPause": {"type": "object", "required": ["destination", "paused"], "properties": {
            "destination": {"type": "string"},
            "paused": schema("Pause")}},
    })
}
