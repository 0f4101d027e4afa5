//! [`AnyConnector`]: one type for every kind of connector.

use crate::github::GithubConnector;
use crate::http::HttpConnector;
use crate::smtp::SmtpConnector;
use crate::telegram::TelegramConnector;
use crate::webhook::WebhookConnector;
use crate::{Connector, Delivery, DeliveryResult};

/// Any connector ferrule has, so the relay can keep one map from destination to connector.
///
/// [`Connector`] is not object-safe (it returns `impl Future`); this enum is the static
/// alternative to a `Box<dyn Connector>`. New kinds of connector become new variants, so match
/// on it with a wildcard arm.
#[derive(Debug, Clone)]
#[non_exhaustive]
// One value per destination, built once and held in a map: its size does not matter, and
// boxing a variant would cost every delivery an indirection for nothing.
#[allow(clippy::large_enum_variant)]
pub enum AnyConnector {
    /// An HTTP webhook, signed the Standard Webhooks way.
    Webhook(WebhookConnector),
    /// An SMTP server, one e-mail per message.
    Smtp(SmtpConnector),
    /// A Telegram bot.
    Telegram(TelegramConnector),
    /// A GitHub token acting on pull requests.
    Github(GithubConnector),
    /// An HTTP API called on a client's behalf (queued calls; the relay's proxy too).
    Http(HttpConnector),
}

impl Connector for AnyConnector {
    async fn deliver(&self, delivery: &Delivery<'_>) -> DeliveryResult {
        match self {
            AnyConnector::Webhook(webhook) => webhook.deliver(delivery).await,
            AnyConnector::Smtp(smtp) => smtp.deliver(delivery).await,
            AnyConnector::Telegram(telegram) => telegram.deliver(delivery).await,
            AnyConnector::Github(github) => github.deliver(delivery).await,
            AnyConnector::Http(http) => http.deliver(delivery).await,
        }
    }
}

impl From<WebhookConnector> for AnyConnector {
    fn from(webhook: WebhookConnector) -> Self {
        AnyConnector::Webhook(webhook)
    }
}

impl From<SmtpConnector> for AnyConnector {
    fn from(smtp: SmtpConnector) -> Self {
        AnyConnector::Smtp(smtp)
    }
}

impl From<TelegramConnector> for AnyConnector {
    fn from(telegram: TelegramConnector) -> Self {
        AnyConnector::Telegram(telegram)
    }
}

impl From<GithubConnector> for AnyConnector {
    fn from(github: GithubConnector) -> Self {
        AnyConnector::Github(github)
    }
}

impl From<HttpConnector> for AnyConnector {
    fn from(http: HttpConnector) -> Self {
        AnyConnector::Http(http)
    }
}
