//! See the policies work: a local HTTP server that fails in bursts, called through a pipeline.
//!
//! ```sh
//! cargo run --release -p ferrule-policy --example flaky_api
//! ```
//!
//! The server on 127.0.0.1 goes through phases — healthy, a 503 outage, 429s with
//! `Retry-After`, responses slower than the timeout, healthy again — while four workers call
//! it through retry → circuit breaker → rate limit → bulkhead → timeout. Every retry and breaker
//! transition is printed as it happens, then the tally.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use ferrule_policy::breaker::{BreakerConfig, CircuitBreaker, Window};
use ferrule_policy::bulkhead::BulkheadConfig;
use ferrule_policy::classify::{HttpClassifier, HttpClassifierConfig};
use ferrule_policy::rate_limit::RateLimitConfig;
use ferrule_policy::retry::{Jitter, Retry};
use ferrule_policy::{Context, ErrorKind, Event, Observer, Outcome, Pipeline};

/// How long the demo runs.
const RUN_FOR: Duration = Duration::from_secs(9);

/// The server's phases: (start, end, behaviour).
const PHASES: [(u64, u64, Phase); 7] = [
    (0, 1500, Phase::Healthy),
    (1500, 3000, Phase::Outage),
    (3000, 4500, Phase::Healthy),
    (4500, 5500, Phase::Throttled),
    (5500, 6500, Phase::Healthy),
    (6500, 7500, Phase::Slow),
    (7500, u64::MAX, Phase::Healthy),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// 200, with an occasional 500.
    Healthy,
    /// 503 for everything.
    Outage,
    /// 429 with `Retry-After: 1`.
    Throttled,
    /// 200 after 800 ms, past the client's 300 ms timeout.
    Slow,
}

struct Server {
    started: Instant,
    requests: AtomicU64,
}

impl Server {
    fn phase(&self) -> Phase {
        let ms = self.started.elapsed().as_millis() as u64;
        PHASES
            .iter()
            .find(|(from, to, _)| (*from..*to).contains(&ms))
            .map_or(Phase::Healthy, |(_, _, phase)| *phase)
    }
}

async fn handle(State(server): State<Arc<Server>>) -> impl IntoResponse {
    let n = server.requests.fetch_add(1, Ordering::Relaxed);
    let mut headers = HeaderMap::new();
    match server.phase() {
        Phase::Healthy if n % 20 == 7 => (StatusCode::INTERNAL_SERVER_ERROR, headers, "oops"),
        Phase::Healthy => (StatusCode::OK, headers, "ok"),
        Phase::Outage => (StatusCode::SERVICE_UNAVAILABLE, headers, "down"),
        Phase::Throttled => {
            headers.insert("retry-after", HeaderValue::from_static("1"));
            (StatusCode::TOO_MANY_REQUESTS, headers, "slow down")
        }
        Phase::Slow => {
            tokio::time::sleep(Duration::from_millis(800)).await;
            (StatusCode::OK, headers, "late")
        }
    }
}

