//! Long polling: one supervised task per `mode = "polling"` destination calls `getUpdates`
//! and records what it gets, for bots without a public URL.
//!
//! **The offset is an acknowledgement.** Telegram forgets every update below the `offset` of
//! a `getUpdates` call. The poller therefore advances the offset — and stores it durably under
//! the meta key `telegram:<destination>:offset` — only after every update of a batch is
//! recorded: nothing acknowledged is lost. A crash between recording and storing the offset
//! makes Telegram send the batch again after the restart; the store's unique
//! `(source, update_id)` absorbs it, so nothing is repeated either. The one exception is an
//! update larger than the store accepts (`server.max_body_bytes`): refused on every poll, it
//! would hold up every later update, so it is skipped with an error.
//!
//! **Failures.** Network errors, 5xx and 429 back off on the destination's retry policy
//! (backoff and jitter, on the relay's clock, capped at [`MAX_BACKOFF`]; a 429's `retry_after`
//! also pauses the bot's sends, as flood control is bot-wide) and reconnect. A 409 — another
//! consumer, or a webhook set — goes to [`super::polling_conflict`] and backs off the same way,
//! so polling resumes once the other consumer is gone. A 401 (the token was revoked) stops
//! polling for that destination. A panic restarts the task.

use std::sync::Arc;
use std::time::Duration;

use ferrule_connectors::telegram::{RawUpdate, TelegramError};
use ferrule_policy::Outcome;
use ferrule_policy::duration::millis;
use ferrule_policy::retry::RetryConfig;
use ferrule_store::{Store, StoreError};
use futures_util::FutureExt as _;
use tokio_util::task::TaskTracker;

use super::{polling_conflict, record_update, telegram};
use crate::config::InboundMode;
use crate::destination::Destination;
use crate::destination::Inbound;
use crate::state::{AppState, Counters};

/// The longest wait between two polls after failures: a bot should not stay deaf for the
/// retry policy's cap, which is sized for redelivering a message (an hour by default).
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The meta key holding the next `getUpdates` offset of `destination`.
pub fn offset_key(destination: &str) -> String {
    format!("{}:offset", super::source(destination))
}

/// Starts a poller on `tracker` for every destination with `mode = "polling"`. Each stops when
/// the relay shuts down.
pub fn spawn(state: &AppState, tracker: &TaskTracker) {
    for destination in state.destinations.values() {
        let polls = destination
            .inbound
            .as_ref()
            .is_some_and(|i| i.mode == InboundMode::Polling);
        if polls && telegram(destination).is_some() {
            tracker.spawn(supervise(state.clone(), destination.clone()));
        }
    }
}

/// Runs the poller, restarting it after a panic.
async fn supervise(state: AppState, destination: Arc<Destination>) {
    loop {
        let run = std::panic::AssertUnwindSafe(poll(state.clone(), destination.clone()))
            .catch_unwind()
            .await;
        match run {
            Ok(()) => return,
            Err(panic) => {
                Counters::bump(&state.counters.panics);
                tracing::error!(
                    destination = %destination.name,
                    panic = %crate::dispatch::panic_text(&panic),
                    "the Telegram poller panicked; restarting it"
                );
                if !pause(&state, Duration::from_secs(1)).await {
                    return;
                }
            }
        }
    }
}

