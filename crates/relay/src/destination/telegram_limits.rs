//! A Telegram bot's send limits (per chat, per group, per bot) as sliding windows over when
//! sends finished: what Telegram's flood control counts.
//!
//! Telegram answers 429 — and then holds back the whole bot — when a chat gets more than about
//! one message a second, a group more than 20 a minute, or the bot more than about 30 a second.
//! A token bucket cannot keep such a limit. After a quiet spell it admits a full burst and then
//! refills at the rate, so it lets through up to twice the limit within one window; and it
//! counts a send when it admits it, while Telegram counts it when it arrives, up to a request's
//! latency later. Measured against a fake enforcing Telegram's windows, 100 chats × 3 messages
//! drew 429s that way (docs/BENCHMARKS.md, "Telegram: 100 chats at once").
//!
//! So each limit here is a window of at most `limit` sends in any span of `per`, and a send's
//! place in it is stamped when its request *finished*: its response had come back, so the send
//! had already arrived. A send in flight holds its place until then. A send admitted at `t`
//! needs the send `limit` places before it to have finished by `t - per`; it arrives after `t`,
//! so more than `per` after that one arrived, however long either request took. No jitter or
//! latency can make the arrivals break the window.
//!
//! A refused send is deferred in the store to when the window admits one more. The bot's window
//! also keeps the order of what it refused: when it is full, every refusal at that moment
//! would get the same time, come back as a herd, and all but one be deferred again, and a send
//! that happened to come back when a place freed would overtake ones that had waited longer.
//! So a message the bot refuses is given a place in a line, `per / limit` apart (the pace the
//! bot may send at), and deferred to it; while the line reaches into the future, a new send
//! queues behind it rather than taking a place promised to a waiting one. A message that comes
//! back for its place and still finds the window full (the sends ahead of it took longer than
//! the pace assumed) keeps its place and is deferred to the instant one frees. A restart
//! forgets the line; messages then queue again in the order they come back.
//!
//! On PostgreSQL the windows (and the bot's line) are shared by every relay on the database
//! ([`share`](TelegramLimiters::share), see [`super::shared_limits`]): the same rules, kept in
//! the store, so the guarantees above hold across relays. The windows in memory then count
//! this relay's own sends, and keep the limits if the store stops answering.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use ferrule_connectors::telegram::{ChatId, ChatKind, TelegramLimits};
use ferrule_policy::rate_limit::{RateLimitConfig, RateLimited};
use ferrule_policy::{ConfigError, Context, SharedClock};
use ferrule_store::{LimitSpan, MessageId, SlotRequest};

use super::shared_limits::{HOLD_MARGIN, Mode, SharedLimits};

/// How long a place in the bot's line is kept for a message that does not come back for it.
const STALE_PLACE: Duration = Duration::from_secs(60);

/// The send limits of one Telegram bot, keyed by chat id as written (`-100123`, `@news`).
///
/// They live in memory, but a message they refuse is deferred in the store to the window's
/// `ready_at`: nothing waits in memory, and a restart only forgets the recent sends.
#[derive(Debug)]
pub struct TelegramLimiters {
    per_chat: Span,
    per_group: Span,
    per_bot: Span,
    clock: SharedClock,
    windows: Mutex<Windows>,
    shared: Option<Shared>,
}

/// Windows shared with the other relays on the store.
#[derive(Debug)]
struct Shared {
    limits: SharedLimits,
    /// The keys' prefix: `telegram:{destination}`.
    prefix: String,
    /// How long an admitted send holds its places if its finish never reaches the store.
    hold: Duration,
    /// The relays last seen sharing the bot's window (at least 1).
    instances: std::sync::atomic::AtomicUsize,
}

/// At most `limit` sends in any `per`.
#[derive(Debug, Clone, Copy)]
struct Span {
    limit: usize,
    per: Duration,
}

impl Span {
    fn of(config: &RateLimitConfig, field: &str) -> Result<Self, ConfigError> {
        config.validate().map_err(|e| e.within(field))?;
        if config.burst.is_some() {
            return Err(ConfigError::new(
                "burst",
                "does not apply: Telegram's limits are sliding windows of `limit` sends per `per`",
            )
            .within(field));
        }
        Ok(Span {
            limit: usize::try_from(config.limit).unwrap_or(usize::MAX),
            per: config.per,
        })
    }

