//! `type = "http"` destinations: an HTTP API's connector (base URL, injected headers with
//! their secrets read, classifier, body limits) and how it serves proxied calls (fallbacks,
//! deadline, retries with a budget).

use std::collections::BTreeMap;
use std::time::Duration;

use ferrule_connectors::http::{DEFAULT_MAX_BODY, HttpConfig};
use ferrule_policy::ConfigError;
use ferrule_policy::classify::ProviderClassifierConfig;
use ferrule_policy::retry::{Backoff, BudgetConfig, Jitter, RetryConfig};

use super::defaults::overlay;
use super::destinations::{ConnectorConfig, ConnectorParts, DestinationConfig, connector_error};
use super::{ResolvedDestination, Secret};

/// How an `http` destination serves `ANY /v1/proxy/{destination}/{*path}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    /// Other `http` destinations to try, in order, when this one's circuit is open or its
    /// retries are spent.
    pub fallback: Vec<String>,
    /// The overall deadline of one proxied call.
    pub deadline: Duration,
    /// The retries of one proxied call on this destination (attempts, backoff, budget).
    pub retry: RetryConfig,
}

/// The default overall deadline of a proxied call.
pub(super) const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// The retries of a proxied call unless `proxy_retry` says otherwise: as the OpenAI SDK
/// (three attempts, 0.5 s doubling to 8 s), with a budget so that an outage does not multiply
/// the load (0.2 retries per success over 10 s, plus 5 per second).
pub(super) fn default_proxy_retry() -> RetryConfig {
    RetryConfig {
        max_attempts: 3,
        max_elapsed: None,
        backoff: Backoff::Exponential {
            base: Duration::from_millis(500),
            multiplier: 2.0,
            cap: Duration::from_secs(8),
        },
        jitter: Jitter::Full,
        max_retry_after: Duration::from_secs(60),
        budget: Some(BudgetConfig {
            retries_per_success: 0.2,
            min_per_second: 5,
            ttl: Duration::from_secs(10),
        }),
    }
}

/// Destination `i` as an HTTP API; header values' secrets are read here and never shown.
pub(super) fn http_connector(
    i: usize,
    dest: &DestinationConfig,
    timeout: Duration,
) -> Result<ConnectorParts, ConfigError> {
    let at = |field: &str| format!("destinations[{i}].{field}");
    let Some(base_url) = &dest.base_url else {
        return Err(ConfigError::new(
            at("base_url"),
            "is required for an http destination",
        ));
    };
    let mut headers = BTreeMap::new();
    for (name, value) in &dest.headers {
        headers.insert(
            name.clone(),
            header_value(value, &at(&format!("headers.{name}")))?,
        );
    }
    let mut classifier = ProviderClassifierConfig {
        provider: dest.classifier.unwrap_or_default(),
        ..ProviderClassifierConfig::default()
    };
    if let Some(max) = dest.max_retry_after {
        classifier.max_retry_after = max;
    }
    let config = HttpConfig {
        base_url: base_url.clone(),
        headers,
        allow_private: dest.allow_private,
        timeout,
        classifier,
        retry_post: dest.retry_post.unwrap_or(false),
        max_retry_body: dest.max_retry_body.unwrap_or(DEFAULT_MAX_BODY),
        max_response_body: dest.max_response_body.unwrap_or(DEFAULT_MAX_BODY),
    };
    config.validate().map_err(|e| {
        let e = connector_error(i, e);
        match e.field().strip_suffix(".classifier.max_retry_after") {
            Some(prefix) => {
                ConfigError::new(format!("{prefix}.max_retry_after"), e.message().to_owned())
            }
            None => e,
        }
    })?;
    Ok((base_url.clone(), None, ConnectorConfig::Http(config)))
}

/// A header value with its last word read as a secret when it is `env:VAR` or `file:/path`
/// (`"Bearer env:OPENAI_API_KEY"`, `"env:ANTHROPIC_API_KEY"`); other values as written.
fn header_value(value: &str, field: &str) -> Result<String, ConfigError> {
    let (prefix, last) = match value.rsplit_once(' ') {
        Some((prefix, last)) => (Some(prefix), last),
        None => (None, value),
    };
    let secret = Secret::new(last);
    if !secret.is_reference() {
        return Ok(value.to_owned());
    }
    let read = secret.expose(field)?;
    Ok(match prefix {
        Some(prefix) => format!("{prefix} {read}"),
        None => read,
    })
}

/// Destination `i`'s proxy settings: its `proxy_retry` over [`default_proxy_retry`], its
/// deadline and fallbacks.
pub(super) fn proxy_settings(
    i: usize,
    dest: &DestinationConfig,
) -> Result<ProxySettings, ConfigError> {
    let at = |field: &str| format!("destinations[{i}].{field}");
    let retry: RetryConfig = overlay(
        &default_proxy_retry(),
        dest.proxy_retry.as_ref(),
        &at("proxy_retry"),
    )?;
    retry.validate().map_err(|e| e.within(&at("proxy_retry")))?;
    let deadline = dest.deadline.unwrap_or(DEFAULT_DEADLINE);
    if deadline.is_zero() {
        return Err(ConfigError::new(at("deadline"), "must be longer than zero"));
    }
    Ok(ProxySettings {
        fallback: dest.fallback.iter().map(|f| f.trim().to_owned()).collect(),
        deadline,
        retry,
    })
}

/// Checks every `fallback`: other `http` destinations, each named once.
pub(super) fn check_fallbacks(resolved: &[ResolvedDestination]) -> Result<(), ConfigError> {
    for (i, dest) in resolved.iter().enumerate() {
        let Some(proxy) = &dest.proxy else { continue };
        for (j, target) in proxy.fallback.iter().enumerate() {
            let field = format!("destinations[{i}].fallback[{j}]");
            if *target == dest.name {
                return Err(ConfigError::new(
                    field,
                    "must name another destination, not this one",
                ));
            }
            if proxy.fallback[..j].contains(target) {
                return Err(ConfigError::new(
                    field,
                    format!("`{target}` is listed twice"),
                ));
            }
            match resolved.iter().find(|d| d.name == *target) {
                None => {
                    return Err(ConfigError::new(
                        field,
                        format!("no destination is named `{target}`"),
                    ));
                }
                Some(d) if !matches!(d.connector, ConnectorConfig::Http(_)) => {
                    return Err(ConfigError::new(
                        field,
                        format!("`{target}` is not an http destination"),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}
