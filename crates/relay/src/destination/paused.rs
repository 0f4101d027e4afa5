//! Destinations an operator paused, as this relay knows them.
//!
//! The pause itself is the store's (`Store::pause_destination`): claims on every relay
//! sharing the store skip a paused destination's messages from the moment it is written, so
//! nothing here gates deliveries. What this keeps is the view shown by `/v1/destinations` and
//! `/status`: read at start, updated by this relay's own pauses and resumes, and on a store
//! shared by several relays (PostgreSQL) read again every [`FOLLOW_EVERY`], so a pause made
//! through another relay shows here within that long.

use std::collections::BTreeMap;
use std::time::Duration;

use ferrule_store::{AnyStore, Paused, Store, StoreError};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// How often a relay sharing its store with others reads the paused destinations again.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(5);

/// The paused destinations, by name.
#[derive(Debug, Default)]
pub struct PausedDestinations {
    known: Mutex<BTreeMap<String, Paused>>,
}

impl PausedDestinations {
    /// Reads the paused destinations from the store (at start). One that names no configured
    /// destination is kept in the store and logged.
    pub async fn load(
        store: &AnyStore,
        configured: impl Fn(&str) -> bool,
    ) -> Result<Self, StoreError> {
        let paused = PausedDestinations::default();
        let mut known = paused.known.lock().await;
        for p in store.paused_destinations().await? {
            if configured(&p.destination) {
                tracing::info!(destination = %p.destination, paused_by = %p.paused_by, "destination paused; its messages wait until it is resumed");
            } else {
                tracing::info!(destination = %p.destination, "a paused destination is not configured; kept paused");
            }
            known.insert(p.destination.clone(), p);
        }
        drop(known);
        Ok(paused)
    }

    /// `destination`'s pause, if it is paused.
    pub async fn get(&self, destination: &str) -> Option<Paused> {
        self.known.lock().await.get(destination).cloned()
    }

    /// Pauses `destination` in the store (keeping a pause already there) and answers the
    /// pause stored.
    pub async fn pause(
        &self,
        store: &AnyStore,
        destination: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<Paused, StoreError> {
        let mut known = self.known.lock().await;
        let paused = store.pause_destination(destination, by, reason).await?;
        known.insert(destination.to_owned(), paused.clone());
        Ok(paused)
    }

    /// Resumes `destination` in the store; answers whether it was paused.
    pub async fn resume(&self, store: &AnyStore, destination: &str) -> Result<bool, StoreError> {
        let mut known = self.known.lock().await;
        let was = store.resume_destination(destination).await?;
        known.remove(destination);
        Ok(was)
    }

    /// Reads the paused destinations again; answers how many changed since.
    pub async fn follow(&self, store: &AnyStore) -> Result<usize, StoreError> {
        let mut known = self.known.lock().await;
        let now: BTreeMap<String, Paused> = store
            .paused_destinations()
            .await?
            .into_iter()
            .map(|p| (p.destination.clone(), p))
            .collect();
        let changed = known
            .keys()
            .chain(now.keys())
            .filter(|name| known.get(*name) != now.get(*name))
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        *known = now;
        Ok(changed)
    }

    /// Follows the store every [`FOLLOW_EVERY`] on `clock` until `stop`.
    pub async fn follow_until(
        &self,
        store: &AnyStore,
        clock: &ferrule_policy::SharedClock,
        stop: &tokio_util::sync::CancellationToken,
    ) {
        super::follow_every(clock, FOLLOW_EVERY, stop, "the paused destinations", || {
            self.follow(store)
        })
        .await;
    }
}

/// How the API shows a pause: `{paused_at, paused_by, reason}`, or `null` when not paused.
pub fn view(paused: Option<&Paused>) -> Value {
    match paused {
        None => Value::Null,
        Some(p) => json!({
            "paused_at": crate::time::rfc3339(p.paused_at),
            "paused_by": p.paused_by,
            "reason": p.reason,
        }),
    }
}
