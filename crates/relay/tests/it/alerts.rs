//! Alerts end to end: the real relay, a webhook receiver and a fake Telegram Bot API as alert
//! destinations. One outage sends one "opened" and one "closed" however often the breaker
//! re-opens; the dead-letter threshold alerts once per crossing; alerts are queued messages, so
//! one queued while its receiver was down, or one held back by `min_interval`, is delivered
//! after a restart; start-up recovery,
//! start-up failure (from the binary) and a Telegram 401 alert; the overall limit caps alerts.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use ferrule::alerts::{Alert, AlertKind, Raised};
use ferrule::config::{ChatRef, DestinationConfig, DestinationKind, Secret, TelegramAlerts};
use ferrule_policy::{Clock, ManualClock};
use ferrule_store::{NewMessage, Store, StoreOptions};
use reqwest::Method;
use serde_json::{Value, json};

use crate::fake_bot_api::{BOT_TOKEN, BotReply, FakeBotApi};
use crate::receiver::{Hit, Receiver, Reply};
use crate::support::{SECRET, TOKEN, TestRelay, config_in, metric, start_clock, start_in, webhook};

const WAIT: Duration = Duration::from_secs(10);

/// The group chat Telegram alerts go to.
const OPS_CHAT: i64 = -100_123;

/// `name` retrying every `delay` without jitter, up to `attempts` attempts.
fn retrying(mut d: DestinationConfig, delay: &str, attempts: u32) -> DestinationConfig {
    d.retry = Some(json!({
        "backoff": {"kind": "fixed", "delay": delay},
        "jitter": "none",
        "max_attempts": attempts,
    }));
    d
}

/// A Telegram destination `name` on the fake Bot API at `api_base`.
fn telegram(name: &str, api_base: &str) -> DestinationConfig {
    retrying(
        DestinationConfig {
            name: name.into(),
            kind: DestinationKind::Telegram,
            bot_token: Some(Secret::new(BOT_TOKEN)),
            api_base: Some(api_base.into()),
            timeout: Some(Duration::from_secs(2)),
            ..DestinationConfig::default()
        },
        "1s",
        5,
    )
}

/// Alerts to the webhook destination `ops-hook` at `url`.
fn alert_webhook(config: &mut ferrule::Config, url: &str) {
    config
        .destinations
        .push(retrying(webhook("ops-hook", url), "50ms", 100));
    config.alerts.webhook = Some("ops-hook".into());
}

/// Alerts to chat [`OPS_CHAT`] of the Telegram destination `ops-bot` on `api`.
fn alert_telegram(config: &mut ferrule::Config, api: &FakeBotApi) {
    config.destinations.push(telegram("ops-bot", &api.base));
    config.alerts.telegram = Some(TelegramAlerts {
        destination: "ops-bot".into(),
        chat_id: ChatRef::Id(OPS_CHAT),
    });
}

/// The webhook alerts among `hits`, as JSON.
fn alerts_in(hits: &[Hit]) -> Vec<Value> {
    hits.iter()
        .map(|h| serde_json::from_slice(&h.body).expect("an alert is JSON"))
        .collect()
}

fn kinds(alerts: &[Value]) -> Vec<&str> {
    alerts.iter().map(|a| a["type"].as_str().unwrap()).collect()
}

/// The alert texts the fake Bot API received for [`OPS_CHAT`].
fn chat_alerts(api: &FakeBotApi) -> Vec<Value> {
    api.requests()
        .into_iter()
        .filter(|r| r.params["chat_id"] == OPS_CHAT)
        .map(|r| {
            assert_eq!(r.method, "sendMessage");
            r.params
        })
        .collect()
}

