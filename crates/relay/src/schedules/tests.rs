//! The schedules' pure parts: daylight saving time in Europe/Berlin and the catch-up plans.

use std::time::{Duration, SystemTime};

use super::*;
use crate::config::CatchUp;

fn schedule(cron: &str, tz: &str, catch_up: CatchUp) -> Schedule {
    let config = ScheduleConfig {
        name: "s".into(),
        cron: cron.into(),
        timezone: tz.into(),
        destination: Some("hook".into()),
        route: None,
        payload: None,
        catch_up,
        catch_up_window: Duration::from_secs(3600),
        catch_up_max: 3,
    };
    Schedule {
        index: 0,
        cron: parse_cron(&config.cron).unwrap(),
        tz: parse_timezone(&config.timezone).unwrap(),
        config,
    }
}

fn t(text: &str) -> SystemTime {
    crate::time::parse_rfc3339(text).unwrap()
}

/// The occurrences after `from`, `n` of them, as RFC 3339 in UTC.
fn next_n(s: &Schedule, from: &str, n: usize) -> Vec<String> {
    let mut at = t(from);
    let mut out = Vec::new();
    for _ in 0..n {
        at = s.next_after(at).unwrap();
        out.push(crate::time::rfc3339(at));
    }
    out
}

#[test]
fn spring_forward_moves_a_fixed_time_past_the_gap_and_skips_interval_slots() {
    // Europe/Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
    let daily = schedule("30 2 * * *", "Europe/Berlin", CatchUp::Skip);
    assert_eq!(
        next_n(&daily, "2026-03-27T12:00:00Z", 3),
        [
            "2026-03-28T01:30:00.000Z", // 02:30 CET
            "2026-03-29T01:00:00.000Z", // 03:00 CEST: first minute after the gap, once
            "2026-03-30T00:30:00.000Z", // 02:30 CEST
        ]
    );
    let half_hourly = schedule("*/30 * * * *", "Europe/Berlin", CatchUp::Skip);
    assert_eq!(
        next_n(&half_hourly, "2026-03-29T00:15:00Z", 3),
        [
            "2026-03-29T00:30:00.000Z", // 01:30 CET
            "2026-03-29T01:00:00.000Z", // 03:00 CEST: 02:00 and 02:30 are passed over
            "2026-03-29T01:30:00.000Z", // 03:30 CEST
        ]
    );
}

#[test]
fn fall_back_fires_a_fixed_time_once_and_interval_slots_on_both_passes() {
    // Europe/Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    let daily = schedule("30 2 * * *", "Europe/Berlin", CatchUp::Skip);
    assert_eq!(
        next_n(&daily, "2026-10-24T12:00:00Z", 2),
        [
            "2026-10-25T00:30:00.000Z", // 02:30 CEST, the first pass only
            "2026-10-26T01:30:00.000Z", // 02:30 CET the next day
        ]
    );
    let half_hourly = schedule("*/30 2 * * *", "Europe/Berlin", CatchUp::Skip);
    assert_eq!(
        next_n(&half_hourly, "2026-10-24T23:45:00Z", 4),
        [
            "2026-10-25T00:00:00.000Z", // 02:00 CEST
            "2026-10-25T00:30:00.000Z", // 02:30 CEST
            "2026-10-25T01:00:00.000Z", // 02:00 CET
            "2026-10-25T01:30:00.000Z", // 02:30 CET
        ]
    );
}

#[test]
fn the_daily_digest_fires_at_eight_in_berlin_winter_and_summer() {
    let digest = schedule("0 8 * * *", "Europe/Berlin", CatchUp::Latest);
    assert_eq!(
        next_n(&digest, "2026-03-28T09:00:00Z", 2),
        ["2026-03-29T06:00:00.000Z", "2026-03-30T06:00:00.000Z"],
        "summer time from the 29th: 08:00 CEST is 06:00 UTC"
    );
    assert_eq!(
        next_n(&digest, "2026-03-27T09:00:00Z", 1),
        ["2026-03-28T07:00:00.000Z"],
        "08:00 CET is 07:00 UTC"
    );
}

#[test]
fn six_fields_read_seconds_and_seven_are_refused() {
    let every_10s = schedule("*/10 * * * * *", "UTC", CatchUp::Skip);
    assert_eq!(
        next_n(&every_10s, "2026-01-01T00:00:01Z", 2),
        ["2026-01-01T00:00:10.000Z", "2026-01-01T00:00:20.000Z"]
    );
    assert!(parse_cron("0 0 * * * * 2026").is_err());
    assert!(parse_cron("not cron").is_err());
    assert!(parse_cron("61 * * * *").is_err());
    assert!(parse_timezone("Mars/Olympus").is_err());
}

