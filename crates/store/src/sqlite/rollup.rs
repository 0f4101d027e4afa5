//! Rollups on SQLite: adding a batch (one writer job, so one transaction), reading series and
//! reasons (on a reader), pruning old minutes (on the writer).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use rusqlite::{Connection, params, params_from_iter};

use super::error::Context;
use crate::error::Result;
use crate::rollup::{
    self, DeliveryCounts, ReasonCount, RollupBatch, RunCounts, delivery_values, run_values, sql,
};
use crate::types::from_millis;

static ADD_DELIVERY: LazyLock<String> = LazyLock::new(|| sql::sqlite(&sql::add_delivery()));
static ADD_RUN: LazyLock<String> = LazyLock::new(|| sql::sqlite(&sql::add_run()));
static ADD_REASON: LazyLock<String> = LazyLock::new(|| sql::sqlite(&sql::add_reason(false)));
static SERIES_DELIVERIES: LazyLock<String> =
    LazyLock::new(|| sql::sqlite(&sql::series_deliveries(false)));
static SERIES_RUNS: LazyLock<String> = LazyLock::new(|| sql::sqlite(&sql::series_runs(false)));
static REASONS: LazyLock<String> = LazyLock::new(|| sql::sqlite(&sql::reasons(false)));

/// Adds every row of `batch` into the stored minutes.
pub(crate) fn add(conn: &Connection, batch: &Arc<RollupBatch>) -> Result<()> {
    {
        let mut s = conn.prepare_cached(&ADD_DELIVERY).ctx("adding rollups")?;
        for ((destination, minute), counts) in &batch.destinations {
            let mut values: Vec<rusqlite::types::Value> =
                vec![destination.clone().into(), (*minute).into()];
            values.extend(delivery_values(counts).into_iter().map(Into::into));
            s.execute(params_from_iter(values)).ctx("adding rollups")?;
        }
    }
    {
        let mut s = conn.prepare_cached(&ADD_RUN).ctx("adding rollups")?;
        for ((route, minute), counts) in &batch.routes {
            let [a, b, c, d] = run_values(counts);
            s.execute(params![route, minute, a, b, c, d])
                .ctx("adding rollups")?;
        }
    }
    let mut s = conn.prepare_cached(&ADD_REASON).ctx("adding rollups")?;
    for ((destination, reason, minute), t) in &batch.reasons {
        s.execute(params![
            destination,
            reason,
            minute,
            i64::try_from(t.count).unwrap_or(i64::MAX),
            i64::try_from(t.dead_lettered).unwrap_or(i64::MAX),
            t.last_at_ms
        ])
        .ctx("adding rollups")?;
    }
    Ok(())
}

/// Destination counts per bucket index.
pub(crate) fn deliveries(
    conn: &Connection,
    (from, to, step): (i64, i64, i64),
    destination: Option<&str>,
) -> Result<BTreeMap<i64, DeliveryCounts>> {
    let mut s = conn
        .prepare_cached(&SERIES_DELIVERIES)
        .ctx("reading rollups")?;
    let rows = s
        .query_map(params![from, to, step, destination], |r| {
            let n = r.as_ref().column_count();
            let values = (1..n)
                .map(|i| r.get::<_, Option<i64>>(i).map(Option::unwrap_or_default))
                .collect::<rusqlite::Result<Vec<i64>>>()?;
            Ok((r.get::<_, i64>(0)?, rollup::delivery_from(&values)))
        })
        .ctx("reading rollups")?;
    rows.collect::<rusqlite::Result<_>>().ctx("reading rollups")
}

/// Route counts per bucket index.
pub(crate) fn runs(
    conn: &Connection,
    (from, to, step): (i64, i64, i64),
    route: Option<&str>,
) -> Result<BTreeMap<i64, RunCounts>> {
    let mut s = conn.prepare_cached(&SERIES_RUNS).ctx("reading rollups")?;
    let rows = s
        .query_map(params![from, to, step, route], |r| {
            let values = (1..5)
                .map(|i| r.get::<_, Option<i64>>(i).map(Option::unwrap_or_default))
                .collect::<rusqlite::Result<Vec<i64>>>()?;
            Ok((r.get::<_, i64>(0)?, rollup::run_from(&values)))
        })
        .ctx("reading rollups")?;
    rows.collect::<rusqlite::Result<_>>().ctx("reading rollups")
}

/// The most frequent reasons.
pub(crate) fn reasons(
    conn: &Connection,
    (from, to): (i64, i64),
    destination: Option<&str>,
    limit: usize,
) -> Result<Vec<ReasonCount>> {
    let mut s = conn.prepare_cached(&REASONS).ctx("reading rollups")?;
    let rows = s
        .query_map(
            params![from, to, destination, i64::try_from(limit).unwrap_or(1000)],
            |r| {
                Ok(ReasonCount {
                    reason: r.get(0)?,
                    count: r.get::<_, i64>(1)?.max(0).unsigned_abs(),
                    dead_lettered: r.get::<_, i64>(2)?.max(0).unsigned_abs(),
                    last_at: from_millis(r.get(3)?),
                })
            },
        )
        .ctx("reading rollups")?;
    rows.collect::<rusqlite::Result<_>>().ctx("reading rollups")
}

/// Deletes the minutes before `cutoff`; answers how many rows.
pub(crate) fn prune(conn: &Connection, cutoff: i64) -> Result<u64> {
    let mut total = 0;
    for table in ["rollup_destinations", "rollup_routes", "rollup_reasons"] {
        total += conn
            .prepare_cached(&format!("DELETE FROM {table} WHERE minute < ?1"))
            .and_then(|mut s| s.execute([cutoff]))
            .ctx("pruning rollups")? as u64;
    }
    Ok(total)
}
