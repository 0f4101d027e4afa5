//! The write operations, run on the writer thread inside a batch transaction.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use ulid::Ulid;

use super::error::Context;
use super::filter;
use super::rows::{self, MESSAGE_COLUMN_COUNT, MESSAGE_COLUMNS};
use super::writer::Env;
use crate::common::{Encoded, EncodedInbound};
use crate::error::{Result, StoreError};
use crate::options::DeadLetterPolicy;
use crate::types::{
    AttemptReport, Claimed, Duplicate, Enqueued, Filter, InboundId, Lease, Message, MessageId,
    NewMessage, OutcomeClass, Recorded, ReplayReport, ReplayTarget, Status, duration_millis,
    fingerprints_conflict, from_millis, to_millis,
};

/// One row for the events table.
struct NewEvent<'a> {
    message_seq: i64,
    seq: i64,
    at: i64,
    status: Status,
    attempt: i64,
    outcome: Option<OutcomeClass>,
    code: Option<&'a str>,
    duration_ms: Option<i64>,
    detail: Option<&'a str>,
    /// 1 for a deferral, which later deferrals may fold into; `None` for every other event.
    repeats: Option<i64>,
}

impl<'a> NewEvent<'a> {
    fn new(message_seq: i64, seq: i64, at: i64, status: Status, attempt: i64) -> Self {
        NewEvent {
            message_seq,
            seq,
            at,
            status,
            attempt,
            outcome: None,
            code: None,
            duration_ms: None,
            detail: None,
            repeats: None,
        }
    }

    /// Marks the event as a deferral, which repeats fold into.
    fn deferral(mut self) -> Self {
        self.repeats = Some(1);
        self
    }

    fn report(mut self, report: &'a AttemptReport) -> Self {
        self.outcome = Some(report.outcome);
        self.code = report.code.as_deref();
        self.duration_ms = report.duration.map(duration_millis);
        self.detail = report.detail.as_deref();
        self
    }

    fn detail(mut self, detail: Option<&'a str>) -> Self {
        self.detail = detail;
        self
    }

    fn insert(self, conn: &Connection) -> Result<()> {
        conn.prepare_cached(INSERT_EVENT)
            .and_then(|mut s| {
                s.execute(params![
                    self.message_seq,
                    self.seq,
                    self.at,
                    self.status.as_str(),
                    self.attempt,
                    self.outcome.map(|o| o.as_str()),
                    self.code,
                    self.duration_ms,
                    self.detail,
                    self.repeats,
                ])
            })
            .ctx("appending an event")?;
        Ok(())
    }
}

/// Appends one event to a message's timeline.
const INSERT_EVENT: &str = "INSERT INTO events
        (message_seq, seq, at, status, attempt, outcome, code, duration_ms, detail, repeats)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// Whether a deferral under the lease `?1..?3` with reason `?4` repeats the deferral before
/// its claim: the message's last event is the claim, and the one before it a deferral with
/// the status, attempt and detail this one would write.
const DEFERRAL_REPEATS: &str = "SELECT EXISTS (
        SELECT 1 FROM messages AS m
        JOIN events AS c ON c.message_seq = m.seq AND c.seq = m.event_seq
        JOIN events AS p ON p.message_seq = m.seq AND p.seq = m.event_seq - 1
        WHERE m.id = ?1 AND m.status = 'delivering' AND m.lease_owner = ?2
          AND m.lease_token = ?3
          AND c.status = 'delivering'
          AND p.repeats IS NOT NULL AND p.detail = ?4
          AND p.attempt = max(m.attempts - 1, 0)
          AND p.status = CASE WHEN m.attempts <= 1 THEN 'queued' ELSE 'retrying' END)";

/// Stores one new message, `queued`.
const INSERT_MESSAGE: &str = "INSERT INTO messages
        (id, destination, payload, headers, idempotency_key, ordering_key,
         status, attempts, next_attempt_at, created_at, updated_at, event_seq, not_before,
         run_id, run_step, traceparent)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', 0, ?7, ?8, ?8, 1, ?9, ?10, ?11, ?12)";

