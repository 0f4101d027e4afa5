//! Paused destinations: an operator holds a destination's deliveries without losing them.
//!
//! A paused destination's messages stay as they are (queued, retrying, scheduled) and are not
//! claimed by [`Store::claim_due`](crate::Store::claim_due) on any process sharing the store,
//! nor counted by [`Store::next_due_at`](crate::Store::next_due_at), until it is resumed. A
//! message already leased when the pause is written finishes its attempt.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::common::check_key;
use crate::error::Result;

/// Longest `reason` kept with a pause.
pub const MAX_REASON_BYTES: usize = 2048;

/// A paused destination: who paused it, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    /// The destination.
    pub destination: String,
    /// When it was paused (the store's clock).
    pub paused_at: SystemTime,
    /// Who paused it.
    pub paused_by: String,
    /// Why, when given.
    pub reason: Option<String>,
}

/// Refuses an empty or overlong destination or `by`, and an overlong reason.
pub(crate) fn check(destination: &str, by: &str, reason: Option<&str>) -> Result<()> {
    check_key("destination", Some(destination), false)?;
    check_key("paused_by", Some(by), false)?;
    if let Some(reason) = reason
        && reason.len() > MAX_REASON_BYTES
    {
        return Err(crate::StoreError::InvalidOption {
            field: "reason",
            reason: format!(
                "is {} bytes; the maximum is {MAX_REASON_BYTES}",
                reason.len()
            ),
        });
    }
    Ok(())
}
