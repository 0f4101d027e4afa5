//! The backend-independent half of a run's transition: checking and encoding a [`RunChange`]
//! before any write, deciding whether it applies to the rows a backend read, and computing the
//! run's new row and the events it appends. The backends read, call these, and write what they
//! return in one transaction.

use serde_json::{Value, json};

use crate::common::{self, Encoded, check_key, encode, encode_payload};
use crate::error::{Result, StoreError};
use crate::run::{
    CloseWait, FailureReason, FinishedCounts, MAX_TOKEN_BYTES, MIN_TOKEN_BYTES, NewRun, NewWait,
    Run, RunChange, RunConflict, RunEventKind, RunId, RunStats, RunStatus, StateCount,
    TIMER_DESTINATION, WaitOutcome, WaitState, merge_patch,
};
use crate::types::{
    AttemptReport, Lease, MessageId, NewMessage, Status, duration_millis, from_millis, to_millis,
};

/// A checked [`NewRun`].
#[derive(Debug)]
pub(crate) struct EncodedRun {
    pub(crate) route: String,
    pub(crate) dedupe_key: String,
    pub(crate) state: String,
    pub(crate) context: Value,
    pub(crate) traceparent: Option<String>,
}

/// Checks a new run's keys, state and context size.
pub(crate) fn encode_run(run: NewRun, max_payload: usize) -> Result<EncodedRun> {
    check_key("route", Some(&run.route), false)?;
    check_key("dedupe_key", Some(&run.dedupe_key), false)?;
    check_key("state", Some(&run.state), false)?;
    check_key("traceparent", run.traceparent.as_deref(), true)?;
    encode_payload(&run.context, max_payload)?;
    Ok(EncodedRun {
        route: run.route,
        dedupe_key: run.dedupe_key,
        state: run.state,
        context: run.context,
        traceparent: run.traceparent,
    })
}

/// A checked wait with its timer message.
#[derive(Debug)]
pub(crate) struct EncodedWait {
    pub(crate) token: String,
    pub(crate) step: String,
    pub(crate) expires_at: i64,
    pub(crate) allowed: Option<String>,
    pub(crate) attached: Option<String>,
    /// The message that expires the wait, tagged with `step`.
    pub(crate) timer: (NewMessage, Encoded),
}

/// A checked [`RunChange`]: every message encoded and tagged with its step, every key and
/// token checked, so that nothing about the input can fail once the backend starts writing.
#[derive(Debug)]
pub(crate) struct EncodedChange {
    pub(crate) status: Option<RunStatus>,
    pub(crate) state: Option<String>,
    pub(crate) step: Option<String>,
    pub(crate) context: Option<Value>,
    pub(crate) error: Option<String>,
    pub(crate) detail: Option<String>,
    pub(crate) duration_ms: Option<i64>,
    pub(crate) messages: Vec<(NewMessage, Encoded)>,
    pub(crate) open_wait: Option<EncodedWait>,
    pub(crate) close_wait: Option<CloseWait>,
    pub(crate) retry: Vec<MessageId>,
    max_payload: usize,
}

/// Checks and encodes `change`; refuses a bad key, token or step name and a payload, context
/// patch or wait JSON over `max_payload`.
pub(crate) fn encode_change(change: RunChange, max_payload: usize) -> Result<EncodedChange> {
    check_key("state", change.state.as_deref(), true)?;
    check_key("step", change.step.as_deref(), true)?;
    if let Some(patch) = &change.context {
        encode_payload(patch, max_payload)?;
    }
    let messages = change
        .enqueue
        .into_iter()
        .map(|m| {
            check_key("step", Some(&m.step), false)?;
            let mut encoded = encode(&m.message, max_payload)?;
            encoded.step = Some(m.step);
            Ok((m.message, encoded))
        })
        .collect::<Result<Vec<_>>>()?;
    let open_wait = change
        .open_wait
        .map(|w| encode_wait(w, max_payload))
        .transpose()?;
    if let Some(close) = &change.close_wait {
        check_key("token", Some(&close.token), false)?;
        if let WaitOutcome::Consumed { by, action } = &close.outcome {
            check_key("by", Some(by), false)?;
            check_key("action", Some(action), false)?;
        }
    }
    let mut retry = change.retry;
    let mut seen = std::collections::HashSet::new();
    retry.retain(|id| seen.insert(*id));
    Ok(EncodedChange {
        status: change.status,
        state: change.state,
        step: change.step,
        context: change.context,
        error: change.error,
        detail: change.detail,
        duration_ms: change.duration.map(duration_millis),
        messages,
        open_wait,
        close_wait: change.close_wait,
        retry,
        max_payload,
    })
}

