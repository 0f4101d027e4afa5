//! The Alerts page: the store's alert log (every alert a relay sharing the store raised, kept
//! for `store.retention`), newest first, filtered by kind, subject and time like
//! `GET /v1/alerts`, with what became of each and links to the messages queued for it.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use ferrule_store::Store;
use serde::Deserialize;

use super::{Layout, Viewer, enc, render, when};
use crate::alerts::AlertKind;
use crate::api::alerts::{AlertsQuery, parse};
use crate::state::AppState;

/// How many alerts a page shows.
const PAGE: usize = 50;

/// Query of `GET /ui/alerts` (every field optional; empty is none).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct AlertsForm {
    kind: String,
    subject: String,
    since: String,
    until: String,
    cursor: String,
}

#[derive(Debug)]
struct Row {
    at: String,
    severity: String,
    kind: String,
    subject: String,
    text: String,
    outcome: String,
    messages: Vec<String>,
}

#[derive(Template)]
#[template(path = "ui/alerts.html")]
struct Page {
    layout: Layout,
    enabled: bool,
    targets: Vec<String>,
    form: AlertsForm,
    kinds: Vec<&'static str>,
    rows: Vec<Row>,
    next: Option<String>,
    error: Option<String>,
}

fn outcome(name: &str) -> &str {
    match name {
        "queued" => "queued",
        "held" => "held: sent when its interval ends",
        "dropped" => "dropped: over the per-minute cap",
        "disabled" => "not sent: no alert destination",
        "failed" => "failed: the store refused it",
        other => other,
    }
}

/// `GET /ui/alerts?kind=&subject=&since=&until=&cursor=`.
pub(crate) async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(form): Query<AlertsForm>,
) -> Response {
    let mut rows = Vec::new();
    let mut next = None;
    let mut error = None;
    let query = AlertsQuery {
        kind: Some(form.kind.clone()),
        subject: Some(form.subject.trim().to_owned()),
        since: Some(form.since.trim().to_owned()),
        until: Some(form.until.trim().to_owned()),
        cursor: Some(form.cursor.clone()),
        limit: None,
    };
    match parse(query) {
        Err(e) => error = Some(e.message),
        Ok((filter, cursor)) => match state
            .store
            .list_alerts(&filter, cursor.as_ref(), PAGE)
            .await
        {
            Ok(page) => {
                rows = page
                    .alerts
                    .into_iter()
                    .map(|a| Row {
                        at: when(a.at),
                        severity: a.severity.unwrap_or_default(),
                        outcome: outcome(&a.outcome).to_owned(),
                        kind: a.kind,
                        subject: a.subject,
                        text: a.message,
                        messages: a.messages.iter().map(ToString::to_string).collect(),
                    })
                    .collect();
                next = page.next.map(|c| {
                    format!(
                        "/ui/alerts?kind={}&subject={}&since={}&until={}&cursor={}",
                        enc(&form.kind),
                        enc(&form.subject),
                        enc(&form.since),
                        enc(&form.until),
                        c.as_str()
                    )
                });
            }
            Err(e) => error = Some(crate::api::ApiError::from(e).message),
        },
    }
    let targets = state
        .destinations
        .keys()
        .filter(|d| state.alerts.is_target(d))
        .cloned()
        .collect();
    render(&Page {
        layout: Layout::new(&viewer, "Alerts", "alerts"),
        enabled: state.alerts.enabled(),
        targets,
        form,
        kinds: AlertKind::ALL.iter().map(|k| k.as_str()).collect(),
        rows,
        next,
        error,
    })
}
