//! Group commit for PostgreSQL: enqueues, the ends of attempts (`complete`, `reschedule`,
//! `dead_letter`, `release`, `defer`) and inbound events wait in one bounded queue; a few
//! writer tasks each take everything waiting, write it with one set-based statement per kind
//! in one transaction, commit once, and only then answer each caller.
//!
//! One commit per caller caps the store at the server's commit rate; one commit per batch
//! makes the WAL flush, the round trips and the statement planning shared costs. The batch
//! statements decide per row, so one caller's outcome never changes another's:
//!
//! - **Inbound events** are inserted with `ON CONFLICT (source, external_id) DO NOTHING`, so a
//!   redelivered event in another transaction or process records nothing; the forwards of the
//!   events that were new join the batch's enqueue statement, in the same transaction.
//!   Duplicates within a batch are answered from the first, as for idempotency keys.
//! - **Idempotency** is settled by `INSERT … ON CONFLICT` on `idempotency_keys`, as for a single
//!   enqueue, so concurrent duplicates in other transactions or processes still create exactly
//!   one message. Duplicates *within* a batch are resolved here first (PostgreSQL refuses to
//!   touch one row twice in one statement): the first one goes to the database, the later ones
//!   are answered `Duplicate` of whatever the first one got.
//! - **Fencing**: the `UPDATE … FROM UNNEST(…)` matches each row on id, owner and token, so a
//!   stale lease fails only its own caller. A message named twice in one batch is written in
//!   a second round of the same transaction, so the first report wins as it would one by one.
//! - **Repeated deferrals** fold per row in the same statement (see [`FINISH`]): a `defer` that
//!   repeats the deferral before its claim updates that event instead of appending one, and
//!   a second round sees what the first wrote.
//! - **A bad row** the database refuses (e.g. a JSON `\u0000` that `jsonb` cannot store) fails
//!   the set-based statement: the batch is rolled back and written again with a savepoint per
//!   caller, so only that caller gets the error.
//! - **Conflicts** (deadlock, serialization failure) roll the batch back and run it again, up
//!   to [`ATTEMPTS`] times. A failed `COMMIT` is never retried: its outcome may be unknown, so
//!   every caller of the batch gets the error, as a single statement's caller would.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ferrule_policy::SharedClock;
use sqlx::{Acquire, PgConnection, PgPool, Row};
use tokio::sync::{Mutex, mpsc, oneshot};
use ulid::Generator;

use super::error::{is_conflict, map_shared};
use super::runs::TxError;
use crate::error::{Result, StoreError};
use crate::types::{
    Duplicate, Enqueued, InboundId, MessageId, Recorded, Status, fingerprints_conflict, to_millis,
};

/// How many times a batch runs when it keeps conflicting with concurrent transactions.
const ATTEMPTS: usize = 3;

/// Rounds of the enqueue statement in one transaction when the original of a duplicate
/// vanishes (purged) between the insert and the look-up.
const ENQUEUE_ROUNDS: usize = 3;

/// Stores new messages; answers with the ids created. `$8` is now, `$9` the expiry of new
/// idempotency keys, `$10` the messages' `not_before` (`$7`, `next_attempt_at`, is it or now),
/// `$11` their request fingerprints, kept with their keys, `$12` and `$13` the run and step
/// of a run's messages, `$14` their `traceparent`s. Keys are inserted in key order so
/// that two batches sharing keys lock them in the same order; messages in submission order, so
/// `seq` follows it.
const ENQUEUE: &str = "
WITH input AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::bigint[], $10::bigint[], $11::bytea[], $12::text[], $13::text[],
                         $14::text[])
        WITH ORDINALITY AS t(id, destination, payload, headers, idempotency_key, ordering_key,
                             next_attempt_at, not_before, fingerprint, run_id, run_step,
                             traceparent, ord)
), k AS (
    INSERT INTO idempotency_keys (destination, key, message_id, expires_at, fingerprint)
    SELECT destination, idempotency_key, id, $9, fingerprint FROM input
    WHERE idempotency_key IS NOT NULL
    ORDER BY destination, idempotency_key
    ON CONFLICT (destination, key) DO UPDATE
        SET message_id = EXCLUDED.message_id, expires_at = EXCLUDED.expires_at,
            fingerprint = EXCLUDED.fingerprint
        WHERE idempotency_keys.expires_at <= $8
    RETURNING message_id
), m AS (
    INSERT INTO messages (id, destination, payload, headers, idempotency_key, ordering_key,
                          status, attempts, next_attempt_at, created_at, updated_at, event_seq,
                          not_before, run_id, run_step, traceparent)
    SELECT id, destination, payload::jsonb, headers::jsonb, idempotency_key, ordering_key,
           'queued', 0, next_attempt_at, $8, $8, 1, not_before, run_id, run_step, traceparent
    FROM input
    WHERE idempotency_key IS NULL OR id IN (SELECT message_id FROM k)
    ORDER BY ord
    RETURNING id
), e AS (
    INSERT INTO events (message_id, seq, at, status, attempt)
    SELECT id, 1, $8, 'queued', 0 FROM m
)
SELECT id FROM m";

