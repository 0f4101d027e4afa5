//! What GitHub answered to one request, and what it means ([`assess`]): success, the primary
//! or the secondary rate limit, a rejected token, or an error that is or is not worth retrying.

use std::time::{Duration, SystemTime};

use ferrule_policy::classify::parse_retry_after;
use http::HeaderMap;
use http::header::{LINK, RETRY_AFTER};
use serde::Deserialize;
use serde_json::Value;

use crate::shared::quote;

/// What came back for one request.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: u16,
    /// `retry-after`, in either form.
    pub(super) retry_after: Option<Duration>,
    /// `x-ratelimit-remaining` as sent.
    pub(super) remaining: Option<u64>,
    /// How long until `x-ratelimit-reset` (epoch seconds), zero when it has passed.
    pub(super) reset_in: Option<Duration>,
    /// The `rel="next"` URL of a paginated list.
    pub(super) next: Option<String>,
    /// The body as JSON, when it is JSON.
    pub(super) json: Option<Value>,
    /// The start of the body on one line, for answers that are not JSON.
    pub(super) snippet: String,
}

impl Reply {
    /// Reads what matters from a response's status, headers and body; `now` is the wall clock
    /// that HTTP-date `retry-after` and `x-ratelimit-reset` are measured from.
    pub(super) fn new(status: u16, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Self {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let number = |name: &str| header(name).and_then(|v| v.trim().parse::<u64>().ok());
        let now_secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Reply {
            status,
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, now)),
            remaining: number("x-ratelimit-remaining"),
            reset_in: number("x-ratelimit-reset")
                .map(|reset| Duration::from_secs(reset).saturating_sub(now_secs)),
            next: headers
                .get(LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link),
            json: serde_json::from_slice(body).ok(),
            snippet: quote(&String::from_utf8_lossy(&body[..body.len().min(800)])),
        }
    }

    /// GitHub's `message`, with the messages of its `errors` (a 422's details), on one line; or
    /// what the body says when it is not a GitHub error.
    pub(super) fn message(&self) -> String {
        let Some(error) = self
            .json
            .as_ref()
            .and_then(|json| ApiError::deserialize(json).ok())
        else {
            return if self.snippet.is_empty() {
                "no message".to_owned()
            } else {
                format!("not a GitHub answer: {}", self.snippet)
            };
        };
        let details: Vec<String> = error
            .errors
            .iter()
            .filter_map(|e| match e {
                Value::String(text) => Some(text.clone()),
                Value::Object(map) => map
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| {
                        let field = map.get("field").and_then(Value::as_str)?;
                        let code = map.get("code").and_then(Value::as_str)?;
                        Some(format!("{field} {code}"))
                    }),
                _ => None,
            })
            .collect();
        if details.is_empty() {
            quote(&error.message)
        } else {
            quote(&format!("{}: {}", error.message, details.join("; ")))
        }
    }
}

/// GitHub's error body: `{"message", "errors"?, "documentation_url"?}`.
#[derive(Debug, Deserialize)]
struct ApiError {
    message: String,
    #[serde(default)]
    errors: Vec<Value>,
}

/// The URL of `rel="next"` in a `Link` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let next = params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"));
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        next.then(|| url.to_owned())
    })
}

/// What an answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// 2xx.
    Ok,
    /// The token's hourly quota is spent: wait this long (`retry-after`, else until
    /// `x-ratelimit-reset`).
    Primary(Duration),
    /// A secondary rate limit; GitHub's stated wait, if it sent one.
    Secondary(Option<Duration>),
    /// 401: the token was rejected.
    Unauthorized,
    /// 403 without any sign of a rate limit: the token may not do this here.
    Forbidden,
    /// 5xx, 408: worth trying again.
    Transient,
    /// Anything else (404, 405, 409, 410, 422, other 4xx, 3xx): trying again will not help.
    Permanent,
}

