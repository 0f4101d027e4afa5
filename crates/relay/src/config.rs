//! The relay's configuration: one serde struct, loaded from defaults, a TOML file and
//! `FERRULE_*` environment variables, then validated with errors that name the field.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrule_connectors::smtp::{SmtpConfig, SmtpPassword, SmtpPoolConfig, TlsMode};
use ferrule_connectors::telegram::{
    BotToken, ChatId, LongTexts, TelegramConfig, TelegramLimits, utf16_len,
};
use ferrule_connectors::webhook::{WebhookConfig, WebhookSecret};
use ferrule_policy::ConfigError;
use ferrule_policy::breaker::{BreakerConfig, Window};
use ferrule_policy::bulkhead::BulkheadConfig;
use ferrule_policy::chaos::{ChaosConfig, Environment};
use ferrule_policy::rate_limit::RateLimitConfig;
use ferrule_policy::retry::{Backoff, Jitter, RetryConfig};
use ferrule_store::{DeadLetterPolicy, Synchronous};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The top-level sections an environment variable may address (`FERRULE_<SECTION>__…`).
const SECTIONS: [&str; 7] = [
    "server",
    "store",
    "auth",
    "dispatcher",
    "health",
    "defaults",
    "alerts",
];

/// The whole relay configuration.
///
/// Built-in defaults give a working relay with no file at all: SQLite in `./ferrule.db`,
/// listening on `127.0.0.1:8080`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The HTTP server.
    pub server: ServerConfig,
    /// The durable store.
    pub store: StoreConfig,
    /// API authentication.
    pub auth: AuthConfig,
    /// The delivery dispatcher.
    pub dispatcher: DispatcherConfig,
    /// Thresholds of the per-dependency health shown in `/status`.
    pub health: HealthConfig,
    /// Policies every destination uses unless it overrides them.
    pub defaults: PolicyDefaults,
    /// Where messages go.
    pub destinations: Vec<DestinationConfig>,
    /// Where the relay reports its own trouble (default: nowhere).
    pub alerts: AlertsConfig,
}

/// `[server]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub listen: String,
    /// Largest request body accepted, in bytes (default 1 MiB).
    pub max_body_bytes: usize,
    /// Submissions are refused with 503 once this many messages are pending (default 5 000 000).
    pub max_queue_depth: u64,
    /// How long in-flight deliveries may run after SIGTERM/SIGINT (default 30 s).
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Where the relay runs; enabled chaos is refused in `production` unless allowed.
    pub environment: Environment,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 1024 * 1024,
            max_queue_depth: 5_000_000,
            drain_timeout: Duration::from_secs(30),
            environment: Environment::Development,
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://path` (default `sqlite://ferrule.db`) or `postgres://…`; shown without its
    /// password.
    #[serde(serialize_with = "show_url")]
    pub url: Secret,
    /// SQLite `synchronous`: `full` (default) or `normal`.
    pub synchronous: Synchronous,
    /// How long an idempotency key stays unique per destination (default 24 h).
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// Delivered messages are purged after this long (default 7 days).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Whether a dead message blocks later ones with its ordering key (`skip` or `block`).
    pub fifo_dead_letter_policy: DeadLetterPolicy,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: Secret::new("sqlite://ferrule.db"),
            synchronous: Synchronous::Full,
            idempotency_window: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(7 * 24 * 3600),
            fifo_dead_letter_policy: DeadLetterPolicy::Skip,
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// API tokens, plain or as `sha256:<hex>`. Empty: the first `serve` generates one. A hash
    /// is shown by its first 8 digits, a plain token not at all.
    #[serde(serialize_with = "show_tokens")]
    pub tokens: Vec<Secret>,
}

/// `[dispatcher]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatcherConfig {
    /// Deliveries running at once across all destinations (default 256).
    pub concurrency: usize,
    /// Most messages claimed at once (default 256).
    pub batch: usize,
    /// Lease on a claimed message; extended every third of it while a delivery runs (60 s).
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Longest idle wait between claims when no wake-up arrives (default 1 s).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// When a full bulkhead or a busy half-open circuit defers a message, it is due again
    /// after this long (default 1 s).
    #[serde(with = "humantime_serde")]
    pub defer_for: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            concurrency: 256,
            batch: 256,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            defer_for: Duration::from_secs(1),
        }
    }
}

/// `[health]`: when a dependency counts as degraded or unhealthy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Failures in a row that make a dependency unhealthy (default 3; one failure is degraded).
    pub failure_threshold: u32,
    /// Successes in a row that make an unhealthy or degraded dependency healthy again (2).
    pub recovery_threshold: u32,
    /// How long `/readyz`, `/status` and `/metrics` wait for the store before they report it
    /// unavailable (default 1s): a probe must answer even while the database does not.
    #[serde(with = "humantime_serde")]
    pub store_timeout: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            failure_threshold: 3,
            recovery_threshold: 2,
            store_timeout: Duration::from_secs(1),
        }
    }
}

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

/// `[defaults]`: the policies of every destination that does not override them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyDefaults {
    /// Durable retries: exponential 1 s → 1 h, 10 attempts, full jitter. `max_elapsed` counts
    /// from the first attempt since the message was created or last replayed; decorrelated
    /// jitter grows from the previous delay as the message's timeline records it.
    pub retry: RetryConfig,
    /// Circuit breaker: last 20 calls, at least 10, 50 % failures; open 30 s growing ×2 to 10 min.
    pub breaker: BreakerConfig,
    /// Rate limit (default: none).
    pub rate_limit: Option<RateLimitConfig>,
    /// Concurrent deliveries per destination (default 256, the dispatcher's default
    /// concurrency, no queue). Lower it to keep one slow destination from taking every
    /// dispatcher slot; a delivery refused by a full bulkhead is deferred by `defer_for`.
    pub bulkhead: BulkheadConfig,
    /// Per-attempt timeout (default 15 s).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Fault injection (default off).
    pub chaos: ChaosConfig,
}