/// Ends an attempt: the message's new status, found by `seq` after its lease was checked.
const END_ATTEMPT: &str = "UPDATE messages SET status = ?1,
        next_attempt_at = coalesce(?2, next_attempt_at),
        last_error = CASE WHEN ?3 THEN ?4 ELSE last_error END,
        delivered_at = CASE WHEN ?1 = 'delivered' THEN ?5 ELSE delivered_at END,
        updated_at = ?5, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
        event_seq = ?6
    WHERE seq = ?7";

/// An idempotency key with the request fingerprint it was taken with, and the current status
/// of the message it names (`None` when that message is gone): one look-up of the key and one
/// of `messages.id`, both unique indexes.
const LOOK_UP_KEY: &str = "SELECT k.message_id, k.expires_at, k.fingerprint, m.status
    FROM idempotency AS k LEFT JOIN messages AS m ON m.id = k.message_id
    WHERE k.destination = ?1 AND k.key = ?2";

/// Stores messages (already checked and encoded), honouring idempotency keys. Messages go in
/// one after another, so a key repeated within `items` finds the first one's row. With `run`,
/// each message is tagged with that run and its encoded step.
pub(crate) fn enqueue(
    conn: &Connection,
    env: &Env,
    items: &[(NewMessage, Encoded)],
    run: Option<&str>,
) -> Result<Vec<Enqueued>> {
    let now = env.now();
    let mut out = Vec::with_capacity(items.len());
    for (message, encoded) in items {
        if let Some(key) = &message.idempotency_key {
            type Found = (String, i64, Option<Vec<u8>>, Option<String>);
            let existing: Option<Found> = conn
                .prepare_cached(LOOK_UP_KEY)
                .and_then(|mut s| {
                    s.query_row(params![message.destination, key], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()
                })
                .ctx("looking up an idempotency key")?;
            if let Some((id, expires_at, fingerprint, status)) = existing
                && expires_at > now
            {
                out.push(Enqueued::Duplicate(Duplicate {
                    id: id.parse()?,
                    status: status.map(|s| s.parse()).transpose()?,
                    conflict: fingerprints_conflict(
                        fingerprint.as_deref(),
                        message.fingerprint.as_ref(),
                    ),
                }));
                continue;
            }
        }
        let id = MessageId::from_ulid(env.new_id());
        let not_before = message.not_before.map(to_millis);
        conn.prepare_cached(INSERT_MESSAGE)
            .and_then(|mut s| {
                s.execute(params![
                    id.to_string(),
                    message.destination,
                    encoded.payload,
                    encoded.headers,
                    message.idempotency_key,
                    message.ordering_key,
                    not_before.unwrap_or(now),
                    now,
                    not_before,
                    run,
                    run.and(encoded.step.as_deref()),
                    message.traceparent,
                ])
            })
            .ctx("inserting a message")?;
        let seq = conn.last_insert_rowid();
        NewEvent::new(seq, 1, now, Status::Queued, 0).insert(conn)?;
        if let Some(key) = &message.idempotency_key {
            conn.prepare_cached(
                "INSERT INTO idempotency (destination, key, message_id, expires_at, fingerprint)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (destination, key) DO UPDATE
                 SET message_id = excluded.message_id, expires_at = excluded.expires_at,
                     fingerprint = excluded.fingerprint",
            )
            .and_then(|mut s| {
                s.execute(params![
                    message.destination,
                    key,
                    id.to_string(),
                    now.saturating_add(env.idempotency_window_ms),
                    message.fingerprint.as_ref().map(<[u8; 32]>::as_slice),
                ])
            })
            .ctx("recording an idempotency key")?;
        }
        out.push(Enqueued::Created(id));
    }
    env.wake();
    Ok(out)
}

pub(crate) const CLAIM_CANDIDATES: &str = concat!(
    "SELECT seq, status, lease_owner FROM messages AS m INDEXED BY messages_due
     WHERE ",
    pending!(),
    " AND next_attempt_at <= ?1
       AND NOT EXISTS (SELECT 1 FROM paused_destinations AS p WHERE p.destination = m.destination)
       AND (m.ordering_key IS NULL OR NOT EXISTS (
           SELECT 1 FROM messages AS o INDEXED BY messages_fifo
           WHERE o.ordering_key = m.ordering_key
             AND o.ordering_key IS NOT NULL
             AND ",
    fifo_blocking!(),
    "
             AND o.seq < m.seq
             AND (o.status <> 'dead' OR ?2)))
     ORDER BY next_attempt_at, seq
     LIMIT ?3"
);

/// Leases the messages whose `seq` is in the JSON array `?5`, all in one statement: one
/// `UPDATE … RETURNING` per claim rather than per message, because SQLite buffers a
/// statement's `RETURNING` rows in a temporary b-tree that it builds and frees per statement.
static CLAIM_ROWS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE messages SET status = 'delivering', attempts = attempts + 1,
             lease_owner = ?1, lease_token = ?2, lease_expires_at = ?3,
             next_attempt_at = ?3, updated_at = ?4, event_seq = event_seq + 1
         WHERE seq IN (SELECT value FROM json_each(?5))
         RETURNING seq, {MESSAGE_COLUMNS}, event_seq"
    )
});

