//! `serve`: open the store, set up auth, start the API and the dispatcher under one
//! cancellation token, and shut down gracefully on SIGTERM/SIGINT.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrule_policy::SharedClock;
use ferrule_policy::duration::millis;
use ferrule_policy::event::{FanOut, SharedObserver};
use ferrule_store::{AnyStore, Store, StoreOptions};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerts::{Alert, Alerts};
use crate::auth::{self, Role, TokenSet, Tokens, stored};
use crate::cli::console;
use crate::config::Config;
use crate::destination::shared_breaker::SharedBreakers;
use crate::destination::{Destination, Overrides, PausedDestinations};
use crate::error::Error;
use crate::health::{Depths, Health};
use crate::state::{AppState, Counters, Shared, ShutdownStep};

/// How long a shared send window (a Telegram chat's, group's or bot's, a GitHub token's) stays
/// in the store with no send through it, at least: past `store.retention` if that is longer.
const IDLE_SEND_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How the relay is started (tests swap the clock).
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The clock the store, the policies and the dispatcher read.
    pub clock: SharedClock,
    /// Whether to print the start-up banner (listen address, generated token, curl line).
    pub banner: bool,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            clock: ferrule_policy::clock::system(),
            banner: true,
        }
    }
}

/// A started relay.
#[derive(Debug)]
pub struct Running {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// Where `server.metrics_listen` serves `/metrics`, when it is set.
    pub metrics_addr: Option<SocketAddr>,
    /// The shared state (store, destinations, counters).
    pub state: AppState,
    /// The token generated at this start, if one was (it is shown only once).
    pub generated_token: Option<String>,
    task: JoinHandle<Result<(), Error>>,
}

impl Running {
    /// Starts a graceful shutdown, as SIGTERM does: `/readyz` and submissions answer 503
    /// `shutting_down` for `server.shutdown_delay`, then the listener closes and deliveries
    /// drain. A second call, like a second signal, skips the rest of the delay.
    pub fn shutdown(&self) -> ShutdownStep {
        self.state.request_shutdown()
    }

    /// Waits until the relay has stopped.
    pub async fn wait(self) -> Result<(), Error> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(Error::Other(format!("the relay task failed: {e}"))),
        }
    }
}

/// Store options from the config.
fn store_options(config: &Config, clock: SharedClock) -> StoreOptions {
    StoreOptions {
        max_payload_bytes: config.server.max_body_bytes,
        idempotency_window: config.store.idempotency_window,
        fifo_dead_letter_policy: config.store.fifo_dead_letter_policy,
        synchronous: config.store.synchronous,
        operation_timeout: config.store.operation_timeout,
        pool_observer: Some(crate::health::pool::observer(
            config.store.pool_wait_warn,
            clock.clone(),
        )),
        ..StoreOptions::with_clock(clock)
    }
}

/// Opens the store named in the config.
pub async fn open_store(config: &Config, clock: SharedClock) -> Result<AnyStore, Error> {
    let url = config.store_url().map_err(|e| Error::Config(e.into()))?;
    Ok(ferrule_store::open(&url, store_options(config, clock)).await?)
}

/// `migrate`: opening the store applies every migration.
pub async fn migrate(config: &Config) -> Result<(), Error> {
    let store = open_store(config, ferrule_policy::clock::system()).await?;
    drop(store);
    console::err(&format!(
        "store {} is migrated to the current schema",
        crate::config::redact_url(&config.store_url().unwrap_or_default())
    ));
    Ok(())
}

