//! `ferrule-bench`: end-to-end figures for the relay (docs/BENCHMARKS.md, "ferrule relay").
//!
//! Starts the real `ferrule serve` (the binary next to this one) on a temporary SQLite file
//! with a loopback webhook receiver, then measures:
//!
//! 1. idle RSS of the relay process;
//! 2. submit → delivered throughput for `--messages` messages submitted over HTTP by
//!    `--clients` concurrent clients (64);
//! 3. submit → delivered latency (p50, p99) at a fixed `--rate` for `--seconds`;
//! 4. RSS with `--queued` messages waiting (scheduled a day ahead).
//!
//! With `--compare-rollups N` it measures only the throughput, `N` times with the per-minute
//! rollups on and `N` times with them off (`store.rollup_retention = "0"`), alternating, each
//! on a fresh relay and database, and prints the medians: what the rollups cost.
//!
//! Run: `cargo build --release -p ferrule && target/release/ferrule-bench`.

#[path = "common/bench.rs"]
mod bench;

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use clap::Parser;
use serde_json::json;

use self::bench::Relay;

const TOKEN: &str = "bench-token-0123456789abcdef";

#[derive(Default)]
struct Received {
    count: AtomicU64,
    arrivals: Mutex<HashMap<String, Instant>>,
    track: std::sync::atomic::AtomicBool,
}

async fn hook(State(r): State<Arc<Received>>, headers: HeaderMap) -> &'static str {
    if r.track.load(Ordering::Relaxed)
        && let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok())
    {
        r.arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), Instant::now());
    }
    r.count.fetch_add(1, Ordering::Relaxed);
    "ok"
}

