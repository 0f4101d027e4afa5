//! Shared circuit breakers on SQLite: publishing and taking over (on the writer), listing (on
//! a reader). One process uses a SQLite store, so nothing else reads these rows; they are
//! kept so the store behaves the same on both backends.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::error::Context;
use super::writer::Env;
use crate::error::Result;
use crate::shared_breaker::{BreakerUpdate, SharedBreaker, SharedState};
use crate::types::{from_millis, to_millis};

const COLUMNS: &str = "destination, state, open_until, owner, epoch, updated_at";

/// Stores `update` with the epoch one past the stored one; answers the row.
pub(crate) fn publish(
    conn: &Connection,
    env: &Env,
    update: &BreakerUpdate,
) -> Result<SharedBreaker> {
    conn.prepare_cached(&format!(
        "INSERT INTO shared_breakers ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, 1, ?5)
         ON CONFLICT (destination) DO UPDATE SET state = excluded.state,
             open_until = excluded.open_until, owner = excluded.owner,
             epoch = shared_breakers.epoch + 1, updated_at = excluded.updated_at
         RETURNING {COLUMNS}"
    ))
    .and_then(|mut s| {
        s.query_row(
            params![
                update.destination,
                update.state.as_str(),
                to_millis(update.open_until),
                update.owner,
                env.now()
            ],
            raw,
        )
    })
    .ctx("publishing a shared breaker")?
    .parse()
}

/// Makes `owner` the owner of `destination`'s row, open until `open_until`, if it is still at
/// `epoch`.
pub(crate) fn take_over(
    conn: &Connection,
    env: &Env,
    destination: &str,
    epoch: u64,
    owner: &str,
    open_until: SystemTime,
) -> Result<Option<SharedBreaker>> {
    let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
    conn.prepare_cached(&format!(
        "UPDATE shared_breakers SET state = 'probing', owner = ?3, epoch = epoch + 1,
             open_until = ?5,
             updated_at = ?4
         WHERE destination = ?1 AND epoch = ?2 RETURNING {COLUMNS}"
    ))
    .and_then(|mut s| {
        s.query_row(
            params![destination, epoch, owner, env.now(), to_millis(open_until)],
            raw,
        )
        .optional()
    })
    .ctx("taking over a shared breaker")?
    .map(Raw::parse)
    .transpose()
}

/// Every row, by destination.
pub(crate) fn list(conn: &Connection) -> Result<Vec<SharedBreaker>> {
    let rows: Vec<Raw> = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM shared_breakers ORDER BY destination"
        ))
        .and_then(|mut s| s.query_map([], raw)?.collect())
        .ctx("listing shared breakers")?;
    rows.into_iter().map(Raw::parse).collect()
}

/// A row before its state is checked.
struct Raw {
    destination: String,
    state: String,
    open_until: i64,
    owner: String,
    epoch: i64,
    updated_at: i64,
}

impl Raw {
    fn parse(self) -> Result<SharedBreaker> {
        Ok(SharedBreaker {
            state: SharedState::parse(&self.state)?,
            destination: self.destination,
            open_until: from_millis(self.open_until),
            owner: self.owner,
            epoch: self.epoch.max(0).unsigned_abs(),
            updated_at: from_millis(self.updated_at),
        })
    }
}

fn raw(r: &Row<'_>) -> rusqlite::Result<Raw> {
    Ok(Raw {
        destination: r.get(0)?,
        state: r.get(1)?,
        open_until: r.get(2)?,
        owner: r.get(3)?,
        epoch: r.get(4)?,
        updated_at: r.get(5)?,
    })
}
