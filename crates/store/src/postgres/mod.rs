//! PostgreSQL backend: many relay processes share one database; claims use
//! `FOR UPDATE SKIP LOCKED`, and `LISTEN/NOTIFY` wakes idle dispatchers.
//!
//! Enqueues, the ends of attempts and inbound events go through the group-commit writer
//! (`writer.rs`):
//! everything waiting is written with set-based statements in one transaction and one commit.
//! Every other operation is one statement (or, for replays by id and statistics, one short
//! transaction). A transition and its event row are always written by the same statement
//! through a data-modifying `WITH`, so they commit together. Times are the store clock's unix
//! milliseconds, never the server's `now()`, so tests drive time with a manual clock and
//! processes agree as well as their clocks do.

mod alerts;
mod audit;
mod chats;
mod error;
mod listen;
mod migrate;
mod options;
mod pause;
mod rollup;
mod row;
mod runs;
mod schedules;
mod shared_breaker;
mod shared_limit;
mod writer;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sqlx::postgres::{PgConnection, PgPoolOptions, PgRow};
use sqlx::{Connection, PgPool, Postgres, Row};

use self::error::map;
pub use self::options::PgOptions;
use self::row::message_columns;
use self::writer::{FinishRow, InboundRow, NewRow, Writer, WriterConfig};
use crate::alert::{AlertFilter, AlertPage, AlertRecord, NewAlert};
use crate::audit::{AuditEntry, AuditFilter, AuditPage, NewAuditEntry};
use crate::chats::RouteChat;
use crate::common::{self, check_count, check_key, check_meta_key, encode};
use crate::error::{Result, StoreError};
use crate::load::StoreLoad;
use crate::options::{DeadLetterPolicy, StoreOptions};
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
    AttemptReport, Claimed, Cursor, Depths, Enqueued, ErrorGroup, Filter, InboundPage, Lease,
    MessageDetail, MessageId, NewInbound, NewMessage, Page, Recorded, ReplayReport, ReplayTarget,
    Stats, Status, StatusCounts, duration_millis, from_millis, to_millis,
};

/// Most messages one claim may lease.
const MAX_CLAIM: usize = 10_000;
/// Most messages one `list` page may hold.
const MAX_PAGE: usize = 1000;
/// Group-commit writer tasks: one builds and sends a batch while another waits for its commit.
const WRITER_TASKS: usize = 2;
/// Most error groups `stats` reports.
const TOP_ERRORS: i64 = 10;

/// The message store on a PostgreSQL database, shared safely by any number of processes.
///
/// Cheap to clone: clones share one connection pool.
///
/// ```no_run
/// # async fn demo() -> ferrule_store::Result<()> {
/// use ferrule_store::{NewMessage, Store, StoreOptions, postgres::PgStore};
///
/// let store = PgStore::open(
///     "postgres://relay@127.0.0.1:5432/ferrule?schema=relay",
///     StoreOptions::default(),
/// )
/// .await?;
/// let id = store
///     .enqueue(NewMessage::new("telegram:ops", serde_json::json!({"text": "hi"})))
///     .await?
///     .id();
/// # let _ = id;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    options: StoreOptions,
    pg: PgOptions,
    target: String,
    waker: listen::Waker,
    notifier: listen::Notifier,
    writer: Writer,
    meter: Arc<crate::load::Meter>,
    /// The next due time the last claim read, and the waker's generation before it.
    next_due: crate::common::NextDueCache,
}

/// The `Filter` condition over parameters `$1..$8`: statuses, destination, created from,
/// created until, error text, idempotency key, ordering key, payload text.
macro_rules! filter_where {
    () => {
        "($1::text[] IS NULL OR status = ANY($1)) \
         AND ($2::text IS NULL OR destination = $2) \
         AND ($3::bigint IS NULL OR created_at >= $3) \
         AND ($4::bigint IS NULL OR created_at < $4) \
         AND ($5::text IS NULL OR strpos(last_error, $5) > 0) \
         AND ($6::text IS NULL OR idempotency_key = $6) \
         AND ($7::text IS NULL OR ordering_key = $7) \
         AND ($8::text IS NULL OR strpos(payload::text, $8) > 0)"
    };
}

/// Runs `acquire` (a wait for a pool connection) and tells `meter` how long it took.
pub(crate) async fn timed<T>(
    meter: &crate::load::Meter,
    acquire: impl Future<Output = std::result::Result<T, sqlx::Error>>,
) -> std::result::Result<T, sqlx::Error> {
    let started = std::time::Instant::now();
    let result = acquire.await;
    meter.waited(
        started.elapsed(),
        matches!(result, Err(sqlx::Error::PoolTimedOut)),
    );
    result
}

/// Binds a [`Filter`] as `$1..$8` for [`filter_where`].
fn bind_filter<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    filter: &Filter,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let statuses: Option<Vec<String>> = (!filter.statuses.is_empty()).then(|| {
        filter
            .statuses
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect()
    });
    query
        .bind(statuses)
        .bind(filter.destination.clone())
        .bind(filter.created_from.map(to_millis))
        .bind(filter.created_until.map(to_millis))
        .bind(filter.error_contains.clone())
        .bind(filter.idempotency_key.clone())
        .bind(filter.ordering_key.clone())
        .bind(filter.payload_contains.clone())
}

/// Leases up to `$4` due messages to `$2` until `$3` (`$1` is now; `$5`: a dead message blocks
/// its ordering key), each with its event; answers them in `seq` order, each with
/// `next_due`: when the earliest message left pending falls due (what [`NEXT_DUE`] would answer
/// right after the claim; `$3` for the messages just claimed). With nothing claimed it answers
/// one row of `NULL`s but `next_due`, so that an idle dispatcher needs no second query.
///
/// Two shapes keep the plan from reading the backlog, whatever the planner estimates:
/// - The messages are picked in an `ARRAY(…)` and updated by `id = ANY (…)`, a primary-key
///   look-up each. Written `id IN (SELECT …)`, the planner could join the pick with a
///   sequential scan of `messages`, every delivered message included, on each claim.
/// - The paused destinations are checked only while there are any: the `OR` keeps the check a
///   filter in `messages_claimable` order, which stops after `$4` rows. As an anti-join, with
///   `paused_destinations` never analysed (it is nearly always empty), the planner expected it
///   to remove almost every row, then read and sorted every due message instead.
const CLAIM: &str = concat!(
    "
WITH c AS (
    UPDATE messages m SET
        status = 'delivering', attempts = m.attempts + 1, lease_owner = $2,
        lease_token = gen_random_uuid()::text, lease_expires_at = $3, next_attempt_at = $3,
        updated_at = $1, event_seq = m.event_seq + 1
    WHERE m.id = ANY (ARRAY(
        SELECT d.id FROM messages d
        WHERE d.status IN ('queued', 'retrying', 'delivering') AND d.next_attempt_at <= $1
          AND ((SELECT NOT EXISTS (SELECT 1 FROM paused_destinations))
               OR NOT EXISTS (SELECT 1 FROM paused_destinations p
                              WHERE p.destination = d.destination))
          AND (d.ordering_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM messages o
                WHERE o.ordering_key = d.ordering_key AND o.id <> d.id
                  AND ((o.status = 'delivering' AND o.next_attempt_at > $1)
                       OR (o.seq < d.seq AND (o.status IN ('queued', 'retrying', 'delivering')
                                              OR ($5 AND o.status = 'dead'))))))
        ORDER BY d.next_attempt_at, d.seq
        LIMIT $4
        FOR UPDATE SKIP LOCKED))
    RETURNING ",
    message_columns!(),
    ", event_seq
), e AS (
    INSERT INTO events (message_id, seq, at, status, attempt, detail)
    SELECT id, event_seq, $1, 'delivering', attempts, $2 FROM c
), n AS (
    SELECT LEAST(
        CASE WHEN NOT EXISTS (SELECT 1 FROM paused_destinations)
            THEN (SELECT min(next_attempt_at) FROM messages
                  WHERE status IN ('queued', 'retrying', 'delivering')
                    AND id NOT IN (SELECT id FROM c))
            ELSE (SELECT min(next_attempt_at) FROM messages m
                  WHERE status IN ('queued', 'retrying', 'delivering')
                    AND id NOT IN (SELECT id FROM c)
                    AND NOT EXISTS (SELECT 1 FROM paused_destinations p
                                    WHERE p.destination = m.destination))
        END,
        (SELECT $3 WHERE EXISTS (SELECT 1 FROM c))) AS next_due
)
SELECT c.*, n.next_due FROM n LEFT JOIN c ON true ORDER BY c.seq"
);

