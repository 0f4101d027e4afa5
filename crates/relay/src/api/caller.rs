//! Who made a request, as the relay records it beside what the request changed (a breaker
//! override's `set_by`, a cancelled message's timeline).

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::state::AppState;

/// The caller of an authenticated route: its token's name (configured with `[auth] tokens`
/// or stored with `ferrule token create --name`), or, for a configured token without a name,
/// `api:` and the first 8 hex digits of the SHA-256 of its bearer token (the hash the relay
/// keeps, never the token), e.g. `api:1f2e3d4c`. See [`TokenSet::caller_name`].
///
/// [`TokenSet::caller_name`]: crate::auth::TokenSet::caller_name
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller(pub(crate) String);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // The auth middleware has checked the token before any handler runs.
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .map(|(_, token)| token.trim())
            .unwrap_or_default();
        Ok(Caller(state.tokens.caller_name(token)))
    }
}