/// Prints retries and breaker transitions as they happen, and counts every event kind.
#[derive(Debug)]
struct Printer {
    started: Instant,
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Observer for Printer {
    fn on_event(&self, event: &Event<'_>) {
        *self.counts.lock().unwrap().entry(event.kind()).or_default() += 1;
        let t = self.started.elapsed().as_secs_f64();
        match *event {
            Event::RetryScheduled {
                attempt,
                delay,
                outcome,
                ..
            } => println!(
                "{t:6.2}s  retry     attempt {attempt} was {:<11} → next in {delay:?}",
                outcome.as_str()
            ),
            Event::BreakerTransition { from, to, .. } => {
                println!("{t:6.2}s  BREAKER   {from} → {to}")
            }
            Event::RetryGaveUp {
                attempts, reason, ..
            } => println!("{t:6.2}s  gave up   after {attempts} attempts ({reason})"),
            _ => {}
        }
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    by_error: BTreeMap<&'static str, u64>,
}

impl Tally {
    fn record(
        &mut self,
        result: Result<
            (reqwest::StatusCode, reqwest::header::HeaderMap),
            ferrule_policy::Error<reqwest::Error>,
        >,
    ) {
        match result {
            Ok((status, _)) if status.is_success() => self.ok += 1,
            Ok((status, _)) => *self.by_error.entry(status_name(status)).or_default() += 1,
            Err(error) => {
                let kind = match error.kind() {
                    ErrorKind::Inner(_) => "connection error",
                    ErrorKind::CircuitOpen(_) => "circuit open",
                    ErrorKind::Timeout(_) => "timeout",
                    ErrorKind::DeadlineExceeded(_) => "deadline exceeded",
                    ErrorKind::BulkheadFull(_) => "bulkhead full",
                    ErrorKind::RateLimited(_) => "rate limited",
                    _ => "other",
                };
                *self.by_error.entry(kind).or_default() += 1;
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Arc::new(Server {
        started: Instant::now(),
        requests: AtomicU64::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/", axum::routing::get(handle))
        .with_state(server.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("flaky server on {url}: 503 outage 1.5–3 s, 429 + Retry-After 4.5–5.5 s,");
    println!("slow 6.5–7.5 s, healthy otherwise; 4 workers call it for {RUN_FOR:?}\n");

    let printer = Arc::new(Printer {
        started: server.started,
        counts: Mutex::new(BTreeMap::new()),
    });
    let ctx = Context::new("flaky-api").with_observer(printer.clone());
    let breaker = CircuitBreaker::with_context(
        BreakerConfig {
            window: Window::Count(20),
            min_calls: 10,
            failure_rate: 0.5,
            open_for: Duration::from_millis(500),
            open_backoff: 2.0,
            max_open_for: Some(Duration::from_secs(2)),
            half_open_probes: 2,
            half_open_successes: 2,
            slow_call_duration: None,
            ..BreakerConfig::default()
        },
        ctx.clone(),
    )?;
    let classifier = HttpClassifier::with_context(HttpClassifierConfig::default(), ctx.clone())?;
    let pipeline = Pipeline::builder()
        .context(ctx)
        .retry(
            Retry::exponential(Duration::from_millis(50), Duration::from_secs(1))
                .jitter(Jitter::Full)
                .max_attempts(4),
        )
        .circuit_breaker(breaker.clone())
        .rate_limit(RateLimitConfig {
            limit: 200,
            per: Duration::from_secs(1),
            burst: Some(20),
        })
        .bulkhead(BulkheadConfig {
            max_concurrent: 8,
            ..BulkheadConfig::default()
        })
        .timeout(Duration::from_millis(300))
        .deadline(Duration::from_secs(3))
        .classify(
            move |result: &Result<
                (reqwest::StatusCode, reqwest::header::HeaderMap),
                reqwest::Error,
            >| {
                match result {
                    Ok((status, headers)) => classifier.classify_parts(*status, headers),
                    Err(_) => Outcome::Transient,
                }
            },
        )
        .build()?;

    let client = reqwest::Client::new();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let deadline = server.started + RUN_FOR;
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (pipeline, client, url, tally) =
            (pipeline.clone(), client.clone(), url.clone(), tally.clone());
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let result = pipeline
                    .call(|| {
                        let request = client.get(&url);
                        async move {
                            let response = request.send().await?;
                            Ok((response.status(), response.headers().clone()))
                        }
                    })
                    .await;
                tally.lock().unwrap().record(result);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }

    let tally = tally.lock().unwrap();
    let failed: u64 = tally.by_error.values().sum();
    println!("\n── tally ───────────────────────────────────────────");
    println!(
        "server saw {} requests",
        server.requests.load(Ordering::Relaxed)
    );
    println!("calls: {} succeeded, {failed} failed", tally.ok);
    for (kind, n) in &tally.by_error {
        println!("  failed with {kind}: {n}");
    }
    println!("events:");
    for (kind, n) in printer.counts.lock().unwrap().iter() {
        println!("  {kind}: {n}");
    }
    println!("breaker now: {}", serde_json_line(&breaker));
    Ok(())
}

fn status_name(status: reqwest::StatusCode) -> &'static str {
    match status.as_u16() {
        429 => "HTTP 429 (gave up)",
        500 => "HTTP 500 (gave up)",
        503 => "HTTP 503 (gave up)",
        _ => "other HTTP status (gave up)",
    }
}

fn serde_json_line(breaker: &CircuitBreaker) -> String {
    let status = breaker.status();
    format!(
        "{} (failure rate {:.0}% over {} calls, {} rejected in total)",
        status.state,
        status.failure_rate * 100.0,
        status.calls,
        status.total_rejected
    )
}
