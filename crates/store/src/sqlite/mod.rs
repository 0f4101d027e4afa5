//! The SQLite backend: one writer thread with group commit, a read pool, WAL, single owner.
//!
//! Writes go to a dedicated thread that owns the only write connection. It takes every job
//! waiting in its (bounded) queue, runs them in one `BEGIN IMMEDIATE` transaction, each under
//! its own savepoint so one failing job does not undo the others, commits once, and only then
//! answers the callers. Concurrent submitters therefore share one fsync. Reads run on a small
//! pool of read-only connections in `spawn_blocking`.
//!
//! A `<db>.lock` file, locked exclusively for the life of the store, makes the database
//! single-owner; so at open every lease left by a previous process is stale and is released.

/// The condition of `messages_due`: a message not yet terminal. Written as a list of two and
/// an equality, not one list of three, which SQLite would evaluate through a temporary b-tree
/// per row (migration 3). A query that should use the index repeats it word for word.
macro_rules! pending {
    () => {
        "(status IN ('queued', 'retrying') OR status = 'delivering')"
    };
}

/// The status part of `messages_fifo`'s condition: a message that can block its ordering key
/// (pending, or dead under the `block` policy), for a table aliased `o`.
macro_rules! fifo_blocking {
    () => {
        "(o.status IN ('queued', 'retrying') OR o.status IN ('delivering', 'dead'))"
    };
}

/// The condition of `messages_depths`: a message that counts in [`Depths`] (pending or dead),
/// in the same two-list form as [`pending!`].
macro_rules! counted {
    () => {
        "(status IN ('queued', 'retrying') OR status IN ('delivering', 'dead'))"
    };
}

/// The condition of `events_failures`: an attempt that failed.
macro_rules! failure_outcome {
    () => {
        "(outcome IN ('transient', 'retry_after') OR outcome = 'permanent')"
    };
}

mod alerts;
mod audit;
mod chats;
mod error;
mod filter;
mod migrate;
mod ops;
mod options;
mod pause;
mod reads;
mod rollup;
mod rows;
mod runs;
mod schedules;
mod shared_breaker;
mod shared_limit;
mod writer;

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use self::error::Context;
pub use self::options::SqliteOptions;
use self::writer::{Env, Waker, Writer};
use crate::alert::{AlertFilter, AlertPage, AlertRecord, NewAlert};
use crate::audit::{AuditEntry, AuditFilter, AuditPage, NewAuditEntry};
use crate::chats::RouteChat;
use crate::common::{self, encode};
use crate::error::{Result, StoreError};
use crate::load::StoreLoad;
use crate::pause::Paused;
use crate::rollup::{ReasonCount, RollupBatch, Series, SeriesQuery};
use crate::run::{
    Advance, Advanced, NewRun, RunChange, RunDetail, RunFilter, RunId, RunPage, RunStats, Started,
    Wait,
};
use crate::schedule::{Fired, NewOccurrence, Occurrence};
use crate::shared_breaker::{BreakerUpdate, SharedBreaker};
use crate::shared_limit::{SlotAnswer, SlotBatch};
use crate::store::Store;
use crate::transition::{self, End};
use crate::types::{
    AttemptReport, Claimed, Cursor, Depths, Enqueued, Filter, InboundPage, Lease, MessageDetail,
    MessageId, NewInbound, NewMessage, Page, Recorded, ReplayReport, ReplayTarget, Stats, Status,
    duration_millis, from_millis, to_millis,
};

/// Rows deleted per writer job by purges, so a large purge does not stall enqueues.
const PURGE_CHUNK: usize = 2000;
/// Most messages one claim may lease.
const MAX_CLAIM: usize = 10_000;
/// Most messages one list page may hold.
const MAX_PAGE: usize = 1000;

/// The SQLite store. Cloning gives another handle to the same store; the database is closed
/// (and its lock released) when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writer: Writer,
    readers: ReadPool,
    options: SqliteOptions,
    waker: Arc<Waker>,
    recovered_at_open: u64,
    meter: crate::load::Meter,
    /// The next due time the last claim read (in the claim's own transaction, on the writer
    /// thread), and the waker's generation before it.
    next_due: common::NextDueCache,
}

