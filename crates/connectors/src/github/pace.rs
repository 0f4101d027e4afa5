//! [`WritePace`]: GitHub's pace for writes with one token — one at a time, and a pause of at
//! least `min_write_interval` between one finishing and the next starting.
//!
//! GitHub's guidance against its secondary rate limits is to make writes serially and wait at
//! least a second between them. The relay delivers many messages concurrently, so the pace is
//! kept by asking before each attempt: [`WritePace::try_acquire`] admits one write (the
//! [`WritePermit`] holds the token's one place until dropped) or says when to come back, and
//! the relay defers the message in the store until then — it never sleeps holding a lease.
//!
//! The pace also keeps the order of what it refused. Were every writer refused while one write
//! is in flight told the same instant, they would come back as a herd, one would win and the
//! rest be deferred again, each time. So refused writers form a line in the order they were
//! first refused, and each is told to come back when its turn should come: when the token is
//! free, plus one interval and the usual length of a write for each writer ahead of it. A
//! newcomer joins the end of the line instead of taking a turn promised to a writer that
//! waited. Writes may take longer than estimated; a writer that comes back before its turn
//! keeps its place and is told its turn again, from what is known then. A writer that does not
//! come back within a write's time of its turn is passed over, so a cancelled message holds up
//! the line once at most, and is forgotten a minute later; a restart forgets the line.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferrule_policy::SharedClock;
use ferrule_policy::rate_limit::RateLimited;

/// How long a writer is kept in the line after its turn, if it does not come back for it.
const STALE_PLACE: Duration = Duration::from_secs(60);

/// One token's write pace: at most one write in flight, and `interval` between one write
/// finishing and the next starting. Keyed by nothing: keep one per token.
///
/// ```
/// use std::time::Duration;
/// use ferrule_connectors::github::WritePace;
/// use ferrule_policy::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let pace = WritePace::new(Duration::from_secs(1), clock.shared());
/// let write = pace.try_acquire("01J00000000000000000000001").unwrap();
/// // While it runs, another writer is told when to come back.
/// let refused = pace.try_acquire("01J00000000000000000000002").unwrap_err();
/// assert_eq!(refused.wait, Duration::from_secs(1));
/// clock.advance(Duration::from_millis(400));
/// drop(write); // finished: the next may start a second from now
/// clock.advance(Duration::from_secs(1));
/// assert!(pace.try_acquire("01J00000000000000000000002").is_ok());
/// ```
#[derive(Debug)]
pub struct WritePace {
    interval: Duration,
    clock: SharedClock,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the write in flight started, if one is.
    in_flight: Option<Instant>,
    /// When the last write that was made finished.
    last_finished: Option<Instant>,
    /// The writers refused, by message id.
    line: HashMap<String, Waiter>,
    /// The order the next writer to join the line takes.
    next_seq: u64,
    /// A smoothed estimate of how long a write takes, once one has finished.
    typical: Option<Duration>,
}

/// A writer in line.
#[derive(Debug, Clone, Copy)]
struct Waiter {
    /// Its order in the line: writers refused earlier go first.
    seq: u64,
    /// When it was told to come back.
    due: Instant,
}

impl WritePace {
    /// A pace of one write at a time, `interval` apart, on `clock`.
    pub fn new(interval: Duration, clock: SharedClock) -> Self {
        WritePace {
            interval,
            clock,
            state: Mutex::new(State::default()),
        }
    }

