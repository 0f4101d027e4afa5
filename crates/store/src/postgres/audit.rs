//! The audit log on PostgreSQL: appending an entry and listing entries, each one statement on
//! the pool (an operator action is rare; it need not queue behind the writer's batches).

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::PgStore;
use super::error::corrupt;
use crate::audit::{AuditEntry, AuditFilter, AuditPage, EncodedAudit};
use crate::error::Result;
use crate::types::{Cursor, from_millis, to_millis};

const RECORD: &str = "
INSERT INTO audit (at, actor, action, target, count, detail)
VALUES ($1, $2, $3, $4, $5, $6::jsonb)
RETURNING seq";

/// Newest first; `audit_actor` or `audit_action` serve a filter on either.
const LIST: &str = "
SELECT seq, at, actor, action, target, count, detail::text AS detail FROM audit
WHERE ($1::text IS NULL OR actor = $1) AND ($2::text IS NULL OR action = $2)
  AND ($3::bigint IS NULL OR at >= $3) AND ($4::bigint IS NULL OR seq < $4)
ORDER BY seq DESC LIMIT $5";

impl PgStore {
    /// Appends `entry` at the store's now.
    pub(super) async fn insert_audit(&self, entry: EncodedAudit) -> Result<AuditEntry> {
        let at = self.now();
        let row = sqlx::query(RECORD)
            .bind(at)
            .bind(&entry.actor)
            .bind(&entry.action)
            .bind(&entry.target)
            .bind(entry.count)
            .bind(&entry.detail)
            .fetch_one(&mut *self.conn().await?)
            .await
            .map_err(self.err("recording an audit entry"))?;
        Ok(AuditEntry {
            seq: row.try_get("seq").map_err(|e| corrupt("seq", e))?,
            at: from_millis(at),
            detail: serde_json::from_str(&entry.detail).map_err(|e| corrupt("detail", e))?,
            count: entry.count.map(|c| c.max(0).unsigned_abs()),
            actor: entry.actor,
            action: entry.action,
            target: entry.target,
        })
    }

    /// Entries matching `filter`, newest first, `limit` of them after `cursor`.
    pub(super) async fn select_audit(
        &self,
        filter: &AuditFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<AuditPage> {
        let before = cursor.map(crate::common::cursor_seq).transpose()?;
        let rows = sqlx::query(LIST)
            .bind(&filter.actor)
            .bind(&filter.action)
            .bind(filter.since.map(to_millis))
            .bind(before)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX) + 1)
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(self.err("listing audit entries"))?;
        let mut entries = rows.iter().map(entry).collect::<Result<Vec<_>>>()?;
        let next = if entries.len() > limit {
            entries.truncate(limit);
            entries
                .last()
                .map(|e| Cursor::from_string(e.seq.to_string()))
        } else {
            None
        };
        Ok(AuditPage { entries, next })
    }
}

fn entry(row: &PgRow) -> Result<AuditEntry> {
    let get = corrupt_on;
    let detail: String = row.try_get("detail").map_err(get("detail"))?;
    Ok(AuditEntry {
        seq: row.try_get("seq").map_err(get("seq"))?,
        at: from_millis(row.try_get("at").map_err(get("at"))?),
        actor: row.try_get("actor").map_err(get("actor"))?,
        action: row.try_get("action").map_err(get("action"))?,
        target: row.try_get("target").map_err(get("target"))?,
        count: row
            .try_get::<Option<i64>, _>("count")
            .map_err(get("count"))?
            .map(|c| c.max(0).unsigned_abs()),
        detail: serde_json::from_str(&detail).map_err(|e| corrupt("detail", e))?,
    })
}

fn corrupt_on(column: &str) -> impl Fn(sqlx::Error) -> crate::StoreError + '_ {
    move |e| corrupt(column, e)
}
