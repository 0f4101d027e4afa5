//! The routes' runs over HTTP: `POST /v1/routes/{name}/runs` (start a run with a JSON body),
//! `GET /v1/routes/{name}/stats`, `GET /v1/runs` (list), `GET /v1/runs/{id}` (the run with its
//! timeline, waits and messages), and what an operator or a client does to one run:
//! `signal` (answer its wait), `retry` (run its failed step again), `cancel`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferrule_store::{
    MessageId, Run, RunChange, RunDetail, RunEvent, RunFilter, RunId, RunMessage, RunStatus,
    Started, Status, Store, StoreError, Wait,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::caller::Caller;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::messages::parse_cursor;
use crate::audit::{self, Action};
use crate::routes::engine::{Decision, advance, enter, since};
use crate::routes::press::{Answered, Answerer, signal as answer_wait};
use crate::routes::trigger::{StartError, start};
use crate::state::AppState;
use crate::time::{parse_rfc3339, rfc3339};

/// A run as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct RunView {
    id: String,
    route: String,
    dedupe_key: String,
    status: &'static str,
    state: String,
    step: Option<String>,
    context: Value,
    version: u64,
    created_at: String,
    updated_at: String,
    finished_at: Option<String>,
    /// Time spent waiting for a person, in milliseconds (the current wait included).
    waited_ms: u64,
    /// Start to finish (or now) less the waits, in milliseconds.
    processing_ms: u64,
    last_error: Option<String>,
    /// The W3C trace the run was started under, which its steps' messages carry.
    trace: Option<super::views::TraceView>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RunView {
    fn of(run: Run, now: std::time::SystemTime) -> Self {
        let processing = run.processing_time(now);
        let current = run
            .waiting_since
            .map(|s| since(run.finished_at.unwrap_or(now), s))
            .unwrap_or_default();
        RunView {
            id: run.id.to_string(),
            status: run.status.as_str(),
            waited_ms: ms(run.waited + current),
            processing_ms: ms(processing),
            created_at: rfc3339(run.created_at),
            updated_at: rfc3339(run.updated_at),
            finished_at: run.finished_at.map(rfc3339),
            route: run.route,
            dedupe_key: run.dedupe_key,
            state: run.state,
            step: run.step,
            context: run.context,
            version: run.version,
            last_error: run.last_error,
            trace: super::views::TraceView::of(run.traceparent),
        }
    }
}

/// One row of a run's timeline.
#[derive(Debug, Serialize)]
struct RunEventView {
    seq: u32,
    at: String,
    kind: &'static str,
    status: &'static str,
    state: String,
    step: Option<String>,
    message: Option<String>,
    detail: Option<String>,
    duration_ms: Option<u64>,
}

impl From<RunEvent> for RunEventView {
    fn from(e: RunEvent) -> Self {
        RunEventView {
            seq: e.seq,
            at: rfc3339(e.at),
            kind: e.kind.as_str(),
            status: e.status.as_str(),
            state: e.state,
            step: e.step,
            message: e.message.map(|m| m.to_string()),
            detail: e.detail,
            duration_ms: e.duration.map(ms),
        }
    }
}

/// A wait as the API shows it: never its token, which answers it.
#[derive(Debug, Serialize)]
struct WaitView {
    step: String,
    state: &'static str,
    created_at: String,
    expires_at: String,
    closed_at: Option<String>,
    consumed_by: Option<String>,
    action: Option<String>,
    allowed: Option<Value>,
}

impl From<Wait> for WaitView {
    fn from(w: Wait) -> Self {
        WaitView {
            step: w.step,
            state: w.state.as_str(),
            created_at: rfc3339(w.created_at),
            expires_at: rfc3339(w.expires_at),
            closed_at: w.closed_at.map(rfc3339),
            consumed_by: w.consumed_by,
            action: w.action,
            allowed: w.allowed,
        }
    }
}