/// Cancels the pending messages whose `$column` is `$1`, each with its event (`$2` is now,
/// `$3` the reason); answers their ids.
macro_rules! cancel_where {
    ($column:literal) => {
        concat!(
            "
WITH u AS (
    UPDATE messages SET status = 'cancelled',
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
        updated_at = $2, event_seq = event_seq + 1
    WHERE ",
            $column,
            " = $1 AND status IN ('queued', 'retrying', 'delivering')
    RETURNING id, event_seq, attempts
), e AS (
    INSERT INTO events (message_id, seq, at, status, attempt, detail)
    SELECT id, event_seq, $2, 'cancelled', attempts, $3 FROM u
)
SELECT id FROM u"
        )
    };
}

/// Cancels message `$1` if it is pending.
const CANCEL: &str = cancel_where!("id");

/// Cancels every pending message of run `$1`.
const CANCEL_RUN: &str = cancel_where!("run_id");

const RECOVER: &str = "
WITH u AS (
    UPDATE messages SET status = 'retrying', next_attempt_at = $1,
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
        updated_at = $1, event_seq = event_seq + 1
    WHERE status = 'delivering' AND next_attempt_at <= $1
    RETURNING id, event_seq, attempts
), e AS (
    INSERT INTO events (message_id, seq, at, status, attempt, detail)
    SELECT id, event_seq, $1, 'retrying', attempts, 'lease expired' FROM u
)
SELECT count(*) AS n FROM u";

const REPLAY_FILTER: &str = concat!(
    "
WITH u AS (
    UPDATE messages SET status = 'queued', attempts = 0, next_attempt_at = $9,
        not_before = NULL, last_error = NULL, delivered_at = NULL,
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
        updated_at = $9, event_seq = event_seq + 1
    WHERE status IN ('dead', 'cancelled', 'delivered') AND run_id IS NULL AND ",
    filter_where!(),
    "
    RETURNING id, event_seq, seq
), e AS (
    INSERT INTO events (message_id, seq, at, status, attempt, detail)
    SELECT id, event_seq, $9, 'queued', 0, 'replayed' FROM u
)
SELECT id FROM u ORDER BY seq"
);

const REPLAY_FILTER_DRY: &str = concat!(
    "SELECT id FROM messages WHERE status IN ('dead', 'cancelled', 'delivered') AND run_id IS NULL
     AND ",
    filter_where!(),
    " ORDER BY seq"
);

const REPLAY_IDS: &str = "
WITH u AS (
    UPDATE messages SET status = 'queued', attempts = 0, next_attempt_at = $2,
        not_before = NULL, last_error = NULL, delivered_at = NULL,
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
        updated_at = $2, event_seq = event_seq + 1
    WHERE id = ANY($1) AND status IN ('dead', 'cancelled', 'delivered')
    RETURNING id, event_seq
), e AS (
    INSERT INTO events (message_id, seq, at, status, attempt, detail)
    SELECT id, event_seq, $2, 'queued', 0, $3 FROM u
)
SELECT count(*) AS n FROM u";

/// Operator purge: the purged messages' idempotency keys go too, so a new submit with the
/// same key creates a new message instead of naming one that no longer exists.
const PURGE: &str = concat!(
    "
WITH d AS (
    DELETE FROM messages WHERE status IN ('dead', 'cancelled', 'delivered') AND ",
    filter_where!(),
    "
    RETURNING id
), e AS (
    DELETE FROM events WHERE message_id IN (SELECT id FROM d)
), k AS (
    DELETE FROM idempotency_keys WHERE message_id IN (SELECT id FROM d)
)
SELECT count(*) AS n FROM d"
);

/// [`PURGE`] restricted to the ids in `$9`.
const PURGE_IDS: &str = concat!(
    "
WITH d AS (
    DELETE FROM messages WHERE status IN ('dead', 'cancelled', 'delivered') AND id = ANY($9) AND ",
    filter_where!(),
    "
    RETURNING id
), e AS (
    DELETE FROM events WHERE message_id IN (SELECT id FROM d)
), k AS (
    DELETE FROM idempotency_keys WHERE message_id IN (SELECT id FROM d)
)
SELECT count(*) AS n FROM d"
);

/// Retention purge: idempotency keys stay until their own window passes, so a late duplicate
/// submit is still recognised after its delivered original was purged. A delivered message of
/// a run that has not finished stays, so the run's timeline stays whole; finished runs go
/// with their events and waits (`ON DELETE CASCADE`).
const PURGE_DELIVERED: &str = "
WITH d AS (
    DELETE FROM messages m WHERE m.status = 'delivered' AND m.delivered_at <= $1
      AND (m.run_id IS NULL OR NOT EXISTS (
          SELECT 1 FROM runs r WHERE r.id = m.run_id AND r.finished_at IS NULL))
    RETURNING id
), e AS (
    DELETE FROM events WHERE message_id IN (SELECT id FROM d)
), k AS (
    DELETE FROM idempotency_keys WHERE expires_at <= $2
), r AS (
    DELETE FROM runs WHERE finished_at IS NOT NULL AND finished_at <= $1
)
SELECT count(*) AS n FROM d";

/// Pending and dead messages per destination and status, how many of them are scheduled, and
/// the oldest `next_attempt_at` that is due (`$1` is now), in one statement and so one
/// snapshot. The groups are an index-only scan of `messages_depths` (pending and dead rows
/// only) aggregated in index order; the oldest due time is an `InitPlan` that reads the first
/// entry of `messages_claimable`. Nothing reads the delivered history.
const DEPTHS: &str = "
SELECT destination, status, count(*) AS n, count(*) FILTER (WHERE not_before > $1) AS scheduled,
       (SELECT min(next_attempt_at) FROM messages
         WHERE status IN ('queued', 'retrying', 'delivering') AND next_attempt_at <= $1)
         AS oldest_due_at