impl Default for PolicyDefaults {
    fn default() -> Self {
        PolicyDefaults {
            retry: RetryConfig {
                max_attempts: 10,
                max_elapsed: None,
                backoff: Backoff::Exponential {
                    base: Duration::from_secs(1),
                    multiplier: 2.0,
                    cap: Duration::from_secs(3600),
                },
                jitter: Jitter::Full,
                max_retry_after: Duration::from_secs(24 * 3600),
                budget: None,
            },
            breaker: BreakerConfig {
                window: Window::Count(20),
                min_calls: 10,
                failure_rate: 0.5,
                open_for: Duration::from_secs(30),
                open_backoff: 2.0,
                max_open_for: Some(Duration::from_secs(600)),
                ..BreakerConfig::default()
            },
            rate_limit: None,
            bulkhead: BulkheadConfig {
                max_concurrent: 256,
                ..BulkheadConfig::default()
            },
            timeout: Duration::from_secs(15),
            chaos: ChaosConfig::default(),
        }
    }
}

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
}

impl DestinationKind {
    /// The name written in `type = "…"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Webhook => "webhook",
            DestinationKind::Telegram => "telegram",
            DestinationKind::Smtp => "smtp",
        }
    }
}

/// One `[[destinations]]` entry. Policy tables override `[defaults]` field by field.
///
/// The connector's fields sit next to the policies, flat: `url`, `secret`, `allow_private` and
/// `headers` for webhooks; `bot_token`, `api_base`, `allow_http`, `long_texts`, `limits` and
/// `inbound` for Telegram; `host`, `port`, `tls`, `tls_root_ca`, `username`, `password`, `from`,
/// `message_id_domain`, `hello_name` and `pool` for SMTP. A field of another type is refused by `validate()`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// The name messages are submitted to.
    pub name: String,
    /// `webhook`, `telegram` or `smtp`.
    #[serde(rename = "type")]
    pub kind: DestinationKind,
    /// Webhook: the endpoint URL (http or https).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// The Standard Webhooks secret (`whsec_…`), inline or `env:VAR` / `file:/path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// Allow loopback, private and link-local targets (default false: SSRF guard).
    #[serde(default)]
    pub allow_private: bool,
    /// Per-attempt timeout (default `[defaults] timeout`).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Extra HTTP headers sent with every attempt.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
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
    /// Telegram: the Bot API server (default `https://api.telegram.org`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    /// Telegram: allow a plain-http `api_base` on a non-loopback host (default false).
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
    /// Telegram: how the bot receives updates (`[destinations.inbound]`); absent: it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<InboundConfig>,
}

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
const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest long-poll timeout accepted.
const MAX_POLL_TIMEOUT: Duration = Duration::from_secs(300);

/// The connector of a resolved destination, with its secrets read.
#[derive(Debug, Clone)]
pub enum ConnectorConfig {
    /// A Standard Webhooks endpoint.
    Webhook(WebhookConfig),
    /// A Telegram bot.
    Telegram(TelegramConfig),
    /// An SMTP server.
    Smtp(SmtpConfig),
}

/// A destination with every policy resolved against `[defaults]` and its secret read.
#[derive(Debug, Clone)]
pub struct ResolvedDestination {
    /// The name.
    pub name: String,
    /// Where it delivers, for logs and `/v1/destinations`: the webhook URL, the Bot API base or
    /// `smtp://host:port`. Never holds a secret.
    pub url: String,
    /// The secret (read from env or file if so configured).
    pub secret: Option<String>,
    /// Whether private targets are allowed.
    pub allow_private: bool,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Extra headers.
    pub headers: BTreeMap<String, String>,
    /// Retry policy.
    pub retry: RetryConfig,
    /// Breaker policy.
    pub breaker: BreakerConfig,
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
}

/// A secret value: redacted in `Debug` and when serialised (so in `config check` and logs).
///
/// Written inline, as `env:NAME` (read from the environment) or `file:/path` (read from a
/// file, trailing newline removed).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret from its configured text.
    pub fn new(text: impl Into<String>) -> Self {
        Secret(text.into())
    }

    /// Whether the secret is a reference (`env:NAME` or `file:/path`) that
    /// [`expose`](Self::expose) reads from the environment or a file, rather than the value.
    pub fn is_reference(&self) -> bool {
        self.0.starts_with("env:") || self.0.starts_with("file:")
    }

    /// The value, reading `env:` and `file:` references. `field` names it in errors.
    pub fn expose(&self, field: &str) -> Result<String, ConfigError> {
        if let Some(var) = self.0.strip_prefix("env:") {
            return std::env::var(var).map_err(|_| {
                ConfigError::new(
                    field.to_owned(),
                    format!("environment variable `{var}` is not set"),
                )
            });
        }
        if let Some(path) = self.0.strip_prefix("file:") {
            return std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| {
                    ConfigError::new(field.to_owned(), format!("cannot read `{path}`: {e}"))
                });
        }
        Ok(self.0.clone())
    }

    /// The text as configured, only for values that are not really secret (the store URL
    /// without a password is shown by [`redact_url`]).
    fn raw(&self) -> &str {
        &self.0
    }
}

/// Serialises the store URL without its password (a reference as written).
fn show_url<S: Serializer>(url: &Secret, s: S) -> Result<S::Ok, S::Error> {
    if url.is_reference() {
        s.serialize_str(url.raw())
    } else {
        s.serialize_str(&redact_url(url.raw()))
    }
}

/// Serialises API tokens: a `sha256:` hash by its first 8 digits (a hash is not secret, and
/// its start tells tokens apart; a token so written is always a hash, as `validate()`
/// checks), anything else as [`Secret`] does.
fn show_tokens<S: Serializer>(tokens: &[Secret], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        tokens
            .iter()
            .map(|token| match token.raw().strip_prefix("sha256:") {
                Some(hex) => format!("sha256:{}…", hex.get(..8).unwrap_or("")),
                None => redacted(token.raw()),
            }),
    )
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redacted(&self.0))
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&redacted(&self.0))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// How a secret is shown: references stay visible (they are not secret), values do not, and
/// nothing of a value is shown but whether it is a webhook secret. The fields that show more
/// say so themselves ([`show_url`], [`show_tokens`]): a value's look must not decide it, or an
/// SMTP password containing `://` would be shown as a URL.
fn redacted(text: &str) -> String {
    if text.starts_with("env:") || text.starts_with("file:") {
        text.to_owned()
    } else if text.starts_with("whsec_") {
        "whsec_***".into()
    } else {
        "***".into()
    }
}