/// One of a run's messages.
#[derive(Debug, Serialize)]
struct RunMessageView {
    id: String,
    step: String,
    destination: String,
    status: &'static str,
    attempts: u32,
    created_at: String,
    updated_at: String,
    last_error: Option<String>,
}

impl From<RunMessage> for RunMessageView {
    fn from(m: RunMessage) -> Self {
        RunMessageView {
            id: m.id.to_string(),
            step: m.step,
            destination: m.destination,
            status: m.status.as_str(),
            attempts: m.attempts,
            created_at: rfc3339(m.created_at),
            updated_at: rfc3339(m.updated_at),
            last_error: m.last_error,
        }
    }
}

/// `{"run", "events", "waits", "messages"}`.
fn detail_json(detail: RunDetail, now: std::time::SystemTime) -> Value {
    json!({
        "run": RunView::of(detail.run, now),
        "events": detail.events.into_iter().map(RunEventView::from).collect::<Vec<_>>(),
        "waits": detail.waits.into_iter().map(WaitView::from).collect::<Vec<_>>(),
        "messages": detail.messages.into_iter().map(RunMessageView::from).collect::<Vec<_>>(),
    })
}

/// A run id from a path: 400 `invalid_id` when `id` is not one.
pub(crate) fn parse_run_id(id: &str) -> Result<RunId, ApiError> {
    id.parse::<RunId>()
        .map_err(|_| ApiError::bad_request("invalid_id", format!("`{id}` is not a run id")))
}

fn run_not_found(id: RunId) -> ApiError {
    ApiError::not_found(format!("run {id} not found"))
}

fn unknown_route(name: &str) -> ApiError {
    ApiError::not_found(format!("no route named `{name}` is configured"))
}

/// `POST /v1/routes/{name}/runs`: starts a run of the route with the JSON body as `input`;
/// 201 with the run, or 200 with the run a repeated `Idempotency-Key` (or dedupe key)
/// started before.
pub(crate) async fn start_run(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let route = state
        .routes
        .get(&name)
        .ok_or_else(|| unknown_route(&name))?;
    if !input.is_object() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "the body must be a JSON object (the run's `input`)",
        ));
    }
    if state.draining() {
        return Err(ApiError::unavailable(
            "shutting_down",
            "the relay is shutting down",
            5,
        ));
    }
    let key = match headers.get("idempotency-key") {
        Some(v) => v
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 255)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_request",
                    "`Idempotency-Key` must be 1 to 255 printable ASCII characters",
                )
            })?
            .to_owned(),
        None => ulid::Ulid::new().to_string(),
    };
    let started = start(&state, route, json!({ "input": input }), &key)
        .await
        .map_err(|e| match e {
            StartError::Store(e) => ApiError::from(state.written(Err::<(), _>(e)).unwrap_err()),
            StartError::Dedupe(reason) => ApiError {
                field: Some("dedupe".into()),
                ..ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_input",
                    format!("cannot make the run's dedupe key from the input: {reason}"),
                )
            },
        })?;
    let now = state.clock.system_now();
    let (status, run) = match started {
        Started::Created(advanced) => (StatusCode::CREATED, advanced.run),
        Started::Existing(run) => (StatusCode::OK, run),
    };
    Ok((status, Json(RunView::of(run, now))).into_response())
}

