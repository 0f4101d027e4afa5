//! The gate: de-duplication and rate limiting of alerts, a pure state machine over a
//! monotonic clock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrule_policy::Clock;
use ferrule_store::MessageId;

use super::{Alert, AlertKind};

/// `alert:{kind}:{subject}:{bucket}`, where the bucket is `at` in units of `min_interval`
/// since the epoch; see [`Gate::key`].
pub(super) fn idempotency_key(alert: &Alert, now: SystemTime, min_interval: Duration) -> String {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let bucket = secs / min_interval.as_secs().max(1);
    format!("alert:{}:{}:{bucket}", alert.kind, alert.subject)
}

/// What the [`Gate`] decides for one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
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
pub(super) struct Slot {
    /// When the last alert of this kind and subject was sent (or fell due, if held).
    last: Instant,
    /// The alert held since, if any.
    held: Option<Held>,
}

/// An alert the gate held back: queued already, due when its slot's interval ends.
#[derive(Debug)]
pub(super) struct Held {
    /// When it falls due, on the wall clock: its messages' `not_before`.
    due: SystemTime,
    /// How many alerts it stands for (1: only itself).
    folded: u32,
    /// Its queued messages, cancelled if a "closed" ends its outage first.
    messages: Vec<MessageId>,
}

/// De-duplication and rate limiting: a pure state machine over a monotonic `now`.
#[derive(Debug)]
pub(super) struct Gate {
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

pub(super) const MINUTE: Duration = Duration::from_secs(60);

impl Gate {
    pub(super) fn new(min_interval: Duration, max_per_minute: u32) -> Self {
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
    pub(super) fn admit(&mut self, alert: Alert, clock: &dyn Clock) -> Verdict {
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
    pub(super) fn sent_now(&mut self, alert: &Alert, clock: &dyn Clock) -> String {
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
    pub(super) fn key(&self, alert: &Alert, at: SystemTime) -> String {
        idempotency_key(alert, at, self.min_interval)
    }

    /// Records the messages queued for the alert held for `kind` and `subject`; `None` when
    /// the store refused them: the gate forgets that it is held, so the next alert is held in
    /// its place.
    pub(super) fn held_queued(
        &mut self,
        kind: AlertKind,
        subject: &str,
        messages: Option<Vec<MessageId>>,
    ) {
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
    pub(super) fn take_withdrawn(&mut self) -> Vec<MessageId> {
        std::mem::take(&mut self.withdrawn)
    }

    /// Counts the held alerts whose interval has passed by now on `clock` as sent (their
    /// messages fall due in the store then) and returns each one's kind, subject and how many
    /// alerts were folded into it.
    pub(super) fn promote(&mut self, clock: &dyn Clock) -> Vec<(AlertKind, String, u32)> {
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
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter(|s| s.held.is_some())
            .map(|s| s.last + self.min_interval)
            .min()
    }

    pub(super) fn full(&self) -> bool {
        self.sent.len() >= self.max_per_minute as usize
    }

    /// Forgets sends older than a minute and slots that no longer restrict anything.
    pub(super) fn expire(&mut self, now: Instant) {
        while self.sent.front().is_some_and(|&t| t + MINUTE <= now) {
            self.sent.pop_front();
        }
        let interval = self.min_interval;
        self.slots
            .retain(|_, s| s.held.is_some() || now < s.last + interval);
    }
}
