//! Circuit breakers shared by the relays on one store: one row per destination saying whether
//! its circuit is open, until when, and which relay owns it (the one that opened it, and the
//! only one that probes when the open period ends).
//!
//! Each relay decides locally, on its hot path, as usual; a relay whose breaker opens or
//! closes publishes it here ([`Store::publish_breaker`](crate::Store::publish_breaker)), the
//! others read the rows on a short period and hold their own circuits open until the owner's
//! open period has ended and its probe has had time to answer. An owner that goes silent past
//! that is replaced by the first relay to [take it over](crate::Store::take_over_breaker), so
//! one relay probes, not every relay.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::common::check_key;
use crate::error::Result;

/// Whether a shared circuit is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SharedState {
    /// Opened by its owner: every relay holds its breaker open until `open_until`, when one
    /// of them may claim the probe.
    Open,
    /// A relay claimed the probe ([`Store::take_over_breaker`](crate::Store::take_over_breaker)):
    /// the others hold theirs open; if no verdict comes by `open_until`, another relay may
    /// claim it.
    Probing,
    /// Closed by its owner (a probe passed, or an operator reset it).
    Closed,
}

impl SharedState {
    /// The name stored.
    pub fn as_str(self) -> &'static str {
        match self {
            SharedState::Open => "open",
            SharedState::Probing => "probing",
            SharedState::Closed => "closed",
        }
    }

    /// The state a stored name stands for.
    pub(crate) fn parse(stored: &str) -> Result<Self> {
        match stored {
            "open" => Ok(SharedState::Open),
            "probing" => Ok(SharedState::Probing),
            "closed" => Ok(SharedState::Closed),
            other => Err(crate::StoreError::Corrupt {
                detail: format!("shared_breakers.state is `{other}`"),
                source: None,
            }),
        }
    }
}

/// What a relay publishes about a destination's circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerUpdate {
    /// The destination.
    pub destination: String,
    /// Open or closed.
    pub state: SharedState,
    /// When the open period ends (for a closed circuit, the time it closed).
    pub open_until: SystemTime,
    /// The relay publishing it, which becomes the owner.
    pub owner: String,
}

/// A destination's shared circuit as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedBreaker {
    /// The destination.
    pub destination: String,
    /// Open or closed.
    pub state: SharedState,
    /// When the open period ends (for a closed circuit, the time it closed).
    pub open_until: SystemTime,
    /// The relay that published it last.
    pub owner: String,
    /// Counts the publications and take-overs of this destination, from 1: a take-over names
    /// the one it replaces.
    pub epoch: u64,
    /// When it was published (the store's clock).
    pub updated_at: SystemTime,
}

/// Refuses an empty or overlong destination or owner.
pub(crate) fn check(destination: &str, owner: &str) -> Result<()> {
    check_key("destination", Some(destination), false)?;
    check_key("owner", Some(owner), false)
}
