//! The relay processes under test: their config files, start, `kill -9`, SIGTERM and RSS.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::cpulimit::{Slot, Throttling};
use crate::error::{Error, Result};

/// The API token every relay of a run accepts.
pub(crate) const TOKEN: &str = "chaos-token-0123456789abcdef0123";
/// The Standard Webhooks secret of the one destination.
pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The destination's name.
pub(crate) const DESTINATION: &str = "hook";
/// The header each relay adds to its deliveries, naming the instance.
pub(crate) const INSTANCE_HEADER: &str = "x-chaos-instance";
/// The relay's per-attempt timeout in chaos runs: the receiver's slow answers exceed it.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// The line the harness writes into a relay's log before each process it starts.
pub(crate) const PROCESS_MARKER: &str = "=== ferrule-chaos: process ";
/// How long a relay may drain on SIGTERM.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The breaker every relay is given, so the verdict can say what it expects.
pub(crate) const BREAKER_OPEN_FOR: Duration = Duration::from_millis(1000);

/// What differs between the relays of one run.
#[derive(Debug, Clone)]
pub(crate) struct RelaySettings {
    /// `sqlite:///…` or `postgres://…`.
    pub(crate) store_url: String,
    /// The receiver's URL.
    pub(crate) hook_url: String,
    /// Dispatcher concurrency and claim batch.
    pub(crate) concurrency: usize,
    /// The lease on claimed messages.
    pub(crate) lease: Duration,
}

/// The TOML config of process `name` (its deliveries carry the name in [`INSTANCE_HEADER`]).
pub(crate) fn config_text(name: &str, s: &RelaySettings) -> String {
    let mut text = String::new();
    let _ = write!(
        text,
        r#"# Written by ferrule-chaos for instance {name}.
[server]
listen = "127.0.0.1:0"
max_queue_depth = 100000000
# No load balancer watches /readyz here: stop accepting at once, so the drain is what is timed.
shutdown_delay = "0s"
drain_timeout = "{drain}ms"

[store]
url = "{store}"

[auth]
tokens = ["{TOKEN}"]

[dispatcher]
concurrency = {c}
batch = {c}
lease = "{lease}ms"
poll_interval = "200ms"
defer_for = "200ms"

[defaults]
timeout = "{timeout}ms"

[defaults.retry]
max_attempts = 40
backoff = {{ kind = "exponential", base = "100ms", multiplier = 2.0, cap = "2s" }}
jitter = "full"
max_retry_after = "10s"

[defaults.breaker]
window = {{ count = 20 }}
min_calls = 10
failure_rate = 0.5
open_for = "{open_for}ms"
open_backoff = 1.0
half_open_probes = 1
half_open_successes = 1

[[destinations]]
name = "{DESTINATION}"
type = "webhook"
url = "{hook}"
secret = "{SECRET}"
allow_private = true
headers = {{ "{INSTANCE_HEADER}" = "{name}" }}
"#,
        drain = DRAIN_TIMEOUT.as_millis(),
        store = s.store_url,
        c = s.concurrency,
        lease = s.lease.as_millis(),
        timeout = ATTEMPT_TIMEOUT.as_millis(),
        open_for = BREAKER_OPEN_FOR.as_millis(),
        hook = s.hook_url,
    );
    text
}

/// Finds the `ferrule` binary: `--ferrule-bin`, else next to this executable.
pub(crate) fn find_binary(given: Option<&Path>) -> Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_owned(),
        None => std::env::current_exe()
            .map_err(|e| Error::io("finding this executable", e))?
            .parent()
            .map(|d| d.join("ferrule"))
            .unwrap_or_else(|| "ferrule".into()),
    };
    if !path.is_file() {
        return Err(Error::Setup(format!(
            "no ferrule binary at {}; build it (`cargo build --release -p ferrule`) or pass --ferrule-bin",
            path.display()
        )));
    }
    Ok(path)
}

/// RSS samples of one instance across all its processes.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub(crate) struct RssStats {
    /// Samples taken.
    pub(crate) samples: u64,
    /// Smallest sample, KiB.
    pub(crate) min_kib: u64,
    /// Largest sample, KiB.
    pub(crate) max_kib: u64,
    /// Last sample, KiB.
    pub(crate) last_kib: u64,
}

/// One relay instance: a config file and, while up, a process.
#[derive(Debug)]
pub(crate) struct Instance {
    /// `r1`, `r2`, …
    pub(crate) name: String,
    binary: PathBuf,
    settings: RelaySettings,
    config: PathBuf,
    log: PathBuf,
    /// Bumped at every start: the process label is `{name}.{generation}`.
    generation: AtomicU32,
    base: RwLock<Option<String>>,
    pid: AtomicU32,
    child: tokio::sync::Mutex<Option<Child>>,
    rss: Mutex<RssStats>,
    /// The CPU limit every process of this instance runs under (`--relay-cpu`).
    slot: Option<Slot>,
}

impl Instance {
    /// Instance `name`, with its config and log in `dir`; each of its processes is put under
    /// `slot`'s CPU limit, if any, as soon as it is spawned.
    pub(crate) fn new(
        dir: &Path,
        name: &str,
        binary: &Path,
        settings: &RelaySettings,
        slot: Option<Slot>,
    ) -> Result<Self> {
        Ok(Instance {
            name: name.to_owned(),
            binary: binary.to_owned(),
            settings: settings.clone(),
            config: dir.join(format!("{name}.toml")),
            log: dir.join(format!("{name}.log")),
            generation: AtomicU32::new(0),
            base: RwLock::new(None),
            pid: AtomicU32::new(0),
            child: tokio::sync::Mutex::new(None),
            rss: Mutex::new(RssStats::default()),
            slot,
        })
    }