/// Query of `GET /v1/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /v1/runs?route=&state=&status=&since=&cursor=&limit=`: runs, newest first.
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let mut filter = RunFilter::all();
    if let Some(route) = q.route.filter(|r| !r.is_empty()) {
        filter = filter.route(route);
    }
    if let Some(s) = q.state.filter(|s| !s.is_empty()) {
        filter = filter.state(s);
    }
    if let Some(statuses) = q.status.filter(|s| !s.is_empty()) {
        for s in statuses.split(',') {
            let status = s.trim().parse::<RunStatus>().map_err(|_| ApiError {
                field: Some("status".into()),
                ..ApiError::bad_request(
                    "invalid_query",
                    format!(
                        "`status`: `{s}` is not one of active, waiting, completed, failed, \
                         expired, cancelled"
                    ),
                )
            })?;
            filter = filter.status(status);
        }
    }
    if let Some(since) = q.since.filter(|s| !s.is_empty()) {
        let at = parse_rfc3339(&since).ok_or_else(|| ApiError {
            field: Some("since".into()),
            ..ApiError::bad_request(
                "invalid_query",
                "`since` must be an RFC 3339 time, e.g. 2026-01-01T00:00:00Z",
            )
        })?;
        filter = filter.since(at);
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`limit` must be between 1 and 1000",
        ));
    }
    let cursor = parse_cursor(q.cursor)?;
    let page = state
        .store
        .list_runs(&filter, cursor.as_ref(), limit)
        .await?;
    let now = state.clock.system_now();
    let runs: Vec<RunView> = page.runs.into_iter().map(|r| RunView::of(r, now)).collect();
    Ok(Json(json!({
        "runs": runs,
        "next": page.next.map(|c| c.as_str().to_owned()),
    })))
}

/// `GET /v1/runs/{id}`: the run with its timeline, waits and messages.
pub(crate) async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_run_id(&id)?;
    let detail = state
        .store
        .get_run(id)
        .await?
        .ok_or_else(|| run_not_found(id))?;
    Ok(Json(detail_json(detail, state.clock.system_now())))
}

/// Body of `POST /v1/runs/{id}/signal`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignalBody {
    action: String,
}

/// `POST /v1/runs/{id}/signal`: answers the run's open wait with `action`, as a button press
/// would; 200 when it moved the run on, 409 `already_handled` / `expired` when the wait was
/// closed, 422 for an action the wait does not offer or a run with no wait.
pub(crate) async fn signal(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<SignalBody>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_run_id(&id)?;
    let who = Answerer {
        id: caller.clone(),
        name: caller,
        telegram: None,
    };
    let answered = match answer_wait(&state, id, &body.action, &who).await {
        Ok(a) => a,
        Err(StoreError::RunNotFound { .. }) => return Err(run_not_found(id)),
        Err(e) => return Err(state.written(Err::<(), _>(e)).unwrap_err().into()),
    };
    match answered {
        Answered::Accepted => {}
        Answered::AlreadyHandled | Answered::Expired => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                if answered == Answered::Expired {
                    "expired"
                } else {
                    "already_handled"
                },
                format!("run {id}: {}", answered.text().to_lowercase()),
            ));
        }
        Answered::NotAllowed | Answered::Unknown => {
            return Err(ApiError {
                field: Some("action".into()),
                ..ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_action",
                    format!("run {id} has no open wait offering `{}`", body.action),
                )
            });
        }
    }
    let detail = state
        .store
        .get_run(id)
        .await?
        .ok_or_else(|| run_not_found(id))?;
    Ok(Json(detail_json(detail, state.clock.system_now())))
}

/// `POST /v1/runs/{id}/retry`: a failed run runs its failed step again: the step's dead
/// messages are queued again (a delivered step never runs again), or, when the step failed
/// before sending (a template), the step is decided again. 409 `invalid_state` for a run that
/// did not fail.
pub(crate) async fn retry(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_run_id(&id)?;
    let detail = state
        .store
        .get_run(id)
        .await?
        .ok_or_else(|| run_not_found(id))?;
    let dead: Vec<MessageId> = detail
        .messages
        .iter()
        .filter(|m| {
            Some(&m.step) == detail.run.step.as_ref()
                && matches!(m.status, Status::Dead | Status::Cancelled)
        })
        .map(|m| m.id)
        .collect();
    let result = advance(&state, id, |run| {
        if run.status != RunStatus::Failed {
            return None;
        }
        let route = state.routes.get(&run.route)?;
        let decision = if dead.is_empty() {
            enter(
                &state,
                route,
                Some(&run.id.to_string()),
                run.step.as_deref(),
                &run.context,
                state.clock.system_now(),
            )
        } else {
            let mut change = RunChange::new().status(RunStatus::Active).state("retrying");
            change.retry = dead.clone();
            Decision {
                change,
                finished: None,
            }
        };
        let mut decision = decision;
        decision.change = decision.change.detail(format!("retried by {caller}"));
        Some(decision)
    })
    .await;
    match result {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "invalid_state",
                format!(
                    "run {id} is {}: only a failed run of a configured route can be retried",
                    detail.run.status
                ),
            )
            .with_detail("status", detail.run.status.as_str()));
        }
        Err(StoreError::RunNotFound { .. }) => return Err(run_not_found(id)),
        Err(e) => return Err(e.into()),
    }
    let entry = audit::entry(&caller, Action::RunRetry)
        .target(id.to_string())
        .count(dead.len() as u64);
    audit::record(&state.store, entry).await;
    let detail = state
        .store
        .get_run(id)
        .await?
        .ok_or_else(|| run_not_found(id))?;
    Ok(Json(detail_json(detail, state.clock.system_now())))
}

