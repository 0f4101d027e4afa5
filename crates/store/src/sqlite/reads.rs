//! The read-only queries, run on connections from the read pool.

use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::error::Context;
use super::filter;
use super::rows::{self, EVENT_COLUMNS, MESSAGE_COLUMN_COUNT, MESSAGE_COLUMNS};
use crate::error::Result;
use crate::types::{
    Cursor, Depths, ErrorGroup, Filter, Inbound, InboundPage, MessageDetail, MessageId, Page,
    Stats, StatusCounts, from_millis,
};

/// A message with its events, from one snapshot: read outside a transaction, a write that
/// commits between the two statements would show the old row with the new events.
pub(crate) fn get(conn: &Connection, id: MessageId) -> Result<Option<MessageDetail>> {
    // Deferred: the snapshot starts at the first read and ends when `tx` is dropped.
    let tx = conn
        .unchecked_transaction()
        .ctx("starting a read of a message")?;
    get_in(&tx, id)
}

fn get_in(conn: &Connection, id: MessageId) -> Result<Option<MessageDetail>> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS}, seq, response FROM messages WHERE id = ?1"
        ))
        .and_then(|mut s| {
            s.query_row([id.to_string()], |r| {
                let response: Option<String> = r.get(MESSAGE_COLUMN_COUNT + 1)?;
                Ok((
                    rows::message(r, 0)?,
                    r.get::<_, i64>(MESSAGE_COLUMN_COUNT)?,
                    response,
                ))
            })
            .optional()
        })
        .ctx("reading a message")?;
    let Some((message, seq, response)) = found else {
        return Ok(None);
    };
    let events = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE message_seq = ?1 ORDER BY seq"
        ))
        .and_then(|mut s| s.query_map([seq], rows::event)?.collect())
        .ctx("reading events")?;
    // A response that no longer parses is left out rather than failing the read.
    let response = response.and_then(|text| serde_json::from_str(&text).ok());
    Ok(Some(MessageDetail {
        message,
        events,
        response,
    }))
}

/// One page of messages matching `filter`, newest first.
pub(crate) fn list(
    conn: &Connection,
    filter: &Filter,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Result<Page> {
    let mut params: Vec<Value> = Vec::new();
    let mut condition = filter::condition(filter, false, &mut params);
    // With a creation-time range, walk `messages_created` backwards from its end: ordered by
    // `seq` alone, SQLite would scan the table from the newest row down to the range (or sort
    // the whole range) however few rows a page needs. Creation time and `seq` grow together,
    // so the order is the same; `seq` breaks ties, and the cursor (still a `seq`) is turned
    // back into its row's `(created_at, seq)` (or, if that row is gone, read as `seq` alone).
    let by_time = filter.created_from.is_some() || filter.created_until.is_some();
    if let Some(cursor) = cursor {
        let seq = crate::common::cursor_seq(cursor)?;
        let at: Option<i64> = if by_time {
            conn.prepare_cached("SELECT created_at FROM messages WHERE seq = ?1")
                .and_then(|mut s| s.query_row([seq], |r| r.get(0)).optional())
                .ctx("reading a page's cursor")?
        } else {
            None
        };
        params.push(Value::Integer(seq));
        let n = params.len();
        condition = match at {
            Some(at) => {
                params.push(Value::Integer(at));
                let t = params.len();
                format!(
                    "({condition}) AND (created_at < ?{t} OR (created_at = ?{t} AND seq < ?{n}))"
                )
            }
            None => format!("({condition}) AND seq < ?{n}"),
        };
    }
    params.push(Value::Integer(limit as i64 + 1));
    let order = if by_time {
        "created_at DESC, seq DESC"
    } else {
        "seq DESC"
    };
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS}, seq FROM messages WHERE {condition} ORDER BY {order} LIMIT ?{}",
        params.len()
    );
    let mut rows: Vec<(crate::types::Message, i64)> = conn
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(params_from_iter(params), |r| {
                Ok((rows::message(r, 0)?, r.get::<_, i64>(MESSAGE_COLUMN_COUNT)?))
            })?
            .collect()
        })
        .ctx("listing messages")?;
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|(_, seq)| Cursor(seq.to_string()))
    } else {
        None
    };
    Ok(Page {
        messages: rows.into_iter().map(|(m, _)| m).collect(),
        next,
    })
}

