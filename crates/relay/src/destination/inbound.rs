//! A Telegram destination's inbound side at run time: how updates arrive, where they are
//! forwarded, the webhook's secret (as a digest) and whether updates are coming in.

use std::time::Duration;

use crate::config::{HealthConfig, InboundMode, ResolvedInbound, SecretDigest};
use crate::health::Health;

/// A Telegram destination's inbound side at run time.
#[derive(Debug)]
pub struct Inbound {
    /// Webhook or polling.
    pub mode: InboundMode,
    /// The webhook's secret token, as its digest.
    secret_digest: Option<SecretDigest>,
    /// The destination new updates are enqueued to.
    pub forward_to: Option<String>,
    /// The `answerCallbackQuery` text.
    pub callback_answer: Option<String>,
    /// Polling mode: the long-poll timeout.
    pub poll_timeout: Duration,
    /// Whether updates are coming in: getUpdates and store writes; shown in `/status`.
    pub health: Health,
}

impl Inbound {
    /// The run-time side of `config`.
    pub fn new(config: &ResolvedInbound, health: HealthConfig) -> Self {
        Inbound {
            mode: config.mode,
            secret_digest: config
                .secret_token
                .as_ref()
                .map(|t| SecretDigest::of(t.expose())),
            forward_to: config.forward_to.clone(),
            callback_answer: config.callback_answer.clone(),
            poll_timeout: config.poll_timeout,
            health: Health::new(health),
        }
    }

    /// Whether `presented` is the webhook's secret token, compared in constant time. Always
    /// false without a configured token.
    pub fn accepts_secret(&self, presented: &[u8]) -> bool {
        self.secret_digest
            .as_ref()
            .is_some_and(|digest| digest.matches(presented))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretToken;

    #[test]
    fn only_the_configured_secret_is_accepted() {
        let config = ResolvedInbound {
            mode: InboundMode::Webhook,
            secret_token: Some(SecretToken::new("s3cr3t_token-1")),
            forward_to: None,
            callback_answer: None,
            poll_timeout: Duration::from_secs(30),
        };
        let inbound = Inbound::new(&config, HealthConfig::default());
        assert!(inbound.accepts_secret(b"s3cr3t_token-1"));
        for wrong in [
            &b""[..],
            b"s3cr3t_token-",
            b"s3cr3t_token-12",
            b"S3cr3t_token-1",
        ] {
            assert!(!inbound.accepts_secret(wrong));
        }
        let without = Inbound::new(
            &ResolvedInbound {
                secret_token: None,
                mode: InboundMode::Polling,
                ..config
            },
            HealthConfig::default(),
        );
        assert!(!without.accepts_secret(b""));
        assert!(!format!("{without:?} {inbound:?}").contains("s3cr3t"));
    }
}
