//! A fake Telegram Bot API on 127.0.0.1 that enforces Telegram's send limits the way Telegram
//! does: 429 with `parameters.retry_after` when a chat, a group or the whole bot gets more
//! sends than its limit within a sliding window of real arrival times. It records every send
//! it accepts and every one it refuses, so a test or a benchmark can check that the relay
//! never triggered flood control and measure how fast it delivered.
//!
//! It also keeps what each message it accepted shows (its text or caption and its inline
//! keyboard), and edits it with `editMessageText` and `editMessageReplyMarkup` the way Telegram
//! does: 400 "message to edit not found" for a message it never sent, 400 "message is not
//! modified" for an edit that changes nothing, the edited message otherwise. It records every
//! edit it applied ([`FakeBotApi::edits`]); edits are not counted against the limits.
//! `answerCallbackQuery` is answered `true`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use ferrule::testing::fake_bot_api::{BotLimits, FakeBotApi};
//!
//! let api = FakeBotApi::start("123:token", BotLimits::telegram()).await?;
//! // Point a Telegram destination's `api_base` at `api.base()`, submit, then:
//! let sends = api.wait_for_sends(300, std::time::Duration::from_secs(60)).await;
//! assert_eq!(api.too_many_requests(), 0);
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ferrule_connectors::telegram::{ChatId, ChatKind};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// At most `limit` sends within any span of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Sends admitted per span.
    pub limit: usize,
    /// The span.
    pub per: Duration,
}

impl Window {
    /// `limit` sends per `per`.
    pub const fn new(limit: usize, per: Duration) -> Self {
        Window { limit, per }
    }
}

/// The limits the fake enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BotLimits {
    /// Every chat: Telegram's ~1 message per second.
    pub per_chat: Window,
    /// Groups, supergroups and channels (negative ids, `@username`s), on top of `per_chat`:
    /// 20 messages per minute.
    pub per_group: Window,
    /// Every send of the bot together: ~30 messages per second.
    pub per_bot: Window,
}

impl BotLimits {
    /// Telegram's published limits: 1/s per chat, 20/min per group, 30/s per bot.
    pub const fn telegram() -> Self {
        BotLimits {
            per_chat: Window::new(1, Duration::from_secs(1)),
            per_group: Window::new(20, Duration::from_secs(60)),
            per_bot: Window::new(30, Duration::from_secs(1)),
        }
    }
}

/// Which limit refused a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// The chat's own limit.
    PerChat,
    /// The group's per-minute limit.
    PerGroup,
    /// The bot's overall limit.
    PerBot,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::PerChat => "per chat",
            Limit::PerGroup => "per group",
            Limit::PerBot => "per bot",
        })
    }
}

/// A send the fake accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// `sendMessage`, `sendPhoto`, …
    pub method: String,
    /// The chat as written (`42`, `-100123`, `@news`).
    pub chat: String,
    /// The request's JSON body.
    pub params: Value,
    /// When it arrived.
    pub at: Instant,
}

/// An edit the fake applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Edited {
    /// `editMessageText` or `editMessageReplyMarkup`.
    pub method: String,
    /// The chat as written.
    pub chat: String,
    /// The message edited.
    pub message_id: i64,
    /// The request's JSON body.
    pub params: Value,
    /// When it arrived.
    pub at: Instant,
}

/// What a message the fake accepted shows now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// Its text, or its caption.
    pub text: Option<String>,
    /// Its inline keyboard's rows; `None` when it has no buttons.
    pub keyboard: Option<Value>,
    /// When it was sent, in Unix seconds.
    pub date: u64,
}

/// A send the fake refused with 429.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The chat as written.
    pub chat: String,
    /// The limit it would have exceeded.
    pub limit: Limit,
    /// The `retry_after` the fake answered, in seconds.
    pub retry_after: u64,
    /// When it arrived.
    pub at: Instant,
}

/// A running fake Bot API; the server stops when this is dropped.
#[derive(Debug)]
pub struct FakeBotApi {
    base: String,
    inner: Arc<Inner>,
    server: AbortHandle,
}

#[derive(Debug)]
struct Inner {
    token: String,
    limits: BotLimits,
    state: Mutex<Windows>,
    changed: Notify,
}

/// The arrival times inside each window, and what was recorded.
#[derive(Debug, Default)]
struct Windows {
    chats: HashMap<String, VecDeque<Instant>>,
    groups: HashMap<String, VecDeque<Instant>>,
    bot: VecDeque<Instant>,
    sent: Vec<Sent>,
    refused: Vec<Refused>,
    /// What each accepted message shows, by chat as written and message id.
    shown: HashMap<(String, i64), Shown>,
    edited: Vec<Edited>,
}

