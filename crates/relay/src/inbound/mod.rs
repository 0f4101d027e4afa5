//! Inbound events: Telegram updates, each recorded once, forwarded, its button press answered
//! (here and in [`polling`]), and e-mail ([`email`]: parsing and recording).
//!
//! An update arrives by webhook (`api/inbound.rs`, `POST /v1/telegram/{destination}/webhook`)
//! or by long polling ([`polling`]); both end in [`record_update`]:
//!
//! 1. [`Store::record_inbound`] stores the update under source `telegram:<destination>` and its
//!    `update_id`, and, in the same transaction and only when the update is new, enqueues its
//!    forward to `forward_to`. A redelivered update (Telegram retries a webhook it thinks
//!    failed; a poller may see a batch again after a crash) is a `Duplicate`: nothing is
//!    written and nothing forwarded.
//! 2. Only after that commit, a *new* update with a `callback_query` gets its
//!    `answerCallbackQuery`, on a task of its own so the webhook's answer is not held up.
//!    The user sees a spinner until the answer arrives (Telegram gives up after about 15 s),
//!    so a transient failure (network, 5xx, 429 with a short `retry_after`) is retried a few
//!    times within [`CALLBACK_ANSWER_BUDGET`]; a permanent one (400 "query is too old", a
//!    refused token) is not. A failure in the end is only logged: the update is stored
//!    either way. A duplicate is not answered again.

pub mod email;
pub mod polling;

use std::sync::Arc;
use std::time::Duration;

use ferrule_connectors::AnyConnector;
use ferrule_connectors::telegram::{CallbackQuery, TelegramConnector, TelegramError, Update};
use ferrule_policy::duration::readable;
use ferrule_policy::retry::{Jitter, Retry};
use ferrule_policy::{Context, Outcome};
use ferrule_store::{NewInbound, NewMessage, Recorded, Store, StoreError};
use serde_json::{Value, json};

use crate::destination::Destination;
use crate::state::{AppState, Counters};
use crate::telemetry::prometheus::{CALLBACK_ANSWERS, INBOUND, INBOUND_DUPLICATES};

/// How long a button press's answer may take in all, retries included: well within the
/// ~15 s Telegram shows the user's spinner, and short enough that a relay shutting down does
/// not wait on it for long.
pub const CALLBACK_ANSWER_BUDGET: Duration = Duration::from_secs(5);

/// The most `answerCallbackQuery` attempts for one button press.
const CALLBACK_ANSWER_ATTEMPTS: u32 = 4;

/// The longest `retry_after` a callback answer waits for; flood control asking for more makes
/// it give up (the user's spinner would be gone by then).
const CALLBACK_MAX_RETRY_AFTER: Duration = Duration::from_secs(3);

/// The retry policy of callback answers, timed by `clock`: exponential from 200 ms (full
/// jitter) to 1 s, at most [`CALLBACK_ANSWER_ATTEMPTS`] attempts and no retry that would end
/// past [`CALLBACK_ANSWER_BUDGET`].
fn callback_retry(clock: ferrule_policy::SharedClock) -> Retry {
    Retry::exponential(Duration::from_millis(200), Duration::from_secs(1))
        .jitter(Jitter::Full)
        .max_attempts(CALLBACK_ANSWER_ATTEMPTS)
        .max_elapsed(CALLBACK_ANSWER_BUDGET)
        .max_retry_after(CALLBACK_MAX_RETRY_AFTER)
        .context(Context::new("telegram.answer_callback_query").with_clock(clock))
        .build()
        .expect("the callback answer retry policy is valid")
}

/// The store's source name for a destination's updates: `telegram:<destination>`.
pub fn source(destination: &str) -> String {
    format!("telegram:{destination}")
}

/// The destination's Telegram connector, when it is a Telegram destination.
pub fn telegram(destination: &Destination) -> Option<&TelegramConnector> {
    match &destination.connector {
        AnyConnector::Telegram(bot) => Some(bot),
        _ => None,
    }
}

