//! The Inbound page: recorded Telegram updates and e-mails, newest first, by source.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use ferrule_store::Store;
use serde::Deserialize;

use super::{Layout, Viewer, render, when};
use crate::state::AppState;

/// Query of `GET /ui/inbound`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct InboundQuery {
    source: String,
    cursor: String,
}

#[derive(Debug)]
struct Row {
    source: String,
    external_id: String,
    received: String,
    payload: String,
}

#[derive(Template)]
#[template(path = "ui/inbound.html")]
struct Page {
    layout: Layout,
    source: String,
    rows: Vec<Row>,
    next: Option<String>,
    error: Option<String>,
}

/// Longest payload excerpt shown in the list.
const EXCERPT: usize = 300;

/// `GET /ui/inbound?source=&cursor=`.
pub(crate) async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<InboundQuery>,
) -> Response {
    let mut rows = Vec::new();
    let mut next = None;
    let mut error = None;
    let source = q.source.trim().to_owned();
    match crate::api::messages::parse_cursor(Some(q.cursor.clone())) {
        Err(e) => error = Some(e.message),
        Ok(cursor) => {
            let from = (!source.is_empty()).then_some(source.as_str());
            match state.store.list_inbound(from, cursor.as_ref(), 50).await {
                Ok(page) => {
                    rows = page
                        .events
                        .into_iter()
                        .map(|e| {
                            let mut payload = e.payload.to_string();
                            if let Some((cut, _)) = payload.char_indices().nth(EXCERPT) {
                                payload.truncate(cut);
                                payload.push('…');
                            }
                            Row {
                                source: e.source,
                                external_id: e.external_id,
                                received: when(e.received_at),
                                payload,
                            }
                        })
                        .collect();
                    next = page.next.map(|c| {
                        format!(
                            "/ui/inbound?source={}&cursor={}",
                            super::enc(&source),
                            c.as_str()
                        )
                    });
                }
                Err(e) => error = Some(crate::api::ApiError::from(e).message),
            }
        }
    }
    render(&Page {
        layout: Layout::new(&viewer, "Inbound", "inbound"),
        source,
        rows,
        next,
        error,
    })
}
