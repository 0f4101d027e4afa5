//! Reading message and event rows into the public types.

use std::time::Duration;

use rusqlite::Row;
use rusqlite::types::Type;

use crate::run::{Run, RunEvent, RunId, RunMessage, RunStep, Wait};
use crate::types::{Event, Inbound, InboundId, Message, MessageId, from_millis};

/// The columns [`message`] reads, in order, for `SELECT … FROM messages`.
pub(crate) const MESSAGE_COLUMNS: &str = "id, destination, payload, headers, idempotency_key, \
    ordering_key, status, attempts, next_attempt_at, lease_owner, lease_expires_at, last_error, \
    created_at, updated_at, delivered_at, run_id, run_step, traceparent";

/// How many columns [`MESSAGE_COLUMNS`] names: the index of the first column after them.
pub(crate) const MESSAGE_COLUMN_COUNT: usize = 18;

fn conversion(
    index: usize,
    err: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(err))
}

fn parse<T: std::str::FromStr>(row: &Row<'_>, index: usize) -> rusqlite::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: String = row.get(index)?;
    text.parse().map_err(|e| conversion(index, e))
}

fn json(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<serde_json::Value>> {
    let text: Option<String> = row.get(index)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| conversion(index, e)))
        .transpose()
}

/// A message from a row selected with [`MESSAGE_COLUMNS`] starting at `at`.
pub(crate) fn message(row: &Row<'_>, at: usize) -> rusqlite::Result<Message> {
    Ok(Message {
        id: parse::<MessageId>(row, at)?,
        destination: row.get(at + 1)?,
        payload: json(row, at + 2)?.unwrap_or_default(),
        headers: json(row, at + 3)?,
        idempotency_key: row.get(at + 4)?,
        ordering_key: row.get(at + 5)?,
        status: parse(row, at + 6)?,
        attempts: row.get(at + 7)?,
        next_attempt_at: from_millis(row.get(at + 8)?),
        lease_owner: row.get(at + 9)?,
        lease_expires_at: row.get::<_, Option<i64>>(at + 10)?.map(from_millis),
        last_error: row.get(at + 11)?,
        created_at: from_millis(row.get(at + 12)?),
        updated_at: from_millis(row.get(at + 13)?),
        delivered_at: row.get::<_, Option<i64>>(at + 14)?.map(from_millis),
        run: match (row.get::<_, Option<String>>(at + 15)?, row.get(at + 16)?) {
            (Some(run), Some(step)) => Some(RunStep {
                run: run.parse().map_err(|e| conversion(at + 15, e))?,
                step,
            }),
            _ => None,
        },
        traceparent: row.get(at + 17)?,
    })
}

/// The columns [`event`] reads.
pub(crate) const EVENT_COLUMNS: &str =
    "seq, at, status, attempt, outcome, code, duration_ms, detail, coalesce(repeats, 1), last_at";

/// An event from a row selected with [`EVENT_COLUMNS`].
pub(crate) fn event(row: &Row<'_>) -> rusqlite::Result<Event> {
    let outcome: Option<String> = row.get(4)?;
    Ok(Event {
        seq: row.get(0)?,
        at: from_millis(row.get(1)?),
        status: parse(row, 2)?,
        attempt: row.get(3)?,
        outcome: outcome
            .map(|o| o.parse().map_err(|e| conversion(4, e)))
            .transpose()?,
        code: row.get(5)?,
        duration: row
            .get::<_, Option<i64>>(6)?
            .map(|ms| Duration::from_millis(ms.max(0).unsigned_abs())),
        detail: row.get(7)?,
        repeats: row.get(8)?,
        last_at: row.get::<_, Option<i64>>(9)?.map(from_millis),
    })
}

/// An inbound event from a row selected as `id, source, external_id, payload, received_at`.
pub(crate) fn inbound(row: &Row<'_>) -> rusqlite::Result<Inbound> {
    Ok(Inbound {
        id: parse::<InboundId>(row, 0)?,
        source: row.get(1)?,
        external_id: row.get(2)?,
        payload: json(row, 3)?.unwrap_or_default(),
        received_at: from_millis(row.get(4)?),
    })
}

/// The columns [`run`] reads, for `SELECT … FROM runs`.
pub(crate) const RUN_COLUMNS: &str = "id, route, dedupe_key, status, state, step, context, \
    version, created_at, updated_at, finished_at, waited_ms, waiting_since, last_error, traceparent";