/// Records one update of `destination` (whose inbound side is configured): stores it with its
/// forward, then answers a new button press. `update` is the typed view of `raw`, when the
/// relay could read it; an update it cannot read is still stored, and not answered.
pub async fn record_update(
    state: &AppState,
    destination: &Arc<Destination>,
    update_id: i64,
    raw: Value,
    update: Option<&Update>,
) -> Result<Recorded, StoreError> {
    let Some(inbound) = &destination.inbound else {
        return Err(StoreError::InvalidOption {
            field: "destination",
            reason: format!("`{}` does not receive updates", destination.name),
        });
    };
    let source = source(&destination.name);
    let message = raw.get("message").filter(|m| m.is_object()).cloned();
    let forward = inbound
        .forward_to
        .as_ref()
        .map(|to| forward_message(to, &source, &raw, update));
    let event = NewInbound {
        source,
        external_id: update_id.to_string(),
        payload: raw,
        forward,
    };
    let recorded = match store_event(state, event).await {
        Ok(recorded) => recorded,
        Err(e) => {
            inbound
                .health
                .failure(state.clock.system_now(), format!("storing an update: {e}"));
            return Err(e);
        }
    };
    inbound.health.success();
    let name = destination.name.clone();
    let query = update.and_then(|u| u.callback_query.as_ref());
    // A message replies to a card that asked for it, or starts a route's run; either is
    // applied again for a redelivered update (the relay may have stopped in between), where
    // the store makes it change nothing twice.
    if let Some(message) = &message {
        routed_message(state, destination, update_id, message).await?;
    }
    if !recorded.is_created() {
        Counters::bump(&state.counters.inbound_duplicates);
        metrics::counter!(INBOUND_DUPLICATES.name, "destination" => name).increment(1);
        tracing::debug!(destination = %destination.name, update_id, "a redelivered update was ignored");
        // A press stored before may not have reached its wait (the relay stopped between the
        // two): a wait answers a second time "already handled" and changes nothing.
        if let Some(query) = query {
            press(state, destination, query, false).await?;
        }
        return Ok(recorded);
    }
    Counters::bump(&state.counters.inbound);
    metrics::counter!(INBOUND.name, "destination" => name).increment(1);
    if let Some(query) = query {
        press(state, destination, query, true).await?;
    }
    Ok(recorded)
}

/// A stored message: a reply to a route's card answers its wait
/// ([`crate::routes::press::reply`]); any other may start a route's run
/// ([`crate::routes::trigger::on_telegram`]).
async fn routed_message(
    state: &AppState,
    destination: &Destination,
    update_id: i64,
    message: &Value,
) -> Result<(), StoreError> {
    if state.routes.is_empty() {
        return Ok(());
    }
    if crate::routes::press::reply(state, message).await?.is_some() {
        return Ok(());
    }
    let key = format!("telegram:{}:{update_id}", destination.name);
    let context = json!({ "message": message });
    crate::routes::trigger::on_telegram(state, &destination.name, &key, &context).await?;
    Ok(())
}

/// A stored button press: a route's wait takes it ([`crate::routes::press::callback`], which
/// answers it first), or else a new one is answered with the destination's `callback_answer`.
async fn press(
    state: &AppState,
    destination: &Arc<Destination>,
    query: &CallbackQuery,
    new: bool,
) -> Result<(), StoreError> {
    let answer = |text: &'static str| {
        answer_callback(state, destination, query.id.clone(), Some(text.to_owned()));
    };
    match crate::routes::press::callback(state, query, answer).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => {
            if new {
                let text = destination
                    .inbound
                    .as_ref()
                    .and_then(|i| i.callback_answer.clone());
                answer_callback(state, destination, query.id.clone(), text);
            }
            Ok(())
        }
        Err(e) => {
            tracing::warn!(destination = %destination.name, error = %e, "a button press could not be applied to its run; the update will be taken again");
            Err(e)
        }
    }
}

/// Stores `event` with its forward ([`Store::record_inbound`]), noting in
/// [`Shared::storage`](crate::state::Shared::storage) what the write says about the disk (a
/// duplicate wrote nothing, so it says nothing), and counting a new forward in the queue depth
/// estimate like a submission (it is in the store's count from the next refresh on).
pub(crate) async fn store_event(
    state: &AppState,
    event: NewInbound,
) -> Result<Recorded, StoreError> {
    let recorded = state.store.record_inbound(event).await;
    match &recorded {
        Ok(r) if !r.is_created() => {}
        result => state.storage.observe(state.clock.system_now(), result),
    }
    let forward = recorded.as_ref().ok().and_then(Recorded::forward);
    if forward.is_some_and(|f| f.is_created()) {
        // One whose idempotency key was taken stored nothing.
        state.depths.added(1, false);
    }
    recorded
}

