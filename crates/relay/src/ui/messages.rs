//! The Messages page (a filtered, cursor-paginated listing) and a message's own page (its
//! payload, escaped, every attempt, and replay or cancel).

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use ferrule_store::{Filter, Message, Store};

use super::filters::{FilterForm, RANGES};
use super::session::CsrfForm;
use super::{Layout, UiError, Viewer, done, render, when, when_opt};
use crate::api::caller::Caller;
use crate::api::extract::ApiPath;
use crate::state::AppState;

/// Rows per page.
pub(crate) const PAGE: usize = 50;

/// A listing row.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) id: String,
    pub(crate) destination: String,
    pub(crate) status: &'static str,
    pub(crate) attempts: u32,
    pub(crate) created: String,
    pub(crate) last_error: String,
}

impl From<Message> for Row {
    fn from(m: Message) -> Self {
        Row {
            id: m.id.to_string(),
            destination: m.destination,
            status: m.status.as_str(),
            attempts: m.attempts,
            created: when(m.created_at),
            last_error: m.last_error.unwrap_or_default(),
        }
    }
}

/// A listing's page of rows and the link to the next one.
pub(crate) struct Listing {
    pub(crate) rows: Vec<Row>,
    pub(crate) next: Option<String>,
    pub(crate) notes: Vec<String>,
    pub(crate) error: Option<String>,
}

/// Reads one page of `form`'s filter on top of `base`; a bad filter is shown, not failed.
pub(crate) async fn listing(
    state: &AppState,
    form: &FilterForm,
    base: Filter,
    with_status: bool,
    path: &str,
) -> Listing {
    let mut listing = Listing {
        rows: Vec::new(),
        next: None,
        notes: Vec::new(),
        error: None,
    };
    let filter = match form.filter(state, base, with_status).await {
        Ok((filter, notes)) => {
            listing.notes = notes;
            filter
        }
        Err(UiError::Api(e)) => {
            listing.error = Some(e.message);
            return listing;
        }
        Err(_) => return listing,
    };
    let cursor = match crate::api::messages::parse_cursor(Some(form.cursor.clone())) {
        Ok(c) => c,
        Err(e) => {
            listing.error = Some(e.message);
            return listing;
        }
    };
    match state.store.list(&filter, cursor.as_ref(), PAGE).await {
        Ok(page) => {
            listing.rows = page.messages.into_iter().map(Row::from).collect();
            listing.next = page.next.map(|c| {
                let q = form.query();
                let sep = if q.is_empty() { "" } else { "&" };
                format!("{path}?{q}{sep}cursor={}", c.as_str())
            });
        }
        Err(e) => listing.error = Some(crate::api::ApiError::from(e).message),
    }
    listing
}

#[derive(Template)]
#[template(path = "ui/messages.html")]
struct ListPage {
    layout: Layout,
    form: FilterForm,
    destinations: Vec<String>,
    statuses: Vec<&'static str>,
    ranges: Vec<(&'static str, &'static str)>,
    listing: Listing,
    first_page: Option<String>,
}

/// `GET /ui/messages?status=&destination=&range=&since=&until=&idempotency_key=&ordering_key=&payload_contains=&cursor=`.
pub(crate) async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(form): Query<FilterForm>,
) -> Response {
    let listing = listing(&state, &form, Filter::all(), true, "/ui/messages").await;
    let first_page = (!form.cursor.is_empty()).then(|| format!("/ui/messages?{}", form.query()));
    render(&ListPage {
        layout: Layout::new(&viewer, "Messages", "messages"),
        destinations: state.destinations.keys().cloned().collect(),
        statuses: vec![
            "",
            "queued",
            "delivering",
            "retrying",
            "delivered",
            "dead",
            "cancelled",
        ],
        ranges: RANGES.to_vec(),
        form,
        listing,
        first_page,
    })
}

/// One attempt or transition of a message.
#[derive(Debug)]
struct EventRow {
    seq: u32,
    at: String,
    status: &'static str,
    attempt: u32,
    outcome: &'static str,
    code: String,
    duration_ms: String,
    detail: String,
    repeats: u32,
}

#[derive(Template)]
#[template(path = "ui/message.html")]
struct ShowPage {
    layout: Layout,
    id: String,
    destination: String,
    status: &'static str,
    attempts: u32,
    idempotency_key: String,
    ordering_key: String,
    created: String,
    updated: String,
    delivered: String,
    next_attempt: String,
    last_error: String,
    run: String,
    payload: String,
    response: Option<String>,
    events: Vec<EventRow>,
    can_replay: bool,
    can_cancel: bool,
}

/// `GET /ui/messages/{id}`: the message, its payload (escaped like all text) and timeline.
pub(crate) async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let parsed = crate::api::messages::parse_id(&id)?;
    let Some(detail) = state.store.get(parsed).await? else {
        return Err(crate::api::ApiError::not_found(format!("message {id} not found")).into());
    };
    let m = detail.message;
    let events = detail
        .events
        .into_iter()
        .map(|e| EventRow {
            seq: e.seq,
            at: when(e.at),
            status: e.status.as_str(),
            attempt: e.attempt,
            outcome: e.outcome.map(|o| o.as_str()).unwrap_or(""),
            code: e.code.unwrap_or_default(),
            duration_ms: e
                .duration
                .map(|d| d.as_millis().to_string())
                .unwrap_or_default(),
            detail: e.detail.unwrap_or_default(),
            repeats: e.repeats,
        })
        .collect();
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let page = ShowPage {
        layout: Layout::new(&viewer, format!("Message {id}"), "messages"),
        id: m.id.to_string(),
        destination: m.destination.clone(),
        status: m.status.as_str(),
        attempts: m.attempts,
        idempotency_key: m.idempotency_key.clone().unwrap_or_default(),
        ordering_key: m.ordering_key.clone().unwrap_or_default(),
        created: when(m.created_at),
        updated: when(m.updated_at),
        delivered: when_opt(m.delivered_at),
        next_attempt: if m.status.is_pending() {
            when(m.next_attempt_at)
        } else {
            String::new()
        },
        last_error: m.last_error.clone().unwrap_or_default(),
        run: m
            .run
            .as_ref()
            .map(|r| r.run.to_string())
            .unwrap_or_default(),
        payload: pretty(&m.payload),
        response: detail.response.as_ref().map(pretty),
        events,
        can_replay: viewer.can_write() && m.status.is_terminal() && m.run.is_none(),
        can_cancel: viewer.can_write() && m.status.is_pending(),
    };
    Ok(render(&page))
}

/// `POST /ui/messages/{id}/{replay|cancel}`: the API's replay or cancel, as the viewer.
pub(crate) async fn act(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, UiError> {
    viewer.may_act(&form.csrf)?;
    let caller = Caller(viewer.name.clone());
    let back = format!("/ui/messages/{}", super::enc(&id));
    let flash = match action.as_str() {
        "replay" => {
            let _ = crate::api::messages::replay(State(state), caller, ApiPath(id.clone())).await?;
            format!("Message {id} is queued again.")
        }
        "cancel" => {
            let _ = crate::api::messages::cancel(State(state), caller, ApiPath(id.clone())).await?;
            format!("Message {id} is cancelled.")
        }
        _ => {
            return Err(crate::api::ApiError::not_found(format!("no action `{action}`")).into());
        }
    };
    Ok(done(&viewer, &back, flash))
}
