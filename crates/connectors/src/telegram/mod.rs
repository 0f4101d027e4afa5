//! The Telegram connector: Bot API calls (`sendMessage`, `sendPhoto`, `sendDocument`,
//! `editMessageText`, `editMessageReplyMarkup`) and the calls the relay needs for inbound
//! updates.
//!
//! Each attempt validates the stored payload again, then `POST`s it to
//! `{api_base}/bot{token}/{method}`: as JSON for texts and files given by URL, as
//! `multipart/form-data` for base64 uploads. The answer is classified on Telegram's
//! `error_code` *and* `description` (the docs warn codes may change):
//!
//! | answer | outcome | signal |
//! |---|---|---|
//! | `ok: true` | [`Outcome::Success`], the `message_id` in the detail | — |
//! | 400 "message is not modified" to an edit | [`Outcome::Success`]: the message already shows it | — |
//! | 429 flood control | [`Outcome::RetryAfter`] (`retry_after`) | [`Signal::PauseDestination`] |
//! | 400 "group chat was upgraded…" with `migrate_to_chat_id` | [`Outcome::Transient`] | [`Signal::MigrateChat`] |
//! | 401 | [`Outcome::Permanent`] | [`Signal::Unauthorized`] |
//! | 5xx (often an HTML body), network errors, timeouts | [`Outcome::Transient`] | — |
//! | other 400 ("message to edit not found", "message can't be edited", …), 403 (blocked, kicked, deactivated), 404, other 4xx | [`Outcome::Permanent`], Telegram's description in the detail | — |
//!
//! **Output.** A success's [`DeliveryResult::output`] identifies the message, so a later step
//! can edit it or reply to it: `{"message_id", "chat_id", "date"}` as Telegram answered them
//! (`chat_id` is numeric even when the payload named an `@username`), plus `edit_date` for an
//! edit. An edit that changed nothing answers `{"chat_id", "message_id", "not_modified": true}`
//! from the payload. A long text split into parts is several messages, each with its own
//! output; the last part carries the `reply_markup`, so its output is the card's.
//!
//! The token is part of every URL: it never appears in a detail, an error or `Debug` output.
//! Rate limits are not enforced here (a connector keeps no state between attempts); the relay
//! enforces [`TelegramLimits`] durably, keyed by [`ChatId`] and [`ChatKind`].

mod config;
mod error;
mod payload;
mod split;
#[cfg(test)]
mod tests;
mod update;

use std::time::Duration;

use ferrule_policy::classify::parse_retry_after;
use ferrule_policy::duration::readable;
use ferrule_policy::{Outcome, SharedClock};
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::multipart::{Form, Part};
use reqwest::{Client, RequestBuilder, redirect};
use serde::Deserialize;
use serde_json::{Map, Value, json};

pub use self::config::{BotToken, DEFAULT_API_BASE, LongTexts, TelegramConfig, TelegramLimits};
pub use self::error::TelegramError;
pub use self::payload::{
    CALLBACK_DATA_BYTES, CAPTION_LIMIT, ChatId, ChatKind, DOCUMENT_BYTES, EditMessageReplyMarkup,
    EditMessageText, ForceReply, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Method,
    PHOTO_BYTES, PLACEHOLDER_CHARS, ParseMode, PayloadError, QUOTE_LIMIT, ReplyMarkup,
    ReplyParameters, SendFile, SendMessage, TEXT_LIMIT, TelegramPayload, Validated, chat_kind,
    rewrite_chat_id, validate_payload,
};
pub use self::split::{split_text, utf16_len};
pub use self::update::{
    CallbackQuery, Chat, Message, RawUpdate, Update, User, parse_raw_updates, parse_update,
    update_from_value,
};
use crate::shared::{DETAIL_CHARS, quote, read_body, transport_detail, truncate};
use crate::{Connector, ConnectorError, Delivery, DeliveryResult, Signal};

