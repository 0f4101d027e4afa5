//! The Runs page: runs of the configured routes by what they are doing (waiting, retrying,
//! failed, all), a run's timeline with its waits and messages, and retry / cancel (the API's
//! own operations).

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use ferrule_store::{RunFilter, RunStatus, Store};
use serde::Deserialize;

use super::session::CsrfForm;
use super::{Layout, UiError, Viewer, age, done, render, when, when_opt};
use crate::api::caller::Caller;
use crate::api::extract::ApiPath;
use crate::state::AppState;

/// Query of `GET /ui/runs`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RunsQuery {
    show: String,
    route: String,
    cursor: String,
}

#[derive(Debug)]
struct Row {
    id: String,
    route: String,
    status: &'static str,
    state: String,
    step: String,
    updated: String,
    last_error: String,
}

#[derive(Template)]
#[template(path = "ui/runs.html")]
struct ListPage {
    layout: Layout,
    show: String,
    route: String,
    routes: Vec<String>,
    rows: Vec<Row>,
    next: Option<String>,
    error: Option<String>,
}

/// `GET /ui/runs?show=waiting|retrying|failed|all&route=&cursor=`.
pub(crate) async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<RunsQuery>,
) -> Response {
    let show = match q.show.as_str() {
        "retrying" | "failed" | "all" | "active" => q.show.clone(),
        _ => "waiting".to_owned(),
    };
    let mut filter = RunFilter::all();
    filter = match show.as_str() {
        "waiting" => filter.status(RunStatus::Waiting),
        "retrying" => filter.status(RunStatus::Active).state("retrying"),
        "failed" => filter.status(RunStatus::Failed),
        "active" => filter.status(RunStatus::Active),
        _ => filter,
    };
    if !q.route.is_empty() {
        filter = filter.route(q.route.clone());
    }
    let mut error = None;
    let mut rows = Vec::new();
    let mut next = None;
    match crate::api::messages::parse_cursor(Some(q.cursor.clone())) {
        Err(e) => error = Some(e.message),
        Ok(cursor) => match state.store.list_runs(&filter, cursor.as_ref(), 50).await {
            Ok(page) => {
                rows = page
                    .runs
                    .into_iter()
                    .map(|r| Row {
                        id: r.id.to_string(),
                        route: r.route,
                        status: r.status.as_str(),
                        state: r.state,
                        step: r.step.unwrap_or_default(),
                        updated: when(r.updated_at),
                        last_error: r.last_error.unwrap_or_default(),
                    })
                    .collect();
                next = page.next.map(|c| {
                    format!(
                        "/ui/runs?show={show}&route={}&cursor={}",
                        super::enc(&q.route),
                        c.as_str()
                    )
                });
            }
            Err(e) => error = Some(crate::api::ApiError::from(e).message),
        },
    }
    render(&ListPage {
        layout: Layout::new(&viewer, "Runs", "runs"),
        routes: state.config.routes.iter().map(|r| r.name.clone()).collect(),
        show,
        route: q.route,
        rows,
        next,
        error,
    })
}

#[derive(Debug)]
struct EventRow {
    at: String,
    kind: &'static str,
    status: &'static str,
    state: String,
    step: String,
    message: String,
    detail: String,
    duration_ms: String,
}

#[derive(Debug)]
struct WaitRow {
    step: String,
    state: String,
    expires: String,
    closed: String,
    consumed_by: String,
    action: String,
}

#[derive(Debug)]
struct MessageRow {
    id: String,
    step: String,
    destination: String,
    status: &'static str,
    attempts: u32,
    last_error: String,
}

#[derive(Template)]
#[template(path = "ui/run.html")]
struct ShowPage {
    layout: Layout,
    id: String,
    route: String,
    dedupe_key: String,
    status: &'static str,
    state: String,
    step: String,
    created: String,
    finished: String,
    waited: String,
    last_error: String,
    context: String,
    events: Vec<EventRow>,
    waits: Vec<WaitRow>,
    messages: Vec<MessageRow>,
    can_retry: bool,
    can_cancel: bool,
}

/// `GET /ui/runs/{id}`.
pub(crate) async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let parsed = crate::api::runs::parse_run_id(&id)?;
    let Some(d) = state.store.get_run(parsed).await? else {
        return Err(crate::api::ApiError::not_found(format!("run {id} not found")).into());
    };
    let r = d.run;
    let page = ShowPage {
        layout: Layout::new(&viewer, format!("Run {id}"), "runs"),
        id: r.id.to_string(),
        route: r.route,
        dedupe_key: r.dedupe_key,
        status: r.status.as_str(),
        state: r.state,
        step: r.step.unwrap_or_default(),
        created: when(r.created_at),
        finished: when_opt(r.finished_at),
        waited: age(r.waited),
        last_error: r.last_error.unwrap_or_default(),
        context: serde_json::to_string_pretty(&r.context).unwrap_or_default(),
        events: d
            .events
            .into_iter()
            .map(|e| EventRow {
                at: when(e.at),
                kind: e.kind.as_str(),
                status: e.status.as_str(),
                state: e.state,
                step: e.step.unwrap_or_default(),
                message: e.message.map(|m| m.to_string()).unwrap_or_default(),
                detail: e.detail.unwrap_or_default(),
                duration_ms: e
                    .duration
                    .map(|d| d.as_millis().to_string())
                    .unwrap_or_default(),
            })
            .collect(),
        waits: d
            .waits
            .into_iter()
            .map(|w| WaitRow {
                step: w.step,
                state: w.state.as_str().to_owned(),
                expires: when(w.expires_at),
                closed: when_opt(w.closed_at),
                consumed_by: w.consumed_by.unwrap_or_default(),
                action: w.action.unwrap_or_default(),
            })
            .collect(),
        messages: d
            .messages
            .into_iter()
            .map(|m| MessageRow {
                id: m.id.to_string(),
                step: m.step,
                destination: m.destination,
                status: m.status.as_str(),
                attempts: m.attempts,
                last_error: m.last_error.unwrap_or_default(),
            })
            .collect(),
        can_retry: viewer.can_write() && r.status == RunStatus::Failed,
        can_cancel: viewer.can_write() && !r.status.is_finished(),
    };
    Ok(render(&page))
}

/// `POST /ui/runs/{id}/{retry|cancel}`.
pub(crate) async fn act(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, UiError> {
    viewer.may_act(&form.csrf)?;
    let caller = Caller(viewer.name.clone());
    let flash = match action.as_str() {
        "retry" => {
            let _ = crate::api::runs::retry(State(state), caller, ApiPath(id.clone())).await?;
            format!("Run {id} is retrying its failed step.")
        }
        "cancel" => {
            let _ = crate::api::runs::cancel(State(state), caller, ApiPath(id.clone())).await?;
            format!("Run {id} is cancelled.")
        }
        _ => {
            return Err(crate::api::ApiError::not_found(format!("no action `{action}`")).into());
        }
    };
    Ok(done(
        &viewer,
        &format!("/ui/runs/{}", super::enc(&id)),
        flash,
    ))
}
