//! The single writer thread: runs write jobs in batches, one transaction and one fsync per
//! batch (group commit), and answers each caller only after its batch is committed.
//!
//! A batch first runs its jobs back to back, with no savepoints: SQLite copies every page a
//! savepoint touches into its sub-journal, which cost 15–20k instructions per job, and jobs
//! almost never fail. When one does fail, what it wrote before failing cannot be undone on its
//! own, so the writer rolls the whole batch back and runs it again, each job under its own
//! savepoint; the failed job answers its error and the others commit. Jobs are therefore
//! `Fn`: running one again after a rollback must do what running it once does.
//!
//! SQLite rolls the whole transaction back when the disk is full, so one batch too big for
//! the space left would refuse every job in it. The writer then runs that batch's jobs again
//! one transaction each: the ones that fit are kept, and only the rest answer
//! [`StoreError::StorageFull`].
//!
//! A batch made only of *relaxed* jobs (claims and lease extensions) commits without waiting
//! for the disk when the store runs `synchronous = FULL`: in WAL mode such a commit survives a
//! crash of the process (it is in the WAL file) but not of the machine, until the next full
//! commit syncs the WAL and everything before it. What a power cut can undo is only a claim:
//! the message is `queued` again with its attempt uncounted, and is delivered again, as it is
//! when a crash interrupts a delivery. Enqueues (what the API acknowledges) and ends of
//! attempts always wait for the disk. This takes one fsync off every message's way from
//! submit to delivery.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use ferrule_policy::SharedClock;
use rusqlite::Connection;
use tokio::sync::{Notify, mpsc, oneshot};
use ulid::{Generator, Ulid};

use super::error::Context;
use crate::error::{Result, StoreError};
use crate::options::DeadLetterPolicy;
use crate::types::to_millis;

/// What every write job can see besides the connection.
pub(crate) struct Env {
    clock: SharedClock,
    pub(crate) idempotency_window_ms: i64,
    pub(crate) dead_letter_policy: DeadLetterPolicy,
    ids: RefCell<Generator>,
    /// Set by a job whose effect may give dispatchers new work.
    wake: Cell<bool>,
}

impl Env {
    pub(crate) fn new(
        clock: SharedClock,
        idempotency_window_ms: i64,
        dead_letter_policy: DeadLetterPolicy,
    ) -> Self {
        Env {
            clock,
            idempotency_window_ms,
            dead_letter_policy,
            ids: RefCell::new(Generator::new()),
            wake: Cell::new(false),
        }
    }

    /// Now, in unix milliseconds, from the store's clock.
    pub(crate) fn now(&self) -> i64 {
        to_millis(self.clock.system_now())
    }

    /// A new id, increasing within this process.
    pub(crate) fn new_id(&self) -> Ulid {
        let now = self.clock.system_now();
        let mut ids = self.ids.borrow_mut();
        ids.generate_from_datetime(now)
            .unwrap_or_else(|_| Ulid::from_datetime(now))
    }

    /// Marks that dispatchers should be woken after the commit.
    pub(crate) fn wake(&self) {
        self.wake.set(true);
    }
}

/// How the writer wakes the dispatchers after a commit that may have given them work, and
/// counts those wakes: a next due time read by a claim holds while the count has not moved
/// since before that claim (see `SqliteStore::next_due_at`).
#[derive(Debug, Default)]
pub(crate) struct Waker {
    notify: Notify,
    generation: AtomicU64,
}

