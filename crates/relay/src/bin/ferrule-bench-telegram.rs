//! `ferrule-bench-telegram`: how close a Telegram bot gets to Telegram's limits without flood
//! control (docs/BENCHMARKS.md, "Telegram: 100 chats at once").
//!
//! Starts a fake Bot API that enforces Telegram's limits with sliding windows over real
//! arrival times (1/s per chat, 20/min per group, 30/s per bot; 429 with `retry_after` beyond
//! them), starts the real `ferrule serve` (the binary next to this one) with one Telegram
//! destination on the default limits pointed at it, submits `--per-chat` messages to each of
//! `--chats` chats all at once (one submitter per chat, so each chat's messages are stored in
//! order), and reports the delivered throughput between the first and the last send the fake
//! accepted, the 429s it answered, duplicates and per-chat order.
//!
//! `--group` makes the chats groups (negative ids), so the per-group limit applies too.
//!
//! `--instances N --postgres URL` starts N relays on one PostgreSQL database (a fresh schema of
//! it), all sending through the one bot; the chats' submissions are spread over them. They
//! share the bot's limits in the database; `--local-limits` keeps them per process instead
//! (`limits.shared = false`, how every relay kept them before they were shared).
//!
//! Run: `cargo build --release -p ferrule --features testing --bins &&
//! target/release/ferrule-bench-telegram`.

#[path = "common/bench.rs"]
mod bench;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

use clap::Parser;
use ferrule::testing::fake_bot_api::{BotLimits, FakeBotApi, Sent};
use serde_json::json;

use self::bench::Relay;

const TOKEN: &str = "bench-token-0123456789abcdef";
const BOT_TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

fn say(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Starts `ferrule serve` with one Telegram destination `bot` on `api_base`, default limits
/// (kept per process with `local`), on the store `store` (a SQLite file in `dir` if `None`).
fn start_relay(dir: &std::path::Path, api_base: &str, store: Option<&str>, local: bool) -> Relay {
    let config = dir.join("bench.toml");
    let url = match store {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}", dir.join("bench.db").display()),
    };
    let limits = if local {
        "limits = { shared = false }"
    } else {
        ""
    };
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
url = "{url}"
[auth]
tokens = ["{TOKEN}"]
[[destinations]]
name = "bot"
type = "telegram"
bot_token = "{BOT_TOKEN}"
api_base = "{api_base}"
{limits}
"#
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("writing the config: {e}"));
    Relay::start(&config)
}

/// The most sends in any window of `span` (half-open, as the fake counts).
fn busiest(sends: &[&Sent], span: Duration) -> usize {
    let mut most = 0;
    let mut start = 0;
    for (end, s) in sends.iter().enumerate() {
        while sends[start].at + span <= s.at {
            start += 1;
        }
        most = most.max(end + 1 - start);
    }
    most
}

/// Sends to many Telegram chats at once through `ferrule serve` and a fake Bot API that
/// enforces Telegram's limits; see docs/BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Chats to send to at once.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    chats: u64,
    /// Messages per chat.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    per_chat: u64,
    /// Make the chats groups (negative ids), so the per-group limit applies too.
    #[arg(long)]
    group: bool,
    /// Also print the sends per 100 ms since the first.
    #[arg(long)]
    timeline: bool,
    /// Relays to run, all sending through the one bot (more than one needs `--postgres`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
    instances: u64,
    /// A PostgreSQL database for the relays (a fresh schema in it per run), instead of SQLite.
    #[arg(long)]
    postgres: Option<String>,
    /// Keep the bot's limits per process (`limits.shared = false`) instead of sharing them.
    #[arg(long)]
    local_limits: bool,
}

