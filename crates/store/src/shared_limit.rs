//! Send limits shared by the relays on one store: sliding windows of at most `limit` sends in
//! any `per`, one row per window key (a Telegram bot, chat or group; a GitHub token), that
//! every relay on the database admits its sends through.
//!
//! A relay collects the sends it decides in the same instant and asks for them in one
//! [`SlotBatch`] ([`Store::take_send_slots`](crate::Store::take_send_slots)): one transaction
//! locks the batch's keys in a fixed order, admits or refuses each send in turn, records the
//! sends that finished since the previous batch, and writes the windows back. Two batches
//! touching a key run one after the other, so concurrent relays never overfill a window.
//!
//! The windows keep the guarantees of the relay's in-memory ones: a send's place is stamped
//! when it *finished* (its response came back, so it had arrived), and a send in flight holds
//! its place until then; a send admitted at `t` therefore arrives more than `per` after the
//! send `limit` places before it arrived. A send whose finish never reaches the store (its
//! relay died) holds its place until `hold` and the window's `per` after it was admitted. A window may
//! keep a line for the sends it refuses (the Telegram bot's window): each refused send gets a
//! place `spacing` after the previous one and is deferred to it; a send that comes back for
//! its place is not charged again, and a newcomer queues behind the line.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::common::check_key;
use crate::error::{Result, StoreError};
use crate::types::{from_millis, to_millis};

/// How long a place in a line is kept for a send that does not come back for it.
const STALE_PLACE_MS: i64 = 60_000;

/// How recently a relay must have asked for a window's slots to count among its instances.
pub const INSTANCE_SEEN: Duration = Duration::from_secs(30);

/// One window a send must fit: at most `limit` sends in any `per`, stored under `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSpan {
    /// The window's key, e.g. `telegram:alerts:chat:-100123`.
    pub key: String,
    /// How many sends the window holds.
    pub limit: u32,
    /// The window's span.
    pub per: Duration,
    /// With `Some(spacing)`, the window keeps a line for the sends it refuses, places
    /// `spacing` apart. At most one span of a request keeps a line, the last.
    pub line: Option<Duration>,
}

/// One send asking for a place in every window of `spans` (narrowest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRequest {
    /// The send's name in the windows (its message id): a send back for its place in a line
    /// is known by it.
    pub token: String,
    /// The windows it must fit.
    pub spans: Vec<LimitSpan>,
    /// How long it may be in flight at most (the attempt timeout and a margin): if its finish
    /// is never recorded, each place frees its window's `per` after that.
    pub hold: Duration,
    /// How late sends usually finish after they are admitted (as the relay measured): a send
    /// still in flight is expected to free its place `per` after that from now, when a refused
    /// send is told to come back.
    pub late: Duration,
}

/// A send admitted earlier that has finished (or was not made after all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotFinish {
    /// The token it was admitted with.
    pub token: String,
    /// The keys of the windows it was admitted to.
    pub keys: Vec<String>,
    /// When it finished.
    pub at: SystemTime,
    /// Whether it was made: a send not made frees its places without being counted.
    pub happened: bool,
}

/// What one relay asks of the shared windows at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotBatch {
    /// The relay asking (counted among the instances of the windows it asks for).
    pub owner: String,
    /// The relay's now: what the windows are checked at.
    pub now: SystemTime,
    /// Sends that finished since the relay's previous batch; recorded first.
    pub finishes: Vec<SlotFinish>,
    /// Sends asking for places, answered in order.
    pub requests: Vec<SlotRequest>,
}

/// Why a send was refused: the earliest it could go, and the window that refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// When to try again (its place in the line, or when the window frees a place).
    pub ready_at: SystemTime,
    /// The key of the window that refused it.
    pub key: String,
}

/// The answer to one [`SlotRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotAnswer {
    /// `None`: admitted, it holds a place in every window until its finish is recorded.
    pub refused: Option<Refusal>,
    /// How many relays asked for places in the request's last window within
    /// [`INSTANCE_SEEN`] (this one included).
    pub instances: usize,
}

