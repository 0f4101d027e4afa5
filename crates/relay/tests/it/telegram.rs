//! Telegram destinations end to end: the real relay and router, a fake Bot API on 127.0.0.1.

use std::time::Duration;

use ferrule::config::{DestinationConfig, DestinationKind, Secret};
use reqwest::Method;
use serde_json::{Value, json};

use crate::fake_bot_api::{BOT_TOKEN, BotReply, FakeBotApi};
use crate::support::{TestRelay, start};

const WAIT: Duration = Duration::from_secs(10);

/// A Telegram destination `name` on the fake at `api_base`, retrying after 1 s without jitter.
fn telegram(name: &str, api_base: &str) -> DestinationConfig {
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