/// The accepted tokens: the configured ones and the stored ones (an older relay's generated
/// token moved to `default` first); when no admin token is among them, a new `default` one
/// (returned so the banner shows it once).
async fn load_tokens(
    config: &Config,
    store: &AnyStore,
    now: std::time::SystemTime,
) -> Result<(TokenSet, Option<String>), Error> {
    let configured = Tokens::configured(&config.auth).map_err(|e| Error::Config(e.into()))?;
    if config.auth.tokens.is_empty() {
        stored::migrate_legacy(store, now).await?;
    }
    let (mut from_store, damaged) = stored::load(store).await?;
    for name in damaged {
        tracing::warn!(
            "the stored API token `{name}` is damaged and not accepted; \
             revoke it with `ferrule token revoke {name}`"
        );
    }
    let mut generated = None;
    if !configured.has_admin() && !from_store.has_admin() {
        let (name, token) = stored::generate_admin(store, now)
            .await
            .map_err(|e| match e {
                stored::CreateError::Store(e) => Error::Store(e),
                e => Error::Other(e.to_string()),
            })?;
        tracing::info!(name, "generated an admin API token");
        let entry = crate::audit::entry("relay", crate::audit::Action::TokenCreate)
            .target(&name)
            .detail(serde_json::json!({"role": "admin", "generated": true}));
        crate::audit::record(store, entry).await;
        from_store.push(auth::hash(&token), Role::Admin, Some(name));
        generated = Some(token);
    }
    Ok((TokenSet::new(configured, from_store), generated))
}

/// Starts the relay: store, auth, destinations, API listener and background tasks. Returns
/// once it listens.
pub async fn start(config: Config, options: StartOptions) -> Result<Running, Error> {
    // Listen first: a start that fails (a port already taken) must fail before a token is
    // generated, or its hash would be stored and the token itself never shown.
    let listen = config.server.listen.clone();
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|source| Error::Io {
            context: format!("cannot listen on {listen}"),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Io {
        context: "cannot read the listening address".into(),
        source,
    })?;
    let metrics_listener = match &config.server.metrics_listen {
        Some(at) => Some(TcpListener::bind(at).await.map_err(|source| Error::Io {
            context: format!("cannot listen on {at} (server.metrics_listen)"),
            source,
        })?),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr().map_err(|source| Error::Io {
            context: "cannot read the metrics listening address".into(),
            source,
        })?),
        None => None,
    };
    let (state, generated_token) = build_state(config, options.clock.clone()).await?;
    if options.banner {
        banner(&state, addr, generated_token.as_deref());
        if let Some(at) = metrics_addr {
            console::out(&format!("metrics at http://{at}/metrics\n"));
        }
    }
    if let Some(listener) = metrics_listener {
        tokio::spawn(serve_metrics(state.clone(), listener));
    }
    // Before the task: a schedule never recorded starts from this moment.
    crate::schedules::run(&state);
    let task = tokio::spawn(run(state.clone(), listener));
    Ok(Running {
        addr,
        metrics_addr,
        state,
        generated_token,
        task,
    })
}

