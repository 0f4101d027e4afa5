//! Routes' chat mappings on PostgreSQL: one statement each on the pool.

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::PgStore;
use super::error::corrupt;
use crate::chats::RouteChat;
use crate::error::Result;
use crate::types::from_millis;

const SET: &str = r#"
INSERT INTO route_chats (route, key, chat_id, updated_at, updated_by)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (route, key) DO UPDATE SET chat_id = EXCLUDED.chat_id,
    updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by
RETURNING route, key, chat_id, updated_at, updated_by"#;

impl PgStore {
    /// Sets `route`'s `key` to `chat_id`, replacing what it was.
    pub(super) async fn upsert_route_chat(
        &self,
        route: &str,
        key: &str,
        chat_id: i64,
        by: &str,
    ) -> Result<RouteChat> {
        let row = sqlx::query(SET)
            .bind(route)
            .bind(key)
            .bind(chat_id)
            .bind(self.now())
            .bind(by)
            .fetch_one(&mut *self.conn().await?)
            .await
            .map_err(self.err("setting a route's chat"))?;
        chat(&row)
    }

    /// Removes `route`'s `key`; answers whether it was stored.
    pub(super) async fn remove_route_chat(&self, route: &str, key: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM route_chats WHERE route = $1 AND key = $2")
            .bind(route)
            .bind(key)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(self.err("removing a route's chat"))?;
        Ok(done.rows_affected() > 0)
    }

    /// `route`'s entries, or every route's, by route and key in byte order.
    pub(super) async fn select_route_chats(&self, route: Option<&str>) -> Result<Vec<RouteChat>> {
        let rows = sqlx::query(
            r#"SELECT route, key, chat_id, updated_at, updated_by FROM route_chats
               WHERE $1::text IS NULL OR route = $1
               ORDER BY route COLLATE "C", key COLLATE "C""#,
        )
        .bind(route)
        .fetch_all(&mut *self.conn().await?)
        .await
        .map_err(self.err("listing routes' chats"))?;
        rows.iter().map(chat).collect()
    }
}

fn chat(row: &PgRow) -> Result<RouteChat> {
    let get = |c: &'static str| move |e| corrupt(c, e);
    Ok(RouteChat {
        route: row.try_get("route").map_err(get("route"))?,
        key: row.try_get("key").map_err(get("key"))?,
        chat_id: row.try_get("chat_id").map_err(get("chat_id"))?,
        updated_at: from_millis(row.try_get("updated_at").map_err(get("updated_at"))?),
        updated_by: row.try_get("updated_by").map_err(get("updated_by"))?,
    })
}