FROM messages
WHERE status IN ('queued', 'retrying', 'delivering', 'dead')
GROUP BY destination, status";

/// When the earliest pending message of a destination that is not paused falls due.
///
/// With no destination paused (the usual case) it is `min()` over the pending messages
/// alone, which the planner answers from the first entry of `messages_claimable`. The
/// anti-join on the paused destinations hides that: planned with it, the query read every
/// pending entry (the whole backlog) at each idle moment of every dispatcher. The branch with
/// the anti-join runs only while some destination is paused (a `CASE` evaluates only the
/// sub-plan it picks).
const NEXT_DUE: &str = "
SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM paused_destinations)
    THEN (SELECT min(next_attempt_at) FROM messages
          WHERE status IN ('queued', 'retrying', 'delivering'))
    ELSE (SELECT min(next_attempt_at) FROM messages m
          WHERE status IN ('queued', 'retrying', 'delivering')
            AND NOT EXISTS (SELECT 1 FROM paused_destinations p
                            WHERE p.destination = m.destination))
    END";

const LIST: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE ",
    filter_where!(),
    " AND ($9::bigint IS NULL OR seq < $9) ORDER BY seq DESC LIMIT $10"
);

const LIST_INBOUND: &str = "
SELECT id, source, external_id, payload::text AS payload, received_at, seq FROM inbound
WHERE ($1::text IS NULL OR source = $1) AND ($2::bigint IS NULL OR seq < $2)
ORDER BY seq DESC LIMIT $3";

impl PgStore {
    /// Opens the store at a `postgres://` URL (see [`PgOptions`]), creating the schema and
    /// applying migrations.
    ///
    /// Errors: [`StoreError::InvalidUrl`] for a malformed URL, [`StoreError::Unreachable`] when
    /// no connection is made within `connect_timeout`, [`StoreError::Open`] when the server
    /// refuses the login or has no such database, [`StoreError::SchemaTooNew`] and
    /// [`StoreError::Corrupt`] for a schema this binary cannot use.
    pub async fn open(url: &str, options: StoreOptions) -> Result<Self> {
        Self::open_with(PgOptions::from_url(url)?, options).await
    }

    /// Opens the store with parsed options.
    pub async fn open_with(pg: PgOptions, options: StoreOptions) -> Result<Self> {
        options.validate()?;
        let target = pg.target();
        let connect = pg.connect_options();
        // One direct connection first, so the caller gets the driver's own reason (refused,
        // unknown database, bad password) rather than a pool timeout.
        let probe = tokio::time::timeout(pg.connect_timeout, PgConnection::connect_with(&connect))
            .await
            .map_err(|_| StoreError::Unreachable {
                target: target.clone(),
                source: format!("no answer within {:?}", pg.connect_timeout).into(),
            })?
            .map_err(|e| error::map_connect(pg.redacted_url(), &target, e))?;
        let _ = probe.close().await;
        // The server stops a statement the caller has stopped waiting for (a lock held
        // elsewhere), so the connection comes back to the pool free.
        let statement_timeout = options.operation_timeout.as_millis().to_string();
        let pool = PgPoolOptions::new()
            .max_connections(pg.pool_size)
            .acquire_timeout(pg.connect_timeout.min(options.operation_timeout))
            .connect_lazy_with(
                connect
                    .clone()
                    .options([("statement_timeout", statement_timeout.as_str())]),
            );
        let found = migrate::migrate(&pool, &pg.schema, &target).await?;
        tracing::debug!(schema = %pg.schema, from_version = found, "opened PostgreSQL store");
        let meter = Arc::new(crate::load::Meter::new(options.pool_observer.clone()));
        let own = listen::OwnSender::default();
        let waker = listen::Waker::new(
            connect.clone(),
            pg.connect_timeout,
            pg.schema.clone(),
            own.clone(),
        );
        let notifier =
            listen::Notifier::start(connect.clone(), pg.connect_timeout, pg.schema.clone(), own);
        let writer = Writer::start(
            pool.clone(),
            WriterConfig {
                tasks: WRITER_TASKS,
                max_batch: options.max_batch,
                capacity: options.queue_capacity,
                clock: options.clock.clone(),
                idempotency_window_ms: duration_millis(options.idempotency_window),
                target: target.clone(),
                meter: meter.clone(),
            },
        );
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                options,
                pg,
                target,
                waker,
                notifier,
                writer,
                meter,
                next_due: crate::common::NextDueCache::default(),
            }),
        })
    }

    /// The connection options the store was opened with.
    pub fn pg_options(&self) -> &PgOptions {
        &self.inner.pg
    }

    /// The store options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// The pool (connections in use, idle and the maximum; waits for a connection), the
    /// group-commit writer's queue and the operations that ran past the operation timeout.
    pub fn load(&self) -> StoreLoad {
        let (writer_queue, writer_queue_capacity) = self.inner.writer.queue();
        let pool = &self.inner.pool;
        let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
        StoreLoad {
            backend: "postgres",
            operation_timeout_ms: duration_millis(self.inner.options.operation_timeout)
                .unsigned_abs(),
            operation_timeouts: self.inner.meter.operation_timeouts(),
            writer_queue,
            writer_queue_capacity,
            pool: Some(
                self.inner
                    .meter
                    .pool(pool.size(), idle, self.inner.pg.pool_size),
            ),
        }
    }

    pub(crate) fn meter(&self) -> &crate::load::Meter {
        &self.inner.meter
    }

    pub(crate) fn operation_timeout(&self) -> Duration {
        self.inner.options.operation_timeout
    }

    /// A connection from the pool, the wait measured.
    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<Postgres>> {
        timed(&self.inner.meter, self.inner.pool.acquire())
            .await
            .map_err(self.err("waiting for a connection"))
    }

    /// A transaction on a connection from the pool, the wait measured.
    async fn begin_tx(
        &self,
    ) -> std::result::Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
        timed(&self.inner.meter, self.inner.pool.begin()).await
    }

    /// Closes the pool: waits for borrowed connections to come back, then closes them all.
    /// Operations after this fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    fn now(&self) -> i64 {
        to_millis(self.inner.options.clock.system_now())
    }

    fn err(&self, context: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
        let context = context.to_owned();
        move |e| map(&context, &self.inner.target, e)
    }

    /// After a commit that may have made work claimable: wakes this process's waiters at once
    /// and notifies the other processes.
    fn work_available(&self) {
        self.inner.waker.wake();
        self.inner.notifier.poke();
    }

    /// Checks and serialises `messages` for the writer; refuses them all if one is bad.
    fn rows(&self, messages: &[NewMessage]) -> Result<Vec<NewRow>> {
        let max = self.inner.options.max_payload_bytes;
        messages
            .iter()
            .map(|m| Ok(new_row(m, encode(m, max)?)))
            .collect()
    }

    /// Why a fenced operation matched no row: the message is gone or the lease is not current.
    async fn fencing_error(&self, lease: &Lease) -> StoreError {
        let mut conn = match self.conn().await {
            Ok(conn) => conn,
            Err(e) => return e,
        };
        let exists = sqlx::query("SELECT 1 FROM messages WHERE id = $1")
            .bind(lease.id.to_string())
            .fetch_optional(&mut *conn)
            .await;
        match exists {
            Ok(None) => StoreError::NotFound { id: lease.id },
            Ok(Some(_)) => StoreError::LeaseLost {
                id: lease.id,
                owner: lease.owner.clone(),
            },
            Err(e) => map("checking a lease", &self.inner.target, e),
        }
    }

    /// Ends an attempt through the group-commit writer.
    async fn finish(
        &self,
        lease: &Lease,
        action: &'static str,
        next_attempt_at: Option<i64>,
        report: Option<AttemptReport>,
        set_last_error: bool,
    ) -> Result<()> {
        let (outcome, code, duration, detail) = match report {
            Some(r) => (Some(r.outcome.as_str()), r.code, r.duration, r.detail),
            None => (None, None, None, None),
        };
        self.end(
            lease,
            FinishRow {
                id: lease.id,
                owner: lease.owner.clone(),
                token: lease.token.clone(),
                action,
                next_attempt_at,
                set_last_error,
                outcome,
                code,
                duration_ms: duration.map(duration_millis),
                detail,
            },
        )
        .await
    }

    /// Writes one fenced end of an attempt; a row that no longer matches its lease is
    /// `LeaseLost` (or the precise fencing error).
    async fn end(&self, lease: &Lease, row: FinishRow) -> Result<()> {
        let final_status = matches!(row.action, "delivered" | "dead");
        match self.inner.writer.finish(row).await? {
            // Retries, releases and deferrals are new work, here and elsewhere.
            Some(_) if !final_status => {
                self.work_available();
                Ok(())
            }
            // The end of a message with an ordering key may make the next of its key
            // claimable, by any process (this one's dispatcher nudges itself).
            Some(true) => {
                self.inner.notifier.poke();
                Ok(())
            }
            // A delivered or dead message without one makes nothing claimable: no wake, no
            // notification (at low rates each was a claim that found nothing, and a
            // transaction, per message).
            Some(false) => Ok(()),
            None => Err(self.fencing_error(lease).await),
        }
    }

    /// Applies `advance`, with the end of the step's message when given.
    async fn advance(&self, advance: Advance, end: Option<End>) -> Result<Advanced> {
        let change =
            transition::encode_change(advance.change, self.inner.options.max_payload_bytes)?;
        self.advance_tx(
            (advance.run, advance.expected_version),
            &change,
            end.as_ref(),
        )
        .await
    }

    async fn status_of(&self, id: MessageId) -> Result<Option<Status>> {
        let row = sqlx::query("SELECT status FROM messages WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *self.conn().await?)
            .await
            .map_err(self.err("reading a status"))?;
        row.map(|r| {
            let s: String = r.try_get("status").map_err(self.err("reading a status"))?;
            s.parse()
        })
        .transpose()
    }
}