/// Validates `config`, opens the store (recovering stale leases), loads the tokens and builds
/// the destinations: the state `start` serves; also the generated token, if one was.
pub(crate) async fn build_state(
    config: Config,
    clock: SharedClock,
) -> Result<(AppState, Option<String>), Error> {
    config.validate().map_err(|e| Error::Config(e.into()))?;
    // Installed first, so that every series registered from here on is exported.
    let metrics = crate::telemetry::metrics();
    crate::telemetry::prometheus::register_relay_series();
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let store = open_store(&config, clock.clone()).await?;
    crate::health::pool::register(store.load().pool.is_some());
    let recovered = store.recover_expired_leases().await?;
    let recovered_at_open = match &store {
        AnyStore::Sqlite(s) => s.recovered_at_open(),
        #[allow(unreachable_patterns)]
        _ => 0,
    };
    tracing::info!(
        count = recovered + recovered_at_open,
        "recovered stale leases at start"
    );
    let owner = format!("ferrule-{}-{}", std::process::id(), ulid::Ulid::new());
    let depths = Arc::new(Depths::default());
    let alerts = Alerts::new(
        &config.alerts,
        store.clone(),
        depths.clone(),
        clock.clone(),
        owner.clone(),
    );
    let mut shared_breakers = SharedBreakers::new(owner.clone());
    let shared_limits =
        crate::destination::shared_limits::SharedLimits::new(owner.clone(), clock.clone());
    let several = !matches!(store, AnyStore::Sqlite(_));
    let mut destinations: BTreeMap<String, Arc<Destination>> = BTreeMap::new();
    for resolved in config.destinations().map_err(|e| Error::Config(e.into()))? {
        let mut observers: Vec<SharedObserver> =
            alerts.observer(&resolved.name).into_iter().collect();
        if resolved.shared_breaker {
            observers.push(shared_breakers.share(&resolved.name));
        }
        let observer: Option<SharedObserver> = match observers.len() {
            0 => None,
            1 => observers.pop(),
            _ => Some(Arc::new(FanOut(observers))),
        };
        let mut destination = Destination::build_observed(
            &resolved,
            clock.clone(),
            config.server.environment,
            config.health.clone(),
            observer,
        )
        .map_err(|e| match e {
            crate::destination::BuildError::Policy(e) => Error::Config(e.into()),
            crate::destination::BuildError::Connector(e) => Error::Connector(e),
        })?;
        destination.share_write_pace(destinations.values().map(AsRef::as_ref));
        // Telegram counts a bot's sends however many relays make them: on a store several
        // relays may share, so do the windows.
        let attempt_timeout = destination.timeout.timeout();
        if let (true, crate::config::ConnectorConfig::Telegram(c), Some(limits)) = (
            several,
            &resolved.connector,
            destination.telegram_limits.as_mut(),
        ) && c.limits.shared
        {
            limits.share(shared_limits.clone(), &resolved.name, attempt_timeout);
        }
        // GitHub paces a token, however many relays write with it.
        if several
            && resolved.shared_pace
            && let Some(pace) = &destination.write_pace
        {
            let first = destinations
                .values()
                .find(|other: &&Arc<Destination>| destination.shares_token_with(other))
                .map_or(resolved.name.clone(), |other| other.name.clone());
            destination.shared_pace = Some(crate::destination::shared_limits::SharedPace::new(
                shared_limits.clone(),
                &first,
                pace.interval(),
                attempt_timeout,
            ));
        }
        destinations.insert(resolved.name.clone(), Arc::new(destination));
    }
    let email_sources: BTreeMap<_, _> = config
        .email_sources()
        .map_err(|e| Error::Config(e.into()))?
        .into_iter()
        .map(|source| (source.name.clone(), source))
        .collect();
    let routes = crate::routes::Routes::compile(&config, clock.clone())
        .map_err(|e| Error::Config(e.into()))?;
    routes.load_chats(&store).await?;
    let schedules =
        crate::schedules::Schedules::compile(&config).map_err(|e| Error::Config(e.into()))?;
    let overrides = Overrides::load(&store, &destinations).await?;
    let paused = PausedDestinations::load(&store, |d| destinations.contains_key(d)).await?;
    // Last of what can fail: a token generated here is shown by the banner right after.
    let (tokens, generated_token) = load_tokens(&config, &store, clock.system_now()).await?;
    for (name, d) in &destinations {
        crate::telemetry::prometheus::register_destination_series(name, d.inbound.is_some());
        if d.health_check.is_some() {
            crate::telemetry::prometheus::register_health_check_series(name);
        }
    }
    for name in email_sources.keys() {
        crate::telemetry::prometheus::register_email_source_series(name);
    }
    for route in routes.iter() {
        crate::telemetry::prometheus::register_route_series(&route.config.name);
    }
    crate::api::register_proxy_series(&destinations);
    let state: AppState = Arc::new(Shared {
        store,
        tokens,
        destinations,
        email_sources,
        routes,
        schedules,
        overrides,
        paused,
        counters: Counters::default(),
        depths,
        store_health: Health::new(config.health.clone()),
        storage: Default::default(),
        heartbeat: Default::default(),
        shutdown_requested: CancellationToken::new(),
        shutdown_requested_at: Default::default(),
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        started: Instant::now(),
        clock,
        metrics,
        owner,
        alerts,
        wakeups: Default::default(),
        rollups: crate::rollups::Rollups::new(config.store.rollups()),
        shared_breakers,
        shared_limits,
        config,
    });
    if recovered + recovered_at_open > 0 {
        let alert =
            Alert::startup_recovery(recovered + recovered_at_open, state.clock.system_now());
        state.alerts.raise(alert).await;
    }
    state.refresh_depths().await;
    Ok((state, generated_token))
}

