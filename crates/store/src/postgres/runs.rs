//! Runs and waits on PostgreSQL: every change of a run is one transaction of its own, outside
//! the group-commit writer, and reads are single statements or one read-only snapshot.
//!
//! Run transitions are far rarer than deliveries, so they do not need the writer's batching,
//! and a transaction of their own keeps them simple. They still meet the writer on the same
//! rows, and are ordered against it by row locks:
//!
//! - **The run's row first.** Every transaction that changes a run takes `FOR UPDATE` on the
//!   run's row before any other row (the leased message, the wait, the messages it cancels), so
//!   two changes of one run (a button press and the card's delivery, a press and the wait's
//!   timer) run one after the other and the second sees the first's version.
//! - **The leased message next.** `complete_and_advance` locks the message under its lease
//!   (owner and token, as every fenced statement checks them) before it writes anything. A
//!   batched end of the same message in the writer (`release`, `defer`, `reschedule`) locks
//!   the same row: whichever commits first ends the lease, and the other finds it gone and
//!   writes nothing (`LeaseLost`), so a step's message never both advances its run and goes
//!   back to the queue. The relay ends a run's message only through the run operations.
//! - **Conflicts rerun.** A deadlock or serialization failure rolls the transaction back and
//!   runs it again, up to [`ATTEMPTS`] times; a failed `COMMIT` is not rerun.
//!
//! Times are the store clock's, like everything else the store writes.

use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, Row, Transaction};

use super::error::{is_conflict, map};
use super::row::{self, run_columns, wait_columns};
use super::writer::NewRow;
use super::{CANCEL, CANCEL_RUN, PgStore, REPLAY_IDS};
use crate::common::Encoded;
use crate::error::{Result, StoreError};
use crate::run::{
    Advanced, FailureReason, Run, RunDetail, RunEventKind, RunFilter, RunId, RunPage, RunStats,
    RunStatus, Started, Wait,
};
use crate::transition::{
    self, CANCELLED_WITH_RUN, EncodedChange, EncodedRun, End, FoundWait, NewRunEvent,
    RETRIED_WITH_RUN, WAIT_CLOSED,
};
use crate::types::{Cursor, NewMessage, duration_millis, to_millis};

/// How many times a run's transaction runs when it keeps conflicting with others.
pub(super) const ATTEMPTS: usize = 3;

/// Most failure reasons `run_stats` reports.
const TOP_FAILURES: i64 = 10;

/// Why a run's transaction stopped: the driver's error (a conflict is rerun), the store's, or
/// a row it relied on vanished between two statements (rerun).
#[derive(Debug)]
pub(crate) enum TxError {
    Sql(sqlx::Error),
    Store(StoreError),
    Rerun,
}

impl From<sqlx::Error> for TxError {
    fn from(e: sqlx::Error) -> Self {
        TxError::Sql(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::Store(e)
    }
}

pub(super) type TxResult<T> = std::result::Result<T, TxError>;

/// Ends an attempt under its lease (already locked and checked), with its event.
const END_ATTEMPT: &str = "
WITH u AS (
    UPDATE messages SET status = $4,
        last_error = CASE WHEN $4 = 'dead' THEN $5 ELSE last_error END,
        delivered_at = CASE WHEN $4 = 'delivered' THEN $6 ELSE delivered_at END,
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
        updated_at = $6, event_seq = event_seq + 1
    WHERE id = $1 AND status = 'delivering' AND lease_owner = $2 AND lease_token = $3
    RETURNING id, event_seq, attempts, status
), e AS (
    INSERT INTO events (message_id, seq, at, status, attempt, outcome, code, duration_ms, detail)
    SELECT id, event_seq, $6, status, attempts, $7, $8, $9, $5 FROM u
)
SELECT count(*) AS n FROM u";

/// Writes the run's row as the change left it and appends its events (`$6..$10`, numbered
/// from `$2 + 1`), in one statement.
const SAVE_RUN: &str = "
WITH e AS (
    INSERT INTO run_events (run_id, seq, at, kind, status, state, step, message_id, detail,
                            duration_ms)
    SELECT $1, ($2 + ord)::integer, $3, kind, $4, $5, step, message_id, detail, duration_ms
    FROM UNNEST($6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[])
        WITH ORDINALITY AS t(kind, step, message_id, detail, duration_ms, ord)
)
UPDATE runs SET status = $4, state = $5, step = $11, context = $12::jsonb, version = $13,
    updated_at = $3, finished_at = $14, waited_ms = $15, waiting_since = $16,
    last_error = $17, event_seq = $2 + cardinality($6::text[])
WHERE id = $1";

impl PgStore {
    /// Runs `start_in` in a transaction of its own, again on a conflict.
    pub(crate) async fn start_tx(
        &self,
        new: &EncodedRun,
        change: &EncodedChange,
    ) -> Result<Started> {
        for attempt in 1..=ATTEMPTS {
            let mut tx = self.begin("starting a run").await?;
            let result = self.start_in(&mut tx, new, change).await;
            if let Some(done) = self.settle(tx, result, attempt, "starting a run").await {
                let started = done?;
                if let Started::Created(advanced) = &started {
                    self.after_change(change, advanced);
                }
                return Ok(started);
            }
        }
        Err(exhausted("starting a run"))
    }

