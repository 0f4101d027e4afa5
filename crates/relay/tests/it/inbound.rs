//! Inbound Telegram updates end to end: the real relay on a SQLite file, the fake Bot API on
//! 127.0.0.1 and a real webhook receiver. The webhook's secret token (missing, wrong, right),
//! redeliveries stored and answered once, malformed updates, forwarding, `GET /v1/inbound`;
//! long polling across a restart, conflicts, network errors and a revoked token on a manual
//! clock; `ferrule telegram set-webhook` and `delete-webhook` through the real binary.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ferrule::config::{DestinationConfig, DestinationKind, InboundConfig, InboundMode, Secret};
use ferrule_policy::ManualClock;
use ferrule_store::{SqliteOptions, SqliteStore, Store, StoreOptions};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::fake_bot_api::{BOT_TOKEN, CallbackFailure, FakeBotApi, PollFailure};
use crate::receiver::Receiver;
use crate::support::{TestRelay, start, start_clock, start_in};

const WAIT: Duration = Duration::from_secs(10);
const SECRET_TOKEN: &str = "s3cr3t_token-1";
const SECRET_HEADER: &str = "X-Telegram-Bot-Api-Secret-Token";

/// A Telegram destination `name` on the fake at `api_base`, receiving updates as `inbound`
/// says; its retries (and so the poller's backoff) are a fixed 5 s without jitter.
fn bot(name: &str, api_base: &str, inbound: InboundConfig) -> DestinationConfig {
    DestinationConfig {
        name: name.into(),
        kind: DestinationKind::Telegram,
        bot_token: Some(Secret::new(BOT_TOKEN)),
        api_base: Some(api_base.into()),
        timeout: Some(Duration::from_secs(2)),
        retry: Some(json!({"backoff": {"kind": "fixed", "delay": "5s"}, "jitter": "none"})),
        inbound: Some(inbound),
        ..DestinationConfig::default()
    }
}

fn webhook_mode() -> InboundConfig {
    InboundConfig {
        mode: InboundMode::Webhook,
        secret_token: Some(Secret::new(SECRET_TOKEN)),
        forward_to: None,
        callback_answer: None,
        poll_timeout: None,
    }
}

fn polling_mode() -> InboundConfig {
    InboundConfig {
        mode: InboundMode::Polling,
        secret_token: None,
        poll_timeout: Some(Duration::from_secs(1)),
        ..webhook_mode()
    }
}

fn message(update_id: i64, chat: i64, text: &str) -> Value {
    json!({"update_id": update_id, "message": {"message_id": update_id, "date": 1_767_225_600,
        "chat": {"id": chat, "type": "private"}, "from": {"id": chat, "is_bot": false, "first_name": "Ada"},
        "text": text}})
}

fn button(update_id: i64, query: &str) -> Value {
    json!({"update_id": update_id, "callback_query": {"id": query,
        "from": {"id": 42, "is_bot": false, "first_name": "Ada"}, "data": "approve:7",
        "message": {"message_id": 3, "date": 1, "chat": {"id": 42, "type": "private"}}}})
}

/// Posts `body` to the destination's webhook with `secret` (no bearer token).
async fn post_update(
    relay: &TestRelay,
    destination: &str,
    secret: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let headers: Vec<(&str, &str)> = secret.map(|s| (SECRET_HEADER, s)).into_iter().collect();
    relay
        .call_with(
            Method::POST,
            &format!("/v1/telegram/{destination}/webhook"),
            Some(body),
            None,
            &headers,
        )
        .await
}

/// Every recorded event of `source`, newest first, through `GET /v1/inbound`.
async fn events(relay: &TestRelay, source: &str) -> Vec<Value> {
    relay
        .page(&format!("/v1/inbound?source={source}&limit=1000"), "events")
        .await
}