/// Prints where the relay listens and a curl line that submits a message.
fn banner(state: &Shared, addr: SocketAddr, token: Option<&str>) {
    let destinations: Vec<&str> = state.destinations.keys().map(String::as_str).collect();
    console::out(&banner_text(addr, token, &destinations));
}

/// The banner: the address, the token generated at this start (if one was) and a curl line
/// that works when pasted into a POSIX shell: the header is in double quotes, so
/// `$FERRULE_TOKEN` is expanded.
fn banner_text(addr: SocketAddr, token: Option<&str>, destinations: &[&str]) -> String {
    let base = format!("http://{addr}");
    let mut text = format!(
        "ferrule {} listening on {base}\n",
        env!("CARGO_PKG_VERSION")
    );
    let token_shown = match token {
        Some(token) => {
            text.push_str(&format!(
                "generated admin API token (shown only this once; only its hash is stored):\n  \
                 {token}\n(lost it? stop the relay and run `ferrule token create --name NAME`)\n"
            ));
            token
        }
        None => "$FERRULE_TOKEN",
    };
    let destination = destinations.first().copied().unwrap_or("<destination>");
    if destinations.is_empty() {
        text.push_str(
            "no destinations configured yet: add a [[destinations]] table to the config\n",
        );
    }
    text.push_str(&format!(
        "submit a message:\n  curl -sS -X POST {base}/v1/messages -H \"Authorization: Bearer {token_shown}\" \
         -H 'Content-Type: application/json' -d '{{\"destination\": \"{destination}\", \"payload\": {{\"hello\": \"world\"}}}}'"
    ));
    text
}

