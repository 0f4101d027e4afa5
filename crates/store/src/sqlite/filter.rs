//! Turning a [`Filter`] into a SQL condition with bound parameters.

use rusqlite::types::Value;

use crate::types::{Filter, Status, to_millis};

/// Appends the condition for `filter` to `params` and returns it (`1` when it matches all).
/// With `terminal_only`, pending statuses are excluded whatever the filter says.
pub(crate) fn condition(filter: &Filter, terminal_only: bool, params: &mut Vec<Value>) -> String {
    let mut parts = Vec::new();
    let statuses: Vec<Status> = if filter.statuses.is_empty() {
        if terminal_only {
            Status::ALL
                .into_iter()
                .filter(Status::is_terminal)
                .collect()
        } else {
            Vec::new()
        }
    } else {
        filter
            .statuses
            .iter()
            .copied()
            .filter(|s| !terminal_only || s.is_terminal())
            .collect()
    };
    if !filter.statuses.is_empty() || terminal_only {
        if statuses.is_empty() {
            return "0".into();
        }
        let list: Vec<String> = statuses
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        parts.push(format!("status IN ({})", list.join(", ")));
    }
    if let Some(destination) = &filter.destination {
        params.push(Value::Text(destination.clone()));
        parts.push(format!("destination = ?{}", params.len()));
    }
    if let Some(from) = filter.created_from {
        params.push(Value::Integer(to_millis(from)));
        parts.push(format!("created_at >= ?{}", params.len()));
    }
    if let Some(until) = filter.created_until {
        params.push(Value::Integer(to_millis(until)));
        parts.push(format!("created_at < ?{}", params.len()));
    }
    if let Some(text) = &filter.error_contains {
        params.push(Value::Text(text.clone()));
        parts.push(format!("instr(last_error, ?{}) > 0", params.len()));
    }
    if let Some(key) = &filter.idempotency_key {
        params.push(Value::Text(key.clone()));
        parts.push(format!("idempotency_key = ?{}", params.len()));
    }
    if let Some(key) = &filter.ordering_key {
        params.push(Value::Text(key.clone()));
        parts.push(format!("ordering_key = ?{}", params.len()));
    }
    if let Some(text) = &filter.payload_contains {
        params.push(Value::Text(text.clone()));
        parts.push(format!("instr(payload, ?{}) > 0", params.len()));
    }
    if parts.is_empty() {
        "1".into()
    } else {
        parts.join(" AND ")
    }
}
