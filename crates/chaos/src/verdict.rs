//! The verdict of a run: each check with its result and the figures behind it, printed as a
//! table or as JSON.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::cli::ReceiverFault;
use crate::logs::ProcessLog;
use crate::monitor::Observed;
use crate::receiver::{AnswerCounts, Record};
use crate::relay::{ATTEMPT_TIMEOUT, BREAKER_OPEN_FOR, RssStats};

/// Something that happened to the system under test, since the run's origin.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Event {
    /// When it started.
    pub(crate) at: Duration,
    /// What it was.
    pub(crate) kind: EventKind,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum EventKind {
    /// `kill -9` of a relay process.
    Kill {
        /// The process (`r1.3`).
        process: String,
    },
    /// SIGTERM of a relay process.
    Sigterm {
        /// The process.
        process: String,
        /// Its exit code, if it exited within the drain timeout.
        exit: Option<i32>,
        /// How long it took to exit.
        took: Duration,
    },
    /// A new process of an instance was spawned (after a kill, stop or crash).
    Restart {
        /// The new process.
        process: String,
        /// From spawn to its "listening on" line.
        ready_after: Duration,
    },
    /// A process exited without being stopped.
    Crash {
        /// The process.
        process: String,
        /// How it exited.
        status: String,
    },
    /// A receiver fault window.
    Receiver {
        /// The fault.
        fault: ReceiverFault,
        /// When it ended.
        until: Duration,
    },
    /// A PostgreSQL restart.
    PgRestart {
        /// When `pg_ctlcluster` returned.
        until: Duration,
        /// `ok`, or why it failed or was skipped.
        result: String,
    },
    /// The SQLite file system was full.
    DiskFull {
        /// When it was freed again.
        until: Duration,
        /// Bytes written to fill it.
        filled: u64,
    },
}

impl EventKind {
    /// The process a process event concerns (`None`: every process).
    fn process(&self) -> Option<&str> {
        match self {
            EventKind::Kill { process }
            | EventKind::Sigterm { process, .. }
            | EventKind::Crash { process, .. } => Some(process),
            _ => None,
        }
    }

    /// When a store-wide disruption ended (`None` for process events).
    fn until(&self) -> Option<Duration> {
        match self {
            EventKind::PgRestart { until, .. } | EventKind::DiskFull { until, .. } => Some(*until),
            _ => None,
        }
    }

    /// Whether it can make a relay lose track of a delivery it made (so a duplicate follows).
    fn disrupts(&self) -> bool {
        match self {
            EventKind::Kill { .. }
            | EventKind::Sigterm { .. }
            | EventKind::Crash { .. }
            | EventKind::DiskFull { .. } => true,
            EventKind::PgRestart { result, .. } => result == "ok",
            _ => false,
        }
    }

    fn label(&self) -> String {
        match self {
            EventKind::Kill { process } => format!("kill -9 {process}"),
            EventKind::Sigterm { process, .. } => format!("SIGTERM {process}"),
            EventKind::Crash { process, .. } => format!("crash {process}"),
            EventKind::DiskFull { .. } => "disk full".into(),
            EventKind::PgRestart { .. } => "PostgreSQL restart".into(),
            EventKind::Restart { process, .. } => format!("restart as {process}"),
            EventKind::Receiver { fault, .. } => format!("receiver {fault:?}"),
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// The check held.
    Pass,
    /// The check failed: the run fails.
    Fail,
    /// The check could not run (the detail says why).
    Skip,
    /// A figure without a pass mark.
    Info,
}

/// One line of the verdict.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    /// What was checked.
    pub(crate) name: String,
    /// Its result.
    pub(crate) outcome: Outcome,
    /// The figures.
    pub(crate) detail: String,
}

/// RSS of one instance over the run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Memory {
    /// The instance.
    pub(crate) instance: String,
    /// Its samples.
    pub(crate) rss: RssStats,
}

/// The whole verdict.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Verdict {
    /// What ran: backend, instances, messages, rate, seed.
    pub(crate) setup: BTreeMap<String, String>,
    /// The checks, in order.
    pub(crate) checks: Vec<Check>,
    /// What the receiver answered.
    pub(crate) answers: AnswerCounts,
    /// Every event of the run.
    pub(crate) events: Vec<Event>,
    /// Memory per instance.
    pub(crate) memory: Vec<Memory>,
}