/// The poll loop; returns on shutdown or when the bot's token is refused.
async fn poll(state: AppState, destination: Arc<Destination>) {
    let (Some(inbound), Some(bot)) = (&destination.inbound, telegram(&destination)) else {
        return;
    };
    let name = destination.name.as_str();
    let key = offset_key(name);
    let mut backoff = Backoff::new(destination.retry.config().clone());
    let Some(mut offset) = load_offset(&state, &key, &mut backoff, name).await else {
        return;
    };
    tracing::info!(destination = name, offset, "polling Telegram for updates");
    loop {
        let polled = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            polled = bot.get_raw_updates(offset, inbound.poll_timeout) => polled,
        };
        let delay = match polled {
            Ok(updates) => {
                inbound.health.success();
                match record_batch(&state, &destination, &key, updates).await {
                    Ok(Some(next)) => {
                        offset = Some(next);
                        backoff.reset();
                        continue;
                    }
                    Ok(None) => {
                        backoff.reset();
                        continue;
                    }
                    Err(e) => {
                        // Not acknowledged: Telegram sends the batch again, and what was
                        // already recorded is a duplicate then.
                        tracing::warn!(destination = name, error = %e, "could not record a batch of updates; polling it again");
                        backoff.next(Outcome::Transient)
                    }
                }
            }
            Err(e) if e.is_conflict() => {
                polling_conflict(&state, &destination, &e.to_string());
                backoff.next(Outcome::Transient)
            }
            Err(e @ TelegramError::Unauthorized { .. }) => {
                tracing::error!(destination = name, error = %e, "Telegram refused the bot token; polling stops for this destination until the relay restarts with a valid token");
                inbound
                    .health
                    .mark_unhealthy(state.clock.system_now(), format!("polling stopped: {e}"));
                return;
            }
            Err(e) => failed(&state, &destination, inbound, &mut backoff, &e),
        };
        tracing::debug!(
            destination = name,
            delay_ms = millis(delay),
            "polling again after a pause"
        );
        if !pause(&state, delay).await {
            return;
        }
    }
}

/// Accounts for a failed `getUpdates` (network, 5xx, 429 or another refusal) and answers the
/// pause before the next.
fn failed(
    state: &AppState,
    destination: &Destination,
    inbound: &Inbound,
    backoff: &mut Backoff,
    e: &TelegramError,
) -> Duration {
    let outcome = e.outcome();
    inbound
        .health
        .failure(state.clock.system_now(), format!("getUpdates: {e}"));
    if let Outcome::RetryAfter(after) = outcome {
        // Flood control is bot-wide: sends wait too.
        destination.pause(after);
    }
    if outcome.is_retryable() {
        tracing::warn!(destination = %destination.name, error = %e, "getUpdates failed; reconnecting after a pause");
    } else {
        tracing::error!(destination = %destination.name, error = %e, "Telegram refused getUpdates; trying again after a pause");
    }
    backoff.next(outcome)
}

/// The stored offset, retrying the store with backoff; `None` on shutdown. A damaged value is
/// reported and dropped: Telegram then starts from its oldest unconfirmed update, and what was
/// recorded already is a duplicate.
async fn load_offset(
    state: &AppState,
    key: &str,
    backoff: &mut Backoff,
    name: &str,
) -> Option<Option<i64>> {
    loop {
        match state.store.get_meta(key).await {
            Ok(None) => return Some(None),
            Ok(Some(text)) => match text.trim().parse::<i64>() {
                Ok(offset) => return Some(Some(offset)),
                Err(_) => {
                    tracing::error!(destination = name, key, value = %text, "the stored getUpdates offset is not a number; starting from Telegram's oldest unconfirmed update");
                    return Some(None);
                }
            },
            Err(e) => {
                tracing::warn!(destination = name, error = %e, "cannot read the stored getUpdates offset; retrying");
                if !pause(state, backoff.next(Outcome::Transient)).await {
                    return None;
                }
            }
        }
    }
}

