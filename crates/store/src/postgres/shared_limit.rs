//! Shared send windows on PostgreSQL: one transaction per batch. Its first statement creates
//! the missing rows and locks every row the batch touches, in key order (so two batches that
//! share keys never deadlock); the second writes them back.

use std::collections::BTreeMap;

use sqlx::Row;

use super::PgStore;
use super::error::corrupt;
use crate::error::Result;
use crate::shared_limit::{KeyState, SlotAnswer, SlotBatch, apply};

const LOCK: &str = r#"
INSERT INTO shared_limits (key, state, updated_at)
SELECT k, '{}', $2 FROM unnest($1::text[]) AS k ORDER BY k COLLATE "C"
ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at
RETURNING key, state"#;

const WRITE: &str = "
UPDATE shared_limits AS s SET state = u.state
FROM unnest($1::text[], $2::text[]) AS u(key, state)
WHERE s.key = u.key";

impl PgStore {
    /// Locks the windows `batch` touches, applies it and writes them back, in one transaction.
    pub(super) async fn lock_send_slots(&self, batch: &SlotBatch) -> Result<Vec<SlotAnswer>> {
        let keys = batch.keys();
        let err = self.err("taking shared send slots");
        let mut tx = self.begin_tx().await.map_err(&err)?;
        let rows = sqlx::query(LOCK)
            .bind(&keys)
            .bind(self.now())
            .fetch_all(&mut *tx)
            .await
            .map_err(&err)?;
        let mut states = BTreeMap::new();
        for row in &rows {
            let key: String = row.try_get("key").map_err(|e| corrupt("key", e))?;
            let stored: String = row.try_get("state").map_err(|e| corrupt("state", e))?;
            let state = KeyState::parse(&key, &stored)?;
            states.insert(key, state);
        }
        let answers = apply(&mut states, batch);
        let (keys, stored): (Vec<String>, Vec<String>) = states
            .iter()
            .map(|(key, state)| (key.clone(), state.to_stored()))
            .unzip();
        sqlx::query(WRITE)
            .bind(&keys)
            .bind(&stored)
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        Ok(answers)
    }
}
