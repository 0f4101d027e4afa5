//! `ferrule-chaos throughput`: no faults; delivered msg/s and submit → delivery latency for
//! SQLite and for 1, 2, 3… PostgreSQL instances sharing one database, at saturation or at
//! fixed rates (`--rates`), with what each message costs: relay CPU and context switches, and
//! on PostgreSQL the backends' CPU, commits, rows read and rows written. With `--relay-cpu`
//! each relay runs under a CPU limit of its own (`cpulimit`), and the output adds each
//! instance's msg/s, how often the limit throttled the relays, what the harness and
//! PostgreSQL used of the machine, and the scaling efficiency of N instances against one.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use crate::cli::{Backend, Rate, ThroughputArgs};
use crate::cpulimit::{CpuLimiter, Throttling};
use crate::error::{Error, Result};
use crate::relay::{DRAIN_TIMEOUT, cpu_time};
use crate::run::{Fleet, FleetSpec};
use crate::verdict::percentile;

/// How long a fleet idles before the measurement starts: long enough for the backends to have
/// published the statistics of the relays' start (PostgreSQL flushes them at most once a
/// second), so none of it counts against the messages.
const SETTLE: Duration = Duration::from_millis(2000);

/// How long after the relays stopped the statistics are read. A backend that goes idle holds
/// its last second of statistics for up to 10 s, but publishes them when its client
/// disconnects: so the relays are stopped first (SIGTERM; their drain is counted too).
const STATS_FLUSH: Duration = Duration::from_millis(1000);

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// `sqlite` or `postgres`.
    pub(crate) backend: String,
    /// Relay processes.
    pub(crate) instances: usize,
    /// Which binary: `new` (`--ferrule-bin`) or `baseline` (`--baseline-bin`).
    pub(crate) binary: String,
    /// The submission rate: messages per second, or `max`.
    pub(crate) rate: String,
    /// Messages acked.
    pub(crate) acked: usize,
    /// Acked messages per second while submitting.
    pub(crate) submit_per_s: f64,
    /// Delivered messages per second, first submission to last delivery.
    pub(crate) delivered_per_s: f64,
    /// Submit (request sent) → delivery (receiver got it), median, ms.
    pub(crate) p50_ms: f64,
    /// Same, 99th percentile, ms.
    pub(crate) p99_ms: f64,
    /// Relay CPU per delivered message, µs (all instances).
    pub(crate) relay_cpu_us: f64,
    /// Context switches (voluntary and not) of every relay thread, per message.
    pub(crate) ctx_switches: f64,
    /// Largest RSS of any instance, MiB.
    pub(crate) max_rss_mib: f64,
    /// Messages each instance delivered (first deliveries, by the instance header) per
    /// second of the measurement, `r1` first.
    pub(crate) per_instance_per_s: Vec<f64>,
    /// Cores the relays used together during the measurement (CPU time ÷ wall time).
    pub(crate) relay_cores: f64,
    /// With `--relay-cpu` on a cgroup: the share of the relays' scheduler periods in which
    /// they used up their quota and were stopped (`cpu.stat` `nr_throttled ÷ nr_periods`).
    pub(crate) throttled: Option<f64>,
    /// Cores the harness (submitter, receiver, this process) used during the measurement.
    pub(crate) harness_cores: f64,
    /// Cores the run database's PostgreSQL backends used during the measurement.
    pub(crate) pg_cores: Option<f64>,
    /// How busy the whole machine was (all processes, all CPUs, `/proc/stat`), 0–1.
    pub(crate) machine_busy: f64,
    /// PostgreSQL only: what the server did for the run's database.
    pub(crate) postgres: Option<PgCost>,
}

