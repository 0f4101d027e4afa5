//! Alerts: what the relay reports about its own trouble, de-duplicated and rate-limited in
//! memory, then queued in the store as ordinary messages to the `[alerts]` destinations.
//!
//! An [`Alert`] has a kind, a subject (a destination, `dead-letters`, `store`, `serve`) and a
//! plain text. [`Alerts::raise`] passes it through a gate:
//!
//! - at most one alert of the same kind and subject per `min_interval`; the first one after
//!   it is held: queued at once, due when the interval has passed, and later ones until then
//!   are folded into it (not sent). So an outage that lasts is always reported, and one that
//!   flaps is reported once per interval;
//! - at most `max_per_minute` alerts overall; more are dropped (a held alert is queued already,
//!   so the cap counts it when it falls due but does not drop it);
//! - a "breaker closed" goes out only if its "breaker opened" did, and a held "opened" is
//!   cancelled in the store when the circuit closes first, so every alert about an outage has
//!   its pair.
//!
//! What passes becomes one message per alert destination, with an idempotency key made of the
//! kind, the subject and the `min_interval` bucket of the time it is sent (for a "closed", of
//! the time its "opened" was sent): a relay in a crash-restart loop, or several relays on one
//! PostgreSQL database, queue the same alert once per bucket. Because alerts are messages,
//! they survive restarts and are retried, deferred by the alert destination's own breaker and
//! dead-lettered like any other; a failing alert destination delays only its own messages.
//!
//! **Held alerts are durable.** A held alert is not kept in memory until it may go: it is
//! queued at once with `not_before` set to when its interval ends and the idempotency key of
//! that time's bucket, so it survives a restart and the dispatcher sends it when due; the gate
//! keeps only the slot (when the last one went, the held messages' ids, how many were folded).
//! Later alerts of the same window fold into it by being counted, not by rewriting the queued
//! payload: the store can only replace the payload of a message under a lease (fenced, for a
//! delivery in progress), and a queued message has none. The held text says so ("any more
//! like it until then are not sent separately"); for the alerts the gate holds (a repeated
//! outage, dead letters crossing again, a polling conflict) the first text says what matters.
//! A relay restarted within that bucket that raises the same alert again queues a duplicate
//! of the held one, which the key turns into nothing.
//!
//! What restarts still lose is the gate's memory: the next alert of a kind and subject goes at
//! once (unless it falls in the bucket of one queued before), and an outage's pairing, so an
//! outage that outlives a restart gets a second "opened" (unless within the same bucket), the
//! first "opened" never gets its "closed", and a held "opened" whose circuit closes after the
//! restart is still sent.
//!
//! Breaker transitions are seen by a [`SharedObserver`] on each destination's policies
//! ([`Alerts::observer`]). Observers run inline on a delivery task, so it only sends the alert
//! down a channel; the alerts task ([`run`]) raises it and sends held alerts when they fall due.
//! The alert destinations get no such observer: their breakers are logged, never alerted, so an
//! alert can never cause another. For the same reason an alert about a destination is not sent
//! to that destination.
//!
//! **The alert log.** Every raised alert, whatever became of it (queued, held, dropped, not
//! sent because no alert destination is configured, refused by the store), is then recorded
//! in the store's alert log ([`ferrule_store::alert`]) with a severity its kind implies and
//! the ids of the messages queued for it: `GET /v1/alerts`, `ferrule alerts` and the
//! dashboard's Alerts page list it, the same on every relay sharing the store and across
//! restarts, until the retention purge (`store.retention`) deletes it. The record is written
//! after the alert is queued and a failure is only logged: the log never holds an alert back.
//!
//! A failed start cannot use the store (it may be what failed): [`send_startup_failure`] sends
//! straight through the alert destinations' connectors, within [`STARTUP_FAILURE_TIMEOUT`].

mod alert;
mod gate;
mod startup;
mod target;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use ferrule_policy::event::{Event, Observer};
use ferrule_policy::{CircuitState, SharedClock, SharedObserver};
use ferrule_store::{AnyStore, Enqueued, MessageId, NewAlert, NewMessage, Store};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::AlertsConfig;
use crate::health::Depths;
use crate::telemetry::prometheus::{ALERTS, ALERTS_SUPPRESSED};

pub use self::alert::{Alert, AlertKind};
use self::gate::{Gate, Verdict};
pub use self::startup::{STARTUP_FAILURE_TIMEOUT, send_startup_failure};
use self::target::Target;

