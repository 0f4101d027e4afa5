//! `[destinations.inbound]`: how a Telegram destination receives its bot's updates.

use std::fmt;
use std::time::Duration;

use ferrule_connectors::telegram::utf16_len;
use ferrule_policy::ConfigError;
use serde::{Deserialize, Serialize};

use super::Secret;

/// `[destinations.inbound]`: how a Telegram destination receives its bot's updates.
///
/// ```toml
/// [destinations.inbound]
/// mode = "webhook"                         # or "polling"
/// secret_token = "env:TG_WEBHOOK_SECRET"   # webhook mode: required
/// forward_to = "app-hook"                  # optional: a webhook destination
/// callback_answer = "Got it"               # optional text for answerCallbackQuery
/// poll_timeout = "30s"                     # polling mode: the long-poll timeout
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// `webhook` (Telegram posts to `/v1/telegram/{destination}/webhook`) or `polling` (the
    /// relay calls `getUpdates`, for bots without a public URL).
    pub mode: InboundMode,
    /// Webhook mode: the token Telegram sends in `X-Telegram-Bot-Api-Secret-Token`, set with
    /// `ferrule telegram set-webhook`; 1 to 256 of `A-Z a-z 0-9 _ -`. Inline or `env:` /
    /// `file:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_token: Option<Secret>,
    /// Another destination (a webhook) each new update is enqueued to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_to: Option<String>,
    /// The text `answerCallbackQuery` shows for a button press (default: none; the spinner
    /// just stops). At most 200 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_answer: Option<String>,
    /// Polling mode: how long one `getUpdates` waits for an update (default 30 s; whole seconds,
    /// 1 s to 5 min).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub poll_timeout: Option<Duration>,
}

/// How a Telegram destination receives updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InboundMode {
    /// Telegram posts each update to the relay.
    Webhook,
    /// The relay long-polls `getUpdates`.
    Polling,
}

impl InboundMode {
    /// The name written in `mode = "…"`.
    pub fn as_str(self) -> &'static str {
        match self {
            InboundMode::Webhook => "webhook",
            InboundMode::Polling => "polling",
        }
    }
}

/// A Telegram webhook's secret token, read from its [`Secret`]; hidden in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(String);

impl SecretToken {
    /// A token as given; the configuration checks one it reads with [`check_secret_token`].
    pub fn new(value: impl Into<String>) -> Self {
        SecretToken(value.into())
    }

    /// The token.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(***)")
    }
}

/// A destination's `[destinations.inbound]`, checked, with its secret read.
#[derive(Debug, Clone)]
pub struct ResolvedInbound {
    /// Webhook or polling.
    pub mode: InboundMode,
    /// Webhook mode: the token every update must carry.
    pub secret_token: Option<SecretToken>,
    /// The destination new updates are enqueued to.
    pub forward_to: Option<String>,
    /// The `answerCallbackQuery` text.
    pub callback_answer: Option<String>,
    /// Polling mode: the long-poll timeout.
    pub poll_timeout: Duration,
}

/// The default long-poll timeout.
pub(super) const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest long-poll timeout accepted.
pub(super) const MAX_POLL_TIMEOUT: Duration = Duration::from_secs(300);

/// Destination `i`'s `[destinations.inbound]`, checked field by field; the secret is read here.
pub(super) fn resolve_inbound(
    i: usize,
    inbound: &InboundConfig,
) -> Result<ResolvedInbound, ConfigError> {
    let at = |field: &str| format!("destinations[{i}].inbound.{field}");
    let only_for = |field: &str, mode: InboundMode| {
        ConfigError::new(
            at(field),
            format!("is used only with mode = \"{}\"", mode.as_str()),
        )
    };
    let secret_token = match (&inbound.secret_token, inbound.mode) {
        (None, InboundMode::Webhook) => {
            return Err(ConfigError::new(
                at("secret_token"),
                "is required with mode = \"webhook\": the relay accepts only updates that \
                 carry it (set it at Telegram with `ferrule telegram set-webhook`)",
            ));
        }
        (Some(_), InboundMode::Polling) => {
            return Err(only_for("secret_token", InboundMode::Webhook));
        }
        (None, InboundMode::Polling) => None,
        (Some(secret), InboundMode::Webhook) => {
            let value = secret.expose(&at("secret_token"))?;
            check_secret_token(&value).map_err(|m| ConfigError::new(at("secret_token"), m))?;
            Some(SecretToken(value))
        }
    };
    let poll_timeout = match (inbound.poll_timeout, inbound.mode) {
        (Some(_), InboundMode::Webhook) => {
            return Err(only_for("poll_timeout", InboundMode::Polling));
        }
        (None, _) => DEFAULT_POLL_TIMEOUT,
        (Some(t), InboundMode::Polling) => {
            if t.subsec_nanos() != 0 || t.is_zero() || t > MAX_POLL_TIMEOUT {
                return Err(ConfigError::new(
                    at("poll_timeout"),
                    "must be whole seconds from 1s to 5m (Telegram counts in seconds)",
                ));
            }
            t
        }
    };
    if let Some(text) = &inbound.callback_answer
        && !(1..=200).contains(&utf16_len(text))
    {
        return Err(ConfigError::new(
            at("callback_answer"),
            "must be 1 to 200 characters (leave it out to answer without a text)",
        ));
    }
    Ok(ResolvedInbound {
        mode: inbound.mode,
        secret_token,
        forward_to: inbound.forward_to.as_ref().map(|f| f.trim().to_owned()),
        callback_answer: inbound.callback_answer.clone(),
        poll_timeout,
    })
}

/// Checks a Telegram webhook secret token: 1 to 256 of `A-Z a-z 0-9 _ -`, as Telegram allows.
pub fn check_secret_token(value: &str) -> Result<(), String> {
    if !(1..=256).contains(&value.len()) {
        return Err(format!("must be 1 to 256 characters, not {}", value.len()));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("may contain only `A-Z`, `a-z`, `0-9`, `_` and `-` (Telegram's rule)".into());
    }
    Ok(())
}
