//! `/v1/messages`: submit, show, list, replay.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferrule_store::{Cursor, Enqueued, Filter, MessageId, NewMessage, ReplayTarget, Status, Store};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::views::MessageView;
use crate::state::AppState;

/// Longest idempotency or ordering key accepted.
const MAX_KEY: usize = 512;

/// The body of `POST /v1/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitRequest {
    destination: String,
    payload: Value,
    #[serde(default)]
    ordering_key: Option<String>,
    #[serde(default)]
    deliver_after: Option<String>,
}

fn check_key(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > MAX_KEY {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("`{field}` must be 1 to {MAX_KEY} bytes"),
        ));
    }
    Ok(())
}

/// `POST /v1/messages`: 202 once durably stored; 200 with the original for a repeated
/// `Idempotency-Key`.
pub(crate) async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SubmitRequest>,
) -> Result<Response, ApiError> {
    if state.draining() {
        return Err(ApiError::unavailable(
            "shutting_down",
            "the relay is shutting down",
            5,
        ));
    }
    let Some(dest) = state.destinations.get(&body.destination) else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_destination",
            format!("no destination named `{}` is configured", body.destination),
        ));
    };
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v.to_str().map_err(|_| {
                ApiError::bad_request("invalid_request", "`Idempotency-Key` must be visible ASCII")
            })?;
            check_key("Idempotency-Key", key)?;
            Some(key.to_owned())
        }
    };
    if let Some(key) = &body.ordering_key {
        check_key("ordering_key", key)?;
    }
    let not_before = match &body.deliver_after {
        None => None,
        Some(text) => Some(crate::time::parse_rfc3339(text).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                "`deliver_after` must be an RFC 3339 time, e.g. 2026-01-01T12:00:00Z",
            )
        })?),
    };
    let max = state.config.server.max_queue_depth;
    if state.depths.queue_now() >= max {
        return Err(ApiError::unavailable(
            "queue_full",
            format!("the queue holds its maximum of {max} messages; try again later"),
            5,
        ));
    }
    let prepared = super::payload::prepare(dest, body.payload)?;
    let ordering_key = body.ordering_key.or(prepared.ordering_key);
    let destination = body.destination;
    let parts = prepared.payloads.len();
    let messages: Vec<NewMessage> = prepared
        .payloads
        .into_iter()
        .enumerate()
        .map(|(i, payload)| {
            let mut message = NewMessage::new(destination.clone(), payload);
            message.idempotency_key = idempotency_key
                .as_deref()
                .map(|key| super::payload::part_key(key, i + 1, parts));
            message.ordering_key = ordering_key.clone();
            message.not_before = not_before;
            message
        })
        .collect();
    let enqueued = match <[NewMessage; 1]>::try_from(messages) {
        Ok([message]) => vec![state.store.enqueue(message).await?],
        // The parts of a split text: one transaction, so they are stored together, in order.
        Err(messages) => state.store.enqueue_batch(messages).await?,
    };
    let created = enqueued
        .iter()
        .filter(|e| matches!(e, Enqueued::Created(_)))
        .count();
    let mut body = json!({"id": enqueued[0].id().to_string(), "status": "queued"});
    if parts > 1 {
        body["parts"] = enqueued.iter().map(|e| e.id().to_string()).collect();
    }
    if created == 0 {
        return Ok((StatusCode::OK, Json(body)).into_response());
    }
    state
        .counters
        .submitted
        .fetch_add(created as u64, Ordering::Relaxed);
    state
        .depths
        .submitted_since
        .fetch_add(created as u64, Ordering::AcqRel);
    metrics::counter!("ferrule_submitted_total", "destination" => destination)
        .increment(created as u64);
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

fn parse_id(text: &str) -> Result<MessageId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request("invalid_id", format!("`{text}` is not a message id")))
}

/// `GET /v1/messages/{id}`: the message with its timeline.
pub(crate) async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MessageView>, ApiError> {
    let id = parse_id(&id)?;
    match state.store.get(id).await? {
        Some(detail) => Ok(Json(MessageView::detail(detail))),
        None => Err(ApiError::not_found(format!("message {id} not found"))),
    }
}

/// Query of `GET /v1/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    destination: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// A page of messages as JSON: `{"messages": [...], "next": cursor|null}`.
pub(crate) async fn page(
    state: &AppState,
    filter: Filter,
    cursor: Option<String>,
    limit: Option<usize>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`limit` must be between 1 and 1000",
        ));
    }
    let cursor = cursor.filter(|c| !c.is_empty()).map(Cursor::from_string);
    let page = state.store.list(&filter, cursor.as_ref(), limit).await?;
    let messages: Vec<MessageView> = page
        .messages
        .into_iter()
        .map(MessageView::summary)
        .collect();
    Ok(Json(json!({
        "messages": messages,
        "next": page.next.map(|c| c.as_str().to_owned()),
    })))
}

/// Parses `status=queued,retrying`.
pub(crate) fn parse_statuses(text: &str) -> Result<Vec<Status>, ApiError> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim().parse::<Status>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    format!(
                        "unknown status `{s}`; expected queued, delivering, retrying, delivered, dead or cancelled"
                    ),
                )
            })
        })
        .collect()
}

/// `GET /v1/messages?status=&destination=&cursor=&limit=`.
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let mut filter = Filter::all();
    if let Some(s) = &q.status {
        filter.statuses = parse_statuses(s)?;
    }
    filter.destination = q.destination.filter(|d| !d.is_empty());
    page(&state, filter, q.cursor, q.limit).await
}

/// `POST /v1/messages/{id}/replay`: re-queues a terminal message.
pub(crate) async fn replay(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    state
        .store
        .replay(ReplayTarget::Ids(vec![id]), false)
        .await?;
    Ok(Json(json!({"id": id.to_string(), "status": "queued"})))
}
