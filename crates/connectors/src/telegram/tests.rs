//! The Telegram connector against a fake Bot API server on 127.0.0.1 that enforces Telegram's
//! limits and error shapes and records every request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ferrule_policy::Outcome;
use ferrule_policy::clock::{Clock, ManualClock};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::{AnyConnector, Connector, Delivery, DeliveryResult, Signal};

const TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
/// The secret part of [`TOKEN`]: it must never show in a detail, an error or `Debug`.
const SECRET: &str = "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
/// A supergroup id beyond 32 bits.
const SUPERGROUP: i64 = -1_001_234_567_890_123;
const HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
    <center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>";

/// How the fake server treats a chat, beyond the limits.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// 403: the user blocked the bot.
    Blocked,
    /// 400: the group became the given supergroup.
    Upgraded(i64),
    /// An HTML 502 from the proxy in front.
    BadGateway,
    /// Answers after five seconds.
    Slow,
    /// Edits answer 400 "message can't be edited" (too old, or not the bot's).
    Uneditable,
    /// Everything answers 400 "message is not modified".
    NotModified,
}

/// One multipart field.
#[derive(Debug, Clone)]
struct Field {
    name: String,
    filename: Option<String>,
    bytes: Vec<u8>,
}

/// One request as the fake server received it.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    method: String,
    content_type: String,
    /// The parameters: the JSON body, or the multipart text fields as JSON strings.
    params: Value,
    /// The multipart file fields.
    files: Vec<Field>,
}

#[derive(Debug)]
struct State {
    clock: ManualClock,
    requests: Vec<Request>,
    behaviours: HashMap<String, Behaviour>,
    /// Successful sends per chat, and of the whole bot.
    per_chat: HashMap<String, Vec<Instant>>,
    per_bot: Vec<Instant>,
    next_message_id: i64,
    /// What each message sent shows: its text (or caption) and keyboard, by chat and id.
    messages: HashMap<(String, i64), (Value, Value)>,
    webhook: Option<String>,
    updates: Vec<Value>,
    callback_queries: Vec<String>,
}

/// A fake Bot API server: checks the token, enforces 1 msg/s per chat, 20 msg/min per group and
/// 30 msg/s per bot on its own manual clock, answers with Telegram's error shapes.
struct FakeBotApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeBotApi {
    async fn start() -> FakeBotApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            clock: ManualClock::new(),
            requests: Vec::new(),
            behaviours: HashMap::new(),
            per_chat: HashMap::new(),
            per_bot: Vec::new(),
            next_message_id: 1,
            messages: HashMap::new(),
            webhook: None,
            updates: Vec::new(),
            callback_queries: Vec::new(),
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, &state).await;
                });
            }
        });
        FakeBotApi { addr, state }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn behave(&self, chat: &str, behaviour: Behaviour) {
        self.state().behaviours.insert(chat.to_owned(), behaviour);
    }

    fn advance(&self, by: Duration) {
        self.state().clock.advance(by);
    }

    fn requests(&self) -> Vec<Request> {
        self.state().requests.clone()
    }
}

