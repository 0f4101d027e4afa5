//! Rollups on PostgreSQL: a batch is added in one transaction of upserts that add to the
//! stored minutes (rows in key order, so concurrent batches from several processes lock them
//! in one order and cannot deadlock); reads and pruning are statements on the pool.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};

use super::PgStore;
use super::error::corrupt;
use crate::error::Result;
use crate::rollup::{
    self, DeliveryCounts, ReasonCount, RollupBatch, RunCounts, Series, SeriesQuery,
    delivery_values, run_values, sql,
};
use crate::types::{duration_millis, from_millis};

static ADD_DELIVERY: LazyLock<String> = LazyLock::new(sql::add_delivery);
static ADD_RUN: LazyLock<String> = LazyLock::new(sql::add_run);
static ADD_REASON: LazyLock<String> = LazyLock::new(|| sql::add_reason(true));
static SERIES_DELIVERIES: LazyLock<String> = LazyLock::new(|| sql::series_deliveries(true));
static SERIES_RUNS: LazyLock<String> = LazyLock::new(|| sql::series_runs(true));
static REASONS: LazyLock<String> = LazyLock::new(|| sql::reasons(true));

fn values(row: &PgRow, n: usize) -> Result<Vec<i64>> {
    (1..=n)
        .map(|i| {
            row.try_get::<Option<i64>, _>(i)
                .map(Option::unwrap_or_default)
                .map_err(|e| corrupt("rollup", e))
        })
        .collect()
}

impl PgStore {
    /// Adds `batch` in one transaction.
    pub(super) async fn insert_rollups(&self, batch: &RollupBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let err = self.err("adding rollups");
        let mut tx = self.inner.pool.begin().await.map_err(&err)?;
        for ((destination, minute), counts) in &batch.destinations {
            let mut q = sqlx::query(AssertSqlSafe(ADD_DELIVERY.as_str()))
                .bind(destination)
                .bind(minute);
            for v in delivery_values(counts) {
                q = q.bind(v);
            }
            q.execute(&mut *tx).await.map_err(&err)?;
        }
        for ((route, minute), counts) in &batch.routes {
            let mut q = sqlx::query(AssertSqlSafe(ADD_RUN.as_str()))
                .bind(route)
                .bind(minute);
            for v in run_values(counts) {
                q = q.bind(v);
            }
            q.execute(&mut *tx).await.map_err(&err)?;
        }
        for ((destination, reason, minute), t) in &batch.reasons {
            sqlx::query(AssertSqlSafe(ADD_REASON.as_str()))
                .bind(destination)
                .bind(reason)
                .bind(minute)
                .bind(i64::try_from(t.count).unwrap_or(i64::MAX))
                .bind(i64::try_from(t.dead_lettered).unwrap_or(i64::MAX))
                .bind(t.last_at_ms)
                .execute(&mut *tx)
                .await
                .map_err(&err)?;
        }
        tx.commit().await.map_err(&err)
    }

    /// The series `query` asks for.
    pub(super) async fn select_series(&self, query: &SeriesQuery) -> Result<Series> {
        let bounds = query.bounds()?;
        let (from, to, step, _) = bounds;
        let err = self.err("reading rollups");
        let rows = sqlx::query(AssertSqlSafe(SERIES_DELIVERIES.as_str()))
            .bind(from)
            .bind(to)
            .bind(step)
            .bind(query.destination.as_deref())
            .fetch_all(&self.inner.pool)
            .await
            .map_err(&err)?;
        let width = sql::delivery_columns().len();
        let mut deliveries: BTreeMap<i64, DeliveryCounts> = BTreeMap::new();
        for row in &rows {
            let b: i64 = row.try_get(0).map_err(|e| corrupt("bucket", e))?;
            deliveries.insert(b, rollup::delivery_from(&values(row, width)?));
        }
        let rows = sqlx::query(AssertSqlSafe(SERIES_RUNS.as_str()))
            .bind(from)
            .bind(to)
            .bind(step)
            .bind(query.route.as_deref())
            .fetch_all(&self.inner.pool)
            .await
            .map_err(&err)?;
        let mut runs: BTreeMap<i64, RunCounts> = BTreeMap::new();
        for row in &rows {
            let b: i64 = row.try_get(0).map_err(|e| corrupt("bucket", e))?;
            runs.insert(b, rollup::run_from(&values(row, 4)?));
        }
        Ok(rollup::dense(bounds, query.step, deliveries, runs))
    }

    /// The most frequent reasons.
    pub(super) async fn select_reasons(
        &self,
        from: SystemTime,
        to: SystemTime,
        destination: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ReasonCount>> {
        let (from, to) = rollup::reason_bounds(from, to, destination, limit)?;
        let rows = sqlx::query(AssertSqlSafe(REASONS.as_str()))
            .bind(from)
            .bind(to)
            .bind(destination)
            .bind(i64::try_from(limit).unwrap_or(1000))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(self.err("reading rollups"))?;
        rows.iter()
            .map(|r| {
                let n = |i: usize| -> Result<u64> {
                    Ok(r.try_get::<i64, _>(i)
                        .map_err(|e| corrupt("count", e))?
                        .max(0)
                        .unsigned_abs())
                };
                Ok(ReasonCount {
                    reason: r.try_get(0).map_err(|e| corrupt("reason", e))?,
                    count: n(1)?,
                    dead_lettered: n(2)?,
                    last_at: from_millis(r.try_get(3).map_err(|e| corrupt("last_at", e))?),
                })
            })
            .collect()
    }

    /// Deletes minutes that started more than `older_than` ago.
    pub(super) async fn delete_rollups(&self, older_than: Duration) -> Result<u64> {
        let cutoff = self.now().saturating_sub(duration_millis(older_than));
        let err = self.err("pruning rollups");
        let mut total = 0;
        for table in ["rollup_destinations", "rollup_routes", "rollup_reasons"] {
            total += sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE minute < $1"
            )))
            .bind(cutoff)
            .execute(&self.inner.pool)
            .await
            .map_err(&err)?
            .rows_affected();
        }
        Ok(total)
    }
}
