//! Decoding rows into the store's records, and the column lists the queries select.

use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::error::corrupt;
use crate::error::Result;
use crate::types::{Event, Inbound, Lease, Message, MessageId, from_millis};

/// The `messages` columns [`message`] reads, as a literal for `concat!`.
macro_rules! message_columns {
    () => {
        "id, destination, payload::text AS payload, headers::text AS headers, idempotency_key, \
         ordering_key, status, attempts, next_attempt_at, lease_owner, lease_token, \
         lease_expires_at, last_error, created_at, updated_at, delivered_at, seq"
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
