//! `/v1/messages`: submit, show, list, replay, cancel; [`parse_submit`], every check of a
//! submission that needs no store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferrule_store::{
    Cursor, Enqueued, Filter, MessageId, NewMessage, ReplayTarget, Status, Store, StoreError,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::caller::Caller;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery, JsonBytes};
use super::idempotency::{self, Answer};
use super::search::Search;
use super::views::MessageView;
use crate::audit::{self, Action};
use crate::destination::Destination;
use crate::state::AppState;
use crate::telemetry::prometheus::{SUBMITS_REFUSED, SUBMITTED};

/// Longest idempotency or ordering key accepted.
const MAX_KEY: usize = 512;

/// Seconds a client is asked to wait when the scheduled messages are at their maximum: they
/// leave only as they fall due, so not the 5 s of a full queue.
const SCHEDULED_FULL_RETRY_AFTER: u64 = 60;

/// The body of `POST /v1/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitRequest {
    destination: String,
    payload: Value,
    #[serde(default)]
    ordering_key: Option<String>,
    #[serde(default)]
    deliver_after: Option<String>,
}

/// A submission that passed [`parse_submit`]: what to enqueue, before the idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct Submit {
    /// The name of a configured destination.
    pub destination: String,
    /// The payloads to enqueue, in delivery order: the one submitted, or the parts of a long
    /// Telegram text. Never empty.
    pub payloads: Vec<Value>,
    /// The client's ordering key, else the one the destination implies (a Telegram chat).
    pub ordering_key: Option<String>,
    /// No attempt before this time (`deliver_after`).
    pub not_before: Option<SystemTime>,
    /// The request's fingerprint, kept with its idempotency key: SHA-256 of the canonical
    /// destination, payload, client ordering key and `deliver_after`, so a different request
    /// under a taken key is told from a repeat.
    pub fingerprint: [u8; 32],
}

impl Submit {
    /// The messages to enqueue, one per payload, each with the request's fingerprint. The
    /// first gets `idempotency_key` as given, the other parts of a split text `key#n` (`n`
    /// from 2).
    pub fn into_messages(self, idempotency_key: Option<&str>) -> Vec<NewMessage> {
        self.payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let mut message = NewMessage::new(self.destination.clone(), payload)
                    .fingerprint(self.fingerprint);
                message.idempotency_key =
                    idempotency_key.map(|key| super::payload::part_key(key, i + 1));
                message.ordering_key = self.ordering_key.clone();
                message.not_before = self.not_before;
                message
            })
            .collect()
    }
}

