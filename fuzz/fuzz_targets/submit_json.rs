//! `ferrule::api::parse_submit` on any `POST /v1/messages` body, against a webhook, two
//! Telegram bots (`long_texts` split and refuse) and an SMTP destination: never panics and
//! never answers 500. An accepted body keeps what the JSON said (destination, ordering key,
//! `deliver_after` to the millisecond, the payload itself unless a long text was split), gives
//! the same result re-serialised, and a split text loses nothing but whitespace, each part
//! being a submission of its own. A refusal is a 400 or 422 whose message says why and whose
//! code fits the body (`malformed_json` only for what is not JSON, `unknown_destination` only
//! for a name not configured, `invalid_payload` naming `payload…` in `error.field`).
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ferrule::api::{ApiError, Submit, parse_submit};
use ferrule::config::Config;
use ferrule::destination::Destination;
use ferrule_policy::chaos::Environment;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// One destination of each kind the relay has, named as the seed corpus names them.
const CONFIG: &str = r#"
[[destinations]]
name = "billing-hook"
type = "webhook"
url = "http://127.0.0.1:9/hook"
allow_private = true

[[destinations]]
name = "ops-chat"
type = "telegram"
bot_token = "123456789:fuzz-token"
long_texts = "split"

[[destinations]]
name = "strict-chat"
type = "telegram"
bot_token = "123456789:fuzz-token"
long_texts = "refuse"

[[destinations]]
name = "mail"
type = "smtp"
host = "smtp.example.com"
from = "ferrule <relay@example.com>"
"#;

static DESTINATIONS: LazyLock<BTreeMap<String, Arc<Destination>>> = LazyLock::new(|| {
    let config = Config::from_toml_str(CONFIG).expect("the fuzz config parses");
    config.validate().expect("the fuzz config is valid");
    config
        .destinations()
        .expect("the fuzz destinations resolve")
        .iter()
        .map(|d| {
            let built = Destination::build(
                d,
                ferrule_policy::clock::system(),
                Environment::Development,
                config.health.clone(),
            )
            .expect("the fuzz destinations build");
            (d.name.clone(), Arc::new(built))
        })
        .collect()
});

/// The text a Telegram payload shows: its `text`, else its `caption`.
fn shown_text(payload: &Value) -> &str {
    payload["text"]
        .as_str()
        .or_else(|| payload["caption"].as_str())
        .unwrap_or("")
}

fn without_whitespace(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

fn check_accepted(data: &[u8], submit: &Submit) {
    let body: Value = serde_json::from_slice(data).expect("an accepted body is JSON");
    assert!(body.is_object(), "an accepted body is an object");
    assert_eq!(body["destination"], submit.destination.as_str());
    assert!(DESTINATIONS.contains_key(&submit.destination));
    assert!(!submit.payloads.is_empty(), "no payload to enqueue");
    let telegram = submit.destination.ends_with("-chat");
    match body.get("ordering_key").and_then(Value::as_str) {
        Some(key) => assert_eq!(submit.ordering_key.as_deref(), Some(key)),
        None if telegram => {
            // The chat as Telegram names it: `7`, `"007"` and `"+7"` are one chat.
            let chat = &body["payload"]["chat_id"];
            let expected = match chat.as_str() {
                Some(text) => text
                    .parse::<i64>()
                    .map_or_else(|_| text.to_owned(), |id| id.to_string()),
                None => chat.to_string(),
            };
            assert_eq!(submit.ordering_key.as_deref(), Some(expected.as_str()));
        }
        None => assert_eq!(submit.ordering_key, None),
    }
    match (
        body.get("deliver_after").and_then(Value::as_str),
        submit.not_before,
    ) {
        (None, None) => {}
        (Some(text), Some(at)) => {
            assert_eq!(ferrule::time::parse_rfc3339(text), Some(at));
            // Shown with milliseconds, it reads back as the same millisecond.
            let shown = ferrule::time::rfc3339(at);
            let back = ferrule::time::parse_rfc3339(&shown).expect("a shown time parses");
            let lost = at.duration_since(back).expect("shown times round down");
            assert!(
                lost < Duration::from_millis(1),
                "{text:?} shown as {shown:?}"
            );
        }
        other => panic!("deliver_after and not_before disagree: {other:?}"),
    }
    let payload = &body["payload"];
    if submit.payloads.len() == 1 {
        assert_eq!(
            &submit.payloads[0], payload,
            "an unsplit payload is kept as sent"
        );
    } else {
        assert!(telegram, "only Telegram texts are split");
        let joined: String = submit.payloads.iter().map(shown_text).collect();
        assert_eq!(
            without_whitespace(&joined),
            without_whitespace(shown_text(payload)),
            "a split text lost more than whitespace"
        );
        for part in &submit.payloads {
            let again = json!({"destination": submit.destination, "payload": part});
            let again = parse_submit(again.to_string().as_bytes(), &DESTINATIONS)
                .unwrap_or_else(|e| panic!("part {part} is refused: {e:?}"));
            assert_eq!(again.payloads, [part.clone()], "a part is split again");
        }
    }
    // Whitespace, key order and escapes do not change the result.
    let reserialised = serde_json::to_vec_pretty(&body).expect("a Value serialises");
    match parse_submit(&reserialised, &DESTINATIONS) {
        Ok(again) => assert_eq!(&again, submit),
        Err(e) => panic!("re-serialised body refused: {e:?}"),
    }
}

fn check_refused(data: &[u8], e: &ApiError) {
    assert!(
        matches!(e.status.as_u16(), 400 | 422),
        "status {} for {e:?}",
        e.status
    );
    assert!(!e.message.trim().is_empty());
    let body = serde_json::from_slice::<Value>(data).ok();
    match e.code {
        "malformed_json" => {
            assert!(body.is_none(), "valid JSON called malformed: {e:?}");
        }
        "invalid_request" => {
            // serde's messages name the field in backticks or say what was expected.
            assert!(
                e.message.contains('`') || e.message.contains("expected"),
                "{e:?}"
            );
        }
        "unknown_destination" => {
            let name = body.as_ref().and_then(|b| b["destination"].as_str());
            let name = name.expect("an unknown destination is a string");
            assert!(!DESTINATIONS.contains_key(name));
            assert!(e.message.contains(&format!("`{name}`")), "{e:?}");
        }
        "invalid_payload" => {
            let field = e.field.as_deref().expect("invalid_payload names a field");
            assert!(field == "payload" || field.starts_with("payload."), "{e:?}");
            assert!(e.message.contains(&format!("`{field}`")), "{e:?}");
        }
        other => panic!("unexpected code {other}: {e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    match parse_submit(data, &DESTINATIONS) {
        Ok(submit) => check_accepted(data, &submit),
        Err(e) => check_refused(data, &e),
    }
});
