//! [`WebhookConfig`]: one webhook destination, as written in the relay's TOML.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName};
use reqwest::Url;
use serde::{Deserialize, Serialize, Serializer};

use super::sign::WebhookSecret;
use super::ssrf::non_public_range;
use crate::ConnectorError;

/// How header values and passwords are shown in `Debug` and `Serialize`.
const REDACTED: &str = "***";

/// Headers the connector sets itself, which extra `headers` may not override.
const RESERVED_HEADERS: &[HeaderName] = &[
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::HOST,
    header::CONNECTION,
];

/// One webhook destination.
///
/// ```toml
/// url = "https://hooks.example.com/ferrule"
/// secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # optional: sign with Standard Webhooks
/// timeout = "15s"                                   # per attempt, the default
/// allow_private = false                             # the default: refuse loopback, 10/8, …
/// headers = { authorization = "Bearer abc" }        # optional extra headers
/// ```
///
/// `Debug` and `Serialize` hide the secret, header values and any password in the URL: a
/// serialised configuration is for showing, not for storing.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to `POST`: an `http` or `https` URL.
    #[serde(serialize_with = "serialize_url")]
    pub url: String,
    /// The Standard Webhooks signing secret; without one, requests carry no `webhook-signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<WebhookSecret>,
    /// Allow loopback, private, link-local and other non-public targets (default `false`).
    #[serde(default)]
    pub allow_private: bool,
    /// How long one attempt may take, from connecting to reading the response (default 15 s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra request headers, e.g. an `authorization` the receiver wants. They may not replace
    /// `content-type`, the `webhook-*` headers or the framing headers.
    #[serde(default, serialize_with = "serialize_headers")]
    pub headers: BTreeMap<String, String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(15)
}

impl WebhookConfig {
    /// A configuration for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        WebhookConfig {
            url: url.into(),
            secret: None,
            allow_private: false,
            timeout: default_timeout(),
            headers: BTreeMap::new(),
        }
    }

    /// Checks every field; the error names the one at fault.
    ///
    /// Refuses a URL that does not parse or is not `http`/`https`, an IP-literal URL in a
    /// non-public range unless `allow_private` is set, a zero timeout, and extra headers that
    /// are malformed, listed twice or reserved. Host names are checked later, on every
    /// connection, because DNS answers can change.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        self.parse().map(drop)
    }

    /// Validates and returns the parsed URL and extra headers.
    pub(super) fn parse(&self) -> Result<(Url, HeaderMap), ConnectorError> {
        let url = parse_url(&self.url, self.allow_private)?;
        if self.timeout.is_zero() {
            return Err(ConnectorError::invalid("timeout", "must be more than zero"));
        }
        let headers = parse_headers(&self.headers)?;
        Ok((url, headers))
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: BTreeMap<&str, &str> = self
            .headers
            .keys()
            .map(|k| (k.as_str(), REDACTED))
            .collect();
        f.debug_struct("WebhookConfig")
            .field("url", &redact_url(&self.url))
            .field("secret", &self.secret)
            .field("allow_private", &self.allow_private)
            .field("timeout", &self.timeout)
            .field("headers", &headers)
            .finish()
    }
}

/// The URL with any password replaced by `***`.
fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Setting a password only fails for URLs that cannot have one, which this has.
            let _ = parsed.set_password(Some(REDACTED));
            parsed.into()
        }
        _ => url.to_owned(),
    }
}

fn serialize_url<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redact_url(url))
}

fn serialize_headers<S: Serializer>(
    headers: &BTreeMap<String, String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(headers.keys().map(|k| (k, REDACTED)))
}

/// Parses and checks the URL (scheme, host, IP-literal target).
pub(super) fn parse_url(url: &str, allow_private: bool) -> Result<Url, ConnectorError> {
    let parsed = Url::parse(url).map_err(|e| ConnectorError::InvalidUrl {
        field: "url".into(),
        source: Box::new(e),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConnectorError::invalid(
            "url",
            format!(
                "scheme `{}` is not supported; use http or https",
                parsed.scheme()
            ),
        ));
    }
    check_ip_literal(&parsed, allow_private)?;
    Ok(parsed)
}

/// Refuses an IP-literal URL whose address is not public, unless `allow_private`.
pub(crate) fn check_ip_literal(url: &Url, allow_private: bool) -> Result<(), ConnectorError> {
    if allow_private {
        return Ok(());
    }
    let Some(host) = url.host_str() else {
        return Err(ConnectorError::invalid("url", "has no host"));
    };
    // The URL parser normalises IPv4 literals (`2130706433`, `0x7f.1`) to dotted quads and
    // brackets IPv6 ones, so a literal parses here and a domain name does not.
    let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return Ok(());
    };
    match non_public_range(ip) {
        Some(range) => Err(ConnectorError::PrivateTarget {
            field: "url".into(),
            addr: ip,
            range,
        }),
        None => Ok(()),
    }
}

fn parse_headers(headers: &BTreeMap<String, String>) -> Result<HeaderMap, ConnectorError> {
    crate::shared::parse_extra_headers(
        headers,
        |name| name.as_str().starts_with("webhook-") || RESERVED_HEADERS.contains(name),
        "is set by the connector and cannot be overridden",
    )
}
