//! Where alerts go: a Telegram chat or a webhook destination, and the message each gets.

use ferrule_connectors::telegram::ChatId;
use ferrule_store::NewMessage;
use serde_json::{Value, json};

use crate::config::AlertsConfig;

use super::Alert;

/// Where alerts go.
#[derive(Debug, Clone)]
pub(super) enum Target {
    /// A chat of a Telegram destination.
    Telegram {
        /// The destination name.
        destination: String,
        /// The chat.
        chat: ChatId,
    },
    /// A webhook destination.
    Webhook {
        /// The destination name.
        destination: String,
    },
}

impl Target {
    /// The targets `config` names; `config` has been validated.
    pub(super) fn all(config: &AlertsConfig) -> Vec<Target> {
        let mut targets = Vec::new();
        if let Some(t) = &config.telegram
            && let Ok(chat) = t.chat_id.parse()
        {
            targets.push(Target::Telegram {
                destination: t.destination.trim().to_owned(),
                chat,
            });
        }
        if let Some(w) = &config.webhook {
            targets.push(Target::Webhook {
                destination: w.trim().to_owned(),
            });
        }
        targets
    }

    pub(super) fn destination(&self) -> &str {
        match self {
            Target::Telegram { destination, .. } | Target::Webhook { destination } => destination,
        }
    }

    /// The message payload for `alert`: a plain-text `sendMessage` or the webhook's JSON
    /// object.
    pub(super) fn payload(&self, alert: &Alert, relay: &str) -> Value {
        match self {
            Target::Telegram { chat, .. } => {
                let chat_id = match chat {
                    ChatId::Id(id) => json!(id),
                    ChatId::Username(name) => json!(name),
                };
                json!({
                    "chat_id": chat_id,
                    "text": format!("ferrule: {} ({})\n{}", alert.kind.title(), alert.subject, alert.text),
                })
            }
            Target::Webhook { .. } => json!({
                "type": alert.kind.as_str(),
                "subject": alert.subject,
                "text": alert.text,
                "at": crate::time::rfc3339(alert.at),
                "relay": relay,
            }),
        }
    }

    /// The queued message for `alert`, with idempotency key `key`.
    pub(super) fn message(&self, alert: &Alert, relay: &str, key: &str) -> NewMessage {
        let message =
            NewMessage::new(self.destination(), self.payload(alert, relay)).idempotency_key(key);
        match self {
            // The chat orders its messages, as for a submitted Telegram message.
            Target::Telegram { chat, .. } => message.ordering_key(chat.to_string()),
            Target::Webhook { .. } => message,
        }
    }
}