/// The message each of the given (destination, key) pairs names now, the fingerprint the key
/// was taken with, and the message's current status (NULL when it is gone): primary-key
/// look-ups of the keys and of the messages.
const ORIGINALS: &str = "
SELECT k.destination, k.key, k.message_id, k.fingerprint, m.status
FROM idempotency_keys k
JOIN UNNEST($1::text[], $2::text[]) AS t(destination, key)
  ON k.destination = t.destination AND k.key = t.key
LEFT JOIN messages m ON m.id = k.message_id";

/// Fenced transitions out of `delivering`, one per input row; answers with the ids that
/// matched, and whether each has an ordering key. `action` is the new status, or `release` / `defer` for "back to queued/retrying
/// with the attempt uncounted". `$11` is now.
///
/// A `defer` folds (`f.fold`) when the event before its claim's is a deferral with the status,
/// attempt and detail it would write: the claim's event is deleted, that deferral's `repeats`
/// goes up and `event_seq` goes back by one. `f` reads the statement's snapshot, not the row
/// the `UPDATE` locks, which is safe because only the lease holder writes a `delivering`
/// message's events: if anyone else changed the row (a cancel, a reclaim), the lease no longer
/// matches when the `UPDATE` rechecks it, and the row is not written at all. `MATERIALIZED`
/// decides it once per row; inlined, the check ran twice, for `SET` and for `RETURNING`.
///
/// The rows are found by primary key only: the status is checked as `(…) IS TRUE`, which no
/// index can serve. Written `m.status = 'delivering'`, the generic plan the server settles on
/// after five executions joined the input with every `delivering` entry of `messages_due`,
/// the dead entries each claim and end left there since the last vacuum included: 150–320
/// entries read per message at 1,000 msg/s.
const FINISH: &str = "
WITH input AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                         $6::bool[], $7::text[], $8::text[], $9::bigint[], $10::text[])
        AS t(id, owner, token, action, next_attempt_at, set_last_error, outcome, code,
             duration_ms, detail)
), f AS MATERIALIZED (
    SELECT i.*, (i.action = 'defer' AND EXISTS (
        SELECT 1 FROM messages m
        JOIN events c ON c.message_id = m.id AND c.seq = m.event_seq
        JOIN events p ON p.message_id = m.id AND p.seq = m.event_seq - 1
        WHERE m.id = i.id AND m.status = 'delivering'
          AND m.lease_owner = i.owner AND m.lease_token = i.token
          AND c.status = 'delivering'
          AND p.repeats IS NOT NULL AND p.detail = i.detail
          AND p.attempt = greatest(m.attempts - 1, 0)
          AND p.status = CASE WHEN m.attempts <= 1 THEN 'queued' ELSE 'retrying' END)) AS fold
    FROM input i
), u AS (
    UPDATE messages m SET
        status = CASE WHEN i.action NOT IN ('release', 'defer') THEN i.action
                      WHEN m.attempts <= 1 THEN 'queued' ELSE 'retrying' END,
        attempts = CASE WHEN i.action IN ('release', 'defer') THEN greatest(m.attempts - 1, 0)
                        ELSE m.attempts END,
        next_attempt_at = i.next_attempt_at,
        last_error = CASE WHEN i.set_last_error THEN i.detail ELSE m.last_error END,
        delivered_at = CASE WHEN i.action = 'delivered' THEN $11 ELSE m.delivered_at END,
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
        updated_at = $11,
        event_seq = CASE WHEN i.fold THEN m.event_seq - 1 ELSE m.event_seq + 1 END
    FROM f i
    WHERE m.id = i.id AND (m.status = 'delivering') IS TRUE
      AND m.lease_owner = i.owner AND m.lease_token = i.token
    RETURNING m.id, m.event_seq, m.status, m.attempts, i.action, i.fold, i.outcome, i.code,
              i.duration_ms, i.detail, m.ordering_key IS NOT NULL AS keyed
), claims AS (
    DELETE FROM events e USING u
    WHERE u.fold AND e.message_id = u.id AND e.seq = u.event_seq + 1
), repeats AS (
    UPDATE events e SET repeats = e.repeats + 1, last_at = $11 FROM u
    WHERE u.fold AND e.message_id = u.id AND e.seq = u.event_seq
), e AS (
    INSERT INTO events (message_id, seq, at, status, attempt, outcome, code, duration_ms, detail,
                        repeats)
    SELECT id, event_seq, $11, status, attempts, outcome, code, duration_ms, detail,
           CASE WHEN action = 'defer' THEN 1 END
    FROM u WHERE NOT fold
)
SELECT id, keyed FROM u";

/// Records inbound events that are new; answers with the ids inserted. `$5` is now. Rows go in
/// key order, so two batches sharing keys lock them in the same order.
const RECORD_INBOUND: &str = "
INSERT INTO inbound (id, source, external_id, payload, received_at)
SELECT id, source, external_id, payload::jsonb, $5
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
    AS t(id, source, external_id, payload)