/// What PostgreSQL spent per message on the run's database (`pg_stat_database` deltas and
/// the CPU of the database's backends).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PgCost {
    /// CPU of the run database's backends (`pg_stat_activity` pids, `/proc/<pid>/stat`), µs
    /// per message; the server's own processes (WAL writer, checkpointer) are not included.
    pub(crate) backend_cpu_us: f64,
    /// Committed transactions per message (`xact_commit`).
    pub(crate) commits: f64,
    /// Rows read per message (`tup_returned + tup_fetched`).
    pub(crate) rows_read: f64,
    /// Rows written per message (`tup_inserted + tup_updated + tup_deleted`).
    pub(crate) rows_written: f64,
    /// Index entries read per message by each index that read any
    /// (`pg_stat_user_indexes.idx_tup_read`), most first.
    pub(crate) index_reads: Vec<(String, f64)>,
}

/// What `throughput` measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// `--relay-cpu`: the limit and its mechanism, in words.
    pub(crate) cpu_limit: Option<String>,
    /// One row per measurement.
    pub(crate) rows: Vec<Row>,
}

/// Measures every configuration `args` names.
pub(crate) async fn run(args: ThroughputArgs) -> Result<Report> {
    let mut configs = Vec::new();
    if args.sqlite {
        configs.push((Backend::Sqlite, 1));
    }
    for &n in &args.postgres {
        if n == 0 {
            return Err(Error::Setup(
                "--postgres instance counts must be at least 1".into(),
            ));
        }
        configs.push((Backend::Postgres, n));
    }
    if configs.is_empty() {
        return Err(Error::Setup(
            "nothing to measure: pass --sqlite and/or --postgres 1,2,3".into(),
        ));
    }
    let limiter = match args.relay_cpu {
        Some(fraction) => Some(Arc::new(CpuLimiter::new(
            fraction,
            args.relay_cpu_fallback.is_some(),
        )?)),
        None => None,
    };
    if let Some(l) = &limiter {
        let _ = writeln!(std::io::stderr().lock(), "ferrule-chaos: {}", l.describe());
    }
    let rates = if args.rates.is_empty() {
        vec![Rate::Max]
    } else {
        args.rates.clone()
    };
    let mut binaries = vec![("new", args.common.ferrule_bin.clone())];
    if let Some(baseline) = &args.baseline_bin {
        binaries.push(("baseline", Some(baseline.clone())));
    }
    let mut rows = Vec::new();
    let mut turn = 0_usize;
    for rep in 0..args.repeat {
        for &(backend, instances) in &configs {
            for &rate in &rates {
                // Alternate which binary goes first, so a drift of the machine's load favours
                // neither.
                turn += 1;
                let mut order = binaries.clone();
                if turn.is_multiple_of(2) {
                    order.reverse();
                }
                for (label, binary) in order {
                    let row = measure_fresh(
                        &args,
                        limiter.clone(),
                        backend,
                        instances,
                        rate,
                        label,
                        binary,
                        rep,
                    )
                    .await?;
                    let _ = writeln!(
                        std::io::stderr().lock(),
                        "ferrule-chaos: round {} {} x{} {} rate {}: {:.0} msg/s delivered",
                        rep + 1,
                        row.backend,
                        row.instances,
                        row.binary,
                        row.rate,
                        row.delivered_per_s
                    );
                    rows.push(row);
                }
            }
        }
    }
    Ok(Report {
        cpu_limit: limiter.map(|l| l.describe()),
        rows,
    })
}

/// One measurement on a fleet of its own.
#[allow(clippy::too_many_arguments)]
async fn measure_fresh(
    args: &ThroughputArgs,
    cpu_limit: Option<Arc<CpuLimiter>>,
    backend: Backend,
    instances: usize,
    rate: Rate,
    label: &str,
    binary: Option<PathBuf>,
    rep: u32,
) -> Result<Row> {
    let spec = FleetSpec {
        backend,
        instances,
        binary,
        postgres_url: args.common.postgres_url.clone(),
        concurrency: args.common.concurrency,
        tmpfs: false,
        label: format!("tp{instances}_{rep}_{rate}_{label}"),
        cpu_limit,
    };
    let fleet = Fleet::start(&spec).await?;
    let row = measure(args, &fleet, backend, instances, rate).await;
    fleet.shut_down(args.common.keep_dir).await?;
    let mut row = row?;
    row.binary = label.to_owned();
    Ok(row)
}