/// The writer's row for a checked message.
fn new_row(m: &NewMessage, encoded: common::Encoded) -> NewRow {
    NewRow {
        destination: m.destination.clone(),
        payload: encoded.payload,
        headers: encoded.headers,
        idempotency_key: m.idempotency_key.clone(),
        ordering_key: m.ordering_key.clone(),
        not_before: m.not_before.map(to_millis),
        fingerprint: m.fingerprint,
        run: None,
        traceparent: m.traceparent.clone(),
    }
}

/// Milliseconds of a lease duration; zero is refused.
fn lease_millis(field: &'static str, d: Duration) -> Result<i64> {
    if d.is_zero() {
        return Err(StoreError::InvalidOption {
            field,
            reason: "must be longer than zero".into(),
        });
    }
    Ok(duration_millis(d).max(1))
}

fn count_of(row: &PgRow, context: &str, target: &str) -> Result<u64> {
    let n: i64 = row.try_get("n").map_err(|e| map(context, target, e))?;
    Ok(n.unsigned_abs())
}

fn millis_to_duration(ms: f64) -> Duration {
    Duration::from_secs_f64((ms.max(0.0)) / 1000.0)
}

impl Store for PgStore {
    async fn enqueue(&self, message: NewMessage) -> Result<Enqueued> {
        let rows = self.rows(std::slice::from_ref(&message))?;
        let answer = self
            .inner
            .writer
            .enqueue(rows)
            .await?
            .pop()
            .ok_or_else(|| StoreError::database("enqueueing a message", false, "no answer"))?;
        if answer.is_created() {
            self.work_available();
        }
        Ok(answer)
    }

