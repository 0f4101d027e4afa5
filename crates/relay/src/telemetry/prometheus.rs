//! The process-wide Prometheus recorder and every metric family the relay exports: name, type,
//! labels and help text in one table ([`FAMILIES`]), described to the recorder when it is
//! installed, and each destination's series registered at zero when the relay starts.
//!
//! Exporting a series from the start, rather than after its first increment, is what makes
//! `rate()` and `increase()` see the first event, and an alert such as "dead letters > 0" work
//! before the first dead letter. `docs/OBSERVABILITY.md` lists the same families; a test keeps
//! the two in step.

use std::sync::OnceLock;

use ferrule_policy::CircuitState;
use ferrule_policy::event::{Event, Observer};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`…_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

impl Kind {
    /// The name in `# TYPE` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family: its name, type, label names and `# HELP` text.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// The metric's name, e.g. `ferrule_submitted_total`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The label names every series of the family carries.
    pub labels: &'static [&'static str],
    /// What it measures, for `# HELP`.
    pub help: &'static str,
}

const fn family(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Family {
    Family {
        name,
        kind,
        labels,
        help,
    }
}

/// Messages stored by `POST /v1/messages`, each part of a split text counted.
pub const SUBMITTED: Family = family(
    "ferrule_submitted_total",
    Kind::Counter,
    &["destination"],
    "Messages stored by POST /v1/messages (a repeated Idempotency-Key stores nothing).",
);
/// Submissions refused for the relay's own state.
pub const SUBMITS_REFUSED: Family = family(
    "ferrule_submits_refused_total",
    Kind::Counter,
    &["reason"],
    "Submissions answered 503 for the relay's own state, by error code.",
);
/// Why a submission was refused: the API error codes counted in [`SUBMITS_REFUSED`].
pub const REFUSAL_REASONS: [&str; 5] = [
    "queue_full",
    "storage_full",
    "store_unavailable",
    "store_busy",
    "shutting_down",
];
/// Delivery attempts by outcome.
pub const DELIVERIES: Family = family(
    "ferrule_deliveries_total",
    Kind::Counter,
    &["destination", "outcome"],
    "Delivery attempts made, by how they ended.",
);
/// How an attempt ended: the policies' outcome names.
pub const OUTCOMES: [&str; 5] = [
    "success",
    "transient",
    "retry_after",
    "permanent",
    "ignored",
];
/// Failed attempts given another try later.
pub const RETRIES: Family = family(
    "ferrule_retries_total",
    Kind::Counter,
    &["destination"],
    "Failed attempts rescheduled for another try.",
);
/// Messages moved to the dead-letter queue by the dispatcher.
pub const DEAD_LETTERS: Family = family(
    "ferrule_dead_letters_total",
    Kind::Counter,
    &["destination"],
    "Messages the dispatcher moved to the dead-letter queue.",
);
/// Claims given back without an attempt.
pub const DEFERRED: Family = family(
    "ferrule_deferred_total",
    Kind::Counter,
    &["destination", "reason"],
    "Claimed messages given back without spending an attempt, by what held them back.",
);
/// What held a deferred message back.
pub const DEFER_REASONS: [&str; 5] = [
    "paused",
    "circuit_open",
    "rate_limited",
    "bulkhead_full",
    "ignored_outcome",
];
/// The time one attempt took.
pub const ATTEMPT_DURATION: Family = family(
    "ferrule_attempt_duration_seconds",
    Kind::Histogram,
    &["destination"],
    "How long one delivery attempt took, in seconds.",
);
/// From submission to delivery.
pub const DELIVERY_LATENCY: Family = family(
    "ferrule_delivery_latency_seconds",
    Kind::Histogram,
    &["destination"],
    "Seconds from a message's submission to its successful delivery, retries and deliver_after included.",
);
/// One gauge per breaker state.
pub const BREAKER_STATE: Family = family(
    "ferrule_breaker_state",
    Kind::Gauge,
    &["destination", "state"],
    "1 for the state each destination's circuit breaker is in, 0 for the others.",
);
/// Every breaker state, as the `state` label shows it.
pub const BREAKER_STATES: [CircuitState; 5] = [
    CircuitState::Closed,
    CircuitState::Open,
    CircuitState::HalfOpen,
    CircuitState::ForcedOpen,
    CircuitState::Disabled,
];
/// Pending messages that are due or will be by retry.
pub const QUEUE_DEPTH: Family = family(
    "ferrule_queue_depth",
    Kind::Gauge,
    &["destination"],
    "Pending messages (queued, delivering or retrying), those scheduled ahead excepted.",
);
/// Messages waiting for their `deliver_after`.
pub const SCHEDULED_DEPTH: Family = family(
    "ferrule_scheduled_depth",
    Kind::Gauge,
    &["destination"],
    "Messages waiting for a deliver_after still in the future.",
);
/// The dead-letter queue.
pub const DEAD_LETTER_DEPTH: Family = family(
    "ferrule_dead_letter_depth",
    Kind::Gauge,
    &["destination"],
    "Messages in the dead-letter queue.",
);
/// The queue's lag.
pub const OLDEST_DUE_AGE: Family = family(
    "ferrule_oldest_due_age_seconds",
    Kind::Gauge,
    &[],
    "Seconds since the earliest message that is due now fell due; 0 when none is due.",
);
/// A full store disk.
pub const STORAGE_FULL: Family = family(
    "ferrule_store_storage_full",
    Kind::Gauge,
    &[],
    "1 while the store refuses writes for lack of space, else 0.",
);
/// Store operations past the operation timeout.
pub const STORE_OPERATION_TIMEOUTS: Family = family(
    "ferrule_store_operation_timeouts_total",
    Kind::Counter,
    &[],
    "Store operations that did not finish within store.operation_timeout (answered store_busy).",
);
/// The store writer's queue.
pub const STORE_WRITER_QUEUE: Family = family(
    "ferrule_store_writer_queue_depth",
    Kind::Gauge,
    &[],
    "Operations waiting for the store's writer (SQLite's writer thread, PostgreSQL's group-commit writer).",
);
/// PostgreSQL pool connections by state.
pub const STORE_POOL_CONNECTIONS: Family = family(
    "ferrule_store_pool_connections",
    Kind::Gauge,
    &["state"],
    "PostgreSQL pool connections, by state (in_use, idle); PostgreSQL only.",
);
/// The PostgreSQL pool's size limit.
pub const STORE_POOL_MAX: Family = family(
    "ferrule_store_pool_max_connections",
    Kind::Gauge,
    &[],
    "Most connections the PostgreSQL pool opens (pool_size); PostgreSQL only.",
);
/// Waits for a PostgreSQL pool connection.
pub const STORE_POOL_WAIT: Family = family(
    "ferrule_store_pool_wait_seconds",
    Kind::Histogram,
    &[],
    "Seconds each store operation waited for a PostgreSQL pool connection; PostgreSQL only.",
);
/// Waits for a PostgreSQL pool connection that gave up.
pub const STORE_POOL_ACQUIRE_TIMEOUTS: Family = family(
    "ferrule_store_pool_acquire_timeouts_total",
    Kind::Counter,
    &[],
    "Waits for a PostgreSQL pool connection that gave up without one; PostgreSQL only.",
);
/// Inbound updates recorded.
pub const INBOUND: Family = family(
    "ferrule_inbound_total",
    Kind::Counter,
    &["destination"],
    "Inbound updates recorded (redeliveries excluded).",
);
/// Inbound redeliveries.
pub const INBOUND_DUPLICATES: Family = family(
    "ferrule_inbound_duplicates_total",
    Kind::Counter,
    &["destination"],
    "Inbound updates received again, acknowledged and ignored.",
);
/// Button presses answered.
pub const CALLBACK_ANSWERS: Family = family(
    "ferrule_callback_answers_total",
    Kind::Counter,
    &["destination", "result"],
    "Telegram button presses answered with answerCallbackQuery, by result (ok, failed).",
);
/// Inbound e-mail recorded.
pub const INBOUND_EMAILS: Family = family(
    "ferrule_inbound_emails_total",
    Kind::Counter,
    &["source"],
    "Mail recorded by POST /v1/inbound/email/{source} (mail recorded before excluded).",
);
/// Inbound e-mail posted again.
pub const INBOUND_EMAIL_DUPLICATES: Family = family(
    "ferrule_inbound_email_duplicates_total",
    Kind::Counter,
    &["source"],
    "Mail posted again under a key recorded before, acknowledged and ignored.",
);
/// Inbound e-mail refused.
pub const INBOUND_EMAILS_REFUSED: Family = family(
    "ferrule_inbound_emails_refused_total",
    Kind::Counter,
    &["source", "reason"],
    "Mail posted to a configured source and refused, by error code.",
);
/// Why a mail was refused: every API error code `POST /v1/inbound/email/{source}` answers, as
/// counted in [`INBOUND_EMAILS_REFUSED`].
pub const EMAIL_REFUSAL_REASONS: [&str; 14] = [
    "unauthorized",
    "forbidden",
    "shutting_down",
    "unsupported_media_type",
    "body_too_large",
    "invalid_body",
    "invalid_form",
    "invalid_email",
    "payload_too_large",
    "invalid_request",
    "storage_full",
    "store_unavailable",
    "store_busy",
    "internal",
];
/// Alerts queued.
pub const ALERTS: Family = family(
    "ferrule_alerts_total",
    Kind::Counter,
    &["kind"],
    "Alerts queued for the alert destinations.",
);
/// Alerts not sent.
pub const ALERTS_SUPPRESSED: Family = family(
    "ferrule_alerts_suppressed_total",
    Kind::Counter,
    &["kind", "reason"],
    "Alerts held back or not sent, by why (min_interval, rate_limit, not_opened, store_error).",
);
/// What the policies did, counted by the policy crate's `MetricsObserver`.
pub const POLICY_EVENTS: Family = family(
    "ferrule_policy_events_total",
    Kind::Counter,
    &["policy", "event"],
    "Events of each destination's policies (the policy label is the destination).",
);
/// The policy events the relay's destinations can emit.
pub const POLICY_EVENT_KINDS: [&str; 8] = [
    "retry_scheduled",
    "retry_gave_up",
    "breaker_transition",
    "breaker_rejected",
    "timeout",
    "bulkhead_rejected",
    "rate_limited",
    "chaos_injected",
];
/// Occurrences of schedules recorded by this relay, by what became of them.
pub const SCHEDULE_OCCURRENCES: Family = family(
    "ferrule_schedule_occurrences_total",
    Kind::Counter,
    &["schedule", "outcome"],
    "Occurrences of each schedule this relay recorded first: `fired` (its message enqueued or \
     run started) or `skipped` (missed and passed over by the catch-up policy; occurrences \
     passed over while paused are not counted). An occurrence another relay recorded first is counted there.",
);
/// What became of an occurrence, as [`SCHEDULE_OCCURRENCES`] labels it.
pub const SCHEDULE_OUTCOMES: [&str; 2] = ["fired", "skipped"];
/// Runs started by a route.
pub const RUNS_STARTED: Family = family(
    "ferrule_runs_started_total",
    Kind::Counter,
    &["route"],
    "Runs of each route started (a repeated trigger that found its run excluded).",
);
/// Runs that finished.
pub const RUNS_FINISHED: Family = family(
    "ferrule_runs_finished_total",
    Kind::Counter,
    &["route", "status"],
    "Runs of each route that finished, by status (completed, failed, expired, cancelled).",
);
/// Ends of route steps.
pub const ROUTE_STEPS: Family = family(
    "ferrule_route_steps_total",
    Kind::Counter,
    &["route", "outcome"],
    "Steps of each route that ended, by outcome (delivered, failed).",
);
/// Step latency.
pub const ROUTE_STEP_DURATION: Family = family(
    "ferrule_route_step_duration_seconds",
    Kind::Histogram,
    &["route"],
    "From a step's message stored to its end (retries included), per route.",
);
/// Answers to waits.
pub const ROUTE_PRESSES: Family = family(
    "ferrule_route_presses_total",
    Kind::Counter,
    &["result"],
    "Button presses and signals on route waits, by result (accepted, already_handled, expired, not_allowed, unknown).",
);
/// Proxied calls by how they ended.
pub const PROXY_CALLS: Family = family(
    "ferrule_proxy_calls_total",
    Kind::Counter,
    &["destination", "outcome"],
    "Calls through /v1/proxy by the destination addressed and how they ended.",
);
/// How a proxied call ended: the `outcome` label of [`PROXY_CALLS`].
pub const PROXY_CALL_OUTCOMES: [&str; 8] = [
    "success",
    "upstream_error",
    "stream_failed",
    "cancelled",
    "refused",
    "unreachable",
    "timeout",
    "deadline_exceeded",
];
/// Attempts of proxied calls.
pub const PROXY_ATTEMPTS: Family = family(
    "ferrule_proxy_attempts_total",
    Kind::Counter,
    &["destination", "outcome"],
    "Upstream attempts of proxied calls by the destination attempted and the outcome.",
);
/// Fallbacks taken.
pub const PROXY_FALLBACKS: Family = family(
    "ferrule_proxy_fallbacks_total",
    Kind::Counter,
    &["destination", "to"],
    "Proxied calls that moved on from the chain of the destination addressed to a fallback.",
);
/// Time to an upstream answer's head.
pub const PROXY_UPSTREAM: Family = family(
    "ferrule_proxy_upstream_seconds",
    Kind::Histogram,
    &["destination"],
    "Seconds from sending a proxied attempt to the head of the upstream's answer.",
);
/// Time to the first byte of a passed-through body.
pub const PROXY_TTFB: Family = family(
    "ferrule_proxy_ttfb_seconds",
    Kind::Histogram,
    &["destination"],
    "Seconds from a proxied call's arrival to the first byte of the body passed back.",
);
/// Retries the budget refused.
pub const PROXY_BUDGET_REFUSALS: Family = family(
    "ferrule_proxy_retry_budget_refusals_total",
    Kind::Counter,
    &["destination"],
    "Retries of proxied calls not made because the destination's retry budget was spent.",
);
/// Tokens reported by AI APIs.
pub const AI_TOKENS: Family = family(
    "ferrule_ai_tokens_total",
    Kind::Counter,
    &["destination", "kind"],
    "Tokens an AI API reported in usage (kind: input, output, cached), openai and anthropic classifiers.",
);
/// The build.
pub const BUILD_INFO: Family = family(
    "ferrule_build_info",
    Kind::Gauge,
    &["version"],
    "Always 1; the relay's version is the label.",
);

/// Whether each destination's active check is passing.
pub const HEALTH_CHECK_UP: Family = family(
    "ferrule_health_check_up",
    Kind::Gauge,
    &["destination"],
    "1 while the destination's active health check is not unhealthy, 0 while it is.",
);
/// Active health checks run.
pub const HEALTH_CHECKS: Family = family(
    "ferrule_health_checks_total",
    Kind::Counter,
    &["destination", "result"],
    "Active health checks run, by result (pass, fail).",
);
/// The process's CPU time.
pub const PROCESS_CPU: Family = family(
    "process_cpu_seconds_total",
    Kind::Counter,
    &[],
    "Total user and system CPU time spent in seconds.",
);
/// The process's resident memory.
pub const PROCESS_RESIDENT_MEMORY: Family = family(
    "process_resident_memory_bytes",
    Kind::Gauge,
    &[],
    "Resident memory size in bytes.",
);
/// The process's virtual memory.
pub const PROCESS_VIRTUAL_MEMORY: Family = family(
    "process_virtual_memory_bytes",
    Kind::Gauge,
    &[],
    "Virtual memory size in bytes.",
);
/// The process's address-space limit.
pub const PROCESS_VIRTUAL_MEMORY_MAX: Family = family(
    "process_virtual_memory_max_bytes",
    Kind::Gauge,
    &[],
    "Maximum amount of virtual memory available in bytes (0: unlimited).",
);
/// The process's open file descriptors.
pub const PROCESS_OPEN_FDS: Family = family(
    "process_open_fds",
    Kind::Gauge,
    &[],
    "Number of open file descriptors.",
);
/// The process's file-descriptor limit.
pub const PROCESS_MAX_FDS: Family = family(
    "process_max_fds",
    Kind::Gauge,
    &[],
    "Maximum number of open file descriptors (0: unlimited).",
);
/// When the process started.
pub const PROCESS_START_TIME: Family = family(
    "process_start_time_seconds",
    Kind::Gauge,
    &[],
    "Start time of the process since unix epoch in seconds.",
);
/// The process's threads.
pub const PROCESS_THREADS: Family = family(
    "process_threads",
    Kind::Gauge,
    &[],
    "Number of OS threads in the process.",
);
/// The process families, read from the operating system (`/proc` on Linux) at each scrape by
/// [`collect_process`], named and described as Prometheus' own client libraries do.
pub const PROCESS_FAMILIES: [Family; 8] = [
    PROCESS_CPU,
    PROCESS_RESIDENT_MEMORY,
    PROCESS_VIRTUAL_MEMORY,
    PROCESS_VIRTUAL_MEMORY_MAX,
    PROCESS_OPEN_FDS,
    PROCESS_MAX_FDS,
    PROCESS_START_TIME,
    PROCESS_THREADS,
];

/// Every family the relay exports.
pub const FAMILIES: [Family; 53] = [
    SUBMITTED,
    SUBMITS_REFUSED,
    DELIVERIES,
    RETRIES,
    DEAD_LETTERS,
    DEFERRED,
    ATTEMPT_DURATION,
    DELIVERY_LATENCY,
    BREAKER_STATE,
    QUEUE_DEPTH,
    SCHEDULED_DEPTH,
    DEAD_LETTER_DEPTH,
    OLDEST_DUE_AGE,
    STORAGE_FULL,
    STORE_OPERATION_TIMEOUTS,
    STORE_WRITER_QUEUE,
    STORE_POOL_CONNECTIONS,
    STORE_POOL_MAX,
    STORE_POOL_WAIT,
    STORE_POOL_ACQUIRE_TIMEOUTS,
    INBOUND,
    INBOUND_DUPLICATES,
    CALLBACK_ANSWERS,
    INBOUND_EMAILS,
    INBOUND_EMAIL_DUPLICATES,
    INBOUND_EMAILS_REFUSED,
    ALERTS,
    ALERTS_SUPPRESSED,
    POLICY_EVENTS,
    RUNS_STARTED,
    RUNS_FINISHED,
    SCHEDULE_OCCURRENCES,
    ROUTE_STEPS,
    ROUTE_STEP_DURATION,
    ROUTE_PRESSES,
    BUILD_INFO,
    HEALTH_CHECK_UP,
    HEALTH_CHECKS,
    PROCESS_CPU,
    PROCESS_RESIDENT_MEMORY,
    PROCESS_VIRTUAL_MEMORY,
    PROCESS_VIRTUAL_MEMORY_MAX,
    PROCESS_OPEN_FDS,
    PROCESS_MAX_FDS,
    PROCESS_START_TIME,
    PROCESS_THREADS,
    PROXY_CALLS,
    PROXY_ATTEMPTS,
    PROXY_FALLBACKS,
    PROXY_UPSTREAM,
    PROXY_TTFB,
    PROXY_BUDGET_REFUSALS,
    AI_TOKENS,
];

/// Attempt durations, in seconds: 1 ms to a minute (attempts time out after 30 s by default).
const ATTEMPT_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Submission to delivery, in seconds: a few milliseconds when the destination answers at once,
/// up to hours when it was down (retries back off to an hour by default) or the message was
/// scheduled ahead; about three buckets a decade.
const LATENCY_BUCKETS: [f64; 19] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    1800.0, 3600.0, 10800.0, 86400.0,
];

