//! Backend-independent checks and encodings shared by the SQLite and PostgreSQL backends.

use crate::error::{Result, StoreError};
use crate::types::{Cursor, NewInbound, NewMessage};

/// Longest destination, idempotency key, ordering key or lease owner accepted.
pub(crate) const MAX_KEY_BYTES: usize = 512;

/// Meta keys with this prefix belong to the store itself.
pub(crate) const RESERVED_META_PREFIX: &str = "ferrule.";

/// A [`NewMessage`] checked and serialised, ready to bind.
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    pub(crate) payload: String,
    pub(crate) headers: Option<String>,
    /// The step of the run the message belongs to, for a message a run's change enqueues
    /// (the run's id is added when it is written).
    pub(crate) step: Option<String>,
}

/// Serialises a replacement payload; refuses one over `max_payload`.
pub(crate) fn encode_payload(payload: &serde_json::Value, max_payload: usize) -> Result<String> {
    let text = serde_json::to_string(payload).map_err(|e| StoreError::InvalidOption {
        field: "payload",
        reason: e.to_string(),
    })?;
    if text.len() > max_payload {
        return Err(StoreError::PayloadTooLarge {
            size: text.len(),
            max: max_payload,
        });
    }
    Ok(text)
}

/// Checks a message's fields and serialises its JSON; refuses a payload over `max_payload`.
pub(crate) fn encode(message: &NewMessage, max_payload: usize) -> Result<Encoded> {
    check_key("destination", Some(&message.destination), false)?;
    check_key("idempotency_key", message.idempotency_key.as_deref(), true)?;
    check_key("ordering_key", message.ordering_key.as_deref(), true)?;
    check_key("traceparent", message.traceparent.as_deref(), true)?;
    let payload =
        serde_json::to_string(&message.payload).map_err(|e| StoreError::InvalidOption {
            field: "payload",
            reason: e.to_string(),
        })?;
    if payload.len() > max_payload {
        return Err(StoreError::PayloadTooLarge {
            size: payload.len(),
            max: max_payload,
        });
    }
    let headers = match &message.headers {
        None => None,
        Some(h) => Some(
            serde_json::to_string(h).map_err(|e| StoreError::InvalidOption {
                field: "headers",
                reason: e.to_string(),
            })?,
        ),
    };
    Ok(Encoded {
        payload,
        headers,
        step: None,
    })
}

/// A [`NewInbound`] checked and serialised, with its forward message, ready to bind.
#[derive(Debug)]
pub(crate) struct EncodedInbound {
    pub(crate) source: String,
    pub(crate) external_id: String,
    pub(crate) payload: String,
    pub(crate) forward: Option<(NewMessage, Encoded)>,
}

/// Checks an inbound event's keys and serialises it and its forward; refuses a payload over
/// `max_payload`.
pub(crate) fn encode_inbound(event: NewInbound, max_payload: usize) -> Result<EncodedInbound> {
    check_key("source", Some(&event.source), false)?;
    check_key("external_id", Some(&event.external_id), false)?;
    let payload = encode_payload(&event.payload, max_payload)?;
    let forward = match event.forward {
        None => None,
        Some(message) => {
            let encoded = encode(&message, max_payload)?;
            Some((message, encoded))
        }
    };
    Ok(EncodedInbound {
        source: event.source,
        external_id: event.external_id,
        payload,
        forward,
    })
}

/// Refuses an empty (unless optional and absent) or overlong key.
pub(crate) fn check_key(field: &'static str, value: Option<&str>, optional: bool) -> Result<()> {
    match value {
        None if optional => Ok(()),
        None => Err(StoreError::InvalidOption {
            field,
            reason: "is required".into(),
        }),
        Some("") => Err(StoreError::InvalidOption {
            field,
            reason: "must not be empty".into(),
        }),
        Some(v) if v.len() > MAX_KEY_BYTES => Err(StoreError::InvalidOption {
            field,
            reason: format!("is {} bytes; the maximum is {MAX_KEY_BYTES}", v.len()),
        }),
        Some(_) => Ok(()),
    }
}

/// The `seq` a page's cursor points after (every listing pages by a `seq` column).
pub(crate) fn cursor_seq(cursor: &Cursor) -> Result<i64> {
    cursor.0.parse().map_err(|_| StoreError::InvalidOption {
        field: "cursor",
        reason: format!("`{}` is not a cursor from this store", cursor.0),
    })
}

/// Refuses a payload text search without a creation-time range of at most
/// [`MAX_TEXT_SEARCH_SPAN`](crate::types::MAX_TEXT_SEARCH_SPAN), which would read every
/// payload the store keeps.
pub(crate) fn check_text_search(filter: &crate::types::Filter) -> Result<()> {
    if filter.payload_contains.is_none() {
        return Ok(());
    }
    let max = crate::types::MAX_TEXT_SEARCH_SPAN;
    let bounded = match (filter.created_from, filter.created_until) {
        (Some(from), Some(until)) => until.duration_since(from).map_or(true, |span| span <= max),
        _ => false,
    };
    if bounded {
        Ok(())
    } else {
        Err(StoreError::InvalidOption {
            field: "payload_contains",
            reason: format!(
                "needs a creation-time range (created_from and created_until) of at most {} days",
                max.as_secs() / 86_400
            ),
        })
    }
}

