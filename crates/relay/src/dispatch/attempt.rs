//! One claimed message's attempt: the policies in order, the connector, and the outcome written
//! back to the store (complete, reschedule, defer or dead-letter), supervised against panics.

use crate::telemetry::trace::TraceParent;
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, SystemTime};
use tracing::Instrument as _;

use ferrule_connectors::telegram::{ChatId, rewrite_chat_id};
use ferrule_connectors::{AnyConnector, Connector, Delivery, DeliveryResult, Signal};
use ferrule_policy::chaos::Injection;
use ferrule_policy::duration::{millis, readable};
use ferrule_policy::retry::RetryDecision;
use ferrule_policy::{CircuitState, Clock, Outcome};
use ferrule_store::{
    AttemptReport, Claimed, Lease, Message, OutcomeClass, Store, StoreError, TIMER_DESTINATION,
};
use futures_util::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::alerts::Alert;
use crate::destination::shared_limits::PaceAdmission;
use crate::destination::{Destination, Override, OverrideState, overrides};
use crate::rollups::reason_of;
use crate::state::{AppState, Counters};
use crate::telemetry::prometheus::{
    ATTEMPT_DURATION, DEAD_LETTERS, DEFER_REASONS, DEFERRED, DELIVERIES, DELIVERY_LATENCY, RETRIES,
};

use super::retry::{RetryHistory, decide};

/// Runs one delivery `attempt` of the message claimed under `lease`, catching a panic: the
/// message is then rescheduled like a transient failure and the panic is logged and counted.
pub(super) async fn supervised(
    state: AppState,
    lease: Lease,
    message: Message,
    permit: OwnedSemaphorePermit,
    attempt: impl Future<Output = ()>,
) {
    let run = AssertUnwindSafe(attempt).catch_unwind().await;
    if message.ordering_key.is_some() {
        // The next message of this key may be claimable now.
        state.wakeups.nudge();
    }
    if let Err(panic) = run {
        let text = panic_text(&panic);
        Counters::bump(&state.counters.panics);
        tracing::error!(message_id = %lease.id, destination = %message.destination, panic = %text, "a delivery task panicked; rescheduling its message");
        let report = AttemptReport::failure(
            OutcomeClass::Transient,
            format!("delivery task panicked: {text}"),
        );
        match state.destinations.get(&message.destination) {
            Some(dest) => {
                failed(&state, dest, &lease, &message, Outcome::Transient, report).await;
            }
            None => {
                let at = state.clock.system_now() + state.config.dispatcher.defer_for;
                report_store(&state, state.store.reschedule(&lease, at, report).await);
            }
        }
    }
    drop(permit);
}

pub(crate) fn panic_text(panic: &Box<dyn Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_owned()
    }
}

/// Logs a store error from finishing an attempt; a lost lease only means another worker or
/// an operator took the message over.
///
/// Whatever failed, the message keeps its lease and nothing else about it changes: when the
/// lease expires it is claimed and attempted again. A full disk is logged once per episode by
/// [`crate::health::storage`], not once per message, and [`record`] has already tried again while the
/// lease lasted.
fn report_store(state: &AppState, result: Result<(), StoreError>) {
    state.storage.observe(state.clock.system_now(), &result);
    match result {
        Ok(()) => state.store_health.success(),
        Err(e @ StoreError::LeaseLost { .. }) => {
            tracing::info!(error = %e, "lease lost before the attempt was recorded");
        }
        Err(e @ StoreError::StorageFull { .. }) => {
            tracing::debug!(error = %e, "recording an attempt failed; the lease will expire and the message will be retried");
            state
                .store_health
                .failure(state.clock.system_now(), format!("record attempt: {e}"));
        }
        Err(e) => {
            tracing::error!(error = %e, "recording an attempt failed; the lease will expire and the message will be retried");
            state
                .store_health
                .failure(state.clock.system_now(), format!("record attempt: {e}"));
        }
    }
}

