//! [`TelegramConfig`]: one Telegram bot destination, as written in the relay's TOML.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use ferrule_policy::rate_limit::RateLimitConfig;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ConnectorError;
use crate::shared::parse_api_base;

/// The public Bot API server.
pub const DEFAULT_API_BASE: &str = "https://api.telegram.org";

/// One Telegram bot destination.
///
/// ```toml
/// bot_token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"  # resolved by the relay
/// api_base = "https://api.telegram.org"  # the default; a self-hosted Bot API server works too
/// timeout = "30s"                         # per request, the default
/// long_texts = "split"                    # or "refuse"; the default is split
/// limits.per_chat = { limit = 1, per = "1s" }
/// limits.per_group = { limit = 20, per = "60s" }
/// limits.per_bot = { limit = 30, per = "1s" }
/// ```
///
/// `Debug` and `Serialize` hide the secret part of the token: a serialised configuration is for
/// showing, not for storing.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// The bot's token, `<bot id>:<secret>`, already resolved from `env:` or `file:`.
    pub bot_token: BotToken,
    /// The Bot API server (default [`DEFAULT_API_BASE`]). `http` is accepted only for loopback
    /// hosts or with `allow_http`.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// Allow a plain-`http` `api_base` on a non-loopback host (default `false`): the token
    /// travels in the URL path, so only do this inside a trusted network.
    #[serde(default)]
    pub allow_http: bool,
    /// How long one request may take, from connecting to reading the response (default 30 s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// What to do with texts over 4096 and captions over 1024 UTF-16 code units.
    #[serde(default)]
    pub long_texts: LongTexts,
    /// The send rates Telegram tolerates; the relay enforces them durably.
    #[serde(default)]
    pub limits: TelegramLimits,
}

fn default_api_base() -> String {
    DEFAULT_API_BASE.to_owned()
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl TelegramConfig {
    /// A configuration for `bot_token` with every other field at its default.
    pub fn new(bot_token: BotToken) -> Self {
        TelegramConfig {
            bot_token,
            api_base: default_api_base(),
            allow_http: false,
            timeout: default_timeout(),
            long_texts: LongTexts::default(),
            limits: TelegramLimits::default(),
        }
    }

    /// Checks every field; the error names the one at fault.
    ///
    /// Refuses an `api_base` that does not parse, is not `http`/`https`, has a query or
    /// fragment, or is plain `http` on a non-loopback host without `allow_http`; a zero
    /// timeout; and invalid rate limits.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        self.parse_api_base().map(drop)
    }

    /// Validates and returns the API base without a trailing `/`.
    pub(super) fn parse_api_base(&self) -> Result<String, ConnectorError> {
        let api_base = parse_api_base(&self.api_base, self.allow_http, "the bot token")?;
        if self.timeout.is_zero() {
            return Err(ConnectorError::invalid("timeout", "must be more than zero"));
        }
        self.limits.validate()?;
        Ok(api_base)
    }
}

impl fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramConfig")
            .field("bot_token", &self.bot_token)
            .field("api_base", &self.api_base)
            .field("allow_http", &self.allow_http)
            .field("timeout", &self.timeout)
            .field("long_texts", &self.long_texts)
            .field("limits", &self.limits)
            .finish()
    }
}

/// What to do with a text or caption over Telegram's limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LongTexts {
    /// Split it into ordered parts on paragraph, line or word boundaries (the default).
    #[default]
    Split,
    /// Refuse the payload at submit time.
    Refuse,
}

/// The send rates of one bot: every chat is limited by `per_chat`, groups and channels also by
/// `per_group`, and all sends together by `per_bot`.
///
/// Each is a sliding window, as Telegram counts: at most `limit` sends in any span of `per`.
/// `burst` does not apply and is refused.
///
/// The connector does not enforce them (it holds no state between attempts); the relay does,
/// durably, keyed by [`ChatId`](super::ChatId) and [`ChatKind`](super::ChatKind).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelegramLimits {
    /// Sends to one chat (default 1 per second).
    pub per_chat: RateLimitConfig,
    /// Sends to one group or channel (default 20 per minute).
    pub per_group: RateLimitConfig,
    /// Sends of the whole bot (default 30 per second).
    pub per_bot: RateLimitConfig,
    /// On a PostgreSQL store, whether these windows are shared by every relay on the database
    /// (default `true`): Telegram counts them per bot, however many relays send through it.
    /// `false` keeps them per process. A SQLite store has one relay: they are in memory.
    pub shared: bool,
}

