//! What a wake-up of a schedule does: the occurrences due since the last one it recorded, each
//! fired or skipped by the catch-up policy. Pure, so every case is tested without a store.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use super::Schedule;
use crate::config::CatchUp;

/// How late an occurrence may be reached and still count as on time (not missed): a relay that
/// wakes a little late, or a store that answered slowly, fires it whatever the catch-up policy.
/// Never more than the schedule's `catch_up_window`.
pub const ON_TIME: Duration = Duration::from_secs(60);

/// The most skipped occurrences one wake-up records; older missed ones are passed over
/// unrecorded (and logged).
pub const MAX_SKIPS_RECORDED: usize = 100;

/// How far before the catch-up window the walk over missed occurrences starts: occurrences
/// missed before that are passed over unrecorded, so a per-second pattern after a month's
/// downtime does not walk millions of times.
const LOOK_BACK: Duration = Duration::from_secs(24 * 3600);

/// What to do with one due occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Enqueue its message or start its run.
    Fire,
    /// Record it as skipped, for this reason.
    Skip(&'static str),
}

/// The reason recorded for an occurrence missed longer ago than `catch_up_window`.
pub const OUTSIDE_WINDOW: &str = "missed; older than catch_up_window";
/// The reason recorded under `catch_up = "skip"`.
pub const SKIP_POLICY: &str = "missed; catch_up = skip";
/// The reason recorded under `catch_up = "latest"` for all but the latest.
pub const NOT_LATEST: &str = "missed; catch_up = latest fired a later occurrence";
/// The reason recorded under `catch_up = "all"` beyond `catch_up_max`.
pub const OVER_MAX: &str = "missed; more than catch_up_max";

/// What a wake-up at `now` does with the occurrences of `schedule` due in `(after, now]`,
/// oldest first, and whether older ones were passed over without being recorded.
///
/// An occurrence reached within [`ON_TIME`] (and the window) fires. The others were missed,
/// and the policy decides: any older than `catch_up_window` is skipped; `skip` skips them all;
/// `latest` fires the latest one when nothing on time fires, and skips the rest; `all` fires
/// the latest `catch_up_max` of them and skips the rest.
pub fn plan(
    schedule: &Schedule,
    after: SystemTime,
    now: SystemTime,
) -> (Vec<(SystemTime, Step)>, bool) {
    let config = &schedule.config;
    let window = config.catch_up_window;
    let on_time = ON_TIME.min(window);
    let keep = config.catch_up_max as usize + MAX_SKIPS_RECORDED + 64;
    let earliest = now.checked_sub(window + LOOK_BACK).filter(|e| *e > after);
    let mut passed_over =
        earliest.is_some_and(|e| schedule.next_after(after).is_some_and(|n| n <= e));
    let mut due: VecDeque<SystemTime> = VecDeque::new();
    let mut cursor = earliest.unwrap_or(after);
    while let Some(t) = schedule.next_after(cursor) {
        if t > now {
            break;
        }
        if due.len() == keep {
            due.pop_front();
            passed_over = true;
        }
        due.push_back(t);
        cursor = t;
    }
    let late = |t: SystemTime| now.duration_since(t).unwrap_or_default();
    let any_on_time = due.iter().any(|t| late(*t) <= on_time);
    // Missed occurrences within the window, newest first, to count the policy's allowance.
    let mut allowance = match config.catch_up {
        CatchUp::Skip => 0,
        CatchUp::Latest => usize::from(!any_on_time),
        CatchUp::All => config.catch_up_max as usize,
    };
    let mut steps: Vec<(SystemTime, Step)> = due
        .iter()
        .rev()
        .map(|&t| {
            let step = if late(t) <= on_time {
                Step::Fire
            } else if late(t) > window {
                Step::Skip(OUTSIDE_WINDOW)
            } else if allowance > 0 {
                allowance -= 1;
                Step::Fire
            } else {
                Step::Skip(match config.catch_up {
                    CatchUp::Skip => SKIP_POLICY,
                    CatchUp::Latest => NOT_LATEST,
                    CatchUp::All => OVER_MAX,
                })
            };
            (t, step)
        })
        .collect();
    steps.reverse();
    // Record at most MAX_SKIPS_RECORDED skips: the newest ones.
    let skips = steps
        .iter()
        .filter(|(_, s)| matches!(s, Step::Skip(_)))
        .count();
    if skips > MAX_SKIPS_RECORDED {
        let mut drop = skips - MAX_SKIPS_RECORDED;
        steps.retain(|(_, s)| {
            if drop > 0 && matches!(s, Step::Skip(_)) {
                drop -= 1;
                false
            } else {
                true
            }
        });
        passed_over = true;
    }
    (steps, passed_over)
}
