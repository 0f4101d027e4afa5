//! The Dead letters page: the same filters as Messages (and the error text), and bulk replay
//! or purge of everything matching a filter: a preview that counts what it will touch, a
//! confirmation, then a background job ([`super::jobs`]).

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use ferrule_store::{Filter, ReplayTarget, Status, Store};
use serde::Deserialize;

use super::filters::{FilterForm, RANGES};
use super::jobs::{self, Op};
use super::messages::{Listing, listing};
use super::{Layout, Ui, UiError, Viewer, render};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "ui/dead_letters.html")]
struct ListPage {
    layout: Layout,
    form: FilterForm,
    destinations: Vec<String>,
    statuses: Vec<&'static str>,
    ranges: Vec<(&'static str, &'static str)>,
    listing: Listing,
    first_page: Option<String>,
    hidden: Vec<(&'static str, String)>,
}

/// `GET /ui/dead-letters?…`: the dead letters matching the filter.
pub(crate) async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(mut form): Query<FilterForm>,
) -> Response {
    form.status.clear();
    let listing = listing(
        &state,
        &form,
        Filter::status(Status::Dead),
        false,
        "/ui/dead-letters",
    )
    .await;
    let first_page =
        (!form.cursor.is_empty()).then(|| format!("/ui/dead-letters?{}", form.query()));
    render(&ListPage {
        layout: Layout::new(&viewer, "Dead letters", "dead"),
        destinations: state.destinations.keys().cloned().collect(),
        statuses: Vec::new(),
        ranges: RANGES.to_vec(),
        hidden: form.pairs(),
        form,
        listing,
        first_page,
    })
}

/// Query of the preview: the filter and the operation.
#[derive(Debug, Deserialize)]
pub(crate) struct PreviewQuery {
    #[serde(flatten)]
    form: HashMap<String, String>,
}

fn split(mut fields: HashMap<String, String>) -> (Option<Op>, FilterForm, String, u64) {
    let op = fields.remove("op").and_then(|o| Op::parse(&o));
    let csrf = fields.remove("csrf").unwrap_or_default();
    let expected = fields
        .remove("expected")
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    fields.remove("cursor");
    let form: FilterForm = serde_json::to_value(&fields)
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    (op, form, csrf, expected)
}

#[derive(Template)]
#[template(path = "ui/dead_preview.html")]
struct PreviewPage {
    layout: Layout,
    op: &'static str,
    count: u64,
    filter: String,
    hidden: Vec<(&'static str, String)>,
    back: String,
    rate: u32,
    notes: Vec<String>,
}

async fn matching(state: &AppState, form: &FilterForm) -> Result<(Filter, Vec<String>), UiError> {
    let mut form = form.clone();
    form.status.clear();
    form.filter(state, Filter::status(Status::Dead), false)
        .await
}

/// `GET /ui/dead-letters/preview?op=replay|purge&…`: how many dead letters the operation
/// would touch (nothing changes), and the confirmation form.
pub(crate) async fn preview(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<PreviewQuery>,
) -> Result<Response, UiError> {
    let (op, form, _, _) = split(q.form);
    let op = op.ok_or_else(|| {
        crate::api::ApiError::bad_request("invalid_query", "`op` must be replay or purge")
            .with_field("op")
    })?;
    let (filter, notes) = matching(&state, &form).await?;
    let count = state
        .store
        .replay(ReplayTarget::Filter(filter), true)
        .await?
        .count;
    Ok(render(&PreviewPage {
        layout: Layout::new(&viewer, format!("Bulk {}", op.as_str()), "dead"),
        op: op.as_str(),
        count,
        filter: form.detail().to_string(),
        hidden: form.pairs(),
        back: format!("/ui/dead-letters?{}", form.query()),
        rate: state.config.ui.bulk_rate,
        notes,
    }))
}

/// `POST /ui/dead-letters/bulk`: starts the confirmed job and shows its progress.
pub(crate) async fn start(
    State(state): State<AppState>,
    Extension(ui): Extension<Arc<Ui>>,
    viewer: Viewer,
    Form(fields): Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let (op, form, csrf, expected) = split(fields);
    viewer.may_act(&csrf)?;
    let op = op.ok_or_else(|| {
        crate::api::ApiError::bad_request("invalid_request", "`op` must be replay or purge")
            .with_field("op")
    })?;
    let (filter, _) = matching(&state, &form).await?;
    let id = jobs::start(
        &state,
        &ui,
        op,
        viewer.name.clone(),
        filter,
        form.detail(),
        expected,
    );
    Ok(Redirect::to(&format!("/ui/jobs/{id}")).into_response())
}
