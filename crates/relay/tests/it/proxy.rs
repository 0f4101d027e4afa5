//! `ANY /v1/proxy/{destination}/{*path}` end to end: the real relay in front of fake OpenAI and
//! Anthropic APIs on 127.0.0.1, with their real error bodies and headers.

use std::time::Duration;

use ferrule::Config;
use ferrule::config::{DestinationConfig, DestinationKind};
use ferrule_policy::classify::Provider;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::fake_ai::{
    ANTHROPIC_MESSAGE, ANTHROPIC_OVERLOADED, FakeAi, OPENAI_COMPLETION, OPENAI_QUOTA,
    OPENAI_SERVER_ERROR, Step, fail, ok, openai_chunks,
};
use crate::receiver::Receiver;
use crate::support::{TOKEN, TestRelay, start, webhook};

const WAIT: Duration = Duration::from_secs(10);

/// An `http` destination `name` in front of `base`, with fast retries (1 ms apart) and the
/// API key read from a file.
fn http_dest(name: &str, base: &str, provider: Provider, key_file: &str) -> DestinationConfig {
    DestinationConfig {
        name: name.into(),
        kind: DestinationKind::Http,
        base_url: Some(base.into()),
        classifier: Some(provider),
        allow_private: true,
        timeout: Some(Duration::from_secs(5)),
        headers: [(
            "authorization".to_owned(),
            format!("Bearer file:{key_file}"),
        )]
        .into(),
        proxy_retry: Some(json!({
            "max_attempts": 3,
            "backoff": {"kind": "fixed", "delay": "1ms"},
            "jitter": "none",
        })),
        ..DestinationConfig::default()
    }
}

/// Writes the upstream API key to a file in the relay's directory-to-be.
fn key_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openai.key");
    std::fs::write(&path, "sk-upstream-secret\n").unwrap();
    let path = path.display().to_string();
    (dir, path)
}

