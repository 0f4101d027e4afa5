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
//! A failed start cannot use the store (it may be what failed): [`send_startup_failure`] sends
//! straight through the alert destinations' connectors, within [`STARTUP_FAILURE_TIMEOUT`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrule_connectors::telegram::{ChatId, TelegramConnector};
use ferrule_connectors::webhook::WebhookConnector;
use ferrule_connectors::{AnyConnector, Connector, Delivery};
use ferrule_policy::event::{Event, Observer};
use ferrule_policy::{CircuitState, Clock, SharedClock, SharedObserver};
use ferrule_store::{AnyStore, Enqueued, MessageId, NewMessage, Store};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::{AlertsConfig, Config, ConnectorConfig};
use crate::state::{AppState, Depths};

/// How long a failed start waits for its alert to be sent before the process exits.
pub const STARTUP_FAILURE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest alert text kept; longer texts are cut (a Telegram message holds 4096).
const MAX_TEXT_CHARS: usize = 1000;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum AlertKind {
    /// A destination's circuit opened: an outage began.
    BreakerOpened,
    /// A destination's circuit closed again after an outage that was alerted.
    BreakerClosed,
    /// The dead-letter depth went above `dead_letter_threshold`.
    DeadLetterThreshold,
    /// Start-up found deliveries a previous relay left unfinished.
    StartupRecovery,
    /// The relay could not start.
    StartupFailure,
    /// Telegram rejected a bot's token (401).
    TelegramUnauthorized,
    /// Another client is polling `getUpdates` for the same bot (409).
    PollingConflict,
}

impl AlertKind {
    /// The stable name sent as the webhook's `type` and used as a metrics label, e.g.
    /// `breaker.opened`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::BreakerOpened => "breaker.opened",
            AlertKind::BreakerClosed => "breaker.closed",
            AlertKind::DeadLetterThreshold => "dead_letters.threshold",
            AlertKind::StartupRecovery => "startup.recovery",
            AlertKind::StartupFailure => "startup.failure",
            AlertKind::TelegramUnauthorized => "telegram.unauthorized",
            AlertKind::PollingConflict => "telegram.polling_conflict",
        }
    }

    /// Whether the subject of alerts of this kind is a destination.
    fn about_a_destination(self) -> bool {
        matches!(
            self,
            AlertKind::BreakerOpened
                | AlertKind::BreakerClosed
                | AlertKind::TelegramUnauthorized
                | AlertKind::PollingConflict
        )
    }

    /// A short human title, the first line of a Telegram alert.
    fn title(self) -> &'static str {
        match self {
            AlertKind::BreakerOpened => "circuit opened",
            AlertKind::BreakerClosed => "circuit closed",
            AlertKind::DeadLetterThreshold => "dead letters piling up",
            AlertKind::StartupRecovery => "recovered unfinished deliveries",
            AlertKind::StartupFailure => "start-up failed",
            AlertKind::TelegramUnauthorized => "Telegram rejected the bot token",
            AlertKind::PollingConflict => "Telegram polling conflict",
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// What it is about.
    pub kind: AlertKind,
    /// Which thing: a destination name, `dead-letters`, `store` or `serve`. Alerts of one kind
    /// and subject are de-duplicated together.
    pub subject: String,
    /// A plain-text explanation for a person (at most 1000 characters and an ellipsis).
    pub text: String,
    /// When it was raised.
    pub at: SystemTime,
}

impl Alert {
    /// An alert; `text` is cut to 1000 characters.
    pub fn new(
        kind: AlertKind,
        subject: impl Into<String>,
        text: impl Into<String>,
        at: SystemTime,
    ) -> Self {
        let mut text = text.into();
        if let Some((cut, _)) = text.char_indices().nth(MAX_TEXT_CHARS) {
            text.truncate(cut);
            text.push('…');
        }
        Alert {
            kind,
            subject: subject.into(),
            text,
            at,
        }
    }

    /// The circuit of `destination` opened.
    pub fn breaker_opened(destination: &str, at: SystemTime) -> Self {
        Alert::new(
            AlertKind::BreakerOpened,
            destination,
            format!(
                "The circuit breaker of destination `{destination}` opened: its messages wait \
                 in the queue until it recovers."
            ),
            at,
        )
    }

    /// The circuit of `destination` closed after an outage of `outage`.
    pub fn breaker_closed(destination: &str, outage: Duration, at: SystemTime) -> Self {
        let outage = humantime::format_duration(Duration::from_secs(outage.as_secs()));
        Alert::new(
            AlertKind::BreakerClosed,
            destination,
            format!(
                "The circuit breaker of destination `{destination}` closed after {outage}: \
                 deliveries resumed."
            ),
            at,
        )
    }