/// Runs `write`, which records how an attempt ended, again while it fails for a reason that
/// may pass ([`StoreError::is_transient`]: the store's disk is full, the store is busy, or
/// PostgreSQL is unreachable, e.g. restarting): every 50 ms, doubling to 1 s, for at most
/// `dispatcher.lease` from the first refusal, and not once the relay stops (deliveries go on
/// during `server.shutdown_delay`). Written once the store is back, the outcome stands (a
/// deferral keeps its time, not the lease's end); given up, the lease expires and the message
/// is claimed and attempted again, so the receiver may get it twice. Other errors are answered
/// at once.
async fn record<F, Fut>(state: &AppState, mut write: F) -> Result<(), StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    let mut wait = Duration::from_millis(50);
    let mut until = None;
    loop {
        let result = write().await;
        if !result.as_ref().is_err_and(StoreError::is_transient) || state.shutdown.is_cancelled() {
            return result;
        }
        let now = state.clock.now();
        let until = *until.get_or_insert(now + state.config.dispatcher.lease);
        if now + wait > until {
            return result;
        }
        state.storage.observe(state.clock.system_now(), &result);
        tokio::select! {
            () = state.clock.sleep(wait) => {}
            () = state.shutdown.cancelled() => return result,
        }
        wait = (wait * 2).min(Duration::from_secs(1));
    }
}

/// `clock.system_now()` plus the time until `at` on the monotonic clock.
fn wall_time_of(clock: &dyn Clock, at: std::time::Instant) -> SystemTime {
    clock.system_now() + at.saturating_duration_since(clock.now())
}

/// Gives the claim back, due at `until`, without spending the attempt; `held_by` is one of
/// [`DEFER_REASONS`], the `reason` label of `ferrule_deferred_total`, and `reason` the
/// timeline's text.
async fn defer(
    state: &AppState,
    dest: &Destination,
    lease: &Lease,
    until: SystemTime,
    held_by: &'static str,
    reason: &str,
) {
    debug_assert!(DEFER_REASONS.contains(&held_by), "{held_by}");
    Counters::bump(&state.counters.deferred);
    metrics::counter!(DEFERRED.name, "destination" => dest.name.clone(), "reason" => held_by)
        .increment(1);
    tracing::debug!(message_id = %lease.id, destination = %dest.name, reason, "deferred");
    // Boxed, like every store call off the success path: the delivery task's future is as
    // large as its largest await, and a store's (PostgreSQL's above all) would make every
    // spawn copy and allocate tens of KiB.
    let deferred = Box::pin(record(state, || state.store.defer(lease, until, reason))).await;
    if deferred.is_ok() {
        state.wakeups.at(until);
    }
    report_store(state, deferred);
}

/// One attempt of one claimed message, in a span carrying its trace: the message's stored
/// `traceparent` (a new trace for a message stored without one) with a new span id, which the
/// attempt also sends.
pub(super) async fn deliver(state: AppState, claimed: Claimed, hard_stop: CancellationToken) {
    // The message's trace is current while the attempt runs, so a route's next step is
    // enqueued under it too.
    let of_message = TraceParent::stored_or_new(claimed.message.traceparent.as_deref());
    let trace = of_message.child();
    let span = tracing::info_span!(
        "attempt",
        trace_id = %trace.trace_id(),
        span_id = %trace.span_id(),
        message_id = %claimed.message.id,
    );
    #[cfg(feature = "otel")]
    crate::telemetry::otel::link(&span, &of_message);
    crate::telemetry::trace::scope(
        of_message,
        attempt(state, claimed, hard_stop, trace).instrument(span),
    )
    .await;
}

