//! One proxied call: the chain of destinations, the attempts on each, and the answer.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use ferrule_connectors::AnyConnector;
use ferrule_connectors::http::{HttpConnector, describe};
use ferrule_policy::classify::Provider;
use ferrule_policy::classify::{LimitHint, Verdict};
use ferrule_policy::retry::{GiveUpReason, RetryDecision};
use ferrule_policy::{Outcome, SharedClock};

use super::body::RequestBody;
use super::headers::{
    ATTEMPTS_HEADER, DESTINATION_HEADER, strip_hop_by_hop, upstream_request_headers,
};
use super::stream::Passing;
use crate::alerts::Alert;
use crate::destination::{Destination, ProxyPolicies};
use crate::state::AppState;
use crate::telemetry::prometheus::{
    PROXY_ATTEMPTS, PROXY_BUDGET_REFUSALS, PROXY_CALLS, PROXY_FALLBACKS, PROXY_UPSTREAM,
};

/// One call to forward.
#[derive(Debug)]
pub struct Call {
    /// The destination it is addressed to.
    pub destination: String,
    /// The method, forwarded unchanged.
    pub method: Method,
    /// The path below the destination's base URL, from `/`, with the query if any.
    pub path_and_query: String,
    /// The caller's headers (hop-by-hop ones, `host`, `authorization` and the proxy's own are
    /// not forwarded).
    pub headers: HeaderMap,
    /// The caller's deadline (`X-Ferrule-Deadline`), which may only shorten the
    /// destination's.
    pub deadline: Option<Duration>,
    /// The request body.
    pub body: Body,
}

/// Why a call got no upstream answer to pass on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Nothing was sent to the last destination tried: its circuit is open (`circuit_open`),
    /// its bulkhead full (`bulkhead_full`), its rate limit (`rate_limited`) or the provider's
    /// own (`paused`) would outlast the deadline.
    Refused {
        /// Which policy refused.
        reason: &'static str,
        /// When a call may be admitted, if known.
        retry_after: Option<Duration>,
    },
    /// The request got no answer: connection refused or reset, the SSRF guard.
    Unreachable(String),
    /// An attempt ran out of time before the answer (or its first byte) came.
    TimedOut(String),
    /// The call's deadline passed.
    DeadlineExceeded,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused { reason, .. } => write!(f, "not attempted: {reason}"),
            Failure::Unreachable(detail) | Failure::TimedOut(detail) => f.write_str(detail),
            Failure::DeadlineExceeded => f.write_str("the deadline passed"),
        }
    }
}

/// Why a call could not be forwarded, or got no answer.
#[derive(Debug)]
pub enum ProxyError {
    /// No destination has this name.
    UnknownDestination(String),
    /// The destination is not of `type = "http"`.
    NotHttp(String),
    /// The path would leave the base URL, or is malformed.
    InvalidPath(&'static str),
    /// The caller's body could not be read.
    InvalidBody(String),
    /// Every attempt failed without an answer to pass on.
    Failed {
        /// The last failure.
        failure: Failure,
        /// Attempts made, across every destination.
        attempts: u32,
        /// The destination tried last.
        destination: String,
    },
}

/// What the call has to show so far, should nothing better come.
enum Last {
    /// Nothing was tried yet.
    Nothing,
    /// An upstream answer that is not a success, read whole (up to `max_response_body`).
    Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        destination: String,
    },
    /// No answer.
    Failed {
        failure: Failure,
        destination: String,
    },
}

/// Whether `method` may be sent twice with the effect of once (RFC 9110 §9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The connector and proxy side of an `http` destination.
fn http_parts(dest: &Destination) -> Option<(&HttpConnector, &ProxyPolicies)> {
    match (&dest.connector, &dest.proxy) {
        (AnyConnector::Http(http), Some(proxy)) => Some((http, proxy)),
        _ => None,
    }
}

/// `fut`, unless `until` (on `clock`) comes first.
async fn within<T>(clock: &SharedClock, until: Instant, fut: impl Future<Output = T>) -> Option<T> {
    let left = until.saturating_duration_since(clock.now());
    tokio::select! {
        value = fut => Some(value),
        () = clock.sleep(left) => None,
    }
}