/// Waits for a pool connection, in seconds: a fraction of a millisecond when one is idle, up
/// to the acquire timeout when the pool is exhausted.
const POOL_WAIT_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// The process-wide Prometheus handle, installing the recorder and describing every family in
/// [`FAMILIES`] on first use.
///
/// No label ever holds a message id or a payload value; destinations and e-mail sources, both
/// named in the configuration, are the only labels with values a user chooses (routes, also
/// named there, too).
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(ATTEMPT_DURATION.name.into()),
                    &ATTEMPT_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(DELIVERY_LATENCY.name.into()),
                        &LATENCY_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(ROUTE_STEP_DURATION.name.into()),
                        &LATENCY_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(PROXY_UPSTREAM.name.into()),
                        &ATTEMPT_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(PROXY_TTFB.name.into()),
                        &ATTEMPT_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(STORE_POOL_WAIT.name.into()),
                        &POOL_WAIT_BUCKETS,
                    )
                });
            let handle = match builder {
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
            };
            describe();
            handle
        })
        .clone()
}

/// Gives every family its `# HELP` text (the `# TYPE` comes from how it is recorded).
fn describe() {
    for f in FAMILIES {
        match f.kind {
            Kind::Counter => metrics::describe_counter!(f.name, f.help),
            Kind::Gauge => metrics::describe_gauge!(f.name, f.help),
            Kind::Histogram => metrics::describe_histogram!(f.name, f.help),
        }
    }
}