ORDER BY source, external_id
ON CONFLICT (source, external_id) DO NOTHING
RETURNING id";

/// The event each of the given (source, external id) pairs names now.
const INBOUND_ORIGINALS: &str = "
SELECT i.source, i.external_id, i.id
FROM inbound i
JOIN UNNEST($1::text[], $2::text[]) AS t(source, external_id)
  ON i.source = t.source AND i.external_id = t.external_id";

/// A checked, serialised inbound event waiting to be recorded, with its forward.
#[derive(Debug)]
pub(crate) struct InboundRow {
    pub(crate) source: String,
    pub(crate) external_id: String,
    pub(crate) payload: String,
    /// Enqueued in the same transaction, only when the event is new.
    pub(crate) forward: Option<NewRow>,
}

/// A checked, serialised message waiting to be stored.
#[derive(Debug)]
pub(crate) struct NewRow {
    pub(crate) destination: String,
    pub(crate) payload: String,
    pub(crate) headers: Option<String>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) ordering_key: Option<String>,
    /// Unix milliseconds of the first attempt; `None` is "now" when the batch is written.
    pub(crate) not_before: Option<i64>,
    /// The request fingerprint kept with the idempotency key.
    pub(crate) fingerprint: Option<[u8; 32]>,
    /// The run (its id) and step the message belongs to.
    pub(crate) run: Option<(String, String)>,
    /// The W3C `traceparent` the message was submitted under.
    pub(crate) traceparent: Option<String>,
}

/// What an idempotency key names: the original message, the fingerprint the key was taken
/// with, and the message's status now.
#[derive(Debug)]
struct Original {
    id: MessageId,
    fingerprint: Option<Vec<u8>>,
    status: Option<Status>,
}

/// One end of an attempt, fenced by owner and token.
#[derive(Debug)]
pub(crate) struct FinishRow {
    pub(crate) id: MessageId,
    pub(crate) owner: String,
    pub(crate) token: String,
    /// `delivered`, `retrying`, `dead`, `release` or `defer` (a release that folds into the
    /// deferral before its claim when it repeats it).
    pub(crate) action: &'static str,
    /// Unix milliseconds when the message is next due; `None` is "now".
    pub(crate) next_attempt_at: Option<i64>,
    /// Whether `detail` becomes `last_error`.
    pub(crate) set_last_error: bool,
    pub(crate) outcome: Option<&'static str>,
    pub(crate) code: Option<String>,
    pub(crate) duration_ms: Option<i64>,
    pub(crate) detail: Option<String>,
}

/// What a caller waits for.
#[derive(Debug)]
enum Job {
    /// All of `rows` are stored in one transaction, or none.
    Enqueue {
        rows: Vec<NewRow>,
        reply: oneshot::Sender<Result<Vec<Enqueued>>>,
    },
    /// Answers whether the lease matched (`None`: fenced or gone) and, if it did, whether the
    /// message has an ordering key.
    Finish {
        row: FinishRow,
        reply: oneshot::Sender<Result<Option<bool>>>,
    },
    /// The event and, when it is new, its forward, in one transaction.
    Inbound {
        row: InboundRow,
        reply: oneshot::Sender<Result<Recorded>>,
    },
}

impl Job {
    /// How much of a batch this job uses up.
    fn size(&self) -> usize {
        match self {
            Job::Enqueue { rows, .. } => rows.len(),
            Job::Finish { .. } => 1,
            Job::Inbound { row, .. } => 1 + usize::from(row.forward.is_some()),
        }
    }
}

/// A job's answer, held until its batch commits.
#[derive(Debug)]
enum Answer {
    Enqueue(Vec<Enqueued>),
    Finish(Option<bool>),
    Inbound(Recorded),
}

/// Why a batch transaction failed.
enum Failure {
    /// Before `COMMIT`: nothing was written.
    Rollback(sqlx::Error),
    /// The original of a duplicate kept vanishing: nothing was written; retry.
    Vanished,
    /// At `COMMIT`: the outcome may be unknown, never retry.
    Commit(sqlx::Error),
}

/// What every writer task shares.
struct Env {
    pool: PgPool,
    clock: SharedClock,
    idempotency_window_ms: i64,
    max_batch: usize,
    target: String,
    ids: std::sync::Mutex<Generator>,
    meter: Arc<crate::load::Meter>,
}

impl Env {
    fn now(&self) -> i64 {
        to_millis(self.clock.system_now())
    }

    /// A new message id, increasing within this process.
    fn new_id(&self) -> MessageId {
        let now = self.clock.system_now();
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        MessageId::from_ulid(
            ids.generate_from_datetime(now)
                .unwrap_or_else(|_| ulid::Ulid::from_datetime(now)),
        )
    }
}

