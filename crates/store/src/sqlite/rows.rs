//! Reading message and event rows into the public types.

use std::time::Duration;

use rusqlite::Row;
use rusqlite::types::Type;

use crate::types::{Event, Inbound, InboundId, Message, MessageId, from_millis};

/// The columns [`message`] reads, in order, for `SELECT … FROM messages`.
pub(crate) const MESSAGE_COLUMNS: &str = "id, destination, payload, headers, idempotency_key, \
    ordering_key, status, attempts, next_attempt_at, lease_owner, lease_expires_at, last_error, \
    created_at, updated_at, delivered_at";

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
