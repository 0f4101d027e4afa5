//! Delivery end to end: the real relay, real HTTP receivers on 127.0.0.1, signatures checked
//! by the receiver, durable retries, Retry-After, the circuit breaker, dead letters and replay.

use std::time::{Duration, SystemTime};

use ferrule_connectors::webhook::{WebhookSecret, verify};
use ferrule_policy::ManualClock;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::receiver::{Receiver, Reply};
use crate::support::{Backend, SECRET, TOKEN, TestRelay, start, start_clock, start_on, webhook};

const WAIT: Duration = Duration::from_secs(10);

/// A destination retrying every `delay` with no jitter, up to `attempts` attempts.
pub(crate) fn fast_retry(
    name: &str,
    url: &str,
    delay: &str,
    attempts: u32,
) -> ferrule::config::DestinationConfig {
    let mut d = webhook(name, url);
    d.retry = Some(json!({
        "backoff": {"kind": "fixed", "delay": delay},
        "jitter": "none",
        "max_attempts": attempts,
    }));
    d
}

fn secret() -> WebhookSecret {
    SECRET.parse().unwrap()
}

#[tokio::test]
async fn a_message_is_delivered_signed_with_a_stable_webhook_id() {
    delivered_signed_with_a_stable_webhook_id(Backend::Sqlite).await;
}

/// Core case, also run on PostgreSQL.
pub(crate) async fn delivered_signed_with_a_stable_webhook_id(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500)]);
    let url = receiver.url.clone();
    let relay = start_on(backend, |c| {
        c.destinations.push(fast_retry("hook", &url, "20ms", 5))
    })
    .await;
    let id = relay
        .submit("hook", json!({"order": 7, "text": "héllo"}))
        .await;
    let hits = receiver.wait_for_hits(2, WAIT).await;
    let message = relay.wait_for_status(&id, "delivered", WAIT).await;
    for hit in &hits {
        assert_eq!(
            hit.header("webhook-id"),
            id,
            "the message id, stable across retries"
        );
        assert_eq!(hit.header("content-type"), "application/json");
        verify(
            &secret(),
            &hit.headers,
            &hit.body,
            SystemTime::now(),
            Duration::from_secs(60),
        )
        .expect("the signature verifies");
        let body: serde_json::Value = serde_json::from_slice(&hit.body).unwrap();
        assert_eq!(body, json!({"order": 7, "text": "héllo"}));
    }
    assert_eq!(message["attempts"], 2);
    let events = message["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["status"] == "retrying" && e["code"] == "500"),
        "{message:#}"
    );
    assert_eq!(events.last().unwrap()["status"], "delivered");
    // A tampered body does not verify.
    let hit = &hits[1];
    assert!(
        verify(
            &secret(),
            &hit.headers,
            b"{}",
            SystemTime::now(),
            Duration::from_secs(60)
        )
        .is_err()
    );
}

#[tokio::test]
async fn retries_are_spaced_as_configured() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(503), Reply::Status(502), Reply::Reset]);
    let url = receiver.url.clone();
    let relay = start(|c| c.destinations.push(fast_retry("hook", &url, "150ms", 5))).await;
    let id = relay.submit("hook", json!({"n": 1})).await;
    relay.wait_for_status(&id, "delivered", WAIT).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 4, "503, 502, reset, then 200");
    for pair in hits.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(140), "retry after {gap:?}");
    }
}

#[tokio::test]
async fn retries_never_come_before_retry_after() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::RetryAfter(429, "30")]);
    let clock = ManualClock::with_system_time(SystemTime::now());
    let url = receiver.url.clone();
    let relay = start_clock(clock.shared(), |c| {
        c.destinations.push(fast_retry("hook", &url, "1s", 5));
    })
    .await;
    let id = relay.submit("hook", json!({"n": 1})).await;
    receiver.wait_for_hits(1, WAIT).await;
    let message = relay.wait_for_status(&id, "retrying", WAIT).await;
    assert_eq!(
        message["events"].as_array().unwrap().last().unwrap()["outcome"],
        "retry_after"
    );
    // The backoff alone (1 s) would be due long before the 30 s the receiver asked for.
    for _ in 0..29 {
        clock.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.hits().len(), 1, "nothing before Retry-After");
    clock.advance(Duration::from_secs(1));
    receiver.wait_for_hits(2, WAIT).await;
    relay.wait_for_status(&id, "delivered", WAIT).await;
}

