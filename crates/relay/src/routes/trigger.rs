//! What starts runs: a mail posted to an e-mail source that a route's trigger matches
//! ([`on_mail`]), and `POST /v1/routes/{name}/runs` ([`start`]). Either way the run is
//! started once per dedupe key, durably, with its first step decided in the same transaction:
//! a repeated mail (the service retried, the relay died before answering) finds the run it
//! started before.

use ferrule_store::{NewRun, RunStatus, Started, Store, StoreError};
use serde_json::Value;

use super::Route;
use super::engine::{applied, enter};
use crate::config::TriggerKind;
use crate::state::AppState;
use crate::telemetry::prometheus::RUNS_STARTED;
use crate::template::TemplateError;

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The dedupe template did not render, or rendered nothing.
    #[error("cannot make the run's dedupe key: {0}")]
    Dedupe(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<TemplateError> for StartError {
    fn from(e: TemplateError) -> Self {
        StartError::Dedupe(e.to_string())
    }
}

/// The value at a dotted `path` of `context`, as text.
fn text_at(context: &Value, path: &str) -> Option<String> {
    let mut value = context;
    for part in path.split('.') {
        value = value.get(part)?;
    }
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Whether every condition of `route`'s trigger holds for `context`.
pub fn matches(route: &Route, context: &Value) -> bool {
    route.config.trigger.matches.iter().all(|(path, allowed)| {
        text_at(context, path)
            .is_some_and(|v| allowed.iter().any(|a| a.eq_ignore_ascii_case(v.trim())))
    })
}

/// Starts a run of `route` with `context`, keyed by its `dedupe` template or else by
/// `default_key`: the first step is decided now and stored with the run.
pub async fn start(
    state: &AppState,
    route: &Route,
    context: Value,
    default_key: &str,
) -> Result<Started, StartError> {
    let key = match &route.config.dedupe {
        Some(_) => {
            let ctx = super::engine::render_context(route, None, &context);
            let field = format!("routes[{}].dedupe", route.index);
            state.routes.templates.text(&field, &ctx)?.trim().to_owned()
        }
        None => default_key.to_owned(),
    };
    if key.is_empty() {
        return Err(StartError::Dedupe("it rendered empty".into()));
    }
    let first = route.config.steps.first().map(|s| s.name.clone());
    let now = state.clock.system_now();
    // The run's id is the store's, so the first step's templates see `run.id` as null.
    let mut decision = enter(state, route, None, first.as_deref(), &context, now);
    if decision.change.state.is_none() {
        decision.change.state = Some("processed".into());
    }
    // The run keeps the trace it was started under (the API call's, the inbound event's);
    // its steps' messages carry it too.
    let new = NewRun::new(route.config.name.clone(), key, "received", context)
        .traceparent(crate::telemetry::trace::current().to_string());
    let started = state.store.start_run(new, decision.change).await?;
    if let Started::Created(advanced) = &started {
        metrics::counter!(RUNS_STARTED.name, "route" => route.config.name.clone()).increment(1);
        state.rollups.run_started(now, &route.config.name);
        applied(state, &route.config.name, decision.finished, advanced);
    }
    Ok(started)
}

/// Starts a run of every route whose e-mail trigger is `source` and matches `context`
/// (`{"email", "github"}` of the mail), keyed by the mail's `key` unless the route says
/// otherwise. Answers the runs, new or found again; a route whose dedupe key cannot be made
/// is logged and passed over.
pub async fn on_mail(
    state: &AppState,
    source: &str,
    key: &str,
    context: &Value,
) -> Result<Vec<(String, Started)>, StoreError> {
    let mut started = Vec::new();
    for route in state.routes.iter() {
        let trigger = &route.config.trigger;
        if trigger.kind != TriggerKind::Email
            || trigger.source.as_deref().map(str::trim) != Some(source)
            || !matches(route, context)
        {
            continue;
        }
        match start(state, route, context.clone(), key).await {
            Ok(run) => started.push((route.config.name.clone(), run)),
            Err(StartError::Store(e)) => return Err(e),
            Err(e @ StartError::Dedupe(_)) => {
                // The mail is stored; retrying it would fail the same way.
                tracing::warn!(route = %route.config.name, error = %e, "a mail matched a route but no run was started");
            }
        }
    }
    Ok(started)
}

/// Starts a run of every route whose Telegram trigger is `destination` and matches `context`
/// (`{"message"}`: the message as Telegram sent it), keyed by `key` (the destination and the
/// update's id) unless the route says otherwise.
pub async fn on_telegram(
    state: &AppState,
    destination: &str,
    key: &str,
    context: &Value,
) -> Result<Vec<(String, Started)>, StoreError> {
    let mut started = Vec::new();
    for route in state.routes.iter() {
        let trigger = &route.config.trigger;
        if trigger.kind != TriggerKind::Telegram
            || trigger.source.as_deref().map(str::trim) != Some(destination)
            || !matches(route, context)
        {
            continue;
        }
        match start(state, route, context.clone(), key).await {
            Ok(run) => started.push((route.config.name.clone(), run)),
            Err(StartError::Store(e)) => return Err(e),
            Err(e @ StartError::Dedupe(_)) => {
                tracing::warn!(route = %route.config.name, error = %e, "a Telegram message matched a route but no run was started");
            }
        }
    }
    Ok(started)
}

/// Whether a run in `status` is still going.
pub fn is_unfinished(status: RunStatus) -> bool {
    !status.is_finished()
}
