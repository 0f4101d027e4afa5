//! The engine: from a step's name and the run's context, what the run does next, as one
//! [`RunChange`] ([`enter`]); and the dispatcher's calls when a step's message ends
//! ([`step_delivered`], [`step_dead`]), which apply that change with the message's end in one
//! transaction, reading the run again when it moved meanwhile.
//!
//! States: a step's `state` is set once it succeeded (a wait's, once its card is sent; default
//! `awaiting_callback`); a press sets `callback_received`; a run that runs out of steps
//! completes in state `completed`; an `end` step sets its `state` (default: its status's name);
//! a failure with no `on_failure` fails the run in state `failed`, a wait that runs out with no
//! `on_timeout` expires it in state `expired`.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use ferrule_store::{
    Advance, Advanced, AttemptReport, Lease, Message, NewMessage, NewWait, Run, RunChange,
    RunConflict, RunStatus, Store, StoreError,
};
use serde_json::{Value, json};

use super::Route;
use crate::config::{DEFAULT_WAIT, EndStatus, StepKind};
use crate::state::AppState;
use crate::telemetry::prometheus::{ROUTE_STEP_DURATION, ROUTE_STEPS, RUNS_FINISHED};

/// How often a change refused because the run moved on is decided again before giving up
/// (the message then stays leased and is attempted again when its lease expires).
const MAX_REDECIDE: usize = 8;

