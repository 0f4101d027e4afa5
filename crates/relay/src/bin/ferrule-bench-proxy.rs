//! `ferrule-bench-proxy`: figures for `ANY /v1/proxy/{destination}/{*path}` (docs/BENCHMARKS.md,
//! "The proxy").
//!
//! Starts a loopback upstream (an OpenAI-like JSON answer and a slow event stream) in this
//! process, and the real `ferrule serve` (the binary next to this one) with an `http`
//! destination in front of it, then measures, in the same run:
//!
//! 1. added latency: at a fixed `--rate` (1,000/s) for `--seconds`, alternating direct calls to
//!    the upstream with proxied ones; p50 and p99 of each and their difference;
//! 2. throughput: `--clients` (64) closed-loop clients for `--seconds`, proxied and direct, with
//!    small bodies; the ratio of the two;
//! 3. RSS of the relay process while `--streams` (1,000) event streams pass through at once,
//!    each 20 events 100 ms apart: before, at a quarter, half, three quarters and the end of
//!    the round, at its peak, and after; twice, so a second round shows whether memory stays.
//!
//! The load generator and the upstream share the machine with the relay, as they would on a
//! laptop: the direct figures in the same run are the baseline the proxied ones are read
//! against.
//!
//! Run: `cargo build --release -p ferrule && target/release/ferrule-bench-proxy`.

#[path = "common/bench.rs"]
mod bench;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::response::Response;
use axum::routing::post;
use clap::Parser;

use self::bench::Relay;

const TOKEN: &str = "bench-token-0123456789abcdef";
const ANSWER: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;
const REQUEST: &str = r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"ping"}]}"#;

