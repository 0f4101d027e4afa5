//! Events that arrive from outside: `POST /v1/telegram/{destination}/webhook`, where Telegram
//! posts a bot's updates, and `GET /v1/inbound`, which lists what was recorded.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use ferrule_connectors::telegram::update_from_value;
use ferrule_store::{Inbound, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use crate::config::InboundMode;
use crate::state::AppState;
use crate::time::rfc3339;

/// The header Telegram sends the webhook's secret token in.
pub(crate) const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// `POST /v1/telegram/{destination}/webhook`: one update from Telegram.
///
/// Not behind the bearer token (Telegram cannot send one): the update must carry the
/// destination's secret token, compared in constant time. 200 for a new update and for a
/// redelivered one alike, since Telegram retries anything else; the update is stored (and
/// forwarded) before the answer, and a button press is answered after it.
pub(crate) async fn telegram_webhook(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let (destination, inbound) = state
        .destinations
        .get(&name)
        .and_then(|d| {
            let inbound = d.inbound.as_ref()?;
            (inbound.mode == InboundMode::Webhook).then_some((d, inbound))
        })
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no telegram destination named `{name}` receives updates by webhook"
            ))
        })?;
    let Some(presented) = headers.get(SECRET_HEADER) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `X-Telegram-Bot-Api-Secret-Token`",
        ));
    };
    if !inbound.accepts_secret(presented.as_bytes()) {
        tracing::warn!(destination = %name, "a webhook update with a wrong secret token was refused");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong `X-Telegram-Bot-Api-Secret-Token`",
        ));
    }
    if state.draining() {
        return Err(ApiError::unavailable(
            "shutting_down",
            "the relay is shutting down",
            5,
        ));
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is larger than the relay accepts",
            )
        } else {
            ApiError::bad_request("invalid_body", rejection.body_text())
        }
    })?;
    let raw: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("malformed JSON: {e}")))?;
    let update = update_from_value(&raw).map_err(|e| ApiError {
        field: Some(e.field().to_owned()),
        ..ApiError::bad_request("invalid_update", format!("not a Telegram update: {e}"))
    })?;
    let recorded =
        crate::inbound::record_update(&state, destination, update.update_id, raw, Some(&update))
            .await?;
    Ok(Json(json!({
        "id": recorded.id().to_string(),
        "duplicate": !recorded.is_created(),
    })))
}

/// Query of `GET /v1/inbound`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// An inbound event as the API shows it.
#[derive(Debug, Serialize)]
struct InboundView {
    id: String,
    source: String,
    external_id: String,
    payload: Value,
    received_at: String,
}

impl From<Inbound> for InboundView {
    fn from(e: Inbound) -> Self {
        InboundView {
            id: e.id.to_string(),
            source: e.source,
            external_id: e.external_id,
            payload: e.payload,
            received_at: rfc3339(e.received_at),
        }
    }
}

/// `GET /v1/inbound?source=&cursor=&limit=`: recorded events, newest first.
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`limit` must be between 1 and 1000",
        ));
    }
    let source = q.source.filter(|s| !s.is_empty());
    let cursor = super::messages::parse_cursor(q.cursor)?;
    let page = state
        .store
        .list_inbound(source.as_deref(), cursor.as_ref(), limit)
        .await?;
    let events: Vec<InboundView> = page.events.into_iter().map(InboundView::from).collect();
    Ok(Json(json!({
        "events": events,
        "next": page.next.map(|c| c.as_str().to_owned()),
    })))
}
