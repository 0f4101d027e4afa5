//! Idempotency keys: the fingerprint of a submission, and what a submission whose key was
//! taken answers — the original with its current status, or 409 `idempotency_conflict`.
//!
//! The store keeps the fingerprint with the key and compares bytes; this module decides what
//! makes two requests the same. A fingerprint is the SHA-256 of a canonical form of what the
//! client asked for: the destination, the payload (as JSON with every object's keys sorted
//! and no whitespace, so key order, spacing and escapes make no difference, while values do:
//! `1` and `1.0` are delivered differently, so they differ here too), the client's ordering
//! key and `deliver_after` (to the millisecond the store keeps, whatever offset it was written
//! with).
//!
//! A long Telegram text split into parts is one request: every part carries the request's
//! fingerprint, the first part the key as given and part `n` the key `KEY#n`. A repeat of the
//! same text thus finds every part, and a different request under the key always meets the
//! first part, however either was split.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use ferrule_store::{Duplicate, Enqueued, MessageId};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// Tells fingerprints of this form from any later one.
const VERSION: &[u8] = b"ferrule.submit.v1";

/// The fingerprint of a submission: SHA-256 over the version, the destination, the canonical
/// payload, the client's ordering key and `deliver_after` in unix milliseconds, each framed so
/// that no two different requests write the same bytes.
pub(crate) fn fingerprint(
    destination: &str,
    payload: &Value,
    ordering_key: Option<&str>,
    not_before: Option<SystemTime>,
) -> [u8; 32] {
    let mut hasher = HashWriter(Sha256::new());
    frame(&mut hasher, VERSION);
    frame(&mut hasher, destination.as_bytes());
    // A JSON text ends where its last bracket, quote or literal ends: it needs no length.
    write_canonical(&mut hasher, payload).expect("hashing does not fail");
    match ordering_key {
        Some(key) => {
            hasher.0.update([1]);
            frame(&mut hasher, key.as_bytes());
        }
        None => hasher.0.update([0]),
    }
    match not_before {
        Some(at) => {
            hasher.0.update([1]);
            hasher.0.update(unix_millis(at).to_be_bytes());
        }
        None => hasher.0.update([0]),
    }
    hasher.0.finalize().into()
}

/// Milliseconds since 1970 (negative before), as the store keeps times.
fn unix_millis(at: SystemTime) -> i128 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_millis() as i128,
        Err(before) => -(before.duration().as_millis() as i128),
    }
}

/// Writes `bytes` with its length in front.
fn frame(hasher: &mut HashWriter, bytes: &[u8]) {
    hasher.0.update((bytes.len() as u64).to_be_bytes());
    hasher.0.update(bytes);
}

/// Feeds what is written into a SHA-256.
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes `value` as compact JSON with the keys of every object in byte order.
///
/// serde_json's map is ordered this way already unless its `preserve_order` feature is on
/// somewhere in the build, which would make the fingerprint depend on the client's key order;
/// sorting here keeps it canonical either way. The depth is bounded by the parser (128).
fn write_canonical(out: &mut impl Write, value: &Value) -> io::Result<()> {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.write_all(b"{")?;
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                serde_json::to_writer(&mut *out, key)?;
                out.write_all(b":")?;
                write_canonical(out, value)?;
            }
            out.write_all(b"}")
        }
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(out, item)?;
            }
            out.write_all(b"]")
        }
        scalar => Ok(serde_json::to_writer(out, scalar)?),
    }
}

/// How the store answered the messages of one submission.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Every message is new.
    Created,
    /// Every message's key was taken by this same request: nothing was stored; the first
    /// part's original says how it stands.
    Repeated(Duplicate),
    /// The key was taken by a different request: the original's id. `created` are the
    /// messages this request stored all the same (parts of a split text beyond the
    /// original's), which must be withdrawn.
    Conflict {
        /// The message the key names.
        original: MessageId,
        /// What this request stored, to cancel.
        created: Vec<MessageId>,
    },
}

impl Answer {
    /// Reads the store's answers to one submission, in part order.
    ///
    /// A different request under a taken key is a conflict: the store says so when both
    /// fingerprints differ. Parts that answer partly created and partly taken are one too:
    /// the same request is split the same way and stored in one transaction, so such a mix
    /// means the key was used for a request split differently (or before fingerprints were
    /// kept).
    pub(crate) fn of(enqueued: &[Enqueued]) -> Answer {
        let mut duplicates = enqueued.iter().filter_map(Enqueued::duplicate);
        let Some(first) = duplicates.next().copied() else {
            return Answer::Created;
        };
        let conflict = enqueued.iter().find(|e| e.is_conflict()).map(Enqueued::id);
        let created: Vec<MessageId> = enqueued
            .iter()
            .filter(|e| e.is_created())
            .map(Enqueued::id)
            .collect();
        match conflict {
            None if created.is_empty() => Answer::Repeated(first),
            conflict => Answer::Conflict {
                original: conflict.unwrap_or(first.id),
                created,
            },
        }
    }
}