    /// Runs `advance_in` in a transaction of its own, again on a conflict.
    pub(crate) async fn advance_tx(
        &self,
        run: (RunId, u64),
        change: &EncodedChange,
        end: Option<&End>,
    ) -> Result<Advanced> {
        for attempt in 1..=ATTEMPTS {
            let mut tx = self.begin("changing a run").await?;
            let result = self.advance_in(&mut tx, run, change, end).await;
            if let Some(done) = self.settle(tx, result, attempt, "changing a run").await {
                let advanced = done?;
                self.after_change(change, &advanced);
                if end.is_some() {
                    // An ended attempt may unblock the next message of its ordering key.
                    self.work_available();
                }
                return Ok(advanced);
            }
        }
        Err(exhausted("changing a run"))
    }

    pub(super) async fn begin(&self, context: &str) -> Result<Transaction<'static, Postgres>> {
        self.begin_tx().await.map_err(self.err(context))
    }

    /// Commits or rolls back `tx` after `result`; `None` when a conflict should be rerun.
    pub(super) async fn settle<T>(
        &self,
        tx: Transaction<'static, Postgres>,
        result: TxResult<T>,
        attempt: usize,
        context: &str,
    ) -> Option<Result<T>> {
        match result {
            Ok(value) => Some(tx.commit().await.map(|()| value).map_err(self.err(context))),
            Err(TxError::Sql(e)) if is_conflict(&e) && attempt < ATTEMPTS => {
                let _ = tx.rollback().await;
                None
            }
            Err(TxError::Rerun) if attempt < ATTEMPTS => {
                let _ = tx.rollback().await;
                None
            }
            Err(TxError::Rerun) => {
                let _ = tx.rollback().await;
                Some(Err(exhausted(context)))
            }
            Err(TxError::Sql(e)) => {
                let _ = tx.rollback().await;
                Some(Err(map(context, &self.inner.target, e)))
            }
            Err(TxError::Store(e)) => {
                let _ = tx.rollback().await;
                Some(Err(e))
            }
        }
    }

    /// Wakes the dispatchers when a committed change made messages claimable or cancelled
    /// some (which may unblock an ordering key).
    pub(super) fn after_change(&self, change: &EncodedChange, advanced: &Advanced) {
        if advanced.enqueued.iter().any(|e| e.is_created())
            || !change.retry.is_empty()
            || advanced.run.status.is_finished()
            || change.close_wait.is_some()
        {
            self.work_available();
        }
    }

