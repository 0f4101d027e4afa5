//! The command line: its arguments (`serve`, `send`, `status`, `messages show|cancel`, `dlq …`,
//! `migrate`, `config check`, `telegram set-webhook|delete-webhook`) and the commands that are
//! not `serve`: [`client`] talks to a running relay over its HTTP API, [`telegram`] to the Bot
//! API straight from the configuration, and `console` is what they print for people.

pub mod client;
pub(crate) mod console;
pub mod telegram;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// ferrule: a durable relay that delivers messages to webhooks under retries, circuit
/// breakers, rate limits and timeouts.
#[derive(Debug, Parser)]
#[command(name = "ferrule", version, about)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "FERRULE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "FERRULE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
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
    /// Show a running relay's status.
    Status(ClientArgs),
    /// Inspect messages.
    Messages {
        /// What to do.
        #[command(subcommand)]
        command: MessagesCommand,
    },
    /// The dead-letter queue.
    Dlq {
        /// What to do.
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Create or upgrade the store's schema, then exit.
    Migrate,
    /// Configuration.
    Config {
        /// What to do.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// A Telegram bot's webhook, set at Telegram from the configuration (no running relay).
    Telegram {
        /// What to do.
        #[command(subcommand)]
        command: TelegramCommand,
    },
}

/// Where the running relay is.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The relay's base URL.
    #[arg(long, env = "FERRULE_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// API token.
    #[arg(long, env = "FERRULE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `ferrule send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Where the relay is.
    #[command(flatten)]
    pub client: ClientArgs,
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

/// `ferrule messages …`.
#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// A message with its timeline.
    Show {
        /// Where the relay is.
        #[command(flatten)]
        client: ClientArgs,
        /// The message id.
        id: String,
    },
    /// Cancel a message that is not delivered yet.
    Cancel {
        /// Where the relay is.
        #[command(flatten)]
        client: ClientArgs,
        /// The message id.
        id: String,
    },
}

/// Which dead letters.
#[derive(Debug, Clone, Args)]
pub struct DlqFilter {
    /// Only this destination.
    #[arg(long, short = 'd')]
    pub destination: Option<String>,
    /// Only those whose last error contains this text.
    #[arg(long)]
    pub error_contains: Option<String>,
}

/// `ferrule dlq …`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters.
    List {
        /// Where the relay is.
        #[command(flatten)]
        client: ClientArgs,
        /// Which.
        #[command(flatten)]
        filter: DlqFilter,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Re-queue dead letters.
    Replay {
        /// Where the relay is.
        #[command(flatten)]
        client: ClientArgs,
        /// Which.
        #[command(flatten)]
        filter: DlqFilter,
        /// Only say how many would be replayed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete dead letters.
    Purge {
        /// Where the relay is.
        #[command(flatten)]
        client: ClientArgs,
        /// Which.
        #[command(flatten)]
        filter: DlqFilter,
    },
}

/// `ferrule config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration with secrets redacted; fail naming the bad field.
    Check,
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
