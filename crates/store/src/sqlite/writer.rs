//! The single writer thread: runs write jobs in batches, one transaction and one fsync per
//! batch (group commit), and answers each caller only after its batch is committed.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::sync::Arc;
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

/// A write job, run inside the batch transaction under its own savepoint.
trait Job: Send {
    fn run(self: Box<Self>, conn: &Connection, env: &Env) -> Box<dyn Finish>;
    fn abort(self: Box<Self>, err: StoreError);
}

/// A job's result, held until the batch commits.
trait Finish: Send {
    fn finish(self: Box<Self>, commit: std::result::Result<(), &str>);
}

struct FnJob<F, T> {
    work: F,
    reply: oneshot::Sender<Result<T>>,
}

struct Done<T> {
    result: Result<T>,
    reply: oneshot::Sender<Result<T>>,
}

impl<F, T> Job for FnJob<F, T>
where
    F: FnOnce(&Connection, &Env) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection, env: &Env) -> Box<dyn Finish> {
        let FnJob { work, reply } = *self;
        let result = in_savepoint(conn, || work(conn, env));
        Box::new(Done { result, reply })
    }

    fn abort(self: Box<Self>, err: StoreError) {
        let _ = self.reply.send(Err(err));
    }
}

impl<T: Send + 'static> Finish for Done<T> {
    fn finish(self: Box<Self>, commit: std::result::Result<(), &str>) {
        let result = match commit {
            Ok(()) => self.result,
            Err(msg) => Err(StoreError::database(
                "committing a write batch",
                false,
                msg.to_owned(),
            )),
        };
        // The caller may have gone away; its effect is committed either way.
        let _ = self.reply.send(result);
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
    pub(crate) fn start(
        conn: Connection,
        env: Env,
        lock: File,
        max_batch: usize,
        capacity: usize,
        notify: Arc<Notify>,
    ) -> Result<Self> {
        let (sender, receiver) = mpsc::channel(capacity);
        let thread = std::thread::Builder::new()
            .name("ferrule-store-writer".into())
            .spawn(move || {
                run(conn, env, receiver, max_batch, &notify);
                drop(lock);
            })
            .map_err(|e| StoreError::database("starting the writer thread", false, e))?;
        Ok(Writer {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Runs `work` in the next batch and resolves once the batch is committed.
    pub(crate) async fn submit<T, F>(&self, work: F) -> Result<T>
    where
        F: FnOnce(&Connection, &Env) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let sender = self.sender.as_ref().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(FnJob { work, reply });
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
    notify: &Notify,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch);
    let mut done: Vec<Box<dyn Finish>> = Vec::with_capacity(max_batch);
    while let Some(first) = receiver.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(err) = conn.execute_batch("BEGIN IMMEDIATE") {
            let transient = matches!(
                err.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            );
            let msg = err.to_string();
            for job in batch.drain(..) {
                job.abort(StoreError::database(
                    "starting a write transaction",
                    transient,
                    msg.clone(),
                ));
            }
            continue;
        }
        for job in batch.drain(..) {
            done.push(job.run(&conn, &env));
        }
        match conn.execute_batch("COMMIT") {
            Ok(()) => {
                for d in done.drain(..) {
                    d.finish(Ok(()));
                }
                if env.wake.replace(false) {
                    notify.notify_waiters();
                    notify.notify_one();
                }
            }
            Err(err) => {
                let msg = err.to_string();
                let _ = conn.execute_batch("ROLLBACK");
                env.wake.set(false);
                for d in done.drain(..) {
                    d.finish(Err(&msg));
                }
            }
        }
    }
}
