//! Decoding rows into the store's records, and the column lists the queries select.

use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::error::corrupt;
use crate::error::Result;
use crate::run::{Run, RunEvent, RunMessage, RunStep, Wait};
use crate::types::{Event, Inbound, Lease, Message, MessageId, from_millis};

/// The `messages` columns [`message`] reads, as a literal for `concat!`.
macro_rules! message_columns {
    () => {
        "id, destination, payload::text AS payload, headers::text AS headers, idempotency_key, \
         ordering_key, status, attempts, next_attempt_at, lease_owner, lease_token, \
         lease_expires_at, last_error, created_at, updated_at, delivered_at, seq, run_id, run_step, \
         traceparent"
    };
}
pub(crate) use message_columns;

fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column).map_err(|e| corrupt(column, e))
}

fn count(row: &PgRow, column: &str) -> Result<u32> {
    let n: i32 = get(row, column)?;
    u32::try_from(n).map_err(|e| corrupt(column, e))
}

/// Reads a message id column.
pub(crate) fn id(row: &PgRow, column: &str) -> Result<MessageId> {
    let text: String = get(row, column)?;
    text.parse().map_err(|e| corrupt(column, e))
}

fn json(text: &str, column: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| corrupt(column, e))
}

/// Reads a row selected with [`message_columns`].
pub(crate) fn message(row: &PgRow) -> Result<Message> {
    let payload: String = get(row, "payload")?;
    let headers: Option<String> = get(row, "headers")?;
    let status: String = get(row, "status")?;
    Ok(Message {
        id: id(row, "id")?,
        destination: get(row, "destination")?,
        payload: json(&payload, "payload")?,
        headers: headers.map(|h| json(&h, "headers")).transpose()?,
        idempotency_key: get(row, "idempotency_key")?,
        ordering_key: get(row, "ordering_key")?,
        status: status.parse().map_err(|e| corrupt("status", e))?,
        attempts: count(row, "attempts")?,
        next_attempt_at: from_millis(get(row, "next_attempt_at")?),
        lease_owner: get(row, "lease_owner")?,
        lease_expires_at: get::<Option<i64>>(row, "lease_expires_at")?.map(from_millis),
        last_error: get(row, "last_error")?,
        created_at: from_millis(get(row, "created_at")?),
        updated_at: from_millis(get(row, "updated_at")?),
        delivered_at: get::<Option<i64>>(row, "delivered_at")?.map(from_millis),
        run: match (get::<Option<String>>(row, "run_id")?, get(row, "run_step")?) {
            (Some(run), Some(step)) => Some(RunStep {
                run: run.parse().map_err(|e| corrupt("run_id", e))?,
                step,
            }),
            _ => None,
        },
        traceparent: get(row, "traceparent")?,
    })
}

/// The lease in a row selected with [`message_columns`] right after a claim.
pub(crate) fn lease(row: &PgRow) -> Result<Lease> {
    Ok(Lease {
        id: id(row, "id")?,
        owner: get(row, "lease_owner")?,
        token: get(row, "lease_token")?,
        expires_at: from_millis(get(row, "lease_expires_at")?),
    })
}

/// Reads an `events` row.
pub(crate) fn event(row: &PgRow) -> Result<Event> {
    let status: String = get(row, "status")?;
    let outcome: Option<String> = get(row, "outcome")?;
    let duration: Option<i64> = get(row, "duration_ms")?;
    Ok(Event {
        seq: count(row, "seq")?,
        at: from_millis(get(row, "at")?),
        status: status.parse().map_err(|e| corrupt("event status", e))?,
        attempt: count(row, "attempt")?,
        outcome: outcome
            .map(|o| o.parse())
            .transpose()
            .map_err(|e| corrupt("event outcome", e))?,
        code: get(row, "code")?,
        duration: duration
            .map(|d| u64::try_from(d).map(Duration::from_millis))
            .transpose()
            .map_err(|e| corrupt("event duration", e))?,
        detail: get(row, "detail")?,
        repeats: u32::try_from(get::<Option<i32>>(row, "repeats")?.unwrap_or(1))
            .map_err(|e| corrupt("event repeats", e))?,
        last_at: get::<Option<i64>>(row, "last_at")?.map(from_millis),
    })
}

/// Reads an `inbound` row selected as `id, source, external_id, payload::text AS payload,
/// received_at`.
pub(crate) fn inbound(row: &PgRow) -> Result<Inbound> {
    let id: String = get(row, "id")?;
    let payload: String = get(row, "payload")?;
    Ok(Inbound {
        id: id.parse().map_err(|e| corrupt("id", e))?,
        source: get(row, "source")?,
        external_id: get(row, "external_id")?,
        payload: json(&payload, "payload")?,
        received_at: from_millis(get(row, "received_at")?),
    })
}

