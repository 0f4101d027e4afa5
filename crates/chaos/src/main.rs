//! `ferrule-chaos`: the load and chaos harness for the ferrule relay (README, "Proving it: the
//! chaos harness"; docs/RELIABILITY.md for the figures).
//!
//! `run` starts real `ferrule serve` processes on SQLite (one) or PostgreSQL (several sharing a
//! fresh database), a loopback webhook receiver that records every delivery, and a submitter
//! with idempotency keys; it kills and restarts relays, makes the receiver fail, restarts
//! PostgreSQL or fills the disk on a seeded schedule; then it drains and prints a verdict.
//! `throughput` measures delivered msg/s and latency without faults.

mod cli;
mod cpulimit;
mod disk;
mod error;
mod logs;
mod monitor;
mod plan;
mod postgres;
mod receiver;
mod relay;
mod run;
mod submitter;
mod throughput;
mod verdict;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match cli.command {
        Command::Run(args) => {
            let json = args.common.json;
            match runtime.block_on(run::run(args)) {
                Ok(verdict) => {
                    let text = if json {
                        serde_json::to_string_pretty(&verdict).unwrap_or_default()
                    } else {
                        verdict.table()
                    };
                    say(&text);
                    if verdict.passed() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => fail(&chain(&e)),
            }
        }
        Command::Throughput(args) => {
            let json = args.common.json;
            // Ctrl-C drops the measurement: its relays are killed (and their CPU-limit groups
            // removed) on the way out.
            let measured = runtime.block_on(async {
                tokio::select! {
                    r = throughput::run(args) => r,
                    _ = tokio::signal::ctrl_c() => Err(error::Error::Setup("interrupted".into())),
                }
            });
            match measured {
                Ok(report) => {
                    say(&if json {
                        serde_json::to_string_pretty(&report).unwrap_or_default()
                    } else {
                        throughput::table(&report)
                    });
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&chain(&e)),
            }
        }
    }
}

fn say(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{}", text.trim_end());
}

/// The error and its causes, one per line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!("\n  caused by: {cause}"));
        source = cause.source();
    }
    text
}

/// Prints `text` as an error; exit code 2 (a setup error, not a failed verdict).
fn fail(text: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr().lock(), "ferrule-chaos: error: {text}");
    ExitCode::from(2)
}