/// Refuses a `max` or `limit` outside `1..=upper`.
pub(crate) fn check_count(field: &'static str, value: usize, upper: usize) -> Result<()> {
    if value == 0 || value > upper {
        return Err(StoreError::InvalidOption {
            field,
            reason: format!("must be between 1 and {upper}, got {value}"),
        });
    }
    Ok(())
}

/// Refuses writes to the store's own meta keys.
pub(crate) fn check_meta_key(key: &str) -> Result<()> {
    check_key("key", Some(key), false)?;
    if key.starts_with(RESERVED_META_PREFIX) {
        return Err(StoreError::InvalidOption {
            field: "key",
            reason: format!("keys starting with `{RESERVED_META_PREFIX}` are reserved"),
        });
    }
    Ok(())
}

/// Refuses a meta prefix inside the store's own namespace, or longer than any key can be.
pub(crate) fn check_meta_prefix(prefix: &str) -> Result<()> {
    if prefix.len() > MAX_KEY_BYTES {
        return Err(StoreError::InvalidOption {
            field: "prefix",
            reason: format!("is {} bytes; the maximum is {MAX_KEY_BYTES}", prefix.len()),
        });
    }
    if prefix.starts_with(RESERVED_META_PREFIX) {
        return Err(StoreError::InvalidOption {
            field: "prefix",
            reason: format!("keys starting with `{RESERVED_META_PREFIX}` are reserved"),
        });
    }
    Ok(())
}

/// Whether `key` is one of the store's own meta keys, which listings leave out.
pub(crate) fn is_reserved_meta(key: &str) -> bool {
    key.starts_with(RESERVED_META_PREFIX)
}

/// Takes `notify`'s stored permit, if it has one, without waiting: one poll of a
/// [`Notified`](tokio::sync::Notify::notified), which completes at once on a stored permit
/// and otherwise unregisters when dropped.
pub(crate) fn take_permit(notify: &tokio::sync::Notify) -> bool {
    let notified = std::pin::pin!(notify.notified());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::future::Future::poll(notified, &mut cx).is_ready()
}

/// When the earliest pending message falls due, as read by the last claim, with the waker's
/// generation read before that claim.
///
/// Valid while the generation is unchanged: everything that can make a message due sooner (an
/// enqueue, a retry, a release, a deferral, a replay, a resumed destination, here or, on
/// PostgreSQL, in another process) wakes the waker after its commit, and so ends it; what only
/// makes messages due later (a delivery, a cancel, a pause, a lease extended) leaves it early,
/// which costs an idle dispatcher one claim that finds nothing. An idle dispatcher thus asks
/// the database for its next due time only when something happened since its last claim: at
/// low rates that was one more query (a transaction on PostgreSQL, a hand-off to a blocking
/// thread on SQLite) per message.
#[derive(Debug, Default)]
pub(crate) struct NextDueCache(std::sync::Mutex<Option<(u64, Option<i64>)>>);

impl NextDueCache {
    /// Keeps `at` (milliseconds), read by a claim that began at waker `generation`.
    pub(crate) fn set(&self, generation: u64, at: Option<i64>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, at));
    }

    /// The kept next due time, if nothing woke the waker since (it is now at `generation`).
    pub(crate) fn get(&self, generation: u64) -> Option<Option<std::time::SystemTime>> {
        let kept = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.filter(|(g, _)| *g == generation)
            .map(|(_, at)| at.map(crate::types::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payload_over_the_limit_is_refused() {
        let msg = NewMessage::new("d", json!({"text": "x".repeat(100)}));
        let err = encode(&msg, 50).unwrap_err();
        assert!(
            matches!(err, StoreError::PayloadTooLarge { max: 50, .. }),
            "{err}"
        );
        assert!(encode(&msg, 1000).is_ok());
    }

    #[test]
    fn empty_destination_and_reserved_meta_are_refused() {
        let err = encode(&NewMessage::new("", json!(1)), 100).unwrap_err();
        assert!(err.to_string().contains("destination"), "{err}");
        assert!(check_meta_key("ferrule.schema_version").is_err());
        assert!(check_meta_key("telegram.offset").is_ok());
        assert!(check_count("max", 0, 10).is_err());
        assert!(check_meta_prefix("ferrule.").is_err());
        assert!(check_meta_prefix("ferrule.x").is_err());
        assert!(check_meta_prefix("ferrule").is_ok());
        assert!(check_meta_prefix("").is_ok());
        assert!(check_meta_prefix(&"x".repeat(MAX_KEY_BYTES + 1)).is_err());
    }
}
