//! Telegram destinations end to end: the real relay and router, a fake Bot API on 127.0.0.1.
//! Submit-time validation (422 naming the field), splitting long texts into ordered parts,
//! flood control pausing the bot without a breaker failure, 401 forcing the breaker open, chat
//! migration, the durable per-chat, per-group and per-bot limits, and a hundred chats at once
//! against a fake enforcing all three limits the way Telegram does.

use std::time::{Duration, SystemTime};

use ferrule::config::{DestinationConfig, DestinationKind, Secret};
use ferrule::testing::fake_bot_api::{BotLimits, FakeBotApi as TelegramLimitsFake, Window};
use ferrule_policy::ManualClock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::fake_bot_api::{BOT_TOKEN, BotReply, FakeBotApi};
use crate::support::{TestRelay, start, start_clock};

const WAIT: Duration = Duration::from_secs(10);

/// A Telegram destination `name` on the fake at `api_base`, retrying after 1 s without jitter.
pub(crate) fn telegram(name: &str, api_base: &str) -> DestinationConfig {
    DestinationConfig {
        name: name.into(),
        kind: DestinationKind::Telegram,
        bot_token: Some(Secret::new(BOT_TOKEN)),
        api_base: Some(api_base.into()),
        timeout: Some(Duration::from_secs(2)),
        retry: Some(json!({
            "backoff": {"kind": "fixed", "delay": "1s"},
            "jitter": "none",
            "max_attempts": 5,
        })),
        ..DestinationConfig::default()
    }
}

async fn submit_raw(relay: &TestRelay, body: Value, key: Option<&str>) -> (StatusCode, Value) {
    let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
    relay
        .call_with(
            Method::POST,
            "/v1/messages",
            Some(body),
            Some(crate::support::TOKEN),
            &headers,
        )
        .await
}