    async fn enqueue_batch(&self, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>> {
        let rows = self.rows(&messages)?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let answers = self.inner.writer.enqueue(rows).await?;
        if answers.iter().any(Enqueued::is_created) {
            self.work_available();
        }
        Ok(answers)
    }

    async fn claim_due(&self, owner: &str, max: usize, lease: Duration) -> Result<Vec<Claimed>> {
        check_key("owner", Some(owner), false)?;
        check_count("max", max, MAX_CLAIM)?;
        let lease_ms = lease_millis("lease", lease)?;
        let now = self.now();
        let expires = now.saturating_add(lease_ms);
        let block = self.inner.options.fifo_dead_letter_policy == DeadLetterPolicy::Block;
        // Read before the statement: a wake during it makes its next due time stale.
        let generation = self.inner.waker.generation();
        // Planned on every run (an unnamed statement), never from a cached generic plan: one
        // settled on while the table was nearly empty reads it whole on every claim once it
        // has grown, and nothing plans it again until an `ANALYZE`.
        let rows = sqlx::query(CLAIM)
            .persistent(false)
            .bind(now)
            .bind(owner)
            .bind(expires)
            .bind(i64::try_from(max).unwrap_or(i64::MAX))
            .bind(block)
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(self.err("claiming due messages"))?;
        let err = self.err("claiming due messages");
        let mut at = None;
        let mut claimed = Vec::with_capacity(rows.len());
        for r in &rows {
            at = r.try_get("next_due").map_err(&err)?;
            let id: Option<String> = r.try_get("id").map_err(&err)?;
            if id.is_some() {
                claimed.push(Claimed {
                    message: row::message(r)?,
                    lease: row::lease(r)?,
                });
            }
        }
        self.inner.next_due.set(generation, at);
        Ok(claimed)
    }

    async fn extend_lease(&self, lease: &Lease, by: Duration) -> Result<Lease> {
        let by_ms = lease_millis("by", by)?;
        let now = self.now();
        let expires = now.saturating_add(by_ms);
        let row = sqlx::query(
            "UPDATE messages SET lease_expires_at = $4, next_attempt_at = $4, updated_at = $5
             WHERE id = $1 AND status = 'delivering' AND lease_owner = $2 AND lease_token = $3
             RETURNING id",
        )
        .bind(lease.id.to_string())
        .bind(&lease.owner)
        .bind(&lease.token)
        .bind(expires)
        .bind(now)
        .fetch_optional(&mut *self.conn().await?)
        .await
        .map_err(self.err("extending a lease"))?;
        match row {
            Some(_) => Ok(Lease {
                expires_at: from_millis(expires),
                ..lease.clone()
            }),
            None => Err(self.fencing_error(lease).await),
        }
    }

    async fn complete(&self, lease: &Lease, report: AttemptReport) -> Result<()> {
        self.finish(lease, "delivered", None, Some(report), false)
            .await
    }

    async fn reschedule(&self, lease: &Lease, at: SystemTime, report: AttemptReport) -> Result<()> {
        self.finish(lease, "retrying", Some(to_millis(at)), Some(report), true)
            .await
    }

    async fn dead_letter(&self, lease: &Lease, report: AttemptReport) -> Result<()> {
        self.finish(lease, "dead", None, Some(report), true).await
    }

    async fn replace_payload(&self, lease: &Lease, payload: serde_json::Value) -> Result<()> {
        let text = common::encode_payload(&payload, self.inner.options.max_payload_bytes)?;
        // Not through the group-commit writer: it is rare, and the caller awaits it before
        // ending the attempt there, so the two cannot be reordered.
        let changed = sqlx::query(
            "UPDATE messages SET payload = $1::jsonb, updated_at = $2
             WHERE id = $3 AND status = 'delivering' AND lease_owner = $4 AND lease_token = $5",
        )
        .bind(text)
        .bind(self.now())
        .bind(lease.id.to_string())
        .bind(&lease.owner)
        .bind(&lease.token)
        .execute(&mut *self.conn().await?)
        .await
        .map_err(self.err("replacing a payload"))?
        .rows_affected();
        if changed == 0 {
            return Err(self.fencing_error(lease).await);
        }
        Ok(())
    }

    async fn keep_response(&self, lease: &Lease, response: serde_json::Value) -> Result<()> {
        let text = common::encode_payload(&response, self.inner.options.max_payload_bytes)?;
        // Not through the group-commit writer, as `replace_payload`: the caller awaits it
        // before ending the attempt.
        let changed = sqlx::query(
            "UPDATE messages SET response = $1::jsonb, updated_at = $2
             WHERE id = $3 AND status = 'delivering' AND lease_owner = $4 AND lease_token = $5",
        )
        .bind(text)
        .bind(self.now())
        .bind(lease.id.to_string())
        .bind(&lease.owner)
        .bind(&lease.token)
        .execute(&mut *self.conn().await?)
        .await
        .map_err(self.err("keeping a response"))?
        .rows_affected();
        if changed == 0 {
            return Err(self.fencing_error(lease).await);
        }
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        self.finish(lease, "release", None, None, false).await
    }

    async fn defer(&self, lease: &Lease, until: SystemTime, reason: &str) -> Result<()> {
        // A `release` with a due time and a reason: the attempt is uncounted, no outcome is
        // recorded and `last_error` is kept; a repeat of the deferral before the claim folds
        // into it.
        self.end(
            lease,
            FinishRow {
                id: lease.id,
                owner: lease.owner.clone(),
                token: lease.token.clone(),
                action: "defer",
                next_attempt_at: Some(to_millis(until)),
                set_last_error: false,
                outcome: None,
                code: None,
                duration_ms: None,
                detail: Some(reason.to_owned()),
            },
        )
        .await
    }

    async fn cancel(&self, id: MessageId, reason: Option<String>) -> Result<()> {
        let row = sqlx::query(CANCEL)
            .bind(id.to_string())
            .bind(self.now())
            .bind(reason)
            .fetch_optional(&mut *self.conn().await?)
            .await
            .map_err(self.err("cancelling a message"))?;
        if row.is_some() {
            self.work_available();
            return Ok(());
        }
        match self.status_of(id).await? {
            None => Err(StoreError::NotFound { id }),
            Some(from) => Err(StoreError::InvalidTransition {
                id,
                from,
                action: "cancel",
            }),
        }
    }

    async fn recover_expired_leases(&self) -> Result<u64> {
        let row = sqlx::query(RECOVER)
            .bind(self.now())
            .fetch_one(&mut *self.conn().await?)
            .await
            .map_err(self.err("recovering expired leases"))?;
        let n = count_of(&row, "recovering expired leases", &self.inner.target)?;
        if n > 0 {
            self.work_available();
        }
        Ok(n)
    }

    async fn get(&self, id: MessageId) -> Result<Option<MessageDetail>> {
        let mut tx = self
            .begin_tx()
            .await
            .map_err(self.err("reading a message"))?;
        // One snapshot for the message and its events.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(self.err("reading a message"))?;
        let Some(message) = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            ", response::text AS response FROM messages WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(self.err("reading a message"))?
        else {
            return Ok(None);
        };
        let events = sqlx::query(
            "SELECT seq, at, status, attempt, outcome, code, duration_ms, detail, repeats,
                    last_at
             FROM events WHERE message_id = $1 ORDER BY seq",
        )
        .bind(id.to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(self.err("reading events"))?;
        tx.commit().await.map_err(self.err("reading a message"))?;
        let response: Option<String> = message
            .try_get("response")
            .map_err(self.err("reading a message"))?;
        Ok(Some(MessageDetail {
            message: row::message(&message)?,
            events: events.iter().map(row::event).collect::<Result<_>>()?,
            response: response.and_then(|text| serde_json::from_str(&text).ok()),
        }))
    }

    async fn list(&self, filter: &Filter, cursor: Option<&Cursor>, limit: usize) -> Result<Page> {
        check_count("limit", limit, MAX_PAGE)?;
        common::check_text_search(filter)?;
        let after = cursor.map(common::cursor_seq).transpose()?;
        let rows = bind_filter(sqlx::query(LIST), filter)
            .bind(after)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX) + 1)
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(self.err("listing messages"))?;
        let more = rows.len() > limit;
        let rows = &rows[..rows.len().min(limit)];
        let next = match rows.last() {
            Some(last) if more => {
                let seq: i64 = last.try_get("seq").map_err(self.err("listing"))?;
                Some(Cursor::from_string(seq.to_string()))
            }
            _ => None,
        };
        Ok(Page {
            messages: rows.iter().map(row::message).collect::<Result<_>>()?,
            next,
        })
    }

