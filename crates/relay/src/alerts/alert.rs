//! [`Alert`]: what an alert is about, its subject and its text.

use std::fmt;
use std::time::{Duration, SystemTime};

/// The longest alert text kept; longer texts are cut (a Telegram message holds 4096).
pub(super) const MAX_TEXT_CHARS: usize = 1000;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum AlertKind {
    /// A destination's circuit opened: an outage began.
    BreakerOpened,
    /// A destination's circuit closed again after an outage that was alerted.
    BreakerClosed,
    /// The dead-letter depth went above `dead_letter_threshold`.
    DeadLetterThreshold,
    /// Start-up found deliveries a previous relay left unfinished.
    StartupRecovery,
    /// The relay could not start.
    StartupFailure,
    /// Telegram rejected a bot's token (401).
    TelegramUnauthorized,
    /// Another client is polling `getUpdates` for the same bot (409).
    PollingConflict,
    /// GitHub rejected a destination's token (401).
    GithubUnauthorized,
    /// A destination's active health check became unhealthy.
    HealthCheckFailing,
    /// A destination's active health check is healthy again after it was alerted unhealthy.
    HealthCheckRecovered,
    /// An API refused a call for billing (OpenAI `insufficient_quota`, an Anthropic spend
    /// limit): nothing goes through until someone pays or raises the limit.
    BillingStop,
    /// A schedule passed over occurrences it missed (its catch-up policy did not fire them).
    ScheduleSkipped,
}

impl AlertKind {
    /// Every kind.
    pub const ALL: [AlertKind; 12] = [
        AlertKind::BreakerOpened,
        AlertKind::BreakerClosed,
        AlertKind::DeadLetterThreshold,
        AlertKind::StartupRecovery,
        AlertKind::StartupFailure,
        AlertKind::TelegramUnauthorized,
        AlertKind::PollingConflict,
        AlertKind::GithubUnauthorized,
        AlertKind::HealthCheckFailing,
        AlertKind::HealthCheckRecovered,
        AlertKind::BillingStop,
        AlertKind::ScheduleSkipped,
    ];

