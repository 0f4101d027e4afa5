//! The pull-request loop in one command: the relay with the shipped route
//! (`deploy/routes/github-pr.toml`) and local stand-ins for the Telegram Bot API, GitHub and an
//! SMTP server, all on 127.0.0.1.
//!
//! ```sh
//! cargo run --example golden_path
//! ```
//!
//! It posts a GitHub review-request mail, presses "Approve" on the card as a Telegram user
//! would, and prints the run's timeline and what each stand-in received. Then it does the same
//! with Telegram down, and the run sends the fallback e-mail instead.

#![allow(clippy::print_stdout, reason = "a demo prints what it does")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrule::testing::fake_bot_api::{BotLimits, FakeBotApi};
use ferrule::{Config, StartOptions};
use ferrule_connectors::testing::fake_github::{FakeGithub, TOKEN as GITHUB_TOKEN};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const API_TOKEN: &str = "demo-token-0123456789abcdef";
const BOT_TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
const WEBHOOK_SECRET: &str = "demo-webhook-secret";
const MAIL_SECRET: &str = "demo-mail-secret-0123";
const CHAT: i64 = 4242;
const USER: i64 = 1001;
const ROUTE: &str = include_str!("../../../deploy/routes/github-pr.toml");
const MAIL: &[u8] = include_bytes!("../tests/it/mail/github-review-requested.eml");

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    println!(
        "== 1. Telegram up: the card, a press on Approve, GitHub, the card edited, a reply ==\n"
    );
    let bot = FakeBotApi::start(BOT_TOKEN, BotLimits::telegram()).await?;
    let github = FakeGithub::start().await;
    let smtp = SmtpSink::start().await?;
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(&dir, bot.base(), &github.base(), smtp.port).await?;
    let id = relay.post_mail().await?;
    let sends = bot.wait_for_sends(1, Duration::from_secs(10)).await;
    let card = &sends[0].params;
    println!(
        "The card in chat {}:\n  {}",
        card["chat_id"],
        card["text"]
            .as_str()
            .unwrap_or_default()
            .replace('\n', "\n  ")
    );
    let approve = card["reply_markup"]["inline_keyboard"][0]
        .as_array()
        .and_then(|row| row.iter().find(|b| b["text"] == "Approve"))
        .and_then(|b| b["callback_data"].as_str())
        .ok_or("the card has no Approve button")?
        .to_owned();
    println!("  buttons carry the wait's token: callback_data {approve:?}\n");
    relay.wait_for(&id, "waiting").await?;
    println!("User {USER} presses Approve.\n");
    relay.press(&approve).await?;
    let detail = relay.wait_for(&id, "completed").await?;
    print_timeline(&detail);
    println!("\nWhat the stand-ins received:");
    for s in bot.sends() {
        println!("  Telegram  {} to {}", s.method, s.chat);
    }
    for e in bot.edits() {
        println!(
            "  Telegram  {} of message {}: {:?}",
            e.method,
            e.message_id,
            e.params["text"].as_str().unwrap_or_default()
        );
    }
    for r in github.requests() {
        println!("  GitHub    {}", r.line());
    }
    for m in smtp.mails() {
        println!("  SMTP      {m}");
    }
    relay.stop().await;

    println!("\n== 2. Telegram down: the card cannot be sent, the fallback e-mail goes out ==\n");
    let down = TcpListener::bind("127.0.0.1:0").await?;
    let nowhere = format!("http://{}", down.local_addr()?);
    drop(down);
    let smtp = SmtpSink::start().await?;
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(&dir, &nowhere, &github.base(), smtp.port).await?;
    let id = relay.post_mail().await?;
    let detail = relay.wait_for(&id, "completed").await?;
    print_timeline(&detail);
    println!("\nWhat the stand-ins received:");
    for m in smtp.mails() {
        println!("  SMTP      {m}");
    }
    relay.stop().await;
    Ok(())
}

/// A relay running in this process on a SQLite file in a temporary directory.
struct Relay {
    running: ferrule::Running,
    base: String,
    http: reqwest::Client,
}

