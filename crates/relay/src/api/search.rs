//! The message search's filters shared by `GET /v1/messages` and `GET /v1/dead-letters`:
//! creation time (`since`, `until`), `idempotency_key`, `ordering_key` and text in the
//! payload (`payload_contains`, only within a bounded time range), with their part of the
//! OpenAPI document.

use ferrule_store::Filter;
use ferrule_store::types::MAX_TEXT_SEARCH_SPAN;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::error::ApiError;
use super::openapi::{query, time_query};
use crate::time::parse_rfc3339;

/// The search parameters of a listing's query, as given.
#[derive(Debug, Default)]
pub(crate) struct Search {
    pub(crate) since: Option<String>,
    pub(crate) until: Option<String>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) ordering_key: Option<String>,
    pub(crate) payload_contains: Option<String>,
}

fn invalid(field: &str, message: String) -> ApiError {
    ApiError::bad_request("invalid_query", message).with_field(field)
}

fn time(field: &str, text: Option<String>) -> Result<Option<std::time::SystemTime>, ApiError> {
    match text.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(text) => parse_rfc3339(&text).map(Some).ok_or_else(|| {
            invalid(
                field,
                format!("`{field}` `{text}` is not an RFC 3339 time, e.g. 2026-01-01T00:00:00Z"),
            )
        }),
    }
}

fn key(field: &str, text: Option<String>) -> Result<Option<String>, ApiError> {
    match text.filter(|t| !t.is_empty()) {
        Some(k) if k.len() > 512 => Err(invalid(field, format!("`{field}` is at most 512 bytes"))),
        k => Ok(k),
    }
}

impl Search {
    /// Adds these filters to `filter`; 400 `invalid_query` naming the field for a time that
    /// does not parse or a text over 512 bytes.
    ///
    /// A payload text search reads every payload in its creation-time range, so that range
    /// spans at most [`MAX_TEXT_SEARCH_SPAN`] (7 days): it ends at `until` (or `now`) and
    /// starts at `since` or 7 days before its end, whichever is later. When that narrowed
    /// `since`, the start it searched from is returned, for the answer to say so.
    pub(crate) fn apply(
        self,
        filter: &mut Filter,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, ApiError> {
        filter.created_from = time("since", self.since)?;
        filter.created_until = time("until", self.until)?;
        filter.idempotency_key = key("idempotency_key", self.idempotency_key)?;
        filter.ordering_key = key("ordering_key", self.ordering_key)?;
        filter.payload_contains = key("payload_contains", self.payload_contains)?;
        if filter.payload_contains.is_none() {
            return Ok(None);
        }
        let until = *filter.created_until.get_or_insert(now);
        let earliest = until
            .checked_sub(MAX_TEXT_SEARCH_SPAN)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        match filter.created_from {
            Some(from) if from >= earliest => Ok(None),
            _ => {
                filter.created_from = Some(earliest);
                Ok(Some(earliest))
            }
        }
    }
}

/// The search's query parameters in the OpenAPI document.
pub(crate) fn openapi_parameters() -> [Value; 5] {
    let time = time_query();
    let key = json!({"type": "string", "maxLength": 512});
    [
        query(
            "since",
            "only messages created at or after this time (RFC 3339)",
            time.clone(),
        ),
        query(
            "until",
            "only messages created before this time (RFC 3339)",
            time,
        ),
        query(
            "idempotency_key",
            "only the message(s) submitted with this `Idempotency-Key`",
            key.clone(),
        ),
        query(
            "ordering_key",
            "only messages with this ordering key",
            key.clone(),
        ),
        query(
            "payload_contains",
            "only messages whose payload (as JSON text) contains this text, case-sensitive. It reads every payload in its time range, so that range spans at most 7 days: it ends at `until` (or now) and starts at `since` or 7 days before its end, whichever is later; the page's `payload_search_since` then says where it started. Give `since` and `until` for a range that does not move between pages",
            key,
        ),
    ]
}