fn encode_wait(wait: NewWait, max_payload: usize) -> Result<EncodedWait> {
    check_token(&wait.token)?;
    check_key("step", Some(&wait.step), false)?;
    let json = |value: &Option<Value>| {
        value
            .as_ref()
            .map(|v| encode_payload(v, max_payload))
            .transpose()
    };
    let timer = NewMessage::new(TIMER_DESTINATION, json!({ "wait": wait.token }))
        .not_before(wait.expires_at);
    let mut encoded = encode(&timer, max_payload)?;
    encoded.step = Some(wait.step.clone());
    Ok(EncodedWait {
        allowed: json(&wait.allowed)?,
        attached: json(&wait.attached)?,
        expires_at: to_millis(wait.expires_at),
        token: wait.token,
        step: wait.step,
        timer: (timer, encoded),
    })
}

/// Refuses a token that is too short to be unguessable, too long for a Telegram button, or
/// not base64url.
fn check_token(token: &str) -> Result<()> {
    let bad = |reason: String| StoreError::InvalidOption {
        field: "token",
        reason,
    };
    if !(MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&token.len()) {
        return Err(bad(format!(
            "is {} characters; it must have {MIN_TOKEN_BYTES} to {MAX_TOKEN_BYTES}",
            token.len()
        )));
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad("must be base64url (A-Z, a-z, 0-9, `-`, `_`)".into()));
    }
    Ok(())
}

/// The end of an attempt that comes with a change (`complete_and_advance`,
/// `dead_letter_and_advance`).
#[derive(Debug)]
pub(crate) struct End {
    pub(crate) lease: Lease,
    /// `delivered` or `dead`.
    pub(crate) status: Status,
    pub(crate) report: AttemptReport,
}

impl End {
    /// The attempt under `lease` ends in `status` with `report`.
    pub(crate) fn new(lease: &Lease, status: Status, report: AttemptReport) -> Self {
        End {
            lease: lease.clone(),
            status,
            report,
        }
    }
}

/// Who consumed a wait and how, for the wait's row; `None`s for the other outcomes.
pub(crate) fn answer(outcome: &WaitOutcome) -> (Option<&str>, Option<&str>) {
    match outcome {
        WaitOutcome::Consumed { by, action } => (Some(by), Some(action)),
        WaitOutcome::Expired | WaitOutcome::Cancelled => (None, None),
    }
}

/// Refuses a change decided on another version of `run`.
pub(crate) fn check_version(run: &Run, expected: u64) -> Result<()> {
    if run.version == expected {
        return Ok(());
    }
    Err(StoreError::RunConflict {
        run: run.id,
        conflict: RunConflict::Version {
            expected,
            found: run.version,
        },
    })
}

/// The wait a change closes, as stored.
#[derive(Debug)]
pub(crate) struct FoundWait {
    pub(crate) run: RunId,
    pub(crate) step: String,
    pub(crate) state: WaitState,
    pub(crate) expires_at: i64,
    pub(crate) timer: Option<String>,
}

/// Refuses closing a wait that is not `run`'s, not open, or (to consume it) past its expiry.
pub(crate) fn check_close(
    run: RunId,
    close: &CloseWait,
    found: Option<&FoundWait>,
    now: i64,
) -> Result<()> {
    let conflict = match found {
        Some(w) if w.run != run => RunConflict::WaitNotFound,
        None => RunConflict::WaitNotFound,
        Some(w) if w.state != WaitState::Open => RunConflict::WaitClosed { state: w.state },
        Some(w) if matches!(close.outcome, WaitOutcome::Consumed { .. }) && now >= w.expires_at => {
            RunConflict::WaitClosed {
                state: WaitState::Expired,
            }
        }
        Some(_) => return Ok(()),
    };
    Err(StoreError::RunConflict { run, conflict })
}

