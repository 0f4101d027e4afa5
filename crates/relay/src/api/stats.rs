//! `GET /v1/stats`: deliveries and runs over a window, read from the per-minute rollups
//! ([`crate::rollups`]) — success rate, submit-to-delivered and attempt latencies, attempts
//! per message, top failure reasons, an hourly series — and its part of the OpenAPI document.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use ferrule_store::{DeliveryCounts, Histogram, SeriesQuery, Store};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::ApiQuery;
use super::openapi::{error, ok, op, query, schema, unavailable};
use crate::rollups::{WINDOW_PATTERN, parse_window};
use crate::state::AppState;
use crate::time::rfc3339;

/// The window when none is given.
const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The width of the series' points (the whole window when it is shorter).
const SERIES_STEP: Duration = Duration::from_secs(3600);
/// How many failure reasons the answer lists.
const TOP_FAILURES: usize = 10;
/// Longest destination or route name a filter takes.
const MAX_NAME: usize = 512;

/// Query of `GET /v1/stats`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatsQuery {
    #[serde(default)]
    window: Option<String>,
    #[serde(default)]
    destination: Option<String>,
    #[serde(default)]
    route: Option<String>,
}

fn bad(field: &str, message: &str) -> ApiError {
    ApiError::bad_request("invalid_query", message).with_field(field)
}

/// A name filter: empty is none; too long is refused naming `field`.
fn name(value: Option<String>, field: &str) -> Result<Option<String>, ApiError> {
    match value.filter(|v| !v.is_empty()) {
        Some(v) if v.len() > MAX_NAME => Err(bad(
            field,
            &format!("`{field}` is longer than {MAX_NAME} bytes"),
        )),
        v => Ok(v),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn latency(h: &Histogram) -> Value {
    json!({
        "count": h.count(),
        "mean": h.mean().map(ms),
        "p50": h.quantile(0.5).map(ms),
        "p95": h.quantile(0.95).map(ms),
    })
}

/// `delivered / (delivered + dead_lettered)`, or `None` when no message finished.
fn success_rate(d: &DeliveryCounts) -> Option<f64> {
    let finished = d.delivered + d.dead_lettered;
    (finished > 0).then(|| d.delivered as f64 / finished as f64)
}

/// `GET /v1/stats?window=24h&destination=&route=`.
pub(crate) async fn stats(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> Result<Json<Value>, ApiError> {
    let (window_text, window) = match q.window.as_deref().filter(|w| !w.is_empty()) {
        None => ("24h".to_owned(), DEFAULT_WINDOW),
        Some(w) => (
            w.to_owned(),
            parse_window(w).ok_or_else(|| {
                bad(
                    "window",
                    "`window` must be a number and a unit: 1-999m, 1-999h or 1-99d (e.g. 1h, 24h, 7d)",
                )
            })?,
        ),
    };
    let destination = name(q.destination, "destination")?;
    let route = name(q.route, "route")?;
    if !state.rollups.enabled() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "rollups_disabled",
            "statistics are off on this relay (`store.rollup_retention` is 0)",
        ));
    }
    // The window ends at the end of the current minute, so its points are whole steps.
    let now = state.clock.system_now();
    let to = ferrule_store::types::from_millis(ferrule_store::rollup::minute_of(now) + 60_000);
    let from = to - window;
    let step = SERIES_STEP.min(window);
    let series = state
        .store
        .rollup_series(&SeriesQuery {
            destination: destination.clone(),
            route: route.clone(),
            ..SeriesQuery::new(from, to, step)
        })
        .await?;
    let reasons = state
        .store
        .rollup_reasons(from, to, destination.as_deref(), TOP_FAILURES)
        .await?;
    let (d, r) = series.totals();
    let finished = d.delivered + d.dead_lettered;
    Ok(Json(json!({
        "window": window_text,
        "from": rfc3339(series.from),
        "to": rfc3339(series.to),
        "destination": destination,
        "route": route,
        "deliveries": {
            "delivered": d.delivered,
            "retried": d.retried,
            "failed": d.failed,
            "dead_lettered": d.dead_lettered,
            "attempts": d.attempts,
        },
        "success_rate": success_rate(&d),
        "attempts_per_message": (finished > 0).then(|| d.attempts as f64 / finished as f64),
        "delivery_ms": latency(&d.delivery_latency),
        "attempt_ms": latency(&d.attempt_latency),
        "runs": {
            "started": r.started,
            "completed": r.completed,
            "failed": r.failed,
            "expired": r.expired,
        },
        "top_failures": reasons.iter().map(|f| json!({
            "reason": f.reason,
            "count": f.count,
            "dead_lettered": f.dead_lettered,
            "last_at": rfc3339(f.last_at),
        })).collect::<Vec<_>>(),
        "series_step_seconds": step.as_secs(),
        "series": series.points.iter().map(|p| json!({
            "start": rfc3339(p.start),
            "delivered": p.deliveries.delivered,
            "retried": p.deliveries.retried,
            "failed": p.deliveries.failed,
            "dead_lettered": p.deliveries.dead_lettered,
            "success_rate": success_rate(&p.deliveries),
            "runs_completed": p.runs.completed,
            "runs_failed": p.runs.failed,
        })).collect::<Vec<_>>(),
    })))
}