impl Verdict {
    /// Whether every check passed (or was skipped or informational).
    pub(crate) fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.outcome != Outcome::Fail)
    }

    /// The plain-text table.
    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        let setup: Vec<String> = self.setup.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "ferrule-chaos verdict ({})", setup.join(", "));
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(10);
        for c in &self.checks {
            let mark = match c.outcome {
                Outcome::Pass => "PASS",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "skip",
                Outcome::Info => "info",
            };
            let _ = writeln!(out, "  {mark}  {:width$}  {}", c.name, c.detail);
        }
        let a = &self.answers;
        let _ = writeln!(
            out,
            "  receiver answered: {} ok, {} × 500, {} × 429, {} slow, {} reset, {} blackholed",
            a.ok, a.error_500, a.too_many, a.slow, a.reset, a.blackhole
        );
        for m in &self.memory {
            let _ = writeln!(
                out,
                "  RSS {}: min {:.1} MiB, max {:.1} MiB over {} samples",
                m.instance,
                m.rss.min_kib as f64 / 1024.0,
                m.rss.max_kib as f64 / 1024.0,
                m.rss.samples
            );
        }
        let _ = writeln!(
            out,
            "verdict: {}",
            if self.passed() { "PASS" } else { "FAIL" }
        );
        out
    }
}

/// A check helper.
pub(crate) fn check(name: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.to_owned(),
        outcome: if ok { Outcome::Pass } else { Outcome::Fail },
        detail: detail.into(),
    }
}

/// An informational line.
pub(crate) fn info(name: &str, detail: impl Into<String>) -> Check {
    Check {
        name: name.to_owned(),
        outcome: Outcome::Info,
        detail: detail.into(),
    }
}

/// A skipped check.
pub(crate) fn skip(name: &str, detail: impl Into<String>) -> Check {
    Check {
        name: name.to_owned(),
        outcome: Outcome::Skip,
        detail: detail.into(),
    }
}

/// Duplicates (a message id answered 2xx more than once), each pair of deliveries attributed
/// to the first disruption of the earlier delivery's instance between the two.
#[derive(Debug, Default)]
pub(crate) struct Duplicates {
    /// Message ids delivered more than once.
    pub(crate) ids: usize,
    /// Deliveries beyond the first.
    pub(crate) extra: usize,
    /// Extra deliveries per disruption (by index into the events).
    pub(crate) by_event: BTreeMap<usize, usize>,
    /// Extra deliveries no disruption explains: the message id and the two deliveries.
    pub(crate) unexplained: Vec<(String, String)>,
    /// Extra deliveries whose earlier attempt the relay itself recorded as timed out: the
    /// receiver answered 200, but too late for the relay (at-least-once, not a loss of state).
    pub(crate) timed_out: usize,
}

/// The first disruption in `events` that explains why process `process`, after reaching the
/// receiver at `first`, may not have recorded it before another attempt at `second`: that
/// process was killed, stopped or crashed before `second`; or the store was unavailable
/// (database restart, full disk) from at most one attempt timeout before `first` to `second`.
fn explanation(
    events: &[Event],
    process: &str,
    first: Duration,
    second: Duration,
) -> Option<usize> {
    events.iter().position(|e| {
        e.kind.disrupts()
            && e.at <= second
            && match (e.kind.process(), e.kind.until()) {
                (Some(p), _) => p == process,
                (None, Some(until)) => until + ATTEMPT_TIMEOUT >= first,
                (None, None) => false,
            }
    })
}

/// Attributes every duplicate delivery in `records` to an event of `events`.
pub(crate) fn duplicates(records: &HashMap<String, Record>, events: &[Event]) -> Duplicates {
    let mut d = Duplicates::default();
    for (id, r) in records {
        if r.deliveries.len() < 2 {
            continue;
        }
        d.ids += 1;
        for pair in r.deliveries.windows(2) {
            d.extra += 1;
            let (first, second) = (&pair[0], &pair[1]);
            let cause = explanation(events, &first.instance, first.at, second.at);
            match cause {
                Some(i) => *d.by_event.entry(i).or_default() += 1,
                None => d.unexplained.push((
                    id.clone(),
                    format!(
                        "{id} ({} at {:.3} s, then {} at {:.3} s)",
                        first.instance,
                        first.at.as_secs_f64(),
                        second.instance,
                        second.at.as_secs_f64()
                    ),
                )),
            }
        }
    }
    d
}

