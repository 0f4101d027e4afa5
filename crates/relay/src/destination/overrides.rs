//! Overrides of destinations' circuit breakers — forced open or disabled, by an operator or by
//! the relay when a destination rejects its credentials — kept in the store's meta table, so
//! they survive a restart and reach every relay sharing the database.
//!
//! Each override is one key, `relay.breakers.<destination>`, holding JSON
//! `{"state", "set_at", "set_by", "reason"?}`. It is written before the breaker changes (and
//! before the API answers) and deleted by a reset. At start a relay applies what is stored; on
//! a store shared by several relays (PostgreSQL) each relay reads the overrides again every
//! [`FOLLOW_EVERY`] and applies what another relay changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferrule_policy::CircuitState;
use ferrule_policy::breaker::CircuitBreaker;
use ferrule_store::{AnyStore, Store, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::Destination;

/// The prefix of the meta keys overrides are stored under.
pub const META_PREFIX: &str = "relay.breakers.";

/// How often a relay sharing its store with others reads the overrides again: an override set
/// through one relay reaches the others within this long.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(5);

/// `set_by` of an override the relay set itself (a destination rejected its credentials).
pub const SET_BY_RELAY: &str = "relay";

/// What an override holds a breaker in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverrideState {
    /// Every attempt is refused (deferred) until a reset.
    ForcedOpen,
    /// Every attempt passes and nothing is recorded until a reset.
    Disabled,
}

impl OverrideState {
    /// The breaker state it holds the breaker in.
    pub fn circuit_state(self) -> CircuitState {
        match self {
            OverrideState::ForcedOpen => CircuitState::ForcedOpen,
            OverrideState::Disabled => CircuitState::Disabled,
        }
    }
}

/// One stored override: what, when, who and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    /// The state the breaker is held in.
    pub state: OverrideState,
    /// When it was set (RFC 3339).
    pub set_at: String,
    /// Who set it: the name of the API caller's token (see [`TokenSet::caller_name`]), or
    /// [`SET_BY_RELAY`].
    ///
    /// [`TokenSet::caller_name`]: crate::auth::TokenSet::caller_name
    pub set_by: String,
    /// Why, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Override {
    /// An override to `state`, set at `at` by `set_by` for `reason`.
    pub fn new(
        state: OverrideState,
        at: SystemTime,
        set_by: impl Into<String>,
        reason: Option<String>,
    ) -> Self {
        Override {
            state,
            set_at: crate::time::rfc3339(at),
            set_by: set_by.into(),
            reason,
        }
    }

    /// Holds `breaker` in this override's state (nothing happens when it is there already).
    fn apply(&self, breaker: &CircuitBreaker) {
        if breaker.state() == self.state.circuit_state() {
            return;
        }
        match self.state {
            OverrideState::ForcedOpen => breaker.force_open(),
            OverrideState::Disabled => breaker.disable(),
        }
    }
}

/// The store key of `destination`'s override.
fn key(destination: &str) -> String {
    format!("{META_PREFIX}{destination}")
}

/// The overrides a relay applied or wrote, by destination.
///
/// Its lock orders this relay's writes and reads of the stored overrides: an override written
/// here is never undone by a [`follow`](Self::follow) that read the store just before it.
#[derive(Debug, Default)]
pub struct Overrides {
    known: Mutex<BTreeMap<String, Override>>,
}

impl Overrides {
    /// Reads the stored overrides and holds the breakers of `destinations` in them (at start).
    /// An override of a destination no longer configured is kept in the store and logged.
    pub async fn load(
        store: &AnyStore,
        destinations: &BTreeMap<String, Arc<Destination>>,
    ) -> Result<Self, StoreError> {
        let overrides = Overrides::default();
        let mut known = overrides.known.lock().await;
        for (name, stored) in read(store).await? {
            let Some(stored) = stored else { continue };
            match destinations.get(&name) {
                Some(d) => {
                    stored.apply(&d.breaker);
                    tracing::info!(destination = %name, state = ?stored.state, set_by = %stored.set_by, set_at = %stored.set_at, "breaker override restored");
                    known.insert(name, stored);
                }
                None => {
                    tracing::info!(destination = %name, "a stored breaker override names no configured destination; kept")
                }
            }
        }
        drop(known);
        Ok(overrides)
    }

