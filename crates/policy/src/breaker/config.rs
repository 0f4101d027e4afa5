//! The circuit breaker's serde configuration and its validation.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{ConfigError, ensure, ensure_ratio};

/// Largest count window: one byte per slot, so at most 1 MB per breaker.
pub(crate) const MAX_WINDOW_CALLS: u32 = 1_000_000;
/// Largest number of time-window buckets (each record sums them, so keep it small).
pub(crate) const MAX_BUCKETS: u32 = 10_000;
/// Largest `half_open_probes` and `half_open_successes` (they share the atomic state word).
pub(crate) const MAX_PROBES: u32 = 10_000;

/// The sliding window the failure and slow-call rates are computed over.
///
/// In TOML: `window = { count = 50 }` (the last 50 calls) or
/// `window = { time = "60s", buckets = 12 }` (the last minute, in twelve 5-second buckets;
/// `buckets` defaults to 10).
///
/// ```
/// use std::time::Duration;
/// use ferrule_policy::breaker::{BreakerConfig, Window};
///
/// let config: BreakerConfig = toml::from_str(r#"window = { time = "60s", buckets = 12 }"#).unwrap();
/// assert_eq!(config.window, Window::Time { duration: Duration::from_secs(60), buckets: 12 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WindowRepr", into = "WindowRepr")]
pub enum Window {
    /// The last `n` recorded calls.
    Count(u32),
    /// The calls recorded during the last `duration`, kept in `buckets` buckets of
    /// `duration / buckets` each; a whole bucket expires at once as the clock moves.
    Time {
        /// How far back the window reaches.
        duration: Duration,
        /// How many buckets the window is split into (at least 1, at most one per millisecond).
        buckets: u32,
    },
}

impl Default for Window {
    fn default() -> Self {
        Window::Count(100)
    }
}

/// Default number of buckets of a time window written without `buckets`.
const DEFAULT_BUCKETS: u32 = 10;

/// The TOML/JSON shape of [`Window`]: exactly one of `count` or `time` (+ optional `buckets`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    count: Option<u32>,
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    buckets: Option<u32>,
}

impl TryFrom<WindowRepr> for Window {
    type Error = String;

    fn try_from(repr: WindowRepr) -> Result<Self, String> {
        match (repr.count, repr.time, repr.buckets) {
            (Some(n), None, None) => Ok(Window::Count(n)),
            (None, Some(duration), buckets) => Ok(Window::Time {
                duration,
                buckets: buckets.unwrap_or(DEFAULT_BUCKETS),
            }),
            (Some(_), None, Some(_)) => Err("`buckets` only applies to a time window".into()),
            (Some(_), Some(_), _) => Err("a window has either `count` or `time`, not both".into()),
            (None, None, _) => Err(
                "a window needs `count = N` or `time = \"60s\"` (with optional `buckets`)".into(),
            ),
        }
    }
}

impl From<Window> for WindowRepr {
    fn from(window: Window) -> Self {
        match window {
            Window::Count(n) => WindowRepr {
                count: Some(n),
                time: None,
                buckets: None,
            },
            Window::Time { duration, buckets } => WindowRepr {
                count: None,
                time: Some(duration),
                buckets: Some(buckets),
            },
        }
    }
}

