//! Per-minute rollups: delivery counts, latency histograms and failure reasons per
//! destination, run counts per route, accumulated in memory and added to the store in batches.
//!
//! The relay records what happens into a [`RollupBatch`] (no store write per message) and
//! hands it to [`Store::add_rollups`](crate::Store::add_rollups) every few seconds: one
//! transaction that **adds** into the minute rows, so several relays sharing one PostgreSQL
//! database sum up instead of overwriting each other. Reads
//! ([`rollup_series`](crate::Store::rollup_series),
//! [`rollup_reasons`](crate::Store::rollup_reasons)) sum the minute rows into buckets of any
//! whole number of minutes; [`prune_rollups`](crate::Store::prune_rollups) drops old minutes.
//!
//! Latencies are kept as fixed-bucket histograms ([`Histogram`], bounds
//! [`BUCKET_BOUNDS_MS`]) so that percentiles over any range come from summed buckets.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::types::{from_millis, to_millis};

/// Upper bounds (inclusive, in milliseconds) of the histogram buckets; one more bucket holds
/// everything above the last bound.
pub const BUCKET_BOUNDS_MS: [u64; BUCKETS - 1] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 1_800_000,
];

/// How many buckets a [`Histogram`] has.
pub const BUCKETS: usize = 16;

/// One minute, the resolution of the stored rows.
pub const MINUTE: Duration = Duration::from_secs(60);

/// Most points one [`Store::rollup_series`](crate::Store::rollup_series) answers.
pub const MAX_POINTS: usize = 10_080;

/// Longest failure reason kept; a longer one is cut at a character boundary.
pub const MAX_REASON_BYTES: usize = 200;

/// Most distinct `(destination, reason, minute)` entries one batch holds; further reasons are
/// counted as `other`, so a flood of distinct error texts cannot grow memory.
pub const MAX_BATCH_REASONS: usize = 4096;

/// A latency histogram with fixed buckets ([`BUCKET_BOUNDS_MS`]) and the sum of the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Histogram {
    /// Values per bucket: `counts[i]` holds values at most `BUCKET_BOUNDS_MS[i]` and above the
    /// bound before; the last holds the values above every bound.
    pub counts: [u64; BUCKETS],
    /// The sum of the values, in milliseconds (for the mean).
    pub sum_ms: u64,
}

impl Histogram {
    /// Adds one value.
    pub fn record(&mut self, value: Duration) {
        let ms = u64::try_from(value.as_millis()).unwrap_or(u64::MAX);
        let bucket = BUCKET_BOUNDS_MS
            .iter()
            .position(|&bound| ms <= bound)
            .unwrap_or(BUCKETS - 1);
        self.counts[bucket] += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
    }

    /// Adds `other`'s values into this one.
    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum_ms = self.sum_ms.saturating_add(other.sum_ms);
    }

    /// How many values.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The mean, or `None` without values.
    pub fn mean(&self) -> Option<Duration> {
        let n = self.count();
        (n > 0).then(|| Duration::from_millis(self.sum_ms / n))
    }

    /// The `q` quantile (`0.0..=1.0`), estimated by linear interpolation inside the bucket
    /// that holds it (as Prometheus' `histogram_quantile` does); a quantile in the last,
    /// unbounded bucket answers that bucket's lower bound. `None` without values.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * n as f64;
        let mut below = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            if c > 0 && (below + c) as f64 >= rank {
                let lower = if i == 0 { 0 } else { BUCKET_BOUNDS_MS[i - 1] };
                let Some(&upper) = BUCKET_BOUNDS_MS.get(i) else {
                    return Some(Duration::from_millis(lower));
                };
                let within = ((rank - below as f64) / c as f64).clamp(0.0, 1.0);
                let ms = lower as f64 + within * (upper - lower) as f64;
                return Some(Duration::from_millis(ms.round() as u64));
            }
            below += c;
        }
        Some(Duration::from_millis(BUCKET_BOUNDS_MS[BUCKETS - 2]))
    }
}

/// What happened to one destination's deliveries in a minute (or summed over a bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeliveryCounts {
    /// Attempts that delivered their message.
    pub delivered: u64,
    /// Failed attempts whose message was scheduled for another attempt.
    pub retried: u64,
    /// Attempts that failed with a permanent error (their messages are dead-lettered too).
    pub failed: u64,
    /// Messages dead-lettered (a permanent error, or attempts exhausted).
    pub dead_lettered: u64,
    /// Attempts made (delivered, retried, or ending in a dead letter).
    pub attempts: u64,
    /// How long each attempt took.
    pub attempt_latency: Histogram,
    /// Time from submit to delivered, per delivered message.
    pub delivery_latency: Histogram,
}