/// A new wait token: 128 random bits in base64url, 22 characters.
pub fn new_token() -> String {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The `callback_data` of a button: `<token>:<action>`, at most 22 + 1 + 16 bytes.
pub fn callback_data(token: &str, action: &str) -> String {
    format!("{token}:{action}")
}

/// The context templates read: the run's context with `run` (`id`, `route`) and `chats`.
pub fn render_context(route: &Route, run_id: Option<&str>, context: &Value) -> Value {
    let mut ctx = match context {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    ctx.insert(
        "run".into(),
        json!({"id": run_id, "route": route.config.name}),
    );
    ctx.insert("chats".into(), route.chats.object());
    Value::Object(ctx)
}

/// What entering a step decided.
#[derive(Debug)]
pub struct Decision {
    /// The change (status, state, step, messages, wait).
    pub change: RunChange,
    /// Whether it finishes the run, and how.
    pub finished: Option<RunStatus>,
}

/// Enters step `name` of `route` with the run's `context` (already holding what earlier steps
/// produced) at `now`: a `send` enqueues its message, a `wait` opens its wait and enqueues its
/// card in the same change (the token exists before the card is sent), a `branch` goes on to
/// its case, an `end` finishes the run. A step whose payload cannot render fails at once: its
/// `on_failure` step is entered instead, or the run fails naming the template. `state` is the
/// state the run is in before (kept unless a step sets one).
pub fn enter(
    state: &AppState,
    route: &Route,
    run_id: Option<&str>,
    name: Option<&str>,
    context: &Value,
    now: SystemTime,
) -> Decision {
    let mut change = RunChange::new();
    let mut next = name.map(str::to_owned);
    // Every step entered at most once per decision: a branch cycle fails the run.
    for _ in 0..=route.config.steps.len() {
        let Some(name) = next.take() else {
            return finish(change, RunStatus::Completed, "completed");
        };
        let Some((i, step)) = route.step(&name) else {
            let error = format!("no step named `{name}`");
            return finish(change.error(error), RunStatus::Failed, "failed");
        };
        let ctx = render_context(route, run_id, context);
        match step.kind {
            StepKind::Send | StepKind::Wait => {
                let destination = step.destination.clone().unwrap_or_default();
                let payload = step.payload.clone().unwrap_or(Value::Null);
                let wait = (step.kind == StepKind::Wait).then(|| open_wait(route, i, now));
                let mut ctx = ctx;
                if let (Some((_, view)), Value::Object(map)) = (&wait, &mut ctx) {
                    map.insert("wait".into(), view.clone());
                }
                match state
                    .routes
                    .templates
                    .payload(&route.field(i, "payload"), &payload, &ctx)
                {
                    Ok(mut payload) => {
                        if let (Some((_, view)), Value::Object(map)) = (&wait, &mut payload) {
                            map.entry("reply_markup")
                                .or_insert_with(|| view["keyboard"].clone());
                        }
                        change = change.step(name.clone()).status(RunStatus::Active).enqueue(
                            name.clone(),
                            NewMessage::new(destination, payload)
                                .traceparent(crate::telemetry::trace::current().to_string()),
                        );
                        if let Some((wait, _)) = wait {
                            change = change.open_wait(wait);
                        }
                        return Decision {
                            change,
                            finished: None,
                        };
                    }
                    Err(e) => {
                        count_step(route, &name, "failed");
                        let error = format!("step `{name}`: {e}");
                        change = change.error(error.clone()).detail(error);
                        match &step.on_failure {
                            Some(fallback) => next = Some(fallback.clone()),
                            None => return finish(change, RunStatus::Failed, "failed"),
                        }
                    }
                }
            }
            StepKind::Branch => {
                let value = state
                    .routes
                    .templates
                    .text(&route.field(i, "on"), &ctx)
                    .map(|v| v.trim().to_owned());
                match value {
                    Ok(value) => match step.cases.get(&value).or(step.default.as_ref()) {
                        Some(target) => {
                            change = change.step(name.clone());
                            next = Some(target.clone());
                        }
                        None => {
                            let error = format!("step `{name}`: no case for `{value}`");
                            return finish(
                                change.error(error.clone()).detail(error),
                                RunStatus::Failed,
                                "failed",
                            );
                        }
                    },
                    Err(e) => {
                        let error = format!("step `{name}`: {e}");
                        return finish(
                            change.error(error.clone()).detail(error),
                            RunStatus::Failed,
                            "failed",
                        );
                    }
                }
            }
            StepKind::End => {
                let status = match step.status.unwrap_or_default() {
                    EndStatus::Completed => RunStatus::Completed,
                    EndStatus::Failed => RunStatus::Failed,
                    EndStatus::Expired => RunStatus::Expired,
                };
                let end_state = step
                    .state
                    .clone()
                    .unwrap_or_else(|| status.as_str().to_owned());
                return finish(change.step(name.clone()), status, &end_state);
            }
        }
    }
    let error = "the steps go round in a circle without sending anything".to_owned();
    finish(change.error(error), RunStatus::Failed, "failed")
}

/// A wait of step `i` opened at `now`, and what its card's template reads as `wait`.
fn open_wait(route: &Route, i: usize, now: SystemTime) -> (NewWait, Value) {
    let step = &route.config.steps[i];
    let token = new_token();
    let keyboard: Vec<Value> = step
        .buttons
        .iter()
        .map(|b| json!({"text": b.text, "callback_data": callback_data(&token, &b.action)}))
        .collect();
    let view = json!({
        "token": token,
        "keyboard": {"inline_keyboard": [keyboard]},
    });
    let mut wait = NewWait::new(
        token,
        step.name.clone(),
        now + step.timeout.unwrap_or(DEFAULT_WAIT),
    );
    if !step.allowed_users.is_empty() {
        wait = wait.allowed(json!(step.allowed_users));
    }
    wait = wait.attached(json!({"route": route.config.name}));
    (wait, view)
}

fn finish(change: RunChange, status: RunStatus, state: &str) -> Decision {
    Decision {
        change: change.status(status).state(state),
        finished: Some(status),
    }
}

/// The step after step `name` succeeded: its `next`, else the following step in order, else
/// none (the run completes).
pub fn next_of(route: &Route, name: &str) -> Option<String> {
    let (i, step) = route.step(name)?;
    step.next
        .clone()
        .or_else(|| route.config.steps.get(i + 1).map(|s| s.name.clone()))
}

/// Counts a step's end by outcome (`delivered`, `failed`).
pub fn count_step(route: &Route, step: &str, outcome: &'static str) {
    metrics::counter!(ROUTE_STEPS.name, "route" => route.config.name.clone(), "outcome" => outcome)
        .increment(1);
    let _ = step;
}

/// Counts a run that finished.
pub fn count_finished(route: &str, status: RunStatus) {
    metrics::counter!(RUNS_FINISHED.name, "route" => route.to_owned(), "status" => status.as_str())
        .increment(1);
}

/// The context patch for step `step`'s output: `{"steps": {"<step>": output}}`.
fn output_patch(step: &str, output: Option<Value>) -> Value {
    json!({"steps": {step: output.unwrap_or_else(|| json!({}))}})
}

/// Decides what follows the successful end of `message` (a step of `run`), given `output`.
fn after_delivery(
    state: &AppState,
    route: &Route,
    run: &Run,
    step: &str,
    output: Option<Value>,
    now: SystemTime,
) -> Decision {
    let patch = output_patch(step, output);
    let current = run.status == RunStatus::Active && run.step.as_deref() == Some(step);
    let Some((_, config)) = route.step(step).filter(|_| current) else {
        // A late end of a step the run has left (its card delivered after the press), or of a
        // run that finished: only its output is kept.
        return Decision {
            change: RunChange::new()
                .merge(patch)
                .detail(format!("step `{step}` ended late")),
            finished: None,
        };
    };
    count_step(route, step, "delivered");
    if config.kind == StepKind::Wait {
        let waiting = config
            .state
            .clone()
            .unwrap_or_else(|| "awaiting_callback".into());
        return Decision {
            change: RunChange::new()
                .merge(patch)
                .status(RunStatus::Waiting)
                .state(waiting)
                .detail(format!("step `{step}`: card sent")),
            finished: None,
        };
    }
    let mut context = run.context.clone();
    ferrule_store::run::merge_patch(&mut context, &patch);
    let next = next_of(route, step);
    let mut decision = enter(
        state,
        route,
        Some(&run.id.to_string()),
        next.as_deref(),
        &context,
        now,
    );
    // The step's own state unless the next one finished the run with a state of its own.
    if decision.finished.is_none()
        && let Some(done) = &config.state
    {
        decision.change.state = Some(done.clone());
    }
    let detail = match &config.state {
        Some(done) => format!("step `{step}` succeeded: {done}"),
        None => format!("step `{step}` succeeded"),
    };
    decision.change = decision.change.merge(patch).detail(detail);
    decision
}

/// Decides what follows the failure for good of `message` (a step of `run`), for `reason`.
fn after_failure(
    state: &AppState,
    route: &Route,
    run: &Run,
    step: &str,
    reason: &str,
    now: SystemTime,
) -> Decision {
    let current = run.status == RunStatus::Active && run.step.as_deref() == Some(step);
    let error = format!("step `{step}` failed: {reason}");
    let Some((_, config)) = route.step(step).filter(|_| current) else {
        return Decision {
            change: RunChange::new().detail(error),
            finished: None,
        };
    };
    count_step(route, step, "failed");
    let mut decision = match &config.on_failure {
        Some(fallback) => enter(
            state,
            route,
            Some(&run.id.to_string()),
            Some(fallback),
            &run.context,
            now,
        ),
        None => finish(RunChange::new(), RunStatus::Failed, "failed"),
    };
    if decision.change.error.is_none() {
        decision.change.error = Some(error.clone());
    }
    decision.change.detail = Some(error);
    decision
}

/// What ends a step's message.
#[derive(Debug, Clone, Copy)]
enum End {
    Delivered,
    Dead,
}

/// The dispatcher delivered `message`, a step of a run: stores its end with the step's output
/// in the context and the next step, in one transaction.
pub async fn step_delivered(
    state: &AppState,
    lease: &Lease,
    message: &Message,
    report: AttemptReport,
    output: Option<Value>,
) -> Result<(), StoreError> {
    end_step(state, lease, message, report, End::Delivered, output).await
}

/// The dispatcher gave up on `message`, a step of a run: stores it dead with what follows (the
/// step's `on_failure` step, or the run failed with the reason), in one transaction.
pub async fn step_dead(
    state: &AppState,
    lease: &Lease,
    message: &Message,
    report: AttemptReport,
) -> Result<(), StoreError> {
    end_step(state, lease, message, report, End::Dead, None).await
}

async fn end_step(
    state: &AppState,
    lease: &Lease,
    message: &Message,
    report: AttemptReport,
    end: End,
    output: Option<Value>,
) -> Result<(), StoreError> {
    let Some(tag) = &message.run else {
        return match end {
            End::Delivered => state.store.complete(lease, report).await,
            End::Dead => state.store.dead_letter(lease, report).await,
        };
    };
    let mut last = None;
    for _ in 0..MAX_REDECIDE {
        let Some(detail) = state.store.get_run(tag.run).await? else {
            return Err(StoreError::RunNotFound { id: tag.run });
        };
        let run = detail.run;
        let now = state.clock.system_now();
        let decision = match state.routes.get(&run.route) {
            Some(route) => match end {
                End::Delivered => {
                    after_delivery(state, route, &run, &tag.step, output.clone(), now)
                }
                End::Dead => {
                    let reason = report.detail.clone().unwrap_or_else(|| "failed".into());
                    after_failure(state, route, &run, &tag.step, &reason, now)
                }
            },
            // The route is no longer configured: the message ends, the run stays as it is.
            None => Decision {
                change: RunChange::new().detail(format!(
                    "route `{}` is not configured; step `{}` ended",
                    run.route, tag.step
                )),
                finished: None,
            },
        };
        let finished = decision.finished;
        let advance = Advance::new(run.id, run.version, decision.change);
        let result = match end {
            End::Delivered => {
                state
                    .store
                    .complete_and_advance(lease, report.clone(), advance)
                    .await
            }
            End::Dead => {
                state
                    .store
                    .dead_letter_and_advance(lease, report.clone(), advance)
                    .await
            }
        };
        match result {
            Ok(advanced) => {
                applied(state, &run.route, finished, &advanced);
                metrics::histogram!(ROUTE_STEP_DURATION.name, "route" => run.route.clone())
                    .record(since(now, message.created_at).as_secs_f64());
                return Ok(());
            }
            Err(e @ StoreError::RunConflict { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("the loop ran"))
}

/// Notes what an applied change did: new messages in the depth estimate, a finished run.
pub fn applied(state: &AppState, route: &str, finished: Option<RunStatus>, advanced: &Advanced) {
    let created = advanced.enqueued.iter().filter(|e| e.is_created()).count();
    if created > 0 {
        state.depths.added(created as u64, false);
        state.wakeups.nudge();
    }
    if let Some(status) = finished {
        count_finished(route, status);
        state
            .rollups
            .run_finished(state.clock.system_now(), route, status);
    }
}

/// Reads run `id` and applies what `decide` makes of it with [`Store::advance_run`], deciding
/// again while the run moved meanwhile. `decide` answers `None` to change nothing.
pub async fn advance<F>(
    state: &AppState,
    id: ferrule_store::RunId,
    mut decide: F,
) -> Result<Option<(Run, Advanced)>, StoreError>
where
    F: FnMut(&Run) -> Option<Decision>,
{
    let mut last = None;
    for _ in 0..MAX_REDECIDE {
        let Some(detail) = state.store.get_run(id).await? else {
            return Err(StoreError::RunNotFound { id });
        };
        let run = detail.run;
        let Some(decision) = decide(&run) else {
            return Ok(None);
        };
        let finished = decision.finished;
        match state
            .store
            .advance_run(Advance::new(run.id, run.version, decision.change))
            .await
        {
            Ok(advanced) => {
                applied(state, &run.route, finished, &advanced);
                return Ok(Some((run, advanced)));
            }
            Err(
                e @ StoreError::RunConflict {
                    conflict: RunConflict::Version { .. },
                    ..
                },
            ) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("the loop ran"))
}

/// How long ago `since` was, at `now`.
pub fn since(now: SystemTime, since: SystemTime) -> Duration {
    now.duration_since(since).unwrap_or_default()
}

/// The retry policy of the step `message` executes, when its step has a `retry` table of its
/// own (read from the run's route: one store read, on the failure path only).
pub async fn step_retry<'a>(
    state: &'a AppState,
    message: &Message,
) -> Option<&'a ferrule_policy::retry::Retry> {
    let tag = message.run.as_ref()?;
    if state
        .routes
        .iter()
        .all(|r| !r.retries.contains_key(&tag.step))
    {
        return None;
    }
    let run = state.store.get_run(tag.run).await.ok()??.run;
    state.routes.get(&run.route)?.retries.get(&tag.step)
}

/// The time per attempt of the step `message` executes, when its (`send`) step sets
/// `timeout` (read from the run's route: one store read, only when some route's step of that
/// name sets one).
pub async fn step_timeout(state: &AppState, message: &Message) -> Option<Duration> {
    let tag = message.run.as_ref()?;
    let sets = |s: &crate::config::StepConfig| {
        s.name == tag.step && s.kind == StepKind::Send && s.timeout.is_some()
    };
    if !state.routes.iter().any(|r| r.config.steps.iter().any(sets)) {
        return None;
    }
    let run = state.store.get_run(tag.run).await.ok()??.run;
    let (_, step) = state.routes.get(&run.route)?.step(&tag.step)?;
    if step.kind == StepKind::Send {
        step.timeout
    } else {
        None
    }
}

/// `Some(fallback_after)` when `message`, a step of a run whose route has `fallback_after`
/// and whose step has an `on_failure` step, has waited behind an open circuit for longer than
/// that since it was stored: the caller dead-letters it so the fallback runs.
pub async fn fallback_due(state: &AppState, message: &Message) -> Option<Duration> {
    let tag = message.run.as_ref()?;
    let waited = since(state.clock.system_now(), message.created_at);
    let candidates = state.routes.iter().any(|r| {
        r.config.fallback_after.is_some_and(|after| waited >= after)
            && r.step(&tag.step)
                .is_some_and(|(_, s)| s.on_failure.is_some())
    });
    if !candidates {
        return None;
    }
    let run = state.store.get_run(tag.run).await.ok()??.run;
    let route = state.routes.get(&run.route)?;
    let after = route.config.fallback_after?;
    let (_, step) = route.step(&tag.step)?;
    (waited >= after && step.on_failure.is_some()).then_some(after)
}
