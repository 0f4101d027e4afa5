//! Active health checks: one cheap request that says whether a destination answers, sent on a
//! schedule by the relay and never counted as a delivery. Each connector checks what proves it
//! can deliver: a webhook receiver or an HTTP API answers a `GET` of its health URL with the
//! expected status,
//! a Telegram bot's token is accepted (`getMe`), an SMTP server greets and answers `NOOP`, a
//! GitHub token is accepted (`GET /rate_limit`, which costs no rate limit).

use std::time::Duration;

use reqwest::Url;

use crate::AnyConnector;

/// What one check is told beyond the connector itself.
#[derive(Debug, Clone)]
pub struct CheckTarget {
    /// The URL a webhook or `http` destination's check gets (required for them; other
    /// connectors know what to ask).
    pub url: Option<Url>,
    /// The status codes that pass a `GET` of `url`; empty: any 2xx.
    pub expect_status: Vec<u16>,
    /// The longest the check may take.
    pub timeout: Duration,
}

/// What a check found: `Ok` with a short note (e.g. the bot's user name), or `Err` with why it
/// failed, free of secrets.
pub type CheckResult = std::result::Result<String, String>;

impl AnyConnector {
    /// Runs one health check of this connector's dependency, bounded by `target.timeout`.
    pub async fn check(&self, target: &CheckTarget) -> CheckResult {
        let check = async {
            match self {
                AnyConnector::Webhook(webhook) => match &target.url {
                    Some(url) => webhook.check_get(url, &target.expect_status).await,
                    None => Err("no health-check url to get".to_owned()),
                },
                AnyConnector::Http(http) => match &target.url {
                    Some(url) => http.check_get(url, &target.expect_status).await,
                    None => Err("no health-check url to get".to_owned()),
                },
                AnyConnector::Telegram(telegram) => telegram
                    .get_me(target.timeout)
                    .await
                    .map(|name| format!("bot @{name}"))
                    .map_err(|e| e.to_string()),
                AnyConnector::Smtp(smtp) => smtp.check_connection().await,
                AnyConnector::Github(github) => github.check_rate_limit().await,
            }
        };
        match tokio::time::timeout(target.timeout, check).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no answer within {}",
                ferrule_policy::duration::readable(target.timeout)
            )),
        }
    }
}

/// Whether `status` passes: one of `expect`, or any 2xx when `expect` is empty.
pub(crate) fn status_passes(status: u16, expect: &[u16]) -> bool {
    if expect.is_empty() {
        (200..300).contains(&status)
    } else {
        expect.contains(&status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_2xx_passes_unless_statuses_are_given() {
        assert!(status_passes(204, &[]));
        assert!(!status_passes(301, &[]));
        assert!(!status_passes(503, &[]));
        assert!(status_passes(401, &[401, 200]));
        assert!(!status_passes(200, &[204]));
    }
}