    /// The stable name sent as the webhook's `type` and used as a metrics label, e.g.
    /// `breaker.opened`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::BreakerOpened => "breaker.opened",
            AlertKind::BreakerClosed => "breaker.closed",
            AlertKind::DeadLetterThreshold => "dead_letters.threshold",
            AlertKind::StartupRecovery => "startup.recovery",
            AlertKind::StartupFailure => "startup.failure",
            AlertKind::TelegramUnauthorized => "telegram.unauthorized",
            AlertKind::PollingConflict => "telegram.polling_conflict",
            AlertKind::GithubUnauthorized => "github.unauthorized",
            AlertKind::HealthCheckFailing => "health_check.failing",
            AlertKind::HealthCheckRecovered => "health_check.recovered",
            AlertKind::BillingStop => "http.billing_stop",
            AlertKind::ScheduleSkipped => "schedule.skipped",
        }
    }

    /// Whether the subject of alerts of this kind is a destination.
    pub(super) fn about_a_destination(self) -> bool {
        matches!(
            self,
            AlertKind::BreakerOpened
                | AlertKind::BreakerClosed
                | AlertKind::TelegramUnauthorized
                | AlertKind::PollingConflict
                | AlertKind::GithubUnauthorized
                | AlertKind::HealthCheckFailing
                | AlertKind::HealthCheckRecovered
                | AlertKind::BillingStop
        )
    }

    /// Every severity an alert has, most serious first.
    pub const SEVERITIES: [&'static str; 3] = ["critical", "warning", "info"];

    /// How serious alerts of this kind are, as the alert log keeps it: `critical` when nothing
    /// goes through until someone acts (a rejected token, a billing stop, a failed start),
    /// `info` when trouble ended or was handled, `warning` otherwise.
    pub fn severity(self) -> &'static str {
        match self {
            AlertKind::StartupFailure
            | AlertKind::TelegramUnauthorized
            | AlertKind::GithubUnauthorized
            | AlertKind::BillingStop => "critical",
            AlertKind::BreakerClosed
            | AlertKind::HealthCheckRecovered
            | AlertKind::StartupRecovery => "info",
            AlertKind::BreakerOpened
            | AlertKind::DeadLetterThreshold
            | AlertKind::PollingConflict
            | AlertKind::HealthCheckFailing
            | AlertKind::ScheduleSkipped => "warning",
        }
    }

    /// The kind named `name` (as [`as_str`](Self::as_str) names it).
    pub fn from_name(name: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// A short human title, the first line of a Telegram alert.
    pub(super) fn title(self) -> &'static str {
        match self {
            AlertKind::BreakerOpened => "circuit opened",
            AlertKind::BreakerClosed => "circuit closed",
            AlertKind::DeadLetterThreshold => "dead letters piling up",
            AlertKind::StartupRecovery => "recovered unfinished deliveries",
            AlertKind::StartupFailure => "start-up failed",
            AlertKind::TelegramUnauthorized => "Telegram rejected the bot token",
            AlertKind::PollingConflict => "Telegram polling conflict",
            AlertKind::GithubUnauthorized => "GitHub rejected the token",
            AlertKind::HealthCheckFailing => "health check failing",
            AlertKind::HealthCheckRecovered => "health check passing again",
            AlertKind::BillingStop => "an API refused calls for billing",
            AlertKind::ScheduleSkipped => "a schedule skipped occurrences",
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// What it is about.
    pub kind: AlertKind,
    /// Which thing: a destination name, `dead-letters`, `store` or `serve`. Alerts of one kind
    /// and subject are de-duplicated together.
    pub subject: String,
    /// A plain-text explanation for a person (at most 1000 characters and an ellipsis).
    pub text: String,
    /// When it was raised.
    pub at: SystemTime,
}

impl Alert {
    /// An alert; `text` is cut to 1000 characters.
    pub fn new(
        kind: AlertKind,
        subject: impl Into<String>,
        text: impl Into<String>,
        at: SystemTime,
    ) -> Self {
        let mut text = text.into();
        if let Some((cut, _)) = text.char_indices().nth(MAX_TEXT_CHARS) {
            text.truncate(cut);
            text.push('…');
        }
        Alert {
            kind,
            subject: subject.into(),
            text,
            at,
        }
    }

    /// The circuit of `destination` opened.
    pub fn breaker_opened(destination: &str, at: SystemTime) -> Self {
        Alert::new(
            AlertKind::BreakerOpened,
            destination,
            format!(
                "The circuit breaker of destination `{destination}` opened: its messages wait \
                 in the queue until it recovers."
            ),
            at,
        )
    }

    /// The circuit of `destination` closed after an outage of `outage`.
    pub fn breaker_closed(destination: &str, outage: Duration, at: SystemTime) -> Self {
        let outage = humantime::format_duration(Duration::from_secs(outage.as_secs()));
        Alert::new(
            AlertKind::BreakerClosed,
            destination,
            format!(
                "The circuit breaker of destination `{destination}` closed after {outage}: \
                 deliveries resumed."
            ),
            at,
        )
    }

    /// `depth` messages are dead, more than `threshold`.
    pub fn dead_letters(depth: u64, threshold: u64, at: SystemTime) -> Self {
        Alert::new(
            AlertKind::DeadLetterThreshold,
            "dead-letters",
            format!(
                "{depth} messages are dead-lettered, more than the alert threshold of \
                 {threshold}. See them with `ferrule dlq list`; replay them with `ferrule dlq \
                 replay` once the cause is fixed."
            ),
            at,
        )
    }

    /// Start-up gave `count` unfinished deliveries back to the queue.
    pub fn startup_recovery(count: u64, at: SystemTime) -> Self {
        Alert::new(
            AlertKind::StartupRecovery,
            "store",
            format!(
                "Start-up found {count} deliveries left unfinished by a relay that stopped \
                 without finishing them (a crash or kill?); they are queued again."
            ),
            at,
        )
    }

    /// The relay could not start because of `error` (its whole cause chain).
    pub fn startup_failure(error: &dyn std::error::Error, at: SystemTime) -> Self {
        let text = format!(
            "The relay could not start: {}",
            crate::error::chain(error, ": ")
        );
        Alert::new(AlertKind::StartupFailure, "serve", text, at)
    }

    /// The health check of `destination` became unhealthy, last with `error`.
    pub fn health_check_failing(destination: &str, error: &str, at: SystemTime) -> Self {
        Alert::new(
            AlertKind::HealthCheckFailing,
            destination,
            format!(
                "The health check of destination `{destination}` is failing: {error}. While \
                 its circuit is open, no delivery is tried before the check passes again."
            ),
            at,
        )
    }

    /// The health check of `destination` is healthy again.
    pub fn health_check_recovered(destination: &str, at: SystemTime) -> Self {
        Alert::new(
            AlertKind::HealthCheckRecovered,
            destination,
            format!("The health check of destination `{destination}` passes again."),
            at,
        )
    }

    /// Telegram answered 401 to a send of `destination`.
    pub fn telegram_unauthorized(destination: &str, at: SystemTime) -> Self {
        Alert::new(
            AlertKind::TelegramUnauthorized,
            destination,
            format!(
                "Telegram rejected the bot token of destination `{destination}` (401). Its \
                 messages wait in the queue: its circuit is forced open until the relay \
                 restarts or an operator resets it (POST /v1/breakers/{destination}/reset)."
            ),
            at,
        )
    }

    /// GitHub answered 401 to an action of `destination`.
    pub fn github_unauthorized(destination: &str, at: SystemTime) -> Self {
        Alert::new(
            AlertKind::GithubUnauthorized,
            destination,
            format!(
                "GitHub rejected the token of destination `{destination}` (401: revoked, \
                 expired or wrong). Its messages wait in the queue: its circuit is forced open \
                 until the relay restarts or an operator resets it (POST \
                 /v1/breakers/{destination}/reset). Replace the token and restart the relay, \
                 then replay the message that met the 401 (`ferrule dlq replay --destination \
                 {destination}`)."
            ),
            at,
        )
    }

    /// The API behind `destination` refused a call for billing; `detail` is its answer.
    pub fn billing_stop(destination: &str, detail: &str, at: SystemTime) -> Self {
        Alert::new(
            AlertKind::BillingStop,
            destination,
            format!(
                "The API behind destination `{destination}` refused a call for billing ({detail}). \
                 Retrying will not help: raise the spend limit or add credit. Calls go to its \
                 fallbacks, if it has any."
            ),
            at,
        )
    }

    /// Another client is polling `getUpdates` for the bot of `destination` (Telegram answered
    /// 409 Conflict).
    pub fn polling_conflict(destination: &str, at: SystemTime) -> Self {
        Alert::new(
            AlertKind::PollingConflict,
            destination,
            format!(
                "Another client is polling Telegram for updates of the bot of destination \
                 `{destination}` (409 Conflict): only one may. Stop the other relay or client, \
                 or remove the bot's webhook."
            ),
            at,
        )
    }

    /// `schedule` passed over `count` missed occurrences, the latest due at `latest`.
    pub fn schedule_skipped(
        schedule: &str,
        count: u64,
        latest: &str,
        reason: &str,
        at: SystemTime,
    ) -> Self {
        let what = if count == 1 {
            "1 occurrence".to_owned()
        } else {
            format!("{count} occurrences")
        };
        Alert::new(
            AlertKind::ScheduleSkipped,
            schedule,
            format!(
                "Schedule `{schedule}` skipped {what} it missed ({reason}); the latest was due \
                 at {latest}. They are recorded as skipped (GET /v1/schedules); trigger one by \
                 hand with `ferrule schedules trigger {schedule}` if it is still wanted."
            ),
            at,
        )
    }
}
