//! `[[destinations]]`: each destination as written, and resolved against `[defaults]` into
//! its connector's configuration, with its secrets read.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ferrule_connectors::github::{GithubConfig, GithubToken, SecondaryLimit};
use ferrule_connectors::http::HttpConfig;
use ferrule_connectors::smtp::{SmtpConfig, SmtpPassword, SmtpPoolConfig, TlsMode};
use ferrule_connectors::telegram::{BotToken, LongTexts, TelegramConfig, TelegramLimits};
use ferrule_connectors::webhook::{WebhookConfig, WebhookSecret};
use ferrule_policy::ConfigError;
use ferrule_policy::breaker::BreakerConfig;
use ferrule_policy::bulkhead::BulkheadConfig;
use ferrule_policy::chaos::ChaosConfig;
use ferrule_policy::classify::Provider;
use ferrule_policy::rate_limit::RateLimitConfig;
use ferrule_policy::retry::RetryConfig;
use serde::{Deserialize, Serialize};

use super::defaults::overlay;
use super::health_check::HealthCheckConfig;
use super::http::{ProxySettings, http_connector, proxy_settings};
use super::secret::{show_endpoint, show_header_values, show_optional_endpoint};
use super::telegram_inbound::resolve_inbound;
use super::{Config, InboundConfig, PolicyDefaults, ResolvedInbound, Secret, redact_url};

/// The kind of a destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    /// An HTTP endpoint receiving Standard Webhooks.
    #[default]
    Webhook,
    /// A Telegram bot sending to chats.
    Telegram,
    /// An SMTP server sending e-mail.
    Smtp,
    /// A GitHub token acting on pull requests.
    Github,
    /// An HTTP API called through the proxy or by queued calls.
    Http,
}

impl DestinationKind {
    /// The name written in `type = "…"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Webhook => "webhook",
            DestinationKind::Telegram => "telegram",
            DestinationKind::Smtp => "smtp",
            DestinationKind::Github => "github",
            DestinationKind::Http => "http",
        }
    }
}