/// The handle the store keeps: queues jobs for the writer tasks.
#[derive(Debug)]
pub(crate) struct Writer {
    sender: mpsc::Sender<Job>,
    env: Arc<Env>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").finish_non_exhaustive()
    }
}

/// How the writer is set up.
#[derive(Debug)]
pub(crate) struct WriterConfig {
    /// Writer tasks, so one batch is built while another waits for its commit.
    pub(crate) tasks: usize,
    /// Most messages and reports one transaction writes (a larger `enqueue_batch` goes alone).
    pub(crate) max_batch: usize,
    /// Bound on jobs waiting; submitters wait when it is full.
    pub(crate) capacity: usize,
    pub(crate) clock: SharedClock,
    pub(crate) idempotency_window_ms: i64,
    pub(crate) target: String,
    /// Where waits for a pool connection are counted.
    pub(crate) meter: Arc<crate::load::Meter>,
}

impl Writer {
    /// Starts the writer tasks on `pool` (needs a tokio runtime). They stop when the store,
    /// and with it the sending half of the queue, is dropped.
    pub(crate) fn start(pool: PgPool, config: WriterConfig) -> Self {
        let (sender, receiver) = mpsc::channel(config.capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        let env = Arc::new(Env {
            pool,
            clock: config.clock,
            idempotency_window_ms: config.idempotency_window_ms,
            max_batch: config.max_batch,
            target: config.target,
            ids: std::sync::Mutex::new(Generator::new()),
            meter: config.meter,
        });
        for _ in 0..config.tasks.max(1) {
            tokio::spawn(run(receiver.clone(), env.clone()));
        }
        Writer { sender, env }
    }

    /// Jobs waiting for the writer tasks, and the queue's bound.
    pub(crate) fn queue(&self) -> (usize, usize) {
        let s = &self.sender;
        (s.max_capacity() - s.capacity(), s.max_capacity())
    }

    /// Stores `rows` in the caller's transaction `conn`, as a batch of the writer would (ids,
    /// idempotency keys, duplicates); for a run's change, which is a transaction of its own.
    /// Errors are the driver's, so the caller can tell a conflict to rerun from the rest.
    pub(crate) async fn enqueue_in(
        &self,
        conn: &mut PgConnection,
        now: i64,
        rows: &[NewRow],
    ) -> std::result::Result<Vec<Enqueued>, TxError> {
        match enqueue_rows(&self.env, conn, now, &[rows]).await {
            Ok(mut groups) => Ok(groups.pop().unwrap_or_default()),
            Err(Failure::Rollback(e) | Failure::Commit(e)) => Err(TxError::Sql(e)),
            // A duplicate's original vanished (purged) meanwhile: a retry can succeed.
            Err(Failure::Vanished) => Err(TxError::Store(StoreError::database(
                "enqueueing a run's messages",
                true,
                "an idempotency key's original kept disappearing",
            ))),
        }
    }

    /// A new id, increasing within this process.
    pub(crate) fn new_id(&self) -> MessageId {
        self.env.new_id()
    }

    /// Stores `rows` in one transaction; resolves once it is committed.
    pub(crate) async fn enqueue(&self, rows: Vec<NewRow>) -> Result<Vec<Enqueued>> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Enqueue { rows, reply }).await?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Writes one fenced transition; resolves once it is committed: `None` when the lease did
    /// not match, else whether the message has an ordering key.
    pub(crate) async fn finish(&self, row: FinishRow) -> Result<Option<bool>> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Finish { row, reply }).await?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Records one inbound event (and its forward, when new); resolves once it is committed.
    pub(crate) async fn record_inbound(&self, row: InboundRow) -> Result<Recorded> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Inbound { row, reply }).await?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn submit(&self, job: Job) -> Result<()> {
        self.sender.send(job).await.map_err(|_| StoreError::Closed)
    }
}