    /// `depth` messages are dead, more than `threshold`.
    pub fn dead_letters(depth: u64, threshold: u64, at: SystemTime) -> Self {
        Alert::new(
            AlertKind::DeadLetterThreshold,
            "dead-letters",
            format!(
                "{depth} messages are dead-lettered, more than the alert threshold of \
                 {threshold}. See them with `ferrule dlq list`; replay them with `ferrule dlq \
                 replay` once the cause is fixed."
            ),
            at,
        )
    }

    /// Start-up gave `count` unfinished deliveries back to the queue.
    pub fn startup_recovery(count: u64, at: SystemTime) -> Self {
        Alert::new(
            AlertKind::StartupRecovery,
            "store",
            format!(
                "Start-up found {count} deliveries left unfinished by a relay that stopped \
                 without finishing them (a crash or kill?); they are queued again."
            ),
            at,
        )
    }

    /// The relay could not start because of `error` (its whole cause chain).
    pub fn startup_failure(error: &dyn std::error::Error, at: SystemTime) -> Self {
        let mut text = format!("The relay could not start: {error}");
        let mut source = error.source();
        while let Some(cause) = source {
            // Some errors already show their cause in their own message.
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(&format!(": {cause_text}"));
            }
            source = cause.source();
        }
        Alert::new(AlertKind::StartupFailure, "serve", text, at)
    }

    /// Telegram answered 401 to a send of `destination`.
    pub fn telegram_unauthorized(destination: &str, at: SystemTime) -> Self {
        Alert::new(
            AlertKind::TelegramUnauthorized,
            destination,
            format!(
                "Telegram rejected the bot token of destination `{destination}` (401). Its \
                 messages wait in the queue: its circuit is forced open until the relay \
                 restarts or an operator resets it (POST /v1/breakers/{destination}/reset)."
            ),
            at,
        )
    }

    /// Another client is polling `getUpdates` for the bot of `destination` (Telegram answered
    /// 409 Conflict).
    pub fn polling_conflict(destination: &str, at: SystemTime) -> Self {
        Alert::new(
            AlertKind::PollingConflict,
            destination,
            format!(
                "Another client is polling Telegram for updates of the bot of destination \
                 `{destination}` (409 Conflict): only one may. Stop the other relay or client, \
                 or remove the bot's webhook."
            ),
            at,
        )
    }
}

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

/// Where alerts go.
#[derive(Debug, Clone)]
enum Target {
    /// A chat of a Telegram destination.
    Telegram {
        /// The destination name.
        destination: String,
        /// The chat.
        chat: ChatId,
    },
    /// A webhook destination.
    Webhook {
        /// The destination name.
        destination: String,
    },
}

impl Target {
    /// The targets `config` names; `config` has been validated.
    fn all(config: &AlertsConfig) -> Vec<Target> {
        let mut targets = Vec::new();
        if let Some(t) = &config.telegram
            && let Ok(chat) = t.chat_id.parse()
        {
            targets.push(Target::Telegram {
                destination: t.destination.trim().to_owned(),
                chat,
            });
        }
        if let Some(w) = &config.webhook {
            targets.push(Target::Webhook {
                destination: w.trim().to_owned(),
            });
        }
        targets
    }

    fn destination(&self) -> &str {
        match self {
            Target::Telegram { destination, .. } | Target::Webhook { destination } => destination,
        }
    }

    /// The message payload for `alert`: a plain-text `sendMessage` or the webhook's JSON
    /// object.
    fn payload(&self, alert: &Alert, relay: &str) -> Value {
        match self {
            Target::Telegram { chat, .. } => {
                let chat_id = match chat {
                    ChatId::Id(id) => json!(id),
                    ChatId::Username(name) => json!(name),
                };
                json!({
                    "chat_id": chat_id,
                    "text": format!("ferrule: {} ({})\n{}", alert.kind.title(), alert.subject, alert.text),
                })
            }
            Target::Webhook { .. } => json!({
                "type": alert.kind.as_str(),
                "subject": alert.subject,
                "text": alert.text,
                "at": crate::time::rfc3339(alert.at),
                "relay": relay,
            }),
        }
    }