/// Reads the process's CPU time, memory, file descriptors, threads and start time from the
/// operating system into the [`PROCESS_FAMILIES`]; called before each `/metrics` answer, so
/// the figures are as of the scrape. A figure the platform does not give is left out.
pub fn collect_process() {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR
        .get_or_init(metrics_process::Collector::default)
        .collect();
}

/// Registers the series that exist whatever the destinations are, at their current value (zero
/// unless something was counted already): the refusal reasons, the disk gauge, the queue's lag
/// and the build.
pub fn register_relay_series() {
    metrics::gauge!(BUILD_INFO.name, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for reason in REFUSAL_REASONS {
        metrics::counter!(SUBMITS_REFUSED.name, "reason" => reason).increment(0);
    }
    metrics::gauge!(STORAGE_FULL.name).increment(0.0);
    metrics::gauge!(OLDEST_DUE_AGE.name).increment(0.0);
}

/// Registers every series of destination `name` at its current value (zero for a new one):
/// deliveries by outcome, retries, dead letters, deferrals by reason, both histograms, the
/// depths, its policies' events and, when it receives updates (`inbound`), the inbound
/// counters. The breaker gauges are set by [`breaker_state`].
pub fn register_destination_series(name: &str, inbound: bool) {
    let d = || name.to_owned();
    metrics::counter!(SUBMITTED.name, "destination" => d()).increment(0);
    for outcome in OUTCOMES {
        metrics::counter!(DELIVERIES.name, "destination" => d(), "outcome" => outcome).increment(0);
    }
    metrics::counter!(RETRIES.name, "destination" => d()).increment(0);
    metrics::counter!(DEAD_LETTERS.name, "destination" => d()).increment(0);
    for reason in DEFER_REASONS {
        metrics::counter!(DEFERRED.name, "destination" => d(), "reason" => reason).increment(0);
    }
    for event in POLICY_EVENT_KINDS {
        metrics::counter!(POLICY_EVENTS.name, "policy" => d(), "event" => event).increment(0);
    }
    // Registering a histogram exports its buckets at 0; recording nothing keeps them there.
    let _ = metrics::histogram!(ATTEMPT_DURATION.name, "destination" => d());
    let _ = metrics::histogram!(DELIVERY_LATENCY.name, "destination" => d());
    for depth in [QUEUE_DEPTH, SCHEDULED_DEPTH, DEAD_LETTER_DEPTH] {
        metrics::gauge!(depth.name, "destination" => d()).increment(0.0);
    }
    if inbound {
        metrics::counter!(INBOUND.name, "destination" => d()).increment(0);
        metrics::counter!(INBOUND_DUPLICATES.name, "destination" => d()).increment(0);
        for result in ["ok", "failed"] {
            metrics::counter!(CALLBACK_ANSWERS.name, "destination" => d(), "result" => result)
                .increment(0);
        }
    }
}

/// Registers the active health check series of destination `name` (one that has a check):
/// up (1 until a check finds it unhealthy) and the checks by result at their current value.
pub fn register_health_check_series(name: &str) {
    metrics::gauge!(HEALTH_CHECK_UP.name, "destination" => name.to_owned()).set(1.0);
    for result in ["pass", "fail"] {
        metrics::counter!(HEALTH_CHECKS.name, "destination" => name.to_owned(), "result" => result)
            .increment(0);
    }
}
/// Registers the series of `http` destination `name` at their current value: proxied calls by
/// outcome, attempts by outcome, retry-budget refusals, both histograms, each of its
/// `fallbacks` and, for an AI classifier, the tokens by kind.
pub fn register_proxy_series(name: &str, ai: bool, fallbacks: &[String]) {
    let d = || name.to_owned();
    for to in fallbacks {
        metrics::counter!(PROXY_FALLBACKS.name, "destination" => d(), "to" => to.clone())
            .increment(0);
    }
    for outcome in PROXY_CALL_OUTCOMES {
        metrics::counter!(PROXY_CALLS.name, "destination" => d(), "outcome" => outcome)
            .increment(0);
    }
    for outcome in OUTCOMES {
        metrics::counter!(PROXY_ATTEMPTS.name, "destination" => d(), "outcome" => outcome)
            .increment(0);
    }
    metrics::counter!(PROXY_BUDGET_REFUSALS.name, "destination" => d()).increment(0);
    let _ = metrics::histogram!(PROXY_UPSTREAM.name, "destination" => d());
    let _ = metrics::histogram!(PROXY_TTFB.name, "destination" => d());
    if ai {
        for kind in ["input", "output", "cached"] {
            metrics::counter!(AI_TOKENS.name, "destination" => d(), "kind" => kind).increment(0);
        }
    }
}

/// Registers every series of the e-mail source `name` at its current value (zero for a new
/// one): mail recorded, posted again, and refused by each reason.
pub fn register_email_source_series(name: &str) {
    let s = || name.to_owned();
    metrics::counter!(INBOUND_EMAILS.name, "source" => s()).increment(0);
    metrics::counter!(INBOUND_EMAIL_DUPLICATES.name, "source" => s()).increment(0);
    for reason in EMAIL_REFUSAL_REASONS {
        metrics::counter!(INBOUND_EMAILS_REFUSED.name, "source" => s(), "reason" => reason)
            .increment(0);
    }
}

/// The statuses of `ferrule_runs_finished_total`.
pub const RUN_FINISHED_STATUSES: [&str; 4] = ["completed", "failed", "expired", "cancelled"];

/// The outcomes of `ferrule_route_steps_total`.
pub const ROUTE_STEP_OUTCOMES: [&str; 2] = ["delivered", "failed"];

/// The results of `ferrule_route_presses_total`.
pub const ROUTE_PRESS_RESULTS: [&str; 5] = [
    "accepted",
    "already_handled",
    "expired",
    "not_allowed",
    "unknown",
];

/// Registers a schedule's occurrence counters at zero.
pub fn register_schedule_series(name: &str) {
    for outcome in SCHEDULE_OUTCOMES {
        metrics::counter!(SCHEDULE_OCCURRENCES.name, "schedule" => name.to_owned(), "outcome" => outcome)
            .increment(0);
    }
}

/// Registers route `name`'s series at zero (and the presses', which have no route label), so
/// they are exported from the start.
pub fn register_route_series(name: &str) {
    let r = || name.to_owned();
    metrics::counter!(RUNS_STARTED.name, "route" => r()).increment(0);
    for status in RUN_FINISHED_STATUSES {
        metrics::counter!(RUNS_FINISHED.name, "route" => r(), "status" => status).increment(0);
    }
    for outcome in ROUTE_STEP_OUTCOMES {
        metrics::counter!(ROUTE_STEPS.name, "route" => r(), "outcome" => outcome).increment(0);
    }
    let _ = metrics::histogram!(ROUTE_STEP_DURATION.name, "route" => r());
    for result in ROUTE_PRESS_RESULTS {
        metrics::counter!(ROUTE_PRESSES.name, "result" => result).increment(0);
    }
}

/// Sets destination `name`'s breaker gauges: 1 for `state`, 0 for every other state.
pub fn breaker_state(name: &str, state: CircuitState) {
    for s in BREAKER_STATES {
        let value = if s == state { 1.0 } else { 0.0 };
        metrics::gauge!(BREAKER_STATE.name, "destination" => name.to_owned(), "state" => s.as_str())
            .set(value);
    }
}

/// A policy observer that keeps [`BREAKER_STATE`] current as each transition happens (the
/// policy's name is its destination's).
#[derive(Debug, Clone, Copy, Default)]
pub struct BreakerStateGauge;

impl Observer for BreakerStateGauge {
    fn on_event(&self, event: &Event<'_>) {
        if let Event::BreakerTransition { name, to, .. } = *event {
            breaker_state(name, to);
        }
    }
}
