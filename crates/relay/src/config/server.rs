//! `[server]`: the HTTP listener, request limits, shutting down and the environment.

use std::time::Duration;

use ferrule_policy::chaos::Environment;
use serde::{Deserialize, Serialize};

/// `[server]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub listen: String,
    /// A second address that serves only `/metrics`, `/livez` and `/readyz` (default none), so a
    /// scraper on an internal network reaches the metrics while the API listens elsewhere.
    /// `/metrics` there takes the same tokens as on the API's address (a read-only one will do).
    pub metrics_listen: Option<String>,
    /// Largest request body accepted, in bytes (default 1 MiB).
    pub max_body_bytes: usize,
    /// Submissions due now are refused with 503 `queue_full` once this many messages are
    /// pending and not scheduled ahead: due, waiting for a retry or being delivered
    /// (default 5 000 000). Messages scheduled with `deliver_after` do not count.
    pub max_queue_depth: u64,
    /// Submissions with a `deliver_after` still ahead are refused with 503 `scheduled_full`
    /// once this many messages wait for their `deliver_after` (default 1 000 000), so far-future
    /// messages can neither crowd out due work nor fill the disk.
    pub max_scheduled: u64,
    /// The furthest ahead a `deliver_after` may be (default 30 days); further is refused with
    /// 422 naming `deliver_after`.
    #[serde(with = "humantime_serde")]
    pub max_deliver_after: Duration,
    /// How long the relay keeps serving after SIGTERM/SIGINT while `/readyz` and new
    /// submissions answer 503 `shutting_down`, so a load balancer notices before the listener
    /// closes (default 5 s; 0 closes it at once). A second signal skips the rest.
    #[serde(with = "humantime_serde")]
    pub shutdown_delay: Duration,
    /// How long in-flight deliveries may run once the listener has closed (default 30 s).
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Where the relay runs; enabled chaos is refused in `production` unless allowed.
    pub environment: Environment,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            metrics_listen: None,
            max_body_bytes: 1024 * 1024,
            max_queue_depth: 5_000_000,
            max_scheduled: 1_000_000,
            max_deliver_after: Duration::from_secs(30 * 24 * 3600),
            shutdown_delay: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            environment: Environment::Development,
        }
    }
}
