//! Classifying the answers of HTTP APIs the way their official SDKs do: a generic table plus
//! the OpenAI and Anthropic specifics (billing stops, overload, rate-limit headers, `usage`).

use std::fmt;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::retry_after::parse_retry_after;
use super::{Classify, Outcome};
use crate::clock::{self, SharedClock};
use crate::{ConfigError, Context};

/// Which API's conventions a [`ProviderClassifier`] follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Any HTTP API: status table, `retry-after-ms`, `retry-after`, `x-should-retry`.
    #[default]
    Generic,
    /// The OpenAI API (and compatible ones): also 409 transient, 429 `insufficient_quota`
    /// permanent, `x-ratelimit-*` headers, `x-request-id`.
    #[serde(rename = "openai")]
    OpenAi,
    /// The Anthropic API: also 409 and 529 transient, `enforced_spend_limit_reached`
    /// permanent, `anthropic-ratelimit-*` headers, `request-id`.
    Anthropic,
}

impl Provider {
    /// The name written in configuration: `generic`, `openai`, `anthropic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Generic => "generic",
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Configuration of a [`ProviderClassifier`].
///
/// ```toml
/// provider = "openai"
/// max_retry_after = "20s"   # a longer hint fails fast instead of holding the caller
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderClassifierConfig {
    /// Whose conventions to follow.
    pub provider: Provider,
    /// The longest server-requested wait honoured (default 60 s, as Portkey caps it). A
    /// rate-limit answer asking for longer is [`Outcome::Permanent`] with the reason
    /// [`Reason::RetryAfterTooLong`]: the caller learns at once rather than after the wait.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
}

impl Default for ProviderClassifierConfig {
    fn default() -> Self {
        ProviderClassifierConfig {
            provider: Provider::Generic,
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl ProviderClassifierConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_retry_after.is_zero() {
            return Err(ConfigError::new(
                "max_retry_after",
                "must be longer than zero",
            ));
        }
        Ok(())
    }
}

/// Why a [`Verdict`] is what it is, when the status alone does not say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// A billing stop: OpenAI's 429 `insufficient_quota`, Anthropic's
    /// `enforced_spend_limit_reached`. Permanent until someone pays: alert, do not retry.
    Billing,
    /// The provider is overloaded (Anthropic 529 `overloaded_error`): back off and retry.
    Overloaded,
    /// A rate limit (429).
    RateLimited,
    /// The server asked to wait longer than `max_retry_after`: failed fast.
    RetryAfterTooLong,
    /// `x-should-retry` decided, overriding the status table.
    ShouldRetryHeader,
}

impl Reason {
    /// A short stable name, e.g. for a metric label or an event detail.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Billing => "billing",
            Reason::Overloaded => "overloaded",
            Reason::RateLimited => "rate_limited",
            Reason::RetryAfterTooLong => "retry_after_too_long",
            Reason::ShouldRetryHeader => "x_should_retry",
        }
    }
}

/// What one remaining-quota header family says: how many are left and when the window resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Quota {
    /// Requests or tokens left in the current window.
    pub remaining: Option<u64>,
    /// How long until the window resets, from the response.
    pub reset: Option<Duration>,
}

impl Quota {
    /// The wait before the next call if nothing is left.
    fn wait_if_exhausted(self) -> Option<Duration> {
        (self.remaining == Some(0)).then_some(self.reset.unwrap_or_default())
    }
}

/// The provider's rate-limit headers, for a limiter that waits before a call would be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LimitHint {
    /// Requests: `x-ratelimit-{remaining,reset}-requests`,
    /// `anthropic-ratelimit-requests-{remaining,reset}`.
    pub requests: Quota,
    /// Tokens: `x-ratelimit-{remaining,reset}-tokens`, `anthropic-ratelimit-tokens-*`.
    pub tokens: Quota,
    /// Anthropic input tokens: `anthropic-ratelimit-input-tokens-*`.
    pub input_tokens: Quota,
    /// Anthropic output tokens: `anthropic-ratelimit-output-tokens-*`.
    pub output_tokens: Quota,
}

impl LimitHint {
    /// How long to hold the next call: the longest reset among the exhausted quotas, `None`
    /// when none is exhausted.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ferrule_policy::classify::{LimitHint, Quota};
    ///
    /// let hint = LimitHint {
    ///     requests: Quota { remaining: Some(0), reset: Some(Duration::from_secs(6)) },
    ///     tokens: Quota { remaining: Some(1200), reset: Some(Duration::from_millis(250)) },
    ///     ..Default::default()
    /// };
    /// assert_eq!(hint.wait(), Some(Duration::from_secs(6)));
    /// ```
    pub fn wait(&self) -> Option<Duration> {
        [
            self.requests,
            self.tokens,
            self.input_tokens,
            self.output_tokens,
        ]
        .into_iter()
        .filter_map(Quota::wait_if_exhausted)
        .max()
    }

