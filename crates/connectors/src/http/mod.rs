//! The HTTP connector: any HTTP API (OpenAI, Anthropic, Slack, …) called on a client's behalf,
//! with the destination's credentials injected and the answer classified the way the API's
//! SDK would.
//!
//! It serves both shapes of a call. The relay's proxy sends a forwarded request with
//! [`HttpConnector::send`] and streams the answer back itself. A queued call is a message whose
//! payload describes the request ([`CallPayload`]); [`Connector::deliver`] sends it, and a
//! finished call's [`DeliveryResult::output`] is the answer:
//!
//! ```json
//! {"status": 200, "headers": {"content-type": "application/json"}, "body": {…}, "truncated": false}
//! ```
//!
//! `body` is the response's JSON when it parses, its text otherwise, at most
//! `max_response_body` bytes (`truncated` says when it was cut). The answer is kept for a
//! permanent failure too (a 400 says what was wrong), in [`DeliveryResult::output`].
//!
//! | answer | outcome |
//! |---|---|
//! | as [`ProviderClassifier`] says | 2xx success; 408/409/425/429/5xx retryable; billing stops and other 4xx permanent |
//! | connect error, reset, timeout | [`Outcome::Transient`] |
//! | non-public target (SSRF guard) | [`Outcome::Permanent`] |

mod config;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use ferrule_policy::classify::{ProviderClassifier, Verdict};
use ferrule_policy::duration::readable;
use ferrule_policy::{Context, Outcome, SharedClock};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use reqwest::{Client, Url, redirect};
use serde::Deserialize;
use serde_json::{Map, Value, json};

pub use self::config::{DEFAULT_MAX_BODY, HttpConfig};
use crate::shared::{quote, transport_detail};
use crate::webhook::{GuardedResolver, RefusedTarget, check_ip_literal, find_source};
use crate::{Connector, ConnectorError, Delivery, DeliveryResult, PayloadError};

/// Calls one HTTP API.
///
/// Built once per destination: one HTTP client (connection pool, TLS roots, no redirects, no
/// proxy, and unless `allow_private` the SSRF-guarding DNS resolver). Cloning is cheap and
/// shares the pool.
#[derive(Debug, Clone)]
pub struct HttpConnector {
    client: Client,
    base: Url,
    headers: HeaderMap,
    config: HttpConfig,
    classifier: ProviderClassifier,
    clock: SharedClock,
}

/// The request a queued call describes: `{"method", "path", "headers"?, "body"?}`.
///
/// `path` (with an optional `?query`) is appended to the destination's base URL. A `body` that
/// is a JSON string is sent as that text; any other JSON value is sent as JSON with
/// `content-type: application/json` unless `headers` names another type.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallPayload {
    /// The HTTP method, e.g. `POST`.
    pub method: String,
    /// The path below the base URL, e.g. `/chat/completions`, with an optional query.
    pub path: String,
    /// Request headers (the destination's own headers win over these).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// The request body.
    #[serde(default)]
    pub body: Option<Value>,
    /// A webhook destination that receives the answer (the relay handles it).
    #[serde(default)]
    pub reply_to: Option<String>,
}

/// A [`CallPayload`] checked: the method, path and headers parse.
#[derive(Debug, Clone)]
pub struct ValidCall {
    /// The method.
    pub method: Method,
    /// The path and query below the base URL.
    pub path: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The body bytes.
    pub body: Vec<u8>,
    /// Where the answer goes, if anywhere.
    pub reply_to: Option<String>,
}

/// Checks a queued call's payload (JSON text); the error names the field at fault.
///
/// ```
/// use ferrule_connectors::http::validate_call;
///
/// let call = validate_call(r#"{"method": "POST", "path": "/chat/completions", "body": {"model": "gpt-4o-mini"}}"#)?;
/// assert_eq!(call.method, http::Method::POST);
/// let err = validate_call(r#"{"method": "P OST", "path": "/x"}"#).unwrap_err();
/// assert_eq!(err.field(), "method");
/// # Ok::<(), ferrule_connectors::PayloadError>(())
/// ```
pub fn validate_call(payload: &str) -> Result<ValidCall, PayloadError> {
    let call: CallPayload = serde_json::from_str(payload).map_err(|e| {
        PayloadError::new(
            "payload",
            format!(
                "a call is {{\"method\", \"path\", \"headers\"?, \"body\"?, \"reply_to\"?}}: {e}"
            ),
        )
    })?;
    let method: Method = call
        .method
        .parse()
        .map_err(|_| PayloadError::new("method", "not an HTTP method"))?;
    check_path(&call.path).map_err(|reason| PayloadError::new("path", reason))?;
    let mut headers = HeaderMap::new();
    for (name, value) in &call.headers {
        let field = || format!("headers.{name}");
        let name: HeaderName = name
            .parse()
            .map_err(|_| PayloadError::new(field(), "not a valid header name"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| PayloadError::new(field(), "not a valid header value"))?;
        headers.append(name, value);
    }
    let body = match call.body {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => text.into_bytes(),
        Some(json) => {
            if !headers.contains_key(CONTENT_TYPE) {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            json.to_string().into_bytes()
        }
    };
    Ok(ValidCall {
        method,
        path: call.path,
        headers,
        body,
        reply_to: call.reply_to,
    })
}

/// Checks a path below the base URL: it starts with `/`, and has no `..` segment (plain or
/// percent-encoded) that would climb out of the base URL, no fragment and no control
/// characters.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must start with `/`");
    }
    if path.contains('#') || path.chars().any(char::is_control) {
        return Err("must not contain `#` or control characters");
    }
    let route = path.split('?').next().unwrap_or_default();
    let climbs = route.split('/').any(|segment| {
        let lower = segment.to_ascii_lowercase();
        matches!(lower.as_str(), ".." | "%2e%2e" | ".%2e" | "%2e.")
    });
    if climbs || route.contains('\\') {
        return Err("must not climb out of the base URL (`..`, `\\`)");
    }
    Ok(())
}

