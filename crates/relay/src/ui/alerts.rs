//! The Alerts page: the alerts this relay raised since it started (kept in memory, the latest
//! [`crate::alerts::RECENT_ALERTS`]) and what became of each; the alert messages themselves
//! are ordinary messages to the alert destinations, listed from the store.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::{Layout, Viewer, render, when};
use crate::alerts::Raised;
use crate::state::AppState;

#[derive(Debug)]
struct Row {
    at: String,
    kind: String,
    subject: String,
    text: String,
    outcome: String,
}

#[derive(Template)]
#[template(path = "ui/alerts.html")]
struct Page {
    layout: Layout,
    enabled: bool,
    rows: Vec<Row>,
    targets: Vec<String>,
    kept: usize,
}

fn outcome(r: Raised) -> String {
    match r {
        Raised::Queued { created } => format!("queued ({created} message(s))"),
        Raised::Held => "held: sent when its interval ends".into(),
        Raised::Dropped => "dropped: over the per-minute cap".into(),
        Raised::Disabled => "not sent: no alert destination configured".into(),
        Raised::Failed => "failed: the store refused it".into(),
    }
}

/// `GET /ui/alerts`.
pub(crate) async fn list(State(state): State<AppState>, viewer: Viewer) -> Response {
    let rows = state
        .alerts
        .recent()
        .into_iter()
        .map(|(a, r)| Row {
            at: when(a.at),
            kind: a.kind.to_string(),
            subject: a.subject,
            text: a.text,
            outcome: outcome(r),
        })
        .collect();
    let targets = state
        .destinations
        .keys()
        .filter(|d| state.alerts.is_target(d))
        .cloned()
        .collect();
    render(&Page {
        layout: Layout::new(&viewer, "Alerts", "alerts"),
        enabled: state.alerts.enabled(),
        rows,
        targets,
        kept: crate::alerts::RECENT_ALERTS,
    })
}
