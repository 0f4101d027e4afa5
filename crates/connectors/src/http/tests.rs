//! The HTTP connector: configuration, paths, queued-call payloads, and one call each way
//! against a real HTTP server on 127.0.0.1.

use std::time::Duration;

use ferrule_policy::classify::Provider;
use ferrule_policy::{Outcome, clock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::{Connector, Delivery};

fn connector(base: &str) -> HttpConnector {
    let mut config = HttpConfig::new(base);
    config.allow_private = true;
    config
        .headers
        .insert("authorization".into(), "Bearer sk-upstream".into());
    config.classifier.provider = Provider::OpenAi;
    HttpConnector::new(config, clock::system()).unwrap()
}

#[test]
fn config_is_checked_and_names_the_field() {
    let field = |config: HttpConfig| {
        HttpConnector::new(config, clock::system())
            .unwrap_err()
            .field()
            .map(str::to_owned)
    };
    assert_eq!(
        field(HttpConfig::new("ftp://api.example.com")).as_deref(),
        Some("base_url")
    );
    assert_eq!(
        field(HttpConfig::new("https://api.example.com/v1?key=1")).as_deref(),
        Some("base_url")
    );
    assert_eq!(
        field(HttpConfig::new("https://user:pw@api.example.com")).as_deref(),
        Some("base_url")
    );
    // The SSRF guard, as for webhooks.
    assert_eq!(
        field(HttpConfig::new("http://169.254.169.254/latest")).as_deref(),
        Some("base_url")
    );
    let mut config = HttpConfig::new("https://api.example.com");
    config.headers.insert("host".into(), "evil".into());
    assert_eq!(field(config).as_deref(), Some("headers.host"));
    let mut config = HttpConfig::new("https://api.example.com");
    config.timeout = Duration::ZERO;
    assert_eq!(field(config).as_deref(), Some("timeout"));
    let mut config = HttpConfig::new("https://api.example.com");
    config.classifier.max_retry_after = Duration::ZERO;
    assert_eq!(field(config).as_deref(), Some("classifier.max_retry_after"));
}

#[test]
fn paths_stay_below_the_base_url() {
    let c = connector("https://api.example.com/v1/");
    assert_eq!(
        c.target("/chat/completions?x=1").unwrap().as_str(),
        "https://api.example.com/v1/chat/completions?x=1"
    );
    for bad in [
        "chat",
        "/../admin",
        "/a/%2E%2E/b",
        "/a/.%2e/b",
        "/a\\b",
        "/a#frag",
        "/a\nb",
    ] {
        assert!(c.target(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn queued_call_payloads() {
    let call = validate_call(
        r#"{"method":"POST","path":"/chat/completions","headers":{"x-trace":"1"},"body":{"model":"gpt-4o-mini"}}"#,
    )
    .unwrap();
    assert_eq!(call.method, Method::POST);
    assert_eq!(call.headers["content-type"], "application/json");
    assert_eq!(call.body, br#"{"model":"gpt-4o-mini"}"#);
    let text = validate_call(r#"{"method":"PUT","path":"/x","body":"plain"}"#).unwrap();
    assert_eq!(text.body, b"plain");
    assert!(!text.headers.contains_key("content-type"));
    let field = |payload: &str| validate_call(payload).unwrap_err().field().to_owned();
    assert_eq!(field(r#"{"method":"GET"}"#), "payload");
    assert_eq!(field(r#"{"method":"G T","path":"/"}"#), "method");
    assert_eq!(field(r#"{"method":"GET","path":"x"}"#), "path");
    assert_eq!(
        field(r#"{"method":"GET","path":"/","headers":{"bad name":"v"}}"#),
        "headers.bad name"
    );
    assert_eq!(field(r#"{"method":"GET","path":"/","extra":1}"#), "payload");
}

/// Answers one request with `response` and returns what it received.
async fn serve_once(response: String) -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.read(&mut buf).await.unwrap();
            received.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&received);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if received.len() >= end + 4 + length {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        socket.write_all(response.as_bytes()).await.unwrap();
        socket.shutdown().await.unwrap();
        String::from_utf8_lossy(&received).into_owned()
    });
    (base, task)
}

#[tokio::test]
async fn a_queued_call_keeps_the_answer() {
    let body = r#"{"id":"chatcmpl-1","usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
    let (base, server) = serve_once(format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-request-id: req_1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ))
    .await;
    let c = connector(&base);
    let payload = r#"{"method":"POST","path":"/chat/completions","headers":{"authorization":"Bearer relay-token"},"body":{"model":"m"}}"#;
    let result = c
        .deliver(&Delivery {
            message_id: "01JD5ZQ8X3V7K2M9N4P6R8T0W1",
            destination: "openai",
            payload,
            attempt: 1,
            traceparent: None,
        })
        .await;
    let received = server.await.unwrap();
    assert_eq!(result.outcome, Outcome::Success, "{}", result.detail);
    assert_eq!(result.code, Some(200));
    let output = result.output.unwrap();
    assert_eq!(output["status"], 200);
    assert_eq!(output["body"]["id"], "chatcmpl-1");
    assert_eq!(output["headers"]["x-request-id"], "req_1");
    assert_eq!(output["truncated"], false);
    assert!(
        received.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
        "{received}"
    );
    // The destination's credential replaces the caller's, and the message id is the key.
    assert!(
        received.contains("authorization: Bearer sk-upstream\r\n"),
        "{received}"
    );
    assert!(!received.contains("relay-token"), "{received}");
    assert!(
        received.contains("idempotency-key: 01JD5ZQ8X3V7K2M9N4P6R8T0W1\r\n"),
        "{received}"
    );
}

#[tokio::test]
async fn a_billing_stop_is_permanent_with_its_answer() {
    let body = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
    let response = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let (base, server) = serve_once(response).await;
    let c = connector(&base);
    let result = c
        .deliver(&Delivery {
            message_id: "01JD5ZQ8X3V7K2M9N4P6R8T0W1",
            destination: "openai",
            payload: r#"{"method":"POST","path":"/chat/completions","body":{}}"#,
            attempt: 1,
            traceparent: None,
        })
        .await;
    server.await.unwrap();
    assert_eq!(result.outcome, Outcome::Permanent);
    assert!(
        result.detail.starts_with("HTTP 429 (billing)"),
        "{}",
        result.detail
    );
    assert_eq!(
        result.output.unwrap()["body"]["error"]["code"],
        "insufficient_quota"
    );
}