    /// The least time between one write finishing and the next starting.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits the write of `message` now, or says when it may come back.
    ///
    /// Admitted, it holds the token's one place until the [`WritePermit`] is dropped, which
    /// stamps the write as finished; call [`WritePermit::not_sent`] instead when the write was
    /// not made after all. Refused, [`RateLimited::ready_at`] is the writer's turn in the line.
    pub fn try_acquire(&self, message: &str) -> Result<WritePermit<'_>, RateLimited> {
        let now = self.clock.now();
        let refused = |ready_at: Instant| RateLimited {
            wait: ready_at.saturating_duration_since(now),
            ready_at,
        };
        let mut state = self.lock();
        let State {
            in_flight,
            last_finished,
            line,
            next_seq,
            typical,
        } = &mut *state;
        line.retain(|_, waiter| waiter.due + STALE_PLACE > now);
        // A write takes its own time plus the interval after it.
        let spacing = self.interval + typical.unwrap_or_default();
        // When the token is free again: while a write runs, an estimate from how long writes
        // take; else an interval after the last one finished.
        let busy_until = match (*in_flight, *last_finished) {
            (Some(started), _) => {
                Some((started + typical.unwrap_or_default()).max(now) + self.interval)
            }
            (None, Some(finished)) => Some(finished + self.interval).filter(|at| *at > now),
            (None, None) => None,
        };
        let me = line.get(message).copied();
        // The writers ahead: refused earlier and still expected. One that has not come back a
        // write's time after it was due is passed over (it may come back later, or never).
        let ahead = line
            .values()
            .filter(|w| me.is_none_or(|me| w.seq < me.seq) && w.due + spacing > now)
            .count();
        if busy_until.is_some() || ahead > 0 {
            let due =
                busy_until.unwrap_or(now) + spacing * u32::try_from(ahead).unwrap_or(u32::MAX);
            let seq = me.map_or_else(
                || {
                    *next_seq += 1;
                    *next_seq
                },
                |me| me.seq,
            );
            line.insert(message.to_owned(), Waiter { seq, due });
            return Err(refused(due));
        }
        line.remove(message);
        *in_flight = Some(now);
        Ok(WritePermit {
            pace: self,
            made: true,
        })
    }

    /// Ends the write in flight; a write that was made is stamped as finished now.
    fn finish(&self, made: bool) {
        let now = self.clock.now();
        let mut state = self.lock();
        let Some(started) = state.in_flight.take() else {
            return;
        };
        if made {
            state.last_finished = Some(now);
            let took = now.saturating_duration_since(started);
            state.typical = Some(match state.typical {
                // Like TCP's round-trip estimate: one eighth of each new sample.
                Some(typical) => (typical * 7 + took) / 8,
                None => took,
            });
        }
    }
}

/// The token's one write, admitted by [`WritePace::try_acquire`]. Dropping it stamps the write
/// as finished, so drop it as soon as the attempt has been answered.
#[derive(Debug)]
#[must_use = "dropping it at once stamps the write as finished before it was made"]
pub struct WritePermit<'a> {
    pace: &'a WritePace,
    made: bool,
}

impl WritePermit<'_> {
    /// The write was not made after all (e.g. the breaker or the bulkhead refused it): frees the
    /// token's place without counting a write, so the next may start at once.
    pub fn not_sent(mut self) {
        self.made = false;
    }
}

impl Drop for WritePermit<'_> {
    fn drop(&mut self) {
        self.pace.finish(self.made);
    }
}

#[cfg(test)]
mod tests {
    use ferrule_policy::{Clock, ManualClock};

    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const SECOND: Duration = Duration::from_secs(1);

    fn pace(clock: &ManualClock) -> WritePace {
        WritePace::new(SECOND, clock.shared())
    }

    #[test]
    fn the_next_write_starts_an_interval_after_the_last_finished() {
        let clock = ManualClock::new();
        let pace = pace(&clock);
        let start = clock.now();
        let write = pace.try_acquire("a").unwrap();
        clock.advance(300 * MS);
        drop(write);
        let refused = pace.try_acquire("b").unwrap_err();
        assert_eq!(refused.ready_at, start + 1300 * MS);
        assert_eq!(refused.wait, SECOND);
        clock.advance(999 * MS);
        assert_eq!(
            pace.try_acquire("b").unwrap_err().ready_at,
            start + 1300 * MS
        );
        clock.advance(MS);
        drop(pace.try_acquire("b").unwrap());
    }

