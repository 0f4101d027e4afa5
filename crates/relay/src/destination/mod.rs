//! A destination at run time: its connector and its policies, built once from the config, with
//! what belongs to it beyond them: a Telegram bot's send limits ([`TelegramLimiters`]), its
//! inbound side ([`Inbound`]), a GitHub token's pace for writes ([`WritePace`], shared by the
//! destinations acting with one token), the stored overrides of its breaker
//! ([`Overrides`]), and whether an operator paused it ([`PausedDestinations`]).
//!
//! The API, the dispatcher, the inbound handlers and the shared state all hold destinations, so
//! they sit below all of them rather than inside `dispatch/`: imports keep pointing one way.

mod http;
mod inbound;
pub mod overrides;
pub mod paused;
pub mod rate_watch;
pub mod shared_breaker;
pub mod shared_limits;
mod telegram_limits;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrule_policy::breaker::CircuitBreaker;
use ferrule_policy::bulkhead::Bulkhead;
use ferrule_policy::chaos::{Chaos, Environment};
use ferrule_policy::event::{FanOut, MetricsObserver, TracingObserver};
use ferrule_policy::rate_limit::RateLimiter;
use ferrule_policy::retry::Retry;
use ferrule_policy::timeout::{Timeout, TimeoutConfig};
use ferrule_policy::{ConfigError, Context, SharedClock, SharedObserver};

use ferrule_connectors::github::{GithubConnector, WritePace};
use ferrule_connectors::http::HttpConnector;
use ferrule_connectors::smtp::SmtpConnector;
use ferrule_connectors::telegram::TelegramConnector;
use ferrule_connectors::webhook::WebhookConnector;
use ferrule_connectors::{AnyConnector, ConnectorError};

use crate::config::{ConnectorConfig, DestinationKind, HealthConfig, ResolvedDestination};
use crate::health::Health;
use crate::telemetry::prometheus::BreakerStateGauge;

pub use self::http::ProxyPolicies;
pub use self::inbound::Inbound;
pub use self::overrides::{Override, OverrideState, Overrides};
pub use self::paused::PausedDestinations;
pub use self::rate_watch::{RateState, RateWatch};
pub use self::telegram_limits::{TelegramLimiters, TelegramSend, TelegramWindows};

/// One destination's connector and policies.
pub struct Destination {
    /// Delivers one attempt.
    pub connector: AnyConnector,
    /// The name messages are submitted to.
    pub name: String,
    /// Its type, as configured.
    pub kind: DestinationKind,
    /// The endpoint, for logs and `/v1/destinations`, as
    /// [`redact_url`](crate::config::redact_url) shows it.
    pub endpoint: String,
    /// Durable retry decisions.
    pub retry: Retry,
    /// The circuit breaker.
    pub breaker: CircuitBreaker,
    /// The rate limiter, if configured.
    pub rate_limit: Option<RateLimiter>,
    /// Concurrent deliveries.
    pub bulkhead: Bulkhead,
    /// Per-attempt timeout.
    pub timeout: Timeout,
    /// Fault injection.
    pub chaos: Chaos,
    /// Health for `/status`.
    pub health: Health,
    /// A Telegram bot's send rates, per chat, per group and per bot.
    pub telegram_limits: Option<TelegramLimiters>,
    /// A GitHub token's write pace kept with the other relays on the store, if shared.
    pub shared_pace: Option<shared_limits::SharedPace>,
    /// The deliveries its rate limits deferred lately, for `/status` and the dashboard.
    pub rate_watch: RateWatch,
    /// How a Telegram bot receives updates, if it does.
    pub inbound: Option<Inbound>,
    /// Whether a webhook accepts any JSON value as a payload, not only an object or an array
    /// (`any_json = true`).
    pub any_json: bool,
    /// Its active health check, if it has one.
    pub health_check: Option<crate::health::checks::ActiveCheck>,
    /// An `http` destination's proxy side: fallbacks, deadline, in-memory retries.
    pub proxy: Option<ProxyPolicies>,
    /// A GitHub token's pace for writes: one at a time, `min_write_interval` apart. Every
    /// destination acting with the token holds the same one ([`Self::share_write_pace`]).
    pub write_pace: Option<Arc<WritePace>>,
    /// No attempt starts before this instant (a Telegram bot's flood control, a GitHub
    /// token's rate limit).
    paused_until: Mutex<Option<Instant>>,
    /// The clock the pause is measured on.
    clock: SharedClock,
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Destination")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// Why a destination could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A policy's configuration is invalid.
    #[error("invalid `{}`: {}", .0.field(), .0.message())]
    Policy(#[from] ConfigError),
    /// The connector refused its configuration.
    #[error(transparent)]
    Connector(ConnectorError),
}

impl Destination {
    /// Builds the policies of `config`, all reading `clock`, reporting to `tracing` and
    /// `metrics` under the destination's name.
    pub fn build(
        config: &ResolvedDestination,
        clock: SharedClock,
        environment: Environment,
        health: HealthConfig,
    ) -> Result<Self, BuildError> {
        Self::build_observed(config, clock, environment, health, None)
    }

