//! Occurrences of schedules on SQLite: recording one (on the writer, with its message or run in
//! the same job), the latest of each schedule and retention (on a reader, and the writer).

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::error::Context;
use super::writer::Env;
use super::{ops, runs};
use crate::error::Result;
use crate::schedule::{EncodedAction, EncodedOccurrence, Fired, Occurrence, OccurrenceState};
use crate::types::from_millis;

const COLUMNS: &str =
    "schedule, scheduled_for, manual, state, recorded_at, message_id, run_id, reason";

/// Records `new` unless it was; fires or skips it in the same job when it is new.
pub(crate) fn record(conn: &Connection, env: &Env, new: &EncodedOccurrence) -> Result<Fired> {
    let existing = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM schedule_occurrences
             WHERE schedule = ?1 AND manual = ?2 AND scheduled_for = ?3"
        ))
        .and_then(|mut s| {
            s.query_row(
                params![new.schedule, new.manual, new.scheduled_for],
                occurrence,
            )
            .optional()
        })
        .ctx("looking up an occurrence")?;
    if let Some(found) = existing {
        return Ok(Fired::Existing(found));
    }
    let (state, message_id, run_id, reason) = match &new.action {
        EncodedAction::Enqueue(item) => {
            let enqueued = ops::enqueue(conn, env, std::slice::from_ref(&**item), None)?;
            let id = enqueued.first().map(|e| e.id().to_string());
            (OccurrenceState::Fired, id, None, None)
        }
        EncodedAction::StartRun(run) => {
            let started = runs::start(conn, env, &run.0, &run.1)?;
            let id = started.run().id.to_string();
            (OccurrenceState::Fired, None, Some(id), None)
        }
        EncodedAction::Skip(reason) => (OccurrenceState::Skipped, None, None, Some(reason)),
    };
    conn.prepare_cached(&format!(
        "INSERT INTO schedule_occurrences ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         RETURNING {COLUMNS}"
    ))
    .and_then(|mut s| {
        s.query_row(
            params![
                new.schedule,
                new.scheduled_for,
                new.manual,
                state.as_str(),
                env.now(),
                message_id,
                run_id,
                reason,
            ],
            occurrence,
        )
    })
    .ctx("recording an occurrence")
    .map(Fired::Created)
}

/// The latest occurrence of each schedule and kind, by schedule, cron before manual.
pub(crate) fn latest(conn: &Connection) -> Result<Vec<Occurrence>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM schedule_occurrences AS o
         WHERE scheduled_for = (SELECT max(scheduled_for) FROM schedule_occurrences
                                WHERE schedule = o.schedule AND manual = o.manual)
         ORDER BY schedule, manual"
    ))
    .and_then(|mut s| s.query_map([], occurrence)?.collect())
    .ctx("listing the latest occurrences")
}

/// Deletes occurrences due before `before` except the latest of each schedule and kind.
pub(crate) fn purge(conn: &Connection, before: i64) -> Result<u64> {
    conn.prepare_cached(
        "DELETE FROM schedule_occurrences AS o WHERE scheduled_for < ?1
           AND scheduled_for < (SELECT max(scheduled_for) FROM schedule_occurrences
                                WHERE schedule = o.schedule AND manual = o.manual)",
    )
    .and_then(|mut s| s.execute([before]))
    .ctx("purging occurrences")
    .map(|n| n as u64)
}

fn occurrence(r: &Row<'_>) -> rusqlite::Result<Occurrence> {
    let state: String = r.get(3)?;
    let message_id: Option<String> = r.get(5)?;
    let run_id: Option<String> = r.get(6)?;
    Ok(Occurrence {
        schedule: r.get(0)?,
        scheduled_for: from_millis(r.get(1)?),
        manual: r.get(2)?,
        state: OccurrenceState::parse(&state).ok_or_else(|| bad(3, "an unknown state"))?,
        recorded_at: from_millis(r.get(4)?),
        message_id: message_id
            .map(|id| id.parse().map_err(|_| bad(5, "a bad message id")))
            .transpose()?,
        run_id: run_id
            .map(|id| id.parse().map_err(|_| bad(6, "a bad run id")))
            .transpose()?,
        reason: r.get(7)?,
    })
}

fn bad(column: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        format!("occurrence with {what}").into(),
    )
}
