//! The HTTP API: one table of routes, each public, readable with any token, or writable with
//! an admin token only; JSON errors.

mod admin;
mod caller;
mod error;
mod extract;
mod health;
mod idempotency;
mod inbound;
mod linger;
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
use crate::auth::Role;
use crate::state::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: probes and this API's description, which hold nothing secret, and the Telegram
    /// webhook, which checks Telegram's secret token instead.
    Public,
    /// Any accepted token, read-only ones included: the routes that change nothing.
    Read,
    /// An admin token: the routes that submit, replay, purge or operate breakers. A read-only
    /// token gets 403 `forbidden`.
    Write,
}

/// One route: method, path (axum syntax), who may call it, and its handler.
pub struct Route {
    /// The HTTP method.
    pub method: Method,
    /// The path, e.g. `/v1/messages/{id}`.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    handler: MethodRouter<AppState>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

fn route(
    method: Method,
    path: &'static str,
    access: Access,
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        method,
        path,
        access,
        handler,
    }
}

/// Every route the relay serves; the router is built from this table, and a test checks that
/// the OpenAPI document describes each one.
pub fn routes() -> Vec<Route> {
    use Access::{Public, Read, Write};
    vec![
        route(Method::POST, "/v1/messages", Write, post(messages::submit)),
        route(Method::GET, "/v1/messages", Read, get(messages::list)),
        route(Method::GET, "/v1/messages/{id}", Read, get(messages::show)),
        route(
            Method::DELETE,
            "/v1/messages/{id}",
            Write,
            delete(messages::cancel),
        ),
        route(
            Method::POST,
            "/v1/messages/{id}/replay",
            Write,
            post(messages::replay),
        ),
        route(
            Method::GET,
            "/v1/dead-letters",
            Read,
            get(admin::dead_letters),
        ),
        route(
            Method::POST,
            "/v1/dead-letters/replay",
            Write,
            post(admin::replay_dead),
        ),
        route(
            Method::DELETE,
            "/v1/dead-letters",
            Write,
            delete(admin::purge_dead),
        ),
        route(
            Method::POST,
            "/v1/dead-letters/purge",
            Write,
            post(admin::purge_dead_ids),
        ),
        route(Method::GET, "/v1/breakers", Read, get(admin::breakers)),
        route(
            Method::POST,
            "/v1/breakers/{destination}/{action}",
            Write,
            post(admin::breaker_action),
        ),
        route(
            Method::GET,
            "/v1/destinations",
            Read,
            get(admin::destinations),
        ),
        route(Method::GET, "/v1/inbound", Read, get(inbound::list)),
        // Telegram cannot send a bearer token: the update's secret token header is checked.
        route(
            Method::POST,
            "/v1/telegram/{destination}/webhook",
            Public,
            post(inbound::telegram_webhook),
        ),
        route(Method::GET, "/v1/openapi.json", Public, get(openapi::serve)),
        route(Method::GET, "/livez", Public, get(health::livez)),
        route(Method::GET, "/readyz", Public, get(health::readyz)),
        route(Method::GET, "/status", Read, get(health::status)),
        route(Method::GET, "/metrics", Read, get(health::metrics)),
    ]
}

/// The relay's router over `state`.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for r in routes() {
        let handler = match r.access {
            Access::Public => r.handler,
            Access::Read => r
                .handler
                .layer(middleware::from_fn_with_state(state.clone(), require_read)),
            Access::Write => r
                .handler
                .layer(middleware::from_fn_with_state(state.clone(), require_write)),
        };
        router = router.route(r.path, handler);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            linger::discard_unread_body,
        ))
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

/// Lets the request through with any accepted token.
async fn require_read(State(state): State<AppState>, request: Request, next: Next) -> Response {
    authorize(&state, Access::Read, request, next).await
}

/// Lets the request through with an admin token.
async fn require_write(State(state): State<AppState>, request: Request, next: Next) -> Response {
    authorize(&state, Access::Write, request, next).await
}

/// Lets the request through only with `Authorization: Bearer <token>` of a token that may
/// call a route of `access`: 401 without an accepted token, 403 with a read-only one on a
/// route that writes.
async fn authorize(state: &AppState, access: Access, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(token) = token else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer <token>`",
        )
        .into_response();
    };
    match (state.tokens.verify(token), access) {
        (Some(Role::Admin), _) | (Some(Role::Read), Access::Read | Access::Public) => {
            next.run(request).await
        }
        (Some(Role::Read), Access::Write) => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token is read-only; this route needs an admin token",
        )
        .into_response(),
        (None, _) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "invalid token").into_response()
        }
    }
}
