//! The scheduler: one task per schedule that computes the next occurrence from the pattern,
//! sleeps until it on the relay's clock (or until shutdown), and records what is due with
//! [`fire`]. Nothing scans: a wake-up costs one read of the schedule's pause and one
//! transaction per due occurrence.

use std::time::{Duration, SystemTime};

use ferrule_store::{
    Fired, NewMessage, NewOccurrence, NewRun, OccurrenceAction, OccurrenceState, Store, StoreError,
};
use serde_json::json;

use super::plan::{Step, plan};
use super::{Schedule, occurrence_key, read_pause};
use crate::state::AppState;
use crate::telemetry::prometheus::{RUNS_STARTED, SCHEDULE_OCCURRENCES};

/// How long a schedule waits before trying the store again after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The longest one sleep towards the next occurrence: the wait is measured on the monotonic
/// clock but the occurrence is a wall-clock time, so the wait is worked out again at least
/// this often (a wall clock stepped by NTP, a suspended machine).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Why an occurrence could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum FireError {
    /// The store refused or failed; nothing was written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Records the occurrence of `schedule` due at `scheduled_for` (`manual`: asked for by an
/// operator) as `step` says: fired with its message or run, or skipped. Answers what the store
/// holds: [`Fired::Existing`] when this or another relay recorded it before.
///
/// A payload template that does not render records the occurrence as skipped with the
/// template's error, so it is seen (and alerted) rather than retried forever.
pub async fn fire(
    state: &AppState,
    schedule: &Schedule,
    scheduled_for: SystemTime,
    manual: bool,
    step: Step,
) -> Result<Fired, FireError> {
    let name = &schedule.config.name;
    let key = occurrence_key(name, scheduled_for, manual);
    let mut route_started = None;
    let action = match step {
        Step::Skip(reason) => OccurrenceAction::Skip(reason.to_owned()),
        Step::Fire => match schedule.payload(&state.schedules.templates, scheduled_for) {
            Err(e) => {
                tracing::error!(schedule = %name, error = %e, "cannot render the schedule's payload; the occurrence is skipped");
                let mut reason = format!("payload: {e}");
                if let Some((cut, _)) = reason.char_indices().nth(400) {
                    reason.truncate(cut);
                }
                OccurrenceAction::Skip(reason)
            }
            Ok(payload) => match (&schedule.config.destination, &schedule.config.route) {
                (Some(destination), _) => OccurrenceAction::Enqueue(
                    NewMessage::new(destination.clone(), payload).idempotency_key(key),
                ),
                (None, route) => {
                    let route_name = route.clone().unwrap_or_default();
                    let Some(route) = state.routes.get(&route_name) else {
                        return Err(FireError::Store(StoreError::InvalidOption {
                            field: "route",
                            reason: format!("no route named `{route_name}`"),
                        }));
                    };
                    let context = json!({ "input": payload });
                    let first = route.config.steps.first().map(|s| s.name.clone());
                    let now = state.clock.system_now();
                    let mut decision = crate::routes::engine::enter(
                        state,
                        route,
                        None,
                        first.as_deref(),
                        &context,
                        now,
                    );
                    if decision.change.state.is_none() {
                        decision.change.state = Some("processed".into());
                    }
                    route_started = Some((route_name.clone(), decision.finished));
                    OccurrenceAction::StartRun(
                        NewRun::new(route_name, key, "received", context),
                        decision.change,
                    )
                }
            },
        },
    };
    let fired = state
        .store
        .record_occurrence(NewOccurrence {
            schedule: name.clone(),
            scheduled_for,
            manual,
            action,
        })
        .await?;
    if let Fired::Created(occurrence) = &fired {
        let outcome = match occurrence.state {
            OccurrenceState::Skipped => "skipped",
            _ => "fired",
        };
        metrics::counter!(SCHEDULE_OCCURRENCES.name, "schedule" => name.clone(), "outcome" => outcome)
            .increment(1);
        if occurrence.message_id.is_some() {
            state.depths.added(1, false);
            state.wakeups.nudge();
        }
        if let (Some((route, finished)), Some(_)) = (route_started, occurrence.run_id) {
            metrics::counter!(RUNS_STARTED.name, "route" => route.clone()).increment(1);
            if let Some(status) = finished {
                crate::routes::engine::count_finished(&route, status);
            }
            state.wakeups.nudge();
        }
        tracing::info!(
            schedule = %name,
            scheduled_for = %crate::time::rfc3339(scheduled_for),
            manual,
            state = occurrence.state.as_str(),
            message_id = occurrence.message_id.map(|id| id.to_string()),
            run_id = occurrence.run_id.map(|id| id.to_string()),
            reason = occurrence.reason.as_deref(),
            "schedule occurrence recorded"
        );
    }
    Ok(fired)
}

