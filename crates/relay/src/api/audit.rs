//! `GET /v1/audit`: the audit log of operator actions, newest first (what it records is
//! [`crate::audit`]'s), and its part of the OpenAPI document.

use axum::Json;
use axum::extract::State;
use ferrule_store::{AuditEntry, AuditFilter, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::ApiQuery;
use super::openapi::{error, ok, op, paging, query, schema, unavailable};
use crate::audit::Action;
use crate::state::AppState;
use crate::time::{parse_rfc3339, rfc3339};

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// An audit entry as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct AuditView {
    seq: i64,
    at: String,
    actor: String,
    action: String,
    target: Option<String>,
    count: Option<u64>,
    detail: Value,
}

impl From<AuditEntry> for AuditView {
    fn from(e: AuditEntry) -> Self {
        AuditView {
            seq: e.seq,
            at: rfc3339(e.at),
            actor: e.actor,
            action: e.action,
            target: e.target,
            count: e.count,
            detail: e.detail,
        }
    }
}

fn invalid(field: &str, message: String) -> ApiError {
    ApiError::bad_request("invalid_query", message).with_field(field)
}

/// `GET /v1/audit?actor=&action=&since=&cursor=&limit=`: recorded operator actions, newest
/// first; an empty parameter is no filter.
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(invalid(
            "limit",
            "`limit` must be between 1 and 1000".into(),
        ));
    }
    let actor = q.actor.filter(|a| !a.is_empty());
    if actor.as_ref().is_some_and(|a| a.len() > 512) {
        return Err(invalid("actor", "`actor` is at most 512 bytes".into()));
    }
    let action = match q.action.filter(|a| !a.is_empty()) {
        None => None,
        Some(name) => match Action::from_name(&name) {
            Some(action) => Some(action.as_str().to_owned()),
            None => {
                return Err(invalid(
                    "action",
                    format!("`action` `{name}` is not an action the audit log records"),
                ));
            }
        },
    };
    let since = match q.since.filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(parse_rfc3339(&text).ok_or_else(|| {
            invalid(
                "since",
                format!("`since` `{text}` is not an RFC 3339 time, e.g. 2026-01-01T00:00:00Z"),
            )
        })?),
    };
    let cursor = super::messages::parse_cursor(q.cursor)?;
    let filter = AuditFilter {
        actor,
        action,
        since,
    };
    let page = state
        .store
        .list_audit(&filter, cursor.as_ref(), limit)
        .await?;
    let entries: Vec<AuditView> = page.entries.into_iter().map(AuditView::from).collect();
    Ok(Json(json!({
        "entries": entries,
        "next": page.next.map(|c| c.as_str().to_owned()),
    })))
}

/// The audit log's paths in the OpenAPI document, without their security (added from the
/// routes).
pub(crate) fn openapi_paths() -> Value {
    let paging = paging();
    let names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
    let mut list = op(
        "listAudit",
        "Recorded operator actions, newest first",
        json!({"200": ok("a page", schema("AuditPage")), "400": error("a bad query parameter (`invalid_query`, with `error.field`) or cursor"), "503": unavailable("the store is unavailable or busy (`store_unavailable`, `store_busy`); try again after `Retry-After`")}),
    );
    list["description"] = json!(
        "Every change an operator made: breaker resets, force-opens and disables, dead-letter replays and purges, message cancels and replays, pauses and resumes, run retries and cancels (through the API or the dashboard at `/ui`), stored tokens created and revoked. Each says who (the caller's token name; `api:` and the start of its hash for an unnamed configured token; `cli:<user>` for the CLI), what, when, what to, how many messages, and the filter or reason. Dry runs are not recorded."
    );
    list["parameters"] = json!([
        query(
            "actor",
            "only this actor's, e.g. `ops`",
            json!({"type": "string", "maxLength": 512})
        ),
        query(
            "action",
            "only this action; empty for every action",
            super::openapi::or_empty(json!({"type": "string", "enum": names}))
        ),
        query(
            "since",
            "only those recorded at or after this time (RFC 3339)",
            super::openapi::time_query()
        ),
        paging[0],
        paging[1],
    ]);
    json!({"/v1/audit": {"get": list}})
}

/// The audit log's schemas in the OpenAPI document.
pub(crate) fn openapi_schemas() -> Value {
    let names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
    json!({
        "AuditEntry": {"type": "object", "required": ["seq", "at", "actor", "action", "target", "count", "detail"], "properties": {
            "seq": {"type": "integer", "minimum": 1, "description": "its position in the log: higher is later"},
            "at": {"type": "string", "format": "date-time"},
            "actor": {"type": "string", "description": "the caller's token name"},
            "action": {"type": "string", "enum": names},
            "target": {"type": ["string", "null"], "description": "a destination, a message id or a token name"},
            "count": {"type": ["integer", "null"], "minimum": 0, "description": "how many messages it touched"},
            "detail": {"type": "object", "description": "the filter used, a reason, …"}}},
        "AuditPage": {"type": "object", "required": ["entries", "next"], "properties": {
            "entries": {"type": "array", "items": schema("AuditEntry")},
            "next": {"type": ["string", "null"], "pattern": "^(0|[1-9][0-9]{0,17})$"}}},
    })
}