impl Relay {
    async fn start(
        dir: &tempfile::TempDir,
        telegram: &str,
        github: &str,
        smtp_port: u16,
    ) -> Result<Relay, Error> {
        let route = ROUTE
            .replace("-1001234567890", &CHAT.to_string())
            .replace("[1001, 1002]", &format!("[{USER}]"));
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
shutdown_delay = "0s"
[store]
url = "sqlite://{db}"
[auth]
tokens = ["{API_TOKEN}"]
[dispatcher]
poll_interval = "50ms"

[[destinations]]
name = "telegram"
type = "telegram"
bot_token = "{BOT_TOKEN}"
api_base = "{telegram}"
timeout = "2s"
retry = {{ backoff = {{ kind = "fixed", delay = "200ms" }}, jitter = "none", max_attempts = 3 }}
inbound = {{ mode = "webhook", secret_token = "{WEBHOOK_SECRET}" }}

[[destinations]]
name = "github"
type = "github"
token = "{GITHUB_TOKEN}"
api_base = "{github}"
min_write_interval = "10ms"

[[destinations]]
name = "mail"
type = "smtp"
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "ferrule <relay@example.com>"

[[inbound.email]]
name = "github"
secret = "{MAIL_SECRET}"

{route}
"#,
            db = dir.path().join("ferrule.db").display(),
        );
        let config = Config::from_toml_str(&text)?;
        config.validate()?;
        let running = ferrule::start(
            config,
            StartOptions {
                banner: false,
                ..StartOptions::default()
            },
        )
        .await?;
        Ok(Relay {
            base: format!("http://{}", running.addr),
            running,
            http: reqwest::Client::new(),
        })
    }

    /// Posts the sample GitHub mail, as an inbound-mail service would; answers the run's id.
    async fn post_mail(&self) -> Result<String, Error> {
        let answer: Value = self
            .http
            .post(format!("{}/v1/inbound/email/github", self.base))
            .bearer_auth(MAIL_SECRET)
            .header("content-type", "message/rfc822")
            .body(MAIL)
            .send()
            .await?
            .json()
            .await?;
        let id = answer["runs"][0]["run"]
            .as_str()
            .ok_or("the mail started no run")?;
        println!("POST /v1/inbound/email/github (a review request for octo/hello#43): run {id}");
        Ok(id.to_owned())
    }

    /// Presses the button with `data`, as Telegram posts a callback query.
    async fn press(&self, data: &str) -> Result<(), Error> {
        let update = json!({"update_id": 1, "callback_query": {"id": "demo-query",
            "from": {"id": USER, "is_bot": false, "first_name": "Ada", "username": "ada"},
            "data": data,
            "message": {"message_id": 1, "date": 1, "chat": {"id": CHAT, "type": "private"}}}});
        self.http
            .post(format!("{}/v1/telegram/telegram/webhook", self.base))
            .header("X-Telegram-Bot-Api-Secret-Token", WEBHOOK_SECRET)
            .json(&update)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Waits until the run's status is `status`; answers `GET /v1/runs/{id}`.
    async fn wait_for(&self, id: &str, status: &str) -> Result<Value, Error> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let detail: Value = self
                .http
                .get(format!("{}/v1/runs/{id}", self.base))
                .bearer_auth(API_TOKEN)
                .send()
                .await?
                .json()
                .await?;
            if detail["run"]["status"] == status {
                return Ok(detail);
            }
            if Instant::now() > deadline {
                return Err(format!("the run did not become {status}: {detail:#}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.running.shutdown();
        let _ = self.running.wait().await;
    }
}

fn print_timeline(detail: &Value) {
    let run = &detail["run"];
    println!(
        "Run {} of route {}: {} ({}), processing {} ms, waited {} ms",
        run["id"].as_str().unwrap_or_default(),
        run["route"].as_str().unwrap_or_default(),
        run["status"].as_str().unwrap_or_default(),
        run["state"].as_str().unwrap_or_default(),
        run["processing_ms"],
        run["waited_ms"],
    );
    for e in detail["events"].as_array().into_iter().flatten() {
        println!(
            "  {:>2}  {:<15} {:<10} {:<24} {}",
            e["seq"],
            e["kind"].as_str().unwrap_or_default(),
            e["status"].as_str().unwrap_or_default(),
            e["state"].as_str().unwrap_or_default(),
            e["detail"].as_str().unwrap_or_default(),
        );
    }
    println!("  messages:");
    for m in detail["messages"].as_array().into_iter().flatten() {
        println!(
            "    {:<14} {:<15} {:<10} attempts {}  {}",
            m["step"].as_str().unwrap_or_default(),
            m["destination"].as_str().unwrap_or_default(),
            m["status"].as_str().unwrap_or_default(),
            m["attempts"],
            m["last_error"].as_str().unwrap_or_default(),
        );
    }
}

/// The smallest SMTP server that takes mail: it answers every command and keeps, per message,
/// its recipients, subject and `In-Reply-To`.
struct SmtpSink {
    port: u16,
    mails: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    async fn start() -> Result<SmtpSink, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let kept = mails.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let _ = session(stream, kept).await;
                });
            }
        });
        Ok(SmtpSink { port, mails })
    }

    fn mails(&self) -> Vec<String> {
        self.mails.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

async fn session(
    stream: tokio::net::TcpStream,
    kept: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 sink ESMTP\r\n").await?;
    let mut rcpt = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            write.write_all(b"250 sink\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            rcpt.push(line[8..].trim().to_owned());
            write.write_all(b"250 ok\r\n").await?;
        } else if upper.starts_with("DATA") {
            write.write_all(b"354 go on\r\n").await?;
            let (mut subject, mut in_reply_to) = (String::new(), String::new());
            while let Some(data) = lines.next_line().await? {
                if data == "." {
                    break;
                }
                if let Some(v) = data.strip_prefix("Subject: ") {
                    subject = v.to_owned();
                }
                if let Some(v) = data.strip_prefix("In-Reply-To: ") {
                    in_reply_to = v.to_owned();
                }
            }
            if let Ok(mut mails) = kept.lock() {
                mails.push(format!(
                    "to {} subject {subject:?} in-reply-to {in_reply_to}",
                    rcpt.join(", ")
                ));
            }
            rcpt.clear();
            write.write_all(b"250 queued\r\n").await?;
        } else if upper.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            write.write_all(b"250 ok\r\n").await?;
        }
    }
    Ok(())
}
