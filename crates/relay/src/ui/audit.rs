//! The Audit page: every operator action (API, dashboard, CLI), newest first: who (the
//! token's name), what, when, what to, how many messages, and the filter or reason.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use ferrule_store::{AuditFilter, Store};
use serde::Deserialize;

use super::{Layout, Viewer, render, when};
use crate::audit::Action;
use crate::state::AppState;

/// Query of `GET /ui/audit`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct AuditQuery {
    actor: String,
    action: String,
    cursor: String,
}

#[derive(Debug)]
struct Row {
    at: String,
    actor: String,
    action: String,
    target: String,
    count: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "ui/audit.html")]
struct Page {
    layout: Layout,
    actor: String,
    action: String,
    actions: Vec<&'static str>,
    rows: Vec<Row>,
    next: Option<String>,
    error: Option<String>,
}

/// `GET /ui/audit?actor=&action=&cursor=`.
pub(crate) async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<AuditQuery>,
) -> Response {
    let mut rows = Vec::new();
    let mut next = None;
    let mut error = None;
    let filter = AuditFilter {
        actor: Some(q.actor.trim().to_owned()).filter(|a| !a.is_empty()),
        action: Action::from_name(&q.action).map(|a| a.as_str().to_owned()),
        since: None,
    };
    match crate::api::messages::parse_cursor(Some(q.cursor.clone())) {
        Err(e) => error = Some(e.message),
        Ok(cursor) => match state.store.list_audit(&filter, cursor.as_ref(), 50).await {
            Ok(page) => {
                rows = page
                    .entries
                    .into_iter()
                    .map(|e| Row {
                        at: when(e.at),
                        actor: e.actor,
                        action: e.action,
                        target: e.target.unwrap_or_default(),
                        count: e.count.map(|c| c.to_string()).unwrap_or_default(),
                        detail: if e.detail.as_object().is_some_and(|o| o.is_empty()) {
                            String::new()
                        } else {
                            e.detail.to_string()
                        },
                    })
                    .collect();
                next = page.next.map(|c| {
                    format!(
                        "/ui/audit?actor={}&action={}&cursor={}",
                        super::enc(&q.actor),
                        super::enc(&q.action),
                        c.as_str()
                    )
                });
            }
            Err(e) => error = Some(crate::api::ApiError::from(e).message),
        },
    }
    render(&Page {
        layout: Layout::new(&viewer, "Audit log", "audit"),
        actor: q.actor,
        action: q.action,
        actions: Action::ALL.iter().map(|a| a.as_str()).collect(),
        rows,
        next,
        error,
    })
}
