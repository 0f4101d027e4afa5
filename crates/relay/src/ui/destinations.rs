//! The Destinations page: per destination its breaker (with reset / force-open / disable),
//! pause / resume, health and health check, rate limit (as configured, and what it is doing
//! now: deferrals in the last minute, the next free slot, a Telegram bot's windows), depths,
//! last error, and success rate, attempt latency and throughput over the last hour.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::Response;
use std::time::Duration;

use ferrule_store::{SeriesQuery, Store};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Layout, UiError, Viewer, age, done, render, when};
use crate::api::admin::{ActionQuery, breaker_action};
use crate::api::caller::Caller;
use crate::api::extract::{ApiPath, ApiQuery};
use crate::api::pause::{PauseQuery, pause, resume};
use crate::state::AppState;

/// One destination's row.
#[derive(Debug)]
pub(crate) struct Row {
    name: String,
    kind: &'static str,
    endpoint: String,
    breaker: String,
    override_by: String,
    paused: String,
    health: String,
    last_error: String,
    health_check: String,
    rate_limit: String,
    /// What the limits are doing now (empty without a limit).
    rate_now: String,
    /// A Telegram bot's windows now (empty for other destinations).
    telegram_now: String,
    queue: u64,
    dead: u64,
    stats: Stats,
}

/// Delivery figures of the last hour.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) success_rate: String,
    pub(crate) p50: String,
    pub(crate) p95: String,
    pub(crate) throughput: String,
}

#[derive(Template)]
#[template(path = "ui/destinations.html")]
struct Page {
    layout: Layout,
    rows: Vec<Row>,
    stats_note: String,
}

fn text(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_default()
}

/// The figures of the last hour for `destination`, from the per-minute rollups.
async fn stats(state: &AppState, destination: &str) -> Option<Stats> {
    let now = state.clock.system_now();
    let mut query = SeriesQuery::new(
        now - Duration::from_secs(3600),
        now,
        Duration::from_secs(3600),
    );
    query.destination = Some(destination.to_owned());
    let series = match state.store.rollup_series(&query).await {
        Ok(series) => series,
        Err(e) => {
            tracing::warn!(error = %e, destination, "the destinations page cannot read the rollups");
            return None;
        }
    };
    let (d, _) = series.totals();
    let ended = d.delivered + d.dead_lettered;
    let ms = |v: Option<Duration>| {
        v.map(|v| format!("{} ms", v.as_millis()))
            .unwrap_or_else(|| "—".into())
    };
    Some(Stats {
        success_rate: if ended == 0 {
            "— (nothing ended)".into()
        } else {
            format!("{:.1} %", d.delivered as f64 * 100.0 / ended as f64)
        },
        p50: ms(d.attempt_latency.quantile(0.5)),
        p95: ms(d.attempt_latency.quantile(0.95)),
        throughput: format!(
            "{} delivered, {} attempts ({:.2}/min)",
            d.delivered,
            d.attempts,
            d.delivered as f64 / 60.0
        ),
    })
}