/// Reads one request, records it and answers it; one request per connection.
async fn serve(mut stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let path = lines.next().unwrap().split(' ').nth(1).unwrap().to_owned();
    let mut headers = HashMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers
        .get("content-length")
        .expect("the connector always sends a content-length")
        .parse()
        .unwrap();
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 65536];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let content_type = headers.get("content-type").cloned().unwrap_or_default();
    let (params, files) =
        if let Some(boundary) = content_type.strip_prefix("multipart/form-data; boundary=") {
            parse_multipart(&body, boundary)
        } else {
            (
                serde_json::from_slice(&body).unwrap_or(Value::Null),
                Vec::new(),
            )
        };
    let (token, method) = path
        .strip_prefix("/bot")
        .and_then(|p| p.split_once('/'))
        .unwrap_or(("", ""));
    let request = Request {
        path: path.clone(),
        method: method.to_owned(),
        content_type,
        params,
        files,
    };
    let (status, body, content_type, delay) = {
        let mut state = state.lock().unwrap();
        state.requests.push(request.clone());
        if token != TOKEN {
            let (s, b) = error(401, "Unauthorized", json!({}));
            (s, b, "application/json", None)
        } else {
            answer(&mut state, &request)
        }
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let response = format!(
        "HTTP/1.1 {status} Fake\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn error(code: u16, description: &str, parameters: Value) -> (u16, String) {
    let mut body = json!({"ok": false, "error_code": code, "description": description});
    if parameters.as_object().is_some_and(|p| !p.is_empty()) {
        body["parameters"] = parameters;
    }
    (code, body.to_string())
}

fn ok(result: Value) -> (u16, String) {
    (200, json!({"ok": true, "result": result}).to_string())
}

/// The fake Bot API's answer to one authenticated request.
fn answer(state: &mut State, request: &Request) -> (u16, String, &'static str, Option<Duration>) {
    let json = |(s, b): (u16, String)| (s, b, "application/json", None);
    let params = &request.params;
    match request.method.as_str() {
        "sendMessage" | "sendPhoto" | "sendDocument" => {}
        "editMessageText" | "editMessageReplyMarkup" => return json(edit(state, request)),
        "answerCallbackQuery" => {
            let id = params["callback_query_id"].as_str().unwrap_or("");
            return json(if state.callback_queries.iter().any(|q| q == id) {
                ok(json!(true))
            } else {
                error(
                    400,
                    "Bad Request: query is too old and response timeout expired or query ID is invalid",
                    json!({}),
                )
            });
        }
        "setWebhook" => {
            state.webhook = params["url"].as_str().map(str::to_owned);
            return json(ok(json!(true)));
        }
        "deleteWebhook" => {
            state.webhook = None;
            if params["drop_pending_updates"] == true {
                state.updates.clear();
            }
            return json(ok(json!(true)));
        }
        "getUpdates" => {
            if state.webhook.is_some() {
                return json(error(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
                    json!({}),
                ));
            }
            if let Some(offset) = params["offset"].as_i64() {
                state
                    .updates
                    .retain(|u| u["update_id"].as_i64().unwrap() >= offset);
            }
            return json(ok(Value::Array(state.updates.clone())));
        }
        _ => return json(error(404, "Not Found", json!({}))),
    }
    // Form fields arrive as text: a numeric chat id is a string there.
    let chat = match &params["chat_id"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return json(error(400, "Bad Request: chat_id is empty", json!({}))),
    };
    if let Some(text) = params["text"].as_str()
        && utf16_len(text) > 4096
    {
        return json(error(400, "Bad Request: message is too long", json!({})));
    }
    if let Some(caption) = params["caption"].as_str()
        && utf16_len(caption) > 1024
    {
        return json(error(
            400,
            "Bad Request: message caption is too long",
            json!({}),
        ));
    }
    match state.behaviours.get(&chat) {
        Some(Behaviour::Blocked) => {
            return json(error(
                403,
                "Forbidden: bot was blocked by the user",
                json!({}),
            ));
        }
        Some(Behaviour::Upgraded(to)) => {
            return json(error(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                json!({"migrate_to_chat_id": to}),
            ));
        }
        Some(Behaviour::BadGateway) => return (502, HTML_502.to_owned(), "text/html", None),
        Some(Behaviour::Slow) => {
            let (s, b) = ok(json!({"message_id": 0}));
            return (s, b, "application/json", Some(Duration::from_secs(5)));
        }
        Some(Behaviour::NotModified) => return json(not_modified()),
        Some(Behaviour::Uneditable) | None => {}
    }
    let now = state.clock.now();
    let is_group = chat.starts_with('-') || chat.starts_with('@');
    // The wait until `times` has fewer than `limit` entries within `per` of now.
    let wait = |times: &[Instant], limit: usize, per: Duration| -> Option<u64> {
        let recent: Vec<&Instant> = times.iter().filter(|t| now - **t < per).collect();
        (recent.len() >= limit).then(|| {
            let oldest = **recent.iter().min().unwrap();
            (per - (now - oldest)).as_secs_f64().ceil() as u64
        })
    };
    let chat_times = state.per_chat.get(&chat).cloned().unwrap_or_default();
    let waits = [
        wait(&chat_times, 1, Duration::from_secs(1)),
        is_group
            .then(|| wait(&chat_times, 20, Duration::from_secs(60)))
            .flatten(),
        wait(&state.per_bot, 30, Duration::from_secs(1)),
    ];
    if let Some(secs) = waits.into_iter().flatten().max() {
        return json(error(
            429,
            &format!("Too Many Requests: retry after {secs}"),
            json!({"retry_after": secs}),
        ));
    }
    state.per_chat.entry(chat.clone()).or_default().push(now);
    state.per_bot.push(now);
    let message_id = state.next_message_id;
    state.next_message_id += 1;
    let shown = params.get("text").or(params.get("caption")).cloned();
    let markup = keyboard(params.get("reply_markup"));
    state.messages.insert(
        (chat.clone(), message_id),
        (shown.unwrap_or(Value::Null), markup),
    );
    json(ok(
        json!({"message_id": message_id, "date": 1_767_225_600, "chat": {"id": numeric(&chat)}}),
    ))
}

/// A chat's numeric id as Telegram answers it: the id given, or a made-up one for a name.
fn numeric(chat: &str) -> i64 {
    chat.parse().unwrap_or(-1_001_000_000_001)
}

/// The inline keyboard a `reply_markup` shows (form fields carry it as JSON text); none for
/// anything else or an empty one.
fn keyboard(markup: Option<&Value>) -> Value {
    let markup = match markup {
        Some(Value::String(text)) => serde_json::from_str(text).unwrap_or(Value::Null),
        Some(other) => other.clone(),
        None => Value::Null,
    };
    match markup.get("inline_keyboard") {
        Some(rows) if rows.as_array().is_some_and(|r| !r.is_empty()) => rows.clone(),
        _ => Value::Null,
    }
}

fn not_modified() -> (u16, String) {
    error(
        400,
        "Bad Request: message is not modified: specified new message content and reply markup \
         are exactly the same as a current content and reply markup of the message",
        json!({}),
    )
}

/// `editMessageText` / `editMessageReplyMarkup` of a message sent earlier, as Telegram answers.
fn edit(state: &mut State, request: &Request) -> (u16, String) {
    let params = &request.params;
    let chat = match &params["chat_id"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return error(400, "Bad Request: chat_id is empty", json!({})),
    };
    match state.behaviours.get(&chat) {
        Some(Behaviour::Uneditable) => {
            return error(400, "Bad Request: message can't be edited", json!({}));
        }
        Some(Behaviour::NotModified) => return not_modified(),
        _ => {}
    }
    let id = params["message_id"].as_i64().unwrap_or(0);
    let Some((text, markup)) = state.messages.get(&(chat.clone(), id)).cloned() else {
        return error(400, "Bad Request: message to edit not found", json!({}));
    };
    let new_text = match request.method.as_str() {
        "editMessageText" => params["text"].clone(),
        _ => text.clone(),
    };
    let new_markup = keyboard(params.get("reply_markup"));
    if new_text == text && new_markup == markup {
        return not_modified();
    }
    state
        .messages
        .insert((chat.clone(), id), (new_text.clone(), new_markup));
    ok(json!({
        "message_id": id, "date": 1_767_225_600, "edit_date": 1_767_225_660,
        "chat": {"id": numeric(&chat)}, "text": new_text,
    }))
}

/// Parses a `multipart/form-data` body: text fields into a JSON object, files aside.
fn parse_multipart(body: &[u8], boundary: &str) -> (Value, Vec<Field>) {
    let delimiter = format!("--{boundary}");
    let mut params = serde_json::Map::new();
    let mut files = Vec::new();
    let mut rest = body;
    while let Some(start) = find(rest, delimiter.as_bytes()) {
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        rest = &rest[2..]; // CRLF after the delimiter
        let head_end = find(rest, b"\r\n\r\n").unwrap();
        let head = String::from_utf8(rest[..head_end].to_vec()).unwrap();
        let content_start = head_end + 4;
        let content_end = content_start
            + find(
                &rest[content_start..],
                format!("\r\n{delimiter}").as_bytes(),
            )
            .unwrap();
        let content = rest[content_start..content_end].to_vec();
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))
            .unwrap();
        let attribute = |name: &str| {
            let key = format!("; {name}=\"");
            disposition
                .split_once(&key)
                .map(|(_, v)| v.split_once('"').unwrap().0.to_owned())
        };
        let name = attribute("name").unwrap();
        match attribute("filename") {
            Some(filename) => files.push(Field {
                name,
                filename: Some(filename),
                bytes: content,
            }),
            None => {
                params.insert(name, Value::String(String::from_utf8(content).unwrap()));
            }
        }
        rest = &rest[content_end..];
    }
    (Value::Object(params), files)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A connector to the fake server on its clock, adjusted by `edit`.