    pub(super) async fn start_in(
        &self,
        tx: &mut PgConnection,
        new: &EncodedRun,
        change: &EncodedChange,
    ) -> TxResult<Started> {
        let now = self.now();
        let id = RunId::from_ulid(self.inner.writer.new_id().ulid());
        let before = transition::initial(id, new, now);
        let (after, context) = transition::apply(&before, change, now)?;
        // Concurrent starts with one key: the second waits for the first to commit, then
        // inserts nothing and reads the first's run below.
        let inserted = sqlx::query(
            "INSERT INTO runs (id, route, dedupe_key, status, state, context, version,
                               created_at, updated_at, traceparent)
             VALUES ($1, $2, $3, 'active', $4, $5::jsonb, 0, $6, $6, $7)
             ON CONFLICT (route, dedupe_key) DO NOTHING RETURNING id",
        )
        .bind(id.to_string())
        .bind(&new.route)
        .bind(&new.dedupe_key)
        .bind(&new.state)
        .bind(&context)
        .bind(now)
        .bind(&new.traceparent)
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_none() {
            let existing = sqlx::query(concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs WHERE route = $1 AND dedupe_key = $2"
            ))
            .bind(&new.route)
            .bind(&new.dedupe_key)
            .fetch_optional(&mut *tx)
            .await?;
            return match existing {
                Some(r) => Ok(Started::Existing(row::run(&r)?)),
                // Purged between the two statements: start again.
                None => Err(TxError::Rerun),
            };
        }
        let first = NewRunEvent::transition(RunEventKind::Started, &after, change, None);
        let advanced = self
            .effects(tx, now, 0, &before, after, &context, change, None, first)
            .await?;
        Ok(Started::Created(advanced))
    }

    async fn advance_in(
        &self,
        tx: &mut PgConnection,
        (run, expected): (RunId, u64),
        change: &EncodedChange,
        end: Option<&End>,
    ) -> TxResult<Advanced> {
        let now = self.now();
        let found = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            ", event_seq FROM runs WHERE id = $1 FOR UPDATE"
        ))
        .bind(run.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(end) = end {
            let lease = &end.lease;
            let owner = sqlx::query(
                "SELECT run_id FROM messages WHERE id = $1 AND status = 'delivering'
                     AND lease_owner = $2 AND lease_token = $3 FOR UPDATE",
            )
            .bind(lease.id.to_string())
            .bind(&lease.owner)
            .bind(&lease.token)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(owner) = owner else {
                return Err(self.fencing_error(lease).await.into());
            };
            let owner: Option<String> = owner.try_get("run_id")?;
            if found.is_some() {
                transition::check_owner(run, lease.id, owner.as_deref())?;
            }
        }
        let Some(found) = found else {
            return Err(StoreError::RunNotFound { id: run }.into());
        };
        let before = row::run(&found)?;
        let event_seq: i32 = found.try_get("event_seq")?;
        transition::check_version(&before, expected)?;
        let closing = match &change.close_wait {
            None => None,
            Some(close) => {
                let wait = sqlx::query(
                    "SELECT run_id, step, state, expires_at, timer_id FROM waits
                     WHERE token = $1 FOR UPDATE",
                )
                .bind(&close.token)
                .fetch_optional(&mut *tx)
                .await?
                .map(|w| found_wait(&w))
                .transpose()?;
                transition::check_close(run, close, wait.as_ref(), now)?;
                wait
            }
        };
        let (after, context) = transition::apply(&before, change, now)?;
        if let Some(end) = end {
            let (outcome, code, duration, detail) = (
                end.report.outcome.as_str(),
                end.report.code.as_deref(),
                end.report.duration.map(duration_millis),
                end.report.detail.as_deref(),
            );
            sqlx::query(END_ATTEMPT)
                .bind(end.lease.id.to_string())
                .bind(&end.lease.owner)
                .bind(&end.lease.token)
                .bind(end.status.as_str())
                .bind(detail)
                .bind(now)
                .bind(outcome)
                .bind(code)
                .bind(duration)
                .execute(&mut *tx)
                .await?;
        }
        let message = end.map(|e| e.lease.id);
        let first = NewRunEvent::transition(RunEventKind::Advanced, &after, change, message);
        self.effects(
            tx,
            now,
            i64::from(event_seq),
            &before,
            after,
            &context,
            change,
            closing,
            first,
        )
        .await
    }

    /// Writes what a change does besides ending a message: the wait it closes, the waits and
    /// messages its status ends, its retries, its messages and the wait it opens, and last the
    /// run's row with every event after `event_seq`, `first` first.
    #[allow(clippy::too_many_arguments)]
    async fn effects(
        &self,
        tx: &mut PgConnection,
        now: i64,
        event_seq: i64,
        before: &Run,
        after: Run,
        context: &str,
        change: &EncodedChange,
        closing: Option<FoundWait>,
        first: NewRunEvent,
    ) -> TxResult<Advanced> {
        let run_id = after.id.to_string();
        let mut events = vec![first];
        if let (Some(close), Some(wait)) = (&change.close_wait, closing) {
            let (by, action) = transition::answer(&close.outcome);
            sqlx::query(
                "UPDATE waits SET state = $1, closed_at = $2, consumed_by = $3, action = $4
                 WHERE token = $5",
            )
            .bind(close.outcome.state().as_str())
            .bind(now)
            .bind(by)
            .bind(action)
            .bind(&close.token)
            .execute(&mut *tx)
            .await?;
            cancel_timer(tx, now, wait.timer.as_deref()).await?;
            events.push(NewRunEvent::closed(&close.outcome, &wait.step));
        }
        if after.status.is_finished() {
            let open = sqlx::query(
                "UPDATE waits SET state = 'cancelled', closed_at = $2
                 WHERE run_id = $1 AND state = 'open' RETURNING step, timer_id",
            )
            .bind(&run_id)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            for wait in &open {
                let timer: Option<String> = wait.try_get("timer_id")?;
                cancel_timer(tx, now, timer.as_deref()).await?;
                events.push(NewRunEvent::cancelled_with_run(wait.try_get("step")?));
            }
        }
        if after.status == RunStatus::Cancelled && before.status != RunStatus::Cancelled {
            sqlx::query(CANCEL_RUN)
                .bind(&run_id)
                .bind(now)
                .bind(CANCELLED_WITH_RUN)
                .execute(&mut *tx)
                .await?;
        }
        if !change.retry.is_empty() {
            let ids: Vec<String> = change.retry.iter().map(ToString::to_string).collect();
            let found = sqlx::query(
                "SELECT id, status, run_id FROM messages WHERE id = ANY($1) ORDER BY id
                 FOR UPDATE",
            )
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
            for id in &change.retry {
                let mut this = None;
                for r in &found {
                    if row::id(r, "id")? == *id {
                        let status: String = r.try_get("status")?;
                        this = Some((r.try_get::<Option<String>, _>("run_id")?, status.parse()?));
                    }
                }
                transition::check_retry(
                    after.id,
                    *id,
                    this.as_ref().map(|(run, status)| (run.as_deref(), *status)),
                )?;
            }
            sqlx::query(REPLAY_IDS)
                .bind(&ids)
                .bind(now)
                .bind(RETRIED_WITH_RUN)
                .execute(&mut *tx)
                .await?;
        }
        // The change's messages and the new wait's timer, in one statement.
        let mut rows: Vec<NewRow> = change
            .messages
            .iter()
            .map(|(m, encoded)| run_row(m, encoded, &run_id))
            .collect();
        if let Some(wait) = &change.open_wait {
            rows.push(run_row(&wait.timer.0, &wait.timer.1, &run_id));
        }
        let mut enqueued = if rows.is_empty() {
            Vec::new()
        } else {
            self.inner.writer.enqueue_in(tx, now, &rows).await?
        };
        let mut timer = None;
        if let Some(wait) = &change.open_wait {
            let id = enqueued.pop().map(|e| e.id());
            let inserted = sqlx::query(
                "INSERT INTO waits (token, run_id, step, state, created_at, expires_at, allowed,
                                    attached, timer_id)
                 VALUES ($1, $2, $3, 'open', $4, $5, $6::jsonb, $7::jsonb, $8)",
            )
            .bind(&wait.token)
            .bind(&run_id)
            .bind(&wait.step)
            .bind(now)
            .bind(wait.expires_at)
            .bind(wait.allowed.as_deref())
            .bind(wait.attached.as_deref())
            .bind(id.map(|id| id.to_string()))
            .execute(&mut *tx)
            .await;
            match inserted {
                Err(sqlx::Error::Database(db)) if db.code().is_some_and(|c| c == "23505") => {
                    return Err(transition::token_taken().into());
                }
                other => {
                    other?;
                }
            }
            events.push(NewRunEvent::opened(wait));
            timer = id;
        }
        let column = |f: fn(&NewRunEvent) -> Option<&str>| -> Vec<Option<&str>> {
            events.iter().map(f).collect()
        };
        sqlx::query(SAVE_RUN)
            .bind(&run_id)
            .bind(event_seq)
            .bind(now)
            .bind(after.status.as_str())
            .bind(&after.state)
            .bind(column(|e| Some(e.kind.as_str())))
            .bind(column(|e| e.step.as_deref()))
            .bind(column(|e| e.message.as_deref()))
            .bind(column(|e| e.detail.as_deref()))
            .bind(events.iter().map(|e| e.duration_ms).collect::<Vec<_>>())
            .bind(&after.step)
            .bind(context)
            .bind(i64::try_from(after.version).unwrap_or(i64::MAX))
            .bind(after.finished_at.map(to_millis))
            .bind(duration_millis(after.waited))
            .bind(after.waiting_since.map(to_millis))
            .bind(&after.last_error)
            .execute(&mut *tx)
            .await?;
        Ok(Advanced {
            run: after,
            enqueued,
            timer,
        })
    }

    /// A run with its events, waits and messages, from one snapshot.
    pub(crate) async fn run_detail(&self, id: RunId) -> Result<Option<RunDetail>> {
        let err = self.err("reading a run");
        let mut tx = self.read_snapshot("reading a run").await?;
        let id = id.to_string();
        let Some(run) = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE id = $1"
        ))
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(&err)?
        else {
            return Ok(None);
        };
        let events = sqlx::query(
            "SELECT seq, at, kind, status, state, step, message_id, detail, duration_ms
             FROM run_events WHERE run_id = $1 ORDER BY seq",
        )
        .bind(&id)
        .fetch_all(&mut *tx)
        .await
        .map_err(&err)?;
        let waits = sqlx::query(concat!(
            "SELECT ",
            wait_columns!(),
            " FROM waits WHERE run_id = $1 ORDER BY created_at, token"
        ))
        .bind(&id)
        .fetch_all(&mut *tx)
        .await
        .map_err(&err)?;
        let messages = sqlx::query(
            "SELECT id, run_step, destination, status, attempts, created_at, updated_at,
                    last_error
             FROM messages WHERE run_id = $1 ORDER BY seq",
        )
        .bind(&id)
        .fetch_all(&mut *tx)
        .await
        .map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        Ok(Some(RunDetail {
            run: row::run(&run)?,
            events: events.iter().map(row::run_event).collect::<Result<_>>()?,
            waits: waits.iter().map(row::wait).collect::<Result<_>>()?,
            messages: messages
                .iter()
                .map(row::run_message)
                .collect::<Result<_>>()?,
        }))
    }

    /// The wait with `token`.
    pub(crate) async fn wait(&self, token: &str) -> Result<Option<Wait>> {
        sqlx::query(concat!(
            "SELECT ",
            wait_columns!(),
            " FROM waits WHERE token = $1"
        ))
        .bind(token)
        .fetch_optional(&mut *self.conn().await?)
        .await
        .map_err(self.err("reading a wait"))?
        .map(|r| row::wait(&r))
        .transpose()
    }

    /// One page of runs matching `filter`, newest first.
    pub(crate) async fn runs(
        &self,
        filter: &RunFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<RunPage> {
        let err = self.err("listing runs");
        let after = cursor.map(crate::common::cursor_seq).transpose()?;
        let statuses: Option<Vec<&str>> = (!filter.statuses.is_empty())
            .then(|| filter.statuses.iter().map(|s| s.as_str()).collect());
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            ", seq FROM runs
             WHERE ($1::text IS NULL OR route = $1) AND ($2::text[] IS NULL OR status = ANY($2))
               AND ($3::text IS NULL OR state = $3) AND ($4::bigint IS NULL OR created_at >= $4)
               AND ($5::bigint IS NULL OR seq < $5)
             ORDER BY seq DESC LIMIT $6"
        ))
        .bind(filter.route.as_deref())
        .bind(statuses)
        .bind(filter.state.as_deref())
        .bind(filter.since.map(to_millis))
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX) + 1)
        .fetch_all(&mut *self.conn().await?)
        .await
        .map_err(&err)?;
        let more = rows.len() > limit;
        let rows = &rows[..rows.len().min(limit)];
        let next = match rows.last() {
            Some(last) if more => {
                let seq: i64 = last.try_get("seq").map_err(&err)?;
                Some(Cursor::from_string(seq.to_string()))
            }
            _ => None,
        };
        Ok(RunPage {
            runs: rows.iter().map(row::run).collect::<Result<_>>()?,
            next,
        })
    }

    /// The statistics of `route`'s runs that finished at or after `since`, from one snapshot.
    pub(crate) async fn stats_of_runs(
        &self,
        route: &str,
        since: i64,
        window: Duration,
    ) -> Result<RunStats> {
        let err = self.err("computing run statistics");
        let mut tx = self.read_snapshot("computing run statistics").await?;
        let r = sqlx::query(
            "SELECT
                (SELECT count(*) FROM runs WHERE route = $1 AND finished_at IS NULL
                   AND status = 'active') AS active,
                (SELECT count(*) FROM runs WHERE route = $1 AND finished_at IS NULL
                   AND status = 'waiting') AS waiting,
                avg(finished_at - created_at - waited_ms)::float8 AS mean,
                percentile_disc(0.95) WITHIN GROUP (ORDER BY finished_at - created_at - waited_ms)
                  AS p95
             FROM runs WHERE route = $1 AND finished_at IS NOT NULL AND finished_at >= $2",
        )
        .bind(route)
        .bind(since)
        .fetch_one(&mut *tx)
        .await
        .map_err(&err)?;
        let active: i64 = r.try_get("active").map_err(&err)?;
        let waiting: i64 = r.try_get("waiting").map_err(&err)?;
        let mean: Option<f64> = r.try_get("mean").map_err(&err)?;
        let p95: Option<i64> = r.try_get("p95").map_err(&err)?;
        let groups = sqlx::query(
            "SELECT status, state, count(*) AS n FROM runs
             WHERE route = $1 AND finished_at IS NOT NULL AND finished_at >= $2
             GROUP BY status, state",
        )
        .bind(route)
        .bind(since)
        .fetch_all(&mut *tx)
        .await
        .map_err(&err)?
        .iter()
        .map(|g| {
            let status: String = g.try_get("status").map_err(&err)?;
            let state: String = g.try_get("state").map_err(&err)?;
            let n = g.try_get::<i64, _>("n").map_err(&err)?.unsigned_abs();
            Ok((status.parse()?, state, n))
        })
        .collect::<Result<Vec<_>>>()?;
        let top_failures = sqlx::query(
            "SELECT status, last_error, count(*) AS n, max(finished_at) AS last_at FROM runs
             WHERE route = $1 AND finished_at IS NOT NULL AND finished_at >= $2
               AND status IN ('failed', 'expired')
             GROUP BY status, last_error ORDER BY n DESC, last_at DESC LIMIT $3",
        )
        .bind(route)
        .bind(since)
        .bind(TOP_FAILURES)
        .fetch_all(&mut *tx)
        .await
        .map_err(&err)?
        .iter()
        .map(|f| {
            let status: String = f.try_get("status").map_err(&err)?;
            Ok(FailureReason {
                status: status.parse()?,
                reason: f.try_get("last_error").map_err(&err)?,
                count: f.try_get::<i64, _>("n").map_err(&err)?.unsigned_abs(),
                last_at: crate::types::from_millis(f.try_get("last_at").map_err(&err)?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
        tx.commit().await.map_err(&err)?;
        let millis = |ms: i64| Duration::from_millis(ms.max(0).unsigned_abs());
        Ok(transition::stats(
            route,
            window,
            (active.unsigned_abs(), waiting.unsigned_abs()),
            groups,
            (
                mean.map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)),
                p95.map(millis),
            ),
            top_failures,
        ))
    }

    /// A read-only transaction on one snapshot.
    async fn read_snapshot(&self, context: &str) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.begin(context).await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(self.err(context))?;
        Ok(tx)
    }
}

/// The writer's row for a run's message.
fn run_row(message: &NewMessage, encoded: &Encoded, run: &str) -> NewRow {
    let mut row = super::new_row(message, encoded.clone());
    row.run = encoded.step.clone().map(|step| (run.to_owned(), step));
    row
}

fn found_wait(row: &PgRow) -> Result<FoundWait> {
    let get = |column: &str| -> Result<String> {
        row.try_get(column)
            .map_err(|e| super::error::corrupt(column, e))
    };
    let run: String = get("run_id")?;
    let state: String = get("state")?;
    Ok(FoundWait {
        run: run.parse()?,
        step: get("step")?,
        state: state.parse()?,
        expires_at: row
            .try_get("expires_at")
            .map_err(|e| super::error::corrupt("expires_at", e))?,
        timer: row
            .try_get("timer_id")
            .map_err(|e| super::error::corrupt("timer_id", e))?,
    })
}

/// Cancels a wait's timer message if it is still pending.
async fn cancel_timer(tx: &mut PgConnection, now: i64, timer: Option<&str>) -> TxResult<()> {
    if let Some(timer) = timer {
        sqlx::query(CANCEL)
            .bind(timer)
            .bind(now)
            .bind(WAIT_CLOSED)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

pub(super) fn exhausted(context: &str) -> StoreError {
    StoreError::database(
        context,
        true,
        "kept conflicting with concurrent transactions",
    )
}
