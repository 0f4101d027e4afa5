//! The audit log of operator actions: which actions the relay records and under what names,
//! and recording one after it is done.
//!
//! Every change an operator makes through the API or the dashboard (breakers, dead letters, messages, pauses, runs, routes' chats, schedules) (and, for tokens, the CLI) is recorded
//! once it has succeeded, with who (the caller's token name), what ([`Action`]), what to
//! (a destination, a message id, a token name), how many messages and the rest (the filter,
//! a reason) as detail. Dry runs change nothing and are not recorded. `GET /v1/audit` and
//! `ferrule audit` list the log.

use ferrule_store::{AnyStore, AuditEntry, NewAuditEntry, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An action the audit log records; its name is stable (`breaker.reset`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// A breaker closed and its override removed (`POST /v1/breakers/{d}/reset`).
    #[serde(rename = "breaker.reset")]
    BreakerReset,
    /// A breaker held open (`POST /v1/breakers/{d}/force-open`).
    #[serde(rename = "breaker.force_open")]
    BreakerForceOpen,
    /// A breaker disabled (`POST /v1/breakers/{d}/disable`).
    #[serde(rename = "breaker.disable")]
    BreakerDisable,
    /// Dead letters re-queued (`POST /v1/dead-letters/replay`).
    #[serde(rename = "dead_letters.replay")]
    DeadLettersReplay,
    /// Dead letters deleted (`DELETE /v1/dead-letters`, `POST /v1/dead-letters/purge`).
    #[serde(rename = "dead_letters.purge")]
    DeadLettersPurge,
    /// A pending message cancelled (`DELETE /v1/messages/{id}`).
    #[serde(rename = "message.cancel")]
    MessageCancel,
    /// A finished message re-queued (`POST /v1/messages/{id}/replay`).
    #[serde(rename = "message.replay")]
    MessageReplay,
    /// A destination paused (`POST /v1/destinations/{d}/pause`).
    #[serde(rename = "destination.pause")]
    DestinationPause,
    /// A destination resumed (`POST /v1/destinations/{d}/resume`).
    #[serde(rename = "destination.resume")]
    DestinationResume,
    /// A failed run's step run again (`POST /v1/runs/{id}/retry`).
    #[serde(rename = "run.retry")]
    RunRetry,
    /// An unfinished run cancelled (`POST /v1/runs/{id}/cancel`).
    #[serde(rename = "run.cancel")]
    RunCancel,
    /// A route's chat mapping set (`PUT /v1/routes/{name}/chats`).
    #[serde(rename = "route.chat_set")]
    RouteChatSet,
    /// A route's chat mapping removed (`DELETE /v1/routes/{name}/chats`).
    #[serde(rename = "route.chat_remove")]
    RouteChatRemove,
    /// A schedule paused (`POST /v1/schedules/{name}/pause`).
    #[serde(rename = "schedule.pause")]
    SchedulePause,
    /// A schedule resumed (`POST /v1/schedules/{name}/resume`).
    #[serde(rename = "schedule.resume")]
    ScheduleResume,
    /// A schedule's occurrence fired by hand (`POST /v1/schedules/{name}/trigger`).
    #[serde(rename = "schedule.trigger")]
    ScheduleTrigger,
    /// A stored token created (`ferrule token create`, or `serve` generating `default`, said
    /// as done by `relay`).
    #[serde(rename = "token.create")]
    TokenCreate,
    /// A stored token revoked (`ferrule token revoke`).
    #[serde(rename = "token.revoke")]
    TokenRevoke,
}

impl Action {
    /// Every action, in the order the documentation lists them.
    pub const ALL: [Action; 18] = [
        Action::BreakerReset,
        Action::BreakerForceOpen,
        Action::BreakerDisable,
        Action::DeadLettersReplay,
        Action::DeadLettersPurge,
        Action::MessageCancel,
        Action::MessageReplay,
        Action::DestinationPause,
        Action::DestinationResume,
        Action::RunRetry,
        Action::RunCancel,
        Action::RouteChatSet,
        Action::RouteChatRemove,
        Action::SchedulePause,
        Action::ScheduleResume,
        Action::ScheduleTrigger,
        Action::TokenCreate,
        Action::TokenRevoke,
    ];

    /// The name stored and shown, e.g. `breaker.reset`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::BreakerReset => "breaker.reset",
            Action::BreakerForceOpen => "breaker.force_open",
            Action::BreakerDisable => "breaker.disable",
            Action::DeadLettersReplay => "dead_letters.replay",
            Action::DeadLettersPurge => "dead_letters.purge",
            Action::MessageCancel => "message.cancel",
            Action::MessageReplay => "message.replay",
            Action::DestinationPause => "destination.pause",
            Action::DestinationResume => "destination.resume",
            Action::RunRetry => "run.retry",
            Action::RunCancel => "run.cancel",
            Action::RouteChatSet => "route.chat_set",
            Action::RouteChatRemove => "route.chat_remove",
            Action::SchedulePause => "schedule.pause",
            Action::ScheduleResume => "schedule.resume",
            Action::ScheduleTrigger => "schedule.trigger",
            Action::TokenCreate => "token.create",
            Action::TokenRevoke => "token.revoke",
        }
    }

    /// The action named `name`, if it is one.
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// What to record: who did which action; add its target, count and detail.
pub fn entry(actor: &str, action: Action) -> NewAuditEntry {
    NewAuditEntry::new(actor, action.as_str())
}

/// Records `entry` for an action that is already done. The action stands whether or not the
/// log takes it (answering an error would make a client repeat what succeeded), so a failed
/// write is logged at error level with everything the entry held, and `None` answered.
pub async fn record(store: &AnyStore, entry: NewAuditEntry) -> Option<AuditEntry> {
    match store.record_audit(entry.clone()).await {
        Ok(recorded) => Some(recorded),
        Err(e) => {
            tracing::error!(
                error = %e,
                actor = %entry.actor,
                action = %entry.action,
                target = entry.target.as_deref().unwrap_or(""),
                count = entry.count,
                detail = %entry.detail,
                "cannot record an operator action in the audit log"
            );
            None
        }
    }
}

/// A JSON object of the filter fields that are given (`null` and empty ones left out), for
/// an entry's detail.
pub fn filter_detail(fields: &[(&str, Option<&str>)]) -> Value {
    let map = fields
        .iter()
        .filter_map(|(k, v)| {
            v.filter(|v| !v.is_empty())
                .map(|v| ((*k).to_owned(), Value::from(v)))
        })
        .collect();
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_are_stable_and_round_trip() {
        for action in Action::ALL {
            assert_eq!(Action::from_name(action.as_str()), Some(action));
            assert_eq!(
                serde_json::to_value(action).unwrap(),
                Value::from(action.as_str())
            );
        }
        assert_eq!(Action::from_name("breaker.explode"), None);
    }
}