/// A URL with its passwords replaced by `***`: the one in the user info
/// (`postgres://user:***@host/db`) and the value of every `password` query parameter
/// (`?password=***`), both places PostgreSQL URLs may hold one. The parts are found as the
/// `url` crate (and so the PostgreSQL driver) finds them: only `scheme://` opens an authority,
/// the user info ends at the last `@` before the path, query parameter names are
/// percent-decoded. A URL without an authority (`sqlite:ferrule.db?password=…`) still has its
/// query redacted.
pub fn redact_url(url: &str) -> String {
    let (head, authority, tail) = match authority_start(url) {
        Some(start) => {
            let (head, rest) = url.split_at(start);
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            (head, &rest[..end], &rest[end..])
        }
        None => ("", "", url),
    };
    let mut out = String::from(head);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = match tail.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (tail, None),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let pairs: Vec<&str> = query
                .split('&')
                .map(|pair| {
                    let key = url::form_urlencoded::parse(pair.as_bytes()).next();
                    match key {
                        Some((key, _)) if key == "password" => "password=***",
                        _ => pair,
                    }
                })
                .collect();
            out.push_str(&pairs.join("&"));
        }
        None => out.push_str(before_fragment),
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Where the authority of `url` starts: after `scheme://`, the scheme being a letter then
/// letters, digits, `+`, `-` or `.`, as the `url` crate reads it. `None` when there is no
/// authority, e.g. `sqlite:ferrule.db`, or a `://` inside the path or query.
fn authority_start(url: &str) -> Option<usize> {
    let colon = url.find(':')?;
    let scheme = &url[..colon];
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (valid && url[colon..].starts_with("://")).then_some(colon + 3)
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The named file does not exist or cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file or an environment variable has a syntax error, an unknown field or a value of
    /// the wrong type.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value is out of range or inconsistent; the error names the field.
    #[error("invalid configuration: `{}`: {}", .0.field(), .0.message())]
    Invalid(ConfigError),
}

impl From<ConfigError> for LoadError {
    fn from(e: ConfigError) -> Self {
        LoadError::Invalid(e)
    }
}

impl Config {
    /// Loads defaults, then the TOML file at `path` (if any), then `FERRULE_<SECTION>__<KEY>`
    /// environment variables, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, LoadError> {
        Self::load_with_env(path, Env::prefixed("FERRULE_"))
    }

    fn load_with_env(path: Option<&Path>, env: Env) -> Result<Config, LoadError> {
        let text = match path {
            None => None,
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| LoadError::File {
                        path: path.to_owned(),
                        source,
                    })?,
                )
            }
        };
        let env = env.filter_map(|key| {
            let key = key.as_str().to_ascii_lowercase();
            let (section, rest) = key.split_once("__")?;
            (SECTIONS.contains(&section) && !rest.is_empty()).then(|| key.replace("__", ".").into())
        });
        let config = extract(layered(text.as_deref()).merge(env))?;
        config.validate()?;
        Ok(config)
    }

    /// The built-in defaults with the TOML `text` laid over them, as [`load`](Self::load)
    /// reads a file but without the environment, and **not validated**: call
    /// [`validate`](Self::validate) next, which reads `env:` and `file:` secrets.
    ///
    /// ```
    /// let config = ferrule::Config::from_toml_str("[server]\nlisten = \"127.0.0.1:9000\"\n")?;
    /// config.validate()?;
    /// assert_eq!(config.server.listen, "127.0.0.1:9000");
    /// assert_eq!(config.server.max_body_bytes, 1024 * 1024, "a default");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`LoadError::Parse`] for a syntax error, an unknown field or a value of the wrong type.
    pub fn from_toml_str(text: &str) -> Result<Config, LoadError> {
        extract(layered(Some(text)))
    }

    /// Checks every value and the destinations' policies; the error names the field, e.g.
    /// `destinations[2].url` or `defaults.retry.max_attempts`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| ConfigError::new("server.listen", format!("not an address: {e}")))?;
        positive("server.max_body_bytes", self.server.max_body_bytes as u64)?;
        positive("server.max_queue_depth", self.server.max_queue_depth)?;
        let url = self.store.url.expose("store.url")?;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::new(
                "store.url",
                "must start with `sqlite://` or `postgres://`",
            ));
        }
        if self.store.idempotency_window.is_zero() {
            return Err(ConfigError::new(
                "store.idempotency_window",
                "must be longer than zero",
            ));
        }
        for (i, token) in self.auth.tokens.iter().enumerate() {
            let field = format!("auth.tokens[{i}]");
            let value = token.expose(&field)?;
            crate::auth::parse_configured(&value).map_err(|m| ConfigError::new(field, m))?;
        }
        positive("dispatcher.concurrency", self.dispatcher.concurrency as u64)?;
        positive("dispatcher.batch", self.dispatcher.batch as u64)?;
        if self.dispatcher.batch > 10_000 {
            return Err(ConfigError::new(
                "dispatcher.batch",
                "must be at most 10000",
            ));
        }
        for (field, d) in [
            ("dispatcher.lease", self.dispatcher.lease),
            ("dispatcher.poll_interval", self.dispatcher.poll_interval),
            ("dispatcher.defer_for", self.dispatcher.defer_for),
            ("defaults.timeout", self.defaults.timeout),
            ("health.store_timeout", self.health.store_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(field, "must be longer than zero"));
            }
        }
        positive(
            "health.failure_threshold",
            u64::from(self.health.failure_threshold),
        )?;
        positive(
            "health.recovery_threshold",
            u64::from(self.health.recovery_threshold),
        )?;
        let d = &self.defaults;
        d.retry.validate().map_err(|e| e.within("defaults.retry"))?;
        d.breaker
            .validate()
            .map_err(|e| e.within("defaults.breaker"))?;
        if let Some(rl) = &d.rate_limit {
            rl.validate().map_err(|e| e.within("defaults.rate_limit"))?;
        }
        d.bulkhead
            .validate()
            .map_err(|e| e.within("defaults.bulkhead"))?;
        d.chaos
            .validate_for(self.server.environment)
            .map_err(|e| e.within("defaults.chaos"))?;
        let mut names = BTreeSet::new();
        let mut resolved = Vec::with_capacity(self.destinations.len());
        for i in 0..self.destinations.len() {
            let dest = self.resolve(i)?;
            if !names.insert(dest.name.clone()) {
                return Err(ConfigError::new(
                    format!("destinations[{i}].name"),
                    format!("`{}` is used by an earlier destination", dest.name),
                ));
            }
            resolved.push(dest);
        }
        check_forwards(&resolved)?;
        self.validate_alerts()
    }

    /// Checks `[alerts]`: each target names a configured destination of the right type.
    fn validate_alerts(&self) -> Result<(), ConfigError> {
        let a = &self.alerts;
        if a.min_interval < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "alerts.min_interval",
                "must be at least 1s",
            ));
        }
        positive("alerts.max_per_minute", u64::from(a.max_per_minute))?;
        let kind_of = |field: &'static str, name: &str, wanted: DestinationKind| {
            let Some(dest) = self.destinations.iter().find(|d| d.name.trim() == name) else {
                return Err(ConfigError::new(
                    field,
                    format!("no destination named `{name}` is configured"),
                ));
            };
            if dest.kind != wanted {
                return Err(ConfigError::new(
                    field,
                    format!(
                        "`{name}` is a {} destination; this needs a {} one",
                        dest.kind.as_str(),
                        wanted.as_str()
                    ),
                ));
            }
            Ok(())
        };
        if let Some(telegram) = &a.telegram {
            kind_of(
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
            kind_of("alerts.webhook", webhook, DestinationKind::Webhook)?;
        }
        Ok(())
    }

    /// Every destination, resolved.
    pub fn destinations(&self) -> Result<Vec<ResolvedDestination>, ConfigError> {
        (0..self.destinations.len())
            .map(|i| self.resolve(i))
            .collect()
    }

    /// Destination `i` with its policies merged over `[defaults]` and validated.
    fn resolve(&self, i: usize) -> Result<ResolvedDestination, ConfigError> {
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
        let timeout = dest.timeout.unwrap_or(self.defaults.timeout);
        if timeout.is_zero() {
            return Err(ConfigError::new(at("timeout"), "must be longer than zero"));
        }
        let d = &self.defaults;
        let retry: RetryConfig = overlay(&d.retry, dest.retry.as_ref(), &at("retry"))?;
        retry.validate().map_err(|e| e.within(&at("retry")))?;
        let breaker: BreakerConfig = overlay(&d.breaker, dest.breaker.as_ref(), &at("breaker"))?;
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
        let (url, secret, connector) = match dest.kind {
            DestinationKind::Webhook => webhook_connector(i, dest, timeout)?,
            DestinationKind::Telegram => telegram_connector(i, dest, timeout)?,
            DestinationKind::Smtp => smtp_connector(i, dest, timeout)?,
        };
        let inbound = match &dest.inbound {
            None => None,
            Some(inbound) => Some(resolve_inbound(i, inbound)?),
        };
        Ok(ResolvedDestination {
            connector,
            inbound,
            name: name.to_owned(),
            url,
            secret,
            allow_private: dest.allow_private,
            timeout,
            headers: dest.headers.clone(),
            retry,
            breaker,
            rate_limit,
            bulkhead,
            chaos,
        })
    }

    /// The effective configuration as TOML with every secret redacted (`config check`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The store URL to open.
    pub fn store_url(&self) -> Result<String, ConfigError> {
        self.store.url.expose("store.url")
    }
}

