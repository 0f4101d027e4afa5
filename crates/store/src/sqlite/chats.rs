//! Routes' chat mappings on SQLite: set and removed on the writer, listed on a reader.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::error::Context;
use super::writer::Env;
use crate::chats::RouteChat;
use crate::error::Result;
use crate::types::from_millis;

const COLUMNS: &str = "route, key, chat_id, updated_at, updated_by";

/// Sets `route`'s `key` to `chat_id`, replacing what it was; answers the row stored.
pub(crate) fn set(
    conn: &Connection,
    env: &Env,
    route: &str,
    key: &str,
    chat_id: i64,
    by: &str,
) -> Result<RouteChat> {
    conn.prepare_cached(&format!(
        "INSERT INTO route_chats ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (route, key) DO UPDATE SET chat_id = excluded.chat_id,
             updated_at = excluded.updated_at, updated_by = excluded.updated_by
         RETURNING {COLUMNS}"
    ))
    .and_then(|mut s| s.query_row(params![route, key, chat_id, env.now(), by], chat))
    .ctx("setting a route's chat")
}

/// Removes `route`'s `key`; answers whether it was stored.
pub(crate) fn delete(conn: &Connection, route: &str, key: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM route_chats WHERE route = ?1 AND key = ?2 RETURNING 1")
        .and_then(|mut s| s.query_row([route, key], |_| Ok(())).optional())
        .ctx("removing a route's chat")?
        .is_some())
}

/// `route`'s entries, or every route's, by route and key in byte order.
pub(crate) fn list(conn: &Connection, route: Option<&str>) -> Result<Vec<RouteChat>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM route_chats WHERE ?1 IS NULL OR route = ?1 ORDER BY route, key"
    ))
    .and_then(|mut s| s.query_map([route], chat)?.collect())
    .ctx("listing routes' chats")
}

fn chat(r: &Row<'_>) -> rusqlite::Result<RouteChat> {
    Ok(RouteChat {
        route: r.get(0)?,
        key: r.get(1)?,
        chat_id: r.get(2)?,
        updated_at: from_millis(r.get(3)?),
        updated_by: r.get(4)?,
    })
}