/// A relay on a manual clock whose `hook` breaker (4 calls, open for 10 s) has just opened on
/// four failed messages, returned with their ids.
async fn relay_with_an_open_breaker(
    receiver: &Receiver,
    clock: &ManualClock,
) -> (TestRelay, Vec<String>) {
    receiver.otherwise(Reply::Status(500));
    let url = receiver.url.clone();
    let relay = start_clock(clock.clone().shared(), |c| {
        let mut d = fast_retry("hook", &url, "1s", 20);
        // The tests move this clock by seconds while attempts are in flight: a timeout far
        // beyond those moves, and no slow-call threshold, keep a loopback answer slowed by a
        // loaded machine from timing out or counting as slow (which re-opens a half-open
        // circuit).
        d.timeout = Some(Duration::from_secs(600));
        d.breaker = Some(json!({
            "window": {"count": 4}, "min_calls": 4, "failure_rate": 0.5,
            "open_for": "10s", "open_backoff": 1.0, "slow_call_duration": "off",
        }));
        c.destinations.push(d);
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(relay.submit("hook", json!({"n": n})).await);
    }
    receiver.wait_for_hits(4, WAIT).await;
    for id in &ids {
        relay.wait_for_status(id, "retrying", WAIT).await;
    }
    (relay, ids)
}

#[tokio::test]
async fn status_is_degraded_while_a_breaker_is_open_with_the_time_left_in_milliseconds() {
    let receiver = Receiver::start().await;
    let clock = ManualClock::with_system_time(SystemTime::now());
    let (relay, _) = relay_with_an_open_breaker(&receiver, &clock).await;
    let (_, body) = relay.call(Method::GET, "/status", None).await;
    assert_eq!(body["status"], "degraded", "{body:#}");
    let breaker = &body["dependencies"]["destinations"]["hook"]["breaker"];
    assert_eq!(breaker["state"], "open", "{body:#}");
    assert_eq!(breaker["remaining_open_ms"], 10_000, "{body:#}");
    assert_eq!(breaker["open_wait_ms"], 10_000, "{body:#}");
    clock.advance(Duration::from_millis(2_500));
    let (_, body) = relay.call(Method::GET, "/status", None).await;
    let breaker = &body["dependencies"]["destinations"]["hook"]["breaker"];
    assert_eq!(breaker["remaining_open_ms"], 7_500, "{body:#}");
    // Disabled by an operator, the breaker no longer holds messages back; the destination is
    // still unhealthy (four failures in a row), which alone makes the relay degraded.
    relay
        .call(Method::POST, "/v1/breakers/hook/disable", None)
        .await;
    let (_, body) = relay.call(Method::GET, "/status", None).await;
    assert_eq!(body["status"], "degraded", "{body:#}");
}

#[tokio::test]
async fn the_breaker_opens_stops_traffic_half_opens_and_recovers() {
    let receiver = Receiver::start().await;
    let clock = ManualClock::with_system_time(SystemTime::now());
    let (relay, ids) = relay_with_an_open_breaker(&receiver, &clock).await;
    let (_, breakers) = relay.call(Method::GET, "/v1/breakers", None).await;
    assert_eq!(
        breakers["breakers"][0]["breaker"]["state"], "open",
        "{breakers}"
    );
    // The retries fall due, but the open circuit defers them without spending attempts.
    clock.advance(Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.hits().len(), 4, "no traffic while open");
    for id in &ids {
        let m = relay.message(id).await;
        assert_eq!(m["attempts"], 1, "{m:#}");
        let deferred = m["events"].as_array().unwrap().iter().any(|e| {
            e["detail"]
                .as_str()
                .unwrap_or("")
                .starts_with("circuit open")
        });
        assert!(deferred, "{m:#}");
    }
    // The receiver recovers; after the open wait one probe goes through and closes it.
    receiver.otherwise(Reply::Status(200));
    clock.advance(Duration::from_secs(8));
    receiver.wait_for_hits(5, WAIT).await;
    // Probes that found every slot taken come back after `defer_for`.
    for _ in 0..20 {
        clock.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &ids {
        relay.wait_for_status(id, "delivered", WAIT).await;
    }
    assert_eq!(
        receiver.hits().len(),
        8,
        "each message once more, no extra traffic"
    );
    let (_, breakers) = relay.call(Method::GET, "/v1/breakers", None).await;
    assert_eq!(
        breakers["breakers"][0]["breaker"]["state"], "closed",
        "{breakers}"
    );
    let (_, body) = relay.call(Method::GET, "/status", None).await;
    assert_eq!(body["status"], "ok", "recovered: {body:#}");
}

#[tokio::test]
async fn a_4xx_is_dead_lettered_then_replayed_and_delivered() {
    dead_lettered_then_replayed_and_delivered(Backend::Sqlite).await;
}

/// Core case, also run on PostgreSQL.
pub(crate) async fn dead_lettered_then_replayed_and_delivered(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(400)]);
    let url = receiver.url.clone();
    let relay = start_on(backend, |c| {
        c.destinations.push(fast_retry("hook", &url, "20ms", 5))
    })
    .await;
    let id = relay.submit("hook", json!({"x": 1})).await;
    let dead = relay.wait_for_status(&id, "dead", WAIT).await;
    assert_eq!(dead["attempts"], 1, "a permanent error is not retried");
    assert!(
        dead["last_error"].as_str().unwrap().contains("400"),
        "{dead:#}"
    );
    let (_, page) = relay.call(Method::GET, "/v1/dead-letters", None).await;
    assert_eq!(page["messages"][0]["id"], id);
    let (status, report) = relay
        .call(
            Method::POST,
            "/v1/dead-letters/replay",
            Some(json!({"dry_run": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["count"], 1);
    assert_eq!(
        relay.message(&id).await["status"],
        "dead",
        "a dry run changes nothing"
    );
    let (_, report) = relay
        .call(
            Method::POST,
            "/v1/dead-letters/replay",
            Some(json!({"destination": "hook"})),
        )
        .await;
    assert_eq!(report["ids"], json!([id]));
    relay.wait_for_status(&id, "delivered", WAIT).await;
    assert_eq!(receiver.hits().len(), 2);
}

#[tokio::test]
async fn exhausted_attempts_dead_letter_and_purge_removes_them() {
    let receiver = Receiver::start().await;
    receiver.otherwise(Reply::Status(503));
    let url = receiver.url.clone();
    let relay = start(|c| c.destinations.push(fast_retry("hook", &url, "10ms", 3))).await;
    let id = relay.submit("hook", json!({"n": 1})).await;
    let dead = relay.wait_for_status(&id, "dead", WAIT).await;
    assert_eq!(dead["attempts"], 3);
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .starts_with("max_attempts"),
        "{dead:#}"
    );
    let (status, body) = relay
        .call(Method::DELETE, "/v1/dead-letters?destination=hook", None)
        .await;
    assert_eq!((status, body["purged"].clone()), (StatusCode::OK, json!(1)));
    let (status, _) = relay
        .call(Method::GET, &format!("/v1/messages/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn purging_dead_letters_needs_a_filter_or_all_and_a_dry_run_deletes_nothing() {
    let receiver = Receiver::start().await;
    receiver.otherwise(Reply::Status(400));
    let url = receiver.url.clone();
    let relay = start(|c| c.destinations.push(fast_retry("hook", &url, "10ms", 3))).await;
    let mut ids = Vec::new();
    for n in 0..2 {
        let id = relay.submit("hook", json!({"n": n})).await;
        relay.wait_for_status(&id, "dead", WAIT).await;
        ids.push(id);
    }
    let still_dead = || async {
        for id in &ids {
            assert_eq!(relay.message(id).await["status"], "dead");
        }
    };
    let (status, body) = relay.call(Method::DELETE, "/v1/dead-letters", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "filter_required", "{body}");
    let (status, body) = relay
        .call(Method::DELETE, "/v1/dead-letters?all=false", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("filter_required"))
    );
    let (status, body) = relay
        .call(
            Method::DELETE,
            "/v1/dead-letters?all=true&destination=hook",
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_query"))
    );
    still_dead().await;
    for query in ["all=true&dry_run=true", "destination=hook&dry_run=true"] {
        let (status, body) = relay
            .call(Method::DELETE, &format!("/v1/dead-letters?{query}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert_eq!(
            body,
            json!({"purged": 0, "matched": 2, "dry_run": true}),
            "{query}"
        );
    }
    let (_, body) = relay
        .call(
            Method::DELETE,
            "/v1/dead-letters?error_contains=nothing-like-it&dry_run=true",
            None,
        )
        .await;
    assert_eq!(body["matched"], 0, "{body}");
    still_dead().await;
    let (status, body) = relay
        .call(Method::DELETE, "/v1/dead-letters?all=true", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"purged": 2, "dry_run": false}));
    let (_, page) = relay.call(Method::GET, "/v1/dead-letters", None).await;
    assert_eq!(page["messages"], json!([]));
}

#[tokio::test]
async fn a_slow_receiver_times_out_and_is_retried() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Slow(Duration::from_secs(3), 200)]);
    let url = receiver.url.clone();
    let relay = start(|c| {
        let mut d = fast_retry("hook", &url, "20ms", 5);
        d.timeout = Some(Duration::from_millis(300));
        c.destinations.push(d);
    })
    .await;
    let id = relay.submit("hook", json!({"n": 1})).await;
    let message = relay.wait_for_status(&id, "delivered", WAIT).await;
    let first = &message["events"].as_array().unwrap()[2];
    assert_eq!(first["status"], "retrying", "{message:#}");
    assert!(
        first["detail"].as_str().unwrap().contains("timed out"),
        "{message:#}"
    );
}