/// Serves until shutdown, then drains and joins every background task.
async fn run(state: AppState, listener: TcpListener) -> Result<(), Error> {
    let tracker = state.tasks.clone();
    let shutdown = state.shutdown.clone();
    // Background: depths and gauges, retention.
    {
        let state = state.clone();
        tracker.spawn(async move {
            // The depths were read just before start: the first refresh is due a period later.
            let period = Duration::from_secs(1);
            let mut next = tokio::time::Instant::now() + period;
            let mut last_purge = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = state.shutdown.cancelled() => break,
                    _ = tokio::time::sleep_until(next) => {}
                }
                let started = tokio::time::Instant::now();
                state.refresh_depths().await;
                // Counting costs in proportion to the pending and dead messages: with millions
                // queued, refresh less often, so the count stays under ~2 % of a core.
                next = tokio::time::Instant::now() + period.max(started.elapsed() * 50);
                state.metrics.run_upkeep();
                if last_purge.elapsed() >= Duration::from_secs(60) {
                    last_purge = tokio::time::Instant::now();
                    for limits in state
                        .destinations
                        .values()
                        .filter_map(|d| d.telegram_limits.as_ref())
                    {
                        limits.retain_recent();
                    }
                    match state
                        .store
                        .purge_delivered(state.config.store.retention)
                        .await
                    {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(count = n, "purged delivered messages past retention")
                        }
                        Err(e) => tracing::warn!(error = %e, "retention purge failed"),
                    }
                    match state
                        .store
                        .purge_inbound(state.config.store.retention)
                        .await
                    {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(count = n, "purged inbound updates past retention"),
                        Err(e) => tracing::warn!(error = %e, "inbound retention purge failed"),
                    }
                    match state.store.purge_alerts(state.config.store.retention).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(count = n, "purged alerts past retention"),
                        Err(e) => tracing::warn!(error = %e, "alert retention purge failed"),
                    }
                    // A shared send window idle for a day is long empty (Telegram's spans
                    // are seconds to a minute, GitHub's interval a second or so).
                    let idle = state.config.store.retention.max(IDLE_SEND_WINDOW);
                    match state.store.purge_send_windows(idle).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(count = n, "purged idle shared send windows"),
                        Err(e) => tracing::warn!(error = %e, "shared send window purge failed"),
                    }
                    if !state.schedules.is_empty() {
                        match state
                            .store
                            .purge_occurrences(state.config.store.retention)
                            .await
                        {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(
                                count = n,
                                "purged schedule occurrences past retention"
                            ),
                            Err(e) => {
                                tracing::warn!(error = %e, "occurrence retention purge failed")
                            }
                        }
                    }
                }
            }
        });
    }
    tracker.spawn(stop_after_delay(state.clone()));
    tracker.spawn(crate::rollups::run(state.clone()));
    // Tokens created or revoked with `ferrule token` (by another process, on PostgreSQL).
    {
        let state = state.clone();
        tracker.spawn(async move {
            // Due every RELOAD_EVERY on the relay's clock, looked at four times a second on
            // tokio's timer: the task holds no sleep on the relay's clock, whose pending
            // sleeps tests count.
            let mut due = state.clock.now() + stored::RELOAD_EVERY;
            loop {
                tokio::select! {
                    _ = state.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                if state.clock.now() < due {
                    continue;
                }
                due = state.clock.now() + stored::RELOAD_EVERY;
                match stored::load(&state.store).await {
                    Ok((tokens, _)) => state.tokens.replace_stored(tokens),
                    // The last tokens read stay accepted: a store that does not answer must
                    // not lock every client out.
                    Err(e) => tracing::debug!(error = %e, "reloading the stored API tokens failed"),
                }
            }
        });
    }
    if matches!(state.store, AnyStore::Sqlite(_)) {
        for name in state.shared_breakers.destinations() {
            tracing::warn!(destination = %name, "breaker.shared has no effect on SQLite, which one relay uses alone");
        }
    }
    // Several relays share a PostgreSQL store: follow the breaker overrides, pauses and routes'
    // chats set elsewhere, and the shared breakers.
    if !matches!(state.store, AnyStore::Sqlite(_)) {
        let shared: BTreeMap<String, Arc<Destination>> = state
            .shared_breakers
            .destinations()
            .filter_map(|name| Some((name.to_owned(), state.destinations.get(name)?.clone())))
            .collect();
        if state.destinations.values().any(|d| {
            d.shared_pace.is_some() || d.telegram_limits.as_ref().is_some_and(|l| l.is_shared())
        }) {
            let limits = state.clone();
            tracker.spawn(async move {
                let s = &*limits;
                s.shared_limits.run(&s.store, &s.shutdown).await;
            });
        }
        if !shared.is_empty() {
            let breakers = state.clone();
            tracker.spawn(async move {
                let s = &*breakers;
                s.shared_breakers
                    .run(&s.store, &shared, &s.clock, &s.shutdown)
                    .await;
            });
        }
        let overrides = state.clone();
        tracker.spawn(async move {
            let s = &*overrides;
            s.overrides
                .follow_until(&s.store, &s.destinations, &s.clock, &s.shutdown)
                .await;
        });
        let paused = state.clone();
        tracker.spawn(async move {
            let s = &*paused;
            s.paused.follow_until(&s.store, &s.clock, &s.shutdown).await;
        });
        let chats = state.clone();
        tracker.spawn(async move {
            let s = &*chats;
            s.routes
                .follow_chats_until(&s.store, &s.clock, &s.shutdown)
                .await;
        });
    }
    // Alerts outlive the deliveries, so what a draining delivery raises is still queued.
    let alerts_stop = CancellationToken::new();
    let alerts = tokio::spawn({
        let state = state.clone();
        let stop = alerts_stop.clone();
        async move { crate::alerts::run(&state.alerts, stop).await }
    });
    let hard_stop = CancellationToken::new();
    crate::dispatch::spawn(state.clone(), tracker.clone(), hard_stop.clone());
    crate::inbound::polling::spawn(&state, &tracker);
    crate::health::checks::spawn(&state);
    let app = crate::api::router(state.clone());
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;
    tracing::info!("the API stopped accepting requests; draining deliveries");
    tracker.close();
    let drain = state.config.server.drain_timeout;
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::warn!(
            drain_timeout_ms = millis(drain),
            in_flight = tracker.len(),
            "drain timeout passed; releasing the unfinished deliveries"
        );
        hard_stop.cancel();
        tracker.wait().await;
    }
    // What the drained deliveries recorded since the last flush.
    crate::rollups::flush(&state).await;
    alerts_stop.cancel();
    if let Err(e) = alerts.await {
        tracing::error!(error = %e, "the alerts task failed");
    }
    tracing::info!("the relay stopped");
    served.map_err(|source| Error::Io {
        context: "the HTTP server failed".into(),
        source,
    })
}

