//! Shutting down in process: after a request (what SIGTERM does) the relay keeps serving for
//! `server.shutdown_delay` on its clock, answering 503 `shutting_down` to `/readyz` and
//! submissions while deliveries go on, then stops; a second request skips the delay.

use std::time::{Duration, SystemTime};

use ferrule::state::ShutdownStep;
use ferrule_policy::ManualClock;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::receiver::{Receiver, Reply};
use crate::support::{TOKEN, TestRelay, start_clock, webhook};

const WAIT: Duration = Duration::from_secs(10);

/// Sends `method path` with the test token; the status, `Retry-After` and the JSON body.
async fn call(
    relay: &TestRelay,
    method: Method,
    path: &str,
) -> (StatusCode, Option<String>, Value) {
    let mut request = relay
        .http
        .request(method.clone(), format!("{}{path}", relay.base))
        .bearer_auth(TOKEN);
    if method == Method::POST {
        request = request.json(&json!({"destination": "hook", "payload": {"late": true}}));
    }
    let response = request.send().await.expect("the relay still answers");
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    (
        response.status(),
        retry_after,
        response.json().await.unwrap(),
    )
}

/// `/readyz` and a submission, both refused as `shutting_down` with a `Retry-After`.
async fn assert_refused_as_shutting_down(relay: &TestRelay) {
    for (method, path) in [(Method::GET, "/readyz"), (Method::POST, "/v1/messages")] {
        let (status, retry_after, body) = call(relay, method, path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
        assert_eq!(body["error"]["code"], "shutting_down", "{path}: {body}");
        assert!(retry_after.is_some(), "{path}: no Retry-After");
    }
}

#[tokio::test]
async fn a_shutdown_request_answers_503_for_the_delay_while_deliveries_go_on_then_stops() {
    let receiver = Receiver::start().await;
    let (release, held) = tokio::sync::watch::channel(false);
    receiver.script([Reply::Held(held, 200)]);
    let clock = ManualClock::with_system_time(SystemTime::now());
    let mut relay = start_clock(clock.clone().shared(), |c| {
        c.server.shutdown_delay = Duration::from_secs(5);
        c.destinations.push(webhook("hook", &receiver.url));
    })
    .await;
    let id = relay.submit("hook", json!({"n": 1})).await;
    receiver.wait_for_hits(1, WAIT).await;
    let running = relay.running.take().unwrap();
    assert_eq!(running.shutdown(), ShutdownStep::Requested);

    assert_refused_as_shutting_down(&relay).await;
    let (_, _, status) = call(&relay, Method::GET, "/status").await;
    assert_eq!(status["status"], "draining", "{status:#}");
    // The delivery in flight finishes during the delay.
    release.send(true).unwrap();
    relay.wait_for_status(&id, "delivered", WAIT).await;

    clock.advance(Duration::from_millis(4_999));
    assert_refused_as_shutting_down(&relay).await;
    assert!(!running.state.shutdown.is_cancelled(), "stopped early");
    clock.advance(Duration::from_millis(1));
    tokio::time::timeout(WAIT, running.wait())
        .await
        .expect("the relay stops when the delay has passed")
        .unwrap();
    assert!(
        relay
            .http
            .get(format!("{}/livez", relay.base))
            .send()
            .await
            .is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn a_second_shutdown_request_skips_the_rest_of_the_delay() {
    let clock = ManualClock::with_system_time(SystemTime::now());
    let mut relay = start_clock(clock.clone().shared(), |c| {
        c.server.shutdown_delay = Duration::from_secs(3600);
        c.destinations.push(webhook("hook", "http://127.0.0.1:9/"));
    })
    .await;
    let running = relay.running.take().unwrap();
    assert_eq!(running.shutdown(), ShutdownStep::Requested);
    assert_refused_as_shutting_down(&relay).await;
    assert_eq!(running.shutdown(), ShutdownStep::Hurried);
    tokio::time::timeout(WAIT, running.wait())
        .await
        .expect("the relay stops without waiting out the delay")
        .unwrap();
}

#[tokio::test]
async fn with_no_shutdown_delay_the_relay_stops_at_once() {
    let clock = ManualClock::with_system_time(SystemTime::now());
    let mut relay = start_clock(clock.shared(), |c| c.server.shutdown_delay = Duration::ZERO).await;
    let running = relay.running.take().unwrap();
    running.shutdown();
    tokio::time::timeout(WAIT, running.wait())
        .await
        .expect("a zero delay does not wait for the clock")
        .unwrap();
}
