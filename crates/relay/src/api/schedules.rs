//! `GET /v1/schedules` (every schedule with its next and last occurrence and its pause) and
//! `POST /v1/schedules/{name}/pause`, `…/resume`, `…/trigger`; and their part of the OpenAPI
//! document.

use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use ferrule_store::{Occurrence, Store};
use serde::Deserialize;
use serde_json::{Value, json};

use super::caller::Caller;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use super::openapi::{error, ok, op, query, schema};
use crate::audit::{self, Action};
use crate::schedules::{PauseState, Schedule, Step, fire, read_pause, write_pause};
use crate::state::AppState;
use crate::time::rfc3339;

/// Query of `POST /v1/schedules/{name}/pause`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PauseQuery {
    #[serde(default)]
    reason: Option<String>,
}

fn occurrence_view(o: Option<&Occurrence>) -> Value {
    match o {
        None => Value::Null,
        Some(o) => json!({
            "scheduled_for": rfc3339(o.scheduled_for),
            "state": o.state.as_str(),
            "recorded_at": rfc3339(o.recorded_at),
            "message_id": o.message_id.map(|id| id.to_string()),
            "run_id": o.run_id.map(|id| id.to_string()),
            "reason": o.reason,
        }),
    }
}

fn pause_view(pause: Option<&PauseState>) -> Value {
    match pause {
        Some(p) if p.paused => json!({"paused_at": p.at, "paused_by": p.by, "reason": p.reason}),
        _ => Value::Null,
    }
}

/// One schedule as the API shows it.
fn view(
    schedule: &Schedule,
    now: SystemTime,
    latest: &[Occurrence],
    pause: Option<&PauseState>,
) -> Value {
    let c = &schedule.config;
    let last = latest.iter().find(|o| o.schedule == c.name && !o.manual);
    let manual = latest.iter().find(|o| o.schedule == c.name && o.manual);
    json!({
        "name": c.name,
        "cron": c.cron,
        "timezone": c.timezone,
        "target": schedule.target(),
        "destination": c.destination,
        "route": c.route,
        "catch_up": c.catch_up.as_str(),
        "catch_up_window_secs": c.catch_up_window.as_secs(),
        "next": schedule.next_after(now).map(rfc3339),
        "last": occurrence_view(last),
        "last_manual": occurrence_view(manual),
        "paused": pause_view(pause),
    })
}

fn find<'a>(state: &'a AppState, name: &str) -> Result<&'a Schedule, ApiError> {
    state
        .schedules
        .get(name)
        .ok_or_else(|| ApiError::not_found(format!("no schedule named `{name}`")))
}

/// One schedule's view, read from the store now.
async fn show(state: &AppState, schedule: &Schedule) -> Result<Value, ApiError> {
    let latest = state.store.latest_occurrences().await?;
    let pause = read_pause(&state.store, &schedule.config.name).await?;
    Ok(view(
        schedule,
        state.clock.system_now(),
        &latest,
        pause.as_ref(),
    ))
}

/// `GET /v1/schedules`: every configured schedule, by name, with its next occurrence (from
/// now, by the pattern), its latest recorded occurrences (the pattern's and a manual one) and
/// its pause.
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let latest = state.store.latest_occurrences().await?;
    let now = state.clock.system_now();
    let mut out = Vec::new();
    for schedule in state.schedules.iter() {
        let pause = read_pause(&state.store, &schedule.config.name).await?;
        out.push(view(schedule, now, &latest, pause.as_ref()));
    }
    Ok(Json(json!({ "schedules": out })))
}

