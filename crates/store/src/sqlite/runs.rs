//! Runs and waits on SQLite: starting and changing runs on the writer thread, and reading them
//! on the read pool.
//!
//! A change is one writer job, so one transaction with whatever else that job does: the end of
//! the step's message under its lease for `complete_and_advance`, the new run's row for
//! `start_run`. Every check (lease, run, version, wait) is read before the first write; a job
//! that fails after writing is rolled back whole by the writer (see `writer.rs`), so a refused
//! or failed change leaves nothing behind. Only the writer thread writes, so nothing changes
//! between a job's reads and its writes.

use std::time::Duration;

use rusqlite::types::Value as Sql;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params, params_from_iter};

use super::error::Context;
use super::ops;
use super::rows::{
    self, RUN_COLUMN_COUNT, RUN_COLUMNS, RUN_EVENT_COLUMNS, RUN_MESSAGE_COLUMNS, WAIT_COLUMNS,
};
use super::writer::Env;
use crate::error::{Result, StoreError};
use crate::run::{
    Advanced, FailureReason, Run, RunDetail, RunEventKind, RunFilter, RunId, RunPage, RunStats,
    RunStatus, Started, Wait,
};
use crate::transition::{
    self, CANCELLED_WITH_RUN, EncodedChange, EncodedRun, End, FoundWait, NewRunEvent,
    RETRIED_WITH_RUN, WAIT_CLOSED,
};
use crate::types::{Cursor, MessageId, duration_millis, to_millis};

/// Most failure reasons `run_stats` reports.
const TOP_FAILURES: i64 = 10;

/// Starts a run unless its key was seen; applies `change` to a new one.
pub(crate) fn start(
    conn: &Connection,
    env: &Env,
    new: &EncodedRun,
    change: &EncodedChange,
) -> Result<Started> {
    let existing = conn
        .prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE route = ?1 AND dedupe_key = ?2"
        ))
        .and_then(|mut s| {
            s.query_row(params![new.route, new.dedupe_key], |r| rows::run(r, 0))
                .optional()
        })
        .ctx("looking up a run's key")?;
    if let Some(run) = existing {
        return Ok(Started::Existing(run));
    }
    let now = env.now();
    let before = transition::initial(RunId::from_ulid(env.new_id()), new, now);
    let (after, context) = transition::apply(&before, change, now)?;
    conn.prepare_cached(
        "INSERT INTO runs (id, route, dedupe_key, status, state, context, version, created_at,
             updated_at, traceparent)
         VALUES (?1, ?2, ?3, 'active', ?4, ?5, 0, ?6, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            after.id.to_string(),
            after.route,
            after.dedupe_key,
            new.state,
            context,
            now,
            after.traceparent,
        ])
    })
    .ctx("starting a run")?;
    let seq = conn.last_insert_rowid();
    save(conn, seq, &after, &context, now)?;
    let first = NewRunEvent::transition(RunEventKind::Started, &after, change, None);
    let advanced = effects(conn, env, seq, 0, &before, after, change, None, first)?;
    Ok(Started::Created(advanced))
}

