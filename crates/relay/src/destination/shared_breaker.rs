//! Circuit breakers shared by the relays on one PostgreSQL database (`breaker.shared = true`):
//! when one relay's breaker opens, the others stop sending to that destination too, and only
//! one of them probes it when the open period ends.
//!
//! Each relay still decides on its hot path with its own breaker. What they share is a row per
//! destination in the store ([`ferrule_store::shared_breaker`]):
//!
//! - A relay whose breaker opens or closes on its own (its deliveries, a failed probe, an
//!   operator's reset) publishes it at once: open until its open period ends, or closed.
//! - Every [`FOLLOW_EVERY`] each relay reads the rows. While a row is open, every relay (the
//!   one that opened it too) holds its breaker open, so none sends and none half-opens on its
//!   own; a closed row closes the breakers it held.
//! - When the open period has ended, the first relay that has a message for the destination
//!   claims the probe in the store (one epoch, one winner, [`SharedBreakers::probe`]), and
//!   sends that message as the probe. Its verdict is published like any transition: closed
//!   for everyone, or open again. The claim moves the next possible probe past the attempt
//!   timeout and [`PROBE_GRACE`], so a relay that dies mid-probe is replaced, not waited for.
//! - Messages a relay cannot send because of a hold are deferred to the time a probe may
//!   start (every relay takes due messages from the shared queue, and the probe needs one).
//!
//! A relay that cannot reach the store keeps deciding alone: a hold it has runs out past the
//! probe's time (the attempt timeout, [`PROBE_GRACE`] and two reads later) and its breaker
//! half-opens as usual. The transitions a relay makes to follow the rows are not published
//! back and raise no alert (the relay whose own breaker moved alerts).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ferrule_policy::breaker::{BreakerStatus, OwnedPermit};
use ferrule_policy::event::{Event, Observer};
use ferrule_policy::{CircuitState, SharedClock};
use ferrule_store::{AnyStore, BreakerUpdate, SharedBreaker, SharedState, Store, StoreError};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Destination;

/// How often a relay reads the shared circuits: a circuit opened by one relay stops the others
/// within about this long (plus the store's answer).
pub const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// How long, beyond the destination's attempt timeout, a claimed probe holds off the next claim:
/// if the relay that claimed it says nothing by then, another relay may claim a probe.
pub const PROBE_GRACE: Duration = Duration::from_secs(2);

thread_local! {
    /// Set while this thread changes a breaker to follow another relay: the observers then
    /// know the transition is not this relay's own decision.
    static FOLLOWING: Cell<bool> = const { Cell::new(false) };
}

/// Whether the breaker transition being observed on this thread is one this relay makes to
/// follow another relay's shared circuit (not published again, not alerted).
pub fn following() -> bool {
    FOLLOWING.with(Cell::get)
}

/// Runs `change` (a change of a breaker) as a follower's.
fn as_follower<T>(change: impl FnOnce() -> T) -> T {
    FOLLOWING.with(|f| f.set(true));
    let out = change();
    FOLLOWING.with(|f| f.set(false));
    out
}

/// A transition of a shared breaker that this relay made on its own.
#[derive(Debug)]
struct Own {
    destination: String,
    to: CircuitState,
}

/// The policy observer of a shared breaker: passes its own transitions to the follower task.
#[derive(Debug)]
pub struct SharedBreakerWatch {
    tx: mpsc::UnboundedSender<Own>,
}

impl Observer for SharedBreakerWatch {
    fn on_event(&self, event: &Event<'_>) {
        if let Event::BreakerTransition { name, to, .. } = *event
            && !following()
        {
            // The task is gone only when the relay stops.
            let _ = self.tx.send(Own {
                destination: name.to_owned(),
                to,
            });
        }
    }
}

/// What this relay knows of one shared circuit.
#[derive(Debug, Default, Clone, Copy)]
struct Known {
    /// The epoch of the row last read or written.
    epoch: u64,
    /// This relay holds its breaker open for the circuit's row, whose probe may start then.
    held: Option<SystemTime>,
    /// The row says a relay is probing.
    probing: bool,
}

/// The shared breakers of a relay: their observer's channel, and what the follower task knows.
#[derive(Debug)]
pub struct SharedBreakers {
    /// This relay's name in the rows it owns.
    owner: String,
    /// The destinations whose breaker is shared.
    destinations: BTreeSet<String>,
    tx: mpsc::UnboundedSender<Own>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Own>>>,
    known: Mutex<BTreeMap<String, Known>>,
}

