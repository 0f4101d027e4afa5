//! Submit-time payload checks: what a destination's connector would refuse is answered with 422
//! before anything is stored, and long Telegram texts become ordered parts.

use ferrule_connectors::AnyConnector;
use ferrule_connectors::{github, smtp};
use serde_json::Value;

use super::error::ApiError;
use crate::destination::Destination;

/// Checks the `reply_to` of a queued call: a configured webhook destination (422 naming
/// `payload.reply_to` otherwise). Other payloads have none.
pub(crate) fn check_reply_to(
    prepared: &Prepared,
    destinations: &std::collections::BTreeMap<String, std::sync::Arc<Destination>>,
) -> Result<(), ApiError> {
    for payload in &prepared.payloads {
        let Some(reply_to) = payload.get("reply_to").and_then(Value::as_str) else {
            continue;
        };
        match destinations.get(reply_to).map(|d| &d.connector) {
            Some(AnyConnector::Webhook(_)) => {}
            Some(_) => {
                return Err(ApiError::invalid_payload(
                    "reply_to",
                    &format!("`{reply_to}` is not a webhook destination"),
                ));
            }
            None => {
                return Err(ApiError::invalid_payload(
                    "reply_to",
                    &format!("no destination is named `{reply_to}`"),
                ));
            }
        }
    }
    Ok(())
}

/// A submitted payload after its destination's checks: the payloads to enqueue, in order.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// One payload, or the parts of a split Telegram text in delivery order.
    pub(crate) payloads: Vec<Value>,
    /// The ordering key the destination implies (a Telegram chat, a GitHub pull request), used
    /// when the client gave none.
    pub(crate) ordering_key: Option<String>,
}

/// Checks `payload` with `dest`'s connector: Telegram, SMTP and GitHub payloads are validated
/// (422 naming the field); a Telegram text over the limit is split per the destination's
/// `long_texts`, and the chat becomes the ordering key; a GitHub action's pull request or issue
/// becomes it too, `owner/repo#number` in lower case (GitHub's names ignore case), so actions on
/// one pull request happen in the order they were submitted. Webhook payloads pass unchanged if
/// they are a JSON object or array, or any JSON value with the destination's `any_json`.
///
/// A bare `null`, string, number or boolean is refused by default because it is nearly always
/// a client's mistake (a variable never set, a body encoded twice), and receivers that follow
/// RFC 4627 or Standard Webhooks' examples parse only an object or an array. Arrays are kept:
/// a batch of events is a common webhook body.
pub(crate) fn prepare(dest: &Destination, payload: Value) -> Result<Prepared, ApiError> {
    match &dest.connector {
        AnyConnector::Telegram(telegram) => {
            let validated = telegram
                .validate_payload(&payload.to_string())
                .map_err(|e| ApiError::invalid_payload(e.field(), e.reason()))?;
            let ordering_key = Some(validated.ordering_key());
            let payloads = if validated.is_split() {
                validated
                    .payloads()
                    .iter()
                    .map(|part| serde_json::from_str(part))
                    .collect::<Result<_, _>>()
                    .map_err(|e| ApiError::internal("a split part is not JSON", &e))?
            } else {
                vec![payload]
            };
            Ok(Prepared {
                payloads,
                ordering_key,
            })
        }
        AnyConnector::Smtp(_) => {
            smtp::validate_payload(&payload.to_string())
                .map_err(|e| ApiError::invalid_payload(e.field(), e.reason()))?;
            Ok(Prepared {
                payloads: vec![payload],
                ordering_key: None,
            })
        }
        AnyConnector::Http(http) => {
            let call = ferrule_connectors::http::validate_call(&payload.to_string())
                .map_err(|e| ApiError::invalid_payload(e.field(), e.reason()))?;
            http.target(&call.path)
                .map_err(|reason| ApiError::invalid_payload("path", reason))?;
            Ok(Prepared {
                payloads: vec![payload],
                ordering_key: None,
            })
        }
        AnyConnector::Github(_) => {
            let action = github::validate_payload(&payload.to_string())
                .map_err(|e| ApiError::invalid_payload(e.field(), e.reason()))?;
            let thread = format!("{}#{}", action.repo, action.number);
            Ok(Prepared {
                payloads: vec![payload],
                ordering_key: Some(thread.to_ascii_lowercase()),
            })
        }
        _ => {
            if !(dest.any_json || payload.is_object() || payload.is_array()) {
                return Err(ApiError::invalid_payload(
                    "payload",
                    "a webhook payload must be a JSON object or array; set `any_json = true` \
                     on the destination to send any JSON value",
                ));
            }
            Ok(Prepared {
                payloads: vec![payload],
                ordering_key: None,
            })
        }
    }
}

/// The idempotency key of part `n` (from 1) of a submission: the key as given for the first
/// part (and a single payload), `key#n` for the others, so that every request under a key
/// meets its first part whatever the split (see `super::idempotency`).
pub(crate) fn part_key(key: &str, n: usize) -> String {
    if n == 1 {
        key.to_owned()
    } else {
        format!("{key}#{n}")
    }
}
