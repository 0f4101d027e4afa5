//! `parse_retry_after` and `HttpClassifier::classify_parts` on any header bytes: never panic;
//! delay-seconds parse to exactly their value (saturating); an HTTP-date never gives more than
//! the time left until that date; the classifier honours the first `Retry-After` header only
//! on transient statuses.
#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrule_policy::classify::{HttpClassifier, parse_retry_after};
use ferrule_policy::{Clock, ManualClock, Outcome};
use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;

/// 2026-01-01T00:00:00Z (the manual clock's wall-clock origin).
const ORIGIN: u64 = 1_767_225_600;
/// 9999-12-31T23:59:59Z, the last second an HTTP-date can name.
const LAST: u64 = 253_402_300_799;

static CLOCK: LazyLock<ManualClock> = LazyLock::new(ManualClock::new);
static CLASSIFIER: LazyLock<HttpClassifier> =
    LazyLock::new(|| HttpClassifier::default().with_clock(CLOCK.shared()));

fn check_value(value: &str, now: SystemTime) {
    let parsed = parse_retry_after(value, now);
    let trimmed = value.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let secs = trimmed.parse::<u64>().unwrap_or(u64::MAX);
        assert_eq!(parsed, Some(Duration::from_secs(secs)), "{value:?}");
    } else if let Some(delay) = parsed {
        let at = httpdate::parse_http_date(trimmed)
            .unwrap_or_else(|_| panic!("{value:?} parsed but is neither seconds nor a date"));
        assert_eq!(now.checked_add(delay), Some(at.max(now)), "{value:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = std::str::from_utf8(data) {
        for now in [0, ORIGIN, LAST] {
            check_value(value, UNIX_EPOCH + Duration::from_secs(now));
        }
    }
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(RETRY_AFTER, v);
        }
    }
    let now = CLOCK.system_now();
    assert_eq!(now, UNIX_EPOCH + Duration::from_secs(ORIGIN));
    let first = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now));
    for (status, expected) in [
        (200, Outcome::Success),
        (404, Outcome::Permanent),
        (301, Outcome::Permanent),
        (408, first.map_or(Outcome::Transient, Outcome::RetryAfter)),
        (429, first.map_or(Outcome::Transient, Outcome::RetryAfter)),
        (503, first.map_or(Outcome::Transient, Outcome::RetryAfter)),
    ] {
        let status = StatusCode::from_u16(status).unwrap();
        assert_eq!(
            CLASSIFIER.classify_parts(status, &headers),
            expected,
            "{status}"
        );
    }
});
