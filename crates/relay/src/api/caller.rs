//! Who made a request, as the relay records it beside what the request changed (a breaker
//! override's `set_by`, a cancelled message's timeline).

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::error::ApiError;

/// The caller of an authenticated route: `api:` and the first 8 hex digits of the SHA-256 of
/// its bearer token (the hash the relay keeps, never the token), e.g. `api:1f2e3d4c`.
///
/// The one place that names a caller: when tokens carry names, this is where the name goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller(pub(crate) String);

impl Caller {
    /// The caller presenting `token`.
    pub(crate) fn of_token(token: &str) -> Self {
        let hex = crate::auth::to_hex(&crate::auth::hash(token));
        Caller(format!("api:{}", &hex[..8]))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // The auth middleware has checked the token before any handler runs.
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .map(|(_, token)| token.trim())
            .unwrap_or_default();
        Ok(Caller::of_token(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_is_named_by_a_prefix_of_its_tokens_hash() {
        let caller = Caller::of_token("test-token-0123456789abcdef");
        assert!(
            caller.0.starts_with("api:") && caller.0.len() == 12,
            "{caller:?}"
        );
        assert!(!caller.0.contains("test-token"));
        assert_eq!(caller, Caller::of_token("test-token-0123456789abcdef"));
        assert_ne!(caller, Caller::of_token("another-token-0123456789"));
    }
}