/// Runs every schedule until the relay stops: one task each on the relay's tracker.
pub fn run(state: &AppState) {
    // A schedule never recorded starts from here (`serve` calls this as it starts).
    let started = state.clock.system_now();
    for schedule in state.schedules.iter() {
        crate::telemetry::prometheus::register_schedule_series(&schedule.config.name);
        let state = state.clone();
        let name = schedule.config.name.clone();
        state.clone().tasks.spawn(async move {
            run_one(&state, &name, started).await;
        });
    }
}

/// Where a schedule resumes: after its latest recorded occurrence, or its resume, whichever is
/// later; a schedule never recorded starts from `started`, the relay's start (nothing to catch
/// up). Retried until the store answers or the relay stops.
async fn resume_point(state: &AppState, name: &str, started: SystemTime) -> Option<SystemTime> {
    loop {
        let latest = state.store.latest_occurrences().await;
        let pause = read_pause(&state.store, name).await;
        match (latest, pause) {
            (Ok(latest), Ok(pause)) => {
                let last = latest
                    .iter()
                    .find(|o| o.schedule == name && !o.manual)
                    .map(|o| o.scheduled_for);
                let resumed = pause.filter(|p| !p.paused).and_then(|p| p.at());
                return Some(last.max(resumed).unwrap_or(started));
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(schedule = name, error = %e, "cannot read where the schedule resumes; trying again");
                if !sleep_or_stop(state, RETRY_AFTER).await {
                    return None;
                }
            }
        }
    }
}

/// Sleeps `d` on the relay's clock; `false` when the relay stops first.
async fn sleep_or_stop(state: &AppState, d: Duration) -> bool {
    tokio::select! {
        () = state.clock.sleep(d) => true,
        () = state.shutdown.cancelled() => false,
    }
}

async fn run_one(state: &AppState, name: &str, started: SystemTime) {
    let Some(schedule) = state.schedules.get(name) else {
        return;
    };
    let Some(mut after) = resume_point(state, name, started).await else {
        return;
    };
    loop {
        let now = state.clock.system_now();
        let (steps, passed_over) = plan(schedule, after, now);
        if !steps.is_empty() {
            match read_pause(&state.store, name).await {
                Ok(Some(pause)) if pause.paused => {
                    // Paused: these pass by, unrecorded, and are never caught up.
                    after = now;
                    if !continue_or_stop(state, schedule, after).await {
                        return;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(schedule = name, error = %e, "cannot read the schedule's pause; trying again");
                    if !sleep_or_stop(state, RETRY_AFTER).await {
                        return;
                    }
                    continue;
                }
            }
            if passed_over {
                tracing::warn!(
                    schedule = name,
                    "older missed occurrences were passed over without being recorded"
                );
            }
            let mut skipped: Option<(u64, SystemTime, &'static str)> = None;
            let mut failed = false;
            for (t, step) in steps {
                match fire(state, schedule, t, false, step).await {
                    Ok(fired) => {
                        after = t;
                        if let (Fired::Created(_), Step::Skip(reason)) = (&fired, step) {
                            let n = skipped.map_or(0, |s| s.0);
                            skipped = Some((n + 1, t, reason));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(schedule = name, error = %e, "cannot record the schedule's occurrence; trying again");
                        failed = true;
                        break;
                    }
                }
            }
            if let Some((count, latest, reason)) = skipped {
                state
                    .alerts
                    .raise_soon(crate::alerts::Alert::schedule_skipped(
                        name,
                        count,
                        &crate::time::rfc3339(latest),
                        reason,
                        state.clock.system_now(),
                    ));
            }
            if failed {
                if !sleep_or_stop(state, RETRY_AFTER).await {
                    return;
                }
                continue;
            }
        }
        if !continue_or_stop(state, schedule, after.max(now)).await {
            return;
        }
    }
}

/// Sleeps until the first occurrence after `from`; `false` when the relay stops first (or the
/// pattern never matches again and the relay stops).
async fn continue_or_stop(state: &AppState, schedule: &Schedule, from: SystemTime) -> bool {
    match schedule.next_after(from) {
        Some(next) => loop {
            let wait = next
                .duration_since(state.clock.system_now())
                .unwrap_or_default();
            if wait.is_zero() {
                return true;
            }
            if !sleep_or_stop(state, wait.min(MAX_SLEEP)).await {
                return false;
            }
        },
        None => {
            state.shutdown.cancelled().await;
            false
        }
    }
}