    /// Whether any header was found.
    pub fn is_empty(&self) -> bool {
        *self == LimitHint::default()
    }
}

/// Everything a [`ProviderClassifier`] reads from one response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// What the response means to the policies.
    pub outcome: Outcome,
    /// Why, when the status alone does not say it.
    pub reason: Option<Reason>,
    /// The provider's id for the request (`x-request-id`, `request-id`), to quote to support.
    pub request_id: Option<String>,
    /// The error type or code of the provider's error body (`insufficient_quota`,
    /// `overloaded_error`, …), at most 100 characters.
    pub error_code: Option<String>,
    /// The rate-limit headers.
    pub limits: LimitHint,
}

impl Verdict {
    /// Whether this is a billing stop (an operator must act; retrying never helps).
    pub fn is_billing(&self) -> bool {
        self.reason == Some(Reason::Billing)
    }
}

/// Classifies HTTP answers as an API's official SDK does.
///
/// | answer | outcome |
/// |---|---|
/// | 2xx | [`Outcome::Success`] |
/// | `x-should-retry: true` / `false` on a failure | retryable / [`Outcome::Permanent`], whatever the status |
/// | OpenAI 429 `insufficient_quota`, Anthropic `enforced_spend_limit_reached` | [`Outcome::Permanent`], [`Reason::Billing`] |
/// | 408, 425, 429, 5xx (Anthropic 529 included); 409 for OpenAI and Anthropic | retryable |
/// | other 1xx, 3xx, 4xx | [`Outcome::Permanent`] |
///
/// A retryable answer is [`Outcome::RetryAfter`] when `retry-after-ms` (milliseconds) or else
/// `retry-after` (seconds or an HTTP-date) parses, [`Outcome::Transient`] otherwise; a wait
/// past `max_retry_after` is [`Outcome::Permanent`] with [`Reason::RetryAfterTooLong`].
///
/// ```
/// use http::{HeaderMap, HeaderValue, StatusCode};
/// use ferrule_policy::Outcome;
/// use ferrule_policy::classify::{Provider, ProviderClassifier, Reason};
///
/// let openai = ProviderClassifier::for_provider(Provider::OpenAi);
/// let body = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
/// let verdict = openai.classify_parts(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), body);
/// assert_eq!(verdict.outcome, Outcome::Permanent);
/// assert_eq!(verdict.reason, Some(Reason::Billing));
/// ```
#[derive(Clone)]
pub struct ProviderClassifier {
    provider: Provider,
    max_retry_after: Duration,
    clock: SharedClock,
}

impl fmt::Debug for ProviderClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderClassifier")
            .field("provider", &self.provider)
            .field("max_retry_after", &self.max_retry_after)
            .finish_non_exhaustive()
    }
}

impl Default for ProviderClassifier {
    fn default() -> Self {
        Self::for_provider(Provider::Generic)
    }
}

impl ProviderClassifier {
    /// A classifier for `config`, on the system clock.
    pub fn new(config: ProviderClassifierConfig) -> Result<Self, ConfigError> {
        Self::with_context(config, Context::default())
    }

    /// A classifier for `config`, reading the wall clock of `ctx` (for HTTP-date and RFC 3339
    /// hints).
    pub fn with_context(
        config: ProviderClassifierConfig,
        ctx: Context,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(ProviderClassifier {
            provider: config.provider,
            max_retry_after: config.max_retry_after,
            clock: ctx.clock().clone(),
        })
    }

    /// A classifier for `provider` with the default cap, on the system clock.
    pub fn for_provider(provider: Provider) -> Self {
        ProviderClassifier {
            provider,
            max_retry_after: ProviderClassifierConfig::default().max_retry_after,
            clock: clock::system(),
        }
    }