    /// The queued message for `alert`, with idempotency key `key`.
    fn message(&self, alert: &Alert, relay: &str, key: &str) -> NewMessage {
        let message =
            NewMessage::new(self.destination(), self.payload(alert, relay)).idempotency_key(key);
        match self {
            // The chat orders its messages, as for a submitted Telegram message.
            Target::Telegram { chat, .. } => message.ordering_key(chat.to_string()),
            Target::Webhook { .. } => message,
        }
    }
}

/// `alert:{kind}:{subject}:{bucket}`, where the bucket is `at` in units of `min_interval`
/// since the epoch; see [`Gate::key`].
fn idempotency_key(alert: &Alert, now: SystemTime, min_interval: Duration) -> String {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let bucket = secs / min_interval.as_secs().max(1);
    format!("alert:{}:{}:{bucket}", alert.kind, alert.subject)
}

/// What the [`Gate`] decides for one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Send it now, with this idempotency key.
    Send(Alert, String),
    /// Held: queue it now with this idempotency key, due at this time, when its kind and
    /// subject may alert again; then tell the gate its messages ([`Gate::held_queued`]).
    Hold(Alert, String, SystemTime),
    /// Folded into the alert already held for its kind and subject: not sent.
    Held,
    /// Not sent; the reason is a metrics label.
    Dropped(&'static str),
}

/// One kind and subject's recent history.
#[derive(Debug)]
struct Slot {
    /// When the last alert of this kind and subject was sent (or fell due, if held).
    last: Instant,
    /// The alert held since, if any.
    held: Option<Held>,
}

/// An alert the gate held back: queued already, due when its slot's interval ends.
#[derive(Debug)]
struct Held {
    /// When it falls due, on the wall clock: its messages' `not_before`.
    due: SystemTime,
    /// How many alerts it stands for (1: only itself).
    folded: u32,
    /// Its queued messages, cancelled if a "closed" ends its outage first.
    messages: Vec<MessageId>,
}