fn update_ids(events: &[Value]) -> Vec<i64> {
    let mut ids: Vec<i64> = events
        .iter()
        .map(|e| e["external_id"].as_str().unwrap().parse().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

/// Waits until `source` has `n` recorded events.
async fn wait_for_events(relay: &TestRelay, source: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let events = events(relay, source).await;
        if events.len() >= n {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {n} events of {source}, got {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The destination's inbound health in `/status`.
async fn inbound_health(relay: &TestRelay, destination: &str) -> Value {
    let (_, status) = relay.call(Method::GET, "/status", None).await;
    status["dependencies"]["destinations"][destination]["inbound"]["health"].clone()
}

/// Waits until the destination's inbound health is `want`.
async fn wait_for_health(relay: &TestRelay, destination: &str, want: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let health = inbound_health(relay, destination).await;
        if health["status"] == want {
            return health;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "inbound health never became {want}: {health:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Moves `clock` on in steps of the poller's backoff until `done` holds (each step lets real
/// time pass too, for the requests it wakes).
async fn advance_until(clock: &ManualClock, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the condition never held"
        );
        clock.advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test]
async fn the_webhook_refuses_a_missing_or_wrong_secret_token() {
    let api = FakeBotApi::start().await;
    let base = api.base.clone();
    let relay = start(|c| {
        c.destinations.push(bot("bot", &base, webhook_mode()));
        c.destinations.push(bot("poller", &base, polling_mode()));
    })
    .await;
    let update = message(1, 42, "hi");
    let (status, body) = post_update(&relay, "bot", None, update.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing")
    );
    for wrong in ["s3cr3t_token-2", "s3cr3t_token-", "", crate::support::TOKEN] {
        let (status, body) = post_update(&relay, "bot", Some(wrong), update.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    // The relay's API token is not a way in either.
    let (status, _) = relay
        .call_with(
            Method::POST,
            "/v1/telegram/bot/webhook",
            Some(update.clone()),
            Some(crate::support::TOKEN),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Unknown destinations, and one that polls, have no webhook.
    for name in ["nobody", "poller"] {
        let (status, body) = post_update(&relay, name, Some(SECRET_TOKEN), update.clone()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{name}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    assert!(events(&relay, "telegram:bot").await.is_empty());
    // The right token gets in.
    let (status, body) = post_update(&relay, "bot", Some(SECRET_TOKEN), update.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["duplicate"], false);
    let stored = events(&relay, "telegram:bot").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["id"], body["id"]);
    assert_eq!(stored[0]["source"], "telegram:bot");
    assert_eq!(stored[0]["external_id"], "1");
    assert_eq!(stored[0]["payload"], update);
}

#[tokio::test]
async fn a_redelivered_update_is_stored_once_and_its_callback_answered_once() {
    let api = FakeBotApi::start().await;
    let base = api.base.clone();
    let relay = start(|c| {
        let mut inbound = webhook_mode();
        inbound.callback_answer = Some("Approved ✓".into());
        c.destinations.push(bot("bot", &base, inbound));
    })
    .await;
    let (status, first) = post_update(&relay, "bot", Some(SECRET_TOKEN), button(10, "q-10")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["duplicate"], false);
    let answers = api.wait_for_calls("answerCallbackQuery", 1, WAIT).await;
    assert_eq!(
        answers[0].params,
        json!({"callback_query_id": "q-10", "text": "Approved ✓"})
    );
    // Telegram redelivers (it missed our 200): acknowledged, not stored or answered again.
    for _ in 0..2 {
        let (status, again) =
            post_update(&relay, "bot", Some(SECRET_TOKEN), button(10, "q-10")).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["id"], first["id"]);
    }
    // A new press is answered with its own id; by the time it is, a second answer to the
    // first would have been sent too.
    post_update(&relay, "bot", Some(SECRET_TOKEN), button(11, "q-11")).await;
    api.wait_for_calls("answerCallbackQuery", 2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ids: Vec<Value> = api
        .calls("answerCallbackQuery")
        .iter()
        .map(|r| r.params["callback_query_id"].clone())
        .collect();
    assert_eq!(ids, [json!("q-10"), json!("q-11")]);
    assert_eq!(update_ids(&events(&relay, "telegram:bot").await), [10, 11]);
    let (_, status) = relay.call(Method::GET, "/status", None).await;
    assert_eq!(status["counters"]["inbound"], 2);
    assert_eq!(status["counters"]["inbound_duplicates"], 2);
}

#[tokio::test]
async fn a_callback_telegram_refuses_to_answer_still_gets_its_200() {
    let api = FakeBotApi::start().await;
    let base = api.base.clone();
    let relay = start(|c| c.destinations.push(bot("bot", &base, webhook_mode()))).await;
    let (status, body) = post_update(
        &relay,
        "bot",
        Some(SECRET_TOKEN),
        button(1, "expired-query"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    api.wait_for_calls("answerCallbackQuery", 1, WAIT).await;
    assert_eq!(update_ids(&events(&relay, "telegram:bot").await), [1]);
    // "Query is too old" is permanent: not retried (a retry would come within 200 ms).
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(api.calls("answerCallbackQuery").len(), 1);
}

/// The `callback_query_id` of every `answerCallbackQuery` the fake received.
fn answered(api: &FakeBotApi) -> Vec<Value> {
    api.calls("answerCallbackQuery")
        .into_iter()
        .map(|r| r.params["callback_query_id"].clone())
        .collect()
}

#[tokio::test]
async fn a_callback_answer_that_fails_transiently_is_retried() {
    let api = FakeBotApi::start().await;
    api.fail_next_callback_answers([CallbackFailure::Disconnect, CallbackFailure::InternalError]);
    let base = api.base.clone();
    let relay = start(|c| c.destinations.push(bot("bot", &base, webhook_mode()))).await;
    let (status, body) = post_update(&relay, "bot", Some(SECRET_TOKEN), button(1, "q-1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A dropped connection, a 500, then the answer: three attempts at the same query.
    api.wait_for_calls("answerCallbackQuery", 3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(answered(&api), [json!("q-1"), json!("q-1"), json!("q-1")]);
}

#[tokio::test]
async fn a_callback_answer_waits_out_a_short_retry_after_and_gives_up_on_a_long_one() {
    let api = FakeBotApi::start().await;
    api.fail_next_callback_answers([CallbackFailure::TooManyRequests(2)]);
    let base = api.base.clone();
    let clock = ManualClock::with_system_time(SystemTime::now());
    let relay = start_clock(clock.shared(), |c| {
        c.destinations.push(bot("bot", &base, webhook_mode()));
    })
    .await;
    // The idle relay's own sleeps; the answer adds its budget and then its retry's.
    let idle = clock.pending_sleeps();
    post_update(&relay, "bot", Some(SECRET_TOKEN), button(1, "q-1")).await;
    api.wait_for_calls("answerCallbackQuery", 1, WAIT).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while clock.pending_sleeps() < idle + 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retry never slept"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Not a moment before the 2 s Telegram asked for, on the relay's clock.
    clock.advance(Duration::from_millis(1999));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(answered(&api).len(), 1);
    clock.advance(Duration::from_millis(1));
    api.wait_for_calls("answerCallbackQuery", 2, WAIT).await;
    // The next press meets a 30 s flood wait: longer than the spinner lasts, so no retry.
    api.fail_next_callback_answers([CallbackFailure::TooManyRequests(30)]);
    post_update(&relay, "bot", Some(SECRET_TOKEN), button(2, "q-2")).await;
    api.wait_for_calls("answerCallbackQuery", 3, WAIT).await;
    clock.advance(Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(answered(&api), [json!("q-1"), json!("q-1"), json!("q-2")]);
}

#[tokio::test]
async fn malformed_updates_are_refused_with_a_json_400() {
    let api = FakeBotApi::start().await;
    let base = api.base.clone();
    let relay = start(|c| {
        c.server.max_body_bytes = 4096;
        c.destinations.push(bot("bot", &base, webhook_mode()));
    })
    .await;
    let raw = relay
        .http
        .post(format!("{}/v1/telegram/bot/webhook", relay.base))
        .header(SECRET_HEADER, SECRET_TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["error"]["code"], "malformed_json");
    for (update, field) in [
        (json!({"edited_message": {"text": "no id"}}), "update_id"),
        (json!({"update_id": "7"}), "update_id"),
        (
            json!({"update_id": 7, "callback_query": {"from": {"id": 1, "first_name": "a"}}}),
            "callback_query.id",
        ),
        (json!([1, 2]), "update"),
    ] {
        let (status, body) = post_update(&relay, "bot", Some(SECRET_TOKEN), update.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{update}: {body}");
        assert_eq!(body["error"]["code"], "invalid_update", "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    let (status, body) = post_update(
        &relay,
        "bot",
        Some(SECRET_TOKEN),
        message(8, 42, &"x".repeat(5000)),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "body_too_large");
    assert!(events(&relay, "telegram:bot").await.is_empty());
    assert!(api.calls("answerCallbackQuery").is_empty());
}

#[tokio::test]
async fn each_new_update_is_forwarded_once_to_the_forward_destination() {
    let api = FakeBotApi::start().await;
    let receiver = Receiver::start().await;
    let (base, url) = (api.base.clone(), receiver.url.clone());
    let relay = start(|c| {
        c.destinations
            .push(crate::support::webhook("app-hook", &url));
        let mut inbound = webhook_mode();
        inbound.forward_to = Some("app-hook".into());
        c.destinations.push(bot("bot", &base, inbound));
    })
    .await;
    for update in [
        message(1, 42, "first"),
        message(1, 42, "first"),
        message(2, 42, "second"),
    ] {
        let (status, body) = post_update(&relay, "bot", Some(SECRET_TOKEN), update).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let hits = receiver.wait_for_hits(2, WAIT).await;
    // The redelivery was never enqueued: a third delivery would be queued behind the second.
    let (_, queued) = relay
        .call(Method::GET, "/v1/messages?destination=app-hook", None)
        .await;
    assert_eq!(queued["messages"].as_array().unwrap().len(), 2, "{queued}");
    assert_eq!(receiver.hits().len(), 2);
    let bodies: Vec<Value> = hits
        .iter()
        .map(|h| serde_json::from_slice(&h.body).unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            json!({"source": "telegram:bot", "update": message(1, 42, "first")}),
            json!({"source": "telegram:bot", "update": message(2, 42, "second")}),
        ]
    );
    let ordering: Vec<Value> = queued["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["ordering_key"].clone())
        .collect();
    assert_eq!(
        ordering,
        [json!("telegram:bot:42"), json!("telegram:bot:42")]
    );
}

#[tokio::test]
async fn inbound_events_are_listed_by_source_in_pages_behind_the_token() {
    let api = FakeBotApi::start().await;
    let base = api.base.clone();
    let relay = start(|c| {
        c.destinations.push(bot("a", &base, webhook_mode()));
        c.destinations.push(bot("b", &base, webhook_mode()));
    })
    .await;
    for n in 1..=5 {
        let dest = if n % 2 == 0 { "b" } else { "a" };
        post_update(&relay, dest, Some(SECRET_TOKEN), message(n, 42, "x")).await;
    }
    let (status, _) = relay
        .call_with(Method::GET, "/v1/inbound", None, None, &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut seen = Vec::new();
    let mut path = "/v1/inbound?limit=2".to_owned();
    loop {
        let (status, page) = relay.call(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 2);
        seen.extend(events.iter().map(|e| e["external_id"].clone()));
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/inbound?limit=2&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ["5", "4", "3", "2", "1"].map(Value::from));
    assert_eq!(update_ids(&events(&relay, "telegram:a").await), [1, 3, 5]);
    for bad in [
        "/v1/inbound?limit=0",
        "/v1/inbound?cursor=zzz",
        "/v1/inbound?x=1",
    ] {
        let (status, body) = relay.call(Method::GET, bad, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
}

#[tokio::test]
async fn polling_neither_loses_nor_repeats_an_update_across_a_restart() {
    let api = FakeBotApi::start().await;
    api.push_updates([
        message(1, 42, "one"),
        button(2, "q-2"),
        message(3, 7, "three"),
    ]);
    let base = api.base.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config_in(&dir);
    config.destinations.push(bot("bot", &base, polling_mode()));
    let mut relay = start_in(dir, config.clone(), ferrule_policy::clock::system()).await;
    let stored = wait_for_events(&relay, "telegram:bot", 3).await;
    assert_eq!(update_ids(&stored), [1, 2, 3]);
    // The next poll confirms the batch with offset 4, which was stored before it was sent.
    let polls = api.wait_for_offset(4, WAIT).await;
    assert_eq!(
        polls[0].params.get("offset"),
        None,
        "the first poll starts at Telegram's oldest"
    );
    api.wait_for_calls("answerCallbackQuery", 1, WAIT).await;
    let dir = std::mem::replace(&mut relay.dir, tempfile::tempdir().unwrap());
    relay.stop().await;
    drop(relay);

    // Simulate a crash between recording a batch and storing its offset: the stored offset is
    // 2 again, and Telegram, never told otherwise, still holds updates 2 and 3.
    {
        let path = dir.path().join("ferrule.db");
        let store = SqliteStore::open(SqliteOptions::new(&path, StoreOptions::default()))
            .await
            .unwrap();
        store.set_meta("telegram:bot:offset", "2").await.unwrap();
    }
    api.push_updates([
        button(2, "q-2"),
        message(3, 7, "three"),
        message(4, 7, "four"),
        button(5, "q-5"),
    ]);
    let polls_before = api.calls("getUpdates").len();
    let relay = start_in(dir, config, ferrule_policy::clock::system()).await;
    let stored = wait_for_events(&relay, "telegram:bot", 5).await;
    api.wait_for_offset(6, WAIT).await;
    let second_run = &api.calls("getUpdates")[polls_before..];
    assert_eq!(
        second_run[0].params["offset"], 2,
        "the restart resumes at the stored offset"
    );
    // Exactly the five updates, each once; update 2's button answered once in all.
    assert_eq!(update_ids(&stored), [1, 2, 3, 4, 5]);
    assert_eq!(events(&relay, "telegram:bot").await.len(), 5);
    api.wait_for_calls("answerCallbackQuery", 2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answered: Vec<Value> = api
        .calls("answerCallbackQuery")
        .iter()
        .map(|r| r.params["callback_query_id"].clone())
        .collect();
    assert_eq!(answered, [json!("q-2"), json!("q-5")]);
    let state = &relay.running.as_ref().unwrap().state;
    assert_eq!(
        state
            .store
            .get_meta("telegram:bot:offset")
            .await
            .unwrap()
            .as_deref(),
        Some("6")
    );
    let (_, status) = relay.call(Method::GET, "/status", None).await;
    assert_eq!(status["counters"]["inbound"], 2, "{status:#}");
    assert_eq!(status["counters"]["inbound_duplicates"], 2, "{status:#}");
}

#[tokio::test]
async fn an_update_too_large_to_store_does_not_hold_up_polling() {
    let api = FakeBotApi::start().await;
    api.push_updates([message(1, 42, &"x".repeat(5000)), message(2, 42, "small")]);
    let base = api.base.clone();
    let relay = start(|c| {
        c.server.max_body_bytes = 4096;
        c.destinations.push(bot("bot", &base, polling_mode()));
    })
    .await;
    api.wait_for_offset(3, WAIT).await;
    assert_eq!(update_ids(&events(&relay, "telegram:bot").await), [2]);
}

#[tokio::test]
async fn a_polling_conflict_marks_inbound_unhealthy_and_polling_resumes_after_it() {
    let api = FakeBotApi::start().await;
    api.set_conflict(true);
    let base = api.base.clone();
    let clock = ManualClock::with_system_time(SystemTime::now());
    let alerts = Receiver::start().await;
    let alerts_url = alerts.url.clone();
    let relay = start_clock(clock.shared(), |c| {
        c.destinations.push(bot("bot", &base, polling_mode()));
        c.destinations
            .push(crate::support::webhook("ops-hook", &alerts_url));
        c.alerts.webhook = Some("ops-hook".into());
    })
    .await;
    api.wait_for_calls("getUpdates", 1, WAIT).await;
    let health = wait_for_health(&relay, "bot", "unhealthy").await;
    // The conflict is alerted once.
    let alert: Value = serde_json::from_slice(&alerts.wait_for_hits(1, WAIT).await[0].body)
        .expect("an alert is JSON");
    assert_eq!(alert["type"], "telegram.polling_conflict", "{alert}");
    assert_eq!(alert["subject"], "bot", "{alert}");
    let error = health["last_error"]["message"].as_str().unwrap();
    assert!(
        error.contains("another getUpdates consumer or a webhook is set"),
        "{error}"
    );
    assert!(
        error.contains("terminated by other getUpdates request"),
        "{error}"
    );
    // The poller waits out its backoff on the relay's clock: nothing more until it moves.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.calls("getUpdates").len(), 1);
    // Still conflicting after the backoff: it tries again and stays unhealthy.
    advance_until(&clock, || api.calls("getUpdates").len() >= 2).await;
    // The other consumer goes away: the next poll after the backoff gets the update.
    api.set_conflict(false);
    api.push_updates([message(1, 42, "after the conflict")]);
    let deadline = tokio::time::Instant::now() + WAIT;
    while events(&relay, "telegram:bot").await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "polling never resumed"
        );
        clock.advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(update_ids(&events(&relay, "telegram:bot").await), [1]);
    wait_for_health(&relay, "bot", "healthy").await;
    // The second conflict fell within `min_interval` of the first: no second alert.
    assert_eq!(alerts.hits().len(), 1, "one alert per conflict episode");
    let (_, status) = relay.call(Method::GET, "/status", None).await;
    assert_eq!(
        status["dependencies"]["destinations"]["bot"]["inbound"]["mode"],
        "polling"
    );
}

#[tokio::test]
async fn polling_reconnects_after_network_errors() {
    let api = FakeBotApi::start().await;
    api.fail_next_polls([PollFailure::Disconnect, PollFailure::BadGateway]);
    api.push_updates([message(1, 42, "through")]);
    let base = api.base.clone();
    let clock = ManualClock::with_system_time(SystemTime::now());
    let relay = start_clock(clock.shared(), |c| {
        c.destinations.push(bot("bot", &base, polling_mode()));
    })
    .await;
    api.wait_for_calls("getUpdates", 1, WAIT).await;
    wait_for_health(&relay, "bot", "degraded").await;
    advance_until(&clock, || api.calls("getUpdates").len() >= 3).await;
    let stored = wait_for_events(&relay, "telegram:bot", 1).await;
    assert_eq!(update_ids(&stored), [1]);
    let health = wait_for_health(&relay, "bot", "healthy").await;
    assert!(
        health["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("502"),
        "{health:#}"
    );
}

#[tokio::test]
async fn a_refused_bot_token_stops_polling() {
    let api = FakeBotApi::start().await;
    let base = api.base.clone();
    let clock = ManualClock::with_system_time(SystemTime::now());
    let relay = start_clock(clock.shared(), |c| {
        let mut dest = bot("bot", &base, polling_mode());
        dest.bot_token = Some(Secret::new("123456789:revoked"));
        c.destinations.push(dest);
    })
    .await;
    api.wait_for_calls("getUpdates", 1, WAIT).await;
    let health = wait_for_health(&relay, "bot", "unhealthy").await;
    assert!(
        health["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("polling stopped"),
        "{health:#}"
    );
    for _ in 0..5 {
        clock.advance(Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(api.calls("getUpdates").len(), 1, "no poll after the 401");
}

/// Writes a config for the binary with a webhook-mode and a polling-mode bot on `api_base`.
fn cli_config(dir: &std::path::Path, api_base: &str) -> std::path::PathBuf {
    let path = dir.join("ferrule.toml");
    let text = format!(
        r#"
[store]
url = "sqlite://{db}"
[auth]
tokens = ["{token}"]
[[destinations]]
name = "bot"
type = "telegram"
bot_token = "{BOT_TOKEN}"
api_base = "{api_base}"
inbound = {{ mode = "webhook", secret_token = "env:FERRULE_TEST_TG_SECRET" }}
[[destinations]]
name = "poller"
type = "telegram"
bot_token = "{BOT_TOKEN}"
api_base = "{api_base}"
inbound = {{ mode = "polling" }}
[[destinations]]
name = "plain"
type = "telegram"
bot_token = "{BOT_TOKEN}"
api_base = "{api_base}"
"#,
        db = dir.join("ferrule.db").display(),
        token = crate::support::TOKEN,
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the real binary with `args` and the config; answers its exit code, stdout and stderr.
async fn ferrule(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferrule"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("FERRULE_TEST_TG_SECRET", SECRET_TOKEN)
        .output()
        .await
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_webhook_sends_the_url_and_secret_token_to_telegram() {
    let api = FakeBotApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), &api.base);
    let url = "https://relay.example.com/v1/telegram/bot/webhook";
    let (code, out, err) = ferrule(&config, &["telegram", "set-webhook", "bot", url]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(url), "{out}");
    let calls = api.calls("setWebhook");
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].params,
        json!({"url": url, "secret_token": SECRET_TOKEN})
    );
    assert!(!out.contains(SECRET_TOKEN) && !err.contains(SECRET_TOKEN));

    let (code, out, err) = ferrule(
        &config,
        &[
            "telegram",
            "delete-webhook",
            "bot",
            "--drop-pending-updates",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    let calls = api.calls("deleteWebhook");
    assert_eq!(calls[0].params, json!({"drop_pending_updates": true}));

    // Refusals never reach Telegram, and say why.
    let before = api.requests().len();
    let mut refusals = BTreeMap::new();
    refusals.insert(
        "http URL",
        (
            vec![
                "set-webhook",
                "bot",
                "http://relay.example.com/v1/telegram/bot/webhook",
            ],
            "https",
        ),
    );
    refusals.insert(
        "not a URL",
        (vec!["set-webhook", "bot", "relay"], "not a URL"),
    );
    refusals.insert(
        "unknown",
        (
            vec!["set-webhook", "nobody", url],
            "no destination named `nobody`",
        ),
    );
    refusals.insert("polling", (vec!["set-webhook", "poller", url], "polling"));
    refusals.insert(
        "no inbound",
        (vec!["set-webhook", "plain", url], "[destinations.inbound]"),
    );
    for (case, (args, says)) in refusals {
        let mut full = vec!["telegram"];
        full.extend(args);
        let (code, out, err) = ferrule(&config, &full).await;
        assert_eq!(code, Some(1), "{case}: {out}{err}");
        assert!(err.contains(says), "{case}: {err}");
    }
    assert_eq!(api.requests().len(), before);
}