/// One `[[destinations]]` entry. Policy tables override `[defaults]` field by field.
///
/// The connector's fields sit next to the policies, flat: `url`, `secret`, `unsigned`,
/// `allow_private`, `headers` and `any_json` for webhooks; `bot_token`, `api_base`, `allow_http`, `long_texts`, `limits` and
/// `inbound` for Telegram; `host`, `port`, `tls`, `tls_root_ca`, `username`, `password`, `from`,
/// `message_id_domain`, `hello_name` and `pool` for SMTP; `token`, `api_base`, `allow_http`,
/// `user_agent`, `login`, `min_write_interval` and `secondary_limit` for GitHub. A field of
/// another type is refused by `validate()`.
///
/// `Debug` shows what `config check` shows: the URL, header values and secrets redacted.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// The name messages are submitted to.
    pub name: String,
    /// `webhook`, `telegram`, `smtp`, `github` or `http`.
    #[serde(rename = "type")]
    pub kind: DestinationKind,
    /// Webhook: the endpoint URL (http or https); shown as [`redact_url`](super::redact_url)
    /// shows it.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        serialize_with = "show_endpoint"
    )]
    pub url: String,
    /// The Standard Webhooks secret (`whsec_…`), inline or `env:VAR` / `file:/path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// Webhook: send unsigned requests on purpose. Without a `secret` and without this, the
    /// relay warns at start and in `config check`; with a `secret`, it is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsigned: bool,
    /// Allow loopback, private and link-local targets (default false: SSRF guard).
    #[serde(default)]
    pub allow_private: bool,
    /// Per-attempt timeout (default `[defaults] timeout`); for GitHub, per request, and an
    /// attempt may take [`GITHUB_REQUESTS_PER_ATTEMPT`] times as long.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Extra HTTP headers sent with every attempt; their values are shown as `***`.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        serialize_with = "show_header_values"
    )]
    pub headers: BTreeMap<String, String>,
    /// Webhook: accept any JSON value as a payload, `null`, strings and numbers included
    /// (default false: an object or an array, anything else is refused at submit with 422).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any_json: Option<bool>,
    /// Retry override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<serde_json::Value>,
    /// Circuit breaker override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<serde_json::Value>,
    /// Rate limit override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<serde_json::Value>,
    /// Bulkhead override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulkhead: Option<serde_json::Value>,
    /// Chaos override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chaos: Option<serde_json::Value>,
    /// Telegram: the bot token `<bot id>:<secret>`, inline or `env:VAR` / `file:/path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_token: Option<Secret>,
    /// Telegram: the Bot API server (default `https://api.telegram.org`). GitHub: the REST API
    /// (default `https://api.github.com`; GitHub Enterprise Server: `https://HOST/api/v3`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "show_optional_endpoint"
    )]
    pub api_base: Option<String>,
    /// Telegram, GitHub: allow a plain-http `api_base` on a non-loopback host (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_http: Option<bool>,
    /// Telegram: `split` (the default) or `refuse` texts over Telegram's limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_texts: Option<LongTexts>,
    /// Telegram: `per_chat`, `per_group`, `per_bot` send rates, each overriding the default
    /// (1/s, 20/min, 30/s) field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<serde_json::Value>,
    /// SMTP: the server's host name or address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// SMTP: the server's port (default by `tls`: 25, 587 or 465).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// SMTP: `none`, `starttls` (the default) or `tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsMode>,
    /// SMTP: a PEM file of CA certificates to trust besides the platform's, for a server with
    /// a certificate from a private CA. Read and checked when the configuration is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_root_ca: Option<PathBuf>,
    /// SMTP: the user to authenticate as; needs `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// SMTP: the password, inline or `env:VAR` / `file:/path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// SMTP: the sender mailbox, e.g. `ferrule <relay@example.com>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// SMTP: the domain of generated `Message-ID`s (default: the domain of `from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id_domain: Option<String>,
    /// SMTP: the `EHLO` name (default: `message_id_domain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hello_name: Option<String>,
    /// SMTP: the connection pool (`max_size`, `idle_timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<SmtpPoolConfig>,
    /// GitHub: the token (a personal access token, fine-grained or classic, or an app's
    /// installation token), inline or `env:VAR` / `file:/path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// GitHub: the `User-Agent` of every request (default `ferrule/<version>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// GitHub: the token's account, for a token that cannot call `GET /user` (an app's
    /// installation token acts as `APP-NAME[bot]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    /// GitHub: the least time between one write with the token finishing and the next
    /// starting (default 1 s).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_write_interval: Option<Duration>,
    /// GitHub: on a PostgreSQL store, whether the token's write pace is kept for every relay
    /// on the database together (default true), or per process (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_pace: Option<bool>,
    /// GitHub: the wait after a secondary rate limit (`first_wait`, `max_wait`, `max_tries`),
    /// each overriding the default (60 s, 30 min, 6) field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_limit: Option<serde_json::Value>,
    /// Telegram: how the bot receives updates (`[destinations.inbound]`); absent: it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<InboundConfig>,
    /// An active health check (`[destinations.health_check]`); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckConfig>,
    /// HTTP: the API's base URL; a call's path is appended to it. `headers` are injected into
    /// every request (a value's last word may be `env:VAR` or `file:/path`, e.g.
    /// `"Bearer env:OPENAI_API_KEY"`), and `allow_private` lifts the SSRF guard.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "show_optional_endpoint"
    )]
    pub base_url: Option<String>,
    /// HTTP: how answers are classified: `generic` (the default), `openai` or `anthropic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<Provider>,
    /// HTTP: the longest `retry-after` a call waits for (default 60 s); a longer one fails
    /// fast.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_retry_after: Option<Duration>,
    /// HTTP: retry `POST` and `PATCH` without an `Idempotency-Key` (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_post: Option<bool>,
    /// HTTP: the largest request body kept for a retry, in bytes (default 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry_body: Option<usize>,
    /// HTTP: the largest response body stored for a queued call, in bytes (default 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_body: Option<usize>,
    /// HTTP: other `http` destinations tried in order when this one's circuit is open or its
    /// retries are spent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<String>,
    /// HTTP: the overall deadline of a proxied call, all attempts and fallbacks included
    /// (default 60 s); a caller's `X-Ferrule-Deadline` may shorten it.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub deadline: Option<Duration>,
    /// HTTP: the retries of a proxied call, laid over the proxy's defaults (3 attempts,
    /// exponential 500 ms ×2 to 8 s, full jitter, a budget of 0.2 retries per success plus
    /// 5 per second). Queued calls retry by `retry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_retry: Option<serde_json::Value>,
}

