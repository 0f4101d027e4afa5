//! A fake Telegram Bot API server on 127.0.0.1: checks the bot token, records every request,
//! answers sends with Telegram's shapes (`ok`, 429 with `retry_after`, 401, 400 migrate, 403)
//! from a per-chat script, and can enforce a minimum spacing per chat the way Telegram's flood
//! control does (429 when a chat is sent to too soon).
//!
//! For inbound updates it serves `getUpdates` from a queue of pending updates the way Telegram
//! does (an `offset` confirms and forgets every update below it; an empty queue holds the
//! request for a moment, like a long poll), answers 409 while a conflict is switched on, fails
//! scripted polls (connection dropped, an HTML 502), and accepts `answerCallbackQuery`
//! (400 for a query id starting with `expired`; scripted failures first, if any), `setWebhook`
//! and `deleteWebhook`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::support::Recorded;

/// The token the fake accepts.
pub(crate) const BOT_TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

/// How the fake answers one request to a chat.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BotReply {
    /// `{"ok": true, "result": {...}}`.
    Ok,
    /// 429 flood control with `retry_after` seconds.
    TooManyRequests(u64),
    /// 401 Unauthorized.
    Unauthorized,
    /// 400: the group became this supergroup.
    Migrated(i64),
    /// 403: the user blocked the bot.
    Blocked,
    /// 502: Telegram is down.
    Down,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub(crate) struct BotRequest {
    /// `sendMessage`, `sendPhoto`, …
    pub(crate) method: String,
    /// The JSON body.
    pub(crate) params: Value,
    /// When it arrived.
    pub(crate) at: Instant,
}

/// How the fake fails one `getUpdates`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PollFailure {
    /// Close the connection without answering (a network error for the client).
    Disconnect,
    /// 502 with an HTML body, as a proxy in front of Telegram answers.
    BadGateway,
}

/// How the fake fails one `answerCallbackQuery`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CallbackFailure {
    /// Close the connection without answering (a network error for the client).
    Disconnect,
    /// 500 with Telegram's JSON error body.
    InternalError,
    /// 429 flood control with `retry_after` seconds.
    TooManyRequests(u64),
}

/// The longest the fake holds a `getUpdates` with nothing to return (Telegram would hold it
/// for the whole `timeout`; the tests need not wait that long).
const LONG_POLL_HOLD: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
struct Inner {
    scripts: Mutex<HashMap<String, VecDeque<BotReply>>>,
    requests: Recorded<BotRequest>,
    /// Last successful send per chat, when spacing is enforced.
    last_send: Mutex<HashMap<String, Instant>>,
    min_spacing: Mutex<Option<Duration>>,
    /// Updates not yet confirmed by an offset, oldest first.
    updates: Mutex<Vec<Value>>,
    /// Wakes a held `getUpdates` when updates are queued.
    queued: Notify,
    /// While set, `getUpdates` answers 409.
    conflict: Mutex<bool>,
    /// Failures for the next polls, in order.
    poll_failures: Mutex<VecDeque<PollFailure>>,
    /// Failures for the next `answerCallbackQuery` calls, in order.
    callback_failures: Mutex<VecDeque<CallbackFailure>>,
}

/// A running fake Bot API.
#[derive(Debug, Clone)]
pub(crate) struct FakeBotApi {
    /// `http://127.0.0.1:<port>`: the destination's `api_base`.
    pub(crate) base: String,
    inner: Arc<Inner>,
}

