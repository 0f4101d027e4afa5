//! Paused destinations on PostgreSQL: one statement each on the pool. Claims skip them in
//! `CLAIM`, `next_due_at` does too; a resume notifies every process, as an enqueue does.

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::PgStore;
use super::error::corrupt;
use crate::error::Result;
use crate::pause::Paused;
use crate::types::from_millis;

/// Inserts unless paused, then reads what is stored (the new row, or the pause before it).
const PAUSE: &str = "
WITH i AS (
    INSERT INTO paused_destinations (destination, paused_at, paused_by, reason)
    VALUES ($1, $2, $3, $4) ON CONFLICT (destination) DO NOTHING
    RETURNING destination, paused_at, paused_by, reason
)
SELECT * FROM i
UNION ALL
SELECT destination, paused_at, paused_by, reason FROM paused_destinations
WHERE destination = $1 AND NOT EXISTS (SELECT 1 FROM i)";

impl PgStore {
    /// Pauses `destination` unless it is.
    pub(super) async fn insert_pause(
        &self,
        destination: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<Paused> {
        let row = sqlx::query(PAUSE)
            .bind(destination)
            .bind(self.now())
            .bind(by)
            .bind(reason)
            .fetch_one(&mut *self.conn().await?)
            .await
            .map_err(self.err("pausing a destination"))?;
        paused(&row)
    }

    /// Resumes `destination`; wakes every process's dispatchers if it was paused.
    pub(super) async fn delete_pause(&self, destination: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM paused_destinations WHERE destination = $1")
            .bind(destination)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(self.err("resuming a destination"))?;
        let was = done.rows_affected() > 0;
        if was {
            self.work_available();
        }
        Ok(was)
    }

    /// Every paused destination, by name.
    pub(super) async fn select_paused(&self) -> Result<Vec<Paused>> {
        let rows = sqlx::query(
            r#"SELECT destination, paused_at, paused_by, reason FROM paused_destinations
               ORDER BY destination COLLATE "C""#,
        )
        .fetch_all(&mut *self.conn().await?)
        .await
        .map_err(self.err("listing paused destinations"))?;
        rows.iter().map(paused).collect()
    }
}

fn paused(row: &PgRow) -> Result<Paused> {
    let get = |c: &'static str| move |e| corrupt(c, e);
    Ok(Paused {
        destination: row.try_get("destination").map_err(get("destination"))?,
        paused_at: from_millis(row.try_get("paused_at").map_err(get("paused_at"))?),
        paused_by: row.try_get("paused_by").map_err(get("paused_by"))?,
        reason: row.try_get("reason").map_err(get("reason"))?,
    })
}
