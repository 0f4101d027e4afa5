//! Inbound updates: what Telegram posts to a webhook or returns from `getUpdates`.
//!
//! Only the fields the relay acts on are typed; unknown fields are ignored, because Telegram
//! adds fields often and an inbound update must never be refused for that.

use serde::{Deserialize, Serialize};

use super::payload::PayloadError;

/// One update. Exactly one of the optional parts is set by Telegram; kinds the relay does not
/// handle (edited messages, polls, …) leave both `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// The update's id: increasing, the `offset` for the next `getUpdates` is the last one + 1.
    /// It may jump after a week of silence, so de-duplicate with a set, not a high-water mark.
    pub update_id: i64,
    /// A new message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    /// A press on an inline keyboard button; answer it with
    /// [`answer_callback_query`](super::TelegramConnector::answer_callback_query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_query: Option<CallbackQuery>,
}

/// A message, as far as the relay reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The message's id within its chat.
    pub message_id: i64,
    /// Unix seconds when it was sent (0 for a message the bot can no longer access).
    #[serde(default)]
    pub date: i64,
    /// The chat it belongs to.
    pub chat: Chat,
    /// The sender; absent in channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<User>,
    /// The text of a text message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The caption of a photo, document, ….
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
}

/// A chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    /// The chat's id; may exceed 32 bits.
    pub id: i64,
    /// `private`, `group`, `supergroup` or `channel`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The title of a group or channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The chat's username, without `@`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// A user or bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user's id.
    pub id: i64,
    /// Whether it is a bot.
    #[serde(default)]
    pub is_bot: bool,
    /// The first name.
    pub first_name: String,
    /// The username, without `@`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// A press on an inline keyboard button.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackQuery {
    /// The query's id, for `answerCallbackQuery`.
    pub id: String,
    /// Who pressed.
    pub from: User,
    /// The button's `callback_data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The message the keyboard was under, when the bot can still see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
}

/// Parses one update, as posted to a webhook. The error names the field at fault.
///
/// ```
/// use ferrule_connectors::telegram::parse_update;
///
/// let update = parse_update(r#"{"update_id": 10, "callback_query": {
///     "id": "4382", "from": {"id": 7, "is_bot": false, "first_name": "Ada"},
///     "data": "approve:42",
///     "message": {"message_id": 5, "date": 1, "chat": {"id": -1001234567890123, "type": "supergroup"}}
/// }}"#)?;
/// let query = update.callback_query.unwrap();
/// assert_eq!(query.data.as_deref(), Some("approve:42"));
/// assert_eq!(query.message.unwrap().chat.id, -1001234567890123);
/// # Ok::<(), ferrule_connectors::telegram::PayloadError>(())
/// ```
pub fn parse_update(json: &str) -> Result<Update, PayloadError> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| PayloadError::new("update", format!("not JSON: {e}")))?;
    update_from_value(&value)
}

