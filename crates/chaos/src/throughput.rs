//! `ferrule-chaos throughput`: no faults; delivered msg/s and submit → delivery latency for
//! SQLite and for 1, 2, 3… PostgreSQL instances sharing one database.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::{Backend, ThroughputArgs};
use crate::error::{Error, Result};
use crate::relay::cpu_time;
use crate::run::{Fleet, FleetSpec};
use crate::verdict::percentile;

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// `sqlite` or `postgres`.
    pub(crate) backend: String,
    /// Relay processes.
    pub(crate) instances: usize,
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
    /// Largest RSS of any instance, MiB.
    pub(crate) max_rss_mib: f64,
}

/// Measures every configuration `args` names.
pub(crate) async fn run(args: ThroughputArgs) -> Result<Vec<Row>> {
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
    let mut rows = Vec::new();
    for rep in 0..args.repeat {
        for &(backend, instances) in &configs {
            let spec = FleetSpec {
                backend,
                instances,
                binary: args.common.ferrule_bin.clone(),
                postgres_url: args.common.postgres_url.clone(),
                concurrency: args.common.concurrency,
                tmpfs: false,
                label: format!("tp{instances}_{rep}"),
            };
            let fleet = Fleet::start(&spec).await?;
            let row = measure(&args, &fleet, backend, instances).await;
            fleet.shut_down(args.common.keep_dir).await?;
            rows.push(row?);
        }
    }
    Ok(rows)
}

async fn measure(
    args: &ThroughputArgs,
    fleet: &Fleet,
    backend: Backend,
    instances: usize,
) -> Result<Row> {
    let submitter = crate::submitter::Submitter::new(
        fleet.instances.clone(),
        format!("tp-{}", std::process::id()),
    );
    // Settle, then count CPU from here.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pids: Vec<u32> = fleet.instances.iter().map(|i| i.pid()).collect();
    let cpu_before: Duration = pids.iter().map(|p| cpu_time(*p)).sum();
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
    let submitted = submitter.run_flat_out(args.messages, args.clients).await;
    let submit_took = start.elapsed();
    let acked = submitted.acked.len();
    let deadline = Instant::now() + Duration::from_secs(600);
    while fleet.receiver.delivered_count() < acked && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sampler.abort();
    let cpu_after: Duration = pids.iter().map(|p| cpu_time(*p)).sum();
    let records = fleet.receiver.records();
    let mut latencies = Vec::with_capacity(acked);
    let mut last = Duration::ZERO;
    for a in &submitted.acked {
        if let Some(d) = records.get(&a.id).and_then(|r| r.deliveries.first()) {
            let sent = a.sent.saturating_duration_since(fleet.origin);
            latencies.push(d.at.saturating_sub(sent));
            last = last.max(d.at);
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
        acked,
        submit_per_s: acked as f64 / submit_took.as_secs_f64(),
        delivered_per_s: latencies.len() as f64 / span.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        p99_ms: percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        relay_cpu_us: cpu_after.saturating_sub(cpu_before).as_secs_f64() * 1e6
            / acked.max(1) as f64,
        max_rss_mib: max_rss as f64 / 1024.0,
    })
}

/// The rows as a Markdown table.
pub(crate) fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| store | instances | acked | submitted msg/s | delivered msg/s | p50 ms | p99 ms | relay CPU µs/msg | max RSS MiB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} |\n",
            r.backend,
            r.instances,
            r.acked,
            r.submit_per_s,
            r.delivered_per_s,
            r.p50_ms,
            r.p99_ms,
            r.relay_cpu_us,
            r.max_rss_mib
        ));
    }
    out
}
