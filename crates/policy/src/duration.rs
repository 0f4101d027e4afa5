//! Durations as logs and messages show them: whole milliseconds, as a number or as text.
//!
//! Log fields carry durations as numbers of milliseconds (`delay_ms = 316`), which JSON log
//! pipelines can compare and sum; messages for people say `316ms`, `29s 980ms` or `2m`, never
//! Rust's `Debug` form (`Some(29.980211s)`).

use std::time::Duration;

/// `d` in whole milliseconds, saturating at `u64::MAX`: the value of a log field named `…_ms`.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `d` for people, truncated to the millisecond (to the microsecond below one): `316ms`,
/// `29s 980ms`, `2m`, `750us`.
pub fn readable(d: Duration) -> humantime::FormattedDuration {
    let truncated = if d >= Duration::from_millis(1) {
        Duration::from_millis(millis(d))
    } else {
        Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    };
    humantime::format_duration(truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_milliseconds_and_plain_units() {
        assert_eq!(millis(Duration::from_nanos(29_980_211_000)), 29_980);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        for (d, text) in [
            (Duration::from_nanos(316_428_976), "316ms"),
            (Duration::from_nanos(29_980_211_000), "29s 980ms"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_nanos(750_400), "750us"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(readable(d).to_string(), text);
        }
    }
}
