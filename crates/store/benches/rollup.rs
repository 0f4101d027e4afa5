//! What rollups cost per message: recording a delivery into the in-memory batch (under the
//! mutex the relay holds for it) and the flush that adds a batch to SQLite, amortised over
//! the messages it covers at a given rate. Printed as a Markdown table (docs/BENCHMARKS.md,
//! "Rollups on and off"); read it against the relay's CPU per message (~150 µs).
//!
//! `cargo bench -p ferrule-store --bench rollup`; `FERRULE_BENCH_ROLLUP_CALLS` (default
//! 2,000,000) sets the recorded deliveries, `FERRULE_BENCH_ROLLUP_RATE` (10,000 msg/s) the rate
//! a 10 s flush covers.

#![allow(clippy::print_stdout, reason = "a benchmark prints its table")]

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant, UNIX_EPOCH};

use ferrule_store::{RollupBatch, SqliteOptions, SqliteStore, Store, StoreOptions};

const DESTINATIONS: [&str; 10] = [
    "hook-0", "hook-1", "hook-2", "hook-3", "hook-4", "hook-5", "hook-6", "hook-7", "hook-8",
    "hook-9",
];
/// How often the relay flushes.
const FLUSH_EVERY: Duration = Duration::from_secs(10);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A batch of `messages` deliveries spread over one flush interval starting at `start`, one in
/// a hundred retried first.
fn batch_of(start: Duration, messages: u64) -> RollupBatch {
    let mut batch = RollupBatch::new();
    let step = FLUSH_EVERY.as_nanos() as u64 / messages.max(1);
    for n in 0..messages {
        let at = UNIX_EPOCH + start + Duration::from_nanos(n * step);
        let destination = DESTINATIONS[(n % 10) as usize];
        if n % 100 == 0 {
            batch.retried(at, destination, Duration::from_millis(30), "status 503");
        }
        batch.delivered(
            at,
            destination,
            Duration::from_micros(800 + n % 5_000),
            Duration::from_millis(2 + n % 50),
        );
    }
    batch
}

#[tokio::main]
async fn main() {
    let calls = env_u64("FERRULE_BENCH_ROLLUP_CALLS", 2_000_000);
    let rate = env_u64("FERRULE_BENCH_ROLLUP_RATE", 10_000);

    // 1. Recording: the relay's path per delivered message, the lock included.
    let batch = Mutex::new(RollupBatch::new());
    let began = Instant::now();
    for n in 0..calls {
        // One millisecond apart: the batch holds ~calls/60,000 minutes × 10 destinations.
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_millis(n);
        let destination = DESTINATIONS[(n % 10) as usize];
        batch.lock().unwrap_or_else(|e| e.into_inner()).delivered(
            black_box(at),
            black_box(destination),
            Duration::from_micros(800 + n % 5_000),
            Duration::from_millis(2 + n % 50),
        );
    }
    let record_ns = began.elapsed().as_nanos() as f64 / calls as f64;
    black_box(&batch);

    // 2. Flushing: one SQLite transaction per interval, adding into the minute rows.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(SqliteOptions::new(
        dir.path().join("rollup.db"),
        StoreOptions::default(),
    ))
    .await
    .expect("open the store");
    let per_flush = rate * FLUSH_EVERY.as_secs();
    let flushes = 30u32;
    let batches: Vec<RollupBatch> = (0..flushes)
        .map(|i| {
            batch_of(
                Duration::from_secs(1_800_000_000) + FLUSH_EVERY * i,
                per_flush,
            )
        })
        .collect();
    let began = Instant::now();
    for b in &batches {
        store.add_rollups(b).await.expect("add the batch");
    }
    let flush = began.elapsed() / flushes;
    let flush_ns_per_message = flush.as_nanos() as f64 / per_flush as f64;
    drop(store);

    println!("| measure | result |");
    println!("|---|---|");
    println!("| record one delivery (mutex + batch), {calls} calls | {record_ns:.0} ns |");
    println!(
        "| flush {per_flush} deliveries ({rate} msg/s × 10 s) into SQLite, mean of {flushes} | {:.2} ms |",
        flush.as_secs_f64() * 1e3
    );
    println!("| flush, per message | {flush_ns_per_message:.1} ns |");
    println!(
        "| rollups per message, total | {:.0} ns |",
        record_ns + flush_ns_per_message
    );
}