/// Records every update of a batch, then stores the next offset; answers it (`None` for an
/// empty batch). An error leaves the offset where it was.
async fn record_batch(
    state: &AppState,
    destination: &Arc<Destination>,
    key: &str,
    updates: Vec<RawUpdate>,
) -> Result<Option<i64>, StoreError> {
    let Some(last) = updates.last().map(|u| u.update_id) else {
        return Ok(None);
    };
    for raw in updates {
        let parsed = match raw.parse() {
            Ok(update) => Some(update),
            Err(e) => {
                tracing::warn!(destination = %destination.name, update_id = raw.update_id, error = %e, "an update is not in a shape the relay reads; it is stored as received and not answered");
                None
            }
        };
        let update_id = raw.update_id;
        match record_update(state, destination, update_id, raw.json, parsed.as_ref()).await {
            Ok(_) => {}
            // Refused outright, it would be refused on every poll and hold up every later
            // update: skip it, loudly. (A webhook answers 413 for it, and Telegram drops it.)
            Err(e @ StoreError::PayloadTooLarge { .. }) => {
                tracing::error!(destination = %destination.name, update_id, error = %e, "an update is larger than the store accepts (server.max_body_bytes); it is skipped");
            }
            Err(e) => return Err(e),
        }
    }
    let next = last.saturating_add(1);
    state.store.set_meta(key, &next.to_string()).await?;
    Ok(Some(next))
}

/// Sleeps `delay` on the relay's clock; false when the relay shuts down first.
async fn pause(state: &AppState, delay: Duration) -> bool {
    tokio::select! {
        _ = state.shutdown.cancelled() => false,
        _ = state.clock.sleep(delay) => true,
    }
}

/// Pauses between failed polls, from the destination's retry policy: its backoff and jitter,
/// never giving up, capped at [`MAX_BACKOFF`], and never shorter than a `retry_after`.
#[derive(Debug)]
struct Backoff {
    retry: RetryConfig,
    failures: u32,
    prev: Option<Duration>,
    rng: fastrand::Rng,
}

impl Backoff {
    fn new(retry: RetryConfig) -> Self {
        Backoff {
            retry,
            failures: 0,
            prev: None,
            rng: fastrand::Rng::new(),
        }
    }

    /// The pause after one more failure ending with `outcome`.
    fn next(&mut self, outcome: Outcome) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = self
            .retry
            .backoff
            .delay(self.failures, self.retry.jitter, self.prev, &mut self.rng)
            .min(MAX_BACKOFF);
        let delay = match outcome.retry_after() {
            Some(after) => delay.max(after.min(self.retry.max_retry_after)),
            None => delay,
        };
        self.prev = Some(delay);
        delay
    }

    /// A poll succeeded: the next failure starts from the first delay again.
    fn reset(&mut self) {
        self.failures = 0;
        self.prev = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrule_policy::retry::{Backoff as Shape, Jitter};

    fn retry(jitter: Jitter) -> RetryConfig {
        RetryConfig {
            backoff: Shape::Exponential {
                base: Duration::from_secs(1),
                multiplier: 2.0,
                cap: Duration::from_secs(3600),
            },
            jitter,
            max_attempts: 3,
            ..RetryConfig::default()
        }
    }

    #[test]
    fn backoff_grows_is_capped_never_gives_up_and_resets() {
        let mut b = Backoff::new(retry(Jitter::None));
        let delays: Vec<_> = (0..10).map(|_| b.next(Outcome::Transient)).collect();
        assert_eq!(delays[0], Duration::from_secs(1));
        assert_eq!(delays[1], Duration::from_secs(2));
        assert_eq!(delays[5], Duration::from_secs(32));
        // Past max_attempts it keeps going, at the cap.
        assert_eq!(delays[9], MAX_BACKOFF);
        b.reset();
        assert_eq!(b.next(Outcome::Transient), Duration::from_secs(1));
        // A retry_after is honoured even above the cap.
        b.reset();
        assert_eq!(
            b.next(Outcome::RetryAfter(Duration::from_secs(90))),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn jittered_backoff_stays_within_the_shape() {
        let mut b = Backoff::new(retry(Jitter::Full));
        for n in 1..=8u32 {
            let d = b.next(Outcome::Transient);
            let ceiling = Duration::from_secs(1 << (n - 1)).min(MAX_BACKOFF);
            assert!(d <= ceiling, "{n}: {d:?} > {ceiling:?}");
        }
    }

    #[test]
    fn the_offset_key_names_the_destination() {
        assert_eq!(offset_key("support"), "telegram:support:offset");
    }
}
