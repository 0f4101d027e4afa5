//! `ferrule-chaos run`: sets up the relays, receiver and submitter, runs the fault schedule
//! under load, drains, and builds the verdict.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cli::{Backend, ReceiverFault, RunArgs};
use crate::cpulimit::CpuLimiter;
use crate::disk::Tmpfs;
use crate::error::{Error, Result};
use crate::monitor::Monitor;
use crate::plan::{Action, PlanSpec, plan};
use crate::postgres::{self, RunDatabase};
use crate::receiver::Receiver;
use crate::relay::{DRAIN_TIMEOUT, Instance, RelaySettings, SECRET, TOKEN, find_binary};
use crate::submitter::Submitter;
use crate::verdict::{self, Event, EventKind, Memory, Verdict, check, info, percentile, skip};

/// Size of the tmpfs the SQLite file lives on with `--disk-full`.
const TMPFS_MIB: u64 = 64;
/// Resuming queued work after a restart must take less than this (SQLite).
const RESUME_TARGET: Duration = Duration::from_secs(1);

/// The shared pieces of a run.
pub(crate) struct Fleet {
    /// When the run began; every recorded time counts from here.
    pub(crate) origin: Instant,
    /// The relays.
    pub(crate) instances: Arc<Vec<Arc<Instance>>>,
    /// The receiver.
    pub(crate) receiver: Receiver,
    /// The run directory (deleted on drop unless kept).
    pub(crate) dir: tempfile::TempDir,
    /// The PostgreSQL database, if any.
    pub(crate) database: Option<RunDatabase>,
    /// The tmpfs under the SQLite file, if any.
    pub(crate) tmpfs: Option<Tmpfs>,
    /// Why `--disk-full` could not be honoured.
    pub(crate) tmpfs_skipped: Option<String>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

/// What a fleet is made of.
#[derive(Debug, Clone)]
pub(crate) struct FleetSpec {
    /// The store.
    pub(crate) backend: Backend,
    /// Relay processes.
    pub(crate) instances: usize,
    /// `--ferrule-bin`.
    pub(crate) binary: Option<PathBuf>,
    /// `--postgres-url`.
    pub(crate) postgres_url: String,
    /// Dispatcher concurrency.
    pub(crate) concurrency: usize,
    /// Mount a tmpfs for the SQLite file.
    pub(crate) tmpfs: bool,
    /// A suffix naming the database.
    pub(crate) label: String,
    /// The CPU limit of each relay (`--relay-cpu`).
    pub(crate) cpu_limit: Option<Arc<CpuLimiter>>,
}

impl Fleet {
    /// Starts the receiver, creates the store and starts every relay.
    pub(crate) async fn start(spec: &FleetSpec) -> Result<Self> {
        let origin = Instant::now();
        let binary = find_binary(spec.binary.as_deref())?;
        let dir = tempfile::Builder::new()
            .prefix("ferrule-chaos-")
            .tempdir()
            .map_err(|e| Error::io("creating the run directory", e))?;
        let receiver = Receiver::start(origin, SECRET).await?;
        let (mut tmpfs, mut tmpfs_skipped, mut database) = (None, None, None);
        let (store_url, lease) = match spec.backend {
            Backend::Sqlite => {
                let mut db_dir = dir.path().to_owned();
                if spec.tmpfs {
                    match Tmpfs::mount(&dir.path().join("fs"), TMPFS_MIB) {
                        Ok(t) => {
                            db_dir = t.dir().to_owned();
                            tmpfs = Some(t);
                        }
                        Err(why) => tmpfs_skipped = Some(why),
                    }
                }
                (
                    format!("sqlite://{}", db_dir.join("chaos.db").display()),
                    Duration::from_secs(5),
                )
            }
            Backend::Postgres => {
                let db = RunDatabase::create(&spec.postgres_url, &spec.label).await?;
                let url = db.url.clone();
                database = Some(db);
                (url, Duration::from_secs(3))
            }
        };
        let settings = RelaySettings {
            store_url,
            hook_url: receiver.url(),
            concurrency: spec.concurrency,
            lease,
        };
        let mut instances = Vec::new();
        for i in 1..=spec.instances {
            let name = format!("r{i}");
            let slot = match &spec.cpu_limit {
                Some(limit) => Some(limit.slot(&format!("{}-{name}", spec.label))?),
                None => None,
            };
            instances.push(Arc::new(Instance::new(
                dir.path(),
                &name,
                &binary,
                &settings,
                slot,
            )?));
        }
        let fleet = Fleet {
            origin,
            instances: Arc::new(instances),
            receiver,
            dir,
            database,
            tmpfs,
            tmpfs_skipped,
        };
        // One at a time: the first applies the migrations.
        for inst in fleet.instances.iter() {
            inst.start().await?;
        }
        Ok(fleet)
    }

