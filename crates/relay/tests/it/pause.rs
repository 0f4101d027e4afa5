//! Pausing a destination: its messages stay queued on every relay sharing the store until it
//! is resumed, shown in `/v1/destinations` and `/status`, recorded in the audit log.

use std::time::Duration;

use ferrule_policy::ManualClock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::receiver::Receiver;
use crate::support::{PgSchema, TestRelay, config_in, start, start_in, webhook};

const WAIT: Duration = Duration::from_secs(10);

async fn destination(relay: &TestRelay, name: &str) -> Value {
    let (status, body) = relay.call(Method::GET, "/v1/destinations", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn a_paused_destination_keeps_its_messages_queued_until_resumed() {
    let receiver = Receiver::start().await;
    let url = receiver.url.clone();
    let relay = start(|c| {
        c.destinations.push(webhook("hook", &url));
        c.destinations.push(webhook("other", &url));
    })
    .await;
    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/destinations/hook/pause?reason=deploy",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["destination"], "hook");
    assert_eq!(body["paused"]["reason"], "deploy");
    let by = body["paused"]["paused_by"].as_str().unwrap().to_owned();
    assert!(by.starts_with("api:"), "{body}");

    let held = relay.submit("hook", json!({"n": 1})).await;
    let passed = relay.submit("other", json!({"n": 2})).await;
    // Claims take the earliest due first: had `hook` not been paused, its message would have
    // gone before this one.
    relay.wait_for_status(&passed, "delivered", WAIT).await;
    let message = relay.message(&held).await;
    assert_eq!(message["status"], "queued", "{message:#}");
    assert_eq!(message["attempts"], 0, "{message:#}");
    assert_eq!(destination(&relay, "hook").await["paused"], body["paused"]);
    assert_eq!(destination(&relay, "other").await["paused"], Value::Null);
    let (_, status_page) = relay.call(Method::GET, "/status", None).await;
    assert_eq!(
        status_page["dependencies"]["destinations"]["hook"]["paused"], body["paused"],
        "{status_page:#}"
    );

    // Unknown destinations and overlong reasons are refused.
    let (status, answer) = relay
        .call(Method::POST, "/v1/destinations/nope/pause", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let long = "x".repeat(501);
    let (status, answer) = relay
        .call(
            Method::POST,
            &format!("/v1/destinations/other/pause?reason={long}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["field"], "reason", "{answer}");

    let (status, body) = relay
        .call(Method::POST, "/v1/destinations/hook/resume", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["paused"], Value::Null);
    relay.wait_for_status(&held, "delivered", WAIT).await;
    assert_eq!(destination(&relay, "hook").await["paused"], Value::Null);
    // A resume of a destination that is not paused changes nothing and is not recorded.
    let (status, _) = relay
        .call(Method::POST, "/v1/destinations/hook/resume", None)
        .await;
    assert_eq!(status, StatusCode::OK);

    let (_, audit) = relay.call(Method::GET, "/v1/audit?limit=10", None).await;
    let actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("destination.resume", "hook"),
            ("destination.pause", "hook")
        ]
    );
    assert_eq!(audit["entries"][1]["actor"], by.as_str());
    assert_eq!(audit["entries"][1]["detail"], json!({"reason": "deploy"}));
}

#[tokio::test]
async fn a_pause_through_one_relay_holds_on_another_sharing_postgres() {
    let receiver = Receiver::start().await;
    let schema = PgSchema::new();
    let clock = ManualClock::with_system_time(std::time::SystemTime::now());
    let mut relays: Vec<TestRelay> = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(&dir);
        config.store.url = ferrule::config::Secret::new(schema.url());
        config.destinations.push(webhook("hook", &receiver.url));
        config.destinations.push(webhook("other", &receiver.url));
        relays.push(start_in(dir, config, clock.shared()).await);
    }
    let (status, body) = relays[0]
        .call(Method::POST, "/v1/destinations/hook/pause", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The store holds the pause: neither relay claims the message, from the first moment.
    let held = relays[1].submit("hook", json!({"n": 1})).await;
    let passed = relays[1].submit("other", json!({"n": 2})).await;
    relays[1].wait_for_status(&passed, "delivered", WAIT).await;
    assert_eq!(relays[1].message(&held).await["status"], "queued");
    // The other relay shows it once it has read the pauses again (every 5 s of its clock).
    let deadline = tokio::time::Instant::now() + WAIT;
    while destination(&relays[1], "hook").await["paused"] != body["paused"] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pause never showed"
        );
        clock.advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = relays[1]
        .call(Method::POST, "/v1/destinations/hook/resume", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    relays[0].wait_for_status(&held, "delivered", WAIT).await;
    for relay in &mut relays {
        relay.stop().await;
    }
    drop(schema);
}
