//! `[[schedules]]`: cron patterns that fire a message to a destination or a run of a route,
//! each occurrence exactly once; checked at load with errors that name the field, e.g.
//! `schedules[0].timezone`. The payload templates are compiled by
//! [`crate::template::Templates::compile_schedules`].

use std::collections::BTreeSet;
use std::time::Duration;

use ferrule_policy::ConfigError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Config;
use super::routes::check_name;

/// The most occurrences `catch_up = "all"` may fire after a downtime.
pub const MAX_CATCH_UP: u32 = 1000;

/// One `[[schedules]]` table.
///
/// ```toml
/// [[schedules]]
/// name = "daily-digest"
/// cron = "0 8 * * *"
/// timezone = "Europe/Berlin"
/// destination = "digest-hook"
/// payload = { kind = "digest", for = "{{ scheduled_for }}" }
/// catch_up = "latest"
/// catch_up_window = "6h"
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// The schedule's name: 1-64 of `a-z 0-9 _ -`, the `{name}` of `/v1/schedules/{name}`.
    pub name: String,
    /// A crontab pattern: 5 fields (minute hour day-of-month month day-of-week), or 6 with
    /// seconds first; `L`, `W`, `#` and `@daily`-style aliases as `croner` reads them.
    pub cron: String,
    /// The IANA time zone the pattern is read in (default `UTC`), e.g. `Europe/Berlin`.
    #[serde(default = "utc")]
    pub timezone: String,
    /// The destination each occurrence sends a message to (exactly one of `destination` and
    /// `route`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The route each occurrence starts a run of, with the payload as its `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The message's payload (a route's `input`): strings are templates over
    /// `{{ scheduled_for }}` (RFC 3339, UTC) and `{{ name }}`. Default:
    /// `{ schedule = "{{ name }}", scheduled_for = "{{ scheduled_for }}" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// What happens to occurrences missed while no relay ran: `skip` (none fire), `latest`
    /// (the latest one within the window fires) or `all` (every one within the window fires,
    /// at most `catch_up_max`, the latest ones). Default `latest`.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// How far back missed occurrences may still fire (default 1 hour).
    #[serde(default = "default_window", with = "humantime_serde")]
    pub catch_up_window: Duration,
    /// The most missed occurrences `catch_up = "all"` fires (default 100, at most 1000).
    #[serde(default = "default_max")]
    pub catch_up_max: u32,
}

/// What a schedule does with occurrences missed while no relay ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// None of them fires: each is recorded as skipped.
    Skip,
    /// The latest one within `catch_up_window` fires; the others are skipped.
    #[default]
    Latest,
    /// Every one within `catch_up_window` fires, at most `catch_up_max` (the latest ones).
    All,
}

impl CatchUp {
    /// The name used in the configuration and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::Latest => "latest",
            CatchUp::All => "all",
        }
    }
}

fn utc() -> String {
    "UTC".into()
}

fn default_window() -> Duration {
    Duration::from_secs(3600)
}

fn default_max() -> u32 {
    100
}

impl Config {
    /// Checks every `[[schedules]]` table: names, patterns, zones, targets and catch-up.
    pub fn validate_schedules(&self) -> Result<(), ConfigError> {
        let mut names = BTreeSet::new();
        for (i, schedule) in self.schedules.iter().enumerate() {
            let at = |field: &str| format!("schedules[{i}].{field}");
            check_name(&at("name"), &schedule.name, 64)?;
            if !names.insert(schedule.name.as_str()) {
                return Err(ConfigError::new(
                    at("name"),
                    format!("`{}` is used by an earlier schedule", schedule.name),
                ));
            }
            parse_cron(&schedule.cron).map_err(|e| ConfigError::new(at("cron"), e))?;
            parse_timezone(&schedule.timezone).map_err(|e| ConfigError::new(at("timezone"), e))?;
            match (&schedule.destination, &schedule.route) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        at("route"),
                        "give `destination` or `route`, not both",
                    ));
                }
                (None, None) => {
                    return Err(ConfigError::new(
                        at("destination"),
                        "a schedule needs a `destination` or a `route`",
                    ));
                }
                (Some(destination), None) => {
                    if !self
                        .destinations
                        .iter()
                        .any(|d| d.name.trim() == destination)
                    {
                        return Err(ConfigError::new(
                            at("destination"),
                            format!("no destination named `{destination}` is configured"),
                        ));
                    }
                }
                (None, Some(route)) => {
                    if !self.routes.iter().any(|r| &r.name == route) {
                        return Err(ConfigError::new(
                            at("route"),
                            format!("no route named `{route}` is configured"),
                        ));
                    }
                }
            }
            if schedule.catch_up_window.is_zero() {
                return Err(ConfigError::new(
                    at("catch_up_window"),
                    "must be longer than zero",
                ));
            }
            if schedule.catch_up_max == 0 || schedule.catch_up_max > MAX_CATCH_UP {
                return Err(ConfigError::new(
                    at("catch_up_max"),
                    format!("must be between 1 and {MAX_CATCH_UP}"),
                ));
            }
        }
        Ok(())
    }
}

/// Parses a crontab pattern: 5 fields, or 6 with seconds first (no year field).
pub fn parse_cron(pattern: &str) -> Result<croner::Cron, String> {
    if pattern.split_whitespace().count() > 6 {
        return Err("has more than 6 fields (seconds minute hour day month weekday)".into());
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(pattern)
        .map_err(|e| format!("not a cron pattern: {e}"))
}

/// Parses an IANA time zone name.
pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, String> {
    name.parse::<chrono_tz::Tz>()
        .map_err(|_| format!("`{name}` is not an IANA time zone (e.g. `Europe/Berlin`, `UTC`)"))
}
