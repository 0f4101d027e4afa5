//! The HTTP API: one table of routes, bearer-token auth on all but `/livez` and the Telegram
//! webhook (which checks Telegram's secret token instead), JSON errors.

mod admin;
mod caller;
mod error;
mod extract;
mod health;
mod idempotency;
mod inbound;
mod messages;
pub mod openapi;
mod payload;
mod views;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};

pub use self::error::ApiError;
pub use self::messages::{Submit, parse_submit};
use crate::state::AppState;

/// One route: method, path (axum syntax), whether it needs a token, and its handler.
pub struct Route {
    /// The HTTP method.
    pub method: Method,
    /// The path, e.g. `/v1/messages/{id}`.
    pub path: &'static str,
    /// Whether a bearer token is required.
    pub auth: bool,
    handler: MethodRouter<AppState>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

fn route(method: Method, path: &'static str, auth: bool, handler: MethodRouter<AppState>) -> Route {
    Route {
        method,
        path,
        auth,
        handler,
    }
}

/// Every route the relay serves; the router is built from this table, and a test checks that
/// the OpenAPI document describes each one.
pub fn routes() -> Vec<Route> {
    vec![
        route(Method::POST, "/v1/messages", true, post(messages::submit)),
        route(Method::GET, "/v1/messages", true, get(messages::list)),
        route(Method::GET, "/v1/messages/{id}", true, get(messages::show)),
        route(
            Method::DELETE,
            "/v1/messages/{id}",
            true,
            delete(messages::cancel),
        ),
        route(
            Method::POST,
            "/v1/messages/{id}/replay",
            true,
            post(messages::replay),
        ),
        route(
            Method::GET,
            "/v1/dead-letters",
            true,
            get(admin::dead_letters),
        ),
        route(
            Method::POST,
            "/v1/dead-letters/replay",
            true,
            post(admin::replay_dead),
        ),
        route(
            Method::DELETE,
            "/v1/dead-letters",
            true,
            delete(admin::purge_dead),
        ),
        route(
            Method::POST,
            "/v1/dead-letters/purge",
            true,
            post(admin::purge_dead_ids),
        ),
        route(Method::GET, "/v1/breakers", true, get(admin::breakers)),
        route(
            Method::POST,
            "/v1/breakers/{destination}/{action}",
            true,
            post(admin::breaker_action),
        ),
        route(
            Method::GET,
            "/v1/destinations",
            true,
            get(admin::destinations),
        ),
        route(Method::GET, "/v1/inbound", true, get(inbound::list)),
        // Telegram cannot send a bearer token: the update's secret token header is checked.
        route(
            Method::POST,
            "/v1/telegram/{destination}/webhook",
            false,
            post(inbound::telegram_webhook),
        ),
        route(Method::GET, "/v1/openapi.json", true, get(openapi::serve)),
        route(Method::GET, "/livez", false, get(health::livez)),
        route(Method::GET, "/readyz", true, get(health::readyz)),
        route(Method::GET, "/status", true, get(health::status)),
        route(Method::GET, "/metrics", true, get(health::metrics)),
    ]
}

/// The relay's router over `state`.
pub fn router(state: AppState) -> Router {
    let mut open = Router::new();
    let mut guarded = Router::new();
    for r in routes() {
        if r.auth {
            guarded = guarded.route(r.path, r.handler);
        } else {
            open = open.route(r.path, r.handler);
        }
    }
    let guarded = guarded.layer(middleware::from_fn_with_state(state.clone(), require_token));
    open.merge(guarded)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

/// Lets the request through only with `Authorization: Bearer <a configured token>`.
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match token {
        Some(token) if state.tokens.verify(token) => next.run(request).await,
        Some(_) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "invalid token").into_response()
        }
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer <token>`",
        )
        .into_response(),
    }
}