/// One writer task: takes everything waiting (up to `max_batch`), writes it, answers.
async fn run(receiver: Arc<Mutex<mpsc::Receiver<Job>>>, env: Arc<Env>) {
    let mut batch = Vec::new();
    loop {
        {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut size = first.size();
            batch.push(first);
            while size < env.max_batch {
                match receiver.try_recv() {
                    Ok(job) => {
                        size += job.size();
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
        }
        write_batch(&env, std::mem::take(&mut batch)).await;
    }
}

/// Writes `jobs` in one transaction and answers every caller.
async fn write_batch(env: &Env, jobs: Vec<Job>) {
    let mut failure = None;
    for _ in 0..ATTEMPTS {
        match transaction(env, &jobs, false).await {
            Ok(answers) => return answer_all(jobs, answers),
            Err(Failure::Rollback(err)) if is_conflict(&err) => {
                failure = Some(Failure::Rollback(err));
            }
            Err(Failure::Vanished) => failure = Some(Failure::Vanished),
            Err(Failure::Rollback(sqlx::Error::Database(db))) if jobs.len() > 1 => {
                // A row the database refused: find out whose, without failing the others.
                tracing::debug!(error = %db, "batch refused; writing it caller by caller");
                match transaction(env, &jobs, true).await {
                    Ok(answers) => return answer_all(jobs, answers),
                    Err(other) => failure = Some(other),
                }
                break;
            }
            Err(other) => {
                failure = Some(other);
                break;
            }
        }
    }
    let cause = match failure {
        Some(Failure::Rollback(e) | Failure::Commit(e)) => Some(Arc::new(e)),
        Some(Failure::Vanished) | None => None,
    };
    let errors = jobs
        .iter()
        .map(|job| {
            Err(match &cause {
                Some(e) => map_shared(job.context(), &env.target, e),
                None => vanished(job),
            })
        })
        .collect();
    answer_all(jobs, errors);
}

/// One transaction over `jobs`: all together with set-based statements, or (`savepoints`)
/// each job under its own savepoint, so a job the database refuses fails alone.
async fn transaction(
    env: &Env,
    jobs: &[Job],
    savepoints: bool,
) -> std::result::Result<Vec<Result<Answer>>, Failure> {
    let mut tx = super::timed(&env.meter, env.pool.begin())
        .await
        .map_err(Failure::Rollback)?;
    let now = env.now();
    let body = if savepoints {
        each_in_savepoint(env, &mut tx, now, jobs).await
    } else {
        together(env, &mut tx, now, jobs)
            .await
            .map(|answers| answers.into_iter().map(Ok).collect())
    };
    match body {
        Ok(answers) => {
            tx.commit().await.map_err(Failure::Commit)?;
            Ok(answers)
        }
        Err(failure) => {
            let _ = tx.rollback().await;
            Err(failure)
        }
    }
}

async fn each_in_savepoint(
    env: &Env,
    conn: &mut PgConnection,
    now: i64,
    jobs: &[Job],
) -> std::result::Result<Vec<Result<Answer>>, Failure> {
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        let mut savepoint = conn.begin().await.map_err(Failure::Rollback)?;
        match together(env, &mut savepoint, now, std::slice::from_ref(job)).await {
            Ok(mut answer) => {
                savepoint.commit().await.map_err(Failure::Rollback)?;
                answers.push(answer.pop().ok_or(Failure::Vanished));
            }
            Err(failure) => {
                savepoint.rollback().await.map_err(Failure::Rollback)?;
                answers.push(Err(failure));
            }
        }
    }
    Ok(answers
        .into_iter()
        .zip(jobs)
        .map(|(answer, job)| {
            answer.map_err(|failure| match failure {
                Failure::Rollback(e) | Failure::Commit(e) => {
                    map_shared(job.context(), &env.target, &Arc::new(e))
                }
                Failure::Vanished => vanished(job),
            })
        })
        .collect())
}

/// Writes every job's rows with one statement per kind; answers in job order.
async fn together(
    env: &Env,
    conn: &mut PgConnection,
    now: i64,
    jobs: &[Job],
) -> std::result::Result<Vec<Answer>, Failure> {
    let mut groups: Vec<&[NewRow]> = jobs
        .iter()
        .filter_map(|job| match job {
            Job::Enqueue { rows, .. } => Some(rows.as_slice()),
            Job::Finish { .. } | Job::Inbound { .. } => None,
        })
        .collect();
    let finishes: Vec<&FinishRow> = jobs
        .iter()
        .filter_map(|job| match job {
            Job::Finish { row, .. } => Some(row),
            Job::Enqueue { .. } | Job::Inbound { .. } => None,
        })
        .collect();
    let inbound: Vec<&InboundRow> = jobs
        .iter()
        .filter_map(|job| match job {
            Job::Inbound { row, .. } => Some(row),
            Job::Enqueue { .. } | Job::Finish { .. } => None,
        })
        .collect();
    let mut recorded = inbound_rows(env, conn, now, &inbound).await?;
    // The forwards of new events go in with the batch's messages; their answers come after
    // the enqueue jobs', in the order of the events.
    let enqueue_jobs = groups.len();
    groups.extend(
        inbound
            .iter()
            .zip(&recorded)
            .filter(|(_, r)| r.is_created())
            .filter_map(|(row, _)| row.forward.as_ref())
            .map(std::slice::from_ref),
    );
    let mut enqueued = enqueue_rows(env, conn, now, &groups).await?;
    let mut forwards = enqueued
        .split_off(enqueue_jobs.min(enqueued.len()))
        .into_iter();
    for (row, answer) in inbound.iter().zip(recorded.iter_mut()) {
        if let Recorded::Created { forward, .. } = answer
            && row.forward.is_some()
        {
            *forward = Some(
                forwards
                    .next()
                    .and_then(|mut group| group.pop())
                    .ok_or(Failure::Vanished)?,
            );
        }
    }
    let mut enqueued = enqueued.into_iter();
    let mut matched = finish_rows(conn, now, &finishes).await?.into_iter();
    let mut recorded = recorded.into_iter();
    jobs.iter()
        .map(|job| match job {
            Job::Enqueue { .. } => enqueued.next().map(Answer::Enqueue),
            Job::Finish { .. } => matched.next().map(Answer::Finish),
            Job::Inbound { .. } => recorded.next().map(Answer::Inbound),
        })
        .collect::<Option<Vec<_>>>()
        .ok_or(Failure::Vanished)
}

/// Stores every group's messages; answers per group, in order.
async fn enqueue_rows(
    env: &Env,
    conn: &mut PgConnection,
    now: i64,
    groups: &[&[NewRow]],
) -> std::result::Result<Vec<Vec<Enqueued>>, Failure> {
    let rows: Vec<&NewRow> = groups.iter().flat_map(|g| g.iter()).collect();
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<MessageId> = rows.iter().map(|_| env.new_id()).collect();
    let texts: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let mut answers: Vec<Option<Enqueued>> = vec![None; rows.len()];
    // The fingerprint of the original each answer names, for the repeats within the batch.
    let mut original_fingerprints: Vec<Option<Vec<u8>>> = vec![None; rows.len()];
    // A repeated (destination, key) within the batch is answered from its first occurrence.
    let mut first: HashMap<(&str, &str), usize> = HashMap::new();
    let mut same_as: Vec<Option<usize>> = vec![None; rows.len()];
    let mut todo = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        if let Some(key) = row.idempotency_key.as_deref() {
            if let Some(&j) = first.get(&(row.destination.as_str(), key)) {
                same_as[i] = Some(j);
                continue;
            }
            first.insert((row.destination.as_str(), key), i);
        }
        todo.push(i);
    }
    let expires = now.saturating_add(env.idempotency_window_ms);
    for _ in 0..ENQUEUE_ROUNDS {
        if todo.is_empty() {
            break;
        }
        let pick = |f: fn(&NewRow) -> Option<&str>| column(&todo, &rows, f);
        let created: HashSet<String> = sqlx::query(ENQUEUE)
            .bind(todo.iter().map(|&i| texts[i].as_str()).collect::<Vec<_>>())
            .bind(pick(|r| Some(r.destination.as_str())))
            .bind(pick(|r| Some(r.payload.as_str())))
            .bind(pick(|r| r.headers.as_deref()))
            .bind(pick(|r| r.idempotency_key.as_deref()))
            .bind(pick(|r| r.ordering_key.as_deref()))
            .bind(
                todo.iter()
                    .map(|&i| rows[i].not_before.unwrap_or(now))
                    .collect::<Vec<i64>>(),
            )
            .bind(now)
            .bind(expires)
            .bind(
                todo.iter()
                    .map(|&i| rows[i].not_before)
                    .collect::<Vec<Option<i64>>>(),
            )
            .bind(
                todo.iter()
                    .map(|&i| rows[i].fingerprint.as_ref().map(<[u8; 32]>::as_slice))
                    .collect::<Vec<Option<&[u8]>>>(),
            )
            .bind(pick(|r| r.run.as_ref().map(|(run, _)| run.as_str())))
            .bind(pick(|r| r.run.as_ref().map(|(_, step)| step.as_str())))
            .bind(pick(|r| r.traceparent.as_deref()))
            .fetch_all(&mut *conn)
            .await
            .map_err(Failure::Rollback)?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<std::result::Result<_, _>>()
            .map_err(Failure::Rollback)?;
        let mut duplicates = Vec::new();
        for &i in &todo {
            if created.contains(&texts[i]) {
                answers[i] = Some(Enqueued::Created(ids[i]));
                original_fingerprints[i] = rows[i].fingerprint.map(Vec::from);
            } else {
                duplicates.push(i);
            }
        }
        todo.clear();
        if duplicates.is_empty() {
            break;
        }
        let originals = originals(conn, &rows, &duplicates).await?;
        for i in duplicates {
            let key = (
                rows[i].destination.clone(),
                rows[i].idempotency_key.clone().unwrap_or_default(),
            );
            match originals.get(&key) {
                Some(original) => {
                    answers[i] = Some(Enqueued::Duplicate(Duplicate {
                        id: original.id,
                        status: original.status,
                        conflict: fingerprints_conflict(
                            original.fingerprint.as_deref(),
                            rows[i].fingerprint.as_ref(),
                        ),
                    }));
                    original_fingerprints[i] = original.fingerprint.clone();
                }
                // Purged between the two statements: this one may now create the message.
                None => todo.push(i),
            }
        }
    }
    if !todo.is_empty() {
        return Err(Failure::Vanished);
    }
    for i in 0..rows.len() {
        if let Some(j) = same_as[i] {
            // The first occurrence is the original or names it; a message created by this
            // batch is `queued`.
            answers[i] = answers[j].map(|first| {
                Enqueued::Duplicate(Duplicate {
                    id: first.id(),
                    status: first.duplicate().map_or(Some(Status::Queued), |d| d.status),
                    conflict: fingerprints_conflict(
                        original_fingerprints[j].as_deref(),
                        rows[i].fingerprint.as_ref(),
                    ),
                })
            });
        }
    }
    let mut answers = answers.into_iter();
    groups
        .iter()
        .map(|g| answers.by_ref().take(g.len()).collect::<Option<Vec<_>>>())
        .collect::<Option<Vec<_>>>()
        .ok_or(Failure::Vanished)
}

/// What each duplicate's (destination, key) names now.
async fn originals(
    conn: &mut PgConnection,
    rows: &[&NewRow],
    duplicates: &[usize],
) -> std::result::Result<HashMap<(String, String), Original>, Failure> {
    let destinations: Vec<&str> = duplicates
        .iter()
        .map(|&i| rows[i].destination.as_str())
        .collect();
    let keys: Vec<&str> = duplicates
        .iter()
        .map(|&i| rows[i].idempotency_key.as_deref().unwrap_or_default())
        .collect();
    let found = sqlx::query(ORIGINALS)
        .bind(&destinations)
        .bind(&keys)
        .fetch_all(&mut *conn)
        .await
        .map_err(Failure::Rollback)?;
    let mut by_key = HashMap::with_capacity(found.len());
    for r in &found {
        let destination: String = r.try_get("destination").map_err(Failure::Rollback)?;
        let key: String = r.try_get("key").map_err(Failure::Rollback)?;
        let id: String = r.try_get("message_id").map_err(Failure::Rollback)?;
        let decode = |e: StoreError| Failure::Rollback(sqlx::Error::Decode(Box::new(e)));
        let id: MessageId = id.parse().map_err(decode)?;
        let status: Option<String> = r.try_get("status").map_err(Failure::Rollback)?;
        let original = Original {
            id,
            fingerprint: r.try_get("fingerprint").map_err(Failure::Rollback)?,
            status: status.map(|s| s.parse()).transpose().map_err(decode)?,
        };
        by_key.insert((destination, key), original);
    }
    Ok(by_key)
}

/// Records every inbound event that is new; answers per event, in order.
async fn inbound_rows(
    env: &Env,
    conn: &mut PgConnection,
    now: i64,
    rows: &[&InboundRow],
) -> std::result::Result<Vec<Recorded>, Failure> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    // A repeated (source, external id) within the batch is answered from its first occurrence.
    let mut first: HashMap<(&str, &str), usize> = HashMap::new();
    let mut todo = Vec::with_capacity(rows.len());
    let mut same_as: Vec<Option<usize>> = vec![None; rows.len()];
    for (i, row) in rows.iter().enumerate() {
        match first.get(&(row.source.as_str(), row.external_id.as_str())) {
            Some(&j) => same_as[i] = Some(j),
            None => {
                first.insert((row.source.as_str(), row.external_id.as_str()), i);
                todo.push(i);
            }
        }
    }
    let ids: Vec<InboundId> = rows
        .iter()
        .map(|_| InboundId::from_ulid(env.new_id().ulid()))
        .collect();
    let texts: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let pick =
        |f: fn(&InboundRow) -> &str| -> Vec<&str> { todo.iter().map(|&i| f(rows[i])).collect() };
    let created: HashSet<String> = sqlx::query(RECORD_INBOUND)
        .bind(todo.iter().map(|&i| texts[i].as_str()).collect::<Vec<_>>())
        .bind(pick(|r| r.source.as_str()))
        .bind(pick(|r| r.external_id.as_str()))
        .bind(pick(|r| r.payload.as_str()))
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .map_err(Failure::Rollback)?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<std::result::Result<_, _>>()
        .map_err(Failure::Rollback)?;
    let mut answers: Vec<Option<Recorded>> = vec![None; rows.len()];
    let mut duplicates = Vec::new();
    for &i in &todo {
        if created.contains(&texts[i]) {
            // The forward's answer is filled in once it is enqueued.
            answers[i] = Some(Recorded::Created {
                id: ids[i],
                forward: None,
            });
        } else {
            duplicates.push(i);
        }
    }
    if !duplicates.is_empty() {
        let found = sqlx::query(INBOUND_ORIGINALS)
            .bind(
                duplicates
                    .iter()
                    .map(|&i| rows[i].source.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                duplicates
                    .iter()
                    .map(|&i| rows[i].external_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *conn)
            .await
            .map_err(Failure::Rollback)?;
        let mut by_key = HashMap::with_capacity(found.len());
        for r in &found {
            let source: String = r.try_get("source").map_err(Failure::Rollback)?;
            let external_id: String = r.try_get("external_id").map_err(Failure::Rollback)?;
            let id: String = r.try_get("id").map_err(Failure::Rollback)?;
            let id: InboundId = id
                .parse()
                .map_err(|e: StoreError| Failure::Rollback(sqlx::Error::Decode(Box::new(e))))?;
            by_key.insert((source, external_id), id);
        }
        for i in duplicates {
            let key = (rows[i].source.clone(), rows[i].external_id.clone());
            // Purged between the two statements: the batch runs again and records it anew.
            let id = by_key.get(&key).ok_or(Failure::Vanished)?;
            answers[i] = Some(Recorded::Duplicate(*id));
        }
    }
    for i in 0..rows.len() {
        if let Some(j) = same_as[i] {
            answers[i] = answers[j].map(|a| Recorded::Duplicate(a.id()));
        }
    }
    answers
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or(Failure::Vanished)
}

/// Writes every fenced transition; answers for each whether its lease matched (`None`: not)
/// and, if it did, whether the message has an ordering key.
async fn finish_rows(
    conn: &mut PgConnection,
    now: i64,
    rows: &[&FinishRow],
) -> std::result::Result<Vec<Option<bool>>, Failure> {
    let mut matched = vec![None; rows.len()];
    let mut pending: Vec<usize> = (0..rows.len()).collect();
    while !pending.is_empty() {
        // One report per message per statement; a second report on the same message goes in
        // the next round, after the first (where, fenced by the first, it matches nothing).
        let mut seen = HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) =
            pending.iter().partition(|&&i| seen.insert(rows[i].id));
        let ids: Vec<String> = round.iter().map(|&i| rows[i].id.to_string()).collect();
        let text = |f: fn(&FinishRow) -> Option<&str>| column(&round, rows, f);
        let done: HashMap<String, bool> = sqlx::query(FINISH)
            .bind(&ids)
            .bind(text(|r| Some(r.owner.as_str())))
            .bind(text(|r| Some(r.token.as_str())))
            .bind(text(|r| Some(r.action)))
            .bind(
                round
                    .iter()
                    .map(|&i| rows[i].next_attempt_at.unwrap_or(now))
                    .collect::<Vec<i64>>(),
            )
            .bind(
                round
                    .iter()
                    .map(|&i| rows[i].set_last_error)
                    .collect::<Vec<bool>>(),
            )
            .bind(text(|r| r.outcome))
            .bind(text(|r| r.code.as_deref()))
            .bind(
                round
                    .iter()
                    .map(|&i| rows[i].duration_ms)
                    .collect::<Vec<Option<i64>>>(),
            )
            .bind(text(|r| r.detail.as_deref()))
            .bind(now)
            .fetch_all(&mut *conn)
            .await
            .map_err(Failure::Rollback)?
            .iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<bool, _>(1)?)))
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(Failure::Rollback)?;
        for (&i, id) in round.iter().zip(&ids) {
            matched[i] = done.get(id).copied();
        }
        pending = later;
    }
    Ok(matched)
}