/// Classifies an answer. A 403 or 429 is a rate limit when it carries one's signs, in GitHub's
/// order: `retry-after`; `x-ratelimit-remaining: 0` (the primary limit, until
/// `x-ratelimit-reset`); otherwise a 429, or a message naming a rate limit, is the secondary
/// limit. A 403 with none of these is [`Verdict::Forbidden`].
pub(super) fn assess(reply: &Reply) -> Verdict {
    match reply.status {
        200..=299 => Verdict::Ok,
        401 => Verdict::Unauthorized,
        403 | 429 => {
            if reply.remaining == Some(0) {
                // Without a reset time, a minute: the primary window is an hour, so the wait
                // is a guess either way, and a short one only costs one refused request.
                let wait = reply
                    .retry_after
                    .or(reply.reset_in)
                    .unwrap_or(Duration::from_secs(60))
                    .max(Duration::from_secs(1));
                return Verdict::Primary(wait);
            }
            let message = reply.message().to_ascii_lowercase();
            if reply.retry_after.is_some()
                || reply.status == 429
                || message.contains("rate limit")
                || message.contains("abuse")
            {
                Verdict::Secondary(reply.retry_after)
            } else {
                Verdict::Forbidden
            }
        }
        408 | 500..=599 => Verdict::Transient,
        _ => Verdict::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use serde_json::json;

    use super::*;

    /// 2026-01-01T00:00:00Z.
    const NOW_SECS: u64 = 1_767_225_600;

    fn reply(status: u16, headers: &[(&'static str, &str)], body: &Value) -> Reply {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS);
        Reply::new(status, &map, body.to_string().as_bytes(), now)
    }

    #[test]
    fn rate_limits_in_githubs_order() {
        let primary = json!({"message": "API rate limit exceeded for user ID 1."});
        let secondary = json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."});
        let reset = (NOW_SECS + 1200).to_string();
        let cases = [
            // Primary: until the reset.
            (
                reply(
                    403,
                    &[
                        ("x-ratelimit-remaining", "0"),
                        ("x-ratelimit-reset", &reset),
                    ],
                    &primary,
                ),
                Verdict::Primary(Duration::from_secs(1200)),
            ),
            (
                reply(
                    429,
                    &[
                        ("x-ratelimit-remaining", "0"),
                        ("x-ratelimit-reset", &reset),
                    ],
                    &primary,
                ),
                Verdict::Primary(Duration::from_secs(1200)),
            ),
            // retry-after first.
            (
                reply(
                    403,
                    &[
                        ("retry-after", "30"),
                        ("x-ratelimit-remaining", "0"),
                        ("x-ratelimit-reset", &reset),
                    ],
                    &primary,
                ),
                Verdict::Primary(Duration::from_secs(30)),
            ),
            // A reset already passed still waits a second.
            (
                reply(
                    403,
                    &[
                        ("x-ratelimit-remaining", "0"),
                        ("x-ratelimit-reset", &(NOW_SECS - 5).to_string()),
                    ],
                    &primary,
                ),
                Verdict::Primary(Duration::from_secs(1)),
            ),
            // Secondary, with and without retry-after, 403 or 429.
            (
                reply(403, &[("retry-after", "60")], &secondary),
                Verdict::Secondary(Some(Duration::from_secs(60))),
            ),
            (
                reply(403, &[("x-ratelimit-remaining", "4000")], &secondary),
                Verdict::Secondary(None),
            ),
            (reply(429, &[], &json!({})), Verdict::Secondary(None)),
            (
                reply(
                    403,
                    &[],
                    &json!({"message": "You have triggered an abuse detection mechanism."}),
                ),
                Verdict::Secondary(None),
            ),
            // A plain 403 is not a rate limit.
            (
                reply(
                    403,
                    &[("x-ratelimit-remaining", "4999")],
                    &json!({"message": "Resource not accessible by integration"}),
                ),
                Verdict::Forbidden,
            ),
        ];
        for (reply, verdict) in cases {
            assert_eq!(assess(&reply), verdict, "{reply:?}");
        }
    }

    #[test]
    fn statuses() {
        for (status, verdict) in [
            (200, Verdict::Ok),
            (201, Verdict::Ok),
            (204, Verdict::Ok),
            (401, Verdict::Unauthorized),
            (404, Verdict::Permanent),
            (405, Verdict::Permanent),
            (409, Verdict::Permanent),
            (410, Verdict::Permanent),
            (422, Verdict::Permanent),
            (301, Verdict::Permanent),
            (408, Verdict::Transient),
            (500, Verdict::Transient),
            (502, Verdict::Transient),
            (503, Verdict::Transient),
        ] {
            assert_eq!(assess(&reply(status, &[], &json!({}))), verdict, "{status}");
        }
    }

    #[test]
    fn message_carries_the_validation_errors() {
        let body = json!({
            "message": "Validation Failed",
            "errors": [
                {"resource": "PullRequestReview", "code": "custom", "message": "Can not approve your own pull request"},
                {"resource": "Label", "field": "name", "code": "invalid"},
                "plain text"
            ],
            "documentation_url": "https://docs.github.com/rest"
        });
        assert_eq!(
            reply(422, &[], &body).message(),
            "Validation Failed: Can not approve your own pull request; name invalid; plain text"
        );
        let mut map = HeaderMap::new();
        let html = b"<html>\r\n<body>502 Bad Gateway</body></html>";
        let r = Reply::new(502, &map, html, SystemTime::UNIX_EPOCH);
        assert_eq!(
            r.message(),
            "not a GitHub answer: <html> <body>502 Bad Gateway</body></html>"
        );
        map.insert(
            LINK,
            HeaderValue::from_static(
                "<https://api.github.com/repositories/1/pulls/2/reviews?page=2>; rel=\"next\", \
                 <https://api.github.com/repositories/1/pulls/2/reviews?page=5>; rel=\"last\"",
            ),
        );
        let r = Reply::new(200, &map, b"[]", SystemTime::UNIX_EPOCH);
        assert_eq!(
            r.next.as_deref(),
            Some("https://api.github.com/repositories/1/pulls/2/reviews?page=2")
        );
    }
}