impl SqliteStore {
    /// Opens (creating if needed) the database described by `options`: takes the lock file,
    /// sets the pragmas, applies migrations and releases the leases of any previous owner.
    pub async fn open(options: SqliteOptions) -> Result<Self> {
        options.store.validate()?;
        tokio::task::spawn_blocking(move || Self::open_blocking(options))
            .await
            .map_err(|e| StoreError::database("opening the store", false, e))?
    }

    /// Opens the database at `sqlite://path`.
    pub async fn open_url(url: &str, options: crate::StoreOptions) -> Result<Self> {
        Self::open(SqliteOptions::from_url(url, options)?).await
    }

    fn open_blocking(options: SqliteOptions) -> Result<Self> {
        let path = options.path.clone();
        let lock = take_lock(&options)?;
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| error::map_open(&path, e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| error::map_open(&path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Open {
                path,
                source: format!("the database refused WAL mode (journal_mode is {mode})").into(),
            });
        }
        conn.execute_batch(&options.pragmas())
            .map_err(|e| error::map_open(&path, e))?;
        conn.set_prepared_statement_cache_capacity(64);
        migrate::migrate(&mut conn)?;
        let store = &options.store;
        let env = Env::new(
            store.clock.clone(),
            duration_millis(store.idempotency_window),
            store.fifo_dead_letter_policy,
        );
        let recovered_at_open = ops::recover(&conn, &env, true)?;
        if recovered_at_open > 0 {
            tracing::info!(
                count = recovered_at_open,
                path = %path.display(),
                "released leases left by the previous owner of the store"
            );
        }
        let waker = Arc::new(Waker::default());
        let writer = Writer::start(
            conn,
            env,
            lock,
            (store.max_batch, store.queue_capacity),
            store.synchronous == crate::options::Synchronous::Full,
            waker.clone(),
        )?;
        let readers = ReadPool::new(&options);
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer,
                readers,
                options,
                waker,
                recovered_at_open,
                meter: crate::load::Meter::new(None),
                next_due: common::NextDueCache::default(),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.options.path
    }

    /// How many leases of a previous owner were released when this store was opened.
    pub fn recovered_at_open(&self) -> u64 {
        self.inner.recovered_at_open
    }

    /// The writer's queue and the operations that ran past the operation timeout. SQLite has
    /// no connection pool (one writer connection, a fixed set of readers), so `pool` is `None`.
    pub fn load(&self) -> StoreLoad {
        let (writer_queue, writer_queue_capacity) = self.inner.writer.queue();
        StoreLoad {
            backend: "sqlite",
            operation_timeout_ms: duration_millis(self.inner.options.store.operation_timeout)
                .unsigned_abs(),
            operation_timeouts: self.inner.meter.operation_timeouts(),
            writer_queue,
            writer_queue_capacity,
            pool: None,
        }
    }

    pub(crate) fn meter(&self) -> &crate::load::Meter {
        &self.inner.meter
    }

    pub(crate) fn operation_timeout(&self) -> Duration {
        self.inner.options.store.operation_timeout
    }

    fn now(&self) -> i64 {
        to_millis(self.inner.options.store.clock.system_now())
    }

    /// Applies `advance`, with the end of the step's message when given, in one writer job.
    async fn advance(&self, advance: Advance, end: Option<End>) -> Result<Advanced> {
        let change =
            transition::encode_change(advance.change, self.inner.options.store.max_payload_bytes)?;
        let run = (advance.run, advance.expected_version);
        self.inner
            .writer
            .submit(move |conn, env| runs::advance(conn, env, run, &change, end.as_ref()))
            .await
    }
}

/// How long opening waits for a lock file that is held: a process that just closed the store
/// (a relay that stopped, `ferrule migrate` that finished) may not have let go yet when a
/// sibling process it forked a moment earlier still shares the lock's open file (until that
/// child's `exec` closes it). A store held by a running relay stays locked past this, and
/// opening then fails with [`StoreError::Locked`].
const LOCK_GRACE: Duration = Duration::from_secs(2);