/// Sends `method path` through the relay with the test token and `headers`.
async fn proxied(
    relay: &TestRelay,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = relay
        .http
        .request(method, format!("{}{path}", relay.base))
        .bearer_auth(TOKEN);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("the relay answers")
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn relay_with(setup: impl FnOnce(&mut Config)) -> TestRelay {
    start(setup).await
}

fn chat() -> Value {
    json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hello!"}]})
}

#[tokio::test]
async fn forwards_the_call_with_the_destinations_credentials() {
    let openai = FakeAi::start(ok(OPENAI_COMPLETION)).await;
    let (_keys, key) = key_file();
    let relay = relay_with(|c| {
        c.destinations
            .push(http_dest("openai", &openai.base, Provider::OpenAi, &key));
    })
    .await;
    let response = proxied(
        &relay,
        Method::POST,
        "/v1/proxy/openai/chat/completions?trace=1",
        &[
            ("x-custom", "kept"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "dropped"),
        ],
        Some(chat()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-ferrule-attempts"), "1");
    assert_eq!(header(&response, "x-ferrule-destination"), "openai");
    assert_eq!(header(&response, "x-request-id"), "req_ok");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT");
    let got = openai.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].target, "/v1/chat/completions?trace=1");
    // The relay's token stays with the relay; the upstream gets the destination's key.
    assert_eq!(
        got[0].header("authorization"),
        Some("Bearer sk-upstream-secret")
    );
    assert_eq!(got[0].header("x-custom"), Some("kept"));
    assert_eq!(got[0].header("x-hop"), None);
    assert_eq!(
        serde_json::from_slice::<Value>(&got[0].body).unwrap(),
        chat()
    );
    // The key is never shown.
    let (_, destinations) = relay.call(Method::GET, "/v1/destinations", None).await;
    assert!(
        !destinations.to_string().contains("sk-upstream"),
        "{destinations}"
    );
}

#[tokio::test]
async fn the_callers_traceparent_goes_upstream_and_a_missing_one_is_made() {
    let openai = FakeAi::start(ok(OPENAI_COMPLETION)).await;
    let (_keys, key) = key_file();
    let relay = relay_with(|c| {
        c.destinations
            .push(http_dest("openai", &openai.base, Provider::OpenAi, &key));
    })
    .await;
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for sent in [Some(caller), Some("00-zz-invalid"), None] {
        let headers: Vec<(&str, &str)> = sent.map(|t| ("traceparent", t)).into_iter().collect();
        let response = proxied(
            &relay,
            Method::POST,
            "/v1/proxy/openai/chat/completions",
            &headers,
            Some(chat()),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let got = openai.got();
    assert_eq!(
        got[0].header("traceparent"),
        Some(caller),
        "forwarded as it came"
    );
    for request in &got[1..3] {
        let made = request.header("traceparent").unwrap();
        let parts: Vec<&str> = made.split('-').collect();
        assert_eq!(parts.len(), 4, "{made}");
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len()),
            ("00", 32, 16),
            "{made}"
        );
        assert_ne!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}

#[tokio::test]
async fn refuses_what_it_cannot_forward() {
    let openai = FakeAi::start(ok(OPENAI_COMPLETION)).await;
    let (_keys, key) = key_file();
    let relay = relay_with(|c| {
        c.destinations
            .push(http_dest("openai", &openai.base, Provider::OpenAi, &key));
        c.destinations
            .push(webhook("hook", "http://127.0.0.1:9/hook"));
    })
    .await;
    let status = |r: &reqwest::Response| r.status();
    let r = proxied(&relay, Method::GET, "/v1/proxy/nobody/models", &[], None).await;
    assert_eq!(status(&r), StatusCode::NOT_FOUND);
    let r = proxied(&relay, Method::GET, "/v1/proxy/hook/models", &[], None).await;
    assert_eq!(status(&r), StatusCode::NOT_FOUND);
    // A path climbing out of the base URL, sent as is (an HTTP client would resolve it).
    let raw = raw_request(
        &relay,
        "GET /v1/proxy/openai/a/%2e%2e/%2E%2E/admin HTTP/1.1",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(raw.contains("\"invalid_path\""), "{raw}");
    let r = proxied(
        &relay,
        Method::GET,
        "/v1/proxy/openai/models",
        &[("x-ferrule-deadline", "soon")],
        None,
    )
    .await;
    assert_eq!(status(&r), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "X-Ferrule-Deadline");
    // Without a token, nothing goes out.
    let r = relay
        .http
        .get(format!("{}/v1/proxy/openai/models", relay.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(openai.got().is_empty());
}

#[tokio::test]
async fn a_flaky_upstream_is_retried_and_the_idempotency_key_kept() {
    let anthropic = FakeAi::start(ok(ANTHROPIC_MESSAGE)).await;
    anthropic.script([
        fail(529, &[("request-id", "req_1")], ANTHROPIC_OVERLOADED),
        fail(500, &[], OPENAI_SERVER_ERROR),
    ]);
    let (_keys, key) = key_file();
    let relay = relay_with(|c| {
        c.destinations.push(http_dest(
            "claude",
            &anthropic.base,
            Provider::Anthropic,
            &key,
        ));
    })
    .await;
    let response = proxied(
        &relay,
        Method::POST,
        "/v1/proxy/claude/messages",
        &[("idempotency-key", "order-42-summary")],
        Some(json!({"model": "claude-sonnet-4-5", "max_tokens": 100})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-ferrule-attempts"), "3");
    let got = anthropic.got();
    assert_eq!(got.len(), 3);
    for attempt in &got {
        assert_eq!(attempt.header("idempotency-key"), Some("order-42-summary"));
    }
}

#[tokio::test]
async fn a_post_is_sent_once_unless_retry_post_or_a_key_allows_more() {
    let openai = FakeAi::start(fail(503, &[], OPENAI_SERVER_ERROR)).await;
    let (_keys, key) = key_file();
    let relay = relay_with(|c| {
        c.destinations
            .push(http_dest("openai", &openai.base, Provider::OpenAi, &key));
        let mut retried = http_dest("openai-retried", &openai.base, Provider::OpenAi, &key);
        retried.retry_post = Some(true);
        c.destinations.push(retried);
    })
    .await;
    let r = proxied(
        &relay,
        Method::POST,
        "/v1/proxy/openai/chat/completions",
        &[],
        Some(chat()),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the upstream's answer"
    );
    assert_eq!(header(&r, "x-ferrule-attempts"), "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(openai.got().len(), 1);
    let r = proxied(
        &relay,
        Method::POST,
        "/v1/proxy/openai-retried/chat/completions",
        &[],
        Some(chat()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&r, "x-ferrule-attempts"), "3");
    assert_eq!(openai.got().len(), 4);
}

#[tokio::test]
async fn falls_back_to_the_next_destination() {
    let down = FakeAi::start(fail(500, &[], OPENAI_SERVER_ERROR)).await;
    let up = FakeAi::start(ok(OPENAI_COMPLETION)).await;
    let (_keys, key) = key_file();
    let relay = relay_with(|c| {
        let mut primary = http_dest("openai-eu", &down.base, Provider::OpenAi, &key);
        primary.retry_post = Some(true);
        primary.fallback = vec!["openai-us".into()];
        c.destinations.push(primary);
        c.destinations
            .push(http_dest("openai-us", &up.base, Provider::OpenAi, &key));
    })
    .await;
    let r = proxied(
        &relay,
        Method::POST,
        "/v1/proxy/openai-eu/chat/completions",
        &[],
        Some(chat()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-ferrule-destination"), "openai-us");
    assert_eq!(header(&r, "x-ferrule-attempts"), "4");
    assert_eq!(down.got().len(), 3);
    assert_eq!(up.got().len(), 1);
}

#[tokio::test]
async fn a_quota_error_is_not_retried_and_alerts() {
    let openai = FakeAi::start(fail(429, &[("x-request-id", "req_quota")], OPENAI_QUOTA)).await;
    let alerts = Receiver::start().await;
    let (_keys, key) = key_file();
    let alerts_url = alerts.url.clone();
    let relay = relay_with(|c| {
        let mut dest = http_dest("openai", &openai.base, Provider::OpenAi, &key);
        dest.retry_post = Some(true);
        c.destinations.push(dest);
        let mut hook = webhook("ops-hook", &alerts_url);
        hook.retry = Some(json!({"backoff": {"kind": "fixed", "delay": "50ms"}}));
        c.destinations.push(hook);
        c.alerts.webhook = Some("ops-hook".into());
    })
    .await;
    let r = proxied(
        &relay,
        Method::POST,
        "/v1/proxy/openai/chat/completions",
        &[],
        Some(chat()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "x-ferrule-attempts"), "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_quota");
    assert_eq!(openai.got().len(), 1, "a billing stop is never retried");
    let hits = alerts.wait_for_hits(1, WAIT).await;
    let alert: Value = serde_json::from_slice(&hits[0].body).unwrap();
    assert_eq!(alert["type"], "http.billing_stop", "{alert}");
    assert!(alert.to_string().contains("req_quota"), "{alert}");
}

#[tokio::test]
async fn an_event_stream_broken_before_its_first_byte_is_retried_unseen() {
    let openai = FakeAi::start(Step::Events {
        events: openai_chunks(&["Hel", "lo"]),
        break_after: None,
    })
    .await;
    openai.script([Step::Events {
        events: openai_chunks(&["lost"]),
        break_after: Some(0),
    }]);
    let (_keys, key) = key_file();
    let relay = relay_with(|c| {
        let mut dest = http_dest("openai", &openai.base, Provider::OpenAi, &key);
        dest.retry_post = Some(true);
        c.destinations.push(dest);
    })
    .await;
    let r = proxied(
        &relay,
        Method::POST,
        "/v1/proxy/openai/chat/completions",
        &[],
        Some(chat()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), "text/event-stream");
    assert_eq!(header(&r, "x-ferrule-attempts"), "2");
    let text = r.text().await.unwrap();
    assert!(
        text.contains("\"Hel\"") && text.contains("[DONE]"),
        "{text}"
    );
    assert!(
        !text.contains("lost") && !text.contains("event: error"),
        "{text}"
    );
    assert_eq!(openai.got().len(), 2);
}

#[tokio::test]
async fn an_event_stream_broken_after_its_first_byte_ends_with_an_error_event() {
    let openai = FakeAi::start(Step::Events {
        events: openai_chunks(&["Hel", "lo", "there"]),
        break_after: Some(2),
    })
    .await;
    let (_keys, key) = key_file();
    let relay = relay_with(|c| {
        let mut dest = http_dest("openai", &openai.base, Provider::OpenAi, &key);
        dest.retry_post = Some(true);
        c.destinations.push(dest);
    })
    .await;
    let r = proxied(
        &relay,
        Method::POST,
        "/v1/proxy/openai/chat/completions",
        &[],
        Some(chat()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("\"Hel\"") && text.contains("\"lo\""),
        "{text}"
    );
    assert!(!text.contains("there"), "{text}");
    assert!(
        text.ends_with("\n\n") && text.contains("event: error\ndata: {\"error\":{\"message\":"),
        "{text}"
    );
    assert_eq!(
        openai.got().len(),
        1,
        "output already on its way is never retried"
    );
    let metrics = relay_metrics(&relay).await;
    assert!(
        metrics.contains(
            "ferrule_proxy_calls_total{destination=\"openai\",outcome=\"stream_failed\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_breaker_opened_by_proxied_calls_stops_queued_deliveries() {
    let openai = FakeAi::start(fail(500, &[], OPENAI_SERVER_ERROR)).await;
    let (_keys, key) = key_file();
    let relay = relay_with(|c| {
        let mut dest = http_dest("openai", &openai.base, Provider::OpenAi, &key);
        dest.breaker = Some(json!({"window": {"count": 4}, "min_calls": 4, "failure_rate": 0.5, "open_for": "1h", "max_open_for": "2h"}));
        dest.proxy_retry = Some(json!({"max_attempts": 1}));
        c.destinations.push(dest);
    })
    .await;
    for _ in 0..4 {
        let r = proxied(&relay, Method::GET, "/v1/proxy/openai/models", &[], None).await;
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(relay.breaker("openai").await["breaker"]["state"], "open");
    let r = proxied(&relay, Method::GET, "/v1/proxy/openai/models", &[], None).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "circuit_open");
    // A queued call to the same destination sees the same open circuit.
    let id = relay
        .submit(
            "openai",
            json!({"method": "POST", "path": "/chat/completions", "body": chat()}),
        )
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = relay.message(&id).await;
        let text = message.to_string();
        if text.contains("circuit open") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{message:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(openai.got().len(), 4, "nothing more reached the upstream");
}

#[tokio::test]
async fn the_retry_budget_caps_retries_under_a_total_outage() {
    let openai = FakeAi::start(fail(503, &[], OPENAI_SERVER_ERROR)).await;
    let (_keys, key) = key_file();
    let relay = relay_with(|c| {
        let mut dest = http_dest("openai", &openai.base, Provider::OpenAi, &key);
        dest.breaker = Some(json!({"min_calls": 1000, "window": {"count": 1000}}));
        dest.proxy_retry = Some(json!({
            "max_attempts": 3,
            "backoff": {"kind": "fixed", "delay": "1ms"},
            "jitter": "none",
            "budget": {"retries_per_success": 0.2, "min_per_second": 1, "ttl": "10s"},
        }));
        c.destinations.push(dest);
    })
    .await;
    let calls = 30;
    for _ in 0..calls {
        let r = proxied(&relay, Method::GET, "/v1/proxy/openai/models", &[], None).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    // Without a budget: 90 attempts. With one: every call once, plus the floor (1/s over 10 s).
    let attempts = openai.got().len();
    assert!(
        attempts >= calls && attempts <= calls + 10 + 2,
        "{attempts} attempts"
    );
    let metrics = relay_metrics(&relay).await;
    let refused = metric_value(
        &metrics,
        "ferrule_proxy_retry_budget_refusals_total{destination=\"openai\"}",
    );
    assert!(refused >= 15.0, "{refused} refusals\n{metrics}");
}

#[tokio::test]
async fn the_deadline_bounds_the_whole_call() {
    let slow = FakeAi::start(Step::Slow(
        Duration::from_secs(3),
        Box::new(ok(OPENAI_COMPLETION)),
    ))
    .await;
    let (_keys, key) = key_file();
    let relay = relay_with(|c| {
        c.destinations
            .push(http_dest("openai", &slow.base, Provider::OpenAi, &key));
    })
    .await;
    let r = proxied(
        &relay,
        Method::GET,
        "/v1/proxy/openai/models",
        &[("x-ferrule-deadline", "200ms")],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(header(&r, "x-ferrule-attempts"), "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "deadline_exceeded");
}

#[tokio::test]
async fn tokens_are_counted_from_usage() {
    let openai = FakeAi::start(ok(OPENAI_COMPLETION)).await;
    let (_keys, key) = key_file();
    let relay = relay_with(|c| {
        c.destinations.push(http_dest(
            "openai-tokens",
            &openai.base,
            Provider::OpenAi,
            &key,
        ));
    })
    .await;
    let r = proxied(
        &relay,
        Method::POST,
        "/v1/proxy/openai-tokens/chat/completions",
        &[],
        Some(chat()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    r.bytes().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let metrics = relay_metrics(&relay).await;
        let input = metric_value(
            &metrics,
            "ferrule_ai_tokens_total{destination=\"openai-tokens\",kind=\"input\"}",
        );
        let output = metric_value(
            &metrics,
            "ferrule_ai_tokens_total{destination=\"openai-tokens\",kind=\"output\"}",
        );
        if input == 19.0 && output == 10.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `request_line` with the test token on a fresh connection; the whole answer.
async fn raw_request(relay: &TestRelay, request_line: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = relay.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{request_line}\r\nhost: {addr}\r\nauthorization: Bearer {TOKEN}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

async fn relay_metrics(relay: &TestRelay) -> String {
    let (status, body) = relay.call(Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    body.as_str().unwrap_or_default().to_owned()
}

fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_queued_call_keeps_its_answer_and_replies_to_a_webhook() {
    let openai = FakeAi::start(ok(OPENAI_COMPLETION)).await;
    openai.script([fail(500, &[], OPENAI_SERVER_ERROR)]);
    let replies = Receiver::start().await;
    let (_keys, key) = key_file();
    let replies_url = replies.url.clone();
    let relay = relay_with(|c| {
        let mut dest = http_dest("openai", &openai.base, Provider::OpenAi, &key);
        dest.retry = Some(json!({"backoff": {"kind": "fixed", "delay": "10ms"}, "jitter": "none"}));
        c.destinations.push(dest);
        c.destinations.push(webhook("answers", &replies_url));
    })
    .await;
    // A call naming no webhook, or a bad path, is refused at submit.
    for (payload, field) in [
        (
            json!({"method": "POST", "path": "/chat/completions", "reply_to": "nobody"}),
            "payload.reply_to",
        ),
        (
            json!({"method": "POST", "path": "/chat/completions", "reply_to": "openai"}),
            "payload.reply_to",
        ),
        (
            json!({"method": "POST", "path": "/../admin"}),
            "payload.path",
        ),
        (json!({"path": "/x"}), "payload"),
    ] {
        let (status, body) = relay
            .call(
                Method::POST,
                "/v1/messages",
                Some(json!({"destination": "openai", "payload": payload})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    let id = relay
        .submit(
            "openai",
            json!({"method": "POST", "path": "/chat/completions", "body": chat(), "reply_to": "answers"}),
        )
        .await;
    let message = relay.wait_for_status(&id, "delivered", WAIT).await;
    assert_eq!(message["attempts"], 2, "{message:#}");
    let response = &message["response"];
    assert_eq!(response["status"], 200, "{message:#}");
    assert_eq!(
        response["body"]["id"],
        "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"
    );
    assert_eq!(response["headers"]["x-request-id"], "req_ok");
    // Both attempts carried the message id as their idempotency key.
    let got = openai.got();
    assert_eq!(got.len(), 2);
    for attempt in &got {
        assert_eq!(attempt.header("idempotency-key"), Some(id.as_str()));
        assert_eq!(
            attempt.header("authorization"),
            Some("Bearer sk-upstream-secret")
        );
    }
    // The answer went to the webhook, signed as every webhook is.
    let hits = replies.wait_for_hits(1, WAIT).await;
    let reply: Value = serde_json::from_slice(&hits[0].body).unwrap();
    assert_eq!(reply["type"], "http.response");
    assert_eq!(reply["message_id"], id.as_str());
    assert_eq!(reply["status"], "delivered");
    assert_eq!(reply["response"]["body"]["usage"]["total_tokens"], 29);
    assert!(hits[0].header("webhook-signature").starts_with("v1,"));
}
