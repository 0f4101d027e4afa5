//! `LISTEN/NOTIFY ferrule_work`: wakes idle dispatchers when any process makes work available.
//!
//! After an operation that may make work claimable commits, the store pokes its [`Notifier`],
//! a background task that sends `pg_notify('ferrule_work', <schema>)` in a statement of its
//! own, at most once per [`NOTIFY_INTERVAL`]: pokes that arrive while a notification is in
//! flight or within the interval are coalesced into the next one. Each notification is a
//! transaction on the server and a round trip for the relay; sent as often as one at a time
//! allowed, they were half of all transactions under load (measured with three processes:
//! ~29,000 transactions for 20,000 delivered messages, ~15,000 with the interval).
//! NOTIFY is deliberately kept out of the enqueue transaction: PostgreSQL serialises the
//! commits of notifying transactions on one global lock held across the WAL flush, which would
//! turn every enqueue into its own fsync (measured: ~1,000 acked enqueues/s with 128
//! submitters instead of thousands). Every process's store keeps one listening connection,
//! opened lazily on the first [`Waker::wait`].
//!
//! The same commit also wakes this process's own waiters at once ([`Waker::wake`]), without
//! the round trip through PostgreSQL: the process that made the work need not wait for its
//! own notification to come back, and neither interval delays it.
//!
//! The listener forwards notifications to the waiters at most once per [`WAKE_INTERVAL`],
//! collapsing those that arrive meanwhile into one wake. Every process notifies, and each wake
//! costs an idle dispatcher a claim and a next-due query: coalescing bounds that cost per
//! process whatever the number of processes. Work from another process thus reaches an idle
//! dispatcher at most the two intervals late, and only right after an earlier notification or
//! wake. A lost connection or a listener error still wakes everyone at once.
//!
//! A wake that lands while no one waits (a dispatcher busy claiming) is kept for the next
//! [`Waker::wait`], so it is never lost; a stale one costs one claim that finds nothing.
//!
//! The listener ignores the notifications this process sent itself: its waiters were woken in
//! process when the work committed, and the echo would cost an idle dispatcher a claim that
//! finds nothing and a next-due query, per notification (at 200 msg/s with one process, two
//! of the ~7 transactions per message). The [`Notifier`] sends from a connection of its own
//! and publishes that connection's backend pid ([`OwnSender`]), which PostgreSQL names as
//! the sender of each notification.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::{Notify, OnceCell, watch};
use tokio::task::AbortHandle;

/// The channel notified; the payload is the schema name.
pub(crate) const CHANNEL: &str = "ferrule_work";

/// How long the listener waits before reconnecting after an error.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// The shortest time between two wakes forwarded from notifications; those that arrive
/// meanwhile become one wake at its end. Each wake costs an idle dispatcher of this process a
/// claim and a next-due query, and every process may notify once per [`NOTIFY_INTERVAL`]: the
/// interval keeps the wakes a process handles from growing with the number of processes. This
/// process's own work wakes it at once ([`Waker::wake`]), so the delay only applies to work
/// from other processes, and only right after a wake.
const WAKE_INTERVAL: Duration = Duration::from_millis(10);

/// The shortest time between two notifications this process sends; pokes that arrive
/// meanwhile become one notification at its end. Each notification is a transaction on the
/// server and a round trip for the relay, and under load this process pokes after almost
/// every commit, hundreds of times a second. Other processes learn of this process's work at
/// most this much later, and only right after an earlier notification; its own waiters are
/// woken directly.
const NOTIFY_INTERVAL: Duration = Duration::from_millis(10);

/// The backend pid of the connection this process's [`Notifier`] sends from (0 before its
/// first notification), shared with the [`Waker`]'s listener so that it ignores them.
#[derive(Debug, Clone, Default)]
pub(crate) struct OwnSender(Arc<AtomicU32>);

impl OwnSender {
    fn is(&self, pid: u32) -> bool {
        pid != 0 && self.0.load(Ordering::Relaxed) == pid
    }

    fn set(&self, pid: u32) {
        self.0.store(pid, Ordering::Relaxed);
    }
}

/// Wakes [`Waker::wait`] callers: at once on this process's own work ([`Waker::wake`]), and
/// on notifications for one schema (coalesced, see [`WAKE_INTERVAL`]).
#[derive(Debug)]
pub(crate) struct Waker {
    wakes: Arc<Wakes>,
    task: OnceCell<AbortHandle>,
    connect: PgConnectOptions,
    connect_timeout: Duration,
    schema: String,
    own: OwnSender,
}

/// Where wakes meet waiters: every current waiter sees a change of `generation`, and `permit`
/// keeps one wake for the next waiter when none waits.
#[derive(Debug)]
struct Wakes {
    generation: watch::Sender<u64>,
    permit: Notify,
}

impl Wakes {
    fn wake(&self) {
        // The permit first: a waiter polled between the two steps then takes it rather than
        // leaving it behind as a stale one (`wait` prefers the permit).
        self.permit.notify_one();
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }
}

impl Waker {
    pub(crate) fn new(
        connect: PgConnectOptions,
        connect_timeout: Duration,
        schema: String,
        own: OwnSender,
    ) -> Self {
        Waker {
            wakes: Arc::new(Wakes {
                generation: watch::Sender::new(0),
                permit: Notify::new(),
            }),
            task: OnceCell::new(),
            connect,
            connect_timeout,
            schema,
            own,
        }
    }