    /// Stops every relay (SIGTERM, then kill), drops the database and the tmpfs.
    pub(crate) async fn shut_down(self, keep_dir: bool) -> Result<Option<PathBuf>> {
        for inst in self.instances.iter() {
            let _ = inst.sigterm(DRAIN_TIMEOUT + Duration::from_secs(2)).await;
        }
        drop(self.tmpfs);
        if let Some(db) = self.database
            && !keep_dir
        {
            db.drop_now().await?;
        }
        if keep_dir {
            return Ok(Some(self.dir.keep()));
        }
        Ok(None)
    }
}

/// Runs `args` and returns the verdict.
pub(crate) async fn run(args: RunArgs) -> Result<Verdict> {
    let instances = match (args.backend, args.instances) {
        (Backend::Sqlite, None | Some(1)) => 1,
        (Backend::Sqlite, Some(n)) => {
            return Err(Error::Setup(format!(
                "--instances {n}: SQLite is single-owner, so a SQLite run has one relay"
            )));
        }
        (Backend::Postgres, None) => 3,
        (Backend::Postgres, Some(0)) => {
            return Err(Error::Setup("--instances must be at least 1".into()));
        }
        (Backend::Postgres, Some(n)) => n,
    };
    if args.backend == Backend::Sqlite && args.pg_restarts > 0 {
        return Err(Error::Setup(
            "--pg-restarts needs --backend postgres".into(),
        ));
    }
    if args.backend == Backend::Postgres && args.disk_full {
        return Err(Error::Setup("--disk-full needs --backend sqlite".into()));
    }
    if args.rate == 0 || args.messages == 0 {
        return Err(Error::Setup(
            "--rate and --messages must be at least 1".into(),
        ));
    }
    let spec = FleetSpec {
        backend: args.backend,
        instances,
        binary: args.common.ferrule_bin.clone(),
        postgres_url: args.common.postgres_url.clone(),
        concurrency: args.common.concurrency,
        tmpfs: args.disk_full,
        label: format!("run{}", args.seed),
        cpu_limit: None,
    };
    let fleet = Fleet::start(&spec).await?;
    let result = drive(&args, &fleet, instances).await;
    let kept = fleet.shut_down(args.common.keep_dir).await?;
    let mut verdict = result?;
    if let Some(dir) = kept {
        verdict
            .setup
            .insert("dir".into(), dir.display().to_string());
    }
    Ok(verdict)
}

/// Shared by the schedule's actions and the crash watcher.
struct Log {
    origin: Instant,
    events: Mutex<Vec<Event>>,
}

impl Log {
    fn push(&self, at: Duration, kind: EventKind) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Event { at, kind });
    }
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
    fn take(&self) -> Vec<Event> {
        let mut events =
            std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()));
        events.sort_by_key(|e| e.at);
        events
    }
}

