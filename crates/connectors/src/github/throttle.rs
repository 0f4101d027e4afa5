//! The one piece of state a GitHub connector keeps between attempts: how many secondary rate
//! limits its token met in a row, and how many each message met, for GitHub's "wait at least a
//! minute, then exponentially longer, then give up".
//!
//! It lives in memory on purpose. The run only sets how long the token pauses (the relay keeps
//! the pause itself); a restart starts the run again at a minute, which GitHub's guidance
//! allows. A message's count only decides when it gives up; forgotten, the message gets a few
//! more tries, each still paced by the run.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::config::SecondaryLimit;

/// The most messages whose secondary-limit count is remembered; beyond it the oldest ids (for
/// ULIDs, the oldest messages) are forgotten.
const TRACKED_MESSAGES: usize = 10_000;

/// What one secondary limit means for the token and the message that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Hit {
    /// How long the whole token waits: GitHub's `retry-after` when it sent one, else the
    /// backoff for the run so far.
    pub(super) wait: Duration,
    /// The token's secondary limits in a row, this one included.
    pub(super) run: u32,
    /// This message's secondary limits in a row, this one included.
    pub(super) tries: u32,
    /// Whether the message has met its `max_tries` and must give up.
    pub(super) give_up: bool,
}

/// A token's secondary-limit run and its messages' counts.
#[derive(Debug)]
pub(super) struct Throttle {
    settings: SecondaryLimit,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    run: u32,
    tries: BTreeMap<String, u32>,
}

impl Throttle {
    pub(super) fn new(settings: SecondaryLimit) -> Self {
        Throttle {
            settings,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `message` met a secondary limit; `retry_after` is GitHub's stated wait, if any.
    pub(super) fn secondary(&self, message: &str, retry_after: Option<Duration>) -> Hit {
        let mut state = self.lock();
        state.run = state.run.saturating_add(1);
        let run = state.run;
        let tries = {
            let count = state.tries.entry(message.to_owned()).or_default();
            *count = count.saturating_add(1);
            *count
        };
        let give_up = tries >= self.settings.max_tries;
        if give_up {
            state.tries.remove(message);
        }
        while state.tries.len() > TRACKED_MESSAGES {
            state.tries.pop_first();
        }
        Hit {
            wait: retry_after.unwrap_or_else(|| self.settings.wait(run)),
            run,
            tries,
            give_up,
        }
    }

    /// `message` got an answer that is not a rate limit: the token's run is over, and so is
    /// the message's.
    pub(super) fn answered(&self, message: &str) {
        let mut state = self.lock();
        state.run = 0;
        state.tries.remove(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn waits_double_per_limit_in_a_row_up_to_the_cap_and_reset_on_an_answer() {
        let throttle = Throttle::new(SecondaryLimit {
            max_wait: 5 * MINUTE,
            ..SecondaryLimit::default()
        });
        let waits: Vec<_> = ["a", "b", "a", "c", "a"]
            .iter()
            .map(|m| throttle.secondary(m, None).wait)
            .collect();
        assert_eq!(
            waits,
            [MINUTE, 2 * MINUTE, 4 * MINUTE, 5 * MINUTE, 5 * MINUTE]
        );
        throttle.answered("b");
        let hit = throttle.secondary("a", None);
        assert_eq!((hit.wait, hit.run, hit.tries), (MINUTE, 1, 4));
        // GitHub's own wait wins, and still counts.
        let hit = throttle.secondary("a", Some(Duration::from_secs(7)));
        assert_eq!(
            (hit.wait, hit.run, hit.tries),
            (Duration::from_secs(7), 2, 5)
        );
    }

    #[test]
    fn a_message_gives_up_after_max_tries_in_a_row() {
        let throttle = Throttle::new(SecondaryLimit {
            max_tries: 3,
            ..SecondaryLimit::default()
        });
        assert!(!throttle.secondary("a", None).give_up);
        throttle.answered("a");
        assert!(!throttle.secondary("a", None).give_up);
        assert!(!throttle.secondary("a", None).give_up);
        let hit = throttle.secondary("a", None);
        assert!(hit.give_up && hit.tries == 3);
        // A replayed message starts again.
        assert_eq!(throttle.secondary("a", None).tries, 1);
    }

    #[test]
    fn remembers_a_bounded_number_of_messages() {
        let throttle = Throttle::new(SecondaryLimit::default());
        for i in 0..=TRACKED_MESSAGES {
            throttle.secondary(&format!("{i:08}"), None);
        }
        let state = throttle.lock();
        assert_eq!(state.tries.len(), TRACKED_MESSAGES);
        assert!(
            !state.tries.contains_key("00000000"),
            "the oldest is forgotten"
        );
    }
}