impl FakeBotApi {
    /// Starts a fake on a free port of 127.0.0.1 that accepts the bot `token` and enforces
    /// `limits`.
    pub async fn start(token: impl Into<String>, limits: BotLimits) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let inner = Arc::new(Inner {
            token: token.into(),
            limits,
            state: Mutex::new(Windows::default()),
            changed: Notify::new(),
        });
        let app = Router::new()
            .route("/{bot}/{method}", post(handle))
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })
        .abort_handle();
        Ok(FakeBotApi {
            base,
            inner,
            server,
        })
    }

    /// `http://127.0.0.1:<port>`: the destination's `api_base`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Every send accepted so far, in arrival order.
    pub fn sends(&self) -> Vec<Sent> {
        self.inner.lock().sent.clone()
    }

    /// Every send refused with 429 so far, in arrival order.
    pub fn refusals(&self) -> Vec<Refused> {
        self.inner.lock().refused.clone()
    }

    /// How many sends were refused with 429 so far.
    pub fn too_many_requests(&self) -> usize {
        self.inner.lock().refused.len()
    }

    /// Every edit applied so far, in arrival order (not the ones answered with an error).
    pub fn edits(&self) -> Vec<Edited> {
        self.inner.lock().edited.clone()
    }

    /// What message `message_id` in `chat` (as written, e.g. `42` or `@news`) shows now, after
    /// any edits; `None` when the fake never sent it.
    pub fn shown(&self, chat: &str, message_id: i64) -> Option<Shown> {
        self.inner
            .lock()
            .shown
            .get(&(chat.to_owned(), message_id))
            .cloned()
    }

    /// Waits until at least `n` edits were applied or `limit` passed, then returns every edit
    /// applied so far (fewer than `n` if the time ran out).
    pub async fn wait_for_edits(&self, n: usize, limit: Duration) -> Vec<Edited> {
        self.wait_for(n, limit, Self::edits).await
    }

    /// Waits until at least `n` sends were accepted or `limit` passed, then returns every
    /// send accepted so far (fewer than `n` if the time ran out).
    pub async fn wait_for_sends(&self, n: usize, limit: Duration) -> Vec<Sent> {
        self.wait_for(n, limit, Self::sends).await
    }

    /// Waits until `read` answers at least `n` records or `limit` passed, then answers what it
    /// reads then.
    async fn wait_for<T>(&self, n: usize, limit: Duration, read: fn(&Self) -> Vec<T>) -> Vec<T> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.inner.changed.notified();
            let records = read(self);
            if records.len() >= n {
                return records;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return read(self);
            }
        }
    }
}

impl Drop for FakeBotApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Windows> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a send to `chat` arriving now and records it, answering its message id and date; or
    /// records the refusal and names the limit it would exceed and the seconds until that
    /// limit admits one more. The arrival time is read under the lock, so every window holds
    /// its arrivals in order.
    fn admit(&self, chat: &ChatId, sent: Sent) -> Result<(usize, u64), (Limit, u64)> {
        let limits = self.limits;
        let mut state = self.lock();
        let now = Instant::now();
        let Windows {
            chats,
            groups,
            bot,
            sent: accepted,
            refused,
            shown,
            ..
        } = &mut *state;
        let mut checks: Vec<(Limit, Window, &mut VecDeque<Instant>)> = vec![(
            Limit::PerChat,
            limits.per_chat,
            chats.entry(sent.chat.clone()).or_default(),
        )];
        if chat.kind() == ChatKind::Group {
            let group = groups.entry(sent.chat.clone()).or_default();
            checks.push((Limit::PerGroup, limits.per_group, group));
        }
        checks.push((Limit::PerBot, limits.per_bot, bot));
        for (limit, window, arrivals) in &mut checks {
            // An arrival leaves the window `per` after it came: the window is (now - per, now].
            while arrivals.front().is_some_and(|&at| at + window.per <= now) {
                arrivals.pop_front();
            }
            if arrivals.len() >= window.limit {
                let oldest = arrivals.front().copied().unwrap_or(now);
                let wait = (oldest + window.per).saturating_duration_since(now);
                let retry_after = wait.as_secs_f64().ceil().max(1.0) as u64;
                let limit = *limit;
                refused.push(Refused {
                    chat: sent.chat,
                    limit,
                    retry_after,
                    at: now,
                });
                drop(checks);
                drop(state);
                self.changed.notify_waiters();
                return Err((limit, retry_after));
            }
        }
        for (_, _, arrivals) in checks {
            arrivals.push_back(now);
        }
        let message_id = accepted.len() + 1;
        let date = unix_now();
        let text = sent.params.get("text").or(sent.params.get("caption"));
        shown.insert(
            (sent.chat.clone(), message_id as i64),
            Shown {
                text: text.and_then(Value::as_str).map(str::to_owned),
                keyboard: keyboard(&sent.params),
                date,
            },
        );
        accepted.push(Sent { at: now, ..sent });
        drop(state);
        self.changed.notify_waiters();
        Ok((message_id, date))
    }

    /// Applies an edit of message `message_id` in `chat` to what it shows, as Telegram would,
    /// and answers the edited message's fields or Telegram's error description.
    fn edit(
        &self,
        chat: &str,
        message_id: i64,
        edit: Edited,
    ) -> Result<(Shown, u64), &'static str> {
        let mut state = self.lock();
        let Some(before) = state.shown.get(&(chat.to_owned(), message_id)) else {
            return Err("Bad Request: message to edit not found");
        };
        let mut after = before.clone();
        if edit.method == "editMessageText" {
            after.text = edit.params["text"].as_str().map(str::to_owned);
        }
        after.keyboard = keyboard(&edit.params);
        if after == *before {
            return Err(
                "Bad Request: message is not modified: specified new message content and reply \
                 markup are exactly the same as a current content and reply markup of the message",
            );
        }
        state
            .shown
            .insert((chat.to_owned(), message_id), after.clone());
        state.edited.push(edit);
        drop(state);
        self.changed.notify_waiters();
        Ok((after, unix_now()))
    }
}