impl Waker {
    /// Counts a wake; done after the commit and before its callers are answered.
    fn count(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Wakes every waiting dispatcher, and keeps a wake for the next one to wait if none is
    /// waiting.
    fn wake(&self) {
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// How many wakes there have been.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Completes at the next wake (or at once if one was kept).
    pub(crate) async fn wait(&self) {
        self.notify.notified().await;
    }

    /// Takes the wake kept for the next [`wait`](Self::wait), if one is.
    pub(crate) fn take_kept(&self) -> bool {
        crate::common::take_permit(&self.notify)
    }
}

/// A write job, run inside the batch transaction; see the module docs for why it may run more than once.
trait Job: Send {
    /// Runs the work and keeps its result; false when it failed.
    fn run(&mut self, conn: &Connection, env: &Env) -> bool;
    /// Runs the work under a savepoint of its own, so a failure undoes only this job.
    fn run_isolated(&mut self, conn: &Connection, env: &Env);
    /// Answers the caller once the batch's commit succeeded or failed.
    fn finish(self: Box<Self>, commit: std::result::Result<(), &Failed>);
    /// Whether the job's last run failed because the disk is full.
    fn storage_full(&self) -> bool;
    /// Answers the caller with `err` without the work having run.
    fn abort(self: Box<Self>, err: StoreError);
    /// Whether the job's effect may wait for a later commit to reach the disk.
    fn relaxed(&self) -> bool;
}

/// Why a batch was not committed; each of its callers gets a [`StoreError`] made from it.
enum Failed {
    /// `BEGIN`, `COMMIT` or a pragma failed, doing what the `&str` says.
    Driver(&'static str, Arc<rusqlite::Error>),
    /// SQLite rolled the whole transaction back when a job's statement failed (it may on
    /// `SQLITE_FULL`, `SQLITE_IOERR` and `SQLITE_NOMEM`), so nothing of the batch was kept;
    /// `full` when that job failed for lack of space.
    RolledBack { full: bool },
}

impl Failed {
    fn driver(context: &'static str, err: rusqlite::Error) -> Self {
        Failed::Driver(context, Arc::new(err))
    }

    /// Whether the batch failed for lack of disk space.
    fn storage_full(&self) -> bool {
        matches!(self.error(), StoreError::StorageFull { .. })
    }

    fn error(&self) -> StoreError {
        match self {
            Failed::Driver(context, err) => super::error::map_shared(context, err),
            Failed::RolledBack { full: true } => StoreError::storage_full(
                "running a write batch",
                "SQLite rolled the batch back: the disk is full",
            ),
            Failed::RolledBack { full: false } => StoreError::database(
                "running a write batch",
                true,
                "SQLite rolled the batch back after one of its writes failed",
            ),
        }
    }
}

struct FnJob<F, T> {
    work: F,
    reply: oneshot::Sender<Result<T>>,
    result: Option<Result<T>>,
    relaxed: bool,
}

impl<F, T> Job for FnJob<F, T>
where
    F: Fn(&Connection, &Env) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    fn run(&mut self, conn: &Connection, env: &Env) -> bool {
        let result = (self.work)(conn, env);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn run_isolated(&mut self, conn: &Connection, env: &Env) {
        self.result = Some(in_savepoint(conn, || (self.work)(conn, env)));
    }

    fn finish(self: Box<Self>, commit: std::result::Result<(), &Failed>) {
        let result = match (commit, self.result) {
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::database(
                "running a write job",
                false,
                "the writer committed a batch without running this job".to_owned(),
            )),
            // The job's own error says more than the batch's (e.g. which write was too big
            // for the disk); anything it did is undone either way.
            (Err(Failed::RolledBack { .. }), Some(Err(own))) => Err(own),
            (Err(failed), _) => Err(failed.error()),
        };
        // The caller may have gone away; its effect is committed either way.
        let _ = self.reply.send(result);
    }

    fn abort(self: Box<Self>, err: StoreError) {
        let _ = self.reply.send(Err(err));
    }

    fn relaxed(&self) -> bool {
        self.relaxed
    }

    fn storage_full(&self) -> bool {
        matches!(self.result, Some(Err(StoreError::StorageFull { .. })))
    }
}

fn in_savepoint<T>(conn: &Connection, work: impl FnOnce() -> Result<T>) -> Result<T> {
    conn.prepare_cached("SAVEPOINT job")
        .and_then(|mut s| s.execute([]))
        .ctx("starting a savepoint")?;
    match work() {
        Ok(value) => {
            conn.prepare_cached("RELEASE job")
                .and_then(|mut s| s.execute([]))
                .ctx("releasing a savepoint")?;
            Ok(value)
        }
        // SQLite rolled the whole transaction back (a full disk can do that): there is no
        // savepoint left to undo, and the batch sees the rollback after this job.
        Err(err) if conn.is_autocommit() => Err(err),
        Err(err) => {
            let undo = conn
                .prepare_cached("ROLLBACK TO job")
                .and_then(|mut s| s.execute([]))
                .and_then(|_| conn.prepare_cached("RELEASE job"))
                .and_then(|mut s| s.execute([]));
            if let Err(undo) = undo {
                return Err(super::error::map("rolling back a savepoint", undo));
            }
            Err(err)
        }
    }
}

/// The handle the store keeps: sends jobs to the writer thread.
#[derive(Debug)]
pub(crate) struct Writer {
    sender: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for dyn Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Writer {
    /// Starts the writer thread on `conn`; `lock` is released only after the connection closes.
    /// With `full_sync` (the connection runs `synchronous = FULL`), batches of relaxed jobs
    /// commit with `synchronous = NORMAL`.
    pub(crate) fn start(
        conn: Connection,
        env: Env,
        lock: File,
        limits: (usize, usize),
        full_sync: bool,
        waker: Arc<Waker>,
    ) -> Result<Self> {
        let (max_batch, capacity) = limits;
        let (sender, receiver) = mpsc::channel(capacity);
        let thread = std::thread::Builder::new()
            .name("ferrule-store-writer".into())
            .spawn(move || {
                run(conn, env, receiver, max_batch, full_sync, &waker);
                drop(lock);
            })
            .map_err(|e| StoreError::database("starting the writer thread", false, e))?;
        Ok(Writer {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Jobs waiting for the writer thread, and the queue's bound.
    pub(crate) fn queue(&self) -> (usize, usize) {
        self.sender.as_ref().map_or((0, 0), |s| {
            (s.max_capacity() - s.capacity(), s.max_capacity())
        })
    }

    /// Runs `work` in the next batch and resolves once the batch is committed.
    ///
    /// `work` may run more than once (every run before the last was rolled back): it must not
    /// have effects outside the connection and `env`.
    pub(crate) async fn submit<T, F>(&self, work: F) -> Result<T>
    where
        F: Fn(&Connection, &Env) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.send(work, false).await
    }

    /// Like [`submit`](Self::submit), for work whose effect may reach the disk with a later
    /// commit (see the module docs): claims and lease extensions.
    pub(crate) async fn submit_relaxed<T, F>(&self, work: F) -> Result<T>
    where
        F: Fn(&Connection, &Env) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.send(work, true).await
    }

    async fn send<T, F>(&self, work: F, relaxed: bool) -> Result<T>
    where
        F: Fn(&Connection, &Env) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let sender = self.sender.as_ref().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(FnJob {
            work,
            reply,
            result: None,
            relaxed,
        });
        sender.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel lets the thread finish its batch and exit; joining it makes
        // sure the connection and the lock file are closed when the store is gone.
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    conn: Connection,
    env: Env,
    mut receiver: mpsc::Receiver<Box<dyn Job>>,
    max_batch: usize,
    full_sync: bool,
    waker: &Waker,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch);
    // Whether the connection currently runs `synchronous = NORMAL` for a relaxed batch.
    let mut relaxed_now = false;
    while let Some(first) = receiver.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let relaxed = full_sync && batch.iter().all(|job| job.relaxed());
        if relaxed != relaxed_now {
            let sync = if relaxed { "NORMAL" } else { "FULL" };
            if let Err(err) = conn.execute_batch(&format!("PRAGMA synchronous = {sync}")) {
                abort_all(&mut batch, Failed::driver("choosing how to sync", err));
                continue;
            }
            relaxed_now = relaxed;
        }
        match execute(&conn, &env, &mut batch) {
            // The batch as a whole did not fit on the disk; each job that fits on its own
            // still can, so the space left is used rather than refused wholesale.
            Err(failed) if failed.storage_full() && batch.len() > 1 => {
                for job in batch.drain(..) {
                    let mut one = vec![job];
                    let outcome = execute(&conn, &env, &mut one);
                    settle(&mut one, outcome, &env, waker);
                }
            }
            outcome => settle(&mut batch, outcome, &env, waker),
        }
    }
}

/// Runs `batch` in one transaction and commits it, or leaves nothing of it behind; either
/// way the caller still has to [`settle`] it.
fn execute(
    conn: &Connection,
    env: &Env,
    batch: &mut [Box<dyn Job>],
) -> std::result::Result<(), Failed> {
    let outcome = attempt(conn, env, batch);
    if outcome.is_err() {
        let _ = rollback(conn);
        env.wake.set(false);
    }
    outcome
}

fn attempt(
    conn: &Connection,
    env: &Env,
    batch: &mut [Box<dyn Job>],
) -> std::result::Result<(), Failed> {
    begin(conn).map_err(|err| Failed::driver("starting a write transaction", err))?;
    // A job counts as failed, too, if SQLite rolled the transaction back under it: the jobs
    // after it must not run outside a transaction.
    if !batch
        .iter_mut()
        .all(|job| job.run(conn, env) && !conn.is_autocommit())
    {
        // A job failed part-way; undo the batch and run it again with savepoints.
        env.wake.set(false);
        rollback(conn)
            .and_then(|()| begin(conn))
            .map_err(|err| Failed::driver("restarting a write batch", err))?;
        for job in batch.iter_mut() {
            job.run_isolated(conn, env);
            if conn.is_autocommit() {
                // The rest keep what their first run answered, and fail with the batch.
                return Err(Failed::RolledBack {
                    full: job.storage_full(),
                });
            }
        }
    }
    conn.execute_batch("COMMIT")
        .map_err(|err| Failed::driver("committing a write batch", err))
}

/// Answers every job of `batch` with the outcome of its transaction, and wakes the
/// dispatchers when a committed job asked for it.
fn settle(
    batch: &mut Vec<Box<dyn Job>>,
    outcome: std::result::Result<(), Failed>,
    env: &Env,
    waker: &Waker,
) {
    match outcome {
        Ok(()) => {
            // Counted before any caller hears of the commit: a caller that reads the next due
            // time right after its write must not be answered what an earlier claim read.
            let wake = env.wake.replace(false);
            if wake {
                waker.count();
            }
            for job in batch.drain(..) {
                job.finish(Ok(()));
            }
            if wake {
                waker.wake();
            }
        }
        Err(failed) => {
            for job in batch.drain(..) {
                job.finish(Err(&failed));
            }
        }
    }
}

fn begin(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")
}

/// Rolls back the open transaction, if SQLite has not already done so itself (it does on
/// some errors, such as a full disk or an I/O error).
fn rollback(conn: &Connection) -> rusqlite::Result<()> {
    if conn.is_autocommit() {
        return Ok(());
    }
    conn.execute_batch("ROLLBACK")
}

/// Answers every job of `batch` with `failed`, which kept the batch from running.
fn abort_all(batch: &mut Vec<Box<dyn Job>>, failed: Failed) {
    for job in batch.drain(..) {
        job.abort(failed.error());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};

    use super::*;

    /// A gate a job can wait at, open for good once opened.
    #[derive(Default)]
    struct Gate {
        open: Mutex<bool>,
        cv: Condvar,
    }

    impl Gate {
        fn wait(&self) {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.cv.wait(open).unwrap();
            }
        }

        fn open(&self) {
            *self.open.lock().unwrap() = true;
            self.cv.notify_all();
        }
    }

    fn insert(conn: &Connection, n: i64) -> Result<()> {
        conn.execute("INSERT INTO t (n) VALUES (?1)", [n])
            .map(drop)
            .ctx("inserting")
    }

    /// A writer on a fresh database in `dir` set up by `sql`; `full_sync` as the store passes it.
    fn writer_on(dir: &tempfile::TempDir, sql: &str, full_sync: bool) -> Writer {
        let conn = Connection::open(dir.path().join("w.db")).unwrap();
        conn.execute_batch(sql).unwrap();
        let lock = File::create(dir.path().join("w.lock")).unwrap();
        let env = Env::new(
            ferrule_policy::clock::system(),
            0,
            DeadLetterPolicy::default(),
        );
        Writer::start(
            conn,
            env,
            lock,
            (64, 64),
            full_sync,
            Arc::new(Waker::default()),
        )
        .unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_job_fails_alone_and_the_batch_commits_once() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_on(&dir, "CREATE TABLE t (n INTEGER NOT NULL)", true);

        // The first job holds the writer until the other three are queued behind it, so they
        // share one batch whichever job the writer has picked up when the gate opens.
        let gate = Arc::new(Gate::default());
        let runs: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
        let held = {
            let gate = gate.clone();
            writer.submit(move |_, _| {
                gate.wait();
                Ok(())
            })
        };
        let job = |i: usize, fail: bool| {
            let runs = runs.clone();
            writer.submit(move |conn, _| {
                runs[i].fetch_add(1, Ordering::SeqCst);
                insert(conn, i as i64)?;
                if fail {
                    // A lost lease is the failure a real job most often meets.
                    return Err(StoreError::LeaseLost {
                        id: crate::types::MessageId::from_ulid(Ulid::nil()),
                        owner: "test".into(),
                    });
                }
                Ok(i)
            })
        };
        let (held, a, b, c, ()) =
            tokio::join!(held, job(0, false), job(1, true), job(2, false), async {
                gate.open()
            });
        held.unwrap();
        assert_eq!(a.unwrap(), 0);
        assert!(matches!(b, Err(StoreError::LeaseLost { .. })), "{b:?}");
        assert_eq!(c.unwrap(), 2);

        // The optimistic pass stopped at the failed job; the second pass ran all three.
        let runs: Vec<usize> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
        assert_eq!(runs, [2, 2, 1]);
        let rows = writer
            .submit(|conn, _| {
                conn.prepare("SELECT n FROM t ORDER BY n")
                    .and_then(|mut s| s.query_map([], |r| r.get::<_, i64>(0))?.collect())
                    .ctx("reading")
            })
            .await
            .unwrap();
        let rows: Vec<i64> = rows;
        assert_eq!(
            rows,
            [0, 2],
            "the failed job's row is undone, the others written once"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn relaxed_batches_commit_without_waiting_for_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_on(
            &dir,
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL",
            true,
        );
        let sync = |conn: &Connection, _: &Env| {
            conn.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0))
                .ctx("reading synchronous")
        };
        // 2 is FULL, 1 is NORMAL.
        assert_eq!(writer.submit(sync).await.unwrap(), 2);
        assert_eq!(writer.submit_relaxed(sync).await.unwrap(), 1);
        assert_eq!(writer.submit(sync).await.unwrap(), 2);

        // A store that runs NORMAL anyway never switches.
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_on(
            &dir,
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL",
            false,
        );
        assert_eq!(writer.submit(sync).await.unwrap(), 1);
        assert_eq!(writer.submit_relaxed(sync).await.unwrap(), 1);
    }
}
