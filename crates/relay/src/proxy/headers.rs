//! Which headers cross the proxy, and the proxy's own headers.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, header};

/// The caller's deadline for the whole call, e.g. `5s`, `250ms` or `2` (seconds); it may only
/// shorten the destination's `deadline`. See [`parse_deadline`].
pub const DEADLINE_HEADER: &str = "x-ferrule-deadline";
/// How many attempts the call took, across every destination tried.
pub const ATTEMPTS_HEADER: &str = "x-ferrule-attempts";
/// The destination that answered, or was tried last.
pub const DESTINATION_HEADER: &str = "x-ferrule-destination";

/// The hop-by-hop headers of RFC 9110 §7.6.1, which describe one connection and are never
/// forwarded, plus `proxy-authorization` and `proxy-authenticate`.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Parses [`DEADLINE_HEADER`]: a whole number of seconds (`2`), or of seconds or milliseconds
/// with the unit (`5s`, `250ms`), from 1 and at most nine digits, without leading zeros (the
/// OpenAPI document's pattern `^[1-9][0-9]{0,8}(s|ms)?$`). `None` for anything else.
///
/// ```
/// use std::time::Duration;
/// use ferrule::proxy::parse_deadline;
///
/// assert_eq!(parse_deadline("2"), Some(Duration::from_secs(2)));
/// assert_eq!(parse_deadline("250ms"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_deadline("0"), None);
/// assert_eq!(parse_deadline("soon"), None);
/// ```
pub fn parse_deadline(value: &str) -> Option<Duration> {
    let (digits, millis) = match value.strip_suffix("ms") {
        Some(digits) => (digits, true),
        None => (value.strip_suffix('s').unwrap_or(value), false),
    };
    let well_formed = (1..=9).contains(&digits.len())
        && !digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit());
    if !well_formed {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(if millis {
        Duration::from_millis(n)
    } else {
        Duration::from_secs(n)
    })
}

/// Removes the hop-by-hop headers from `headers`, and those the `Connection` header names.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| name.trim().parse().ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

/// The caller's headers as they go upstream: without the hop-by-hop ones, the proxy's own
/// (`x-ferrule-*`), `host` and `content-length` (the client library frames the body), and
/// `authorization` (the relay's token, never the upstream's).
pub(super) fn upstream_request_headers(mut headers: HeaderMap) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    for name in [header::HOST, header::CONTENT_LENGTH, header::AUTHORIZATION] {
        headers.remove(name);
    }
    let ours: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-ferrule-"))
        .cloned()
        .collect();
    for name in ours {
        headers.remove(name);
    }
    // The caller's valid `traceparent` goes on as it came; an invalid or missing one is
    // replaced by the request's new trace.
    if let Ok(value) =
        header::HeaderValue::from_str(&crate::telemetry::trace::current().to_string())
    {
        headers.insert(crate::telemetry::trace::HEADER, value);
    }
    headers
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn hop_by_hop_and_relay_headers_stay_behind() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-trace-hop"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("x-trace-hop", "1"),
            ("authorization", "Bearer relay-token"),
            ("host", "relay.example"),
            ("content-length", "12"),
            ("x-ferrule-deadline", "5s"),
            ("idempotency-key", "k-1"),
            ("content-type", "application/json"),
        ] {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let sent = upstream_request_headers(headers);
        let mut names: Vec<&str> = sent.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "idempotency-key", "traceparent"]);
    }

    #[test]
    fn deadlines() {
        assert_eq!(parse_deadline("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_deadline("30s"), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_deadline("999999999ms"),
            Some(Duration::from_millis(999_999_999))
        );
        for bad in [
            "",
            "0",
            "0s",
            "05",
            "-1",
            " 30",
            "1m",
            "1.5s",
            "ms",
            "s",
            "1234567890",
            "1 s",
        ] {
            assert_eq!(parse_deadline(bad), None, "{bad:?}");
        }
    }
}