impl SharedBreakers {
    /// No shared breaker yet; rows this relay writes name it `owner`.
    pub fn new(owner: impl Into<String>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        SharedBreakers {
            owner: owner.into(),
            destinations: BTreeSet::new(),
            tx,
            rx: Mutex::new(Some(rx)),
            known: Mutex::new(BTreeMap::new()),
        }
    }

    /// Shares `destination`'s breaker: answers the observer to give its policies.
    pub fn share(&mut self, destination: &str) -> Arc<SharedBreakerWatch> {
        self.destinations.insert(destination.to_owned());
        Arc::new(SharedBreakerWatch {
            tx: self.tx.clone(),
        })
    }

    /// The destinations whose breaker is shared, by name.
    pub fn destinations(&self) -> impl Iterator<Item = &str> {
        self.destinations.iter().map(String::as_str)
    }

    fn known(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Known>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes this relay's own transitions at once and follows the other relays' every
    /// [`FOLLOW_EVERY`] on `clock`, for the `shared` destinations, until `stop`.
    pub async fn run(
        &self,
        store: &AnyStore,
        shared: &BTreeMap<String, Arc<Destination>>,
        clock: &SharedClock,
        stop: &CancellationToken,
    ) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                own = rx.recv() => {
                    let Some(own) = own else { return };
                    if let Some(d) = shared.get(&own.destination)
                        && let Err(e) = self.publish(store, d, own.to, clock).await
                    {
                        tracing::warn!(destination = %own.destination, error = %e, "cannot publish a shared breaker's state; the other relays follow it at its next change");
                    }
                }
                () = clock.sleep(FOLLOW_EVERY) => {
                    if let Err(e) = self.follow(shared, store, clock).await {
                        tracing::warn!(error = %e, "cannot read the shared breakers; each relay decides alone meanwhile");
                    }
                }
            }
        }
    }

    /// Publishes `d`'s breaker's move to `to`, a decision of this relay: open (until its open
    /// period ends) or closed. Other moves are not shared. An open circuit is then held open
    /// here too, like on every relay, until one of them claims the probe.
    async fn publish(
        &self,
        store: &AnyStore,
        d: &Destination,
        to: CircuitState,
        clock: &SharedClock,
    ) -> Result<(), StoreError> {
        let now = clock.system_now();
        let (state, open_until) = match to {
            CircuitState::Open => {
                let remaining = d.breaker.remaining_open().unwrap_or_default();
                (SharedState::Open, now + remaining)
            }
            CircuitState::Closed => (SharedState::Closed, now),
            CircuitState::HalfOpen | CircuitState::ForcedOpen | CircuitState::Disabled => {
                return Ok(());
            }
        };
        let row = store
            .publish_breaker(&BreakerUpdate {
                destination: d.name.clone(),
                state,
                open_until,
                owner: self.owner.clone(),
            })
            .await?;
        tracing::info!(destination = %d.name, state = state.as_str(), epoch = row.epoch, "shared breaker published");
        match state {
            SharedState::Open | SharedState::Probing => self.hold(d, &row, now),
            SharedState::Closed => self.remember(d, row.epoch, None),
        }
        Ok(())
    }

    /// Reads every shared circuit once and follows those that changed.
    pub async fn follow(
        &self,
        shared: &BTreeMap<String, Arc<Destination>>,
        store: &AnyStore,
        clock: &SharedClock,
    ) -> Result<(), StoreError> {
        let rows = store.shared_breakers().await?;
        let now = clock.system_now();
        for row in rows {
            let Some(d) = shared.get(&row.destination) else {
                continue;
            };
            let known = self.known().get(&d.name).copied().unwrap_or_default();
            if row.owner == self.owner {
                // This relay's own publication or probe: its breaker already is where the
                // row says, or has moved on (a verdict on its way to the store).
                continue;
            }
            match row.state {
                SharedState::Closed => {
                    if row.epoch != known.epoch {
                        // A probe passed somewhere, or an operator reset it there.
                        if matches!(
                            d.breaker.state(),
                            CircuitState::Open | CircuitState::HalfOpen
                        ) {
                            as_follower(|| d.breaker.reset());
                            tracing::info!(destination = %d.name, by = %row.owner, "shared breaker closed by another relay");
                        }
                        self.remember(d, row.epoch, None);
                    }
                }
                SharedState::Open | SharedState::Probing => {
                    if known.held.is_none() {
                        tracing::info!(destination = %d.name, by = %row.owner, "shared breaker opened by another relay; held open");
                    }
                    self.hold(d, &row, now);
                }
            }
        }
        Ok(())
    }

    /// Holds `d`'s breaker open for `row`, an open circuit: past the time its probe may start
    /// by the attempt timeout, [`PROBE_GRACE`] and two reads, so while the store answers, a
    /// probe only starts through [`probe`](Self::probe); if it stops answering, the hold runs
    /// out and the breaker half-opens on its own.
    fn hold(&self, d: &Destination, row: &SharedBreaker, now: SystemTime) {
        let end = row.open_until + d.timeout.timeout() + PROBE_GRACE + 2 * FOLLOW_EVERY;
        let held = match end.duration_since(now) {
            Ok(left) if !left.is_zero() => as_follower(|| d.breaker.hold_open(left)),
            _ => false,
        };
        self.known().insert(
            d.name.clone(),
            Known {
                epoch: row.epoch,
                held: held.then_some(row.open_until),
                probing: row.state == SharedState::Probing,
            },
        );
    }

    /// A probe permit for `d`, whose breaker refused a delivery, if its circuit is shared, held
    /// open here and due for a probe: this relay claims the probe in the store (one relay per
    /// period wins) and half-opens its breaker for it. The winner's row moves the next
    /// possible probe past this one's attempt timeout and [`PROBE_GRACE`], in case it never
    /// reports.
    pub async fn probe(
        &self,
        store: &AnyStore,
        d: &Destination,
        clock: &SharedClock,
    ) -> Option<OwnedPermit> {
        let known = self.known().get(&d.name).copied()?;
        let due = known.held?;
        let now = clock.system_now();
        if now < due {
            return None;
        }
        let next = now + d.timeout.timeout() + PROBE_GRACE;
        match store
            .take_over_breaker(&d.name, known.epoch, &self.owner, next)
            .await
        {
            Ok(Some(won)) => {
                self.hold(d, &won, now);
                as_follower(|| d.breaker.end_open_period());
                tracing::info!(destination = %d.name, epoch = won.epoch, "shared breaker probe claimed by this relay");
                d.breaker.try_acquire_owned().ok()
            }
            // Another relay claimed it; the next read shows when to look again.
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(destination = %d.name, error = %e, "cannot claim a shared breaker's probe");
                None
            }
        }
    }

    /// `d`'s breaker as this relay shows it. While it is held open for a shared circuit, the
    /// time left is until that circuit's probe may start (at least 1 ms once it may: the probe
    /// waits for a due message), not the end of the hold, which lies past the probe's own time.
    pub fn status(&self, d: &Destination, now: SystemTime) -> BreakerStatus {
        let mut status = d.breaker.status();
        if status.state == CircuitState::Open
            && let Some(due) = self.known().get(&d.name).and_then(|k| k.held)
        {
            let left = due.duration_since(now).unwrap_or_default();
            status.remaining_open = Some(left.max(Duration::from_millis(1)));
        }
        status
    }

    /// What this relay last read of `destination`'s shared circuit, `null` unless its breaker
    /// is shared: `{"epoch", "held", "probe_at", "probing"}` (`probe_at` is when a probe may
    /// start, `null` unless this relay holds its breaker open for the circuit).
    pub fn view(&self, destination: &str) -> Value {
        if !self.destinations.contains(destination) {
            return Value::Null;
        }
        let known = self.known().get(destination).copied().unwrap_or_default();
        json!({
            "epoch": known.epoch,
            "held": known.held.is_some(),
            "probe_at": known.held.map(crate::time::rfc3339),
            "probing": known.probing,
        })
    }

    fn remember(&self, d: &Destination, epoch: u64, held: Option<SystemTime>) {
        self.known().insert(
            d.name.clone(),
            Known {
                epoch,
                held,
                probing: false,
            },
        );
    }

    /// When to try again a message for `destination` that this relay could not send because
    /// it holds the breaker open for a shared circuit, `None` if it does not: when a probe may
    /// start (the messages are shared by every relay, and the probe needs one due), or, while
    /// a relay probes, `retry` from `now` (its verdict is likely to come sooner).
    pub fn retry_at(
        &self,
        destination: &str,
        now: SystemTime,
        retry: Duration,
    ) -> Option<SystemTime> {
        let known = self.known().get(destination).copied()?;
        let due = known.held?;
        Some(if known.probing {
            now + retry
        } else {
            due.max(now + retry)
        })
    }
}