/// The inline keyboard's rows a request's `reply_markup` asks for; `None` for no buttons (or
/// no `reply_markup`, or a forced reply).
fn keyboard(params: &Value) -> Option<Value> {
    params["reply_markup"]["inline_keyboard"]
        .as_array()
        .filter(|rows| !rows.is_empty())
        .map(|rows| Value::Array(rows.clone()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn error(status: StatusCode, description: &str) -> Response {
    let body = json!({"ok": false, "error_code": status.as_u16(), "description": description});
    (status, axum::Json(body)).into_response()
}

/// `POST /bot<token>/<method>` with a JSON body.
async fn handle(
    State(inner): State<Arc<Inner>>,
    Path((bot, method)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if bot.strip_prefix("bot") != Some(inner.token.as_str()) {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let edit = matches!(
        method.as_str(),
        "editMessageText" | "editMessageReplyMarkup"
    );
    if method == "answerCallbackQuery" {
        // Answered, as Telegram does; what the answer said is not kept.
        return axum::Json(json!({"ok": true, "result": true})).into_response();
    }
    if !method.starts_with("send") && !edit {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let Ok(params) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad Request: the fake reads JSON bodies only",
        );
    };
    let chat = match &params["chat_id"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return error(StatusCode::BAD_REQUEST, "Bad Request: chat_id is empty"),
    };
    let Ok(chat_id) = chat.parse::<ChatId>() else {
        return error(StatusCode::BAD_REQUEST, "Bad Request: chat not found");
    };
    let kind = match chat_id.kind() {
        ChatKind::Private => "private",
        ChatKind::Group => "supergroup",
    };
    let mut result = json!({
        "chat": {"id": params["chat_id"], "type": kind},
        "text": params["text"],
    });
    if edit {
        let Some(message_id) = params["message_id"].as_i64() else {
            return error(
                StatusCode::BAD_REQUEST,
                "Bad Request: message identifier is not specified",
            );
        };
        let edited = Edited {
            method,
            chat: chat.clone(),
            message_id,
            params,
            at: Instant::now(),
        };
        return match inner.edit(&chat, message_id, edited) {
            Ok((shown, edit_date)) => {
                result["message_id"] = json!(message_id);
                result["date"] = json!(shown.date);
                result["edit_date"] = json!(edit_date);
                result["text"] = json!(shown.text);
                axum::Json(json!({"ok": true, "result": result})).into_response()
            }
            Err(description) => error(StatusCode::BAD_REQUEST, description),
        };
    }
    let sent = Sent {
        method,
        chat,
        params,
        at: Instant::now(),
    };
    match inner.admit(&chat_id, sent) {
        Ok((message_id, date)) => {
            result["message_id"] = json!(message_id);
            result["date"] = json!(date);
            axum::Json(json!({"ok": true, "result": result})).into_response()
        }
        Err((_, retry_after)) => {
            let body = json!({
                "ok": false,
                "error_code": 429,
                "description": format!("Too Many Requests: retry after {retry_after}"),
                "parameters": {"retry_after": retry_after},
            });
            (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response()
        }
    }
}