/// `POST /v1/schedules/{name}/pause?reason=`: pauses the schedule in the store (every relay
/// sharing it passes its occurrences by, unrecorded, until resumed) and records it in the audit
/// log. Pausing a paused schedule keeps the first pause.
pub(crate) async fn pause(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<PauseQuery>,
) -> Result<Json<Value>, ApiError> {
    let schedule = find(&state, &name)?;
    let reason = super::pause::pause_reason(q.reason)?;
    let current = read_pause(&state.store, &name).await?;
    if !current.as_ref().is_some_and(|p| p.paused) {
        let pause = PauseState {
            paused: true,
            by: caller.clone(),
            at: rfc3339(state.clock.system_now()),
            reason: reason.clone(),
        };
        state.written(write_pause(&state.store, &name, &pause).await)?;
        tracing::info!(schedule = %name, %caller, reason = reason.as_deref().unwrap_or(""), "schedule paused by an operator");
        let entry = audit::entry(&caller, Action::SchedulePause)
            .target(&name)
            .detail(audit::filter_detail(&[("reason", reason.as_deref())]));
        audit::record(&state.store, entry).await;
    }
    Ok(Json(show(&state, schedule).await?))
}

/// `POST /v1/schedules/{name}/resume`: resumes the schedule from now (the occurrences it
/// passed by while paused are not caught up) and records it in the audit log; a schedule that
/// was not paused is answered the same, and nothing is recorded.
pub(crate) async fn resume(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let schedule = find(&state, &name)?;
    let current = read_pause(&state.store, &name).await?;
    if current.as_ref().is_some_and(|p| p.paused) {
        let resumed = PauseState {
            paused: false,
            by: caller.clone(),
            at: rfc3339(state.clock.system_now()),
            reason: None,
        };
        state.written(write_pause(&state.store, &name, &resumed).await)?;
        tracing::info!(schedule = %name, %caller, "schedule resumed by an operator");
        let entry = audit::entry(&caller, Action::ScheduleResume).target(&name);
        audit::record(&state.store, entry).await;
    }
    Ok(Json(show(&state, schedule).await?))
}

/// `POST /v1/schedules/{name}/trigger`: fires an occurrence now, apart from the pattern
/// (idempotency key `schedule:{name}:manual:{now}`), paused or not, and records it in the
/// audit log.
pub(crate) async fn trigger(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let schedule = find(&state, &name)?;
    let now = state.clock.system_now();
    let fired = match fire(&state, schedule, now, true, Step::Fire).await {
        Ok(fired) => fired,
        Err(crate::schedules::FireError::Store(e)) => return Err(state.written(Err(e))?),
    };
    let occurrence = fired.occurrence();
    if fired.is_created() {
        tracing::info!(schedule = %name, %caller, "schedule triggered by an operator");
        let target = occurrence
            .message_id
            .map(|id| id.to_string())
            .or(occurrence.run_id.map(|id| id.to_string()));
        let entry = audit::entry(&caller, Action::ScheduleTrigger)
            .target(&name)
            .detail(audit::filter_detail(&[
                ("scheduled_for", Some(&rfc3339(occurrence.scheduled_for))),
                ("fired", target.as_deref()),
            ]));
        audit::record(&state.store, entry).await;
    }
    Ok(Json(json!({
        "schedule": name,
        "occurrence": occurrence_view(Some(occurrence)),
    })))
}

