//! What answers a wait: a Telegram button press ([`callback`]), an API signal ([`signal`]) or
//! the wait's timer ([`timer`]).
//!
//! A press is answered (`answerCallbackQuery`) before anything is written, with what a read of
//! the wait says — "Received", "Already handled", "Expired", "Not allowed" — and only then
//! consumed in one conditional change with the step that follows. Of two presses, a duplicate
//! update and the timer, the first to commit wins; the others change nothing.

use ferrule_connectors::telegram::CallbackQuery;
use ferrule_store::{
    AttemptReport, Lease, Message, OutcomeClass, RunChange, RunConflict, RunStatus, Store,
    StoreError, TIMER_DESTINATION, Wait, WaitOutcome, WaitState,
};
use serde_json::{Value, json};

use super::Route;
use super::engine::{Decision, advance, applied, enter, next_of};
use crate::config::StepKind;
use crate::state::AppState;
use crate::telemetry::prometheus::ROUTE_PRESSES;

/// The action of a reply to a card that asked for one (`force_reply`).
pub const REPLY: &str = "reply";

/// The most waiting runs a reply is looked for among (the newest first).
pub const MAX_REPLY_SCAN: usize = 5_000;

/// A Telegram message (`raw`, as Telegram sent it) that may reply to a card asking for a reply
/// (a wait step whose card has `force_reply`): the waiting run whose card it answers is found
/// by the card's chat and message id, which the card's output put in the run's context, and its
/// wait is consumed with action `reply` and the text as `steps.<wait>.text`. Answers `None`
/// when the message replies to no such card.
///
/// The waiting runs are read newest first, at most [`MAX_REPLY_SCAN`]: replies are rare next
/// to deliveries, and the context, written with the card's end, is what survives a crash.
pub async fn reply(state: &AppState, raw: &Value) -> Result<Option<Answered>, StoreError> {
    let (Some(to), Some(chat), Some(text)) = (
        raw["reply_to_message"]["message_id"].as_i64(),
        raw["chat"]["id"].as_i64(),
        raw["text"].as_str(),
    ) else {
        return Ok(None);
    };
    let asking: Vec<(&str, &str)> = state
        .routes
        .iter()
        .flat_map(|r| {
            r.config
                .steps
                .iter()
                .filter(|s| s.kind == StepKind::Wait && s.asks_for_reply())
                .map(move |s| (r.config.name.as_str(), s.name.as_str()))
        })
        .collect();
    if asking.is_empty() {
        return Ok(None);
    }
    let filter = ferrule_store::RunFilter::all().status(RunStatus::Waiting);
    let mut cursor = None;
    let mut seen = 0;
    let found = 'scan: loop {
        let page = state.store.list_runs(&filter, cursor.as_ref(), 500).await?;
        for run in &page.runs {
            let Some(step) = run.step.as_deref() else {
                continue;
            };
            if !asking.contains(&(run.route.as_str(), step)) {
                continue;
            }
            let card = &run.context["steps"][step];
            if card["message_id"].as_i64() == Some(to) && card["chat_id"].as_i64() == Some(chat) {
                break 'scan Some((run.id, step.to_owned()));
            }
        }
        seen += page.runs.len();
        match page.next {
            Some(next) if seen < MAX_REPLY_SCAN => cursor = Some(next),
            _ => break None,
        }
    };
    let Some((run, step)) = found else {
        return Ok(None);
    };
    let Some(detail) = state.store.get_run(run).await? else {
        return Ok(None);
    };
    let Some(wait) = detail
        .waits
        .iter()
        .find(|w| w.step == step && w.state == WaitState::Open)
    else {
        return Ok(Some(Answered::AlreadyHandled));
    };
    let from = &raw["from"];
    let who = Answerer {
        id: from["id"]
            .as_i64()
            .map(|i| i.to_string())
            .unwrap_or_default(),
        name: from["username"]
            .as_str()
            .map(|u| format!("@{u}"))
            .or_else(|| from["first_name"].as_str().map(str::to_owned))
            .unwrap_or_default(),
        telegram: from["id"].as_i64(),
    };
    let answered = match check(state, wait, &who, REPLY) {
        Answered::Accepted => consume(state, wait, &who, REPLY, Some(text)).await?,
        other => other,
    };
    metrics::counter!(ROUTE_PRESSES.name, "result" => answered.as_str()).increment(1);
    tracing::info!(run = %run, step = %step, by = %who.id, result = answered.as_str(), "reply to a card");
    Ok(Some(answered))
}

/// A button's `callback_data` read back: the wait's token and the action.
pub fn parse_data(data: &str) -> Option<(&str, &str)> {
    let (token, action) = data.split_once(':')?;
    let token_ok = (ferrule_store::run::MIN_TOKEN_BYTES..=ferrule_store::run::MAX_TOKEN_BYTES)
        .contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    (token_ok && !action.is_empty()).then_some((token, action))
}