#[tokio::test]
async fn an_idempotent_resubmit_is_delivered_once() {
    idempotent_resubmit_is_delivered_once(Backend::Sqlite).await;
}

/// Core case, also run on PostgreSQL.
pub(crate) async fn idempotent_resubmit_is_delivered_once(backend: Backend) {
    let receiver = Receiver::start().await;
    let url = receiver.url.clone();
    let relay: TestRelay = start_on(backend, |c| c.destinations.push(webhook("hook", &url))).await;
    let body = json!({"destination": "hook", "payload": {"n": 1}});
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (_, answer) = relay
            .call_with(
                Method::POST,
                "/v1/messages",
                Some(body.clone()),
                Some(TOKEN),
                &[("idempotency-key", "k1")],
            )
            .await;
        ids.push(answer["id"].clone());
    }
    assert!(ids.iter().all(|id| *id == ids[0]));
    relay
        .wait_for_status(ids[0].as_str().unwrap(), "delivered", WAIT)
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(receiver.hits().len(), 1);
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config_in(&dir);
    let mut d = webhook("hook", "http://127.0.0.1:9/hook");
    d.allow_private = false;
    config.destinations.push(d);
    let err = config.validate().unwrap_err();
    assert_eq!(err.field(), "destinations[0].url", "{err}");
}