/// How many columns [`RUN_COLUMNS`] names.
pub(crate) const RUN_COLUMN_COUNT: usize = 15;

fn millis(row: &Row<'_>, index: usize) -> rusqlite::Result<Duration> {
    Ok(Duration::from_millis(
        row.get::<_, i64>(index)?.max(0).unsigned_abs(),
    ))
}

/// A run from a row selected with [`RUN_COLUMNS`] starting at `at`.
pub(crate) fn run(row: &Row<'_>, at: usize) -> rusqlite::Result<Run> {
    Ok(Run {
        id: parse::<RunId>(row, at)?,
        route: row.get(at + 1)?,
        dedupe_key: row.get(at + 2)?,
        status: parse(row, at + 3)?,
        state: row.get(at + 4)?,
        step: row.get(at + 5)?,
        context: json(row, at + 6)?.unwrap_or_default(),
        version: row.get::<_, i64>(at + 7)?.max(0).unsigned_abs(),
        created_at: from_millis(row.get(at + 8)?),
        updated_at: from_millis(row.get(at + 9)?),
        finished_at: row.get::<_, Option<i64>>(at + 10)?.map(from_millis),
        waited: millis(row, at + 11)?,
        waiting_since: row.get::<_, Option<i64>>(at + 12)?.map(from_millis),
        last_error: row.get(at + 13)?,
        traceparent: row.get(at + 14)?,
    })
}

/// The columns [`run_event`] reads.
pub(crate) const RUN_EVENT_COLUMNS: &str =
    "seq, at, kind, status, state, step, message_id, detail, duration_ms";

/// A run's event from a row selected with [`RUN_EVENT_COLUMNS`].
pub(crate) fn run_event(row: &Row<'_>) -> rusqlite::Result<RunEvent> {
    Ok(RunEvent {
        seq: row.get(0)?,
        at: from_millis(row.get(1)?),
        kind: parse(row, 2)?,
        status: parse(row, 3)?,
        state: row.get(4)?,
        step: row.get(5)?,
        message: row
            .get::<_, Option<String>>(6)?
            .map(|id| id.parse().map_err(|e| conversion(6, e)))
            .transpose()?,
        detail: row.get(7)?,
        duration: row
            .get::<_, Option<i64>>(8)?
            .map(|ms| Duration::from_millis(ms.max(0).unsigned_abs())),
    })
}

/// The columns [`wait`] reads, for `SELECT … FROM waits AS w JOIN runs AS r ON r.seq =
/// w.run_seq`.
pub(crate) const WAIT_COLUMNS: &str = "w.token, r.id, w.step, w.state, w.created_at, \
    w.expires_at, w.allowed, w.attached, w.closed_at, w.consumed_by, w.action, w.timer_id";

/// A wait from a row selected with [`WAIT_COLUMNS`].
pub(crate) fn wait(row: &Row<'_>) -> rusqlite::Result<Wait> {
    Ok(Wait {
        token: row.get(0)?,
        run: parse(row, 1)?,
        step: row.get(2)?,
        state: parse(row, 3)?,
        created_at: from_millis(row.get(4)?),
        expires_at: from_millis(row.get(5)?),
        allowed: json(row, 6)?,
        attached: json(row, 7)?,
        closed_at: row.get::<_, Option<i64>>(8)?.map(from_millis),
        consumed_by: row.get(9)?,
        action: row.get(10)?,
        timer: row
            .get::<_, Option<String>>(11)?
            .map(|id| id.parse().map_err(|e| conversion(11, e)))
            .transpose()?,
    })
}

/// The columns [`run_message`] reads, for `SELECT … FROM messages`.
pub(crate) const RUN_MESSAGE_COLUMNS: &str =
    "id, run_step, destination, status, attempts, created_at, updated_at, last_error";

/// One of a run's messages from a row selected with [`RUN_MESSAGE_COLUMNS`].
pub(crate) fn run_message(row: &Row<'_>) -> rusqlite::Result<RunMessage> {
    Ok(RunMessage {
        id: parse(row, 0)?,
        step: row.get(1)?,
        destination: row.get(2)?,
        status: parse(row, 3)?,
        attempts: row.get(4)?,
        created_at: from_millis(row.get(5)?),
        updated_at: from_millis(row.get(6)?),
        last_error: row.get(7)?,
    })
}
