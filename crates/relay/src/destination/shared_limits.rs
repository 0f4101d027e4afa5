//! Send limits shared by the relays on one PostgreSQL database: a Telegram bot's windows (per
//! bot, per chat, per group) and a GitHub token's write pace ([`SharedPace`]) hold across every
//! relay sending through them ([`ferrule_store::shared_limit`]).
//!
//! Each relay runs one task that takes places in the shared windows for every send it decides
//! in the same instant with one store transaction: the asks that arrive while a transaction is
//! under way wait for the next one, which serves them all, and carries the finishes of the
//! sends answered meanwhile. A send admitted holds its places until its finish is recorded
//! (or, if its relay dies first, until its attempt timeout and [`HOLD_MARGIN`] have passed); a
//! send refused is deferred in the store to the time it was given, in the bot's line when the
//! bot's window refused it, and is not charged again when it comes back, whichever relay
//! claims it.
//!
//! When the store does not answer (within [`ASK_TIMEOUT`]), a relay fails closed: sends are
//! deferred [`RETRY_SHARED`] at a time, for [`FAIL_CLOSED`]; past that it keeps the limits in
//! memory alone, with the bot's capacity divided by the relays last seen sharing it (each
//! chat's and group's limits whole: a chat that other relays also send to may then draw a
//! 429; a GitHub token's pace whole, as one relay would keep it). Every [`RETRY_SHARED`] it
//! tries the store again, and shares again once it answers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ferrule_policy::SharedClock;
use ferrule_store::{AnyStore, SlotAnswer, SlotBatch, SlotFinish, SlotRequest, Store, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How long a relay waits for the store's answer to a batch before taking it as unreachable
/// (real time: the store's, not the relay's clock).
pub const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a relay defers sends while the store does not answer, before it falls back on
/// limits in memory.
pub const FAIL_CLOSED: Duration = Duration::from_secs(10);

/// How often a relay that cannot reach the store tries it again.
pub const RETRY_SHARED: Duration = Duration::from_secs(1);

/// How long, beyond the attempt timeout, a send whose finish never reaches the store holds its
/// places.
pub const HOLD_MARGIN: Duration = Duration::from_secs(2);

/// Finishes kept for the next batch while the store does not answer, at most.
const MAX_PENDING_FINISHES: usize = 100_000;

enum Item {
    Ask(SlotRequest, oneshot::Sender<Result<SlotAnswer, String>>),
    Finish(SlotFinish),
}

/// Whether the store answered lately.
#[derive(Debug, Default, Clone, Copy)]
struct Reach {
    /// Since when it has not answered.
    down_since: Option<SystemTime>,
    /// When to try it again.
    next_try: Option<SystemTime>,
}

/// What a relay should do for a send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Ask the store.
    Shared,
    /// Defer the send until the time given: the store did not answer lately.
    Closed(SystemTime),
    /// Keep the limits in memory alone: the store has not answered for [`FAIL_CLOSED`].
    Local,
}

/// This relay's side of the shared windows: the batching task's channel, and whether the
/// store answers.
#[derive(Clone)]
pub struct SharedLimits {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::UnboundedSender<Item>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Item>>>,
    owner: String,
    clock: SharedClock,
    reach: Mutex<Reach>,
    ask_timeout: Duration,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("owner", &self.inner.owner)
            .finish_non_exhaustive()
    }
}

