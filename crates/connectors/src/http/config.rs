//! [`HttpConfig`]: an HTTP API the relay calls on its clients' behalf.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use ferrule_policy::classify::ProviderClassifierConfig;
use http::HeaderMap;
use reqwest::Url;
use serde::Deserialize;

use crate::ConnectorError;
use crate::webhook::check_ip_literal;

/// The default of [`HttpConfig::max_retry_body`] and [`HttpConfig::max_response_body`]: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// Headers a destination may not inject: the framing and routing of the request are the
/// client library's, and `webhook-*` belongs to signed webhooks.
const RESERVED: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
];

/// An HTTP API called through the relay: where it is, the headers (credentials) every request
/// gets, and how its answers are classified.
///
/// ```
/// use ferrule_connectors::http::HttpConfig;
///
/// let mut config = HttpConfig::new("https://api.openai.com/v1");
/// config.headers.insert("authorization".into(), "Bearer sk-test".into());
/// config.validate()?;
/// // Header values are credentials: never shown.
/// assert!(!format!("{config:?}").contains("sk-test"));
/// # Ok::<(), ferrule_connectors::ConnectorError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The API's base URL (`http` or `https`); a call's path is appended to it.
    pub base_url: String,
    /// Headers every request gets, replacing the caller's of the same name: typically the
    /// API key (`authorization`, `x-api-key`). Values are never shown.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Allow loopback, private, link-local and other non-public targets (default `false`).
    #[serde(default)]
    pub allow_private: bool,
    /// How long one attempt may wait for the response's head (default 30 s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How answers are classified (`generic`, `openai`, `anthropic`) and the longest
    /// `retry-after` honoured.
    #[serde(default)]
    pub classifier: ProviderClassifierConfig,
    /// Retry `POST` and `PATCH` too, without an `Idempotency-Key` (default `false`): for APIs
    /// where repeating a call is harmless, such as AI completions.
    #[serde(default)]
    pub retry_post: bool,
    /// The largest request body kept to be sent again (default 1 MiB); a larger one is sent
    /// once, never retried.
    #[serde(default = "default_max_body")]
    pub max_retry_body: usize,
    /// The largest response body stored for a queued call (default 1 MiB); a larger one is cut
    /// and marked truncated.
    #[serde(default = "default_max_body")]
    pub max_response_body: usize,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_body() -> usize {
    DEFAULT_MAX_BODY
}

impl HttpConfig {
    /// A configuration for `base_url` with every other field at its default.
    pub fn new(base_url: impl Into<String>) -> Self {
        HttpConfig {
            base_url: base_url.into(),
            headers: BTreeMap::new(),
            allow_private: false,
            timeout: default_timeout(),
            classifier: ProviderClassifierConfig::default(),
            retry_post: false,
            max_retry_body: DEFAULT_MAX_BODY,
            max_response_body: DEFAULT_MAX_BODY,
        }
    }

    /// Checks every field; the error names the one at fault.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        self.parse().map(drop)
    }

    /// Validates and returns the parsed base URL (without a trailing `/`) and headers.
    pub(super) fn parse(&self) -> Result<(Url, HeaderMap), ConnectorError> {
        let base = parse_base_url(&self.base_url, self.allow_private)?;
        if self.timeout.is_zero() {
            return Err(ConnectorError::invalid("timeout", "must be more than zero"));
        }
        self.classifier.validate().map_err(|e| {
            ConnectorError::invalid(format!("classifier.{}", e.field()), e.message().to_owned())
        })?;
        let headers = parse_headers(&self.headers)?;
        Ok((base, headers))
    }
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: BTreeMap<&str, &str> = self
            .headers
            .keys()
            .map(|name| (name.as_str(), "***"))
            .collect();
        f.debug_struct("HttpConfig")
            .field("base_url", &self.base_url)
            .field("headers", &headers)
            .field("allow_private", &self.allow_private)
            .field("timeout", &self.timeout)
            .field("classifier", &self.classifier)
            .field("retry_post", &self.retry_post)
            .field("max_retry_body", &self.max_retry_body)
            .field("max_response_body", &self.max_response_body)
            .finish()
    }
}

/// Parses the base URL: `http` or `https`, a host, no credentials, query or fragment, and a
/// public IP literal unless `allow_private`.
fn parse_base_url(base_url: &str, allow_private: bool) -> Result<Url, ConnectorError> {
    let mut url = Url::parse(base_url).map_err(|e| ConnectorError::InvalidUrl {
        field: "base_url".into(),
        source: Box::new(e),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConnectorError::invalid(
            "base_url",
            format!(
                "scheme `{}` is not supported; use http or https",
                url.scheme()
            ),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConnectorError::invalid(
            "base_url",
            "must not have a query or fragment",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConnectorError::invalid(
            "base_url",
            "must not carry credentials; put them in `headers`",
        ));
    }
    check_ip_literal(&url, allow_private).map_err(|e| match e {
        ConnectorError::PrivateTarget { addr, range, .. } => ConnectorError::PrivateTarget {
            field: "base_url".into(),
            addr,
            range,
        },
        other => other,
    })?;
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

fn parse_headers(headers: &BTreeMap<String, String>) -> Result<HeaderMap, ConnectorError> {
    crate::shared::parse_extra_headers(
        headers,
        |name| RESERVED.contains(&name.as_str()),
        "frames the request and cannot be set",
    )
}