fn say(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat` (ticks of 10 ms).
fn cpu_time(pid: &str) -> Duration {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            Some(Duration::from_millis(ticks * 10))
        })
        .unwrap_or_default()
}

fn start_relay(dir: &std::path::Path, hook_url: &str, rollups: bool) -> Relay {
    let config = dir.join("bench.toml");
    let retention = if rollups { "14d" } else { "0" };
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_queue_depth = 10000000
[store]
url = "sqlite://{db}"
rollup_retention = "{retention}"
[auth]
tokens = ["{TOKEN}"]
[[destinations]]
name = "hook"
type = "webhook"
url = "{hook_url}"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
allow_private = true
"#,
        db = dir.join("bench.db").display()
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("writing the config: {e}"));
    Relay::start(&config)
}

async fn submit(http: &reqwest::Client, base: &str, payload: serde_json::Value) -> Option<String> {
    let response = http
        .post(format!("{base}/v1/messages"))
        .bearer_auth(TOKEN)
        .json(&payload)
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = response.json().await.ok()?;
    body["id"].as_str().map(str::to_owned)
}

async fn submit_many(
    http: &reqwest::Client,
    base: &str,
    n: u64,
    clients: u64,
    deliver_after: Option<String>,
) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, base, next, after) = (
            http.clone(),
            base.to_owned(),
            next.clone(),
            deliver_after.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let mut body =
                    json!({"destination": "hook", "payload": {"event": "bench", "n": 1}});
                if let Some(at) = &after {
                    body["deliver_after"] = json!(at);
                }
                let _ = submit(&http, &base, body).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[rank]
}

/// Measures `ferrule serve` (the binary next to this one) on SQLite against a loopback
/// webhook receiver; see docs/BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Messages in the throughput run.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    messages: u64,
    /// Concurrent clients submitting them (and the queued messages).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    clients: u64,
    /// Submissions per second in the latency run.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    rate: u64,
    /// Length of the latency run in seconds; 0 skips it.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Messages queued (scheduled a day ahead) for the memory measurement; 0 skips it.
    #[arg(long, default_value_t = 1_000_000)]
    queued: u64,
    /// Only compare the throughput with rollups on and off, this many runs of each
    /// (alternating, a fresh relay each), and print the medians.
    #[arg(long, value_name = "RUNS", value_parser = clap::value_parser!(u64).range(1..=50))]
    compare_rollups: Option<u64>,
}

/// One throughput run on a fresh relay and database: end-to-end msg/s and the relay's CPU
/// µs per message.
async fn throughput_run(
    http: &reqwest::Client,
    received: &Received,
    hook_url: &str,
    rollups: bool,
    messages: u64,
    clients: u64,
) -> (f64, f64) {
    let dir = tempfile_dir();
    let relay = start_relay(&dir, hook_url, rollups);
    let pid = relay.child.id().to_string();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = received.count.load(Ordering::Relaxed);
    let cpu = cpu_time(&pid);
    let start = Instant::now();
    submit_many(http, &relay.base, messages, clients, None).await;
    while received.count.load(Ordering::Relaxed) - before < messages {
        if start.elapsed() > Duration::from_secs(600) {
            say("timed out waiting for deliveries");
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let total = start.elapsed();
    let cpu = cpu_time(&pid).saturating_sub(cpu);
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
    (
        messages as f64 / total.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / messages as f64,
    )
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// `--compare-rollups`: alternating runs with rollups on and off; the medians.
async fn compare_rollups(
    http: &reqwest::Client,
    received: &Received,
    hook_url: &str,
    runs: u64,
    messages: u64,
    clients: u64,
) {
    let (mut on_rate, mut on_cpu, mut off_rate, mut off_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        // Alternate which goes first, so a drift of the machine's load favours neither.
        let order = if run % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for rollups in order {
            let (rate, cpu) =
                throughput_run(http, received, hook_url, rollups, messages, clients).await;
            say(&format!(
                "run {}: rollups {}: {rate:.0} msg/s end to end, relay {cpu:.1} µs/msg",
                run + 1,
                if rollups { "on " } else { "off" }
            ));
            if rollups {
                on_rate.push(rate);
                on_cpu.push(cpu);
            } else {
                off_rate.push(rate);
                off_cpu.push(cpu);
            }
        }
    }
    let (on_rate, off_rate) = (median(&mut on_rate), median(&mut off_rate));
    let (on_cpu, off_cpu) = (median(&mut on_cpu), median(&mut off_cpu));
    say(&format!(
        "median of {runs}: rollups on {on_rate:.0} msg/s, {on_cpu:.1} µs/msg; off {off_rate:.0} msg/s, {off_cpu:.1} µs/msg; throughput {:+.1} %, relay CPU per message {:+.1} %",
        (on_rate / off_rate - 1.0) * 100.0,
        (on_cpu / off_cpu - 1.0) * 100.0
    ));
}

#[tokio::main]
async fn main() {
    let Args {
        messages,
        clients,
        rate,
        seconds,
        queued,
        compare_rollups: compare,
    } = Args::parse();

    let received = Arc::new(Received::default());
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding the receiver: {e}"));
    let hook_url = format!(
        "http://{}/hook",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    if let Some(runs) = compare {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(128)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        compare_rollups(&http, &received, &hook_url, runs, messages, clients).await;
        return;
    }

    let dir = tempfile_dir();
    let relay = start_relay(&dir, &hook_url, true);
    let pid = relay.child.id();
    tokio::time::sleep(Duration::from_secs(2)).await;
    say(&format!(
        "idle RSS: {:.1} MiB",
        rss_kib(pid) as f64 / 1024.0
    ));

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let (relay_cpu, bench_cpu) = (cpu_time(&pid.to_string()), cpu_time("self"));
    let start = Instant::now();
    submit_many(&http, &relay.base, messages, clients, None).await;
    let submitted = start.elapsed();
    while received.count.load(Ordering::Relaxed) < messages {
        if start.elapsed() > Duration::from_secs(600) {
            say("timed out waiting for deliveries");
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let total = start.elapsed();
    let per_message = |cpu: Duration| cpu.as_secs_f64() * 1e6 / messages as f64;
    let relay_cpu = cpu_time(&pid.to_string()).saturating_sub(relay_cpu);
    let bench_cpu = cpu_time("self").saturating_sub(bench_cpu);
    say(&format!(
        "cpu during the throughput run: relay {:.2} s ({:.0} µs/msg), bench client and receiver {:.2} s ({:.0} µs/msg)",
        relay_cpu.as_secs_f64(),
        per_message(relay_cpu),
        bench_cpu.as_secs_f64(),
        per_message(bench_cpu)
    ));
    say(&format!(
        "throughput: {messages} messages submitted in {:.2} s ({:.0} msg/s), all delivered in {:.2} s: {:.0} msg/s end to end",
        submitted.as_secs_f64(),
        messages as f64 / submitted.as_secs_f64(),
        total.as_secs_f64(),
        messages as f64 / total.as_secs_f64()
    ));

    if seconds > 0 {
        // Latency at a fixed rate.
        tokio::time::sleep(Duration::from_secs(1)).await;
        received.track.store(true, Ordering::Relaxed);
        let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = Vec::new();
        for _ in 0..rate * seconds {
            tick.tick().await;
            let (http, base, sent) = (http.clone(), relay.base.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                let at = Instant::now();
                if let Some(id) = submit(
                    &http,
                    &base,
                    json!({"destination": "hook", "payload": {"n": 1}}),
                )
                .await
                {
                    sent.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, at);
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut latencies: Vec<Duration> = {
            let sent = sent.lock().unwrap_or_else(|e| e.into_inner());
            let arrivals = received.arrivals.lock().unwrap_or_else(|e| e.into_inner());
            sent.iter()
                .filter_map(|(id, at)| arrivals.get(id).map(|a| a.saturating_duration_since(*at)))
                .collect()
        };
        latencies.sort();
        say(&format!(
            "latency at {rate} msg/s for {seconds} s: {} delivered, p50 {:.2} ms, p99 {:.2} ms",
            latencies.len(),
            percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
            percentile(&latencies, 0.99).as_secs_f64() * 1000.0
        ));
        received.track.store(false, Ordering::Relaxed);
    }

    if queued > 0 {
        // RSS with many queued.
        let later =
            humantime::format_rfc3339(std::time::SystemTime::now() + Duration::from_secs(86_400))
                .to_string();
        let start = Instant::now();
        submit_many(&http, &relay.base, queued, clients, Some(later)).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        say(&format!(
            "RSS with {queued} queued: {:.1} MiB (submitted in {:.1} s)",
            rss_kib(pid) as f64 / 1024.0,
            start.elapsed().as_secs_f64()
        ));
    }
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ferrule-bench-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}