/// `GET /ui/destinations`.
pub(crate) async fn page(State(state): State<AppState>, viewer: Viewer) -> Response {
    let depths = state.store.depths().await.ok();
    let limits: Vec<_> = state.config.destinations().unwrap_or_default();
    let mut rows = Vec::new();
    let mut any_stats = false;
    for d in state.destinations.values() {
        let status = d.breaker.status();
        let breaker = text(&json!(status.state));
        let override_by = match state.overrides.get(&d.name).await {
            Some(o) => format!(
                "held {} by {} at {}{}",
                text(&json!(o.state)).replace('_', " "),
                o.set_by,
                o.set_at,
                o.reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
            None => String::new(),
        };
        let paused = match state.paused.get(&d.name).await {
            Some(p) => format!(
                "paused by {} at {}{}",
                p.paused_by,
                when(p.paused_at),
                p.reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
            None => String::new(),
        };
        let health = json!(d.health.snapshot());
        let last_error = match health.get("last_error") {
            Some(e) if !e.is_null() => format!("{} ({})", text(&e["message"]), text(&e["at"])),
            _ => String::new(),
        };
        let health_check = d
            .health_check
            .as_ref()
            .map(|c| {
                let c = json!(c.snapshot());
                text(&c["health"]["status"])
            })
            .unwrap_or_else(|| "none".into());
        let rate_limit = limits
            .iter()
            .find(|r| r.name == d.name)
            .and_then(|r| r.rate_limit.as_ref())
            .map(|r| {
                format!(
                    "{} per {}{}",
                    r.limit,
                    humantime::format_duration(r.per),
                    r.burst.map(|b| format!(", burst {b}")).unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "none".into());
        let rate_limit = if d.telegram_limits.is_some() {
            format!("{rate_limit}; Telegram per-chat limits")
        } else {
            rate_limit
        };
        let rate_now = crate::api::health::rate_limit_state(d)
            .map(|_| {
                let s = d.rate_watch.snapshot();
                let now = state.clock.system_now();
                let next = match s.next_slot_at {
                    Some(at) => format!(
                        "; next slot in {} ({})",
                        age(at.duration_since(now).unwrap_or_default()),
                        when(at)
                    ),
                    None => String::new(),
                };
                format!(
                    "{} deferred in the last minute{next}",
                    s.deferred_last_minute
                )
            })
            .unwrap_or_default();
        let telegram_now = d
            .telegram_limits
            .as_ref()
            .map(|l| {
                let w = l.windows();
                format!(
                    "bot window {} of {} per {}; {} chat(s) waiting; {} message(s) in the bot's line",
                    w.bot_used,
                    w.bot_limit,
                    humantime::format_duration(Duration::from_millis(w.bot_per_ms)),
                    w.chats_waiting,
                    w.line
                )
            })
            .unwrap_or_default();
        let (queue, dead) = depths
            .as_ref()
            .and_then(|x| x.by_destination.iter().find(|x| x.destination == d.name))
            .map(|x| (x.queue, x.dead))
            .unwrap_or((0, 0));
        let stats = match stats(&state, &d.name).await {
            Some(s) => {
                any_stats = true;
                s
            }
            None => Stats::default(),
        };
        rows.push(Row {
            name: d.name.clone(),
            kind: d.kind.as_str(),
            endpoint: d.endpoint.clone(),
            breaker,
            override_by,
            paused,
            health: text(&health["status"]),
            last_error,
            health_check,
            rate_limit,
            rate_now,
            telegram_now,
            queue,
            dead,
            stats,
        });
    }
    let stats_note = if any_stats {
        "Success rate, attempt latency and throughput cover the last hour, from the per-minute rollups."
    } else {
        "Success rate, attempt latency and throughput come from the per-minute rollups, which cannot be read just now (see the relay's log)."
    };
    render(&Page {
        layout: Layout::new(&viewer, "Destinations", "destinations"),
        rows,
        stats_note: stats_note.into(),
    })
}

/// An action's form: the CSRF token and, for a pause or a breaker override, a reason.
#[derive(Debug, Deserialize)]
pub(crate) struct ActForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /ui/destinations/{destination}/{reset|force-open|disable|pause|resume}`: the API's
/// breaker and pause operations, as the viewer.
pub(crate) async fn act(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((destination, action)): Path<(String, String)>,
    Form(form): Form<ActForm>,
) -> Result<Response, UiError> {
    viewer.may_act(&form.csrf)?;
    let caller = Caller(viewer.name.clone());
    let reason = form.reason.filter(|r| !r.trim().is_empty());
    let flash = match action.as_str() {
        "reset" | "force-open" | "disable" => {
            let q = ActionQuery { reason };
            let _ = breaker_action(
                State(state),
                caller,
                ApiPath((destination.clone(), action.clone())),
                ApiQuery(q),
            )
            .await?;
            format!("{destination}: breaker {action} done.")
        }
        "pause" => {
            let q = PauseQuery { reason };
            let _ = pause(
                State(state),
                caller,
                ApiPath(destination.clone()),
                ApiQuery(q),
            )
            .await?;
            format!("{destination} is paused: its messages stay queued.")
        }
        "resume" => {
            let _ = resume(State(state), caller, ApiPath(destination.clone())).await?;
            format!("{destination} is resumed.")
        }
        _ => {
            return Err(crate::api::ApiError::not_found(format!("no action `{action}`")).into());
        }
    };
    Ok(done(&viewer, "/ui/destinations", flash))
}