/// The duplicate checks: none unexplained, and at most `bound` per kill or stop.
pub(crate) fn duplicate_checks(d: &Duplicates, events: &[Event], bound: usize) -> Vec<Check> {
    let mut out = Vec::new();
    let process_events = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Kill { .. } | EventKind::Sigterm { .. }))
        .count();
    let worst = d
        .by_event
        .iter()
        .filter(|(i, _)| {
            matches!(
                events[**i].kind,
                EventKind::Kill { .. } | EventKind::Sigterm { .. }
            )
        })
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0);
    let mut causes: BTreeMap<String, usize> = BTreeMap::new();
    for (i, n) in &d.by_event {
        let label = events[*i].kind.label();
        let kind = label.split(' ').next().unwrap_or("").to_owned();
        *causes.entry(kind).or_default() += n;
    }
    let causes: Vec<String> = causes.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    out.push(check(
        "duplicates within bound",
        worst <= bound,
        format!(
            "{} ids delivered more than once, {} extra deliveries ({}); worst kill/stop {} ≤ bound {} (in flight per process) over {} kills/stops",
            d.ids,
            d.extra,
            {
                let mut causes = causes;
                if d.timed_out > 0 {
                    causes.push(format!("relay timed out on an answered attempt: {}", d.timed_out));
                }
                if causes.is_empty() { "none".to_owned() } else { causes.join(", ") }
            },
            worst,
            bound,
            process_events
        ),
    ));
    out.push(check(
        "duplicates explained",
        d.unexplained.is_empty(),
        if d.unexplained.is_empty() {
            "every duplicate follows a kill, stop, crash, disk-full or database restart of its relay, or an attempt the relay recorded as timed out".to_owned()
        } else {
            format!(
                "{} duplicate deliveries with no disruption or timeout in between, e.g. {}",
                d.unexplained.len(),
                d.unexplained[0].1
            )
        },
    ));
    out
}

/// Attempts before a `Retry-After`, excluding those after a disruption of the relay (which
/// loses the reschedule it had not yet written).
pub(crate) fn retry_after_check(records: &HashMap<String, Record>, events: &[Event]) -> Check {
    let mut early = 0;
    let mut excused = 0;
    let mut example = None;
    let mut answered = 0;
    for (id, r) in records {
        answered += r.early.len();
        for e in &r.early {
            let explained = explanation(events, &e.answered_process, e.answered_at, e.at).is_some();
            if explained {
                excused += 1;
            } else {
                early += 1;
                example.get_or_insert_with(|| {
                    format!(
                        "{id} from {} at {:.3} s, allowed from {:.3} s",
                        e.instance,
                        e.at.as_secs_f64(),
                        e.allowed_at.as_secs_f64()
                    )
                });
            }
        }
    }
    let _ = answered;
    check(
        "no delivery before Retry-After",
        early == 0,
        match example {
            None => format!(
                "0 early attempts ({excused} after a kill or restart of the relay, not counted)"
            ),
            Some(ex) => {
                format!("{early} early attempts, e.g. {ex}; {excused} more after a disruption")
            }
        },
    )
}

/// Breaker checks from the relays' own logs: it opened under injected failures and every open
/// period lasted at least `open_for`; the state each instance ended in is shown.
pub(crate) fn breaker_checks(logs: &[Vec<ProcessLog>], failures_injected: bool) -> Vec<Check> {
    let mut transitions: BTreeMap<String, usize> = BTreeMap::new();
    let mut short = Vec::new();
    let mut still_open = Vec::new();
    for instance in logs {
        for p in instance {
            for t in &p.transitions {
                *transitions
                    .entry(format!("{}→{}", t.from, t.to))
                    .or_default() += 1;
            }
            for d in crate::logs::short_open_periods(p, BREAKER_OPEN_FOR) {
                short.push(format!("{} open for {d:?}", p.process));
            }
        }
        if let Some(last) = instance.last()
            && let Some(t) = last.transitions.last()
            && t.to != "closed"
        {
            still_open.push(format!("{}: {}", last.process, t.to));
        }
    }
    let opened = transitions.get("closed→open").copied().unwrap_or(0);
    let seen: Vec<String> = transitions
        .iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect();
    let seen = if seen.is_empty() {
        "none".to_owned()
    } else {
        seen.join(", ")
    };
    let mut out = Vec::new();
    if failures_injected {
        out.push(check(
            "breaker opened under failures",
            opened > 0,
            format!("transitions logged: {seen}"),
        ));
    } else {
        out.push(info("breaker transitions", seen));
    }
    out.push(check(
        "breaker open ≥ open_for",
        short.is_empty(),
        if short.is_empty() {
            format!("every open period lasted ≥ {BREAKER_OPEN_FOR:?} (open_for)")
        } else {
            short.join("; ")
        },
    ));
    // Informational: a breaker leaves open or half-open only on its next call, and after
    // the drain a relay may get none (its peers delivered the rest).
    out.push(info(
        "breakers after the drain",
        if still_open.is_empty() {
            "each instance's last process ended with its breaker closed".to_owned()
        } else {
            format!(
                "last logged state {} (no call came after it to close it)",
                still_open.join(", ")
            )
        },
    ));
    out
}

