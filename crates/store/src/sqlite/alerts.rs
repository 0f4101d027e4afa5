//! The alert log on SQLite: recording an alert and purging old ones (on the writer), and
//! listing alerts (on a reader).

use rusqlite::{Connection, Row, params};

use super::error::Context;
use super::writer::Env;
use crate::alert::{AlertFilter, AlertId, AlertPage, AlertRecord, EncodedAlert, cursor_id};
use crate::error::Result;
use crate::types::{Cursor, from_millis, to_millis};

/// Records `alert` at the writer's now with a new id and answers it as stored.
pub(crate) fn record(conn: &Connection, env: &Env, alert: &EncodedAlert) -> Result<AlertRecord> {
    let at = env.now();
    let id = AlertId::from_ulid(env.new_id());
    let a = &alert.alert;
    conn.prepare_cached(
        "INSERT INTO alerts (id, at, kind, subject, severity, message, outcome, messages)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![
            id.to_string(),
            at,
            a.kind,
            a.subject,
            a.severity,
            a.message,
            a.outcome,
            alert.messages
        ])
    })
    .ctx("recording an alert")?;
    Ok(alert.stored(id, from_millis(at)))
}

/// Alerts matching `filter`, newest first, `limit` of them after `cursor`: the `alerts_kind`
/// or `alerts_subject` index walked backwards when either is filtered, the table's own order
/// otherwise.
pub(crate) fn list(
    conn: &Connection,
    filter: &AlertFilter,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Result<AlertPage> {
    let before = cursor.map(cursor_id).transpose()?;
    let mut alerts: Vec<AlertRecord> = conn
        .prepare_cached(
            "SELECT id, at, kind, subject, severity, message, outcome, messages FROM alerts
             WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR subject = ?2)
               AND (?3 IS NULL OR at >= ?3) AND (?4 IS NULL OR at < ?4)
               AND (?5 IS NULL OR id < ?5)
             ORDER BY id DESC LIMIT ?6",
        )
        .and_then(|mut s| {
            s.query_map(
                params![
                    filter.kind,
                    filter.subject,
                    filter.since.map(to_millis),
                    filter.until.map(to_millis),
                    before,
                    limit as i64 + 1
                ],
                alert,
            )?
            .collect()
        })
        .ctx("listing alerts")?;
    let next = if alerts.len() > limit {
        alerts.truncate(limit);
        alerts.last().map(|a| Cursor(a.id.to_string()))
    } else {
        None
    };
    Ok(AlertPage { alerts, next })
}

/// Deletes up to `chunk` alerts recorded before `cutoff`.
pub(crate) fn purge(conn: &Connection, cutoff: i64, chunk: usize) -> Result<u64> {
    let n = conn
        .prepare_cached(
            "DELETE FROM alerts WHERE id IN (
                 SELECT id FROM alerts WHERE at < ?1 LIMIT ?2)",
        )
        .and_then(|mut s| s.execute(params![cutoff, chunk as i64]))
        .ctx("purging alerts")?;
    Ok(n as u64)
}

fn alert(r: &Row<'_>) -> rusqlite::Result<AlertRecord> {
    let conversion = |column, e: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, e)
    };
    let id: String = r.get(0)?;
    let messages: String = r.get(7)?;
    Ok(AlertRecord {
        id: id
            .parse()
            .map_err(|e: crate::StoreError| conversion(0, e.into()))?,
        at: from_millis(r.get(1)?),
        kind: r.get(2)?,
        subject: r.get(3)?,
        severity: r.get(4)?,
        message: r.get(5)?,
        outcome: r.get(6)?,
        messages: crate::alert::decode_messages(&messages).map_err(|e| conversion(7, e.into()))?,
    })
}
