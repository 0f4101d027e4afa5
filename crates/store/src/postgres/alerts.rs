//! The alert log on PostgreSQL: recording an alert and listing alerts, each one statement on
//! the pool (alerts are rare; they need not queue behind the writer's batches).

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::PgStore;
use super::error::corrupt;
use crate::alert::{AlertFilter, AlertId, AlertPage, AlertRecord, EncodedAlert, cursor_id};
use crate::error::Result;
use crate::types::{Cursor, from_millis, to_millis};

const RECORD: &str = "
INSERT INTO alerts (id, at, kind, subject, severity, message, outcome, messages)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Newest first; `alerts_kind` or `alerts_subject` serve a filter on either.
const LIST: &str = "
SELECT id, at, kind, subject, severity, message, outcome, messages FROM alerts
WHERE ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR subject = $2)
  AND ($3::bigint IS NULL OR at >= $3) AND ($4::bigint IS NULL OR at < $4)
  AND ($5::text IS NULL OR id < $5)
ORDER BY id DESC LIMIT $6";

impl PgStore {
    /// Records `alert` at the store's now with a new id.
    pub(super) async fn insert_alert(&self, alert: EncodedAlert) -> Result<AlertRecord> {
        let at = self.now();
        let id = AlertId::from_ulid(self.inner.writer.new_id().ulid());
        let a = &alert.alert;
        sqlx::query(RECORD)
            .bind(id.to_string())
            .bind(at)
            .bind(&a.kind)
            .bind(&a.subject)
            .bind(&a.severity)
            .bind(&a.message)
            .bind(&a.outcome)
            .bind(&alert.messages)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(self.err("recording an alert"))?;
        Ok(alert.stored(id, from_millis(at)))
    }

    /// Alerts matching `filter`, newest first, `limit` of them after `cursor`.
    pub(super) async fn select_alerts(
        &self,
        filter: &AlertFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<AlertPage> {
        let before = cursor.map(cursor_id).transpose()?;
        let rows = sqlx::query(LIST)
            .bind(&filter.kind)
            .bind(&filter.subject)
            .bind(filter.since.map(to_millis))
            .bind(filter.until.map(to_millis))
            .bind(before)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX) + 1)
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(self.err("listing alerts"))?;
        let mut alerts = rows.iter().map(alert).collect::<Result<Vec<_>>>()?;
        let next = if alerts.len() > limit {
            alerts.truncate(limit);
            alerts.last().map(|a| Cursor::from_string(a.id.to_string()))
        } else {
            None
        };
        Ok(AlertPage { alerts, next })
    }
}

fn alert(row: &PgRow) -> Result<AlertRecord> {
    let id: String = row.try_get("id").map_err(|e| corrupt("id", e))?;
    let messages: String = row
        .try_get("messages")
        .map_err(|e| corrupt("messages", e))?;
    Ok(AlertRecord {
        id: id.parse().map_err(|e| corrupt("id", e))?,
        at: from_millis(row.try_get("at").map_err(|e| corrupt("at", e))?),
        kind: row.try_get("kind").map_err(|e| corrupt("kind", e))?,
        subject: row.try_get("subject").map_err(|e| corrupt("subject", e))?,
        severity: row
            .try_get("severity")
            .map_err(|e| corrupt("severity", e))?,
        message: row.try_get("message").map_err(|e| corrupt("message", e))?,
        outcome: row.try_get("outcome").map_err(|e| corrupt("outcome", e))?,
        messages: crate::alert::decode_messages(&messages).map_err(|e| corrupt("messages", e))?,
    })
}
