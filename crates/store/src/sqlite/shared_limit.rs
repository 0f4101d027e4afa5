//! Shared send windows on SQLite, on the writer (one batch at a time). One process uses a
//! SQLite store, so the relay keeps its windows in memory there; these rows are kept so the
//! store behaves the same on both backends.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::error::Context;
use super::writer::Env;
use crate::error::Result;
use crate::shared_limit::{KeyState, SlotAnswer, SlotBatch, apply};

/// Deletes the windows last touched before `cutoff` (the store's milliseconds).
pub(crate) fn purge(conn: &Connection, cutoff: i64) -> Result<u64> {
    let n = conn
        .prepare_cached("DELETE FROM shared_limits WHERE updated_at < ?1")
        .and_then(|mut s| s.execute([cutoff]))
        .ctx("purging shared send windows")?;
    Ok(n as u64)
}

/// Reads the windows `batch` touches, applies it and writes them back.
pub(crate) fn take(conn: &Connection, env: &Env, batch: &SlotBatch) -> Result<Vec<SlotAnswer>> {
    let mut states = BTreeMap::new();
    for key in batch.keys() {
        let stored: Option<String> = conn
            .prepare_cached("SELECT state FROM shared_limits WHERE key = ?1")
            .and_then(|mut s| s.query_row([&key], |r| r.get(0)).optional())
            .ctx("reading a shared send window")?;
        let state = match stored {
            Some(stored) => KeyState::parse(&key, &stored)?,
            None => KeyState::default(),
        };
        states.insert(key, state);
    }
    let answers = apply(&mut states, batch);
    for (key, state) in &states {
        conn.prepare_cached(
            "INSERT INTO shared_limits (key, state, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET state = excluded.state,
                 updated_at = excluded.updated_at",
        )
        .and_then(|mut s| s.execute(params![key, state.to_stored(), env.now()]))
        .ctx("writing a shared send window")?;
    }
    Ok(answers)
}