/// The body of a 200 for a repeated request: the original's id and its status now. A purged
/// original has `"status": null` and a note saying why.
pub(crate) fn repeated_body(duplicate: &Duplicate) -> Value {
    match duplicate.status {
        Some(status) => json!({"id": duplicate.id.to_string(), "status": status.as_str()}),
        None => json!({
            "id": duplicate.id.to_string(),
            "status": null,
            "note": "the original message is no longer stored (purged); its Idempotency-Key \
                     stays taken until store.idempotency_window has passed",
        }),
    }
}

/// 409 `idempotency_conflict`: `key` was used for a different request, whose message is
/// `original`. The error names both (`error.idempotency_key`, `error.id`).
pub(crate) fn conflict(key: &str, original: MessageId) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_conflict",
        format!(
            "Idempotency-Key `{key}` was already used for a different request (message \
             {original}); use a new key for a new message"
        ),
    )
    .with_field("Idempotency-Key")
    .with_detail("idempotency_key", key)
    .with_detail("id", original.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ferrule_store::Status;
    use ulid::Ulid;

    use super::*;

    fn print(value: &Value) -> String {
        let mut out = Vec::new();
        write_canonical(&mut out, value).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_and_drops_whitespace() {
        let a: Value = serde_json::from_str(
            r#"{ "b": [1, {"y": "\u0041", "x": null}], "a": {"d": true, "c": 1.5} }"#,
        )
        .unwrap();
        assert_eq!(
            print(&a),
            r#"{"a":{"c":1.5,"d":true},"b":[1,{"x":null,"y":"A"}]}"#
        );
        assert_eq!(print(&json!("quote \" and \n")), r#""quote \" and \n""#);
    }

    #[test]
    fn key_order_whitespace_and_offsets_do_not_change_a_fingerprint() {
        let a: Value = serde_json::from_str(r#"{"text": "hi", "chat_id": 7}"#).unwrap();
        let b: Value = serde_json::from_str("{\n  \"chat_id\" : 7 ,\"text\":\"hi\"}").unwrap();
        let at = crate::time::parse_rfc3339("2026-01-01T12:00:00Z");
        let same_at = crate::time::parse_rfc3339("2026-01-01T13:00:00+01:00");
        assert_eq!(
            fingerprint("chat", &a, Some("k"), at),
            fingerprint("chat", &b, Some("k"), same_at)
        );
    }

    #[test]
    fn every_part_of_the_request_changes_a_fingerprint() {
        let at = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let base = fingerprint("hook", &json!({"n": 1}), Some("k"), at);
        let later = at.map(|t| t + Duration::from_millis(1));
        for other in [
            fingerprint("hook2", &json!({"n": 1}), Some("k"), at),
            fingerprint("hook", &json!({"n": 2}), Some("k"), at),
            fingerprint("hook", &json!({"n": 1.0}), Some("k"), at),
            fingerprint("hook", &json!({"n": 1}), None, at),
            fingerprint("hook", &json!({"n": 1}), Some("k2"), at),
            fingerprint("hook", &json!({"n": 1}), Some("k"), None),
            fingerprint("hook", &json!({"n": 1}), Some("k"), later),
        ] {
            assert_ne!(base, other);
        }
        // The frames keep neighbouring fields apart.
        assert_ne!(
            fingerprint("ab", &json!("c"), None, None),
            fingerprint("a", &json!("bc"), None, None)
        );
    }

    fn id() -> MessageId {
        MessageId::from_ulid(Ulid::new())
    }

    fn duplicate(id: MessageId, conflict: bool) -> Enqueued {
        Enqueued::Duplicate(Duplicate {
            id,
            status: Some(Status::Delivered),
            conflict,
        })
    }

    #[test]
    fn answers_read_created_repeated_and_conflicting_parts() {
        let (a, b, c) = (id(), id(), id());
        assert_eq!(
            Answer::of(&[Enqueued::Created(a), Enqueued::Created(b)]),
            Answer::Created
        );
        match Answer::of(&[duplicate(a, false), duplicate(b, false)]) {
            Answer::Repeated(d) => assert_eq!(d.id, a),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Answer::of(&[duplicate(a, true)]),
            Answer::Conflict {
                original: a,
                created: vec![]
            }
        );
        // A longer different text: the original's parts conflict, the rest was stored.
        assert_eq!(
            Answer::of(&[duplicate(a, true), duplicate(b, true), Enqueued::Created(c)]),
            Answer::Conflict {
                original: a,
                created: vec![c]
            }
        );
        // Taken and new parts without a fingerprint to compare: split differently.
        assert_eq!(
            Answer::of(&[Enqueued::Created(c), duplicate(b, false)]),
            Answer::Conflict {
                original: b,
                created: vec![c]
            }
        );
    }

    #[test]
    fn a_purged_original_says_so() {
        let a = id();
        let gone = Duplicate {
            id: a,
            status: None,
            conflict: false,
        };
        let body = repeated_body(&gone);
        assert_eq!(body["status"], Value::Null);
        assert!(body["note"].as_str().unwrap().contains("purged"));
        let delivered = Duplicate {
            status: Some(Status::Delivered),
            ..gone
        };
        assert_eq!(
            repeated_body(&delivered),
            json!({"id": a.to_string(), "status": "delivered"})
        );
    }
}
