//! RFC 3339 timestamps for the API: formatting, and parsing with a `Z` or numeric offset.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The first instant after the last one RFC 3339 can write with a four-digit year
/// (10000-01-01T00:00:00Z).
const YEAR_10000: Duration = Duration::from_secs(253_402_300_800);

/// `t` as RFC 3339 in UTC with milliseconds, e.g. `2026-01-01T12:00:00.123Z`.
///
/// A time outside 1970–9999 (which [`parse_rfc3339`] never returns) is shown as the nearest
/// end of that range rather than panicking, as the formatter would.
pub fn rfc3339(t: SystemTime) -> String {
    let last = UNIX_EPOCH + YEAR_10000 - Duration::from_millis(1);
    humantime::format_rfc3339_millis(t.clamp(UNIX_EPOCH, last)).to_string()
}

/// Parses an RFC 3339 timestamp: `…Z` or `…+HH:MM` / `…-HH:MM`.
///
/// Times that an offset moves before 1970 or past 9999 are refused (`None`): the API could not
/// show them again.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    parse_any_rfc3339(text).filter(|t| {
        t.duration_since(UNIX_EPOCH)
            .is_ok_and(|since| since < YEAR_10000)
    })
}

fn parse_any_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if let Some(utc) = text.strip_suffix('Z').or_else(|| text.strip_suffix('z')) {
        return humantime::parse_rfc3339_weak(utc).ok();
    }
    if text.len() < 6 || !text.is_char_boundary(text.len() - 6) {
        return None;
    }
    let (local, offset) = text.split_at(text.len() - 6);
    let bytes = offset.as_bytes();
    let sign = match bytes[0] {
        b'+' => 1i64,
        b'-' => -1i64,
        _ => return None,
    };
    if bytes[3] != b':' {
        return None;
    }
    let hours: i64 = offset.get(1..3)?.parse().ok()?;
    let minutes: i64 = offset.get(4..6)?.parse().ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    let local = humantime::parse_rfc3339_weak(local).ok()?;
    let shift = Duration::from_secs(u64::try_from(hours * 3600 + minutes * 60).ok()?);
    // Local time = UTC + offset, so UTC = local − offset.
    if sign > 0 {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_zulu_and_offsets() {
        let z = parse_rfc3339("2026-03-01T10:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2026-03-01T12:00:00+02:00"), Some(z));
        assert_eq!(parse_rfc3339("2026-03-01T05:30:00-04:30"), Some(z));
        assert_eq!(rfc3339(z), "2026-03-01T10:00:00.000Z");
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2026-03-01T12:00:00+2:00"), None);
        assert_eq!(parse_rfc3339(""), None);
    }

    /// Found by the `submit_json` fuzz target: a `deliver_after` that an offset moved out of
    /// 1970–9999 was accepted, and showing the message then panicked.
    #[test]
    fn offsets_never_leave_the_range_the_api_can_show() {
        for text in ["1970-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00"] {
            assert_eq!(parse_rfc3339(text), None, "{text}");
        }
        let first = parse_rfc3339("1970-01-01T01:00:00+01:00").unwrap();
        assert_eq!(rfc3339(first), "1970-01-01T00:00:00.000Z");
        let last = parse_rfc3339("9999-12-31T22:59:59.999-01:00").unwrap();
        assert_eq!(rfc3339(last), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + YEAR_10000 + Duration::from_secs(1)),
            "9999-12-31T23:59:59.999Z"
        );
    }
}
