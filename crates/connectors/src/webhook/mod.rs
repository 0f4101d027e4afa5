//! The webhook connector: an HTTP `POST` of the payload, signed the Standard Webhooks way.
//!
//! Each attempt sends the stored payload bytes unchanged with `content-type: application/json`
//! and the three Standard Webhooks headers: `webhook-id` (the ferrule message id, stable across
//! retries so the receiver can de-duplicate), `webhook-timestamp` (unix seconds of this attempt,
//! from the connector's clock) and, when a secret is configured, `webhook-signature`.
//!
//! | response | outcome |
//! |---|---|
//! | 2xx | [`Outcome::Success`] |
//! | 3xx (redirects are not followed) | [`Outcome::Permanent`] |
//! | 408, 425, 429, 5xx | [`Outcome::Transient`], or [`Outcome::RetryAfter`] with `Retry-After` |
//! | 410 (endpoint gone), other 4xx | [`Outcome::Permanent`] |
//! | connect error, reset, timeout | [`Outcome::Transient`] |
//! | non-public target (SSRF guard) | [`Outcome::Permanent`] |
//!
//! **Output.** A success's [`DeliveryResult::output`] is `{"status": 200}`, with `"body"` the
//! response's JSON when its `content-type` is JSON (`application/json`, or a `+json` type) and
//! it is at most [`MAX_OUTPUT_BODY`] bytes (16 KiB); a larger or unreadable body is left out,
//! never cut.

mod config;
mod sign;
mod ssrf;
#[cfg(test)]
mod tests;

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use ferrule_policy::classify::HttpClassifier;
use ferrule_policy::duration::readable;
use ferrule_policy::{Outcome, SharedClock};
use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, StatusCode};
use reqwest::{Client, Url, redirect};
use serde_json::{Value, json};

pub use self::config::WebhookConfig;
pub(crate) use self::config::check_ip_literal;
pub use self::sign::{
    VerifyError, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, WebhookSecret, sign, verify,
};
pub(crate) use self::ssrf::GuardedResolver;
pub use self::ssrf::{RefusedTarget, non_public_range};
use crate::shared::{DETAIL_CHARS, quote, transport_detail};
use crate::{Connector, ConnectorError, Delivery, DeliveryResult};

/// The most body bytes read to quote from: enough for [`DETAIL_CHARS`] characters of UTF-8.
const BODY_BYTES: usize = 4 * DETAIL_CHARS;
/// The largest JSON response body passed on in a success's output, in bytes (16 KiB).
pub const MAX_OUTPUT_BODY: usize = 16 * 1024;

/// Delivers messages to one webhook destination.
///
/// Built once per destination: it owns one HTTP client (connection pool, TLS roots, timeout,
/// no redirects, no proxy, and unless `allow_private` the SSRF-guarding DNS resolver). Cloning is
/// cheap and shares the pool.
///
/// ```
/// use ferrule_connectors::webhook::{WebhookConfig, WebhookConnector};
///
/// let config: WebhookConfig = toml::from_str(r#"
///     url = "https://hooks.example.com/ferrule"
///     secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
/// "#)?;
/// let connector = WebhookConnector::new(config, ferrule_policy::clock::system())?;
///
/// let private = WebhookConfig::new("http://169.254.169.254/latest/meta-data");
/// let err = WebhookConnector::new(private, ferrule_policy::clock::system()).unwrap_err();
/// assert_eq!(err.field(), Some("url"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct WebhookConnector {
    client: Client,
    url: Url,
    secret: Option<WebhookSecret>,
    headers: HeaderMap,
    allow_private: bool,
    timeout: Duration,
    classifier: HttpClassifier,
    clock: SharedClock,
}

impl WebhookConnector {
    /// Validates `config` and builds the connector; `clock` stamps `webhook-timestamp`, measures
    /// durations and dates `Retry-After`.
    pub fn new(config: WebhookConfig, clock: SharedClock) -> Result<Self, ConnectorError> {
        let (url, headers) = config.parse()?;
        let mut builder = Client::builder()
            .redirect(redirect::Policy::none())
            .timeout(config.timeout)
            // A proxy would resolve names itself, out of reach of the SSRF guard.
            .no_proxy()
            .user_agent(concat!("ferrule/", env!("CARGO_PKG_VERSION")));
        if !config.allow_private {
            builder = builder.dns_resolver(ssrf::GuardedResolver);
        }
        let client = builder.build().map_err(|e| ConnectorError::Client {
            source: Box::new(e),
        })?;
        Ok(WebhookConnector {
            client,
            url,
            secret: config.secret,
            headers,
            allow_private: config.allow_private,
            timeout: config.timeout,
            classifier: HttpClassifier::default().with_clock(clock.clone()),
            clock,
        })
    }

