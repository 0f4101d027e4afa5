//! Telegram updates as the relay reads them: `parse_raw_updates` (a `getUpdates` result),
//! `update_from_value` / `RawUpdate::parse` (the typed view the relay acts on) and
//! `parse_update` (a webhook body), on any bytes. Never panic; a batch is accepted exactly when
//! every element has an integer `update_id`, and then its ids and JSON are the input's, in
//! order, else the error names the first element at fault; every typed update keeps its
//! `update_id` and the chat and callback data the JSON had, and serialises back to itself; a
//! refusal names a field.
#![no_main]

use ferrule_connectors::telegram::{
    PayloadError, Update, parse_raw_updates, parse_update, update_from_value,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fn check_typed(json: &Value, parsed: &Result<Update, PayloadError>) {
    match parsed {
        Ok(update) => {
            assert!(json.is_object());
            assert_eq!(Some(update.update_id), json["update_id"].as_i64());
            let message = &json["message"];
            assert_eq!(
                update.message.as_ref().map(|m| m.chat.id),
                message["chat"]["id"].as_i64(),
                "{json}"
            );
            assert_eq!(
                update.message.as_ref().and_then(|m| m.text.as_deref()),
                message["text"].as_str()
            );
            let query = &json["callback_query"];
            assert_eq!(
                update.callback_query.as_ref().map(|q| q.id.as_str()),
                query["id"].as_str()
            );
            assert_eq!(
                update
                    .callback_query
                    .as_ref()
                    .and_then(|q| q.data.as_deref()),
                query["data"].as_str()
            );
            let shown = serde_json::to_string(update).expect("an update serialises");
            assert_eq!(parse_update(&shown).as_ref(), Ok(update), "{shown}");
        }
        Err(e) => {
            assert!(!e.field().is_empty() && !e.reason().is_empty(), "{e:?}");
            assert!(!e.field().starts_with('.'), "{e:?}");
        }
    }
}

fn check_batch(items: &[Value]) {
    let first_bad = items
        .iter()
        .position(|item| item.get("update_id").and_then(Value::as_i64).is_none());
    match (parse_raw_updates(Value::Array(items.to_vec())), first_bad) {
        (Ok(raw), None) => {
            assert_eq!(raw.len(), items.len());
            for (raw, item) in raw.iter().zip(items) {
                assert_eq!(Some(raw.update_id), item["update_id"].as_i64());
                assert_eq!(&raw.json, item);
                check_typed(&raw.json, &raw.parse());
            }
        }
        (Err(e), Some(i)) => assert!(e.contains(&format!("`[{i}].update_id`")), "{e}"),
        (result, first_bad) => panic!("{result:?} with the first bad element at {first_bad:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(value) = serde_json::from_str::<Value>(&text) else {
        let e = parse_update(&text).expect_err("not JSON, yet an update");
        assert_eq!(e.field(), "update");
        return;
    };
    // A webhook body: one update.
    let typed = update_from_value(&value);
    assert_eq!(parse_update(&text), typed.clone());
    check_typed(&value, &typed);
    // A `getUpdates` result: a list, or this one update as a batch of one.
    match &value {
        Value::Array(items) => check_batch(items),
        other => {
            assert!(parse_raw_updates(other.clone()).is_err());
            check_batch(std::slice::from_ref(other));
            check_batch(&[json!({"update_id": 1}), other.clone()]);
        }
    }
});