/// A run before its first change: `active`, in the new run's state and context, version 0.
pub(crate) fn initial(id: RunId, new: &EncodedRun, now: i64) -> Run {
    let at = from_millis(now);
    Run {
        id,
        route: new.route.clone(),
        dedupe_key: new.dedupe_key.clone(),
        status: RunStatus::Active,
        state: new.state.clone(),
        step: None,
        context: new.context.clone(),
        version: 0,
        created_at: at,
        updated_at: at,
        finished_at: None,
        waited: std::time::Duration::ZERO,
        waiting_since: None,
        last_error: None,
        traceparent: new.traceparent.clone(),
    }
}

/// `run` after `change` at `now`, with its context serialised; refuses a context that grew
/// over the payload limit.
pub(crate) fn apply(run: &Run, change: &EncodedChange, now: i64) -> Result<(Run, String)> {
    let at = from_millis(now);
    let mut next = run.clone();
    next.version += 1;
    next.updated_at = at;
    if let Some(status) = change.status {
        if run.status == RunStatus::Waiting && status != RunStatus::Waiting {
            let since = run.waiting_since.unwrap_or(at);
            next.waited += at.duration_since(since).unwrap_or_default();
            next.waiting_since = None;
        }
        if status == RunStatus::Waiting && run.status != RunStatus::Waiting {
            next.waiting_since = Some(at);
        }
        if !status.is_finished() {
            next.finished_at = None;
        } else if !run.status.is_finished() {
            next.finished_at = Some(at);
        }
        next.status = status;
    }
    if let Some(state) = &change.state {
        next.state.clone_from(state);
    }
    if let Some(step) = &change.step {
        next.step = Some(step.clone());
    }
    if let Some(error) = &change.error {
        next.last_error = Some(error.clone());
    }
    if let Some(patch) = &change.context {
        merge_patch(&mut next.context, patch);
    }
    let context = common::encode_payload(&next.context, change.max_payload)?;
    Ok((next, context))
}

/// One row for a run's timeline; its status and state are the run's after the change.
#[derive(Debug)]
pub(crate) struct NewRunEvent {
    pub(crate) kind: RunEventKind,
    pub(crate) step: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) detail: Option<String>,
    pub(crate) duration_ms: Option<i64>,
}

impl NewRunEvent {
    /// The change itself: `started` or `advanced`, at the run's new step.
    pub(crate) fn transition(
        kind: RunEventKind,
        run: &Run,
        change: &EncodedChange,
        message: Option<MessageId>,
    ) -> Self {
        NewRunEvent {
            kind,
            step: run.step.clone(),
            message: message.map(|m| m.to_string()),
            detail: change.detail.clone(),
            duration_ms: change.duration_ms,
        }
    }

    /// A wait of `step` closed by the change.
    pub(crate) fn closed(outcome: &WaitOutcome, step: &str) -> Self {
        let (kind, detail) = match outcome {
            WaitOutcome::Consumed { by, action } => (
                RunEventKind::WaitConsumed,
                Some(format!("{action} by {by}")),
            ),
            WaitOutcome::Expired => (RunEventKind::WaitExpired, None),
            WaitOutcome::Cancelled => (RunEventKind::WaitCancelled, None),
        };
        NewRunEvent {
            kind,
            step: Some(step.to_owned()),
            message: None,
            detail,
            duration_ms: None,
        }
    }

    /// An open wait of `step` cancelled because its run finished.
    pub(crate) fn cancelled_with_run(step: String) -> Self {
        NewRunEvent {
            kind: RunEventKind::WaitCancelled,
            step: Some(step),
            message: None,
            detail: Some("the run finished".into()),
            duration_ms: None,
        }
    }