/// What became of a raised alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Raised {
    /// Queued for the alert destinations: `created` new messages (an idempotency duplicate of
    /// an alert already queued creates none).
    Queued {
        /// New messages stored.
        created: usize,
    },
    /// An alert of the same kind and subject went out less than `min_interval` ago: this one
    /// is held, queued now and due when the interval has passed, or, when one is held already,
    /// folded into that one and not sent.
    Held,
    /// Not sent: over `max_per_minute`, or a "closed" whose "opened" was never sent.
    Dropped,
    /// No alert destination is configured (or the only one is what the alert is about).
    Disabled,
    /// The store refused the alert messages (logged).
    Failed,
}

impl Raised {
    /// Every outcome's name, as the alert log stores it.
    pub const NAMES: [&'static str; 5] = ["queued", "held", "dropped", "disabled", "failed"];

    /// The outcome's name, as the alert log stores it: `queued`, `held`, `dropped`,
    /// `disabled` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Raised::Queued { .. } => "queued",
            Raised::Held => "held",
            Raised::Dropped => "dropped",
            Raised::Disabled => "disabled",
            Raised::Failed => "failed",
        }
    }
}

/// The relay's alerting: the configured targets, the gate, the dead-letter watch and the
/// channel observers and delivery tasks raise alerts through without waiting.
pub struct Alerts {
    targets: Vec<Target>,
    store: AnyStore,
    depths: Arc<Depths>,
    clock: SharedClock,
    relay: String,
    gate: Mutex<Gate>,
    dead_letters: Threshold,
    tx: mpsc::UnboundedSender<Alert>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Alert>>>,
    /// Poked when an alert is held, so the alerts task recomputes when to send it.
    held: Notify,
}

impl fmt::Debug for Alerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Alerts")
            .field("targets", &self.targets)
            .field("relay", &self.relay)
            .finish_non_exhaustive()
    }
}

impl Alerts {
    /// Alerting as `config` says, queuing into `store` (whose depth estimate `depths` counts
    /// the alert messages), timed by `clock`; `relay` names this process in webhook alerts.
    pub fn new(
        config: &AlertsConfig,
        store: AnyStore,
        depths: Arc<Depths>,
        clock: SharedClock,
        relay: String,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let targets = Target::all(config);
        if !targets.is_empty() {
            register_series();
        }
        Alerts {
            targets,
            store,
            depths,
            clock,
            relay,
            gate: Mutex::new(Gate::new(config.min_interval, config.max_per_minute)),
            dead_letters: Threshold::new(config.dead_letter_threshold),
            tx,
            rx: Mutex::new(Some(rx)),
            held: Notify::new(),
        }
    }

    /// Records `alert` in the store's alert log with what became of it and the messages
    /// queued for it: after the alert was queued, and a failure is only logged, so the log
    /// never delays or stops an alert on its way to its destinations.
    async fn record(&self, alert: Alert, raised: Raised, messages: Vec<MessageId>) {
        let kind = alert.kind;
        let entry = NewAlert {
            kind: kind.as_str().to_owned(),
            subject: alert.subject,
            severity: Some(kind.severity().to_owned()),
            message: alert.text,
            outcome: raised.as_str().to_owned(),
            messages,
        };
        if let Err(e) = self.store.record_alert(entry).await {
            tracing::warn!(kind = %kind, error = %e, "cannot record an alert in the alert log; it goes to its destinations all the same");
        }
    }

    /// Whether any alert destination is configured.
    pub fn enabled(&self) -> bool {
        !self.targets.is_empty()
    }

    /// Whether `destination` is one alerts go to.
    pub fn is_target(&self, destination: &str) -> bool {
        self.targets.iter().any(|t| t.destination() == destination)
    }

    /// De-duplicates and rate-limits `alert`, then queues one message per alert destination
    /// (except the one the alert is about), then records it in the store's alert log with
    /// what became of it. Never fails: a store error is logged.
    pub async fn raise(&self, alert: Alert) -> Raised {
        let kept = alert.clone();
        let (raised, messages) = self.raise_gated(alert).await;
        self.record(kept, raised, messages).await;
        raised
    }