    #[test]
    fn refused_writers_wait_in_line_not_as_a_herd() {
        let clock = ManualClock::new();
        let pace = pace(&clock);
        let start = clock.now();
        // A first write teaches the pace that writes take 200 ms.
        let write = pace.try_acquire("first").unwrap();
        clock.advance(200 * MS);
        drop(write);
        clock.advance(SECOND);
        let write = pace.try_acquire("second").unwrap();
        let places: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|m| pace.try_acquire(m).unwrap_err().ready_at)
            .collect();
        // The second write started at +1.2 s and should end at +1.4 s; then one every 1.2 s.
        let first_place = start + 2400 * MS;
        assert_eq!(
            places,
            [0, 1, 2].map(|k| first_place + 1200 * MS * k),
            "in line, an interval plus a write apart"
        );
        clock.advance(200 * MS);
        drop(write);
        // A newcomer queues behind the line even though the token will be free first.
        let newcomer = pace.try_acquire("d").unwrap_err();
        assert_eq!(newcomer.ready_at, first_place + 3600 * MS);
        // Each comes back at its place and is admitted.
        for (k, message) in ["a", "b", "c"].iter().enumerate() {
            clock.advance(places[k] - clock.now());
            let write = pace.try_acquire(message).unwrap();
            clock.advance(200 * MS);
            drop(write);
        }
    }

    #[test]
    fn a_writer_back_while_the_write_before_runs_keeps_its_place() {
        let clock = ManualClock::new();
        let pace = pace(&clock);
        let start = clock.now();
        let write = pace.try_acquire("slow").unwrap();
        let place = pace.try_acquire("next").unwrap_err().ready_at;
        assert_eq!(place, start + SECOND);
        // The slow write is still running at the place.
        clock.advance(SECOND);
        let refused = pace.try_acquire("next").unwrap_err();
        assert_eq!(refused.ready_at, start + 2 * SECOND);
        // Another writer still queues behind it.
        assert!(pace.try_acquire("later").unwrap_err().ready_at > place);
        clock.advance(500 * MS);
        drop(write);
        clock.advance(SECOND);
        drop(pace.try_acquire("next").unwrap());
    }

    #[test]
    fn a_writer_back_at_the_turn_of_one_ahead_of_it_lets_that_one_go_first() {
        let clock = ManualClock::new();
        let pace = pace(&clock);
        let start = clock.now();
        // Writes take 300 ms, but the pace does not know yet: turns are told a second apart.
        let write = pace.try_acquire("a").unwrap();
        let turns: Vec<_> = ["b", "c", "d"]
            .iter()
            .map(|m| pace.try_acquire(m).unwrap_err().ready_at - start)
            .collect();
        assert_eq!(turns, [SECOND, 2 * SECOND, 3 * SECOND]);
        clock.advance(300 * MS);
        drop(write);
        // b comes back at 1 s and is told 1.3 s; c comes back at 2 s, before b has written.
        clock.advance(700 * MS);
        assert_eq!(
            pace.try_acquire("b").unwrap_err().ready_at - start,
            1300 * MS
        );
        clock.advance(SECOND);
        // c is second in line: b may still come and write first, so c's turn is a write and an
        // interval from now.
        let c = pace.try_acquire("c").unwrap_err().ready_at - start;
        assert_eq!(c, 3300 * MS);
        // b never came back (cancelled): after a write's time past its turn, it is passed over.
        clock.advance(c - 2 * SECOND);
        drop(pace.try_acquire("c").unwrap());
    }

    #[test]
    fn a_write_not_made_frees_the_token_at_once() {
        let clock = ManualClock::new();
        let pace = pace(&clock);
        pace.try_acquire("a").unwrap().not_sent();
        drop(pace.try_acquire("b").unwrap());
        assert!(pace.try_acquire("c").is_err(), "b was made: c waits");
    }

    #[test]
    fn places_not_claimed_are_forgotten() {
        let clock = ManualClock::new();
        let pace = pace(&clock);
        let write = pace.try_acquire("a").unwrap();
        for m in ["b", "c", "d"] {
            pace.try_acquire(m).unwrap_err();
        }
        drop(write);
        // Nobody came back for a minute past the last place.
        clock.advance(SECOND * 65);
        drop(pace.try_acquire("e").unwrap());
        assert!(pace.lock().line.is_empty());
    }
}