/// Leases up to `max` due messages to `owner`.
///
/// The messages of one claim share its fencing token: each lease is still checked by message
/// id, owner and token, and a later claim of the same message draws a new token.
pub(crate) fn claim(
    conn: &Connection,
    env: &Env,
    owner: &str,
    max: usize,
    lease_ms: i64,
) -> Result<Vec<Claimed>> {
    let now = env.now();
    let expires = now.saturating_add(lease_ms);
    let block = env.dead_letter_policy == DeadLetterPolicy::Block;
    let candidates: Vec<(i64, String, Option<String>)> = conn
        .prepare_cached(CLAIM_CANDIDATES)
        .and_then(|mut s| {
            s.query_map(params![now, block, max as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect()
        })
        .ctx("finding due messages")?;
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let mut seqs = String::with_capacity(candidates.len() * 8 + 2);
    seqs.push('[');
    for (i, (seq, _, _)) in candidates.iter().enumerate() {
        if i > 0 {
            seqs.push(',');
        }
        let _ = write!(seqs, "{seq}");
    }
    seqs.push(']');
    let token = Ulid::new().to_string();
    // RETURNING gives the rows in no promised order; the claim keeps the candidates' order.
    let mut updated: HashMap<i64, (Message, i64)> = conn
        .prepare_cached(&CLAIM_ROWS)
        .and_then(|mut s| {
            s.query_map(params![owner, token, expires, now, seqs], |r| {
                Ok((
                    r.get(0)?,
                    (rows::message(r, 1)?, r.get(1 + MESSAGE_COLUMN_COUNT)?),
                ))
            })?
            .collect()
        })
        .ctx("claiming messages")?;
    let mut claimed = Vec::with_capacity(candidates.len());
    for (seq, status, previous_owner) in candidates {
        let Some((message, event_seq)) = updated.remove(&seq) else {
            return Err(StoreError::database(
                "claiming messages",
                false,
                format!("a due message (seq {seq}) was not updated"),
            ));
        };
        let detail = if status == Status::Delivering.as_str() {
            format!(
                "claimed by {owner} after the lease of {} expired",
                previous_owner.as_deref().unwrap_or("?")
            )
        } else {
            format!("claimed by {owner}")
        };
        NewEvent::new(
            seq,
            event_seq,
            now,
            Status::Delivering,
            i64::from(message.attempts),
        )
        .detail(Some(&detail))
        .insert(conn)?;
        claimed.push(Claimed {
            lease: Lease {
                id: message.id,
                owner: owner.to_owned(),
                token: token.clone(),
                expires_at: from_millis(expires),
            },
            message,
        });
    }
    Ok(claimed)
}

/// Why a fenced update matched no row: the message is gone or the lease is not current.
pub(crate) fn fence_error(conn: &Connection, lease: &Lease) -> StoreError {
    let exists = conn
        .prepare_cached("SELECT 1 FROM messages WHERE id = ?1")
        .and_then(|mut s| s.exists([lease.id.to_string()]));
    match exists {
        Ok(true) => StoreError::LeaseLost {
            id: lease.id,
            owner: lease.owner.clone(),
        },
        Ok(false) => StoreError::NotFound { id: lease.id },
        Err(e) => super::error::map("checking a lease", e),
    }
}

/// Moves the lease's expiry to `now + by_ms`.
pub(crate) fn extend(conn: &Connection, env: &Env, lease: &Lease, by_ms: i64) -> Result<Lease> {
    let expires = env.now().saturating_add(by_ms);
    let changed = conn
        .prepare_cached(
            "UPDATE messages SET lease_expires_at = ?1, next_attempt_at = ?1
             WHERE id = ?2 AND status = 'delivering' AND lease_owner = ?3 AND lease_token = ?4",
        )
        .and_then(|mut s| {
            s.execute(params![
                expires,
                lease.id.to_string(),
                lease.owner,
                lease.token
            ])
        })
        .ctx("extending a lease")?;
    if changed == 0 {
        return Err(fence_error(conn, lease));
    }
    Ok(Lease {
        expires_at: from_millis(expires),
        ..lease.clone()
    })
}

/// Ends an attempt under `lease`: `delivered`, `retrying` (due at `next_at`) or `dead`.
pub(crate) fn finish(
    conn: &Connection,
    env: &Env,
    lease: &Lease,
    status: Status,
    next_at: Option<i64>,
    report: &AttemptReport,
) -> Result<()> {
    let now = env.now();
    let set_error = status != Status::Delivered;
    // A read, then an update by `seq`, rather than `UPDATE … RETURNING`: SQLite builds and
    // frees a temporary b-tree for every statement with `RETURNING`. Only this thread writes,
    // so nothing changes the row between the two statements.
    let row: Option<(i64, i64, i64)> = conn
        .prepare_cached(
            "SELECT seq, attempts, event_seq + 1 FROM messages
             WHERE id = ?1 AND status = 'delivering' AND lease_owner = ?2 AND lease_token = ?3",
        )
        .and_then(|mut s| {
            s.query_row(
                params![lease.id.to_string(), lease.owner, lease.token],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
        })
        .ctx("ending an attempt")?;
    let Some((seq, attempts, event_seq)) = row else {
        return Err(fence_error(conn, lease));
    };
    conn.prepare_cached(END_ATTEMPT)
        .and_then(|mut s| {
            s.execute(params![
                status.as_str(),
                next_at,
                set_error,
                report.detail,
                now,
                event_seq,
                seq
            ])
        })
        .ctx("ending an attempt")?;
    NewEvent::new(seq, event_seq, now, status, attempts)
        .report(report)
        .insert(conn)?;
    if status == Status::Retrying || status == Status::Dead {
        // A reschedule may be due at once; a dead message may unblock its ordering key.
        env.wake();
    }
    Ok(())
}

/// Replaces the payload of the message `lease` holds; the attempt stays open.
pub(crate) fn replace_payload(
    conn: &Connection,
    env: &Env,
    lease: &Lease,
    payload: &str,
) -> Result<()> {
    let changed = conn
        .prepare_cached(
            "UPDATE messages SET payload = ?1, updated_at = ?2
             WHERE id = ?3 AND status = 'delivering' AND lease_owner = ?4 AND lease_token = ?5",
        )
        .and_then(|mut s| {
            s.execute(params![
                payload,
                env.now(),
                lease.id.to_string(),
                lease.owner,
                lease.token
            ])
        })
        .ctx("replacing a payload")?;
    if changed == 0 {
        return Err(fence_error(conn, lease));
    }
    Ok(())
}

/// Keeps a destination's answer with the leased message.
pub(crate) fn keep_response(
    conn: &Connection,
    env: &Env,
    lease: &Lease,
    response: &str,
) -> Result<()> {
    let changed = conn
        .prepare_cached(
            "UPDATE messages SET response = ?1, updated_at = ?2
             WHERE id = ?3 AND status = 'delivering' AND lease_owner = ?4 AND lease_token = ?5",
        )
        .and_then(|mut s| {
            s.execute(params![
                response,
                env.now(),
                lease.id.to_string(),
                lease.owner,
                lease.token
            ])
        })
        .ctx("keeping a response")?;
    if changed == 0 {
        return Err(fence_error(conn, lease));
    }
    Ok(())
}

/// Gives a claim back without counting the attempt, due now.
pub(crate) fn release(conn: &Connection, env: &Env, lease: &Lease) -> Result<()> {
    let detail = format!("released by {}", lease.owner);
    give_back(conn, env, lease, None, &detail, false)
}

/// Gives a claim back without counting the attempt, due at `until`; a repeat of the deferral
/// before this claim folds into it.
pub(crate) fn defer(
    conn: &Connection,
    env: &Env,
    lease: &Lease,
    until: i64,
    reason: &str,
) -> Result<()> {
    give_back(conn, env, lease, Some(until), reason, true)
}

/// `delivering → queued | retrying` with the attempt uncounted, due at `until` (or now).
///
/// A deferral (`deferral`) that repeats the one before its claim removes the claim's event and
/// counts itself in that deferral's event, so the message's `event_seq` goes back by one
/// instead of forward. Only this thread writes, so nothing changes between the check and the
/// writes.
fn give_back(
    conn: &Connection,
    env: &Env,
    lease: &Lease,
    until: Option<i64>,
    detail: &str,
    deferral: bool,
) -> Result<()> {
    let now = env.now();
    let due = until.unwrap_or(now);
    let fold = deferral
        && conn
            .prepare_cached(DEFERRAL_REPEATS)
            .and_then(|mut s| {
                s.query_row(
                    params![lease.id.to_string(), lease.owner, lease.token, detail],
                    |r| r.get::<_, bool>(0),
                )
            })
            .ctx("looking for a deferral to fold into")?;
    let row: Option<(i64, i64, i64, String)> = conn
        .prepare_cached(
            "UPDATE messages SET
                 status = CASE WHEN attempts <= 1 THEN 'queued' ELSE 'retrying' END,
                 attempts = max(attempts - 1, 0), next_attempt_at = ?1, updated_at = ?2,
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                 event_seq = CASE WHEN ?6 THEN event_seq - 1 ELSE event_seq + 1 END
             WHERE id = ?3 AND status = 'delivering' AND lease_owner = ?4 AND lease_token = ?5
             RETURNING seq, attempts, event_seq, status",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    due,
                    now,
                    lease.id.to_string(),
                    lease.owner,
                    lease.token,
                    fold
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
        })
        .ctx("giving a lease back")?;
    let Some((seq, attempts, event_seq, status)) = row else {
        return Err(fence_error(conn, lease));
    };
    if fold {
        conn.prepare_cached("DELETE FROM events WHERE message_seq = ?1 AND seq = ?2")
            .and_then(|mut s| s.execute(params![seq, event_seq + 1]))
            .ctx("folding a deferral")?;
        conn.prepare_cached(
            "UPDATE events SET repeats = repeats + 1, last_at = ?3
             WHERE message_seq = ?1 AND seq = ?2",
        )
        .and_then(|mut s| s.execute(params![seq, event_seq, now]))
        .ctx("folding a deferral")?;
    } else {
        let event =
            NewEvent::new(seq, event_seq, now, status.parse()?, attempts).detail(Some(detail));
        if deferral { event.deferral() } else { event }.insert(conn)?;
    }
    env.wake();
    Ok(())
}

/// Operator cancel of a pending message.
pub(crate) fn cancel(
    conn: &Connection,
    env: &Env,
    id: MessageId,
    reason: Option<&str>,
) -> Result<()> {
    let Some((seq, status, _)) = look_up(conn, id)? else {
        return Err(StoreError::NotFound { id });
    };
    if status.is_terminal() {
        return Err(StoreError::InvalidTransition {
            id,
            from: status,
            action: "cancel",
        });
    }
    cancel_pending(conn, env, seq, reason)?;
    Ok(())
}

/// Cancels the message at `seq` if it is pending (a worker holding it gets `LeaseLost` when
/// it reports); answers whether it was.
pub(crate) fn cancel_pending(
    conn: &Connection,
    env: &Env,
    seq: i64,
    reason: Option<&str>,
) -> Result<bool> {
    let now = env.now();
    let cancelled: Option<(i64, i64)> = conn
        .prepare_cached(concat!(
            "UPDATE messages SET status = 'cancelled', updated_at = ?1,
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                 event_seq = event_seq + 1
             WHERE seq = ?2 AND ",
            pending!(),
            " RETURNING attempts, event_seq"
        ))
        .and_then(|mut s| {
            s.query_row(params![now, seq], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .ctx("cancelling a message")?;
    let Some((attempts, event_seq)) = cancelled else {
        return Ok(false);
    };
    NewEvent::new(seq, event_seq, now, Status::Cancelled, attempts)
        .detail(reason)
        .insert(conn)?;
    // Cancelling the head of an ordering key lets the next message go.
    env.wake();
    Ok(true)
}

/// A message's `seq`, status and run, by id.
pub(crate) fn look_up(
    conn: &Connection,
    id: MessageId,
) -> Result<Option<(i64, Status, Option<String>)>> {
    let found: Option<(i64, String, Option<String>)> = conn
        .prepare_cached("SELECT seq, status, run_id FROM messages WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .ctx("looking up a message")?;
    found
        .map(|(seq, status, run)| Ok((seq, status.parse()?, run)))
        .transpose()
}

/// Moves `delivering` messages whose lease expired (or, with `all`, every one) to `retrying`.
pub(crate) fn recover(conn: &Connection, env: &Env, all: bool) -> Result<u64> {
    let now = env.now();
    let cutoff = if all { i64::MAX } else { now };
    let recovered: Vec<(i64, i64, i64)> = conn
        .prepare_cached(
            "UPDATE messages SET status = 'retrying', next_attempt_at = ?1, updated_at = ?1,
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                 event_seq = event_seq + 1
             WHERE status = 'delivering' AND lease_expires_at <= ?2
             RETURNING seq, attempts, event_seq",
        )
        .and_then(|mut s| {
            s.query_map(params![now, cutoff], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect()
        })
        .ctx("recovering expired leases")?;
    let detail = if all {
        "lease released at open: the previous owner of the database is gone"
    } else {
        "lease expired"
    };
    for (seq, attempts, event_seq) in &recovered {
        NewEvent::new(*seq, *event_seq, now, Status::Retrying, *attempts)
            .detail(Some(detail))
            .insert(conn)?;
    }
    if !recovered.is_empty() {
        env.wake();
    }
    Ok(recovered.len() as u64)
}

/// Re-queues terminal messages.
pub(crate) fn replay(
    conn: &Connection,
    env: &Env,
    target: &ReplayTarget,
    dry_run: bool,
) -> Result<ReplayReport> {
    let mut selected: Vec<(i64, MessageId)> = Vec::new();
    match target {
        ReplayTarget::Ids(ids) => {
            for id in ids {
                let Some((seq, status, run)) = look_up(conn, *id)? else {
                    return Err(StoreError::NotFound { id: *id });
                };
                if let Some(run) = run {
                    return Err(crate::transition::run_message_replayed(*id, &run));
                }
                if status.is_pending() {
                    return Err(StoreError::InvalidTransition {
                        id: *id,
                        from: status,
                        action: "replay",
                    });
                }
                if !selected.iter().any(|(s, _)| *s == seq) {
                    selected.push((seq, *id));
                }
            }
        }
        ReplayTarget::Filter(filter) => {
            let mut params: Vec<Value> = Vec::new();
            let condition = filter::condition(filter, true, &mut params);
            let sql = format!(
                "SELECT seq, id FROM messages WHERE {condition} AND run_id IS NULL ORDER BY seq"
            );
            let mut stmt = conn.prepare(&sql).ctx("selecting messages to replay")?;
            let rows = stmt
                .query_map(params_from_iter(params), |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .ctx("selecting messages to replay")?;
            for (seq, id) in rows {
                selected.push((seq, id.parse()?));
            }
        }
    }
    if !dry_run {
        for (seq, _) in &selected {
            requeue(conn, env, *seq, "replayed")?;
        }
    }
    Ok(ReplayReport {
        count: selected.len() as u64,
        ids: selected.into_iter().map(|(_, id)| id).collect(),
        dry_run,
    })
}

/// Re-queues the terminal message at `seq`: `queued`, due now, attempts reset, last error and
/// `not_before` forgotten, with an event saying `detail`.
pub(crate) fn requeue(conn: &Connection, env: &Env, seq: i64, detail: &str) -> Result<()> {
    let now = env.now();
    let event_seq: i64 = conn
        .prepare_cached(
            "UPDATE messages SET status = 'queued', attempts = 0, next_attempt_at = ?1,
                 not_before = NULL, last_error = NULL, delivered_at = NULL, updated_at = ?1,
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                 event_seq = event_seq + 1
             WHERE seq = ?2 RETURNING event_seq",
        )
        .and_then(|mut s| s.query_row(params![now, seq], |r| r.get(0)))
        .ctx("replaying a message")?;
    NewEvent::new(seq, event_seq, now, Status::Queued, 0)
        .detail(Some(detail))
        .insert(conn)?;
    env.wake();
    Ok(())
}

/// Deletes up to `chunk` terminal messages matching `filter`; returns how many.
pub(crate) fn purge(conn: &Connection, filter: &Filter, chunk: usize) -> Result<u64> {
    let mut params: Vec<Value> = Vec::new();
    let condition = filter::condition(filter, true, &mut params);
    let sql = format!(
        "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages WHERE {condition} LIMIT {chunk})"
    );
    let n = conn
        .execute(&sql, params_from_iter(params))
        .ctx("purging messages")?;
    Ok(n as u64)
}

/// Deletes the terminal messages among `ids` that match `filter`.
pub(crate) fn purge_ids(conn: &Connection, ids: &[MessageId], filter: &Filter) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut params: Vec<Value> = Vec::new();
    let condition = filter::condition(filter, true, &mut params);
    let first = params.len() + 1;
    let marks: Vec<String> = (first..first + ids.len())
        .map(|i| format!("?{i}"))
        .collect();
    params.extend(ids.iter().map(|id| Value::Text(id.to_string())));
    let sql = format!(
        "DELETE FROM messages WHERE {condition} AND id IN ({})",
        marks.join(", ")
    );
    let n = conn
        .execute(&sql, params_from_iter(params))
        .ctx("purging messages by id")?;
    Ok(n as u64)
}

/// Deletes up to `chunk` messages delivered before `cutoff` (but none of a run that has not
/// finished), up to `chunk` runs finished before it with their events and waits, and expired
/// idempotency keys; answers how many messages and how many runs.
pub(crate) fn purge_delivered(
    conn: &Connection,
    env: &Env,
    cutoff: i64,
    chunk: usize,
) -> Result<(u64, u64)> {
    let n = conn
        .prepare_cached(
            "DELETE FROM messages WHERE seq IN (
                 SELECT m.seq FROM messages AS m
                 WHERE m.status = 'delivered' AND m.delivered_at < ?1
                   AND (m.run_id IS NULL OR NOT EXISTS (
                       SELECT 1 FROM runs AS r WHERE r.id = m.run_id AND r.finished_at IS NULL))
                 LIMIT ?2)",
        )
        .and_then(|mut s| s.execute(params![cutoff, chunk as i64]))
        .ctx("purging delivered messages")?;
    let runs = conn
        .prepare_cached(
            "DELETE FROM runs WHERE seq IN (
                 SELECT seq FROM runs INDEXED BY runs_retention
                 WHERE finished_at IS NOT NULL AND finished_at < ?1 LIMIT ?2)",
        )
        .and_then(|mut s| s.execute(params![cutoff, chunk as i64]))
        .ctx("purging finished runs")?;
    conn.prepare_cached(
        "DELETE FROM idempotency WHERE (destination, key) IN (
             SELECT destination, key FROM idempotency WHERE expires_at <= ?1 LIMIT ?2)",
    )
    .and_then(|mut s| s.execute(params![env.now(), chunk as i64]))
    .ctx("forgetting expired idempotency keys")?;
    Ok((n as u64, runs as u64))
}

/// Records an inbound event once per (source, external id); enqueues its forward only when it
/// is new. The writer is the only one writing, so the look-up and the insert cannot race.
pub(crate) fn record_inbound(
    conn: &Connection,
    env: &Env,
    event: &EncodedInbound,
) -> Result<Recorded> {
    let existing: Option<String> = conn
        .prepare_cached("SELECT id FROM inbound WHERE source = ?1 AND external_id = ?2")
        .and_then(|mut s| {
            s.query_row(params![event.source, event.external_id], |r| r.get(0))
                .optional()
        })
        .ctx("looking up an inbound event")?;
    if let Some(id) = existing {
        return Ok(Recorded::Duplicate(id.parse()?));
    }
    let id = InboundId::from_ulid(env.new_id());
    conn.prepare_cached(
        "INSERT INTO inbound (id, source, external_id, payload, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            id.to_string(),
            event.source,
            event.external_id,
            event.payload,
            env.now()
        ])
    })
    .ctx("recording an inbound event")?;
    let forward = match &event.forward {
        Some(forward) => enqueue(conn, env, std::slice::from_ref(forward), None)?.pop(),
        None => None,
    };
    Ok(Recorded::Created { id, forward })
}

/// Deletes up to `chunk` inbound events recorded before `cutoff`.
pub(crate) fn purge_inbound(conn: &Connection, cutoff: i64, chunk: usize) -> Result<u64> {
    let n = conn
        .prepare_cached(
            "DELETE FROM inbound WHERE seq IN (
                 SELECT seq FROM inbound WHERE received_at < ?1 LIMIT ?2)",
        )
        .and_then(|mut s| s.execute(params![cutoff, chunk as i64]))
        .ctx("purging inbound events")?;
    Ok(n as u64)
}

