//! No configured secret is ever shown: not by `config check`, `migrate` or `token list`, not by
//! the API (`/v1/destinations`, `/status`, `/v1/inbound`, a dead message's timeline and
//! `last_error`, the dead-letter list), not in the CLI's output and not in the relay's logs at
//! debug level, also after an e-mail source's secret was used in a URL, and a wrong one.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::binary::{BIN, Server, get};
use crate::support::{PgSchema, SECRET, TOKEN};

const READ_TOKEN: &str = "read-only-SECRETTOKEN-4321";
const PG_PASSWORD: &str = "PGSECRET-pw";
const HOOK_USER: &str = "hookuser-SECRET";
const HOOK_PASSWORD: &str = "hookpw-SECRET";
const PATH_SECRET: &str = "PATHSECRET-T0B0";
const QUERY_SECRET: &str = "QUERYSECRET-tok";
const HEADER_SECRET: &str = "HEADERSECRET-key";
const MOVED_SECRET: &str = "MOVEDSECRET-path";
const BOT_SECRET: &str = "BOTSECRET_abc-DEF123";
const SMTP_PASSWORD: &str = "SMTPSECRET-pw";
const GITHUB_SECRET: &str = "GHSECRET0123456789abcdef";
const MAIL_SECRET: &str = "MAILSECRET-source_0123";

/// Every secret the test config holds (the webhook secret by its key, after `whsec_`).
fn secrets() -> Vec<&'static str> {
    vec![
        TOKEN,
        READ_TOKEN,
        PG_PASSWORD,
        HOOK_USER,
        HOOK_PASSWORD,
        PATH_SECRET,
        QUERY_SECRET,
        HEADER_SECRET,
        MOVED_SECRET,
        BOT_SECRET,
        SMTP_PASSWORD,
        GITHUB_SECRET,
        MAIL_SECRET,
        &SECRET[6..],
    ]
}

fn assert_no_secret(place: &str, text: &str) {
    for secret in secrets() {
        assert!(
            !text.contains(secret),
            "{place} shows the secret {secret:?}:\n{text}"
        );
    }
}