impl fmt::Debug for DestinationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_value(self) {
            Ok(shown) => write!(f, "DestinationConfig {shown}"),
            Err(_) => f.write_str("DestinationConfig { .. }"),
        }
    }
}

/// The connector of a resolved destination, with its secrets read.
#[derive(Debug, Clone)]
pub enum ConnectorConfig {
    /// A Standard Webhooks endpoint.
    Webhook(WebhookConfig),
    /// A Telegram bot.
    Telegram(TelegramConfig),
    /// An SMTP server.
    Smtp(SmtpConfig),
    /// A GitHub token.
    Github(GithubConfig),
    /// An HTTP API.
    Http(HttpConfig),
}

impl ConnectorConfig {
    /// The type of destination it configures.
    pub fn kind(&self) -> DestinationKind {
        match self {
            ConnectorConfig::Webhook(_) => DestinationKind::Webhook,
            ConnectorConfig::Telegram(_) => DestinationKind::Telegram,
            ConnectorConfig::Smtp(_) => DestinationKind::Smtp,
            ConnectorConfig::Github(_) => DestinationKind::Github,
            ConnectorConfig::Http(_) => DestinationKind::Http,
        }
    }
}

/// How many requests' time one attempt of a GitHub destination may take (its `timeout` bounds
/// each request): an attempt after the first looks before it acts, so that a retry never
/// repeats a merge, a review or a comment — `GET /user` once, then the merge state, the
/// reviews or the comments — and only then writes. An attempt that still runs out of time
/// (pages and pages of reviews) fails as transient and is retried, and looks again.
pub const GITHUB_REQUESTS_PER_ATTEMPT: u32 = 3;

/// A destination with every policy resolved against `[defaults]` and its secret read.
#[derive(Debug, Clone)]
pub struct ResolvedDestination {
    /// The name.
    pub name: String,
    /// Where it delivers, for logs and `/v1/destinations`: the webhook URL, the Bot API or
    /// GitHub API base or `smtp://host:port`, as [`redact_url`] shows it (the connector holds
    /// the real one).
    pub url: String,
    /// The secret (read from env or file if so configured).
    pub secret: Option<String>,
    /// Whether private targets are allowed.
    pub allow_private: bool,
    /// Per-attempt timeout: the destination's `timeout`, for GitHub
    /// [`GITHUB_REQUESTS_PER_ATTEMPT`] times it.
    pub timeout: Duration,
    /// Extra headers.
    pub headers: BTreeMap<String, String>,
    /// Whether a submitted payload may be any JSON value rather than an object or an array
    /// (webhooks with `any_json = true`).
    pub any_json: bool,
    /// Retry policy.
    pub retry: RetryConfig,
    /// Breaker policy.
    pub breaker: BreakerConfig,
    /// Whether the breaker's state is shared by the relays on one PostgreSQL database
    /// (`breaker.shared = true`).
    pub shared_breaker: bool,
    /// GitHub: whether the token's write pace is kept with the other relays on a PostgreSQL
    /// store (`shared_pace`, default true).
    pub shared_pace: bool,
    /// Rate limit, if any.
    pub rate_limit: Option<RateLimitConfig>,
    /// Bulkhead.
    pub bulkhead: BulkheadConfig,
    /// Chaos.
    pub chaos: ChaosConfig,
    /// The connector's configuration.
    pub connector: ConnectorConfig,
    /// How a Telegram destination receives updates, if it does.
    pub inbound: Option<ResolvedInbound>,
    /// Its active health check, if it has one (validated).
    pub health_check: Option<HealthCheckConfig>,
    /// How an `http` destination serves proxied calls.
    pub proxy: Option<ProxySettings>,
}

impl Config {
    /// Every destination, resolved.
    pub fn destinations(&self) -> Result<Vec<ResolvedDestination>, ConfigError> {
        (0..self.destinations.len())
            .map(|i| self.resolve(i))
            .collect()
    }