/// The built-in defaults, then the TOML `text` if any.
fn layered(text: Option<&str>) -> Figment {
    // Serialising the defaults into figment's value tree is most of a small config's parse;
    // they never change, so that is done once and the tree cloned.
    static DEFAULTS: std::sync::LazyLock<Figment> =
        std::sync::LazyLock::new(|| Figment::from(Serialized::defaults(Config::default())));
    let figment = DEFAULTS.clone();
    match text {
        Some(text) => figment.merge(Toml::string(text)),
        None => figment,
    }
}

/// The configuration `figment` describes, not yet validated.
fn extract(figment: Figment) -> Result<Config, LoadError> {
    // serde reads a struct from a list of its fields in order, so `[[defaults]]` (a list of
    // tables) would be taken for `[defaults]` with its first table as `retry`, the second as
    // `breaker`: refuse a list wherever the defaults have a table.
    static SHAPE: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| {
        serde_json::to_value(Config::default()).unwrap_or(serde_json::Value::Null)
    });
    let merged: figment::value::Value = figment
        .extract()
        .map_err(|e| LoadError::Parse(describe_figment(e)))?;
    let merged = serde_json::to_value(&merged).map_err(|e| LoadError::Parse(e.to_string()))?;
    tables_stay_tables(&merged, &SHAPE, "")
        .map_err(|e| LoadError::Parse(format!("`{}`: {}", e.field(), e.message())))?;
    figment
        .extract()
        .map_err(|e| LoadError::Parse(describe_figment(e)))
}

/// Refuses a list in `value` where `shape`, the same section serialised from its defaults,
/// has a table; `path` names where `value` sits. (A number or a string there is refused by
/// serde itself, which cannot read a struct from one.)
fn tables_stay_tables(
    value: &serde_json::Value,
    shape: &serde_json::Value,
    path: &str,
) -> Result<(), ConfigError> {
    use serde_json::Value::{Array, Object};
    match (shape, value) {
        (Object(shape), Object(value)) => {
            for (key, inner) in value {
                if let Some(inner_shape) = shape.get(key) {
                    let path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    tables_stay_tables(inner, inner_shape, &path)?;
                }
            }
            Ok(())
        }
        (Object(_), Array(_)) => Err(ConfigError::new(
            path.to_owned(),
            "must be a table, not a list (`[[…]]` makes a list of tables)",
        )),
        _ => Ok(()),
    }
}

