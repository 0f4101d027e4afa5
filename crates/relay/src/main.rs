//! The `ferrule` binary: parses the command line and hands it to [`ferrule::run`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    ferrule::run(ferrule::Cli::parse())
}