    /// How far apart places in the line are: the window's pace when each send finishes
    /// `late` after its place. A place frees `per` after the send that held it finished, so
    /// `limit` sends take `per` plus that lateness; spacing places only `per / limit` apart
    /// would have nearly every one come back while the window is still full.
    fn spacing(&self, late: Duration) -> Duration {
        (self.per + late.min(self.per)) / u32::try_from(self.limit).unwrap_or(u32::MAX).max(1)
    }
}

#[derive(Debug, Default)]
struct Windows {
    chats: HashMap<String, Window>,
    groups: HashMap<String, Window>,
    bot: Window,
    /// The messages the bot's window refused, with the place each was given.
    line: HashMap<MessageId, Instant>,
    /// The place the next message to join the line gets (at the earliest).
    next_place: Option<Instant>,
    /// How long after its place (or, without one, its admission) a send finishes.
    lateness: Lateness,
}

/// A running estimate of how late sends finish, like TCP's round-trip estimate: a smoothed
/// mean and mean deviation, in seconds.
#[derive(Debug, Default)]
struct Lateness {
    mean: f64,
    deviation: f64,
    seen: bool,
}

impl Lateness {
    fn record(&mut self, sample: Duration) {
        let sample = sample.as_secs_f64();
        if self.seen {
            self.deviation = 0.75 * self.deviation + 0.25 * (sample - self.mean).abs();
            self.mean = 0.875 * self.mean + 0.125 * sample;
        } else {
            (self.mean, self.deviation, self.seen) = (sample, sample / 2.0, true);
        }
    }

    /// A generous estimate (mean plus four deviations), at most `cap`.
    fn margin(&self, cap: Duration) -> Duration {
        Duration::try_from_secs_f64(self.mean + 4.0 * self.deviation)
            .unwrap_or(cap)
            .min(cap)
    }
}

/// One window: when its recent sends finished, oldest first, and how many are in flight.
#[derive(Debug, Default)]
struct Window {
    finished: VecDeque<Instant>,
    in_flight: usize,
}

impl Window {
    /// Forgets sends that finished `per` or longer ago.
    fn prune(&mut self, span: Span, now: Instant) {
        while self
            .finished
            .front()
            .is_some_and(|&at| at + span.per <= now)
        {
            self.finished.pop_front();
        }
    }

    /// `None` if the window admits a send now; otherwise the earliest instant it could.
    fn full_until(&self, span: Span, now: Instant) -> Option<Instant> {
        let taken = self.finished.len() + self.in_flight;
        if taken < span.limit {
            return None;
        }
        // The place that frees first: a finished send's, `per` after it finished; a send still
        // in flight finishes no earlier than now.
        Some(
            self.finished
                .get(taken - span.limit)
                .map_or(now + span.per, |&at| at + span.per),
        )
    }

    fn idle(&self) -> bool {
        self.finished.is_empty() && self.in_flight == 0
    }

    /// The places taken at `now` (finished within `per`, or in flight), without pruning.
    fn used(&self, span: Span, now: Instant) -> usize {
        let finished = self
            .finished
            .iter()
            .filter(|&&at| at + span.per > now)
            .count();
        finished + self.in_flight
    }
}

/// What a bot's windows hold now ([`TelegramLimiters::windows`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TelegramWindows {
    /// Places taken in the bot's window: sends that finished within its span, or in flight.
    pub bot_used: usize,
    /// How many sends the bot's window holds (`limits.per_bot.limit`).
    pub bot_limit: usize,
    /// The bot's window's span, in milliseconds (`limits.per_bot.per`).
    pub bot_per_ms: u64,
    /// Chats (or groups) whose own window is full now: their next message waits.
    pub chats_waiting: usize,
    /// Messages the bot's window refused, holding a place in its line that is still ahead.
    pub line: usize,
}

impl TelegramLimiters {
    /// Limiters for `limits`, on `ctx`'s clock.
    pub fn new(limits: &TelegramLimits, ctx: &Context) -> Result<Self, ConfigError> {
        Ok(TelegramLimiters {
            per_chat: Span::of(&limits.per_chat, "limits.per_chat")?,
            per_group: Span::of(&limits.per_group, "limits.per_group")?,
            per_bot: Span::of(&limits.per_bot, "limits.per_bot")?,
            clock: ctx.clock().clone(),
            windows: Mutex::new(Windows::default()),
            shared: None,
        })
    }

