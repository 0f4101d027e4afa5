//! RFC 3339 timestamps for the API: formatting, and parsing with a `Z` or numeric offset.

use std::time::{Duration, SystemTime};

/// `t` as RFC 3339 in UTC with milliseconds, e.g. `2026-01-01T12:00:00.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses an RFC 3339 timestamp: `…Z` or `…+HH:MM` / `…-HH:MM`.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
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
}