/// Whether each PostgreSQL restart showed in every live instance's `/readyz` (503 during,
/// 200 after).
pub(crate) fn readyz_checks(
    observed: &Observed,
    events: &[Event],
    instances: &[String],
) -> Vec<Check> {
    let mut out = Vec::new();
    for e in events {
        let EventKind::PgRestart { until, result } = &e.kind else {
            continue;
        };
        if result != "ok" {
            out.push(skip("readyz during PostgreSQL restart", result.clone()));
            continue;
        }
        let mut lines = Vec::new();
        let mut ok = true;
        for name in instances {
            let changes: Vec<_> = observed
                .readyz
                .iter()
                .filter(|c| &c.instance == name && c.at >= e.at)
                .collect();
            let down = changes
                .iter()
                .find(|c| c.at <= *until + Duration::from_secs(5) && c.value != "200");
            let back = down.and_then(|d| changes.iter().find(|c| c.at > d.at && c.value == "200"));
            match (down, back) {
                (Some(d), Some(b)) => lines.push(format!(
                    "{name}: {} after {:.1} s, 200 again after {:.1} s",
                    d.value,
                    (d.at - e.at).as_secs_f64(),
                    (b.at - e.at).as_secs_f64()
                )),
                (Some(d), None) => {
                    ok = false;
                    lines.push(format!("{name}: {} and never ready again", d.value));
                }
                (None, _) => {
                    ok = false;
                    lines.push(format!("{name}: never reported the outage"));
                }
            }
        }
        out.push(check(
            &format!(
                "readyz during PostgreSQL restart at {:.1} s",
                e.at.as_secs_f64()
            ),
            ok,
            lines.join("; "),
        ));
    }
    out
}

/// The `p`-quantile of `sorted`.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[rank]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::Delivery;

    fn delivered(at: &[(u64, &str)]) -> Record {
        Record {
            requests: at.len() as u32,
            deliveries: at
                .iter()
                .map(|(ms, i)| Delivery {
                    at: Duration::from_millis(*ms),
                    instance: (*i).to_owned(),
                })
                .collect(),
            ..Record::default()
        }
    }

    #[test]
    fn duplicates_are_attributed_to_a_kill_of_the_earlier_deliverer() {
        let events = vec![
            Event {
                at: Duration::from_millis(150),
                kind: EventKind::Kill {
                    process: "r2.1".into(),
                },
            },
            Event {
                at: Duration::from_millis(300),
                kind: EventKind::Kill {
                    process: "r1.1".into(),
                },
            },
        ];
        let mut records = HashMap::new();
        // r1 delivered, r1 was killed later, r2 delivered again: explained by the kill of r1.
        records.insert("a".to_owned(), delivered(&[(200, "r1.1"), (400, "r2.2")]));
        // r1 delivered twice with only r2 killed in between: unexplained.
        records.insert("b".to_owned(), delivered(&[(100, "r1.1"), (200, "r1.1")]));
        records.insert("c".to_owned(), delivered(&[(100, "r1.1")]));
        // Reached the receiver after its sender was killed (in flight at the kill): explained.
        records.insert("d".to_owned(), delivered(&[(350, "r1.1"), (900, "r1.2")]));
        let d = duplicates(&records, &events);
        assert_eq!(d.ids, 3);
        assert_eq!(d.extra, 3);
        assert_eq!(d.by_event.get(&1), Some(&2));
        assert_eq!(d.unexplained.len(), 1);
        assert_eq!(d.unexplained[0].0, "b");
        assert!(
            d.unexplained[0].1.starts_with("b (r1.1 at 0.100 s"),
            "{:?}",
            d.unexplained
        );
        let checks = duplicate_checks(&d, &events, 0);
        assert_eq!(checks[0].outcome, Outcome::Fail, "1 > bound 0");
        assert_eq!(checks[1].outcome, Outcome::Fail);
        let checks = duplicate_checks(&d, &events, 2);
        assert_eq!(checks[0].outcome, Outcome::Pass);
    }

    #[test]
    fn percentile_picks_the_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
