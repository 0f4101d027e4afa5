//! Operator routes: the dead-letter queue, circuit breakers and destinations.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use ferrule_store::{Filter, MessageId, ReplayTarget, Status, Store};
use serde::Deserialize;
use serde_json::{Value, json};

use super::caller::Caller;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::messages::{destination_filter, page};
use super::search::Search;
use crate::audit::{self, Action};
use crate::destination::{Destination, Override, OverrideState};
use crate::state::AppState;

/// Most ids one replay request may name.
const MAX_REPLAY_IDS: usize = 1000;

/// Query of `GET /v1/dead-letters`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeadQuery {
    #[serde(default)]
    destination: Option<String>,
    #[serde(default)]
    error_contains: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    ordering_key: Option<String>,
    #[serde(default)]
    payload_contains: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// Dead letters of `destination` (checked by [`destination_filter`]) whose last error holds
/// `error_contains`; an empty value is no filter.
async fn dead_filter(
    state: &AppState,
    destination: Option<String>,
    error_contains: Option<String>,
) -> Result<Filter, ApiError> {
    let mut filter = Filter::status(Status::Dead);
    filter.destination = destination_filter(state, destination).await?;
    filter.error_contains = error_contains.filter(|e| !e.is_empty());
    Ok(filter)
}

/// `GET /v1/dead-letters`.
pub(crate) async fn dead_letters(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<DeadQuery>,
) -> Result<Json<Value>, ApiError> {
    let mut filter = dead_filter(&state, q.destination, q.error_contains).await?;
    let search = Search {
        since: q.since,
        until: q.until,
        idempotency_key: q.idempotency_key,
        ordering_key: q.ordering_key,
        payload_contains: q.payload_contains,
    };
    let searched_since = search.apply(&mut filter, state.clock.system_now())?;
    page(&state, filter, searched_since, q.cursor, q.limit).await
}

/// Body of `POST /v1/dead-letters/replay`: a filter or explicit ids, and `dry_run`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayRequest {
    #[serde(default)]
    destination: Option<String>,
    #[serde(default)]
    error_contains: Option<String>,
    #[serde(default)]
    ids: Option<Vec<String>>,
    #[serde(default)]
    dry_run: bool,
}

/// `POST /v1/dead-letters/replay`: re-queues dead messages matching the filter (or the ids).
pub(crate) async fn replay_dead(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<ReplayRequest>,
) -> Result<Json<Value>, ApiError> {
    let detail = match &body.ids {
        Some(ids) => json!({"ids": ids.len()}),
        None => json!({"filter": audit::filter_detail(&[
            ("destination", body.destination.as_deref()),
            ("error_contains", body.error_contains.as_deref()),
        ])}),
    };
    let target = match body.ids {
        Some(ids) => {
            if body.destination.is_some() || body.error_contains.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "give either `ids` or a filter, not both",
                ));
            }
            ReplayTarget::Ids(parse_ids(&ids)?)
        }
        None => {
            // Replayed messages of a destination that is not configured would only die again.
            if let Some(name) = body.destination.as_deref().filter(|d| !d.is_empty())
                && !state.destinations.contains_key(name)
            {
                return Err(ApiError::unknown_destination(name));
            }
            ReplayTarget::Filter(dead_filter(&state, body.destination, body.error_contains).await?)
        }
    };
    let report = state.written(state.store.replay(target, body.dry_run).await)?;
    if !report.dry_run {
        let entry = audit::entry(&caller, Action::DeadLettersReplay)
            .count(report.count)
            .detail(detail);
        audit::record(&state.store, entry).await;
    }
    Ok(Json(json!({
        "count": report.count,
        "ids": report.ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "dry_run": report.dry_run,
    })))
}

/// Parses message ids, at most [`MAX_REPLAY_IDS`] of them.
fn parse_ids(ids: &[String]) -> Result<Vec<MessageId>, ApiError> {
    if ids.len() > MAX_REPLAY_IDS {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("at most {MAX_REPLAY_IDS} ids per request"),
        ));
    }
    ids.iter()
        .map(|s| {
            s.parse::<MessageId>().map_err(|_| {
                ApiError::bad_request("invalid_id", format!("`{s}` is not a message id"))
            })
        })
        .collect()
}

/// Query of `DELETE /v1/dead-letters`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeQuery {
    #[serde(default)]
    destination: Option<String>,
    #[serde(default)]
    error_contains: Option<String>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    dry_run: bool,
}

/// `DELETE /v1/dead-letters?destination=&error_contains=` (or `?all=true`), optionally with
/// `dry_run=true`: deletes dead messages, or says how many match.
///
/// A request without a filter is refused (400 `filter_required`) unless it says `all=true`:
/// an empty filter matches every dead letter, and a forgotten parameter must not delete them.
pub(crate) async fn purge_dead(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<PurgeQuery>,
) -> Result<Json<Value>, ApiError> {
    let filtered = [&q.destination, &q.error_contains]
        .iter()
        .any(|v| v.as_deref().is_some_and(|v| !v.is_empty()));
    match (filtered, q.all) {
        (false, false) => {
            return Err(ApiError::bad_request(
                "filter_required",
                "give `destination` and/or `error_contains`, or `all=true` to purge every dead letter",
            ));
        }
        (true, true) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "`all=true` purges every dead letter: give it without `destination` or `error_contains`",
            ));
        }
        _ => {}
    }
    let detail = json!({"filter": audit::filter_detail(&[
        ("destination", q.destination.as_deref()),
        ("error_contains", q.error_contains.as_deref()),
    ]), "all": q.all});
    let filter = dead_filter(&state, q.destination, q.error_contains).await?;
    if q.dry_run {
        // What a replay would take is exactly what a purge would delete: the dead letters
        // matching the filter.
        let report = state.written(state.store.replay(ReplayTarget::Filter(filter), true).await)?;
        return Ok(Json(
            json!({"purged": 0, "matched": report.count, "dry_run": true}),
        ));
    }
    let purged = state.written(state.store.purge(&filter).await)?;
    let entry = audit::entry(&caller, Action::DeadLettersPurge)
        .count(purged)
        .detail(detail);
    audit::record(&state.store, entry).await;
    Ok(Json(json!({"purged": purged, "dry_run": false})))
}

