//! `[alerts]`: where the relay reports its own trouble, and their checks.

use std::time::Duration;

use ferrule_connectors::telegram::ChatId;
use ferrule_policy::ConfigError;
use serde::{Deserialize, Serialize};

use super::{Config, DestinationKind, positive};

/// `[alerts]`: where the relay reports its own trouble (a breaker opening or closing, the
/// dead-letter queue passing a threshold, start-up recovery or failure, a Telegram bot's
/// rejected token). Alerts are ordinary messages to configured destinations; with neither
/// `telegram` nor `webhook` set, none are sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// A Telegram destination and the chat alerts go to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telegram: Option<TelegramAlerts>,
    /// A webhook destination alerts go to, as JSON objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Alert once when the dead-letter depth goes above this; again only after it has come
    /// back to it or below (default 100).
    pub dead_letter_threshold: u64,
    /// At most one alert of the same kind and subject per this interval; later ones are
    /// folded into one sent when it has passed (default 5 min, at least 1 s).
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// At most this many alerts per minute overall; more are dropped (default 20).
    pub max_per_minute: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            telegram: None,
            webhook: None,
            dead_letter_threshold: 100,
            min_interval: Duration::from_secs(300),
            max_per_minute: 20,
        }
    }
}

/// `[alerts] telegram = { destination = "ops-bot", chat_id = -1001234567890 }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramAlerts {
    /// The name of a `telegram` destination.
    pub destination: String,
    /// The chat: a numeric id (negative for groups and channels) or `@channelname`.
    pub chat_id: ChatRef,
}

/// A chat as written in the config: a number or an `@username`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChatRef {
    /// A numeric chat id.
    Id(i64),
    /// A public channel or supergroup, `@username`.
    Name(String),
}

impl ChatRef {
    /// The chat, checked as Telegram would; the error says why it is not one.
    pub fn parse(&self) -> Result<ChatId, String> {
        match self {
            ChatRef::Id(id) => ChatId::try_from(*id).map_err(|e| e.reason().to_owned()),
            ChatRef::Name(name) => name
                .parse()
                .map_err(|e: ferrule_connectors::telegram::PayloadError| e.reason().to_owned()),
        }
    }
}

impl Config {
    /// Checks `[alerts]`: each target names a configured destination of the right type.
    pub(super) fn validate_alerts(&self) -> Result<(), ConfigError> {
        let a = &self.alerts;
        if a.min_interval < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "alerts.min_interval",
                "must be at least 1s",
            ));
        }
        positive("alerts.max_per_minute", u64::from(a.max_per_minute))?;
        if let Some(telegram) = &a.telegram {
            self.destination_of_kind(
                "alerts.telegram.destination",
                &telegram.destination,
                DestinationKind::Telegram,
            )?;
            telegram
                .chat_id
                .parse()
                .map_err(|m| ConfigError::new("alerts.telegram.chat_id", m))?;
        }
        if let Some(webhook) = &a.webhook {
            self.destination_of_kind("alerts.webhook", webhook, DestinationKind::Webhook)?;
        }
        Ok(())
    }
}
