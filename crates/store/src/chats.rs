//! Routes' chat mappings set through the relay's API: for a route, a key (a repository
//! `owner/repo`, a login…) and the Telegram chat id its templates read as `chats[key]`.
//!
//! The store keeps only the entries set through the API, one row per route and key, with when
//! and by whom each was last set. The relay lays them over the route's configured
//! `[[routes.chats]]`; which entries win is its business, not the store's.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::common::check_key;
use crate::error::{Result, StoreError};

/// Longest key, in characters (not bytes).
pub const MAX_KEY_CHARS: usize = 200;

/// One route's mapping of a key to a chat, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteChat {
    /// The route.
    pub route: String,
    /// What is mapped: any text a template looks up, e.g. `owner/repo`.
    pub key: String,
    /// The Telegram chat id.
    pub chat_id: i64,
    /// When it was last set (the store's clock).
    pub updated_at: SystemTime,
    /// Who last set it.
    pub updated_by: String,
}

/// Refuses an empty or overlong route or `by`, and a key that is blank, holds a control
/// character or is over [`MAX_KEY_CHARS`] characters.
pub(crate) fn check(route: &str, key: &str, by: Option<&str>) -> Result<()> {
    check_key("route", Some(route), false)?;
    if key.trim().is_empty() {
        return Err(StoreError::InvalidOption {
            field: "key",
            reason: "must not be empty".into(),
        });
    }
    if key.chars().any(char::is_control) {
        return Err(StoreError::InvalidOption {
            field: "key",
            reason: "must not contain control characters".into(),
        });
    }
    let chars = key.chars().count();
    if chars > MAX_KEY_CHARS {
        return Err(StoreError::InvalidOption {
            field: "key",
            reason: format!("is {chars} characters; the maximum is {MAX_KEY_CHARS}"),
        });
    }
    if let Some(by) = by {
        check_key("updated_by", Some(by), false)?;
    }
    Ok(())
}