fn connector(server: &FakeBotApi, edit: impl FnOnce(&mut TelegramConfig)) -> TelegramConnector {
    let mut config = TelegramConfig::new(TOKEN.parse().unwrap());
    config.api_base = server.base();
    edit(&mut config);
    let clock = server.state().clock.shared();
    TelegramConnector::new(config, clock).unwrap()
}

/// Delivers `payload` and checks that the token stays out of the result.
async fn deliver(connector: &TelegramConnector, payload: &str) -> DeliveryResult {
    let result = connector
        .deliver(&Delivery {
            message_id: "01JD5ZQ8X3V7K2M9N4P6R8T0W1",
            destination: "bot",
            payload,
            attempt: 1,
            traceparent: None,
        })
        .await;
    assert!(
        !result.detail.contains(SECRET),
        "token in {:?}",
        result.detail
    );
    assert!(!format!("{result:?}").contains(SECRET));
    result
}

fn text_to(chat: impl std::fmt::Display) -> String {
    format!(r#"{{"chat_id": {chat}, "text": "hello"}}"#)
}

#[tokio::test]
async fn sends_a_text_as_json() {
    let server = FakeBotApi::start().await;
    let bot = connector(&server, |_| {});
    let payload = r#"{"chat_id": 42, "text": "naïve ☕", "parse_mode": "MarkdownV2",
        "disable_notification": true, "reply_to_message_id": 9,
        "reply_markup": {"inline_keyboard": [[{"text": "Approve", "callback_data": "approve:42"},
                                               {"text": "Docs", "url": "https://example.com"}]]}}"#;
    let result = deliver(&bot, payload).await;
    assert_eq!(result.outcome, Outcome::Success, "{}", result.detail);
    assert_eq!(result.code, Some(200));
    assert_eq!(result.detail, "sent: message_id 1");
    assert_eq!(result.signal, None);
    assert_eq!(
        result.output,
        Some(json!({"message_id": 1, "chat_id": 42, "date": 1_767_225_600}))
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, format!("/bot{TOKEN}/sendMessage"));
    assert_eq!(request.content_type, "application/json");
    assert_eq!(
        request.params,
        json!({
            "chat_id": 42, "text": "naïve ☕", "parse_mode": "MarkdownV2",
            "disable_notification": true, "reply_to_message_id": 9,
            "reply_markup": {"inline_keyboard": [[
                {"text": "Approve", "callback_data": "approve:42"},
                {"text": "Docs", "url": "https://example.com"}
            ]]}
        })
    );

    // Through AnyConnector too.
    server.advance(Duration::from_secs(1));
    let any = AnyConnector::from(bot);
    let result = any
        .deliver(&Delivery {
            message_id: "01",
            destination: "bot",
            payload: &text_to("\"@news_room\""),
            attempt: 1,
            traceparent: None,
        })
        .await;
    assert_eq!(result.outcome, Outcome::Success, "{}", result.detail);
    assert_eq!(server.requests()[1].params["chat_id"], "@news_room");
    // Telegram answers a channel's numeric id; that is the one a later edit can use.
    assert_eq!(
        result.output,
        Some(json!({"message_id": 2, "chat_id": -1_001_000_000_001_i64, "date": 1_767_225_600}))
    );
}

/// A card: a text with Approve / Comment / Merge buttons.
fn card(chat: i64) -> String {
    json!({
        "chat_id": chat, "text": "PR #42: add retries",
        "reply_markup": {"inline_keyboard": [[
            {"text": "Approve", "callback_data": "approve:42"},
            {"text": "Comment", "callback_data": "comment:42"},
            {"text": "Merge", "callback_data": "merge:42"},
        ]]},
    })
    .to_string()
}