/// One text column of a set-based statement: `f` of the rows at `picked`, in that order.
fn column<'a, R>(
    picked: &[usize],
    rows: &[&'a R],
    f: fn(&'a R) -> Option<&'a str>,
) -> Vec<Option<&'a str>> {
    picked.iter().map(|&i| f(rows[i])).collect()
}

fn vanished(job: &Job) -> StoreError {
    let detail = match job {
        Job::Inbound { .. } => "an inbound event's original kept disappearing",
        Job::Enqueue { .. } | Job::Finish { .. } => {
            "an idempotency key's original kept disappearing"
        }
    };
    StoreError::database(job.context(), true, detail)
}

/// Sends each job its answer. A caller that went away is fine: its effect is committed either
/// way (or not at all, with the error it would have seen).
fn answer_all(jobs: Vec<Job>, answers: Vec<Result<Answer>>) {
    for (job, answer) in jobs.into_iter().zip(answers) {
        match (job, answer) {
            (Job::Enqueue { reply, .. }, Ok(Answer::Enqueue(ids))) => {
                let _ = reply.send(Ok(ids));
            }
            (Job::Finish { reply, .. }, Ok(Answer::Finish(matched))) => {
                let _ = reply.send(Ok(matched));
            }
            (Job::Inbound { reply, .. }, Ok(Answer::Inbound(recorded))) => {
                let _ = reply.send(Ok(recorded));
            }
            (Job::Enqueue { reply, .. }, Err(e)) => {
                let _ = reply.send(Err(e));
            }
            (Job::Finish { reply, .. }, Err(e)) => {
                let _ = reply.send(Err(e));
            }
            (Job::Inbound { reply, .. }, Err(e)) => {
                let _ = reply.send(Err(e));
            }
            // `together` answers in job order, so kinds always line up.
            (Job::Enqueue { reply, .. }, Ok(_)) => {
                let _ = reply.send(Err(mismatch()));
            }
            (Job::Finish { reply, .. }, Ok(_)) => {
                let _ = reply.send(Err(mismatch()));
            }
            (Job::Inbound { reply, .. }, Ok(_)) => {
                let _ = reply.send(Err(mismatch()));
            }
        }
    }
}

fn mismatch() -> StoreError {
    StoreError::database("answering a batch", false, "answer of the wrong kind")
}

impl Job {
    /// What the caller was doing, for error messages.
    fn context(&self) -> &'static str {
        match self {
            Job::Enqueue { .. } => "enqueueing messages",
            Job::Finish { .. } => "ending an attempt",
            Job::Inbound { .. } => "recording an inbound event",
        }
    }
}
