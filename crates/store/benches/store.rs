//! Store throughput: acked enqueues/s at 1, 16 and 128 concurrent submitters, claim+complete/s,
//! the disk's raw fsync rate, and memory as the queue grows. Prints a Markdown table.
//!
//! `cargo bench -p ferrule-store`; `FERRULE_BENCH_SECS` (default 3) sets the time per row,
//! `FERRULE_BENCH_FILL` (default 1000000) the queue size for the memory check (0 skips it),
//! `FERRULE_BENCH_DIR` the directory for the database files (default: a temp dir).
//! PostgreSQL rows (including the `fill` memory check) run when `FERRULE_TEST_POSTGRES_URL` is set
//! (each in a fresh schema, dropped afterwards); `FERRULE_BENCH_PG_POOL` (default 64) sets the
//! store's pool size.

#![allow(clippy::print_stdout, reason = "a benchmark prints its table")]

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrule_store::{
    AttemptReport, NewMessage, SqliteOptions, SqliteStore, Store, StoreOptions, Synchronous,
};
use serde_json::json;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn payload(n: u64) -> NewMessage {
    NewMessage::new(
        "telegram:ops",
        json!({ "chat_id": 4242, "text": format!("build {n} finished: all 312 tests passed") }),
    )
}

/// Raw fsync rate: 4 KiB write + fdatasync, as fast as possible.
fn fsync_rate(dir: &std::path::Path, secs: Duration) -> f64 {
    let path = dir.join("fsync.bin");
    let mut file = std::fs::File::create(&path).expect("create fsync file");
    let block = [0x5a_u8; 4096];
    let start = Instant::now();
    let mut n = 0_u64;
    while start.elapsed() < secs {
        file.write_all(&block).expect("write");
        file.sync_data().expect("fdatasync");
        n += 1;
    }
    let _ = std::fs::remove_file(path);
    n as f64 / start.elapsed().as_secs_f64()
}

async fn open(dir: &std::path::Path, name: &str, sync: Synchronous) -> SqliteStore {
    let _ = std::fs::remove_file(dir.join(name));
    let options = StoreOptions {
        synchronous: sync,
        ..StoreOptions::default()
    };
    SqliteStore::open(SqliteOptions::new(dir.join(name), options))
        .await
        .expect("open store")
}