    async fn replay(&self, target: ReplayTarget, dry_run: bool) -> Result<ReplayReport> {
        let now = self.now();
        let ids = match target {
            ReplayTarget::Filter(filter) => {
                let sql = if dry_run {
                    REPLAY_FILTER_DRY
                } else {
                    REPLAY_FILTER
                };
                let rows = bind_filter(sqlx::query(sql), &filter)
                    .bind(now)
                    .fetch_all(&mut *self.conn().await?)
                    .await
                    .map_err(self.err("replaying messages"))?;
                rows.iter()
                    .map(|r| row::id(r, "id"))
                    .collect::<Result<Vec<_>>>()?
            }
            ReplayTarget::Ids(mut ids) => {
                let mut seen = std::collections::HashSet::new();
                ids.retain(|id| seen.insert(*id));
                let texts: Vec<String> = ids.iter().map(ToString::to_string).collect();
                let mut tx = self
                    .begin_tx()
                    .await
                    .map_err(self.err("replaying messages"))?;
                let rows = sqlx::query(
                    "SELECT id, status, run_id FROM messages WHERE id = ANY($1)
                     ORDER BY id FOR UPDATE",
                )
                .bind(&texts)
                .fetch_all(&mut *tx)
                .await
                .map_err(self.err("replaying messages"))?;
                let mut found = std::collections::HashMap::new();
                for r in &rows {
                    let status: String = r.try_get("status").map_err(self.err("replaying"))?;
                    let run: Option<String> = r.try_get("run_id").map_err(self.err("replaying"))?;
                    found.insert(row::id(r, "id")?, (status.parse::<Status>()?, run));
                }
                for id in &ids {
                    match found.get(id) {
                        None => return Err(StoreError::NotFound { id: *id }),
                        Some((_, Some(run))) => {
                            return Err(crate::transition::run_message_replayed(*id, run));
                        }
                        Some((s, None)) if s.is_pending() => {
                            return Err(StoreError::InvalidTransition {
                                id: *id,
                                from: *s,
                                action: "replay",
                            });
                        }
                        Some(_) => {}
                    }
                }
                if !dry_run && !ids.is_empty() {
                    sqlx::query(REPLAY_IDS)
                        .bind(&texts)
                        .bind(now)
                        .bind("replayed")
                        .execute(&mut *tx)
                        .await
                        .map_err(self.err("replaying messages"))?;
                }
                tx.commit().await.map_err(self.err("replaying messages"))?;
                ids
            }
        };
        if !dry_run && !ids.is_empty() {
            self.work_available();
        }
        Ok(ReplayReport {
            count: ids.len() as u64,
            ids,
            dry_run,
        })
    }

    async fn purge(&self, filter: &Filter) -> Result<u64> {
        let row = bind_filter(sqlx::query(PURGE), filter)
            .fetch_one(&mut *self.conn().await?)
            .await
            .map_err(self.err("purging messages"))?;
        let n = count_of(&row, "purging messages", &self.inner.target)?;
        if n > 0 {
            // A purged dead message may have been blocking its ordering key.
            self.work_available();
        }
        Ok(n)
    }

    async fn purge_ids(&self, ids: &[MessageId], filter: &Filter) -> Result<u64> {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let row = bind_filter(sqlx::query(PURGE_IDS), filter)
            .bind(ids)
            .fetch_one(&mut *self.conn().await?)
            .await
            .map_err(self.err("purging messages by id"))?;
        let n = count_of(&row, "purging messages by id", &self.inner.target)?;
        if n > 0 {
            self.work_available();
        }
        Ok(n)
    }

    async fn purge_delivered(&self, older_than: Duration) -> Result<u64> {
        let now = self.now();
        let row = sqlx::query(PURGE_DELIVERED)
            .bind(now.saturating_sub(duration_millis(older_than)))
            .bind(now)
            .fetch_one(&mut *self.conn().await?)
            .await
            .map_err(self.err("purging delivered messages"))?;
        count_of(&row, "purging delivered messages", &self.inner.target)
    }

    async fn depths(&self) -> Result<Depths> {
        let err = self.err("counting queue depths");
        let rows = sqlx::query(DEPTHS)
            .bind(self.now())
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(&err)?;
        let mut depths = Depths::default();
        for r in &rows {
            let destination: String = r.try_get("destination").map_err(&err)?;
            let status: String = r.try_get("status").map_err(&err)?;
            let n: i64 = r.try_get("n").map_err(&err)?;
            let scheduled: i64 = r.try_get("scheduled").map_err(&err)?;
            depths.add(
                &destination,
                status.parse()?,
                n.max(0).unsigned_abs(),
                scheduled.max(0).unsigned_abs(),
            );
            // The same on every row; no row means nothing is pending, so nothing is due.
            let oldest: Option<i64> = r.try_get("oldest_due_at").map_err(&err)?;
            depths.oldest_due_at = oldest.map(from_millis);
        }
        Ok(depths)
    }