    /// `destination`'s override, if it has one.
    pub async fn get(&self, destination: &str) -> Option<Override> {
        self.known.lock().await.get(destination).cloned()
    }

    /// Stores `set` as `destination`'s override, then holds its breaker in it. Nothing changes
    /// when the store refuses the write.
    pub async fn set(
        &self,
        store: &AnyStore,
        destination: &Destination,
        set: Override,
    ) -> Result<(), StoreError> {
        let mut known = self.known.lock().await;
        let json = serde_json::to_string(&set).expect("an override serialises");
        store.set_meta(&key(&destination.name), &json).await?;
        set.apply(&destination.breaker);
        known.insert(destination.name.clone(), set);
        Ok(())
    }

    /// Deletes `destination`'s override, if any, then closes its breaker (a reset). Nothing
    /// changes when the store refuses the delete.
    pub async fn reset(
        &self,
        store: &AnyStore,
        destination: &Destination,
    ) -> Result<(), StoreError> {
        let mut known = self.known.lock().await;
        store.delete_meta(&key(&destination.name)).await?;
        destination.breaker.reset();
        known.remove(&destination.name);
        Ok(())
    }

    /// Reads the stored overrides and applies what changed since this relay last applied or
    /// wrote them: an override set or replaced elsewhere is applied, one deleted elsewhere (a
    /// reset) closes the breaker it held. Answers how many destinations changed. A damaged
    /// entry leaves its destination as it is.
    pub async fn follow(
        &self,
        store: &AnyStore,
        destinations: &BTreeMap<String, Arc<Destination>>,
    ) -> Result<usize, StoreError> {
        let mut known = self.known.lock().await;
        let mut stored = read(store).await?;
        let mut changed = 0;
        for (name, d) in destinations {
            let now = match stored.remove(name) {
                Some(None) => continue,
                Some(Some(o)) => Some(o),
                None => None,
            };
            if known.get(name) == now.as_ref() {
                continue;
            }
            changed += 1;
            match now {
                Some(o) => {
                    o.apply(&d.breaker);
                    tracing::info!(destination = %name, state = ?o.state, set_by = %o.set_by, set_at = %o.set_at, "breaker override set through another relay applied");
                    known.insert(name.clone(), o);
                }
                None => {
                    if matches!(
                        d.breaker.state(),
                        CircuitState::ForcedOpen | CircuitState::Disabled
                    ) {
                        d.breaker.reset();
                    }
                    tracing::info!(destination = %name, "breaker reset through another relay applied");
                    known.remove(name);
                }
            }
        }
        Ok(changed)
    }

    /// Follows the stored overrides every [`FOLLOW_EVERY`] on `clock` until `stop`.
    pub async fn follow_until(
        &self,
        store: &AnyStore,
        destinations: &BTreeMap<String, Arc<Destination>>,
        clock: &ferrule_policy::SharedClock,
        stop: &tokio_util::sync::CancellationToken,
    ) {
        super::follow_every(clock, FOLLOW_EVERY, stop, "the breaker overrides", || {
            self.follow(store, destinations)
        })
        .await;
    }
}

/// Every stored override by destination; `None` for an entry that cannot be read (logged).
async fn read(store: &AnyStore) -> Result<BTreeMap<String, Option<Override>>, StoreError> {
    let entries = store.list_meta(META_PREFIX).await?;
    Ok(entries
        .into_iter()
        .filter_map(|(key, value)| {
            let name = key.strip_prefix(META_PREFIX)?.to_owned();
            let parsed = serde_json::from_str::<Override>(&value)
                .inspect_err(|e| {
                    tracing::warn!(key, error = %e, "a stored breaker override cannot be read; ignored");
                })
                .ok();
            Some((name, parsed))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_is_stored_as_documented() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let o = Override::new(OverrideState::ForcedOpen, at, "api:1f2e3d4c", None);
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            serde_json::json!({"state": "forced_open", "set_at": "2026-01-01T00:00:00.000Z", "set_by": "api:1f2e3d4c"})
        );
        let text = r#"{"state": "disabled", "set_at": "2026-01-01T00:00:00.000Z", "set_by": "relay", "reason": "r"}"#;
        let back: Override = serde_json::from_str(text).unwrap();
        assert_eq!(back.state.circuit_state(), CircuitState::Disabled);
        assert_eq!(back.reason.as_deref(), Some("r"));
    }
}
