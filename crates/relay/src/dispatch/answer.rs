//! The answers of queued calls to `http` destinations: kept with their message, and sent to
//! the call's `reply_to` webhook destination when the call ends.

use ferrule_connectors::AnyConnector;
use ferrule_store::{Enqueued, Lease, Message, NewMessage, Store};
use serde_json::{Value, json};

use crate::destination::Destination;
use crate::state::AppState;

/// Keeps `answer` with the leased message of an `http` destination. A failure is logged: the
/// attempt's outcome stands without it.
pub(super) async fn keep(
    state: &AppState,
    dest: &Destination,
    lease: &Lease,
    answer: Option<&Value>,
) {
    let (AnyConnector::Http(_), Some(answer)) = (&dest.connector, answer) else {
        return;
    };
    if let Err(e) = Box::pin(state.store.keep_response(lease, answer.clone())).await {
        tracing::warn!(message_id = %lease.id, destination = %dest.name, error = %e, "the answer of a queued call could not be kept");
    }
}

/// Queues the end of the call `message` (`delivered` or `dead`) with its `answer` for the
/// call's `reply_to`, if it names one: a message to that webhook destination, keyed by the
/// call's id, so that a call finished twice (a crash between this and its completion) replies
/// once within the idempotency window.
///
/// The reply's payload is `{"type": "http.response", "message_id", "destination", "status",
/// "response"}`; the webhook connector signs it.
pub(super) async fn reply(
    state: &AppState,
    dest: &Destination,
    message: &Message,
    status: &str,
    answer: Option<&Value>,
) {
    if !matches!(dest.connector, AnyConnector::Http(_)) {
        return;
    }
    let Some(reply_to) = message.payload.get("reply_to").and_then(Value::as_str) else {
        return;
    };
    let payload = json!({
        "type": "http.response",
        "message_id": message.id.to_string(),
        "destination": dest.name,
        "status": status,
        "response": answer,
    });
    let reply = NewMessage::new(reply_to, payload).idempotency_key(format!("reply:{}", message.id));
    match Box::pin(state.store.enqueue(reply)).await {
        Ok(Enqueued::Created(id)) => {
            state.wakeups.nudge();
            tracing::info!(message_id = %message.id, reply_id = %id, reply_to, "the answer of a queued call is on its way to reply_to");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(message_id = %message.id, reply_to, error = %e, "the answer of a queued call could not be queued for reply_to");
        }
    }
}