/// What became of an answer to a wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// Consumed: the run moved on.
    Accepted,
    /// The wait was consumed before.
    AlreadyHandled,
    /// The wait ran out (or its run moved on without it).
    Expired,
    /// The one who answered may not.
    NotAllowed,
    /// No wait has that token, or it does not offer that action.
    Unknown,
}

impl Answered {
    /// The text shown to the one who pressed.
    pub fn text(&self) -> &'static str {
        match self {
            Answered::Accepted => "Received",
            Answered::AlreadyHandled => "Already handled",
            Answered::Expired => "Expired",
            Answered::NotAllowed => "You are not allowed to answer this",
            Answered::Unknown => "This button is no longer valid",
        }
    }

    /// The label of `ferrule_route_presses_total`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Answered::Accepted => "accepted",
            Answered::AlreadyHandled => "already_handled",
            Answered::Expired => "expired",
            Answered::NotAllowed => "not_allowed",
            Answered::Unknown => "unknown",
        }
    }
}

/// Who answered a wait.
#[derive(Debug, Clone)]
pub struct Answerer {
    /// A Telegram user id, or `api:…` for a signal.
    pub id: String,
    /// A name to show (a Telegram username or first name).
    pub name: String,
    /// The Telegram user id, for `allowed_users`.
    pub telegram: Option<i64>,
}

/// What a read of `wait` says about an answer by `who` with `action`, before any write.
fn check(state: &AppState, wait: &Wait, who: &Answerer, action: &str) -> Answered {
    let now = state.clock.system_now();
    match wait.state {
        WaitState::Consumed => return Answered::AlreadyHandled,
        WaitState::Expired | WaitState::Cancelled => return Answered::Expired,
        WaitState::Open if !wait.is_open_at(now) => return Answered::Expired,
        WaitState::Open => {}
    }
    if let Some(Value::Array(allowed)) = &wait.allowed
        && who.telegram.is_some()
        && !allowed.iter().any(|a| a.as_i64() == who.telegram)
    {
        return Answered::NotAllowed;
    }
    let offered = wait_route(state, wait).is_some_and(|route| {
        route.step(&wait.step).is_some_and(|(_, s)| {
            s.kind == StepKind::Wait
                && (s.buttons.iter().any(|b| b.action == action)
                    || (action == REPLY && s.asks_for_reply()))
        })
    });
    if offered {
        Answered::Accepted
    } else {
        Answered::Unknown
    }
}

/// The route of `wait`'s run, which the engine notes in what the wait is attached to.
fn wait_route<'a>(state: &'a AppState, wait: &Wait) -> Option<&'a Route> {
    let route = wait
        .attached
        .as_ref()
        .and_then(|a| a.get("route"))
        .and_then(Value::as_str)?;
    state.routes.get(route)
}

/// Consumes `wait` for `who` with `action` and decides the step that follows, in one change.
async fn consume(
    state: &AppState,
    wait: &Wait,
    who: &Answerer,
    action: &str,
    text: Option<&str>,
) -> Result<Answered, StoreError> {
    let result = advance(state, wait.run, |run| {
        let route = state.routes.get(&run.route)?;
        let mut answer = json!({"action": action, "by": who.id, "by_name": who.name});
        if let Some(text) = text {
            answer["text"] = text.into();
        }
        let patch = json!({"steps": {wait.step.clone(): answer}});
        let mut context = run.context.clone();
        ferrule_store::run::merge_patch(&mut context, &patch);
        let now = state.clock.system_now();
        let next = next_of(route, &wait.step);
        let mut decision = enter(
            state,
            route,
            Some(&run.id.to_string()),
            next.as_deref(),
            &context,
            now,
        );
        if decision.finished.is_none() && decision.change.state.is_none() {
            decision.change.state = Some("callback_received".into());
        }
        decision.change = decision
            .change
            .merge(patch)
            .close_wait(
                wait.token.clone(),
                WaitOutcome::Consumed {
                    by: who.id.clone(),
                    action: action.to_owned(),
                },
            )
            .detail(format!("`{action}` by {}", who.name));
        Some(decision)
    })
    .await;
    match result {
        Ok(Some(_)) => Ok(Answered::Accepted),
        Ok(None) => Ok(Answered::Unknown),
        Err(StoreError::RunConflict {
            conflict: RunConflict::WaitClosed { state },
            ..
        }) => Ok(match state {
            WaitState::Consumed => Answered::AlreadyHandled,
            _ => Answered::Expired,
        }),
        Err(StoreError::RunConflict {
            conflict: RunConflict::WaitNotFound,
            ..
        }) => Ok(Answered::Unknown),
        Err(e) => Err(e),
    }
}