/// Serves `/metrics`, `/livez` and `/readyz` on `server.metrics_listen` until the API's
/// listener closes.
async fn serve_metrics(state: AppState, listener: TcpListener) {
    let shutdown = state.shutdown.clone();
    let app = crate::api::metrics_router(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "the metrics listener failed");
    }
}

/// Stops the relay `server.shutdown_delay` after a shutdown is requested, on the relay's clock,
/// or at once when a second request or the stop itself comes first. Meanwhile the API serves,
/// answering 503 `shutting_down` to `/readyz` and submissions, so a load balancer takes the
/// relay out of rotation before its listener closes.
async fn stop_after_delay(state: AppState) {
    tokio::select! {
        () = state.shutdown_requested.cancelled() => {}
        () = state.shutdown.cancelled() => return,
    }
    let left = state.shutdown_delay_left();
    if left.is_zero() {
        tracing::info!("shutdown requested: draining");
    } else {
        tracing::info!(
            delay = %humantime::format_duration(state.config.server.shutdown_delay),
            "shutdown requested: /readyz and submissions answer 503 shutting_down until the \
             shutdown delay has passed, then deliveries drain (signal again to skip the delay)"
        );
        tokio::select! {
            () = state.clock.sleep(left) => {}
            () = state.shutdown.cancelled() => {}
        }
    }
    state.shutdown.cancel();
}

/// `serve`: starts the relay and runs it until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn serve(config: Config) -> Result<(), Error> {
    // Listen before `start` prints that the relay is up: a SIGTERM that arrives between the
    // banner and the first poll of the waiting task must drain, not kill the process.
    let signals = Signals::listen();
    let running = match start(config.clone(), StartOptions::default()).await {
        Ok(running) => running,
        Err(e) => {
            // Tell the alert destinations directly: the store may be what failed.
            crate::alerts::send_startup_failure(&config, &e).await;
            return Err(e);
        }
    };
    crate::health::systemd::ready(running.addr);
    tokio::spawn(crate::health::systemd::watchdog(running.state.clone()));
    let state = running.state.clone();
    tokio::spawn(async move {
        let mut signals = signals;
        loop {
            signals.recv().await;
            crate::health::systemd::stopping();
            // The first request is logged where the delay is timed.
            if state.request_shutdown() == ShutdownStep::Hurried {
                tracing::info!("second signal: skipping the rest of the shutdown delay; draining");
            }
        }
    });
    running.wait().await
}

/// SIGTERM and SIGINT (Ctrl-C), listened for from [`Signals::listen`] on.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers now, so no signal sent from here on takes the default action.
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let term = signal(SignalKind::terminate())
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the relay")
                })
                .ok();
            let interrupt = signal(SignalKind::interrupt()).ok();
            Signals { term, interrupt }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Completes on the next SIGTERM or SIGINT.
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
                let received = match signal {
                    Some(s) => s.recv().await,
                    None => None,
                };
                if received.is_none() {
                    // No handler, or its stream ended: never ready rather than ready forever.
                    *signal = None;
                    std::future::pending::<()>().await;
                }
            }
            tokio::select! {
                _ = next(&mut self.term) => {}
                _ = next(&mut self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