    /// The wait the change opened.
    pub(crate) fn opened(wait: &EncodedWait) -> Self {
        NewRunEvent {
            kind: RunEventKind::WaitOpened,
            step: Some(wait.step.clone()),
            message: None,
            detail: None,
            duration_ms: None,
        }
    }
}

/// The detail of the event of a message the run's cancel cancelled.
pub(crate) const CANCELLED_WITH_RUN: &str = "the run was cancelled";

/// The detail of the event of a timer cancelled because its wait closed.
pub(crate) const WAIT_CLOSED: &str = "its wait closed";

/// The detail of the event of a message retried with its run.
pub(crate) const RETRIED_WITH_RUN: &str = "retried with its run";

/// Refuses retrying a message that is not the run's, or that is not `dead` or `cancelled`.
pub(crate) fn check_retry(
    run: RunId,
    id: MessageId,
    found: Option<(Option<&str>, Status)>,
) -> Result<()> {
    match found {
        None => Err(StoreError::NotFound { id }),
        Some((owner, _)) if owner != Some(run.to_string().as_str()) => {
            Err(StoreError::InvalidOption {
                field: "retry",
                reason: format!("message {id} is not a message of run {run}"),
            })
        }
        Some((_, Status::Dead | Status::Cancelled)) => Ok(()),
        Some((_, from)) => Err(StoreError::InvalidTransition {
            id,
            from,
            action: "retry",
        }),
    }
}

/// The refusal of a wait whose token is taken (found by the database's unique key, after the
/// rest of the change was written, which the transaction's rollback then undoes).
pub(crate) fn token_taken() -> StoreError {
    StoreError::InvalidOption {
        field: "token",
        reason: "is already the token of another wait".into(),
    }
}

/// The refusal of a replay of a run's message by id: a run's step runs again only when its
/// run retries it.
pub(crate) fn run_message_replayed(id: MessageId, run: &str) -> StoreError {
    StoreError::InvalidOption {
        field: "ids",
        reason: format!("message {id} belongs to run {run}: retry it with its run"),
    }
}

/// Refuses ending, with a run's change, a message that is not that run's.
pub(crate) fn check_owner(run: RunId, message: MessageId, owner: Option<&str>) -> Result<()> {
    if owner == Some(run.to_string().as_str()) {
        return Ok(());
    }
    Err(StoreError::InvalidOption {
        field: "run",
        reason: match owner {
            Some(other) => format!("message {message} belongs to run {other}, not {run}"),
            None => format!("message {message} belongs to no run"),
        },
    })
}

