//! The webhook connector against real HTTP servers on 127.0.0.1, scripted per request.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ferrule_policy::clock::{self, Clock, ManualClock};
use ferrule_policy::{Outcome, SharedClock};
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::{AnyConnector, Connector, Delivery};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const MESSAGE_ID: &str = "01JD5ZQ8X3V7K2M9N4P6R8T0W1";
/// Odd spacing and non-ASCII text: the bytes must arrive exactly as stored.
const PAYLOAD: &str = r#"{"order": 42,  "note": "naïve ☕"}"#;

fn delivery(attempt: u32) -> Delivery<'static> {
    Delivery {
        message_id: MESSAGE_ID,
        destination: "orders",
        payload: PAYLOAD,
        attempt,
        traceparent: None,
    }
}

/// What the scripted server does with one request.
enum Reply {
    /// Answer with this status, extra headers and body.
    Status(u16, Vec<(&'static str, String)>, String),
    /// Read the request and never answer.
    Hang,
    /// Read the request and close the connection without answering.
    Drop,
}

fn status(code: u16) -> Reply {
    Reply::Status(code, Vec::new(), String::new())
}

/// One request as the server received it.
#[derive(Debug)]
struct Received {
    method: String,
    target: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }
}

/// A scripted HTTP/1.1 server: each connection takes the next [`Reply`] (200 when the script
/// has run out) and is closed after it.
struct Server {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
}

impl Server {
    async fn start(script: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let (log, queue) = (received.clone(), script.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, script) = (log.clone(), queue.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &log, &script).await;
                });
            }
        });
        Server {
            addr,
            received,
            script,
        }
    }

    /// Appends replies to the script.
    fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().extend(replies);
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn received(&self) -> std::sync::MutexGuard<'_, Vec<Received>> {
        self.received.lock().unwrap()
    }
}

async fn serve(
    mut stream: TcpStream,
    log: &Mutex<Vec<Received>>,
    script: &Mutex<VecDeque<Reply>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap().split(' ');
    let method = request_line.next().unwrap().to_owned();
    let target = request_line.next().unwrap().to_owned();
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    let length: usize = headers
        .get("content-length")
        .map_or(0, |v| v.to_str().unwrap().parse().unwrap());
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    log.lock().unwrap().push(Received {
        method,
        target,
        headers,
        body,
    });
    let reply = script.lock().unwrap().pop_front().unwrap_or(status(200));
    match reply {
        Reply::Status(code, extra, body) => {
            let mut response = format!(
                "HTTP/1.1 {code} Scripted\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (name, value) in extra {
                response.push_str(&format!("{name}: {value}\r\n"));
            }
            response.push_str("\r\n");
            response.push_str(&body);
            stream.write_all(response.as_bytes()).await?;
            stream.shutdown().await
        }
        Reply::Hang => {
            std::future::pending::<()>().await;
            Ok(())
        }
        Reply::Drop => Ok(()),
    }
}

/// A connector to `url` that may reach loopback, adjusted by `edit`.
fn connector(
    url: &str,
    clock: SharedClock,
    edit: impl FnOnce(&mut WebhookConfig),
) -> WebhookConnector {
    let mut config = WebhookConfig::new(url);
    config.allow_private = true;
    edit(&mut config);
    WebhookConnector::new(config, clock).unwrap()
}

