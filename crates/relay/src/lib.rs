//! The ferrule relay: a server and CLI that store messages durably and deliver them to
//! webhooks under retries, circuit breakers, rate limits, bulkheads and timeouts.
//!
//! `main.rs` parses the command line into a [`Cli`] and calls [`run`]. `serve` starts the
//! HTTP API ([`api`]) and the [`dispatcher`] over one store ([`ferrule_store`]), sharing one
//! shutdown token; the other commands either talk to a running relay over its HTTP API
//! ([`client`]), work on the configuration and store directly (`migrate`, `config check`), or
//! talk to Telegram directly ([`telegram`]). Inbound Telegram updates are [`inbound`].

pub mod alerts;
pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
mod console;
pub mod destination;
pub mod dispatcher;
pub mod health;
pub mod inbound;
pub mod server;
pub mod state;
pub mod storage;
pub mod telegram;
pub mod telegram_limits;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;

use std::process::ExitCode;

pub use crate::cli::Cli;
use crate::cli::{Command, ConfigCommand};
pub use crate::config::Config;
pub use crate::server::{Running, StartOptions, start};

/// Everything that can stop a command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid (exit code 2).
    #[error(transparent)]
    Config(#[from] config::LoadError),
    /// The store could not be opened or used.
    #[error("store: {0}")]
    Store(#[from] ferrule_store::StoreError),
    /// A destination could not be built.
    #[error("destination: {0}")]
    Connector(#[from] ferrule_connectors::ConnectorError),
    /// Binding or serving failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A running relay could not be reached or answered with an error.
    #[error("{0}")]
    Client(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The process exit code: 2 for configuration errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => 2,
            _ => 1,
        }
    }
}

/// Runs one command to completion and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    telemetry::init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            console::err(&format!("error: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_command(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut text = format!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text.push_str(&format!("\n  caused by: {cause}"));
                source = cause.source();
            }
            console::err(&text);
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run_command(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Serve => {
            let config = Config::load(cli.config.as_deref())?;
            server::serve(config).await
        }
        Command::Migrate => {
            let config = Config::load(cli.config.as_deref())?;
            server::migrate(&config).await
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            console::out(&config.to_redacted_toml());
            console::err("configuration is valid");
            Ok(())
        }
        Command::Send(args) => client::send(args).await,
        Command::Status(args) => client::status(args).await,
        Command::Messages { command } => client::messages(command).await,
        Command::Dlq { command } => client::dlq(command).await,
        Command::Telegram { command } => {
            let config = Config::load(cli.config.as_deref())?;
            telegram::run(&config, command).await
        }
    }
}