#[tokio::test]
async fn status_and_metrics_report_counters_breakers_and_depths() {
    // Metrics are process-wide and other tests run relays in this process at the same time:
    // a name of its own keeps their series apart from this one's.
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500)]);
    let url = receiver.url.clone();
    let relay = start(|c| {
        c.destinations
            .push(fast_retry("status-hook", &url, "20ms", 5))
    })
    .await;
    let id = relay.submit("status-hook", json!({"n": 1})).await;
    relay.wait_for_status(&id, "delivered", WAIT).await;
    let (status, body) = relay.call(Method::GET, "/status", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["status"], "ok",
        "a degraded destination alone: {body:#}"
    );
    assert_eq!(body["counters"]["submitted"], 1, "{body:#}");
    assert_eq!(body["counters"]["delivered"], 1, "{body:#}");
    assert_eq!(body["counters"]["retried"], 1, "{body:#}");
    assert_eq!(body["queue_depth"], 0, "{body:#}");
    assert_eq!(body["dead_letter_depth"], 0, "{body:#}");
    let hook = &body["dependencies"]["destinations"]["status-hook"];
    assert_eq!(hook["breaker"]["state"], "closed", "{body:#}");
    assert_eq!(
        hook["health"]["status"], "degraded",
        "one failure, one success: {body:#}"
    );
    assert_eq!(hook["health"]["failure_threshold"], 3);
    assert_eq!(body["dependencies"]["store"]["status"], "healthy");
    assert!(
        body["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("500"),
        "{body:#}"
    );
    assert!(!body.to_string().contains(TOKEN) && !body.to_string().contains(&SECRET[6..]));
    let response = relay
        .http
        .get(format!("{}/metrics", relay.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    for needle in [
        "ferrule_deliveries_total{destination=\"status-hook\",outcome=\"success\"}",
        "ferrule_attempt_duration_seconds_bucket{destination=\"status-hook\"",
        "ferrule_retries_total{destination=\"status-hook\"}",
        "ferrule_queue_depth{destination=\"status-hook\"}",
        "ferrule_dead_letter_depth{destination=\"status-hook\"}",
        "ferrule_breaker_state{destination=\"status-hook\",state=\"closed\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert!(!text.contains(&id), "no message id as a label");
}

#[tokio::test]
async fn operators_force_open_and_reset_a_breaker() {
    let receiver = Receiver::start().await;
    let url = receiver.url.clone();
    let relay = start(|c| c.destinations.push(webhook("hook", &url))).await;
    let (status, body) = relay
        .call(Method::POST, "/v1/breakers/hook/force-open", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["breaker"]["state"], "forced_open");
    let id = relay.submit("hook", json!({"n": 1})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        receiver.hits().is_empty(),
        "a forced-open circuit sends nothing"
    );
    let m = relay.message(&id).await;
    assert_eq!(m["attempts"], 0, "{m:#}");
    let (_, body) = relay
        .call(Method::POST, "/v1/breakers/hook/disable", None)
        .await;
    assert_eq!(body["breaker"]["state"], "disabled");
    let (_, body) = relay
        .call(Method::POST, "/v1/breakers/hook/reset", None)
        .await;
    assert_eq!(body["breaker"]["state"], "closed");
}

#[tokio::test]
async fn readyz_is_503_while_draining() {
    // A valid submission: a client's mistakes are answered before the relay's state.
    let relay = start(|c| c.destinations.push(webhook("hook", "http://127.0.0.1:9/"))).await;
    let state = relay.running.as_ref().unwrap().state.clone();
    // A second listener on the same router, not shut down with the first one.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum_serve(listener, state.clone()));
    let url = format!("http://{addr}/readyz");
    let ready = relay
        .http
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    state.request_shutdown();
    let draining = relay
        .http
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(draining.status(), StatusCode::SERVICE_UNAVAILABLE);
    let submit = relay
        .http
        .post(format!("http://{addr}/v1/messages"))
        .bearer_auth(TOKEN)
        .json(&json!({"destination": "hook", "payload": {"n": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        submit.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "no new work while draining"
    );
}

async fn axum_serve(listener: tokio::net::TcpListener, state: ferrule::state::AppState) {
    let _ = axum::serve(listener, ferrule::api::router(state)).await;
}

#[tokio::test]
async fn a_delivering_message_cancelled_stays_cancelled_whatever_its_attempt_answers() {
    let receiver = Receiver::start().await;
    let (open, gate) = tokio::sync::watch::channel(false);
    receiver.script([Reply::Held(gate, 200)]);
    let url = receiver.url.clone();
    let relay = start(|c| {
        c.destinations.push(webhook("hook", &url));
        // Heartbeats every 100 ms: the abandoned attempt is noticed quickly.
        c.dispatcher.lease = Duration::from_millis(300);
    })
    .await;
    let id = relay.submit("hook", json!({"n": 1})).await;
    receiver.wait_for_hits(1, WAIT).await;
    let (status, answer) = relay
        .call(Method::DELETE, &format!("/v1/messages/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["previous_status"], "delivering", "{answer}");
    assert!(
        answer["note"].as_str().unwrap().contains("may still reach"),
        "{answer}"
    );
    // The receiver answers 200 after the cancel: nothing is recorded of it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    open.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let message = relay.message(&id).await;
    assert_eq!(message["status"], "cancelled", "{message:#}");
    let statuses: Vec<&str> = message["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["queued", "delivering", "cancelled"],
        "{message:#}"
    );
    assert_eq!(receiver.hits().len(), 1);
}

#[tokio::test]
async fn a_forced_open_breaker_survives_a_restart_with_who_set_it_and_when() {
    let receiver = Receiver::start().await;
    let url = receiver.url.clone();
    let mut relay = start(|c| {
        let mut d = webhook("hook", &url);
        // Forced open, a message is looked at again every `open_for`.
        d.breaker = Some(json!({"open_for": "100ms"}));
        c.destinations.push(d);
    })
    .await;
    let (status, body) = relay
        .call(
            Method::POST,
            "/v1/breakers/hook/force-open?reason=maintenance%20window",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let set = body["override"].clone();
    assert_eq!(set["state"], "forced_open", "{body}");
    assert_eq!(set["reason"], "maintenance window", "{body}");
    assert!(
        set["set_by"].as_str().unwrap().starts_with("api:"),
        "{body}"
    );
    assert!(!set["set_by"].as_str().unwrap().contains(TOKEN));
    let at =
        ferrule::time::parse_rfc3339(set["set_at"].as_str().unwrap()).expect("set_at is a time");
    assert!(
        SystemTime::now().duration_since(at).unwrap() < WAIT,
        "{body}"
    );
    relay.restart(ferrule_policy::clock::system()).await;
    let breaker = relay.breaker("hook").await;
    assert_eq!(breaker["breaker"]["state"], "forced_open", "{breaker}");
    assert_eq!(
        breaker["override"], set,
        "who, when and why survive the restart"
    );
    let id = relay.submit("hook", json!({"n": 1})).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while relay.message(&id).await["events"].as_array().unwrap().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(receiver.hits().is_empty(), "nothing sent while forced open");
    // A reset deletes the override: the next start leaves the breaker closed.
    let (status, body) = relay
        .call(Method::POST, "/v1/breakers/hook/reset", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["override"], serde_json::Value::Null, "{body}");
    relay.restart(ferrule_policy::clock::system()).await;
    let breaker = relay.breaker("hook").await;
    assert_eq!(breaker["breaker"]["state"], "closed", "{breaker}");
    assert_eq!(breaker["override"], serde_json::Value::Null, "{breaker}");
    relay
        .wait_for_status(&id, "delivered", Duration::from_secs(40))
        .await;
}

#[tokio::test]
async fn a_message_deferred_a_thousand_times_keeps_a_handful_of_events() {
    let receiver = Receiver::start().await;
    let url = receiver.url.clone();
    let relay = start(|c| {
        let mut d = webhook("hook", &url);
        // Forced open, a message is deferred for `open_for` each time it is claimed.
        d.breaker = Some(json!({"open_for": "1ms"}));
        c.destinations.push(d);
    })
    .await;
    let (status, _) = relay
        .call(Method::POST, "/v1/breakers/hook/force-open", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = relay.submit("hook", json!({"n": 1})).await;
    let state = relay.running.as_ref().unwrap().state.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while state
        .counters
        .deferred
        .load(std::sync::atomic::Ordering::Relaxed)
        < 1000
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not deferred 1000 times in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, _) = relay
        .call(Method::POST, "/v1/breakers/hook/reset", None)
        .await;
    let message = relay.wait_for_status(&id, "delivered", WAIT).await;
    let events = message["events"].as_array().unwrap();
    assert!(events.len() <= 5, "{message:#}");
    let folded = events
        .iter()
        .find(|e| e["detail"] == "circuit forced_open: not attempted")
        .unwrap_or_else(|| panic!("{message:#}"));
    assert!(folded["repeats"].as_u64().unwrap() >= 1000, "{folded}");
    let first = ferrule::time::parse_rfc3339(folded["at"].as_str().unwrap()).unwrap();
    let last = ferrule::time::parse_rfc3339(folded["last_at"].as_str().unwrap()).unwrap();
    assert!(last > first, "{folded}");
    assert!(
        events
            .iter()
            .filter(|e| e != &folded)
            .all(|e| e["repeats"] == 1 && e["last_at"].is_null()),
        "{message:#}"
    );
    assert_eq!(receiver.hits().len(), 1);
}
