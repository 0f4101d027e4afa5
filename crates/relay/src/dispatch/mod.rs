//! The dispatcher: claims due messages and delivers each under its destination's policies.
//!
//! One claim loop per process leases up to `batch` due messages at a time, bounded by a
//! global concurrency limit, and sleeps until the store says new work may exist
//! ([`Store::wait_for_work`]), the next message falls due ([`Store::next_due_at`], or a
//! message this process deferred or rescheduled: [`Wakeups`](crate::state::Wakeups)), or a delivery with an ordering
//! key ends. Each claimed message runs in its own supervised task:
//!
//! 0. a paused destination (Telegram flood control, a GitHub rate limit): defer to the pause's
//!    end;
//! 1. circuit breaker — open: [`Store::defer`] to when it may half-open, attempt not spent;
//! 2. rate limit — refused: defer to `ready_at`; a Telegram bot's limits per chat, per group
//!    and per bot likewise ([`crate::destination::TelegramLimiters`]; an admitted send holds its place in
//!    them until it is answered), and a GitHub token's pace for writes
//!    ([`WritePace`](ferrule_connectors::github::WritePace): one at a time per token,
//!    `min_write_interval` apart; an admitted write holds the token until it is answered, and
//!    frees it unspent if a later step refuses);
//! 3. bulkhead — full: defer by `dispatcher.defer_for`;
//! 4. chaos, then the connector under the per-attempt timeout, with the lease extended every
//!    third of its length while the attempt runs;
//! 5. the outcome: `complete`, `reschedule` at the time the destination's
//!    [`Retry`](ferrule_policy::retry::Retry) chooses (never before a `Retry-After`), or
//!    `dead_letter` on a permanent error or when retries are exhausted; and the connector's
//!    [`Signal`](ferrule_connectors::Signal), if any: pause the destination (the breaker records
//!    the attempt as ignored), force its breaker open and alert (both for every destination
//!    acting with the same GitHub token), or store a message whose chat moved with the new chat
//!    id ([`Store::replace_payload`]) and retry it.
//!
//! A panic in a delivery task is caught, logged and counted; its message is rescheduled like
//! a transient failure and the loop goes on. A panic in the claim loop restarts it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use ferrule_store::{Claimed, Store, StoreError};
use futures_util::FutureExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::state::{AppState, Counters};

mod answer;
mod attempt;
mod retry;
#[cfg(test)]
mod tests;

pub(crate) use self::attempt::panic_text;
use self::attempt::{deliver, supervised};
pub use self::retry::{RetryHistory, decide};

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
        state.heartbeat.beat();
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                permit = slots.clone().acquire_owned() => drop(permit),
            }
            continue;
        }
        let asked = free.min(cfg.batch);
        let claimed = state.store.claim_due(&state.owner, asked, cfg.lease).await;
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
        // Fewer than asked: the claim took everything claimable in its snapshot. Work that
        // arrived since has woken the store (a wake while no one waits is kept for the next
        // wait), so wait as after an empty claim rather than claim again at once only to find
        // nothing: at low rates that second claim was a transaction and a wake-up per message.
        let took_all = claimed.len() < asked;
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
        if took_all {
            idle(&state, cfg.poll_interval).await;
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
    if state.store.take_wake() {
        // Work arrived during the claim (its wake was kept for this wait): claim again at
        // once. Asking the store when the next message falls due first would be a query for
        // nothing, since that wake made the claim's own answer stale.
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