impl DeliveryCounts {
    /// Adds `other` into this one.
    pub fn add(&mut self, other: &DeliveryCounts) {
        self.delivered += other.delivered;
        self.retried += other.retried;
        self.failed += other.failed;
        self.dead_lettered += other.dead_lettered;
        self.attempts += other.attempts;
        self.attempt_latency.add(&other.attempt_latency);
        self.delivery_latency.add(&other.delivery_latency);
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == DeliveryCounts::default()
    }
}

/// What happened to one route's runs in a minute (or summed over a bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunCounts {
    /// Runs started.
    pub started: u64,
    /// Runs that completed.
    pub completed: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Runs whose wait expired (the run ended on its timeout path).
    pub expired: u64,
}

impl RunCounts {
    /// Adds `other` into this one.
    pub fn add(&mut self, other: &RunCounts) {
        self.started += other.started;
        self.completed += other.completed;
        self.failed += other.failed;
        self.expired += other.expired;
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == RunCounts::default()
    }
}

/// How a run ended, or that it started, for [`RollupBatch::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// A run started.
    Started,
    /// A run completed.
    Completed,
    /// A run failed.
    Failed,
    /// A run's wait expired.
    Expired,
}

/// The failures with one reason in one destination and minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReasonTally {
    /// Failed attempts with this reason.
    pub count: u64,
    /// Of those, the ones whose message was dead-lettered.
    pub dead_lettered: u64,
    /// The last one, in milliseconds since the epoch.
    pub last_at_ms: i64,
}

/// Rollups accumulated in memory, to be added to the store in one transaction by
/// [`Store::add_rollups`](crate::Store::add_rollups). Keys are sorted, so concurrent adds
/// from several processes lock rows in one order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RollupBatch {
    /// Per `(destination, minute start in ms)`.
    pub destinations: BTreeMap<(String, i64), DeliveryCounts>,
    /// Per `(route, minute start in ms)`.
    pub routes: BTreeMap<(String, i64), RunCounts>,
    /// Per `(destination, reason, minute start in ms)`.
    pub reasons: BTreeMap<(String, String, i64), ReasonTally>,
}

/// The start of the minute holding `at`, in milliseconds since the epoch.
pub fn minute_of(at: SystemTime) -> i64 {
    to_millis(at).div_euclid(60_000) * 60_000
}

/// The first minute boundary at or after `at`, in milliseconds since the epoch.
fn minute_ceil(at: SystemTime) -> i64 {
    let ms = to_millis(at);
    ms.div_euclid(60_000) * 60_000
        + if ms.rem_euclid(60_000) == 0 {
            0
        } else {
            60_000
        }
}