    /// Destination `i` with its policies merged over `[defaults]` and validated.
    pub(super) fn resolve(&self, i: usize) -> Result<ResolvedDestination, ConfigError> {
        let dest = &self.destinations[i];
        let at = |field: &str| format!("destinations[{i}].{field}");
        let name = dest.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(ConfigError::new(at("name"), "must be 1 to 200 characters"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        {
            return Err(ConfigError::new(
                at("name"),
                "may contain only letters, digits, `-`, `_`, `.` and `:`",
            ));
        }
        check_fields_of(i, dest)?;
        let Policies {
            timeout,
            retry,
            breaker,
            shared_breaker,
            rate_limit,
            bulkhead,
            chaos,
        } = self.policies(i)?;
        let (url, secret, connector) = match dest.kind {
            DestinationKind::Webhook => webhook_connector(i, dest, timeout)?,
            DestinationKind::Telegram => telegram_connector(i, dest, timeout)?,
            DestinationKind::Smtp => smtp_connector(i, dest, timeout)?,
            DestinationKind::Github => github_connector(i, dest, timeout)?,
            DestinationKind::Http => http_connector(i, dest, timeout)?,
        };
        let timeout = match dest.kind {
            DestinationKind::Github => timeout.saturating_mul(GITHUB_REQUESTS_PER_ATTEMPT),
            _ => timeout,
        };
        let inbound = match &dest.inbound {
            None => None,
            Some(inbound) => Some(resolve_inbound(i, inbound)?),
        };
        if let Some(check) = &dest.health_check {
            let takes_url = matches!(dest.kind, DestinationKind::Webhook | DestinationKind::Http);
            check.validate(&at("health_check"), takes_url)?;
        }
        let proxy = match dest.kind {
            DestinationKind::Http => Some(proxy_settings(i, dest)?),
            _ => None,
        };
        Ok(ResolvedDestination {
            connector,
            inbound,
            health_check: dest.health_check.clone(),
            proxy,
            name: name.to_owned(),
            url: redact_url(&url),
            secret,
            allow_private: dest.allow_private,
            timeout,
            headers: dest.headers.clone(),
            any_json: dest.any_json.unwrap_or(false),
            retry,
            breaker,
            shared_breaker,
            shared_pace: dest.shared_pace.unwrap_or(true),
            rate_limit,
            bulkhead,
            chaos,
        })
    }

    /// Destination `i`'s policies: its own tables laid over `[defaults]` field by field, each
    /// validated.
    pub(super) fn policies(&self, i: usize) -> Result<Policies, ConfigError> {
        let dest = &self.destinations[i];
        let at = |field: &str| format!("destinations[{i}].{field}");
        let timeout = dest.timeout.unwrap_or(self.defaults.timeout);
        if timeout.is_zero() {
            return Err(ConfigError::new(at("timeout"), "must be longer than zero"));
        }
        let d = &self.defaults;
        let retry: RetryConfig = overlay(&d.retry, dest.retry.as_ref(), &at("retry"))?;
        retry.validate().map_err(|e| e.within(&at("retry")))?;
        let (own_breaker, shared_breaker) = split_shared(dest.breaker.as_ref(), &at)?;
        let breaker: BreakerConfig = overlay(&d.breaker, own_breaker.as_ref(), &at("breaker"))?;
        breaker.validate().map_err(|e| e.within(&at("breaker")))?;
        let rate_limit: Option<RateLimitConfig> = match (&d.rate_limit, &dest.rate_limit) {
            (None, None) => None,
            (Some(base), over) => Some(overlay(base, over.as_ref(), &at("rate_limit"))?),
            (None, Some(over)) => Some(overlay(
                &RateLimitConfig::default(),
                Some(over),
                &at("rate_limit"),
            )?),
        };
        if let Some(rl) = &rate_limit {
            rl.validate().map_err(|e| e.within(&at("rate_limit")))?;
        }
        let bulkhead: BulkheadConfig =
            overlay(&d.bulkhead, dest.bulkhead.as_ref(), &at("bulkhead"))?;
        bulkhead.validate().map_err(|e| e.within(&at("bulkhead")))?;
        let chaos: ChaosConfig = overlay(&d.chaos, dest.chaos.as_ref(), &at("chaos"))?;
        chaos
            .validate_for(self.server.environment)
            .map_err(|e| e.within(&at("chaos")))?;
        Ok(Policies {
            timeout,
            retry,
            breaker,
            shared_breaker,
            rate_limit,
            bulkhead,
            chaos,
        })
    }
}

/// A destination's effective policies: its overrides laid over `[defaults]`.
pub(super) struct Policies {
    /// Per-attempt timeout.
    pub(super) timeout: Duration,
    /// Retries.
    pub(super) retry: RetryConfig,
    /// The circuit breaker.
    pub(super) breaker: BreakerConfig,
    /// Whether the breaker is shared by the relays on one store (`breaker.shared`).
    pub(super) shared_breaker: bool,
    /// The rate limit, if any.
    pub(super) rate_limit: Option<RateLimitConfig>,
    /// The bulkhead.
    pub(super) bulkhead: BulkheadConfig,
    /// Fault injection.
    pub(super) chaos: ChaosConfig,
}

impl Policies {
    /// Writes these policies into `dest` as complete tables, so that it shows what the
    /// destination runs with (`config check`). Chaos is written only when it or the default's
    /// is enabled: left out, it would read back as the default's.
    pub(super) fn show_in(&self, dest: &mut DestinationConfig, defaults: &PolicyDefaults) {
        fn table(value: &impl Serialize) -> Option<serde_json::Value> {
            let mut value = serde_json::to_value(value).ok()?;
            drop_nulls(&mut value);
            Some(value)
        }
        dest.timeout = Some(self.timeout);
        dest.retry = table(&self.retry);
        dest.breaker = table(&self.breaker).map(|mut breaker| {
            if let (true, Some(map)) = (self.shared_breaker, breaker.as_object_mut()) {
                map.insert("shared".into(), serde_json::Value::Bool(true));
            }
            breaker
        });
        dest.rate_limit = self.rate_limit.as_ref().and_then(table);
        dest.bulkhead = table(&self.bulkhead);
        dest.chaos = if self.chaos.enabled || defaults.chaos.enabled {
            table(&self.chaos)
        } else {
            None
        };
    }
}

/// Takes `shared` out of a destination's `[breaker]` table (the relay's setting, not the
/// policy's): the rest of the table, and whether the breaker is shared.
fn split_shared(
    breaker: Option<&serde_json::Value>,
    at: &impl Fn(&str) -> String,
) -> Result<(Option<serde_json::Value>, bool), ConfigError> {
    let Some(mut breaker) = breaker.cloned() else {
        return Ok((None, false));
    };
    let shared = match breaker.as_object_mut().and_then(|m| m.remove("shared")) {
        None => false,
        Some(serde_json::Value::Bool(shared)) => shared,
        Some(other) => {
            return Err(ConfigError::new(
                at("breaker.shared"),
                format!("must be true or false, not {other}"),
            ));
        }
    };
    Ok((Some(breaker), shared))
}

/// Removes every `null` from the tables of `value` (TOML has no null: an absent optional field
/// is simply not written).
fn drop_nulls(value: &mut serde_json::Value) {
    if let serde_json::Value::Object(map) = value {
        map.retain(|_, v| !v.is_null());
        map.values_mut().for_each(drop_nulls);
    }
}

/// Refuses a connector field that belongs to another type of destination, so a typo such as
/// `host` on a Telegram destination is not silently ignored.
pub(super) fn check_fields_of(i: usize, dest: &DestinationConfig) -> Result<(), ConfigError> {
    use DestinationKind::{Github, Http, Smtp, Telegram, Webhook};
    let fields: [(&str, bool, &[DestinationKind]); 37] = [
        ("url", !dest.url.is_empty(), &[Webhook]),
        ("secret", dest.secret.is_some(), &[Webhook]),
        ("unsigned", dest.unsigned, &[Webhook]),
        ("allow_private", dest.allow_private, &[Webhook, Http]),
        ("headers", !dest.headers.is_empty(), &[Webhook, Http]),
        ("any_json", dest.any_json.is_some(), &[Webhook]),
        ("bot_token", dest.bot_token.is_some(), &[Telegram]),
        ("api_base", dest.api_base.is_some(), &[Telegram, Github]),
        ("allow_http", dest.allow_http.is_some(), &[Telegram, Github]),
        ("long_texts", dest.long_texts.is_some(), &[Telegram]),
        ("limits", dest.limits.is_some(), &[Telegram]),
        ("host", dest.host.is_some(), &[Smtp]),
        ("port", dest.port.is_some(), &[Smtp]),
        ("tls", dest.tls.is_some(), &[Smtp]),
        ("tls_root_ca", dest.tls_root_ca.is_some(), &[Smtp]),
        ("username", dest.username.is_some(), &[Smtp]),
        ("password", dest.password.is_some(), &[Smtp]),
        ("from", dest.from.is_some(), &[Smtp]),
        (
            "message_id_domain",
            dest.message_id_domain.is_some(),
            &[Smtp],
        ),
        ("hello_name", dest.hello_name.is_some(), &[Smtp]),
        ("pool", dest.pool.is_some(), &[Smtp]),
        ("token", dest.token.is_some(), &[Github]),
        ("user_agent", dest.user_agent.is_some(), &[Github]),
        ("login", dest.login.is_some(), &[Github]),
        (
            "min_write_interval",
            dest.min_write_interval.is_some(),
            &[Github],
        ),
        ("secondary_limit", dest.secondary_limit.is_some(), &[Github]),
        ("shared_pace", dest.shared_pace.is_some(), &[Github]),
        ("inbound", dest.inbound.is_some(), &[Telegram]),
        ("base_url", dest.base_url.is_some(), &[Http]),
        ("classifier", dest.classifier.is_some(), &[Http]),
        ("max_retry_after", dest.max_retry_after.is_some(), &[Http]),
        ("retry_post", dest.retry_post.is_some(), &[Http]),
        ("max_retry_body", dest.max_retry_body.is_some(), &[Http]),
        (
            "max_response_body",
            dest.max_response_body.is_some(),
            &[Http],
        ),
        ("fallback", !dest.fallback.is_empty(), &[Http]),
        ("deadline", dest.deadline.is_some(), &[Http]),
        ("proxy_retry", dest.proxy_retry.is_some(), &[Http]),
    ];
    for (field, set, kinds) in fields {
        if set && !kinds.contains(&dest.kind) {
            let owners: Vec<String> = kinds
                .iter()
                .map(|kind| format!("`type = \"{}\"`", kind.as_str()))
                .collect();
            return Err(ConfigError::new(
                format!("destinations[{i}].{field}"),
                format!(
                    "belongs to {} destinations, not `{}`",
                    owners.join(" and "),
                    dest.kind.as_str()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks every `inbound.forward_to`: another destination, and a webhook (a Telegram update is
/// not a valid Telegram or SMTP payload, so every forward there would be dead-lettered).
pub(super) fn check_forwards(resolved: &[ResolvedDestination]) -> Result<(), ConfigError> {
    for (i, dest) in resolved.iter().enumerate() {
        let Some(target) = dest.inbound.as_ref().and_then(|d| d.forward_to.as_ref()) else {
            continue;
        };
        let field = format!("destinations[{i}].inbound.forward_to");
        if *target == dest.name {
            return Err(ConfigError::new(
                field,
                "must name another destination, not this one",
            ));
        }
        match resolved.iter().find(|d| d.name == *target) {
            None => {
                return Err(ConfigError::new(
                    field,
                    format!("no destination is named `{target}`"),
                ));
            }
            Some(d) if !matches!(d.connector, ConnectorConfig::Webhook(_)) => {
                return Err(ConfigError::new(
                    field,
                    format!(
                        "`{target}` is not a webhook destination: a Telegram update is not a \
                         payload it could deliver"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The parts of a resolved destination that depend on its type: endpoint, webhook secret and
/// connector configuration.
pub(super) type ConnectorParts = (String, Option<String>, ConnectorConfig);

/// Destination `i` as a webhook.
pub(super) fn webhook_connector(
    i: usize,
    dest: &DestinationConfig,
    timeout: Duration,
) -> Result<ConnectorParts, ConfigError> {
    let at = |field: &str| format!("destinations[{i}].{field}");
    let scheme_ok = dest.url.starts_with("http://") || dest.url.starts_with("https://");
    if !scheme_ok || dest.url.len() <= "https://".len() {
        return Err(ConfigError::new(
            at("url"),
            "must be an http:// or https:// URL",
        ));
    }
    if dest.unsigned && dest.secret.is_some() {
        return Err(ConfigError::new(
            at("unsigned"),
            "cannot be set together with `secret`: remove one (with a secret, requests are signed)",
        ));
    }
    let secret = match &dest.secret {
        None => None,
        Some(s) => {
            let value = s.expose(&at("secret"))?;
            check_webhook_secret(&value).map_err(|m| ConfigError::new(at("secret"), m))?;
            Some(value)
        }
    };
    for key in dest.headers.keys() {
        let lower = key.to_ascii_lowercase();
        if lower.starts_with("webhook-") || lower == "content-type" || lower == "host" {
            return Err(ConfigError::new(
                at("headers"),
                format!("`{key}` is set by the relay and cannot be overridden"),
            ));
        }
    }
    let mut webhook = WebhookConfig::new(dest.url.clone());
    webhook.allow_private = dest.allow_private;
    webhook.timeout = timeout;
    webhook.headers = dest.headers.clone();
    if let Some(secret) = &secret {
        webhook.secret = Some(
            secret
                .parse::<WebhookSecret>()
                .map_err(|e| connector_error(i, e))?,
        );
    }
    webhook.validate().map_err(|e| connector_error(i, e))?;
    Ok((dest.url.clone(), secret, ConnectorConfig::Webhook(webhook)))
}

/// Destination `i` as a Telegram bot; the token is read here and never shown.
pub(super) fn telegram_connector(
    i: usize,
    dest: &DestinationConfig,
    timeout: Duration,
) -> Result<ConnectorParts, ConfigError> {
    let at = |field: &str| format!("destinations[{i}].{field}");
    let token: BotToken = credential(i, dest, dest.bot_token.as_ref(), "bot_token")?;
    let mut telegram = TelegramConfig::new(token);
    if let Some(base) = &dest.api_base {
        telegram.api_base = base.clone();
    }
    telegram.allow_http = dest.allow_http.unwrap_or(false);
    telegram.timeout = timeout;
    telegram.long_texts = dest.long_texts.unwrap_or_default();
    telegram.limits = overlay(
        &TelegramLimits::default(),
        dest.limits.as_ref(),
        &at("limits"),
    )?;
    telegram.validate().map_err(|e| connector_error(i, e))?;
    let endpoint = telegram.api_base.trim_end_matches('/').to_owned();
    Ok((endpoint, None, ConnectorConfig::Telegram(telegram)))
}

/// Destination `i` as an SMTP server; the password is read here and never shown.
pub(super) fn smtp_connector(
    i: usize,
    dest: &DestinationConfig,
    timeout: Duration,
) -> Result<ConnectorParts, ConfigError> {
    let at = |field: &str| format!("destinations[{i}].{field}");
    let Some(host) = &dest.host else {
        return Err(ConfigError::new(
            at("host"),
            "is required for an smtp destination",
        ));
    };
    let Some(from) = &dest.from else {
        return Err(ConfigError::new(
            at("from"),
            "is required for an smtp destination",
        ));
    };
    let mut smtp = SmtpConfig::new(host.clone(), from.clone());
    smtp.port = dest.port;
    smtp.tls = dest.tls.unwrap_or_default();
    smtp.tls_root_ca = dest.tls_root_ca.clone();
    smtp.username = dest.username.clone();
    smtp.password = match &dest.password {
        None => None,
        Some(p) => Some(SmtpPassword::new(p.expose(&at("password"))?)),
    };
    smtp.message_id_domain = dest.message_id_domain.clone();
    smtp.hello_name = dest.hello_name.clone();
    smtp.timeout = timeout;
    if let Some(pool) = &dest.pool {
        smtp.pool = pool.clone();
    }
    smtp.validate().map_err(|e| connector_error(i, e))?;
    let endpoint = format!("smtp://{}:{}", host.trim(), smtp.effective_port());
    Ok((endpoint, None, ConnectorConfig::Smtp(smtp)))
}

/// Destination `i` as a GitHub token; the token is read here and never shown. `timeout` bounds
/// each request.
pub(super) fn github_connector(
    i: usize,
    dest: &DestinationConfig,
    timeout: Duration,
) -> Result<ConnectorParts, ConfigError> {
    let at = |field: &str| format!("destinations[{i}].{field}");
    let token: GithubToken = credential(i, dest, dest.token.as_ref(), "token")?;
    let mut github = GithubConfig::new(token);
    if let Some(base) = &dest.api_base {
        github.api_base = base.clone();
    }
    github.allow_http = dest.allow_http.unwrap_or(false);
    if let Some(user_agent) = &dest.user_agent {
        github.user_agent = user_agent.clone();
    }
    github.timeout = timeout;
    if let Some(interval) = dest.min_write_interval {
        github.min_write_interval = interval;
    }
    github.login = dest.login.clone();
    github.secondary_limit = overlay(
        &SecondaryLimit::default(),
        dest.secondary_limit.as_ref(),
        &at("secondary_limit"),
    )?;
    github.validate().map_err(|e| connector_error(i, e))?;
    let endpoint = github.api_base.trim_end_matches('/').to_owned();
    Ok((endpoint, None, ConnectorConfig::Github(github)))
}

/// The token a destination of `dest`'s type cannot do without, at `field` of destination `i`:
/// read from `env:` or `file:`, trimmed, and parsed by its connector's type.
fn credential<T: FromStr<Err = ferrule_connectors::ConnectorError>>(
    i: usize,
    dest: &DestinationConfig,
    secret: Option<&Secret>,
    field: &str,
) -> Result<T, ConfigError> {
    let at = format!("destinations[{i}].{field}");
    let Some(secret) = secret else {
        return Err(ConfigError::new(
            at,
            format!("is required for a {} destination", dest.kind.as_str()),
        ));
    };
    secret
        .expose(&at)?
        .trim()
        .parse()
        .map_err(|e| connector_error(i, e))
}

/// Refuses GitHub destinations that act with the same token on the same API at different
/// write paces: GitHub paces the token, so they share one pace, and one of the two settings
/// would silently not hold.
pub(super) fn check_shared_tokens(resolved: &[ResolvedDestination]) -> Result<(), ConfigError> {
    let github: Vec<(usize, &str, &GithubConfig)> = resolved
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match &d.connector {
            ConnectorConfig::Github(github) => Some((i, d.name.as_str(), github)),
            _ => None,
        })
        .collect();
    for (n, (j, _, later)) in github.iter().enumerate() {
        let sharing = github[..n]
            .iter()
            .find(|(_, _, earlier)| same_token(earlier, later));
        if let Some((i, name, earlier)) = sharing
            && earlier.min_write_interval != later.min_write_interval
        {
            let shown = |d: Duration| humantime::format_duration(d).to_string();
            return Err(ConfigError::new(
                format!("destinations[{j}].min_write_interval"),
                format!(
                    "is {}, but `{name}` (destinations[{i}]) acts with the same token at {}: \
                     GitHub paces the token, so destinations sharing one share its pace; give \
                     them the same interval",
                    shown(later.min_write_interval),
                    shown(earlier.min_write_interval)
                ),
            ));
        }
    }
    Ok(())
}

/// Whether two GitHub destinations act with the same token on the same API, as the connector
/// tells it (`GithubConnector::shares_token_with`): the API base compared as a parsed URL.
fn same_token(a: &GithubConfig, b: &GithubConfig) -> bool {
    let base = |c: &GithubConfig| {
        url::Url::parse(&c.api_base)
            .map(|u| u.as_str().trim_end_matches('/').to_owned())
            .unwrap_or_else(|_| c.api_base.clone())
    };
    a.token == b.token && base(a) == base(b)
}

/// A connector's complaint about destination `i`, naming the field.
pub(super) fn connector_error(i: usize, e: ferrule_connectors::ConnectorError) -> ConfigError {
    let inner = e.field().unwrap_or("url");
    let field = format!("destinations[{i}].{inner}");
    let message = e.to_string();
    // The connector's message names the field (`invalid `url`: …`, `` `url` points at …``),
    // which the error names already; keep only what follows it.
    let message = message
        .strip_prefix(&format!("invalid `{inner}`: "))
        .or_else(|| message.strip_prefix(&format!("`{inner}` ")))
        .map(str::to_owned)
        .unwrap_or(message);
    ConfigError::new(field, message)
}

/// Checks a Standard Webhooks secret: `whsec_` + base64 of 24 to 64 bytes.
pub fn check_webhook_secret(value: &str) -> Result<(), String> {
    use base64::Engine as _;
    let Some(key) = value.strip_prefix("whsec_") else {
        return Err("must start with `whsec_` (a Standard Webhooks secret)".into());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| "the part after `whsec_` must be base64".to_owned())?;
    if !(24..=64).contains(&bytes.len()) {
        return Err(format!("must encode 24 to 64 bytes, not {}", bytes.len()));
    }
    Ok(())
}