/// Takes the store's lock file, waiting at most [`LOCK_GRACE`] for one that is held.
fn take_lock(options: &SqliteOptions) -> Result<File> {
    let lock_path = options.lock_path();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Open {
            path: lock_path.clone(),
            source: Box::new(e),
        })?;
    let deadline = std::time::Instant::now() + LOCK_GRACE;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: options.path.clone(),
                    lock_path,
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::Open {
                    path: lock_path,
                    source: Box::new(e),
                });
            }
        }
    }
}

/// Read-only connections, opened on demand up to `read_connections`.
#[derive(Debug)]
struct ReadPool {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl ReadPool {
    fn new(options: &SqliteOptions) -> Self {
        ReadPool {
            path: options.path.clone(),
            busy_timeout: options.store.busy_timeout,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(options.store.read_connections),
        }
    }

    fn connect(path: &Path, busy_timeout: Duration) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| error::map_open(path, e))?;
        conn.busy_timeout(busy_timeout)
            .ctx("setting busy_timeout")?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    async fn with<T, F>(&self, work: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let path = self.path.clone();
        let busy_timeout = self.busy_timeout;
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let conn = match idle {
                Some(conn) => conn,
                None => match Self::connect(&path, busy_timeout) {
                    Ok(conn) => conn,
                    Err(e) => return (None, Err(e)),
                },
            };
            let result = work(&conn);
            (Some(conn), result)
        })
        .await
        .map_err(|e| StoreError::database("running a query", false, e))?;
        if let Some(conn) = conn {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
        result
    }
}

fn lease_millis(field: &'static str, d: Duration) -> Result<i64> {
    if d.is_zero() {
        return Err(StoreError::InvalidOption {
            field,
            reason: "must be longer than zero".into(),
        });
    }
    Ok(duration_millis(d).max(1))
}

impl Store for SqliteStore {
    async fn enqueue(&self, message: NewMessage) -> Result<Enqueued> {
        let mut out = self.enqueue_batch(vec![message]).await?;
        out.pop()
            .ok_or_else(|| StoreError::database("enqueue", false, "no result for the message"))
    }

