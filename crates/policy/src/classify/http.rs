//! Classifying HTTP responses by status code and `Retry-After` header.

use std::fmt;

use http::header::RETRY_AFTER;
use http::{HeaderMap, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::retry_after::parse_retry_after;
use super::{Classify, Outcome};
use crate::clock::{self, SharedClock};
use crate::{ConfigError, Context};

/// Extra status codes for an [`HttpClassifier`], on top of its built-in table.
///
/// ```toml
/// transient_statuses = [409]   # e.g. an API that answers 409 while a resource is being created
/// permanent_statuses = [501]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpClassifierConfig {
    /// Status codes to treat as transient (retryable, honouring `Retry-After`), overriding the
    /// built-in table.
    pub transient_statuses: Vec<u16>,
    /// Status codes to treat as permanent, overriding the built-in table.
    pub permanent_statuses: Vec<u16>,
}

impl HttpClassifierConfig {
    /// Checks that every code is a valid HTTP status (100–999) and none is listed twice.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, codes) in [
            ("transient_statuses", &self.transient_statuses),
            ("permanent_statuses", &self.permanent_statuses),
        ] {
            if let Some(bad) = codes.iter().find(|c| StatusCode::from_u16(**c).is_err()) {
                return Err(ConfigError::new(
                    field,
                    format!("{bad} is not an HTTP status code (100 to 999)"),
                ));
            }
        }
        if let Some(both) = self
            .transient_statuses
            .iter()
            .find(|c| self.permanent_statuses.contains(c))
        {
            return Err(ConfigError::new(
                "permanent_statuses",
                format!("{both} is also listed in `transient_statuses`"),
            ));
        }
        Ok(())
    }
}

/// A set of status codes 0–1023 as a bitmap: O(1) lookups, no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
struct StatusSet([u64; 16]);

impl StatusSet {
    fn insert(&mut self, code: u16) {
        let code = usize::from(code);
        if let Some(word) = self.0.get_mut(code / 64) {
            *word |= 1 << (code % 64);
        }
    }

    #[inline]
    fn contains(&self, code: u16) -> bool {
        let code = usize::from(code);
        self.0
            .get(code / 64)
            .is_some_and(|word| word & (1 << (code % 64)) != 0)
    }
}

impl fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries((0..1024u16).filter(|c| self.contains(*c)))
            .finish()
    }
}

/// Classifies HTTP responses.
///
/// | status | outcome |
/// |---|---|
/// | 2xx | [`Outcome::Success`] |
/// | 408, 425, 429, 5xx | [`Outcome::Transient`], or [`Outcome::RetryAfter`] when a `Retry-After` header parses |
/// | 3xx | [`Outcome::Permanent`]: redirects are not followed |
/// | other 4xx, 1xx | [`Outcome::Permanent`] |
///
/// [`HttpClassifierConfig`] can move extra codes to transient or permanent. An `HTTP-date`
/// `Retry-After` is measured against the wall clock of the classifier's [`Clock`](crate::Clock),
/// so tests can use a [`ManualClock`](crate::ManualClock). As a [`Classify`] over
/// `Result<http::Response<B>, E>`, every `Err` (a transport failure) is transient.
///
/// ```
/// use http::{HeaderMap, HeaderValue, StatusCode, header::RETRY_AFTER};
/// use std::time::Duration;
/// use ferrule_policy::{Outcome, classify::HttpClassifier};
///
/// let classifier = HttpClassifier::default();
/// let mut headers = HeaderMap::new();
/// assert_eq!(classifier.classify_parts(StatusCode::OK, &headers), Outcome::Success);
/// assert_eq!(classifier.classify_parts(StatusCode::NOT_FOUND, &headers), Outcome::Permanent);
/// headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
/// assert_eq!(
///     classifier.classify_parts(StatusCode::TOO_MANY_REQUESTS, &headers),
///     Outcome::RetryAfter(Duration::from_secs(7))
/// );
/// ```
#[derive(Clone)]
pub struct HttpClassifier {
    clock: SharedClock,
    transient: StatusSet,
    permanent: StatusSet,
}

impl Default for HttpClassifier {
    fn default() -> Self {
        HttpClassifier {
            clock: clock::system(),
            transient: StatusSet::default(),
            permanent: StatusSet::default(),
        }
    }
}

impl fmt::Debug for HttpClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClassifier")
            .field("clock", &self.clock)
            .field("transient", &self.transient)
            .field("permanent", &self.permanent)
            .finish()
    }
}

impl HttpClassifier {
    /// A classifier with extra status codes from `config`, on the system clock.
    pub fn new(config: HttpClassifierConfig) -> Result<Self, ConfigError> {
        Self::with_context(config, Context::default())
    }

    /// A classifier with extra status codes from `config`, reading the wall clock of `ctx`.
    pub fn with_context(config: HttpClassifierConfig, ctx: Context) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut classifier = HttpClassifier {
            clock: ctx.clock().clone(),
            ..HttpClassifier::default()
        };
        for code in config.transient_statuses {
            classifier.transient.insert(code);
        }
        for code in config.permanent_statuses {
            classifier.permanent.insert(code);
        }
        Ok(classifier)
    }

    /// The same classifier, reading "now" for HTTP-date `Retry-After` values from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The outcome of a response with `status` and `headers`.
    pub fn classify_parts(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
        let code = status.as_u16();
        let transient = if self.permanent.contains(code) {
            false
        } else if self.transient.contains(code) {
            true
        } else if status.is_success() {
            return Outcome::Success;
        } else {
            matches!(code, 408 | 425 | 429) || status.is_server_error()
        };
        if !transient {
            return Outcome::Permanent;
        }
        headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.clock.system_now()))
            .map_or(Outcome::Transient, Outcome::RetryAfter)
    }
}

