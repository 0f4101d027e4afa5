//! `--relay-cpu`: each relay process under a CPU limit of its own, so that the relays, not the
//! machine, are what limits throughput; PostgreSQL and the harness stay outside the limits.
//!
//! The mechanism is detected: a cgroup v2 group with `cpu.max` when `/sys/fs/cgroup` is a
//! cgroup2 hierarchy with the `cpu` controller, else a cgroup v1 group with
//! `cpu.cfs_quota_us` under `/sys/fs/cgroup/cpu`. Both need write access to the hierarchy
//! (root, or a delegated subtree). Each relay gets a child group of its own
//! (`ferrule-chaos-<harness pid>/<fleet>-<instance>`), with a quota of the given fraction of
//! one core per 100 ms period; the harness moves each relay into its group right after
//! spawning it, before the relay has connected to its store. The groups are removed when the
//! relays are gone (also after an error or Ctrl-C, which kills the relays). Without either,
//! `--relay-cpu-fallback taskset` pins every relay to the machine's last CPU (`taskset -a -p`):
//! that is not a quota, and the relays then share that one CPU with each other and with
//! whatever else runs there.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The scheduler period of every quota, µs (the kernel's default).
const PERIOD_US: u64 = 100_000;

/// How a relay's CPU is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mechanism {
    /// A cgroup v2 group with `cpu.max`.
    CgroupV2,
    /// A cgroup v1 `cpu` group with `cpu.cfs_quota_us`.
    CgroupV1,
    /// `taskset`: pinned to one CPU, no quota.
    Taskset,
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mechanism::CgroupV2 => "cgroup v2 cpu.max",
            Mechanism::CgroupV1 => "cgroup v1 cpu.cfs_quota_us",
            Mechanism::Taskset => "taskset (pinning to one CPU, not a quota)",
        })
    }
}

/// The limit of one run: the mechanism, the fraction and (cgroups) the run's parent group.
#[derive(Debug)]
pub(crate) struct CpuLimiter {
    mechanism: Mechanism,
    fraction: f64,
    /// The run's parent group (cgroups only); removed on drop.
    root: Option<PathBuf>,
    /// The CPU every relay is pinned to (taskset only).
    cpu: usize,
}

/// Checks `--relay-cpu`: a fraction of one core, at least 0.01 (the kernel's smallest quota is
/// 1 ms per period) and at most the machine's CPU count.
pub(crate) fn validate_fraction(fraction: f64) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if !fraction.is_finite() || !(0.01..=cpus as f64).contains(&fraction) {
        return Err(Error::Setup(format!(
            "--relay-cpu {fraction}: give the CPU each relay process may use as a fraction of \
             one core, from 0.01 to {cpus} (this machine's CPUs), e.g. 0.3"
        )));
    }
    Ok(())
}

impl CpuLimiter {
    /// Detects the mechanism and creates the run's parent group. `allow_taskset`: fall back
    /// to pinning when no cgroup hierarchy can be written (otherwise that is an error).
    pub(crate) fn new(fraction: f64, allow_taskset: bool) -> Result<Self> {
        validate_fraction(fraction)?;
        let name = format!("ferrule-chaos-{}", std::process::id());
        let mut why = Vec::new();
        match v2_root() {
            Some(base) => match make_v2_parent(&base, &name) {
                Ok(root) => {
                    return Ok(CpuLimiter {
                        mechanism: Mechanism::CgroupV2,
                        fraction,
                        root: Some(root),
                        cpu: 0,
                    });
                }
                Err(e) => why.push(format!("cgroup v2 at {}: {e}", base.display())),
            },
            None => {
                why.push("no cgroup2 hierarchy with the cpu controller at /sys/fs/cgroup".into())
            }
        }
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        if v1.join("cpu.cfs_quota_us").is_file() {
            let root = v1.join(&name);
            match std::fs::create_dir(&root) {
                Ok(()) => {
                    return Ok(CpuLimiter {
                        mechanism: Mechanism::CgroupV1,
                        fraction,
                        root: Some(root),
                        cpu: 0,
                    });
                }
                Err(e) => why.push(format!("cgroup v1 at {}: {e}", root.display())),
            }
        } else {
            why.push("no cgroup v1 cpu hierarchy at /sys/fs/cgroup/cpu".into());
        }
        if allow_taskset {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            return Ok(CpuLimiter {
                mechanism: Mechanism::Taskset,
                fraction,
                root: None,
                cpu: cpus - 1,
            });
        }
        Err(Error::Setup(format!(
            "--relay-cpu {fraction}: no way to limit a process's CPU here ({}); run as root on \
             a machine with cgroups, or pass --relay-cpu-fallback taskset to pin the relays to \
             one CPU instead (not a quota)",
            why.join("; ")
        )))
    }

    /// What the run's output says about the limit.
    pub(crate) fn describe(&self) -> String {
        match self.mechanism {
            Mechanism::Taskset => format!(
                "each relay pinned to CPU {} with taskset: NOT a quota of {} core; the relays \
                 share that CPU with each other and with anything else scheduled there",
                self.cpu, self.fraction
            ),
            m => format!(
                "each relay process limited to {} of one core ({} µs per {} µs period) by {m}, \
                 one group per relay under {}; PostgreSQL and the harness are not limited",
                self.fraction,
                self.quota_us(),
                PERIOD_US,
                self.root
                    .as_deref()
                    .map_or("?".into(), |p| p.display().to_string()),
            ),
        }
    }

