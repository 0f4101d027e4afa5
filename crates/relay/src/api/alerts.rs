//! `GET /v1/alerts`: the alert log, newest first (what it records is [`crate::alerts`]'),
//! and its part of the OpenAPI document.

use axum::Json;
use axum::extract::State;
use ferrule_store::{AlertFilter, AlertRecord, Cursor, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::ApiQuery;
use super::openapi::{error, ok, op, query, schema, unavailable};
use crate::alerts::{AlertKind, Raised};
use crate::state::AppState;
use crate::time::{parse_rfc3339, rfc3339};

/// What a page's `next` (an alert's id, a ULID) looks like, and so every cursor accepted.
const CURSOR_PATTERN: &str = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$";

/// Query of `GET /v1/alerts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertsQuery {
    #[serde(default)]
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) subject: Option<String>,
    #[serde(default)]
    pub(crate) since: Option<String>,
    #[serde(default)]
    pub(crate) until: Option<String>,
    #[serde(default)]
    pub(crate) cursor: Option<String>,
    #[serde(default)]
    pub(crate) limit: Option<usize>,
}

/// An alert as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct AlertView {
    id: String,
    at: String,
    kind: String,
    subject: String,
    severity: Option<String>,
    message: String,
    outcome: String,
    messages: Vec<String>,
}

impl From<AlertRecord> for AlertView {
    fn from(a: AlertRecord) -> Self {
        AlertView {
            id: a.id.to_string(),
            at: rfc3339(a.at),
            kind: a.kind,
            subject: a.subject,
            severity: a.severity,
            message: a.message,
            outcome: a.outcome,
            messages: a.messages.iter().map(ToString::to_string).collect(),
        }
    }
}

fn invalid(field: &str, message: String) -> ApiError {
    ApiError::bad_request("invalid_query", message).with_field(field)
}

/// Whether `text` is a page's `next`: a ULID in upper-case Crockford base32.
fn is_cursor(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 26
        && (b'0'..=b'7').contains(&bytes[0])
        && bytes[1..].iter().all(|b| {
            b.is_ascii_digit()
                || (b.is_ascii_uppercase() && !matches!(b, b'I' | b'L' | b'O' | b'U'))
        })
}

fn time(field: &str, text: Option<String>) -> Result<Option<std::time::SystemTime>, ApiError> {
    match text.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(text) => parse_rfc3339(&text).map(Some).ok_or_else(|| {
            invalid(
                field,
                format!("`{field}` `{text}` is not an RFC 3339 time, e.g. 2026-01-01T00:00:00Z"),
            )
        }),
    }
}

/// The filter and cursor `q` asks for (an empty parameter is no filter), or the 400 naming
/// the parameter that is wrong. The dashboard's Alerts page reads its query with this too.
pub(crate) fn parse(q: AlertsQuery) -> Result<(AlertFilter, Option<Cursor>), ApiError> {
    let kind = match q.kind.filter(|k| !k.is_empty()) {
        None => None,
        Some(name) => match AlertKind::from_name(&name) {
            Some(kind) => Some(kind.as_str().to_owned()),
            None => {
                return Err(invalid(
                    "kind",
                    format!("`kind` `{name}` is not a kind of alert the relay raises"),
                ));
            }
        },
    };
    let subject = q.subject.filter(|s| !s.is_empty());
    if subject.as_ref().is_some_and(|s| s.len() > 512) {
        return Err(invalid("subject", "`subject` is at most 512 bytes".into()));
    }
    let since = time("since", q.since)?;
    let until = time("until", q.until)?;
    let cursor = match q.cursor.filter(|c| !c.is_empty()) {
        None => None,
        Some(c) if is_cursor(&c) => Some(Cursor::from_string(c)),
        Some(c) => {
            return Err(invalid(
                "cursor",
                format!("`cursor` `{c}` is not a page's `next`"),
            ));
        }
    };
    let filter = AlertFilter {
        kind,
        subject,
        since,
        until,
    };
    Ok((filter, cursor))
}