/// `POST /v1/runs/{id}/cancel`: ends an unfinished run `cancelled`: its pending messages are
/// cancelled and its waits closed. 409 `invalid_state` for a finished run.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_run_id(&id)?;
    let result = advance(&state, id, |run| {
        if run.status.is_finished() {
            return None;
        }
        Some(Decision {
            change: RunChange::new()
                .status(RunStatus::Cancelled)
                .state("cancelled")
                .detail(format!("cancelled by {caller}")),
            finished: Some(RunStatus::Cancelled),
        })
    })
    .await;
    match result {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "invalid_state",
                format!("run {id} has finished: only an active or waiting run can be cancelled"),
            ));
        }
        Err(StoreError::RunNotFound { .. }) => return Err(run_not_found(id)),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(run = %id, %caller, "run cancelled");
    let entry = audit::entry(&caller, Action::RunCancel).target(id.to_string());
    audit::record(&state.store, entry).await;
    let detail = state
        .store
        .get_run(id)
        .await?
        .ok_or_else(|| run_not_found(id))?;
    Ok(Json(detail_json(detail, state.clock.system_now())))
}

/// Query of `GET /v1/routes/{name}/stats`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatsQuery {
    #[serde(default)]
    window: Option<String>,
}

/// `GET /v1/routes/{name}/stats?window=24h`: the runs that finished within the window (by
/// status and final state, success rate, mean and p95 processing time without the time spent
/// waiting for a person, top failure reasons) and the unfinished ones now.
pub(crate) async fn stats(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> Result<Json<Value>, ApiError> {
    if state.routes.get(&name).is_none() {
        return Err(unknown_route(&name));
    }
    let window = match q.window.as_deref().filter(|w| !w.is_empty()) {
        None => Duration::from_secs(24 * 3600),
        Some(w) => humantime::parse_duration(w)
            .ok()
            .filter(|d| !d.is_zero() && *d <= Duration::from_secs(366 * 24 * 3600))
            .ok_or_else(|| ApiError {
                field: Some("window".into()),
                ..ApiError::bad_request(
                    "invalid_query",
                    "`window` must be a duration such as 1h or 24h, at most a year",
                )
            })?,
    };
    let s = state.store.run_stats(&name, window).await?;
    Ok(Json(json!({
        "route": s.route,
        "window_seconds": window.as_secs(),
        "active": s.active,
        "waiting": s.waiting,
        "finished": {
            "completed": s.finished.completed,
            "failed": s.finished.failed,
            "expired": s.finished.expired,
            "cancelled": s.finished.cancelled,
        },
        "by_state": s.by_state.iter().map(|c| json!({"state": c.state, "count": c.count})).collect::<Vec<_>>(),
        "success_rate": s.success_rate,
        "processing_ms": {
            "mean": s.mean.map(ms),
            "p95": s.p95.map(ms),
        },
        "top_failures": s.top_failures.iter().map(|f| json!({
            "status": f.status.as_str(),
            "reason": f.reason,
            "count": f.count,
            "last_at": rfc3339(f.last_at),
        })).collect::<Vec<_>>(),
    })))
}