/// [`deliver`] inside its span.
async fn attempt(
    state: AppState,
    claimed: Claimed,
    hard_stop: CancellationToken,
    trace: TraceParent,
) {
    let Claimed { message, lease } = claimed;
    let clock = state.clock.clone();
    if message.destination == TIMER_DESTINATION {
        // A wait's timer: the relay itself expires the wait.
        let expired = Box::pin(crate::routes::press::timer(&state, &lease, &message)).await;
        report_store(&state, expired);
        return;
    }
    let Some(dest) = state.destinations.get(&message.destination).cloned() else {
        let report = AttemptReport::failure(
            OutcomeClass::Permanent,
            format!("destination `{}` is not configured", message.destination),
        );
        Counters::bump(&state.counters.dead);
        let dead = end_dead(&state, &lease, &message, report);
        report_store(&state, Box::pin(dead).await);
        return;
    };
    let step_timeout = match &message.run {
        Some(_) => Box::pin(crate::routes::engine::step_timeout(&state, &message)).await,
        None => None,
    };
    // 0. A paused destination (a Telegram bot under flood control).
    if let Some(until) = dest.paused_until() {
        let until = wall_time_of(clock.as_ref(), until);
        defer(
            &state,
            &dest,
            &lease,
            until,
            "paused",
            "paused: not attempted",
        )
        .await;
        return;
    }
    // 1. Circuit breaker.
    let permit = match dest.breaker.try_acquire_owned() {
        Ok(permit) => Ok(permit),
        // A shared circuit (`breaker.shared`) due for a probe: this relay may claim it.
        Err(open) => match state
            .shared_breakers
            .probe(&state.store, &dest, &clock)
            .await
        {
            Some(permit) => Ok(permit),
            None => Err(open),
        },
    };
    let permit = match permit {
        Ok(permit) => permit,
        Err(open) => {
            let held = state.shared_breakers.retry_at(
                &dest.name,
                clock.system_now(),
                state.config.dispatcher.defer_for,
            );
            let until = match (open.state, dest.breaker.retry_at()) {
                // Held open for a shared circuit: come back when a probe may start (this
                // message may be it), or shortly while another relay probes.
                _ if let Some(at) = held => at,
                // Every probe slot is taken: come back shortly rather than spin.
                (ferrule_policy::CircuitState::HalfOpen, _) => {
                    clock.system_now() + state.config.dispatcher.defer_for
                }
                // With an active health check, look again at the next check at the latest:
                // a passing one half-opens the circuit before its open period ends.
                (_, Some(at)) => {
                    let at = wall_time_of(clock.as_ref(), at);
                    match &dest.health_check {
                        Some(check) => at.min(clock.system_now() + check.config.interval),
                        None => at,
                    }
                }
                // Forced open: only an operator closes it; look again after `open_for`.
                (_, None) => clock.system_now() + dest.breaker.config().open_for,
            };
            if let Some(after) = crate::routes::engine::fallback_due(&state, &message).await {
                // A route's step whose destination stayed down too long: its fallback runs.
                let report = AttemptReport::failure(
                    OutcomeClass::Permanent,
                    format!(
                        "circuit {} for longer than the route's fallback_after ({})",
                        open.state,
                        readable(after)
                    ),
                );
                Counters::bump(&state.counters.dead);
                let dead = end_dead(&state, &lease, &message, report);
                report_store(&state, Box::pin(dead).await);
                return;
            }
            defer(
                &state,
                &dest,
                &lease,
                until,
                "circuit_open",
                &format!("circuit {}: not attempted", open.state),
            )
            .await;
            return;
        }
    };
    // 2. Rate limit.
    if let Some(limiter) = &dest.rate_limit
        && let Err(limited) = limiter.check()
    {
        drop(permit);
        dest.rate_watch.deferred(limited.ready_at);
        let until = wall_time_of(clock.as_ref(), limited.ready_at);
        let reason = "rate limited: not attempted";
        defer(&state, &dest, &lease, until, "rate_limited", reason).await;
        return;
    }
    // A Telegram send holds its place in the bot's windows until it is answered.
    let telegram_send = match (&dest.telegram_limits, chat_of(&message.payload)) {
        (Some(limits), Some(chat)) => match limits.admit(&chat, message.id).await {
            Ok(send) => Some(send),
            Err((limited, which)) => {
                drop(permit);
                dest.rate_watch.deferred(limited.ready_at);
                let until = wall_time_of(clock.as_ref(), limited.ready_at);
                let reason = format!("rate limited: telegram {which}: not attempted");
                defer(&state, &dest, &lease, until, "rate_limited", &reason).await;
                return;
            }
        },
        _ => None,
    };
    // A GitHub write holds its token's one place until it is answered.
    let id = message.id.to_string();
    let shared_write = match &dest.shared_pace {
        Some(pace) => match pace.admit(&id).await {
            Ok(PaceAdmission::Shared(slot)) => Some(slot),
            Ok(PaceAdmission::Local) => None,
            Err(until) => {
                drop(permit);
                let wait = until.duration_since(clock.system_now()).unwrap_or_default();
                dest.rate_watch.deferred(clock.now() + wait);
                let reason = "rate limited: github write pace (shared): not attempted";
                defer(&state, &dest, &lease, until, "rate_limited", reason).await;
                return;
            }
        },
        None => None,
    };
    let github_write = match (&dest.write_pace, &shared_write) {
        (Some(pace), None) => match pace.try_acquire(&id) {
            Ok(write) => Some(write),
            Err(limited) => {
                drop(permit);
                dest.rate_watch.deferred(limited.ready_at);
                let until = wall_time_of(clock.as_ref(), limited.ready_at);
                let reason = "rate limited: github write pace: not attempted";
                defer(&state, &dest, &lease, until, "rate_limited", reason).await;
                return;
            }
        },
        _ => None,
    };
    // 3. Bulkhead.
    let slot = match dest.bulkhead.acquire_owned().await {
        Ok(slot) => slot,
        Err(_) => {
            drop(permit);
            if let Some(send) = telegram_send {
                send.not_sent();
            }
            if let Some(write) = github_write {
                write.not_sent();
            }
            if let Some(write) = shared_write {
                write.not_sent();
            }
            let until = clock.system_now() + state.config.dispatcher.defer_for;
            let reason = "bulkhead full: not attempted";
            defer(&state, &dest, &lease, until, "bulkhead_full", reason).await;
            return;
        }
    };
    // 4. Chaos, the connector, the timeout; the lease is extended while it runs.
    let payload = serde_json::to_string(&message.payload).unwrap_or_else(|_| "null".into());
    let traceparent = trace.to_string();
    let delivery = Delivery {
        message_id: &id,
        destination: &dest.name,
        payload: &payload,
        attempt: message.attempts,
        traceparent: Some(&traceparent),
    };
    let injection = dest.chaos.decide();
    let started = clock.now();
    let attempt = async {
        match injection {
            Injection::Error => {
                return DeliveryResult {
                    outcome: Outcome::Transient,
                    code: None,
                    detail: "chaos: injected error".into(),
                    duration: Duration::ZERO,
                    signal: None,
                    output: None,
                };
            }
            Injection::Latency(d) => clock.sleep(d).await,
            Injection::Drop => std::future::pending::<()>().await,
            _ => {}
        }
        let mut result = dest.connector.deliver(&delivery).await;
        if let Injection::Outcome(outcome) = injection {
            result.outcome = outcome;
            result.detail = format!("chaos: injected {}; {}", outcome.as_str(), result.detail);
        }
        result
    };
    // A route's step may set its own time per attempt instead of the destination's.
    let timed = async {
        match step_timeout {
            None => dest.timeout.wrap(attempt).await.map_err(|e| e.after),
            Some(limit) => tokio::select! {
                r = attempt => Ok(r),
                () = clock.sleep(limit) => Err(limit),
            },
        }
    };
    let heartbeat = heartbeat(&state, &lease);
    let result = tokio::select! {
        r = timed => Some(match r {
            Ok(result) => result,
            Err(after) => DeliveryResult {
                outcome: Outcome::Transient,
                code: None,
                detail: format!("timed out after {}", readable(after)),
                duration: clock.now().saturating_duration_since(started),
                signal: None,
                output: None,
            },
        }),
        _ = heartbeat => None,
        _ = hard_stop.cancelled() => None,
    };
    drop(slot);
    // Answered (or abandoned): the send counts from now in the Telegram windows, and the
    // token's next write may start an interval from now.
    drop(telegram_send);
    drop(github_write);
    drop(shared_write);
    let Some(result) = result else {
        // Shutdown's drain timeout passed (or the lease was lost): give the message back.
        drop(permit);
        match Box::pin(state.store.release(&lease)).await {
            Ok(()) => {
                tracing::info!(message_id = %id, "released an unfinished delivery at shutdown")
            }
            Err(e @ StoreError::LeaseLost { .. }) => {
                // Cancelled by an operator, or claimed again after the lease expired.
                tracing::info!(message_id = %id, error = %e, "abandoned a delivery whose message was taken over")
            }
            Err(e) => {
                tracing::warn!(message_id = %id, error = %e, "releasing an unfinished delivery failed")
            }
        }
        return;
    };
    // A queued call's answer, kept with its message before the attempt ends.
    super::answer::keep(&state, &dest, &lease, result.output.as_ref()).await;
    match &result.signal {
        // Flood control and rate limits are about the pace, not the destination's health: not
        // a breaker failure. A GitHub rate limit is its token's, so every destination acting
        // with the token pauses.
        Some(Signal::PauseDestination(pause)) => {
            permit.record(Outcome::Ignored);
            for d in with_credentials_of(&state, &dest) {
                d.pause(*pause);
                tracing::warn!(destination = %d.name, pause_ms = millis(*pause), "the destination asked us to slow down; paused");
            }
        }
        Some(Signal::Unauthorized) => {
            permit.record(result.outcome);
            for d in with_credentials_of(&state, &dest) {
                let first = d.breaker.state() != CircuitState::ForcedOpen;
                // At once, before the store: nothing more goes out with rejected credentials.
                d.breaker.force_open();
                tracing::error!(destination = %d.name, detail = %result.detail, "the destination rejected our credentials; its circuit is forced open until an operator resets it");
                if first {
                    persist_unauthorized(&state, d, &result.detail).await;
                }
                let alert = match d.connector {
                    AnyConnector::Telegram(_) => Alert::telegram_unauthorized,
                    AnyConnector::Github(_) => Alert::github_unauthorized,
                    _ => continue,
                };
                state.alerts.raise_soon(alert(&d.name, clock.system_now()));
            }
        }
        // The chat moved; the bot is fine.
        Some(Signal::MigrateChat { .. }) => permit.record(Outcome::Ignored),
        _ => permit.record(result.outcome),
    }
    metrics::histogram!(ATTEMPT_DURATION.name, "destination" => dest.name.clone())
        .record(result.duration.as_secs_f64());
    metrics::counter!(DELIVERIES.name, "destination" => dest.name.clone(), "outcome" => result.outcome.as_str())
        .increment(1);
    let mut report = AttemptReport::new(class_of(result.outcome))
        .duration(result.duration)
        .detail(result.detail.clone());
    if let Some(code) = result.code {
        report = report.code(code.to_string());
    }
    if let Some(Signal::MigrateChat { from, to }) = &result.signal {
        migrate(&state, &dest, &lease, &message, from, *to, report).await;
        return;
    }
    match result.outcome {
        Outcome::Success => {
            dest.health.success();
            dest.retry.on_success();
            Counters::bump(&state.counters.delivered);
            super::answer::reply(&state, &dest, &message, "delivered", result.output.as_ref())
                .await;
            // Not boxed: the success path is the hot one, and its store call never was.
            let completed = if message.run.is_some() {
                let output = result.output.clone();
                Box::pin(record(&state, || {
                    crate::routes::engine::step_delivered(
                        &state,
                        &lease,
                        &message,
                        report.clone(),
                        output.clone(),
                    )
                }))
                .await
            } else {
                record(&state, || state.store.complete(&lease, report.clone())).await
            };
            if completed.is_ok() {
                let now = clock.system_now();
                let waited = now.duration_since(message.created_at).unwrap_or_default();
                metrics::histogram!(DELIVERY_LATENCY.name, "destination" => dest.name.clone())
                    .record(waited.as_secs_f64());
                state
                    .rollups
                    .delivered(now, &dest.name, result.duration, waited);
            }
            report_store(&state, completed);
        }
        outcome => {
            if outcome.is_failure() {
                dest.health
                    .failure(clock.system_now(), result.detail.clone());
            }
            failed(&state, &dest, &lease, &message, outcome, report).await;
        }
    }
}

