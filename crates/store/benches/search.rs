//! Message search at scale: fills a SQLite store with `FERRULE_BENCH_SEARCH_FILL` messages
//! (default 1,000,000) created over 14 days, 1 % of them dead, then times the first page (100
//! rows) of `list` for each filter the API offers and prints p50 / p95 / max as a Markdown
//! table. The target is ≤ 100 ms p95 per filter (docs/BENCHMARKS.md).
//!
//! `cargo bench -p ferrule-store --bench search`; `FERRULE_BENCH_SEARCH_RUNS` (default 40)
//! sets the timed runs per filter, `FERRULE_BENCH_DIR` the directory for the database file.

#![allow(clippy::print_stdout, reason = "a benchmark prints its table")]

use std::time::{Duration, Instant, SystemTime};

use ferrule_policy::{Clock, ManualClock};
use ferrule_store::{
    AttemptReport, Filter, NewMessage, OutcomeClass, SqliteOptions, SqliteStore, Status, Store,
    StoreOptions, Synchronous,
};
use serde_json::json;

const SPAN: Duration = Duration::from_secs(14 * 86_400);
const DESTINATIONS: u64 = 10;
const CUSTOMERS: u64 = 10_000;
const WORDS: [&str; 8] = [
    "invoice", "receipt", "refund", "reminder", "welcome", "shipping", "password", "survey",
];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn message(n: u64) -> NewMessage {
    let word = WORDS[(n % WORDS.len() as u64) as usize];
    NewMessage::new(
        format!("hook-{}", n % DESTINATIONS),
        json!({"event": word, "order": format!("ORD-{n:08}"), "text": format!("your {word} for order ORD-{n:08} is ready"), "amount": n % 997}),
    )
    .idempotency_key(format!("key-{n:08}"))
    .ordering_key(format!("customer-{}", n % CUSTOMERS))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let fill = env_u64("FERRULE_BENCH_SEARCH_FILL", 1_000_000);
    let runs = env_u64("FERRULE_BENCH_SEARCH_RUNS", 40) as usize;
    let dir = match std::env::var("FERRULE_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).expect("bench dir"),
        Err(_) => tempfile::tempdir().expect("temp dir"),
    };
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let clock = ManualClock::with_system_time(start);
    let options = StoreOptions {
        synchronous: Synchronous::Normal,
        ..StoreOptions::with_clock(clock.shared())
    };
    let store = SqliteStore::open(SqliteOptions::new(dir.path().join("search.db"), options))
        .await
        .expect("open the store");

    // Fill: messages created evenly over SPAN, in batches of 1,000.
    let began = Instant::now();
    let step = SPAN / u32::try_from(fill.max(1)).unwrap_or(u32::MAX);
    let batch = 1_000;
    let mut n = 0;
    while n < fill {
        let count = batch.min(fill - n);
        let messages: Vec<NewMessage> = (n..n + count).map(message).collect();
        store.enqueue_batch(messages).await.expect("enqueue");
        clock.advance(step * u32::try_from(count).unwrap_or(u32::MAX));
        n += count;
    }
    // 1 % dead: the oldest due, claimed and dead-lettered.
    let dead = fill / 100;
    let mut done = 0;
    while done < dead {
        let claimed = store
            .claim_due(
                "bench",
                1_000.min((dead - done) as usize),
                Duration::from_secs(60),
            )
            .await
            .expect("claim");
        if claimed.is_empty() {
            break;
        }
        for c in claimed {
            let report = AttemptReport::failure(OutcomeClass::Permanent, "HTTP 410 Gone");
            store
                .dead_letter(&c.lease, report)
                .await
                .expect("dead letter");
            done += 1;
        }
    }
    println!(
        "filled {fill} messages ({done} dead) over 14 days in {:.0} s\n",
        began.elapsed().as_secs_f64()
    );

    let now = clock.system_now();
    let day_from = now - Duration::from_secs(7 * 86_400);
    let day = Filter::all().created_between(day_from, day_from + Duration::from_secs(86_400));
    let mid = fill / 2;
    let filters: Vec<(&str, Filter)> = vec![
        ("none (newest first)", Filter::all()),
        ("status = dead", Filter::status(Status::Dead)),
        ("status = queued", Filter::status(Status::Queued)),
        ("destination", Filter::all().destination("hook-3")),
        (
            "destination + status = dead",
            Filter::status(Status::Dead).destination("hook-3"),
        ),
        ("time range 24 h, 7 days ago", day.clone()),
        (
            "idempotency key",
            Filter::all().idempotency_key(format!("key-{mid:08}")),
        ),
        ("ordering key", Filter::all().ordering_key("customer-4242")),
        (
            "payload text, 24 h range",
            day.clone().payload_contains(format!("ORD-{:08}", mid)),
        ),
        (
            "payload text, 24 h range, common word",
            day.clone().payload_contains("refund"),
        ),
        (
            "dead + error text",
            Filter::status(Status::Dead).error_contains("410"),
        ),
    ];
    println!("| filter ({fill} messages) | rows | p50 ms | p95 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, filter) in filters {
        let mut times = Vec::with_capacity(runs);
        let mut rows = 0;
        // One untimed run warms the page cache, as a dashboard's repeated reads would.
        store.list(&filter, None, 100).await.expect("list");
        for _ in 0..runs {
            let t = Instant::now();
            let page = store.list(&filter, None, 100).await.expect("list");
            times.push(t.elapsed());
            rows = page.messages.len();
        }
        times.sort();
        println!(
            "| {name} | {rows} | {} | {} | {} |",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.95)),
            ms(*times.last().unwrap_or(&Duration::ZERO)),
        );
    }
}