    /// The API base URL while the process is up.
    pub(crate) fn base(&self) -> Option<String> {
        self.base.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_base(&self, base: Option<String>) {
        *self.base.write().unwrap_or_else(|e| e.into_inner()) = base;
    }

    /// The label of the current (or last) process: `r1.3` is instance r1's third process.
    /// Its deliveries carry it in the [`INSTANCE_HEADER`].
    pub(crate) fn process(&self) -> String {
        format!("{}.{}", self.name, self.generation.load(Ordering::Relaxed))
    }

    /// The relay's log: one marker line per process, then its JSON log lines.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    /// Starts a new process (a new generation) and waits for its "listening on" line.
    pub(crate) async fn start(&self) -> Result<()> {
        self.generation.fetch_add(1, Ordering::Relaxed);
        let process = self.process();
        std::fs::write(&self.config, config_text(&process, &self.settings))
            .map_err(|e| Error::io(format!("writing {}", self.config.display()), e))?;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| Error::io(format!("opening {}", self.log.display()), e))?;
        use std::io::Write as _;
        writeln!(log, "{PROCESS_MARKER}{process}")
            .map_err(|e| Error::io(format!("writing {}", self.log.display()), e))?;
        let mut child = Command::new(&self.binary)
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .env("FERRULE_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", self.binary.display()), e))?;
        // Under the CPU limit before the relay has opened its store (its start is not measured).
        if let Some(slot) = &self.slot {
            let confined = match child.id() {
                Some(pid) => slot.confine(pid),
                None => Err(Error::Setup(format!("{} exited at once", self.name))),
            };
            if let Err(e) = confined {
                let _ = child.start_kill();
                return Err(e);
            }
        }
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Setup("the relay's stdout was not captured".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let base = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.trim().split("listening on ").nth(1) {
                    return Some(rest.to_owned());
                }
            }
            None
        })
        .await;
        let Ok(Some(base)) = base else {
            let _ = child.start_kill();
            return Err(Error::Setup(format!(
                "{} did not start (see {})",
                self.name,
                self.log.display()
            )));
        };
        // Keep reading so the relay never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.pid.store(child.id().unwrap_or(0), Ordering::Relaxed);
        *self.child.lock().await = Some(child);
        self.set_base(Some(base));
        Ok(())
    }

    /// `kill -9`, then reaps the process.
    pub(crate) async fn kill9(&self) -> Result<()> {
        self.set_base(None);
        self.pid.store(0, Ordering::Relaxed);
        if let Some(mut child) = self.child.lock().await.take() {
            child
                .kill()
                .await
                .map_err(|e| Error::io(format!("killing {}", self.name), e))?;
        }
        Ok(())
    }

    /// SIGTERM, then waits up to `within` for the exit; `None` if it did not exit in time (it
    /// is then killed).
    pub(crate) async fn sigterm(&self, within: Duration) -> Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.lock().await.take() else {
            return Ok(None);
        };
        if let Some(pid) = child.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
                .map_err(|e| Error::io(format!("sending SIGTERM to {}", self.name), e.into()))?;
        }
        let status = tokio::time::timeout(within, child.wait()).await;
        self.set_base(None);
        self.pid.store(0, Ordering::Relaxed);
        match status {
            Ok(status) => {
                Ok(Some(status.map_err(|e| {
                    Error::io(format!("waiting for {}", self.name), e)
                })?))
            }
            Err(_) => {
                let _ = child.kill().await;
                Ok(None)
            }
        }
    }

    /// Whether the process is still running (reaps it if it exited on its own).
    pub(crate) async fn exited(&self) -> Option<ExitStatus> {
        let mut guard = self.child.lock().await;
        let status = guard.as_mut().and_then(|c| c.try_wait().ok().flatten());
        if status.is_some() {
            guard.take();
            self.set_base(None);
            self.pid.store(0, Ordering::Relaxed);
        }
        status
    }

    /// Samples the process's RSS into the instance's stats.
    pub(crate) fn sample_rss(&self) {
        let pid = self.pid.load(Ordering::Relaxed);
        if pid == 0 {
            return;
        }
        let Some(kib) = rss_kib(pid) else { return };
        let mut s = self.rss.lock().unwrap_or_else(|e| e.into_inner());
        s.min_kib = if s.samples == 0 {
            kib
        } else {
            s.min_kib.min(kib)
        };
        s.max_kib = s.max_kib.max(kib);
        s.last_kib = kib;
        s.samples += 1;
    }

    /// The RSS samples so far.
    pub(crate) fn rss(&self) -> RssStats {
        *self.rss.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The throttling counters of the instance's CPU limit (cgroups only).
    pub(crate) fn throttling(&self) -> Option<Throttling> {
        self.slot.as_ref()?.throttling()
    }

    /// The process id while up (0 when down).
    pub(crate) fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }
}

/// `VmRSS` of `pid` in KiB, from `/proc/<pid>/status`.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time (user + system) `pid` has used, from `/proc/<pid>/stat` (ticks of 10 ms).
pub(crate) fn cpu_time(pid: u32) -> Duration {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_owned();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}
