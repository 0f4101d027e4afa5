//! The HTTP API: one table of routes, each public, readable with any token, or writable with
//! an admin token only; JSON errors.

pub(crate) mod admin;
pub(crate) mod alerts;
pub(crate) mod audit;
pub(crate) mod caller;
mod chats;
mod error;
pub(crate) mod extract;
pub(crate) mod health;
mod idempotency;
pub(crate) mod inbound;
mod linger;
pub(crate) mod messages;
pub mod openapi;
pub(crate) mod pause;
mod payload;
mod proxy;
pub(crate) mod runs;
mod schedules;
pub(crate) mod search;
mod stats;
pub(crate) mod views;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use base64::Engine as _;

pub use self::error::ApiError;
use self::extract::ApiPath;
pub use self::messages::{Submit, parse_submit};
pub use self::proxy::register_proxy_series;
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
    /// An admin token, or the secret of the `[[inbound.email]]` source named by the path's
    /// `{source}`, either as a bearer token or as a basic-auth password (any user name): where
    /// inbound-mail services post, which can carry credentials only in the URL they are
    /// given. An unknown source is 404 (sources are not secret); a read-only token gets 403.
    EmailSource,
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

/// The proxy's route (axum's syntax; the OpenAPI document writes `{path}`).
pub const PROXY_PATH: &str = "/v1/proxy/{destination}/{*path}";

/// A route's path as the OpenAPI document writes it: a wildcard `{*name}` becomes `{name}`.
pub fn openapi_path(path: &str) -> String {
    path.replace("{*", "{")
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
        route(Method::GET, "/v1/audit", Read, get(audit::list)),
        route(Method::GET, "/v1/alerts", Read, get(alerts::list)),
        route(Method::GET, "/v1/stats", Read, get(stats::stats)),
        route(
            Method::POST,
            "/v1/destinations/{destination}/pause",
            Write,
            post(pause::pause),
        ),
        route(
            Method::POST,
            "/v1/destinations/{destination}/resume",
            Write,
            post(pause::resume),
        ),
        route(
            Method::POST,
            "/v1/inbound/email/{source}",
            Access::EmailSource,
            post(inbound::email),
        ),
        // Telegram cannot send a bearer token: the update's secret token header is checked.
        route(
            Method::POST,
            "/v1/telegram/{destination}/webhook",
            Public,
            post(inbound::telegram_webhook),
        ),
        // Schedules (api/schedules.rs).
        route(Method::GET, "/v1/schedules", Read, get(schedules::list)),
        route(
            Method::POST,
            "/v1/schedules/{name}/pause",
            Write,
            post(schedules::pause),
        ),
        route(
            Method::POST,
            "/v1/schedules/{name}/resume",
            Write,
            post(schedules::resume),
        ),
        route(
            Method::POST,
            "/v1/schedules/{name}/trigger",
            Write,
            post(schedules::trigger),
        ),
        // Routes and their runs (api/runs.rs).
        route(
            Method::POST,
            "/v1/routes/{name}/runs",
            Write,
            post(runs::start_run),
        ),
        route(
            Method::GET,
            "/v1/routes/{name}/stats",
            Read,
            get(runs::stats),
        ),
        // A route's chat mappings (api/chats.rs).
        route(
            Method::GET,
            "/v1/routes/{name}/chats",
            Read,
            get(chats::list),
        ),
        route(
            Method::PUT,
            "/v1/routes/{name}/chats",
            Write,
            put(chats::set),
        ),
        route(
            Method::DELETE,
            "/v1/routes/{name}/chats",
            Write,
            delete(chats::remove),
        ),
        route(Method::GET, "/v1/runs", Read, get(runs::list)),
        route(Method::GET, "/v1/runs/{id}", Read, get(runs::show)),
        route(
            Method::POST,
            "/v1/runs/{id}/signal",
            Write,
            post(runs::signal),
        ),
        route(
            Method::POST,
            "/v1/runs/{id}/retry",
            Write,
            post(runs::retry),
        ),
        route(
            Method::POST,
            "/v1/runs/{id}/cancel",
            Write,
            post(runs::cancel),
        ),
        // Calls through the proxy: one route per method the OpenAPI document describes.
        route(Method::GET, PROXY_PATH, Write, get(proxy::forward)),
        route(Method::POST, PROXY_PATH, Write, post(proxy::forward)),
        route(Method::PUT, PROXY_PATH, Write, put(proxy::forward)),
        route(Method::PATCH, PROXY_PATH, Write, patch(proxy::forward)),
        route(Method::DELETE, PROXY_PATH, Write, delete(proxy::forward)),
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
            Access::EmailSource => r.handler.layer(middleware::from_fn_with_state(
                state.clone(),
                require_email_source,
            )),
        };
        router = router.route(r.path, handler);
    }
    // The dashboard (`/ui`): HTML pages with their own sign-in, not part of the JSON API.
    router = router.merge(crate::ui::router(&state));
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            linger::discard_unread_body,
        ))
        .layer(middleware::from_fn(crate::telemetry::trace::layer))
        .with_state(state)
}