/// The schedule routes' paths in the OpenAPI document, without their security (added from
/// the routes); `name` is the schema of a configured schedule's name.
pub(crate) fn openapi_paths(name: Value) -> Value {
    let path = json!({"name": "name", "in": "path", "required": true, "schema": name});
    let unavailable = error("the store is unavailable");
    let list = op(
        "listSchedules",
        "Every configured schedule with its next and last occurrence",
        json!({"200": ok("the schedules, by name", schema("ScheduleList")), "503": unavailable}),
    );
    let one = |what: &str| json!({"200": ok(what, schema("Schedule")), "404": error("no schedule of that name is configured"), "503": error("the store is unavailable")});
    let mut pause = op(
        "pauseSchedule",
        "Stop a schedule firing",
        one("the schedule, paused (a schedule already paused keeps its first pause)"),
    );
    pause["responses"]["400"] = error("a bad query parameter (`invalid_query`)");
    pause["description"] = json!(
        "Stored before the answer: from then on no relay sharing the store fires the schedule's occurrences, which pass by unrecorded and are not caught up after a resume. Recorded in the audit log."
    );
    pause["parameters"] = json!([
        path.clone(),
        query(
            "reason",
            "why, kept with the pause (at most 500 characters); empty for none",
            json!({"type": "string", "maxLength": 500})
        ),
    ]);
    let mut resume = op(
        "resumeSchedule",
        "Let a paused schedule fire again",
        one("the schedule (`paused: null`), resumed or not paused before"),
    );
    resume["description"] = json!(
        "The schedule fires again from its next occurrence; those it passed by while paused are not caught up. Recorded in the audit log when it was paused."
    );
    resume["parameters"] = json!([path.clone()]);
    let mut trigger = op(
        "triggerSchedule",
        "Fire a schedule's occurrence now",
        json!({"200": ok("the occurrence recorded now, with its message or run", schema("ScheduleTrigger")), "404": error("no schedule of that name is configured"), "503": error("the store is unavailable")}),
    );
    trigger["description"] = json!(
        "Enqueues the schedule's message (or starts its run) now, apart from its pattern and whether or not it is paused, with the idempotency key `schedule:{name}:manual:{time}`. Recorded in the audit log."
    );
    trigger["parameters"] = json!([path]);
    json!({
        "/v1/schedules": {"get": list},
        "/v1/schedules/{name}/pause": {"post": pause},
        "/v1/schedules/{name}/resume": {"post": resume},
        "/v1/schedules/{name}/trigger": {"post": trigger},
    })
}

/// The schedule routes' schemas in the OpenAPI document.
pub(crate) fn openapi_schemas() -> Value {
    let time = json!({"type": "string", "format": "date-time"});
    let id = json!({"type": ["string", "null"]});
    json!({
        "Occurrence": {"type": ["object", "null"], "required": ["scheduled_for", "state", "recorded_at", "message_id", "run_id", "reason"], "properties": {
            "scheduled_for": time, "state": {"type": "string", "enum": ["fired", "skipped"]},
            "recorded_at": time,
            "message_id": id, "run_id": id,
            "reason": {"type": ["string", "null"], "description": "why it was skipped"}}},
        "SchedulePause": {"type": ["object", "null"], "required": ["paused_at", "paused_by", "reason"], "description": "set while an operator holds the schedule", "properties": {
            "paused_at": time,
            "paused_by": {"type": "string", "description": "the caller's token name"},
            "reason": {"type": ["string", "null"]}}},
        "Schedule": {"type": "object", "required": ["name", "cron", "timezone", "target", "destination", "route", "catch_up", "catch_up_window_secs", "next", "last", "last_manual", "paused"], "properties": {
            "name": {"type": "string"}, "cron": {"type": "string"},
            "timezone": {"type": "string", "description": "IANA zone the pattern is read in"},
            "target": {"type": "string", "description": "`destination:NAME` or `route:NAME`"},
            "destination": {"type": ["string", "null"]}, "route": {"type": ["string", "null"]},
            "catch_up": {"type": "string", "enum": ["skip", "latest", "all"]},
            "catch_up_window_secs": {"type": "integer", "minimum": 0, "description": "whole seconds (a window under a second shows 0)"},
            "next": {"type": ["string", "null"], "format": "date-time", "description": "the next occurrence by the pattern (also while paused); null when it never matches again"},
            "last": schema("Occurrence"),
            "last_manual": schema("Occurrence"),
            "paused": schema("SchedulePause")}},
        "ScheduleList": {"type": "object", "required": ["schedules"], "properties": {"schedules": {"type": "array", "items": schema("Schedule")}}},
        "ScheduleTrigger": {"type": "object", "required": ["schedule", "occurrence"], "properties": {"schedule": {"type": "string"}, "occurrence": schema("Occurrence")}},
    })
}