/// One page of inbound events, newest first, from `source` when given.
pub(crate) fn list_inbound(
    conn: &Connection,
    source: Option<&str>,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Result<InboundPage> {
    let before = match cursor {
        None => i64::MAX,
        Some(cursor) => crate::common::cursor_seq(cursor)?,
    };
    let mut rows: Vec<(Inbound, i64)> = conn
        .prepare_cached(
            "SELECT id, source, external_id, payload, received_at, seq FROM inbound
             WHERE (?1 IS NULL OR source = ?1) AND seq < ?2
             ORDER BY seq DESC LIMIT ?3",
        )
        .and_then(|mut s| {
            s.query_map(params![source, before, limit as i64 + 1], |r| {
                Ok((rows::inbound(r)?, r.get::<_, i64>(5)?))
            })?
            .collect()
        })
        .ctx("listing inbound events")?;
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|(_, seq)| Cursor(seq.to_string()))
    } else {
        None
    };
    Ok(InboundPage {
        events: rows.into_iter().map(|(e, _)| e).collect(),
        next,
    })
}

fn count(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached(sql)
        .and_then(|mut s| s.query_row(params, |r| r.get(0)))
        .ctx("computing stats")?;
    Ok(n.max(0).unsigned_abs())
}

/// Pending and dead messages per destination and status, and how many of them are scheduled
/// (`?1` is now): one pass over the covering index `messages_depths`, which holds the pending
/// and dead rows only, in group order.
pub(crate) const DEPTHS: &str = concat!(
    "SELECT destination, status, count(*), count(CASE WHEN not_before > ?1 THEN 1 END)
     FROM messages INDEXED BY messages_depths WHERE ",
    counted!(),
    " GROUP BY destination, status"
);

/// The earliest `next_attempt_at` of a pending message that is due at `?1`: the first entry
/// of `messages_due`, if it is due.
pub(crate) const OLDEST_DUE: &str = concat!(
    "SELECT next_attempt_at FROM messages INDEXED BY messages_due WHERE ",
    pending!(),
    " AND next_attempt_at <= ?1 ORDER BY next_attempt_at LIMIT 1"
);

/// The depths at `now`, from one snapshot, read from indexes over the pending and dead rows.
pub(crate) fn depths(conn: &Connection, now: i64) -> Result<Depths> {
    // Deferred: the snapshot starts at the first read and ends when `tx` is dropped.
    let tx = conn
        .unchecked_transaction()
        .ctx("starting a read of the depths")?;
    let mut depths = Depths::default();
    let groups: Vec<(String, String, i64, i64)> = tx
        .prepare_cached(DEPTHS)
        .and_then(|mut s| {
            s.query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })
        .ctx("counting queue depths")?;
    for (destination, status, n, scheduled) in groups {
        depths.add(
            &destination,
            status.parse()?,
            n.max(0).unsigned_abs(),
            scheduled.max(0).unsigned_abs(),
        );
    }
    depths.oldest_due_at = tx
        .prepare_cached(OLDEST_DUE)
        .and_then(|mut s| s.query_row([now], |r| r.get(0)).optional())
        .ctx("finding the oldest due message")?
        .map(from_millis);
    Ok(depths)
}