/// The router of `server.metrics_listen`: the routes of [`routes`] a scraper or a probe needs
/// (`/metrics`, `/livez`, `/readyz`), with the same access rules as on the API's address.
pub fn metrics_router(state: AppState) -> Router {
    let mut router = Router::new();
    for r in routes()
        .into_iter()
        .filter(|r| matches!(r.path, "/metrics" | "/livez" | "/readyz"))
    {
        let handler = match r.access {
            Access::Public => r.handler,
            Access::Read => r
                .handler
                .layer(middleware::from_fn_with_state(state.clone(), require_read)),
            Access::Write | Access::EmailSource => continue,
        };
        router = router.route(r.path, handler);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
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

/// The credential of `Authorization: <scheme> <credential>` when its scheme is `scheme`
/// (case-insensitive), trimmed.
fn credential<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let (given, credential) = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then(|| credential.trim())
}

/// The password of `Authorization: Basic …` (whatever the user name), as the bytes sent.
fn basic_password(headers: &HeaderMap) -> Option<Vec<u8>> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credential(headers, "basic")?)
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

/// Lets a mail through to `POST /v1/inbound/email/{source}` with an admin token or the
/// source's secret, as a bearer token or a basic-auth password ([`Access::EmailSource`]). A
/// refusal is counted for the source; its 401 challenges for both schemes, so a client that
/// sends a URL's credentials only when asked sends them.
async fn require_email_source(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    request: Request,
    next: Next,
) -> Response {
    let Some(source) = state.email_sources.get(&name) else {
        return inbound::unknown_email_source(&name).into_response();
    };
    let headers = request.headers();
    let presented = match credential(headers, "bearer") {
        Some(token) => Some(token.as_bytes().to_vec()),
        None => basic_password(headers),
    };
    let refusal = match presented {
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization`: a bearer token (an admin token or the source's secret), \
             or basic auth with the source's secret as the password",
        ),
        Some(presented) => {
            // Both are compared in constant time, and both always are.
            let role = std::str::from_utf8(&presented)
                .ok()
                .and_then(|token| state.tokens.verify(token));
            let is_secret = source
                .secret
                .as_ref()
                .is_some_and(|secret| secret.matches(&presented));
            match (is_secret, role) {
                (true, _) | (_, Some(Role::Admin)) => return next.run(request).await,
                (false, Some(Role::Read)) => ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this token is read-only; this route needs an admin token or the source's \
                     secret",
                ),
                (false, None) => {
                    tracing::warn!(source = %name, "a mail with a wrong credential was refused");
                    ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "neither an admin token nor this source's secret",
                    )
                }
            }
        }
    };
    crate::inbound::email::count_refused(&state, &source.name, refusal.code);
    let mut response = refusal.into_response();
    if response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer, Basic realm=\"ferrule\""),
        );
    }
    response
}

/// Lets the request through only with `Authorization: Bearer <token>` of a token that may
/// call a route of `access`: 401 without an accepted token, 403 with a read-only one on a
/// route that writes.
async fn authorize(state: &AppState, access: Access, request: Request, next: Next) -> Response {
    let Some(token) = credential(request.headers(), "bearer") else {
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
        (Some(Role::Read), Access::Write | Access::EmailSource) => ApiError::new(
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