impl FakeBotApi {
    /// Starts a fake that answers `ok` unless a chat's script says otherwise.
    pub(crate) async fn start() -> FakeBotApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Inner::default());
        let shared = inner.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        FakeBotApi { base, inner }
    }

    /// Appends replies for sends to `chat` (as written, e.g. `-100123`).
    pub(crate) fn script(&self, chat: &str, replies: impl IntoIterator<Item = BotReply>) {
        self.inner
            .scripts
            .lock()
            .unwrap()
            .entry(chat.to_owned())
            .or_default()
            .extend(replies);
    }

    /// Answers 429 to a send that comes sooner than `spacing` after the chat's last one.
    pub(crate) fn enforce_spacing(&self, spacing: Duration) {
        *self.inner.min_spacing.lock().unwrap() = Some(spacing);
    }

    /// Queues updates for `getUpdates` (an update already pending is replaced).
    pub(crate) fn push_updates(&self, updates: impl IntoIterator<Item = Value>) {
        let mut pending = self.inner.updates.lock().unwrap();
        for update in updates {
            pending.retain(|u| u["update_id"] != update["update_id"]);
            pending.push(update);
        }
        pending.sort_by_key(|u| u["update_id"].as_i64());
        drop(pending);
        self.inner.queued.notify_waiters();
    }

    /// While `on`, `getUpdates` answers 409 as Telegram does for a second consumer.
    pub(crate) fn set_conflict(&self, on: bool) {
        *self.inner.conflict.lock().unwrap() = on;
    }

    /// Fails the next polls with `failures`, in order.
    pub(crate) fn fail_next_polls(&self, failures: impl IntoIterator<Item = PollFailure>) {
        self.inner.poll_failures.lock().unwrap().extend(failures);
    }

    /// Fails the next `answerCallbackQuery` calls with `failures`, in order.
    pub(crate) fn fail_next_callback_answers(
        &self,
        failures: impl IntoIterator<Item = CallbackFailure>,
    ) {
        self.inner
            .callback_failures
            .lock()
            .unwrap()
            .extend(failures);
    }

    /// Everything received so far.
    pub(crate) fn requests(&self) -> Vec<BotRequest> {
        self.inner.requests.all()
    }

    /// The requests to `method` received so far.
    pub(crate) fn calls(&self, method: &str) -> Vec<BotRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method)
            .collect()
    }

    /// Waits (at most `limit`) until a `getUpdates` with `offset` arrived; answers every
    /// `getUpdates` so far.
    pub(crate) async fn wait_for_offset(&self, offset: i64, limit: Duration) -> Vec<BotRequest> {
        self.inner
            .requests
            .wait_until(
                limit,
                &format!("a getUpdates with offset {offset}"),
                |all| {
                    all.iter()
                        .any(|r| r.method == "getUpdates" && r.params["offset"] == offset)
                },
            )
            .await;
        self.calls("getUpdates")
    }

    /// Waits (at most `limit`) until at least `n` requests to `method` arrived.
    pub(crate) async fn wait_for_calls(
        &self,
        method: &str,
        n: usize,
        limit: Duration,
    ) -> Vec<BotRequest> {
        self.inner
            .requests
            .wait_until(limit, &format!("{n} {method} requests"), |all| {
                all.iter().filter(|r| r.method == method).count() >= n
            })
            .await
            .into_iter()
            .filter(|r| r.method == method)
            .collect()
    }

    /// Waits (at most `limit`) until at least `n` requests arrived.
    pub(crate) async fn wait_for_requests(&self, n: usize, limit: Duration) -> Vec<BotRequest> {
        self.inner
            .requests
            .wait_for(n, limit, "Bot API requests")
            .await
    }
}