    /// [`build`](Self::build), with the policies also reporting to `observer` (the alerts'
    /// breaker watch).
    pub fn build_observed(
        config: &ResolvedDestination,
        clock: SharedClock,
        environment: Environment,
        health: HealthConfig,
        observer: Option<SharedObserver>,
    ) -> Result<Self, BuildError> {
        let connector_error = |e: ConnectorError| {
            BuildError::Connector(e.within(&format!("destinations.{}", config.name)))
        };
        let connector = match &config.connector {
            ConnectorConfig::Webhook(c) => AnyConnector::from(
                WebhookConnector::new(c.clone(), clock.clone()).map_err(connector_error)?,
            ),
            ConnectorConfig::Telegram(c) => AnyConnector::from(
                TelegramConnector::new(c.clone(), clock.clone()).map_err(connector_error)?,
            ),
            ConnectorConfig::Smtp(c) => AnyConnector::from(
                SmtpConnector::new(c.clone(), clock.clone()).map_err(connector_error)?,
            ),
            ConnectorConfig::Github(c) => AnyConnector::from(
                GithubConnector::new(c.clone(), clock.clone()).map_err(connector_error)?,
            ),
            ConnectorConfig::Http(c) => AnyConnector::from(
                HttpConnector::new(c.clone(), clock.clone()).map_err(connector_error)?,
            ),
        };
        let write_pace = match &connector {
            AnyConnector::Github(github) => Some(Arc::new(WritePace::new(
                github.min_write_interval(),
                clock.clone(),
            ))),
            _ => None,
        };
        let telegram_limits = match &config.connector {
            ConnectorConfig::Telegram(c) => Some(c.limits.clone()),
            _ => None,
        };
        let mut observers: Vec<SharedObserver> = vec![
            Arc::new(TracingObserver),
            Arc::new(MetricsObserver),
            Arc::new(BreakerStateGauge),
        ];
        observers.extend(observer);
        let observer = Arc::new(FanOut(observers));
        let ctx = Context::new(config.name.clone())
            .with_clock(clock.clone())
            .with_observer(observer);
        let within = |field: &str| format!("destinations.{}.{field}", config.name);
        Ok(Destination {
            connector,
            name: config.name.clone(),
            kind: config.connector.kind(),
            endpoint: config.url.clone(),
            retry: Retry::with_context(config.retry.clone(), ctx.clone())
                .map_err(|e| e.within(&within("retry")))?,
            breaker: CircuitBreaker::with_context(config.breaker.clone(), ctx.clone())
                .map_err(|e| e.within(&within("breaker")))?,
            rate_limit: match &config.rate_limit {
                None => None,
                Some(rl) => Some(
                    RateLimiter::with_context(rl.clone(), ctx.clone())
                        .map_err(|e| e.within(&within("rate_limit")))?,
                ),
            },
            bulkhead: Bulkhead::with_context(config.bulkhead.clone(), ctx.clone())
                .map_err(|e| e.within(&within("bulkhead")))?,
            timeout: Timeout::with_context(TimeoutConfig::new(config.timeout), ctx.clone())
                .map_err(|e| e.within(&within("timeout")))?,
            chaos: Chaos::with_context(config.chaos.clone(), environment, ctx.clone())
                .map_err(|e| e.within(&within("chaos")))?,
            inbound: config
                .inbound
                .as_ref()
                .map(|i| Inbound::new(i, health.clone())),
            health: Health::new(health),
            any_json: config.any_json,
            health_check: config
                .health_check
                .clone()
                .map(|c| crate::health::checks::ActiveCheck::new(c, clock.system_now())),
            telegram_limits: match telegram_limits {
                None => None,
                Some(limits) => Some(
                    TelegramLimiters::new(&limits, &ctx)
                        .map_err(|e| e.within(&format!("destinations.{}", config.name)))?,
                ),
            },
            proxy: match &config.proxy {
                None => None,
                Some(settings) => Some(
                    ProxyPolicies::new(settings.clone(), ctx.clone())
                        .map_err(|e| e.within(&within("proxy_retry")))?,
                ),
            },
            write_pace,
            shared_pace: None,
            paused_until: Mutex::new(None),
            rate_watch: RateWatch::new(clock.clone()),
            clock,
        })
    }

    /// Takes the write pace of the first of `others` that acts with the same GitHub token, if
    /// one does: GitHub paces the token, not the destination. (The configuration refuses two
    /// such destinations with different `min_write_interval`s.)
    pub fn share_write_pace<'a>(&mut self, others: impl IntoIterator<Item = &'a Destination>) {
        if let Some(other) = others
            .into_iter()
            .find(|other| self.shares_token_with(other))
        {
            self.write_pace.clone_from(&other.write_pace);
        }
    }

    /// Whether `other` acts with the same GitHub token on the same API (this one included):
    /// a rate limit or a rejection of the token is theirs too.
    pub fn shares_token_with(&self, other: &Destination) -> bool {
        match (&self.connector, &other.connector) {
            (AnyConnector::Github(mine), AnyConnector::Github(theirs)) => {
                mine.shares_token_with(theirs)
            }
            _ => false,
        }
    }

    /// Pauses every attempt to this destination for `duration` from now (a pause already
    /// reaching further is kept).
    pub fn pause(&self, duration: Duration) {
        let until = self.clock.now() + duration;
        let mut paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if paused.is_none_or(|p| p < until) {
            *paused = Some(until);
        }
    }

    /// When the current pause ends, if one is running.
    pub fn paused_until(&self) -> Option<Instant> {
        let paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        paused.filter(|&until| until > self.clock.now())
    }
}

/// Calls `read` every `period` on `clock` until `stop`: how a relay sharing its store with
/// others follows what they write there (breaker overrides, pauses, routes' chats). A read that
/// fails is logged as one of `what` and tried again a period later.
pub async fn follow_every<T, Fut>(
    clock: &SharedClock,
    period: Duration,
    stop: &tokio_util::sync::CancellationToken,
    what: &str,
    mut read: impl FnMut() -> Fut,
) where
    Fut: std::future::Future<Output = Result<T, ferrule_store::StoreError>>,
{
    loop {
        tokio::select! {
            () = clock.sleep(period) => {}
            () = stop.cancelled() => return,
        }
        if let Err(e) = read().await {
            tracing::warn!(error = %e, "cannot read {what}");
        }
    }
}
