//! A failed start's alert, sent straight through the connectors: the store may be what failed.

use std::time::Duration;

use ferrule_connectors::telegram::TelegramConnector;
use ferrule_connectors::webhook::WebhookConnector;
use ferrule_connectors::{AnyConnector, Connector, Delivery};
use ferrule_policy::duration::millis;

use crate::config::{Config, ConnectorConfig};

use super::Alert;
use super::gate::idempotency_key;
use super::target::Target;

/// How long a failed start waits for its alert to be sent before the process exits.
pub const STARTUP_FAILURE_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends a start-up failure alert straight through the alert destinations' connectors (the
/// store may be what failed), waiting at most [`STARTUP_FAILURE_TIMEOUT`]. Logs the outcome.
pub async fn send_startup_failure(config: &Config, error: &crate::error::Error) {
    let targets = Target::all(&config.alerts);
    if targets.is_empty() {
        return;
    }
    let clock = ferrule_policy::clock::system();
    let alert = Alert::startup_failure(error, clock.system_now());
    let relay = format!("ferrule-{}", std::process::id());
    // A receiver that de-duplicates on `webhook-id` drops the repeats of a crash-restart loop.
    let id = idempotency_key(&alert, alert.at, config.alerts.min_interval);
    let Ok(destinations) = config.destinations() else {
        tracing::warn!("the destinations cannot be resolved; start-up failure alert not sent");
        return;
    };
    let sends = targets.iter().map(|target| {
        let resolved = destinations
            .iter()
            .find(|d| d.name == target.destination());
        let connector = resolved.and_then(|d| match &d.connector {
            ConnectorConfig::Webhook(c) => WebhookConnector::new(c.clone(), clock.clone())
                .ok()
                .map(AnyConnector::from),
            ConnectorConfig::Telegram(c) => TelegramConnector::new(c.clone(), clock.clone())
                .ok()
                .map(AnyConnector::from),
            ConnectorConfig::Smtp(_) | ConnectorConfig::Github(_) | ConnectorConfig::Http(_) => None,
        });
        let payload = target.payload(&alert, &relay).to_string();
        let destination = target.destination().to_owned();
        let id = id.clone();
        async move {
            let Some(connector) = connector else {
                tracing::warn!(%destination, "cannot build the alert destination; start-up failure alert not sent there");
                return;
            };
            let delivery = Delivery {
                message_id: &id,
                destination: &destination,
                payload: &payload,
                attempt: 1,
                traceparent: None,
            };
            let result = connector.deliver(&delivery).await;
            if result.outcome.is_success() {
                tracing::info!(%destination, "start-up failure alert sent");
            } else {
                tracing::warn!(%destination, detail = %result.detail, "start-up failure alert not delivered");
            }
        }
    });
    let all = futures_util::future::join_all(sends);
    if tokio::time::timeout(STARTUP_FAILURE_TIMEOUT, all)
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_ms = millis(STARTUP_FAILURE_TIMEOUT),
            "start-up failure alert timed out"
        );
    }
}
