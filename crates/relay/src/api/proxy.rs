//! `ANY /v1/proxy/{destination}/{*path}`: the caller's request handed to [`crate::proxy`], its
//! failures answered as JSON errors with the proxy's headers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ferrule_connectors::AnyConnector;
use ferrule_policy::classify::Provider;

use super::error::ApiError;
use super::extract::ApiPath;
use crate::destination::Destination;
use crate::proxy::{
    ATTEMPTS_HEADER, Call, DEADLINE_HEADER, DESTINATION_HEADER, Failure, ProxyError, parse_deadline,
};
use crate::state::AppState;

/// Forwards one call; see [`crate::proxy`].
pub(crate) async fn forward(
    State(state): State<AppState>,
    ApiPath((destination, path)): ApiPath<(String, String)>,
    request: Request,
) -> Response {
    let (parts, body): (_, Body) = request.into_parts();
    let deadline = match parts.headers.get(DEADLINE_HEADER) {
        None => None,
        Some(value) => match value.to_str().ok().and_then(parse_deadline) {
            Some(deadline) => Some(deadline),
            None => {
                return ApiError::bad_request(
                    "invalid_header",
                    "`X-Ferrule-Deadline` must be whole seconds (`5` or `5s`) or milliseconds (`250ms`), more than zero",
                )
                .with_field("X-Ferrule-Deadline")
                .into_response();
            }
        },
    };
    // The path as the caller sent it (percent-encoding kept), not as the router decoded it.
    let raw_path = parts.uri.path();
    let prefix = format!(
        "/v1/proxy/{}",
        raw_segment(raw_path, 2).unwrap_or(&destination)
    );
    let rest = raw_path.strip_prefix(&prefix).unwrap_or(&path);
    let mut path_and_query = if rest.starts_with('/') {
        rest.to_owned()
    } else {
        format!("/{rest}")
    };
    if let Some(query) = parts.uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    let call = Call {
        destination,
        method: parts.method,
        path_and_query,
        headers: parts.headers,
        deadline,
        body,
    };
    match crate::proxy::run(&state, call).await {
        Ok(response) => response,
        Err(e) => error_response(e),
    }
}

/// Segment `n` (from 0, after the leading `/`) of `path`.
fn raw_segment(path: &str, n: usize) -> Option<&str> {
    path.strip_prefix('/')?.split('/').nth(n)
}

/// A [`ProxyError`] as the API answers it.
fn error_response(e: ProxyError) -> Response {
    match e {
        ProxyError::UnknownDestination(name) => {
            ApiError::not_found(format!("no destination is named `{name}`")).into_response()
        }
        ProxyError::NotHttp(name) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("destination `{name}` is not an http destination: only those can be called through the proxy"),
        )
        .into_response(),
        ProxyError::InvalidPath(reason) => {
            ApiError::bad_request("invalid_path", format!("the path {reason}"))
                .with_field("path")
                .into_response()
        }
        ProxyError::InvalidBody(detail) => {
            ApiError::bad_request("invalid_body", format!("the request body could not be read: {detail}"))
                .into_response()
        }
        ProxyError::Failed {
            failure,
            attempts,
            destination,
        } => {
            let error = match &failure {
                Failure::Refused {
                    reason,
                    retry_after,
                } => {
                    let secs = retry_after.map_or(1, |d| d.as_secs_f64().ceil() as u64).max(1);
                    let (status, code) = match *reason {
                        "rate_limited" | "paused" => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
                        "bulkhead_full" => (StatusCode::SERVICE_UNAVAILABLE, "bulkhead_full"),
                        _ => (StatusCode::SERVICE_UNAVAILABLE, "circuit_open"),
                    };
                    let mut error = ApiError::new(
                        status,
                        code,
                        format!("`{destination}` was not called ({reason}), nor any fallback"),
                    );
                    error.retry_after = Some(secs);
                    error
                }
                Failure::Unreachable(detail) => ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    format!("`{destination}` did not answer: {detail}"),
                ),
                Failure::TimedOut(detail) => ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    format!("`{destination}`: {detail}"),
                ),
                Failure::DeadlineExceeded => ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "deadline_exceeded",
                    "the call's deadline passed before an answer came",
                ),
            };
            let mut response = error
                .with_detail("attempts", attempts)
                .with_detail("destination", destination.clone())
                .into_response();
            let headers = response.headers_mut();
            headers.insert(ATTEMPTS_HEADER, HeaderValue::from(attempts));
            if let Ok(name) = HeaderValue::from_str(&destination) {
                headers.insert(DESTINATION_HEADER, name);
            }
            response
        }
    }
}

/// Registers the proxy's metric series of every `http` destination.
pub fn register_proxy_series(destinations: &BTreeMap<String, Arc<Destination>>) {
    for (name, d) in destinations {
        if let (AnyConnector::Http(http), Some(proxy)) = (&d.connector, &d.proxy) {
            let ai = http.classifier().provider() != Provider::Generic;
            crate::telemetry::prometheus::register_proxy_series(name, ai, &proxy.settings.fallback);
        }
    }
}