    /// Wakes this process's waiters now, or the next one if none waits: called after this
    /// store committed work that may be claimable, alongside [`Notifier::poke`] for the others.
    pub(crate) fn wake(&self) {
        self.wakes.wake();
    }

    /// How many wakes there have been: it changes on every one.
    pub(crate) fn generation(&self) -> u64 {
        *self.wakes.generation.borrow()
    }

    /// Takes the wake kept for the next [`wait`](Self::wait), if one is (a notification the
    /// listener has not forwarded yet is not one).
    pub(crate) fn take_kept(&self) -> bool {
        crate::common::take_permit(&self.wakes.permit)
    }

    /// Completes on the next wake: this process's own work or a notification for this schema.
    /// The first call starts the listener and returns as soon as it listens (work may have
    /// arrived before). If the listener cannot connect, returns after a short delay so the
    /// caller polls instead.
    pub(crate) async fn wait(&self) {
        let mut rx = self.wakes.generation.subscribe();
        let permit = self.wakes.permit.notified();
        let mut started_now = false;
        let started = self
            .task
            .get_or_try_init(|| {
                started_now = true;
                self.start()
            })
            .await;
        match started {
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for new work; polling");
                tokio::select! {
                    biased;
                    _ = permit => {}
                    _ = tokio::time::sleep(RECONNECT_DELAY) => {}
                }
            }
            Ok(_) if started_now => {}
            Ok(_) => {
                tokio::select! {
                    // The permit first, so a wake that reached both is not kept as a stale one.
                    biased;
                    _ = permit => {}
                    // The sender lives as long as `self`, so `changed` only fails after drop.
                    _ = rx.changed() => {}
                }
            }
        }
    }

    async fn start(&self) -> Result<AbortHandle, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(self.connect_timeout)
            .connect_lazy_with(self.connect.clone());
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.ignore_pool_close_event(true);
        listener.listen(CHANNEL).await?;
        let wakes = self.wakes.clone();
        let schema = self.schema.clone();
        let own = self.own.clone();
        let task = tokio::spawn(async move {
            // Set for each notification; `notify_one` keeps one permit, so everything that
            // arrives while `forward` sleeps becomes a single wake.
            let pending = Notify::new();
            // Never cancelled, so the interval lives in a future of its own rather than in a
            // timeout around `try_recv`: one dropped while it reconnects would never report
            // the lost connection (`Ok(None)`), and its lost notifications would wake no one.
            let receive = async {
                loop {
                    match listener.try_recv().await {
                        // This process's own notifications: its waiters were woken at once.
                        Ok(Some(n)) if own.is(n.process_id()) => {}
                        Ok(Some(n)) if n.payload() == schema => pending.notify_one(),
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            // Reconnected: notifications may have been lost, so wake everyone.
                            wakes.wake();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "work listener failed; reconnecting");
                            wakes.wake();
                            tokio::time::sleep(RECONNECT_DELAY).await;
                        }
                    }
                }
            };
            let forward = async {
                loop {
                    pending.notified().await;
                    wakes.wake();
                    tokio::time::sleep(WAKE_INTERVAL).await;
                }
            };
            tokio::join!(receive, forward);
        });
        Ok(task.abort_handle())
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

/// Sends `pg_notify` for this schema after commits that made work available, coalescing bursts.
#[derive(Debug)]
pub(crate) struct Notifier {
    poke: Arc<Notify>,
    task: AbortHandle,
}

impl Notifier {
    /// Starts the sending task (needs a tokio runtime). It sends on a connection of its own,
    /// opened from `connect` on the first notification, and publishes that connection's
    /// backend pid in `own`.
    pub(crate) fn start(
        connect: PgConnectOptions,
        connect_timeout: Duration,
        schema: String,
        own: OwnSender,
    ) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(connect_timeout)
            .connect_lazy_with(connect);
        let poke = Arc::new(Notify::new());
        let wait = poke.clone();
        let task = tokio::spawn(async move {
            loop {
                // `notify_one` stores a permit while we send or wait out the interval: one more
                // send covers them all.
                wait.notified().await;
                let next = tokio::time::Instant::now() + NOTIFY_INTERVAL;
                let sent: Result<i32, _> =
                    sqlx::query_scalar("SELECT pg_backend_pid() FROM pg_notify($1, $2)")
                        .bind(CHANNEL)
                        .bind(&schema)
                        .fetch_one(&pool)
                        .await;
                match sent {
                    Ok(pid) => {
                        // Known only once the first notification of a connection is answered;
                        // that one may still come back as a wake (one claim that finds nothing).
                        own.set(u32::try_from(pid).unwrap_or(0));
                        tokio::time::sleep_until(next).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot notify other dispatchers of new work");
                        tokio::time::sleep(RECONNECT_DELAY).await;
                    }
                }
            }
        });
        Notifier {
            poke,
            task: task.abort_handle(),
        }
    }

    /// Asks for a notification soon; returns at once.
    pub(crate) fn poke(&self) {
        self.poke.notify_one();
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.task.abort();
    }
}