    /// Shares the windows with the other relays on the store through `limits`, under keys
    /// named after `destination`; a send whose finish never reaches the store holds its
    /// places for `attempt_timeout`, [`HOLD_MARGIN`] and each window's span.
    pub fn share(&mut self, limits: SharedLimits, destination: &str, attempt_timeout: Duration) {
        self.shared = Some(Shared {
            limits,
            prefix: format!("telegram:{destination}"),
            hold: attempt_timeout + HOLD_MARGIN,
            instances: std::sync::atomic::AtomicUsize::new(1),
        });
    }

    /// Whether the windows are shared with the other relays on the store.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Admits one send of `message` to `chat`, or says when it could go and which limit
    /// refused it: in the shared windows if [shared](Self::share), else (and while the store
    /// does not answer, past a time it fails closed) in memory, like [`check`](Self::check).
    pub async fn admit(
        &self,
        chat: &ChatId,
        message: MessageId,
    ) -> Result<TelegramSend<'_>, (RateLimited, &'static str)> {
        let Some(shared) = &self.shared else {
            return self.check(chat, message);
        };
        let now = self.clock.now();
        let wall = self.clock.system_now();
        let refused = |ready_at: SystemTime, which| {
            let wait = ready_at.duration_since(wall).unwrap_or_default();
            Err((
                RateLimited {
                    wait,
                    ready_at: now + wait,
                },
                which,
            ))
        };
        let mode = match shared.limits.mode(wall) {
            Mode::Shared => {
                let request = self.request(shared, chat, message);
                let keys: Vec<String> = request.spans.iter().map(|s| s.key.clone()).collect();
                match shared.limits.ask(request).await {
                    Ok(answer) => {
                        shared.instances.store(
                            answer.instances.max(1),
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        return match answer.refused {
                            None => {
                                let mut send = self.force(chat);
                                send.shared = Some((message.to_string(), keys));
                                Ok(send)
                            }
                            Some(refusal) => {
                                let at = keys.iter().position(|k| *k == refusal.key);
                                let which = match at {
                                    Some(0) => "per chat",
                                    Some(i) if i + 1 < keys.len() => "per group",
                                    _ => "per bot",
                                };
                                refused(refusal.ready_at, which)
                            }
                        };
                    }
                    Err(_) => shared.limits.mode(self.clock.system_now()),
                }
            }
            mode => mode,
        };
        match mode {
            Mode::Local => {
                let instances = shared
                    .instances
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .max(1);
                let bot = Span {
                    limit: (self.per_bot.limit / instances).max(1),
                    per: self.per_bot.per,
                };
                self.check_within(chat, message, bot)
            }
            Mode::Closed(until) => refused(until, "shared limits unreachable"),
            // The store answered meanwhile: try again at once.
            Mode::Shared => refused(wall, "shared limits unreachable"),
        }
    }

    /// The places a send of `message` to `chat` asks for in the shared windows, narrowest
    /// first; the bot's keeps the line.
    fn request(&self, shared: &Shared, chat: &ChatId, message: MessageId) -> SlotRequest {
        let late = self.lock().lateness.margin(self.per_bot.per);
        let spacing = self.per_bot.spacing(late);
        let span = |key: String, span: Span, line: Option<Duration>| LimitSpan {
            key,
            limit: u32::try_from(span.limit).unwrap_or(u32::MAX),
            per: span.per,
            line,
        };
        let mut spans = vec![span(
            format!("{}:chat:{chat}", shared.prefix),
            self.per_chat,
            None,
        )];
        if chat.kind() == ChatKind::Group {
            spans.push(span(
                format!("{}:group:{chat}", shared.prefix),
                self.per_group,
                None,
            ));
        }
        spans.push(span(
            format!("{}:bot", shared.prefix),
            self.per_bot,
            Some(spacing),
        ));
        SlotRequest {
            token: message.to_string(),
            spans,
            hold: shared.hold,
            late,
        }
    }

    /// A place in the windows in memory without checking them: a send the shared windows
    /// admitted, counted here as this relay's own.
    fn force(&self, chat: &ChatId) -> TelegramSend<'_> {
        let key = chat.to_string();
        let group = chat.kind() == ChatKind::Group;
        let mut windows = self.lock();
        windows.chats.entry(key.clone()).or_default().in_flight += 1;
        if group {
            windows.groups.entry(key.clone()).or_default().in_flight += 1;
        }
        windows.bot.in_flight += 1;
        TelegramSend {
            limiters: self,
            chat: key,
            group,
            since: self.clock.now(),
            happened: true,
            shared: None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Windows> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one send of `message` to `chat`, or says when it could go and which limit
    /// refused it.
    ///
    /// The limits are checked narrowest first (chat, group, bot); a refused send takes no
    /// place in any window. An admitted send holds its place in each window until the returned
    /// [`TelegramSend`] is dropped, which stamps when it finished.
    pub fn check(
        &self,
        chat: &ChatId,
        message: MessageId,
    ) -> Result<TelegramSend<'_>, (RateLimited, &'static str)> {
        self.check_within(chat, message, self.per_bot)
    }

    /// [`check`](Self::check) with `per_bot` as the bot's window (a share of it, when other
    /// relays may be sending through the bot unseen).
    fn check_within(
        &self,
        chat: &ChatId,
        message: MessageId,
        per_bot: Span,
    ) -> Result<TelegramSend<'_>, (RateLimited, &'static str)> {
        let key = chat.to_string();
        let group = chat.kind() == ChatKind::Group;
        let now = self.clock.now();
        let refused = |ready_at: Instant, which| {
            let wait = ready_at.saturating_duration_since(now);
            Err((RateLimited { wait, ready_at }, which))
        };
        let mut windows = self.lock();
        let Windows {
            chats,
            groups,
            bot,
            line,
            next_place,
            lateness,
        } = &mut *windows;
        let spacing = per_bot.spacing(lateness.margin(per_bot.per));
        // A send its chat or group must hold back until `at`, when the bot's line reaches
        // beyond that: it takes its place in the line now rather than come back at `at` only
        // to join it then.
        let mut held_back = |at: Instant, which| match *next_place {
            Some(next) if next > at && !line.contains_key(&message) => {
                *next_place = Some(next + spacing);
                line.insert(message, next);
                refused(next, "per bot")
            }
            _ => refused(at, which),
        };
        let per_chat = chats.entry(key.clone()).or_default();
        per_chat.prune(self.per_chat, now);
        if let Some(at) = per_chat.full_until(self.per_chat, now) {
            return held_back(at, "per chat");
        }
        let mut per_group = None;
        if group {
            let window = groups.entry(key.clone()).or_default();
            window.prune(self.per_group, now);
            if let Some(at) = window.full_until(self.per_group, now) {
                return held_back(at, "per group");
            }
            per_group = Some(window);
        }
        bot.prune(per_bot, now);
        let full = bot.full_until(per_bot, now);
        let mut since = now;
        match (line.remove(&message), full) {
            // Its turn, or no one waiting and a place free.
            (Some(place), None) => since = place.min(now),
            (None, None) if next_place.is_none_or(|at| at <= now) => {}
            // Back for its place, but the sends ahead took longer: keep it, come back when a
            // place frees.
            (Some(place), Some(at)) => {
                line.insert(message, place);
                return refused(at, "per bot");
            }
            // Join the line.
            (None, _) => {
                let place =
                    next_place.map_or(full.unwrap_or(now), |next| next.max(full.unwrap_or(now)));
                *next_place = Some(place + spacing);
                line.insert(message, place);
                return refused(place, "per bot");
            }
        }
        per_chat.in_flight += 1;
        if let Some(window) = per_group {
            window.in_flight += 1;
        }
        bot.in_flight += 1;
        Ok(TelegramSend {
            limiters: self,
            chat: key,
            group,
            since,
            happened: true,
            shared: None,
        })
    }

    /// Stamps (or, if it did not happen, forgets) a send that held a place in each window.
    fn finish(&self, chat: &str, group: bool, since: Instant, happened: bool) {
        let now = self.clock.now();
        let mut windows = self.lock();
        let Windows {
            chats,
            groups,
            bot,
            lateness,
            ..
        } = &mut *windows;
        if happened {
            lateness.record(now.saturating_duration_since(since));
        }
        let mut places = vec![chats.get_mut(chat), Some(bot)];
        if group {
            places.push(groups.get_mut(chat));
        }
        for window in places.into_iter().flatten() {
            window.in_flight = window.in_flight.saturating_sub(1);
            if happened {
                window.finished.push_back(now);
            }
        }
    }

    /// What the windows hold now, read under their lock without changing them.
    pub fn windows(&self) -> TelegramWindows {
        let now = self.clock.now();
        let windows = self.lock();
        let full = |map: &HashMap<String, Window>, span: Span| {
            map.values()
                .filter(|w| w.used(span, now) >= span.limit)
                .count()
        };
        let chats_waiting =
            full(&windows.chats, self.per_chat) + full(&windows.groups, self.per_group);
        TelegramWindows {
            bot_used: windows.bot.used(self.per_bot, now),
            bot_limit: self.per_bot.limit,
            bot_per_ms: u64::try_from(self.per_bot.per.as_millis()).unwrap_or(u64::MAX),
            chats_waiting,
            line: windows.line.values().filter(|&&place| place > now).count(),
        }
    }

    /// Forgets chats and groups quiet for longer than their window, and places in the line
    /// a minute past (their message was cancelled, or went to another process), so the maps
    /// hold only what is recent.
    pub fn retain_recent(&self) {
        let now = self.clock.now();
        let mut windows = self.lock();
        let Windows {
            chats,
            groups,
            line,
            ..
        } = &mut *windows;
        for (map, span) in [(chats, self.per_chat), (groups, self.per_group)] {
            map.retain(|_, window| {
                window.prune(span, now);
                !window.idle()
            });
        }
        line.retain(|_, place| *place + STALE_PLACE > now);
    }
}

