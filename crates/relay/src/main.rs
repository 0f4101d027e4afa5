//! The `ferrule` binary: parses the command line and hands it to [`ferrule::run`].

use std::process::ExitCode;

use clap::Parser;

/// jemalloc instead of the system allocator: glibc's malloc and free took ~12 % of the relay's
/// CPU at full load; with jemalloc the relay needs 13–20 % less CPU per message and idle RSS
/// stays at 16 MiB (docs/BENCHMARKS.md, "Fifth round").
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    ferrule::run(ferrule::Cli::parse())
}