/// Writes one meta value.
pub(crate) fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO store_meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut s| s.execute(params![key, value]))
    .ctx("writing a meta value")?;
    Ok(())
}

/// Deletes one meta value; answers whether it existed.
pub(crate) fn delete_meta(conn: &Connection, key: &str) -> Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM store_meta WHERE key = ?1")
        .and_then(|mut s| s.execute([key]))
        .ctx("deleting a meta value")?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    /// Column `column` of every row of `sql`, run with its parameters unbound (NULL), as
    /// EXPLAIN needs no values.
    fn column(conn: &Connection, sql: &str, column: usize) -> Vec<String> {
        let mut stmt = conn.prepare(sql).unwrap();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            out.push(row.get::<_, String>(column).unwrap());
        }
        out
    }

    /// The opcodes of `sql`'s program on `conn`.
    fn opcodes(conn: &Connection, sql: &str) -> Vec<String> {
        column(conn, &format!("EXPLAIN {sql}"), 1)
    }

    /// What SQLite plans for `sql`, one line per step.
    fn plan(conn: &Connection, sql: &str) -> String {
        column(conn, &format!("EXPLAIN QUERY PLAN {sql}"), 3).join("\n")
    }

    #[test]
    fn the_per_message_statements_build_no_temporary_btree() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::sqlite::migrate::migrate(&mut conn).unwrap();
        for (name, sql) in [
            ("insert message", INSERT_MESSAGE),
            ("look up an idempotency key", LOOK_UP_KEY),
            ("insert event", INSERT_EVENT),
            ("end attempt", END_ATTEMPT),
            ("claim candidates", CLAIM_CANDIDATES),
        ] {
            let ops = opcodes(&conn, sql);
            assert!(
                !ops.iter().any(|op| op == "OpenEphemeral"),
                "{name} opens a temporary b-tree per run: {ops:?}"
            );
        }
    }

    #[test]
    fn depths_read_only_covering_indexes_of_pending_and_dead_rows() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::sqlite::migrate::migrate(&mut conn).unwrap();
        let depths = plan(&conn, crate::sqlite::reads::DEPTHS);
        assert!(
            depths.contains("USING COVERING INDEX messages_depths"),
            "{depths}"
        );
        assert!(!depths.contains("TEMP B-TREE"), "{depths}");
        let oldest = plan(&conn, crate::sqlite::reads::OLDEST_DUE);
        // Not covering (the status is not in the index), but it stops at the first entry.
        assert!(
            oldest.contains("INDEX messages_due (next_attempt_at<?)"),
            "{oldest}"
        );
        assert!(!oldest.contains("TEMP B-TREE"), "{oldest}");
    }

    #[test]
    fn claims_read_the_due_and_fifo_indexes() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::sqlite::migrate::migrate(&mut conn).unwrap();
        let plan = plan(&conn, CLAIM_CANDIDATES);
        assert!(plan.contains("INDEX messages_due"), "{plan}");
        assert!(plan.contains("INDEX messages_fifo"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }
}