impl HttpConnector {
    /// One health check: `GET url` with this connector's client (the SSRF guard included),
    /// passing on a status in `expect` (any 2xx when empty). The destination's injected
    /// headers (its credentials) go along only when `url` has the base URL's origin, e.g.
    /// `GET https://api.openai.com/v1/models` for a base of `https://api.openai.com/v1`.
    pub(crate) async fn check_get(&self, url: &Url, expect: &[u16]) -> crate::CheckResult {
        check_ip_literal(url, self.config.allow_private).map_err(|e| format!("refused: {e}"))?;
        let mut request = self.client.get(url.clone());
        if url.origin() == self.base.origin() {
            request = request.headers(self.headers.clone());
        }
        let response = request.send().await.map_err(|e| self.error_detail(&e))?;
        let status = response.status().as_u16();
        if crate::check::status_passes(status, expect) {
            Ok(format!("answered {status}"))
        } else {
            Err(format!("answered {status}"))
        }
    }

    /// Validates `config` and builds the connector; `clock` measures durations and dates
    /// `retry-after` hints.
    pub fn new(config: HttpConfig, clock: SharedClock) -> Result<Self, ConnectorError> {
        let (base, headers) = config.parse()?;
        let mut builder = Client::builder()
            .redirect(redirect::Policy::none())
            .connect_timeout(config.timeout)
            // A proxy would resolve names itself, out of reach of the SSRF guard.
            .no_proxy()
            .user_agent(concat!("ferrule/", env!("CARGO_PKG_VERSION")));
        if !config.allow_private {
            builder = builder.dns_resolver(GuardedResolver);
        }
        let client = builder.build().map_err(|e| ConnectorError::Client {
            source: Box::new(e),
        })?;
        let classifier = ProviderClassifier::with_context(
            config.classifier.clone(),
            Context::default().with_clock(clock.clone()),
        )
        .map_err(|e| {
            ConnectorError::invalid(format!("classifier.{}", e.field()), e.message().to_owned())
        })?;
        Ok(HttpConnector {
            client,
            base,
            headers,
            config,
            classifier,
            clock,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// The base URL, without a trailing `/`.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// How answers are classified.
    pub fn classifier(&self) -> &ProviderClassifier {
        &self.classifier
    }

    /// The URL of `path_and_query` (starting with `/`) below the base URL, or why it is
    /// refused ([`check_path`]).
    pub fn target(&self, path_and_query: &str) -> Result<Url, &'static str> {
        check_path(path_and_query)?;
        let joined = format!(
            "{}{path_and_query}",
            self.base.as_str().trim_end_matches('/')
        );
        let url = Url::parse(&joined).map_err(|_| "does not make a valid URL")?;
        if url.origin() != self.base.origin() || !url.path().starts_with(self.base.path()) {
            return Err("must stay below the base URL");
        }
        Ok(url)
    }

    /// Starts one request to `url` (from [`target`](Self::target)): the caller's `headers`
    /// without `host` and `authorization` (the caller's credential is the relay's, never the
    /// upstream's), then the destination's headers over them.
    pub fn request(
        &self,
        method: Method,
        url: Url,
        headers: &HeaderMap,
    ) -> reqwest::RequestBuilder {
        let mut sent = headers.clone();
        sent.remove(HOST);
        sent.remove(AUTHORIZATION);
        for (name, value) in &self.headers {
            sent.insert(name.clone(), value.clone());
        }
        self.client.request(method, url).headers(sent)
    }

    /// Sends one request: [`request`](Self::request) with `body`, refusing a non-public IP
    /// literal first (construction did, but the check stays local to the request).
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        headers: &HeaderMap,
        body: reqwest::Body,
    ) -> Result<reqwest::Response, reqwest::Error> {
        self.request(method, url, headers).body(body).send().await
    }

    /// What went wrong with a request that got no answer, for a detail or an error body:
    /// never the URL.
    pub fn error_detail(&self, err: &reqwest::Error) -> String {
        if let Some(refused) = find_source::<RefusedTarget>(err) {
            return format!("refused: {refused}; set `allow_private = true` to allow it");
        }
        if err.is_timeout() {
            return format!("timed out after {}", readable(self.config.timeout));
        }
        transport_detail(err)
    }

    /// The outcome of a request that got no answer: a refused target is permanent, anything
    /// else (connect error, reset, timeout) transient.
    pub fn error_outcome(err: &reqwest::Error) -> Outcome {
        if find_source::<RefusedTarget>(err).is_some() || err.is_builder() {
            Outcome::Permanent
        } else {
            Outcome::Transient
        }
    }

    /// One attempt of a queued call, without the timing.
    async fn attempt(
        &self,
        delivery: &Delivery<'_>,
    ) -> (Outcome, Option<i32>, String, Option<Value>) {
        let call = match validate_call(delivery.payload) {
            Ok(call) => call,
            Err(e) => return (Outcome::Permanent, None, e.to_string(), None),
        };
        if let Err(err) = check_ip_literal(&self.base, self.config.allow_private) {
            return (Outcome::Permanent, None, format!("refused: {err}"), None);
        }
        let url = match self.target(&call.path) {
            Ok(url) => url,
            Err(reason) => {
                return (
                    Outcome::Permanent,
                    None,
                    format!("invalid `path`: {reason}"),
                    None,
                );
            }
        };
        let mut headers = call.headers;
        // The message id, stable across attempts, lets the API de-duplicate a retried call.
        if !headers.contains_key("idempotency-key")
            && let Ok(id) = HeaderValue::from_str(delivery.message_id)
        {
            headers.insert("idempotency-key", id);
        }
        // This attempt's trace context replaces any the stored call carried.
        if let Some(traceparent) = delivery
            .traceparent
            .and_then(|t| HeaderValue::from_str(t).ok())
        {
            headers.insert("traceparent", traceparent);
        }
        let sent = self.request(call.method, url, &headers).body(call.body);
        let response = match tokio::time::timeout(self.config.timeout, sent.send()).await {
            Err(_) => {
                let detail = format!("timed out after {}", readable(self.config.timeout));
                return (Outcome::Transient, None, detail, None);
            }
            Ok(Err(err)) => {
                return (
                    Self::error_outcome(&err),
                    None,
                    self.error_detail(&err),
                    None,
                );
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let head = response.headers().clone();
        let (bytes, truncated) = match read_bounded(response, self.config.max_response_body).await {
            Ok(read) => read,
            Err(err) => {
                let detail = format!(
                    "HTTP {}: reading the body: {}",
                    status.as_u16(),
                    self.error_detail(&err)
                );
                return (
                    Outcome::Transient,
                    Some(i32::from(status.as_u16())),
                    detail,
                    None,
                );
            }
        };
        let verdict = self.classifier.classify_parts(status, &head, &bytes);
        let detail = describe(status, &verdict, &bytes);
        let output = answer(status, &head, &bytes, truncated);
        (
            verdict.outcome,
            Some(i32::from(status.as_u16())),
            detail,
            Some(output),
        )
    }
}

impl Connector for HttpConnector {
    async fn deliver(&self, delivery: &Delivery<'_>) -> DeliveryResult {
        let start = self.clock.now();
        let (outcome, code, detail, output) = self.attempt(delivery).await;
        DeliveryResult {
            outcome,
            code,
            detail,
            duration: self.clock.now().saturating_duration_since(start),
            signal: None,
            output,
        }
    }
}

/// The detail of an answered attempt: the status, the classifier's reason, the provider's
/// request id, and for a failure the start of the body.
pub fn describe(status: StatusCode, verdict: &Verdict, body: &[u8]) -> String {
    let mut detail = format!("HTTP {}", status.as_u16());
    if let Some(reason) = verdict.reason {
        let _ = write!(detail, " ({})", reason.as_str());
    }
    if let Outcome::RetryAfter(wait) = verdict.outcome {
        let _ = write!(detail, " (retry after {})", readable(wait));
    }
    if let Some(id) = &verdict.request_id {
        let _ = write!(detail, " [request id {}]", quote(id));
    }
    if !verdict.outcome.is_success() {
        let text = quote(&String::from_utf8_lossy(&body[..body.len().min(800)]));
        if !text.is_empty() {
            let _ = write!(detail, ": {text}");
        }
    }
    detail
}

/// A stored answer: `{"status", "headers", "body", "truncated"}`, the body as JSON when it
/// parses and as text otherwise.
pub fn answer(status: StatusCode, headers: &HeaderMap, body: &[u8], truncated: bool) -> Value {
    let mut shown = Map::new();
    for (name, value) in headers {
        if let Ok(text) = value.to_str() {
            shown.insert(name.as_str().to_owned(), Value::String(text.to_owned()));
        }
    }
    let body = if body.is_empty() {
        Value::Null
    } else if !truncated && let Ok(json) = serde_json::from_slice::<Value>(body) {
        json
    } else {
        Value::String(String::from_utf8_lossy(body).into_owned())
    };
    json!({
        "status": status.as_u16(),
        "headers": shown,
        "body": body,
        "truncated": truncated,
    })
}

/// Reads a body up to `max` bytes, and whether there was more.
async fn read_bounded(
    mut response: reqwest::Response,
    max: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > max {
            bytes.truncate(max);
            return Ok((bytes, true));
        }
    }
    Ok((bytes, false))
}