#[tokio::test]
async fn edits_a_card_and_an_edit_that_changes_nothing_succeeds() {
    let server = FakeBotApi::start().await;
    let bot = connector(&server, |_| {});
    let sent = deliver(&bot, &card(42)).await;
    assert_eq!(sent.outcome, Outcome::Success, "{}", sent.detail);
    let output = sent.output.unwrap();

    // The send's output is what the edit needs.
    let edit = json!({
        "method": "editMessageText", "chat_id": output["chat_id"], "message_id": output["message_id"],
        "text": "PR #42: approved by @ana",
        "reply_markup": {"inline_keyboard": [[{"text": "Merge", "callback_data": "merge:42"}]]},
    })
    .to_string();
    let result = deliver(&bot, &edit).await;
    assert_eq!(result.outcome, Outcome::Success, "{}", result.detail);
    assert_eq!(result.code, Some(200));
    assert_eq!(result.detail, "edited: message_id 1");
    assert_eq!(
        result.output,
        Some(
            json!({"message_id": 1, "chat_id": 42, "date": 1_767_225_600, "edit_date": 1_767_225_660})
        )
    );
    let request = server.requests().pop().unwrap();
    assert_eq!(request.path, format!("/bot{TOKEN}/editMessageText"));
    let mut expected: Value = serde_json::from_str(&edit).unwrap();
    expected.as_object_mut().unwrap().remove("method");
    assert_eq!(request.params, expected);

    // The same edit again: Telegram answers 400 "message is not modified", and the card
    // already shows it.
    let again = deliver(&bot, &edit).await;
    assert_eq!(again.outcome, Outcome::Success, "{}", again.detail);
    assert_eq!(again.code, Some(400));
    assert_eq!(again.signal, None);
    assert!(
        again.detail.starts_with("not modified: the message already shows this (Telegram 400: Bad Request: message is not modified"),
        "{}",
        again.detail
    );
    assert_eq!(
        again.output,
        Some(json!({"chat_id": 42, "message_id": 1, "not_modified": true}))
    );

    // Remove the buttons, then once more: not modified either.
    let remove = r#"{"method": "editMessageReplyMarkup", "chat_id": 42, "message_id": 1, "reply_markup": {"inline_keyboard": []}}"#;
    let removed = deliver(&bot, remove).await;
    assert_eq!(removed.outcome, Outcome::Success, "{}", removed.detail);
    assert_eq!(removed.code, Some(200));
    assert_eq!(
        server.requests().pop().unwrap().params["reply_markup"],
        json!({"inline_keyboard": []})
    );
    let removed_again = deliver(&bot, remove).await;
    assert_eq!(removed_again.outcome, Outcome::Success);
    assert_eq!(removed_again.output.unwrap()["not_modified"], true);
    assert_eq!(server.requests().len(), 5);
}