/// Starts `inst` again, retrying a few times; records the restart.
async fn restart(inst: &Instance, log: &Log) {
    for _ in 0..20 {
        let at = log.now();
        let spawned = Instant::now();
        match inst.start().await {
            Ok(()) => {
                log.push(
                    at,
                    EventKind::Restart {
                        process: inst.process(),
                        ready_after: spawned.elapsed(),
                    },
                );
                return;
            }
            Err(e) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn drive(args: &RunArgs, fleet: &Fleet, instances: usize) -> Result<Verdict> {
    let origin = fleet.origin;
    let log = Arc::new(Log {
        origin,
        events: Mutex::new(Vec::new()),
    });
    let monitor = Arc::new(Monitor::start(origin, fleet.instances.clone()));
    // Restart any relay that exits on its own, and record it as a crash.
    let watcher = {
        let (instances, log, monitor) = (fleet.instances.clone(), log.clone(), monitor.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                for inst in instances.iter() {
                    let process = inst.process();
                    if let Some(status) = inst.exited().await {
                        let at = log.now();
                        monitor.crashed(at, &inst.name, status.to_string());
                        log.push(
                            at,
                            EventKind::Crash {
                                process,
                                status: status.to_string(),
                            },
                        );
                        restart(inst, &log).await;
                    }
                }
            }
        })
    };
    let submitter = Submitter::new(
        fleet.instances.clone(),
        format!("{}-{}", std::process::id(), args.seed),
    );
    let span = Duration::from_secs_f64(args.messages as f64 / args.rate as f64);
    let schedule = plan(
        &PlanSpec {
            span,
            instances,
            kills: args.kills,
            sigterms: args.sigterms,
            faults: args.faults.clone(),
            fault_rounds: args.fault_rounds,
            fault_len: args.fault_len,
            pg_restarts: args.pg_restarts,
            disk_full: args.disk_full && fleet.tmpfs.is_some(),
        },
        args.seed,
    );
    let load_start = Instant::now();
    let load = {
        let (s, messages, rate) = (submitter.clone(), args.messages, args.rate);
        tokio::spawn(async move { s.run_at_rate(messages, rate).await })
    };
    let mut pg_skipped = None;
    for step in &schedule {
        tokio::time::sleep_until((load_start + step.at).into()).await;
        match &step.action {
            Action::Kill { victim, pause } => {
                let inst = pick_up(&fleet.instances, *victim);
                let Some(inst) = inst else { continue };
                let (at, process) = (log.now(), inst.process());
                inst.kill9().await?;
                log.push(at, EventKind::Kill { process });
                tokio::time::sleep(*pause).await;
                restart(inst, &log).await;
            }
            Action::Sigterm { victim } => {
                let Some(inst) = pick_up(&fleet.instances, *victim) else {
                    continue;
                };
                let (at, process) = (log.now(), inst.process());
                let started = Instant::now();
                let status = inst.sigterm(DRAIN_TIMEOUT + Duration::from_secs(3)).await?;
                log.push(
                    at,
                    EventKind::Sigterm {
                        process,
                        exit: status.and_then(|s| s.code()),
                        took: started.elapsed(),
                    },
                );
                restart(inst, &log).await;
            }
            Action::Receiver {
                fault,
                length,
                retry_after_secs,
            } => {
                let at = log.now();
                let generation = fleet.receiver.set_fault(Some(*fault), *retry_after_secs);
                log.push(
                    at,
                    EventKind::Receiver {
                        fault: *fault,
                        until: at + *length,
                    },
                );
                let receiver = fleet.receiver.clone();
                let length = *length;
                tokio::spawn(async move {
                    tokio::time::sleep(length).await;
                    receiver.clear_fault(generation);
                });
            }
            Action::PgRestart => {
                let at = log.now();
                let others = match &fleet.database {
                    Some(db) if !args.pg_restart_even_if_shared => db.other_sessions().await?,
                    _ => 0,
                };
                let result = if others > 0 {
                    let why = format!(
                        "skipped: {others} other client sessions on the server (--pg-restart-even-if-shared to restart anyway)"
                    );
                    pg_skipped = Some(why.clone());
                    why
                } else {
                    match postgres::restart(args.pg_down_for).await {
                        Ok(_) => "ok".to_owned(),
                        Err(e) => format!("failed: {e}"),
                    }
                };
                log.push(
                    at,
                    EventKind::PgRestart {
                        until: log.now(),
                        result,
                    },
                );
            }
            Action::DiskFull { length } => {
                let Some(fs) = &fleet.tmpfs else { continue };
                let at = log.now();
                let filled = fs.fill()?;
                tokio::time::sleep(*length).await;
                fs.free();
                log.push(
                    at,
                    EventKind::DiskFull {
                        until: log.now(),
                        filled,
                    },
                );
            }
        }
    }
    let submitted = load
        .await
        .map_err(|e| Error::Setup(format!("the submitter panicked: {e}")))?;
    let _ = fleet.receiver.set_fault(None, 1);
    let load_took = load_start.elapsed();

    // Drain: every acked message delivered or dead.
    let acked: HashMap<String, u64> = submitted
        .acked
        .iter()
        .map(|a| (a.id.clone(), a.n))
        .collect();
    let drain_start = Instant::now();
    let http = reqwest::Client::new();
    let mut dead: HashMap<String, String> = HashMap::new();
    let mut round = 0u64;
    let pending = loop {
        let pending: Vec<String> = fleet
            .receiver
            .undelivered(acked.keys())
            .into_iter()
            .filter(|id| !dead.contains_key(id))
            .collect();
        if pending.is_empty() || drain_start.elapsed() > args.drain_timeout {
            break pending;
        }
        if round % 4 == 3 {
            for (id, status, error) in
                statuses(&http, &fleet.instances, pending.iter().take(500)).await
            {
                if status == "dead" {
                    dead.insert(id, error);
                }
            }
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let drain_took = drain_start.elapsed();
    // The relays' view of what is still missing.
    let mut lost = Vec::new();
    for (id, status, error) in statuses(&http, &fleet.instances, pending.iter()).await {
        if status == "dead" {
            dead.insert(id, error);
        } else {
            lost.push(format!("{id} ({status})"));
        }
    }
    // Keys that needed a second request must still name the same message.
    let retried: Vec<_> = submitted
        .acked
        .iter()
        .filter(|a| a.requests > 1)
        .take(300)
        .cloned()
        .collect();
    let mut key_mismatch = Vec::new();
    for a in &retried {
        match submitter.resubmit(a.n).await {
            Some(id) if id == a.id => {}
            Some(id) => key_mismatch.push(format!("message {}: {} then {id}", a.n, a.id)),
            None => key_mismatch.push(format!("message {}: resubmission failed", a.n)),
        }
    }
    // Let the monitor see the final breaker states.
    tokio::time::sleep(Duration::from_millis(500)).await;
    watcher.abort();
    monitor.stop();
    let observed = monitor.observed();
    let events = log.take();
    let records = fleet.receiver.records();

    // The verdict.
    let mut checks = Vec::new();
    let replayed = submitted.acked.iter().filter(|a| a.replayed).count();
    let mut failures: Vec<String> = submitted
        .failures
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    failures.sort();
    checks.push(info(
        "submitted",
        format!(
            "{} acked of {} in {:.1} s ({} acked as 200 replays), {} not acked; failed requests: {}",
            submitted.acked.len(),
            args.messages,
            load_took.as_secs_f64(),
            replayed,
            submitted.unacked.len(),
            if failures.is_empty() { "none".into() } else { failures.join(", ") }
        ),
    ));
    let delivered = acked
        .keys()
        .filter(|id| records.get(*id).is_some_and(|r| !r.deliveries.is_empty()))
        .count();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for r in dead.values() {
        *reasons
            .entry(r.split(':').next().unwrap_or(r).to_owned())
            .or_default() += 1;
    }
    let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} × {r}")).collect();
    checks.push(check(
        "0 acked messages lost",
        lost.is_empty(),
        format!(
            "{} acked: {} delivered, {} dead-lettered{}, {} lost{}",
            acked.len(),
            delivered,
            dead.len(),
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join("; "))
            },
            lost.len(),
            lost.first()
                .map(|l| format!(", e.g. {l}"))
                .unwrap_or_default()
        ),
    ));
    checks.push(info(
        "drain",
        format!(
            "{} in {:.1} s (limit {:?})",
            if pending.iter().all(|id| dead.contains_key(id)) {
                "finished"
            } else {
                "timed out"
            },
            drain_took.as_secs_f64(),
            args.drain_timeout
        ),
    ));
    let bad: u32 = records.values().map(|r| r.bad_signatures).sum();
    let requests: u32 = records.values().map(|r| r.requests).sum();
    checks.push(check(
        "signatures valid",
        bad == 0,
        format!("{bad} of {requests} requests had an invalid signature"),
    ));
    // One message per idempotency key: the payload's n must map to one id.
    let mut ids_per_n: HashMap<u64, HashSet<&str>> = HashMap::new();
    for (id, r) in &records {
        if let Some(n) = r.n {
            ids_per_n.entry(n).or_default().insert(id);
        }
    }
    let split: Vec<u64> = ids_per_n
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(n, _)| *n)
        .collect();
    checks.push(check(
        "one message per idempotency key",
        split.is_empty() && key_mismatch.is_empty(),
        format!(
            "{} keys delivered under more than one id; {} keys that needed a retry re-submitted: {} answered a different id{}",
            split.len(),
            retried.len(),
            key_mismatch.len(),
            key_mismatch.first().map(|m| format!(" ({m})")).unwrap_or_default()
        ),
    ));
    let mut dups = verdict::duplicates(&records, &events);
    // An unexplained duplicate whose earlier attempt the relay recorded as timed out is the
    // at-least-once contract at work (the 200 came too late), not lost state.
    let unexplained = std::mem::take(&mut dups.unexplained);
    let timed_out =
        timed_out_attempts(&http, &fleet.instances, unexplained.iter().map(|u| &u.0)).await;
    for (id, text) in unexplained {
        match timed_out.get(&id) {
            Some(n) if *n > 0 => dups.timed_out += 1,
            _ => dups.unexplained.push((id, text)),
        }
    }
    checks.extend(verdict::duplicate_checks(
        &dups,
        &events,
        args.common.concurrency,
    ));
    checks.push(verdict::retry_after_check(&records, &events));
    let failures_injected = events.iter().any(|e| {
        matches!(
            e.kind,
            EventKind::Receiver {
                fault: ReceiverFault::Error500
                    | ReceiverFault::Reset
                    | ReceiverFault::Slow
                    | ReceiverFault::Blackhole,
                ..
            }
        )
    });
    let logs: Vec<_> = fleet
        .instances
        .iter()
        .map(|i| crate::logs::read(i.log_path()))
        .collect();
    checks.extend(verdict::breaker_checks(&logs, failures_injected));
    let errors: Vec<String> = logs
        .iter()
        .flatten()
        .filter(|p| !p.errors.is_empty())
        .map(|p| format!("{}: {} (e.g. {})", p.process, p.errors.len(), p.errors[0]))
        .collect();
    checks.push(info(
        "relay error log lines",
        if errors.is_empty() {
            "none".to_owned()
        } else {
            errors.join("; ")
        },
    ));
    let names: Vec<String> = fleet.instances.iter().map(|i| i.name.clone()).collect();
    if args.pg_restarts > 0 {
        if let Some(why) = &pg_skipped {
            checks.push(skip("PostgreSQL restart", why.clone()));
        }
        checks.extend(verdict::readyz_checks(&observed, &events, &names));
    }
    // Kills, stops and crashes.
    let kills = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Kill { .. }))
        .count();
    let crashes: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Crash { process, status } => Some(format!(
                "{process} at {:.1} s: {status}",
                e.at.as_secs_f64()
            )),
            _ => None,
        })
        .collect();
    checks.push(check(
        "no relay crashed",
        crashes.is_empty(),
        if crashes.is_empty() {
            format!("{kills} kill -9 cycles; no process exited unless stopped")
        } else {
            crashes.join("; ")
        },
    ));
    let stops: Vec<(i32, Duration)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Sigterm { exit, took, .. } => Some((exit.unwrap_or(-1), *took)),
            _ => None,
        })
        .collect();
    if !stops.is_empty() {
        let bad: Vec<String> = stops
            .iter()
            .filter(|(code, took)| *code != 0 || *took > DRAIN_TIMEOUT + Duration::from_secs(1))
            .map(|(code, took)| format!("exit {code} after {took:?}"))
            .collect();
        let slowest = stops.iter().map(|s| s.1).max().unwrap_or_default();
        checks.push(check(
            "SIGTERM: exit 0 within the drain timeout",
            bad.is_empty(),
            format!(
                "{} stops, slowest {:.2} s (drain timeout {:?}){}",
                stops.len(),
                slowest.as_secs_f64(),
                DRAIN_TIMEOUT,
                if bad.is_empty() {
                    String::new()
                } else {
                    format!("; {}", bad.join(", "))
                }
            ),
        ));
    }
    checks.push(resume_check(args.backend, &events, &fleet.receiver));
    if args.disk_full {
        checks.push(disk_check(fleet, &events, &submitted.failures));
    }
    let memory = fleet
        .instances
        .iter()
        .map(|i| Memory {
            instance: i.name.clone(),
            rss: i.rss(),
        })
        .collect();
    let mut setup = BTreeMap::new();
    setup.insert(
        "backend".into(),
        format!("{:?}", args.backend).to_lowercase(),
    );
    setup.insert("instances".into(), instances.to_string());
    setup.insert("messages".into(), args.messages.to_string());
    setup.insert("rate".into(), args.rate.to_string());
    setup.insert("seed".into(), args.seed.to_string());
    setup.insert("kills".into(), args.kills.to_string());
    Ok(Verdict {
        setup,
        checks,
        answers: fleet.receiver.answers(),
        events,
        memory,
    })
}

