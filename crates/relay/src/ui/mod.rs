//! The operator's dashboard at `/ui`: server-rendered pages (askama templates under
//! `crates/relay/templates/ui`, checked when the crate compiles), a pinned htmx for partial
//! updates, sign-in with an API token, and the operator actions the API offers, through the
//! same code paths.
//!
//! Every page reads without JavaScript: htmx only refreshes parts (the overview's live panel,
//! a bulk job's progress). Each page is one module; `session` owns sign-in, the session
//! cookie and CSRF tokens; `assets` the embedded files.

pub(crate) mod alerts;
pub(crate) mod assets;
pub(crate) mod audit;
pub(crate) mod chart;
pub(crate) mod dead_letters;
pub(crate) mod destinations;
pub(crate) mod filters;
pub(crate) mod inbound;
pub(crate) mod jobs;
pub(crate) mod messages;
pub(crate) mod overview;
pub(crate) mod runs;
pub(crate) mod session;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use askama::Template;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::api::ApiError;
use crate::state::AppState;

pub(crate) use self::session::Viewer;

/// What the dashboard keeps beside the relay's state: sessions and bulk jobs (in memory).
#[derive(Debug, Default)]
pub struct Ui {
    pub(crate) sessions: session::Sessions,
    pub(crate) jobs: jobs::Jobs,
}

/// The dashboard's routes, under `/ui`, for the API's router.
pub fn router(state: &AppState) -> Router<AppState> {
    let _ = state;
    let ui = Arc::new(Ui::default());
    Router::new()
        .route("/ui", get(overview::page))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/assets/{name}", get(assets::serve))
        .route("/ui/destinations", get(destinations::page))
        .route(
            "/ui/destinations/{destination}/{action}",
            post(destinations::act),
        )
        .route("/ui/messages", get(messages::list))
        .route("/ui/messages/{id}", get(messages::show))
        .route("/ui/messages/{id}/{action}", post(messages::act))
        .route("/ui/dead-letters", get(dead_letters::list))
        .route("/ui/dead-letters/preview", get(dead_letters::preview))
        .route("/ui/dead-letters/bulk", post(dead_letters::start))
        .route("/ui/jobs/{id}", get(jobs::show))
        .route("/ui/runs", get(runs::list))
        .route("/ui/runs/{id}", get(runs::show))
        .route("/ui/runs/{id}/{action}", post(runs::act))
        .route("/ui/inbound", get(inbound::list))
        .route("/ui/alerts", get(alerts::list))
        .route("/ui/audit", get(audit::list))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(Extension(ui))
}

/// The frame every page shares: title, navigation, who is signed in, the CSRF token.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) title: String,
    pub(crate) active: &'static str,
    pub(crate) user: String,
    pub(crate) role: &'static str,
    pub(crate) can_write: bool,
    pub(crate) csrf: String,
    pub(crate) flash: Option<String>,
    pub(crate) css: String,
    pub(crate) htmx: String,
    /// Reload the page every this many seconds when JavaScript is off (a running job).
    pub(crate) refresh: Option<u32>,
}

impl Layout {
    /// The frame of a page titled `title` under the navigation entry `active`.
    pub(crate) fn new(viewer: &Viewer, title: impl Into<String>, active: &'static str) -> Self {
        Layout {
            title: title.into(),
            active,
            user: viewer.name.clone(),
            role: viewer.role.as_str(),
            can_write: viewer.can_write(),
            csrf: viewer.csrf.clone(),
            flash: viewer.flash.clone(),
            css: assets::url("ferrule.css"),
            htmx: assets::url("htmx.min.js"),
            refresh: None,
        }
    }
}

/// Why a page cannot be shown or an action not taken.
#[derive(Debug)]
pub(crate) enum UiError {
    /// The form's CSRF token is missing or wrong.
    Csrf,
    /// A read-only token tried to change something.
    ReadOnly,
    /// A bad filter or form field, or an API refusal.
    Api(ApiError),
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        UiError::Api(e)
    }
}

impl From<ferrule_store::StoreError> for UiError {
    fn from(e: ferrule_store::StoreError) -> Self {
        UiError::Api(e.into())
    }
}

#[derive(Template)]
#[template(path = "ui/error.html")]
struct ErrorPage {
    status: u16,
    code: String,
    message: String,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            UiError::Csrf => (
                StatusCode::FORBIDDEN,
                "csrf".to_owned(),
                "the form's CSRF token is missing or stale: reload the page and try again"
                    .to_owned(),
            ),
            UiError::ReadOnly => (
                StatusCode::FORBIDDEN,
                "forbidden".to_owned(),
                "this token is read-only: it may look at everything and change nothing".to_owned(),
            ),
            UiError::Api(e) => (e.status, e.code.to_owned(), e.message),
        };
        let page = ErrorPage {
            status: status.as_u16(),
            code,
            message,
        };
        (status, render(&page)).into_response()
    }
}

/// Renders `template`; a failure (which the compile-time checks leave to I/O-free formatting
/// only) is a 500 page.
pub(crate) fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => {
            let mut response = Html(html).into_response();
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot render a dashboard page");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render the page").into_response()
        }
    }
}

/// Whether the request came from htmx (then a fragment is answered).
pub(crate) fn is_htmx(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request")
}

/// "3 s", "4 min", "2 h 5 min", "3 d": a short age for people.
pub(crate) fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A time as the pages show it: `2026-12-07 14:03:09Z`.
pub(crate) fn when(t: SystemTime) -> String {
    crate::time::rfc3339(t).replacen('T', " ", 1)
}

/// An optional time, or an empty string.
pub(crate) fn when_opt(t: Option<SystemTime>) -> String {
    t.map(when).unwrap_or_default()
}

/// Redirects (303) to `to` after a form post, with `flash` shown on the next page.
pub(crate) fn done(viewer: &Viewer, to: &str, flash: impl Into<String>) -> Response {
    viewer.set_flash(flash.into());
    Redirect::to(to).into_response()
}

/// Percent-encodes `text` for a query string.
pub(crate) fn enc(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