/// The message a new update is forwarded as: `{"source", "update"}`. Updates from one chat
/// share an ordering key, so the receiver gets a conversation in order.
/// The forward of an update, under the trace of the request that brought it (a new trace for
/// one fetched by polling).
fn forward_message(to: &str, source: &str, raw: &Value, update: Option<&Update>) -> NewMessage {
    let message = NewMessage::new(to, json!({ "source": source, "update": raw }))
        .traceparent(crate::telemetry::trace::current().to_string());
    let chat = update.and_then(|u| {
        u.message
            .as_ref()
            .or_else(|| u.callback_query.as_ref().and_then(|q| q.message.as_ref()))
            .map(|m| m.chat.id)
    });
    match chat {
        Some(chat) => message.ordering_key(format!("{source}:{chat}")),
        None => message,
    }
}

/// Answers a button press with `text` on a task of its own, tracked with the relay's other work:
/// transient failures are retried within [`CALLBACK_ANSWER_BUDGET`].
fn answer_callback(
    state: &AppState,
    destination: &Arc<Destination>,
    query_id: String,
    text: Option<String>,
) {
    let destination = destination.clone();
    let clock = state.clock.clone();
    state.tasks.spawn(async move {
        let Some(bot) = telegram(&destination) else {
            return;
        };
        let text = text.as_deref();
        let name = destination.name.clone();
        let retry = callback_retry(clock.clone());
        let classify = |result: &Result<(), TelegramError>| match result {
            Ok(()) => Outcome::Success,
            Err(e) => e.outcome(),
        };
        let mut attempts = 0_u32;
        let answered = retry.call_classified(&classify, || {
            attempts += 1;
            bot.answer_callback_query(&query_id, text)
        });
        // `max_elapsed` stops retries from starting late; this also stops an attempt that
        // hangs (its own timeout is the destination's, which may be longer).
        let result = tokio::select! {
            result = answered => result.map_err(|e| e.to_string()),
            () = clock.sleep(CALLBACK_ANSWER_BUDGET) => {
                Err(format!("no answer within {}", readable(CALLBACK_ANSWER_BUDGET)))
            }
        };
        match result {
            Ok(()) => {
                metrics::counter!(CALLBACK_ANSWERS.name, "destination" => name, "result" => "ok")
                    .increment(1);
                if attempts > 1 {
                    tracing::info!(destination = %destination.name, attempts, "answered a callback query after retrying");
                }
            }
            Err(error) => {
                metrics::counter!(CALLBACK_ANSWERS.name, "destination" => name, "result" => "failed")
                    .increment(1);
                tracing::warn!(destination = %destination.name, %error, attempts, "could not answer a callback query; the update is stored");
            }
        }
    });
}

/// Polling `destination` conflicts with another consumer: a second process polling the same
/// bot, or a webhook set for it (Telegram refuses `getUpdates` while one is). Logs an error
/// naming the cause and marks the destination's inbound side unhealthy; the poller backs off
/// and tries again, so it resumes by itself once the other consumer is gone.
///
/// Also raises a [`PollingConflict`](crate::alerts::AlertKind::PollingConflict) alert, which
/// the alert gate de-duplicates: a conflict that lasts sends one alert per `min_interval`.
pub fn polling_conflict(state: &AppState, destination: &Destination, detail: &str) {
    tracing::error!(
        destination = %destination.name,
        detail,
        "cannot poll for Telegram updates: another getUpdates consumer or a webhook is set for \
         this bot (stop the other consumer, or run `ferrule telegram delete-webhook {}`)",
        destination.name
    );
    if let Some(inbound) = &destination.inbound {
        inbound.health.mark_unhealthy(
            state.clock.system_now(),
            format!(
                "polling conflict: another getUpdates consumer or a webhook is set for this bot \
                 ({detail})"
            ),
        );
    }
    state
        .alerts
        .raise_soon(crate::alerts::Alert::polling_conflict(
            &destination.name,
            state.clock.system_now(),
        ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_keep_one_chat_in_order() {
        let raw = json!({"update_id": 5, "message": {"message_id": 1, "date": 1,
            "chat": {"id": -100123, "type": "supergroup"}, "text": "hi"}});
        let update = ferrule_connectors::telegram::update_from_value(&raw).unwrap();
        let m = forward_message("app", "telegram:bot", &raw, Some(&update));
        assert_eq!(m.destination, "app");
        assert_eq!(m.payload, json!({"source": "telegram:bot", "update": raw}));
        assert_eq!(m.ordering_key.as_deref(), Some("telegram:bot:-100123"));
        let unread = forward_message("app", "telegram:bot", &json!({"update_id": 6}), None);
        assert_eq!(unread.ordering_key, None);
    }
}