/// Configuration of a [`CircuitBreaker`](super::CircuitBreaker).
///
/// Every field has a default, so a TOML table only names what it changes:
///
/// ```
/// use std::time::Duration;
/// use ferrule_policy::breaker::{BreakerConfig, Window};
///
/// let config: BreakerConfig = toml::from_str(r#"
///     window = { count = 50 }
///     failure_rate = 0.6
///     open_for = "1m"
///     open_backoff = 2.0
///     max_open_for = "10m"
///     slow_call_duration = "off"
/// "#).unwrap();
/// config.validate().unwrap();
/// assert_eq!(config.window, Window::Count(50));
/// assert_eq!(config.slow_call_duration, None);
/// assert_eq!(config.open_for, Duration::from_secs(60));
/// ```
///
/// The same in code:
///
/// ```
/// use std::time::Duration;
/// use ferrule_policy::breaker::{BreakerConfig, Window};
///
/// let config = BreakerConfig {
///     window: Window::Count(50),
///     failure_rate: 0.6,
///     open_for: Duration::from_secs(60),
///     ..BreakerConfig::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// The sliding window the rates are computed over (default: the last 100 calls).
    pub window: Window,
    /// The rates are only judged once the window holds at least this many calls (default 10).
    /// For a count window it must not exceed the window's size.
    pub min_calls: u32,
    /// Open when the share of failed calls in the window reaches this (0..=1, default 0.5).
    /// At least one failure is always needed, so `0.0` means "any failure".
    pub failure_rate: f64,
    /// Open when the share of slow calls in the window reaches this (0..=1, default 1.0: only
    /// when every call is slow). At least one slow call is always needed.
    pub slow_call_rate: f64,
    /// A call taking at least this long is slow (default 10 s). `None` (in TOML: `"off"`)
    /// turns slow-call tracking off, which also spares the clock reads that time each call.
    ///
    /// A threshold of 1 s or more is timed on the system clock's coarse time (one relaxed
    /// load per read, refreshed every 10 ms), so the verdict is right to within 10 ms
    /// (0.1 % of the default); shorter thresholds are timed with the exact clock.
    ///
    /// A slow success counts as a slow call, not as a failure. In half-open, though, a slow
    /// probe re-opens the circuit like a failed one: a dependency that still answers slowly
    /// has not recovered.
    #[serde(with = "off_or_duration")]
    pub slow_call_duration: Option<Duration>,
    /// Open after this many failures in a row while closed, whatever the window says
    /// (default `None`: off). Must be at least 1 when set.
    pub consecutive_failures: Option<u32>,
    /// How long the circuit stays open before admitting probes (default 30 s; must be > 0).
    /// The end is checked on the clock's coarse time: the first probe may come up to 10 ms
    /// after it with the system clock, never before.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// Each time a probe fails, the open wait is multiplied by this (≥ 1.0, default 1.0: no
    /// growth). The wait returns to `open_for` when the circuit closes.
    pub open_backoff: f64,
    /// Cap on the growing open wait (default `None`: no cap). At least `open_for` when set.
    #[serde(with = "humantime_serde::option")]
    pub max_open_for: Option<Duration>,
    /// How many probe calls half-open admits at once (default 1, at most 10 000).
    pub half_open_probes: u32,
    /// How many successful probes close the circuit (default 1, at most 10 000).
    pub half_open_successes: u32,
    /// Whether an [`Outcome::Permanent`](crate::Outcome::Permanent) counts as a failure
    /// (default `false`).
    ///
    /// A permanent error is usually the request's fault, not the dependency's: a 400 "chat not
    /// found" or 403 "bot blocked" proves Telegram is up and answering. Counting those would let
    /// a batch of bad recipients open the circuit for everyone, so by default a permanent
    /// outcome counts as a successful call (the dependency answered). Set `true` when the
    /// classifier uses `Permanent` for real outages.
    pub permanent_is_failure: bool,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: Window::default(),
            min_calls: 10,
            failure_rate: 0.5,
            slow_call_rate: 1.0,
            slow_call_duration: Some(Duration::from_secs(10)),
            consecutive_failures: None,
            open_for: Duration::from_secs(30),
            open_backoff: 1.0,
            max_open_for: None,
            half_open_probes: 1,
            half_open_successes: 1,
            permanent_is_failure: false,
        }
    }
}

impl BreakerConfig {
    /// Checks every field and the rules between them; the error names the field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.window {
            Window::Count(n) => {
                ensure(n >= 1, "window.count", "must be at least 1")?;
                ensure(
                    n <= MAX_WINDOW_CALLS,
                    "window.count",
                    "must be at most 1000000",
                )?;
                ensure(
                    self.min_calls <= n,
                    "min_calls",
                    "must not exceed the window's `count` (the window could never hold that many calls)",
                )?;
            }
            Window::Time { duration, buckets } => {
                ensure(
                    !duration.is_zero(),
                    "window.time",
                    "must be greater than zero",
                )?;
                ensure(buckets >= 1, "window.buckets", "must be at least 1")?;
                ensure(
                    buckets <= MAX_BUCKETS,
                    "window.buckets",
                    "must be at most 10000",
                )?;
                ensure(
                    u128::from(buckets) <= duration.as_millis(),
                    "window.buckets",
                    "must not exceed the window's duration in milliseconds (buckets are at least 1 ms)",
                )?;
            }
        }
        ensure(self.min_calls >= 1, "min_calls", "must be at least 1")?;
        ensure_ratio(self.failure_rate, "failure_rate", 0.0, 1.0)?;
        ensure_ratio(self.slow_call_rate, "slow_call_rate", 0.0, 1.0)?;
        if let Some(slow) = self.slow_call_duration {
            ensure(
                !slow.is_zero(),
                "slow_call_duration",
                "must be greater than zero (use \"off\" to disable slow-call tracking)",
            )?;
        }
        if let Some(n) = self.consecutive_failures {
            ensure(n >= 1, "consecutive_failures", "must be at least 1")?;
        }
        ensure(
            !self.open_for.is_zero(),
            "open_for",
            "must be greater than zero",
        )?;
        ensure(
            self.open_backoff.is_finite() && self.open_backoff >= 1.0,
            "open_backoff",
            "must be a finite number of at least 1.0",
        )?;
        if let Some(max) = self.max_open_for {
            ensure(
                max >= self.open_for,
                "max_open_for",
                "must be at least `open_for`",
            )?;
        }
        ensure(
            self.half_open_probes >= 1,
            "half_open_probes",
            "must be at least 1",
        )?;
        ensure(
            self.half_open_probes <= MAX_PROBES,
            "half_open_probes",
            "must be at most 10000",
        )?;
        ensure(
            self.half_open_successes >= 1,
            "half_open_successes",
            "must be at least 1",
        )?;
        ensure(
            self.half_open_successes <= MAX_PROBES,
            "half_open_successes",
            "must be at most 10000",
        )?;
        Ok(())
    }
}

/// `Option<Duration>` as a humane string, with `"off"` for `None` (TOML has no null).
mod off_or_duration {
    use super::*;

    const OFF: &str = "off";

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => humantime_serde::serialize(d, s),
            None => s.serialize_str(OFF),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        match text.as_deref().map(str::trim) {
            None => Ok(None),
            Some(t) if t.eq_ignore_ascii_case(OFF) || t.eq_ignore_ascii_case("none") => Ok(None),
            Some(t) => humantime_serde::re::humantime::parse_duration(t)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}