/// Parses and checks the body of `POST /v1/messages` as the handler does, short of the store
/// and the relay's state (draining, queue depth, the `Idempotency-Key` header).
///
/// The body must be one JSON object with `destination` (one of `destinations`), `payload`,
/// and optionally `ordering_key` (1 to 512 bytes) and `deliver_after` (RFC 3339). The payload
/// is checked by its destination's connector: Telegram and SMTP payloads are validated, and a
/// long Telegram text is split into parts whose chat becomes the ordering key.
///
/// # Errors
///
/// 400 `malformed_json` (not JSON), 400 `invalid_request` (not an object, unknown or missing
/// field, wrong type, bad key or time), 422 `unknown_destination`, 422 `invalid_payload` with
/// `error.field`.
pub fn parse_submit(
    body: &[u8],
    destinations: &BTreeMap<String, Arc<Destination>>,
) -> Result<Submit, ApiError> {
    let body: SubmitRequest = super::extract::from_json(body)?;
    let Some(dest) = destinations.get(&body.destination) else {
        return Err(ApiError::unknown_destination(&body.destination));
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
    let fingerprint = super::idempotency::fingerprint(
        &body.destination,
        &body.payload,
        body.ordering_key.as_deref(),
        not_before,
    );
    let prepared = super::payload::prepare(dest, body.payload)?;
    super::payload::check_reply_to(&prepared, destinations)?;
    Ok(Submit {
        destination: body.destination,
        payloads: prepared.payloads,
        ordering_key: body.ordering_key.or(prepared.ordering_key),
        not_before,
        fingerprint,
    })
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

/// `POST /v1/messages`: 202 once durably stored; 200 with the original and its current status
/// for a repeated request under its `Idempotency-Key`; 409 `idempotency_conflict` for a
/// different request under a taken key.
///
/// The client's mistakes (400, 422) are answered before the relay's state (503 while
/// draining, with a full queue or too many messages scheduled ahead).
pub(crate) async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let submit = parse_submit(&body, &state.destinations)?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            // `to_str` lets tabs through; a key is printable ASCII, spaces inside included.
            let key = v
                .to_str()
                .ok()
                .filter(|k| k.bytes().all(|b| (b' '..=b'~').contains(&b)))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_request",
                        "`Idempotency-Key` must be printable ASCII",
                    )
                })?;
            check_key("Idempotency-Key", key)?;
            Some(key)
        }
    };
    let scheduled = scheduled_ahead(&submit, state.clock.system_now(), &state.config.server)?;
    if state.draining() {
        return Err(refused(ApiError::unavailable(
            "shutting_down",
            "the relay is shutting down",
            5,
        )));
    }
    let server = &state.config.server;
    if scheduled && state.depths.scheduled_now() >= server.max_scheduled {
        return Err(refused(ApiError::unavailable(
            "scheduled_full",
            format!(
                "the relay holds its maximum of {} messages scheduled ahead \
                 (server.max_scheduled); try again later, or submit without deliver_after",
                server.max_scheduled
            ),
            SCHEDULED_FULL_RETRY_AFTER,
        )));
    }
    if !scheduled && state.depths.queue_now() >= server.max_queue_depth {
        return Err(refused(ApiError::unavailable(
            "queue_full",
            format!(
                "the queue holds its maximum of {} messages; try again later",
                server.max_queue_depth
            ),
            5,
        )));
    }
    let destination = submit.destination.clone();
    let mut messages = submit.into_messages(idempotency_key);
    // The caller's trace when it sent a valid `traceparent`, else a new one: kept with every
    // part, sent (a new span each) on every attempt.
    let traceparent = crate::telemetry::trace::current().to_string();
    for message in &mut messages {
        message.traceparent = Some(traceparent.clone());
    }
    let parts = messages.len();
    let enqueued = match <[NewMessage; 1]>::try_from(messages) {
        Ok([message]) => state.store.enqueue(message).await.map(|e| vec![e]),
        // The parts of a split text: one transaction, so they are stored together, in order.
        Err(messages) => state.store.enqueue_batch(messages).await,
    };
    match &enqueued {
        // A repeated key writes nothing: it says nothing about the disk.
        Ok(all) if !all.iter().any(Enqueued::is_created) => {}
        result => state.storage.observe(state.clock.system_now(), result),
    }
    let enqueued = enqueued.map_err(|e| match ApiError::from(e) {
        // storage_full, store_unavailable, store_busy: the relay's state, not the request.
        e if e.status == StatusCode::SERVICE_UNAVAILABLE => refused(e),
        e => e,
    })?;
    let (status, mut body) = match Answer::of(&enqueued) {
        Answer::Created => {
            let id = enqueued[0].id().to_string();
            (StatusCode::ACCEPTED, json!({"id": id, "status": "queued"}))
        }
        Answer::Repeated(original) => (StatusCode::OK, idempotency::repeated_body(&original)),
        Answer::Conflict { original, created } => {
            withdraw(&state, &created).await;
            let key = idempotency_key.unwrap_or_default();
            return Err(idempotency::conflict(key, original));
        }
    };
    if parts > 1 {
        body["parts"] = enqueued.iter().map(|e| e.id().to_string()).collect();
    }
    if status == StatusCode::ACCEPTED {
        let created = parts as u64;
        state
            .counters
            .submitted
            .fetch_add(created, Ordering::Relaxed);
        state.depths.added(created, scheduled);
        metrics::counter!(SUBMITTED.name, "destination" => destination).increment(created);
    }
    Ok((status, Json(body)).into_response())
}