/// Body of `POST /v1/dead-letters/purge`: the ids, and the filter they must still match.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeRequest {
    ids: Vec<String>,
    #[serde(default)]
    destination: Option<String>,
    #[serde(default)]
    error_contains: Option<String>,
}

/// `POST /v1/dead-letters/purge`: deletes the named messages that are still dead and match
/// the filter; `ferrule dlq purge` pages through a listing and purges it with this, chunk by
/// chunk.
pub(crate) async fn purge_dead_ids(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<PurgeRequest>,
) -> Result<Json<Value>, ApiError> {
    let ids = parse_ids(&body.ids)?;
    let detail = json!({"ids": ids.len(), "filter": audit::filter_detail(&[
        ("destination", body.destination.as_deref()),
        ("error_contains", body.error_contains.as_deref()),
    ])});
    let filter = dead_filter(&state, body.destination, body.error_contains).await?;
    let purged = state.written(state.store.purge_ids(&ids, &filter).await)?;
    if purged > 0 {
        let entry = audit::entry(&caller, Action::DeadLettersPurge)
            .count(purged)
            .detail(detail);
        audit::record(&state.store, entry).await;
    }
    Ok(Json(json!({ "purged": purged })))
}

/// One destination's breaker as the API shows it: its status, the override holding it, if
/// any (`{state, set_at, set_by, reason?}`), else `null`, and what this relay knows of its
/// shared circuit (`null` unless `breaker.shared`).
async fn breaker_view(state: &AppState, d: &Destination) -> Value {
    let breakers = &state.shared_breakers;
    json!({
        "destination": d.name,
        "breaker": breakers.status(d, state.clock.system_now()),
        "override": state.overrides.get(&d.name).await,
        "shared": breakers.view(&d.name),
    })
}

/// `GET /v1/breakers`: every destination's breaker, with who overrode it and when.
pub(crate) async fn breakers(State(state): State<AppState>) -> Json<Value> {
    let mut list = Vec::with_capacity(state.destinations.len());
    for d in state.destinations.values() {
        list.push(breaker_view(&state, d).await);
    }
    Json(json!({ "breakers": list }))
}

/// Longest `reason` a breaker override keeps.
const MAX_REASON: usize = 500;

/// Query of `POST /v1/breakers/{destination}/{action}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionQuery {
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

/// `POST /v1/breakers/{destination}/{reset|force-open|disable}?reason=`: `force-open` and
/// `disable` are stored as the destination's override (surviving restarts, reaching every
/// relay on the store) before the breaker changes; `reset` deletes it and closes the breaker.
pub(crate) async fn breaker_action(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((destination, action)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ActionQuery>,
) -> Result<Json<Value>, ApiError> {
    let Some(d) = state.destinations.get(&destination) else {
        return Err(ApiError::not_found(format!(
            "no destination named `{destination}`"
        )));
    };
    let reason = q.reason.filter(|r| !r.trim().is_empty());
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON)
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`reason` must be at most {MAX_REASON} characters"),
        ));
    }
    let set = |s| Override::new(s, state.clock.system_now(), caller.clone(), reason.clone());
    let (written, done) = match action.as_str() {
        "reset" => (
            state.overrides.reset(&state.store, d).await,
            Action::BreakerReset,
        ),
        "force-open" => {
            let set = set(OverrideState::ForcedOpen);
            (
                state.overrides.set(&state.store, d, set).await,
                Action::BreakerForceOpen,
            )
        }
        "disable" => {
            let set = set(OverrideState::Disabled);
            (
                state.overrides.set(&state.store, d, set).await,
                Action::BreakerDisable,
            )
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("unknown action `{action}`; expected reset, force-open or disable"),
            ));
        }
    };
    state.written(written)?;
    tracing::info!(destination = %d.name, action, %caller, reason = reason.as_deref().unwrap_or(""), "breaker changed by an operator");
    let entry = audit::entry(&caller, done)
        .target(&d.name)
        .detail(audit::filter_detail(&[("reason", reason.as_deref())]));
    audit::record(&state.store, entry).await;
    crate::telemetry::prometheus::breaker_state(&d.name, d.breaker.state());
    Ok(Json(breaker_view(&state, d).await))
}

/// `GET /v1/destinations`, each with its pause (`null` unless an operator paused it).
pub(crate) async fn destinations(State(state): State<AppState>) -> Json<Value> {
    let mut list = Vec::with_capacity(state.destinations.len());
    for d in state.destinations.values() {
        list.push(json!({
            "name": d.name,
            "type": d.kind.as_str(),
            "endpoint": d.endpoint,
            "breaker": d.breaker.state(),
            "health": d.health.status(),
            "paused": crate::destination::paused::view(state.paused.get(&d.name).await.as_ref()),
        }));
    }
    Json(json!({ "destinations": list }))
}
