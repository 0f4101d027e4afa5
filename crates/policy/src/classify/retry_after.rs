//! Parsing the HTTP `Retry-After` header (RFC 9110 §10.2.3) into a delay.

use std::time::{Duration, SystemTime};

/// Parses a `Retry-After` value into how long to wait from `now`.
///
/// Accepts both forms RFC 9110 allows, with surrounding whitespace tolerated:
///
/// - delay-seconds: a non-negative decimal integer (`"120"`); numbers too large for a
///   [`Duration`] saturate rather than fail;
/// - an HTTP-date in any of the three formats RFC 9110 lists (IMF-fixdate
///   `"Sun, 06 Nov 1994 08:49:37 GMT"`, obsolete RFC 850 and asctime); a date at or before
///   `now` gives [`Duration::ZERO`].
///
/// Anything else — empty, negative, fractional, signed, or garbage — is `None`. Never panics.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use ferrule_policy::classify::parse_retry_after;
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_717); // 06 Nov 1994 08:48:37 GMT
/// assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
/// assert_eq!(
///     parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
///     Some(Duration::from_secs(60))
/// );
/// assert_eq!(parse_retry_after("-5", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        let secs = value.bytes().fold(0u64, |acc, b| {
            acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
        });
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-01T00:00:00Z, the ManualClock's wall-clock origin.
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
    }

    #[test]
    fn table() {
        let secs = |s| Some(Duration::from_secs(s));
        let cases: &[(&str, Option<Duration>)] = &[
            ("0", secs(0)),
            ("120", secs(120)),
            ("  42\t", secs(42)),
            ("007", secs(7)),
            ("99999999999999999999999999", secs(u64::MAX)),
            // IMF-fixdate, RFC 850 and asctime: one minute after `now`.
            ("Thu, 01 Jan 2026 00:01:00 GMT", secs(60)),
            ("Thursday, 01-Jan-26 00:01:00 GMT", secs(60)),
            ("Thu Jan  1 00:01:00 2026", secs(60)),
            (" Thu, 01 Jan 2026 00:00:30 GMT ", secs(30)),
            // Past dates and `now` itself mean "retry now".
            ("Thu, 01 Jan 2026 00:00:00 GMT", secs(0)),
            ("Sun, 06 Nov 1994 08:49:37 GMT", secs(0)),
            ("", None),
            ("   ", None),
            ("-5", None),
            ("+5", None),
            ("1.5", None),
            ("5s", None),
            ("soon", None),
            ("Thu, 32 Jan 2026 00:00:00 GMT", None),
            ("Fri, 01 Jan 2026 00:00:00 GMT", None), // wrong weekday
            ("١٢", None),                            // non-ASCII digits
        ];
        for (value, expected) in cases {
            assert_eq!(parse_retry_after(value, now()), *expected, "{value:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(value in ".{0,64}", offset in proptest::num::u64::ANY) {
            let now = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(offset >> 30))
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let _ = parse_retry_after(&value, now);
        }

        #[test]
        fn seconds_round_trip(secs in proptest::num::u64::ANY) {
            proptest::prop_assert_eq!(
                parse_retry_after(&secs.to_string(), now()),
                Some(Duration::from_secs(secs))
            );
        }
    }
}
