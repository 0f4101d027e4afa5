//! A Telegram destination's inbound side at run time: how updates arrive, where they are
//! forwarded, the webhook's secret (as a digest) and whether updates are coming in.

use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{HealthConfig, InboundMode, ResolvedInbound};
use crate::health::Health;

/// A Telegram destination's inbound side at run time.
#[derive(Debug)]
pub struct Inbound {
    /// Webhook or polling.
    pub mode: InboundMode,
    /// SHA-256 of the webhook's secret token: compared in constant time, and equal lengths
    /// whatever the presented token's, so neither its content nor its length leaks.
    secret_digest: Option<[u8; 32]>,
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
                .map(|t| Sha256::digest(t.expose().as_bytes()).into()),
            forward_to: config.forward_to.clone(),
            callback_answer: config.callback_answer.clone(),
            poll_timeout: config.poll_timeout,
            health: Health::new(health),
        }
    }

    /// Whether `presented` is the webhook's secret token, compared in constant time. Always
    /// false without a configured token.
    pub fn accepts_secret(&self, presented: &[u8]) -> bool {
        let Some(expected) = &self.secret_digest else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(presented).into();
        presented.ct_eq(expected).into()
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
