//! The dispatcher: claims due messages and delivers each under its destination's policies.
//!
//! One claim loop per process leases up to `batch` due messages at a time, bounded by a
//! global concurrency limit, and sleeps until the store says new work may exist
//! ([`Store::wait_for_work`]), the next message falls due ([`Store::next_due_at`], or a
//! message this process deferred or rescheduled: [`Wakeups`]), or a delivery with an ordering
//! key ends. Each claimed message runs in its own supervised task:
//!
//! 0. a paused destination (Telegram flood control): defer to the pause's end;
//! 1. circuit breaker — open: [`Store::defer`] to when it may half-open, attempt not spent;
//! 2. rate limit — refused: defer to `ready_at`; a Telegram bot's limits per chat, per group
//!    and per bot likewise ([`crate::telegram_limits`]; an admitted send holds its place in
//!    them until it is answered);
//! 3. bulkhead — full: defer by `dispatcher.defer_for`;
//! 4. chaos, then the connector under the per-attempt timeout, with the lease extended every
//!    third of its length while the attempt runs;
//! 5. the outcome: `complete`, `reschedule` at the time [`Retry`] chooses (never before a
//!    `Retry-After`), or `dead_letter` on a permanent error or when retries are exhausted;
//!    and the connector's [`Signal`], if any: pause the destination (the breaker records the
//!    attempt as ignored), force its breaker open, or store a message whose chat moved with the
//!    new chat id ([`Store::replace_payload`]) and retry it.
//!
//! A panic in a delivery task is caught, logged and counted; its message is rescheduled like
//! a transient failure and the loop goes on. A panic in the claim loop restarts it.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferrule_connectors::telegram::{ChatId, rewrite_chat_id};
use ferrule_connectors::{AnyConnector, Connector, Delivery, DeliveryResult, Signal};
use ferrule_policy::chaos::Injection;
use ferrule_policy::retry::{Retry, RetryDecision};
use ferrule_policy::{Clock, Outcome};
use ferrule_store::{
    AttemptReport, Claimed, Event, Lease, Message, OutcomeClass, Status, Store, StoreError,
};
use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerts::Alert;
use crate::destination::Destination;
use crate::state::{AppState, Counters};

/// Starts the claim loop on `tracker`. It stops claiming when `state.shutdown` is cancelled;
/// deliveries still running when `hard_stop` is cancelled give their leases back.
pub fn spawn(state: AppState, tracker: TaskTracker, hard_stop: CancellationToken) {
    spawn_with(state, tracker, hard_stop, deliver);
}

/// [`spawn`] with the attempt itself given as `deliver` (the dispatcher passes [`deliver`]):
/// the seam through which the tests make a delivery panic.
fn spawn_with<D, F>(state: AppState, tracker: TaskTracker, hard_stop: CancellationToken, deliver: D)
where
    D: Fn(AppState, Claimed, CancellationToken) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let inner = tracker.clone();
    tracker.spawn(async move {
        loop {
            let run = AssertUnwindSafe(claim_loop(
                state.clone(),
                inner.clone(),
                hard_stop.clone(),
                deliver.clone(),
            ))
            .catch_unwind()
            .await;
            match run {
                Ok(()) => break,
                Err(panic) => {
                    Counters::bump(&state.counters.panics);
                    tracing::error!(panic = %panic_text(&panic), "the claim loop panicked; restarting it");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}

/// Claims and spawns deliveries until shutdown.
async fn claim_loop<D, F>(
    state: AppState,
    tracker: TaskTracker,
    hard_stop: CancellationToken,
    deliver: D,
) where
    D: Fn(AppState, Claimed, CancellationToken) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let cfg = state.config.dispatcher.clone();
    let slots = Arc::new(Semaphore::new(cfg.concurrency));
    loop {
        if state.shutdown.is_cancelled() {
            return;
        }
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                permit = slots.clone().acquire_owned() => drop(permit),
            }
            continue;
        }
        let claimed = state
            .store
            .claim_due(&state.owner, free.min(cfg.batch), cfg.lease)
            .await;
        match &claimed {
            // A claim of nothing writes nothing: it says nothing about the disk.
            Ok(c) if c.is_empty() => {}
            result => state.storage.observe(state.clock.system_now(), result),
        }
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                if matches!(e, StoreError::StorageFull { .. }) {
                    // Logged once per episode by `state.storage`.
                    tracing::debug!(error = %e, "claiming due messages failed");
                } else {
                    tracing::warn!(error = %e, "claiming due messages failed");
                }
                state
                    .store_health
                    .failure(state.clock.system_now(), format!("claim: {e}"));
                tokio::select! {
                    _ = state.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(cfg.poll_interval) => {}
                }
                continue;
            }
        };
        if claimed.is_empty() {
            idle(&state, cfg.poll_interval).await;
            continue;
        }
        for c in claimed {
            let permit = match slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => match slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let (lease, message) = (c.lease.clone(), c.message.clone());
            let attempt = deliver(state.clone(), c, hard_stop.clone());
            tracker.spawn(supervised(state.clone(), lease, message, permit, attempt));
        }
    }
}