/// `GET /v1/alerts?kind=&subject=&since=&until=&cursor=&limit=`: recorded alerts, newest
/// first.
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(mut q): ApiQuery<AlertsQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.take().unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(invalid(
            "limit",
            "`limit` must be between 1 and 1000".into(),
        ));
    }
    let (filter, cursor) = parse(q)?;
    let page = state
        .store
        .list_alerts(&filter, cursor.as_ref(), limit)
        .await?;
    let alerts: Vec<AlertView> = page.alerts.into_iter().map(AlertView::from).collect();
    Ok(Json(json!({
        "alerts": alerts,
        "next": page.next.map(|c| c.as_str().to_owned()),
    })))
}

/// The alert log's paths in the OpenAPI document, without their security (added from the
/// routes).
pub(crate) fn openapi_paths() -> Value {
    let kinds: Vec<&str> = AlertKind::ALL.iter().map(|k| k.as_str()).collect();
    let mut list = op(
        "listAlerts",
        "Recorded alerts, newest first",
        json!({"200": ok("a page", schema("AlertPage")), "400": error("a bad query parameter (`invalid_query`, with `error.field`)"), "503": unavailable("the store is unavailable or busy (`store_unavailable`, `store_busy`); try again after `Retry-After`")}),
    );
    list["description"] = json!(
        "Every alert a relay sharing the store raised (a breaker opened or closed, dead letters over the threshold, a health check failing, a rejected token …), whatever became of it: queued to the alert destinations, held for the end of its interval, dropped over the per-minute cap, not sent because no alert destination is configured, or refused by the store. Kept for `store.retention`. A read-only token may read it."
    );
    list["parameters"] = json!([
        query(
            "kind",
            "only this kind; empty for every kind",
            super::openapi::or_empty(json!({"type": "string", "enum": kinds}))
        ),
        query(
            "subject",
            "only about this subject (a destination, a schedule, `dead-letters`, `store`); empty for every subject",
            json!({"type": "string", "maxLength": 512})
        ),
        query(
            "since",
            "only those recorded at or after this time (RFC 3339)",
            super::openapi::time_query()
        ),
        query(
            "until",
            "only those recorded before this time (RFC 3339)",
            super::openapi::time_query()
        ),
        query(
            "cursor",
            "from the previous page's `next`; empty for the first page",
            json!({"type": "string", "pattern": "^([0-7][0-9A-HJKMNP-TV-Z]{25})?$"})
        ),
        query(
            "limit",
            "page size, 1 to 1000 (default 100)",
            json!({"type": "integer", "minimum": 1, "maximum": 1000})
        ),
    ]);
    json!({"/v1/alerts": {"get": list}})
}

/// The alert log's schemas in the OpenAPI document.
pub(crate) fn openapi_schemas() -> Value {
    let kinds: Vec<&str> = AlertKind::ALL.iter().map(|k| k.as_str()).collect();
    json!({
        "AlertRecord": {"type": "object", "required": ["id", "at", "kind", "subject", "severity", "message", "outcome", "messages"], "properties": {
            "id": {"type": "string", "pattern": CURSOR_PATTERN, "description": "a ULID: later alerts have greater ids"},
            "at": {"type": "string", "format": "date-time"},
            "kind": {"type": "string", "enum": kinds},
            "subject": {"type": "string", "description": "a destination, a schedule, `dead-letters`, `store` or `serve`"},
            "severity": {"type": ["string", "null"], "enum": [AlertKind::SEVERITIES[0], AlertKind::SEVERITIES[1], AlertKind::SEVERITIES[2], null]},
            "message": {"type": "string"},
            "outcome": {"type": "string", "enum": Raised::NAMES, "description": "queued to the alert destinations, held until its interval ends, dropped over the per-minute cap, disabled (no alert destination), or failed (the store refused its messages)"},
            "messages": {"type": "array", "items": {"type": "string"}, "description": "the ids of the messages queued to the alert destinations for it"}}},
        "AlertPage": {"type": "object", "required": ["alerts", "next"], "properties": {
            "alerts": {"type": "array", "items": schema("AlertRecord")},
            "next": {"type": ["string", "null"], "pattern": CURSOR_PATTERN}}},
    })
}