#[derive(Parser)]
#[command(about = "Measures the relay's proxy against direct calls to a loopback upstream")]
struct Args {
    /// Requests per second of the latency run.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of each run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent clients of the throughput run.
    #[arg(long, default_value_t = 64)]
    clients: u64,
    /// Concurrent event streams of the RSS run (0: skip it).
    #[arg(long, default_value_t = 1000)]
    streams: u64,
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

/// The upstream: `POST /v1/chat/completions` answers [`ANSWER`]; `POST /v1/stream` answers 20
/// events, 100 ms apart.
async fn start_upstream() -> String {
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(|| async {
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Body::from(ANSWER))
                    .unwrap_or_default()
            }),
        )
        .route(
            "/v1/stream",
            post(|| async {
                let events = futures_util::stream::unfold(0u32, |n| async move {
                    if n == 20 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let event = format!("data: {{\"n\":{n},\"delta\":\"token\"}}\n\n");
                    Some((Ok::<_, std::io::Error>(Bytes::from(event)), n + 1))
                });
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(Body::from_stream(events))
                    .unwrap_or_default()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding the upstream: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("the upstream's address: {e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/v1")
}

fn start_relay(dir: &std::path::Path, upstream: &str) -> Relay {
    let config = dir.join("bench.toml");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
url = "sqlite://{db}"
[auth]
tokens = ["{TOKEN}"]
[[destinations]]
name = "openai"
type = "http"
base_url = "{upstream}"
allow_private = true
classifier = "openai"
retry_post = true
headers = {{ Authorization = "Bearer sk-bench" }}
bulkhead = {{ max_concurrent = 4096 }}
"#,
        db = dir.join("bench.db").display()
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("writing the config: {e}"));
    Relay::start(&config)
}

async fn call(http: &reqwest::Client, url: &str, auth: &str) -> bool {
    match http
        .post(url)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(REQUEST)
        .send()
        .await
    {
        Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
        Err(_) => false,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Paced calls at `rate`/s for `seconds`, alternating direct and proxied; the latencies of each.
async fn latency(
    http: &reqwest::Client,
    direct: &str,
    proxied: &str,
    rate: u64,
    seconds: u64,
) -> (Vec<Duration>, Vec<Duration>, u64) {
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let (http, failures) = (http.clone(), failures.clone());
        let (url, auth, is_proxied) = if i % 2 == 0 {
            (direct.to_owned(), "Bearer sk-bench".to_owned(), false)
        } else {
            (proxied.to_owned(), format!("Bearer {TOKEN}"), true)
        };
        tasks.push(tokio::spawn(async move {
            let began = Instant::now();
            if !call(&http, &url, &auth).await {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            (is_proxied, began.elapsed())
        }));
    }
    let (mut d, mut p) = (Vec::new(), Vec::new());
    for task in tasks {
        if let Ok((is_proxied, took)) = task.await {
            if is_proxied { &mut p } else { &mut d }.push(took);
        }
    }
    d.sort_unstable();
    p.sort_unstable();
    (d, p, failures.load(Ordering::Relaxed))
}

/// Closed-loop calls by `clients` for `seconds`: completed calls per second.
async fn throughput(
    http: &reqwest::Client,
    url: &str,
    auth: &str,
    clients: u64,
    seconds: u64,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, auth, done, stop) = (
            http.clone(),
            url.to_owned(),
            auth.to_owned(),
            done.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if call(&http, &url, &auth).await {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let began = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let n = done.load(Ordering::Relaxed);
    let took = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    n as f64 / took.as_secs_f64()
}

/// The relay's RSS around one round of concurrent event streams.
struct StreamRound {
    /// Before the first stream opens.
    before: u64,
    /// The largest sample while they ran.
    peak: u64,
    /// Samples at a quarter, half, three quarters and the end of the round (each stream lasts
    /// the whole round: 20 events 100 ms apart), to show whether memory grows with events.
    quarters: [u64; 4],
    /// Half a second after the last stream ended.
    after: u64,
    /// Streams that received all 20 events.
    complete: u64,
}

/// `streams` proxied event streams at once, the relay's RSS sampled every 50 ms.
async fn streaming(http: &reqwest::Client, url: &str, pid: u32, streams: u64) -> StreamRound {
    let before = rss_kib(pid);
    let complete = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let (http, url, complete) = (http.clone(), url.to_owned(), complete.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut response) = http
                .post(&url)
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(REQUEST)
                .send()
                .await
            else {
                return;
            };
            let mut events = 0;
            while let Ok(Some(chunk)) = response.chunk().await {
                events += chunk.windows(5).filter(|w| w == b"data:").count();
            }
            if events == 20 {
                complete.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut samples: Vec<(Duration, u64)> = Vec::new();
    let sampling = async {
        loop {
            samples.push((started.elapsed(), rss_kib(pid)));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let joined = async {
        for task in tasks {
            let _ = task.await;
        }
    };
    tokio::select! {
        () = joined => {}
        () = sampling => {}
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at = |fraction: f64| {
        samples
            .iter()
            .take_while(|(t, _)| t.as_secs_f64() <= took.as_secs_f64() * fraction)
            .last()
            .map_or(before, |(_, kib)| *kib)
    };
    StreamRound {
        before,
        peak: samples.iter().map(|(_, kib)| *kib).max().unwrap_or(before),
        quarters: [at(0.25), at(0.5), at(0.75), at(1.0)],
        after: rss_kib(pid),
        complete: complete.load(Ordering::Relaxed),
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let upstream = start_upstream().await;
    let dir = tempfile_dir();
    let relay = start_relay(&dir, &upstream);
    let pid = relay.child.id();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .build()
        .unwrap_or_else(|e| panic!("the client: {e}"));
    let direct = format!("{upstream}/chat/completions");
    let proxied = format!(
        "{}/v1/proxy/openai/chat/completions",
        relay.base.trim_end_matches('/')
    );
    say(&format!(
        "upstream {upstream}, relay {} (pid {pid})",
        relay.base
    ));
    // Warm both paths' connection pools.
    let _ = latency(&http, &direct, &proxied, args.rate.min(500), 1).await;

    let (d, p, failures) = latency(&http, &direct, &proxied, args.rate, args.seconds).await;
    let (d50, d99, p50, p99) = (
        percentile(&d, 0.5),
        percentile(&d, 0.99),
        percentile(&p, 0.5),
        percentile(&p, 0.99),
    );
    say(&format!(
        "latency at {}/s for {} s ({} failed): direct p50 {} p99 {}; proxied p50 {} p99 {}; added p50 {} p99 {}",
        args.rate,
        args.seconds,
        failures,
        ms(d50),
        ms(d99),
        ms(p50),
        ms(p99),
        ms(p50.saturating_sub(d50)),
        ms(p99.saturating_sub(d99)),
    ));

    let direct_rps = throughput(
        &http,
        &direct,
        "Bearer sk-bench",
        args.clients,
        args.seconds,
    )
    .await;
    let proxied_rps = throughput(
        &http,
        &proxied,
        &format!("Bearer {TOKEN}"),
        args.clients,
        args.seconds,
    )
    .await;
    say(&format!(
        "throughput with {} clients: direct {direct_rps:.0} req/s, proxied {proxied_rps:.0} req/s (ratio {:.2})",
        args.clients,
        proxied_rps / direct_rps.max(1.0),
    ));

    if args.streams > 0 {
        let stream_url = format!(
            "{}/v1/proxy/openai/stream",
            relay.base.trim_end_matches('/')
        );
        // Two rounds: memory a second round needs beyond the first's is memory kept per
        // stream (a leak), not the cost of streams in flight.
        for round in 1..=2 {
            let r = streaming(&http, &stream_url, pid, args.streams).await;
            let [q1, q2, q3, q4] = r.quarters;
            say(&format!(
                "round {round}: {} concurrent event streams ({} complete): relay RSS {} KiB before; at 25/50/75/100 % of the round {q1} / {q2} / {q3} / {q4} KiB; peak {} KiB; {} KiB after",
                args.streams, r.complete, r.before, r.peak, r.after
            ));
        }
    }
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrule-bench-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}