    /// The URL this connector posts to.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// One health check: `GET url` with this connector's client (the SSRF guard included),
    /// passing on a status in `expect` (any 2xx when empty).
    pub(crate) async fn check_get(&self, url: &Url, expect: &[u16]) -> crate::CheckResult {
        config::check_ip_literal(url, self.allow_private).map_err(|e| format!("refused: {e}"))?;
        let response = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| crate::shared::transport_detail(&e))?;
        let status = response.status().as_u16();
        if crate::check::status_passes(status, expect) {
            Ok(format!("answered {status}"))
        } else {
            Err(format!("answered {status}"))
        }
    }

    /// One attempt, without the timing: the outcome, status, detail and output.
    async fn attempt(
        &self,
        delivery: &Delivery<'_>,
    ) -> (Outcome, Option<i32>, String, Option<Value>) {
        // Construction refused non-public IP literals already; checking again keeps the
        // guarantee local to the request.
        if let Err(err) = config::check_ip_literal(&self.url, self.allow_private) {
            return (Outcome::Permanent, None, format!("refused: {err}"), None);
        }
        let Ok(id) = HeaderValue::from_str(delivery.message_id) else {
            return (
                Outcome::Permanent,
                None,
                "the message id is not a valid header value".to_owned(),
                None,
            );
        };
        let timestamp = unix_seconds(self.clock.system_now());
        let mut request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(WEBHOOK_ID, id)
            .header(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
        if let Some(traceparent) = delivery
            .traceparent
            .and_then(|t| HeaderValue::from_str(t).ok())
        {
            request = request.header("traceparent", traceparent);
        }
        if let Some(secret) = &self.secret {
            let signature = sign(
                secret,
                delivery.message_id,
                timestamp,
                delivery.payload.as_bytes(),
            );
            match HeaderValue::from_str(&signature) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    request = request.header(WEBHOOK_SIGNATURE, value);
                }
                // Base64 and "v1," are always valid header text.
                Err(_) => {
                    return (Outcome::Permanent, None, "could not sign".to_owned(), None);
                }
            }
        }
        match request.body(delivery.payload.to_owned()).send().await {
            Ok(response) => self.classify_response(response).await,
            Err(err) => (error_outcome(&err), None, self.error_detail(&err), None),
        }
    }

    async fn classify_response(
        &self,
        response: reqwest::Response,
    ) -> (Outcome, Option<i32>, String, Option<Value>) {
        let status = response.status();
        let code = Some(i32::from(status.as_u16()));
        if status.is_redirection() {
            let target = match response.headers().get(LOCATION) {
                Some(location) => redirect_target(&self.url, location.as_bytes()),
                None => "nowhere (no Location header)".to_owned(),
            };
            let detail = format!(
                "HTTP {}: redirect to {target}, not followed",
                status.as_u16()
            );
            return (Outcome::Permanent, code, detail, None);
        }
        let outcome = self.classifier.classify_parts(status, response.headers());
        // A success's JSON body is read whole, up to one byte past the bound, for its output.
        let json_body = outcome.is_success() && is_json(response.headers());
        let limit = if json_body {
            MAX_OUTPUT_BODY + 1
        } else {
            BODY_BYTES
        };
        let (bytes, whole) = read_prefix(response, limit).await;
        let body = quote(&String::from_utf8_lossy(
            &bytes[..bytes.len().min(BODY_BYTES)],
        ));
        let output = outcome.is_success().then(|| {
            let mut output = json!({ "status": status.as_u16() });
            if json_body
                && whole
                && bytes.len() <= MAX_OUTPUT_BODY
                && let Ok(value) = serde_json::from_slice::<Value>(&bytes)
            {
                output["body"] = value;
            }
            output
        });
        let mut detail = format!("HTTP {}", status.as_u16());
        if status == StatusCode::GONE {
            detail.push_str(" (endpoint gone)");
        }
        if let Outcome::RetryAfter(wait) = outcome {
            let _ = write!(detail, " (retry after {})", readable(wait));
        }
        if !outcome.is_success() && !body.is_empty() {
            let _ = write!(detail, ": {body}");
        }
        (outcome, code, detail, output)
    }

    fn error_detail(&self, err: &reqwest::Error) -> String {
        if let Some(refused) = find_source::<RefusedTarget>(err) {
            return format!("refused: {refused}; set `allow_private = true` to allow it");
        }
        if err.is_timeout() {
            return format!("timed out after {}", readable(self.timeout));
        }
        if let Some(io) = find_source::<std::io::Error>(err) {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => return "connection refused".to_owned(),
                ConnectionReset => return "connection reset".to_owned(),
                ConnectionAborted => return "connection aborted".to_owned(),
                _ => {}
            }
        }
        transport_detail(err)
    }
}

impl Connector for WebhookConnector {
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

/// The outcome of a transport error: refused targets and malformed requests are permanent,
/// everything else (connect errors, resets, timeouts) transient.
fn error_outcome(err: &reqwest::Error) -> Outcome {
    if find_source::<RefusedTarget>(err).is_some() || err.is_builder() {
        Outcome::Permanent
    } else {
        Outcome::Transient
    }
}

/// The first error of type `T` in `err`'s source chain.
pub(crate) fn find_source<'a, T: StdError + 'static>(
    err: &'a (dyn StdError + 'static),
) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

fn unix_seconds(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads at most `limit` bytes from the start of a response body, and whether that read
/// ended without an error. An error while reading just ends it.
async fn read_prefix(mut response: reqwest::Response, limit: usize) -> (Vec<u8>, bool) {
    let mut bytes = Vec::new();
    while bytes.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(_) => return (bytes, false),
        }
    }
    bytes.truncate(limit);
    (bytes, true)
}

/// Whether `content-type` names JSON: `application/json` or a `+json` type, any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .split_once('/')
            .is_some_and(|(_, subtype)| subtype.ends_with("+json"))
}

/// Where a redirect points, as far as a detail may say: the target's origin, and `/…` for a
/// path or query, which may hold a token (a receiver redirecting `/hook/SECRET` to
/// `/hook/SECRET/` would otherwise put the secret in every detail).
fn redirect_target(base: &Url, location: &[u8]) -> String {
    let location = String::from_utf8_lossy(location);
    match base.join(location.trim()) {
        Ok(target) if target.has_host() => {
            let rest = target.path() != "/" || target.query().is_some();
            format!(
                "{}{}",
                target.origin().ascii_serialization(),
                if rest { "/…" } else { "" }
            )
        }
        _ => "an invalid Location".to_owned(),
    }
}