impl SharedLimits {
    /// Shared windows asked for as `owner`, on `clock`; nothing is asked until
    /// [`run`](Self::run) is.
    pub fn new(owner: impl Into<String>, clock: SharedClock) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        SharedLimits {
            inner: Arc::new(Inner {
                tx,
                rx: Mutex::new(Some(rx)),
                owner: owner.into(),
                clock,
                reach: Mutex::new(Reach::default()),
                ask_timeout: ASK_TIMEOUT,
            }),
        }
    }

    /// [`new`](Self::new), taking the store as unreachable after `ask_timeout` instead of
    /// [`ASK_TIMEOUT`] (for tests).
    pub fn with_ask_timeout(
        owner: impl Into<String>,
        clock: SharedClock,
        ask_timeout: Duration,
    ) -> Self {
        let limits = SharedLimits::new(owner, clock);
        let Ok(mut inner) = Arc::try_unwrap(limits.inner) else {
            unreachable!("just made")
        };
        inner.ask_timeout = ask_timeout;
        SharedLimits {
            inner: Arc::new(inner),
        }
    }

    fn reach(&self) -> std::sync::MutexGuard<'_, Reach> {
        self.inner.reach.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What to do for a send at `now`: ask the store, unless it did not answer lately.
    pub fn mode(&self, now: SystemTime) -> Mode {
        let reach = *self.reach();
        match (reach.down_since, reach.next_try) {
            (Some(since), Some(next)) if now < next => {
                if now.duration_since(since).unwrap_or_default() < FAIL_CLOSED {
                    Mode::Closed(next)
                } else {
                    Mode::Local
                }
            }
            _ => Mode::Shared,
        }
    }

    /// Whether the store answered the last batch (or none was asked yet).
    pub fn reachable(&self) -> bool {
        self.reach().down_since.is_none()
    }

    /// Asks for places for `request`; an error when the store did not answer (the relay
    /// then fails closed or keeps the limits alone, see [`mode`](Self::mode)).
    pub async fn ask(&self, request: SlotRequest) -> Result<SlotAnswer, String> {
        let (reply, answer) = oneshot::channel();
        if self.inner.tx.send(Item::Ask(request, reply)).is_err() {
            return Err("the shared limits task has stopped".into());
        }
        let answer = answer
            .await
            .unwrap_or_else(|_| Err("the shared limits task has stopped".into()));
        let now = self.inner.clock.system_now();
        let mut reach = self.reach();
        match &answer {
            Ok(_) => {
                if reach.down_since.is_some() {
                    tracing::info!("the store answers again: the limits are shared again");
                }
                *reach = Reach::default();
            }
            Err(e) => {
                if reach.down_since.is_none() {
                    tracing::warn!(error = %e, "cannot reach the shared limits in the store: sends are deferred, then limited in memory alone");
                    reach.down_since = Some(now);
                }
                reach.next_try = Some(now + RETRY_SHARED);
            }
        }
        answer
    }

    /// Records that a send admitted with `token` to the windows `keys` finished now (or was
    /// not made), with the next batch.
    pub fn finish(&self, token: String, keys: Vec<String>, happened: bool) {
        let at = self.inner.clock.system_now();
        // The task is gone only when the relay stops.
        let _ = self.inner.tx.send(Item::Finish(SlotFinish {
            token,
            keys,
            at,
            happened,
        }));
    }

    /// Serves the asks and finishes in batches, one store transaction each, until `stop`.
    pub async fn run(&self, store: &AnyStore, stop: &CancellationToken) {
        let Some(mut rx) = self
            .inner
            .rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let mut finishes: Vec<SlotFinish> = Vec::new();
        loop {
            let first = tokio::select! {
                () = stop.cancelled() => return,
                item = rx.recv() => match item {
                    Some(item) => item,
                    None => return,
                },
            };
            let mut asks = Vec::new();
            let mut take = |item| match item {
                Item::Ask(request, reply) => asks.push((request, reply)),
                Item::Finish(finish) => finishes.push(finish),
            };
            take(first);
            while let Ok(item) = rx.try_recv() {
                take(item);
            }
            let (requests, replies): (Vec<_>, Vec<_>) = asks.into_iter().unzip();
            let batch = SlotBatch {
                owner: self.inner.owner.clone(),
                now: self.inner.clock.system_now(),
                finishes: std::mem::take(&mut finishes),
                requests,
            };
            let answered: Result<Vec<SlotAnswer>, String> = tokio::select! {
                r = store.take_send_slots(&batch) => r.map_err(|e: StoreError| e.to_string()),
                () = tokio::time::sleep(self.inner.ask_timeout) => {
                    Err(format!("no answer within {:?}", self.inner.ask_timeout))
                }
            };
            match answered {
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a batch of shared send slots failed");
                    // The finishes go with the next batch; the asks fail.
                    finishes = batch.finishes;
                    finishes.truncate(MAX_PENDING_FINISHES);
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

/// A place in a shared window admitted by the store: dropping it records that the send
/// finished then; [`not_sent`](Self::not_sent) gives it back uncounted.
#[derive(Debug)]
#[must_use = "dropping it at once records the send as finished before it was made"]
pub struct SharedSlot {
    limits: SharedLimits,
    token: String,
    keys: Vec<String>,
    happened: bool,
    /// Where to record how long the send took (a pace's estimate of a write's length).
    took: Option<(Arc<std::sync::atomic::AtomicU64>, SystemTime)>,
}

impl SharedSlot {
    /// The send was not made after all: frees its places without counting it.
    pub fn not_sent(mut self) {
        self.happened = false;
    }
}

impl Drop for SharedSlot {
    fn drop(&mut self) {
        if let Some((took, since)) = &self.took
            && self.happened
        {
            let ms = self
                .limits
                .inner
                .clock
                .system_now()
                .duration_since(*since)
                .unwrap_or_default()
                .as_millis();
            took.store(
                u64::try_from(ms).unwrap_or(u64::MAX),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        self.limits.finish(
            std::mem::take(&mut self.token),
            std::mem::take(&mut self.keys),
            self.happened,
        );
    }
}

/// A GitHub token's write pace shared by the relays on the store: one write at a time across
/// all of them, and `interval` between one finishing and the next starting — a window of one
/// write per `interval`, stamped when the write finished, with a line in the order writers
/// were refused.
#[derive(Debug)]
pub struct SharedPace {
    limits: SharedLimits,
    key: String,
    interval: Duration,
    hold: Duration,
    /// How long the last write took, in milliseconds: the line's places are an interval and
    /// that apart.
    took: Arc<std::sync::atomic::AtomicU64>,
}

/// What [`SharedPace::admit`] decided.
#[derive(Debug)]
pub enum PaceAdmission {
    /// Admitted in the shared window.
    Shared(SharedSlot),
    /// The store has not answered for [`FAIL_CLOSED`]: keep the pace in memory.
    Local,
}

impl SharedPace {
    /// The pace of the token first configured on `destination`, every `interval`; a write
    /// whose finish never reaches the store holds the token for `attempt_timeout` and
    /// [`HOLD_MARGIN`].
    pub fn new(
        limits: SharedLimits,
        destination: &str,
        interval: Duration,
        attempt_timeout: Duration,
    ) -> Self {
        SharedPace {
            limits,
            key: format!("github:{destination}"),
            interval,
            hold: attempt_timeout + HOLD_MARGIN,
            took: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// Admits one write of `message`, or says when to come back.
    pub async fn admit(&self, message: &str) -> Result<PaceAdmission, SystemTime> {
        let now = self.limits.inner.clock.system_now();
        match self.limits.mode(now) {
            Mode::Local => return Ok(PaceAdmission::Local),
            Mode::Closed(until) => return Err(until),
            Mode::Shared => {}
        }
        let took = Duration::from_millis(self.took.load(std::sync::atomic::Ordering::Relaxed));
        let request = SlotRequest {
            token: message.to_owned(),
            spans: vec![ferrule_store::LimitSpan {
                key: self.key.clone(),
                limit: 1,
                per: self.interval.max(Duration::from_millis(1)),
                line: Some(self.interval + took.min(self.hold)),
            }],
            hold: self.hold,
            late: took.min(self.hold),
        };
        match self.limits.ask(request).await {
            Ok(answer) => match answer.refused {
                None => Ok(PaceAdmission::Shared(SharedSlot {
                    limits: self.limits.clone(),
                    token: message.to_owned(),
                    keys: vec![self.key.clone()],
                    happened: true,
                    took: Some((self.took.clone(), now)),
                })),
                Some(refusal) => Err(refusal.ready_at),
            },
            Err(_) => match self.limits.mode(self.limits.inner.clock.system_now()) {
                Mode::Local => Ok(PaceAdmission::Local),
                Mode::Closed(until) => Err(until),
                Mode::Shared => Err(now),
            },
        }
    }
}