/// Stores the forced-open breaker of a destination that rejected the relay's credentials as
/// its override, set by the relay: a rejected token stays rejected until an operator resets
/// the breaker, across restarts and on every relay sharing the store. When the store refuses,
/// the breaker stays forced open in this process only.
async fn persist_unauthorized(state: &AppState, dest: &Destination, detail: &str) {
    let reason = format!("the destination rejected the relay's credentials: {detail}");
    let set = Override::new(
        OverrideState::ForcedOpen,
        state.clock.system_now(),
        overrides::SET_BY_RELAY,
        Some(reason),
    );
    if let Err(e) = Box::pin(state.overrides.set(&state.store, dest, set)).await {
        tracing::warn!(destination = %dest.name, error = %e, "cannot store the forced-open breaker; it is forced open until this relay stops");
    }
}

/// A Telegram group became a supergroup: store the payload with the new chat id, then retry
/// it like a transient failure. If the payload cannot be rewritten, dead-letter it naming the
/// new chat id so it can be resubmitted.
async fn migrate(
    state: &AppState,
    dest: &Destination,
    lease: &Lease,
    message: &Message,
    from: &str,
    to: i64,
    report: AttemptReport,
) {
    let detail = report.detail.clone().unwrap_or_default();
    let rewritten = serde_json::to_string(&message.payload)
        .map_err(|e| e.to_string())
        .and_then(|json| rewrite_chat_id(&json, to).map_err(|e| e.to_string()))
        .and_then(|json| serde_json::from_str(&json).map_err(|e| e.to_string()));
    let payload = match rewritten {
        Ok(payload) => payload,
        Err(e) => {
            Counters::bump(&state.counters.dead);
            let report = report.detail(format!(
                "chat {from} was upgraded to supergroup {to}, but the payload cannot be rewritten \
                 ({e}); resubmit with \"chat_id\": {to}"
            ));
            report_store(
                state,
                Box::pin(end_dead(state, lease, message, report)).await,
            );
            return;
        }
    };
    if let Err(e) = Box::pin(state.store.replace_payload(lease, payload)).await {
        report_store(state, Err(e));
        return;
    }
    tracing::info!(message_id = %lease.id, destination = %dest.name, %from, %to, "telegram chat migrated; retrying in the supergroup");
    let report = report.detail(format!(
        "chat {from} moved to {to}; retrying there ({detail})"
    ));
    failed(state, dest, lease, message, Outcome::Transient, report).await;
}

