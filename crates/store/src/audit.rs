//! The audit log: one row per operator action (a breaker reset, a replay, a purge, a token
//! created …) saying who did what, when, to how many messages, and with what detail.
//!
//! The store keeps entries as given and never changes them: the relay decides which actions
//! it records and how it names them. Entries are ordered by their sequence number (the
//! order they were written), newest first when listed.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::check_key;
use crate::error::{Result, StoreError};
use crate::types::Cursor;

/// Longest `detail` accepted, serialised: what an operator did, not a copy of the messages.
pub const MAX_DETAIL_BYTES: usize = 16 * 1024;

/// An action to record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    /// Who: the name of the caller's token, or how the CLI names its user.
    pub actor: String,
    /// What, e.g. `breaker.reset` or `dead_letters.replay`.
    pub action: String,
    /// What it was done to, e.g. a destination's name or a message's id, if one thing.
    pub target: Option<String>,
    /// How many messages it touched, when it touched messages.
    pub count: Option<u64>,
    /// Anything else worth keeping (the filter used, a reason), as a JSON object.
    pub detail: Value,
}

impl NewAuditEntry {
    /// `actor` did `action`, with no target, count or detail yet.
    pub fn new(actor: impl Into<String>, action: impl Into<String>) -> Self {
        NewAuditEntry {
            actor: actor.into(),
            action: action.into(),
            target: None,
            count: None,
            detail: Value::Object(Default::default()),
        }
    }

    /// The same entry done to `target`.
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// The same entry having touched `count` messages.
    pub fn count(mut self, count: u64) -> Self {
        self.count = Some(count);
        self
    }

    /// The same entry with `detail`.
    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }
}

/// A recorded action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its position in the log: higher is later.
    pub seq: i64,
    /// When it was recorded (the store's clock).
    pub at: SystemTime,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// What it was done to.
    pub target: Option<String>,
    /// How many messages it touched.
    pub count: Option<u64>,
    /// The rest.
    pub detail: Value,
}

/// Which entries [`Store::list_audit`](crate::Store::list_audit) answers; every field given
/// must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Only this actor's.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only those recorded at or after this time.
    pub since: Option<SystemTime>,
}

/// One page of [`Store::list_audit`](crate::Store::list_audit), newest entry first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    /// The entries on this page.
    pub entries: Vec<AuditEntry>,
    /// Where the next page starts, if there may be one.
    pub next: Option<Cursor>,
}

/// An entry checked and its detail serialised, ready to bind.
#[derive(Debug, Clone)]
pub(crate) struct EncodedAudit {
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) target: Option<String>,
    pub(crate) count: Option<i64>,
    pub(crate) detail: String,
}

/// Refuses an empty or overlong actor, action or target, a detail that is not an object or
/// is over [`MAX_DETAIL_BYTES`], and a count beyond `i64`.
pub(crate) fn encode(entry: NewAuditEntry) -> Result<EncodedAudit> {
    check_key("actor", Some(&entry.actor), false)?;
    check_key("action", Some(&entry.action), false)?;
    check_key("target", entry.target.as_deref(), true)?;
    if !entry.detail.is_object() {
        return Err(StoreError::InvalidOption {
            field: "detail",
            reason: "must be a JSON object".into(),
        });
    }
    let detail = entry.detail.to_string();
    if detail.len() > MAX_DETAIL_BYTES {
        return Err(StoreError::InvalidOption {
            field: "detail",
            reason: format!(
                "is {} bytes; the maximum is {MAX_DETAIL_BYTES}",
                detail.len()
            ),
        });
    }
    let count =
        entry
            .count
            .map(i64::try_from)
            .transpose()
            .map_err(|_| StoreError::InvalidOption {
                field: "count",
                reason: "is too large".into(),
            })?;
    Ok(EncodedAudit {
        actor: entry.actor,
        action: entry.action,
        target: entry.target,
        count,
        detail,
    })
}