impl Default for TelegramLimits {
    fn default() -> Self {
        TelegramLimits {
            per_chat: RateLimitConfig::new(1, Duration::from_secs(1)),
            per_group: RateLimitConfig::new(20, Duration::from_secs(60)),
            per_bot: RateLimitConfig::new(30, Duration::from_secs(1)),
            shared: true,
        }
    }
}

impl TelegramLimits {
    /// Checks each limit; the error names it, e.g. `limits.per_chat.limit`.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        for (name, limit) in [
            ("per_chat", &self.per_chat),
            ("per_group", &self.per_group),
            ("per_bot", &self.per_bot),
        ] {
            limit.validate().map_err(|e| {
                ConnectorError::invalid(
                    format!("limits.{name}.{}", e.field()),
                    e.message().to_owned(),
                )
            })?;
            if limit.burst.is_some() {
                return Err(ConnectorError::invalid(
                    format!("limits.{name}.burst"),
                    "does not apply: Telegram's limits are sliding windows of `limit` sends \
                     per `per`",
                ));
            }
        }
        Ok(())
    }
}

/// How a token is shown in `Debug`, `Serialize` and error text.
const REDACTED: &str = "***";

/// A bot token, `<bot id>:<secret>` as BotFather issues it.
///
/// Parsing checks the shape (digits, a colon, then letters, digits, `_` or `-`); `Debug` and
/// `Serialize` show only the bot id, and there is deliberately no `Display`.
///
/// ```
/// use ferrule_connectors::telegram::BotToken;
///
/// let token: BotToken = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw".parse()?;
/// assert_eq!(format!("{token:?}"), "BotToken(123456789:***)");
/// assert_eq!(token.bot_id(), 123456789);
/// assert!("AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw".parse::<BotToken>().is_err());
/// # Ok::<(), ferrule_connectors::ConnectorError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BotToken {
    token: String,
    bot_id: u64,
}

impl BotToken {
    /// The bot's numeric id: the part before the colon, which is not secret.
    pub fn bot_id(&self) -> u64 {
        self.bot_id
    }

    /// The whole token, for building request URLs.
    pub(super) fn expose(&self) -> &str {
        &self.token
    }

    /// `text` with every occurrence of the token's secret replaced by `***`.
    pub(super) fn scrub(&self, text: &str) -> String {
        match self.token.split_once(':') {
            Some((_, secret)) if !secret.is_empty() => text.replace(secret, REDACTED),
            _ => text.to_owned(),
        }
    }
}

fn token_error(reason: &'static str) -> ConnectorError {
    ConnectorError::InvalidSecret {
        field: "bot_token".into(),
        reason: reason.into(),
    }
}

impl FromStr for BotToken {
    type Err = ConnectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, secret) = s
            .split_once(':')
            .ok_or_else(|| token_error("must look like `<bot id>:<secret>`"))?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(token_error(
                "the part before `:` must be the bot's numeric id",
            ));
        }
        let bot_id = id
            .parse()
            .map_err(|_| token_error("the bot id is too large"))?;
        if secret.is_empty()
            || !secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(token_error(
                "the part after `:` must be letters, digits, `_` or `-`",
            ));
        }
        Ok(BotToken {
            token: s.to_owned(),
            bot_id,
        })
    }
}

impl fmt::Debug for BotToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BotToken({}:{REDACTED})", self.bot_id)
    }
}

impl Serialize for BotToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{}:{REDACTED}", self.bot_id))
    }
}

impl<'de> Deserialize<'de> for BotToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
