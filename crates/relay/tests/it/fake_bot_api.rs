//! A fake Telegram Bot API server on 127.0.0.1: checks the bot token, records every request,
//! answers with Telegram's shapes (`ok`, 429 with `retry_after`, 401, 400 migrate, 403) from a
//! per-chat script, and can enforce a minimum spacing per chat the way Telegram's flood control
//! does (429 when a chat is sent to too soon).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

#[derive(Debug, Default)]
struct Inner {
    scripts: Mutex<HashMap<String, VecDeque<BotReply>>>,
    requests: Recorded<BotRequest>,
    /// Last successful send per chat, when spacing is enforced.
    last_send: Mutex<HashMap<String, Instant>>,
    min_spacing: Mutex<Option<Duration>>,
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

    /// Everything received so far.
    pub(crate) fn requests(&self) -> Vec<BotRequest> {
        self.inner.requests.all()
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

/// The status and body for one request.
fn answer(inner: &Inner, token: &str, params: &Value) -> (u16, Value) {
    if token != BOT_TOKEN {
        return (
            401,
            json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
        );
    }
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
        let (status, body) = answer(&inner, token, &params);
        inner.requests.push(BotRequest {
            method: method.to_owned(),
            params,
            at: Instant::now(),
        });
        let body = body.to_string();
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: keep-alive\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
