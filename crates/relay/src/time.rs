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

/// Parses an RFC 3339 timestamp: `…Z` or `…+HH:MM` / `…-HH:MM`, with `T` or `t` between date
/// and time, a `Z` or `z`, any fraction of a second.
///
/// Every date RFC 3339 can write is read, and the result stays within what the API can show:
/// a time before 1970 (before or after its offset) is 1970-01-01T00:00:00Z, a time in the past
/// like any other, and one an offset moves past 9999 is the last millisecond of 9999.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let last = UNIX_EPOCH + YEAR_10000 - Duration::from_millis(1);
    let t = parse_any_rfc3339(text)?;
    Some(t.clamp(UNIX_EPOCH, last))
}

/// 400 Gregorian years: the calendar repeats itself after exactly this many days.
const FOUR_CENTURIES: Duration = Duration::from_secs(146_097 * 86_400);

fn parse_any_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    // Date and time are separated by `T` (or `t`, RFC 3339 §5.6); humantime would also take a
    // space, which RFC 3339 does not.
    if !matches!(text.as_bytes().get(10), Some(b'T' | b't')) {
        return None;
    }
    let text = format!("{}T{}", &text[..10], &text[11..]);
    if let Some(utc) = text.strip_suffix('Z').or_else(|| text.strip_suffix('z')) {
        return parse_local(utc);
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
    let local = parse_local(local)?;
    let shift = Duration::from_secs(u64::try_from(hours * 3600 + minutes * 60).ok()?);
    // Local time = UTC + offset, so UTC = local − offset.
    if sign > 0 {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]` as UTC. humantime reads 1970 to 9999; an earlier year is
/// moved forward by whole 400-year cycles, checked there, and moved back.
fn parse_local(text: &str) -> Option<SystemTime> {
    let year: u64 = text.get(..4)?.parse().ok()?;
    if !text.get(..4)?.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let cycles = if year < 1970 {
        (1970 - year).div_ceil(400)
    } else {
        0
    };
    let moved = format!("{:04}{}", year + 400 * cycles, &text[4..]);
    let t = humantime::parse_rfc3339_weak(&moved).ok()?;
    t.checked_sub(FOUR_CENTURIES * u32::try_from(cycles).ok()?)
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
        assert_eq!(parse_rfc3339("2026-03-01t10:00:00z"), Some(z));
        assert_eq!(
            parse_rfc3339("2026-03-01 10:00:00Z"),
            None,
            "RFC 3339 has no space"
        );
    }

    /// Found by schemathesis: a `deliver_after` RFC 3339 allows, such as
    /// `1587-03-13T04:27:04.6242Z`, was refused with 400. A time in the past means now.
    #[test]
    fn dates_before_1970_are_read_and_are_the_past() {
        for text in [
            "1587-03-13T04:27:04.6242Z",
            "0000-02-29T00:00:00Z",
            "1969-12-31T23:59:59+00:30",
        ] {
            assert_eq!(parse_rfc3339(text), Some(UNIX_EPOCH), "{text}");
        }
        // The calendar is still checked: 1900 was not a leap year, 1600 was.
        assert_eq!(parse_rfc3339("1900-02-29T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("1600-02-29T00:00:00Z"), Some(UNIX_EPOCH));
        assert_eq!(parse_rfc3339("1587-13-01T00:00:00Z"), None);
    }

    /// Found by the `submit_json` fuzz target: a `deliver_after` that an offset moved out of
    /// 1970–9999 was accepted, and showing the message then panicked. Such times are now the
    /// nearest end of the range.
    #[test]
    fn offsets_never_leave_the_range_the_api_can_show() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00+01:00"), Some(UNIX_EPOCH));
        assert_eq!(
            parse_rfc3339("9999-12-31T23:30:00-01:00"),
            Some(UNIX_EPOCH + YEAR_10000 - Duration::from_millis(1))
        );
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