    fn quota_us(&self) -> u64 {
        (self.fraction * PERIOD_US as f64).round() as u64
    }

    /// A group for one relay process, `name` unique in the run.
    pub(crate) fn slot(&self, name: &str) -> Result<Slot> {
        let Some(root) = &self.root else {
            return Ok(Slot {
                dir: None,
                cpu: self.cpu,
            });
        };
        let dir = root.join(name);
        std::fs::create_dir(&dir)
            .map_err(|e| Error::io(format!("creating the cgroup {}", dir.display()), e))?;
        let slot = Slot {
            dir: Some(dir.clone()),
            cpu: self.cpu,
        };
        let (file, text) = match self.mechanism {
            Mechanism::CgroupV2 => ("cpu.max", format!("{} {PERIOD_US}", self.quota_us())),
            _ => {
                write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                ("cpu.cfs_quota_us", self.quota_us().to_string())
            }
        };
        write(&dir.join(file), &text)?;
        Ok(slot)
    }
}

impl Drop for CpuLimiter {
    fn drop(&mut self) {
        if let Some(root) = &self.root {
            // Any group a slot could not remove (its relay was still exiting), then the root.
            if let Ok(entries) = std::fs::read_dir(root) {
                for e in entries.flatten() {
                    if e.path().is_dir() {
                        remove_group(&e.path());
                    }
                }
            }
            remove_group(root);
        }
    }
}

/// One relay's group.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The group (cgroups); `None`: pin with taskset.
    dir: Option<PathBuf>,
    cpu: usize,
}

/// A group's throttling counters (`cpu.stat`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Throttling {
    /// Scheduler periods in which the group had runnable work.
    pub(crate) periods: u64,
    /// Of those, periods in which it used up its quota and was stopped.
    pub(crate) throttled: u64,
}

impl Slot {
    /// Moves process `pid` (all its threads) into the group.
    pub(crate) fn confine(&self, pid: u32) -> Result<()> {
        match &self.dir {
            Some(dir) => write(&dir.join("cgroup.procs"), &pid.to_string()),
            None => {
                let out = std::process::Command::new("taskset")
                    .args(["-a", "-p", "-c", &self.cpu.to_string(), &pid.to_string()])
                    .output()
                    .map_err(|e| Error::io("running taskset", e))?;
                if !out.status.success() {
                    return Err(Error::Setup(format!(
                        "taskset -a -p -c {} {pid} failed: {}",
                        self.cpu,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
                Ok(())
            }
        }
    }

    /// The group's throttling so far (cgroups only).
    pub(crate) fn throttling(&self) -> Option<Throttling> {
        let text = std::fs::read_to_string(self.dir.as_ref()?.join("cpu.stat")).ok()?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        Some(Throttling {
            periods: field("nr_periods ")?,
            throttled: field("nr_throttled ")?,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            remove_group(dir);
        }
    }
}

/// The cgroup2 hierarchy at `/sys/fs/cgroup` if it offers the `cpu` controller.
fn v2_root() -> Option<PathBuf> {
    let base = PathBuf::from("/sys/fs/cgroup");
    let controllers = std::fs::read_to_string(base.join("cgroup.controllers")).ok()?;
    controllers
        .split_whitespace()
        .any(|c| c == "cpu")
        .then_some(base)
}

/// Creates `base/name` with the `cpu` controller enabled for its children.
fn make_v2_parent(base: &Path, name: &str) -> std::io::Result<PathBuf> {
    let enabled = std::fs::read_to_string(base.join("cgroup.subtree_control"))?;
    if !enabled.split_whitespace().any(|c| c == "cpu") {
        std::fs::write(base.join("cgroup.subtree_control"), "+cpu")?;
    }
    let root = base.join(name);
    std::fs::create_dir(&root)?;
    if let Err(e) = std::fs::write(root.join("cgroup.subtree_control"), "+cpu") {
        let _ = std::fs::remove_dir(&root);
        return Err(e);
    }
    Ok(root)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text)
        .map_err(|e| Error::io(format!("writing {text} to {}", path.display()), e))
}

/// Removes a group, waiting up to 3 s for its processes to be gone. Only this harness's
/// relays are ever put in its groups; any still there (after an error or Ctrl-C the relays
/// may outlive the measurement that started them) are killed, and reaped here, since the
/// async runtime's reaper may not run before this drop returns (a killed process keeps its
/// group busy until it is reaped).
fn remove_group(dir: &Path) {
    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
            }
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if Instant::now() >= deadline => {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "ferrule-chaos: could not remove the cgroup {}: {e} (remove it with rmdir)",
                    dir.display()
                );
                return;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_out_of_range_name_the_flag() {
        for bad in [0.0, -1.0, 0.001, f64::NAN, 1000.0] {
            let e = validate_fraction(bad).unwrap_err().to_string();
            assert!(e.contains("--relay-cpu"), "{e}");
        }
        validate_fraction(0.3).unwrap();
    }
}