/// Refuses a connector field that belongs to another type of destination, so a typo such as
/// `host` on a Telegram destination is not silently ignored.
fn check_fields_of(i: usize, dest: &DestinationConfig) -> Result<(), ConfigError> {
    use DestinationKind::{Smtp, Telegram, Webhook};
    let fields: [(&str, bool, DestinationKind); 20] = [
        ("url", !dest.url.is_empty(), Webhook),
        ("secret", dest.secret.is_some(), Webhook),
        ("allow_private", dest.allow_private, Webhook),
        ("headers", !dest.headers.is_empty(), Webhook),
        ("bot_token", dest.bot_token.is_some(), Telegram),
        ("api_base", dest.api_base.is_some(), Telegram),
        ("allow_http", dest.allow_http.is_some(), Telegram),
        ("long_texts", dest.long_texts.is_some(), Telegram),
        ("limits", dest.limits.is_some(), Telegram),
        ("host", dest.host.is_some(), Smtp),
        ("port", dest.port.is_some(), Smtp),
        ("tls", dest.tls.is_some(), Smtp),
        ("tls_root_ca", dest.tls_root_ca.is_some(), Smtp),
        ("username", dest.username.is_some(), Smtp),
        ("password", dest.password.is_some(), Smtp),
        ("from", dest.from.is_some(), Smtp),
        ("message_id_domain", dest.message_id_domain.is_some(), Smtp),
        ("hello_name", dest.hello_name.is_some(), Smtp),
        ("pool", dest.pool.is_some(), Smtp),
        ("inbound", dest.inbound.is_some(), Telegram),
    ];
    for (field, set, kind) in fields {
        if set && kind != dest.kind {
            return Err(ConfigError::new(
                format!("destinations[{i}].{field}"),
                format!(
                    "belongs to `type = \"{}\"` destinations, not `{}`",
                    kind.as_str(),
                    dest.kind.as_str()
                ),
            ));
        }
    }
    Ok(())
}