#[tokio::test]
async fn edits_of_missing_or_uneditable_messages_are_permanent_with_telegrams_description() {
    let server = FakeBotApi::start().await;
    server.behave("43", Behaviour::Uneditable);
    let bot = connector(&server, |_| {});
    let edit = |chat: i64, id: i64| {
        json!({"method": "editMessageText", "chat_id": chat, "message_id": id, "text": "done"})
            .to_string()
    };
    let result = deliver(&bot, &edit(42, 999)).await;
    assert_eq!(result.outcome, Outcome::Permanent);
    assert_eq!(result.code, Some(400));
    assert_eq!(
        result.detail,
        "Telegram 400: Bad Request: message to edit not found"
    );
    assert_eq!(result.output, None);
    let result = deliver(&bot, &edit(43, 1)).await;
    assert_eq!(result.outcome, Outcome::Permanent);
    assert_eq!(
        result.detail,
        "Telegram 400: Bad Request: message can't be edited"
    );
    assert_eq!(result.output, None);
    // An edit the relay would refuse at submit is refused here too, before any request.
    let long = json!({"method": "editMessageText", "chat_id": 42, "message_id": 1, "text": "x".repeat(4097)});
    let result = deliver(&bot, &long.to_string()).await;
    assert_eq!(result.outcome, Outcome::Permanent);
    assert!(
        result.detail.starts_with("invalid payload: invalid `text`"),
        "{}",
        result.detail
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn not_modified_is_success_only_for_an_edit() {
    let server = FakeBotApi::start().await;
    server.behave("44", Behaviour::NotModified);
    let bot = connector(&server, |_| {});
    let result = deliver(&bot, &text_to(44)).await;
    assert_eq!(result.outcome, Outcome::Permanent, "{}", result.detail);
    assert_eq!(result.output, None);
    let edit = r#"{"method": "editMessageReplyMarkup", "chat_id": 44, "message_id": 3}"#;
    let result = deliver(&bot, edit).await;
    assert_eq!(result.outcome, Outcome::Success, "{}", result.detail);
    assert_eq!(
        result.output,
        Some(json!({"chat_id": 44, "message_id": 3, "not_modified": true}))
    );
}

#[tokio::test]
async fn a_forced_reply_and_reply_parameters_are_passed_through() {
    let server = FakeBotApi::start().await;
    let bot = connector(&server, |_| {});
    let params = json!({
        "chat_id": 42, "text": "Your comment on PR #42?",
        "reply_markup": {"force_reply": true, "input_field_placeholder": "Comment", "selective": true},
        "reply_parameters": {"message_id": 1, "allow_sending_without_reply": true},
    });
    let result = deliver(&bot, &params.to_string()).await;
    assert_eq!(result.outcome, Outcome::Success, "{}", result.detail);
    assert_eq!(server.requests()[0].params, params);
}

#[tokio::test]
async fn the_per_chat_limit_answers_429_and_pauses_the_bot() {
    let server = FakeBotApi::start().await;
    let bot = connector(&server, |_| {});
    assert_eq!(deliver(&bot, &text_to(7)).await.outcome, Outcome::Success);
    let result = deliver(&bot, &text_to(7)).await;
    assert_eq!(result.outcome, Outcome::RetryAfter(Duration::from_secs(1)));
    assert_eq!(result.code, Some(429));
    assert_eq!(
        result.signal,
        Some(Signal::PauseDestination(Duration::from_secs(1)))
    );
    assert!(
        result.detail.contains("Too Many Requests: retry after 1"),
        "{}",
        result.detail
    );
    // Another chat is not limited by chat 7's rate.
    assert_eq!(deliver(&bot, &text_to(8)).await.outcome, Outcome::Success);
    server.advance(Duration::from_secs(1));
    assert_eq!(deliver(&bot, &text_to(7)).await.outcome, Outcome::Success);
}

#[tokio::test]
async fn the_per_bot_limit_answers_429_after_30_messages_a_second() {
    let server = FakeBotApi::start().await;
    let bot = connector(&server, |_| {});
    for chat in 1..=30 {
        let result = deliver(&bot, &text_to(chat)).await;
        assert_eq!(
            result.outcome,
            Outcome::Success,
            "chat {chat}: {}",
            result.detail
        );
    }
    let result = deliver(&bot, &text_to(31)).await;
    assert_eq!(result.outcome, Outcome::RetryAfter(Duration::from_secs(1)));
    assert_eq!(
        result.signal,
        Some(Signal::PauseDestination(Duration::from_secs(1)))
    );
    server.advance(Duration::from_secs(1));
    assert_eq!(deliver(&bot, &text_to(31)).await.outcome, Outcome::Success);
}

#[tokio::test]
async fn the_per_group_limit_carries_the_wait_telegram_asks_for() {
    let server = FakeBotApi::start().await;
    let bot = connector(&server, |_| {});
    for _ in 0..20 {
        assert_eq!(
            deliver(&bot, &text_to(-4567)).await.outcome,
            Outcome::Success
        );
        server.advance(Duration::from_secs(1));
    }
    // 20 sends in the last 20 s: the oldest leaves the window in 40 s.
    let result = deliver(&bot, &text_to(-4567)).await;
    assert_eq!(result.outcome, Outcome::RetryAfter(Duration::from_secs(40)));
    assert_eq!(
        result.signal,
        Some(Signal::PauseDestination(Duration::from_secs(40)))
    );
    // The connector exposes the limits the relay enforces so this never happens.
    assert_eq!(bot.limits().per_group.limit, 20);
    assert_eq!(chat_kind(&ChatId::Id(-4567)), ChatKind::Group);
}

#[tokio::test]
async fn a_blocked_user_is_permanent_with_telegrams_description() {
    let server = FakeBotApi::start().await;
    server.behave("77", Behaviour::Blocked);
    let bot = connector(&server, |_| {});
    let result = deliver(&bot, &text_to(77)).await;
    assert_eq!(result.outcome, Outcome::Permanent);
    assert_eq!(result.code, Some(403));
    assert_eq!(
        result.detail,
        "Telegram 403: Forbidden: bot was blocked by the user"
    );
    assert_eq!(result.signal, None);
}

#[tokio::test]
async fn an_upgraded_group_signals_the_migration_beyond_32_bits() {
    let server = FakeBotApi::start().await;
    server.behave("-4567", Behaviour::Upgraded(SUPERGROUP));
    let bot = connector(&server, |_| {});
    let payload = text_to(-4567);
    let result = deliver(&bot, &payload).await;
    assert_eq!(result.outcome, Outcome::Transient);
    assert_eq!(result.code, Some(400));
    assert_eq!(
        result.signal,
        Some(Signal::MigrateChat {
            from: "-4567".into(),
            to: SUPERGROUP
        })
    );
    assert!(
        result.detail.contains("upgraded to a supergroup"),
        "{}",
        result.detail
    );

    // What the relay does with the signal: rewrite, store, retry.
    let moved = rewrite_chat_id(&payload, SUPERGROUP).unwrap();
    let result = deliver(&bot, &moved).await;
    assert_eq!(result.outcome, Outcome::Success, "{}", result.detail);
    assert_eq!(server.requests()[1].params["chat_id"], json!(SUPERGROUP));
}

#[tokio::test]
async fn a_rejected_token_is_unauthorized_and_never_shown() {
    let server = FakeBotApi::start().await;
    let mut config = TelegramConfig::new("987654321:wrongSecretWrongSecret".parse().unwrap());
    config.api_base = server.base();
    let bot = TelegramConnector::new(config, server.state().clock.shared()).unwrap();
    let result = deliver(&bot, &text_to(1)).await;
    assert_eq!(result.outcome, Outcome::Permanent);
    assert_eq!(result.code, Some(401));
    assert_eq!(result.signal, Some(Signal::Unauthorized));
    assert!(!result.detail.contains("wrongSecret"), "{}", result.detail);
    let err = bot.answer_callback_query("q", None).await.unwrap_err();
    assert!(matches!(err, TelegramError::Unauthorized { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(!format!("{err} {err:?} {bot:?}").contains("wrongSecret"));
}

#[tokio::test]
async fn an_html_502_is_transient() {
    let server = FakeBotApi::start().await;
    server.behave("5", Behaviour::BadGateway);
    let bot = connector(&server, |_| {});
    let result = deliver(&bot, &text_to(5)).await;
    assert_eq!(result.outcome, Outcome::Transient);
    assert_eq!(result.code, Some(502));
    assert_eq!(result.signal, None);
    assert!(
        result
            .detail
            .starts_with("Telegram 502: not a Bot API answer: <html> <head><title>502 Bad Gateway"),
        "{}",
        result.detail
    );
}

#[tokio::test]
async fn a_slow_answer_times_out_as_transient() {
    let server = FakeBotApi::start().await;
    server.behave("6", Behaviour::Slow);
    let bot = connector(&server, |c| c.timeout = Duration::from_millis(200));
    let started = std::time::Instant::now();
    let result = deliver(&bot, &text_to(6)).await;
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(result.outcome, Outcome::Transient);
    assert_eq!(result.code, None);
    assert_eq!(result.detail, "timed out after 200ms");
}

#[tokio::test]
async fn a_refused_connection_is_transient_without_the_token() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut config = TelegramConfig::new(TOKEN.parse().unwrap());
    config.api_base = format!("http://{addr}");
    let bot = TelegramConnector::new(config, ManualClock::new().shared()).unwrap();
    let result = deliver(&bot, &text_to(1)).await;
    assert_eq!(result.outcome, Outcome::Transient);
    assert!(
        result.detail.starts_with("could not connect"),
        "{}",
        result.detail
    );
    let err = bot.get_updates(None, Duration::ZERO).await.unwrap_err();
    assert!(err.is_transient());
    assert!(!format!("{err} {err:?}").contains(SECRET));
}

#[tokio::test]
async fn uploads_arrive_as_multipart_with_bytes_and_filename_intact() {
    let server = FakeBotApi::start().await;
    let bot = connector(&server, |_| {});
    // Every byte value, and a name that is not ASCII.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let payload = json!({
        "method": "sendDocument", "chat_id": -100_200, "caption": "Q3 — final",
        "document": {"base64": STANDARD.encode(&bytes), "filename": "отчёт Q3 ☕.pdf"},
        "reply_markup": {"inline_keyboard": [[{"text": "ok", "callback_data": "ack"}]]}
    })
    .to_string();
    let result = deliver(&bot, &payload).await;
    assert_eq!(result.outcome, Outcome::Success, "{}", result.detail);

    let photo = json!({
        "method": "sendPhoto", "chat_id": 11,
        "photo": {"base64": STANDARD.encode(b"\x89PNG\r\n\x1a\n"), "filename": "p.png"}
    })
    .to_string();
    assert_eq!(deliver(&bot, &photo).await.outcome, Outcome::Success);

    let requests = server.requests();
    let document = &requests[0];
    assert_eq!(document.path, format!("/bot{TOKEN}/sendDocument"));
    assert!(
        document
            .content_type
            .starts_with("multipart/form-data; boundary=")
    );
    assert_eq!(document.params["chat_id"], "-100200");
    assert_eq!(document.params["caption"], "Q3 — final");
    // The keyboard travels as JSON text in a form field.
    let markup: Value =
        serde_json::from_str(document.params["reply_markup"].as_str().unwrap()).unwrap();
    assert_eq!(
        markup,
        json!({"inline_keyboard": [[{"text": "ok", "callback_data": "ack"}]]})
    );
    assert_eq!(document.params.as_object().unwrap().len(), 3);
    assert_eq!(document.files.len(), 1);
    assert_eq!(document.files[0].name, "document");
    assert_eq!(
        document.files[0].filename.as_deref(),
        Some("отчёт Q3 ☕.pdf")
    );
    assert_eq!(document.files[0].bytes, bytes);

    let photo = &requests[1];
    assert_eq!(photo.method, "sendPhoto");
    assert_eq!(photo.files[0].name, "photo");
    assert_eq!(photo.files[0].bytes, b"\x89PNG\r\n\x1a\n");
}

#[tokio::test]
async fn files_by_url_go_as_json() {
    let server = FakeBotApi::start().await;
    let bot = connector(&server, |_| {});
    let payload = r#"{"method": "sendPhoto", "chat_id": 3, "photo": {"url": "https://example.com/cat.jpg"}, "caption": "cat"}"#;
    assert_eq!(deliver(&bot, payload).await.outcome, Outcome::Success);
    let request = &server.requests()[0];
    assert_eq!(request.content_type, "application/json");
    assert_eq!(
        request.params,
        json!({"chat_id": 3, "photo": "https://example.com/cat.jpg", "caption": "cat"})
    );
}

#[tokio::test]
async fn oversized_files_are_refused_before_any_request() {
    let server = FakeBotApi::start().await;
    let bot = connector(&server, |_| {});
    let photo = json!({
        "method": "sendPhoto", "chat_id": 3,
        "photo": {"base64": STANDARD.encode(vec![0u8; PHOTO_BYTES + 1]), "filename": "big.jpg"}
    })
    .to_string();
    let err = bot.validate_payload(&photo).unwrap_err();
    assert_eq!(err.field(), "photo.base64");
    let result = deliver(&bot, &photo).await;
    assert_eq!(result.outcome, Outcome::Permanent);
    assert!(
        result.detail.contains("`photo.base64`"),
        "{}",
        result.detail
    );

    let document = json!({
        "method": "sendDocument", "chat_id": 3,
        "document": {"base64": STANDARD.encode(vec![0u8; DOCUMENT_BYTES + 1]), "filename": "big.bin"}
    })
    .to_string();
    assert_eq!(
        bot.validate_payload(&document).unwrap_err().field(),
        "document.base64"
    );
    assert_eq!(deliver(&bot, &document).await.outcome, Outcome::Permanent);
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn split_parts_are_accepted_in_order() {
    let server = FakeBotApi::start().await;
    let bot = connector(&server, |_| {});
    let paragraphs: Vec<String> = (0..14)
        .map(|i| format!("Paragraph {i}: {}", "word ".repeat(200).trim_end()))
        .collect();
    let text = paragraphs.join("\n\n");
    assert!(utf16_len(&text) > 3 * TEXT_LIMIT);
    let payload = json!({"chat_id": 21, "text": text}).to_string();

    // Unsplit, delivery refuses rather than send a message Telegram would refuse.
    let result = deliver(&bot, &payload).await;
    assert_eq!(result.outcome, Outcome::Permanent);
    assert!(server.requests().is_empty());

    let validated = bot.validate_payload(&payload).unwrap();
    assert_eq!(validated.ordering_key(), "21");
    let parts = validated.payloads();
    assert_eq!(parts.len(), 4);
    for (i, part) in parts.iter().enumerate() {
        let result = deliver(&bot, part).await;
        assert_eq!(result.outcome, Outcome::Success, "{}", result.detail);
        // Each part is a message of its own, with its own output.
        assert_eq!(result.output.unwrap()["message_id"], i + 1);
        server.advance(Duration::from_secs(1));
    }
    let received: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.params["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(received.join("\n\n"), text);

    let refusing = connector(&server, |c| c.long_texts = LongTexts::Refuse);
    assert_eq!(
        refusing.validate_payload(&payload).unwrap_err().field(),
        "text"
    );
}

#[tokio::test]
async fn answers_callback_queries() {
    let server = FakeBotApi::start().await;
    server.state().callback_queries.push("4382".into());
    let bot = connector(&server, |_| {});
    bot.answer_callback_query("4382", Some("Approved ✓"))
        .await
        .unwrap();
    bot.answer_callback_query("4382", None).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests[0].path, format!("/bot{TOKEN}/answerCallbackQuery"));
    assert_eq!(
        requests[0].params,
        json!({"callback_query_id": "4382", "text": "Approved ✓"})
    );
    assert_eq!(requests[1].params, json!({"callback_query_id": "4382"}));

    let err = bot
        .answer_callback_query("unknown", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TelegramError::Api { code: 400, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("query ID is invalid"), "{err}");
    let err = bot
        .answer_callback_query("4382", Some(&"x".repeat(201)))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        TelegramError::InvalidArgument { field: "text", .. }
    ));
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn sets_the_webhook_and_then_polling_conflicts() {
    let server = FakeBotApi::start().await;
    server.state().updates = vec![
        json!({"update_id": 100, "message": {"message_id": 1, "date": 1, "chat": {"id": 42, "type": "private"}, "text": "hi"}}),
        json!({"update_id": 101, "callback_query": {"id": "q1", "from": {"id": 42, "is_bot": false, "first_name": "Ada"}, "data": "approve:1"}}),
    ];
    let bot = connector(&server, |_| {});

    let updates = bot
        .get_updates(None, Duration::from_secs(25))
        .await
        .unwrap();
    assert_eq!(updates.len(), 2);
    assert_eq!(
        updates[0].message.as_ref().unwrap().text.as_deref(),
        Some("hi")
    );
    assert_eq!(
        updates[1].callback_query.as_ref().unwrap().data.as_deref(),
        Some("approve:1")
    );
    // The offset confirms update 100.
    let updates = bot
        .get_updates(Some(101), Duration::from_secs(25))
        .await
        .unwrap();
    assert_eq!(
        updates.iter().map(|u| u.update_id).collect::<Vec<_>>(),
        [101]
    );
    let updates = bot.get_updates(Some(102), Duration::ZERO).await.unwrap();
    assert!(updates.is_empty());
    let requests = server.requests();
    assert_eq!(requests[0].params, json!({"timeout": 25}));
    assert_eq!(requests[1].params, json!({"timeout": 25, "offset": 101}));

    bot.set_webhook(
        "https://relay.example.com/v1/telegram/bot/webhook",
        "s3cr3t_token-1",
    )
    .await
    .unwrap();
    let request = server.requests().pop().unwrap();
    assert_eq!(request.method, "setWebhook");
    assert_eq!(
        request.params,
        json!({"url": "https://relay.example.com/v1/telegram/bot/webhook", "secret_token": "s3cr3t_token-1"})
    );

    let err = bot
        .get_updates(Some(102), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("webhook is active"), "{err}");

    // Arguments Telegram would refuse never leave.
    let before = server.requests().len();
    let err = bot
        .set_webhook("http://relay.example.com/hook", "ok")
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        TelegramError::InvalidArgument { field: "url", .. }
    ));
    let err = bot
        .set_webhook("https://relay.example.com/hook", "bad token!")
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        TelegramError::InvalidArgument {
            field: "secret_token",
            ..
        }
    ));
    assert_eq!(server.requests().len(), before);

    // Deleting the webhook lets polling work again; pending updates are kept unless dropped.
    server
        .state()
        .updates
        .push(json!({"update_id": 102, "edited_message": {"text": "x"}}));
    bot.delete_webhook(false).await.unwrap();
    let raw = bot
        .get_raw_updates(Some(102), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].update_id, 102);
    assert_eq!(raw[0].json["edited_message"]["text"], "x", "kept whole");
    bot.delete_webhook(true).await.unwrap();
    assert_eq!(
        server.requests().pop().unwrap().params,
        json!({"drop_pending_updates": true})
    );
    assert!(
        bot.get_updates(Some(102), Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn one_unreadable_update_fails_get_updates_but_not_get_raw_updates() {
    let server = FakeBotApi::start().await;
    server.state().updates = vec![
        json!({"update_id": 1, "callback_query": {"id": "q"}}),
        json!({"update_id": 2, "message": {"message_id": 1, "date": 1, "chat": {"id": 42, "type": "private"}}}),
    ];
    let bot = connector(&server, |_| {});
    let err = bot.get_updates(None, Duration::ZERO).await.unwrap_err();
    assert!(err.to_string().contains("update 1"), "{err}");
    assert!(err.to_string().contains("callback_query.from"), "{err}");
    assert!(!err.to_string().contains(SECRET));
    let raw = bot.get_raw_updates(None, Duration::ZERO).await.unwrap();
    assert_eq!(raw.iter().map(|r| r.update_id).collect::<Vec<_>>(), [1, 2]);
    assert!(raw[0].parse().is_err());
    assert!(raw[1].parse().unwrap().message.is_some());
}

#[tokio::test]
async fn the_token_never_shows_in_debug_or_serialize() {
    let server = FakeBotApi::start().await;
    let mut config = TelegramConfig::new(TOKEN.parse().unwrap());
    config.api_base = server.base();
    let shown = format!("{config:?} {}", serde_json::to_string(&config).unwrap());
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("123456789:***"), "{shown}");
    let bot = TelegramConnector::new(config, server.state().clock.shared()).unwrap();
    let any = AnyConnector::from(bot.clone());
    assert!(!format!("{bot:?} {any:?}").contains(SECRET));
    assert_eq!(bot.bot_id(), 123_456_789);
}

#[test]
fn config_defaults_and_validation() {
    let config: TelegramConfig = toml::from_str(&format!("bot_token = \"{TOKEN}\"")).unwrap();
    assert_eq!(config.api_base, DEFAULT_API_BASE);
    assert_eq!(config.timeout, Duration::from_secs(30));
    assert_eq!(config.long_texts, LongTexts::Split);
    assert_eq!(config.limits.per_chat.limit, 1);
    assert_eq!(config.limits.per_chat.per, Duration::from_secs(1));
    assert_eq!(config.limits.per_group.limit, 20);
    assert_eq!(config.limits.per_group.per, Duration::from_secs(60));
    assert_eq!(config.limits.per_bot.limit, 30);
    config.validate().unwrap();

    let full: TelegramConfig = toml::from_str(&format!(
        r#"
        bot_token = "{TOKEN}"
        api_base = "https://bots.internal.example/"
        timeout = "5s"
        long_texts = "refuse"
        limits.per_group = {{ limit = 10, per = "60s" }}
        "#
    ))
    .unwrap();
    assert_eq!(full.long_texts, LongTexts::Refuse);
    assert_eq!(full.limits.per_group.limit, 10);
    assert_eq!(full.limits.per_bot.limit, 30);
    assert_eq!(
        full.parse_api_base().unwrap(),
        "https://bots.internal.example"
    );

    let field = |edit: &dyn Fn(&mut TelegramConfig)| {
        let mut config = TelegramConfig::new(TOKEN.parse().unwrap());
        edit(&mut config);
        config.validate().unwrap_err().field().map(str::to_owned)
    };
    assert_eq!(
        field(&|c| c.api_base = "http://bots.example".into()).as_deref(),
        Some("api_base")
    );
    assert_eq!(
        field(&|c| c.api_base = "ftp://bots.example".into()).as_deref(),
        Some("api_base")
    );
    assert_eq!(
        field(&|c| c.api_base = "not a url".into()).as_deref(),
        Some("api_base")
    );
    assert_eq!(
        field(&|c| c.api_base = "https://u:p@bots.example".into()).as_deref(),
        Some("api_base")
    );
    assert_eq!(
        field(&|c| c.timeout = Duration::ZERO).as_deref(),
        Some("timeout")
    );
    assert_eq!(
        field(&|c| c.limits.per_chat.limit = 0).as_deref(),
        Some("limits.per_chat.limit")
    );
    // The limits are sliding windows: a token bucket's burst has no meaning there.
    assert_eq!(
        field(&|c| c.limits.per_bot.burst = Some(60)).as_deref(),
        Some("limits.per_bot.burst")
    );
    // Plain http: loopback, or when allowed.
    for base in [
        "http://127.0.0.1:8081",
        "http://localhost:8081",
        "http://[::1]:8081",
    ] {
        let mut config = TelegramConfig::new(TOKEN.parse().unwrap());
        config.api_base = base.into();
        config.validate().unwrap();
    }
    let mut config = TelegramConfig::new(TOKEN.parse().unwrap());
    config.api_base = "http://bot-api.internal:8081".into();
    config.allow_http = true;
    config.validate().unwrap();

    // Unknown fields and malformed tokens are refused, naming the field, never the token.
    assert!(
        toml::from_str::<TelegramConfig>(&format!("bot_token = \"{TOKEN}\"\ncolour = 1")).is_err()
    );
    for bad in [
        "",
        "123456",
        ":abc",
        "12a:abc",
        "123:",
        "123:a b",
        "123:abc/def",
    ] {
        let err = bad.parse::<BotToken>().unwrap_err();
        assert_eq!(err.field(), Some("bot_token"), "{bad:?}");
    }
    let err = serde_json::from_value::<BotToken>(json!("12a:sEcReT")).unwrap_err();
    assert!(!err.to_string().contains("sEcReT"), "{err}");
}

#[test]
fn assess_classifies_on_code_and_description() {
    let reply = |status: u16, body: Value| Reply {
        status,
        retry_after: None,
        response: serde_json::from_value(body).ok(),
        snippet: String::new(),
    };
    let err = |code: u16, description: &str, parameters: Value| {
        reply(
            code,
            json!({"ok": false, "error_code": code, "description": description, "parameters": parameters}),
        )
    };
    assert_eq!(
        assess(&reply(200, json!({"ok": true, "result": true}))),
        Verdict::Ok
    );
    assert_eq!(
        assess(&err(
            400,
            "Bad Request: message is not modified: specified new message content and reply \
             markup are exactly the same as a current content and reply markup of the message",
            json!({})
        )),
        Verdict::NotModified
    );
    assert_eq!(
        assess(&err(
            400,
            "Bad Request: message to edit not found",
            json!({})
        )),
        Verdict::Permanent
    );
    assert_eq!(
        assess(&err(400, "Bad Request: message can't be edited", json!({}))),
        Verdict::Permanent
    );
    // A 400 that carries a retry time for flood control still waits.
    assert_eq!(
        assess(&err(400, "Too Many Requests: retry after 7", json!({}))),
        Verdict::RetryAfter(Some(Duration::from_secs(7)))
    );
    assert_eq!(
        assess(&err(429, "Too Many Requests", json!({}))),
        Verdict::RetryAfter(None)
    );
    assert_eq!(
        assess(&err(
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
            json!({"migrate_to_chat_id": SUPERGROUP})
        )),
        Verdict::Migrate(SUPERGROUP)
    );
    // Upgraded, but nowhere to go: nothing to retry.
    assert_eq!(
        assess(&err(
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
            json!({})
        )),
        Verdict::Permanent
    );
    assert_eq!(
        assess(&err(401, "Unauthorized", json!({}))),
        Verdict::Unauthorized
    );
    assert_eq!(
        assess(&err(
            403,
            "Forbidden: bot was kicked from the group chat",
            json!({})
        )),
        Verdict::Permanent
    );
    assert_eq!(
        assess(&err(403, "Forbidden: user is deactivated", json!({}))),
        Verdict::Permanent
    );
    assert_eq!(
        assess(&err(400, "Bad Request: chat not found", json!({}))),
        Verdict::Permanent
    );
    assert_eq!(
        assess(&err(404, "Not Found", json!({}))),
        Verdict::Permanent
    );
    assert_eq!(
        assess(&err(
            409,
            "Conflict: terminated by other getUpdates request",
            json!({})
        )),
        Verdict::Conflict
    );
    assert_eq!(
        assess(&err(500, "Internal Server Error", json!({}))),
        Verdict::Transient
    );
    assert_eq!(assess(&reply(504, Value::Null)), Verdict::Transient);
    assert_eq!(assess(&reply(200, Value::Null)), Verdict::Transient);
    assert_eq!(assess(&reply(403, Value::Null)), Verdict::Permanent);
}