/// `dest` and every other destination acting with its credentials (GitHub destinations with one
/// token): what a connector says about the credentials holds for all of them.
fn with_credentials_of<'a>(
    state: &'a AppState,
    dest: &'a Destination,
) -> impl Iterator<Item = &'a Destination> {
    let others = state
        .destinations
        .values()
        .filter(|d| d.name != dest.name && d.shares_token_with(dest));
    std::iter::once(dest).chain(others.map(AsRef::as_ref))
}

/// The Telegram chat a stored payload names, if it names one.
fn chat_of(payload: &serde_json::Value) -> Option<ChatId> {
    match payload.get("chat_id")? {
        serde_json::Value::Number(n) => n.as_i64().map(ChatId::Id),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Extends the lease every third of its length; completes only if the lease is lost.
async fn heartbeat(state: &AppState, lease: &Lease) {
    let length = state.config.dispatcher.lease;
    let every = (length / 3).max(Duration::from_millis(10));
    loop {
        state.clock.sleep(every).await;
        let extended = Box::pin(state.store.extend_lease(lease, length)).await;
        state.storage.observe(state.clock.system_now(), &extended);
        match extended {
            Ok(_) => {}
            Err(e @ StoreError::LeaseLost { .. }) => {
                tracing::warn!(error = %e, "lease lost during a delivery");
                return;
            }
            Err(e @ StoreError::StorageFull { .. }) => {
                tracing::debug!(error = %e, "extending a lease failed");
            }
            Err(e) => tracing::warn!(error = %e, "extending a lease failed"),
        }
    }
}

/// Dead-letters `message`: a route's step with what follows in its run
/// ([`step_dead`](crate::routes::engine::step_dead)), any other plainly.
async fn end_dead(
    state: &AppState,
    lease: &Lease,
    message: &Message,
    report: AttemptReport,
) -> Result<(), StoreError> {
    if message.run.is_some() {
        crate::routes::engine::step_dead(state, lease, message, report).await
    } else {
        state.store.dead_letter(lease, report).await
    }
}

/// The store's outcome class for a policy outcome.
fn class_of(outcome: Outcome) -> OutcomeClass {
    match outcome {
        Outcome::Success => OutcomeClass::Success,
        Outcome::Transient => OutcomeClass::Transient,
        Outcome::RetryAfter(_) => OutcomeClass::RetryAfter,
        Outcome::Permanent => OutcomeClass::Permanent,
        Outcome::Ignored => OutcomeClass::Ignored,
    }
}

/// A failed (or ignored) attempt: reschedule at the retry policy's delay, or dead-letter.
async fn failed(
    state: &AppState,
    dest: &Destination,
    lease: &Lease,
    message: &Message,
    outcome: Outcome,
    report: AttemptReport,
) {
    let now = state.clock.system_now();
    if matches!(outcome, Outcome::Ignored | Outcome::Success) {
        // Neither success nor failure (e.g. injected): try again without spending the attempt.
        defer(
            state,
            dest,
            lease,
            now,
            "ignored_outcome",
            "ignored outcome",
        )
        .await;
        return;
    }
    // The timeline says when this run of attempts started and how long the last wait was;
    // without it (a read error) count from creation and start decorrelated jitter afresh.
    let step_retry = Box::pin(crate::routes::engine::step_retry(state, message)).await;
    let retry = step_retry.unwrap_or(&dest.retry);
    let (history, answer) = match Box::pin(state.store.get(message.id)).await {
        Ok(Some(detail)) => (RetryHistory::of(&detail.events), detail.response),
        Ok(None) => (RetryHistory::default(), None),
        Err(e) => {
            tracing::warn!(message_id = %lease.id, error = %e, "reading the timeline for the retry decision failed");
            (RetryHistory::default(), None)
        }
    };
    let since = history.first_attempt_at.unwrap_or(message.created_at);
    let elapsed = now.duration_since(since).unwrap_or(Duration::ZERO);
    match decide(
        retry,
        message.attempts,
        outcome,
        history.previous_delay,
        elapsed,
    ) {
        RetryDecision::Retry(delay) => {
            Counters::bump(&state.counters.retried);
            metrics::counter!(RETRIES.name, "destination" => dest.name.clone()).increment(1);
            tracing::info!(message_id = %lease.id, destination = %dest.name, attempt = message.attempts, delay_ms = millis(delay), detail = report.detail.as_deref().unwrap_or(""), "attempt failed; retry scheduled");
            let rescheduled = Box::pin(record(state, || {
                state.store.reschedule(lease, now + delay, report.clone())
            }))
            .await;
            if rescheduled.is_ok() {
                state.wakeups.at(now + delay);
                state.rollups.retried(
                    now,
                    &dest.name,
                    report.duration.unwrap_or_default(),
                    &reason_of(report.code.as_deref(), report.detail.as_deref()),
                );
            }
            report_store(state, rescheduled);
        }
        RetryDecision::GiveUp(reason) => {
            Counters::bump(&state.counters.dead);
            metrics::counter!(DEAD_LETTERS.name, "destination" => dest.name.clone()).increment(1);
            let detail = report.detail.clone().unwrap_or_default();
            let why = reason_of(report.code.as_deref(), report.detail.as_deref());
            let permanent = outcome == Outcome::Permanent;
            let attempt = report.duration.unwrap_or_default();
            let report = report.detail(format!("{reason}: {detail}"));
            tracing::warn!(message_id = %lease.id, destination = %dest.name, attempts = message.attempts, %reason, detail, "message dead-lettered");
            super::answer::reply(state, dest, message, "dead", answer.as_ref()).await;
            let dead = Box::pin(record(state, || {
                end_dead(state, lease, message, report.clone())
            }))
            .await;
            if dead.is_ok() {
                state
                    .rollups
                    .dead_lettered(now, &dest.name, attempt, permanent, &why);
            }
            report_store(state, dead);
        }
    }
}
