//! A schedule's pause, durable in the store's meta table under `relay.schedules.<name>`, so
//! every relay sharing the store honours it: a paused schedule's occurrences pass by without
//! firing or being recorded, and after a resume none of them is caught up.

use std::time::SystemTime;

use ferrule_store::{AnyStore, Store, StoreError};
use serde::{Deserialize, Serialize};

/// What is stored of a schedule's pause: paused or not, who changed it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseState {
    /// Whether it is paused now.
    pub paused: bool,
    /// Who paused or resumed it.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
    /// Why, when given with the pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl PauseState {
    /// When it was paused or resumed, read back.
    pub fn at(&self) -> Option<SystemTime> {
        crate::time::parse_rfc3339(&self.at)
    }
}

/// The meta key of `schedule`'s pause.
pub fn pause_key(schedule: &str) -> String {
    format!("relay.schedules.{schedule}")
}

/// The stored pause of `schedule`, if it was ever paused. A value that does not read is taken
/// as not paused (and logged): a schedule keeps firing rather than stopping on bad state.
pub async fn read_pause(
    store: &AnyStore,
    schedule: &str,
) -> Result<Option<PauseState>, StoreError> {
    let Some(text) = store.get_meta(&pause_key(schedule)).await? else {
        return Ok(None);
    };
    match serde_json::from_str(&text) {
        Ok(state) => Ok(Some(state)),
        Err(e) => {
            tracing::warn!(schedule, error = %e, "cannot read the schedule's stored pause; taken as not paused");
            Ok(None)
        }
    }
}

/// Stores `state` as `schedule`'s pause.
pub async fn write_pause(
    store: &AnyStore,
    schedule: &str,
    state: &PauseState,
) -> Result<(), StoreError> {
    let text = serde_json::to_string(state).unwrap_or_default();
    store.set_meta(&pause_key(schedule), &text).await
}
