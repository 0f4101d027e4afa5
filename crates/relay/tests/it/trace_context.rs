//! W3C `traceparent` through the relay: taken from the submit (or made), kept with the
//! message, sent on every attempt with a span of its own, shown by `GET /v1/messages/{id}`
//! and carried by the JSON log lines of the attempt.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::binary::{Server, write_config};
use crate::delivery::fast_retry;
use crate::receiver::{Receiver, Reply};
use crate::support::{TOKEN, TestRelay, start};

const WAIT: Duration = Duration::from_secs(10);
const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Submits `payload` to `hook` with `traceparent` (if any); answers the new id.
async fn submit(relay: &TestRelay, traceparent: Option<&str>, payload: Value) -> String {
    let headers: Vec<(&str, &str)> = traceparent
        .map(|t| ("traceparent", t))
        .into_iter()
        .collect();
    let (status, body) = relay
        .call_with(
            Method::POST,
            "/v1/messages",
            Some(json!({"destination": "hook", "payload": payload})),
            Some(TOKEN),
            &headers,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// The parts of a valid version-00 `traceparent`: trace id and span id.
fn parts(traceparent: &str) -> (String, String) {
    let p: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(p.len(), 4, "{traceparent}");
    assert_eq!(p[0], "00", "{traceparent}");
    assert!(
        p[1].len() == 32
            && p[1]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{traceparent}"
    );
    assert!(
        p[2].len() == 16
            && p[2]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{traceparent}"
    );
    assert_ne!(p[1], "0".repeat(32));
    assert_ne!(p[2], "0".repeat(16));
    (p[1].to_owned(), p[2].to_owned())
}

#[tokio::test]
async fn a_callers_traceparent_reaches_the_receiver_on_every_attempt_and_shows_in_get() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500)]);
    let url = receiver.url.clone();
    let relay = start(|c| c.destinations.push(fast_retry("hook", &url, "20ms", 5))).await;
    let id = submit(&relay, Some(CALLER), json!({"n": 1})).await;
    let hits = receiver.wait_for_hits(2, WAIT).await;
    let message = relay.wait_for_status(&id, "delivered", WAIT).await;
    let mut spans = Vec::new();
    for hit in &hits[..2] {
        let (trace, span) = parts(&hit.header("traceparent"));
        assert_eq!(trace, CALLER_TRACE, "the caller's trace on every attempt");
        assert_ne!(
            span, "00f067aa0ba902b7",
            "each attempt is a span of its own"
        );
        spans.push(span);
    }
    assert_ne!(spans[0], spans[1], "a new span id per attempt");
    assert_eq!(message["trace"]["traceparent"], CALLER, "{message}");
    assert_eq!(message["trace"]["trace_id"], CALLER_TRACE, "{message}");
    let events = message["events"].as_array().unwrap();
    assert!(
        events.iter().all(|e| e["trace_id"] == CALLER_TRACE),
        "{message}"
    );
}

#[tokio::test]
async fn a_missing_traceparent_is_generated_and_an_invalid_one_replaced() {
    let receiver = Receiver::start().await;
    let url = receiver.url.clone();
    let relay = start(|c| c.destinations.push(fast_retry("hook", &url, "20ms", 5))).await;
    let invalid = [
        None,
        Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        Some("not a trace"),
    ];
    let mut traces = Vec::new();
    for (n, traceparent) in invalid.iter().enumerate() {
        let id = submit(&relay, *traceparent, json!({"n": n})).await;
        let message = relay.wait_for_status(&id, "delivered", WAIT).await;
        let stored = message["trace"]["traceparent"].as_str().unwrap().to_owned();
        let (trace, _) = parts(&stored);
        assert_ne!(trace, CALLER_TRACE, "{traceparent:?} is not taken");
        assert_eq!(message["trace"]["trace_id"], trace.as_str());
        traces.push(trace);
    }
    let hits = receiver.wait_for_hits(invalid.len(), WAIT).await;
    for hit in &hits {
        let (trace, _) = parts(&hit.header("traceparent"));
        assert!(
            traces.contains(&trace),
            "{trace} is one of the generated traces"
        );
    }
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), invalid.len(), "a new trace each");
}

#[test]
fn the_json_log_lines_of_an_attempt_carry_its_trace_id() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = rt.block_on(Receiver::start());
    receiver.script([Reply::Status(500)]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &receiver.url, "");
    let server = Server::start_with_env(&config, &[("FERRULE_LOG_FORMAT", "json")]);
    let response = rt.block_on(
        reqwest::Client::new()
            .post(format!("{}/v1/messages", server.base))
            .bearer_auth(TOKEN)
            .header("traceparent", CALLER)
            .json(&json!({"destination": "hook", "payload": {"n": 1}}))
            .send(),
    );
    assert_eq!(response.unwrap().status(), StatusCode::ACCEPTED);
    rt.block_on(receiver.wait_for_hits(2, WAIT));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let logs = server.stderr.lock().unwrap().clone();
        let line = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["message"] == "attempt failed; retry scheduled");
        if let Some(line) = line {
            assert_eq!(line["span"]["trace_id"], CALLER_TRACE, "{line}");
            assert!(
                line.to_string()
                    .contains(&format!("\"trace_id\":\"{CALLER_TRACE}\"")),
                "{line}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no attempt line in {logs}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_run_keeps_the_callers_trace_and_its_steps_send_it() {
    #[derive(serde::Deserialize)]
    struct File {
        routes: Vec<ferrule::config::RouteConfig>,
    }
    let receiver = Receiver::start().await;
    let url = receiver.url.clone();
    let file: File = toml::from_str(
        r#"
[[routes]]
name = "traced"
[routes.trigger]
kind = "api"
[[routes.steps]]
name = "notify"
destination = "hook"
payload = { text = "hello" }
"#,
    )
    .unwrap();
    let relay = start(|c| {
        c.destinations.push(fast_retry("hook", &url, "20ms", 5));
        c.routes = file.routes;
    })
    .await;
    let (status, run) = relay
        .call_with(
            Method::POST,
            "/v1/routes/traced/runs",
            Some(json!({"n": 1})),
            Some(TOKEN),
            &[("traceparent", CALLER), ("idempotency-key", "run-1")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["trace"]["traceparent"], CALLER, "{run}");
    assert_eq!(run["trace"]["trace_id"], CALLER_TRACE, "{run}");
    let hits = receiver.wait_for_hits(1, WAIT).await;
    let (trace, span) = parts(&hits[0].header("traceparent"));
    assert_eq!(
        trace, CALLER_TRACE,
        "the step's message carries the run's trace"
    );
    assert_ne!(span, "00f067aa0ba902b7");
}