/// Destination `i`'s `[destinations.inbound]`, checked field by field; the secret is read here.
fn resolve_inbound(i: usize, inbound: &InboundConfig) -> Result<ResolvedInbound, ConfigError> {
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

/// Checks every `inbound.forward_to`: another destination, and a webhook (a Telegram update is
/// not a valid Telegram or SMTP payload, so every forward there would be dead-lettered).
fn check_forwards(resolved: &[ResolvedDestination]) -> Result<(), ConfigError> {
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
type ConnectorParts = (String, Option<String>, ConnectorConfig);

/// Destination `i` as a webhook.
fn webhook_connector(
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
fn telegram_connector(
    i: usize,
    dest: &DestinationConfig,
    timeout: Duration,
) -> Result<ConnectorParts, ConfigError> {
    let at = |field: &str| format!("destinations[{i}].{field}");
    let Some(token) = &dest.bot_token else {
        return Err(ConfigError::new(
            at("bot_token"),
            "is required for a telegram destination",
        ));
    };
    let token: BotToken = token
        .expose(&at("bot_token"))?
        .trim()
        .parse()
        .map_err(|e| connector_error(i, e))?;
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
fn smtp_connector(
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

/// A connector's complaint about destination `i`, naming the field.
fn connector_error(i: usize, e: ferrule_connectors::ConnectorError) -> ConfigError {
    let field = format!("destinations[{i}].{}", e.field().unwrap_or("url"));
    let message = e.to_string();
    // The connector's message repeats the field name; keep only what follows it.
    let message = match message.split_once("`: ") {
        Some((_, rest)) if message.starts_with("invalid `") => rest.to_owned(),
        _ => message,
    };
    ConfigError::new(field, message)
}

/// Refuses zero.
fn positive(field: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(field, "must be at least 1"));
    }
    Ok(())
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

/// `base` with the fields of `over` (a table from the file) laid on top, as `T`.
fn overlay<T: Serialize + DeserializeOwned>(
    base: &T,
    over: Option<&serde_json::Value>,
    field: &str,
) -> Result<T, ConfigError> {
    let mut value = serde_json::to_value(base)
        .map_err(|e| ConfigError::new(field.to_owned(), e.to_string()))?;
    if let Some(over) = over {
        tables_stay_tables(over, &value, field)?;
        merge(&mut value, over);
    }
    serde_json::from_value(value).map_err(|e| ConfigError::new(field.to_owned(), e.to_string()))
}

/// Lays `over` onto `base`, table by table.
fn merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    // A tagged or exclusive table (backoff, window) is replaced whole.
                    Some(slot) if k != "backoff" && k != "window" => merge(slot, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// A figment error with its key path, in one line.
fn describe_figment(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let mut text = if path.is_empty() {
                e.kind.to_string()
            } else {
                format!("`{path}`: {}", e.kind)
            };
            if let Some(source) = &e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
                text.push_str(&format!(" (in {source})"));
            }
            text
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> Result<Config, LoadError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferrule.toml");
        std::fs::write(&path, text).unwrap();
        Config::load_with_env(Some(&path), Env::prefixed("FERRULE_TEST_NOTHING_"))
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/ferrule.example.toml");
        let config =
            Config::load_with_env(Some(&path), Env::prefixed("FERRULE_TEST_NOTHING_")).unwrap();
        let destinations = config.destinations().unwrap();
        assert_eq!(destinations[0].retry.max_attempts, 8);
        assert!(matches!(
            destinations[1].connector,
            ConnectorConfig::Telegram(_)
        ));
        assert!(matches!(
            destinations[2].connector,
            ConnectorConfig::Smtp(_)
        ));
    }

    #[test]
    fn telegram_and_smtp_destinations_resolve_their_secrets_and_fields() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("bot");
        std::fs::write(&token_file, "42:secret-part_XYZ\n").unwrap();
        let config = from_toml(&format!(
            r#"
            [[destinations]]
            name = "chat"
            type = "telegram"
            bot_token = "file:{}"
            api_base = "http://127.0.0.1:9"
            long_texts = "refuse"
            limits.per_chat = {{ limit = 2 }}
            [[destinations]]
            name = "mail"
            type = "smtp"
            host = "127.0.0.1"
            port = 2525
            tls = "none"
            username = "relay"
            password = "pw-secret-123"
            from = "ferrule <relay@example.com>"
            "#,
            token_file.display()
        ))
        .unwrap();
        let destinations = config.destinations().unwrap();
        let ConnectorConfig::Telegram(t) = &destinations[0].connector else {
            panic!("{:?}", destinations[0].connector);
        };
        assert_eq!(t.bot_token.bot_id(), 42);
        assert_eq!(t.long_texts, LongTexts::Refuse);
        assert_eq!(t.limits.per_chat.limit, 2, "overridden");
        assert_eq!(t.limits.per_chat.per, Duration::from_secs(1), "inherited");
        assert_eq!(t.limits.per_bot.limit, 30);
        assert_eq!(destinations[0].url, "http://127.0.0.1:9");
        let ConnectorConfig::Smtp(m) = &destinations[1].connector else {
            panic!("{:?}", destinations[1].connector);
        };
        assert_eq!(m.password.as_ref().unwrap().expose(), "pw-secret-123");
        assert_eq!(m.tls, TlsMode::None);
        assert_eq!(destinations[1].url, "smtp://127.0.0.1:2525");
        let shown = config.to_redacted_toml();
        assert!(!shown.contains("pw-secret-123"), "{shown}");
        assert!(shown.contains("bot_token = \"file:"), "{shown}");
        let inline = from_toml(
            r#"
            [[destinations]]
            name = "chat"
            type = "telegram"
            bot_token = "42:inline-secret"
            "#,
        )
        .unwrap();
        let shown = inline.to_redacted_toml();
        assert!(!shown.contains("inline-secret"), "{shown}");
        assert!(!format!("{inline:?}").contains("inline-secret"));
    }

    #[test]
    fn telegram_and_smtp_errors_name_the_field() {
        for (text, field) in [
            ("type = \"telegram\"", "destinations[0].bot_token"),
            (
                "type = \"telegram\"\nbot_token = \"nocolon\"",
                "destinations[0].bot_token",
            ),
            (
                "type = \"telegram\"\nbot_token = \"1:a\"\napi_base = \"http://example.com\"",
                "destinations[0].api_base",
            ),
            (
                "type = \"telegram\"\nbot_token = \"1:a\"\nlimits.per_bot = { limit = 0 }",
                "destinations[0].limits.per_bot.limit",
            ),
            (
                "type = \"telegram\"\nbot_token = \"1:a\"\nhost = \"x\"",
                "destinations[0].host",
            ),
            ("type = \"smtp\"\nfrom = \"a@b.c\"", "destinations[0].host"),
            ("type = \"smtp\"\nhost = \"h\"", "destinations[0].from"),
            (
                "type = \"smtp\"\nhost = \"h\"\nfrom = \"not a mailbox\"",
                "destinations[0].from",
            ),
            (
                "type = \"smtp\"\nhost = \"h\"\nfrom = \"a@b.c\"\nusername = \"u\"",
                "destinations[0].password",
            ),
            (
                "type = \"smtp\"\nhost = \"h\"\nfrom = \"a@b.c\"\nurl = \"https://x.y/\"",
                "destinations[0].url",
            ),
            (
                "type = \"webhook\"\nurl = \"https://x.y/\"\nbot_token = \"1:a\"",
                "destinations[0].bot_token",
            ),
        ] {
            let err = from_toml(&format!("[[destinations]]\nname = \"d\"\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
    }

    /// A Telegram destination `ops-bot` and a webhook destination `ops-hook`, then `alerts`.
    fn with_alerts(alerts: &str) -> Result<Config, LoadError> {
        from_toml(&format!(
            r#"
            [[destinations]]
            name = "ops-bot"
            type = "telegram"
            bot_token = "42:secret"
            [[destinations]]
            name = "ops-hook"
            type = "webhook"
            url = "https://example.com/alerts"
            [alerts]
            {alerts}
            "#
        ))
    }

    #[test]
    fn alerts_name_their_destinations_and_chat() {
        let config = with_alerts(
            r#"
            telegram = { destination = "ops-bot", chat_id = -1001234567890 }
            webhook = "ops-hook"
            dead_letter_threshold = 7
            min_interval = "1m"
            max_per_minute = 3
            "#,
        )
        .unwrap();
        let a = &config.alerts;
        let telegram = a.telegram.as_ref().unwrap();
        assert_eq!(telegram.destination, "ops-bot");
        assert_eq!(telegram.chat_id.parse(), Ok(ChatId::Id(-1001234567890)));
        assert_eq!(a.webhook.as_deref(), Some("ops-hook"));
        assert_eq!(a.dead_letter_threshold, 7);
        assert_eq!(a.min_interval, Duration::from_secs(60));
        assert_eq!(a.max_per_minute, 3);
        let channel =
            with_alerts(r#"telegram = { destination = "ops-bot", chat_id = "@ops_room" }"#)
                .unwrap();
        assert_eq!(
            channel.alerts.telegram.unwrap().chat_id.parse(),
            Ok(ChatId::Username("@ops_room".into()))
        );
        // An empty section sends nothing and keeps the defaults.
        let none = with_alerts("").unwrap();
        assert!(none.alerts.telegram.is_none() && none.alerts.webhook.is_none());
        assert_eq!(none.alerts.dead_letter_threshold, 100);
        assert_eq!(none.alerts.min_interval, Duration::from_secs(300));
        assert_eq!(none.alerts.max_per_minute, 20);
        // The shown config round-trips.
        let shown = config.to_redacted_toml();
        assert!(shown.contains("[alerts]"), "{shown}");
        assert!(shown.contains("webhook = \"ops-hook\""), "{shown}");
    }

    #[test]
    fn alert_errors_name_the_field() {
        for (alerts, field, says) in [
            (
                "webhook = \"nope\"",
                "alerts.webhook",
                "no destination named `nope`",
            ),
            (
                "webhook = \"ops-bot\"",
                "alerts.webhook",
                "telegram destination",
            ),
            (
                "telegram = { destination = \"ops-hook\", chat_id = 1 }",
                "alerts.telegram.destination",
                "webhook destination",
            ),
            (
                "telegram = { destination = \"ops-bot\", chat_id = \"ops\" }",
                "alerts.telegram.chat_id",
                "`@username`",
            ),
            (
                "telegram = { destination = \"ops-bot\", chat_id = 0 }",
                "alerts.telegram.chat_id",
                "",
            ),
            (
                "telegram = { destination = \"ops-bot\" }",
                "chat_id",
                "missing field",
            ),
            (
                "min_interval = \"500ms\"",
                "alerts.min_interval",
                "at least 1s",
            ),
            ("max_per_minute = 0", "alerts.max_per_minute", "at least 1"),
            ("email = \"x\"", "email", "unknown field"),
        ] {
            let err = with_alerts(alerts).unwrap_err().to_string();
            assert!(err.contains(field) && err.contains(says), "{alerts}: {err}");
        }
    }

    #[test]
    fn inbound_settings_resolve_with_their_defaults() {
        let config = from_toml(
            r#"
            [[destinations]]
            name = "app-hook"
            type = "webhook"
            url = "https://app.example.com/telegram"
            [[destinations]]
            name = "support"
            type = "telegram"
            bot_token = "42:secret"
            [destinations.inbound]
            mode = "webhook"
            secret_token = "s3cr3t_token-1"
            forward_to = "app-hook"
            callback_answer = "Got it"
            [[destinations]]
            name = "ops"
            type = "telegram"
            bot_token = "43:secret"
            inbound = { mode = "polling" }
            "#,
        )
        .unwrap();
        let destinations = config.destinations().unwrap();
        assert!(destinations[0].inbound.is_none());
        let support = destinations[1].inbound.as_ref().unwrap();
        assert_eq!(support.mode, InboundMode::Webhook);
        assert_eq!(
            support.secret_token.as_ref().unwrap().expose(),
            "s3cr3t_token-1"
        );
        assert_eq!(support.forward_to.as_deref(), Some("app-hook"));
        assert_eq!(support.callback_answer.as_deref(), Some("Got it"));
        assert!(!format!("{support:?}").contains("s3cr3t"));
        let ops = destinations[2].inbound.as_ref().unwrap();
        assert_eq!(ops.mode, InboundMode::Polling);
        assert_eq!(ops.poll_timeout, Duration::from_secs(30));
        assert!(ops.secret_token.is_none());
        let shown = config.to_redacted_toml();
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn inbound_errors_name_the_field() {
        let hook = "[[destinations]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"https://x.y/\"\n\
                    [[destinations]]\nname = \"mail\"\ntype = \"smtp\"\nhost = \"h\"\nfrom = \"a@b.c\"\n";
        let bot = "[[destinations]]\nname = \"bot\"\ntype = \"telegram\"\nbot_token = \"1:a\"\n";
        for (inbound, field, says) in [
            ("mode = \"webhook\"", "inbound.secret_token", "required"),
            (
                "mode = \"webhook\"\nsecret_token = \"has space\"",
                "inbound.secret_token",
                "A-Z",
            ),
            (
                &format!("mode = \"webhook\"\nsecret_token = \"{}\"", "a".repeat(257)),
                "inbound.secret_token",
                "256",
            ),
            (
                "mode = \"webhook\"\nsecret_token = \"env:FERRULE_TEST_UNSET_SECRET\"",
                "inbound.secret_token",
                "not set",
            ),
            (
                "mode = \"polling\"\nsecret_token = \"abc\"",
                "inbound.secret_token",
                "only with mode = \"webhook\"",
            ),
            (
                "mode = \"webhook\"\nsecret_token = \"abc\"\npoll_timeout = \"10s\"",
                "inbound.poll_timeout",
                "only with mode = \"polling\"",
            ),
            (
                "mode = \"polling\"\npoll_timeout = \"1500ms\"",
                "inbound.poll_timeout",
                "whole seconds",
            ),
            (
                "mode = \"polling\"\npoll_timeout = \"0s\"",
                "inbound.poll_timeout",
                "whole seconds",
            ),
            (
                "mode = \"polling\"\npoll_timeout = \"6m\"",
                "inbound.poll_timeout",
                "5m",
            ),
            (
                &format!(
                    "mode = \"polling\"\ncallback_answer = \"{}\"",
                    "x".repeat(201)
                ),
                "inbound.callback_answer",
                "200",
            ),
            (
                "mode = \"polling\"\ncallback_answer = \"\"",
                "inbound.callback_answer",
                "1 to 200",
            ),
            (
                "mode = \"polling\"\nforward_to = \"nowhere\"",
                "inbound.forward_to",
                "no destination",
            ),
            (
                "mode = \"polling\"\nforward_to = \"bot\"",
                "inbound.forward_to",
                "another destination",
            ),
            (
                "mode = \"polling\"\nforward_to = \"mail\"",
                "inbound.forward_to",
                "not a webhook",
            ),
        ] {
            let text = format!("{hook}{bot}[destinations.inbound]\n{inbound}\n");
            let err = from_toml(&text).unwrap_err().to_string();
            assert!(
                err.contains(&format!("destinations[2].{field}")) && err.contains(says),
                "{inbound}: {err}"
            );
        }
        // Only a Telegram destination receives updates.
        let err = from_toml(&format!(
            "{hook}[destinations.inbound]\nmode = \"polling\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("destinations[1].inbound"), "{err}");
        for bad in ["mode = \"push\"", "mode = \"polling\"\nsecret = \"x\""] {
            let err = from_toml(&format!("{bot}[destinations.inbound]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("inbound"), "{bad}: {err}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8080");
        assert_eq!(config.store_url().unwrap(), "sqlite://ferrule.db");
    }

    #[test]
    fn destination_policies_override_defaults_field_by_field() {
        let config = from_toml(
            r#"
            [defaults.retry]
            max_attempts = 5
            [[destinations]]
            name = "billing-hook"
            type = "webhook"
            url = "https://example.com/hook"
            secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            [destinations.retry]
            jitter = "none"
            "#,
        )
        .unwrap();
        let d = &config.destinations().unwrap()[0];
        assert_eq!(d.retry.max_attempts, 5, "inherited from [defaults]");
        assert_eq!(d.retry.jitter, Jitter::None, "overridden");
        assert_eq!(d.timeout, Duration::from_secs(15));
        assert_eq!(d.breaker.window, Window::Count(20));
    }

    /// Found by the `config` fuzz target: serde reads a struct from a list of its fields, so
    /// `[[defaults]]` twice was taken for `[defaults]` with `retry` and `breaker` reset to their
    /// own types' defaults (3 attempts instead of 10, a window of 100 calls instead of 20).
    #[test]
    fn a_list_where_a_table_belongs_is_refused() {
        let refused = |text: &str, field: &str| {
            let e = Config::from_toml_str(text).unwrap_err();
            assert!(matches!(e, LoadError::Parse(_)), "{e}");
            assert!(e.to_string().contains(&format!("`{field}`")), "{e}");
            assert!(e.to_string().contains("must be a table"), "{e}");
        };
        refused("[[defaults]]\n[[defaults]]\n", "defaults");
        refused("[[server]]\nlisten = \"127.0.0.1:1\"\n", "server");
        refused("[defaults]\nretry = []\n", "defaults.retry");
        refused("[[defaults.breaker.window]]\n", "defaults.breaker.window");
        let in_destination = from_toml(
            r#"
            [[destinations]]
            name = "a"
            type = "webhook"
            url = "https://example.com/a"
            [[destinations.retry]]
            max_attempts = 3
            "#,
        )
        .unwrap_err();
        assert!(
            in_destination.to_string().contains("destinations[0].retry"),
            "{in_destination}"
        );
        // Lists where lists belong still parse.
        let config =
            Config::from_toml_str("[auth]\ntokens = [\"a-long-enough-token-0123456789\"]\n")
                .unwrap();
        assert_eq!(config.auth.tokens.len(), 1);
    }

    #[test]
    fn errors_name_the_field() {
        let bad_url = from_toml(
            r#"
            [[destinations]]
            name = "a"
            type = "webhook"
            url = "https://example.com/a"
            [[destinations]]
            name = "b"
            type = "webhook"
            url = "ftp://example.com"
            "#,
        )
        .unwrap_err();
        assert!(
            bad_url.to_string().contains("destinations[1].url"),
            "{bad_url}"
        );
        let bad_retry = from_toml(
            r#"
            [[destinations]]
            name = "a"
            type = "webhook"
            url = "https://example.com/a"
            retry = { max_attempts = 0 }
            "#,
        )
        .unwrap_err();
        assert!(
            bad_retry
                .to_string()
                .contains("destinations[0].retry.max_attempts"),
            "{bad_retry}"
        );
        let unknown = from_toml("[server]\nlisten_on = \"x\"\n").unwrap_err();
        assert!(unknown.to_string().contains("listen_on"), "{unknown}");
        let secret = from_toml(
            r#"
            [[destinations]]
            name = "a"
            type = "webhook"
            url = "https://example.com/a"
            secret = "hunter2"
            "#,
        )
        .unwrap_err();
        assert!(
            secret.to_string().contains("destinations[0].secret"),
            "{secret}"
        );
        assert!(!secret.to_string().contains("hunter2"), "{secret}");
        let dup = from_toml(
            r#"
            [[destinations]]
            name = "a"
            type = "webhook"
            url = "https://example.com/a"
            [[destinations]]
            name = "a"
            type = "webhook"
            url = "https://example.com/b"
            "#,
        )
        .unwrap_err();
        assert!(dup.to_string().contains("destinations[1].name"), "{dup}");
        let probe = from_toml("[health]\nstore_timeout = \"0s\"\n").unwrap_err();
        assert!(
            probe.to_string().contains("health.store_timeout"),
            "{probe}"
        );
        let probe = from_toml("[health]\nstore_timeout = \"soon\"\n").unwrap_err();
        assert!(probe.to_string().contains("store_timeout"), "{probe}");
        let config = from_toml("[health]\nstore_timeout = \"250ms\"\n").unwrap();
        assert_eq!(config.health.store_timeout, Duration::from_millis(250));
        assert_eq!(
            Config::default().health.store_timeout,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn secrets_that_look_like_urls_or_hashes_are_redacted_whole() {
        // Found by the `config` fuzz target: a token with `://` in it was shown as a URL, in
        // full, and a password starting with `sha256:` by its first 8 characters.
        let config = Config::from_toml_str(
            r#"
            [store]
            url = "postgres://relay@db/ferrule?sslmode=require&pass%77ord=query-secret"
            [auth]
            tokens = ["plain-token-with://scheme-q7", "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]
            [[destinations]]
            name = "mail"
            type = "smtp"
            host = "127.0.0.1"
            from = "relay@example.com"
            username = "relay"
            password = "sha256:pw-secret://x"
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        let shown = config.to_redacted_toml();
        let debug = format!("{config:?}");
        for secret in ["scheme-q7", "pw-secret", "query-secret"] {
            assert!(!shown.contains(secret), "{secret}: {shown}");
            assert!(!debug.contains(secret), "{secret}: {debug}");
        }
        assert!(shown.contains(r#""sha256:2c26b46b…""#), "{shown}");
        assert!(
            shown.contains("postgres://relay@db/ferrule?sslmode=require&password=***"),
            "{shown}"
        );
    }

    #[test]
    fn store_urls_lose_their_passwords_where_the_driver_finds_them() {
        for (url, shown) in [
            ("postgres://u:pw@db:5432/x", "postgres://u:***@db:5432/x"),
            ("postgres://u:p@ss@db/x", "postgres://u:***@db/x"),
            ("postgres://u:pw@db/x@y", "postgres://u:***@db/x@y"),
            (
                "postgres://db/x?password=pw&sslmode=off",
                "postgres://db/x?password=***&sslmode=off",
            ),
            (
                "postgres://db/x?a=1#password=pw",
                "postgres://db/x?a=1#password=pw",
            ),
            ("postgres://u@db/x", "postgres://u@db/x"),
            ("sqlite://ferrule.db", "sqlite://ferrule.db"),
            ("sqlite:relative.db", "sqlite:relative.db"),
            // Found by the `config` fuzz target: without `scheme://` the query was left as is.
            (
                "sqlite:ferrule.db?password=pw&mode=rwc",
                "sqlite:ferrule.db?password=***&mode=rwc",
            ),
            (
                "sqlite:x.db?next=http://h&password=pw",
                "sqlite:x.db?next=http://h&password=***",
            ),
            (
                "postgres:/u:pw@db/x?password=pw#f",
                "postgres:/u:pw@db/x?password=***#f",
            ),
            ("sqlite:u:p@h.db", "sqlite:u:p@h.db"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_output() {
        let config = from_toml(
            r#"
            [store]
            url = "postgres://relay:pw123@db/ferrule"
            [auth]
            tokens = ["plain-token-value"]
            [[destinations]]
            name = "a"
            type = "webhook"
            url = "https://example.com/a"
            secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            "#,
        )
        .unwrap();
        let shown = config.to_redacted_toml();
        for secret in [
            "pw123",
            "plain-token-value",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(!format!("{config:?}").contains(secret));
        }
        assert!(shown.contains("whsec_***"), "{shown}");
        assert!(shown.contains("relay:***@db"), "{shown}");
    }
}