    /// [`raise`](Self::raise) without the record: what became of `alert` and the messages
    /// this relay created for it.
    async fn raise_gated(&self, alert: Alert) -> (Raised, Vec<MessageId>) {
        if !self.enabled() {
            return (Raised::Disabled, Vec::new());
        }
        let kind = alert.kind;
        let (verdict, withdrawn) = {
            let mut gate = self.gate();
            let verdict = gate.admit(alert, self.clock.as_ref());
            (verdict, gate.take_withdrawn())
        };
        self.withdraw(withdrawn).await;
        match verdict {
            Verdict::Send(alert, key) => {
                let (raised, enqueued) = self.queue(alert, &key, None).await;
                (raised, created(&enqueued))
            }
            Verdict::Hold(alert, key, due) => {
                let subject = alert.subject.clone();
                tracing::info!(kind = %kind, due = %crate::time::rfc3339(due), "alert held: one of its kind went out recently; queued for when the interval ends");
                let (raised, enqueued) = self.queue(alert, &key, Some(due)).await;
                // Only the messages this relay created are its to withdraw: a duplicate is an
                // alert another relay (or this one before a restart) queued and answers for.
                let created = created(&enqueued);
                let messages = (raised != Raised::Failed).then_some(created.clone());
                let withdrawn = {
                    let mut gate = self.gate();
                    gate.held_queued(kind, &subject, messages);
                    gate.take_withdrawn()
                };
                self.withdraw(withdrawn).await;
                self.held.notify_one();
                let raised = match raised {
                    Raised::Queued { .. } => Raised::Held,
                    other => other,
                };
                (raised, created)
            }
            Verdict::Held => {
                suppressed(kind, "min_interval");
                tracing::info!(kind = %kind, "alert folded into the one held: one of its kind went out recently");
                (Raised::Held, Vec::new())
            }
            Verdict::Dropped(reason) => {
                suppressed(kind, reason);
                tracing::warn!(kind = %kind, reason, "alert dropped");
                (Raised::Dropped, Vec::new())
            }
        }
    }

    /// Hands `alert` to the alerts task, which raises it: for callers that must not wait on the
    /// store (policy observers, delivery tasks).
    pub fn raise_soon(&self, alert: Alert) {
        if self.enabled() && self.tx.send(alert).is_err() {
            tracing::debug!("the alerts task has stopped; alert not raised");
        }
    }

    /// An observer for `destination`'s policies that raises "opened" and "closed" alerts for
    /// its breaker; `None` when alerts are off or `destination` is an alert destination (its
    /// breaker is only logged, so alerts cannot loop).
    pub fn observer(&self, destination: &str) -> Option<SharedObserver> {
        if !self.enabled() || self.is_target(destination) {
            return None;
        }
        Some(Arc::new(BreakerWatch {
            destination: destination.to_owned(),
            clock: self.clock.clone(),
            outage_since: Mutex::new(None),
            tx: self.tx.clone(),
        }))
    }

    /// Raises a dead-letter alert when `depth` is above the threshold for the first time since
    /// it was last at or below it.
    pub async fn watch_dead_letters(&self, depth: u64) {
        if self.enabled() && self.dead_letters.crossed(depth) {
            let alert =
                Alert::dead_letters(depth, self.dead_letters.limit, self.clock.system_now());
            self.raise(alert).await;
        }
    }

    /// Counts the held alerts that fell due as sent (the store sends their messages).
    fn promote_due(&self) {
        let promoted = self.gate().promote(self.clock.as_ref());
        for (kind, subject, folded) in promoted {
            tracing::info!(kind = %kind, subject = %subject, folded, "held alert fell due");
        }
    }

    /// Cancels the queued messages of held alerts that must not go after all.
    async fn withdraw(&self, messages: Vec<MessageId>) {
        for id in messages {
            let reason = Some("alert withdrawn: its outage ended before it was due".to_owned());
            match self.store.cancel(id, reason).await {
                Ok(()) => tracing::info!(%id, "held alert withdrawn"),
                Err(e) => tracing::warn!(%id, error = %e, "cannot withdraw a held alert"),
            }
        }
    }

    /// Queues `alert` with idempotency key `key`, due at `due` (now if `None`), for every
    /// target but the one it is about; answers with what the store did with each message.
    async fn queue(
        &self,
        alert: Alert,
        key: &str,
        due: Option<SystemTime>,
    ) -> (Raised, Vec<Enqueued>) {
        let messages: Vec<NewMessage> = self
            .targets
            .iter()
            .filter(|t| !(alert.kind.about_a_destination() && t.destination() == alert.subject))
            .map(|t| {
                let message = t.message(&alert, &self.relay, key);
                match due {
                    Some(at) => message.not_before(at),
                    None => message,
                }
            })
            .collect();
        if messages.is_empty() {
            tracing::warn!(kind = %alert.kind, subject = %alert.subject, text = %alert.text, "alert about the only alert destination; logged only");
            return (Raised::Disabled, Vec::new());
        }
        match self.store.enqueue_batch(messages).await {
            Ok(enqueued) => {
                let created = enqueued
                    .iter()
                    .filter(|e| matches!(e, Enqueued::Created(_)))
                    .count();
                // A held alert waits for its interval's end, like a scheduled submission.
                let held = due.is_some_and(|at| at > self.clock.system_now());
                self.depths.added(created as u64, held);
                metrics::counter!(ALERTS.name, "kind" => alert.kind.as_str()).increment(1);
                tracing::warn!(kind = %alert.kind, subject = %alert.subject, text = %alert.text, created, "alert queued");
                (Raised::Queued { created }, enqueued)
            }
            Err(e) => {
                suppressed(alert.kind, "store_error");
                tracing::error!(kind = %alert.kind, subject = %alert.subject, text = %alert.text, error = %e, "cannot queue an alert");
                (Raised::Failed, Vec::new())
            }
        }
    }