/// A Telegram button press on a card of `destination`. Answers `None` when the press is not
/// for a route (its data is not `<token>:<action>`, or no wait has the token); otherwise
/// answers `answerCallbackQuery` at once through `answer`, then consumes the wait.
pub async fn callback(
    state: &AppState,
    query: &CallbackQuery,
    answer: impl FnOnce(&'static str),
) -> Result<Option<Answered>, StoreError> {
    let Some((token, action)) = query.data.as_deref().and_then(parse_data) else {
        return Ok(None);
    };
    let Some(wait) = state.store.find_wait(token).await? else {
        return Ok(None);
    };
    let who = Answerer {
        id: query.from.id.to_string(),
        name: query
            .from
            .username
            .as_ref()
            .map(|u| format!("@{u}"))
            .unwrap_or_else(|| query.from.first_name.clone()),
        telegram: Some(query.from.id),
    };
    let checked = check(state, &wait, &who, action);
    answer(checked.text());
    let answered = match checked {
        Answered::Accepted => consume(state, &wait, &who, action, None).await?,
        other => other,
    };
    metrics::counter!(ROUTE_PRESSES.name, "result" => answered.as_str()).increment(1);
    tracing::info!(run = %wait.run, step = %wait.step, action, by = %who.id, result = answered.as_str(), "button press");
    Ok(Some(answered))
}

/// `POST /v1/runs/{id}/signal`: answers the run's open wait with `action` as `who`.
pub async fn signal(
    state: &AppState,
    run: ferrule_store::RunId,
    action: &str,
    who: &Answerer,
) -> Result<Answered, StoreError> {
    let Some(detail) = state.store.get_run(run).await? else {
        return Err(StoreError::RunNotFound { id: run });
    };
    let Some(wait) = detail
        .waits
        .iter()
        .rev()
        .find(|w| w.state == WaitState::Open)
        .or_else(|| detail.waits.last())
    else {
        return Ok(Answered::Unknown);
    };
    let checked = check(state, wait, who, action);
    let answered = match checked {
        Answered::Accepted => consume(state, wait, who, action, None).await?,
        other => other,
    };
    metrics::counter!(ROUTE_PRESSES.name, "result" => answered.as_str()).increment(1);
    Ok(answered)
}

/// A claimed message to [`TIMER_DESTINATION`]: expires its wait if still open, entering the
/// wait step's `on_timeout` step (or ending the run `expired`) with the timer's end, in one
/// transaction; a wait already closed just ends the timer.
pub async fn timer(state: &AppState, lease: &Lease, message: &Message) -> Result<(), StoreError> {
    debug_assert_eq!(message.destination, TIMER_DESTINATION);
    let report = AttemptReport::new(OutcomeClass::Success).detail("wait expired");
    let token = message.payload.get("wait").and_then(Value::as_str);
    let wait = match token {
        Some(token) => state.store.find_wait(token).await?,
        None => None,
    };
    let (Some(wait), Some(tag)) = (wait, &message.run) else {
        return state
            .store
            .complete(lease, report.detail("no such wait"))
            .await;
    };
    for _ in 0..8 {
        let Some(detail) = state.store.get_run(tag.run).await? else {
            return state.store.complete(lease, report).await;
        };
        let run = detail.run;
        let still_open = detail
            .waits
            .iter()
            .any(|w| w.token == wait.token && w.state == WaitState::Open);
        if !still_open {
            return state
                .store
                .complete(lease, report.detail("wait already closed"))
                .await;
        }
        let now = state.clock.system_now();
        let route = state.routes.get(&run.route);
        let on_timeout = route
            .and_then(|r| r.step(&wait.step))
            .and_then(|(_, s)| s.on_timeout.clone());
        let mut decision = match (route, on_timeout) {
            (Some(route), Some(next)) => enter(
                state,
                route,
                Some(&run.id.to_string()),
                Some(&next),
                &run.context,
                now,
            ),
            _ => Decision {
                change: RunChange::new()
                    .status(RunStatus::Expired)
                    .state("expired")
                    .error(format!("wait `{}` expired", wait.step)),
                finished: Some(RunStatus::Expired),
            },
        };
        decision.change = decision
            .change
            .close_wait(wait.token.clone(), WaitOutcome::Expired)
            .detail(format!("wait `{}` expired", wait.step));
        let finished = decision.finished;
        let advance = ferrule_store::Advance::new(run.id, run.version, decision.change);
        match state
            .store
            .complete_and_advance(lease, report.clone(), advance)
            .await
        {
            Ok(advanced) => {
                applied(state, &run.route, finished, &advanced);
                return Ok(());
            }
            Err(StoreError::RunConflict {
                conflict: RunConflict::Version { .. },
                ..
            }) => continue,
            Err(StoreError::RunConflict { .. }) => {
                return state
                    .store
                    .complete(lease, report.detail("wait already closed"))
                    .await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::RunConflict {
        run: tag.run,
        conflict: RunConflict::Version {
            expected: 0,
            found: 0,
        },
    })
}
