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
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod destination;
pub mod dispatch;
mod error;
pub mod health;
pub mod inbound;
pub mod proxy;
pub mod rollups;
pub mod routes;
pub mod schedules;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod template;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod ui;

use std::process::ExitCode;

pub use crate::cli::Cli;
use crate::cli::{Command, ConfigCommand, client, console, telegram};
pub use crate::config::Config;
pub use crate::error::Error;
pub use crate::server::{Running, StartOptions, start};

/// Runs one command to completion and returns the process exit code.
///
/// `ferrule status` exits with what its answer means (0 ok, 1 degraded, 2 unhealthy or
/// draining) and 3 when it has none (the relay cannot be reached, refuses the request, or the
/// configuration naming it cannot be read); every other command exits 0, 2 for a
/// configuration error, or 1.
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
    let status_command = matches!(cli.command, Command::Status(_));
    match runtime.block_on(run_command(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            console::err(&format!("error: {}", error::chain(&e, "\n  caused by: ")));
            ExitCode::from(if status_command { 3 } else { e.exit_code() })
        }
    }
}

/// Runs `cli`'s command; the exit code on success.
async fn run_command(cli: Cli) -> Result<u8, Error> {
    let config = cli.config.as_deref();
    let client = || client::Client::new(&cli.client, config);
    match cli.command {
        Command::Serve => {
            let config = Config::load(config)?;
            server::serve(config).await?;
        }
        Command::Migrate => {
            let config = Config::load(config)?;
            server::migrate(&config).await?;
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let config = Config::load(config)?;
            console::out(&config.to_redacted_toml());
            for warning in config.warnings() {
                console::err(&format!("warning: {warning}"));
            }
            console::err("configuration is valid");
        }
        Command::Send(args) => client::send(&client()?, args).await?,
        Command::Status(args) => return client::status(&client()?, args).await,
        Command::Messages { command } => client::messages(&client()?, command).await?,
        Command::Runs { command } => client::runs(&client()?, command).await?,
        Command::Routes { command } => client::routes(&client()?, command).await?,
        Command::Dlq { command } => client::dlq(&client()?, command).await?,
        Command::Breakers { command } => client::breakers(&client()?, command).await?,
        Command::Audit(args) => client::audit(&client()?, args).await?,
        Command::Alerts(args) => client::alerts(&client()?, args).await?,
        Command::Stats(args) => client::stats(&client()?, args).await?,
        Command::Schedules { command } => client::schedules(&client()?, command).await?,
        Command::Destinations { command } => client::destinations(&client()?, command).await?,
        Command::Token { command } => {
            let config = Config::load(config)?;
            let store = server::open_store(&config, ferrule_policy::clock::system())
                .await
                .map_err(cli::token::explain_locked)?;
            cli::token::run(&config, &store, command).await?;
        }
        Command::Telegram { command } => {
            let config = Config::load(config)?;
            telegram::run(&config, command).await?;
        }
    }
    Ok(0)
}