    fn gate(&self) -> MutexGuard<'_, Gate> {
        // The gate's methods do not panic midway; a poisoned lock still holds a usable gate.
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The messages the store created of `enqueued` (a duplicate is an alert another relay, or
/// this one before a restart, queued and answers for).
fn created(enqueued: &[Enqueued]) -> Vec<MessageId> {
    enqueued
        .iter()
        .filter_map(|e| match e {
            Enqueued::Created(id) => Some(*id),
            Enqueued::Duplicate(_) => None,
        })
        .collect()
}

/// A level that alerts once when a value goes above it and re-arms when the value comes back
/// to it or below.
#[derive(Debug)]
struct Threshold {
    limit: u64,
    armed: AtomicBool,
}

impl Threshold {
    fn new(limit: u64) -> Self {
        Threshold {
            limit,
            armed: AtomicBool::new(true),
        }
    }

    /// Whether `value` just went above the limit (true once per crossing).
    fn crossed(&self, value: u64) -> bool {
        if value <= self.limit {
            self.armed.store(true, Ordering::Relaxed);
            return false;
        }
        self.armed.swap(false, Ordering::Relaxed)
    }
}

/// Why an alert was not sent (now, or at all), as `ferrule_alerts_suppressed_total` says it.
const SUPPRESSED_REASONS: [&str; 4] = ["min_interval", "rate_limit", "not_opened", "store_error"];

/// Registers the alert counters of every kind (and reason) at their current value, so they are
/// exported from the start.
fn register_series() {
    for kind in AlertKind::ALL {
        metrics::counter!(ALERTS.name, "kind" => kind.as_str()).increment(0);
        for reason in SUPPRESSED_REASONS {
            metrics::counter!(ALERTS_SUPPRESSED.name, "kind" => kind.as_str(), "reason" => reason)
                .increment(0);
        }
    }
}

/// Counts an alert that was not sent (now, or at all).
fn suppressed(kind: AlertKind, reason: &'static str) {
    metrics::counter!(ALERTS_SUPPRESSED.name, "kind" => kind.as_str(), "reason" => reason)
        .increment(1);
}

/// Turns one destination's breaker transitions into outage alerts: Closed → Open starts an
/// outage and raises "opened"; re-opening from half-open during it raises nothing; reaching
/// Closed again (a probe succeeded, or an operator reset) ends it and raises "closed" with its
/// length. Forced open from closed (an operator, or a rejected token, which has its own alert)
/// starts no outage.
#[derive(Debug)]
struct BreakerWatch {
    destination: String,
    clock: SharedClock,
    /// When the current outage began (monotonic, for its length).
    outage_since: Mutex<Option<Instant>>,
    tx: mpsc::UnboundedSender<Alert>,
}

impl Observer for BreakerWatch {
    fn on_event(&self, event: &Event<'_>) {
        let Event::BreakerTransition { from, to, .. } = *event else {
            return;
        };
        // Following another relay's shared circuit: that relay alerts.
        if crate::destination::shared_breaker::following() {
            return;
        }
        let mut since = self.outage_since.lock().unwrap_or_else(|e| e.into_inner());
        let alert = match (from, to) {
            (CircuitState::Closed, CircuitState::Open) if since.is_none() => {
                *since = Some(self.clock.now());
                Alert::breaker_opened(&self.destination, self.clock.system_now())
            }
            (_, CircuitState::Closed) => match since.take() {
                Some(start) => Alert::breaker_closed(
                    &self.destination,
                    self.clock.now().saturating_duration_since(start),
                    self.clock.system_now(),
                ),
                None => return,
            },
            _ => return,
        };
        drop(since);
        // Unbounded: transitions are few (each open lasts `open_for`), and dropping a "closed"
        // would leave its outage open in the gate.
        let _ = self.tx.send(alert);
    }
}

/// The alerts task: raises what observers and delivery tasks sent, and counts held alerts as
/// sent when they fall due, until `stop` is cancelled; then raises what is still in the
/// channel.
pub async fn run(alerts: &Alerts, stop: CancellationToken) {
    let taken = alerts.rx.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(mut rx) = taken else {
        return;
    };
    let clock = alerts.clock.clone();
    loop {
        let next = alerts.gate().next_due();
        let due = async {
            match next {
                Some(at) => clock.sleep(at.saturating_duration_since(clock.now())).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(alert) = rx.recv() => {
                alerts.raise(alert).await;
            }
            _ = alerts.held.notified() => {}
            _ = due => {}
        }
        alerts.promote_due();
    }
    while let Ok(alert) = rx.try_recv() {
        alerts.raise(alert).await;
    }
}