/// The `runs` columns [`run`] reads, as a literal for `concat!`.
macro_rules! run_columns {
    () => {
        "id, route, dedupe_key, status, state, step, context::text AS context, version, \
         created_at, updated_at, finished_at, waited_ms, waiting_since, last_error, traceparent"
    };
}
pub(crate) use run_columns;

fn millis(row: &PgRow, column: &str) -> Result<Duration> {
    let ms: i64 = get(row, column)?;
    Ok(Duration::from_millis(ms.max(0).unsigned_abs()))
}

fn parsed<T: std::str::FromStr>(row: &PgRow, column: &str) -> Result<T>
where
    T::Err: Into<crate::BoxError>,
{
    let text: String = get(row, column)?;
    text.parse().map_err(|e| corrupt(column, e))
}

fn parsed_opt<T: std::str::FromStr>(row: &PgRow, column: &str) -> Result<Option<T>>
where
    T::Err: Into<crate::BoxError>,
{
    let text: Option<String> = get(row, column)?;
    text.map(|t| t.parse().map_err(|e| corrupt(column, e)))
        .transpose()
}

fn json_opt(row: &PgRow, column: &str) -> Result<Option<serde_json::Value>> {
    let text: Option<String> = get(row, column)?;
    text.map(|t| json(&t, column)).transpose()
}

/// Reads a row selected with [`run_columns`].
pub(crate) fn run(row: &PgRow) -> Result<Run> {
    let context: String = get(row, "context")?;
    let version: i64 = get(row, "version")?;
    Ok(Run {
        id: parsed(row, "id")?,
        route: get(row, "route")?,
        dedupe_key: get(row, "dedupe_key")?,
        status: parsed(row, "status")?,
        state: get(row, "state")?,
        step: get(row, "step")?,
        context: json(&context, "context")?,
        version: u64::try_from(version).map_err(|e| corrupt("version", e))?,
        created_at: from_millis(get(row, "created_at")?),
        updated_at: from_millis(get(row, "updated_at")?),
        finished_at: get::<Option<i64>>(row, "finished_at")?.map(from_millis),
        waited: millis(row, "waited_ms")?,
        waiting_since: get::<Option<i64>>(row, "waiting_since")?.map(from_millis),
        last_error: get(row, "last_error")?,
        traceparent: get(row, "traceparent")?,
    })
}

/// Reads a `run_events` row.
pub(crate) fn run_event(row: &PgRow) -> Result<RunEvent> {
    let duration: Option<i64> = get(row, "duration_ms")?;
    Ok(RunEvent {
        seq: count(row, "seq")?,
        at: from_millis(get(row, "at")?),
        kind: parsed(row, "kind")?,
        status: parsed(row, "status")?,
        state: get(row, "state")?,
        step: get(row, "step")?,
        message: parsed_opt(row, "message_id")?,
        detail: get(row, "detail")?,
        duration: duration.map(|ms| Duration::from_millis(ms.max(0).unsigned_abs())),
    })
}

/// The `waits` columns [`wait`] reads, as a literal for `concat!`.
macro_rules! wait_columns {
    () => {
        "token, run_id, step, state, created_at, expires_at, allowed::text AS allowed, \
         attached::text AS attached, closed_at, consumed_by, action, timer_id"
    };
}
pub(crate) use wait_columns;

/// Reads a row selected with [`wait_columns`].
pub(crate) fn wait(row: &PgRow) -> Result<Wait> {
    Ok(Wait {
        token: get(row, "token")?,
        run: parsed(row, "run_id")?,
        step: get(row, "step")?,
        state: parsed(row, "state")?,
        created_at: from_millis(get(row, "created_at")?),
        expires_at: from_millis(get(row, "expires_at")?),
        allowed: json_opt(row, "allowed")?,
        attached: json_opt(row, "attached")?,
        closed_at: get::<Option<i64>>(row, "closed_at")?.map(from_millis),
        consumed_by: get(row, "consumed_by")?,
        action: get(row, "action")?,
        timer: parsed_opt(row, "timer_id")?,
    })
}

/// Reads a row selected as `id, run_step, destination, status, attempts, created_at,
/// updated_at, last_error` from `messages`.
pub(crate) fn run_message(row: &PgRow) -> Result<RunMessage> {
    Ok(RunMessage {
        id: id(row, "id")?,
        step: get(row, "run_step")?,
        destination: get(row, "destination")?,
        status: parsed(row, "status")?,
        attempts: count(row, "attempts")?,
        created_at: from_millis(get(row, "created_at")?),
        updated_at: from_millis(get(row, "updated_at")?),
        last_error: get(row, "last_error")?,
    })
}
