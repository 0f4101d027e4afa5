//! [`ApiError`]: every API error as `{"error": {"code", "message", "field"?, …}}` with its HTTP
//! status; a few errors carry more members for a client to act on (see
//! [`ApiError::with_detail`]).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferrule_store::StoreError;
use serde_json::json;

/// Seconds a client is asked to wait when the store's disk is full: freeing space takes an
/// operator, so not the 1 s of a busy store.
pub(crate) const STORAGE_FULL_RETRY_AFTER: u64 = 10;

/// An API error: a status, a stable machine code and a message safe to show a client.
///
/// Internal causes are logged where the error is made, never sent.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable code, e.g. `unknown_destination`.
    pub code: &'static str,
    /// A message for people.
    pub message: String,
    /// Seconds for a `Retry-After` header, if any.
    pub retry_after: Option<u64>,
    /// The request field at fault, e.g. `payload.chat_id`, sent as `error.field`.
    pub field: Option<String>,
    /// More members of the `error` object for a client to act on, e.g. the current `status`
    /// of a message that cannot be cancelled.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            field: None,
            details: serde_json::Map::new(),
        }
    }

    /// Names the request field at fault (`error.field`).
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Adds `error.{name}`: something more for a client to act on. `code`, `message` and
    /// `field` are not replaced.
    pub fn with_detail(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        if !matches!(name, "code" | "message" | "field") {
            self.details.insert(name.to_owned(), value.into());
        }
        self
    }

    /// 422 `invalid_payload`: the destination's connector refused `payload.{field}`.
    pub fn invalid_payload(field: &str, reason: &str) -> Self {
        let field = if field.is_empty() || field == "payload" {
            "payload".to_owned()
        } else {
            format!("payload.{field}")
        };
        ApiError {
            field: Some(field.clone()),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_payload",
                format!("`{field}`: {reason}"),
            )
        }
    }

    /// 422 `unknown_destination` naming `name`, with `error.field` `destination`.
    pub fn unknown_destination(name: &str) -> Self {
        ApiError {
            field: Some("destination".to_owned()),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_destination",
                format!("no destination named `{name}` is configured"),
            )
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503 with `code` and a `Retry-After`.
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// 500 `internal`; the cause is logged here and not sent.
    pub fn internal(context: &str, cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %cause, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the relay's log",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::PayloadTooLarge { size, max } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("payload of {size} bytes exceeds the maximum of {max} bytes"),
            ),
            StoreError::InvalidOption { field, reason } => {
                ApiError::bad_request("invalid_request", format!("`{field}` {reason}"))
            }
            StoreError::NotFound { id } => ApiError::not_found(format!("message {id} not found")),
            StoreError::InvalidTransition { id, from, action } => ApiError::new(
                StatusCode::CONFLICT,
                "invalid_state",
                format!("cannot {action} message {id}: it is {from}"),
            ),
            // Logged once per episode by `crate::health::storage`, not once per request.
            StoreError::StorageFull { .. } => ApiError::unavailable(
                "storage_full",
                "the relay's storage is full; nothing was stored, try again later",
                STORAGE_FULL_RETRY_AFTER,
            ),
            StoreError::Closed | StoreError::Unreachable { .. } => {
                tracing::error!(error = %e, "store unavailable");
                ApiError::unavailable("store_unavailable", "the store is unavailable", 5)
            }
            StoreError::Timeout { .. } => {
                tracing::warn!(error = %e, "store operation timed out");
                ApiError::unavailable(
                    "store_busy",
                    "the store did not answer in time (store.operation_timeout); try again",
                    1,
                )
            }
            _ if e.is_transient() => {
                tracing::warn!(error = %e, "transient store error");
                ApiError::unavailable("store_busy", "the store is busy; try again", 1)
            }
            _ => ApiError::internal("store error", &e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = self.details;
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.into());
        if let Some(field) = self.field {
            error.insert("field".into(), field.into());
        }
        let body = json!({ "error": error });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