/// Applies `change` to `run` if it is at `expected`, with `end` (the end of the step's
/// message) when given.
pub(crate) fn advance(
    conn: &Connection,
    env: &Env,
    (run, expected): (RunId, u64),
    change: &EncodedChange,
    end: Option<&End>,
) -> Result<Advanced> {
    let now = env.now();
    if let Some(end) = end {
        let lease = &end.lease;
        let owner: Option<Option<String>> = conn
            .prepare_cached(
                "SELECT run_id FROM messages WHERE id = ?1 AND status = 'delivering'
                     AND lease_owner = ?2 AND lease_token = ?3",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![lease.id.to_string(), lease.owner, lease.token],
                    |r| r.get(0),
                )
                .optional()
            })
            .ctx("checking a lease")?;
        match owner {
            None => return Err(ops::fence_error(conn, lease)),
            Some(owner) => transition::check_owner(run, lease.id, owner.as_deref())?,
        }
    }
    let found = conn
        .prepare_cached(&format!(
            "SELECT {RUN_COLUMNS}, seq, event_seq FROM runs WHERE id = ?1"
        ))
        .and_then(|mut s| {
            s.query_row([run.to_string()], |r| {
                Ok((
                    rows::run(r, 0)?,
                    r.get::<_, i64>(RUN_COLUMN_COUNT)?,
                    r.get::<_, i64>(RUN_COLUMN_COUNT + 1)?,
                ))
            })
            .optional()
        })
        .ctx("reading a run")?;
    let Some((before, seq, event_seq)) = found else {
        return Err(StoreError::RunNotFound { id: run });
    };
    transition::check_version(&before, expected)?;
    let closing = match &change.close_wait {
        None => None,
        Some(close) => {
            let found = find_closing(conn, &close.token)?;
            transition::check_close(run, close, found.as_ref(), now)?;
            found
        }
    };
    let (after, context) = transition::apply(&before, change, now)?;
    if let Some(end) = end {
        ops::finish(conn, env, &end.lease, end.status, None, &end.report)?;
    }
    save(conn, seq, &after, &context, now)?;
    let message = end.map(|e| e.lease.id);
    let first = NewRunEvent::transition(RunEventKind::Advanced, &after, change, message);
    effects(
        conn, env, seq, event_seq, &before, after, change, closing, first,
    )
}

/// Writes the run's row at `seq` as a change left it.
fn save(conn: &Connection, seq: i64, run: &Run, context: &str, now: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE runs SET status = ?1, state = ?2, step = ?3, context = ?4, version = ?5,
             updated_at = ?6, finished_at = ?7, waited_ms = ?8, waiting_since = ?9,
             last_error = ?10
         WHERE seq = ?11",
    )
    .and_then(|mut s| {
        s.execute(params![
            run.status.as_str(),
            run.state,
            run.step,
            context,
            i64::try_from(run.version).unwrap_or(i64::MAX),
            now,
            run.finished_at.map(to_millis),
            duration_millis(run.waited),
            run.waiting_since.map(to_millis),
            run.last_error,
            seq,
        ])
    })
    .ctx("changing a run")?;
    Ok(())
}