/// Acked enqueues/s with `submitters` tasks each enqueueing one message at a time.
async fn enqueue_rate<S: Store + Clone>(store: &S, submitters: usize, secs: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let start = Instant::now();
    for _ in 0..submitters {
        let (store, stop, count) = (store.clone(), stop.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                store.enqueue(payload(n)).await.expect("enqueue");
                n += 1;
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(secs).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("submitter");
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Claim+complete/s with `claimers` workers, each claiming `batch` and completing them all
/// concurrently, until `total` pre-filled messages are delivered.
async fn claim_complete_rate<S: Store + Clone>(
    store: &S,
    claimers: usize,
    batch: usize,
    total: u64,
) -> f64 {
    for chunk in 0..total.div_ceil(1000) {
        let msgs = (0..1000.min(total - chunk * 1000)).map(payload).collect();
        store.enqueue_batch(msgs).await.expect("fill");
    }
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..claimers {
        let (store, done) = (store.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let owner = format!("worker-{w}");
            loop {
                let claimed = store
                    .claim_due(&owner, batch, Duration::from_secs(60))
                    .await
                    .expect("claim");
                if claimed.is_empty() {
                    return;
                }
                let mut set = tokio::task::JoinSet::new();
                for c in claimed {
                    let store = store.clone();
                    set.spawn(async move {
                        store
                            .complete(&c.lease, AttemptReport::success())
                            .await
                            .expect("complete")
                    });
                }
                while let Some(r) = set.join_next().await {
                    r.expect("complete task");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("claimer");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Memory as the queue grows: fills `store` to `fill` messages with `enqueue_batch` of 1,000,
/// sampling this process's RSS at every fifth of the way, then times one claim of 100 at depth.
async fn fill_rows<S: Store>(store: &S, backend: &str, fill: u64) {
    let before = rss_kib().unwrap_or(0);
    let mut rows = Vec::new();
    let step = (fill / 5).max(1000);
    let mut n = 0;
    let start = Instant::now();
    while n < fill {
        let msgs = (0..1000.min(fill - n)).map(|i| payload(n + i)).collect();
        store.enqueue_batch(msgs).await.expect("fill");
        n += 1000.min(fill - n);
        if n % step == 0 || n == fill {
            rows.push((n, rss_kib().unwrap_or(0)));
        }
    }
    let rate = fill as f64 / start.elapsed().as_secs_f64();
    let claim_start = Instant::now();
    let claimed = store
        .claim_due("probe", 100, Duration::from_secs(60))
        .await
        .expect("claim at depth");
    let claim_ms = claim_start.elapsed().as_secs_f64() * 1000.0;
    println!("| {backend}: fill to {fill} queued (batches of 1000) | {rate:.0} msgs/s |");
    println!("| {backend}: RSS before fill | {} MiB |", before / 1024);
    for (n, rss) in rows {
        println!("| {backend}: RSS at {n} queued | {} MiB |", rss / 1024);
    }
    println!(
        "| {backend}: claim 100 at depth {fill} | {claim_ms:.1} ms ({} claimed) |",
        claimed.len()
    );
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Whether the row group `name` runs (`FERRULE_BENCH_ONLY` is a comma-separated list).
fn selected(name: &str) -> bool {
    std::env::var("FERRULE_BENCH_ONLY").map_or(true, |only| only.split(',').any(|o| o == name))
}

/// Whether the SQLite rows of the `enqueue`, `claim` and `fill` groups run: unless the list
/// names `postgres` without `sqlite`, so `FERRULE_BENCH_ONLY=postgres,enqueue,claim` measures
/// only the PostgreSQL backend.
fn sqlite_selected() -> bool {
    selected("sqlite") || !selected("postgres")
}

fn main() {
    let secs = Duration::from_secs(env_u64("FERRULE_BENCH_SECS", 3));
    let fill = env_u64("FERRULE_BENCH_FILL", 1_000_000);
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = std::env::var_os("FERRULE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!("| measurement | result |");
        println!("|---|---|");
        if selected("fsync") {
            println!(
            "| raw fsync (4 KiB write + fdatasync) | {:.0} /s |",
            fsync_rate(&dir, secs)
        );
        }
        for sync in [Synchronous::Full, Synchronous::Normal]
            .into_iter()
            .filter(|_| sqlite_selected())
        {
            let label = format!("{sync:?}").to_uppercase();
            for submitters in [1, 16, 128].into_iter().filter(|_| selected("enqueue")) {
                let store = open(&dir, &format!("enq-{label}-{submitters}.db"), sync).await;
                let rate = enqueue_rate(&store, submitters, secs).await;
                println!(
                    "| SQLite synchronous={label}: acked enqueues, {submitters} submitters | {rate:.0} /s |"
                );
            }
            for claimers in [1, 2].into_iter().filter(|_| selected("claim")) {
                let store = open(&dir, &format!("claim-{label}-{claimers}.db"), sync).await;
                let rate = claim_complete_rate(&store, claimers, 128, 100_000).await;
                println!(
                    "| SQLite synchronous={label}: claim+complete, {claimers} claimers (batch 128) | {rate:.0} /s |"
                );
            }
        }
        #[cfg(feature = "postgres")]
        if let (true, Ok(url)) = (
            selected("postgres"),
            std::env::var("FERRULE_TEST_POSTGRES_URL"),
        ) {
            postgres_rows(&url, secs).await;
        }
        if fill > 0 && selected("fill") && sqlite_selected() {
            let store = open(&dir, "fill.db", Synchronous::Full).await;
            fill_rows(&store, "SQLite", fill).await;
        }
        #[cfg(feature = "postgres")]
        if let (true, true, Ok(url)) = (
            fill > 0 && selected("fill"),
            selected("postgres"),
            std::env::var("FERRULE_TEST_POSTGRES_URL"),
        ) {
            let schema = format!("ferrule_bench_{:08x}_fill", fastrand::u32(..));
            let store = open_pg(&url, &schema).await;
            fill_rows(&store, "PostgreSQL", fill).await;
            store.close().await;
            drop_schema(&url, &schema).await;
        }
    });
}

/// A PostgreSQL store in a fresh schema; the schema is dropped by [`drop_schema`].
#[cfg(feature = "postgres")]
async fn open_pg(url: &str, schema: &str) -> ferrule_store::PgStore {
    let pool = env_u64("FERRULE_BENCH_PG_POOL", 64);
    let sep = if url.contains('?') { '&' } else { '?' };
    ferrule_store::PgStore::open(
        &format!("{url}{sep}schema={schema}&pool_size={pool}"),
        StoreOptions::default(),
    )
    .await
    .expect("open PostgreSQL store")
}

#[cfg(feature = "postgres")]
async fn drop_schema(url: &str, schema: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&mut conn)
    .await
    .expect("drop bench schema");
}

#[cfg(feature = "postgres")]
async fn postgres_rows(url: &str, secs: Duration) {
    let run = fastrand::u32(..);
    for submitters in [1, 16, 128].into_iter().filter(|_| selected("enqueue")) {
        let schema = format!("ferrule_bench_{run:08x}_enq{submitters}");
        let store = open_pg(url, &schema).await;
        let rate = enqueue_rate(&store, submitters, secs).await;
        println!("| PostgreSQL: acked enqueues, {submitters} submitters | {rate:.0} /s |");
        store.close().await;
        drop_schema(url, &schema).await;
    }
    for claimers in [1, 2].into_iter().filter(|_| selected("claim")) {
        let schema = format!("ferrule_bench_{run:08x}_claim{claimers}");
        let store = open_pg(url, &schema).await;
        let rate = claim_complete_rate(&store, claimers, 128, 50_000).await;
        println!("| PostgreSQL: claim+complete, {claimers} claimers (batch 128) | {rate:.0} /s |");
        store.close().await;
        drop_schema(url, &schema).await;
    }
}