/// De-duplication and rate limiting: a pure state machine over a monotonic `now`.
#[derive(Debug)]
struct Gate {
    min_interval: Duration,
    max_per_minute: u32,
    /// Kinds and subjects that alerted within `min_interval`, or hold an alert.
    slots: BTreeMap<(AlertKind, String), Slot>,
    /// When each alert of the last minute was sent.
    sent: VecDeque<Instant>,
    /// Destinations whose "opened" was sent and whose "closed" was not yet, with when the
    /// "opened" was sent (the "closed" is keyed by its outage, not by when it ends).
    open: HashMap<String, SystemTime>,
    /// Queued messages of held alerts that must not go after all, for the caller to cancel.
    withdrawn: Vec<MessageId>,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Gate {
    fn new(min_interval: Duration, max_per_minute: u32) -> Self {
        Gate {
            min_interval,
            max_per_minute,
            slots: BTreeMap::new(),
            sent: VecDeque::new(),
            open: HashMap::new(),
            withdrawn: Vec::new(),
        }
    }

    /// Decides what to do with `alert`, raised now on `clock`. Afterwards, the caller cancels
    /// what [`take_withdrawn`](Self::take_withdrawn) returns.
    fn admit(&mut self, alert: Alert, clock: &dyn Clock) -> Verdict {
        let now = clock.now();
        self.promote(clock);
        if alert.kind == AlertKind::BreakerClosed {
            // The outage ended before its "opened" went out: neither goes.
            let key = (AlertKind::BreakerOpened, alert.subject.clone());
            if let Some(held) = self.slots.get_mut(&key).and_then(|s| s.held.take()) {
                self.withdrawn.extend(held.messages);
            }
            let Some(opened_at) = self.open.remove(&alert.subject) else {
                return Verdict::Dropped("not_opened");
            };
            // Its "opened" was sent, so it goes whatever the limits say: at most one per
            // "opened", which the limits already counted.
            self.sent.push_back(now);
            let key = self.key(&alert, opened_at);
            return Verdict::Send(alert, key);
        }
        let key = (alert.kind, alert.subject.clone());
        if let Some(slot) = self.slots.get_mut(&key) {
            if let Some(held) = &mut slot.held {
                held.folded += 1;
                return Verdict::Held;
            }
            let due =
                clock.system_now() + (slot.last + self.min_interval).saturating_duration_since(now);
            slot.held = Some(Held {
                due,
                folded: 1,
                messages: Vec::new(),
            });
            let mut alert = alert;
            alert.text.push_str(&format!(
                " (Held back until {}: an alert like it went out less than {} before. Any more \
                 like it until then are not sent separately.)",
                crate::time::rfc3339(due),
                humantime::format_duration(self.min_interval),
            ));
            let key = self.key(&alert, due);
            return Verdict::Hold(alert, key, due);
        }
        if self.full() {
            return Verdict::Dropped("rate_limit");
        }
        self.slots.insert(
            key,
            Slot {
                last: now,
                held: None,
            },
        );
        let key = self.sent_now(&alert, clock);
        Verdict::Send(alert, key)
    }

    /// Counts `alert` as sent now and returns its idempotency key.
    fn sent_now(&mut self, alert: &Alert, clock: &dyn Clock) -> String {
        self.sent.push_back(clock.now());
        let at = clock.system_now();
        if alert.kind == AlertKind::BreakerOpened {
            self.open.insert(alert.subject.clone(), at);
        }
        self.key(alert, at)
    }

    /// The idempotency key of `alert` sent at `at`: kind, subject and the `min_interval`
    /// bucket of `at`.
    ///
    /// Two alerts of one kind and subject that pass the gate are at least `min_interval` apart
    /// (a "closed" is keyed by the time of its "opened"), so they fall in different buckets;
    /// the same alert raised again by a restarted relay (or another relay on the same database)
    /// within the bucket is a duplicate.
    fn key(&self, alert: &Alert, at: SystemTime) -> String {
        idempotency_key(alert, at, self.min_interval)
    }

    /// Records the messages queued for the alert held for `kind` and `subject`; `None` when
    /// the store refused them: the gate forgets that it is held, so the next alert is held in
    /// its place.
    fn held_queued(&mut self, kind: AlertKind, subject: &str, messages: Option<Vec<MessageId>>) {
        let Some(slot) = self.slots.get_mut(&(kind, subject.to_owned())) else {
            return;
        };
        match (&mut slot.held, messages) {
            (Some(_), None) => slot.held = None,
            (Some(held), Some(messages)) => held.messages = messages,
            // Withdrawn while it was being queued: cancel it too.
            (None, messages) => self.withdrawn.extend(messages.unwrap_or_default()),
        }
    }

    /// The queued messages of held alerts withdrawn since the last call, to cancel.
    fn take_withdrawn(&mut self) -> Vec<MessageId> {
        std::mem::take(&mut self.withdrawn)
    }

    /// Counts the held alerts whose interval has passed by now on `clock` as sent (their
    /// messages fall due in the store then) and returns each one's kind, subject and how many
    /// alerts were folded into it.
    fn promote(&mut self, clock: &dyn Clock) -> Vec<(AlertKind, String, u32)> {
        let now = clock.now();
        self.expire(now);
        let mut out = Vec::new();
        for ((kind, subject), slot) in &mut self.slots {
            let due = slot.last + self.min_interval;
            if now < due {
                continue;
            }
            let Some(held) = slot.held.take() else {
                continue;
            };
            slot.last = due;
            self.sent.push_back(now);
            if *kind == AlertKind::BreakerOpened {
                self.open.insert(subject.clone(), held.due);
            }
            out.push((*kind, subject.clone(), held.folded));
        }
        out
    }

    /// When [`promote`](Self::promote) may next count something, if anything is held.
    fn next_due(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter(|s| s.held.is_some())
            .map(|s| s.last + self.min_interval)
            .min()
    }

    fn full(&self) -> bool {
        self.sent.len() >= self.max_per_minute as usize
    }

    /// Forgets sends older than a minute and slots that no longer restrict anything.
    fn expire(&mut self, now: Instant) {
        while self.sent.front().is_some_and(|&t| t + MINUTE <= now) {
            self.sent.pop_front();
        }
        let interval = self.min_interval;
        self.slots
            .retain(|_, s| s.held.is_some() || now < s.last + interval);
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
        Alerts {
            targets: Target::all(config),
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

    /// Whether any alert destination is configured.
    pub fn enabled(&self) -> bool {
        !self.targets.is_empty()
    }

    /// Whether `destination` is one alerts go to.
    pub fn is_target(&self, destination: &str) -> bool {
        self.targets.iter().any(|t| t.destination() == destination)
    }

    /// De-duplicates and rate-limits `alert`, then queues one message per alert destination
    /// (except the one the alert is about). Never fails: a store error is logged.
    pub async fn raise(&self, alert: Alert) -> Raised {
        if !self.enabled() {
            return Raised::Disabled;
        }
        let kind = alert.kind;
        let (verdict, withdrawn) = {
            let mut gate = self.gate();
            let verdict = gate.admit(alert, self.clock.as_ref());
            (verdict, gate.take_withdrawn())
        };
        self.withdraw(withdrawn).await;
        match verdict {
            Verdict::Send(alert, key) => self.queue(alert, &key, None).await.0,
            Verdict::Hold(alert, key, due) => {
                let subject = alert.subject.clone();
                tracing::info!(kind = %kind, due = %crate::time::rfc3339(due), "alert held: one of its kind went out recently; queued for when the interval ends");
                let (raised, enqueued) = self.queue(alert, &key, Some(due)).await;
                // Only the messages this relay created are its to withdraw: a duplicate is an
                // alert another relay (or this one before a restart) queued and answers for.
                let created = enqueued
                    .iter()
                    .filter_map(|e| match e {
                        Enqueued::Created(id) => Some(*id),
                        Enqueued::Duplicate(_) => None,
                    })
                    .collect();
                let messages = (raised != Raised::Failed).then_some(created);
                let withdrawn = {
                    let mut gate = self.gate();
                    gate.held_queued(kind, &subject, messages);
                    gate.take_withdrawn()
                };
                self.withdraw(withdrawn).await;
                self.held.notify_one();
                match raised {
                    Raised::Queued { .. } => Raised::Held,
                    other => other,
                }
            }
            Verdict::Held => {
                suppressed(kind, "min_interval");
                tracing::info!(kind = %kind, "alert folded into the one held: one of its kind went out recently");
                Raised::Held
            }
            Verdict::Dropped(reason) => {
                suppressed(kind, reason);
                tracing::warn!(kind = %kind, reason, "alert dropped");
                Raised::Dropped
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
                self.depths
                    .submitted_since
                    .fetch_add(created as u64, Ordering::AcqRel);
                metrics::counter!("ferrule_alerts_total", "kind" => alert.kind.as_str())
                    .increment(1);
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

/// Counts an alert that was not sent (now, or at all).
fn suppressed(kind: AlertKind, reason: &'static str) {
    metrics::counter!("ferrule_alerts_suppressed_total", "kind" => kind.as_str(), "reason" => reason)
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
pub async fn run(state: AppState, stop: CancellationToken) {
    let alerts = &state.alerts;
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

/// Sends a start-up failure alert straight through the alert destinations' connectors (the
/// store may be what failed), waiting at most [`STARTUP_FAILURE_TIMEOUT`]. Logs the outcome.
pub async fn send_startup_failure(config: &Config, error: &crate::Error) {
    let targets = Target::all(&config.alerts);
    if targets.is_empty() {
        return;
    }
    let clock = ferrule_policy::clock::system();
    let alert = Alert::startup_failure(error, clock.system_now());
    let relay = format!("ferrule-{}", std::process::id());
    // A receiver that de-duplicates on `webhook-id` drops the repeats of a crash-restart loop.
    let id = idempotency_key(&alert, alert.at, config.alerts.min_interval);
    let Ok(destinations) = config.destinations() else {
        tracing::warn!("the destinations cannot be resolved; start-up failure alert not sent");
        return;
    };
    let sends = targets.iter().map(|target| {
        let resolved = destinations
            .iter()
            .find(|d| d.name == target.destination());
        let connector = resolved.and_then(|d| match &d.connector {
            ConnectorConfig::Webhook(c) => WebhookConnector::new(c.clone(), clock.clone())
                .ok()
                .map(AnyConnector::from),
            ConnectorConfig::Telegram(c) => TelegramConnector::new(c.clone(), clock.clone())
                .ok()
                .map(AnyConnector::from),
            ConnectorConfig::Smtp(_) => None,
        });
        let payload = target.payload(&alert, &relay).to_string();
        let destination = target.destination().to_owned();
        let id = id.clone();
        async move {
            let Some(connector) = connector else {
                tracing::warn!(%destination, "cannot build the alert destination; start-up failure alert not sent there");
                return;
            };
            let delivery = Delivery {
                message_id: &id,
                destination: &destination,
                payload: &payload,
                attempt: 1,
            };
            let result = connector.deliver(&delivery).await;
            if result.outcome.is_success() {
                tracing::info!(%destination, "start-up failure alert sent");
            } else {
                tracing::warn!(%destination, detail = %result.detail, "start-up failure alert not delivered");
            }
        }
    });
    let all = futures_util::future::join_all(sends);
    if tokio::time::timeout(STARTUP_FAILURE_TIMEOUT, all)
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?STARTUP_FAILURE_TIMEOUT, "start-up failure alert timed out");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrule_policy::ManualClock;
    use ferrule_policy::breaker::{BreakerConfig, CircuitBreaker, Window};
    use ferrule_policy::{Context, Outcome};

    const INTERVAL: Duration = Duration::from_secs(300);

    fn alert(kind: AlertKind, subject: &str) -> Alert {
        Alert::new(kind, subject, format!("{kind} {subject}"), UNIX_EPOCH)
    }

    fn sent(verdict: Verdict) -> bool {
        matches!(verdict, Verdict::Send(..))
    }

    /// A message id for a held alert's queued message.
    fn id(n: u128) -> MessageId {
        MessageId::from_ulid(ulid::Ulid(n))
    }

    /// The held alert, its key and due time of a [`Verdict::Hold`].
    fn hold(verdict: Verdict) -> (Alert, String, SystemTime) {
        match verdict {
            Verdict::Hold(alert, key, due) => (alert, key, due),
            other => panic!("not held: {other:?}"),
        }
    }

    #[test]
    fn one_alert_per_kind_and_subject_per_interval_the_next_held_the_rest_folded() {
        let clock = ManualClock::new(); // wall clock 2026-01-01T00:00:00Z
        let mut gate = Gate::new(INTERVAL, 20);
        let dlq = || alert(AlertKind::DeadLetterThreshold, "dead-letters");
        assert!(sent(gate.admit(dlq(), &clock)));
        clock.advance(Duration::from_secs(10));
        // The next is held: queued now, due when the interval since the first ends.
        let (held, key, due) = hold(gate.admit(dlq(), &clock));
        assert_eq!(due, clock.system_now() + INTERVAL - Duration::from_secs(10));
        assert_eq!(key, idempotency_key(&held, due, INTERVAL));
        assert_eq!(key, "alert:dead_letters.threshold:dead-letters:5890753");
        assert_eq!(
            held.text,
            "dead_letters.threshold dead-letters (Held back until 2026-01-01T00:05:00.000Z: an alert \
             like it went out less than 5m before. Any more like it until then are not sent \
             separately.)"
        );
        gate.held_queued(
            AlertKind::DeadLetterThreshold,
            "dead-letters",
            Some(vec![id(1)]),
        );
        // Another subject or kind is not held back.
        assert!(sent(
            gate.admit(alert(AlertKind::BreakerOpened, "hook"), &clock)
        ));
        clock.advance(Duration::from_secs(10));
        assert_eq!(gate.admit(dlq(), &clock), Verdict::Held, "folded");
        assert_eq!(
            gate.next_due(),
            Some(clock.now() + INTERVAL - Duration::from_secs(20))
        );
        clock.advance(INTERVAL - Duration::from_secs(21));
        assert!(gate.promote(&clock).is_empty(), "one second early");
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            gate.promote(&clock),
            [(AlertKind::DeadLetterThreshold, "dead-letters".to_owned(), 2)]
        );
        assert_eq!(gate.next_due(), None);
        assert!(gate.take_withdrawn().is_empty());
        // The held one counts as sent when due: the next is held for a whole interval.
        let (_, next_key, next_due) = hold(gate.admit(dlq(), &clock));
        assert_eq!(next_due, due + INTERVAL);
        assert_ne!(next_key, key);
        clock.advance(INTERVAL);
        assert_eq!(gate.promote(&clock).len(), 1);
        // A quiet interval later, an alert goes at once.
        clock.advance(INTERVAL);
        assert!(sent(gate.admit(dlq(), &clock)));
    }

    #[test]
    fn a_held_alert_the_store_refused_is_held_again_by_the_next() {
        let clock = ManualClock::new();
        let mut gate = Gate::new(INTERVAL, 20);
        let dlq = || alert(AlertKind::DeadLetterThreshold, "dead-letters");
        assert!(sent(gate.admit(dlq(), &clock)));
        hold(gate.admit(dlq(), &clock));
        gate.held_queued(AlertKind::DeadLetterThreshold, "dead-letters", None);
        hold(gate.admit(dlq(), &clock));
    }

    #[test]
    fn closed_goes_only_after_its_opened_and_a_held_opened_is_withdrawn_by_closing() {
        let clock = ManualClock::new();
        let mut gate = Gate::new(INTERVAL, 20);
        let opened = || alert(AlertKind::BreakerOpened, "hook");
        let closed = || alert(AlertKind::BreakerClosed, "hook");
        assert_eq!(gate.admit(closed(), &clock), Verdict::Dropped("not_opened"));
        assert!(sent(gate.admit(opened(), &clock)));
        clock.advance(Duration::from_secs(30));
        assert!(sent(gate.admit(closed(), &clock)));
        // It flaps: opened again within the interval is held, and closing withdraws it.
        clock.advance(Duration::from_secs(30));
        hold(gate.admit(opened(), &clock));
        gate.held_queued(AlertKind::BreakerOpened, "hook", Some(vec![id(1), id(2)]));
        clock.advance(Duration::from_secs(30));
        assert_eq!(gate.admit(closed(), &clock), Verdict::Dropped("not_opened"));
        assert_eq!(gate.take_withdrawn(), [id(1), id(2)]);
        assert_eq!(gate.next_due(), None);
        clock.advance(INTERVAL);
        assert!(gate.promote(&clock).is_empty());
        // An outage that outlasts the interval is reported when the interval has passed.
        assert!(sent(gate.admit(opened(), &clock)));
        assert!(sent(gate.admit(closed(), &clock)));
        clock.advance(Duration::from_secs(10));
        let (_, _, due) = hold(gate.admit(opened(), &clock));
        gate.held_queued(AlertKind::BreakerOpened, "hook", Some(vec![id(3)]));
        clock.advance(INTERVAL);
        assert_eq!(gate.promote(&clock).len(), 1);
        // Its "closed" goes too, keyed by when the held "opened" fell due.
        match gate.admit(closed(), &clock) {
            Verdict::Send(alert, key) => assert_eq!(key, idempotency_key(&alert, due, INTERVAL)),
            other => panic!("{other:?}"),
        }
        assert!(gate.take_withdrawn().is_empty());
        // Withdrawn while it was being queued: its messages are withdrawn once they are known.
        clock.advance(Duration::from_secs(10));
        hold(gate.admit(opened(), &clock));
        assert_eq!(gate.admit(closed(), &clock), Verdict::Dropped("not_opened"));
        gate.held_queued(AlertKind::BreakerOpened, "hook", Some(vec![id(4)]));
        assert_eq!(gate.take_withdrawn(), [id(4)]);
    }

    #[test]
    fn the_overall_limit_drops_alerts_beyond_it_and_frees_up_after_a_minute() {
        let clock = ManualClock::new();
        let mut gate = Gate::new(INTERVAL, 5);
        let verdicts: Vec<Verdict> = (0..8)
            .map(|i| gate.admit(alert(AlertKind::BreakerOpened, &format!("d{i}")), &clock))
            .collect();
        assert_eq!(verdicts.iter().filter(|v| sent((*v).clone())).count(), 5);
        assert_eq!(
            verdicts[5..],
            [
                Verdict::Dropped("rate_limit"),
                Verdict::Dropped("rate_limit"),
                Verdict::Dropped("rate_limit")
            ]
        );
        // The closing of a sent "opened" still goes; of a dropped one, not.
        assert!(sent(
            gate.admit(alert(AlertKind::BreakerClosed, "d0"), &clock)
        ));
        assert_eq!(
            gate.admit(alert(AlertKind::BreakerClosed, "d7"), &clock),
            Verdict::Dropped("not_opened")
        );
        // A held alert is queued already: the limit does not drop it.
        hold(gate.admit(alert(AlertKind::BreakerOpened, "d1"), &clock));
        clock.advance(Duration::from_secs(59));
        assert_eq!(
            gate.admit(alert(AlertKind::StartupRecovery, "store"), &clock),
            Verdict::Dropped("rate_limit")
        );
        clock.advance(Duration::from_secs(1));
        assert!(sent(
            gate.admit(alert(AlertKind::StartupRecovery, "store"), &clock)
        ));
        clock.advance(INTERVAL);
        assert_eq!(gate.promote(&clock).len(), 1);
    }

    #[test]
    fn a_held_alert_counts_against_the_overall_limit_when_it_falls_due() {
        let clock = ManualClock::new();
        let mut gate = Gate::new(Duration::from_secs(1), 2);
        assert!(sent(
            gate.admit(alert(AlertKind::BreakerOpened, "a"), &clock)
        ));
        hold(gate.admit(alert(AlertKind::BreakerOpened, "a"), &clock));
        assert_eq!(gate.next_due(), Some(clock.now() + Duration::from_secs(1)));
        clock.advance(Duration::from_secs(1));
        assert_eq!(gate.promote(&clock).len(), 1);
        // Two sent within the minute: a third is over the limit.
        assert_eq!(
            gate.admit(alert(AlertKind::BreakerOpened, "b"), &clock),
            Verdict::Dropped("rate_limit")
        );
    }

    #[test]
    fn idempotency_keys_differ_for_alerts_an_interval_apart() {
        let a = alert(AlertKind::BreakerOpened, "hook");
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let key = |t| idempotency_key(&a, t, INTERVAL);
        assert_eq!(key(t), key(t + Duration::from_secs(1)));
        for offset in [0, 1, 150, 299] {
            let start = t + Duration::from_secs(offset);
            assert_ne!(key(start), key(start + INTERVAL));
        }
        assert_eq!(key(t), "alert:breaker.opened:hook:3333");
    }

    #[test]
    fn a_closed_alert_is_keyed_by_its_outage_not_by_when_it_ends() {
        // The manual clock's wall time starts at 2026-01-01T00:00:00Z, bucket 5890752.
        let clock = ManualClock::new();
        let mut gate = Gate::new(INTERVAL, 20);
        let key = |verdict| match verdict {
            Verdict::Send(_, key) => key,
            other => panic!("{other:?}"),
        };
        clock.advance(Duration::from_secs(299));
        let opened = key(gate.admit(alert(AlertKind::BreakerOpened, "hook"), &clock));
        assert_eq!(opened, "alert:breaker.opened:hook:5890752");
        clock.advance(Duration::from_secs(2));
        let closed = key(gate.admit(alert(AlertKind::BreakerClosed, "hook"), &clock));
        assert_eq!(closed, "alert:breaker.closed:hook:5890752");
        // The next outage opens an interval after the first and ends at once: both "closed"
        // alerts ended in bucket 5890753, but each is keyed by its own outage.
        clock.advance(INTERVAL - Duration::from_secs(2));
        let opened = key(gate.admit(alert(AlertKind::BreakerOpened, "hook"), &clock));
        clock.advance(Duration::from_millis(500));
        let closed = key(gate.admit(alert(AlertKind::BreakerClosed, "hook"), &clock));
        assert_eq!(opened, "alert:breaker.opened:hook:5890753");
        assert_eq!(closed, "alert:breaker.closed:hook:5890753");
    }

    /// A real breaker on a manual clock, driven through an outage that re-opens twice.
    #[test]
    fn an_outage_raises_one_opened_and_one_closed_however_often_it_reopens() {
        let clock = ManualClock::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let watch = Arc::new(BreakerWatch {
            destination: "hook".into(),
            clock: clock.shared(),
            outage_since: Mutex::new(None),
            tx,
        });
        let breaker = CircuitBreaker::with_context(
            BreakerConfig {
                window: Window::Count(2),
                min_calls: 2,
                open_for: Duration::from_secs(10),
                ..BreakerConfig::default()
            },
            Context::new("hook")
                .with_clock(clock.shared())
                .with_observer(watch),
        )
        .unwrap();
        let call = |outcome| breaker.try_acquire().unwrap().record(outcome);
        call(Outcome::Transient);
        call(Outcome::Transient);
        assert_eq!(breaker.state(), CircuitState::Open);
        for _ in 0..2 {
            clock.advance(Duration::from_secs(10));
            call(Outcome::Transient);
            assert_eq!(breaker.state(), CircuitState::Open, "the probe failed");
        }
        clock.advance(Duration::from_secs(10));
        call(Outcome::Success);
        assert_eq!(breaker.state(), CircuitState::Closed);
        let mut alerts = Vec::new();
        while let Ok(a) = rx.try_recv() {
            alerts.push(a);
        }
        let kinds: Vec<AlertKind> = alerts.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, [AlertKind::BreakerOpened, AlertKind::BreakerClosed]);
        assert!(
            alerts[1].text.contains("closed after 30s"),
            "{}",
            alerts[1].text
        );
        // An operator forcing it open and resetting it is no outage.
        breaker.force_open();
        breaker.reset();
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn the_dead_letter_threshold_alerts_once_per_crossing() {
        let t = Threshold::new(2);
        let crossings: Vec<bool> = [0, 2, 3, 5, 9, 2, 3, 1, 0, 4]
            .into_iter()
            .map(|depth| t.crossed(depth))
            .collect();
        assert_eq!(
            crossings,
            [
                false, false, true, false, false, false, true, false, false, true
            ]
        );
    }

    #[test]
    fn texts_are_cut_to_a_thousand_characters() {
        let a = Alert::new(
            AlertKind::StartupFailure,
            "serve",
            "é".repeat(5000),
            UNIX_EPOCH,
        );
        assert_eq!(a.text.chars().count(), 1001);
        assert!(a.text.ends_with('…'));
    }
}
