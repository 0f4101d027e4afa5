//! The Overview page: overall health and each dependency's (what `/status` computes), queue
//! and dead-letter depth, the oldest queued message's age, and deliveries per bucket by
//! outcome over 1 h, 24 h or 7 d; its live panel refreshes through htmx and can be paused.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use std::time::Duration;

use ferrule_store::{SeriesQuery, Store};
use serde::Deserialize;
use serde_json::Value;

use super::chart::{self, Bar};
use super::{Layout, Viewer, age, is_htmx, render};
use crate::state::AppState;

/// Query of `GET /ui`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct OverviewQuery {
    range: String,
}

/// A chart range: its name, length and bucket width.
pub(crate) fn range(name: &str) -> (&'static str, u64, u64, &'static str) {
    match name {
        "24h" => ("24h", 86_400, 15 * 60, "per 15 minutes"),
        "7d" => ("7d", 7 * 86_400, 2 * 3600, "per 2 hours"),
        _ => ("1h", 3600, 60, "per minute"),
    }
}

/// One dependency's row.
#[derive(Debug)]
struct Dependency {
    name: String,
    /// Where it is shown in full: its destination's section on the Destinations page.
    link: String,
    kind: &'static str,
    status: String,
    breaker: String,
    last_error: String,
}

/// The dependencies that are not healthy, said next to the overall status: how many of each
/// kind are degraded or unhealthy, and a link to each.
#[derive(Debug, Default)]
struct Trouble {
    /// E.g. `1 destination unhealthy · 2 health checks degraded`.
    summary: String,
    /// Each one: its name, its status and where it is shown.
    each: Vec<(String, String, String)>,
}

impl Trouble {
    fn is_empty(&self) -> bool {
        self.each.is_empty()
    }
}

/// What [`Trouble`] says of `dependencies`. The overall status stays `ok` while a destination
/// is only degraded (its calls still go through); this says so on the page anyway.
fn trouble(dependencies: &[Dependency]) -> Trouble {
    let mut counts: Vec<(&str, &str, usize)> = Vec::new();
    let mut each = Vec::new();
    for d in dependencies {
        if d.status.is_empty() || d.status == "healthy" {
            continue;
        }
        match counts
            .iter_mut()
            .find(|(kind, status, _)| *kind == d.kind && *status == d.status)
        {
            Some((_, _, n)) => *n += 1,
            None => counts.push((d.kind, &d.status, 1)),
        }
        let link = if d.link.is_empty() {
            "#dependencies".to_owned()
        } else {
            d.link.clone()
        };
        each.push((d.name.clone(), d.status.clone(), link));
    }
    // The worse first, then by kind.
    counts.sort_by_key(|(kind, status, _)| (*status != "unhealthy", *kind));
    let summary = counts
        .iter()
        .map(|(kind, status, n)| {
            let kind = match (*kind, *n) {
                (kind, 1) => kind.to_owned(),
                ("inbound", _) => "inbound sides".to_owned(),
                ("health check", _) => "health checks".to_owned(),
                (kind, _) => format!("{kind}s"),
            };
            format!("{n} {kind} {status}")
        })
        .collect::<Vec<_>>()
        .join(" · ");
    Trouble { summary, each }
}

#[derive(Template)]
#[template(path = "ui/overview_live.html")]
struct Live {
    status: String,
    trouble: Trouble,
    queue: u64,
    scheduled: u64,
    dead: u64,
    oldest: String,
    counters: Vec<(String, u64)>,
    dependencies: Vec<Dependency>,
    range: &'static str,
    chart: Option<String>,
    chart_note: String,
    legend: bool,
}

#[derive(Template)]
#[template(path = "ui/overview.html")]
struct Page {
    layout: Layout,
    range: &'static str,
    live: String,
}

fn text(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_default()
}

fn error_text(v: &Value) -> String {
    match v.get("last_error") {
        Some(e) if !e.is_null() => format!("{} ({})", text(&e["message"]), text(&e["at"])),
        _ => String::new(),
    }
}

