//! Sign-in: an API token exchanged for a session cookie (`HttpOnly`, `SameSite=Strict`,
//! `Secure` behind TLS, expiring), the per-session CSRF token every form carries, and the
//! [`Viewer`] extractor that sends a visitor without a session to the sign-in page.
//!
//! Sessions live in this process's memory: a restart signs everyone out, and behind a load
//! balancer over several relays a session sticks to the relay that made it. The session keeps
//! the token (never sent back to the browser) and checks it on every request, so a revoked
//! token ends its sessions at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use askama::Template;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use base64::Engine as _;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{Ui, UiError, render};
use crate::auth::Role;
use crate::state::AppState;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "ferrule_session";
/// The sign-in form's CSRF cookie (there is no session yet to hold its token).
const LOGIN_COOKIE: &str = "ferrule_login";
/// Most sessions kept at once; the oldest go first.
const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
struct Session {
    token: String,
    name: String,
    csrf: String,
    expires: SystemTime,
    flash: Option<String>,
}

/// The signed-in sessions, by cookie value.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// 32 random bytes, URL-safe base64.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    if getrandom::fill(&mut bytes).is_err() {
        // No system randomness: fall back to a fast generator seeded by the clock (never
        // reached on a supported system).
        for b in &mut bytes {
            *b = fastrand::u8(..);
        }
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `name`'s value in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether cookies must be `Secure`: configured so, or a proxy says the request came over TLS.
fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    state.config.ui.secure_cookies
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

fn set_cookie(name: &str, value: &str, path: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Who is looking at a page: a signed-in session's token name and role.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    sid: String,
    /// The token's name, as the audit log says it.
    pub(crate) name: String,
    /// What the token may do.
    pub(crate) role: Role,
    /// The session's CSRF token.
    pub(crate) csrf: String,
    /// A message from the last action, shown once.
    pub(crate) flash: Option<String>,
    ui: Arc<Ui>,
}

impl Viewer {
    /// Whether the token may change things.
    pub(crate) fn can_write(&self) -> bool {
        self.role == Role::Admin
    }

    /// Checks a form's CSRF token, then that the token may change things.
    pub(crate) fn may_act(&self, csrf: &str) -> Result<(), UiError> {
        if !equal(csrf, &self.csrf) {
            return Err(UiError::Csrf);
        }
        if !self.can_write() {
            return Err(UiError::ReadOnly);
        }
        Ok(())
    }

    /// Keeps `flash` for the next page this session sees.
    pub(crate) fn set_flash(&self, flash: String) {
        if let Some(s) = self.ui.sessions.lock().get_mut(&self.sid) {
            s.flash = Some(flash);
        }
    }
}

/// The way to the sign-in page, coming back to `parts`' page afterwards.
fn to_login(parts: &Parts) -> Response {
    let back = match parts.method {
        axum::http::Method::GET => parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/ui".into()),
        _ => "/ui".into(),
    };
    let to = format!("/ui/login?next={}", super::enc(&back));
    if super::is_htmx(&parts.headers) {
        let mut r = StatusCode::NO_CONTENT.into_response();
        if let Ok(v) = HeaderValue::from_str(&to) {
            r.headers_mut().insert("hx-redirect", v);
        }
        return r;
    }
    Redirect::to(&to).into_response()
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(ui) = parts.extensions.get::<Arc<Ui>>().cloned() else {
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        };
        let Some(sid) = cookie(&parts.headers, SESSION_COOKIE).map(str::to_owned) else {
            return Err(to_login(parts));
        };
        let now = state.clock.system_now();
        let session = {
            let mut sessions = ui.sessions.lock();
            match sessions.get_mut(&sid) {
                Some(s) if s.expires > now => {
                    let flash = s.flash.take();
                    Some((s.clone(), flash))
                }
                Some(_) => {
                    sessions.remove(&sid);
                    None
                }
                None => None,
            }
        };
        let Some((session, flash)) = session else {
            return Err(to_login(parts));
        };
        // A token revoked since sign-in ends the session.
        let Some(role) = state.tokens.verify(&session.token) else {
            ui.sessions.lock().remove(&sid);
            return Err(to_login(parts));
        };
        Ok(Viewer {
            sid,
            name: session.name,
            role,
            csrf: session.csrf,
            flash,
            ui,
        })
    }
}

#[derive(Template)]
#[template(path = "ui/login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    error: Option<String>,
    css: String,
}

/// Query of `GET /ui/login`.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

/// Only a dashboard page is a place to go back to (never another site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui") && !n.starts_with("//") && !n.contains('\\') => {
            n.to_owned()
        }
        _ => "/ui".into(),
    }
}

fn login_page(
    state: &AppState,
    headers: &HeaderMap,
    next: String,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let csrf = random_token();
    let page = LoginPage {
        csrf: csrf.clone(),
        next,
        error,
        css: super::assets::url("ferrule.css"),
    };
    let mut response = (status, render(&page)).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            LOGIN_COOKIE,
            &csrf,
            "/ui/login",
            3600,
            secure(state, headers),
        ),
    );
    response
}

/// `GET /ui/login`: the sign-in form.
pub(crate) async fn login_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    login_page(
        &state,
        &headers,
        safe_next(q.next.as_deref()),
        None,
        StatusCode::OK,
    )
}

/// The sign-in form as posted.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /ui/login`: a token that the API accepts becomes a session.
pub(crate) async fn login(
    State(state): State<AppState>,
    Extension(ui): Extension<Arc<Ui>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !equal(expected, &form.csrf) {
        return UiError::Csrf.into_response();
    }
    let token = form.token.trim();
    let Some(role) = (!token.is_empty())
        .then(|| state.tokens.verify(token))
        .flatten()
    else {
        tracing::info!("a dashboard sign-in with a token that is not accepted");
        return login_page(
            &state,
            &headers,
            next,
            Some("That token is not accepted.".into()),
            StatusCode::UNAUTHORIZED,
        );
    };
    let now = state.clock.system_now();
    let ttl = state.config.ui.session_ttl;
    let sid = random_token();
    let name = state.tokens.caller_name(token);
    {
        let mut sessions = ui.sessions.lock();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            sid.clone(),
            Session {
                token: token.to_owned(),
                name: name.clone(),
                csrf: random_token(),
                expires: now + ttl,
                flash: None,
            },
        );
    }
    tracing::info!(who = %name, role = role.as_str(), "signed in to the dashboard");
    let secure = secure(&state, &headers);
    let mut response = Redirect::to(&next).into_response();
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &sid, "/ui", ttl.as_secs(), secure),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, "", "/ui/login", 0, secure),
    );
    response
}

/// A form that carries only its CSRF token.
#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub(crate) csrf: String,
}

/// `POST /ui/logout`: ends the session (any role may).
pub(crate) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !equal(&form.csrf, &viewer.csrf) {
        return UiError::Csrf.into_response();
    }
    viewer.ui.sessions.lock().remove(&viewer.sid);
    let mut response = Redirect::to("/ui/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", "/ui", 0, secure(&state, &headers)),
    );
    response
}