/// Assembles [`RunStats`] from what a backend counted: `groups` are the finished runs per
/// status and state, summed per status and per state (most frequent first), the success rate
/// from them.
pub(crate) fn stats(
    route: &str,
    window: std::time::Duration,
    (active, waiting): (u64, u64),
    groups: Vec<(RunStatus, String, u64)>,
    (mean, p95): (Option<std::time::Duration>, Option<std::time::Duration>),
    top_failures: Vec<FailureReason>,
) -> RunStats {
    let mut finished = FinishedCounts::default();
    let mut by_state: Vec<StateCount> = Vec::new();
    for (status, state, count) in groups {
        finished.add(status, count);
        match by_state.iter_mut().find(|s| s.state == state) {
            Some(s) => s.count += count,
            None => by_state.push(StateCount { state, count }),
        }
    }
    by_state.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.state.cmp(&b.state)));
    let judged = finished.completed + finished.failed + finished.expired;
    RunStats {
        route: route.to_owned(),
        window,
        active,
        waiting,
        finished,
        by_state,
        success_rate: (judged > 0).then(|| finished.completed as f64 / judged as f64),
        mean,
        p95,
        top_failures,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn change(c: RunChange) -> EncodedChange {
        encode_change(c, 1024).unwrap()
    }

    #[test]
    fn waiting_time_is_counted_when_the_wait_ends() {
        let new = EncodedRun {
            route: "r".into(),
            dedupe_key: "k".into(),
            state: "received".into(),
            context: json!({"from": "a"}),
            traceparent: None,
        };
        let run = initial(RunId::from_ulid(ulid::Ulid::nil()), &new, 1_000);
        let (run, _) = apply(&run, &change(RunChange::new()), 1_000).unwrap();
        let (waiting, _) = apply(
            &run,
            &change(RunChange::new().status(RunStatus::Waiting)),
            1_300,
        )
        .unwrap();
        assert_eq!(waiting.waiting_since, Some(from_millis(1_300)));
        let (done, context) = apply(
            &waiting,
            &change(
                RunChange::new()
                    .status(RunStatus::Completed)
                    .merge(json!({"answer": "approve"})),
            ),
            601_300 + 300,
        )
        .unwrap();
        assert_eq!(done.version, 3);
        assert_eq!(
            done.waited,
            Duration::from_secs(600) + Duration::from_millis(300)
        );
        assert_eq!(done.waiting_since, None);
        assert_eq!(done.finished_at, Some(from_millis(601_600)));
        assert_eq!(
            done.processing_time(SystemTime::UNIX_EPOCH),
            Duration::from_millis(300)
        );
        assert_eq!(
            serde_json::from_str::<Value>(&context).unwrap(),
            json!({"from": "a", "answer": "approve"})
        );
        // A context that outgrows the limit is refused.
        let half = |key: &str| change(RunChange::new().merge(json!({ key: "y".repeat(600) })));
        let (grown, _) = apply(&done, &half("x"), 601_700).unwrap();
        let err = apply(&grown, &half("z"), 601_800).unwrap_err();
        assert!(matches!(err, StoreError::PayloadTooLarge { .. }), "{err}");
    }

    #[test]
    fn tokens_must_be_unguessable_and_fit_a_button() {
        let at = SystemTime::UNIX_EPOCH;
        for (token, ok) in [
            ("Zm9vYmFyYmF6cXV4cXV1eA", true),
            ("short", false),
            (&"a".repeat(MAX_TOKEN_BYTES + 1), false),
            ("Zm9vYmFyYmF6cXV4cXV1e+", false),
            ("Zm9vYmFyYmF6cXV4cXV1e/", false),
        ] {
            let result = encode_change(
                RunChange::new().open_wait(NewWait::new(token, "approval", at)),
                1024,
            );
            assert_eq!(result.is_ok(), ok, "{token}: {result:?}");
        }
    }

    #[test]
    fn closing_checks_owner_state_and_expiry() {
        let run = RunId::from_ulid(ulid::Ulid::from_parts(1, 1));
        let other = RunId::from_ulid(ulid::Ulid::from_parts(2, 2));
        let press = CloseWait {
            token: "t".into(),
            outcome: WaitOutcome::Consumed {
                by: "42".into(),
                action: "approve".into(),
            },
        };
        let expire = CloseWait {
            token: "t".into(),
            outcome: WaitOutcome::Expired,
        };
        let wait = |run, state| FoundWait {
            run,
            step: "approval".into(),
            state,
            expires_at: 100,
            timer: None,
        };
        let conflict = |r: Result<()>| match r {
            Err(StoreError::RunConflict { conflict, .. }) => Some(conflict),
            Ok(()) => None,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            conflict(check_close(
                run,
                &press,
                Some(&wait(run, WaitState::Open)),
                99
            )),
            None
        );
        assert_eq!(
            conflict(check_close(
                run,
                &press,
                Some(&wait(run, WaitState::Open)),
                100
            )),
            Some(RunConflict::WaitClosed {
                state: WaitState::Expired
            })
        );
        assert_eq!(
            conflict(check_close(
                run,
                &expire,
                Some(&wait(run, WaitState::Open)),
                100
            )),
            None
        );
        assert_eq!(
            conflict(check_close(
                run,
                &expire,
                Some(&wait(run, WaitState::Consumed)),
                50
            )),
            Some(RunConflict::WaitClosed {
                state: WaitState::Consumed
            })
        );
        assert_eq!(
            conflict(check_close(
                run,
                &press,
                Some(&wait(other, WaitState::Open)),
                50
            )),
            Some(RunConflict::WaitNotFound)
        );
        assert_eq!(
            conflict(check_close(run, &press, None, 50)),
            Some(RunConflict::WaitNotFound)
        );
    }
}
