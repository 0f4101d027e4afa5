//! Events that arrive from outside: `POST /v1/telegram/{destination}/webhook`, where Telegram
//! posts a bot's updates, `POST /v1/inbound/email/{source}`, where inbound-mail services post
//! mail, and `GET /v1/inbound`, which lists what was recorded.

use std::convert::Infallible;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use ferrule_connectors::telegram::update_from_value;
use ferrule_store::{Inbound, Store};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use crate::config::{EmailSource, InboundMode};
use crate::inbound::email;
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

/// `POST /v1/inbound/email/{source}`: one mail, raw (`message/rfc822`) or in a form field
/// (`email` as SendGrid posts it, `body-mime` as Mailgun does; multipart or urlencoded).
///
/// The caller was let through by [`require_email_source`](super::require_email_source): an
/// admin token or the source's secret. The body may be up to the source's `max_size` (not
/// `server.max_body_bytes`); the mail is parsed, then recorded once under its key with its
/// forward before the answer: 200 `{"id", "duplicate"}` for a new mail and for one recorded
/// before alike, since mail services retry anything but a 2xx. Every refusal is counted by
/// its code.
pub(crate) async fn email(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let source = state
        .email_sources
        .get(&name)
        .ok_or_else(|| unknown_email_source(&name))?;
    let answer = receive_mail(&state, source, &headers, body).await;
    if let Err(e) = &answer {
        email::count_refused(&state, &source.name, e.code);
    }
    answer.map(Json)
}

/// 404 for a source that is not configured (sources are not secret).
pub(super) fn unknown_email_source(name: &str) -> ApiError {
    ApiError::not_found(format!("no e-mail source named `{name}` is configured"))
}

async fn receive_mail(
    state: &AppState,
    source: &EmailSource,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, ApiError> {
    if state.draining() {
        return Err(ApiError::unavailable(
            "shutting_down",
            "the relay is shutting down",
            5,
        ));
    }
    let posted = MailPost::of(headers)?;
    let body = read_at_most(headers, body, source.max_size).await?;
    let raw = posted.mail(body).await?;
    let mail = email::parse(&raw).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_email",
            format!("not a mail the relay can record: {e}"),
        )
    })?;
    let key = mail.key.clone();
    let context = json!({"email": mail.summary, "github": mail.github});
    let recorded = email::record_mail(state, source, mail).await?;
    let mut answer = json!({
        "id": recorded.id().to_string(),
        "duplicate": !recorded.is_created(),
    });
    if let Some(forward) = recorded.forward() {
        answer["forward"] = forward.id().to_string().into();
    }
    // Runs start after the mail is stored and before the answer: a mail service retries what
    // was not answered, and a run is started once per dedupe key however often it comes.
    let runs = crate::routes::trigger::on_mail(state, &source.name, &key, &context).await?;
    if !runs.is_empty() {
        answer["runs"] = runs
            .iter()
            .map(|(route, started)| {
                json!({
                    "route": route,
                    "run": started.run().id.to_string(),
                    "created": started.is_created(),
                })
            })
            .collect();
    }
    Ok(answer)
}

/// The form fields a mail may be posted in: `email` (SendGrid's raw mode) and `body-mime`
/// (Mailgun's MIME mode).
const MAIL_FIELDS: [&str; 2] = ["email", "body-mime"];

/// How a mail is posted, by `Content-Type`.
enum MailPost {
    /// The message itself: `message/rfc822`, or `application/octet-stream`.
    Raw,
    /// `multipart/form-data`: the message is the `email` or `body-mime` field.
    Multipart { boundary: String },
    /// `application/x-www-form-urlencoded`, the same fields.
    UrlEncoded,
}

impl MailPost {
    fn of(headers: &HeaderMap) -> Result<MailPost, ApiError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime::Mime>().ok());
        let Some(m) = content_type else {
            return Err(unsupported_mail_post());
        };
        match (m.type_().as_str(), m.subtype().as_str()) {
            ("message", "rfc822") | ("application", "octet-stream") => Ok(MailPost::Raw),
            ("application", "x-www-form-urlencoded") => Ok(MailPost::UrlEncoded),
            ("multipart", "form-data") => match m.get_param(mime::BOUNDARY) {
                Some(boundary) => Ok(MailPost::Multipart {
                    boundary: boundary.as_str().to_owned(),
                }),
                None => Err(ApiError::bad_request(
                    "invalid_form",
                    "`multipart/form-data` without a `boundary`",
                )),
            },
            _ => Err(unsupported_mail_post()),
        }
    }

    /// The raw message in `body`, posted this way.
    async fn mail(self, body: Vec<u8>) -> Result<Bytes, ApiError> {
        let field = match self {
            MailPost::Raw => return Ok(Bytes::from(body)),
            MailPost::Multipart { boundary } => multipart_field(body, boundary).await?,
            MailPost::UrlEncoded => urlencoded_field(&body),
        };
        field.ok_or_else(|| ApiError {
            field: Some("email".to_owned()),
            ..ApiError::bad_request(
                "invalid_form",
                "the form has no `email` (SendGrid) or `body-mime` (Mailgun) field (a raw \
                 message is posted as `content-type: message/rfc822`)",
            )
        })
    }
}

fn unsupported_mail_post() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "expected `content-type: message/rfc822` (or `application/octet-stream`) with the raw \
         message, or a form (`multipart/form-data` or `application/x-www-form-urlencoded`) \
         with the message in an `email` (SendGrid) or `body-mime` (Mailgun) field",
    )
}

/// The first mail field of a `multipart/form-data` body.
async fn multipart_field(body: Vec<u8>, boundary: String) -> Result<Option<Bytes>, ApiError> {
    let invalid = |e: multer::Error| {
        ApiError::bad_request("invalid_form", format!("not a readable form: {e}"))
    };
    let stream = futures_util::stream::once(async move { Ok::<_, Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    while let Some(field) = form.next_field().await.map_err(invalid)? {
        if field.name().is_some_and(|name| MAIL_FIELDS.contains(&name)) {
            return field.bytes().await.map(Some).map_err(invalid);
        }
    }
    Ok(None)
}

/// The first mail field of an `application/x-www-form-urlencoded` body, decoded to the bytes
/// that were encoded (a message need not be UTF-8).
fn urlencoded_field(body: &[u8]) -> Option<Bytes> {
    let decode = |text: &[u8]| -> Vec<u8> {
        let spaced: Vec<u8> = text
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        percent_encoding::percent_decode(&spaced).collect()
    };
    body.split(|&b| b == b'&').find_map(|pair| {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        };
        let name = decode(name);
        MAIL_FIELDS
            .iter()
            .any(|field| field.as_bytes() == name)
            .then(|| Bytes::from(decode(value)))
    })
}

/// 413 for a body over `max` bytes.
fn mail_too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the body is larger than this source's `max_size` of {max} bytes"),
    )
}

/// The whole body, refused with 413 past `max` bytes: at once when `Content-Length` says so,
/// else when that much has arrived. What is left unread is discarded after the answer
/// (`linger.rs`), so a client that sends everything before reading still gets the 413.
async fn read_at_most(headers: &HeaderMap, body: Body, max: usize) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(mail_too_large(max));
    }
    let mut read = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("invalid_body", format!("cannot read the body: {e}"))
        })?;
        if read.len() + chunk.len() > max {
            return Err(mail_too_large(max));
        }
        read.extend_from_slice(&chunk);
    }
    Ok(read)
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
