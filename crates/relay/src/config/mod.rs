//! The relay's configuration: one serde struct, loaded from defaults, a TOML file and
//! `FERRULE_*` environment variables, then validated with errors that name the field.

mod alerts;
mod auth;
mod defaults;
mod destinations;
mod dispatcher;
mod health;
mod health_check;
mod http;
#[cfg(test)]
mod http_tests;
mod inbound;
mod load;
mod routes;
mod schedules;
mod secret;
mod server;
mod store;
mod telegram_inbound;
#[cfg(test)]
mod tests;
mod ui;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ferrule_policy::ConfigError;
use figment::providers::Env;
use serde::{Deserialize, Serialize};

pub use self::alerts::{AlertsConfig, ChatRef, TelegramAlerts};
pub use self::auth::{AuthConfig, ConfiguredToken};
pub use self::defaults::PolicyDefaults;
pub use self::destinations::{
    ConnectorConfig, DestinationConfig, DestinationKind, GITHUB_REQUESTS_PER_ATTEMPT,
    ResolvedDestination, check_webhook_secret,
};
use self::destinations::{check_forwards, check_shared_tokens};
pub use self::dispatcher::DispatcherConfig;
pub use self::health::HealthConfig;
pub use self::health_check::HealthCheckConfig;
pub use self::http::ProxySettings;
pub use self::inbound::{
    DEFAULT_MAX_MAIL_SIZE, EmailSource, EmailSourceConfig, InboundSection, MAX_MAIL_SIZE,
    check_source_secret,
};
use self::load::{extract, layered};
pub use self::routes::{
    ButtonConfig, ChatMapping, DEFAULT_WAIT, EndStatus, MAX_WAIT, RouteConfig, StepConfig,
    StepKind, TriggerConfig, TriggerKind, kind_name,
};
pub use self::schedules::{CatchUp, MAX_CATCH_UP, ScheduleConfig, parse_cron, parse_timezone};
pub use self::secret::{Secret, SecretDigest, redact_url};
pub use self::server::ServerConfig;
pub use self::store::StoreConfig;
pub use self::telegram_inbound::{
    InboundConfig, InboundMode, ResolvedInbound, SecretToken, check_secret_token,
};
pub use self::ui::UiConfig;

/// The top-level sections an environment variable may address (`FERRULE_<SECTION>__…`).
const SECTIONS: [&str; 9] = [
    "server",
    "store",
    "auth",
    "dispatcher",
    "health",
    "defaults",
    "inbound",
    "alerts",
    "ui",
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
    /// What the relay receives from outside: e-mail sources.
    pub inbound: InboundSection,
    /// Where the relay reports its own trouble (default: nowhere).
    pub alerts: AlertsConfig,
    /// `[[routes]]`: multi-step workflows started by inbound events (`docs/ROUTES.md`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// `[ui]`: the dashboard's sessions and bulk jobs.
    pub ui: UiConfig,
    /// `[[schedules]]`: cron patterns that fire messages or runs, each occurrence once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleConfig>,
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

    /// Loads as [`load`](Self::load) does but does **not** validate: for a command that needs
    /// one value (`ferrule status` reads `server.listen`) where the relay's secrets (`env:`,
    /// `file:`) may not be readable.
    pub fn load_unvalidated(path: Option<&Path>) -> Result<Config, LoadError> {
        Self::read_with_env(path, Env::prefixed("FERRULE_"))
    }

    fn load_with_env(path: Option<&Path>, env: Env) -> Result<Config, LoadError> {
        let config = Self::read_with_env(path, env)?;
        config.validate()?;
        Ok(config)
    }

    fn read_with_env(path: Option<&Path>, env: Env) -> Result<Config, LoadError> {
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
        extract(layered(text.as_deref()).merge(env))
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
        if let Some(metrics) = &self.server.metrics_listen {
            let addr = metrics.parse::<SocketAddr>().map_err(|e| {
                ConfigError::new("server.metrics_listen", format!("not an address: {e}"))
            })?;
            if metrics == &self.server.listen && addr.port() != 0 {
                return Err(ConfigError::new(
                    "server.metrics_listen",
                    "is server.listen: leave it out to serve /metrics on the API's address only",
                ));
            }
        }
        positive("server.max_body_bytes", self.server.max_body_bytes as u64)?;
        self.ui.validate()?;
        positive("server.max_queue_depth", self.server.max_queue_depth)?;
        positive("server.max_scheduled", self.server.max_scheduled)?;
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
        for (field, d) in [
            ("store.idempotency_window", self.store.idempotency_window),
            ("store.operation_timeout", self.store.operation_timeout),
            ("store.pool_wait_warn", self.store.pool_wait_warn),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(field, "must be longer than zero"));
            }
        }
        crate::auth::Tokens::configured(&self.auth)?;
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
            ("server.max_deliver_after", self.server.max_deliver_after),
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
        http::check_fallbacks(&resolved)?;
        check_shared_tokens(&resolved)?;
        self.email_sources()?;
        self.validate_alerts()?;
        self.validate_routes()?;
        self.validate_schedules()?;
        crate::template::Templates::compile(&self.routes)?;
        crate::template::Templates::compile_schedules(&self.schedules).map(drop)
    }
    /// The effective configuration as TOML with every secret redacted (`config check`): each
    /// destination shows the policies it runs with (its own tables laid over `[defaults]`),
    /// or, when they do not resolve, its tables as written.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        for (i, dest) in shown.destinations.iter_mut().enumerate() {
            if let Ok(policies) = self.policies(i) {
                policies.show_in(dest, &self.defaults);
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// What is valid but probably not meant, one line each, naming the field: a webhook
    /// without `secret` (nor `unsigned = true`) sends requests its receiver cannot verify.
    /// `serve` logs each at WARN when it starts; `config check` prints them on stderr.
    pub fn warnings(&self) -> Vec<String> {
        self.destinations
            .iter()
            .enumerate()
            .filter(|(_, d)| {
                d.kind == DestinationKind::Webhook && d.secret.is_none() && !d.unsigned
            })
            .map(|(i, d)| {
                format!(
                    "`destinations[{i}].secret` is not set: webhook destination `{}` sends \
                     unsigned requests its receiver cannot verify; set a secret, or \
                     `unsigned = true` if that is intended",
                    d.name.trim()
                )
            })
            .collect()
    }

    /// Checks that `name`, given in `field`, is a configured destination of kind `wanted`.
    fn destination_of_kind(
        &self,
        field: &str,
        name: &str,
        wanted: DestinationKind,
    ) -> Result<(), ConfigError> {
        let Some(dest) = self.destinations.iter().find(|d| d.name.trim() == name) else {
            return Err(ConfigError::new(
                field.to_owned(),
                format!("no destination named `{name}` is configured"),
            ));
        };
        if dest.kind != wanted {
            return Err(ConfigError::new(
                field.to_owned(),
                format!(
                    "`{name}` is a {} destination; this needs a {} one",
                    dest.kind.as_str(),
                    wanted.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// The store URL to open.
    pub fn store_url(&self) -> Result<String, ConfigError> {
        self.store.url.expose("store.url")
    }
}

/// Refuses zero.
fn positive(field: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(field, "must be at least 1"));
    }
    Ok(())
}
