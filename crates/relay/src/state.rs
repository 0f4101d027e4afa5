//! What the HTTP API and the dispatcher share: the store, the destinations and e-mail sources,
//! counters, health and the shutdown token.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use ferrule_policy::SharedClock;
use ferrule_store::{AnyStore, Store};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerts::Alerts;
use crate::auth::TokenSet;
use crate::config::{Config, EmailSource};
use crate::destination::{Destination, Overrides, PausedDestinations};
use crate::health::{Depths, Health};

/// Counters since start, for `/status`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages accepted by `POST /v1/messages` (duplicates excluded).
    pub submitted: AtomicU64,
    /// Attempts that delivered.
    pub delivered: AtomicU64,
    /// Attempts that failed and were rescheduled.
    pub retried: AtomicU64,
    /// Messages dead-lettered.
    pub dead: AtomicU64,
    /// Claims given back without an attempt (open circuit, rate limit, full bulkhead).
    pub deferred: AtomicU64,
    /// Delivery tasks that panicked (caught and recovered).
    pub panics: AtomicU64,
    /// Inbound updates recorded (duplicates excluded).
    pub inbound: AtomicU64,
    /// Inbound updates that were redeliveries, acknowledged and ignored.
    pub inbound_duplicates: AtomicU64,
    /// Inbound e-mails recorded (duplicates excluded).
    pub inbound_emails: AtomicU64,
    /// Inbound e-mails already recorded under their key, acknowledged and ignored.
    pub inbound_email_duplicates: AtomicU64,
    /// Inbound e-mails refused (unauthorized, too large, malformed, not stored…).
    pub inbound_emails_refused: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything shared between the API handlers and the dispatcher.
#[derive(Debug)]
pub struct Shared {
    /// The durable store.
    pub store: AnyStore,
    /// The configuration the relay runs with.
    pub config: Config,
    /// Accepted API tokens: the configured ones and the stored ones, reloaded in the
    /// background.
    pub tokens: TokenSet,
    /// Destinations by name.
    pub destinations: BTreeMap<String, Arc<Destination>>,
    /// `[[inbound.email]]` sources by name.
    pub email_sources: BTreeMap<String, EmailSource>,
    /// `[[routes]]`, compiled.
    pub routes: crate::routes::Routes,
    /// `[[schedules]]`, compiled.
    pub schedules: crate::schedules::Schedules,
    /// The stored overrides of the destinations' breakers (forced open, disabled).
    pub overrides: Overrides,
    /// The destinations an operator paused, as shown (the store holds their messages).
    pub paused: PausedDestinations,
    /// Counters since start.
    pub counters: Counters,
    /// Queue depths (shared with the alerts, which queue messages of their own).
    pub depths: Arc<Depths>,
    /// The store's health.
    pub store_health: Health,
    /// Whether the store's disk is full (an episode of refused writes).
    pub storage: crate::health::storage::StorageFull,
    /// When the dispatcher's claim loop last went round, for the service manager's watchdog.
    pub heartbeat: crate::health::Heartbeat,
    /// Cancelled when a shutdown is requested (SIGTERM/SIGINT, [`Shared::request_shutdown`]):
    /// from then on `/readyz` and new submissions answer 503 `shutting_down`, while the API
    /// keeps serving for `server.shutdown_delay`.
    pub shutdown_requested: CancellationToken,
    /// When the shutdown was requested, on [`Shared::clock`]; set once.
    pub shutdown_requested_at: std::sync::OnceLock<Instant>,
    /// Cancelled when the relay stops: `server.shutdown_delay` after the request (or at a
    /// second request). The listener closes, the dispatcher and pollers stop, deliveries drain.
    pub shutdown: CancellationToken,
    /// Every background task (dispatcher, pollers, callback answers); `run()` waits for them.
    pub tasks: TaskTracker,
    /// When the relay started.
    pub started: Instant,
    /// The clock every policy and the store read.
    pub clock: SharedClock,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// This process's lease owner name.
    pub owner: String,
    /// Alerts about the relay's own trouble.
    pub alerts: Alerts,
    /// When the messages the dispatcher gave back fall due, for its claim loop.
    pub wakeups: Wakeups,
    /// The per-minute rollups recorded and not yet written (see [`crate::rollups`]).
    pub rollups: crate::rollups::Rollups,
    /// The breakers shared with the other relays on the store (`breaker.shared`).
    pub shared_breakers: crate::destination::shared_breaker::SharedBreakers,
    /// The send windows shared with the other relays on a PostgreSQL store.
    pub shared_limits: crate::destination::shared_limits::SharedLimits,
}

