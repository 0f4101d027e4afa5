//! The command line: what to run (a chaos run or a throughput measurement) and its knobs.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Load and chaos harness for the ferrule relay.
///
/// Starts real `ferrule serve` processes, a loopback webhook receiver that records every
/// delivery, and a submitter; injects faults; then drains and prints a verdict.
#[derive(Debug, Parser)]
#[command(name = "ferrule-chaos", version)]
pub(crate) struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The harness's commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Load plus faults, then drain and check that no acked message was lost.
    Run(RunArgs),
    /// No faults: delivered msg/s and submit → delivery latency per instance count.
    Throughput(ThroughputArgs),
}

/// Which store the relays share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Backend {
    /// One relay on a SQLite file (SQLite is single-owner).
    Sqlite,
    /// Several relays sharing one fresh PostgreSQL database.
    Postgres,
}

/// A fault the receiver can answer with during a fault window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ReceiverFault {
    /// HTTP 500 to every request.
    #[value(name = "500")]
    #[serde(rename = "500")]
    Error500,
    /// HTTP 429 with `Retry-After` (1 or 2 s).
    #[value(name = "429")]
    #[serde(rename = "429")]
    TooMany,
    /// 200, but only after the relay's per-attempt timeout has passed.
    Slow,
    /// The connection is reset (RST) after the request is read.
    Reset,
    /// The request is read and never answered.
    Blackhole,
}

/// Options every command shares.
#[derive(Debug, Clone, Args)]
pub(crate) struct Common {
    /// The `ferrule` binary to run (default: `ferrule` next to this executable).
    #[arg(long)]
    pub(crate) ferrule_bin: Option<PathBuf>,
    /// The PostgreSQL server: a fresh database is created on it per run and dropped after.
    #[arg(
        long,
        env = "FERRULE_TEST_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub(crate) postgres_url: String,
    /// Deliveries each relay runs at once (`[dispatcher] concurrency` and `batch`); it also
    /// bounds the duplicates one kill may cause.
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Keep the run directory (configs, relay logs, SQLite file) and the PostgreSQL database.
    #[arg(long)]
    pub(crate) keep_dir: bool,
}

/// `ferrule-chaos run`.
#[derive(Debug, Clone, Args)]
pub(crate) struct RunArgs {
    /// Shared options.
    #[command(flatten)]
    pub(crate) common: Common,
    /// The store the relays use.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    pub(crate) backend: Backend,
    /// Relay processes (SQLite: 1; PostgreSQL: default 3).
    #[arg(long)]
    pub(crate) instances: Option<usize>,
    /// Messages to submit.
    #[arg(long, default_value_t = 3000)]
    pub(crate) messages: u64,
    /// Submissions per second.
    #[arg(long, default_value_t = 300)]
    pub(crate) rate: u64,
    /// Seed of every random choice (kill moments, victims, fault windows).
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// `kill -9` cycles (kill, short pause, restart), at seeded random moments.
    #[arg(long, default_value_t = 5)]
    pub(crate) kills: u32,
    /// Graceful stops (SIGTERM, expect exit 0 within the drain timeout, restart).
    #[arg(long, default_value_t = 0)]
    pub(crate) sigterms: u32,
    /// Receiver fault windows, each kind once per `--fault-rounds` (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "500,429,slow,reset,blackhole"
    )]
    pub(crate) faults: Vec<ReceiverFault>,
    /// How many times each receiver fault kind is scheduled.
    #[arg(long, default_value_t = 1)]
    pub(crate) fault_rounds: u32,
    /// How long one receiver fault window lasts.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1500ms")]
    pub(crate) fault_len: Duration,
    /// PostgreSQL restarts (`pg_ctlcluster … restart`) during the load (PostgreSQL only).
    #[arg(long, default_value_t = 0)]
    pub(crate) pg_restarts: u32,
    /// How long PostgreSQL stays stopped in each restart (0: `pg_ctlcluster restart`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub(crate) pg_down_for: Duration,
    /// Restart PostgreSQL even when other clients are connected to it (other databases).
    #[arg(long)]
    pub(crate) pg_restart_even_if_shared: bool,
    /// Put the SQLite file on a small tmpfs and fill it for one window (SQLite only; needs
    /// permission to mount).
    #[arg(long)]
    pub(crate) disk_full: bool,
    /// How long the final drain may take before the run fails.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
    pub(crate) drain_timeout: Duration,
}

/// `ferrule-chaos throughput`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ThroughputArgs {
    /// Shared options.
    #[command(flatten)]
    pub(crate) common: Common,
    /// Messages per measurement.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) messages: u64,
    /// Concurrent submitting clients.
    #[arg(long, default_value_t = 64)]
    pub(crate) clients: usize,
    /// Measure SQLite (one instance).
    #[arg(long)]
    pub(crate) sqlite: bool,
    /// PostgreSQL instance counts to measure, e.g. `1,2,3`.
    #[arg(long, value_delimiter = ',')]
    pub(crate) postgres: Vec<usize>,
    /// Repetitions of each measurement (each row reports every run).
    #[arg(long, default_value_t = 1)]
    pub(crate) repeat: u32,
    /// Submission rates to measure, each on a fresh fleet, e.g. `200,1000,5000,max`: a number
    /// submits that many messages per second for `--seconds`, `max` submits `--messages` from
    /// `--clients` as fast as they are acknowledged. Default: `max` only.
    #[arg(long, value_delimiter = ',', value_parser = parse_rate)]
    pub(crate) rates: Vec<Rate>,
    /// How long each fixed-rate measurement submits.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub(crate) seconds: Duration,
    /// A second `ferrule` binary (e.g. one built from an older commit) measured beside
    /// `--ferrule-bin` in the same run: every measurement runs with both, alternating which
    /// goes first.
    #[arg(long)]
    pub(crate) baseline_bin: Option<PathBuf>,
    /// Run each relay process under a CPU limit of this fraction of one core (e.g. `0.3`), so
    /// that the relays, not the machine, limit throughput; PostgreSQL and the harness are not
    /// limited. Uses a cgroup (v2 `cpu.max` or v1 `cpu.cfs_quota_us`; needs root or a
    /// delegated hierarchy) and refuses to run when neither can be written, unless
    /// `--relay-cpu-fallback taskset` is given.
    #[arg(long)]
    pub(crate) relay_cpu: Option<f64>,
    /// What to do with `--relay-cpu` when no cgroup can be written: `taskset` pins every relay
    /// to the last CPU (not a quota: the relays share that CPU).
    #[arg(long, value_enum, requires = "relay_cpu")]
    pub(crate) relay_cpu_fallback: Option<CpuFallback>,
}

/// `--relay-cpu-fallback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CpuFallback {
    /// Pin the relays to one CPU with `taskset`.
    Taskset,
}

/// One submission rate of `ferrule-chaos throughput --rates`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rate {
    /// This many messages per second.
    Fixed(u64),
    /// As fast as the relay acknowledges them.
    Max,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::Fixed(n) => write!(f, "{n}"),
            Rate::Max => f.write_str("max"),
        }
    }
}

/// `200` or `max`.
fn parse_rate(text: &str) -> std::result::Result<Rate, String> {
    if text.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    match text.parse::<u64>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(Rate::Fixed(n)),
        _ => Err(format!(
            "`{text}` is not a rate: give messages per second (1 to 100000) or `max`"
        )),
    }
}
