//! The ferrule relay: a server and CLI that store messages durably and deliver them to
//! webhooks under retries, circuit breakers, rate limits, bulkheads and timeouts.
//!
//! `main.rs` parses the command line into a [`Cli`] and calls [`run`]. `serve` starts the
//! HTTP API ([`api`]) and the [`dispatch`]er over one store ([`ferrule_store`]), sharing one
//! shutdown token; the other commands either talk to a running relay over its HTTP API
//! ([`client`]), work on the configuration and store directly (`migrate`, `config check`,
//! `token`), or
//! talk to Telegram directly ([`telegram`]). Inbound Telegram updates are [`inbound`].

pub mod alerts;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod destination;
pub mod dispatch;
mod error;
pub mod health;
pub mod inbound;
pub mod server;
pub mod state;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;

use std::process::ExitCode;

pub use crate::cli::Cli;
use crate::cli::{Command, ConfigCommand, client, console, telegram};
pub use crate::config::Config;
pub use crate::error::Error;
pub use crate::server::{Running, StartOptions, start};

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
            console::err(&format!("error: {}", error::chain(&e, "\n  caused by: ")));
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
            for warning in config.warnings() {
                console::err(&format!("warning: {warning}"));
            }
            console::err("configuration is valid");
            Ok(())
        }
        Command::Send(args) => client::send(args).await,
        Command::Status(args) => client::status(args).await,
        Command::Messages { command } => client::messages(command).await,
        Command::Dlq { command } => client::dlq(command).await,
        Command::Token { command } => {
            let config = Config::load(cli.config.as_deref())?;
            let store = server::open_store(&config, ferrule_policy::clock::system())
                .await
                .map_err(cli::token::explain_locked)?;
            cli::token::run(&config, &store, command).await
        }
        Command::Telegram { command } => {
            let config = Config::load(cli.config.as_deref())?;
            telegram::run(&config, command).await
        }
    }
}