/// The deliveries of the range, bucketed, from the per-minute rollups; `None` when the
/// store cannot answer (the page says so).
async fn deliveries(state: &AppState, range_name: &str) -> Option<Vec<Bar>> {
    let (_, length, step, _) = range(range_name);
    let now = state.clock.system_now();
    // Whole buckets, the last one holding now.
    let step_ms = step * 1000;
    let now_ms = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let end = std::time::UNIX_EPOCH + Duration::from_millis((now_ms / step_ms + 1) * step_ms);
    let from = end - Duration::from_secs(length);
    let query = SeriesQuery::new(from, end, Duration::from_secs(step));
    match state.store.rollup_series(&query).await {
        Ok(series) => Some(
            series
                .points
                .iter()
                .map(|p| Bar {
                    start: Some(p.start),
                    delivered: p.deliveries.delivered,
                    retried: p.deliveries.retried,
                    dead: p.deliveries.dead_lettered,
                })
                .collect(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "the overview cannot read the rollups");
            None
        }
    }
}

async fn live(state: &AppState, range_name: &str) -> Live {
    let status = crate::api::health::status(State(state.clone())).await.0;
    let depths = state.store.depths().await.ok();
    let now = state.clock.system_now();
    let oldest = depths
        .as_ref()
        .and_then(|d| d.oldest_due_at)
        .map(|at| age(now.duration_since(at).unwrap_or_default()))
        .unwrap_or_else(|| "—".into());
    let mut dependencies = Vec::new();
    let store = &status["dependencies"]["store"];
    dependencies.push(Dependency {
        name: "store".into(),
        link: String::new(),
        kind: "store",
        status: text(&store["status"]),
        breaker: String::new(),
        last_error: error_text(store),
    });
    if let Some(map) = status["dependencies"]["destinations"].as_object() {
        for (name, d) in map {
            let paused = if d["paused"].is_null() {
                ""
            } else {
                " (paused)"
            };
            let link = format!("/ui/destinations#destination-{name}");
            dependencies.push(Dependency {
                name: format!("{name}{paused}"),
                link: link.clone(),
                kind: "destination",
                status: text(&d["health"]["status"]),
                breaker: text(&d["breaker"]["state"]),
                last_error: error_text(&d["health"]),
            });
            if d.get("inbound").is_some() {
                dependencies.push(Dependency {
                    name: format!("{name} inbound"),
                    link: link.clone(),
                    kind: "inbound",
                    status: text(&d["inbound"]["health"]["status"]),
                    breaker: String::new(),
                    last_error: error_text(&d["inbound"]["health"]),
                });
            }
            if let Some(check) = d.get("health_check") {
                dependencies.push(Dependency {
                    name: format!("{name} health check"),
                    link: link.clone(),
                    kind: "health check",
                    status: text(&check["health"]["status"]),
                    breaker: String::new(),
                    last_error: error_text(&check["health"]),
                });
            }
        }
    }
    let counters = status["counters"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    matches!(
                        k.as_str(),
                        "submitted" | "delivered" | "retried" | "dead" | "deferred"
                    )
                })
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    let (name, _, _, per) = range(range_name);
    let bars = deliveries(state, name).await;
    let (chart, chart_note) = match &bars {
        Some(bars) => (
            Some(chart::stacked(
                bars,
                &format!("Deliveries {per} over the last {name}, by outcome"),
                per,
            )),
            format!("Deliveries {per}, by outcome, from the per-minute rollups."),
        ),
        None => (
            None,
            "The per-minute rollups cannot be read just now (see the relay's log).".to_owned(),
        ),
    };
    let trouble = trouble(&dependencies);
    Live {
        status: text(&status["status"]),
        trouble,
        queue: status["queue_depth"].as_u64().unwrap_or(0),
        scheduled: status["scheduled_depth"].as_u64().unwrap_or(0),
        dead: status["dead_letter_depth"].as_u64().unwrap_or(0),
        oldest,
        counters,
        dependencies,
        range: name,
        legend: chart.is_some(),
        chart,
        chart_note,
    }
}

/// `GET /ui?range=1h|24h|7d`: the page, or only its live panel for htmx.
pub(crate) async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Query(q): Query<OverviewQuery>,
) -> Response {
    let (name, ..) = range(&q.range);
    let live = live(&state, name).await;
    if is_htmx(&headers) {
        return render(&live);
    }
    let live = live.render().unwrap_or_default();
    render(&Page {
        layout: Layout::new(&viewer, "Overview", "overview"),
        range: name,
        live,
    })
}
