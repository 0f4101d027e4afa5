//! The command line: its arguments (`serve`, `send`, `status`, `messages
//! list|show|replay|cancel`, `dlq list|replay|purge`, `breakers
//! list|reset|force-open|disable`, `migrate`, `config check`, `token create|list|revoke`,
//! `destinations list|pause|resume`, `schedules list|pause|resume|trigger`, `routes chats`, `audit`, `alerts`, `stats`, `telegram set-webhook|delete-webhook`) and the commands that are not `serve`: [`client`]
//! talks to a running relay over its HTTP API, [`token`] to the store and [`telegram`] to the
//! Bot API straight from the configuration, `console` is how they talk to the person at the
//! terminal, and `render` turns the API's JSON into what they print for people.

pub mod client;
pub(crate) mod console;
mod render;
pub mod telegram;
pub mod token;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// ferrule: a durable relay that delivers messages to webhooks under retries, circuit
/// breakers, rate limits and timeouts.
#[derive(Debug, Parser)]
#[command(name = "ferrule", version, about)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "FERRULE_CONFIG", global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,
    /// Log format: human or json (one object per line).
    #[arg(long, env = "FERRULE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true, value_name = "FORMAT", hide_possible_values = true, help_heading = GLOBAL)]
    pub log_format: LogFormat,
    /// Where the running relay is, for the commands that talk to it.
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people.
    Human,
    /// One JSON object per line.
    Json,
}

/// A subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay: HTTP API and dispatcher.
    Serve,
    /// Submit a message to a running relay.
    Send(SendArgs),
    /// Show a running relay's status; the exit code says how it is.
    #[command(after_help = STATUS_EXIT_CODES)]
    Status(StatusArgs),
    /// List, show and replay messages.
    Messages {
        /// What to do.
        #[command(subcommand)]
        command: MessagesCommand,
    },
    /// Runs of routes: list, show with the timeline, retry a failed one, cancel.
    Runs {
        /// What to do.
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Routes: a route's chat mappings (`chats[key]` in its templates).
    Routes {
        /// What to do.
        #[command(subcommand)]
        command: RoutesCommand,
    },
    /// The dead-letter queue.
    Dlq {
        /// What to do.
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// The destinations' circuit breakers.
    Breakers {
        /// What to do.
        #[command(subcommand)]
        command: BreakersCommand,
    },
    /// Create or upgrade the store's schema, then exit.
    Migrate,
    /// Configuration.
    Config {
        /// What to do.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Named API tokens in the store, from the configuration (no running relay, no token
    /// needed; on SQLite, stop the relay first).
    Token {
        /// What to do.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The destinations: list them, pause or resume their deliveries.
    Destinations {
        /// What to do.
        #[command(subcommand)]
        command: DestinationsCommand,
    },
    /// Schedules: list them with their next and last occurrence, pause, resume, fire one now.
    Schedules {
        /// What to do (default: list).
        #[command(subcommand)]
        command: Option<SchedulesCommand>,
    },
    /// The audit log of operator actions, newest first.
    Audit(AuditArgs),
    /// The alert log: every alert the relays sharing the store raised, newest first.
    Alerts(AlertsArgs),
    /// Deliveries and runs over a window, from the relay's per-minute rollups.
    Stats(StatsArgs),
    /// A Telegram bot's webhook, set at Telegram from the configuration (no running relay).
    Telegram {
        /// What to do.
        #[command(subcommand)]
        command: TelegramCommand,
    },
}

/// What `ferrule status --help` says about its exit code.
pub const STATUS_EXIT_CODES: &str = "\
Exit codes:
  0  ok: every dependency works
  1  degraded: a destination's breaker is open or half-open, or a destination is unhealthy
  2  unhealthy (the store is) or draining (shutting down)
  3  unknown: the relay could not be reached or refused the request, or --config could not be read";

/// The heading of the options every command takes, shown after a command's own.
const GLOBAL: &str = "Global options";

/// Where the running relay is, for the commands that talk to it.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = GLOBAL)]
pub struct ClientArgs {
    /// The running relay's URL [default: the config's server.listen, else http://127.0.0.1:8080].
    #[arg(long, env = "FERRULE_SERVER", global = true, value_name = "URL")]
    pub server: Option<String>,
    /// API token of the running relay.
    #[arg(long, env = "FERRULE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

/// `ferrule send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Destination name.
    #[arg(long, short = 'd')]
    pub destination: String,
    /// The JSON payload (`-` or absent: read from stdin).
    #[arg(long, short = 'p')]
    pub payload: Option<String>,
    /// Idempotency key.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Ordering key.
    #[arg(long)]
    pub ordering_key: Option<String>,
    /// Deliver no earlier than this RFC 3339 time.
    #[arg(long)]
    pub deliver_after: Option<String>,
}

/// `ferrule status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the API's JSON unchanged.
    #[arg(long)]
    pub json: bool,
}

/// Which page of a listing.
#[derive(Debug, Clone, Args)]
pub struct PageArgs {
    /// At most this many (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub limit: u16,
    /// Continue after the previous page (its last line says the cursor).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Print the API's JSON unchanged.
    #[arg(long)]
    pub json: bool,
}

/// `ferrule messages …`.
#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// List messages, newest first.
    List {
        /// Only these statuses, comma-separated (queued, delivering, retrying, delivered, dead,
        /// cancelled).
        #[arg(long, short = 's')]
        status: Option<String>,
        /// Only this destination.
        #[arg(long, short = 'd', value_name = "NAME")]
        destination: Option<String>,
        /// Which page.
        #[command(flatten)]
        page: PageArgs,
    },
    /// A message with its timeline.
    Show {
        /// The message id.
        id: String,
        /// Print the API's JSON unchanged.
        #[arg(long)]
        json: bool,
    },
    /// Re-queue a delivered, dead or cancelled message: due now, attempts from zero.
    Replay {
        /// The message id.
        id: String,
    },
    /// Cancel a message that is not delivered yet.
    Cancel {
        /// The message id.
        id: String,
    },
}

/// `ferrule runs …`.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List {
        /// Only this route.
        #[arg(long, short = 'r')]
        route: Option<String>,
        /// Only runs in this state (e.g. awaiting_callback, fallback_sent).
        #[arg(long)]
        state: Option<String>,
        /// Only these statuses, comma-separated (active, waiting, completed, failed, expired,
        /// cancelled).
        #[arg(long, short = 's')]
        status: Option<String>,
        /// Only runs started at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Which page.
        #[command(flatten)]
        page: PageArgs,
    },
    /// A run with its timeline, waits and messages.
    Show {
        /// The run id.
        id: String,
        /// Print the API's JSON unchanged.
        #[arg(long)]
        json: bool,
    },
    /// Run a failed run's failed step again (a delivered step never runs again).
    Retry {
        /// The run id.
        id: String,
    },
    /// Cancel an unfinished run: its pending messages are cancelled, its waits closed.
    Cancel {
        /// The run id.
        id: String,
    },
}