/// A plan as (RFC 3339, step) pairs.
fn planned(s: &Schedule, after: &str, now: &str) -> Vec<(String, Step)> {
    let (steps, _) = plan(s, t(after), t(now));
    steps
        .into_iter()
        .map(|(at, step)| (crate::time::rfc3339(at), step))
        .collect()
}

fn at(hm: &str) -> String {
    format!("2026-01-01T{hm}:00.000Z")
}

#[test]
fn an_occurrence_reached_on_time_fires_in_every_mode() {
    for mode in [CatchUp::Skip, CatchUp::Latest, CatchUp::All] {
        let s = schedule("*/10 * * * *", "UTC", mode);
        assert_eq!(
            planned(&s, "2026-01-01T00:00:00Z", "2026-01-01T00:10:00Z"),
            [(at("00:10"), Step::Fire)]
        );
        assert_eq!(
            planned(&s, "2026-01-01T00:00:00Z", "2026-01-01T00:10:59Z"),
            [(at("00:10"), Step::Fire)],
            "59 s late is on time"
        );
        assert!(planned(&s, "2026-01-01T00:10:00Z", "2026-01-01T00:19:59Z").is_empty());
    }
}

/// After a downtime from 00:05 to 01:25: occurrences 00:10 … 01:20 were missed; the window
/// (1 hour) reaches back to 00:25.
const DOWN_FROM: &str = "2026-01-01T00:05:00Z";
const BACK_AT: &str = "2026-01-01T01:25:00Z";

#[test]
fn catch_up_skip_fires_none_of_the_missed() {
    let s = schedule("*/10 * * * *", "UTC", CatchUp::Skip);
    let plan = planned(&s, DOWN_FROM, BACK_AT);
    assert_eq!(plan.len(), 8);
    assert_eq!(plan[0], (at("00:10"), Step::Skip(OUTSIDE_WINDOW)));
    assert_eq!(plan[1], (at("00:20"), Step::Skip(OUTSIDE_WINDOW)));
    assert_eq!(plan[2], (at("00:30"), Step::Skip(SKIP_POLICY)));
    assert_eq!(plan[7], (at("01:20"), Step::Skip(SKIP_POLICY)));
}

#[test]
fn catch_up_latest_fires_the_latest_in_the_window() {
    let s = schedule("*/10 * * * *", "UTC", CatchUp::Latest);
    let plan = planned(&s, DOWN_FROM, BACK_AT);
    assert_eq!(plan.len(), 8);
    assert_eq!(plan[1], (at("00:20"), Step::Skip(OUTSIDE_WINDOW)));
    assert_eq!(plan[6], (at("01:10"), Step::Skip(NOT_LATEST)));
    assert_eq!(plan[7], (at("01:20"), Step::Fire));
    // Back exactly at an occurrence: it is on time, and none of the missed fires.
    let plan = planned(&s, DOWN_FROM, "2026-01-01T01:30:00Z");
    assert_eq!(plan[7], (at("01:20"), Step::Skip(NOT_LATEST)));
    assert_eq!(plan[8], (at("01:30"), Step::Fire));
}

#[test]
fn catch_up_all_fires_the_latest_max_in_the_window() {
    let s = schedule("*/10 * * * *", "UTC", CatchUp::All);
    let plan = planned(&s, DOWN_FROM, BACK_AT);
    let fired: Vec<_> = plan
        .iter()
        .filter(|(_, s)| *s == Step::Fire)
        .map(|(t, _)| t.clone())
        .collect();
    assert_eq!(
        fired,
        [at("01:00"), at("01:10"), at("01:20")],
        "catch_up_max = 3"
    );
    assert_eq!(plan[2], (at("00:30"), Step::Skip(OVER_MAX)));
    assert_eq!(plan[0], (at("00:10"), Step::Skip(OUTSIDE_WINDOW)));
}

#[test]
fn a_long_downtime_records_a_bounded_number_of_skips() {
    let s = schedule("* * * * * *", "UTC", CatchUp::Skip);
    let (steps, passed_over) = plan(&s, t("2026-01-01T00:00:00Z"), t("2026-01-09T00:00:00Z"));
    assert!(passed_over);
    let skips = steps.iter().filter(|(_, s)| *s != Step::Fire).count();
    assert_eq!(skips, MAX_SKIPS_RECORDED);
    let fires = steps.iter().filter(|(_, s)| *s == Step::Fire).count();
    assert_eq!(fires, 61, "the last minute is on time");
    assert!(steps.windows(2).all(|w| w[0].0 < w[1].0), "oldest first");
}
