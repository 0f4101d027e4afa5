//! Shared circuit breakers on PostgreSQL: one statement each on the pool. Every relay on the
//! database reads these rows on a short period (see [`shared_breaker`](crate::shared_breaker)).

use std::time::SystemTime;

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::PgStore;
use super::error::corrupt;
use crate::error::Result;
use crate::shared_breaker::{BreakerUpdate, SharedBreaker, SharedState};
use crate::types::{from_millis, to_millis};

const PUBLISH: &str = "
INSERT INTO shared_breakers (destination, state, open_until, owner, epoch, updated_at)
VALUES ($1, $2, $3, $4, 1, $5)
ON CONFLICT (destination) DO UPDATE SET state = excluded.state,
    open_until = excluded.open_until, owner = excluded.owner,
    epoch = shared_breakers.epoch + 1, updated_at = excluded.updated_at
RETURNING destination, state, open_until, owner, epoch, updated_at";

const TAKE_OVER: &str = "
UPDATE shared_breakers
SET state = 'probing', owner = $3, epoch = epoch + 1, open_until = $5, updated_at = $4
WHERE destination = $1 AND epoch = $2
RETURNING destination, state, open_until, owner, epoch, updated_at";

impl PgStore {
    /// Stores `update` with the epoch one past the stored one.
    pub(super) async fn upsert_breaker(&self, update: &BreakerUpdate) -> Result<SharedBreaker> {
        let row = sqlx::query(PUBLISH)
            .bind(&update.destination)
            .bind(update.state.as_str())
            .bind(to_millis(update.open_until))
            .bind(&update.owner)
            .bind(self.now())
            .fetch_one(&mut *self.conn().await?)
            .await
            .map_err(self.err("publishing a shared breaker"))?;
        shared(&row)
    }

    /// Makes `owner` the owner of `destination`'s row, open until `open_until`, if it is
    /// still at `epoch`.
    pub(super) async fn update_breaker_owner(
        &self,
        destination: &str,
        epoch: u64,
        owner: &str,
        open_until: SystemTime,
    ) -> Result<Option<SharedBreaker>> {
        let row = sqlx::query(TAKE_OVER)
            .bind(destination)
            .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
            .bind(owner)
            .bind(self.now())
            .bind(to_millis(open_until))
            .fetch_optional(&mut *self.conn().await?)
            .await
            .map_err(self.err("taking over a shared breaker"))?;
        row.as_ref().map(shared).transpose()
    }

    /// Every row, by destination.
    pub(super) async fn select_breakers(&self) -> Result<Vec<SharedBreaker>> {
        let rows = sqlx::query(
            r#"SELECT destination, state, open_until, owner, epoch, updated_at
               FROM shared_breakers ORDER BY destination COLLATE "C""#,
        )
        .fetch_all(&mut *self.conn().await?)
        .await
        .map_err(self.err("listing shared breakers"))?;
        rows.iter().map(shared).collect()
    }
}

fn shared(row: &PgRow) -> Result<SharedBreaker> {
    let get = |c: &'static str| move |e| corrupt(c, e);
    let state: String = row.try_get("state").map_err(get("state"))?;
    let epoch: i64 = row.try_get("epoch").map_err(get("epoch"))?;
    Ok(SharedBreaker {
        destination: row.try_get("destination").map_err(get("destination"))?,
        state: SharedState::parse(&state)?,
        open_until: from_millis(row.try_get("open_until").map_err(get("open_until"))?),
        owner: row.try_get("owner").map_err(get("owner"))?,
        epoch: epoch.max(0).unsigned_abs(),
        updated_at: from_millis(row.try_get("updated_at").map_err(get("updated_at"))?),
    })
}