async fn measure(
    args: &ThroughputArgs,
    fleet: &Fleet,
    backend: Backend,
    instances: usize,
    rate: Rate,
) -> Result<Row> {
    let submitter = crate::submitter::Submitter::new(
        fleet.instances.clone(),
        format!("tp-{}", std::process::id()),
    );
    // Settle, then count from here.
    tokio::time::sleep(SETTLE).await;
    let pids: Vec<u32> = fleet.instances.iter().map(|i| i.pid()).collect();
    let database = fleet.database.as_ref().map(|d| d.url.clone());
    let pg_before = match &database {
        Some(url) => Some(PgSample::take(url).await?),
        None => None,
    };
    let cpu_before: Duration = pids.iter().map(|p| cpu_time(*p)).sum();
    let switches_before: u64 = pids.iter().map(|p| context_switches(*p)).sum();
    let throttling_before = throttling(fleet);
    let harness_before = cpu_time(std::process::id());
    let machine_before = MachineCpu::take();
    let wall_before = Instant::now();
    let sampler = {
        let instances = fleet.instances.clone();
        tokio::spawn(async move {
            loop {
                for inst in instances.iter() {
                    inst.sample_rss();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let start = Instant::now();
    let submitted = match rate {
        Rate::Max => submitter.run_flat_out(args.messages, args.clients).await,
        Rate::Fixed(per_s) => {
            let messages = (per_s as f64 * args.seconds.as_secs_f64()).round() as u64;
            submitter.run_at_rate(messages.max(1), per_s).await
        }
    };
    let submit_took = start.elapsed();
    let acked = submitted.acked.len();
    let deadline = Instant::now() + Duration::from_secs(600);
    while fleet.receiver.delivered_count() < acked && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sampler.abort();
    let cpu_after: Duration = pids.iter().map(|p| cpu_time(*p)).sum();
    let switches_after: u64 = pids.iter().map(|p| context_switches(*p)).sum();
    let throttling_after = throttling(fleet);
    let harness_cpu = cpu_time(std::process::id()).saturating_sub(harness_before);
    let machine_busy = MachineCpu::take().busy_since(&machine_before);
    let wall = wall_before.elapsed().as_secs_f64().max(1e-3);
    let per_message = acked.max(1) as f64;
    let mut pg_cores = None;
    let postgres = match (&database, pg_before) {
        (Some(url), Some(before)) => {
            let backends_now = PgSample::backend_cpu(&before.backends);
            pg_cores = Some(backends_now.as_secs_f64() / wall);
            for inst in fleet.instances.iter() {
                let _ = inst.sigterm(DRAIN_TIMEOUT + Duration::from_secs(2)).await;
            }
            tokio::time::sleep(STATS_FLUSH).await;
            let after = PgSample::take(url).await?;
            Some(after.cost_since(&before, backends_now, per_message))
        }
        _ => None,
    };
    let records = fleet.receiver.records();
    let mut latencies = Vec::with_capacity(acked);
    let mut last = Duration::ZERO;
    let mut by_instance: HashMap<&str, usize> = HashMap::new();
    for a in &submitted.acked {
        if let Some(d) = records.get(&a.id).and_then(|r| r.deliveries.first()) {
            let sent = a.sent.saturating_duration_since(fleet.origin);
            latencies.push(d.at.saturating_sub(sent));
            last = last.max(d.at);
            // `r2.1` is instance r2's first process.
            let name = d.instance.split('.').next().unwrap_or("?");
            *by_instance.entry(name).or_default() += 1;
        }
    }
    latencies.sort();
    let first_sent = start.saturating_duration_since(fleet.origin);
    let span = last
        .saturating_sub(first_sent)
        .max(Duration::from_millis(1));
    let max_rss = fleet
        .instances
        .iter()
        .map(|i| i.rss().max_kib)
        .max()
        .unwrap_or(0);
    Ok(Row {
        backend: format!("{backend:?}").to_lowercase(),
        instances,
        binary: String::new(),
        rate: rate.to_string(),
        acked,
        submit_per_s: acked as f64 / submit_took.as_secs_f64(),
        delivered_per_s: latencies.len() as f64 / span.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        p99_ms: percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        relay_cpu_us: cpu_after.saturating_sub(cpu_before).as_secs_f64() * 1e6 / per_message,
        ctx_switches: switches_after.saturating_sub(switches_before) as f64 / per_message,
        max_rss_mib: max_rss as f64 / 1024.0,
        per_instance_per_s: fleet
            .instances
            .iter()
            .map(|i| {
                by_instance.get(i.name.as_str()).copied().unwrap_or(0) as f64 / span.as_secs_f64()
            })
            .collect(),
        relay_cores: cpu_after.saturating_sub(cpu_before).as_secs_f64() / wall,
        throttled: match (throttling_before, throttling_after) {
            (Some(b), Some(a)) if a.periods > b.periods => {
                Some((a.throttled - b.throttled) as f64 / (a.periods - b.periods) as f64)
            }
            _ => None,
        },
        harness_cores: harness_cpu.as_secs_f64() / wall,
        pg_cores,
        machine_busy,
        postgres,
    })
}

/// The throttling counters of all the fleet's CPU limits added up, if it has any.
fn throttling(fleet: &Fleet) -> Option<Throttling> {
    fleet
        .instances
        .iter()
        .map(|i| i.throttling())
        .try_fold(Throttling::default(), |sum, t| {
            let t = t?;
            Some(Throttling {
                periods: sum.periods + t.periods,
                throttled: sum.throttled + t.throttled,
            })
        })
}

/// The machine's CPU time so far (`/proc/stat`, first line), in ticks.
#[derive(Debug, Clone, Copy, Default)]
struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    fn take() -> Self {
        let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
            return MachineCpu::default();
        };
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        MachineCpu {
            busy: total.saturating_sub(idle),
            total,
        }
    }

    /// The share of all CPUs' time since `before` that was not idle.
    fn busy_since(&self, before: &MachineCpu) -> f64 {
        let total = self.total.saturating_sub(before.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(before.busy) as f64 / total as f64
    }
}

/// Voluntary and involuntary context switches of every thread of `pid` so far
/// (`/proc/<pid>/task/*/status`); threads that already ended are not counted.
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|l| {
                    l.starts_with("voluntary_ctxt_switches:")
                        || l.starts_with("nonvoluntary_ctxt_switches:")
                })
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// The run database's statistics at one moment.
#[derive(Debug)]
struct PgSample {
    commits: i64,
    rows_read: i64,
    rows_written: i64,
    /// `idx_tup_read` per index.
    index_reads: HashMap<String, i64>,
    /// CPU so far of each backend connected to the database.
    backends: HashMap<u32, Duration>,
}

impl PgSample {
    /// Reads the statistics in one statement on a connection of its own (so at most one
    /// commit of the sample itself counts).
    async fn take(url: &str) -> Result<Self> {
        let mut conn = PgConnection::connect(url)
            .await
            .map_err(|e| Error::pg("connecting to read statistics", e))?;
        let row: (i64, i64, i64, Option<String>, Option<Vec<i32>>) = sqlx::query_as(
            "SELECT d.xact_commit, d.tup_returned + d.tup_fetched,
                        d.tup_inserted + d.tup_updated + d.tup_deleted,
                        (SELECT string_agg(indexrelname || '=' || idx_tup_read, ',')
                           FROM pg_stat_user_indexes),
                        (SELECT array_agg(pid) FROM pg_stat_activity
                          WHERE datname = current_database() AND pid <> pg_backend_pid())
                 FROM pg_stat_database d WHERE d.datname = current_database()",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(|e| Error::pg("reading pg_stat_database", e))?;
        let _ = conn.close().await;
        let backends = row
            .4
            .unwrap_or_default()
            .into_iter()
            .filter_map(|pid| u32::try_from(pid).ok())
            .map(|pid| (pid, cpu_time(pid)))
            .collect();
        Ok(PgSample {
            commits: row.0,
            rows_read: row.1,
            rows_written: row.2,
            index_reads: row
                .3
                .unwrap_or_default()
                .split(',')
                .filter_map(|pair| {
                    let (name, n) = pair.rsplit_once('=')?;
                    Some((name.to_owned(), n.parse().ok()?))
                })
                .collect(),
            backends,
        })
    }

    /// CPU used since `before` by the backends in it, and by any backend connected since.
    fn backend_cpu(before: &HashMap<u32, Duration>) -> Duration {
        before
            .iter()
            .map(|(pid, then)| cpu_time(*pid).saturating_sub(*then))
            .sum()
    }

    /// The cost per message since `before`; `backend_cpu` was measured when the run ended
    /// (this sample is taken later, once the statistics are flushed).
    fn cost_since(&self, before: &PgSample, backend_cpu: Duration, messages: f64) -> PgCost {
        // Backends that connected during the run: their whole CPU counts.
        let joined: Duration = self
            .backends
            .iter()
            .filter(|(pid, _)| !before.backends.contains_key(pid))
            .map(|(_, cpu)| *cpu)
            .sum();
        let mut index_reads: Vec<(String, f64)> = self
            .index_reads
            .iter()
            .map(|(name, n)| {
                let delta = n - before.index_reads.get(name).copied().unwrap_or(0);
                (name.clone(), delta as f64 / messages)
            })
            .filter(|(_, n)| *n > 0.0)
            .collect();
        index_reads.sort_by(|a, b| b.1.total_cmp(&a.1));
        PgCost {
            backend_cpu_us: (backend_cpu + joined).as_secs_f64() * 1e6 / messages,
            commits: (self.commits - before.commits) as f64 / messages,
            rows_read: (self.rows_read - before.rows_read) as f64 / messages,
            rows_written: (self.rows_written - before.rows_written) as f64 / messages,
            index_reads,
        }
    }
}

/// The report as Markdown: the CPU limit, the rows, the indexes PostgreSQL read most in each
/// PostgreSQL row, where the CPU went in each row, and (when one instance and more were
/// measured) the scaling efficiency.
pub(crate) fn table(report: &Report) -> String {
    let rows = &report.rows;
    let mut out = String::new();
    if let Some(limit) = &report.cpu_limit {
        out.push_str(&format!("CPU limit: {limit}\n\n"));
    }
    out.push_str(
        "| store | inst | binary | rate | acked | submitted msg/s | delivered msg/s | p50 ms | p99 ms | relay CPU µs/msg | ctx sw/msg | PG CPU µs/msg | commits/msg | rows read/msg | rows written/msg | max RSS MiB |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut indexes = String::new();
    for r in rows {
        let pg = |f: fn(&PgCost) -> f64, digits: usize| {
            r.postgres
                .as_ref()
                .map_or("—".to_owned(), |c| format!("{:.*}", digits, f(c)))
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {} | {} | {} | {} | {:.1} |\n",
            r.backend,
            r.instances,
            r.binary,
            r.rate,
            r.acked,
            r.submit_per_s,
            r.delivered_per_s,
            r.p50_ms,
            r.p99_ms,
            r.relay_cpu_us,
            r.ctx_switches,
            pg(|c| c.backend_cpu_us, 0),
            pg(|c| c.commits, 2),
            pg(|c| c.rows_read, 1),
            pg(|c| c.rows_written, 1),
            r.max_rss_mib
        ));
        if let Some(c) = &r.postgres {
            let top: Vec<String> = c
                .index_reads
                .iter()
                .take(4)
                .map(|(name, n)| format!("{name} {n:.1}"))
                .collect();
            indexes.push_str(&format!(
                "- {} inst {} {} rate {}: index entries read per message: {}\n",
                r.backend,
                r.instances,
                r.binary,
                r.rate,
                if top.is_empty() {
                    "none".to_owned()
                } else {
                    top.join(", ")
                }
            ));
        }
    }
    if !indexes.is_empty() {
        out.push('\n');
        out.push_str(&indexes);
    }
    out.push_str(&cpu_table(rows));
    out.push_str(&scaling_table(rows));
    out
}

/// Where the CPU went in each row: each instance's msg/s, the cores the relays, the harness
/// and PostgreSQL used, the relays' throttling and the whole machine's busy share.
fn cpu_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "\n| store | inst | binary | rate | msg/s per instance | relay cores | throttled % | harness cores | PG cores | machine busy % |\n\
         |---|---:|---|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let per: Vec<String> = r
            .per_instance_per_s
            .iter()
            .map(|n| format!("{n:.0}"))
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.2} | {} | {:.2} | {} | {:.0} |\n",
            r.backend,
            r.instances,
            r.binary,
            r.rate,
            per.join(" / "),
            r.relay_cores,
            r.throttled
                .map_or("—".to_owned(), |t| format!("{:.0}", t * 100.0)),
            r.harness_cores,
            r.pg_cores.map_or("—".to_owned(), |c| format!("{c:.2}")),
            r.machine_busy * 100.0,
        ));
    }
    out
}