/// Counts, depths, rates, percentiles and top errors.
pub(crate) fn stats(conn: &Connection, now: i64, window: Duration) -> Result<Stats> {
    let since = now.saturating_sub(crate::types::duration_millis(window));
    let mut by_status = StatusCounts::default();
    let counts: Vec<(String, i64)> = conn
        .prepare_cached("SELECT status, count(*) FROM messages GROUP BY status")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .ctx("counting messages")?;
    for (status, n) in counts {
        by_status.add(status.parse()?, n.max(0).unsigned_abs());
    }
    let due_now = count(
        conn,
        concat!(
            "SELECT count(*) FROM messages INDEXED BY messages_due WHERE ",
            pending!(),
            " AND next_attempt_at <= ?1"
        ),
        [now],
    )?;
    let delivered_in_window = count(
        conn,
        "SELECT count(*) FROM messages WHERE status = 'delivered' AND delivered_at >= ?1",
        [since],
    )?;
    let dead_in_window = count(
        conn,
        "SELECT count(*) FROM messages WHERE status = 'dead' AND updated_at >= ?1",
        [since],
    )?;
    let finished = delivered_in_window + dead_in_window;
    let success_rate = (finished > 0).then(|| delivered_in_window as f64 / finished as f64);
    let percentile = |p: f64| -> Result<Option<Duration>> {
        if delivered_in_window == 0 {
            return Ok(None);
        }
        // Nearest rank: the smallest value with at least p of the values at or below it.
        let rank = ((p * delivered_in_window as f64).ceil() as i64).max(1) - 1;
        let ms: Option<i64> = conn
            .prepare_cached(
                "SELECT delivered_at - created_at AS d FROM messages
                 WHERE status = 'delivered' AND delivered_at >= ?1
                 ORDER BY d LIMIT 1 OFFSET ?2",
            )
            .and_then(|mut s| s.query_row(params![since, rank], |r| r.get(0)).optional())
            .ctx("computing percentiles")?;
        Ok(ms.map(|ms| Duration::from_millis(ms.max(0).unsigned_abs())))
    };
    let (p50, p95, p99) = (percentile(0.50)?, percentile(0.95)?, percentile(0.99)?);
    let top_errors = conn
        .prepare_cached(concat!(
            "SELECT code, detail, count(*) AS n, max(at) FROM events WHERE ",
            failure_outcome!(),
            " AND at >= ?1 GROUP BY code, detail ORDER BY n DESC, max(at) DESC LIMIT 10"
        ))
        .and_then(|mut s| {
            s.query_map([since], |r| {
                Ok(ErrorGroup {
                    code: r.get(0)?,
                    detail: r.get(1)?,
                    count: r.get::<_, i64>(2)?.max(0).unsigned_abs(),
                    last_at: from_millis(r.get(3)?),
                })
            })?
            .collect()
        })
        .ctx("grouping errors")?;
    Ok(Stats {
        window,
        queue_depth: by_status.queued + by_status.retrying + by_status.delivering,
        dead_letter_depth: by_status.dead,
        by_status,
        due_now,
        delivered_in_window,
        dead_in_window,
        success_rate,
        p50,
        p95,
        p99,
        top_errors,
    })
}

/// When the earliest pending message is due.
pub(crate) fn next_due(conn: &Connection) -> Result<Option<i64>> {
    conn.prepare_cached(concat!(
        "SELECT next_attempt_at FROM messages AS m INDEXED BY messages_due WHERE ",
        pending!(),
        " AND NOT EXISTS (SELECT 1 FROM paused_destinations AS p
                          WHERE p.destination = m.destination)
         ORDER BY next_attempt_at LIMIT 1"
    ))
    .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
    .ctx("finding the next due message")
}

/// One meta value.
pub(crate) fn get_meta(conn: &Connection, key: &str) -> Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM store_meta WHERE key = ?1")
        .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
        .ctx("reading a meta value")
}

/// The meta keys starting with `prefix`, in byte order, without the store's own. The table is
/// keyed by `key` under SQLite's byte-wise `BINARY` collation, so the matching keys are one
/// run starting at `prefix`: the scan seeks there and stops at the first key past the run.
pub(crate) fn list_meta(conn: &Connection, prefix: &str) -> Result<Vec<(String, String)>> {
    let mut stmt = conn
        .prepare_cached("SELECT key, value FROM store_meta WHERE key >= ?1 ORDER BY key")
        .ctx("listing meta values")?;
    let mut rows = stmt.query([prefix]).ctx("listing meta values")?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().ctx("listing meta values")? {
        let key: String = row.get(0).ctx("listing meta values")?;
        if !key.starts_with(prefix) {
            break;
        }
        if !crate::common::is_reserved_meta(&key) {
            out.push((key, row.get(1).ctx("listing meta values")?));
        }
    }
    Ok(out)
}