fn chat_key(params: &Value) -> String {
    match &params["chat_id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The answer to one request: a status and a body, or `None` to drop the connection.
type Answer = Option<(u16, &'static str, String)>;

fn json_answer((status, body): (u16, Value)) -> Answer {
    Some((status, "application/json", body.to_string()))
}

/// Answers one request to `method`.
async fn answer(inner: &Inner, token: &str, method: &str, params: &Value) -> Answer {
    if token != BOT_TOKEN {
        return json_answer((
            401,
            json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
        ));
    }
    match method {
        "getUpdates" => get_updates(inner, params).await,
        "answerCallbackQuery" => {
            let failure = inner.callback_failures.lock().unwrap().pop_front();
            match failure {
                Some(CallbackFailure::Disconnect) => return None,
                Some(CallbackFailure::InternalError) => {
                    return json_answer((
                        500,
                        json!({"ok": false, "error_code": 500, "description": "Internal Server Error"}),
                    ));
                }
                Some(CallbackFailure::TooManyRequests(after)) => {
                    return json_answer((
                        429,
                        json!({"ok": false, "error_code": 429, "description": format!("Too Many Requests: retry after {after}"), "parameters": {"retry_after": after}}),
                    ));
                }
                None => {}
            }
            let id = params["callback_query_id"].as_str().unwrap_or_default();
            json_answer(if id.starts_with("expired") {
                (
                    400,
                    json!({"ok": false, "error_code": 400, "description": "Bad Request: query is too old and response timeout expired or query ID is invalid"}),
                )
            } else {
                (200, json!({"ok": true, "result": true}))
            })
        }
        "setWebhook" | "deleteWebhook" => json_answer((200, json!({"ok": true, "result": true}))),
        "getMe" => json_answer((
            200,
            json!({"ok": true, "result": {"id": 123456789, "is_bot": true, "first_name": "Test", "username": "ferrule_test_bot"}}),
        )),
        _ => json_answer(send(inner, params)),
    }
}

/// `getUpdates`: confirms what lies below `offset`, then answers what is pending, holding the
/// request a moment when nothing is.
async fn get_updates(inner: &Inner, params: &Value) -> Answer {
    if *inner.conflict.lock().unwrap() {
        return json_answer((
            409,
            json!({"ok": false, "error_code": 409, "description": "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"}),
        ));
    }
    let failure = inner.poll_failures.lock().unwrap().pop_front();
    match failure {
        Some(PollFailure::Disconnect) => return None,
        Some(PollFailure::BadGateway) => {
            return Some((
                502,
                "text/html",
                "<html><body><h1>502 Bad Gateway</h1></body></html>".into(),
            ));
        }
        None => {}
    }
    let pending = || {
        let mut updates = inner.updates.lock().unwrap();
        if let Some(offset) = params["offset"].as_i64() {
            updates.retain(|u| u["update_id"].as_i64().unwrap() >= offset);
        }
        updates.clone()
    };
    let queued = inner.queued.notified();
    let mut updates = pending();
    if updates.is_empty() {
        let _ = tokio::time::timeout(LONG_POLL_HOLD, queued).await;
        updates = pending();
    }
    json_answer((200, json!({"ok": true, "result": updates})))
}

/// The status and body for one send.
fn send(inner: &Inner, params: &Value) -> (u16, Value) {
    let chat = chat_key(params);
    let scripted = inner
        .scripts
        .lock()
        .unwrap()
        .get_mut(&chat)
        .and_then(VecDeque::pop_front);
    let reply = match scripted {
        Some(reply) => reply,
        None => {
            let spacing = *inner.min_spacing.lock().unwrap();
            let mut last = inner.last_send.lock().unwrap();
            let now = Instant::now();
            match (spacing, last.get(&chat)) {
                (Some(spacing), Some(&prev)) if now.duration_since(prev) < spacing => {
                    BotReply::TooManyRequests(1)
                }
                _ => {
                    last.insert(chat.clone(), now);
                    BotReply::Ok
                }
            }
        }
    };
    match reply {
        BotReply::Ok => (
            200,
            json!({"ok": true, "result": {"message_id": 1, "date": 0, "chat": {"id": params["chat_id"], "type": "private"}}}),
        ),
        BotReply::TooManyRequests(after) => (
            429,
            json!({"ok": false, "error_code": 429, "description": format!("Too Many Requests: retry after {after}"), "parameters": {"retry_after": after}}),
        ),
        BotReply::Unauthorized => (
            401,
            json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
        ),
        BotReply::Migrated(to) => (
            400,
            json!({"ok": false, "error_code": 400, "description": "Bad Request: group chat was upgraded to a supergroup chat", "parameters": {"migrate_to_chat_id": to}}),
        ),
        BotReply::Blocked => (
            403,
            json!({"ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}),
        ),
        BotReply::Down => (
            502,
            json!({"ok": false, "error_code": 502, "description": "Bad Gateway"}),
        ),
    }
}

async fn serve(mut stream: TcpStream, inner: Arc<Inner>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
        let length: usize = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let params: Value =
            serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
        buf.drain(..head_end + length);
        let (token, method) = path
            .strip_prefix("/bot")
            .and_then(|p| p.split_once('/'))
            .unwrap_or(("", ""));
        let answer = answer(&inner, token, method, &params).await;
        inner.requests.push(BotRequest {
            method: method.to_owned(),
            params,
            at: Instant::now(),
        });
        let Some((status, content_type, body)) = answer else {
            return;
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: keep-alive\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
