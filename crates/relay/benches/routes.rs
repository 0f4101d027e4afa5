//! Routes' own cost, against the shipped route (`deploy/routes/github-pr.toml`) with stand-ins
//! that answer at once (the testing fake Bot API, the fake GitHub) on 127.0.0.1:
//!
//! 1. **Mail to card**: from posting a GitHub review-request mail to the relay (in this
//!    process, SQLite) to the card arriving at the fake Bot API, one mail at a time: the run
//!    started, its first step decided and stored, the card claimed and sent. p50 and p95.
//! 2. **Waiting runs**: the real `ferrule` binary's resident memory before and after 1,000 runs
//!    reach their wait (each card sent, each run `waiting`).
//!
//! ```sh
//! cargo bench -p ferrule --bench routes
//! ```

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrule::testing::fake_bot_api::{BotLimits, FakeBotApi, Window};
use ferrule::{Config, StartOptions};
use ferrule_connectors::testing::fake_github::{FakeGithub, TOKEN as GITHUB_TOKEN};

const API_TOKEN: &str = "bench-token-0123456789abcdef";
const BOT_TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
const MAIL_SECRET: &str = "bench-mail-secret-0123";
const ROUTE: &str = include_str!("../../../deploy/routes/github-pr.toml");
const MAIL: &str = include_str!("../tests/it/mail/github-review-requested.eml");
const SAMPLES: usize = 300;
const WARMUP: usize = 30;
const WAITING: usize = 1_000;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The relay's configuration: the route's destinations on the stand-ins, Telegram's limits out
/// of the way (the fake Bot API's too), SQLite in `dir`.
fn config(dir: &std::path::Path, bot: &str, github: &str) -> String {
    let route = ROUTE.replace("-1001234567890", "4242");
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_delay = "0s"
max_queue_depth = 1000000
[store]
url = "sqlite://{db}"
[auth]
tokens = ["{API_TOKEN}"]

[[destinations]]
name = "telegram"
type = "telegram"
bot_token = "{BOT_TOKEN}"
api_base = "{bot}"
limits = {{ per_chat = {{ limit = 1000000, per = "1s" }}, per_group = {{ limit = 1000000, per = "1s" }}, per_bot = {{ limit = 1000000, per = "1s" }} }}
inbound = {{ mode = "webhook", secret_token = "bench-webhook-secret" }}

[[destinations]]
name = "github"
type = "github"
token = "{GITHUB_TOKEN}"
api_base = "{github}"

[[destinations]]
name = "mail"
type = "smtp"
host = "127.0.0.1"
port = 9
from = "ferrule <relay@example.com>"

[[inbound.email]]
name = "github"
secret = "{MAIL_SECRET}"

{route}
"#,
        db = dir.join("ferrule.db").display()
    )
}

/// The sample mail as a new pull request `n` (its own Message-ID, so its own run).
fn mail(n: usize) -> String {
    MAIL.replace("pull/43", &format!("pull/{n}"))
        .replace("#43", &format!("#{n}"))
}

async fn post(http: &reqwest::Client, base: &str, n: usize) -> Result<(), Error> {
    http.post(format!("{base}/v1/inbound/email/github"))
        .bearer_auth(MAIL_SECRET)
        .header("content-type", "message/rfc822")
        .body(mail(n))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

fn unlimited() -> BotLimits {
    let w = Window::new(1_000_000, Duration::from_secs(1));
    BotLimits {
        per_chat: w,
        per_group: w,
        per_bot: w,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

async fn mail_to_card() -> Result<(), Error> {
    let bot = FakeBotApi::start(BOT_TOKEN, unlimited()).await?;
    let github = FakeGithub::start().await;
    let dir = tempfile::tempdir()?;
    let config = Config::from_toml_str(&config(dir.path(), bot.base(), &github.base()))?;
    config.validate()?;
    let running = ferrule::start(
        config,
        StartOptions {
            banner: false,
            ..StartOptions::default()
        },
    )
    .await?;
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::new();
    let mut samples = Vec::with_capacity(SAMPLES);
    for n in 0..WARMUP + SAMPLES {
        let start = Instant::now();
        post(&http, &base, 1000 + n).await?;
        let sends = bot.wait_for_sends(n + 1, Duration::from_secs(10)).await;
        let Some(arrived) = sends.get(n).map(|s| s.at) else {
            let runs = http
                .get(format!("{base}/v1/runs?limit=1"))
                .bearer_auth(API_TOKEN)
                .send()
                .await?
                .text()
                .await?;
            return Err(format!("no card for mail {n}: {runs}").into());
        };
        if n >= WARMUP {
            samples.push(arrived.saturating_duration_since(start));
        }
    }
    samples.sort();
    println!(
        "mail -> card (SQLite, in process, {SAMPLES} mails one at a time): p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms",
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.95).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    running.shutdown();
    let _ = running.wait().await;
    Ok(())
}

/// The resident set of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("no VmRSS value")?
        .parse()?)
}

async fn waiting_runs() -> Result<(), Error> {
    let bot = FakeBotApi::start(BOT_TOKEN, unlimited()).await?;
    let github = FakeGithub::start().await;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ferrule.toml");
    std::fs::write(&path, config(dir.path(), bot.base(), &github.base()))?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrule"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    let base = loop {
        line.clear();
        if out.read_line(&mut line)? == 0 {
            return Err("ferrule serve exited".into());
        }
        if let Some(rest) = line.trim().split("listening on ").nth(1) {
            break rest.to_owned();
        }
    };
    std::thread::spawn(move || for _ in out.lines() {});
    let http = reqwest::Client::new();
    // Warm up: the pools, the allocator's arenas, the first runs.
    for n in 1..=50 {
        post(&http, &base, n).await?;
    }
    bot.wait_for_sends(50, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(child.id())?;
    for n in 0..WAITING {
        post(&http, &base, 100_000 + n).await?;
    }
    bot.wait_for_sends(50 + WAITING, Duration::from_secs(120))
        .await;
    // Every run has recorded its card and waits.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page: serde_json::Value = http
            .get(format!("{base}/v1/routes/github-pr/stats"))
            .bearer_auth(API_TOKEN)
            .send()
            .await?
            .json()
            .await?;
        if page["waiting"].as_u64() == Some((50 + WAITING) as u64) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("runs never all waited: {page}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(child.id())?;
    println!(
        "{WAITING} waiting runs (the real binary, SQLite): RSS {:.1} MiB before, {:.1} MiB after, {:+.1} MiB",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after as f64 - before as f64) / 1024.0,
    );
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // `cargo test --benches` runs benchmarks with `--bench` missing: skip the long part then.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    mail_to_card().await?;
    waiting_runs().await?;
    Ok(())
}