/// Whether `submit` is scheduled ahead of `now` (a `deliver_after` still to come), which
/// `server.max_scheduled` bounds instead of `server.max_queue_depth`.
///
/// # Errors
///
/// 422 `out_of_range` naming `deliver_after` when it is further ahead than
/// `server.max_deliver_after`.
fn scheduled_ahead(
    submit: &Submit,
    now: SystemTime,
    server: &crate::config::ServerConfig,
) -> Result<bool, ApiError> {
    let Some(at) = submit.not_before else {
        return Ok(false);
    };
    // A bound too far to add to now bounds nothing.
    let furthest = now.checked_add(server.max_deliver_after);
    if let Some(furthest) = furthest.filter(|&furthest| at > furthest) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "out_of_range",
            format!(
                "`deliver_after` is {}, more than {} ahead (server.max_deliver_after); the \
                 furthest accepted now is {}",
                crate::time::rfc3339(at),
                humantime::format_duration(server.max_deliver_after),
                crate::time::rfc3339(furthest),
            ),
        )
        .with_field("deliver_after"));
    }
    Ok(at > now)
}

/// Cancels the parts a conflicting request stored beside the original's (a split text longer
/// than the original): its client is told nothing was stored. Until the cancel commits the
/// dispatcher may claim one; its attempt then ends with a lost lease.
async fn withdraw(state: &AppState, created: &[MessageId]) {
    for &id in created {
        let reason = "withdrawn: its request reused an Idempotency-Key (409 idempotency_conflict)";
        if let Err(e) = state.store.cancel(id, Some(reason.to_owned())).await {
            tracing::error!(message_id = %id, error = %e, "cannot withdraw a part stored by a conflicting request");
        }
    }
}

/// Counts a submission the relay refused for its own state (`ferrule_submits_refused_total`,
/// by the error's code) and passes the error on.
fn refused(error: ApiError) -> ApiError {
    metrics::counter!(SUBMITS_REFUSED.name, "reason" => error.code).increment(1);
    error
}