/// What [`Shared::request_shutdown`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownStep {
    /// The first request: the shutdown delay has started.
    Requested,
    /// A later request: the relay stops now, without the rest of the delay.
    Hurried,
}

/// A cheap handle to [`Shared`].
pub type AppState = Arc<Shared>;

impl Shared {
    /// Whether the relay is shutting down: a shutdown was requested, or it has stopped.
    pub fn draining(&self) -> bool {
        self.shutdown_requested.is_cancelled() || self.shutdown.is_cancelled()
    }

    /// What SIGTERM and SIGINT do. The first request starts `server.shutdown_delay`, during
    /// which the relay answers 503 `shutting_down` to `/readyz` and submissions but keeps
    /// serving and delivering; `server::run` stops it when the delay has passed. A later
    /// request stops it at once, skipping the rest of the delay.
    pub fn request_shutdown(&self) -> ShutdownStep {
        if self.shutdown_requested_at.set(self.clock.now()).is_ok() {
            self.shutdown_requested.cancel();
            ShutdownStep::Requested
        } else {
            self.shutdown.cancel();
            ShutdownStep::Hurried
        }
    }

    /// How much of `server.shutdown_delay` is left, on the relay's clock: all of it before a
    /// request.
    pub fn shutdown_delay_left(&self) -> Duration {
        let delay = self.config.server.shutdown_delay;
        match self.shutdown_requested_at.get() {
            Some(at) => delay.saturating_sub(self.clock.now().saturating_duration_since(*at)),
            None => delay,
        }
    }

    /// Runs `op`, a store call, under the probes' deadline (`health.store_timeout`) on the
    /// relay's clock: `None` when the store did not answer in time. A store that is down or
    /// unreachable can hold a call for the pool's acquire timeout or longer, and a probe must
    /// answer before its caller gives up on the relay.
    pub async fn within_probe_deadline<T>(&self, op: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            result = op => Some(result),
            () = self.clock.sleep(self.config.health.store_timeout) => None,
        }
    }

    /// Passes on `result`, an operator write's (replay, purge), after noting in
    /// [`Shared::storage`] a refusal for lack of space. A success is not taken to mean there is
    /// space again: such a write may have written nothing (a dry run, nothing matched).
    pub fn written<T>(
        &self,
        result: Result<T, ferrule_store::StoreError>,
    ) -> Result<T, ferrule_store::StoreError> {
        if let Err(e @ ferrule_store::StoreError::StorageFull { .. }) = &result {
            self.storage.refused(self.clock.system_now(), e);
        }
        result
    }

    /// What a probe reports when the store did not answer within `health.store_timeout`.
    pub fn probe_timed_out(&self) -> String {
        format!(
            "the store did not answer within {}",
            humantime::format_duration(self.config.health.store_timeout)
        )
    }

    /// Refreshes the queue depths and gauges from the store's counts, giving up after
    /// `health.store_timeout`.
    ///
    /// Submissions counted before the store is read are subtracted afterwards (they are in
    /// the store's count); those counted while it is read stay counted until the next refresh,
    /// so the estimate may run high for a moment but never low.
    pub async fn refresh_depths(&self) {
        // A submission is counted only after its commit, so everything counted here is
        // already in the depths read below.
        let counted = self.depths.counted();
        let depths = self.within_probe_deadline(self.store.depths()).await;
        match depths {
            Some(Ok(depths)) => {
                self.depths.refreshed(&depths, counted);
                self.depths
                    .export(&depths, self.destinations.keys(), self.clock.system_now());
                self.store_health.success();
                self.alerts.watch_dead_letters(depths.dead).await;
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot read queue depths from the store");
                self.store_health
                    .failure(self.clock.system_now(), format!("depths: {e}"));
            }
            None => {
                let e = self.probe_timed_out();
                tracing::warn!(error = %e, "cannot read queue depths from the store");
                self.store_health
                    .failure(self.clock.system_now(), format!("depths: {e}"));
            }
        }
        for d in self.destinations.values() {
            crate::telemetry::prometheus::breaker_state(&d.name, d.breaker.state());
        }
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
    pub(crate) fn take_due(&self, now: SystemTime) -> (bool, Option<SystemTime>) {
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        let later = due.split_off(&now);
        let passed = !due.is_empty();
        *due = later;
        // `split_off` keeps `now` itself on the later side: it is due too.
        let passed = passed || due.remove(&now);
        (passed, due.first().copied())
    }

    pub(crate) async fn notified(&self) {
        self.nudge.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakeups_answer_what_fell_due_and_the_next_time_ahead() {
        use std::time::{Duration, UNIX_EPOCH};

        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        let wakeups = Wakeups::default();
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
}