/// What the disk-full window did: skipped (no tmpfs), or how much was filled for how long and
/// how the relay refused submissions meanwhile. A full disk must answer 503 `storage_full`
/// (with `Retry-After`), so any 500 fails the check.
fn disk_check(fleet: &Fleet, events: &[Event], failures: &HashMap<String, u64>) -> verdict::Check {
    let name = "disk full (SQLite on a full tmpfs)";
    if let Some(why) = &fleet.tmpfs_skipped {
        return skip(name, why.clone());
    }
    let Some((at, until, filled)) = events.iter().find_map(|e| match e.kind {
        EventKind::DiskFull { until, filled } => Some((e.at, until, filled)),
        _ => None,
    }) else {
        return skip(name, "not scheduled");
    };
    let answered = |prefix: &str| -> u64 {
        failures
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, n)| *n)
            .sum()
    };
    let (full, internal) = (answered("503 storage_full"), answered("500"));
    check(
        name,
        internal == 0,
        format!(
            "filled {:.1} MiB for {:.1} s; {full} submissions answered 503 storage_full, \
             {internal} answered 500 during the run (not acked)",
            filled as f64 / 1_048_576.0,
            (until - at).as_secs_f64()
        ),
    )
}

/// The victim if it is up, else the next instance that is.
fn pick_up(instances: &[Arc<Instance>], victim: usize) -> Option<&Arc<Instance>> {
    (0..instances.len())
        .map(|k| &instances[(victim + k) % instances.len()])
        .find(|i| i.base().is_some())
}