    async fn stats(&self, window: Duration) -> Result<Stats> {
        let now = self.now();
        let since = now.saturating_sub(duration_millis(window));
        let err = self.err("computing statistics");
        let mut tx = self.begin_tx().await.map_err(&err)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        let mut by_status = StatusCounts::default();
        for r in sqlx::query("SELECT status, count(*) AS n FROM messages GROUP BY status")
            .fetch_all(&mut *tx)
            .await
            .map_err(&err)?
        {
            let status: String = r.try_get("status").map_err(&err)?;
            by_status.add(
                status.parse()?,
                count_of(&r, "counting", &self.inner.target)?,
            );
        }
        let r = sqlx::query(
            "SELECT
                (SELECT count(*) FROM messages
                  WHERE status IN ('queued', 'retrying', 'delivering') AND next_attempt_at <= $1)
                  AS due_now,
                (SELECT count(*) FROM messages WHERE status = 'dead' AND updated_at >= $2)
                  AS dead_in_window,
                count(*) AS delivered_in_window,
                percentile_cont(ARRAY[0.5, 0.95, 0.99]::float8[])
                  WITHIN GROUP (ORDER BY delivered_at - created_at) AS pct
             FROM messages WHERE status = 'delivered' AND delivered_at >= $2",
        )
        .bind(now)
        .bind(since)
        .fetch_one(&mut *tx)
        .await
        .map_err(&err)?;
        let due_now: i64 = r.try_get("due_now").map_err(&err)?;
        let dead_in_window: i64 = r.try_get("dead_in_window").map_err(&err)?;
        let delivered_in_window: i64 = r.try_get("delivered_in_window").map_err(&err)?;
        let pct: Option<Vec<f64>> = r.try_get("pct").map_err(&err)?;
        let pct = |i: usize| {
            pct.as_ref()
                .and_then(|p| p.get(i).copied())
                .map(millis_to_duration)
        };
        let top_errors = sqlx::query(
            "SELECT code, detail, count(*) AS n, max(at) AS last_at FROM events
             WHERE at >= $1 AND outcome IN ('transient', 'retry_after', 'permanent')
             GROUP BY code, detail ORDER BY n DESC, last_at DESC LIMIT $2",
        )
        .bind(since)
        .bind(TOP_ERRORS)
        .fetch_all(&mut *tx)
        .await
        .map_err(&err)?
        .iter()
        .map(|r| {
            Ok(ErrorGroup {
                code: r.try_get("code").map_err(&err)?,
                detail: r.try_get("detail").map_err(&err)?,
                count: count_of(r, "grouping errors", &self.inner.target)?,
                last_at: from_millis(r.try_get("last_at").map_err(&err)?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
        tx.commit().await.map_err(&err)?;
        let delivered = delivered_in_window.unsigned_abs();
        let dead = dead_in_window.unsigned_abs();
        Ok(Stats {
            window,
            queue_depth: by_status.queued + by_status.retrying + by_status.delivering,
            due_now: due_now.unsigned_abs(),
            dead_letter_depth: by_status.dead,
            by_status,
            delivered_in_window: delivered,
            dead_in_window: dead,
            success_rate: (delivered + dead > 0)
                .then(|| delivered as f64 / (delivered + dead) as f64),
            p50: pct(0),
            p95: pct(1),
            p99: pct(2),
            top_errors,
        })
    }

    async fn next_due_at(&self) -> Result<Option<SystemTime>> {
        if let Some(kept) = self.inner.next_due.get(self.inner.waker.generation()) {
            // Nothing was woken since the last claim read it: still what the query would say.
            return Ok(kept);
        }
        let due: Option<i64> = sqlx::query_scalar(NEXT_DUE)
            .fetch_one(&mut *self.conn().await?)
            .await
            .map_err(self.err("finding the next due time"))?;
        Ok(due.map(from_millis))
    }

    async fn wait_for_work(&self) {
        self.inner.waker.wait().await;
    }

    fn take_wake(&self) -> bool {
        self.inner.waker.take_kept()
    }

    async fn record_inbound(&self, event: NewInbound) -> Result<Recorded> {
        let event = common::encode_inbound(event, self.inner.options.max_payload_bytes)?;
        let row = InboundRow {
            source: event.source,
            external_id: event.external_id,
            payload: event.payload,
            forward: event.forward.map(|(m, encoded)| new_row(&m, encoded)),
        };
        let recorded = self.inner.writer.record_inbound(row).await?;
        if recorded.forward().is_some_and(|f| f.is_created()) {
            self.work_available();
        }
        Ok(recorded)
    }

    async fn list_inbound(
        &self,
        source: Option<&str>,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<InboundPage> {
        check_count("limit", limit, MAX_PAGE)?;
        let before = cursor.map(common::cursor_seq).transpose()?;
        let rows = sqlx::query(LIST_INBOUND)
            .bind(source)
            .bind(before)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX) + 1)
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(self.err("listing inbound events"))?;
        let more = rows.len() > limit;
        let rows = &rows[..rows.len().min(limit)];
        let next = match rows.last() {
            Some(last) if more => {
                let seq: i64 = last
                    .try_get("seq")
                    .map_err(self.err("listing inbound events"))?;
                Some(Cursor::from_string(seq.to_string()))
            }
            _ => None,
        };
        Ok(InboundPage {
            events: rows.iter().map(row::inbound).collect::<Result<_>>()?,
            next,
        })
    }

    async fn purge_inbound(&self, older_than: Duration) -> Result<u64> {
        let cutoff = self.now().saturating_sub(duration_millis(older_than));
        let done = sqlx::query("DELETE FROM inbound WHERE received_at < $1")
            .bind(cutoff)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(self.err("purging inbound events"))?;
        Ok(done.rows_affected())
    }

    async fn start_run(&self, run: NewRun, change: RunChange) -> Result<Started> {
        let max = self.inner.options.max_payload_bytes;
        let run = transition::encode_run(run, max)?;
        let change = transition::encode_change(change, max)?;
        self.start_tx(&run, &change).await
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
        self.run_detail(id).await
    }

    async fn find_wait(&self, token: &str) -> Result<Option<Wait>> {
        check_key("token", Some(token), false)?;
        self.wait(token).await
    }

    async fn list_runs(
        &self,
        filter: &RunFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<RunPage> {
        check_count("limit", limit, MAX_PAGE)?;
        self.runs(filter, cursor, limit).await
    }

    async fn run_stats(&self, route: &str, window: Duration) -> Result<RunStats> {
        check_key("route", Some(route), false)?;
        let since = self.now().saturating_sub(duration_millis(window));
        self.stats_of_runs(route, since, window).await
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        check_key("key", Some(key), false)?;
        let row = sqlx::query("SELECT value FROM store_meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *self.conn().await?)
            .await
            .map_err(self.err("reading meta"))?;
        row.map(|r| r.try_get("value").map_err(self.err("reading meta")))
            .transpose()
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        check_meta_key(key)?;
        sqlx::query(
            "INSERT INTO store_meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *self.conn().await?)
        .await
        .map_err(self.err("writing meta"))?;
        Ok(())
    }

    async fn list_meta(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        common::check_meta_prefix(prefix)?;
        let err = self.err("listing meta values");
        // `COLLATE "C"`: byte order, as on SQLite, whatever the database's collation. The
        // table is small, so the filter need not use its index.
        let rows = sqlx::query(
            r#"SELECT key, value FROM store_meta WHERE starts_with(key, $1)
               ORDER BY key COLLATE "C""#,
        )
        .bind(prefix)
        .fetch_all(&mut *self.conn().await?)
        .await
        .map_err(&err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let key: String = r.try_get("key").map_err(&err)?;
            if !common::is_reserved_meta(&key) {
                out.push((key, r.try_get("value").map_err(&err)?));
            }
        }
        Ok(out)
    }

    async fn delete_meta(&self, key: &str) -> Result<bool> {
        check_meta_key(key)?;
        let done = sqlx::query("DELETE FROM store_meta WHERE key = $1")
            .bind(key)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(self.err("deleting meta"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_audit(&self, entry: NewAuditEntry) -> Result<AuditEntry> {
        self.insert_audit(crate::audit::encode(entry)?).await
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<AuditPage> {
        check_count("limit", limit, MAX_PAGE)?;
        self.select_audit(filter, cursor, limit).await
    }

    async fn record_alert(&self, alert: NewAlert) -> Result<AlertRecord> {
        self.insert_alert(crate::alert::encode(alert)?).await
    }

    async fn list_alerts(
        &self,
        filter: &AlertFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<AlertPage> {
        check_count("limit", limit, MAX_PAGE)?;
        self.select_alerts(filter, cursor, limit).await
    }

    async fn purge_alerts(&self, older_than: Duration) -> Result<u64> {
        let cutoff = self.now().saturating_sub(duration_millis(older_than));
        let done = sqlx::query("DELETE FROM alerts WHERE at < $1")
            .bind(cutoff)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(self.err("purging alerts"))?;
        Ok(done.rows_affected())
    }

    async fn pause_destination(
        &self,
        destination: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<Paused> {
        crate::pause::check(destination, by, reason)?;
        self.insert_pause(destination, by, reason).await
    }

    async fn resume_destination(&self, destination: &str) -> Result<bool> {
        check_key("destination", Some(destination), false)?;
        self.delete_pause(destination).await
    }

    async fn paused_destinations(&self) -> Result<Vec<Paused>> {
        self.select_paused().await
    }

    async fn publish_breaker(&self, update: &BreakerUpdate) -> Result<SharedBreaker> {
        crate::shared_breaker::check(&update.destination, &update.owner)?;
        self.upsert_breaker(update).await
    }

    async fn take_over_breaker(
        &self,
        destination: &str,
        epoch: u64,
        owner: &str,
        open_until: SystemTime,
    ) -> Result<Option<SharedBreaker>> {
        crate::shared_breaker::check(destination, owner)?;
        self.update_breaker_owner(destination, epoch, owner, open_until)
            .await
    }

    async fn shared_breakers(&self) -> Result<Vec<SharedBreaker>> {
        self.select_breakers().await
    }

    async fn take_send_slots(&self, batch: &SlotBatch) -> Result<Vec<SlotAnswer>> {
        crate::shared_limit::check(batch)?;
        self.lock_send_slots(batch).await
    }

    async fn purge_send_windows(&self, older_than: Duration) -> Result<u64> {
        let cutoff = self.now().saturating_sub(duration_millis(older_than));
        let done = sqlx::query("DELETE FROM shared_limits WHERE updated_at < $1")
            .bind(cutoff)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(self.err("purging shared send windows"))?;
        Ok(done.rows_affected())
    }

    async fn set_route_chat(
        &self,
        route: &str,
        key: &str,
        chat_id: i64,
        by: &str,
    ) -> Result<RouteChat> {
        crate::chats::check(route, key, Some(by))?;
        self.upsert_route_chat(route, key, chat_id, by).await
    }

    async fn delete_route_chat(&self, route: &str, key: &str) -> Result<bool> {
        crate::chats::check(route, key, None)?;
        self.remove_route_chat(route, key).await
    }

    async fn route_chats(&self, route: Option<&str>) -> Result<Vec<RouteChat>> {
        self.select_route_chats(route).await
    }

    async fn add_rollups(&self, batch: &RollupBatch) -> Result<()> {
        self.insert_rollups(batch).await
    }

    async fn rollup_series(&self, query: &SeriesQuery) -> Result<Series> {
        self.select_series(query).await
    }

    async fn rollup_reasons(
        &self,
        from: SystemTime,
        to: SystemTime,
        destination: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ReasonCount>> {
        self.select_reasons(from, to, destination, limit).await
    }

    async fn prune_rollups(&self, older_than: Duration) -> Result<u64> {
        self.delete_rollups(older_than).await
    }

    async fn record_occurrence(&self, occurrence: NewOccurrence) -> Result<Fired> {
        let new = crate::schedule::encode(occurrence, self.inner.options.max_payload_bytes)?;
        self.record_occurrence_tx(&new).await
    }

    async fn latest_occurrences(&self) -> Result<Vec<Occurrence>> {
        self.select_latest_occurrences().await
    }

    async fn purge_occurrences(&self, older_than: Duration) -> Result<u64> {
        let before = self
            .now()
            .saturating_sub(crate::types::duration_millis(older_than));
        self.delete_occurrences(before).await
    }
}

#[cfg(test)]
mod tests {
    use sqlx::AssertSqlSafe;

    use super::*;

    /// What PostgreSQL plans for `sql` with `$1` bound to `now`, one line per step.
    async fn plan(pool: &PgPool, sql: &str, now: i64) -> String {
        let lines: Vec<String> = sqlx::query(AssertSqlSafe(format!("EXPLAIN (COSTS OFF) {sql}")))
            .bind(now)
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get(0).unwrap())
            .collect();
        lines.join("\n")
    }

    /// The depths read the partial indexes of pending and dead rows, never the delivered
    /// history: checked on a schema where delivered rows outnumber the rest 100 to 1, after
    /// `ANALYZE`, so the planner chooses freely. Needs `FERRULE_TEST_POSTGRES_URL`, like the
    /// integration tests.
    #[tokio::test]
    async fn depths_scan_only_the_pending_and_dead_index_entries() {
        let base = std::env::var("FERRULE_TEST_POSTGRES_URL")
            .expect("FERRULE_TEST_POSTGRES_URL is not set: run the tests with scripts/test");
        let schema = format!("ferrule_unit_{:016x}", fastrand::u64(..));
        let sep = if base.contains('?') { '&' } else { '?' };
        let store = PgStore::open(
            &format!("{base}{sep}schema={schema}"),
            StoreOptions::default(),
        )
        .await
        .unwrap();
        let pool = &store.inner.pool;
        sqlx::raw_sql(
            "INSERT INTO messages (id, destination, payload, status, attempts, next_attempt_at,
                                   created_at, updated_at, delivered_at, event_seq, not_before)
             SELECT 'm' || g, 'dest' || (g % 5), '{}', s.status, 1, 5000 + g, 1000, 1000,
                    CASE WHEN s.status = 'delivered' THEN 2000 END, 3,
                    CASE WHEN g % 4 = 0 THEN 90000000 END
             FROM generate_series(1, 20400) g,
                  LATERAL (SELECT CASE WHEN g <= 20000 THEN 'delivered'
                                       WHEN g <= 20300 THEN 'queued'
                                       WHEN g <= 20350 THEN 'retrying'
                                       ELSE 'dead' END AS status) s",
        )
        .execute(pool)
        .await
        .unwrap();
        // An index-only scan needs the pages marked all-visible, which VACUUM cannot do while
        // another test's transaction in the same database (a migration) still sees older
        // rows: vacuum again until it has (or give the planner what it got).
        for _ in 0..100 {
            sqlx::raw_sql("VACUUM ANALYZE messages")
                .execute(pool)
                .await
                .unwrap();
            let visible: (i32, i32) = sqlx::query_as(
                "SELECT relallvisible, relpages FROM pg_class WHERE oid = 'messages'::regclass",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            if visible.0 >= visible.1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let plan = plan(pool, DEPTHS, 10_000).await;
        let claim: Vec<String> = sqlx::query(AssertSqlSafe(format!("EXPLAIN (COSTS OFF) {CLAIM}")))
            .bind(30_000_i64)
            .bind("o")
            .bind(60_000_i64)
            .bind(64_i64)
            .bind(false)
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get(0).unwrap())
            .collect();
        let claim = claim.join("\n");
        let next_due: Vec<String> =
            sqlx::query(AssertSqlSafe(format!("EXPLAIN (COSTS OFF) {NEXT_DUE}")))
                .fetch_all(pool)
                .await
                .unwrap()
                .iter()
                .map(|r| r.try_get(0).unwrap())
                .collect();
        let next_due = next_due.join("\n");
        store.close().await;
        let mut conn = PgConnection::connect(&base).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
            .execute(&mut conn)
            .await
            .unwrap();
        assert!(
            plan.contains("Index Only Scan using messages_depths on messages"),
            "{plan}"
        );
        assert!(
            plan.contains("Index Only Scan using messages_claimable"),
            "{plan}"
        );
        assert!(!plan.contains("Seq Scan"), "{plan}");
        assert!(!plan.contains("messages_due"), "{plan}");
        assert!(!plan.contains("Sort"), "aggregated in index order: {plan}");
        // Claims update by primary key: no step reads the delivered history. (How the due
        // messages are picked is the planner's choice: with 350 due, reading them all is as
        // cheap as any.)
        assert!(claim.contains("Index Cond: (id = ANY"), "{claim}");
        assert!(!claim.contains("Seq Scan on messages"), "{claim}");
        assert!(next_due.contains("using messages_claimable"), "{next_due}");
    }
}
