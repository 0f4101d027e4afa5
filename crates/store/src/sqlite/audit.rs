//! The audit log on SQLite: appending an entry (on the writer) and listing entries (on a
//! reader).

use rusqlite::{Connection, Row, params};

use super::error::Context;
use super::writer::Env;
use crate::audit::{AuditEntry, AuditFilter, AuditPage, EncodedAudit};
use crate::error::Result;
use crate::types::{Cursor, from_millis, to_millis};

/// Appends `entry` at the writer's now and answers it as stored.
pub(crate) fn record(conn: &Connection, env: &Env, entry: &EncodedAudit) -> Result<AuditEntry> {
    let at = env.now();
    conn.prepare_cached(
        "INSERT INTO audit (at, actor, action, target, count, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            at,
            entry.actor,
            entry.action,
            entry.target,
            entry.count,
            entry.detail
        ])
    })
    .ctx("recording an audit entry")?;
    Ok(AuditEntry {
        seq: conn.last_insert_rowid(),
        at: from_millis(at),
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        target: entry.target.clone(),
        count: entry.count.map(|c| c.max(0).unsigned_abs()),
        detail: serde_json::from_str(&entry.detail).unwrap_or_default(),
    })
}

/// Entries matching `filter`, newest first, `limit` of them after `cursor`: the
/// `audit_actor` or `audit_action` index walked backwards when either is filtered, the
/// table's own order otherwise.
pub(crate) fn list(
    conn: &Connection,
    filter: &AuditFilter,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Result<AuditPage> {
    let before = match cursor {
        None => i64::MAX,
        Some(cursor) => crate::common::cursor_seq(cursor)?,
    };
    let since = filter.since.map(to_millis);
    let mut entries: Vec<AuditEntry> = conn
        .prepare_cached(
            "SELECT seq, at, actor, action, target, count, detail FROM audit
             WHERE (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR action = ?2)
               AND (?3 IS NULL OR at >= ?3) AND seq < ?4
             ORDER BY seq DESC LIMIT ?5",
        )
        .and_then(|mut s| {
            s.query_map(
                params![filter.actor, filter.action, since, before, limit as i64 + 1],
                entry,
            )?
            .collect()
        })
        .ctx("listing audit entries")?;
    let next = if entries.len() > limit {
        entries.truncate(limit);
        entries.last().map(|e| Cursor(e.seq.to_string()))
    } else {
        None
    };
    Ok(AuditPage { entries, next })
}

fn entry(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    let detail: String = r.get(6)?;
    Ok(AuditEntry {
        seq: r.get(0)?,
        at: from_millis(r.get(1)?),
        actor: r.get(2)?,
        action: r.get(3)?,
        target: r.get(4)?,
        count: r.get::<_, Option<i64>>(5)?.map(|c| c.max(0).unsigned_abs()),
        detail: serde_json::from_str(&detail).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, e.into())
        })?,
    })
}
