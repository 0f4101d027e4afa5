//! Per-minute rollups of this relay's work, for `GET /v1/stats`, `ferrule stats` and the
//! dashboard's charts: recorded in memory as deliveries and runs end, added to the store in
//! one transaction every [`FLUSH_EVERY`] and at shutdown, pruned after
//! `store.rollup_retention`.
//!
//! Recording is a short lock of an in-memory [`RollupBatch`] (no store write per message).
//! A flush takes the batch and hands it to [`Store::add_rollups`], which adds into the minute
//! rows, so relays sharing a PostgreSQL database sum up. A flush that fails for a transient
//! reason puts its batch back, to go with the next one. With `store.rollup_retention = "0"` nothing is
//! recorded or written.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use ferrule_store::{RollupBatch, RunOutcome, RunStatus, Store, StoreError};

use crate::state::AppState;

/// How often the batch is added to the store.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// How often minutes past retention are pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The rollups this process has recorded and not yet flushed.
#[derive(Debug, Default)]
pub struct Rollups {
    enabled: bool,
    batch: Mutex<RollupBatch>,
}

/// The failure reason of an attempt: the status code the destination answered, else the
/// error's text (the batch cuts it to a bounded length).
pub fn reason_of(code: Option<&str>, detail: Option<&str>) -> String {
    match code {
        Some(code) if !code.is_empty() => format!("status {code}"),
        _ => detail.unwrap_or("unknown").to_owned(),
    }
}

impl Rollups {
    /// Rollups that record when `enabled`, or that do nothing.
    pub fn new(enabled: bool) -> Self {
        Rollups {
            enabled,
            batch: Mutex::default(),
        }
    }

    /// Whether rollups are recorded.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn with(&self, f: impl FnOnce(&mut RollupBatch)) {
        if self.enabled {
            f(&mut self.batch.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }

    /// An attempt delivered its message.
    pub fn delivered(
        &self,
        at: SystemTime,
        destination: &str,
        attempt: Duration,
        since_submit: Duration,
    ) {
        self.with(|b| b.delivered(at, destination, attempt, since_submit));
    }

    /// An attempt failed with `reason`; its message will be retried.
    pub fn retried(&self, at: SystemTime, destination: &str, attempt: Duration, reason: &str) {
        self.with(|b| b.retried(at, destination, attempt, reason));
    }

    /// An attempt failed with `reason` and its message was dead-lettered.
    pub fn dead_lettered(
        &self,
        at: SystemTime,
        destination: &str,
        attempt: Duration,
        permanent: bool,
        reason: &str,
    ) {
        self.with(|b| b.dead_lettered(at, destination, attempt, permanent, reason));
    }

    /// A run of `route` started.
    pub fn run_started(&self, at: SystemTime, route: &str) {
        self.with(|b| b.run(at, route, RunOutcome::Started));
    }

    /// A run of `route` finished with `status` (a cancelled run is not counted).
    pub fn run_finished(&self, at: SystemTime, route: &str, status: RunStatus) {
        let outcome = match status {
            RunStatus::Completed => RunOutcome::Completed,
            RunStatus::Failed => RunOutcome::Failed,
            RunStatus::Expired => RunOutcome::Expired,
            _ => return,
        };
        self.with(|b| b.run(at, route, outcome));
    }

    /// Adds what was recorded since the last flush to `store`, in one transaction; answers
    /// whether anything was written. A batch the store could not take for a transient reason
    /// (unreachable, busy) is kept for the next flush; one it refused is dropped, so it cannot
    /// block every later flush.
    pub async fn flush<S: Store>(&self, store: &S) -> Result<bool, StoreError> {
        let batch = std::mem::take(&mut *self.batch.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return Ok(false);
        }
        match store.add_rollups(&batch).await {
            Ok(()) => Ok(true),
            Err(e) => {
                if e.is_transient() {
                    self.batch
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .merge(batch);
                }
                Err(e)
            }
        }
    }
}

/// Flushes every [`FLUSH_EVERY`] and prunes every [`PRUNE_EVERY`] on the relay's clock until
/// shutdown (the final flush is the server's, after the deliveries drained). Time is looked
/// at four times a second on tokio's timer, so the task holds no sleep on the relay's clock.
pub async fn run(state: AppState) {
    if !state.rollups.enabled() {
        return;
    }
    let mut flush_due = state.clock.now() + FLUSH_EVERY;
    let mut prune_due = state.clock.now();
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let now = state.clock.now();
        if now >= flush_due {
            flush_due = now + FLUSH_EVERY;
            flush(&state).await;
        }
        if now >= prune_due {
            prune_due = now + PRUNE_EVERY;
            match state
                .store
                .prune_rollups(state.config.store.rollup_retention)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::debug!(rows = n, "pruned rollups past retention"),
                Err(e) => tracing::warn!(error = %e, "pruning rollups failed"),
            }
        }
    }
}

/// One flush, its failure logged (the batch waits for the next).
pub async fn flush(state: &AppState) {
    if let Err(e) = state.rollups.flush(&state.store).await {
        if e.is_transient() {
            tracing::warn!(error = %e, "writing the rollups failed; they go with the next flush");
        } else {
            tracing::error!(error = %e, "the store refused the rollups; they are dropped");
        }
    }
}

#[cfg(test)]
mod tests;

/// The windows `GET /v1/stats` and `ferrule stats` take: a number and a unit, `m` (1–999
/// minutes), `h` (1–999 hours) or `d` (1–99 days), e.g. `1h`, `24h`, `7d`. The OpenAPI
/// document says the same with [`WINDOW_PATTERN`].
pub fn parse_window(text: &str) -> Option<Duration> {
    let unit = text.chars().last()?;
    let digits = &text[..text.len() - unit.len_utf8()];
    let max_digits = if unit == 'd' { 2 } else { 3 };
    if digits.is_empty()
        || digits.len() > max_digits
        || digits.starts_with('0')
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let unit = match unit {
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(n * unit))
}

/// [`parse_window`]'s syntax as a regular expression (empty: the default, 24 hours).
pub const WINDOW_PATTERN: &str = "^([1-9][0-9]{0,2}[mh]|[1-9][0-9]?d)?$";