/// The wait with `token`, as a change that closes it needs it.
fn find_closing(conn: &Connection, token: &str) -> Result<Option<FoundWait>> {
    let found: Option<(String, String, String, i64, Option<String>)> = conn
        .prepare_cached(
            "SELECT r.id, w.step, w.state, w.expires_at, w.timer_id
             FROM waits AS w JOIN runs AS r ON r.seq = w.run_seq WHERE w.token = ?1",
        )
        .and_then(|mut s| {
            s.query_row([token], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()
        })
        .ctx("reading a wait")?;
    found
        .map(|(run, step, state, expires_at, timer)| {
            Ok(FoundWait {
                run: run.parse()?,
                step,
                state: state.parse()?,
                expires_at,
                timer,
            })
        })
        .transpose()
}

/// Cancels a wait's timer message if it is still pending.
fn cancel_timer(conn: &Connection, env: &Env, timer: Option<&str>) -> Result<()> {
    let Some(timer) = timer else {
        return Ok(());
    };
    if let Some((seq, _, _)) = ops::look_up(conn, timer.parse::<MessageId>()?)? {
        ops::cancel_pending(conn, env, seq, Some(WAIT_CLOSED))?;
    }
    Ok(())
}

/// Writes what a change does beyond the run's row (already written, at `seq`): the wait it
/// closes, the waits and messages its status ends, its retries, its messages, the wait it
/// opens, and every event after `event_seq`, `first` first.
#[allow(clippy::too_many_arguments)]
fn effects(
    conn: &Connection,
    env: &Env,
    seq: i64,
    event_seq: i64,
    before: &Run,
    after: Run,
    change: &EncodedChange,
    closing: Option<FoundWait>,
    first: NewRunEvent,
) -> Result<Advanced> {
    let now = env.now();
    let run_id = after.id.to_string();
    let mut events = vec![first];
    if let (Some(close), Some(wait)) = (&change.close_wait, closing) {
        let (by, action) = transition::answer(&close.outcome);
        conn.prepare_cached(
            "UPDATE waits SET state = ?1, closed_at = ?2, consumed_by = ?3, action = ?4
             WHERE token = ?5",
        )
        .and_then(|mut s| {
            s.execute(params![
                close.outcome.state().as_str(),
                now,
                by,
                action,
                close.token
            ])
        })
        .ctx("closing a wait")?;
        cancel_timer(conn, env, wait.timer.as_deref())?;
        events.push(NewRunEvent::closed(&close.outcome, &wait.step));
    }
    if after.status.is_finished() {
        let open: Vec<(String, String, Option<String>)> = conn
            .prepare_cached(
                "UPDATE waits SET state = 'cancelled', closed_at = ?1
                 WHERE run_seq = ?2 AND state = 'open' RETURNING token, step, timer_id",
            )
            .and_then(|mut s| {
                s.query_map(params![now, seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .ctx("cancelling a finished run's waits")?;
        for (_, step, timer) in open {
            cancel_timer(conn, env, timer.as_deref())?;
            events.push(NewRunEvent::cancelled_with_run(step));
        }
    }
    if after.status == RunStatus::Cancelled && before.status != RunStatus::Cancelled {
        let pending: Vec<i64> = conn
            .prepare_cached(concat!(
                "SELECT seq FROM messages WHERE run_id = ?1 AND ",
                pending!(),
                " ORDER BY seq"
            ))
            .and_then(|mut s| s.query_map([&run_id], |r| r.get(0))?.collect())
            .ctx("finding a run's pending messages")?;
        for message in pending {
            ops::cancel_pending(conn, env, message, Some(CANCELLED_WITH_RUN))?;
        }
    }
    for id in &change.retry {
        let found = ops::look_up(conn, *id)?;
        transition::check_retry(
            after.id,
            *id,
            found
                .as_ref()
                .map(|(_, status, run)| (run.as_deref(), *status)),
        )?;
        if let Some((message, _, _)) = found {
            ops::requeue(conn, env, message, RETRIED_WITH_RUN)?;
        }
    }
    let enqueued = ops::enqueue(conn, env, &change.messages, Some(&run_id))?;
    let mut timer = None;
    if let Some(wait) = &change.open_wait {
        let id = ops::enqueue(conn, env, std::slice::from_ref(&wait.timer), Some(&run_id))?
            .pop()
            .map(|e| e.id());
        conn.prepare_cached(
            "INSERT INTO waits (token, run_seq, step, state, created_at, expires_at, allowed,
                 attached, timer_id)
             VALUES (?1, ?2, ?3, 'open', ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut s| {
            s.execute(params![
                wait.token,
                seq,
                wait.step,
                now,
                wait.expires_at,
                wait.allowed,
                wait.attached,
                id.map(|id| id.to_string()),
            ])
        })
        .map_err(|e| match e.sqlite_error_code() {
            Some(ErrorCode::ConstraintViolation) => transition::token_taken(),
            _ => super::error::map("opening a wait", e),
        })?;
        events.push(NewRunEvent::opened(wait));
        timer = id;
    }
    let mut next = event_seq;
    for event in &events {
        next += 1;
        conn.prepare_cached(
            "INSERT INTO run_events (run_seq, seq, at, kind, status, state, step, message_id,
                 detail, duration_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .and_then(|mut s| {
            s.execute(params![
                seq,
                next,
                now,
                event.kind.as_str(),
                after.status.as_str(),
                after.state,
                event.step,
                event.message,
                event.detail,
                event.duration_ms,
            ])
        })
        .ctx("appending a run's event")?;
    }
    conn.prepare_cached("UPDATE runs SET event_seq = ?1 WHERE seq = ?2")
        .and_then(|mut s| s.execute(params![next, seq]))
        .ctx("numbering a run's events")?;
    Ok(Advanced {
        run: after,
        enqueued,
        timer,
    })
}

/// A run with its events, waits and messages, from one snapshot.
pub(crate) fn get(conn: &Connection, id: RunId) -> Result<Option<RunDetail>> {
    // Deferred: the snapshot starts at the first read and ends when `tx` is dropped.
    let tx = conn
        .unchecked_transaction()
        .ctx("starting a read of a run")?;
    let found = tx
        .prepare_cached(&format!(
            "SELECT {RUN_COLUMNS}, seq FROM runs WHERE id = ?1"
        ))
        .and_then(|mut s| {
            s.query_row([id.to_string()], |r| {
                Ok((rows::run(r, 0)?, r.get::<_, i64>(RUN_COLUMN_COUNT)?))
            })
            .optional()
        })
        .ctx("reading a run")?;
    let Some((run, seq)) = found else {
        return Ok(None);
    };
    let events = tx
        .prepare_cached(&format!(
            "SELECT {RUN_EVENT_COLUMNS} FROM run_events WHERE run_seq = ?1 ORDER BY seq"
        ))
        .and_then(|mut s| s.query_map([seq], rows::run_event)?.collect())
        .ctx("reading a run's events")?;
    let waits = tx
        .prepare_cached(&format!(
            "SELECT {WAIT_COLUMNS} FROM waits AS w JOIN runs AS r ON r.seq = w.run_seq
             WHERE w.run_seq = ?1 ORDER BY w.created_at, w.token"
        ))
        .and_then(|mut s| s.query_map([seq], rows::wait)?.collect())
        .ctx("reading a run's waits")?;
    let messages = tx
        .prepare_cached(&format!(
            "SELECT {RUN_MESSAGE_COLUMNS} FROM messages INDEXED BY messages_run
             WHERE run_id = ?1 ORDER BY seq"
        ))
        .and_then(|mut s| s.query_map([id.to_string()], rows::run_message)?.collect())
        .ctx("reading a run's messages")?;
    Ok(Some(RunDetail {
        run,
        events,
        waits,
        messages,
    }))
}

/// The wait with `token`.
pub(crate) fn find_wait(conn: &Connection, token: &str) -> Result<Option<Wait>> {
    conn.prepare_cached(&format!(
        "SELECT {WAIT_COLUMNS} FROM waits AS w JOIN runs AS r ON r.seq = w.run_seq
         WHERE w.token = ?1"
    ))
    .and_then(|mut s| s.query_row([token], rows::wait).optional())
    .ctx("reading a wait")
}

/// One page of runs matching `filter`, newest first.
pub(crate) fn list(
    conn: &Connection,
    filter: &RunFilter,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Result<RunPage> {
    let mut params: Vec<Sql> = Vec::new();
    let mut parts: Vec<String> = Vec::new();
    let mut bind = |column: &str, value: Sql| {
        params.push(value);
        parts.push(format!("{column} ?{}", params.len()));
    };
    if let Some(route) = &filter.route {
        bind("route =", Sql::Text(route.clone()));
    }
    if let Some(state) = &filter.state {
        bind("state =", Sql::Text(state.clone()));
    }
    if let Some(since) = filter.since {
        bind("created_at >=", Sql::Integer(to_millis(since)));
    }
    if let Some(cursor) = cursor {
        bind("seq <", Sql::Integer(crate::common::cursor_seq(cursor)?));
    }
    if !filter.statuses.is_empty() {
        let list: Vec<String> = filter
            .statuses
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        parts.push(format!("status IN ({})", list.join(", ")));
    }
    params.push(Sql::Integer(limit as i64 + 1));
    let condition = if parts.is_empty() {
        "1".to_owned()
    } else {
        parts.join(" AND ")
    };
    let sql = format!(
        "SELECT {RUN_COLUMNS}, seq FROM runs WHERE {condition} ORDER BY seq DESC LIMIT ?{}",
        params.len()
    );
    let mut rows: Vec<(Run, i64)> = conn
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(params_from_iter(params), |r| {
                Ok((rows::run(r, 0)?, r.get::<_, i64>(RUN_COLUMN_COUNT)?))
            })?
            .collect()
        })
        .ctx("listing runs")?;
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|(_, seq)| Cursor(seq.to_string()))
    } else {
        None
    };
    Ok(RunPage {
        runs: rows.into_iter().map(|(r, _)| r).collect(),
        next,
    })
}

/// The statistics of `route`'s runs that finished at or after `since`, from one snapshot.
pub(crate) fn stats(
    conn: &Connection,
    route: &str,
    since: i64,
    window: Duration,
) -> Result<RunStats> {
    let tx = conn
        .unchecked_transaction()
        .ctx("starting a read of run statistics")?;
    let ctx = "computing run statistics";
    let (mut active, mut waiting) = (0, 0);
    let unfinished: Vec<(String, i64)> = tx
        .prepare_cached(
            "SELECT status, count(*) FROM runs INDEXED BY runs_unfinished
             WHERE route = ?1 AND finished_at IS NULL GROUP BY status",
        )
        .and_then(|mut s| {
            s.query_map([route], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
        .ctx(ctx)?;
    for (status, n) in unfinished {
        match status.parse()? {
            RunStatus::Active => active = n.unsigned_abs(),
            RunStatus::Waiting => waiting = n.unsigned_abs(),
            _ => {}
        }
    }
    let groups = tx
        .prepare_cached(
            "SELECT status, state, count(*) FROM runs INDEXED BY runs_finished
             WHERE route = ?1 AND finished_at IS NOT NULL AND finished_at >= ?2
             GROUP BY status, state",
        )
        .and_then(|mut s| {
            s.query_map(params![route, since], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .ctx(ctx)?
        .into_iter()
        .map(|(status, state, n)| Ok((status.parse()?, state, n.unsigned_abs())))
        .collect::<Result<Vec<(RunStatus, String, u64)>>>()?;
    let total: u64 = groups.iter().map(|(_, _, n)| n).sum();
    let processing = "finished_at - created_at - waited_ms";
    let (mean, p95) = if total == 0 {
        (None, None)
    } else {
        let mean: f64 = tx
            .prepare_cached(&format!(
                "SELECT avg({processing}) FROM runs INDEXED BY runs_finished
                 WHERE route = ?1 AND finished_at IS NOT NULL AND finished_at >= ?2"
            ))
            .and_then(|mut s| s.query_row(params![route, since], |r| r.get(0)))
            .ctx(ctx)?;
        // Nearest rank, as PostgreSQL's `percentile_disc`.
        let rank = ((0.95 * total as f64).ceil() as i64).max(1) - 1;
        let p95: i64 = tx
            .prepare_cached(&format!(
                "SELECT {processing} AS d FROM runs INDEXED BY runs_finished
                 WHERE route = ?1 AND finished_at IS NOT NULL AND finished_at >= ?2
                 ORDER BY d LIMIT 1 OFFSET ?3"
            ))
            .and_then(|mut s| s.query_row(params![route, since, rank], |r| r.get(0)))
            .ctx(ctx)?;
        (
            Some(Duration::from_secs_f64(mean.max(0.0) / 1000.0)),
            Some(Duration::from_millis(p95.max(0).unsigned_abs())),
        )
    };
    let top_failures = tx
        .prepare_cached(
            "SELECT status, last_error, count(*) AS n, max(finished_at) FROM runs
             INDEXED BY runs_finished
             WHERE route = ?1 AND finished_at IS NOT NULL AND finished_at >= ?2
               AND status IN ('failed', 'expired')
             GROUP BY status, last_error ORDER BY n DESC, max(finished_at) DESC LIMIT ?3",
        )
        .and_then(|mut s| {
            s.query_map(params![route, since, TOP_FAILURES], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .ctx(ctx)?
        .into_iter()
        .map(|(status, reason, n, last)| {
            Ok(FailureReason {
                status: status.parse()?,
                reason,
                count: n.unsigned_abs(),
                last_at: crate::types::from_millis(last),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(crate::transition::stats(
        route,
        window,
        (active, waiting),
        groups,
        (mean, p95),
        top_failures,
    ))
}