/// The largest response body read; `getUpdates` answers with up to 100 updates.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// The longest `answerCallbackQuery` text, in UTF-16 code units.
const CALLBACK_TEXT_LIMIT: usize = 200;

/// Delivers messages through one Telegram bot.
///
/// Built once per destination: it owns one HTTP client (connection pool, TLS roots, timeout, no
/// redirects). Cloning is cheap and shares the pool.
///
/// ```
/// use ferrule_connectors::telegram::{TelegramConfig, TelegramConnector};
///
/// let config: TelegramConfig = toml::from_str(r#"
///     bot_token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
///     long_texts = "refuse"
/// "#)?;
/// let connector = TelegramConnector::new(config, ferrule_policy::clock::system())?;
/// assert!(!format!("{connector:?}").contains("AAHdq"));
///
/// let err = connector
///     .validate_payload(r#"{"chat_id": 42, "text": ""}"#)
///     .unwrap_err();
/// assert_eq!(err.field(), "text");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct TelegramConnector {
    client: Client,
    api_base: String,
    token: BotToken,
    timeout: Duration,
    long_texts: LongTexts,
    limits: TelegramLimits,
    clock: SharedClock,
}

impl TelegramConnector {
    /// Validates `config` and builds the connector; `clock` measures durations and dates
    /// `Retry-After` headers.
    pub fn new(config: TelegramConfig, clock: SharedClock) -> Result<Self, ConnectorError> {
        let api_base = config.parse_api_base()?;
        let client = Client::builder()
            .redirect(redirect::Policy::none())
            .timeout(config.timeout)
            .user_agent(concat!("ferrule/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConnectorError::Client {
                source: Box::new(e.without_url()),
            })?;
        Ok(TelegramConnector {
            client,
            api_base,
            token: config.bot_token,
            timeout: config.timeout,
            long_texts: config.long_texts,
            limits: config.limits,
            clock,
        })
    }

    /// The bot's numeric id (the non-secret part of its token).
    pub fn bot_id(&self) -> u64 {
        self.token.bot_id()
    }

    /// The send rates the relay must enforce for this bot.
    pub fn limits(&self) -> &TelegramLimits {
        &self.limits
    }

    /// What this destination does with long texts.
    pub fn long_texts(&self) -> LongTexts {
        self.long_texts
    }

    /// [`validate_payload`] under this destination's configuration.
    pub fn validate_payload(&self, json: &str) -> Result<Validated, PayloadError> {
        payload::validate_with(self.long_texts, json)
    }

    /// Answers a callback query, so the user's client stops showing a spinner; `text`, when
    /// given, is shown as a notification (at most 200 characters).
    pub async fn answer_callback_query(
        &self,
        callback_query_id: &str,
        text: Option<&str>,
    ) -> Result<(), TelegramError> {
        if callback_query_id.is_empty() {
            return Err(invalid("callback_query_id", "must not be empty"));
        }
        let mut params = json!({ "callback_query_id": callback_query_id });
        if let Some(text) = text {
            if utf16_len(text) > CALLBACK_TEXT_LIMIT {
                return Err(invalid("text", "must be at most 200 characters"));
            }
            params["text"] = Value::from(text);
        }
        self.call("answerCallbackQuery", &params, self.timeout)
            .await
            .map(drop)
    }