/// One window as stored (JSON), times in milliseconds since the epoch.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyState {
    /// The window's span, as last asked for (to forget old sends on a finish alone).
    #[serde(default)]
    per: i64,
    /// When recent sends finished, oldest first.
    #[serde(default)]
    finished: Vec<i64>,
    /// Sends in flight: token, and when the place frees if no finish comes.
    #[serde(default)]
    flight: Vec<(String, i64)>,
    /// Sends the window refused, with their place in its line.
    #[serde(default)]
    line: Vec<(String, i64)>,
    /// The place the next send to join the line gets (at the earliest).
    #[serde(default)]
    next_place: Option<i64>,
    /// The relays that asked for places, and when they last did.
    #[serde(default)]
    seen: Vec<(String, i64)>,
}

impl KeyState {
    /// Parses a stored window (`{}` for a new one).
    pub(crate) fn parse(key: &str, stored: &str) -> Result<Self> {
        serde_json::from_str(stored).map_err(|e| StoreError::Corrupt {
            detail: format!("shared_limits.state of `{key}`: {e}"),
            source: None,
        })
    }

    /// The window as stored.
    pub(crate) fn to_stored(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    fn prune(&mut self, now: i64) {
        let per = self.per;
        self.finished.retain(|&at| at + per > now);
        self.flight.retain(|&(_, until)| until > now);
        self.line.retain(|&(_, place)| place + STALE_PLACE_MS > now);
        let seen = i64::try_from(INSTANCE_SEEN.as_millis()).unwrap_or(i64::MAX);
        self.seen.retain(|&(_, at)| at + seen > now);
    }

    /// `None` if the window admits a send at `now`; otherwise the earliest instant it could.
    fn full_until(&self, limit: usize, now: i64, late: i64) -> Option<i64> {
        let taken = self.finished.len() + self.flight.len();
        if taken < limit {
            return None;
        }
        // The place that frees first: a finished send's, `per` after it finished; a send
        // still in flight finishes no earlier than now, likely `late` after.
        Some(
            self.finished
                .get(taken - limit)
                .map_or(now + late + self.per, |&at| at + self.per),
        )
    }

    fn finish(&mut self, token: &str, at: i64, happened: bool) {
        if let Some(i) = self.flight.iter().position(|(t, _)| t == token) {
            self.flight.remove(i);
            if happened {
                let i = self.finished.partition_point(|&f| f <= at);
                self.finished.insert(i, at);
            }
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Refuses an empty or overlong owner, key or token, a zero limit or span, and a request that
/// keeps a line on other than its last span.
pub(crate) fn check(batch: &SlotBatch) -> Result<()> {
    check_key("owner", Some(&batch.owner), false)?;
    for finish in &batch.finishes {
        check_key("token", Some(&finish.token), false)?;
        for key in &finish.keys {
            check_key("key", Some(key), false)?;
        }
    }
    for request in &batch.requests {
        check_key("token", Some(&request.token), false)?;
        if request.spans.is_empty() {
            return Err(StoreError::InvalidOption {
                field: "spans",
                reason: "must not be empty".into(),
            });
        }
        for (i, span) in request.spans.iter().enumerate() {
            check_key("key", Some(&span.key), false)?;
            if span.limit == 0 || span.per.is_zero() {
                return Err(StoreError::InvalidOption {
                    field: "spans",
                    reason: format!("`{}` must hold at least one send per span", span.key),
                });
            }
            if span.line.is_some() && i + 1 != request.spans.len() {
                return Err(StoreError::InvalidOption {
                    field: "spans",
                    reason: "only the last span may keep a line".into(),
                });
            }
        }
    }
    Ok(())
}

impl SlotBatch {
    /// Every key the batch touches, in the order their rows are locked.
    pub fn keys(&self) -> Vec<String> {
        let mut keys = BTreeSet::new();
        for finish in &self.finishes {
            keys.extend(finish.keys.iter().cloned());
        }
        for request in &self.requests {
            keys.extend(request.spans.iter().map(|s| s.key.clone()));
        }
        keys.into_iter().collect()
    }
}

/// Applies `batch` to the windows it touches (every key of [`SlotBatch::keys`] is in
/// `states`): records its finishes, then answers its requests in order.
pub(crate) fn apply(states: &mut BTreeMap<String, KeyState>, batch: &SlotBatch) -> Vec<SlotAnswer> {
    let now = to_millis(batch.now);
    for finish in &batch.finishes {
        for key in &finish.keys {
            if let Some(state) = states.get_mut(key) {
                state.finish(&finish.token, to_millis(finish.at), finish.happened);
            }
        }
    }
    for state in states.values_mut() {
        state.prune(now);
    }
    batch
        .requests
        .iter()
        .map(|request| admit(states, request, &batch.owner, now))
        .collect()
}

fn admit(
    states: &mut BTreeMap<String, KeyState>,
    request: &SlotRequest,
    owner: &str,
    now: i64,
) -> SlotAnswer {
    let token = request.token.as_str();
    let late = millis(request.late);
    let last = request
        .spans
        .last()
        .map(|s| s.key.clone())
        .unwrap_or_default();
    for span in &request.spans {
        let state = states.entry(span.key.clone()).or_default();
        let per = millis(span.per);
        if state.per != per {
            state.per = per;
            state.prune(now);
        }
    }
    let instances = {
        let state = states.entry(last.clone()).or_default();
        match state.seen.iter_mut().find(|(o, _)| o == owner) {
            Some(seen) => seen.1 = now,
            None => state.seen.push((owner.to_owned(), now)),
        }
        state.seen.len()
    };
    let refused = |at: i64, key: &str| SlotAnswer {
        refused: Some(Refusal {
            ready_at: from_millis(at),
            key: key.to_owned(),
        }),
        instances,
    };
    let line = request
        .spans
        .last()
        .and_then(|s| s.line.map(|spacing| (s, millis(spacing))));
    // The narrower windows: a send one of them holds back until `at`, when the line reaches
    // beyond that, takes its place in the line now rather than come back at `at` only to join
    // it then.
    for span in &request.spans {
        if line.is_some_and(|(l, _)| std::ptr::eq(l, span)) {
            continue;
        }
        let limit = usize::try_from(span.limit).unwrap_or(usize::MAX);
        if let Some(at) = states[&span.key].full_until(limit, now, late) {
            if let Some((l, spacing)) = line {
                let state = states.get_mut(&l.key).expect("every span has a state");
                if let Some(next) = state.next_place
                    && next > at
                    && !state.line.iter().any(|(t, _)| t == token)
                {
                    state.next_place = Some(next + spacing);
                    state.line.push((token.to_owned(), next));
                    return refused(next, &l.key);
                }
            }
            return refused(at, &span.key);
        }
    }
    if let Some((l, spacing)) = line {
        let limit = usize::try_from(l.limit).unwrap_or(usize::MAX);
        let state = states.get_mut(&l.key).expect("every span has a state");
        let full = state.full_until(limit, now, late);
        let place = state.line.iter().position(|(t, _)| t == token);
        match (place, full) {
            // Its turn, or no one waiting and a place free.
            (Some(i), None) => {
                state.line.remove(i);
            }
            (None, None) if state.next_place.is_none_or(|at| at <= now) => {}
            // Back for its place, but the sends ahead took longer: it keeps it and comes back
            // when a place frees.
            (Some(_), Some(at)) => return refused(at, &l.key),
            // It joins the line.
            (None, _) => {
                let free = full.unwrap_or(now);
                let place = state.next_place.map_or(free, |next| next.max(free));
                state.next_place = Some(place + spacing);
                state.line.push((token.to_owned(), place));
                return refused(place, &l.key);
            }
        }
    }
    let flying = now.saturating_add(millis(request.hold));
    for span in &request.spans {
        if let Some(state) = states.get_mut(&span.key) {
            let until = flying.saturating_add(millis(span.per));
            state.flight.push((token.to_owned(), until));
        }
    }
    SlotAnswer {
        refused: None,
        instances,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn span(key: &str, limit: u32, per_ms: u64, line: Option<u64>) -> LimitSpan {
        LimitSpan {
            key: key.into(),
            limit,
            per: Duration::from_millis(per_ms),
            line: line.map(Duration::from_millis),
        }
    }

    fn batch(now_ms: u64, finishes: Vec<SlotFinish>, requests: Vec<SlotRequest>) -> SlotBatch {
        SlotBatch {
            owner: "a".into(),
            now: UNIX_EPOCH + Duration::from_millis(now_ms),
            finishes,
            requests,
        }
    }

    fn send(token: &str, chat: &str) -> SlotRequest {
        SlotRequest {
            token: token.into(),
            spans: vec![span(chat, 1, 1000, None), span("bot", 2, 1000, Some(500))],
            hold: Duration::from_secs(10),
            late: Duration::ZERO,
        }
    }

    fn run(states: &mut BTreeMap<String, KeyState>, b: &SlotBatch) -> Vec<Option<u64>> {
        for key in b.keys() {
            states.entry(key).or_default();
        }
        apply(states, b)
            .into_iter()
            .map(|a| {
                a.refused
                    .map(|r| r.ready_at.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64)
            })
            .collect()
    }

    fn done(token: &str, chat: &str, at_ms: u64) -> SlotFinish {
        SlotFinish {
            token: token.into(),
            keys: vec![chat.into(), "bot".into()],
            at: UNIX_EPOCH + Duration::from_millis(at_ms),
            happened: true,
        }
    }

    #[test]
    fn a_window_counts_from_finishes_and_refusals_queue_in_line() {
        let mut s = BTreeMap::new();
        let b = batch(
            10_000,
            vec![],
            vec![
                send("1", "c1"),
                send("2", "c1"),
                send("3", "c2"),
                send("4", "c3"),
                send("5", "c4"),
            ],
        );
        // c1 is full after 1; the bot is full after 3; 4 and 5 join the line 500 ms apart.
        assert_eq!(
            run(&mut s, &b),
            [None, Some(11_000), None, Some(11_000), Some(11_500)]
        );
        // Both finish at 10 100: places free at 11 100. 4 comes back at 11 000: still full.
        let b = batch(
            11_000,
            vec![done("1", "c1", 10_100), done("3", "c2", 10_100)],
            vec![send("4", "c3")],
        );
        assert_eq!(run(&mut s, &b), [Some(11_100)]);
        // A newcomer queues behind the line even when a place is free.
        let b = batch(11_100, vec![], vec![send("4", "c3"), send("6", "c5")]);
        assert_eq!(run(&mut s, &b), [None, Some(12_000)]);
        let b = batch(11_500, vec![], vec![send("5", "c4")]);
        assert_eq!(run(&mut s, &b), [None]);
        // Two in flight: the bot is full until one finishes.
        let b = batch(12_000, vec![], vec![send("6", "c5")]);
        assert_eq!(run(&mut s, &b), [Some(13_000)]);
    }

    #[test]
    fn a_send_whose_finish_never_comes_frees_its_place_after_its_hold() {
        let mut s = BTreeMap::new();
        let b = batch(0, vec![], vec![send("1", "c1")]);
        assert_eq!(run(&mut s, &b), [None]);
        let b = batch(10_999, vec![], vec![send("2", "c1")]);
        assert!(run(&mut s, &b)[0].is_some());
        let b = batch(11_000, vec![], vec![send("2", "c1")]);
        assert_eq!(run(&mut s, &b), [None]);
    }
}