fn clip_reason(reason: &str) -> String {
    let reason = reason.trim();
    if reason.is_empty() {
        return "unknown".to_owned();
    }
    if reason.len() <= MAX_REASON_BYTES {
        return reason.to_owned();
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

impl RollupBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.destinations.is_empty() && self.routes.is_empty() && self.reasons.is_empty()
    }

    fn delivery(&mut self, at: SystemTime, destination: &str) -> &mut DeliveryCounts {
        self.destinations
            .entry((destination.to_owned(), minute_of(at)))
            .or_default()
    }

    /// An attempt at `at` delivered its message, `attempt` long, `since_submit` after the
    /// message was submitted.
    pub fn delivered(
        &mut self,
        at: SystemTime,
        destination: &str,
        attempt: Duration,
        since_submit: Duration,
    ) {
        let d = self.delivery(at, destination);
        d.delivered += 1;
        d.attempts += 1;
        d.attempt_latency.record(attempt);
        d.delivery_latency.record(since_submit);
    }

    /// An attempt at `at` failed with `reason` and its message will be retried.
    pub fn retried(&mut self, at: SystemTime, destination: &str, attempt: Duration, reason: &str) {
        let d = self.delivery(at, destination);
        d.retried += 1;
        d.attempts += 1;
        d.attempt_latency.record(attempt);
        self.reason(at, destination, reason, false);
    }

    /// An attempt at `at` failed with `reason` (a permanent error when `permanent`) and its
    /// message was dead-lettered.
    pub fn dead_lettered(
        &mut self,
        at: SystemTime,
        destination: &str,
        attempt: Duration,
        permanent: bool,
        reason: &str,
    ) {
        let d = self.delivery(at, destination);
        d.dead_lettered += 1;
        d.attempts += 1;
        if permanent {
            d.failed += 1;
        }
        d.attempt_latency.record(attempt);
        self.reason(at, destination, reason, true);
    }

    /// A run of `route` started or ended at `at`.
    pub fn run(&mut self, at: SystemTime, route: &str, outcome: RunOutcome) {
        let r = self
            .routes
            .entry((route.to_owned(), minute_of(at)))
            .or_default();
        match outcome {
            RunOutcome::Started => r.started += 1,
            RunOutcome::Completed => r.completed += 1,
            RunOutcome::Failed => r.failed += 1,
            RunOutcome::Expired => r.expired += 1,
        }
    }

    fn reason(&mut self, at: SystemTime, destination: &str, reason: &str, dead: bool) {
        let minute = minute_of(at);
        let mut key = (destination.to_owned(), clip_reason(reason), minute);
        if self.reasons.len() >= MAX_BATCH_REASONS && !self.reasons.contains_key(&key) {
            key.1 = "other".to_owned();
        }
        let t = self.reasons.entry(key).or_default();
        t.count += 1;
        if dead {
            t.dead_lettered += 1;
        }
        t.last_at_ms = t.last_at_ms.max(to_millis(at));
    }

    /// Adds every count of `other` into this batch (e.g. a flush that failed, put back).
    pub fn merge(&mut self, other: RollupBatch) {
        for (k, v) in other.destinations {
            self.destinations.entry(k).or_default().add(&v);
        }
        for (k, v) in other.routes {
            self.routes.entry(k).or_default().add(&v);
        }
        for (k, v) in other.reasons {
            let t = self.reasons.entry(k).or_default();
            t.count += v.count;
            t.dead_lettered += v.dead_lettered;
            t.last_at_ms = t.last_at_ms.max(v.last_at_ms);
        }
    }
}

/// What [`Store::rollup_series`](crate::Store::rollup_series) reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesQuery {
    /// The start of the range (moved back to the start of its minute).
    pub from: SystemTime,
    /// The end of the range, exclusive (the minute holding it is included when it does not
    /// start exactly at `to`).
    pub to: SystemTime,
    /// The width of each point: a whole number of minutes, at least one.
    pub step: Duration,
    /// Only this destination's deliveries (else every destination's, summed).
    pub destination: Option<String>,
    /// Only this route's runs (else every route's, summed).
    pub route: Option<String>,
}

impl SeriesQuery {
    /// A query of every destination and route from `from` to `to` in points of `step`.
    pub fn new(from: SystemTime, to: SystemTime, step: Duration) -> Self {
        SeriesQuery {
            from,
            to,
            step,
            destination: None,
            route: None,
        }
    }

    /// Checks the query; answers `(from, to, step)` in milliseconds, `from` and `to` moved to
    /// minute boundaries (`from` down, `to` up), and the number of points.
    pub(crate) fn bounds(&self) -> Result<(i64, i64, i64, usize)> {
        let step = i64::try_from(self.step.as_millis()).unwrap_or(i64::MAX);
        if step < 60_000 || step % 60_000 != 0 {
            return Err(StoreError::InvalidOption {
                field: "step",
                reason: "must be a whole number of minutes, at least one".into(),
            });
        }
        let (from, to) = (minute_of(self.from), minute_ceil(self.to));
        if to <= from {
            return Err(StoreError::InvalidOption {
                field: "to",
                reason: "must be after `from`".into(),
            });
        }
        let points = (to - from + step - 1) / step;
        if points > MAX_POINTS as i64 {
            return Err(StoreError::InvalidOption {
                field: "step",
                reason: format!(
                    "the range holds {points} points of this step; the maximum is {MAX_POINTS}"
                ),
            });
        }
        for (field, name) in [("destination", &self.destination), ("route", &self.route)] {
            crate::common::check_key(field, name.as_deref(), true)?;
        }
        Ok((from, to, step, points as usize))
    }
}

