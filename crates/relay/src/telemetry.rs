//! Logs (`tracing`, human or JSON) and the process-wide Prometheus recorder.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the log subscriber (stderr; level from `RUST_LOG`, default `info`). A second call
/// does nothing.
///
/// Human logs are coloured only when stderr is a terminal and `NO_COLOR` is unset or empty:
/// logs that go to a file, a pipe or journald carry no escape codes.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder
            .with_ansi(colour(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ))
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Whether human logs are coloured: on a terminal, unless `NO_COLOR` is set to something
/// (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Attempt latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process-wide Prometheus handle, installing the recorder on first use.
///
/// Metric names: `ferrule_submitted_total{destination}`, `ferrule_deliveries_total{destination,
/// outcome}`, `ferrule_attempt_duration_seconds{destination}` (histogram),
/// `ferrule_retries_total{destination}`, `ferrule_dead_letters_total{destination}`,
/// `ferrule_deferred_total{destination, reason}`, `ferrule_breaker_state{destination}`,
/// `ferrule_queue_depth`, `ferrule_dead_letter_depth`, `ferrule_alerts_total{kind}`,
/// `ferrule_alerts_suppressed_total{kind, reason}`, plus the policies' own `ferrule_policy_*`.
/// No label ever holds a message id.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("ferrule_attempt_duration_seconds".into()),
                    &LATENCY_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("ferrule_policy_attempt_seconds".into()),
                        &LATENCY_BUCKETS,
                    )
                });
            match builder {
                Ok(b) => match b.install_recorder() {
                    Ok(handle) => handle,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot install the metrics recorder");
                        PrometheusBuilder::new().build_recorder().handle()
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot configure metric buckets");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }
}