/// A send [`TelegramLimiters::check`] admitted. It holds its place in the chat's, the group's
/// and the bot's windows until dropped; dropping it stamps the send as finished then, so drop
/// it as soon as the request has been answered. A send that never went out is given back with
/// [`TelegramSend::not_sent`].
#[derive(Debug)]
#[must_use = "dropping it at once stamps the send as finished before it was made"]
pub struct TelegramSend<'a> {
    limiters: &'a TelegramLimiters,
    chat: String,
    group: bool,
    /// Its place in the bot's line, or when it was admitted: where its lateness counts from.
    since: Instant,
    happened: bool,
    /// In the shared windows: its token and the keys of the windows it holds places in.
    shared: Option<(String, Vec<String>)>,
}

impl TelegramSend<'_> {
    /// The send was not made after all (e.g. the bulkhead was full): frees its places without
    /// counting it.
    pub fn not_sent(mut self) {
        self.happened = false;
    }
}

impl Drop for TelegramSend<'_> {
    fn drop(&mut self) {
        self.limiters
            .finish(&self.chat, self.group, self.since, self.happened);
        if let (Some((token, keys)), Some(shared)) = (self.shared.take(), &self.limiters.shared) {
            shared.limits.finish(token, keys, self.happened);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ferrule_connectors::telegram::{ChatId, TelegramLimits};
    use ferrule_policy::rate_limit::RateLimitConfig;
    use ferrule_policy::{Clock, Context, ManualClock};

    use ferrule_store::MessageId;

    use super::TelegramLimiters;

    fn id() -> MessageId {
        MessageId::from_ulid(ulid::Ulid::new())
    }

    fn limiters(clock: &ManualClock, limits: TelegramLimits) -> TelegramLimiters {
        let ctx = Context::new("bot").with_clock(clock.shared());
        TelegramLimiters::new(&limits, &ctx).unwrap()
    }

    fn limits(per_chat: u32, per_group: u32, per_bot: u32) -> TelegramLimits {
        TelegramLimits {
            per_chat: RateLimitConfig::new(per_chat, Duration::from_secs(1)),
            per_group: RateLimitConfig::new(per_group, Duration::from_secs(60)),
            per_bot: RateLimitConfig::new(per_bot, Duration::from_secs(1)),
            ..TelegramLimits::default()
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_windows_say_the_bots_use_the_waiting_chats_and_the_line_without_changing_them() {
        let clock = ManualClock::new();
        let l = limiters(&clock, limits(1, 20, 3));
        let empty = l.windows();
        assert_eq!(
            (empty.bot_used, empty.bot_limit, empty.bot_per_ms),
            (0, 3, 1000)
        );
        assert_eq!((empty.chats_waiting, empty.line), (0, 0));
        drop(l.check(&ChatId::Id(1), id()).unwrap());
        let in_flight = l.check(&ChatId::Id(2), id()).unwrap();
        drop(l.check(&ChatId::Id(3), id()).unwrap());
        // Chat 1 is at its limit; the bot is full, so chat 4's message joins the line.
        assert!(l.check(&ChatId::Id(1), id()).is_err());
        assert!(l.check(&ChatId::Id(4), id()).is_err());
        let now = l.windows();
        assert_eq!(now.bot_used, 3, "two finished and one in flight");
        assert_eq!(
            now.chats_waiting, 3,
            "chats 1, 2 (in flight) and 3 are at their limit"
        );
        assert_eq!(now.line, 1);
        assert_eq!(l.windows(), now, "reading changes nothing");
        drop(in_flight);
        clock.advance(Duration::from_secs(2));
        let later = l.windows();
        assert_eq!((later.bot_used, later.chats_waiting, later.line), (0, 0, 0));
    }

    #[test]
    fn a_send_counts_from_when_it_finished_not_from_when_it_was_admitted() {
        let clock = ManualClock::new();
        let l = limiters(&clock, TelegramLimits::default());
        let chat = ChatId::Id(7);
        let start = clock.now();
        let send = l.check(&chat, id()).unwrap();
        // While in flight it holds the chat's place: the earliest it could free is a window
        // after now.
        let (refused, which) = l.check(&chat, id()).unwrap_err();
        assert_eq!(which, "per chat");
        assert_eq!(refused.ready_at, start + Duration::from_secs(1));
        // The request took 300 ms: the chat's next send may go a second after it finished.
        clock.advance(300 * MS);
        drop(send);
        clock.advance(900 * MS);
        let (refused, _) = l.check(&chat, id()).unwrap_err();
        assert_eq!(refused.ready_at, start + 1300 * MS);
        assert_eq!(refused.wait, 100 * MS);
        clock.advance(100 * MS);
        drop(l.check(&chat, id()).unwrap());
    }

    #[test]
    fn the_bot_admits_a_full_window_then_one_place_per_finished_send() {
        let clock = ManualClock::new();
        let l = limiters(&clock, limits(10, 20, 3));
        let start = clock.now();
        for chat in 1..=3 {
            // Each finishes as soon as it is made, 10 ms apart.
            drop(l.check(&ChatId::Id(chat), id()).unwrap());
            clock.advance(10 * MS);
        }
        let four = id();
        let (refused, which) = l.check(&ChatId::Id(4), four).unwrap_err();
        assert_eq!(which, "per bot");
        // The first send finished at +0 ms: its place frees a second later.
        assert_eq!(refused.ready_at, start + Duration::from_secs(1));
        clock.advance(refused.wait);
        drop(l.check(&ChatId::Id(4), four).unwrap());
        // Three in the window again (finished at +10, +20 and +1000 ms): the next waits at
        // least until the +10 ms one leaves it.
        let five = id();
        let (refused, _) = l.check(&ChatId::Id(5), five).unwrap_err();
        assert!(
            refused.ready_at >= start + Duration::from_millis(1010),
            "{refused:?}"
        );
        clock.advance(refused.wait);
        drop(l.check(&ChatId::Id(5), five).unwrap());
    }

    #[test]
    fn a_backlog_refused_by_the_bot_waits_in_line_at_the_bots_pace() {
        let clock = ManualClock::new();
        let l = limiters(&clock, limits(10, 20, 4));
        let start = clock.now();
        let held: Vec<_> = (1..=4)
            .map(|c| l.check(&ChatId::Id(c), id()).unwrap())
            .collect();
        let waiting: Vec<_> = (5..=8).map(|c| (ChatId::Id(c), id())).collect();
        let places: Vec<_> = waiting
            .iter()
            .map(|(chat, message)| l.check(chat, *message).unwrap_err().0.ready_at)
            .collect();
        let second = Duration::from_secs(1);
        let quarter = Duration::from_millis(250);
        assert_eq!(
            places,
            [0, 1, 2, 3].map(|k| start + second + quarter * k),
            "in line, not a herd at one instant"
        );
        // The held sends finish 20 ms after they started: their places free at +1.02 s.
        clock.advance(20 * MS);
        drop(held);
        // The first in line comes back for its place and finds the window still full: it keeps
        // its place and waits for the instant one frees.
        clock.advance(second - 20 * MS);
        let (chat, message) = &waiting[0];
        let (refused, _) = l.check(chat, *message).unwrap_err();
        assert_eq!(refused.ready_at, start + second + 20 * MS);
        clock.advance(20 * MS);
        drop(l.check(chat, *message).unwrap());
        // A newcomer finds places free but promised: it queues behind the line.
        let (refused, _) = l.check(&ChatId::Id(9), id()).unwrap_err();
        assert_eq!(refused.ready_at, start + second + quarter * 4);
        // The others are admitted at their places.
        for (k, (chat, message)) in waiting.iter().enumerate().skip(1) {
            clock.advance(start + second + quarter * k as u32 - clock.now());
            drop(l.check(chat, *message).unwrap());
        }
    }

    #[test]
    fn a_send_its_chat_holds_back_takes_its_place_in_a_busy_line() {
        let clock = ManualClock::new();
        let l = limiters(&clock, limits(1, 20, 2));
        let start = clock.now();
        drop(l.check(&ChatId::Id(1), id()).unwrap());
        drop(l.check(&ChatId::Id(2), id()).unwrap());
        let (refused, _) = l.check(&ChatId::Id(3), id()).unwrap_err();
        assert_eq!(refused.ready_at, start + Duration::from_secs(1));
        // Chat 1 may send again at +1 s, but the line is promised until +1.5 s: rather than
        // come back at +1 s only to join it, the message joins it now.
        let second = id();
        let (refused, which) = l.check(&ChatId::Id(1), second).unwrap_err();
        assert_eq!((refused.ready_at, which), (start + 1500 * MS, "per bot"));
        clock.advance(1500 * MS);
        drop(l.check(&ChatId::Id(1), second).unwrap());
    }

    #[test]
    fn places_in_the_line_make_room_for_how_late_sends_finish() {
        let clock = ManualClock::new();
        let l = limiters(&clock, limits(10, 20, 4));
        // Every send takes 100 ms to be answered.
        for round in 0..3 {
            let sends: Vec<_> = (1..=4)
                .map(|c| l.check(&ChatId::Id(c), id()).unwrap())
                .collect();
            clock.advance(100 * MS);
            drop(sends);
            if round < 2 {
                clock.advance(Duration::from_secs(1));
            }
        }
        let first = l.check(&ChatId::Id(5), id()).unwrap_err().0.ready_at;
        let second = l.check(&ChatId::Id(6), id()).unwrap_err().0.ready_at;
        // Four sends take a second plus about 100 ms: places are that quarter apart, not 250 ms.
        let gap = second - first;
        assert!(gap > 275 * MS && gap < 500 * MS, "{gap:?}");
    }

    #[test]
    fn groups_are_also_held_to_the_group_limit_and_a_send_not_made_is_not_counted() {
        let clock = ManualClock::new();
        let l = limiters(&clock, limits(100, 2, 100));
        let group: ChatId = "@news_room".parse().unwrap();
        drop(l.check(&group, id()).unwrap());
        l.check(&group, id()).unwrap().not_sent();
        drop(l.check(&group, id()).unwrap());
        let (refused, which) = l.check(&group, id()).unwrap_err();
        assert_eq!(which, "per group");
        assert_eq!(refused.wait, Duration::from_secs(60));
        // A private chat is not a group.
        for _ in 0..3 {
            drop(l.check(&ChatId::Id(5), id()).unwrap());
        }
    }

    #[test]
    fn quiet_chats_are_forgotten() {
        let clock = ManualClock::new();
        let l = limiters(&clock, TelegramLimits::default());
        drop(l.check(&ChatId::Id(1), id()).unwrap());
        drop(l.check(&ChatId::Id(-2), id()).unwrap());
        let busy = l.check(&ChatId::Id(3), id()).unwrap();
        clock.advance(Duration::from_secs(61));
        l.retain_recent();
        let windows = l.lock();
        assert_eq!(
            windows.chats.len(),
            1,
            "only the chat with a send in flight"
        );
        assert!(windows.groups.is_empty());
        drop(windows);
        drop(busy);
    }

    #[test]
    fn a_burst_setting_is_refused_naming_the_field() {
        let clock = ManualClock::new();
        let mut config = TelegramLimits::default();
        config.per_bot = config.per_bot.with_burst(5);
        let ctx = Context::new("bot").with_clock(clock.shared());
        let err = TelegramLimiters::new(&config, &ctx).unwrap_err();
        assert_eq!(err.field(), "limits.per_bot.burst");
    }
}