/// Waits until the breaker of `hook` is in `state`.
async fn wait_for_breaker(relay: &TestRelay, state: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, body) = relay.call(Method::GET, "/v1/breakers", None).await;
        let hook = body["breakers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["destination"] == "hook")
            .unwrap();
        if hook["breaker"]["state"] == state {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the breaker did not become {state}: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Lets the relay run for `d` of real time (for "nothing more happens" checks).
async fn settle(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test]
async fn an_outage_sends_one_opened_and_one_closed_alert_however_often_it_reopens() {
    let failing = Receiver::start().await;
    failing.otherwise(Reply::Status(500));
    let alerts = Receiver::start().await;
    let api = FakeBotApi::start().await;
    let clock = ManualClock::with_system_time(SystemTime::now());
    let (url, alerts_url) = (failing.url.clone(), alerts.url.clone());
    let relay = start_clock(clock.shared(), |c| {
        let mut d = retrying(webhook("hook", &url), "1s", 20);
        d.breaker = Some(json!({
            "window": {"count": 4}, "min_calls": 4, "failure_rate": 0.5,
            "open_for": "10s", "open_backoff": 1.0,
        }));
        c.destinations.push(d);
        alert_webhook(c, &alerts_url);
        alert_telegram(c, &api);
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(relay.submit("hook", json!({"n": n})).await);
    }
    failing.wait_for_hits(4, WAIT).await;
    let opened = alerts_in(&alerts.wait_for_hits(1, WAIT).await);
    assert_eq!(opened[0]["type"], "breaker.opened", "{opened:#?}");
    assert_eq!(opened[0]["subject"], "hook");
    let relay_name = relay.running.as_ref().unwrap().state.owner.clone();
    assert_eq!(opened[0]["relay"], relay_name.as_str());
    assert!(
        ferrule::time::parse_rfc3339(opened[0]["at"].as_str().unwrap()).is_some(),
        "{opened:#?}"
    );
    api.wait_for_requests(1, WAIT).await;
    // Two probes fail: the circuit re-opens each time, silently. (The receiver records a probe
    // before the relay reads its answer: wait for the circuit to re-open before time moves.)
    for probes in [5, 6] {
        clock.advance(Duration::from_secs(10));
        failing.wait_for_hits(probes, WAIT).await;
        wait_for_breaker(&relay, "open").await;
    }
    settle(Duration::from_millis(200)).await;
    assert_eq!(alerts.hits().len(), 1, "no alert for re-opening");
    // The receiver recovers: the next probe closes the circuit.
    failing.otherwise(Reply::Status(200));
    clock.advance(Duration::from_secs(10));
    failing.wait_for_hits(7, WAIT).await;
    wait_for_breaker(&relay, "closed").await;
    for _ in 0..20 {
        clock.advance(Duration::from_secs(1));
        settle(Duration::from_millis(20)).await;
    }
    for id in &ids {
        relay.wait_for_status(id, "delivered", WAIT).await;
    }
    let both = alerts_in(&alerts.wait_for_hits(2, WAIT).await);
    let chat = {
        api.wait_for_requests(2, WAIT).await;
        chat_alerts(&api)
    };
    settle(Duration::from_millis(300)).await;
    assert_eq!(
        kinds(&alerts_in(&alerts.hits())),
        ["breaker.opened", "breaker.closed"]
    );
    let closed = &both[1];
    assert_eq!(closed["subject"], "hook");
    assert!(
        closed["text"]
            .as_str()
            .unwrap()
            .contains("closed after 30s"),
        "{closed:#}"
    );
    assert_eq!(chat.len(), 2, "{chat:#?}");
    assert_eq!(
        api.requests().len(),
        2,
        "only the two alerts went to the bot"
    );
    for (params, title) in chat
        .iter()
        .zip(["circuit opened (hook)", "circuit closed (hook)"])
    {
        let text = params["text"].as_str().unwrap();
        assert!(text.starts_with(&format!("ferrule: {title}\n")), "{text}");
        assert!(params.get("parse_mode").is_none(), "plain text: {params}");
    }
}

#[tokio::test]
async fn dead_letters_over_the_threshold_alert_once_per_crossing() {
    let dead = Receiver::start().await;
    dead.otherwise(Reply::Status(400));
    let alerts = Receiver::start().await;
    let clock = ManualClock::with_system_time(SystemTime::now());
    let (url, alerts_url) = (dead.url.clone(), alerts.url.clone());
    let relay = start_clock(clock.shared(), |c| {
        c.destinations.push(webhook("hook", &url));
        alert_webhook(c, &alerts_url);
        c.alerts.dead_letter_threshold = 2;
    })
    .await;
    let state = relay.running.as_ref().unwrap().state.clone();
    let kill = async |n: usize| {
        for i in 0..n {
            let id = relay.submit("hook", json!({"n": i})).await;
            relay.wait_for_status(&id, "dead", WAIT).await;
        }
    };
    kill(3).await;
    let first = alerts_in(&alerts.wait_for_hits(1, WAIT).await);
    assert_eq!(first[0]["type"], "dead_letters.threshold");
    assert!(
        first[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("3 messages are dead-lettered, more than the alert threshold of 2"),
        "{first:#?}"
    );
    // Still above: no more alerts, however long.
    kill(2).await;
    settle(Duration::from_millis(2500)).await;
    assert_eq!(alerts.hits().len(), 1);
    // Back to zero re-arms; the next crossing alerts, but only once the interval has passed.
    let (status, body) = relay
        .call(Method::DELETE, "/v1/dead-letters?destination=hook", None)
        .await;
    assert!(status.is_success(), "{body}");
    wait_until("the dead-letter depth reads 0", || {
        state.depths.dead.load(Ordering::Relaxed) == 0
    })
    .await;
    kill(3).await;
    wait_until("the dead-letter depth reads 3", || {
        state.depths.dead.load(Ordering::Relaxed) == 3
    })
    .await;
    settle(Duration::from_millis(300)).await;
    assert_eq!(alerts.hits().len(), 1, "held: the last went out just now");
    clock.advance(Duration::from_secs(300));
    let second = alerts_in(&alerts.wait_for_hits(2, WAIT).await);
    assert_eq!(
        kinds(&second),
        ["dead_letters.threshold", "dead_letters.threshold"]
    );
    settle(Duration::from_millis(300)).await;
    assert_eq!(alerts.hits().len(), 2);
}

/// Polls `check` every 10 ms until it holds (at most [`WAIT`]).
async fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_alert_queued_while_its_receiver_is_down_is_delivered_after_a_restart() {
    let alerts = Receiver::start().await;
    alerts.otherwise(Reply::Status(503));
    let alerts_url = alerts.url.clone();
    let setup = move |c: &mut ferrule::Config| alert_webhook(c, &alerts_url);
    let mut relay = start_clock(ferrule_policy::clock::system(), setup.clone()).await;
    let state = relay.running.as_ref().unwrap().state.clone();
    let raised = state
        .alerts
        .raise(Alert::new(
            AlertKind::PollingConflict,
            "ops-chat",
            "another client polls this bot",
            SystemTime::now(),
        ))
        .await;
    assert_eq!(raised, Raised::Queued { created: 1 });
    alerts.wait_for_hits(2, WAIT).await;
    drop(state);
    relay.stop().await;
    let refused = alerts.hits().len();
    // The receiver comes back while the relay is down; the restarted relay delivers the alert.
    alerts.otherwise(Reply::Status(200));
    let dir = std::mem::replace(&mut relay.dir, tempfile::tempdir().unwrap());
    let mut config = config_in(&dir);
    setup(&mut config);
    let restarted = start_in(dir, config, ferrule_policy::clock::system()).await;
    let hits = alerts.wait_for_hits(refused + 1, WAIT).await;
    let ids: Vec<String> = hits.iter().map(|h| h.header("webhook-id")).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one message: {ids:?}");
    restarted.wait_for_status(&ids[0], "delivered", WAIT).await;
    let alert = &alerts_in(&hits)[refused];
    assert_eq!(alert["type"], "telegram.polling_conflict");
    assert_eq!(alert["subject"], "ops-chat");
    assert_eq!(alert["text"], "another client polls this bot");
}

#[tokio::test]
async fn a_held_alert_survives_a_restart_and_goes_when_its_interval_ends() {
    let alerts = Receiver::start().await;
    let alerts_url = alerts.url.clone();
    let setup = move |c: &mut ferrule::Config| alert_webhook(c, &alerts_url);
    let clock = ManualClock::with_system_time(SystemTime::now());
    let mut relay = start_clock(clock.shared(), setup.clone()).await;
    let state = relay.running.as_ref().unwrap().state.clone();
    let conflict = |text: &str| {
        Alert::new(
            AlertKind::PollingConflict,
            "ops-bot",
            text,
            clock.system_now(),
        )
    };
    assert_eq!(
        state.alerts.raise(conflict("first")).await,
        Raised::Queued { created: 1 }
    );
    let first = alerts.wait_for_hits(1, WAIT).await;
    // Delivered before the clock moves, or its attempt would time out on the manual clock.
    relay
        .wait_for_status(&first[0].header("webhook-id"), "delivered", WAIT)
        .await;
    // A minute later, within the default 5 min interval: held, then folded.
    clock.advance(Duration::from_secs(60));
    assert_eq!(state.alerts.raise(conflict("second")).await, Raised::Held);
    assert_eq!(state.alerts.raise(conflict("third")).await, Raised::Held);
    drop(state);
    settle(Duration::from_millis(200)).await;
    assert_eq!(alerts.hits().len(), 1, "held back");
    relay.stop().await;

    let dir = std::mem::replace(&mut relay.dir, tempfile::tempdir().unwrap());
    let mut config = config_in(&dir);
    setup(&mut config);
    let restarted = start_in(dir, config, clock.shared()).await;
    clock.advance(Duration::from_secs(239));
    settle(Duration::from_millis(200)).await;
    assert_eq!(alerts.hits().len(), 1, "a second before its interval ends");
    clock.advance(Duration::from_secs(1));
    let hits = alerts.wait_for_hits(2, WAIT).await;
    let held = &alerts_in(&hits)[1];
    assert_eq!(held["type"], "telegram.polling_conflict");
    assert_eq!(held["subject"], "ops-bot");
    let text = held["text"].as_str().unwrap();
    assert!(text.starts_with("second (Held back until "), "{text}");
    restarted
        .wait_for_status(&hits[1].header("webhook-id"), "delivered", WAIT)
        .await;
    settle(Duration::from_millis(200)).await;
    assert_eq!(
        alerts.hits().len(),
        2,
        "the third was folded into the second"
    );
}

#[tokio::test]
async fn a_held_opened_is_cancelled_in_the_store_when_its_circuit_closes_first() {
    let alerts = Receiver::start().await;
    let alerts_url = alerts.url.clone();
    let clock = ManualClock::with_system_time(SystemTime::now());
    let relay = start_clock(clock.shared(), |c| alert_webhook(c, &alerts_url)).await;
    let state = relay.running.as_ref().unwrap().state.clone();
    let now = || clock.system_now();
    let outage = Duration::from_secs(5);
    let opened = Alert::breaker_opened("hook", now());
    assert_eq!(
        state.alerts.raise(opened).await,
        Raised::Queued { created: 1 }
    );
    let closed = Alert::breaker_closed("hook", outage, now());
    assert_eq!(
        state.alerts.raise(closed).await,
        Raised::Queued { created: 1 }
    );
    let hits = alerts.wait_for_hits(2, WAIT).await;
    for hit in &hits {
        relay
            .wait_for_status(&hit.header("webhook-id"), "delivered", WAIT)
            .await;
    }
    // It flaps within the interval: the "opened" is held (queued), then withdrawn.
    clock.advance(Duration::from_secs(30));
    let opened = Alert::breaker_opened("hook", now());
    assert_eq!(state.alerts.raise(opened).await, Raised::Held);
    let closed = Alert::breaker_closed("hook", outage, now());
    assert_eq!(state.alerts.raise(closed).await, Raised::Dropped);
    let (_, page) = relay
        .call(
            Method::GET,
            "/v1/messages?status=cancelled&destination=ops-hook",
            None,
        )
        .await;
    let cancelled = page["messages"].as_array().unwrap();
    assert_eq!(cancelled.len(), 1, "{page:#}");
    let key = cancelled[0]["idempotency_key"].as_str().unwrap();
    assert!(key.starts_with("alert:breaker.opened:hook:"), "{page:#}");
    clock.advance(Duration::from_secs(300));
    settle(Duration::from_millis(200)).await;
    assert_eq!(
        kinds(&alerts_in(&alerts.hits())),
        ["breaker.opened", "breaker.closed"]
    );
}

#[tokio::test]
async fn a_restart_after_a_crash_alerts_about_the_unfinished_deliveries() {
    let hook = Receiver::start().await;
    let alerts = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(&dir);
    config.destinations.push(webhook("hook", &hook.url));
    alert_webhook(&mut config, &alerts.url);
    // A relay claimed a message and died before finishing it.
    {
        let store = ferrule_store::open(
            &config.store_url().unwrap(),
            StoreOptions::with_clock(ferrule_policy::clock::system()),
        )
        .await
        .unwrap();
        store
            .enqueue(NewMessage::new("hook", json!({"n": 1})))
            .await
            .unwrap();
        let claimed = store
            .claim_due("ferrule-crashed", 1, Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
    }
    let _relay = start_in(dir, config, ferrule_policy::clock::system()).await;
    let alert = alerts_in(&alerts.wait_for_hits(1, WAIT).await).remove(0);
    assert_eq!(alert["type"], "startup.recovery", "{alert:#}");
    assert!(
        alert["text"]
            .as_str()
            .unwrap()
            .starts_with("Start-up found 1 deliveries left unfinished"),
        "{alert:#}"
    );
    hook.wait_for_hits(1, WAIT).await;
    settle(Duration::from_millis(200)).await;
    assert_eq!(alerts.hits().len(), 1);
}

#[tokio::test]
async fn a_rejected_bot_token_alerts_once_and_never_to_the_bot_itself() {
    let api = FakeBotApi::start().await;
    api.script("7", [BotReply::Unauthorized]);
    let alerts = Receiver::start().await;
    let alerts_url = alerts.url.clone();
    let base = api.base.clone();
    let relay = start_clock(ferrule_policy::clock::system(), |c| {
        c.destinations.push(telegram("chat", &base));
        alert_webhook(c, &alerts_url);
        // The bot is an alert destination too: an alert about it must not go to it.
        c.alerts.telegram = Some(TelegramAlerts {
            destination: "chat".into(),
            chat_id: ChatRef::Id(OPS_CHAT),
        });
    })
    .await;
    let id = relay
        .submit("chat", json!({"chat_id": 7, "text": "a"}))
        .await;
    relay.wait_for_status(&id, "dead", WAIT).await;
    let alert = alerts_in(&alerts.wait_for_hits(1, WAIT).await).remove(0);
    assert_eq!(alert["type"], "telegram.unauthorized", "{alert:#}");
    assert_eq!(alert["subject"], "chat");
    assert!(
        alert["text"]
            .as_str()
            .unwrap()
            .contains("POST /v1/breakers/chat/reset"),
        "{alert:#}"
    );
    // Later messages wait behind the forced-open circuit: nothing more is sent or alerted.
    relay
        .submit("chat", json!({"chat_id": 8, "text": "b"}))
        .await;
    settle(Duration::from_millis(500)).await;
    assert_eq!(alerts.hits().len(), 1);
    assert_eq!(api.requests().len(), 1, "{:#?}", api.requests());
    let (_, queued) = relay
        .call(Method::GET, "/v1/messages?destination=chat", None)
        .await;
    assert_eq!(
        queued["messages"].as_array().unwrap().len(),
        2,
        "no alert message was queued for the bot: {queued:#}"
    );
}

#[tokio::test]
async fn alerts_beyond_max_per_minute_are_dropped_and_counted() {
    let alerts = Receiver::start().await;
    let alerts_url = alerts.url.clone();
    let relay = start_clock(ferrule_policy::clock::system(), |c| {
        alert_webhook(c, &alerts_url);
        c.alerts.max_per_minute = 3;
    })
    .await;
    let state = relay.running.as_ref().unwrap().state.clone();
    let mut outcomes = Vec::new();
    for n in 0..10 {
        let alert = Alert::new(
            AlertKind::BreakerOpened,
            format!("dest-{n}"),
            "opened",
            SystemTime::now(),
        );
        outcomes.push(state.alerts.raise(alert).await);
    }
    assert_eq!(
        outcomes,
        [
            [Raised::Queued { created: 1 }; 3].as_slice(),
            [Raised::Dropped; 7].as_slice()
        ]
        .concat()
    );
    let hits = alerts.wait_for_hits(3, WAIT).await;
    // The first three passed; they are separate messages, delivered concurrently in any order.
    let mut subjects: Vec<String> = alerts_in(&hits)
        .into_iter()
        .map(|a| a["subject"].as_str().unwrap_or_default().to_owned())
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["dest-0", "dest-1", "dest-2"]);
    let (_, metrics) = relay.call(Method::GET, "/metrics", None).await;
    let metrics = metrics.as_str().unwrap();
    let dropped = metric(
        metrics,
        "ferrule_alerts_suppressed_total{kind=\"breaker.opened\",reason=\"rate_limit\"}",
    );
    assert!(dropped >= 7.0, "{metrics}");
    assert!(
        metric(metrics, "ferrule_alerts_total{kind=\"breaker.opened\"}") >= 3.0,
        "{metrics}"
    );
    settle(Duration::from_millis(200)).await;
    assert_eq!(alerts.hits().len(), 3);
}

const BIN: &str = env!("CARGO_BIN_EXE_ferrule");

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_start_alerts_both_destinations_before_exiting() {
    let alerts = Receiver::start().await;
    let api = FakeBotApi::start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferrule.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "{addr}"
[store]
url = "sqlite://{db}"
[auth]
tokens = ["{TOKEN}"]
[[destinations]]
name = "ops-hook"
type = "webhook"
url = "{url}"
secret = "{SECRET}"
allow_private = true
[[destinations]]
name = "ops-bot"
type = "telegram"
bot_token = "{BOT_TOKEN}"
api_base = "{api}"
[alerts]
webhook = "ops-hook"
telegram = {{ destination = "ops-bot", chat_id = {OPS_CHAT} }}
"#,
            db = dir.path().join("ferrule.db").display(),
            url = alerts.url,
            api = api.base,
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    let hits = alerts.hits();
    assert_eq!(hits.len(), 1, "{stderr}");
    let alert = &alerts_in(&hits)[0];
    assert_eq!(alert["type"], "startup.failure", "{alert:#}");
    assert_eq!(alert["subject"], "serve");
    let text = alert["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "The relay could not start: cannot listen on {addr}"
        )),
        "{text}"
    );
    let chat = chat_alerts(&api);
    assert_eq!(chat.len(), 1, "{stderr}");
    assert!(
        chat[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("ferrule: start-up failed (serve)\nThe relay could not start"),
        "{chat:#?}"
    );
    drop(taken);
}

#[test]
fn alert_settings_come_from_the_environment_and_errors_name_the_field() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .env("FERRULE_ALERTS__WEBHOOK", "nowhere")
        .current_dir(empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`alerts.webhook`: no destination named `nowhere`"),
        "{stderr}"
    );
    let out = Command::new(BIN)
        .args(["config", "check"])
        .env("FERRULE_ALERTS__MAX_PER_MINUTE", "7")
        .current_dir(empty.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("max_per_minute = 7"));
}

#[tokio::test]
async fn raised_alerts_are_in_the_alert_log_after_a_restart_and_listed_by_filter_and_page() {
    let alerts = Receiver::start().await;
    let alerts_url = alerts.url.clone();
    let system = ferrule_policy::clock::system;
    let mut relay = start_clock(system(), |c| alert_webhook(c, &alerts_url)).await;
    let state = relay.running.as_ref().unwrap().state.clone();
    let raised = state
        .alerts
        .raise(Alert::new(
            AlertKind::PollingConflict,
            "ops-chat",
            "another client polls this bot",
            SystemTime::now(),
        ))
        .await;
    assert_eq!(raised, Raised::Queued { created: 1 });
    state
        .alerts
        .raise(Alert::dead_letters(5, 2, SystemTime::now()))
        .await;
    drop(state);
    relay.restart(system()).await;

    let kinds = |alerts: &[Value]| -> Vec<String> {
        alerts
            .iter()
            .map(|a| a["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    let listed = relay.page("/v1/alerts", "alerts").await;
    assert_eq!(
        kinds(&listed),
        ["dead_letters.threshold", "telegram.polling_conflict"]
    );
    let conflict = &listed[1];
    assert_eq!(conflict["subject"], "ops-chat");
    assert_eq!(conflict["severity"], "warning");
    assert_eq!(conflict["message"], "another client polls this bot");
    assert_eq!(conflict["outcome"], "queued");
    let messages = conflict["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{conflict}");
    let message = relay.message(messages[0].as_str().unwrap()).await;
    assert_eq!(
        message["destination"], "ops-hook",
        "the alert's own message"
    );

    // Filters, each alone and together; pages of one.
    let count = async |query: &str| {
        relay
            .page(&format!("/v1/alerts?{query}"), "alerts")
            .await
            .len()
    };
    assert_eq!(count("kind=telegram.polling_conflict").await, 1);
    assert_eq!(count("subject=dead-letters").await, 1);
    assert_eq!(count("kind=breaker.opened&subject=ops-chat").await, 0);
    assert_eq!(
        count("kind=&subject=&since=&until=&cursor=").await,
        2,
        "empty is no filter"
    );
    assert_eq!(
        count("since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z").await,
        0
    );
    let (status, first) = relay.call(Method::GET, "/v1/alerts?limit=1", None).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["alerts"][0]["kind"], "dead_letters.threshold");
    let next = first["next"].as_str().expect("a next page").to_owned();
    let second = relay
        .page(&format!("/v1/alerts?limit=1&cursor={next}"), "alerts")
        .await;
    assert_eq!(kinds(&second), ["telegram.polling_conflict"]);

    // `ferrule alerts` lists them as a table (run without blocking the relay's runtime).
    let out = tokio::process::Command::new(BIN)
        .args([
            "alerts",
            "--since",
            "1h",
            "--kind",
            "telegram.polling_conflict",
        ])
        .args(["--server", &relay.base, "--token", TOKEN])
        .output()
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{note}");
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 2, "a header and one alert: {table}");
    assert!(rows[0].starts_with("AT"), "{table}");
    assert!(
        rows[1].contains("warning") && rows[1].contains("ops-chat") && rows[1].contains("queued"),
        "{table}"
    );
    assert!(note.contains("1 alert shown"), "{note}");

    // Bad input is a 400 naming the parameter.
    for (query, field) in [
        ("kind=nope", "kind"),
        ("cursor=12", "cursor"),
        ("since=yesterday", "since"),
        ("until=2026-13-01", "until"),
        ("limit=0", "limit"),
    ] {
        let (status, body) = relay
            .call(Method::GET, &format!("/v1/alerts?{query}"), None)
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
}
