//! The PostgreSQL backend: the conformance suite, plus what only a shared server can show —
//! several stores (as separate processes would be) on one schema, LISTEN/NOTIFY across them,
//! and bad URLs, missing databases and unreachable servers.
//!
//! Needs `FERRULE_TEST_POSTGRES_URL` (set by `scripts/test`). Every store under test gets its
//! own fresh schema, dropped when the test ends.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrule_policy::{Clock, ManualClock};
use ferrule_store::{
    Advance, AttemptReport, Duplicate, Enqueued, ErrorKind, Filter, Lease, NewInbound, NewMessage,
    NewRun, NewWait, PgStore, Recorded, RunChange, RunFilter, RunStatus, Status, Store, StoreError,
    StoreOptions, WaitOutcome, WaitState,
};
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::conformance::{Backend, Fixture};

/// The conformance suite's PostgreSQL backend.
pub(crate) struct Postgres;

impl Backend for Postgres {
    type Store = PgStore;

    async fn open(options: StoreOptions, clock: ManualClock) -> Fixture<PgStore> {
        let schema = TestSchema::new();
        let store = PgStore::open(&schema.url(), options).await.unwrap();
        Fixture {
            store,
            clock,
            _keep: Box::new(schema),
        }
    }
}

crate::conformance_tests!(crate::postgres::Postgres);
crate::run_conformance_tests!(crate::postgres::Postgres);
crate::audit_conformance_tests!(crate::postgres::Postgres);
crate::alert_conformance_tests!(crate::postgres::Postgres);
crate::pause_conformance_tests!(crate::postgres::Postgres);
crate::shared_breaker_conformance_tests!(crate::postgres::Postgres);
crate::shared_limit_conformance_tests!(crate::postgres::Postgres);
crate::chat_conformance_tests!(crate::postgres::Postgres);
crate::rollup_conformance_tests!(crate::postgres::Postgres);
crate::schedule_conformance_tests!(crate::postgres::Postgres);
crate::search_conformance_tests!(crate::postgres::Postgres);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_sigkill_loses_no_acked_message() {
    // Group commit answers a caller only after its batch's COMMIT: a SIGKILL of the process
    // at any moment may lose unanswered work, never an acknowledged message.
    let schema = TestSchema::new();
    crate::crash::sigkill_loses_no_acked_message(&schema.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_run_repeats_no_step_and_loses_none() {
    // A run's change commits with its message's end or not at all: a SIGKILL at any moment
    // leaves every run consistent, and walking the runs on afterwards runs no step twice.
    let schema = TestSchema::new();
    crate::crash::sigkill_mid_run_repeats_no_step(&schema.url()).await;
}

fn base_url() -> String {
    std::env::var("FERRULE_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "FERRULE_TEST_POSTGRES_URL is not set: run the tests with scripts/test, which points \
             them at the local PostgreSQL (postgres://postgres@127.0.0.1:5432/test)"
        )
    })
}

fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// A fresh schema name, dropped (with everything in it) on drop.
struct TestSchema {
    name: String,
}

impl TestSchema {
    fn new() -> Self {
        TestSchema {
            name: format!("ferrule_test_{:016x}", fastrand::u64(..)),
        }
    }

    fn url(&self) -> String {
        with_param(&base_url(), &format!("schema={}", self.name))
    }

    async fn sql(&self, sql: &str) {
        let mut conn = PgConnection::connect(&base_url()).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(sql.replace("{schema}", &self.name)))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let sql = format!(
            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.name
        );
        let Ok(url) = std::env::var("FERRULE_TEST_POSTGRES_URL") else {
            return;
        };
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&url).await.ok()?;
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// `n` stores on one schema, each with its own pool, sharing `clock`.
async fn stores(schema: &TestSchema, clock: &ManualClock, n: usize) -> Vec<PgStore> {
    let mut out = Vec::new();
    for _ in 0..n {
        let url = with_param(&schema.url(), "pool_size=4");
        out.push(
            PgStore::open(&url, StoreOptions::with_clock(clock.shared()))
                .await
                .unwrap(),
        );
    }
    out
}

fn msg(n: u32) -> NewMessage {
    NewMessage::new("d", json!({ "n": n }))
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimers_in_separate_stores_never_share_a_message() {
    let schema = TestSchema::new();
    let clock = ManualClock::new();
    let stores = stores(&schema, &clock, 4).await;
    let total = 400;
    stores[0]
        .enqueue_batch((0..total).map(msg).collect())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for (w, store) in stores.iter().enumerate() {
        for t in 0..2 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let owner = format!("store{w}-task{t}");
                let mut mine = Vec::new();
                loop {
                    let batch = store.claim_due(&owner, 5, LEASE).await.unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    for c in batch {
                        store
                            .complete(&c.lease, AttemptReport::success())
                            .await
                            .unwrap();
                        mine.push(c.message.id);
                    }
                }
            }));
        }
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), total as usize, "every message claimed once");
    assert_eq!(unique.len(), total as usize, "no message claimed twice");
    let stats = stores[1].stats(Duration::from_secs(60)).await.unwrap();
    assert_eq!(stats.by_status.delivered, u64::from(total));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_submits_across_stores_create_one_message() {
    let schema = TestSchema::new();
    let clock = ManualClock::new();
    let stores = stores(&schema, &clock, 4).await;
    for round in 0..5 {
        let key = format!("key-{round}");
        let mut tasks = Vec::new();
        for store in &stores {
            for n in 0..8 {
                let store = store.clone();
                let key = key.clone();
                tasks.push(tokio::spawn(async move {
                    store.enqueue(msg(n).idempotency_key(key)).await.unwrap()
                }));
            }
        }
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        let created = answers.iter().filter(|a| a.is_created()).count();
        let ids: HashSet<_> = answers.iter().map(|a| a.id()).collect();
        assert_eq!(created, 1, "round {round}: exactly one created");
        assert_eq!(ids.len(), 1, "round {round}: every answer names it");
    }
    let page = stores[0].list(&Filter::all(), None, 100).await.unwrap();
    assert_eq!(page.messages.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_leases_are_reclaimed_once_across_stores_and_fence_the_first_worker() {
    let schema = TestSchema::new();
    let clock = ManualClock::new();
    let stores = stores(&schema, &clock, 4).await;
    stores[0]
        .enqueue_batch((0..60).map(msg).collect())
        .await
        .unwrap();
    let first = stores[0]
        .claim_due("crashed", 100, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(first.len(), 60);
    assert!(
        stores[1]
            .claim_due("w", 10, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    clock.advance(Duration::from_secs(11));
    let mut tasks = Vec::new();
    for (w, store) in stores.iter().enumerate() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_due(&format!("w{w}"), 3, LEASE).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch);
            }
        }));
    }
    let mut again = Vec::new();
    for t in tasks {
        again.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = again.iter().map(|c| c.message.id).collect();
    assert_eq!(again.len(), 60);
    assert_eq!(unique.len(), 60);
    assert!(again.iter().all(|c| c.message.attempts == 2));
    // The crashed worker's late results are refused; the new holders' are accepted.
    for c in &first {
        let err = stores[2]
            .complete(&c.lease, AttemptReport::success())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::LeaseLost, "{err}");
    }
    for c in &again {
        stores[3]
            .complete(&c.lease, AttemptReport::success())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_holds_across_concurrent_claimers_in_separate_stores() {
    let schema = TestSchema::new();
    let clock = ManualClock::new();
    let stores = stores(&schema, &clock, 2).await;
    let mut ids = Vec::new();
    for n in 0..15 {
        ids.push(
            stores[0]
                .enqueue(msg(n).ordering_key("chat"))
                .await
                .unwrap()
                .id(),
        );
    }
    for expected in ids {
        let (a, b) = tokio::join!(
            stores[0].claim_due("a", 10, LEASE),
            stores[1].claim_due("b", 10, LEASE)
        );
        let claimed: Vec<_> = a.unwrap().into_iter().chain(b.unwrap()).collect();
        assert_eq!(claimed.len(), 1, "one message of the key at a time");
        assert_eq!(claimed[0].message.id, expected, "oldest first");
        stores[1]
            .complete(&claimed[0].lease, AttemptReport::success())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_a_waiter_in_another_store_and_not_in_another_schema() {
    let schema = TestSchema::new();
    let other = TestSchema::new();
    let clock = ManualClock::new();
    let stores = stores(&schema, &clock, 2).await;
    let elsewhere = PgStore::open(&other.url(), StoreOptions::with_clock(clock.shared()))
        .await
        .unwrap();
    // The first wait starts the listener and returns at once.
    tokio::time::timeout(Duration::from_secs(10), stores[1].wait_for_work())
        .await
        .expect("first wait starts listening");
    let waiter = {
        let store = stores[1].clone();
        tokio::spawn(async move { store.wait_for_work().await })
    };
    elsewhere.enqueue(msg(0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "woken by another schema's work or nothing"
    );
    stores[0].enqueue(msg(1)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken by the other store's enqueue")
        .unwrap();
    // A reschedule is new work for every process.
    let c = stores[0].claim_due("w", 10, LEASE).await.unwrap();
    let waiter = {
        let store = stores[1].clone();
        tokio::spawn(async move { store.wait_for_work().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let at = clock.system_now() + Duration::from_secs(5);
    stores[0]
        .reschedule(
            &c[0].lease,
            at,
            AttemptReport::failure(ferrule_store::OutcomeClass::Transient, "503"),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken by the reschedule")
        .unwrap();
}

/// Waits on `store` in a task of its own.
fn waiter(store: &PgStore) -> tokio::task::JoinHandle<()> {
    let store = store.clone();
    tokio::spawn(async move { store.wait_for_work().await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_ignores_its_own_notifications_and_final_ends_wake_no_one() {
    let schema = TestSchema::new();
    let clock = ManualClock::new();
    let stores = stores(&schema, &clock, 2).await;
    for store in &stores {
        tokio::time::timeout(Duration::from_secs(10), store.wait_for_work())
            .await
            .expect("first wait starts listening");
    }
    // The first notification of a connection may come back before its sender's pid is known:
    // send one, and let any echo of it land and be taken.
    let other = waiter(&stores[1]);
    stores[0].enqueue(msg(0)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), other)
        .await
        .expect("another store is notified")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for store in &stores {
        let _ = tokio::time::timeout(Duration::from_millis(50), store.wait_for_work()).await;
    }

    // A delivered message without an ordering key makes nothing claimable: no one is woken.
    let claimed = stores[0].claim_due("w", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let waiters = [waiter(&stores[0]), waiter(&stores[1])];
    stores[0]
        .complete(&claimed[0].lease, AttemptReport::success())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (n, w) in waiters.iter().enumerate() {
        assert!(!w.is_finished(), "store {n} woken by a delivery");
    }

    // An enqueue wakes the enqueuing store once, at once, and the other store through its
    // notification; the notification does not come back to its sender as a second wake.
    let [own, other] = waiters;
    stores[0].enqueue(msg(1)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), own)
        .await
        .expect("the enqueuing store wakes itself")
        .unwrap();
    let again = waiter(&stores[0]);
    tokio::time::timeout(Duration::from_secs(10), other)
        .await
        .expect("the other store is notified")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !again.is_finished(),
        "the enqueuing store woken again by its own notification"
    );
    again.abort();

    // The end of a message with an ordering key may free the next of its key: the other
    // store is notified.
    stores[0].enqueue(msg(2).ordering_key("k")).await.unwrap();
    let claimed = stores[0].claim_due("w", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let keyed = claimed
        .iter()
        .find(|c| c.message.ordering_key.is_some())
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = tokio::time::timeout(Duration::from_millis(50), stores[1].wait_for_work()).await;
    let other = waiter(&stores[1]);
    stores[0]
        .complete(&keyed.lease, AttemptReport::success())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), other)
        .await
        .expect("the other store is notified of the end of a keyed message")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_due_time_a_claim_read_holds_until_a_wake() {
    let schema = TestSchema::new();
    let clock = ManualClock::new();
    let stores = stores(&schema, &clock, 2).await;
    let now = clock.system_now();
    let ahead = now + Duration::from_secs(60);
    stores[0].enqueue(msg(0)).await.unwrap();
    stores[0].enqueue(msg(1).not_before(ahead)).await.unwrap();
    let claimed = stores[0].claim_due("w", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    // The claimed message falls due again when its lease expires, before the scheduled one.
    let expires = claimed[0].lease.expires_at;
    assert_eq!(stores[0].next_due_at().await.unwrap(), Some(expires));
    // Another process schedules a message sooner: its notification ends what the claim read.
    let sooner = now + Duration::from_secs(5);
    let millis = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis();
    stores[0].wait_for_work().await;
    stores[1].enqueue(msg(2).not_before(sooner)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let due = loop {
        let due = stores[0].next_due_at().await.unwrap().unwrap();
        if millis(due) == millis(sooner) {
            break due;
        }
        assert!(Instant::now() < deadline, "still {due:?}, not {sooner:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // A claim that takes nothing still reads the next due time; then it is taken when due.
    assert!(
        stores[0]
            .claim_due("w", 10, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(stores[0].next_due_at().await.unwrap(), Some(due));
    clock.advance(Duration::from_secs(5));
    let claimed = stores[0].claim_due("w", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(stores[0].next_due_at().await.unwrap(), Some(expires));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_while_no_one_waits_is_kept_for_the_next_wait() {
    let schema = TestSchema::new();
    let clock = ManualClock::new();
    let stores = stores(&schema, &clock, 2).await;
    for store in &stores {
        tokio::time::timeout(Duration::from_secs(10), store.wait_for_work())
            .await
            .expect("first wait starts listening");
    }
    // Nothing waits now, as when a dispatcher is busy claiming: the enqueuing store's own wake
    // and (if it arrives first) the other store's notification are kept for the next wait.
    stores[0].enqueue(msg(0)).await.unwrap();
    for (n, store) in stores.iter().enumerate() {
        tokio::time::timeout(Duration::from_secs(10), store.wait_for_work())
            .await
            .unwrap_or_else(|_| panic!("store {n} keeps the wake"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_enqueues_wakes_another_store_only_a_few_times() {
    // The listener's `WAKE_INTERVAL`: forwarded wakes are at least this far apart.
    const INTERVAL: Duration = Duration::from_millis(10);
    const BURST: u32 = 200;
    let schema = TestSchema::new();
    let clock = ManualClock::new();
    let stores = stores(&schema, &clock, 2).await;
    tokio::time::timeout(Duration::from_secs(10), stores[1].wait_for_work())
        .await
        .expect("first wait starts listening");
    let started = Instant::now();
    let woken = Arc::new(AtomicU64::new(0));
    let counter = {
        let (store, woken) = (stores[1].clone(), woken.clone());
        tokio::spawn(async move {
            loop {
                store.wait_for_work().await;
                woken.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // One at a time, so each commit pokes on its own: uncoalesced, every one of them would be a
    // notification and a wake of the other store.
    for n in 0..BURST {
        stores[0].enqueue(msg(n)).await.unwrap();
    }
    let burst = started.elapsed();
    // Time for the last notification to arrive and be forwarded.
    tokio::time::sleep(INTERVAL * 5).await;
    counter.abort();
    let _ = counter.await;
    let elapsed = started.elapsed();
    let woken = woken.load(Ordering::Relaxed);
    // Each wait returns for one wake at most, and wakes are an interval apart: at most one per
    // interval started (the first one at once), plus one for slack.
    let bound = (elapsed.as_micros() / INTERVAL.as_micros()) as u64 + 2;
    assert!(woken >= 1, "never woken by {BURST} enqueues");
    assert!(
        woken <= bound,
        "{woken} wakes for {BURST} enqueues over {burst:?} ({elapsed:?} counted): more than \
         one per {INTERVAL:?}"
    );
}

#[tokio::test]
async fn unreachable_server_is_a_transient_typed_error() {
    let err = ferrule_store::open(
        "postgres://postgres:hunter2@127.0.0.1:1/test?connect_timeout=2",
        StoreOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
}

#[tokio::test]
async fn silent_server_times_out_as_unreachable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and never answers.
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let started = std::time::Instant::now();
    let err = PgStore::open(
        &format!("postgres://postgres@{addr}/test?connect_timeout=0.3"),
        StoreOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    hold.abort();
}

#[tokio::test]
async fn malformed_urls_are_config_errors() {
    for url in [
        "postgres://u:secret@host:notaport/db",
        "postgres://u:secret@host/db?pool_size=many",
        "postgres://u:secret@host/db?schema=Bad-Name",
        "postgres://u:secret@host",
    ] {
        let err = ferrule_store::open(url, StoreOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}

#[tokio::test]
async fn missing_database_is_an_open_error() {
    let base = base_url();
    let (head, query) = base.split_once('?').unwrap_or((&base, ""));
    let slash = head.rfind('/').unwrap();
    let url = format!("{}/ferrule_no_such_database?{query}", &head[..slash]);
    let err = PgStore::open(&url, StoreOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Open, "{err}");
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("ferrule_no_such_database"), "{chain}");
}

#[tokio::test]
async fn newer_schema_version_is_refused() {
    let schema = TestSchema::new();
    drop(
        PgStore::open(&schema.url(), StoreOptions::default())
            .await
            .unwrap(),
    );
    schema
        .sql(
            "UPDATE \"{schema}\".store_meta SET value = '999' WHERE key = 'ferrule.schema_version'",
        )
        .await;
    let err = PgStore::open(&schema.url(), StoreOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 999,
                supported: 1..999,
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn schema_of_another_application_is_refused() {
    let schema = TestSchema::new();
    schema
        .sql("CREATE SCHEMA \"{schema}\"; CREATE TABLE \"{schema}\".messages (body text)")
        .await;
    let err = PgStore::open(&schema.url(), StoreOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("not a ferrule store"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_opening_one_schema_at_once_migrate_it_once() {
    let schema = TestSchema::new();
    let url = schema.url();
    let opens: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgStore::open(&url, StoreOptions::default()).await })
        })
        .collect();
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.unwrap().unwrap());
    }
    let id = stores[0].enqueue(msg(1)).await.unwrap().id();
    let got = stores[5].get(id).await.unwrap().unwrap();
    assert_eq!(got.message.status, Status::Queued);
}

/// Holds the store's writer tasks inside their transactions, so that what is submitted next
/// waits in the queue and is written as one batch once [`Stall::release`] is called.
struct Stall {
    conn: PgConnection,
    blockers: Vec<tokio::task::JoinHandle<()>>,
}

impl Stall {
    /// Locks the `events` table (every write adds an event) and gives each of the store's
    /// writer tasks an enqueue to get stuck on.
    async fn start(schema: &TestSchema, store: &PgStore) -> Self {
        let mut conn = PgConnection::connect(&base_url()).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "BEGIN; LOCK TABLE \"{}\".events IN EXCLUSIVE MODE",
            schema.name
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        let mut blockers = Vec::new();
        // More blockers than writer tasks: each task takes one and waits on the lock; the
        // rest wait in the queue, ahead of what the test submits.
        for n in 0..2 {
            let store = store.clone();
            blockers.push(tokio::spawn(async move {
                store.enqueue(msg(1000 + n)).await.unwrap();
            }));
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        Stall { conn, blockers }
    }

    /// Lets the writers go after what the test submitted has had time to queue up.
    async fn release(mut self) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for b in &self.blockers {
            assert!(!b.is_finished(), "the writers were not stalled");
        }
        sqlx::raw_sql("COMMIT")
            .execute(&mut self.conn)
            .await
            .unwrap();
        for b in self.blockers {
            b.await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_the_database_refuses_fails_only_its_caller_in_a_batch() {
    let schema = TestSchema::new();
    let clock = ManualClock::new();
    let store = stores(&schema, &clock, 1).await.remove(0);
    let stall = Stall::start(&schema, &store).await;
    let mut good = Vec::new();
    for n in 0..8 {
        let store = store.clone();
        good.push(tokio::spawn(async move { store.enqueue(msg(n)).await }));
    }
    // serde_json writes U+0000 as `\u0000`, which `jsonb` cannot store.
    let bad = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .enqueue(NewMessage::new("d", json!({ "text": "nul \u{0} byte" })))
                .await
        })
    };
    let bad_batch = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .enqueue_batch(vec![
                    msg(100),
                    NewMessage::new("d", json!(1)).headers(json!({ "x": "\u{0}" })),
                ])
                .await
        })
    };
    let good_batch = {
        let store = store.clone();
        tokio::spawn(async move { store.enqueue_batch(vec![msg(200), msg(201)]).await })
    };
    stall.release().await;
    let err = bad.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Database, "{err}");
    let err = bad_batch.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Database, "{err}");
    let mut ids = Vec::new();
    for t in good {
        ids.push(t.await.unwrap().unwrap().id());
    }
    ids.extend(good_batch.await.unwrap().unwrap().iter().map(Enqueued::id));
    for id in &ids {
        let got = store.get(*id).await.unwrap().expect("stored");
        assert_eq!(got.events.len(), 1);
    }
    let page = store.list(&Filter::all(), None, 100).await.unwrap();
    // 8 single enqueues, the good batch of 2 and the 2 blockers; nothing of the bad batch.
    assert_eq!(page.messages.len(), 12);
    assert!(
        !page
            .messages
            .iter()
            .any(|m| m.payload == json!({ "n": 100 }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_complete_fails_only_its_caller_in_a_batch() {
    let schema = TestSchema::new();
    let clock = ManualClock::new();
    let store = stores(&schema, &clock, 1).await.remove(0);
    store
        .enqueue_batch((0..6).map(msg).collect())
        .await
        .unwrap();
    let claimed = store.claim_due("w", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 6);
    let stale = Lease {
        token: "not-the-token".into(),
        ..claimed[0].lease.clone()
    };
    let stall = Stall::start(&schema, &store).await;
    let report = |lease: Lease| {
        let store = store.clone();
        tokio::spawn(async move { store.complete(&lease, AttemptReport::success()).await })
    };
    let stale_task = report(stale);
    let good: Vec<_> = claimed[1..]
        .iter()
        .map(|c| report(c.lease.clone()))
        .collect();
    // The same lease reported twice in one batch: the first wins, the second is fenced.
    let twice = [report(claimed[1].lease.clone())];
    stall.release().await;
    let err = stale_task.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost, "{err}");
    let mut outcomes = Vec::new();
    for t in good.into_iter().chain(twice) {
        outcomes.push(t.await.unwrap());
    }
    let lost = outcomes.iter().filter(|o| o.is_err()).count();
    assert_eq!(lost, 1, "exactly one of the two reports on one lease fails");
    for c in &claimed[1..] {
        let got = store.get(c.message.id).await.unwrap().unwrap();
        assert_eq!(got.message.status, Status::Delivered);
        let statuses: Vec<_> = got.events.iter().map(|e| e.status).collect();
        assert_eq!(
            statuses,
            [Status::Queued, Status::Delivering, Status::Delivered],
            "one event per transition"
        );
    }
    let fenced = store.get(claimed[0].message.id).await.unwrap().unwrap();
    assert_eq!(fenced.message.status, Status::Delivering);
    assert_eq!(fenced.events.len(), 2);
    store
        .complete(&claimed[0].lease, AttemptReport::success())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferrals_fold_row_by_row_in_one_batch() {
    let schema = TestSchema::new();
    let clock = ManualClock::new();
    let store = stores(&schema, &clock, 1).await.remove(0);
    let ids: Vec<_> = store
        .enqueue_batch((0..6).map(msg).collect())
        .await
        .unwrap()
        .iter()
        .map(Enqueued::id)
        .collect();
    for c in store.claim_due("w", 10, LEASE).await.unwrap() {
        store
            .defer(&c.lease, clock.system_now(), "circuit open")
            .await
            .unwrap();
    }
    let claimed = store.claim_due("w", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 6);
    clock.advance(Duration::from_secs(1));
    let stall = Stall::start(&schema, &store).await;
    // Written together: four repeats that fold, a deferral for another reason that appends,
    // and a completion.
    let tasks: Vec<_> = claimed
        .iter()
        .map(|c| {
            let store = store.clone();
            let lease = c.lease.clone();
            let n = c.message.payload["n"].as_u64().unwrap();
            let now = clock.system_now();
            tokio::spawn(async move {
                match n {
                    0..=3 => store.defer(&lease, now, "circuit open").await,
                    4 => store.defer(&lease, now, "rate limited").await,
                    _ => store.complete(&lease, AttemptReport::success()).await,
                }
            })
        })
        .collect();
    stall.release().await;
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for (n, id) in ids.iter().enumerate() {
        let d = store.get(*id).await.unwrap().unwrap();
        let got: Vec<_> = d
            .events
            .iter()
            .map(|e| (e.seq, e.status, e.detail.clone(), e.repeats, e.last_at))
            .collect();
        let deferred = (3, Status::Queued, Some("circuit open".to_owned()), 1, None);
        let claim_and = |status, detail: Option<&str>| {
            [
                (4, Status::Delivering, Some("w".to_owned()), 1, None),
                (5, status, detail.map(str::to_owned), 1, None),
            ]
        };
        let expected: Vec<_> = match n {
            0..=3 => vec![(
                3,
                Status::Queued,
                Some("circuit open".to_owned()),
                2,
                Some(clock.system_now()),
            )],
            4 => [deferred.clone()]
                .into_iter()
                .chain(claim_and(Status::Queued, Some("rate limited")))
                .collect(),
            _ => [deferred.clone()]
                .into_iter()
                .chain(claim_and(Status::Delivered, None))
                .collect(),
        };
        assert_eq!(got[2..], expected, "message {n}");
        assert_eq!(d.events.len(), 2 + expected.len(), "message {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_in_one_batch_create_one_message() {
    let schema = TestSchema::new();
    let clock = ManualClock::new();
    let store = stores(&schema, &clock, 1).await.remove(0);
    let stall = Stall::start(&schema, &store).await;
    let tasks: Vec<_> = (0..10)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.enqueue(msg(n).idempotency_key("k")).await })
        })
        .collect();
    stall.release().await;
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap().unwrap());
    }
    let created: Vec<_> = answers.iter().filter(|a| a.is_created()).collect();
    assert_eq!(created.len(), 1);
    let original = created[0].id();
    assert!(answers.iter().all(|a| a.id() == original));
    let page = store
        .list(&Filter::all().destination("d"), None, 100)
        .await
        .unwrap();
    let keyed: Vec<_> = page
        .messages
        .iter()
        .filter(|m| m.idempotency_key.is_some())
        .collect();
    assert_eq!(keyed.len(), 1);
    assert_eq!(keyed[0].id, original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_in_one_batch_and_across_stores_report_status_and_conflicts() {
    let schema = TestSchema::new();
    let clock = ManualClock::new();
    let stores = stores(&schema, &clock, 2).await;
    let stall = Stall::start(&schema, &stores[0]).await;
    let fingerprint = |n: u32| [u8::from(n.is_multiple_of(2)); 32];
    let keyed = move |n: u32| msg(n).idempotency_key("k").fingerprint(fingerprint(n));
    // Enqueues queue up behind the stall and are written in one batch, with forwards of new
    // inbound events that use the same key; more enqueues race them through a second store
    // (another process).
    let mut tasks = Vec::new();
    for n in 0..16 {
        let store = stores[(n % 4 == 3) as usize].clone();
        tasks.push(tokio::spawn(async move {
            (n, store.enqueue(keyed(n)).await.unwrap())
        }));
    }
    for n in 16..22 {
        let store = stores[0].clone();
        tasks.push(tokio::spawn(async move {
            let recorded = store.record_inbound(inbound(n, keyed(n))).await.unwrap();
            assert!(recorded.is_created(), "{recorded:?}");
            (n, recorded.forward().expect("a forward's answer"))
        }));
    }
    stall.release().await;
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let created: Vec<_> = answers.iter().filter(|(_, a)| a.is_created()).collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    let (creator, original) = (created[0].0, created[0].1.id());
    for (n, answer) in &answers {
        if *n == creator {
            continue;
        }
        assert_eq!(
            *answer,
            Enqueued::Duplicate(Duplicate {
                id: original,
                status: Some(Status::Queued),
                conflict: fingerprint(*n) != fingerprint(creator),
            }),
            "answer {n}"
        );
    }
    let keyed_messages = stores[1]
        .list(&Filter::all().destination("d"), None, 100)
        .await
        .unwrap()
        .messages
        .into_iter()
        .filter(|m| m.idempotency_key.is_some())
        .count();
    assert_eq!(keyed_messages, 1);
}

fn inbound(update_id: u32, forward: NewMessage) -> NewInbound {
    NewInbound::new(
        "telegram:bot",
        update_id.to_string(),
        json!({ "update_id": update_id }),
    )
    .forward(forward)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_inbound_events_in_one_batch_and_across_stores_record_one() {
    let schema = TestSchema::new();
    let clock = ManualClock::new();
    let stores = stores(&schema, &clock, 2).await;
    let stall = Stall::start(&schema, &stores[0]).await;
    // Ten redeliveries of one update queue up behind the stall and are written in one batch;
    // ten more race them through a second store (another process).
    let tasks: Vec<_> = (0..20)
        .map(|n| {
            let store = stores[n % 2].clone();
            tokio::spawn(async move { store.record_inbound(inbound(5, msg(5))).await })
        })
        .collect();
    stall.release().await;
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap().unwrap());
    }
    assert_eq!(answers.iter().filter(|a| a.is_created()).count(), 1);
    let original = answers.iter().find(|a| a.is_created()).unwrap().id();
    assert!(answers.iter().all(|a| a.id() == original), "{answers:?}");
    let events = stores[0].list_inbound(None, None, 100).await.unwrap();
    assert_eq!(events.events.len(), 1);
    let forwarded = stores[0]
        .list(&Filter::all().destination("d"), None, 100)
        .await
        .unwrap()
        .messages
        .into_iter()
        .filter(|m| m.payload == json!({ "n": 5 }))
        .count();
    assert_eq!(forwarded, 1, "forwarded exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_event_whose_forward_the_database_refuses_is_not_recorded() {
    let schema = TestSchema::new();
    let clock = ManualClock::new();
    let store = stores(&schema, &clock, 1).await.remove(0);
    let stall = Stall::start(&schema, &store).await;
    // `jsonb` cannot store U+0000: the forward fails at the database, inside the event's
    // transaction, so the event must not be recorded either.
    let bad = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .record_inbound(inbound(1, NewMessage::new("d", json!({ "t": "\u{0}" }))))
                .await
        })
    };
    let good: Vec<_> = (2..6)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.record_inbound(inbound(n, msg(n))).await })
        })
        .collect();
    stall.release().await;
    let err = bad.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Database, "{err}");
    for t in good {
        assert!(matches!(
            t.await.unwrap().unwrap(),
            Recorded::Created { .. }
        ));
    }
    let ids: Vec<String> = store
        .list_inbound(None, None, 100)
        .await
        .unwrap()
        .events
        .into_iter()
        .map(|e| e.external_id)
        .collect();
    assert_eq!(ids.len(), 4);
    assert!(!ids.contains(&"1".to_owned()), "{ids:?}");
    // Not recorded, so its redelivery (with a forward that fits) is new.
    assert!(
        store
            .record_inbound(inbound(1, msg(1)))
            .await
            .unwrap()
            .is_created()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_on_the_server_is_storage_full_and_loses_nothing_acked() {
    // The shared server's disk cannot be filled, so a trigger raises the same SQLSTATE the
    // server raises when it cannot extend a file (53100 disk_full), through the real driver
    // and the real group-commit path.
    let schema = TestSchema::new();
    let clock = ManualClock::new();
    let store = PgStore::open(&schema.url(), StoreOptions::with_clock(clock.shared()))
        .await
        .unwrap();
    let acked = store.enqueue(msg(1)).await.unwrap().id();
    let claimed = store.claim_due("w", 1, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    schema
        .sql(
            "CREATE FUNCTION \"{schema}\".no_space() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'
                 USING ERRCODE = 'disk_full'; END $$;
             CREATE TRIGGER no_space BEFORE INSERT ON \"{schema}\".events
                 FOR EACH ROW EXECUTE FUNCTION \"{schema}\".no_space();",
        )
        .await;
    let err = store.enqueue(msg(2)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StorageFull, "{err}");
    assert!(err.is_transient());
    // The dispatcher's writes fail the same way, and leave the message leased: nothing is
    // marked delivered or dead.
    let err = store
        .complete(&claimed[0].lease, AttemptReport::success())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StorageFull, "{err}");
    let detail = store.get(acked).await.unwrap().unwrap();
    assert_eq!(detail.message.status, Status::Delivering);

    schema
        .sql("DROP TRIGGER no_space ON \"{schema}\".events")
        .await;
    store
        .complete(&claimed[0].lease, AttemptReport::success())
        .await
        .unwrap();
    assert!(store.enqueue(msg(2)).await.unwrap().is_created());
    let detail = store.get(acked).await.unwrap().unwrap();
    assert_eq!(detail.message.status, Status::Delivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_of_one_run_across_stores_make_one_run() {
    let schema = TestSchema::new();
    let clock = ManualClock::new();
    let stores = stores(&schema, &clock, 4).await;
    for round in 0..5 {
        let key = format!("<pr-{round}@github.com>");
        let mut tasks = Vec::new();
        for store in &stores {
            for n in 0..6 {
                let store = store.clone();
                let key = key.clone();
                tasks.push(tokio::spawn(async move {
                    store
                        .start_run(
                            NewRun::new("pr-review", key, "received", json!({})),
                            RunChange::new().enqueue("card", msg(n)),
                        )
                        .await
                        .unwrap()
                }));
            }
        }
        let mut started = Vec::new();
        for t in tasks {
            started.push(t.await.unwrap());
        }
        assert_eq!(
            started.iter().filter(|s| s.is_created()).count(),
            1,
            "round {round}: exactly one run created"
        );
        let ids: HashSet<_> = started.iter().map(|s| s.run().id).collect();
        assert_eq!(ids.len(), 1, "round {round}: every answer names it");
        let run = stores[0]
            .get_run(*ids.iter().next().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(run.messages.len(), 1, "round {round}: one card");
    }
    let page = stores[1]
        .list_runs(&RunFilter::all(), None, 100)
        .await
        .unwrap();
    assert_eq!(page.runs.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_and_the_timer_in_other_stores_close_a_wait_once() {
    let schema = TestSchema::new();
    let clock = ManualClock::new();
    let stores = stores(&schema, &clock, 3).await;
    for round in 0..10 {
        let token = format!("round{round:0>17}");
        let expires = clock.system_now() + Duration::from_secs(60);
        let run = stores[0]
            .start_run(
                NewRun::new("r", format!("k{round}"), "waiting", json!({})),
                RunChange::new()
                    .status(RunStatus::Waiting)
                    .open_wait(NewWait::new(token.clone(), "approval", expires)),
            )
            .await
            .unwrap()
            .run()
            .clone();
        // At the expiry, in one process the timer fires, in two others people press.
        clock.advance(Duration::from_secs(60));
        let timer = stores[0].claim_due("w", 10, LEASE).await.unwrap().remove(0);
        let expire = {
            let (store, token) = (stores[0].clone(), token.clone());
            tokio::spawn(async move {
                store
                    .complete_and_advance(
                        &timer.lease,
                        AttemptReport::success(),
                        Advance::new(
                            run.id,
                            run.version,
                            RunChange::new()
                                .status(RunStatus::Expired)
                                .close_wait(token, WaitOutcome::Expired),
                        ),
                    )
                    .await
            })
        };
        let presses: Vec<_> = (1..3)
            .map(|n| {
                let (store, token) = (stores[n].clone(), token.clone());
                tokio::spawn(async move {
                    store
                        .advance_run(Advance::new(
                            run.id,
                            run.version,
                            RunChange::new().status(RunStatus::Active).close_wait(
                                token,
                                WaitOutcome::Consumed {
                                    by: n.to_string(),
                                    action: "approve".into(),
                                },
                            ),
                        ))
                        .await
                })
            })
            .collect();
        let mut results = vec![expire.await.unwrap()];
        for p in presses {
            results.push(p.await.unwrap());
        }
        // The expiry is due, so the presses are refused whoever commits first.
        assert!(results[0].is_ok(), "round {round}: {:?}", results[0]);
        for r in &results[1..] {
            let err = r.as_ref().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::RunConflict, "round {round}: {err}");
        }
        let detail = stores[2].get_run(run.id).await.unwrap().unwrap();
        assert_eq!(detail.run.status, RunStatus::Expired);
        assert_eq!(detail.run.version, 2);
        assert_eq!(detail.waits[0].state, WaitState::Expired);
    }
    // Before the expiry, presses in three processes: exactly one consumes.
    let expires = clock.system_now() + Duration::from_secs(60);
    let run = stores[0]
        .start_run(
            NewRun::new("r", "presses", "waiting", json!({})),
            RunChange::new().open_wait(NewWait::new("pressespressespresses", "approval", expires)),
        )
        .await
        .unwrap()
        .run()
        .clone();
    let presses: Vec<_> = (0..3)
        .flat_map(|n| std::iter::repeat_n(n, 4))
        .map(|n| {
            let store = stores[n].clone();
            tokio::spawn(async move {
                store
                    .advance_run(Advance::new(
                        run.id,
                        run.version,
                        RunChange::new().close_wait(
                            "pressespressespresses",
                            WaitOutcome::Consumed {
                                by: n.to_string(),
                                action: "approve".into(),
                            },
                        ),
                    ))
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for p in presses {
        match p.await.unwrap() {
            Ok(_) => won += 1,
            Err(e) => assert_eq!(e.kind(), ErrorKind::RunConflict, "{e}"),
        }
    }
    assert_eq!(won, 1);
    let timer = stores[1]
        .find_wait("pressespressespresses")
        .await
        .unwrap()
        .unwrap()
        .timer
        .unwrap();
    let timer = stores[1].get(timer).await.unwrap().unwrap();
    assert_eq!(timer.message.status, Status::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn run_transition_latency() {
    crate::runs::print_transition_latency::<Postgres>("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_flushes_from_two_instances_add_up() {
    // Two relays share one database: each flushes its own batches of the same minutes, at the
    // same time; every count lands, none overwrites another.
    use ferrule_store::RollupBatch;
    use ferrule_store::rollup::MINUTE;
    let schema = TestSchema::new();
    let open = || async {
        PgStore::open(&schema.url(), StoreOptions::default())
            .await
            .unwrap()
    };
    let (a, b) = (open().await, open().await);
    let start = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let batch = |n: u64| {
        let mut batch = RollupBatch::new();
        for i in 0..n {
            let at = start + Duration::from_secs(i % 120);
            batch.delivered(
                at,
                "hook",
                Duration::from_millis(i),
                Duration::from_millis(i),
            );
            batch.retried(at, "mail", Duration::from_millis(1), "status 503");
            batch.run(at, "pr", ferrule_store::RunOutcome::Started);
        }
        batch
    };
    let flushes = |store: PgStore| {
        let batch = batch(10);
        tokio::spawn(async move {
            for _ in 0..20 {
                store.add_rollups(&batch).await.unwrap();
            }
        })
    };
    let (x, y) = (flushes(a.clone()), flushes(b.clone()));
    x.await.unwrap();
    y.await.unwrap();
    let series = a
        .rollup_series(&ferrule_store::SeriesQuery::new(
            start,
            start + 2 * MINUTE,
            2 * MINUTE,
        ))
        .await
        .unwrap();
    let (d, r) = series.totals();
    assert_eq!(d.delivered, 2 * 20 * 10);
    assert_eq!(d.retried, 2 * 20 * 10);
    assert_eq!(d.delivery_latency.count(), 400);
    assert_eq!(r.started, 400);
    let reasons = b
        .rollup_reasons(start, start + 2 * MINUTE, Some("mail"), 5)
        .await
        .unwrap();
    assert_eq!(reasons.len(), 1);
    assert_eq!(reasons[0].count, 400);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occurrences_tried_by_separate_stores_fire_once() {
    use ferrule_store::{NewOccurrence, OccurrenceAction};
    let schema = TestSchema::new();
    let clock = ManualClock::new();
    let stores = stores(&schema, &clock, 3).await;
    let rounds = 20u64;
    for round in 0..rounds {
        let mut tasks = Vec::new();
        for store in &stores {
            for _ in 0..3 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let occurrence = NewOccurrence {
                        schedule: "digest".into(),
                        scheduled_for: std::time::UNIX_EPOCH + Duration::from_secs(60 * round),
                        manual: false,
                        action: OccurrenceAction::Enqueue(
                            msg(0).idempotency_key(format!("schedule:digest:{round}")),
                        ),
                    };
                    store.record_occurrence(occurrence).await.unwrap()
                }));
            }
        }
        let mut created = 0;
        for t in tasks {
            created += usize::from(t.await.unwrap().is_created());
        }
        assert_eq!(created, 1, "round {round}: recorded once");
    }
    let page = stores[0].list(&Filter::all(), None, 100).await.unwrap();
    assert_eq!(
        page.messages.len(),
        rounds as usize,
        "one message per occurrence"
    );
}