/// Whether any event of `message` has a detail starting with `prefix`.
fn has_event(message: &Value, prefix: &str) -> bool {
    message["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["detail"].as_str().unwrap_or("").starts_with(prefix))
}

async fn breaker_state(relay: &TestRelay) -> Value {
    let (_, breakers) = relay.call(Method::GET, "/v1/breakers", None).await;
    breakers["breakers"][0]["breaker"].clone()
}

#[tokio::test]
async fn a_telegram_message_is_delivered_to_the_bot_api() {
    let api = FakeBotApi::start().await;
    let base = api.base.clone();
    let relay = start(|c| c.destinations.push(telegram("chat", &base))).await;
    let id = relay
        .submit(
            "chat",
            json!({"chat_id": 42, "text": "*hi*", "parse_mode": "MarkdownV2"}),
        )
        .await;
    let requests = api.wait_for_requests(1, WAIT).await;
    relay.wait_for_status(&id, "delivered", WAIT).await;
    assert_eq!(requests[0].method, "sendMessage");
    assert_eq!(requests[0].params["chat_id"], 42);
    assert_eq!(requests[0].params["text"], "*hi*");
    assert_eq!(requests[0].params["parse_mode"], "MarkdownV2");
    let message = relay.message(&id).await;
    assert_eq!(
        message["ordering_key"], "42",
        "the chat orders its messages"
    );
    assert_eq!(api.requests().len(), 1);
}

#[tokio::test]
async fn a_blocked_chat_dead_letters_without_touching_the_breaker() {
    let api = FakeBotApi::start().await;
    api.script("9", [BotReply::Blocked]);
    let base = api.base.clone();
    let relay = start(|c| c.destinations.push(telegram("chat", &base))).await;
    let id = relay
        .submit("chat", json!({"chat_id": 9, "text": "a"}))
        .await;
    let message = relay.wait_for_status(&id, "dead", WAIT).await;
    assert!(
        message["last_error"].as_str().unwrap().contains("blocked"),
        "{message:#}"
    );
    assert_eq!(breaker_state(&relay).await["state"], "closed");
    let other = relay
        .submit("chat", json!({"chat_id": 10, "text": "b"}))
        .await;
    relay.wait_for_status(&other, "delivered", WAIT).await;
}

#[tokio::test]
async fn invalid_telegram_and_smtp_payloads_are_refused_with_422_naming_the_field() {
    let api = FakeBotApi::start().await;
    let base = api.base.clone();
    let relay = start(|c| {
        c.destinations.push(telegram("chat", &base));
        let mut strict = telegram("strict", &base);
        strict.long_texts = Some(ferrule_connectors::telegram::LongTexts::Refuse);
        c.destinations.push(strict);
        c.destinations.push(crate::smtp::smtp("mail", 9));
    })
    .await;
    let long = "x".repeat(5000);
    for (destination, payload, field) in [
        ("chat", json!({"text": "no chat"}), "payload.chat_id"),
        ("chat", json!({"chat_id": 1, "text": ""}), "payload.text"),
        (
            "chat",
            json!({"chat_id": 1, "text": "hi", "colour": "red"}),
            "payload.colour",
        ),
        (
            "strict",
            json!({"chat_id": 1, "text": long}),
            "payload.text",
        ),
        ("mail", json!({"subject": "s", "text": "t"}), "payload.to"),
        (
            "mail",
            json!({"to": ["not an address"], "subject": "s", "text": "t"}),
            "payload.to",
        ),
    ] {
        let (status, body) = submit_raw(
            &relay,
            json!({"destination": destination, "payload": payload}),
            None,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{payload}: {body}"
        );
        assert_eq!(body["error"]["code"], "invalid_payload", "{body}");
        let named = body["error"]["field"].as_str().unwrap();
        assert!(named.starts_with(field), "{payload}: {body}");
    }
    let (_, page) = relay.call(Method::GET, "/v1/messages", None).await;
    assert_eq!(
        page["messages"].as_array().unwrap().len(),
        0,
        "nothing stored"
    );
    assert!(api.requests().is_empty());
}

#[tokio::test]
async fn a_long_text_is_split_into_ordered_parts_with_keyed_idempotency() {
    let api = FakeBotApi::start().await;
    let base = api.base.clone();
    let relay = start(|c| {
        let mut d = telegram("chat", &base);
        // The default 1 msg/s per chat would make the parts take seconds.
        d.limits = Some(json!({"per_chat": {"limit": 100}}));
        c.destinations.push(d);
    })
    .await;
    let paragraphs: Vec<String> = (0..9).map(|n| format!("{n}{}", "é".repeat(999))).collect();
    let text = paragraphs.join("\n\n");
    let body = json!({"destination": "chat", "payload": {"chat_id": -100555, "text": text}});
    let (status, first) = submit_raw(&relay, body.clone(), Some("order-7")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let parts: Vec<String> = first["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    assert!(parts.len() >= 3, "{first}");
    assert_eq!(first["id"], parts[0].as_str());
    let (status, again) = submit_raw(&relay, body, Some("order-7")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a repeated key stores nothing: {again}"
    );
    assert_eq!(again["parts"], first["parts"]);
    for (n, id) in parts.iter().enumerate() {
        let message = relay.wait_for_status(id, "delivered", WAIT).await;
        let key = match n {
            0 => "order-7".to_owned(),
            n => format!("order-7#{}", n + 1),
        };
        assert_eq!(message["idempotency_key"], key);
        assert_eq!(message["ordering_key"], "-100555");
    }
    let requests = api.requests();
    assert_eq!(requests.len(), parts.len());
    let sent: Vec<&str> = requests
        .iter()
        .map(|r| r.params["text"].as_str().unwrap())
        .collect();
    for part in &sent {
        assert!(part.chars().count() <= 4096);
    }
    // In order: the parts put back together hold every paragraph, first to last.
    let joined = sent.join("\n\n");
    let mut at = 0;
    for p in &paragraphs {
        let found = joined[at..]
            .find(p.as_str())
            .expect("every paragraph, in order");
        at += found + p.len();
    }
}

#[tokio::test]
async fn a_key_reused_for_a_text_split_differently_is_a_conflict() {
    let api = FakeBotApi::start().await;
    let base = api.base.clone();
    let relay = start(|c| c.destinations.push(telegram("chat", &base))).await;
    let later = ferrule::time::rfc3339(SystemTime::now() + Duration::from_secs(3600));
    let text = |parts: usize| vec!["word ".repeat(800); parts].join("\n\n");
    let body = |text: String| json!({"destination": "chat", "payload": {"chat_id": 7, "text": text}, "deliver_after": later});
    // Short, then long under its key; long, then short or longer under another.
    let (status, short) = submit_raw(&relay, body("hi".into()), Some("short")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{short}");
    let (status, long) = submit_raw(&relay, body(text(2)), Some("long")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{long}");
    assert_eq!(long["parts"].as_array().unwrap().len(), 2, "{long}");
    for (key, original, other) in [
        ("short", &short, text(2)),
        ("long", &long, "hi".to_owned()),
        ("long", &long, text(3)),
    ] {
        let (status, answer) = submit_raw(&relay, body(other), Some(key)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{key}: {answer}");
        assert_eq!(answer["error"]["code"], "idempotency_conflict");
        assert_eq!(answer["error"]["id"], original["id"], "{answer}");
    }
    // The same long text again is a repeat of every part.
    let (status, again) = submit_raw(&relay, body(text(2)), Some("long")).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["parts"], long["parts"]);
    assert_eq!(again["status"], "queued");
    // The parts the conflicting texts stored beyond the originals' are withdrawn: only the
    // originals wait.
    let (_, queued) = relay
        .call(Method::GET, "/v1/messages?status=queued", None)
        .await;
    assert_eq!(
        queued["messages"].as_array().unwrap().len(),
        3,
        "{queued:#}"
    );
    let (_, cancelled) = relay
        .call(Method::GET, "/v1/messages?status=cancelled", None)
        .await;
    let mut withdrawn: Vec<&str> = cancelled["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["idempotency_key"].as_str().unwrap())
        .collect();
    withdrawn.sort_unstable();
    assert_eq!(withdrawn, ["long#3", "short#2"], "{cancelled:#}");
}

#[tokio::test]
async fn flood_control_pauses_the_bot_without_a_breaker_failure() {
    let api = FakeBotApi::start().await;
    api.script("1", [BotReply::TooManyRequests(5)]);
    let clock = ManualClock::with_system_time(SystemTime::now());
    let base = api.base.clone();
    let relay = start_clock(clock.shared(), |c| {
        let mut d = telegram("chat", &base);
        // One counted failure would open this breaker.
        d.breaker = Some(json!({
            "window": {"count": 2}, "min_calls": 1, "failure_rate": 0.5, "open_for": "60s",
        }));
        c.destinations.push(d);
    })
    .await;
    let first = relay
        .submit("chat", json!({"chat_id": 1, "text": "a"}))
        .await;
    relay.wait_for_status(&first, "retrying", WAIT).await;
    let breaker = breaker_state(&relay).await;
    assert_eq!(breaker["state"], "closed", "{breaker}");
    assert_eq!(breaker["failed_calls"], 0, "{breaker}");
    // Another chat of the same bot waits for the pause too, without spending an attempt.
    let second = relay
        .submit("chat", json!({"chat_id": 2, "text": "b"}))
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = relay.message(&second).await;
        if has_event(&message, "paused") {
            assert_eq!(message["attempts"], 0, "{message:#}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{message:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(api.requests().len(), 1, "nothing sent during the pause");
    clock.advance(Duration::from_secs(5));
    relay.wait_for_status(&second, "delivered", WAIT).await;
    relay.wait_for_status(&first, "delivered", WAIT).await;
    assert_eq!(api.requests().len(), 3);
}

#[tokio::test]
async fn unauthorized_forces_the_breaker_open_and_dead_letters() {
    let api = FakeBotApi::start().await;
    api.script("7", [BotReply::Unauthorized]);
    let base = api.base.clone();
    let relay = start(|c| c.destinations.push(telegram("chat", &base))).await;
    let id = relay
        .submit("chat", json!({"chat_id": 7, "text": "a"}))
        .await;
    let message = relay.wait_for_status(&id, "dead", WAIT).await;
    assert!(
        message["last_error"]
            .as_str()
            .unwrap()
            .contains("Unauthorized"),
        "{message:#}"
    );
    assert_eq!(breaker_state(&relay).await["state"], "forced_open");
    let next = relay
        .submit("chat", json!({"chat_id": 8, "text": "b"}))
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = relay.message(&next).await;
        if has_event(&message, "circuit forced_open") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{message:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(api.requests().len(), 1, "nothing sent while forced open");
}

#[tokio::test]
async fn a_rejected_token_keeps_the_breaker_forced_open_across_a_restart() {
    let api = FakeBotApi::start().await;
    api.script("7", [BotReply::Unauthorized]);
    let base = api.base.clone();
    let mut relay = start(|c| {
        let mut d = telegram("chat", &base);
        // Forced open, a message is looked at again every `open_for`.
        d.breaker = Some(json!({"open_for": "100ms"}));
        c.destinations.push(d);
    })
    .await;
    let id = relay
        .submit("chat", json!({"chat_id": 7, "text": "a"}))
        .await;
    relay.wait_for_status(&id, "dead", WAIT).await;
    let set = relay.breaker("chat").await["override"].clone();
    assert_eq!(set["state"], "forced_open", "{set}");
    assert_eq!(set["set_by"], "relay", "{set}");
    assert!(
        set["reason"].as_str().unwrap().contains("Unauthorized"),
        "{set}"
    );
    relay.restart(ferrule_policy::clock::system()).await;
    let breaker = relay.breaker("chat").await;
    assert_eq!(breaker["breaker"]["state"], "forced_open", "{breaker}");
    assert_eq!(breaker["override"], set);
    let next = relay
        .submit("chat", json!({"chat_id": 8, "text": "b"}))
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !has_event(&relay.message(&next).await, "circuit forced_open") {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        api.requests().len(),
        1,
        "nothing sent with the rejected token"
    );
    // An operator's reset (say, after fixing the token) lets it go.
    let (status, _) = relay
        .call(Method::POST, "/v1/breakers/chat/reset", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    relay.wait_for_status(&next, "delivered", WAIT).await;
}

#[tokio::test]
async fn a_migrated_chat_is_retried_in_the_supergroup() {
    let api = FakeBotApi::start().await;
    let supergroup = -1_001_234_567_890_123_i64;
    api.script("-4567", [BotReply::Migrated(supergroup)]);
    let base = api.base.clone();
    let relay = start(|c| c.destinations.push(telegram("chat", &base))).await;
    let id = relay
        .submit("chat", json!({"chat_id": -4567, "text": "a"}))
        .await;
    let message = relay.wait_for_status(&id, "delivered", WAIT).await;
    assert_eq!(
        message["payload"]["chat_id"], supergroup,
        "stored: {message:#}"
    );
    assert_eq!(message["payload"]["text"], "a");
    assert!(has_event(&message, "chat -4567 moved to"), "{message:#}");
    let requests = api.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].params["chat_id"], -4567);
    assert_eq!(requests[1].params["chat_id"], supergroup);
}

/// Two sends that one of the bot's limits must space out: the second is deferred (not slept
/// on) to when the limit admits it, then delivered.
async fn second_send_is_deferred(limits: Value, chats: [i64; 2], reason: &str) {
    let api = FakeBotApi::start().await;
    let clock = ManualClock::with_system_time(SystemTime::now());
    let base = api.base.clone();
    let relay = start_clock(clock.shared(), |c| {
        let mut d = telegram("chat", &base);
        d.limits = Some(limits);
        c.destinations.push(d);
    })
    .await;
    let first = relay
        .submit("chat", json!({"chat_id": chats[0], "text": "a"}))
        .await;
    relay.wait_for_status(&first, "delivered", WAIT).await;
    let second = relay
        .submit("chat", json!({"chat_id": chats[1], "text": "b"}))
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = relay.message(&second).await;
        if has_event(&message, reason) {
            assert_eq!(message["attempts"], 0, "{message:#}");
            assert_eq!(message["status"], "queued", "{message:#}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{reason}: {message:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(api.requests().len(), 1, "{reason}: the second send waits");
    clock.advance(Duration::from_secs(61));
    relay.wait_for_status(&second, "delivered", WAIT).await;
    assert_eq!(api.requests().len(), 2);
}

#[tokio::test]
async fn the_per_chat_limit_defers_a_second_send_to_the_same_chat() {
    second_send_is_deferred(json!({}), [42, 42], "rate limited: telegram per chat").await;
}

#[tokio::test]
async fn the_per_group_limit_defers_a_second_send_to_the_same_group() {
    second_send_is_deferred(
        json!({"per_chat": {"limit": 100}, "per_group": {"limit": 1, "per": "60s"}}),
        [-100777, -100777],
        "rate limited: telegram per group",
    )
    .await;
}

#[tokio::test]
async fn the_per_bot_limit_defers_a_send_to_another_chat() {
    second_send_is_deferred(
        json!({"per_bot": {"limit": 1, "per": "1s"}}),
        [1, 2],
        "rate limited: telegram per bot",
    )
    .await;
}

#[tokio::test]
async fn the_default_limits_keep_a_burst_to_one_chat_under_flood_control() {
    let api = FakeBotApi::start().await;
    // The fake answers 429 to a chat sent to twice within 900 ms (Telegram's ~1 msg/s).
    api.enforce_spacing(Duration::from_millis(900));
    let base = api.base.clone();
    let relay = start(|c| c.destinations.push(telegram("chat", &base))).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            relay
                .submit("chat", json!({"chat_id": 5, "text": n.to_string()}))
                .await,
        );
    }
    for id in &ids {
        relay.wait_for_status(id, "delivered", WAIT).await;
    }
    let requests = api.requests();
    assert_eq!(requests.len(), 3, "no 429, no retry");
    let texts: Vec<&str> = requests
        .iter()
        .map(|r| r.params["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["0", "1", "2"], "in submission order");
    for pair in requests.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(900), "{gap:?}");
    }
}

/// Telegram's three limits, scaled up so the test takes a fraction of a second, as the fake
/// enforces them and as the relay is configured with them.
pub(crate) fn scaled_limits() -> (BotLimits, Value) {
    let fake = BotLimits {
        per_chat: Window::new(10, Duration::from_secs(1)),
        per_group: Window::new(2, Duration::from_millis(500)),
        per_bot: Window::new(100, Duration::from_millis(250)),
    };
    let relay = json!({
        "per_chat": {"limit": 10, "per": "1s"},
        "per_group": {"limit": 2, "per": "500ms"},
        "per_bot": {"limit": 100, "per": "250ms"},
    });
    (fake, relay)
}

/// The chat id of chat `n` of the hundred: the last twenty are groups.
pub(crate) fn chat_id(n: i64) -> i64 {
    if n < 80 { 1000 + n } else { -(1000 + n) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_chats_at_once_never_trigger_flood_control_and_keep_their_order() {
    // 300 sends: the bot's window holds 100, each chat's 10, each group's 2, so all three
    // limits hold sends back.
    let (fake_limits, limits) = scaled_limits();
    let api = TelegramLimitsFake::start(BOT_TOKEN, fake_limits)
        .await
        .unwrap();
    let base = api.base().to_owned();
    let relay = start(|c| {
        let mut d = telegram("chat", &base);
        d.limits = Some(limits);
        c.destinations.push(d);
    })
    .await;
    const CHATS: i64 = 100;
    const PER_CHAT: usize = 3;
    // Every chat's messages submitted in order, all chats at once.
    let submitters = (0..CHATS).map(|chat| {
        let relay = &relay;
        async move {
            let mut ids = Vec::new();
            for n in 0..PER_CHAT {
                let text = format!("{chat}/{n}");
                ids.push(
                    relay
                        .submit("chat", json!({"chat_id": chat_id(chat), "text": text}))
                        .await,
                );
            }
            ids
        }
    });
    let ids: Vec<String> = futures_util::future::join_all(submitters)
        .await
        .into_iter()
        .flatten()
        .collect();
    let total = ids.len();
    api.wait_for_sends(total, WAIT).await;
    // The relay records each delivery after the fake answered it (300 records: on a loaded
    // machine this takes a while).
    let deadline = tokio::time::Instant::now() + 3 * WAIT;
    let delivered = loop {
        let (_, page) = relay
            .call(
                Method::GET,
                "/v1/messages?status=delivered&limit=1000",
                None,
            )
            .await;
        let delivered: std::collections::BTreeSet<String> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        if delivered.len() >= total || tokio::time::Instant::now() > deadline {
            break delivered;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        delivered,
        ids.iter().cloned().collect(),
        "every message delivered"
    );

    assert_eq!(
        api.refusals(),
        [],
        "the relay kept within every limit the fake enforces"
    );
    let sent = api.sends();
    let texts: Vec<&str> = sent
        .iter()
        .map(|s| s.params["text"].as_str().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<&str> = texts.iter().copied().collect();
    assert_eq!(texts.len(), total, "one send per message");
    assert_eq!(distinct.len(), total, "every message exactly once");
    for chat in 0..CHATS {
        let to_chat: Vec<&str> = sent
            .iter()
            .filter(|s| s.params["chat_id"] == chat_id(chat))
            .map(|s| s.params["text"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = (0..PER_CHAT).map(|n| format!("{chat}/{n}")).collect();
        assert_eq!(to_chat, expected, "chat {chat} in submission order");
    }
}

#[tokio::test]
async fn a_card_is_sent_edited_and_asks_for_a_reply_through_the_relay() {
    let api = TelegramLimitsFake::start(BOT_TOKEN, BotLimits::telegram())
        .await
        .unwrap();
    let base = api.base().to_owned();
    let relay = start(|c| {
        let mut d = telegram("chat", &base);
        // The card and its edits go one after another, not a second apart.
        d.limits = Some(json!({"per_chat": {"limit": 100}}));
        c.destinations.push(d);
    })
    .await;
    let card = relay
        .submit(
            "chat",
            json!({"chat_id": 42, "text": "PR #42: add retries", "reply_markup": {"inline_keyboard": [[
                {"text": "Approve", "callback_data": "approve:42"},
                {"text": "Merge", "callback_data": "merge:42"},
            ]]}}),
        )
        .await;
    relay.wait_for_status(&card, "delivered", WAIT).await;
    let shown = api.shown("42", 1).expect("the card was sent");
    assert!(shown.keyboard.is_some(), "{shown:?}");

    let edit = json!({
        "method": "editMessageText", "chat_id": 42, "message_id": 1,
        "text": "PR #42: approved by @ana",
    });
    let edited = relay.submit("chat", edit.clone()).await;
    let message = relay.wait_for_status(&edited, "delivered", WAIT).await;
    assert!(has_event(&message, "edited: message_id 1"), "{message:#}");
    let shown = api.shown("42", 1).unwrap();
    assert_eq!(shown.text.as_deref(), Some("PR #42: approved by @ana"));
    assert_eq!(shown.keyboard, None, "an edit without buttons removes them");
    let edits = api.wait_for_edits(1, WAIT).await;
    assert_eq!(
        (
            edits[0].method.as_str(),
            edits[0].chat.as_str(),
            edits[0].message_id
        ),
        ("editMessageText", "42", 1)
    );

    // The same edit again changes nothing: delivered, and the fake applied no second edit.
    let again = relay.submit("chat", edit).await;
    let message = relay.wait_for_status(&again, "delivered", WAIT).await;
    assert!(has_event(&message, "not modified"), "{message:#}");
    assert_eq!(api.edits().len(), 1);

    // A message the bot never sent cannot be edited: a dead letter with Telegram's words.
    let missing = relay
        .submit(
            "chat",
            json!({"method": "editMessageReplyMarkup", "chat_id": 42, "message_id": 99, "reply_markup": {"inline_keyboard": []}}),
        )
        .await;
    let message = relay.wait_for_status(&missing, "dead", WAIT).await;
    assert!(
        message["last_error"]
            .as_str()
            .unwrap()
            .contains("message to edit not found"),
        "{message:#}"
    );

    // An edit's text is never split: too long is a 422 at submit, naming the field.
    let (status, body) = submit_raw(
        &relay,
        json!({"destination": "chat", "payload": {
            "method": "editMessageText", "chat_id": 42, "message_id": 1, "text": "x".repeat(4097),
        }}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "payload.text", "{body}");

    // A question under the card: the user's client opens a reply to it.
    let question = json!({
        "chat_id": 42, "text": "Your comment on PR #42?",
        "reply_markup": {"force_reply": true, "input_field_placeholder": "Comment"},
        "reply_parameters": {"message_id": 1},
    });
    let asked = relay.submit("chat", question.clone()).await;
    relay.wait_for_status(&asked, "delivered", WAIT).await;
    let sends = api.sends();
    assert_eq!(
        sends.len(),
        2,
        "the card and the question; edits are not sends"
    );
    assert_eq!(sends[1].params, question);
}