/// From each restart's spawn to the first delivery its process made (SQLite: the target is
/// under 1 s). Restarts whose first delivery came after a receiver fault, disk-full or
/// database window began are not counted: the window, not the restart, delayed it.
fn resume_check(backend: Backend, events: &[Event], receiver: &Receiver) -> verdict::Check {
    let blocked: Vec<(Duration, Duration)> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Receiver { until, .. } | EventKind::DiskFull { until, .. } => {
                Some((e.at, until))
            }
            EventKind::PgRestart { until, .. } => Some((e.at, until)),
            _ => None,
        })
        .collect();
    let mut times = Vec::new();
    let mut none = 0;
    for e in events {
        let EventKind::Restart { process, .. } = &e.kind else {
            continue;
        };
        match receiver.first_ok_after(process, e.at) {
            // A fault window before the first delivery delays it for reasons of its own.
            Some(at) if blocked.iter().any(|(a, b)| *a <= at && *b >= e.at) => {}
            Some(at) => times.push(at - e.at),
            None => {
                // Nothing delivered: fine if a fault window or the next kill came soon after.
                let soon = e.at + Duration::from_secs(5);
                let cut_short = events.iter().any(|k| {
                    k.at >= e.at
                        && k.at <= soon
                        && matches!(&k.kind, EventKind::Kill { process: p } | EventKind::Sigterm { process: p, .. } if p == process)
                });
                if !cut_short && !blocked.iter().any(|(a, b)| *a <= soon && *b >= e.at) {
                    none += 1;
                }
            }
        }
    }
    times.sort();
    let name = "resume after restart";
    if times.is_empty() {
        return skip(name, "no restart outside a fault window");
    }
    let detail = format!(
        "spawn → first delivery over {} restarts: p50 {:.0} ms, max {:.0} ms{}",
        times.len(),
        percentile(&times, 0.5).as_secs_f64() * 1000.0,
        times.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        if none > 0 {
            format!("; {none} restarts delivered nothing afterwards")
        } else {
            String::new()
        }
    );
    match backend {
        Backend::Sqlite => check(
            name,
            none == 0 && times.last().is_some_and(|t| *t < RESUME_TARGET),
            format!("{detail} (target < {RESUME_TARGET:?})"),
        ),
        Backend::Postgres => info(name, detail),
    }
}