/// Per store, binary and rate: the mean of each instance count's rows, and at saturation its
/// efficiency (delivered msg/s of N ÷ (N × that of one)). Empty unless one instance and more
/// were measured.
fn scaling_table(rows: &[Row]) -> String {
    let mut groups: Vec<(String, String, String)> = Vec::new();
    for r in rows {
        let key = (r.backend.clone(), r.binary.clone(), r.rate.clone());
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    let mut out = String::new();
    for (backend, binary, rate) in groups {
        let of = |n: usize| -> Vec<&Row> {
            rows.iter()
                .filter(|r| {
                    r.backend == backend && r.binary == binary && r.rate == rate && r.instances == n
                })
                .collect()
        };
        let one = of(1);
        let mut counts: Vec<usize> = rows
            .iter()
            .filter(|r| r.backend == backend && r.binary == binary && r.rate == rate)
            .map(|r| r.instances)
            .collect();
        counts.sort_unstable();
        counts.dedup();
        if one.is_empty() || counts.len() < 2 {
            continue;
        }
        let base = mean(&one, |r| r.delivered_per_s);
        if out.is_empty() {
            out.push_str(
                "\nScaling (means over the rounds; efficiency = msg/s of N ÷ (N × msg/s of one)):\n\n\
                 | store | binary | rate | inst | rounds | delivered msg/s | per instance | efficiency | relay CPU µs/msg | PG CPU µs/msg | commits/msg | index entries read/msg |\n\
                 |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            );
        }
        for n in counts {
            let these = of(n);
            let total = mean(&these, |r| r.delivered_per_s);
            let pg = |f: fn(&PgCost) -> f64, digits: usize| {
                if these.iter().all(|r| r.postgres.is_some()) {
                    format!(
                        "{:.*}",
                        digits,
                        mean(&these, |r| r.postgres.as_ref().map_or(0.0, f))
                    )
                } else {
                    "—".to_owned()
                }
            };
            out.push_str(&format!(
                "| {backend} | {binary} | {rate} | {n} | {} | {total:.0} | {:.0} | {} | {:.0} | {} | {} | {} |\n",
                these.len(),
                total / n as f64,
                // At a fixed rate every count delivers the rate: no efficiency to read.
                if rate == "max" {
                    format!("{:.0} %", total / (n as f64 * base) * 100.0)
                } else {
                    "— (fixed rate)".to_owned()
                },
                mean(&these, |r| r.relay_cpu_us),
                pg(|c| c.backend_cpu_us, 0),
                pg(|c| c.commits, 3),
                pg(|c| c.index_reads.iter().map(|(_, n)| n).sum(), 1),
            ));
        }
    }
    out
}

fn mean(rows: &[&Row], f: impl Fn(&Row) -> f64) -> f64 {
    rows.iter().map(|r| f(r)).sum::<f64>() / rows.len().max(1) as f64
}