/// A server on 127.0.0.1 that answers every request with `response`; its port.
async fn answering(response: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    port
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn no_configured_secret_shows_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    // The store on PostgreSQL with a password in its URL (the test server trusts local users,
    // so it is not checked, only carried).
    let schema = PgSchema::new();
    let mut store_url = url::Url::parse(&schema.url()).unwrap();
    store_url.set_password(Some(PG_PASSWORD)).unwrap();
    let failing = answering(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndown",
    )
    .await;
    let moved = answering(
        "HTTP/1.1 301 Moved Permanently\r\nlocation: /services/T1/B1/MOVEDSECRET-path/\r\n\
         content-length: 0\r\nconnection: close\r\n\r\n",
    )
    .await;
    let closed = closed_port();
    let config = dir.path().join("ferrule.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
drain_timeout = "2s"
[store]
url = "{store_url}"
[auth]
tokens = ["{TOKEN}"]
read_only_tokens = ["{READ_TOKEN}"]
[dispatcher]
poll_interval = "50ms"
[defaults]
retry = {{ max_attempts = 1 }}
[[destinations]]
name = "hook"
type = "webhook"
url = "http://{HOOK_USER}:{HOOK_PASSWORD}@127.0.0.1:{failing}/services/T0/B0/{PATH_SECRET}?token={QUERY_SECRET}"
secret = "{SECRET}"
allow_private = true
headers = {{ X-Api-Key = "{HEADER_SECRET}" }}
[[destinations]]
name = "moved"
type = "webhook"
url = "http://127.0.0.1:{moved}/services/T1/B1/{MOVED_SECRET}"
unsigned = true
allow_private = true
[[destinations]]
name = "bot"
type = "telegram"
bot_token = "4242:{BOT_SECRET}"
api_base = "http://127.0.0.1:{closed}"
[[destinations]]
name = "mail"
type = "smtp"
host = "127.0.0.1"
port = {closed}
tls = "none"
username = "relay"
password = "{SMTP_PASSWORD}"
from = "relay@example.com"
[[destinations]]
name = "gh"
type = "github"
token = "ghp_{GITHUB_SECRET}"
api_base = "http://127.0.0.1:{failing}"
[[inbound.email]]
name = "github"
secret = "{MAIL_SECRET}"
forward_to = "hook"
"#
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "ferrule {args:?}: {text}");
        text
    };
    let checked = cli(&["config", "check"]);
    assert!(
        checked.contains("/services/***") || checked.contains("/***"),
        "{checked}"
    );
    assert_no_secret("config check", &checked);
    assert_no_secret("migrate", &cli(&["migrate"]));
    assert_no_secret("token list", &cli(&["token", "list"]));

    let server = Server::start_with_env(&config, &[("RUST_LOG", "debug")]);
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for (destination, payload) in [
        ("hook", json!({"n": 1})),
        ("moved", json!({"n": 2})),
        ("bot", json!({"chat_id": 1, "text": "hi"})),
        (
            "mail",
            json!({"to": ["ops@example.org"], "subject": "s", "text": "t"}),
        ),
        (
            "gh",
            json!({"action": "comment", "repo": "octo/app", "number": 1, "body": "hi"}),
        ),
    ] {
        let answer: Value = http
            .post(format!("{base}/v1/messages"))
            .bearer_auth(TOKEN)
            .json(&json!({"destination": destination, "payload": payload}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(answer["id"].as_str().expect("queued").to_owned());
    }
    // A mail posted with the source's secret in the URL, as a mail service is given it, and
    // one with a wrong secret.
    let port = base.rsplit(':').next().unwrap();
    for (secret, status) in [(MAIL_SECRET, 200), ("WRONG-source_secret_0123", 401)] {
        let answer = http
            .post(format!(
                "http://mail:{secret}@127.0.0.1:{port}/v1/inbound/email/github"
            ))
            .header("content-type", "message/rfc822")
            .body("From: ops@example.org\r\nMessage-ID: <m1@example.org>\r\n\r\nhi\r\n")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), status);
    }
    // Every message fails its one attempt and is dead-lettered with the reason.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut shown = Vec::new();
    for id in &ids {
        loop {
            let message = get(&base, &format!("/v1/messages/{id}")).await;
            if message["status"] == "dead" {
                assert!(message["last_error"].is_string(), "{message}");
                shown.push(message.to_string());
                break;
            }
            assert!(Instant::now() < deadline, "not dead: {message}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for path in [
        "/v1/destinations",
        "/status",
        "/v1/dead-letters",
        "/v1/breakers",
        "/v1/inbound",
    ] {
        shown.push(get(&base, path).await.to_string());
    }
    let destinations = get(&base, "/v1/destinations").await.to_string();
    assert!(
        destinations.contains(&format!("http://***@127.0.0.1:{failing}/***?token=***")),
        "{destinations}"
    );
    for text in &shown {
        assert_no_secret("the API", text);
    }
    assert!(
        shown[1].contains("redirect to http://127.0.0.1:"),
        "the redirect is reported: {}",
        shown[1]
    );
    for args in [&["status"][..], &["dlq", "list"]] {
        let out = Command::new(BIN)
            .args(args)
            .env("FERRULE_SERVER", &base)
            .env("FERRULE_TOKEN", TOKEN)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        assert_no_secret("the CLI", &String::from_utf8_lossy(&out.stdout));
    }
    let mut server = server;
    server.signal("-TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    let logs = loop {
        let logs = server.stderr.lock().unwrap().clone();
        if logs.contains("the relay stopped") || Instant::now() > deadline {
            break logs;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(logs.contains("DEBUG"), "logs at debug level: {logs}");
    assert_no_secret("the relay's log", &logs);
    drop(schema);
}
