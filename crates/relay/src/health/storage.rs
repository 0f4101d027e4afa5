//! A full store disk as one episode, from the first write refused for lack of space to the
//! first write that succeeds again: logged once at each end, shown by `/readyz` and `/status`.
//!
//! Every write that reaches the store reports its result here ([`StorageFull::observe`]): a
//! [`StoreError::StorageFull`] starts an episode (one ERROR line) or adds to it, and a
//! successful write ends it (one INFO line with how long it lasted and how many writes were
//! refused). While an episode lasts, submissions are answered 503 `storage_full` with a
//! `Retry-After`, and `/readyz` answers 503 until a write of its own succeeds.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use ferrule_store::StoreError;
use serde::Serialize;

use crate::telemetry::prometheus::STORAGE_FULL;

/// An episode in progress, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Episode {
    /// When the first write was refused (RFC 3339).
    pub since: String,
    /// Writes refused since then, the first included.
    pub refused_writes: u64,
    /// The store's error for the first refused write, with its cause.
    pub reason: String,
    #[serde(skip)]
    started: SystemTime,
}

/// Whether the store's disk is full, tracked from the results of its writes.
#[derive(Debug, Default)]
pub struct StorageFull {
    /// Set while an episode lasts, so a successful write costs one atomic load.
    active: AtomicBool,
    episode: Mutex<Option<Episode>>,
}

impl StorageFull {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Episode>> {
        self.episode.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes the result of a store write made at `now`: a full disk starts or continues an
    /// episode, a success ends one, and any other error says nothing about space.
    pub fn observe<T>(&self, now: SystemTime, result: &Result<T, StoreError>) {
        match result {
            Ok(_) => self.wrote(now),
            Err(e @ StoreError::StorageFull { .. }) => self.refused(now, e),
            Err(_) => {}
        }
    }

    /// A write was refused for lack of space at `now`.
    pub fn refused(&self, now: SystemTime, err: &StoreError) {
        let mut episode = self.lock();
        match episode.as_mut() {
            Some(e) => e.refused_writes = e.refused_writes.saturating_add(1),
            None => {
                let reason = with_causes(err);
                tracing::error!(error = %reason, "the store's disk is full: submissions are refused with 503 until a write succeeds again");
                metrics::gauge!(STORAGE_FULL.name).set(1.0);
                *episode = Some(Episode {
                    since: crate::time::rfc3339(now),
                    refused_writes: 1,
                    reason,
                    started: now,
                });
                self.active.store(true, Ordering::Release);
            }
        }
    }

    /// A write succeeded at `now`: ends the episode, if one is in progress.
    pub fn wrote(&self, now: SystemTime) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        let Some(episode) = self.lock().take() else {
            return;
        };
        self.active.store(false, Ordering::Release);
        metrics::gauge!(STORAGE_FULL.name).set(0.0);
        let lasted = now
            .duration_since(episode.started)
            .unwrap_or(Duration::ZERO);
        tracing::info!(
            lasted_ms = lasted.as_millis() as u64,
            refused_writes = episode.refused_writes,
            "the store writes again: its disk is no longer full"
        );
    }

    /// Whether an episode is in progress.
    pub fn is_full(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// The episode in progress, if any.
    pub fn current(&self) -> Option<Episode> {
        if !self.is_full() {
            return None;
        }
        self.lock().clone()
    }
}

/// `err` followed by each of its causes, separated by `: `.
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> StoreError {
        StoreError::storage_full(
            "committing a write batch",
            "database or disk is full".to_owned(),
        )
    }

    #[test]
    fn one_episode_from_the_first_refusal_to_the_first_success() {
        let s = StorageFull::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(!s.is_full());
        s.wrote(t0);
        assert!(s.current().is_none());
        s.observe::<()>(t0, &Err(full()));
        s.observe::<()>(t0 + Duration::from_secs(1), &Err(full()));
        // Errors that are not about space neither start nor end an episode.
        s.observe::<()>(t0, &Err(StoreError::Closed));
        let e = s.current().expect("an episode");
        assert_eq!(e.refused_writes, 2);
        assert_eq!(e.since, crate::time::rfc3339(t0));
        assert_eq!(
            e.reason,
            "store storage is full while committing a write batch: database or disk is full"
        );
        s.observe(t0 + Duration::from_secs(2), &Ok(()));
        assert!(!s.is_full());
        assert!(s.current().is_none());
        s.refused(t0 + Duration::from_secs(3), &full());
        assert_eq!(s.current().unwrap().refused_writes, 1, "a new episode");
    }
}