#[tokio::main]
async fn main() {
    let Args {
        chats,
        per_chat,
        group,
        timeline,
        instances,
        postgres,
        local_limits,
    } = Args::parse();
    if instances > 1 && postgres.is_none() {
        panic!("--instances above 1 needs --postgres: SQLite has one relay");
    }
    let total = (chats * per_chat) as usize;
    let limits = BotLimits::telegram();

    let api = FakeBotApi::start(BOT_TOKEN, limits)
        .await
        .unwrap_or_else(|e| panic!("starting the fake Bot API: {e}"));
    let dir = std::env::temp_dir().join(format!("ferrule-bench-tg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let store = postgres.as_deref().map(|base| {
        let sep = if base.contains('?') { '&' } else { '?' };
        format!(
            "{base}{sep}schema=bench_tg_{}_{}",
            std::process::id(),
            fastrand::u32(..)
        )
    });
    let relays: Vec<Relay> = (0..instances)
        .map(|i| {
            let dir = dir.join(format!("relay-{i}"));
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
            start_relay(&dir, api.base(), store.as_deref(), local_limits)
        })
        .collect();
    let http = reqwest::Client::new();
    let chat_id = move |n: u64| -> i64 {
        let id = 1_000 + n as i64;
        if group { -id } else { id }
    };

    say(&format!(
        "{instances} relay(s) on {}, limits {}",
        if postgres.is_some() {
            "one PostgreSQL database"
        } else {
            "SQLite"
        },
        if local_limits || postgres.is_none() {
            "per process"
        } else {
            "shared in the database"
        },
    ));
    say(&format!(
        "{chats} {} chats × {per_chat} messages = {total}; limits enforced by the fake: \
         {}/{:?} per chat, {}/{:?} per group, {}/{:?} per bot",
        if group { "group" } else { "private" },
        limits.per_chat.limit,
        limits.per_chat.per,
        limits.per_group.limit,
        limits.per_group.per,
        limits.per_bot.limit,
        limits.per_bot.per,
    ));
    let start = Instant::now();
    let mut submitters = Vec::new();
    for n in 0..chats {
        let relay = &relays[(n % instances) as usize];
        let (http, base) = (http.clone(), relay.base.clone());
        submitters.push(tokio::spawn(async move {
            for k in 0..per_chat {
                let body = json!({
                    "destination": "bot",
                    "payload": {"chat_id": chat_id(n), "text": format!("{n}/{k}")},
                });
                let response = http
                    .post(format!("{base}/v1/messages"))
                    .bearer_auth(TOKEN)
                    .json(&body)
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => panic!("submit answered {}", r.status()),
                    Err(e) => panic!("submit failed: {e}"),
                }
            }
        }));
    }
    for s in submitters {
        let _ = s.await;
    }
    let submitted = start.elapsed();
    // 30/s for the whole bot: allow three times the ideal time, plus a minute for groups.
    let limit = Duration::from_secs(60 + 3 * total as u64 / limits.per_bot.limit as u64);
    let sent = api.wait_for_sends(total, limit).await;
    // Anything sent twice would arrive shortly after; give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = if sent.len() >= total {
        api.sends()
    } else {
        sent
    };
    let refused = api.refusals();
    // Each deferral is a store write and a timeline event: what pacing costs the relay.
    let mut counters = Some((0, 0));
    for relay in &relays {
        let one = async {
            let status: serde_json::Value = http
                .get(format!("{}/status", relay.base))
                .bearer_auth(TOKEN)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            Some((
                status["counters"]["deferred"].as_u64()?,
                status["counters"]["retried"].as_u64()?,
            ))
        }
        .await;
        counters = match (counters, one) {
            (Some((d, r)), Some((d1, r1))) => Some((d + d1, r + r1)),
            _ => None,
        };
    }
    drop(relays);
    let _ = std::fs::remove_dir_all(&dir);

    let texts: Vec<&str> = sent
        .iter()
        .filter_map(|s| s.params["text"].as_str())
        .collect();
    let unique: HashSet<&str> = texts.iter().copied().collect();
    let mut order_ok = true;
    let mut per: HashMap<&str, Vec<&Sent>> = HashMap::new();
    for s in &sent {
        per.entry(s.chat.as_str()).or_default().push(s);
    }
    let mut min_gap = Duration::MAX;
    for sends in per.values() {
        let ks: Vec<u64> = sends
            .iter()
            .filter_map(|s| s.params["text"].as_str()?.split('/').nth(1)?.parse().ok())
            .collect();
        order_ok &= ks.windows(2).all(|w| w[0] < w[1]);
        for pair in sends.windows(2) {
            min_gap = min_gap.min(pair[1].at.duration_since(pair[0].at));
        }
    }
    let all: Vec<&Sent> = sent.iter().collect();
    let span = match (sent.first(), sent.last()) {
        (Some(first), Some(last)) => last.at.duration_since(first.at),
        _ => Duration::ZERO,
    };
    let throughput = if span.is_zero() {
        0.0
    } else {
        (sent.len().saturating_sub(1)) as f64 / span.as_secs_f64()
    };
    let by_limit = |l| refused.iter().filter(|r| r.limit == l).count();
    let first_after_submit = sent
        .first()
        .map(|s| s.at.saturating_duration_since(start))
        .unwrap_or_default();
    say(&format!(
        "submitted in {:.2} s; first send {:.0} ms after the first submit",
        submitted.as_secs_f64(),
        first_after_submit.as_secs_f64() * 1000.0
    ));
    say(&format!(
        "delivered: {} of {total} ({} distinct, {} duplicates) in {:.2} s from first to last send: {throughput:.2} msg/s ({:.1} % of the bot's {}/s)",
        sent.len(),
        unique.len(),
        texts.len() - unique.len(),
        span.as_secs_f64(),
        throughput * 100.0 / limits.per_bot.limit as f64,
        limits.per_bot.limit,
    ));
    say(&format!(
        "429s from the fake: {} (per chat {}, per group {}, per bot {})",
        refused.len(),
        by_limit(ferrule::testing::fake_bot_api::Limit::PerChat),
        by_limit(ferrule::testing::fake_bot_api::Limit::PerGroup),
        by_limit(ferrule::testing::fake_bot_api::Limit::PerBot),
    ));
    if let Some((deferred, retried)) = counters {
        say(&format!(
            "relay: {deferred} deferrals by the limits ({:.2} per message), {retried} retries",
            deferred as f64 / total as f64
        ));
    }
    say(&format!(
        "per-chat order kept: {order_ok}; closest sends to one chat: {:.0} ms apart; busiest second: {} sends",
        if min_gap == Duration::MAX {
            0.0
        } else {
            min_gap.as_secs_f64() * 1000.0
        },
        busiest(&all, Duration::from_secs(1)),
    ));
    if timeline && let Some(first) = sent.first() {
        // Sends per 100 ms since the first: shows how the dispatcher paces the bot.
        let mut buckets = vec![0usize; (span.as_millis() / 100) as usize + 1];
        for s in &sent {
            buckets[(s.at.duration_since(first.at).as_millis() / 100) as usize] += 1;
        }
        for (second, tenths) in buckets.chunks(10).enumerate() {
            say(&format!("  {second:>3} s: {tenths:?}"));
        }
    }
    say(&format!(
        "result: {}",
        if refused.is_empty()
            && sent.len() == total
            && unique.len() == total
            && order_ok
            && throughput >= 0.9 * limits.per_bot.limit as f64
        {
            "PASS (no 429, all delivered once, in order, ≥ 90 % of the bot limit)"
        } else {
            "FAIL (target: no 429, all delivered once, in order, ≥ 90 % of the bot limit)"
        }
    ));
}