/// `ferrule routes …`.
#[derive(Debug, Subcommand)]
pub enum RoutesCommand {
    /// A route's chat mappings: list them (the configuration's and those set here), set one,
    /// remove one.
    Chats(RouteChatsArgs),
}

/// `ferrule routes chats <route> [set <key> <chat_id> | remove <key>]`.
#[derive(Debug, Args)]
pub struct RouteChatsArgs {
    /// The route.
    pub route: String,
    /// Print the API's JSON unchanged.
    #[arg(long)]
    pub json: bool,
    /// What to do (default: list).
    #[command(subcommand)]
    pub action: Option<RouteChatsAction>,
}

/// `ferrule routes chats <route> set|remove`.
#[derive(Debug, Subcommand)]
pub enum RouteChatsAction {
    /// Map KEY (e.g. owner/repo) to CHAT_ID on every relay sharing the store; it wins over the
    /// configuration's mapping of KEY while it is set.
    Set {
        /// What is mapped, e.g. a repository `owner/repo` (1 to 200 characters).
        key: String,
        /// The Telegram chat id, e.g. -1001234567890.
        #[arg(allow_negative_numbers = true)]
        chat_id: i64,
    },
    /// Remove KEY's mapping set with `set` (the configuration's, if any, is used again).
    Remove {
        /// The key.
        key: String,
    },
}

/// Which dead letters.
#[derive(Debug, Clone, Args)]
pub struct DlqFilter {
    /// Only this destination.
    #[arg(long, short = 'd', value_name = "NAME")]
    pub destination: Option<String>,
    /// Only those whose last error contains TEXT.
    #[arg(long, value_name = "TEXT")]
    pub error_contains: Option<String>,
}

impl DlqFilter {
    /// Whether any filter is given.
    pub fn is_empty(&self) -> bool {
        self.destination.is_none() && self.error_contains.is_none()
    }
}