    async fn enqueue_batch(&self, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>> {
        let max = self.inner.options.store.max_payload_bytes;
        let items = messages
            .into_iter()
            .map(|m| encode(&m, max).map(|e| (m, e)))
            .collect::<Result<Vec<_>>>()?;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.inner
            .writer
            .submit(move |conn, env| ops::enqueue(conn, env, &items, None))
            .await
    }

    async fn claim_due(&self, owner: &str, max: usize, lease: Duration) -> Result<Vec<Claimed>> {
        common::check_key("owner", Some(owner), false)?;
        common::check_count("max", max, MAX_CLAIM)?;
        let lease_ms = lease_millis("lease", lease)?;
        let owner = owner.to_owned();
        // Read before the claim: a wake after this ends what the claim reads.
        let generation = self.inner.waker.generation();
        let (claimed, at) = self
            .inner
            .writer
            .submit_relaxed(move |conn, env| {
                let claimed = ops::claim(conn, env, &owner, max, lease_ms)?;
                Ok((claimed, reads::next_due(conn)?))
            })
            .await?;
        self.inner.next_due.set(generation, at);
        Ok(claimed)
    }

    async fn extend_lease(&self, lease: &Lease, by: Duration) -> Result<Lease> {
        let by_ms = lease_millis("by", by)?;
        let lease = lease.clone();
        self.inner
            .writer
            .submit_relaxed(move |conn, env| ops::extend(conn, env, &lease, by_ms))
            .await
    }

    async fn complete(&self, lease: &Lease, report: AttemptReport) -> Result<()> {
        let lease = lease.clone();
        self.inner
            .writer
            .submit(move |conn, env| {
                ops::finish(conn, env, &lease, Status::Delivered, None, &report)
            })
            .await
    }

    async fn reschedule(&self, lease: &Lease, at: SystemTime, report: AttemptReport) -> Result<()> {
        let lease = lease.clone();
        let at = to_millis(at);
        self.inner
            .writer
            .submit(move |conn, env| {
                ops::finish(conn, env, &lease, Status::Retrying, Some(at), &report)
            })
            .await
    }

    async fn dead_letter(&self, lease: &Lease, report: AttemptReport) -> Result<()> {
        let lease = lease.clone();
        self.inner
            .writer
            .submit(move |conn, env| ops::finish(conn, env, &lease, Status::Dead, None, &report))
            .await
    }

    async fn replace_payload(&self, lease: &Lease, payload: serde_json::Value) -> Result<()> {
        let text = common::encode_payload(&payload, self.inner.options.store.max_payload_bytes)?;
        let lease = lease.clone();
        self.inner
            .writer
            .submit(move |conn, env| ops::replace_payload(conn, env, &lease, &text))
            .await
    }

    async fn keep_response(&self, lease: &Lease, response: serde_json::Value) -> Result<()> {
        let text = common::encode_payload(&response, self.inner.options.store.max_payload_bytes)?;
        let lease = lease.clone();
        self.inner
            .writer
            .submit(move |conn, env| ops::keep_response(conn, env, &lease, &text))
            .await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let lease = lease.clone();
        self.inner
            .writer
            .submit(move |conn, env| ops::release(conn, env, &lease))
            .await
    }

    async fn defer(&self, lease: &Lease, until: SystemTime, reason: &str) -> Result<()> {
        let lease = lease.clone();
        let until = to_millis(until);
        let reason = reason.to_owned();
        self.inner
            .writer
            .submit(move |conn, env| ops::defer(conn, env, &lease, until, &reason))
            .await
    }

    async fn cancel(&self, id: MessageId, reason: Option<String>) -> Result<()> {
        self.inner
            .writer
            .submit(move |conn, env| ops::cancel(conn, env, id, reason.as_deref()))
            .await
    }

    async fn recover_expired_leases(&self) -> Result<u64> {
        self.inner
            .writer
            .submit(|conn, env| ops::recover(conn, env, false))
            .await
    }

    async fn get(&self, id: MessageId) -> Result<Option<MessageDetail>> {
        self.inner
            .readers
            .with(move |conn| reads::get(conn, id))
            .await
    }

    async fn list(&self, filter: &Filter, cursor: Option<&Cursor>, limit: usize) -> Result<Page> {
        common::check_count("limit", limit, MAX_PAGE)?;
        common::check_text_search(filter)?;
        let filter = filter.clone();
        let cursor = cursor.cloned();
        self.inner
            .readers
            .with(move |conn| reads::list(conn, &filter, cursor.as_ref(), limit))
            .await
    }

    async fn replay(&self, target: ReplayTarget, dry_run: bool) -> Result<ReplayReport> {
        self.inner
            .writer
            .submit(move |conn, env| ops::replay(conn, env, &target, dry_run))
            .await
    }

    async fn purge(&self, filter: &Filter) -> Result<u64> {
        let mut total = 0;
        loop {
            let filter = filter.clone();
            let n = self
                .inner
                .writer
                .submit(move |conn, _| ops::purge(conn, &filter, PURGE_CHUNK))
                .await?;
            total += n;
            if n < PURGE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    async fn purge_ids(&self, ids: &[MessageId], filter: &Filter) -> Result<u64> {
        let mut total = 0;
        for chunk in ids.chunks(PURGE_CHUNK) {
            let (filter, chunk) = (filter.clone(), chunk.to_vec());
            total += self
                .inner
                .writer
                .submit(move |conn, _| ops::purge_ids(conn, &chunk, &filter))
                .await?;
        }
        Ok(total)
    }

    async fn purge_delivered(&self, older_than: Duration) -> Result<u64> {
        let cutoff = self.now().saturating_sub(duration_millis(older_than));
        let mut total = 0;
        loop {
            let (messages, runs) = self
                .inner
                .writer
                .submit(move |conn, env| ops::purge_delivered(conn, env, cutoff, PURGE_CHUNK))
                .await?;
            total += messages;
            if messages < PURGE_CHUNK as u64 && runs < PURGE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    async fn depths(&self) -> Result<Depths> {
        let now = self.now();
        self.inner
            .readers
            .with(move |conn| reads::depths(conn, now))
            .await
    }

    async fn stats(&self, window: Duration) -> Result<Stats> {
        let now = self.now();
        self.inner
            .readers
            .with(move |conn| reads::stats(conn, now, window))
            .await
    }

    async fn next_due_at(&self) -> Result<Option<SystemTime>> {
        if let Some(kept) = self.inner.next_due.get(self.inner.waker.generation()) {
            // Nothing was woken since the last claim read it: still what the query would say.
            return Ok(kept);
        }
        let due = self.inner.readers.with(reads::next_due).await?;
        Ok(due.map(from_millis))
    }

    async fn wait_for_work(&self) {
        self.inner.waker.wait().await;
    }

    fn take_wake(&self) -> bool {
        self.inner.waker.take_kept()
    }

    async fn record_inbound(&self, event: NewInbound) -> Result<Recorded> {
        let event = common::encode_inbound(event, self.inner.options.store.max_payload_bytes)?;
        self.inner
            .writer
            .submit(move |conn, env| ops::record_inbound(conn, env, &event))
            .await
    }

    async fn list_inbound(
        &self,
        source: Option<&str>,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<InboundPage> {
        common::check_count("limit", limit, MAX_PAGE)?;
        let source = source.map(str::to_owned);
        let cursor = cursor.cloned();
        self.inner
            .readers
            .with(move |conn| reads::list_inbound(conn, source.as_deref(), cursor.as_ref(), limit))
            .await
    }

    async fn purge_inbound(&self, older_than: Duration) -> Result<u64> {
        let cutoff = self.now().saturating_sub(duration_millis(older_than));
        let mut total = 0;
        loop {
            let n = self
                .inner
                .writer
                .submit(move |conn, _| ops::purge_inbound(conn, cutoff, PURGE_CHUNK))
                .await?;
            total += n;
            if n < PURGE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    async fn start_run(&self, run: NewRun, change: RunChange) -> Result<Started> {
        let max = self.inner.options.store.max_payload_bytes;
        let run = transition::encode_run(run, max)?;
        let change = transition::encode_change(change, max)?;
        self.inner
            .writer
            .submit(move |conn, env| runs::start(conn, env, &run, &change))
            .await
    }

    async fn advance_run(&self, advance: Advance) -> Result<Advanced> {
        self.advance(advance, None).await
    }

    async fn complete_and_advance(
        &self,
        lease: &Lease,
        report: AttemptReport,
        advance: Advance,
    ) -> Result<Advanced> {
        let end = End::new(lease, Status::Delivered, report);
        self.advance(advance, Some(end)).await
    }

    async fn dead_letter_and_advance(
        &self,
        lease: &Lease,
        report: AttemptReport,
        advance: Advance,
    ) -> Result<Advanced> {
        let end = End::new(lease, Status::Dead, report);
        self.advance(advance, Some(end)).await
    }

    async fn get_run(&self, id: RunId) -> Result<Option<RunDetail>> {
        self.inner
            .readers
            .with(move |conn| runs::get(conn, id))
            .await
    }

    async fn find_wait(&self, token: &str) -> Result<Option<Wait>> {
        common::check_key("token", Some(token), false)?;
        let token = token.to_owned();
        self.inner
            .readers
            .with(move |conn| runs::find_wait(conn, &token))
            .await
    }

    async fn list_runs(
        &self,
        filter: &RunFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<RunPage> {
        common::check_count("limit", limit, MAX_PAGE)?;
        let filter = filter.clone();
        let cursor = cursor.cloned();
        self.inner
            .readers
            .with(move |conn| runs::list(conn, &filter, cursor.as_ref(), limit))
            .await
    }

    async fn run_stats(&self, route: &str, window: Duration) -> Result<RunStats> {
        common::check_key("route", Some(route), false)?;
        let since = self.now().saturating_sub(duration_millis(window));
        let route = route.to_owned();
        self.inner
            .readers
            .with(move |conn| runs::stats(conn, &route, since, window))
            .await
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        common::check_key("key", Some(key), false)?;
        let key = key.to_owned();
        self.inner
            .readers
            .with(move |conn| reads::get_meta(conn, &key))
            .await
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        common::check_meta_key(key)?;
        let (key, value) = (key.to_owned(), value.to_owned());
        self.inner
            .writer
            .submit(move |conn, _| ops::set_meta(conn, &key, &value))
            .await
    }

    async fn list_meta(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        common::check_meta_prefix(prefix)?;
        let prefix = prefix.to_owned();
        self.inner
            .readers
            .with(move |conn| reads::list_meta(conn, &prefix))
            .await
    }

    async fn delete_meta(&self, key: &str) -> Result<bool> {
        common::check_meta_key(key)?;
        let key = key.to_owned();
        self.inner
            .writer
            .submit(move |conn, _| ops::delete_meta(conn, &key))
            .await
    }

    async fn record_audit(&self, entry: NewAuditEntry) -> Result<AuditEntry> {
        let entry = crate::audit::encode(entry)?;
        self.inner
            .writer
            .submit(move |conn, env| audit::record(conn, env, &entry))
            .await
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<AuditPage> {
        common::check_count("limit", limit, MAX_PAGE)?;
        let filter = filter.clone();
        let cursor = cursor.cloned();
        self.inner
            .readers
            .with(move |conn| audit::list(conn, &filter, cursor.as_ref(), limit))
            .await
    }

    async fn record_alert(&self, alert: NewAlert) -> Result<AlertRecord> {
        let alert = crate::alert::encode(alert)?;
        self.inner
            .writer
            .submit(move |conn, env| alerts::record(conn, env, &alert))
            .await
    }

    async fn list_alerts(
        &self,
        filter: &AlertFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<AlertPage> {
        common::check_count("limit", limit, MAX_PAGE)?;
        let filter = filter.clone();
        let cursor = cursor.cloned();
        self.inner
            .readers
            .with(move |conn| alerts::list(conn, &filter, cursor.as_ref(), limit))
            .await
    }

    async fn purge_alerts(&self, older_than: Duration) -> Result<u64> {
        let cutoff = self.now().saturating_sub(duration_millis(older_than));
        let mut total = 0;
        loop {
            let n = self
                .inner
                .writer
                .submit(move |conn, _| alerts::purge(conn, cutoff, PURGE_CHUNK))
                .await?;
            total += n;
            if n < PURGE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    async fn pause_destination(
        &self,
        destination: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<Paused> {
        crate::pause::check(destination, by, reason)?;
        let (destination, by) = (destination.to_owned(), by.to_owned());
        let reason = reason.map(str::to_owned);
        self.inner
            .writer
            .submit(move |conn, env| pause::pause(conn, env, &destination, &by, reason.as_deref()))
            .await
    }

    async fn resume_destination(&self, destination: &str) -> Result<bool> {
        common::check_key("destination", Some(destination), false)?;
        let destination = destination.to_owned();
        self.inner
            .writer
            .submit(move |conn, env| pause::resume(conn, env, &destination))
            .await
    }

    async fn paused_destinations(&self) -> Result<Vec<Paused>> {
        self.inner.readers.with(pause::list).await
    }

    async fn publish_breaker(&self, update: &BreakerUpdate) -> Result<SharedBreaker> {
        crate::shared_breaker::check(&update.destination, &update.owner)?;
        let update = update.clone();
        self.inner
            .writer
            .submit(move |conn, env| shared_breaker::publish(conn, env, &update))
            .await
    }

    async fn take_over_breaker(
        &self,
        destination: &str,
        epoch: u64,
        owner: &str,
        open_until: SystemTime,
    ) -> Result<Option<SharedBreaker>> {
        crate::shared_breaker::check(destination, owner)?;
        let (destination, owner) = (destination.to_owned(), owner.to_owned());
        self.inner
            .writer
            .submit(move |conn, env| {
                shared_breaker::take_over(conn, env, &destination, epoch, &owner, open_until)
            })
            .await
    }

    async fn shared_breakers(&self) -> Result<Vec<SharedBreaker>> {
        self.inner.readers.with(shared_breaker::list).await
    }

    async fn take_send_slots(&self, batch: &SlotBatch) -> Result<Vec<SlotAnswer>> {
        crate::shared_limit::check(batch)?;
        let batch = batch.clone();
        self.inner
            .writer
            .submit(move |conn, env| shared_limit::take(conn, env, &batch))
            .await
    }

    async fn purge_send_windows(&self, older_than: Duration) -> Result<u64> {
        let cutoff = self.now().saturating_sub(duration_millis(older_than));
        self.inner
            .writer
            .submit(move |conn, _| shared_limit::purge(conn, cutoff))
            .await
    }

    async fn set_route_chat(
        &self,
        route: &str,
        key: &str,
        chat_id: i64,
        by: &str,
    ) -> Result<RouteChat> {
        crate::chats::check(route, key, Some(by))?;
        let (route, key, by) = (route.to_owned(), key.to_owned(), by.to_owned());
        self.inner
            .writer
            .submit(move |conn, env| chats::set(conn, env, &route, &key, chat_id, &by))
            .await
    }

    async fn delete_route_chat(&self, route: &str, key: &str) -> Result<bool> {
        crate::chats::check(route, key, None)?;
        let (route, key) = (route.to_owned(), key.to_owned());
        self.inner
            .writer
            .submit(move |conn, _| chats::delete(conn, &route, &key))
            .await
    }

    async fn route_chats(&self, route: Option<&str>) -> Result<Vec<RouteChat>> {
        let route = route.map(str::to_owned);
        self.inner
            .readers
            .with(move |conn| chats::list(conn, route.as_deref()))
            .await
    }

    async fn add_rollups(&self, batch: &RollupBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        batch.check()?;
        let batch = Arc::new(batch.clone());
        self.inner
            .writer
            .submit(move |conn, _| rollup::add(conn, &batch))
            .await
    }

    async fn rollup_series(&self, query: &SeriesQuery) -> Result<Series> {
        let bounds = query.bounds()?;
        let (from, to, step, _) = bounds;
        let (destination, route) = (query.destination.clone(), query.route.clone());
        let (deliveries, runs) = self
            .inner
            .readers
            .with(move |conn| {
                Ok((
                    rollup::deliveries(conn, (from, to, step), destination.as_deref())?,
                    rollup::runs(conn, (from, to, step), route.as_deref())?,
                ))
            })
            .await?;
        Ok(crate::rollup::dense(bounds, query.step, deliveries, runs))
    }

    async fn rollup_reasons(
        &self,
        from: SystemTime,
        to: SystemTime,
        destination: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ReasonCount>> {
        let range = crate::rollup::reason_bounds(from, to, destination, limit)?;
        let destination = destination.map(str::to_owned);
        self.inner
            .readers
            .with(move |conn| rollup::reasons(conn, range, destination.as_deref(), limit))
            .await
    }

    async fn prune_rollups(&self, older_than: Duration) -> Result<u64> {
        let cutoff = self.now().saturating_sub(duration_millis(older_than));
        self.inner
            .writer
            .submit(move |conn, _| rollup::prune(conn, cutoff))
            .await
    }

    async fn record_occurrence(&self, occurrence: NewOccurrence) -> Result<Fired> {
        let new = crate::schedule::encode(occurrence, self.inner.options.store.max_payload_bytes)?;
        self.inner
            .writer
            .submit(move |conn, env| schedules::record(conn, env, &new))
            .await
    }

    async fn latest_occurrences(&self) -> Result<Vec<Occurrence>> {
        self.inner.readers.with(schedules::latest).await
    }

    async fn purge_occurrences(&self, older_than: Duration) -> Result<u64> {
        let before = to_millis(self.inner.options.store.clock.system_now())
            .saturating_sub(crate::types::duration_millis(older_than));
        self.inner
            .writer
            .submit(move |conn, _| schedules::purge(conn, before))
            .await
    }
}