    /// Sets the bot's webhook to `url`; Telegram then sends `secret_token` in the
    /// `X-Telegram-Bot-Api-Secret-Token` header of every update (1 to 256 letters, digits, `_`
    /// or `-`). While a webhook is set, [`get_updates`](Self::get_updates) fails with a
    /// conflict.
    pub async fn set_webhook(&self, url: &str, secret_token: &str) -> Result<(), TelegramError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| invalid("url", "not a valid URL"))?;
        if parsed.scheme() != "https" {
            return Err(invalid("url", "Telegram only posts updates to https URLs"));
        }
        if !(1..=256).contains(&secret_token.len())
            || !secret_token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(invalid(
                "secret_token",
                "must be 1 to 256 letters, digits, `_` or `-`",
            ));
        }
        let params = json!({ "url": url, "secret_token": secret_token });
        self.call("setWebhook", &params, self.timeout)
            .await
            .map(drop)
    }

    /// `getMe`: whether Telegram accepts the bot's token; answers the bot's user name.
    pub async fn get_me(&self, timeout: Duration) -> Result<String, TelegramError> {
        let me = self.call("getMe", &json!({}), timeout).await?;
        Ok(me
            .get("username")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned())
    }

    /// Deletes the bot's webhook, so [`get_updates`](Self::get_updates) works again; with
    /// `drop_pending_updates`, Telegram also forgets the updates it has not delivered yet.
    pub async fn delete_webhook(&self, drop_pending_updates: bool) -> Result<(), TelegramError> {
        let params = json!({ "drop_pending_updates": drop_pending_updates });
        self.call("deleteWebhook", &params, self.timeout)
            .await
            .map(drop)
    }

    /// Long-polls for updates from `offset` (the last `update_id` seen + 1, which also confirms
    /// every earlier update), waiting up to `timeout` (whole seconds) for one to arrive.
    ///
    /// A 409 — another consumer polling, or a webhook set — is [`TelegramError::Conflict`].
    /// One update in a shape the relay does not read fails the whole call; see
    /// [`get_raw_updates`](Self::get_raw_updates) for a poller that must not stall on one.
    pub async fn get_updates(
        &self,
        offset: Option<i64>,
        timeout: Duration,
    ) -> Result<Vec<Update>, TelegramError> {
        self.get_raw_updates(offset, timeout)
            .await?
            .iter()
            .map(|raw| {
                raw.parse().map_err(|e| TelegramError::InvalidResponse {
                    status: 200,
                    detail: self.token.scrub(&format!("update {}: {e}", raw.update_id)),
                })
            })
            .collect()
    }

    /// [`get_updates`](Self::get_updates), answering each update as Telegram sent it, with its
    /// id: a poller stores updates whole and still moves past one it cannot read.
    pub async fn get_raw_updates(
        &self,
        offset: Option<i64>,
        timeout: Duration,
    ) -> Result<Vec<RawUpdate>, TelegramError> {
        let mut params = json!({ "timeout": timeout.as_secs() });
        if let Some(offset) = offset {
            params["offset"] = Value::from(offset);
        }
        // The server holds the request for up to `timeout`: allow for it.
        let result = self
            .call("getUpdates", &params, self.timeout.saturating_add(timeout))
            .await?;
        update::parse_raw_updates(result).map_err(|detail| TelegramError::InvalidResponse {
            status: 200,
            detail: self.token.scrub(&detail),
        })
    }

    /// The URL of `method`, with the token in its path.
    fn endpoint(&self, method: &str) -> String {
        format!("{}/bot{}/{method}", self.api_base, self.token.expose())
    }

    /// Calls `method` with JSON `params` and returns its `result`.
    async fn call(
        &self,
        method: &str,
        params: &Value,
        timeout: Duration,
    ) -> Result<Value, TelegramError> {
        let request = self
            .client
            .post(self.endpoint(method))
            .timeout(timeout)
            .header(CONTENT_TYPE, "application/json")
            .body(params.to_string());
        let reply = self.send(request, timeout).await?;
        match assess(&reply) {
            Verdict::Ok => Ok(reply.response.and_then(|r| r.result).unwrap_or(Value::Null)),
            verdict => Err(self.api_error(verdict, &reply)),
        }
    }

    fn api_error(&self, verdict: Verdict, reply: &Reply) -> TelegramError {
        let description = self.token.scrub(&reply.description());
        match verdict {
            Verdict::Unauthorized => TelegramError::Unauthorized { description },
            Verdict::Conflict => TelegramError::Conflict { description },
            Verdict::RetryAfter(Some(after)) => TelegramError::RetryAfter { after },
            _ => match &reply.response {
                Some(response) => TelegramError::Api {
                    code: response.error_code.unwrap_or(i32::from(reply.status)),
                    description,
                },
                None => TelegramError::InvalidResponse {
                    status: reply.status,
                    detail: description,
                },
            },
        }
    }

    /// Sends `request` and reads the answer; transport failures become
    /// [`TelegramError::Transport`] with a token-free detail.
    async fn send(
        &self,
        request: RequestBuilder,
        timeout: Duration,
    ) -> Result<Reply, TelegramError> {
        let response = request
            .send()
            .await
            .map_err(|e| self.transport(e, timeout))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.clock.system_now()));
        let body = read_body(response, MAX_BODY)
            .await
            .map_err(|e| self.transport(e, timeout))?;
        let response = serde_json::from_slice::<ApiResponse>(&body).ok();
        Ok(Reply {
            status,
            retry_after,
            response,
            snippet: quote(&String::from_utf8_lossy(
                &body[..body.len().min(4 * DETAIL_CHARS)],
            )),
        })
    }

    fn transport(&self, err: reqwest::Error, timeout: Duration) -> TelegramError {
        // reqwest's own message repeats the URL, and with it the token.
        let err = err.without_url();
        if err.is_timeout() {
            return TelegramError::Transport {
                detail: format!("timed out after {}", readable(timeout)),
                timeout: true,
            };
        }
        let detail = transport_detail(&err);
        TelegramError::Transport {
            detail: truncate(&self.token.scrub(&detail), 2 * DETAIL_CHARS),
            timeout: false,
        }
    }

    /// One delivery attempt; its duration is left for [`deliver`](Connector::deliver) to set.
    async fn attempt(&self, delivery: &Delivery<'_>) -> DeliveryResult {
        let plain = |outcome, code, detail| DeliveryResult {
            outcome,
            code,
            detail,
            duration: Duration::ZERO,
            signal: None,
            output: None,
        };
        let parts = match self.validate_payload(delivery.payload) {
            Ok(validated) => validated.into_parts(),
            Err(err) => {
                return plain(Outcome::Permanent, None, format!("invalid payload: {err}"));
            }
        };
        let [payload] = parts.as_slice() else {
            return plain(
                Outcome::Permanent,
                None,
                format!(
                    "the payload needs {} messages; enqueue the parts of `validate_payload` \
                     instead",
                    parts.len()
                ),
            );
        };
        let request = match self.build(payload) {
            Ok(request) => request,
            Err(detail) => return plain(Outcome::Permanent, None, detail),
        };
        let reply = match self.send(request, self.timeout).await {
            Ok(reply) => reply,
            Err(err) => return plain(Outcome::Transient, None, err.to_string()),
        };
        let code = Some(i32::from(reply.status));
        let verdict = assess(&reply);
        let description = self.token.scrub(&reply.description());
        let prefix = format!("Telegram {}", reply.status);
        let mut output = None;
        let (outcome, detail, signal) = match verdict {
            Verdict::Ok => {
                let result = reply.response.as_ref().and_then(|r| r.result.as_ref());
                let sent = sent_output(result, payload);
                let done = if payload.method().is_edit() {
                    "edited"
                } else {
                    "sent"
                };
                let detail = match sent.get("message_id") {
                    Some(id) => format!("{done}: message_id {id}"),
                    None => done.to_owned(),
                };
                output = Some(Value::Object(sent));
                (Outcome::Success, detail, None)
            }
            Verdict::NotModified if payload.method().is_edit() => {
                let mut same = identify(payload);
                same.insert("not_modified".into(), Value::Bool(true));
                output = Some(Value::Object(same));
                (
                    Outcome::Success,
                    format!(
                        "not modified: the message already shows this ({prefix}: {description})"
                    ),
                    None,
                )
            }
            Verdict::RetryAfter(Some(after)) => (
                Outcome::RetryAfter(after),
                format!(
                    "{prefix}: {description}; the bot pauses for {}",
                    readable(after)
                ),
                Some(Signal::PauseDestination(after)),
            ),
            Verdict::RetryAfter(None) | Verdict::Transient => {
                (Outcome::Transient, format!("{prefix}: {description}"), None)
            }
            Verdict::Migrate(to) => (
                Outcome::Transient,
                format!("{prefix}: {description}; the chat moved to {to}"),
                Some(Signal::MigrateChat {
                    from: payload.chat_id().to_string(),
                    to,
                }),
            ),
            Verdict::Unauthorized => (
                Outcome::Permanent,
                format!("{prefix}: {description}; the bot token was rejected"),
                Some(Signal::Unauthorized),
            ),
            Verdict::Conflict | Verdict::NotModified | Verdict::Permanent => {
                (Outcome::Permanent, format!("{prefix}: {description}"), None)
            }
        };
        DeliveryResult {
            signal,
            output,
            ..plain(outcome, code, detail)
        }
    }

    /// The request for one payload: JSON, or multipart when it uploads a file.
    fn build(&self, payload: &TelegramPayload) -> Result<RequestBuilder, String> {
        let url = self.endpoint(payload.method().as_str());
        let mut params = payload.to_params();
        // The Bot API takes a file URL as the field's plain string value.
        for field in ["photo", "document"] {
            if let Some(Value::Object(file)) = params.get(field)
                && let Some(url) = file.get("url").cloned()
            {
                params.insert(field.to_owned(), url);
            }
        }
        let Some((field, file)) = payload.upload() else {
            return Ok(self
                .client
                .post(url)
                .header(CONTENT_TYPE, "application/json")
                .body(Value::Object(params).to_string()));
        };
        let (InputFile::Upload { filename, .. }, Some(bytes)) = (file, file.bytes()) else {
            return Err(format!(
                "invalid payload: `{field}.base64` is not valid base64"
            ));
        };
        params.remove(field);
        let mut form = Form::new();
        for (name, value) in params {
            let text = match value {
                Value::String(s) => s,
                // Numbers, booleans and the keyboard (an object) as JSON text, as the Bot API
                // expects in form fields.
                other => other.to_string(),
            };
            form = form.text(name, text);
        }
        let part = Part::bytes(bytes)
            .file_name(filename.clone())
            .mime_str("application/octet-stream")
            .map_err(|_| "could not build the upload".to_owned())?;
        Ok(self.client.post(url).multipart(form.part(field, part)))
    }
}