/// The operation of `GET /v1/stats`, without its security (added from the route table).
pub(crate) fn openapi_paths() -> Value {
    let mut get = op(
        "getStats",
        "Deliveries and runs over a window, from the per-minute rollups",
        json!({
            "200": ok("the statistics", schema("Stats")),
            "400": error("a bad `window`, `destination` or `route` (`invalid_query`, `error.field` names it)"),
            "409": error("rollups are off on this relay: `store.rollup_retention` is 0 (`rollups_disabled`)"),
            "503": unavailable("the store is unavailable or busy (`store_unavailable`, `store_busy`)"),
        }),
    );
    get["description"] = json!(
        "Read from the per-minute rollups every relay sharing the store adds to every 10 s (so the last seconds of work may not show yet) and keeps for `store.rollup_retention`. The window ends at the end of the current minute. A read-only token may read it."
    );
    get["parameters"] = json!([
        query(
            "window",
            "how far back: 1-999m, 1-999h or 1-99d, e.g. `1h`, `24h`, `7d`; empty or absent: 24h",
            json!({"type": "string", "pattern": WINDOW_PATTERN})
        ),
        query(
            "destination",
            "only this destination's deliveries and failures (any name: one removed from the config still has its history); empty or absent: every destination",
            json!({"type": "string", "maxLength": MAX_NAME})
        ),
        query(
            "route",
            "only this route's runs; empty or absent: every route",
            json!({"type": "string", "maxLength": MAX_NAME})
        ),
    ]);
    json!({"/v1/stats": {"get": get}})
}

/// The schemas of `GET /v1/stats`.
pub(crate) fn openapi_schemas() -> Value {
    let count = json!({"type": "integer", "minimum": 0});
    let ms_or_null = json!({"type": ["integer", "null"], "minimum": 0});
    let rate = json!({"type": ["number", "null"], "minimum": 0, "maximum": 1});
    let time = json!({"type": "string", "format": "date-time"});
    let text_or_null = json!({"type": ["string", "null"]});
    json!({
        "Latency": {"type": "object", "required": ["count", "mean", "p50", "p95"],
            "description": "milliseconds, from fixed-bucket histograms: percentiles are interpolated within a bucket (bounds 5, 10, 25, 50, 100, 250, 500 ms, 1, 2.5, 5, 10, 30 s, 1, 5, 30 min; above 30 min reads as 30 min); null without values",
            "properties": {"count": count, "mean": ms_or_null, "p50": ms_or_null, "p95": ms_or_null}},
        "Stats": {"type": "object",
            "required": ["window", "from", "to", "destination", "route", "deliveries", "success_rate", "attempts_per_message", "delivery_ms", "attempt_ms", "runs", "top_failures", "series_step_seconds", "series"],
            "properties": {
                "window": {"type": "string"},
                "from": time, "to": time,
                "destination": text_or_null, "route": text_or_null,
                "deliveries": {"type": "object", "required": ["delivered", "retried", "failed", "dead_lettered", "attempts"],
                    "description": "attempts that delivered, failed and were retried, failed permanently; messages dead-lettered (a permanent failure or attempts exhausted); all attempts",
                    "properties": {"delivered": count, "retried": count, "failed": count, "dead_lettered": count, "attempts": count}},
                "success_rate": {"type": ["number", "null"], "minimum": 0, "maximum": 1, "description": "delivered / (delivered + dead-lettered); null when no message finished"},
                "attempts_per_message": {"type": ["number", "null"], "minimum": 0, "description": "attempts / (delivered + dead-lettered)"},
                "delivery_ms": {"allOf": [schema("Latency")], "description": "submit to delivered"},
                "attempt_ms": {"allOf": [schema("Latency")], "description": "one attempt"},
                "runs": {"type": "object", "required": ["started", "completed", "failed", "expired"],
                    "properties": {"started": count, "completed": count, "failed": count, "expired": count}},
                "top_failures": {"type": "array", "description": "failed attempts by reason (the status code answered, else the error), most frequent first, at most 10",
                    "items": {"type": "object", "required": ["reason", "count", "dead_lettered", "last_at"],
                        "properties": {"reason": {"type": "string"}, "count": count, "dead_lettered": count, "last_at": time}}},
                "series_step_seconds": {"type": "integer", "minimum": 60},
                "series": {"type": "array", "description": "one point per hour (per window when it is shorter), oldest first",
                    "items": {"type": "object", "required": ["start", "delivered", "retried", "failed", "dead_lettered", "success_rate", "runs_completed", "runs_failed"],
                        "properties": {"start": time, "delivered": count, "retried": count, "failed": count, "dead_lettered": count, "success_rate": rate, "runs_completed": count, "runs_failed": count}}},
            }},
    })
}