/// A message id from a path: 400 `invalid_id` when `text` is not one.
pub(crate) fn parse_id(text: &str) -> Result<MessageId, ApiError> {
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
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    ordering_key: Option<String>,
    #[serde(default)]
    payload_contains: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// A page of messages as JSON: `{"messages": [...], "next": cursor|null}`, plus
/// `payload_search_since` when a payload text search narrowed the range to that start
/// (see [`Search::apply`]).
pub(crate) async fn page(
    state: &AppState,
    filter: Filter,
    searched_since: Option<SystemTime>,
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
    let cursor = parse_cursor(cursor)?;
    let page = state.store.list(&filter, cursor.as_ref(), limit).await?;
    let messages: Vec<MessageView> = page
        .messages
        .into_iter()
        .map(MessageView::summary)
        .collect();
    let mut body = json!({
        "messages": messages,
        "next": page.next.map(|c| c.as_str().to_owned()),
    });
    if let Some(since) = searched_since {
        body["payload_search_since"] = json!(crate::time::rfc3339(since));
    }
    Ok(Json(body))
}

/// A request's destination filter: `None` when absent or empty, else the name, if it names a
/// configured destination or one that messages in the store still name (a destination taken
/// out of the configuration leaves its messages behind, and they must stay listable and
/// purgeable); else 422 `unknown_destination`, so a typo is not answered with an empty page.
pub(crate) async fn destination_filter(
    state: &AppState,
    destination: Option<String>,
) -> Result<Option<String>, ApiError> {
    let Some(name) = destination.filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    if state.destinations.contains_key(&name) {
        return Ok(Some(name));
    }
    let stored = Filter::all().destination(name.clone());
    if state
        .store
        .list(&stored, None, 1)
        .await?
        .messages
        .is_empty()
    {
        return Err(ApiError::unknown_destination(&name));
    }
    Ok(Some(name))
}

/// The longest cursor accepted: a page's `next` is a row's sequence number.
const MAX_CURSOR_DIGITS: usize = 18;

/// A page cursor as a client sent it back: empty or absent for the first page, else the
/// decimal number the previous page's `next` held (the API documents this shape).
pub(crate) fn parse_cursor(cursor: Option<String>) -> Result<Option<Cursor>, ApiError> {
    match cursor {
        None => Ok(None),
        Some(c) if c.is_empty() => Ok(None),
        Some(c)
            if c.len() <= MAX_CURSOR_DIGITS
                && c.bytes().all(|b| b.is_ascii_digit())
                && (c == "0" || !c.starts_with('0')) =>
        {
            Ok(Some(Cursor::from_string(c)))
        }
        Some(c) => Err(ApiError::bad_request(
            "invalid_query",
            format!("`cursor` `{c}` is not a page's `next`"),
        )),
    }
}

/// Parses `status=queued,retrying`: statuses separated by commas, nothing else; empty for
/// every status.
pub(crate) fn parse_statuses(text: &str) -> Result<Vec<Status>, ApiError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|s| {
            s.parse::<Status>().map_err(|_| {
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

/// `GET /v1/messages?status=&destination=&since=&until=&idempotency_key=&ordering_key=&payload_contains=&cursor=&limit=`.
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let mut filter = Filter::all();
    if let Some(s) = &q.status {
        filter.statuses = parse_statuses(s)?;
    }
    filter.destination = destination_filter(&state, q.destination).await?;
    let search = Search {
        since: q.since,
        until: q.until,
        idempotency_key: q.idempotency_key,
        ordering_key: q.ordering_key,
        payload_contains: q.payload_contains,
    };
    let searched_since = search.apply(&mut filter, state.clock.system_now())?;
    page(&state, filter, searched_since, q.cursor, q.limit).await
}

/// `POST /v1/messages/{id}/replay`: re-queues a terminal message.
pub(crate) async fn replay(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let replayed = state.store.replay(ReplayTarget::Ids(vec![id]), false).await;
    let report = state.written(replayed)?;
    let entry = audit::entry(&caller, Action::MessageReplay)
        .target(id.to_string())
        .count(report.count);
    audit::record(&state.store, entry).await;
    Ok(Json(json!({"id": id.to_string(), "status": "queued"})))
}

/// `DELETE /v1/messages/{id}`: cancels a message that is not delivered yet (`queued`,
/// `retrying` or `delivering`); 200 with its new status and the one it had, 409
/// `invalid_state` with `error.status` for a message already finished, 404 for none.
///
/// A `delivering` message is cancelled too, but its attempt is already on its way: it may
/// still reach the destination. The worker's lease is gone, so the relay abandons the attempt
/// at its next heartbeat and records nothing of it (the store answers `LeaseLost`).
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let reason = format!("cancelled by {caller}");
    match state.written(state.store.cancel(id, Some(reason)).await) {
        Ok(()) => {}
        Err(StoreError::InvalidTransition { from, .. }) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "invalid_state",
                format!(
                    "message {id} is {from}: only a queued, retrying or delivering message can be \
                     cancelled"
                ),
            )
            .with_detail("status", from.as_str()));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(message_id = %id, %caller, "message cancelled");
    let entry = audit::entry(&caller, Action::MessageCancel)
        .target(id.to_string())
        .count(1);
    audit::record(&state.store, entry).await;
    let mut body = json!({"id": id.to_string(), "status": Status::Cancelled.as_str()});
    // The event before the cancel's says what the message was doing.
    let before = match state.store.get(id).await {
        Ok(Some(detail)) => detail.events.iter().rev().nth(1).map(|e| e.status),
        _ => None,
    };
    if let Some(before) = before {
        body["previous_status"] = before.as_str().into();
    }
    if before == Some(Status::Delivering) {
        body["note"] = "an attempt was in flight: it may still reach the destination; the \
                        relay records nothing of it"
            .into();
    }
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use ferrule_policy::ManualClock;
    use ferrule_policy::chaos::Environment;

    use super::*;
    use crate::Config;
    use crate::config::HealthConfig;

    /// A webhook, a Telegram bot and an SMTP server, built as the relay builds them.
    fn destinations() -> BTreeMap<String, Arc<Destination>> {
        let config = Config::from_toml_str(
            r#"
            [[destinations]]
            name = "hook"
            type = "webhook"
            url = "https://example.com/hook"
            [[destinations]]
            name = "chat"
            type = "telegram"
            bot_token = "42:test-token"
            [[destinations]]
            name = "mail"
            type = "smtp"
            host = "127.0.0.1"
            tls = "none"
            from = "relay@example.com"
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        let clock = ManualClock::new().shared();
        config
            .destinations()
            .unwrap()
            .iter()
            .map(|d| {
                let built = Destination::build(
                    d,
                    clock.clone(),
                    Environment::Development,
                    HealthConfig::default(),
                )
                .unwrap();
                (d.name.clone(), Arc::new(built))
            })
            .collect()
    }

    fn refused(body: &str) -> ApiError {
        parse_submit(body.as_bytes(), &destinations()).unwrap_err()
    }

    #[test]
    fn a_webhook_payload_passes_unchanged_with_the_clients_keys() {
        let submit = parse_submit(
            br#"{"destination": "hook", "payload": {"n": 1}, "ordering_key": "k",
                 "deliver_after": "2026-01-01T12:00:00Z"}"#,
            &destinations(),
        )
        .unwrap();
        assert_eq!(submit.payloads, [json!({"n": 1})]);
        assert_eq!(submit.ordering_key.as_deref(), Some("k"));
        assert_eq!(
            submit.not_before,
            crate::time::parse_rfc3339("2026-01-01T12:00:00Z")
        );
        let messages = submit.into_messages(Some("order-42"));
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].idempotency_key.as_deref(), Some("order-42"));
    }

    #[test]
    fn a_long_telegram_text_becomes_parts_keyed_by_chat() {
        let text = "word ".repeat(1000);
        let body = json!({"destination": "chat", "payload": {"chat_id": -100_123, "text": text}});
        let submit = parse_submit(body.to_string().as_bytes(), &destinations()).unwrap();
        assert_eq!(submit.payloads.len(), 2);
        assert_eq!(submit.ordering_key.as_deref(), Some("-100123"));
        let keys: Vec<_> = submit
            .into_messages(Some("k"))
            .into_iter()
            .map(|m| m.idempotency_key.unwrap())
            .collect();
        assert_eq!(
            keys,
            ["k", "k#2"],
            "the first part carries the key as given"
        );
    }

    #[test]
    fn payloads_a_connector_would_refuse_are_422_naming_the_field() {
        let e = refused(r#"{"destination": "chat", "payload": {"chat_id": 1, "text": ""}}"#);
        assert_eq!(
            (e.status.as_u16(), e.code, e.field.as_deref()),
            (422, "invalid_payload", Some("payload.text"))
        );
        let e = refused(r#"{"destination": "mail", "payload": {"to": ["a@b.c"], "subject": "s"}}"#);
        assert_eq!((e.status.as_u16(), e.code), (422, "invalid_payload"));
        let e = refused(r#"{"destination": "nope", "payload": 1}"#);
        assert_eq!((e.status.as_u16(), e.code), (422, "unknown_destination"));
    }

    #[test]
    fn bodies_that_are_not_one_object_are_400() {
        for (body, code) in [
            (r#"["hook", {"n": 1}]"#, "invalid_request"),
            (
                r#"[{"destination": "hook", "payload": 1}]"#,
                "invalid_request",
            ),
            (r#""hook""#, "invalid_request"),
            (
                r#"{"destination": "hook", "payload": 1} {}"#,
                "malformed_json",
            ),
            (
                r#"{"destination": "hook", "payload": 1, "extra": 2}"#,
                "invalid_request",
            ),
            (
                r#"{"destination": "hook", "payload": 1, "ordering_key": ""}"#,
                "invalid_request",
            ),
            (
                r#"{"destination": "hook", "payload": 1, "deliver_after": "soon"}"#,
                "invalid_request",
            ),
        ] {
            let e = refused(body);
            assert_eq!((e.status.as_u16(), e.code), (400, code), "{body}: {e:?}");
        }
        assert!(refused("[]").message.contains("expected a JSON object"));
    }
}