impl Connector for TelegramConnector {
    async fn deliver(&self, delivery: &Delivery<'_>) -> DeliveryResult {
        let start = self.clock.now();
        let result = self.attempt(delivery).await;
        DeliveryResult {
            detail: truncate(&self.token.scrub(&result.detail), 2 * DETAIL_CHARS),
            duration: self.clock.now().saturating_duration_since(start),
            ..result
        }
    }
}

/// The output of a message sent or edited: its `message_id`, `chat_id` and `date` (and
/// `edit_date`) as Telegram answered them, the payload's chat and message where the answer
/// lacks them.
fn sent_output(result: Option<&Value>, payload: &TelegramPayload) -> Map<String, Value> {
    let mut output = identify(payload);
    let Some(result) = result else {
        return output;
    };
    let answered = [
        ("message_id", result.get("message_id")),
        (
            "chat_id",
            result.get("chat").and_then(|chat| chat.get("id")),
        ),
        ("date", result.get("date")),
        ("edit_date", result.get("edit_date")),
    ];
    for (key, value) in answered {
        if let Some(value) = value.filter(|v| v.is_i64()) {
            output.insert(key.into(), value.clone());
        }
    }
    output
}

/// The payload's chat (a number, or an `@username` as written) and, for an edit, message.
fn identify(payload: &TelegramPayload) -> Map<String, Value> {
    let mut output = Map::new();
    let chat = match payload.chat_id() {
        ChatId::Id(id) => Value::from(*id),
        ChatId::Username(name) => Value::from(name.as_str()),
    };
    output.insert("chat_id".into(), chat);
    if let Some(id) = payload.message_id() {
        output.insert("message_id".into(), Value::from(id));
    }
    output
}