    /// The same classifier, reading "now" from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Whose conventions it follows.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The longest server-requested wait honoured.
    pub fn max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    /// The verdict on a response with `status`, `headers` and (the start of) its `body`.
    ///
    /// Only the error bodies of failures are read, and only for the billing stop and the
    /// error code; a body that is not JSON is fine.
    pub fn classify_parts(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict {
        let now = self.clock.system_now();
        let mut verdict = Verdict {
            outcome: Outcome::Success,
            reason: None,
            request_id: self.request_id(headers),
            error_code: None,
            limits: self.limits(headers, now),
        };
        if status.is_success() {
            return verdict;
        }
        let code = status.as_u16();
        let error = ErrorBody::parse(body);
        verdict.error_code = error.code().map(|c| c.chars().take(100).collect());
        if self.is_billing_stop(code, &error) {
            verdict.outcome = Outcome::Permanent;
            verdict.reason = Some(Reason::Billing);
            return verdict;
        }
        let by_status = match code {
            408 | 425 | 429 => true,
            409 => self.provider != Provider::Generic,
            _ => status.is_server_error(),
        };
        let retryable = match header_str(headers, "x-should-retry") {
            Some("true") => {
                verdict.reason = Some(Reason::ShouldRetryHeader);
                true
            }
            Some("false") => {
                verdict.reason = Some(Reason::ShouldRetryHeader);
                false
            }
            _ => by_status,
        };
        if !retryable {
            verdict.outcome = Outcome::Permanent;
            return verdict;
        }
        if verdict.reason.is_none() {
            verdict.reason = if code == 429 {
                Some(Reason::RateLimited)
            } else if code == 529 || error.code() == Some("overloaded_error") {
                Some(Reason::Overloaded)
            } else {
                None
            };
        }
        verdict.outcome = match retry_hint(headers, now) {
            None => Outcome::Transient,
            Some(wait) if wait > self.max_retry_after => {
                verdict.reason = Some(Reason::RetryAfterTooLong);
                Outcome::Permanent
            }
            Some(wait) => Outcome::RetryAfter(wait),
        };
        verdict
    }

    fn is_billing_stop(&self, code: u16, error: &ErrorBody) -> bool {
        match self.provider {
            Provider::Generic => false,
            Provider::OpenAi => code == 429 && error.is("insufficient_quota"),
            Provider::Anthropic => {
                error.is("enforced_spend_limit_reached")
                    || ANTHROPIC_BILLING_PHRASES
                        .iter()
                        .any(|phrase| error.message_contains(phrase))
            }
        }
    }

    fn request_id(&self, headers: &HeaderMap) -> Option<String> {
        let names: &[&str] = match self.provider {
            Provider::OpenAi => &["x-request-id"],
            Provider::Anthropic => &["request-id"],
            Provider::Generic => &["x-request-id", "request-id"],
        };
        names
            .iter()
            .find_map(|name| header_str(headers, name))
            .map(|id| id.chars().take(200).collect())
    }

    fn limits(&self, headers: &HeaderMap, now: SystemTime) -> LimitHint {
        let openai = |kind: &str| Quota {
            remaining: header_u64(headers, &format!("x-ratelimit-remaining-{kind}")),
            reset: header_str(headers, &format!("x-ratelimit-reset-{kind}"))
                .and_then(parse_go_duration),
        };
        let anthropic = |kind: &str| Quota {
            remaining: header_u64(headers, &format!("anthropic-ratelimit-{kind}-remaining")),
            reset: header_str(headers, &format!("anthropic-ratelimit-{kind}-reset"))
                .and_then(|at| parse_reset_time(at, now)),
        };
        match self.provider {
            Provider::Anthropic => LimitHint {
                requests: anthropic("requests"),
                tokens: anthropic("tokens"),
                input_tokens: anthropic("input-tokens"),
                output_tokens: anthropic("output-tokens"),
            },
            Provider::OpenAi | Provider::Generic => LimitHint {
                requests: openai("requests"),
                tokens: openai("tokens"),
                ..LimitHint::default()
            },
        }
    }
}

impl<B: AsRef<[u8]>, E> Classify<Response<B>, E> for ProviderClassifier {
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => {
                self.classify_parts(
                    response.status(),
                    response.headers(),
                    response.body().as_ref(),
                )
                .outcome
            }
            Err(_) => Outcome::Transient,
        }
    }
}

/// The server's requested wait: `retry-after-ms` (a non-negative number of milliseconds, as
/// OpenAI sends it), else `retry-after` (RFC 9110). Unparsable values are ignored.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::{HeaderMap, HeaderValue};
/// use ferrule_policy::classify::retry_hint;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", HeaderValue::from_static("2"));
/// headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
/// assert_eq!(retry_hint(&headers, SystemTime::now()), Some(Duration::from_millis(1500)));
/// ```
pub fn retry_hint(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let ms = header_str(headers, "retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| Duration::from_secs_f64((ms / 1000.0).min(1e9)));
    ms.or_else(|| {
        header_str(headers, "retry-after").and_then(|value| parse_retry_after(value, now))
    })
}

/// Parses a Go-style duration as OpenAI's `x-ratelimit-reset-*` headers write them: `6s`,
/// `1m2s`, `250ms`, `1h2m3.5s`, `0s`. `None` for anything else.
///
/// ```
/// use std::time::Duration;
/// use ferrule_policy::classify::parse_go_duration;
///
/// assert_eq!(parse_go_duration("1m2s"), Some(Duration::from_secs(62)));
/// assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_go_duration("6"), None);
/// ```
pub fn parse_go_duration(value: &str) -> Option<Duration> {
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        let number: f64 = number.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * scale;
        rest = tail;
    }
    (total.is_finite() && total < 1e12).then(|| Duration::from_secs_f64(total))
}