/// The signature recomputed from the spec, independently of [`sign`].
fn expected_signature(id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = STANDARD
        .decode(SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn receiver_verifies_the_signature_and_id_is_stable_across_attempts() {
    let server = Server::start(vec![status(200), status(200)]).await;
    let clock = ManualClock::new(); // wall clock 2026-01-01T00:00:00Z = 1767225600
    let webhook = connector(&server.url("/hook?tenant=7"), clock.shared(), |c| {
        c.secret = Some(SECRET.parse().unwrap());
        c.headers.insert("X-Tenant".into(), "acme".into());
    });

    let first = webhook.deliver(&delivery(1)).await;
    clock.advance(Duration::from_secs(90));
    let second = webhook.deliver(&delivery(2)).await;

    for result in [&first, &second] {
        assert_eq!(result.outcome, Outcome::Success, "{result:?}");
        assert_eq!(result.code, Some(200));
        assert_eq!(result.detail, "HTTP 200");
    }
    let received = server.received();
    assert_eq!(received.len(), 2);
    let timestamps = ["1767225600", "1767225690"];
    for (request, timestamp) in received.iter().zip(timestamps) {
        assert_eq!(request.method, "POST");
        assert_eq!(request.target, "/hook?tenant=7");
        assert_eq!(request.body, PAYLOAD.as_bytes());
        assert_eq!(request.header("content-type"), "application/json");
        assert_eq!(request.header("x-tenant"), "acme");
        assert_eq!(request.header(WEBHOOK_ID), MESSAGE_ID);
        assert_eq!(request.header(WEBHOOK_TIMESTAMP), timestamp);
        assert_eq!(
            request.header(WEBHOOK_SIGNATURE),
            expected_signature(MESSAGE_ID, timestamp, PAYLOAD.as_bytes())
        );
        let secret: WebhookSecret = SECRET.parse().unwrap();
        let sent_at = SystemTime::UNIX_EPOCH + Duration::from_secs(timestamp.parse().unwrap());
        let five_minutes = Duration::from_secs(300);
        assert_eq!(
            verify(
                &secret,
                &request.headers,
                &request.body,
                sent_at,
                five_minutes
            ),
            Ok(())
        );
    }
    assert_ne!(
        received[0].header(WEBHOOK_SIGNATURE),
        received[1].header(WEBHOOK_SIGNATURE),
        "a new timestamp means a new signature"
    );
}

#[tokio::test]
async fn without_a_secret_requests_are_unsigned() {
    let server = Server::start(vec![]).await;
    let webhook = connector(&server.url("/"), clock::system(), |_| {});
    let result = webhook.deliver(&delivery(1)).await;
    assert_eq!(result.outcome, Outcome::Success);
    let received = server.received();
    assert_eq!(received[0].header(WEBHOOK_ID), MESSAGE_ID);
    assert!(received[0].headers.contains_key(WEBHOOK_TIMESTAMP));
    assert!(!received[0].headers.contains_key(WEBHOOK_SIGNATURE));
}

#[tokio::test]
async fn classifies_every_kind_of_response() {
    let clock = ManualClock::new();
    let in_two_minutes = httpdate::fmt_http_date(clock.system_now() + Duration::from_secs(120));
    let long_body = "x".repeat(1000);
    let server = Server::start(vec![]).await;
    // The redirect points back at the same server, so a followed redirect would show up.
    let followed = server.url("/followed");
    let script = vec![
        (status(200), Outcome::Success, 200, "HTTP 200".to_owned()),
        (status(204), Outcome::Success, 204, "HTTP 204".to_owned()),
        (
            Reply::Status(500, vec![], "database\n  on fire\r\n".into()),
            Outcome::Transient,
            500,
            "HTTP 500: database on fire".to_owned(),
        ),
        (
            Reply::Status(503, vec![("retry-after", "7".into())], String::new()),
            Outcome::RetryAfter(Duration::from_secs(7)),
            503,
            "HTTP 503 (retry after 7s)".to_owned(),
        ),
        (
            Reply::Status(503, vec![("retry-after", in_two_minutes)], "busy".into()),
            Outcome::RetryAfter(Duration::from_secs(120)),
            503,
            "HTTP 503 (retry after 2m): busy".to_owned(),
        ),
        (
            Reply::Status(429, vec![("retry-after", "soon".into())], String::new()),
            Outcome::Transient,
            429,
            "HTTP 429".to_owned(),
        ),
        (status(408), Outcome::Transient, 408, "HTTP 408".to_owned()),
        (status(425), Outcome::Transient, 425, "HTTP 425".to_owned()),
        (status(502), Outcome::Transient, 502, "HTTP 502".to_owned()),
        (
            Reply::Status(410, vec![], "gone".into()),
            Outcome::Permanent,
            410,
            "HTTP 410 (endpoint gone): gone".to_owned(),
        ),
        (
            Reply::Status(302, vec![("location", followed.clone())], String::new()),
            Outcome::Permanent,
            302,
            format!(
                "HTTP 302: redirect to {}/…, not followed",
                followed.trim_end_matches("/followed")
            ),
        ),
        (
            Reply::Status(301, vec![], String::new()),
            Outcome::Permanent,
            301,
            "HTTP 301: redirect to nowhere (no Location header), not followed".to_owned(),
        ),
        (
            Reply::Status(404, vec![("retry-after", "7".into())], String::new()),
            Outcome::Permanent,
            404,
            "HTTP 404".to_owned(),
        ),
        (status(400), Outcome::Permanent, 400, "HTTP 400".to_owned()),
        (
            Reply::Status(500, vec![], long_body),
            Outcome::Transient,
            500,
            format!("HTTP 500: {}…", "x".repeat(200)),
        ),
    ];
    let count = script.len();
    let (replies, expected): (Vec<_>, Vec<_>) = script
        .into_iter()
        .map(|(reply, outcome, code, detail)| (reply, (outcome, code, detail)))
        .unzip();
    server.script(replies);
    let webhook = connector(&server.url("/hook"), clock.shared(), |_| {});
    for (i, (outcome, code, detail)) in expected.into_iter().enumerate() {
        let result = webhook.deliver(&delivery(1)).await;
        assert_eq!(
            (result.outcome, result.code, result.detail.as_str()),
            (outcome, Some(code), detail.as_str()),
            "reply #{i}"
        );
        let output = outcome.is_success().then(|| json!({ "status": code }));
        assert_eq!(result.output, output, "reply #{i}");
    }
    let received = server.received();
    assert_eq!(
        received.len(),
        count,
        "one request per attempt, no redirect followed"
    );
    assert!(received.iter().all(|r| r.target == "/hook"));
}

#[tokio::test]
async fn a_successful_json_answer_of_at_most_16_kib_is_the_output() {
    let json_reply = |code: u16, content_type: &str, body: String| {
        Reply::Status(code, vec![("content-type", content_type.to_owned())], body)
    };
    // `{"pad":"…"}` is 10 bytes and the padding.
    let padded = |bytes: usize| format!(r#"{{"pad":"{}"}}"#, "x".repeat(bytes - 10));
    let at_bound = padded(MAX_OUTPUT_BODY);
    let cases = vec![
        (
            json_reply(200, "application/json", r#"{"ticket": 7}"#.into()),
            Some(json!({"status": 200, "body": {"ticket": 7}})),
        ),
        (
            json_reply(
                201,
                "Application/Problem+JSON; charset=utf-8",
                "[1, 2]".into(),
            ),
            Some(json!({"status": 201, "body": [1, 2]})),
        ),
        (
            json_reply(200, "application/json", at_bound.clone()),
            Some(json!({"status": 200, "body": {"pad": "x".repeat(MAX_OUTPUT_BODY - 10)}})),
        ),
        // One byte more: the body is left out, not cut.
        (
            json_reply(200, "application/json", padded(MAX_OUTPUT_BODY + 1)),
            Some(json!({"status": 200})),
        ),
        (
            json_reply(200, "text/plain", r#"{"looks": "like json"}"#.into()),
            Some(json!({"status": 200})),
        ),
        (
            json_reply(200, "application/json", "ok".into()),
            Some(json!({"status": 200})),
        ),
        (status(204), Some(json!({"status": 204}))),
        // A failure's answer is no output, JSON or not.
        (
            json_reply(500, "application/json", r#"{"error": "on fire"}"#.into()),
            None,
        ),
    ];
    let server = Server::start(vec![]).await;
    let webhook = connector(&server.url("/hook"), clock::system(), |_| {});
    for (i, (reply, output)) in cases.into_iter().enumerate() {
        server.script([reply]);
        let result = webhook.deliver(&delivery(1)).await;
        assert_eq!(result.output, output, "case #{i}: {}", result.detail);
    }
    assert_eq!(at_bound.len(), MAX_OUTPUT_BODY);
}

#[tokio::test]
async fn a_slow_receiver_times_out() {
    let server = Server::start(vec![Reply::Hang]).await;
    let webhook = connector(&server.url("/"), clock::system(), |c| {
        c.timeout = Duration::from_millis(300);
    });
    let result = webhook.deliver(&delivery(1)).await;
    assert_eq!(result.outcome, Outcome::Transient);
    assert_eq!(result.code, None);
    assert_eq!(result.detail, "timed out after 300ms");
    assert!(
        result.duration >= Duration::from_millis(300) && result.duration < Duration::from_secs(5),
        "{:?}",
        result.duration
    );
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn a_dropped_connection_is_transient() {
    let server = Server::start(vec![Reply::Drop]).await;
    let webhook = connector(&server.url("/"), clock::system(), |_| {});
    let result = webhook.deliver(&delivery(1)).await;
    assert_eq!(result.outcome, Outcome::Transient, "{result:?}");
    assert_eq!(result.code, None);
    assert!(
        result.detail.starts_with("request failed: ") && result.detail.contains("closed"),
        "{}",
        result.detail
    );
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let webhook = connector(&format!("http://{addr}/"), clock::system(), |_| {});
    let result = webhook.deliver(&delivery(1)).await;
    assert_eq!(result.outcome, Outcome::Transient);
    assert_eq!(result.code, None);
    assert_eq!(result.detail, "connection refused");
}

#[test]
fn private_ip_literals_are_refused_at_construction() {
    let cases = [
        ("http://127.0.0.1/hook", "127.0.0.1", "loopback"),
        ("http://127.0.0.1:8080/hook", "127.0.0.1", "loopback"),
        ("https://10.1.2.3/hook", "10.1.2.3", "private"),
        ("http://172.20.0.5/", "172.20.0.5", "private"),
        ("http://192.168.0.10/", "192.168.0.10", "private"),
        ("http://[::1]:9000/hook", "::1", "loopback"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254",
            "link-local",
        ),
        ("http://100.64.1.1/", "100.64.1.1", "shared (CGNAT)"),
        ("http://[fd00::5]/", "fd00::5", "unique-local"),
        ("http://[fe80::1]/", "fe80::1", "link-local"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1", "loopback"),
        ("http://0.0.0.0/", "0.0.0.0", "unspecified"),
        // Other spellings of 127.0.0.1, which URL parsing normalises.
        ("http://2130706433/", "127.0.0.1", "loopback"),
        ("http://0x7f.1/", "127.0.0.1", "loopback"),
    ];
    for (url, addr, range) in cases {
        let err = WebhookConnector::new(WebhookConfig::new(url), clock::system()).unwrap_err();
        match &err {
            ConnectorError::PrivateTarget {
                field,
                addr: got,
                range: got_range,
            } => {
                assert_eq!(field, "url", "{url}");
                assert_eq!(got.to_string(), addr, "{url}");
                assert_eq!(*got_range, range, "{url}");
            }
            other => panic!("{url}: {other:?}"),
        }
        let mut allowed = WebhookConfig::new(url);
        allowed.allow_private = true;
        assert!(
            WebhookConnector::new(allowed, clock::system()).is_ok(),
            "{url}"
        );
    }
    for public in [
        "https://93.184.215.14/hook",
        "https://[2606:4700::1]/",
        "https://hooks.example.com/",
    ] {
        assert!(
            WebhookConnector::new(WebhookConfig::new(public), clock::system()).is_ok(),
            "{public}"
        );
    }
}

#[tokio::test]
async fn host_names_are_checked_on_the_addresses_connected_to() {
    let server = Server::start(vec![]).await;
    let url = format!("http://localhost:{}/hook", server.addr.port());
    // A name is not refused at construction: DNS may answer differently at delivery time.
    let guarded = WebhookConnector::new(WebhookConfig::new(&url), clock::system()).unwrap();
    let result = guarded.deliver(&delivery(1)).await;
    assert_eq!(result.outcome, Outcome::Permanent, "{result:?}");
    assert_eq!(result.code, None);
    assert_eq!(
        result.detail,
        "refused: localhost resolves only to non-public addresses (e.g. 127.0.0.1, loopback); \
         set `allow_private = true` to allow it"
    );
    assert_eq!(server.received().len(), 0, "nothing may reach the target");

    let allowed = connector(&url, clock::system(), |_| {});
    assert_eq!(
        allowed.deliver(&delivery(1)).await.outcome,
        Outcome::Success
    );
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn any_connector_delegates_to_the_webhook() {
    let server = Server::start(vec![status(503)]).await;
    let any = AnyConnector::from(connector(&server.url("/"), clock::system(), |_| {}));
    let result = any.deliver(&delivery(3)).await;
    assert_eq!(
        (result.outcome, result.code),
        (Outcome::Transient, Some(503))
    );
    assert_eq!(server.received()[0].header(WEBHOOK_ID), MESSAGE_ID);
}

#[test]
fn config_defaults_and_unknown_fields() {
    let config: WebhookConfig = toml::from_str(r#"url = "https://hooks.example.com/x""#).unwrap();
    assert_eq!(config, WebhookConfig::new("https://hooks.example.com/x"));
    assert_eq!(config.timeout, Duration::from_secs(15));
    assert!(!config.allow_private);
    assert!(config.secret.is_none() && config.headers.is_empty());

    let config: WebhookConfig = toml::from_str(&format!(
        "url = \"https://hooks.example.com/x\"\nsecret = \"{SECRET}\"\ntimeout = \"2s 500ms\"\n\
         allow_private = true\nheaders = {{ authorization = \"Bearer t\" }}"
    ))
    .unwrap();
    assert_eq!(config.timeout, Duration::from_millis(2500));
    assert!(config.allow_private && config.secret.is_some());
    assert_eq!(config.validate().map_err(|e| e.to_string()), Ok(()));

    let unknown = toml::from_str::<WebhookConfig>("url = \"https://a.example/\"\nretries = 3");
    assert!(unknown.unwrap_err().to_string().contains("retries"));
    // The error names the field. (toml quotes the offending line itself, so the relay must
    // not echo toml's snippet for secrets; our own message never repeats the value.)
    let bad = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let in_toml = toml::from_str::<WebhookConfig>(&format!(
        "url = \"https://a.example/\"\nsecret = \"{bad}\""
    ));
    assert!(in_toml.unwrap_err().to_string().contains("secret"));
    let in_json = serde_json::from_str::<WebhookConfig>(&format!(
        r#"{{"url": "https://a.example/", "secret": "{bad}"}}"#
    ))
    .unwrap_err()
    .to_string();
    assert!(
        in_json.contains("whsec_") && !in_json.contains(bad),
        "{in_json}"
    );
}

#[test]
fn validation_names_the_field() {
    let check = |edit: &dyn Fn(&mut WebhookConfig)| {
        let mut config = WebhookConfig::new("https://hooks.example.com/x");
        edit(&mut config);
        let err = config.validate().unwrap_err();
        // The constructor refuses what validate refuses.
        let built = WebhookConnector::new(config, clock::system()).unwrap_err();
        assert_eq!(built.field(), err.field());
        err.field().unwrap_or_default().to_owned()
    };
    assert_eq!(
        check(&|c| c.url = "ftp://files.example.com/x".into()),
        "url"
    );
    assert_eq!(check(&|c| c.url = "not a url".into()), "url");
    assert_eq!(check(&|c| c.url = "https://".into()), "url");
    assert_eq!(check(&|c| c.timeout = Duration::ZERO), "timeout");
    let header = |name: &'static str, value: &'static str| {
        move |c: &mut WebhookConfig| {
            c.headers.insert(name.into(), value.into());
        }
    };
    assert_eq!(
        check(&header("Webhook-Signature", "v1,x")),
        "headers.Webhook-Signature"
    );
    assert_eq!(check(&header("webhook-id", "x")), "headers.webhook-id");
    assert_eq!(
        check(&header("Content-Type", "text/plain")),
        "headers.Content-Type"
    );
    assert_eq!(check(&header("host", "evil.example")), "headers.host");
    assert_eq!(check(&header("bad name", "x")), "headers.bad name");
    assert_eq!(check(&header("x-ok", "line\nbreak")), "headers.x-ok");
    assert_eq!(
        check(&|c| {
            c.headers.insert("X-Key".into(), "a".into());
            c.headers.insert("x-key".into(), "b".into());
        }),
        "headers.x-key"
    );
}

#[test]
fn debug_and_serialize_hide_secrets() {
    let mut config = WebhookConfig::new("https://ops:hunter2@hooks.example.com/x");
    config.secret = Some(SECRET.parse().unwrap());
    config
        .headers
        .insert("authorization".into(), "Bearer topsecret".into());
    let key = SECRET.strip_prefix("whsec_").unwrap();
    let debug = format!("{config:?}");
    let json = serde_json::to_string(&config).unwrap();
    for shown in [&debug, &json] {
        assert!(shown.contains("whsec_***"), "{shown}");
        assert!(shown.contains("authorization"), "{shown}");
        for secret in [key, "hunter2", "topsecret"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
    }
    let webhook = WebhookConnector::new(config, clock::system()).unwrap();
    let debug = format!("{webhook:?}");
    for secret in [key, "topsecret"] {
        assert!(!debug.contains(secret), "{secret} leaked: {debug}");
    }
}