fn invalid(field: &'static str, reason: &'static str) -> TelegramError {
    TelegramError::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

/// A Bot API answer: `{"ok", "result", "error_code", "description", "parameters"}`.
#[derive(Debug, Deserialize)]
struct ApiResponse {
    ok: bool,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error_code: Option<i32>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<ResponseParameters>,
}

#[derive(Debug, Default, Deserialize)]
struct ResponseParameters {
    #[serde(default)]
    retry_after: Option<u64>,
    #[serde(default)]
    migrate_to_chat_id: Option<i64>,
}

/// What came back for one request.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// A `Retry-After` header, which the Bot API does not send but a proxy in front may.
    retry_after: Option<Duration>,
    /// The body as a Bot API answer, when it is one.
    response: Option<ApiResponse>,
    /// The start of the body on one line, for answers that are not JSON.
    snippet: String,
}

impl Reply {
    /// Telegram's description, or what the body says when it is not a Bot API answer.
    fn description(&self) -> String {
        match self
            .response
            .as_ref()
            .and_then(|r| r.description.as_deref())
        {
            Some(description) => quote(description),
            None if self.snippet.is_empty() => "no description".to_owned(),
            None => format!("not a Bot API answer: {}", self.snippet),
        }
    }
}

/// What an answer means, before it is turned into a delivery result or an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    /// Flood control; the wait when one is known.
    RetryAfter(Option<Duration>),
    /// The group became a supergroup with this id.
    Migrate(i64),
    /// 400 "message is not modified": an edit that changes nothing.
    NotModified,
    Unauthorized,
    Conflict,
    Transient,
    Permanent,
}

