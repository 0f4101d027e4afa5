//! Durable retry decisions: the next attempt's time from the destination's retry policy and
//! what the message's timeline says about its current run of attempts.

use std::time::{Duration, SystemTime};

use ferrule_policy::Outcome;
use ferrule_policy::retry::{Retry, RetryDecision};
use ferrule_store::{Event, Status};

/// The durable retry decision after attempt `attempt` failed with `outcome`: the policy's
/// backoff (decorrelated jitter growing from `previous_delay`), never shorter than a
/// `Retry-After`, within `max_attempts` and within `max_elapsed` counted by `elapsed`.
pub fn decide(
    retry: &Retry,
    attempt: u32,
    outcome: Outcome,
    previous_delay: Option<Duration>,
    elapsed: Duration,
) -> RetryDecision {
    let mut rng = fastrand::Rng::new();
    retry.next_delay_with_elapsed(attempt.max(1), outcome, previous_delay, elapsed, &mut rng)
}

/// What a message's timeline says about its current run of attempts, for [`decide`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryHistory {
    /// When the first attempt since the message was created or last replayed started: where
    /// `max_elapsed` counts from.
    pub first_attempt_at: Option<SystemTime>,
    /// How long the message waited before the current attempt, from the last failed attempt's
    /// reschedule to this attempt's claim: the previous delay decorrelated jitter grows from.
    pub previous_delay: Option<Duration>,
}

impl RetryHistory {
    /// Reads `events` (oldest first) of a message whose current attempt is claimed.
    ///
    /// The run starts at the last `queued` event that is the creation (the first event) or a
    /// replay (detail `replayed`); a `queued` event of a deferral does not restart it, and a
    /// claim that was deferred or released without an attempt does not count as its first.
    pub fn of(events: &[Event]) -> Self {
        let start = events
            .iter()
            .rposition(|e| {
                e.status == Status::Queued
                    && (e.seq == 1 || e.detail.as_deref() == Some("replayed"))
            })
            .unwrap_or(0);
        let run = events.get(start..).unwrap_or_default();
        // A claim given back unattempted (deferred or released: the next event returns the
        // message to the queue without an outcome) is not an attempt.
        let given_back = |e: &Event| {
            matches!(e.status, Status::Queued | Status::Retrying) && e.outcome.is_none()
        };
        let first_attempt_at = run
            .iter()
            .enumerate()
            .find(|(i, e)| {
                e.status == Status::Delivering && !run.get(i + 1).is_some_and(given_back)
            })
            .map(|(_, e)| e.at);
        // The current attempt's claim, and the reschedule (a `retrying` event that ended an
        // attempt, not a deferral) before it.
        let previous_delay = run
            .iter()
            .rposition(|e| e.status == Status::Delivering)
            .and_then(|current| {
                let claimed = run[current].at;
                run[..current]
                    .iter()
                    .rev()
                    .find(|e| e.status == Status::Retrying && e.outcome.is_some())
                    .and_then(|r| claimed.duration_since(r.at).ok())
            });
        RetryHistory {
            first_attempt_at,
            previous_delay,
        }
    }
}
