//! Reads the relays' JSON logs back: each process's circuit breaker transitions with their
//! exact times, and its error lines.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::relay::PROCESS_MARKER;

/// One breaker transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transition {
    /// When the relay logged it.
    pub(crate) at: SystemTime,
    /// The state left.
    pub(crate) from: String,
    /// The state entered.
    pub(crate) to: String,
}

/// What one relay process logged.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProcessLog {
    /// The process label (`r1.3`).
    pub(crate) process: String,
    /// Its breaker transitions, in order.
    pub(crate) transitions: Vec<Transition>,
    /// Lines at ERROR level, with an example message.
    pub(crate) errors: Vec<String>,
}

/// Splits a relay log (marker lines between processes, JSON lines) into processes.
pub(crate) fn parse(text: &str) -> Vec<ProcessLog> {
    let mut out: Vec<ProcessLog> = Vec::new();
    for line in text.lines() {
        if let Some(process) = line.strip_prefix(PROCESS_MARKER) {
            out.push(ProcessLog {
                process: process.trim().to_owned(),
                ..ProcessLog::default()
            });
            continue;
        }
        let Some(current) = out.last_mut() else {
            continue;
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let field = |k: &str| value.get(k).and_then(|v| v.as_str()).unwrap_or("");
        if field("level") == "ERROR" {
            current.errors.push(field("message").to_owned());
        }
        if field("message") == "circuit breaker transition"
            && let Ok(at) = humantime::parse_rfc3339_weak(field("timestamp").trim_end_matches('Z'))
        {
            current.transitions.push(Transition {
                at,
                from: field("from").to_owned(),
                to: field("to").to_owned(),
            });
        }
    }
    out
}

/// Every process in the log file at `path` (none if it cannot be read).
pub(crate) fn read(path: &Path) -> Vec<ProcessLog> {
    std::fs::read_to_string(path)
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// The open periods of `log` shorter than `open_for` (open → half_open sooner).
pub(crate) fn short_open_periods(log: &ProcessLog, open_for: Duration) -> Vec<Duration> {
    log.transitions
        .windows(2)
        .filter(|w| w[0].to == "open" && w[1].from == "open")
        .filter_map(|w| w[1].at.duration_since(w[0].at).ok())
        .filter(|d| *d + Duration::from_millis(2) < open_for)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = concat!(
        "=== ferrule-chaos: process r1.1\n",
        r#"{"timestamp":"2026-11-23T21:48:44.274495Z","level":"WARN","message":"circuit breaker transition","policy":"hook","from":"closed","to":"open"}"#,
        "\n",
        "not json\n",
        r#"{"timestamp":"2026-11-23T21:48:45.282282Z","level":"WARN","message":"circuit breaker transition","policy":"hook","from":"open","to":"half_open"}"#,
        "\n",
        "=== ferrule-chaos: process r1.2\n",
        r#"{"timestamp":"2026-11-23T21:48:46.000000Z","level":"ERROR","message":"recording an attempt failed"}"#,
        "\n",
        r#"{"timestamp":"2026-11-23T21:48:46.100000Z","level":"WARN","message":"circuit breaker transition","policy":"hook","from":"closed","to":"open"}"#,
        "\n",
        r#"{"timestamp":"2026-11-23T21:48:46.600000Z","level":"WARN","message":"circuit breaker transition","policy":"hook","from":"open","to":"half_open"}"#,
        "\n",
    );

    #[test]
    fn splits_processes_and_reads_transitions() {
        let logs = parse(LOG);
        assert_eq!(logs.len(), 2);
        assert_eq!(logs[0].process, "r1.1");
        assert_eq!(logs[0].transitions.len(), 2);
        assert_eq!(logs[0].transitions[1].to, "half_open");
        assert!(logs[0].errors.is_empty());
        assert_eq!(
            logs[1].errors,
            vec!["recording an attempt failed".to_owned()]
        );
        assert!(short_open_periods(&logs[0], Duration::from_secs(1)).is_empty());
        assert_eq!(
            short_open_periods(&logs[1], Duration::from_secs(1)),
            vec![Duration::from_millis(500)]
        );
    }
}