/// Classifies an answer on its HTTP status, `error_code` and `description` together.
fn assess(reply: &Reply) -> Verdict {
    let status = reply.status;
    let Some(response) = &reply.response else {
        // Not a Bot API answer: a proxy's error page, an HTML 502.
        return match status {
            429 => Verdict::RetryAfter(reply.retry_after),
            401 => Verdict::Unauthorized,
            408 | 500..=599 => Verdict::Transient,
            // A 2xx that is not a Bot API answer may or may not have been sent: retrying risks
            // a duplicate, which Telegram's lack of idempotency keys makes unavoidable anyway.
            200..=299 => Verdict::Transient,
            _ => Verdict::Permanent,
        };
    };
    if response.ok && (200..300).contains(&status) {
        return Verdict::Ok;
    }
    let code = response.error_code.unwrap_or(i32::from(status));
    let description = response
        .description
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase();
    let parameters = response.parameters.as_ref();
    let retry_after = parameters
        .and_then(|p| p.retry_after)
        .map(Duration::from_secs)
        .or_else(|| retry_after_in(&description))
        .or(reply.retry_after);
    if code == 429 || description.starts_with("too many requests") {
        return Verdict::RetryAfter(retry_after);
    }
    if let Some(to) = parameters.and_then(|p| p.migrate_to_chat_id)
        && (code == 400 || description.contains("upgraded to a supergroup"))
    {
        return Verdict::Migrate(to);
    }
    if code == 401 || description.starts_with("unauthorized") {
        return Verdict::Unauthorized;
    }
    if code == 409 || description.starts_with("conflict") {
        return Verdict::Conflict;
    }
    if code == 400 && description.contains("message is not modified") {
        return Verdict::NotModified;
    }
    if code >= 500 || status >= 500 {
        return Verdict::Transient;
    }
    // A wait for something other than flood control (rare): honour it.
    if let Some(after) = parameters.and_then(|p| p.retry_after) {
        return Verdict::RetryAfter(Some(Duration::from_secs(after)));
    }
    Verdict::Permanent
}

/// The N of "… retry after N" in a description.
fn retry_after_in(description: &str) -> Option<Duration> {
    let (_, rest) = description.split_once("retry after ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().map(Duration::from_secs)
}