/// Reads one update from JSON already parsed, e.g. a [`RawUpdate`]. The error names the field
/// at fault.
pub fn update_from_value(value: &serde_json::Value) -> Result<Update, PayloadError> {
    // serde would read a struct from an array too (`[1]` as `update_id` 1): an update is an
    // object.
    if !value.is_object() {
        return Err(PayloadError::new("update", "must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(path_error)
}

/// A deserialisation error as a [`PayloadError`] naming the field (`callback_query.id`).
fn path_error<E: std::fmt::Display>(err: serde_path_to_error::Error<E>) -> PayloadError {
    let path = err.path().to_string();
    let message = err.inner().to_string();
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_owned());
    let field = match (path.as_str(), missing) {
        (".", Some(name)) => name,
        (".", None) => "update".to_owned(),
        (parent, Some(name)) => format!("{parent}.{name}"),
        (path, None) => path.to_owned(),
    };
    PayloadError::new(field, message)
}

/// One update as `getUpdates` returned it: its id and the whole JSON, so that a field the
/// relay does not type (or a kind of update it does not read) is kept when the update is
/// stored, and one update the relay cannot read does not hide the others.
#[derive(Debug, Clone, PartialEq)]
pub struct RawUpdate {
    /// The update's id.
    pub update_id: i64,
    /// The update as Telegram sent it.
    pub json: serde_json::Value,
}

impl RawUpdate {
    /// The typed view of the update; an error names the field Telegram sent in a shape the
    /// relay does not expect.
    pub fn parse(&self) -> Result<Update, PayloadError> {
        update_from_value(&self.json)
    }
}

/// Reads the `result` of a `getUpdates` answer: a list of updates, each with an integer
/// `update_id`. The error names the element at fault.
pub fn parse_raw_updates(result: serde_json::Value) -> Result<Vec<RawUpdate>, String> {
    let serde_json::Value::Array(items) = result else {
        return Err("`result` is not a list of updates".to_owned());
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, json)| match json["update_id"].as_i64() {
            Some(update_id) => Ok(RawUpdate { update_id, json }),
            None => Err(format!("`[{i}].update_id` is missing or not an integer")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_message_and_ignores_unknown_fields() {
        let update = parse_update(
            r#"{"update_id": 7, "message": {"message_id": 3, "date": 1700000000,
                "chat": {"id": 42, "type": "private", "first_name": "Ada"},
                "from": {"id": 42, "is_bot": false, "first_name": "Ada", "language_code": "en"},
                "text": "/start", "entities": [{"type": "bot_command", "offset": 0, "length": 6}]}}"#,
        )
        .unwrap();
        assert_eq!(update.update_id, 7);
        let message = update.message.unwrap();
        assert_eq!(message.text.as_deref(), Some("/start"));
        assert_eq!(message.chat.kind, "private");
        assert!(update.callback_query.is_none());
        // Kinds the relay does not read still parse.
        let other = parse_update(r#"{"update_id": 8, "edited_message": {"x": 1}}"#).unwrap();
        assert_eq!((other.message, other.callback_query), (None, None));
    }

    #[test]
    fn a_get_updates_result_parses_as_a_list_and_names_the_bad_element() {
        let updates = parse_raw_updates(serde_json::json!([
            {"update_id": 1},
            {"update_id": 2, "message": {"message_id": 1, "chat": {"id": 5, "type": "group"}}},
        ]))
        .unwrap();
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[1].update_id, 2);
        let second = updates[1].parse().unwrap();
        assert_eq!(second.message.unwrap().chat.id, 5);
        let err = parse_raw_updates(serde_json::json!([{"update_id": 1}, {"update_id": "x"}]))
            .unwrap_err();
        assert!(err.starts_with("`[1].update_id`"), "{err}");
        assert!(parse_raw_updates(serde_json::json!({"update_id": 1})).is_err());
    }

    #[test]
    fn errors_name_the_field() {
        let field = |json: &str| parse_update(json).unwrap_err().field().to_owned();
        assert_eq!(field(r#"{"message": null}"#), "update_id");
        assert_eq!(field(r#"{"update_id": "x"}"#), "update_id");
        assert_eq!(
            field(r#"{"update_id": 1, "callback_query": {"from": {"id": 1, "first_name": "a"}}}"#),
            "callback_query.id"
        );
        assert_eq!(field("[]"), "update");
        assert_eq!(field(r#"{"update_id": 1} {}"#), "update");
        let value = serde_json::json!({"update_id": 1, "message": {"message_id": "x"}});
        assert_eq!(
            update_from_value(&value).unwrap_err().field(),
            "message.message_id"
        );
        assert_eq!(
            update_from_value(&serde_json::json!([1, 2]))
                .unwrap_err()
                .field(),
            "update"
        );
    }

    #[test]
    fn raw_updates_keep_every_field_and_need_an_id() {
        let raw = parse_raw_updates(serde_json::json!([
            {"update_id": 3, "edited_message": {"text": "kept"}},
            {"update_id": 4, "callback_query": {"id": 5}},
        ]))
        .unwrap();
        assert_eq!(raw[0].update_id, 3);
        assert_eq!(raw[0].json["edited_message"]["text"], "kept");
        assert!(raw[0].parse().is_ok());
        // Unreadable for the relay, but still an update with an id.
        assert_eq!(raw[1].update_id, 4);
        assert_eq!(raw[1].parse().unwrap_err().field(), "callback_query.id");
        let err = parse_raw_updates(serde_json::json!([{"update_id": 1}, {"x": 1}])).unwrap_err();
        assert!(err.contains("[1].update_id"), "{err}");
        assert!(parse_raw_updates(serde_json::json!({})).is_err());
    }
}