/// Waits for new work, the next due time, the poll interval or shutdown.
async fn idle(state: &AppState, poll: Duration) {
    let now = state.clock.system_now();
    let (passed, local) = state.wakeups.take_due(now);
    if passed {
        // Something this process gave back fell due meanwhile: claim again at once.
        return;
    }
    let stored = match state.store.next_due_at().await {
        Ok(Some(at)) => at.duration_since(now).ok().filter(|d| !d.is_zero()),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "reading the next due time failed");
            None
        }
    };
    // The store's earliest due message may be due already but not claimable (its ordering key
    // is busy); then only the times this process gave messages back to say when to look again.
    let local = local.and_then(|at| at.duration_since(now).ok());
    let until_due = match (stored, local) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let due = async {
        match until_due {
            Some(d) => state.clock.sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = state.shutdown.cancelled() => {}
        _ = state.store.wait_for_work() => {}
        _ = state.wakeups.notified() => {}
        _ = due => {}
        _ = tokio::time::sleep(poll) => {}
    }
}

/// What the claim loop waits for besides the store: when the messages this process gave back
/// (deferred or rescheduled) fall due, and a nudge when a delivery with an ordering key ended,
/// which may have made the next message of its key claimable.
///
/// The store's [`Store::next_due_at`] cannot tell: while an older message of the same key is
/// pending, the next one is due but not claimable, and it hides every later due time. Without
/// these, a message deferred by a rate limit waited for the poll interval (1 s), so a Telegram
/// bot sent its 30 messages a second in one burst per poll.
#[derive(Debug, Default)]
pub struct Wakeups {
    /// Due times, earliest first; at most [`Wakeups::MAX`] (the latest are dropped beyond,
    /// and the poll interval covers them).
    due: std::sync::Mutex<std::collections::BTreeSet<SystemTime>>,
    nudge: tokio::sync::Notify,
}

impl Wakeups {
    /// The most due times kept.
    const MAX: usize = 4096;

    /// A message this process gave back falls due at `at`.
    pub fn at(&self, at: SystemTime) {
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        due.insert(at);
        if due.len() > Self::MAX {
            due.pop_last();
        }
        drop(due);
        self.nudge.notify_one();
    }

    /// Something may have become claimable now.
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Forgets the due times up to `now`, answering whether there were any, and the earliest
    /// one after `now`.
    fn take_due(&self, now: SystemTime) -> (bool, Option<SystemTime>) {
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        let later = due.split_off(&now);
        let passed = !due.is_empty();
        *due = later;
        // `split_off` keeps `now` itself on the later side: it is due too.
        let passed = passed || due.remove(&now);
        (passed, due.first().copied())
    }

    async fn notified(&self) {
        self.nudge.notified().await;
    }
}

