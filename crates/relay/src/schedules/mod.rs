//! `[[schedules]]` at run time: each schedule's parsed cron pattern and zone (`mod.rs`), what a
//! wake-up fires or skips after a downtime (`plan.rs`, pure), the loop that sleeps until the
//! next occurrence and records it in the store with its message or run (`runner.rs`), and the
//! durable pause an operator sets (`pause.rs`).
//!
//! Exactly once without a leader: every relay runs every schedule, and each occurrence is
//! recorded with [`Store::record_occurrence`](ferrule_store::Store::record_occurrence), which
//! writes the occurrence's row, unique on `(schedule, scheduled_for)`, in the same transaction
//! as its message (idempotency key `schedule:{name}:{scheduled_for}`) or run. The first relay
//! commits it; the others find it and write nothing.

mod pause;
mod plan;
mod runner;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use ferrule_policy::ConfigError;
use serde_json::{Value, json};

use crate::config::{Config, ScheduleConfig, parse_cron, parse_timezone};
use crate::template::Templates;

pub use self::pause::{PauseState, pause_key, read_pause, write_pause};
pub use self::plan::{
    MAX_SKIPS_RECORDED, NOT_LATEST, ON_TIME, OUTSIDE_WINDOW, OVER_MAX, SKIP_POLICY, Step, plan,
};
pub use self::runner::{FireError, fire, run};

/// One schedule, compiled.
#[derive(Debug)]
pub struct Schedule {
    /// Its position in `[[schedules]]`, for template fields.
    pub index: usize,
    /// As configured.
    pub config: ScheduleConfig,
    /// The parsed pattern.
    pub cron: croner::Cron,
    /// The zone the pattern is read in.
    pub tz: chrono_tz::Tz,
}

impl Schedule {
    /// The first occurrence strictly after `after`, or `None` if the pattern never matches
    /// again.
    ///
    /// Daylight saving time is `croner`'s, as Vixie cron does it: a local time that does not
    /// exist (spring forward) fires at the first minute after the gap for a fixed-time pattern
    /// and is passed over for an interval pattern (`*/15`); a local time that happens twice
    /// (fall back) fires once, at its first occurrence, for a fixed-time pattern, and on both
    /// passes for an interval pattern.
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        let local = DateTime::<Utc>::from(after).with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        Some(SystemTime::from(next.with_timezone(&Utc)))
    }

    /// The target, as the API shows it: `destination:NAME` or `route:NAME`.
    pub fn target(&self) -> String {
        match (&self.config.destination, &self.config.route) {
            (Some(d), _) => format!("destination:{d}"),
            (None, Some(r)) => format!("route:{r}"),
            (None, None) => String::new(),
        }
    }

    /// The payload (a route's `input`) of the occurrence due at `scheduled_for`.
    pub fn payload(
        &self,
        templates: &Templates,
        scheduled_for: SystemTime,
    ) -> Result<Value, crate::template::TemplateError> {
        let context = json!({
            "scheduled_for": crate::time::rfc3339(scheduled_for),
            "name": self.config.name,
        });
        match &self.config.payload {
            Some(payload) => templates.payload(
                &format!("schedules[{}].payload", self.index),
                payload,
                &context,
            ),
            None => Ok(json!({
                "schedule": self.config.name,
                "scheduled_for": context["scheduled_for"],
            })),
        }
    }
}

/// The idempotency key (a route's dedupe key) of an occurrence.
pub fn occurrence_key(name: &str, scheduled_for: SystemTime, manual: bool) -> String {
    let at = crate::time::rfc3339(scheduled_for);
    if manual {
        format!("schedule:{name}:manual:{at}")
    } else {
        format!("schedule:{name}:{at}")
    }
}

/// Every `[[schedules]]` table, compiled, with their payload templates.
#[derive(Debug)]
pub struct Schedules {
    schedules: BTreeMap<String, Schedule>,
    /// The payload templates.
    pub templates: Templates,
}

impl Schedules {
    /// Compiles the configuration's schedules (already validated; the errors name the field
    /// again if not).
    pub fn compile(config: &Config) -> Result<Schedules, ConfigError> {
        let templates = Templates::compile_schedules(&config.schedules)?;
        let mut schedules = BTreeMap::new();
        for (i, s) in config.schedules.iter().enumerate() {
            let cron = parse_cron(&s.cron)
                .map_err(|e| ConfigError::new(format!("schedules[{i}].cron"), e))?;
            let tz = parse_timezone(&s.timezone)
                .map_err(|e| ConfigError::new(format!("schedules[{i}].timezone"), e))?;
            schedules.insert(
                s.name.clone(),
                Schedule {
                    index: i,
                    config: s.clone(),
                    cron,
                    tz,
                },
            );
        }
        Ok(Schedules {
            schedules,
            templates,
        })
    }

    /// The schedule named `name`.
    pub fn get(&self, name: &str) -> Option<&Schedule> {
        self.schedules.get(name)
    }

    /// Every schedule, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Schedule> {
        self.schedules.values()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.schedules.is_empty()
    }
}