impl<B, E> Classify<Response<B>, E> for HttpClassifier {
    #[inline]
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => self.classify_parts(response.status(), response.headers()),
            Err(_) => Outcome::Transient,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;
    use crate::ManualClock;

    fn classify(c: &HttpClassifier, status: u16, retry_after: Option<&'static str>) -> Outcome {
        let mut headers = HeaderMap::new();
        if let Some(v) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from_static(v));
        }
        let status = StatusCode::from_u16(status).unwrap();
        c.classify_parts(status, &headers)
    }

    #[test]
    fn status_table() {
        let c = HttpClassifier::default();
        let cases = [
            (200, Outcome::Success),
            (201, Outcome::Success),
            (204, Outcome::Success),
            (101, Outcome::Permanent),
            (301, Outcome::Permanent),
            (304, Outcome::Permanent),
            (400, Outcome::Permanent),
            (401, Outcome::Permanent),
            (403, Outcome::Permanent),
            (404, Outcome::Permanent),
            (409, Outcome::Permanent),
            (410, Outcome::Permanent),
            (408, Outcome::Transient),
            (425, Outcome::Transient),
            (429, Outcome::Transient),
            (500, Outcome::Transient),
            (502, Outcome::Transient),
            (503, Outcome::Transient),
            (504, Outcome::Transient),
            (599, Outcome::Transient),
            (600, Outcome::Permanent),
        ];
        for (status, expected) in cases {
            assert_eq!(classify(&c, status, None), expected, "{status}");
        }
    }

    #[test]
    fn retry_after_on_transient_statuses_only() {
        let clock = ManualClock::new(); // wall clock: 2026-01-01T00:00:00Z
        let c = HttpClassifier::default().with_clock(clock.shared());
        let secs = |s| Outcome::RetryAfter(Duration::from_secs(s));
        assert_eq!(classify(&c, 429, Some("30")), secs(30));
        assert_eq!(classify(&c, 503, Some(" 2 ")), secs(2));
        assert_eq!(
            classify(&c, 503, Some("Thu, 01 Jan 2026 00:02:00 GMT")),
            secs(120)
        );
        assert_eq!(
            classify(&c, 503, Some("Wed, 31 Dec 2025 23:00:00 GMT")),
            secs(0)
        );
        assert_eq!(classify(&c, 503, Some("later")), Outcome::Transient);
        assert_eq!(classify(&c, 503, Some("-1")), Outcome::Transient);
        assert_eq!(classify(&c, 404, Some("30")), Outcome::Permanent);
        assert_eq!(classify(&c, 200, Some("30")), Outcome::Success);
        // The HTTP-date is measured from the clock's current wall time.
        clock.advance(Duration::from_secs(100));
        assert_eq!(
            classify(&c, 503, Some("Thu, 01 Jan 2026 00:02:00 GMT")),
            secs(20)
        );
    }

    #[test]
    fn non_utf8_retry_after_is_ignored() {
        let c = HttpClassifier::default();
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_bytes(b"\xff1").unwrap());
        assert_eq!(
            c.classify_parts(StatusCode::SERVICE_UNAVAILABLE, &headers),
            Outcome::Transient
        );
    }

    #[test]
    fn config_overrides_the_table() {
        let config: HttpClassifierConfig =
            toml::from_str("transient_statuses = [409]\npermanent_statuses = [501, 200]").unwrap();
        let c = HttpClassifier::new(config).unwrap();
        assert_eq!(
            classify(&c, 409, Some("5")),
            Outcome::RetryAfter(Duration::from_secs(5))
        );
        assert_eq!(classify(&c, 501, Some("5")), Outcome::Permanent);
        assert_eq!(classify(&c, 200, None), Outcome::Permanent);
        assert_eq!(classify(&c, 502, None), Outcome::Transient);
    }

    #[test]
    fn config_validation_names_the_field() {
        let bad = HttpClassifierConfig {
            transient_statuses: vec![1000],
            ..Default::default()
        };
        assert_eq!(
            HttpClassifier::new(bad).unwrap_err().field(),
            "transient_statuses"
        );
        let bad = HttpClassifierConfig {
            permanent_statuses: vec![99],
            ..Default::default()
        };
        assert_eq!(
            HttpClassifier::new(bad).unwrap_err().field(),
            "permanent_statuses"
        );
        let both = HttpClassifierConfig {
            transient_statuses: vec![409],
            permanent_statuses: vec![409],
        };
        assert_eq!(
            HttpClassifier::new(both).unwrap_err().field(),
            "permanent_statuses"
        );
        assert!(toml::from_str::<HttpClassifierConfig>("retry_statuses = [1]").is_err());
    }

    #[test]
    fn classifies_responses_and_transport_errors() {
        let c = HttpClassifier::default();
        let response = Response::builder().status(503).body(()).unwrap();
        assert_eq!(
            c.classify(&Ok::<_, std::io::Error>(response)),
            Outcome::Transient
        );
        let response = Response::builder().status(200).body(()).unwrap();
        assert_eq!(c.classify(&Ok::<_, ()>(response)), Outcome::Success);
        assert_eq!(
            c.classify(&Err::<Response<()>, _>("connection reset")),
            Outcome::Transient
        );
    }
}
