//! The fault schedule: every kill, graceful stop, receiver fault window, PostgreSQL restart and
//! disk-full window of a run, at seeded random moments within the load.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::cli::ReceiverFault;

/// One scheduled action.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// `kill -9` instance `victim`, wait `pause`, start it again.
    Kill {
        /// Index of the instance.
        victim: usize,
        /// Downtime before the restart.
        pause: Duration,
    },
    /// SIGTERM instance `victim`, expect exit 0, start it again.
    Sigterm {
        /// Index of the instance.
        victim: usize,
    },
    /// The receiver answers with `fault` for `length`.
    Receiver {
        /// The fault.
        fault: ReceiverFault,
        /// How long.
        length: Duration,
        /// The `Retry-After` of a 429, in seconds.
        retry_after_secs: u8,
    },
    /// `pg_ctlcluster … restart`.
    PgRestart,
    /// Fill the SQLite file system for `length`.
    DiskFull {
        /// How long.
        length: Duration,
    },
}

/// An action and when it starts, since the load began.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Planned {
    /// Start time.
    pub(crate) at: Duration,
    /// What happens.
    pub(crate) action: Action,
}

/// What to schedule.
#[derive(Debug, Clone)]
pub(crate) struct PlanSpec {
    /// How long the load runs.
    pub(crate) span: Duration,
    /// Relay instances.
    pub(crate) instances: usize,
    /// Kill cycles.
    pub(crate) kills: u32,
    /// Graceful stops.
    pub(crate) sigterms: u32,
    /// Receiver faults, each `fault_rounds` times.
    pub(crate) faults: Vec<ReceiverFault>,
    /// Rounds of receiver faults.
    pub(crate) fault_rounds: u32,
    /// Length of one receiver fault window.
    pub(crate) fault_len: Duration,
    /// PostgreSQL restarts.
    pub(crate) pg_restarts: u32,
    /// Whether to fill the disk once.
    pub(crate) disk_full: bool,
}

/// The schedule for `spec` under `seed`, sorted by start time.
///
/// Process actions (kills, stops, restarts) fall in the first 90 % of the span; receiver
/// windows and the disk-full window do not overlap each other, so each verdict line can say
/// which fault it saw.
pub(crate) fn plan(spec: &PlanSpec, seed: u64) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let span = spec.span.as_secs_f64();
    let mut out = Vec::new();
    let at_random = |rng: &mut StdRng| Duration::from_secs_f64(rng.random_range(0.05..0.9) * span);
    for _ in 0..spec.kills {
        let at = at_random(&mut rng);
        let victim = rng.random_range(0..spec.instances.max(1));
        let pause = Duration::from_millis(rng.random_range(50..400));
        out.push(Planned {
            at,
            action: Action::Kill { victim, pause },
        });
    }
    for _ in 0..spec.sigterms {
        let at = at_random(&mut rng);
        let victim = rng.random_range(0..spec.instances.max(1));
        out.push(Planned {
            at,
            action: Action::Sigterm { victim },
        });
    }
    for _ in 0..spec.pg_restarts {
        let at = at_random(&mut rng);
        out.push(Planned {
            at,
            action: Action::PgRestart,
        });
    }
    // Windows: shuffled, then spread evenly over the span with some jitter, never overlapping.
    let mut windows: Vec<Action> = Vec::new();
    for _ in 0..spec.fault_rounds {
        for &fault in &spec.faults {
            windows.push(Action::Receiver {
                fault,
                length: spec.fault_len,
                retry_after_secs: rng.random_range(1..=2),
            });
        }
    }
    if spec.disk_full {
        windows.push(Action::DiskFull {
            length: spec.fault_len.max(Duration::from_secs(2)),
        });
    }
    windows.shuffle(&mut rng);
    let slot = span / (windows.len() as f64 + 1.0);
    for (i, action) in windows.into_iter().enumerate() {
        let length = match &action {
            Action::Receiver { length, .. } | Action::DiskFull { length } => length.as_secs_f64(),
            _ => 0.0,
        };
        let room = (slot - length).max(0.0);
        let at = slot * (i as f64 + 0.5) + rng.random_range(0.0..=room.max(f64::MIN_POSITIVE));
        out.push(Planned {
            at: Duration::from_secs_f64(at),
            action,
        });
    }
    out.sort_by_key(|p| p.at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PlanSpec {
        PlanSpec {
            span: Duration::from_secs(60),
            instances: 3,
            kills: 20,
            sigterms: 2,
            faults: vec![
                ReceiverFault::Error500,
                ReceiverFault::TooMany,
                ReceiverFault::Reset,
            ],
            fault_rounds: 2,
            fault_len: Duration::from_millis(1500),
            pg_restarts: 1,
            disk_full: false,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        assert_eq!(plan(&spec(), 7), plan(&spec(), 7));
        assert_ne!(plan(&spec(), 7), plan(&spec(), 8));
    }

    #[test]
    fn schedule_holds_every_action_within_the_span_in_order() {
        let p = plan(&spec(), 3);
        let count = |f: fn(&Action) -> bool| p.iter().filter(|x| f(&x.action)).count();
        assert_eq!(count(|a| matches!(a, Action::Kill { .. })), 20);
        assert_eq!(count(|a| matches!(a, Action::Sigterm { .. })), 2);
        assert_eq!(count(|a| matches!(a, Action::PgRestart)), 1);
        assert_eq!(count(|a| matches!(a, Action::Receiver { .. })), 6);
        assert!(p.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(p.iter().all(|x| x.at < Duration::from_secs(60)));
        for x in &p {
            if let Action::Kill { victim, .. } | Action::Sigterm { victim } = x.action {
                assert!(victim < 3);
            }
        }
    }

    #[test]
    fn receiver_windows_never_overlap() {
        for seed in 0..50 {
            let p = plan(&spec(), seed);
            let windows: Vec<(Duration, Duration)> = p
                .iter()
                .filter_map(|x| match x.action {
                    Action::Receiver { length, .. } => Some((x.at, x.at + length)),
                    _ => None,
                })
                .collect();
            assert!(
                windows.windows(2).all(|w| w[0].1 <= w[1].0),
                "seed {seed}: {windows:?}"
            );
        }
    }
}
