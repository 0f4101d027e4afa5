//! `GET /v1/stats` and `ferrule stats`: a real receiver on 127.0.0.1 fails some deliveries,
//! and the statistics read from the rollups show the right counts and reasons.

use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::binary::BIN;
use crate::receiver::{Receiver, Reply};
use crate::support::{TOKEN, TestRelay, start, webhook};

const WAIT: Duration = Duration::from_secs(10);
const READ_TOKEN: &str = "read-only-token-0123456789";

/// Writes what the relay recorded, as its 10-second flush would.
async fn flush(relay: &TestRelay) {
    let state = &relay.running.as_ref().unwrap().state;
    assert!(state.rollups.flush(&state.store).await.unwrap());
}

fn reason<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["top_failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["reason"] == name)
        .unwrap_or_else(|| panic!("no failure `{name}` in {stats:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_deliveries_retries_dead_letters_and_reasons() {
    let receiver = Receiver::start().await;
    let url = receiver.url.clone();
    let relay = start(|c| {
        let mut hook = webhook("hook", &url);
        hook.retry = Some(json!({
            "backoff": {"kind": "fixed", "delay": "20ms"},
            "jitter": "none",
            "max_attempts": 2,
        }));
        c.destinations.push(hook);
        c.destinations.push(webhook("other", &url));
        c.auth.read_only_tokens = vec![ferrule::config::Secret::new(READ_TOKEN).into()];
    })
    .await;
    // One at a time, so each message meets its own scripted answers: a 503 then delivered; a
    // permanent 400; two 500s, attempts exhausted; delivered at once.
    for (script, end) in [
        (vec![Reply::Status(503)], "delivered"),
        (vec![Reply::Status(400)], "dead"),
        (vec![Reply::Status(500), Reply::Status(500)], "dead"),
        (vec![], "delivered"),
    ] {
        receiver.script(script);
        let id = relay.submit("hook", json!({"n": 1})).await;
        relay.wait_for_status(&id, end, WAIT).await;
    }
    flush(&relay).await;

    let (status, stats) = relay
        .call_with(
            Method::GET,
            "/v1/stats?window=1h",
            None,
            Some(READ_TOKEN),
            &[],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a read-only token reads it: {stats}"
    );
    assert_eq!(stats["window"], "1h");
    assert_eq!(
        stats["deliveries"],
        json!({"delivered": 2, "retried": 2, "failed": 1, "dead_lettered": 2, "attempts": 6}),
        "{stats:#}"
    );
    assert_eq!(stats["success_rate"], 0.5);
    assert_eq!(stats["attempts_per_message"], 1.5);
    assert_eq!(stats["delivery_ms"]["count"], 2);
    assert!(stats["delivery_ms"]["p95"].as_u64().is_some(), "{stats:#}");
    assert_eq!(stats["attempt_ms"]["count"], 6);
    assert_eq!(
        stats["top_failures"][0]["reason"], "status 500",
        "{stats:#}"
    );
    assert_eq!(reason(&stats, "status 500")["count"], 2);
    assert_eq!(reason(&stats, "status 500")["dead_lettered"], 1);
    assert_eq!(reason(&stats, "status 400")["count"], 1);
    assert_eq!(reason(&stats, "status 400")["dead_lettered"], 1);
    assert_eq!(reason(&stats, "status 503")["dead_lettered"], 0);
    assert!(reason(&stats, "status 503")["last_at"].is_string());
    let series = stats["series"].as_array().unwrap();
    assert_eq!(series.len(), 1, "a 1h window is one hourly point");
    assert_eq!(series[0]["delivered"], 2);
    assert_eq!(series[0]["dead_lettered"], 2);
    assert_eq!(stats["series_step_seconds"], 3600);

    // The default window (24h) has 24 hourly points; another destination has none of this.
    let (status, day) = relay
        .call(Method::GET, "/v1/stats?destination=other&route=", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{day}");
    assert_eq!(day["window"], "24h");
    assert_eq!(day["series"].as_array().unwrap().len(), 24);
    assert_eq!(day["deliveries"]["attempts"], 0);
    assert_eq!(day["success_rate"], Value::Null);
    assert_eq!(day["top_failures"], json!([]));
    assert_eq!(day["destination"], "other");
    assert_eq!(day["route"], Value::Null);

    for (query, field) in [
        ("window=2w", "window"),
        ("window=0h", "window"),
        ("window=100d", "window"),
        (&*format!("destination={}", "x".repeat(513)), "destination"),
    ] {
        let (status, body) = relay
            .call(Method::GET, &format!("/v1/stats?{query}"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }

    // The CLI prints a table of the same.
    let out = Command::new(BIN)
        .args(["stats", "--window", "1h", "--server", &relay.base])
        .env("FERRULE_TOKEN", TOKEN)
        .env_remove("FERRULE_CONFIG")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(shown.starts_with("last 1h ("), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("success rate") && l.trim_end().ends_with("50.0%")),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("status 500") && l.contains(" 2 ")),
        "{shown}"
    );
    assert!(shown.contains("FAILURE"), "{shown}");
    let out = Command::new(BIN)
        .args(["stats", "--window", "2w", "--server", &relay.base])
        .env("FERRULE_TOKEN", TOKEN)
        .env_remove("FERRULE_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--window `2w`"),
        "{out:?}"
    );
}

#[tokio::test]
async fn stats_answer_409_when_rollups_are_off() {
    let relay = start(|c| c.store.rollup_retention = Duration::ZERO).await;
    let (status, body) = relay.call(Method::GET, "/v1/stats", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "rollups_disabled");
}