/// Reads a body up to `max` bytes (the rest is dropped).
async fn read_bounded(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Bytes, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk);
        if body.len() >= max {
            body.truncate(max);
            break;
        }
    }
    Ok(Bytes::from(body))
}

/// Whether a response is an event stream.
fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}

/// Holds later calls while the provider said nothing is left (its rate-limit headers).
fn heed(dest: &Destination, limits: &LimitHint) {
    if let Some(wait) = limits.wait().filter(|w| !w.is_zero()) {
        dest.pause(wait);
        tracing::info!(destination = %dest.name, wait_ms = ferrule_policy::duration::millis(wait), "the provider's rate limit is spent; holding calls until it resets");
    }
}

/// The response headers for the caller: the upstream's without hop-by-hop ones, and the
/// proxy's own.
fn answer_headers(upstream: &HeaderMap, attempts: u32, destination: &str) -> HeaderMap {
    let mut headers = upstream.clone();
    strip_hop_by_hop(&mut headers);
    headers.insert(ATTEMPTS_HEADER, HeaderValue::from(attempts));
    if let Ok(name) = HeaderValue::from_str(destination) {
        headers.insert(DESTINATION_HEADER, name);
    }
    headers
}

fn respond(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Forwards `call` under its destination's policies; see the [module](super) for how.
pub async fn run(state: &AppState, call: Call) -> Result<Response, ProxyError> {
    let clock = state.clock.clone();
    let started = clock.now();
    let Some(addressed) = state.destinations.get(&call.destination).cloned() else {
        return Err(ProxyError::UnknownDestination(call.destination));
    };
    let Some((first_http, first_proxy)) = http_parts(&addressed) else {
        return Err(ProxyError::NotHttp(call.destination));
    };
    let settings = &first_proxy.settings;
    let allowed = call
        .deadline
        .map_or(settings.deadline, |d| d.min(settings.deadline));
    let deadline = started + allowed;
    let retryable = idempotent(&call.method)
        || call.headers.contains_key("idempotency-key")
        || first_http.config().retry_post;
    let headers = upstream_request_headers(call.headers);
    let mut body = RequestBody::read(call.body, first_http.config().max_retry_body)
        .await
        .map_err(ProxyError::InvalidBody)?;
    let mut chain = vec![addressed.clone()];
    chain.extend(
        settings
            .fallback
            .iter()
            .filter_map(|name| state.destinations.get(name).cloned()),
    );
    let calls = |outcome: &'static str| {
        metrics::counter!(PROXY_CALLS.name, "destination" => addressed.name.clone(), "outcome" => outcome)
            .increment(1);
    };
    let mut attempts = 0u32;
    let mut last = Last::Nothing;
    let mut sent = false;
    'chain: for (n, dest) in chain.iter().enumerate() {
        let Some((http, proxy)) = http_parts(dest) else {
            continue;
        };
        if n > 0 {
            if sent && !(retryable && body.replayable()) {
                break;
            }
            metrics::counter!(PROXY_FALLBACKS.name, "destination" => addressed.name.clone(), "to" => dest.name.clone())
                .increment(1);
            tracing::info!(destination = %addressed.name, fallback = %dest.name, "falling back");
        }
        let url = http
            .target(&call.path_and_query)
            .map_err(ProxyError::InvalidPath)?;
        let mut retry = proxy.retry.start();
        loop {
            let now = clock.now();
            if now >= deadline {
                if !matches!(last, Last::Answer { .. }) {
                    last = Last::Failed {
                        failure: Failure::DeadlineExceeded,
                        destination: dest.name.clone(),
                    };
                }
                break 'chain;
            }
            let refused = |reason: &'static str, retry_after: Option<Duration>| Last::Failed {
                failure: Failure::Refused {
                    reason,
                    retry_after,
                },
                destination: dest.name.clone(),
            };
            if let Some(until) = dest.paused_until() {
                if until >= deadline {
                    last = refused("paused", Some(until - now));
                    break;
                }
                clock.sleep(until - now).await;
                continue;
            }
            let permit = match dest.breaker.try_acquire_owned() {
                Ok(permit) => permit,
                Err(open) => {
                    last = refused("circuit_open", open.remaining);
                    break;
                }
            };
            if let Some(limiter) = &dest.rate_limit
                && let Err(limited) = limiter.check()
            {
                drop(permit);
                if limited.ready_at >= deadline {
                    last = refused("rate_limited", Some(limited.wait));
                    break;
                }
                clock.sleep(limited.wait).await;
                continue;
            }
            // A bulkhead with a queue may hold the call, but not past the deadline.
            let Some(Ok(slot)) = within(&clock, deadline, dest.bulkhead.acquire_owned()).await
            else {
                drop(permit);
                last = refused("bulkhead_full", None);
                break;
            };
            let Some(attempt_body) = body.for_attempt() else {
                break 'chain;
            };
            attempts += 1;
            let attempt_started = clock.now();
            let attempt_end = (attempt_started + http.config().timeout).min(deadline);
            let timed_out = |what: &str| Last::Failed {
                failure: if attempt_end >= deadline {
                    Failure::DeadlineExceeded
                } else {
                    Failure::TimedOut(format!(
                        "no {what} within {}",
                        ferrule_policy::duration::readable(http.config().timeout)
                    ))
                },
                destination: dest.name.clone(),
            };
            let answer = within(
                &clock,
                attempt_end,
                http.send(call.method.clone(), url.clone(), &headers, attempt_body),
            )
            .await;
            let mut billing = None;
            let mut unsent = false;
            let outcome = match answer {
                None => {
                    last = timed_out("answer");
                    Outcome::Transient
                }
                Some(Err(e)) => {
                    // Refused at connect: the request never left, so sending it again (or
                    // elsewhere) cannot repeat it, whatever its method.
                    unsent = e.is_connect();
                    let detail = http.error_detail(&e);
                    last = Last::Failed {
                        failure: Failure::Unreachable(detail),
                        destination: dest.name.clone(),
                    };
                    HttpConnector::error_outcome(&e)
                }
                Some(Ok(mut response)) => {
                    metrics::histogram!(PROXY_UPSTREAM.name, "destination" => dest.name.clone())
                        .record(
                            clock
                                .now()
                                .saturating_duration_since(attempt_started)
                                .as_secs_f64(),
                        );
                    let status = response.status();
                    let head = response.headers().clone();
                    if status.is_success() {
                        // Committed only once the first byte is here: until then a failure is
                        // retried like any other, and the caller never sees it.
                        match within(&clock, attempt_end, response.chunk()).await {
                            Some(Ok(first)) => {
                                let verdict: Verdict =
                                    http.classifier().classify_parts(status, &head, &[]);
                                heed(dest, &verdict.limits);
                                proxy.retry.on_success();
                                count_attempt(dest, Outcome::Success);
                                let sse = is_event_stream(&head);
                                let mut headers = answer_headers(&head, attempts, &dest.name);
                                if sse || first.is_none() {
                                    headers.remove(header::CONTENT_LENGTH);
                                }
                                let tokens = http.classifier().provider() != Provider::Generic;
                                let passing = Passing::new(
                                    response,
                                    first,
                                    permit,
                                    slot,
                                    dest.clone(),
                                    addressed.name.clone(),
                                    sse,
                                    http.config().timeout,
                                    clock.clone(),
                                    started,
                                    tokens,
                                    http.config().max_response_body,
                                );
                                return Ok(respond(status, headers, passing.into_body()));
                            }
                            Some(Err(e)) => {
                                let detail = format!(
                                    "HTTP {}: the body broke before its first byte: {}",
                                    status.as_u16(),
                                    http.error_detail(&e)
                                );
                                last = Last::Failed {
                                    failure: Failure::Unreachable(detail),
                                    destination: dest.name.clone(),
                                };
                                Outcome::Transient
                            }
                            None => {
                                last = timed_out("first byte");
                                Outcome::Transient
                            }
                        }
                    } else {
                        let max = http.config().max_response_body;
                        match within(&clock, attempt_end, read_bounded(response, max)).await {
                            None => {
                                last = timed_out("whole error body");
                                Outcome::Transient
                            }
                            Some(Err(e)) => {
                                let detail = format!(
                                    "HTTP {}: the body broke: {}",
                                    status.as_u16(),
                                    http.error_detail(&e)
                                );
                                last = Last::Failed {
                                    failure: Failure::Unreachable(detail),
                                    destination: dest.name.clone(),
                                };
                                Outcome::Transient
                            }
                            Some(Ok(bytes)) => {
                                let verdict =
                                    http.classifier().classify_parts(status, &head, &bytes);
                                heed(dest, &verdict.limits);
                                let detail = describe(status, &verdict, &bytes);
                                tracing::info!(destination = %dest.name, detail = %detail, "a proxied attempt failed");
                                billing = verdict.is_billing().then_some(detail);
                                last = Last::Answer {
                                    status,
                                    headers: head,
                                    body: bytes,
                                    destination: dest.name.clone(),
                                };
                                verdict.outcome
                            }
                        }
                    }
                }
            };
            // A billing stop was refused, not processed: like an unsent request.
            sent |= !unsent && billing.is_none();
            permit.record(outcome);
            drop(slot);
            count_attempt(dest, outcome);
            if outcome.is_failure() {
                let detail = match (&billing, &last) {
                    (Some(detail), _) => detail.clone(),
                    (None, Last::Answer { status, .. }) => format!("HTTP {}", status.as_u16()),
                    (None, Last::Failed { failure, .. }) => failure.to_string(),
                    (None, Last::Nothing) => String::new(),
                };
                dest.health.failure(clock.system_now(), detail);
            }
            if let Some(detail) = billing {
                state.alerts.raise_soon(Alert::billing_stop(
                    &dest.name,
                    &detail,
                    clock.system_now(),
                ));
                // The call was not processed: another destination (another key) may take it.
                continue 'chain;
            }
            if !outcome.is_retryable() {
                // A final answer (a 400, a 404): the caller's to see.
                break 'chain;
            }
            if !(retryable || unsent) || !body.replayable() {
                break 'chain;
            }
            match proxy.retry.on_failure(&mut retry, outcome) {
                RetryDecision::Retry(delay) if clock.now() + delay < deadline => {
                    clock.sleep(delay).await;
                }
                // The wait would outlast the deadline: a fallback may still answer in time.
                RetryDecision::Retry(_) => break,
                RetryDecision::GiveUp(GiveUpReason::Budget) => {
                    budget_refused(dest);
                    break;
                }
                RetryDecision::GiveUp(_) => break,
            }
        }
    }
    match last {
        Last::Answer {
            status,
            headers,
            body,
            destination,
        } => {
            calls("upstream_error");
            let mut headers = answer_headers(&headers, attempts, &destination);
            headers.remove(header::CONTENT_LENGTH);
            Ok(respond(status, headers, Body::from(body)))
        }
        Last::Failed {
            failure,
            destination,
        } => {
            calls(match failure {
                Failure::Refused { .. } => "refused",
                Failure::Unreachable(_) => "unreachable",
                Failure::TimedOut(_) => "timeout",
                Failure::DeadlineExceeded => "deadline_exceeded",
            });
            Err(ProxyError::Failed {
                failure,
                attempts,
                destination,
            })
        }
        Last::Nothing => {
            calls("refused");
            Err(ProxyError::Failed {
                failure: Failure::Refused {
                    reason: "circuit_open",
                    retry_after: None,
                },
                attempts,
                destination: addressed.name.clone(),
            })
        }
    }
}

/// Counts a finished attempt of `dest`.
fn count_attempt(dest: &Destination, outcome: Outcome) {
    metrics::counter!(PROXY_ATTEMPTS.name, "destination" => dest.name.clone(), "outcome" => outcome.as_str())
        .increment(1);
}

/// Counts a retry the budget refused.
fn budget_refused(dest: &Destination) {
    metrics::counter!(PROXY_BUDGET_REFUSALS.name, "destination" => dest.name.clone()).increment(1);
    tracing::info!(destination = %dest.name, "the retry budget is spent; not retrying");
}