/// Runs one delivery `attempt` of the message claimed under `lease`, catching a panic: the
/// message is then rescheduled like a transient failure and the panic is logged and counted.
async fn supervised(
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
/// [`crate::storage`], not once per message, and [`record`] has already tried again while the
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

/// Runs `write`, which records how an attempt ended, again while it fails because the store's
/// disk is full: every 50 ms, doubling to 1 s, for at most `dispatcher.lease` from the first
/// refusal, and not after shutdown begins. Written once space returns, the outcome stands;
/// given up, the lease expires and the message is claimed and attempted again, so the
/// receiver gets it twice. Other errors are answered at once.
async fn record<F, Fut>(state: &AppState, mut write: F) -> Result<(), StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    let mut wait = Duration::from_millis(50);
    let mut until = None;
    loop {
        let result = write().await;
        if !matches!(result, Err(StoreError::StorageFull { .. })) || state.draining() {
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

/// Gives the claim back, due at `until`, without spending the attempt.
async fn defer(
    state: &AppState,
    dest: &Destination,
    lease: &Lease,
    until: SystemTime,
    reason: &str,
) {
    Counters::bump(&state.counters.deferred);
    let kind = reason.split(':').next().unwrap_or(reason).to_owned();
    metrics::counter!("ferrule_deferred_total", "destination" => dest.name.clone(), "reason" => kind)
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

/// One attempt of one claimed message.
async fn deliver(state: AppState, claimed: Claimed, hard_stop: CancellationToken) {
    let Claimed { message, lease } = claimed;
    let clock = state.clock.clone();
    let Some(dest) = state.destinations.get(&message.destination).cloned() else {
        let report = AttemptReport::failure(
            OutcomeClass::Permanent,
            format!("destination `{}` is not configured", message.destination),
        );
        Counters::bump(&state.counters.dead);
        report_store(&state, state.store.dead_letter(&lease, report).await);
        return;
    };
    // 0. A paused destination (a Telegram bot under flood control).
    if let Some(until) = dest.paused_until() {
        let until = wall_time_of(clock.as_ref(), until);
        defer(&state, &dest, &lease, until, "paused: not attempted").await;
        return;
    }
    // 1. Circuit breaker.
    let permit = match dest.breaker.try_acquire_owned() {
        Ok(permit) => permit,
        Err(open) => {
            let until = match (open.state, dest.breaker.retry_at()) {
                // Every probe slot is taken: come back shortly rather than spin.
                (ferrule_policy::CircuitState::HalfOpen, _) => {
                    clock.system_now() + state.config.dispatcher.defer_for
                }
                (_, Some(at)) => wall_time_of(clock.as_ref(), at),
                // Forced open: only an operator closes it; look again after `open_for`.
                (_, None) => clock.system_now() + dest.breaker.config().open_for,
            };
            defer(
                &state,
                &dest,
                &lease,
                until,
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
        let until = wall_time_of(clock.as_ref(), limited.ready_at);
        defer(&state, &dest, &lease, until, "rate limited: not attempted").await;
        return;
    }
    // A Telegram send holds its place in the bot's windows until it is answered.
    let telegram_send = match (&dest.telegram_limits, chat_of(&message.payload)) {
        (Some(limits), Some(chat)) => match limits.check(&chat, message.id) {
            Ok(send) => Some(send),
            Err((limited, which)) => {
                drop(permit);
                let until = wall_time_of(clock.as_ref(), limited.ready_at);
                let reason = format!("rate limited: telegram {which}: not attempted");
                defer(&state, &dest, &lease, until, &reason).await;
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
            let until = clock.system_now() + state.config.dispatcher.defer_for;
            defer(&state, &dest, &lease, until, "bulkhead full: not attempted").await;
            return;
        }
    };
    // 4. Chaos, the connector, the timeout; the lease is extended while it runs.
    let id = message.id.to_string();
    let payload = serde_json::to_string(&message.payload).unwrap_or_else(|_| "null".into());
    let delivery = Delivery {
        message_id: &id,
        destination: &dest.name,
        payload: &payload,
        attempt: message.attempts,
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
    let timed = dest.timeout.wrap(attempt);
    let heartbeat = heartbeat(&state, &lease);
    let result = tokio::select! {
        r = timed => Some(match r {
            Ok(result) => result,
            Err(elapsed) => DeliveryResult {
                outcome: Outcome::Transient,
                code: None,
                detail: format!("timed out after {:?}", elapsed.after),
                duration: clock.now().saturating_duration_since(started),
                signal: None,
            },
        }),
        _ = heartbeat => None,
        _ = hard_stop.cancelled() => None,
    };
    drop(slot);
    // Answered (or abandoned): the send counts from now in the Telegram windows.
    drop(telegram_send);
    let Some(result) = result else {
        // Shutdown's drain timeout passed (or the lease was lost): give the message back.
        drop(permit);
        match Box::pin(state.store.release(&lease)).await {
            Ok(()) => {
                tracing::info!(message_id = %id, "released an unfinished delivery at shutdown")
            }
            Err(e) => {
                tracing::warn!(message_id = %id, error = %e, "releasing an unfinished delivery failed")
            }
        }
        return;
    };
    match &result.signal {
        // Flood control is about the bot's pace, not its health: not a breaker failure.
        Some(Signal::PauseDestination(pause)) => {
            permit.record(Outcome::Ignored);
            dest.pause(*pause);
            tracing::warn!(destination = %dest.name, pause = ?pause, "the destination asked us to slow down; paused");
        }
        Some(Signal::Unauthorized) => {
            permit.record(result.outcome);
            dest.breaker.force_open();
            tracing::error!(destination = %dest.name, detail = %result.detail, "the destination rejected our credentials; its circuit is forced open until an operator resets it");
            if matches!(dest.connector, AnyConnector::Telegram(_)) {
                let alert = Alert::telegram_unauthorized(&dest.name, clock.system_now());
                state.alerts.raise_soon(alert);
            }
        }
        // The chat moved; the bot is fine.
        Some(Signal::MigrateChat { .. }) => permit.record(Outcome::Ignored),
        _ => permit.record(result.outcome),
    }
    metrics::histogram!("ferrule_attempt_duration_seconds", "destination" => dest.name.clone())
        .record(result.duration.as_secs_f64());
    metrics::counter!("ferrule_deliveries_total", "destination" => dest.name.clone(), "outcome" => result.outcome.as_str())
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
            // Not boxed: the success path is the hot one, and its store call never was.
            let completed = record(&state, || state.store.complete(&lease, report.clone())).await;
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
            report_store(state, state.store.dead_letter(lease, report).await);
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
        defer(state, dest, lease, now, "ignored outcome").await;
        return;
    }
    // The timeline says when this run of attempts started and how long the last wait was;
    // without it (a read error) count from creation and start decorrelated jitter afresh.
    let history = match Box::pin(state.store.get(message.id)).await {
        Ok(Some(detail)) => RetryHistory::of(&detail.events),
        Ok(None) => RetryHistory::default(),
        Err(e) => {
            tracing::warn!(message_id = %lease.id, error = %e, "reading the timeline for the retry decision failed");
            RetryHistory::default()
        }
    };
    let since = history.first_attempt_at.unwrap_or(message.created_at);
    let elapsed = now.duration_since(since).unwrap_or(Duration::ZERO);
    match decide(
        &dest.retry,
        message.attempts,
        outcome,
        history.previous_delay,
        elapsed,
    ) {
        RetryDecision::Retry(delay) => {
            Counters::bump(&state.counters.retried);
            metrics::counter!("ferrule_retries_total", "destination" => dest.name.clone())
                .increment(1);
            tracing::info!(message_id = %lease.id, destination = %dest.name, attempt = message.attempts, delay = ?delay, detail = report.detail.as_deref().unwrap_or(""), "attempt failed; retry scheduled");
            let rescheduled = Box::pin(record(state, || {
                state.store.reschedule(lease, now + delay, report.clone())
            }))
            .await;
            if rescheduled.is_ok() {
                state.wakeups.at(now + delay);
            }
            report_store(state, rescheduled);
        }
        RetryDecision::GiveUp(reason) => {
            Counters::bump(&state.counters.dead);
            metrics::counter!("ferrule_dead_letters_total", "destination" => dest.name.clone())
                .increment(1);
            let detail = report.detail.clone().unwrap_or_default();
            let report = report.detail(format!("{reason}: {detail}"));
            tracing::warn!(message_id = %lease.id, destination = %dest.name, attempts = message.attempts, %reason, detail, "message dead-lettered");
            let dead = record(state, || state.store.dead_letter(lease, report.clone()));
            report_store(state, Box::pin(dead).await);
        }
    }
}

/// The durable retry decision after attempt `attempt` failed with `outcome`: the policy's
/// backoff (decorrelated jitter growing from `previous_delay`), never shorter than a
/// `Retry-After`, within `max_attempts` and within `max_elapsed` counted by `elapsed`.
pub fn decide(
    retry: &Retry,
    attempt: u32,
    outcome: Outcome,
    previous_delay: Option<Duration>,
    elapsed: Duration,
) -> RetryDecision {
    let mut rng = fastrand::Rng::new();
    retry.next_delay_with_elapsed(attempt.max(1), outcome, previous_delay, elapsed, &mut rng)
}

/// What a message's timeline says about its current run of attempts, for [`decide`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryHistory {
    /// When the first attempt since the message was created or last replayed started: where
    /// `max_elapsed` counts from.
    pub first_attempt_at: Option<SystemTime>,
    /// How long the message waited before the current attempt, from the last failed attempt's
    /// reschedule to this attempt's claim: the previous delay decorrelated jitter grows from.
    pub previous_delay: Option<Duration>,
}

impl RetryHistory {
    /// Reads `events` (oldest first) of a message whose current attempt is claimed.
    ///
    /// The run starts at the last `queued` event that is the creation (the first event) or a
    /// replay (detail `replayed`); a `queued` event of a deferral does not restart it, and a
    /// claim that was deferred or released without an attempt does not count as its first.
    pub fn of(events: &[Event]) -> Self {
        let start = events
            .iter()
            .rposition(|e| {
                e.status == Status::Queued
                    && (e.seq == 1 || e.detail.as_deref() == Some("replayed"))
            })
            .unwrap_or(0);
        let run = events.get(start..).unwrap_or_default();
        // A claim given back unattempted (deferred or released: the next event returns the
        // message to the queue without an outcome) is not an attempt.
        let given_back = |e: &Event| {
            matches!(e.status, Status::Queued | Status::Retrying) && e.outcome.is_none()
        };
        let first_attempt_at = run
            .iter()
            .enumerate()
            .find(|(i, e)| {
                e.status == Status::Delivering && !run.get(i + 1).is_some_and(given_back)
            })
            .map(|(_, e)| e.at);
        // The current attempt's claim, and the reschedule (a `retrying` event that ended an
        // attempt, not a deferral) before it.
        let previous_delay = run
            .iter()
            .rposition(|e| e.status == Status::Delivering)
            .and_then(|current| {
                let claimed = run[current].at;
                run[..current]
                    .iter()
                    .rev()
                    .find(|e| e.status == Status::Retrying && e.outcome.is_some())
                    .and_then(|r| claimed.duration_since(r.at).ok())
            });
        RetryHistory {
            first_attempt_at,
            previous_delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use ferrule_store::{NewMessage, Status, Store};
    use serde_json::json;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use crate::config::{Config, DestinationConfig, DestinationKind, Secret};
    use crate::state::AppState;

    /// A loopback receiver answering 200 that records the `webhook-id` of every request.
    async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap| {
                let record = record.clone();
                async move {
                    let id = headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    record.lock().unwrap().push(id);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    async fn status_of(state: &AppState, id: ferrule_store::MessageId) -> Status {
        state.store.get(id).await.unwrap().unwrap().message.status
    }

    async fn wait_until<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_delivery_is_rescheduled_and_the_dispatcher_goes_on() {
        let (url, seen) = receiver().await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.store.url = Secret::new(format!(
            "sqlite://{}",
            dir.path().join("ferrule.db").display()
        ));
        config.store.synchronous = ferrule_store::Synchronous::Normal;
        config.auth.tokens = vec![Secret::new("test-token-0123456789abcdef")];
        config.dispatcher.poll_interval = Duration::from_millis(50);
        // Far longer than the test may take: recovery must not wait for the lease to expire.
        config.dispatcher.lease = Duration::from_secs(60);
        config.destinations.push(DestinationConfig {
            name: "hook".into(),
            kind: DestinationKind::Webhook,
            url,
            secret: Some(Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
            allow_private: true,
            timeout: Some(Duration::from_secs(2)),
            headers: Default::default(),
            retry: Some(json!({
                "backoff": {"kind": "fixed", "delay": "50ms"},
                "jitter": "none",
                "max_attempts": 5,
            })),
            ..DestinationConfig::default()
        });
        let (state, _) = crate::server::build_state(config, ferrule_policy::clock::system())
            .await
            .unwrap();
        let tracker = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        // The real delivery, except that a message asking for it panics on its first attempt.
        super::spawn_with(
            state.clone(),
            tracker.clone(),
            hard_stop.clone(),
            |state, claimed: ferrule_store::Claimed, hard_stop| async move {
                if claimed.message.payload["panic"] == true && claimed.message.attempts == 1 {
                    panic!("injected panic for the test");
                }
                super::deliver(state, claimed, hard_stop).await;
            },
        );

        let panicky = state
            .store
            .enqueue(NewMessage::new("hook", json!({"panic": true})))
            .await
            .unwrap()
            .id();
        wait_until("the panic", || async {
            state.counters.panics.load(Ordering::Relaxed) == 1
        })
        .await;
        // Messages submitted after the panic are still delivered.
        let mut others = Vec::new();
        for n in 0..3 {
            let enqueued = state
                .store
                .enqueue(NewMessage::new("hook", json!({"n": n})))
                .await
                .unwrap();
            others.push(enqueued.id());
        }
        wait_until("every message delivered", || async {
            for id in others.iter().chain([&panicky]) {
                if status_of(&state, *id).await != Status::Delivered {
                    return false;
                }
            }
            true
        })
        .await;

        let detail = state.store.get(panicky).await.unwrap().unwrap();
        assert_eq!(detail.message.attempts, 2, "{detail:#?}");
        let retried = detail
            .events
            .iter()
            .find(|e| e.status == Status::Retrying)
            .unwrap_or_else(|| panic!("no retrying event: {detail:#?}"));
        assert!(
            retried
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("delivery task panicked: injected panic")),
            "{retried:#?}"
        );
        assert_eq!(state.counters.panics.load(Ordering::Relaxed), 1);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen.iter().filter(|id| **id == panicky.to_string()).count(),
            1,
            "the panicking attempt sent nothing; the retry delivered once: {seen:?}"
        );
        assert_eq!(seen.len(), 4, "{seen:?}");

        state.shutdown.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[test]
    fn wakeups_answer_what_fell_due_and_the_next_time_ahead() {
        use std::time::{SystemTime, UNIX_EPOCH};

        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        let wakeups = super::Wakeups::default();
        assert_eq!(wakeups.take_due(at(10)), (false, None));
        for s in [30, 20, 12, 20] {
            wakeups.at(at(s));
        }
        assert_eq!(wakeups.take_due(at(10)), (false, Some(at(12))));
        assert_eq!(wakeups.take_due(at(12)), (true, Some(at(20))), "due at now");
        assert_eq!(wakeups.take_due(at(25)), (true, Some(at(30))));
        assert_eq!(wakeups.take_due(at(25)), (false, Some(at(30))), "forgotten");
        assert_eq!(wakeups.take_due(SystemTime::now()), (true, None));
    }

    /// The run of attempts and the previous delay, read from a real store's timeline.
    #[tokio::test]
    async fn retry_history_counts_from_the_first_attempt_since_the_last_replay() {
        use ferrule_policy::Clock;
        use ferrule_store::{AttemptReport, OutcomeClass, ReplayTarget};

        use super::RetryHistory;

        let clock = ferrule_policy::ManualClock::with_system_time(std::time::SystemTime::now());
        // The store keeps milliseconds.
        let now = || {
            let since = clock
                .system_now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            std::time::UNIX_EPOCH + Duration::from_millis(since.as_millis() as u64)
        };
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.store.url = Secret::new(format!(
            "sqlite://{}",
            dir.path().join("ferrule.db").display()
        ));
        config.store.synchronous = ferrule_store::Synchronous::Normal;
        let store = crate::server::open_store(&config, clock.shared())
            .await
            .unwrap();
        let lease = Duration::from_secs(60);
        let history = |id| {
            let store = &store;
            async move { RetryHistory::of(&store.get(id).await.unwrap().unwrap().events) }
        };
        let id = store
            .enqueue(NewMessage::new("hook", json!({})))
            .await
            .unwrap()
            .id();
        clock.advance(Duration::from_secs(10));
        // A deferral before the first attempt does not start the run.
        let first = store.claim_due("w", 1, lease).await.unwrap().remove(0);
        store
            .defer(&first.lease, clock.system_now(), "bulkhead full")
            .await
            .unwrap();
        clock.advance(Duration::from_secs(1));
        let first = store.claim_due("w", 1, lease).await.unwrap().remove(0);
        let started = now();
        assert_eq!(
            history(id).await,
            RetryHistory {
                first_attempt_at: Some(started),
                previous_delay: None
            }
        );
        clock.advance(Duration::from_millis(200));
        let failure = || AttemptReport::failure(OutcomeClass::Transient, "500");
        store
            .reschedule(
                &first.lease,
                clock.system_now() + Duration::from_secs(5),
                failure(),
            )
            .await
            .unwrap();
        clock.advance(Duration::from_secs(5));
        let second = store.claim_due("w", 1, lease).await.unwrap().remove(0);
        assert_eq!(
            history(id).await,
            RetryHistory {
                first_attempt_at: Some(started),
                previous_delay: Some(Duration::from_secs(5))
            }
        );
        // Dead, then replayed an hour later: a new run with no previous delay.
        store.dead_letter(&second.lease, failure()).await.unwrap();
        clock.advance(Duration::from_secs(3600));
        store
            .replay(ReplayTarget::Ids(vec![id]), false)
            .await
            .unwrap();
        clock.advance(Duration::from_secs(2));
        store.claim_due("w", 1, lease).await.unwrap().remove(0);
        assert_eq!(
            history(id).await,
            RetryHistory {
                first_attempt_at: Some(now()),
                previous_delay: None
            }
        );
    }
}