/// `GET /v1/messages/{id}` of the relay at `base`, or `None` if it did not answer with JSON.
async fn message_json(http: &reqwest::Client, base: &str, id: &str) -> Option<serde_json::Value> {
    http.get(format!("{base}/v1/messages/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// How many attempts of each id the relay recorded as timed out (from its timeline).
async fn timed_out_attempts<'a>(
    http: &reqwest::Client,
    instances: &[Arc<Instance>],
    ids: impl Iterator<Item = &'a String>,
) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for id in ids.take(1000) {
        let Some(base) = instances.iter().find_map(|i| i.base()) else {
            break;
        };
        let value = message_json(http, &base, id).await;
        let count = value
            .as_ref()
            .and_then(|v| v["events"].as_array())
            .map(|events| {
                events
                    .iter()
                    .filter(|e| {
                        e["detail"]
                            .as_str()
                            .is_some_and(|d| d.starts_with("timed out"))
                    })
                    .count()
            })
            .unwrap_or(0);
        out.insert(id.clone(), count);
    }
    out
}

/// `(id, status, last_error)` of each id, asked of a live relay, 32 at a time.
async fn statuses<'a>(
    http: &reqwest::Client,
    instances: &[Arc<Instance>],
    ids: impl Iterator<Item = &'a String>,
) -> Vec<(String, String, String)> {
    let ids: Vec<&String> = ids.collect();
    let mut out = Vec::new();
    for chunk in ids.chunks(32) {
        let Some(base) = instances.iter().find_map(|i| i.base()) else {
            break;
        };
        let asks = chunk.iter().map(|id| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let value = message_json(&http, &base, id).await;
                let status = value
                    .as_ref()
                    .and_then(|v| v["status"].as_str())
                    .unwrap_or("unknown")
                    .to_owned();
                let error = value
                    .as_ref()
                    .and_then(|v| v["last_error"].as_str())
                    .unwrap_or("")
                    .to_owned();
                ((*id).clone(), status, error)
            }
        });
        out.extend(futures_util::future::join_all(asks).await);
    }
    out
}
