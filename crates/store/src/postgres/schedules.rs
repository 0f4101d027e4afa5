//! Occurrences of schedules on PostgreSQL: recording one is a transaction of its own, outside
//! the group-commit writer, that inserts the occurrence's row first and then its message or run.
//!
//! The row goes in with `ON CONFLICT DO NOTHING` before anything else, so a concurrent attempt
//! at the same occurrence from another process waits on the unique index until the first
//! commits, then finds the row and writes nothing: each occurrence fires once, without a leader.
//! If the first rolls back, the second inserts it instead.

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::PgStore;
use super::error::corrupt;
use super::runs::{ATTEMPTS, TxError, TxResult, exhausted};
use crate::error::Result;
use crate::run::Started;
use crate::schedule::{EncodedAction, EncodedOccurrence, Fired, Occurrence, OccurrenceState};
use crate::types::from_millis;

macro_rules! columns {
    () => {
        "schedule, scheduled_for, manual, state, recorded_at, message_id, run_id, reason"
    };
}

impl PgStore {
    /// Records `new` in a transaction of its own, again on a conflict.
    pub(super) async fn record_occurrence_tx(&self, new: &EncodedOccurrence) -> Result<Fired> {
        for attempt in 1..=ATTEMPTS {
            let mut tx = self.begin("recording an occurrence").await?;
            let result = self.record_in(&mut tx, new).await;
            if let Some(done) = self
                .settle(tx, result, attempt, "recording an occurrence")
                .await
            {
                let (fired, created_work) = done?;
                if created_work {
                    self.work_available();
                }
                return Ok(fired);
            }
        }
        Err(exhausted("recording an occurrence"))
    }

    /// The occurrence and whether it enqueued claimable work.
    async fn record_in(
        &self,
        tx: &mut sqlx::PgConnection,
        new: &EncodedOccurrence,
    ) -> TxResult<(Fired, bool)> {
        let now = self.now();
        let state = match new.action {
            EncodedAction::Skip(_) => OccurrenceState::Skipped,
            _ => OccurrenceState::Fired,
        };
        let reason = match &new.action {
            EncodedAction::Skip(reason) => Some(reason.as_str()),
            _ => None,
        };
        let inserted = sqlx::query(concat!(
            "INSERT INTO schedule_occurrences (",
            columns!(),
            ")
             VALUES ($1, $2, $3, $4, $5, NULL, NULL, $6)
             ON CONFLICT (schedule, manual, scheduled_for) DO NOTHING RETURNING 1"
        ))
        .bind(&new.schedule)
        .bind(new.scheduled_for)
        .bind(new.manual)
        .bind(state.as_str())
        .bind(now)
        .bind(reason)
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_none() {
            let existing = sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM schedule_occurrences
                 WHERE schedule = $1 AND manual = $2 AND scheduled_for = $3"
            ))
            .bind(&new.schedule)
            .bind(new.manual)
            .bind(new.scheduled_for)
            .fetch_optional(&mut *tx)
            .await?;
            return match existing {
                Some(row) => Ok((Fired::Existing(occurrence(&row)?), false)),
                // Purged between the two statements: record it again.
                None => Err(TxError::Rerun),
            };
        }
        let (message_id, run_id, work) = match &new.action {
            EncodedAction::Enqueue(item) => {
                let row = super::new_row(&item.0, item.1.clone());
                let enqueued = self.inner.writer.enqueue_in(tx, now, &[row]).await?;
                let first = enqueued.first();
                (
                    first.map(|e| e.id().to_string()),
                    None,
                    first.is_some_and(|e| e.is_created()),
                )
            }
            EncodedAction::StartRun(run) => {
                let started = self.start_in(tx, &run.0, &run.1).await?;
                let work = matches!(&started, Started::Created(a)
                    if a.enqueued.iter().any(|e| e.is_created()));
                (None, Some(started.run().id.to_string()), work)
            }
            EncodedAction::Skip(_) => (None, None, false),
        };
        let row = sqlx::query(concat!(
            "UPDATE schedule_occurrences SET message_id = $4, run_id = $5
             WHERE schedule = $1 AND manual = $2 AND scheduled_for = $3 RETURNING ",
            columns!(),
            ""
        ))
        .bind(&new.schedule)
        .bind(new.manual)
        .bind(new.scheduled_for)
        .bind(message_id)
        .bind(run_id)
        .fetch_one(&mut *tx)
        .await?;
        Ok((Fired::Created(occurrence(&row)?), work))
    }

    /// The latest occurrence of each schedule and kind, by schedule, cron before manual.
    pub(super) async fn select_latest_occurrences(&self) -> Result<Vec<Occurrence>> {
        let rows = sqlx::query(concat!(
            r#"SELECT DISTINCT ON (schedule COLLATE "C", manual) "#,
            columns!(),
            r#"
               FROM schedule_occurrences
               ORDER BY schedule COLLATE "C", manual, scheduled_for DESC"#
        ))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(self.err("listing the latest occurrences"))?;
        rows.iter().map(occurrence).collect()
    }

    /// Deletes occurrences due before `before` except the latest of each schedule and kind.
    pub(super) async fn delete_occurrences(&self, before: i64) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM schedule_occurrences AS o WHERE scheduled_for < $1
               AND scheduled_for < (SELECT max(scheduled_for) FROM schedule_occurrences
                                    WHERE schedule = o.schedule AND manual = o.manual)",
        )
        .bind(before)
        .execute(&self.inner.pool)
        .await
        .map_err(self.err("purging occurrences"))?;
        Ok(done.rows_affected())
    }
}

fn occurrence(row: &PgRow) -> Result<Occurrence> {
    let get = |c: &'static str| move |e| corrupt(c, e);
    let state: String = row.try_get("state").map_err(get("state"))?;
    let message_id: Option<String> = row.try_get("message_id").map_err(get("message_id"))?;
    let run_id: Option<String> = row.try_get("run_id").map_err(get("run_id"))?;
    Ok(Occurrence {
        schedule: row.try_get("schedule").map_err(get("schedule"))?,
        scheduled_for: from_millis(row.try_get("scheduled_for").map_err(get("scheduled_for"))?),
        manual: row.try_get("manual").map_err(get("manual"))?,
        state: crate::schedule::state_of(&state)?,
        recorded_at: from_millis(row.try_get("recorded_at").map_err(get("recorded_at"))?),
        message_id: message_id
            .map(|id| id.parse().map_err(|e| corrupt("message_id", e)))
            .transpose()?,
        run_id: run_id
            .map(|id| id.parse().map_err(|e| corrupt("run_id", e)))
            .transpose()?,
        reason: row.try_get("reason").map_err(get("reason"))?,
    })
}