/// Anthropic's `…-reset` headers: an RFC 3339 time; the wait from `now` (zero if past).
fn parse_reset_time(value: &str, now: SystemTime) -> Option<Duration> {
    let at = humantime::parse_rfc3339_weak(value.trim()).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    header_str(headers, name)?.parse().ok()
}

/// What Anthropic's billing stops say when their type is only `rate_limit_error` (429) or
/// `invalid_request_error` (400): a monthly spend limit, the workspace's usage limits, an empty
/// credit balance.
const ANTHROPIC_BILLING_PHRASES: [&str; 3] = [
    "spend limit",
    "reached your specified API usage limits",
    "credit balance is too low",
];

/// The parts of a provider's error body that matter:
/// OpenAI `{"error": {"type", "code", "message"}}`, Anthropic
/// `{"type": "error", "error": {"type", "message"}}`.
#[derive(Debug, Default)]
struct ErrorBody {
    kind: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

impl ErrorBody {
    fn parse(body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Envelope {
            error: Option<Inner>,
        }
        #[derive(Deserialize)]
        struct Inner {
            #[serde(rename = "type")]
            kind: Option<serde_json::Value>,
            code: Option<serde_json::Value>,
            message: Option<serde_json::Value>,
        }
        let text = |v: Option<serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) => Some(s),
            _ => None,
        };
        match serde_json::from_slice::<Envelope>(body) {
            Ok(Envelope { error: Some(inner) }) => ErrorBody {
                kind: text(inner.kind),
                code: text(inner.code),
                message: text(inner.message),
            },
            _ => ErrorBody::default(),
        }
    }

    /// The most specific code: `code`, else `type`.
    fn code(&self) -> Option<&str> {
        self.code.as_deref().or(self.kind.as_deref())
    }

    fn message_contains(&self, phrase: &str) -> bool {
        self.message.as_deref().is_some_and(|m| m.contains(phrase))
    }

    /// Whether the type or code is `name`, or the message names it.
    fn is(&self, name: &str) -> bool {
        self.kind.as_deref() == Some(name)
            || self.code.as_deref() == Some(name)
            || self.message.as_deref().is_some_and(|m| m.contains(name))
    }
}

/// Tokens a provider reports in a response's `usage` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Usage {
    /// Prompt or input tokens (`prompt_tokens`, `input_tokens`).
    pub input: u64,
    /// Completion or output tokens (`completion_tokens`, `output_tokens`).
    pub output: u64,
    /// Input tokens read from Anthropic's prompt cache (`cache_read_input_tokens`) or
    /// OpenAI's (`prompt_tokens_details.cached_tokens`).
    pub cached: u64,
}

impl Usage {
    /// The `usage` of a JSON response body (OpenAI chat completions and responses, Anthropic
    /// messages), or `None` when it has none.
    ///
    /// ```
    /// use ferrule_policy::classify::Usage;
    ///
    /// let body = br#"{"id":"chatcmpl-1","usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}"#;
    /// assert_eq!(Usage::from_body(body), Some(Usage { input: 9, output: 12, cached: 0 }));
    /// ```
    pub fn from_body(body: &[u8]) -> Option<Usage> {
        #[derive(Deserialize)]
        struct Envelope {
            usage: Option<serde_json::Value>,
        }
        let usage = serde_json::from_slice::<Envelope>(body).ok()?.usage?;
        Self::from_value(&usage)
    }

    /// The token counts of a `usage` object.
    pub fn from_value(usage: &serde_json::Value) -> Option<Usage> {
        let usage = usage.as_object()?;
        let count = |name: &str| usage.get(name).and_then(serde_json::Value::as_u64);
        let input = count("prompt_tokens").or_else(|| count("input_tokens"));
        let output = count("completion_tokens").or_else(|| count("output_tokens"));
        let cached = count("cache_read_input_tokens").or_else(|| {
            ["prompt_tokens_details", "input_tokens_details"]
                .iter()
                .find_map(|details| usage.get(*details)?.get("cached_tokens")?.as_u64())
        });
        if input.is_none() && output.is_none() {
            return None;
        }
        Some(Usage {
            input: input.unwrap_or(0),
            output: output.unwrap_or(0),
            cached: cached.unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests;