/// One point of a [`Series`]: the counts summed over `[start, start + step)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// The start of the point's bucket.
    pub start: SystemTime,
    /// Deliveries (of the query's destination, or of every one).
    pub deliveries: DeliveryCounts,
    /// Runs (of the query's route, or of every one).
    pub runs: RunCounts,
}

/// The answer to [`Store::rollup_series`](crate::Store::rollup_series): one point per step
/// from `from` to `to`, empty steps included (with zero counts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Series {
    /// The start of the first point (the query's `from` at its minute).
    pub from: SystemTime,
    /// The end of the last point's range (the query's `to`, at a minute boundary).
    pub to: SystemTime,
    /// The width of each point.
    pub step: Duration,
    /// The points, oldest first.
    pub points: Vec<SeriesPoint>,
}

impl Series {
    /// Every point's counts summed.
    pub fn totals(&self) -> (DeliveryCounts, RunCounts) {
        let mut d = DeliveryCounts::default();
        let mut r = RunCounts::default();
        for p in &self.points {
            d.add(&p.deliveries);
            r.add(&p.runs);
        }
        (d, r)
    }
}

/// Failures with one reason over a range, from
/// [`Store::rollup_reasons`](crate::Store::rollup_reasons).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonCount {
    /// The reason: the status code the destination answered (`status 503`), or the error's
    /// text, cut at [`MAX_REASON_BYTES`].
    pub reason: String,
    /// Failed attempts with it.
    pub count: u64,
    /// Of those, the ones whose message was dead-lettered.
    pub dead_lettered: u64,
    /// The last one.
    pub last_at: SystemTime,
}

/// The points of a series from per-bucket rows (`index → counts`), dense.
pub(crate) fn dense(
    (from, to, step, points): (i64, i64, i64, usize),
    step_d: Duration,
    deliveries: BTreeMap<i64, DeliveryCounts>,
    runs: BTreeMap<i64, RunCounts>,
) -> Series {
    let points = (0..points as i64)
        .map(|i| SeriesPoint {
            start: from_millis(from + i * step),
            deliveries: deliveries.get(&i).copied().unwrap_or_default(),
            runs: runs.get(&i).copied().unwrap_or_default(),
        })
        .collect();
    Series {
        from: from_millis(from),
        to: from_millis(to),
        step: step_d,
        points,
    }
}

/// The SQL both backends share; `$n` placeholders (SQLite runs them as `?n`).
pub(crate) mod sql {
    use super::BUCKETS;

    /// The counter columns of `rollup_destinations`, in the order of
    /// [`delivery_from`](super::delivery_from).
    pub(crate) fn delivery_columns() -> Vec<String> {
        let mut c: Vec<String> = [
            "delivered",
            "retried",
            "failed",
            "dead_lettered",
            "attempts",
            "attempt_ms_sum",
        ]
        .map(String::from)
        .to_vec();
        c.extend((0..BUCKETS).map(|i| format!("a{i}")));
        c.push("delivery_ms_sum".into());
        c.extend((0..BUCKETS).map(|i| format!("d{i}")));
        c
    }

    /// Columns of `rollup_routes`, in the order of [`run_from`](super::run_from).
    pub(crate) const RUN_COLUMNS: [&str; 4] = ["started", "completed", "failed", "expired"];