/// How a command that changes many dead letters asks before it does.
#[derive(Debug, Clone, Args)]
pub struct Confirm {
    /// Only say how many would be affected.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `ferrule dlq …`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, newest first.
    List {
        /// Which.
        #[command(flatten)]
        filter: DlqFilter,
        /// Which page.
        #[command(flatten)]
        page: PageArgs,
    },
    /// Re-queue dead letters (all of them without a filter), after showing how many and
    /// asking.
    Replay {
        /// Which.
        #[command(flatten)]
        filter: DlqFilter,
        /// Asking first.
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Delete dead letters matching a filter, or every one with --all, after showing how
    /// many and asking.
    Purge {
        /// Which.
        #[command(flatten)]
        filter: DlqFilter,
        /// Every dead letter (needed when no filter is given).
        #[arg(long, conflicts_with_all = ["destination", "error_contains"])]
        all: bool,
        /// Asking first.
        #[command(flatten)]
        confirm: Confirm,
    },
}

/// `ferrule breakers …`.
#[derive(Debug, Subcommand)]
pub enum BreakersCommand {
    /// Every destination's breaker.
    List {
        /// Print the API's JSON unchanged.
        #[arg(long)]
        json: bool,
    },
    /// Close the breaker and clear its window (also ends force-open and disable).
    Reset {
        /// The destination.
        destination: String,
    },
    /// Hold the breaker open until it is reset: nothing is sent to the destination.
    ForceOpen {
        /// The destination.
        destination: String,
    },
    /// Let every call through whatever happens, until it is reset.
    Disable {
        /// The destination.
        destination: String,
    },
}

/// `ferrule destinations …`.
#[derive(Debug, Subcommand)]
pub enum DestinationsCommand {
    /// Every destination: type, breaker, health, and who paused it.
    List {
        /// Print the API's JSON unchanged.
        #[arg(long)]
        json: bool,
    },
    /// Hold the destination's deliveries on every relay: its messages stay queued.
    Pause {
        /// The destination.
        destination: String,
        /// Why (kept with the pause and in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let a paused destination's deliveries go again.
    Resume {
        /// The destination.
        destination: String,
    },
}

/// `ferrule schedules …`.
#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Every schedule: pattern, zone, target, next and last occurrence, pause.
    List {
        /// Print the API's JSON unchanged.
        #[arg(long)]
        json: bool,
    },
    /// Stop the schedule firing on every relay; its occurrences pass by and are not caught up.
    Pause {
        /// The schedule.
        name: String,
        /// Why (kept with the pause and in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let a paused schedule fire again from its next occurrence.
    Resume {
        /// The schedule.
        name: String,
    },
    /// Fire an occurrence of the schedule now, apart from its pattern.
    Trigger {
        /// The schedule.
        name: String,
    },
}

/// `ferrule audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this actor's (a token's name).
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
    /// Only this action, e.g. `dead_letters.replay` or `breaker.reset`.
    #[arg(long)]
    pub action: Option<String>,
    /// Only those since this RFC 3339 time, or this long ago (`24h`, `7d`, `30m`).
    #[arg(long, value_name = "TIME|AGO")]
    pub since: Option<String>,
    /// Which page.
    #[command(flatten)]
    pub page: PageArgs,
}

/// `ferrule alerts`.
#[derive(Debug, Args)]
pub struct AlertsArgs {
    /// Only this kind, e.g. `breaker.opened` or `dead_letters.threshold`.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only about this subject (a destination, a schedule, `dead-letters`, `store`).
    #[arg(long)]
    pub subject: Option<String>,
    /// Only those since this RFC 3339 time, or this long ago (`24h`, `7d`, `30m`).
    #[arg(long, value_name = "TIME|AGO")]
    pub since: Option<String>,
    /// Only those before this RFC 3339 time, or this long ago.
    #[arg(long, value_name = "TIME|AGO")]
    pub until: Option<String>,
    /// Which page.
    #[command(flatten)]
    pub page: PageArgs,
}

/// `ferrule stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// How far back: 1-999m, 1-999h or 1-99d.
    #[arg(long, default_value = "24h", value_name = "WINDOW")]
    pub window: String,
    /// Only this destination's deliveries and failures.
    #[arg(long, short = 'd')]
    pub destination: Option<String>,
    /// Only this route's runs.
    #[arg(long)]
    pub route: Option<String>,
    /// Print the API's JSON unchanged.
    #[arg(long)]
    pub json: bool,
}

/// `ferrule config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration with secrets redacted; fail naming the bad field.
    Check,
}

/// `ferrule token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (once: only its hash is stored).
    Create {
        /// Its name: 1 to 64 of `A-Z a-z 0-9 _ . -`.
        #[arg(long)]
        name: String,
        /// May call only the routes that change nothing (lists, `/status`, `/metrics`).
        #[arg(long)]
        read_only: bool,
    },
    /// List the stored tokens: name, role, creation time, start of the hash.
    List,
    /// Delete a stored token; requests with it are refused from then on.
    Revoke {
        /// Its name.
        name: String,
    },
}

/// `ferrule telegram …`.
#[derive(Debug, Subcommand)]
pub enum TelegramCommand {
    /// Make Telegram post the destination's updates to URL (https), with its
    /// `inbound.secret_token`.
    SetWebhook {
        /// The Telegram destination, with `inbound.mode = "webhook"`.
        destination: String,
        /// The public https URL that reaches `/v1/telegram/<destination>/webhook`.
        url: String,
    },
    /// Remove the bot's webhook (e.g. to switch the destination to polling).
    DeleteWebhook {
        /// The Telegram destination.
        destination: String,
        /// Also drop the updates Telegram has not delivered yet.
        #[arg(long)]
        drop_pending_updates: bool,
    },
}
