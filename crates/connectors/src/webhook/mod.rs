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

pub use self::config::WebhookConfig;
pub use self::sign::{
    VerifyError, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, WebhookSecret, sign, verify,
};
pub use self::ssrf::{RefusedTarget, non_public_range};
use crate::shared::{DETAIL_CHARS, quote, transport_detail};
use crate::{Connector, ConnectorError, Delivery, DeliveryResult};

/// The most body bytes read to quote from: enough for [`DETAIL_CHARS`] characters of UTF-8.
const BODY_BYTES: usize = 4 * DETAIL_CHARS;

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

    /// One attempt, without the timing.
    async fn attempt(&self, delivery: &Delivery<'_>) -> (Outcome, Option<i32>, String) {
        // Construction refused non-public IP literals already; checking again keeps the
        // guarantee local to the request.
        if let Err(err) = config::check_ip_literal(&self.url, self.allow_private) {
            return (Outcome::Permanent, None, format!("refused: {err}"));
        }
        let Ok(id) = HeaderValue::from_str(delivery.message_id) else {
            return (
                Outcome::Permanent,
                None,
                "the message id is not a valid header value".to_owned(),
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
                    return (Outcome::Permanent, None, "could not sign".to_owned());
                }
            }
        }
        match request.body(delivery.payload.to_owned()).send().await {
            Ok(response) => self.classify_response(response).await,
            Err(err) => (error_outcome(&err), None, self.error_detail(&err)),
        }
    }

    async fn classify_response(
        &self,
        response: reqwest::Response,
    ) -> (Outcome, Option<i32>, String) {
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
            return (Outcome::Permanent, code, detail);
        }
        let outcome = self.classifier.classify_parts(status, response.headers());
        let body = read_snippet(response).await;
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
        (outcome, code, detail)
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
        let (outcome, code, detail) = self.attempt(delivery).await;
        DeliveryResult {
            outcome,
            code,
            detail,
            duration: self.clock.now().saturating_duration_since(start),
            signal: None,
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
fn find_source<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
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

/// Reads the start of a response body for a result's detail, as one line of at most
/// [`DETAIL_CHARS`] characters. Errors while reading just end the snippet.
async fn read_snippet(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    bytes.truncate(BODY_BYTES);
    quote(&String::from_utf8_lossy(&bytes))
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