    fn placeholders(from: usize, n: usize) -> String {
        (from..from + n)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn adds(cols: &[String]) -> String {
        cols.iter()
            .map(|c| format!("{c} = t.{c} + excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Adds one destination minute: `$1` destination, `$2` minute, then the counters.
    pub(crate) fn add_delivery() -> String {
        let cols = delivery_columns();
        format!(
            "INSERT INTO rollup_destinations AS t (destination, minute, {})
             VALUES ($1, $2, {})
             ON CONFLICT (destination, minute) DO UPDATE SET {}",
            cols.join(", "),
            placeholders(3, cols.len()),
            adds(&cols)
        )
    }

    /// Adds one route minute: `$1` route, `$2` minute, then the counters.
    pub(crate) fn add_run() -> String {
        let cols: Vec<String> = RUN_COLUMNS.map(String::from).to_vec();
        format!(
            "INSERT INTO rollup_routes AS t (route, minute, {})
             VALUES ($1, $2, {})
             ON CONFLICT (route, minute) DO UPDATE SET {}",
            cols.join(", "),
            placeholders(3, cols.len()),
            adds(&cols)
        )
    }

    /// Adds one reason minute: `$1` destination, `$2` reason, `$3` minute, `$4` count, `$5`
    /// dead-lettered, `$6` last at.
    pub(crate) fn add_reason(pg: bool) -> String {
        let max = if pg { "GREATEST" } else { "max" };
        format!(
            "INSERT INTO rollup_reasons AS t (destination, reason, minute, count, dead_lettered, last_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (destination, reason, minute) DO UPDATE SET
                 count = t.count + excluded.count,
                 dead_lettered = t.dead_lettered + excluded.dead_lettered,
                 last_at = {max}(t.last_at, excluded.last_at)"
        )
    }

    fn sum(col: &str, pg: bool) -> String {
        if pg {
            format!("sum({col})::bigint")
        } else {
            format!("sum({col})")
        }
    }

    fn name_filter(n: usize, column: &str, pg: bool) -> String {
        if pg {
            format!("(${n}::text IS NULL OR {column} = ${n})")
        } else {
            format!("(${n} IS NULL OR {column} = ${n})")
        }
    }

    /// Sums destination minutes per bucket: `$1` from, `$2` to, `$3` step, `$4` destination
    /// or NULL. Columns: bucket index, then [`delivery_columns`].
    pub(crate) fn series_deliveries(pg: bool) -> String {
        let sums: Vec<String> = delivery_columns().iter().map(|c| sum(c, pg)).collect();
        format!(
            "SELECT (minute - $1) / $3 AS b, {} FROM rollup_destinations
             WHERE minute >= $1 AND minute < $2 AND {}
             GROUP BY b ORDER BY b",
            sums.join(", "),
            name_filter(4, "destination", pg)
        )
    }

    /// Sums route minutes per bucket: `$1` from, `$2` to, `$3` step, `$4` route or NULL.
    pub(crate) fn series_runs(pg: bool) -> String {
        let sums: Vec<String> = RUN_COLUMNS.iter().map(|c| sum(c, pg)).collect();
        format!(
            "SELECT (minute - $1) / $3 AS b, {} FROM rollup_routes
             WHERE minute >= $1 AND minute < $2 AND {}
             GROUP BY b ORDER BY b",
            sums.join(", "),
            name_filter(4, "route", pg)
        )
    }

    /// The most frequent reasons: `$1` from, `$2` to, `$3` destination or NULL, `$4` limit.
    pub(crate) fn reasons(pg: bool) -> String {
        format!(
            "SELECT reason, {}, {}, max(last_at) FROM rollup_reasons
             WHERE minute >= $1 AND minute < $2 AND {}
             GROUP BY reason ORDER BY 2 DESC, 4 DESC, reason LIMIT $4",
            sum("count", pg),
            sum("dead_lettered", pg),
            name_filter(3, "destination", pg)
        )
    }

    /// Turns `$n` into SQLite's `?n`.
    pub(crate) fn sqlite(sql: &str) -> String {
        sql.replace('$', "?")
    }
}

/// The counter values of a destination row, in [`sql::delivery_columns`] order.
pub(crate) fn delivery_values(d: &DeliveryCounts) -> Vec<i64> {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let mut v = vec![
        n(d.delivered),
        n(d.retried),
        n(d.failed),
        n(d.dead_lettered),
        n(d.attempts),
        n(d.attempt_latency.sum_ms),
    ];
    v.extend(d.attempt_latency.counts.iter().map(|&c| n(c)));
    v.push(n(d.delivery_latency.sum_ms));
    v.extend(d.delivery_latency.counts.iter().map(|&c| n(c)));
    v
}

/// A destination row's counters from values in [`sql::delivery_columns`] order.
pub(crate) fn delivery_from(v: &[i64]) -> DeliveryCounts {
    let u = |i: usize| v.get(i).copied().unwrap_or(0).max(0).unsigned_abs();
    let mut d = DeliveryCounts {
        delivered: u(0),
        retried: u(1),
        failed: u(2),
        dead_lettered: u(3),
        attempts: u(4),
        ..DeliveryCounts::default()
    };
    d.attempt_latency.sum_ms = u(5);
    for i in 0..BUCKETS {
        d.attempt_latency.counts[i] = u(6 + i);
    }
    d.delivery_latency.sum_ms = u(6 + BUCKETS);
    for i in 0..BUCKETS {
        d.delivery_latency.counts[i] = u(7 + BUCKETS + i);
    }
    d
}

/// The counter values of a route row, in [`sql::RUN_COLUMNS`] order.
pub(crate) fn run_values(r: &RunCounts) -> [i64; 4] {
    [r.started, r.completed, r.failed, r.expired].map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// A route row's counters from values in [`sql::RUN_COLUMNS`] order.
pub(crate) fn run_from(v: &[i64]) -> RunCounts {
    let u = |i: usize| v.get(i).copied().unwrap_or(0).max(0).unsigned_abs();
    RunCounts {
        started: u(0),
        completed: u(1),
        failed: u(2),
        expired: u(3),
    }
}

/// Checks the arguments of [`Store::rollup_reasons`](crate::Store::rollup_reasons); answers
/// the range in milliseconds at minute boundaries.
pub(crate) fn reason_bounds(
    from: SystemTime,
    to: SystemTime,
    destination: Option<&str>,
    limit: usize,
) -> Result<(i64, i64)> {
    if !(1..=1000).contains(&limit) {
        return Err(StoreError::InvalidOption {
            field: "limit",
            reason: "must be between 1 and 1000".into(),
        });
    }
    let (from, to) = (minute_of(from), minute_ceil(to));
    if to <= from {
        return Err(StoreError::InvalidOption {
            field: "to",
            reason: "must be after `from`".into(),
        });
    }
    crate::common::check_key("destination", destination, true)?;
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in [1, 4, 5, 6, 100, 101, 2_000_000] {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.counts[0], 3, "1, 4 and 5 ms are at most 5");
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[4], 1, "100 is at most 100");
        assert_eq!(h.counts[5], 1);
        assert_eq!(h.counts[BUCKETS - 1], 1);
        assert_eq!(h.count(), 7);
        assert_eq!(h.quantile(1.0), Some(Duration::from_millis(1_800_000)));
        // Rank 3.5 of 7 lies halfway into the 5–10 ms bucket's single value.
        assert_eq!(h.quantile(0.5), Some(Duration::from_millis(8)));
        let mut twice = h;
        twice.add(&h);
        assert_eq!(twice.count(), 14);
        assert_eq!(twice.quantile(0.5), h.quantile(0.5));
    }

    #[test]
    fn values_round_trip() {
        let mut b = RollupBatch::new();
        let at = from_millis(120_500);
        b.delivered(at, "d", Duration::from_millis(30), Duration::from_secs(2));
        b.dead_lettered(at, "d", Duration::from_millis(7), true, "status 400");
        let d = b.destinations[&("d".to_owned(), 120_000)];
        assert_eq!(delivery_from(&delivery_values(&d)), d);
        assert_eq!(d.failed, 1);
        assert_eq!(d.attempts, 2);
        let r = RunCounts {
            started: 1,
            completed: 2,
            failed: 3,
            expired: 4,
        };
        assert_eq!(run_from(&run_values(&r)), r);
    }

    #[test]
    fn bad_queries_name_the_field() {
        let t = from_millis(0);
        let q = SeriesQuery::new(t, t + MINUTE, Duration::from_secs(90));
        assert!(matches!(
            q.bounds(),
            Err(StoreError::InvalidOption { field: "step", .. })
        ));
        let q = SeriesQuery::new(t + MINUTE, t, MINUTE);
        assert!(matches!(
            q.bounds(),
            Err(StoreError::InvalidOption { field: "to", .. })
        ));
        let q = SeriesQuery::new(t, t + MINUTE * 20_000, MINUTE);
        assert!(matches!(
            q.bounds(),
            Err(StoreError::InvalidOption { field: "step", .. })
        ));
        let q = SeriesQuery::new(
            t + Duration::from_secs(30),
            t + Duration::from_secs(61),
            MINUTE,
        );
        assert_eq!(q.bounds().unwrap(), (0, 120_000, 60_000, 2));
    }

    #[test]
    fn a_batch_caps_its_reasons() {
        let mut b = RollupBatch::new();
        let at = from_millis(0);
        for i in 0..MAX_BATCH_REASONS + 10 {
            b.retried(at, "d", Duration::ZERO, &format!("error {i}"));
        }
        assert_eq!(b.reasons.len(), MAX_BATCH_REASONS + 1);
        assert_eq!(b.reasons[&("d".into(), "other".into(), 0)].count, 10);
    }
}
