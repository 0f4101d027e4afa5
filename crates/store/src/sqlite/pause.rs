//! Paused destinations on SQLite: pausing and resuming (on the writer), listing (on a
//! reader). Claims skip them in `ops::CLAIM_CANDIDATES`, `reads::next_due` does too.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::error::Context;
use super::writer::Env;
use crate::error::Result;
use crate::pause::Paused;
use crate::types::from_millis;

const COLUMNS: &str = "destination, paused_at, paused_by, reason";

/// Pauses `destination` unless it is; answers the pause stored.
pub(crate) fn pause(
    conn: &Connection,
    env: &Env,
    destination: &str,
    by: &str,
    reason: Option<&str>,
) -> Result<Paused> {
    conn.prepare_cached(
        "INSERT INTO paused_destinations (destination, paused_at, paused_by, reason)
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (destination) DO NOTHING",
    )
    .and_then(|mut s| s.execute(params![destination, env.now(), by, reason]))
    .ctx("pausing a destination")?;
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM paused_destinations WHERE destination = ?1"
    ))
    .and_then(|mut s| s.query_row([destination], paused))
    .ctx("reading a pause")
}

/// Resumes `destination`; answers whether it was paused, and if so wakes the dispatchers.
pub(crate) fn resume(conn: &Connection, env: &Env, destination: &str) -> Result<bool> {
    let was = conn
        .prepare_cached("DELETE FROM paused_destinations WHERE destination = ?1 RETURNING 1")
        .and_then(|mut s| s.query_row([destination], |_| Ok(())).optional())
        .ctx("resuming a destination")?
        .is_some();
    if was {
        env.wake();
    }
    Ok(was)
}

/// Every paused destination, by name.
pub(crate) fn list(conn: &Connection) -> Result<Vec<Paused>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM paused_destinations ORDER BY destination"
    ))
    .and_then(|mut s| s.query_map([], paused)?.collect())
    .ctx("listing paused destinations")
}

fn paused(r: &Row<'_>) -> rusqlite::Result<Paused> {
    Ok(Paused {
        destination: r.get(0)?,
        paused_at: from_millis(r.get(1)?),
        paused_by: r.get(2)?,
        reason: r.get(3)?,
    })
}
