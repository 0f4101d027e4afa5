//! Telegram message payloads: parsing, validation before sending, and splitting long texts.
//!
//! A payload is the JSON a client submits to the relay:
//!
//! ```json
//! {"chat_id": 42, "text": "hello", "parse_mode": "HTML"}
//! {"method": "sendPhoto", "chat_id": "@channel", "photo": {"url": "https://…/cat.jpg"}}
//! {"method": "sendDocument", "chat_id": -100123, "document": {"base64": "…", "filename": "a.pdf"}}
//! {"chat_id": 42, "text": "Why?", "reply_markup": {"force_reply": true}, "reply_parameters": {"message_id": 7}}
//! {"method": "editMessageText", "chat_id": 42, "message_id": 7, "text": "Approved by @ana"}
//! {"method": "editMessageReplyMarkup", "chat_id": 42, "message_id": 7, "reply_markup": {"inline_keyboard": []}}
//! ```
//!
//! [`validate_payload`] is pure, so the relay can answer 422 at submit time with a message naming
//! the field; it also splits long texts into the ordered parts the relay enqueues.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use reqwest::Url;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::config::{LongTexts, TelegramConfig};
use super::split::{split_text, utf16_len};

/// The longest message text, in UTF-16 code units.
pub const TEXT_LIMIT: usize = 4096;
/// The longest caption, in UTF-16 code units.
pub const CAPTION_LIMIT: usize = 1024;
/// The largest photo upload, in bytes (10 MiB).
pub const PHOTO_BYTES: usize = 10 * 1024 * 1024;
/// The largest document upload, in bytes (50 MiB).
pub const DOCUMENT_BYTES: usize = 50 * 1024 * 1024;
/// The allowed length of a button's `callback_data`, in bytes.
pub const CALLBACK_DATA_BYTES: std::ops::RangeInclusive<usize> = 1..=64;
/// The allowed length of a forced reply's `input_field_placeholder`, in characters.
pub const PLACEHOLDER_CHARS: std::ops::RangeInclusive<usize> = 1..=64;
/// The longest `reply_parameters.quote`, in UTF-16 code units.
pub const QUOTE_LIMIT: usize = 1024;

/// Decodes base64 with or without `=` padding.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub use crate::PayloadError;

/// A Bot API method the connector sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// `sendMessage`: a text.
    SendMessage,
    /// `sendPhoto`: a photo with an optional caption.
    SendPhoto,
    /// `sendDocument`: a file with an optional caption.
    SendDocument,
    /// `editMessageText`: new text (and inline keyboard) for a message the bot sent.
    EditMessageText,
    /// `editMessageReplyMarkup`: a new inline keyboard, or none, for a message the bot sent.
    EditMessageReplyMarkup,
}

impl Method {
    /// Every method, in the order the docs list them.
    const ALL: [Method; 5] = [
        Method::SendMessage,
        Method::SendPhoto,
        Method::SendDocument,
        Method::EditMessageText,
        Method::EditMessageReplyMarkup,
    ];

    /// The method's name in the Bot API, e.g. `sendMessage`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::SendMessage => "sendMessage",
            Method::SendPhoto => "sendPhoto",
            Method::SendDocument => "sendDocument",
            Method::EditMessageText => "editMessageText",
            Method::EditMessageReplyMarkup => "editMessageReplyMarkup",
        }
    }

    /// Whether it changes a message already sent rather than sending one.
    pub fn is_edit(self) -> bool {
        matches!(
            self,
            Method::EditMessageText | Method::EditMessageReplyMarkup
        )
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A chat: a numeric id (negative for groups and channels) or a channel's `@username`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChatId {
    /// A numeric chat id; supergroup and channel ids exceed 32 bits.
    Id(i64),
    /// A public channel or supergroup, `@username`.
    Username(String),
}

/// Whether a chat is one person or many, for the rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChatKind {
    /// A private chat with one user (a positive id).
    Private,
    /// A group, supergroup or channel (a negative id or an `@username`).
    Group,
}

/// Whether `chat` is a private chat or a group/channel: negative ids and `@username`s are
/// groups or channels.
///
/// ```
/// use ferrule_connectors::telegram::{ChatId, ChatKind, chat_kind};
///
/// assert_eq!(chat_kind(&ChatId::Id(42)), ChatKind::Private);
/// assert_eq!(chat_kind(&ChatId::Id(-1001234567890)), ChatKind::Group);
/// assert_eq!(chat_kind(&"@news_room".parse().unwrap()), ChatKind::Group);
/// ```
pub fn chat_kind(chat: &ChatId) -> ChatKind {
    match chat {
        ChatId::Id(id) if *id > 0 => ChatKind::Private,
        ChatId::Id(_) | ChatId::Username(_) => ChatKind::Group,
    }
}

impl ChatId {
    /// Whether this is a private chat or a group/channel; see [`chat_kind`].
    pub fn kind(&self) -> ChatKind {
        chat_kind(self)
    }
}

impl fmt::Display for ChatId {
    /// The id as Telegram and the relay's ordering key write it: `-100123` or `@news`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatId::Id(id) => write!(f, "{id}"),
            ChatId::Username(name) => f.write_str(name),
        }
    }
}

impl FromStr for ChatId {
    type Err = PayloadError;

    /// Parses `-100123` or `@username` (5 to 32 letters, digits or `_`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(id) = s.parse::<i64>() {
            return ChatId::try_from(id);
        }
        let name = s
            .strip_prefix('@')
            .ok_or_else(|| PayloadError::new("chat_id", "must be a number or an `@username`"))?;
        if !(5..=32).contains(&name.len())
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(PayloadError::new(
                "chat_id",
                "a username is `@` and 5 to 32 letters, digits or `_`",
            ));
        }
        Ok(ChatId::Username(s.to_owned()))
    }
}

impl TryFrom<i64> for ChatId {
    type Error = PayloadError;

    fn try_from(id: i64) -> Result<Self, Self::Error> {
        if id == 0 {
            return Err(PayloadError::new("chat_id", "must not be 0"));
        }
        Ok(ChatId::Id(id))
    }
}

impl Serialize for ChatId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ChatId::Id(id) => serializer.serialize_i64(*id),
            ChatId::Username(name) => serializer.serialize_str(name),
        }
    }
}

impl<'de> Deserialize<'de> for ChatId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a number or an `@username`")]
        enum Raw {
            Id(i64),
            Name(String),
        }
        let chat = match Raw::deserialize(deserializer)? {
            Raw::Id(id) => ChatId::try_from(id),
            Raw::Name(name) => name.parse(),
        };
        chat.map_err(|e| serde::de::Error::custom(e.reason()))
    }
}

/// How Telegram parses entities in a text or caption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParseMode {
    /// `MarkdownV2`.
    MarkdownV2,
    /// `HTML`.
    #[serde(rename = "HTML")]
    Html,
    /// `Markdown`, the legacy mode.
    Markdown,
}

/// An inline keyboard under a message; `{"inline_keyboard": []}` has no buttons, which removes
/// a message's keyboard in an edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineKeyboardMarkup {
    /// Rows of buttons.
    pub inline_keyboard: Vec<Vec<InlineKeyboardButton>>,
}

/// The `reply_markup` of a sent message: an inline keyboard, or a request that the user reply.
///
/// As JSON it is the Bot API's object: `{"inline_keyboard": […]}` or
/// `{"force_reply": true, "input_field_placeholder"?, "selective"?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawReplyMarkup", into = "RawReplyMarkup")]
pub enum ReplyMarkup {
    /// Buttons under the message.
    InlineKeyboard(InlineKeyboardMarkup),
    /// The user's client opens a reply to the message, as if they had chosen "Reply"; their
    /// answer arrives as an update whose `reply_to_message` is this message.
    ForceReply(ForceReply),
}

/// The options of a [`ReplyMarkup::ForceReply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForceReply {
    /// Shown in the input field while the user replies, 1 to 64 characters.
    pub input_field_placeholder: Option<String>,
    /// Ask only the users `@mentioned` in the text and the sender of the message replied to.
    pub selective: Option<bool>,
}

/// [`ReplyMarkup`] as the Bot API writes it: the fields of both kinds, told apart after
/// parsing, so a wrong field is still named by its path.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplyMarkup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inline_keyboard: Option<Vec<Vec<InlineKeyboardButton>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    force_reply: Option<True>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    input_field_placeholder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    selective: Option<bool>,
}

impl TryFrom<RawReplyMarkup> for ReplyMarkup {
    type Error = &'static str;

    fn try_from(raw: RawReplyMarkup) -> Result<Self, Self::Error> {
        let forced = raw.input_field_placeholder.is_some() || raw.selective.is_some();
        match (raw.inline_keyboard, raw.force_reply) {
            (Some(_), Some(_)) => Err("give either `inline_keyboard` or `force_reply`, not both"),
            (Some(_), None) if forced => Err(
                "`input_field_placeholder` and `selective` go with `force_reply`, not with \
                 `inline_keyboard`",
            ),
            (Some(inline_keyboard), None) => {
                Ok(ReplyMarkup::InlineKeyboard(InlineKeyboardMarkup {
                    inline_keyboard,
                }))
            }
            (None, Some(True)) => Ok(ReplyMarkup::ForceReply(ForceReply {
                input_field_placeholder: raw.input_field_placeholder,
                selective: raw.selective,
            })),
            (None, None) => Err("give `inline_keyboard` (buttons) or `\"force_reply\": true`"),
        }
    }
}

impl From<ReplyMarkup> for RawReplyMarkup {
    fn from(markup: ReplyMarkup) -> Self {
        match markup {
            ReplyMarkup::InlineKeyboard(keyboard) => RawReplyMarkup {
                inline_keyboard: Some(keyboard.inline_keyboard),
                force_reply: None,
                input_field_placeholder: None,
                selective: None,
            },
            ReplyMarkup::ForceReply(force) => RawReplyMarkup {
                inline_keyboard: None,
                force_reply: Some(True),
                input_field_placeholder: force.input_field_placeholder,
                selective: force.selective,
            },
        }
    }
}

impl From<InlineKeyboardMarkup> for ReplyMarkup {
    fn from(keyboard: InlineKeyboardMarkup) -> Self {
        ReplyMarkup::InlineKeyboard(keyboard)
    }
}

/// The JSON `true` and nothing else: `force_reply` has no other value.
#[derive(Debug, Clone, Copy)]
struct True;

impl Serialize for True {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bool(true)
    }
}

impl<'de> Deserialize<'de> for True {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if bool::deserialize(deserializer)? {
            Ok(True)
        } else {
            Err(serde::de::Error::custom(
                "must be `true` (leave it out otherwise)",
            ))
        }
    }
}

/// What a sent message replies to (the Bot API's `reply_parameters`), instead of
/// `reply_to_message_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyParameters {
    /// The message replied to.
    pub message_id: i64,
    /// Its chat, when it is not the chat sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<ChatId>,
    /// Send even if the message replied to is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_sending_without_reply: Option<bool>,
    /// The part of the message quoted, at most [`QUOTE_LIMIT`] UTF-16 code units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<String>,
    /// How to parse entities in the quote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote_parse_mode: Option<ParseMode>,
    /// Where the quote starts in the message, in UTF-16 code units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote_position: Option<i64>,
}

/// A button of an inline keyboard: a link or a callback. Exactly one of `url` and
/// `callback_data` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineKeyboardButton {
    /// The label.
    pub text: String,
    /// A link to open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Data sent back in a callback query when pressed (1 to 64 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_data: Option<String>,
}

/// A file to send: a URL Telegram fetches itself, or bytes uploaded with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputFile {
    /// `{"url": "https://…"}`: Telegram downloads it.
    Url(String),
    /// `{"base64": "…", "filename": "report.pdf"}`: uploaded as multipart form data.
    Upload {
        /// The file's bytes, base64-encoded as submitted.
        base64: String,
        /// The name the file arrives with.
        filename: String,
    },
}

impl InputFile {
    /// The decoded bytes of an upload; `None` for a URL or undecodable base64.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            InputFile::Url(_) => None,
            InputFile::Upload { base64, .. } => LENIENT.decode(base64).ok(),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInputFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filename: Option<String>,
}

impl Serialize for InputFile {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = match self {
            InputFile::Url(url) => RawInputFile {
                url: Some(url.clone()),
                base64: None,
                filename: None,
            },
            InputFile::Upload { base64, filename } => RawInputFile {
                url: None,
                base64: Some(base64.clone()),
                filename: Some(filename.clone()),
            },
        };
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for InputFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        match RawInputFile::deserialize(deserializer)? {
            RawInputFile {
                url: Some(url),
                base64: None,
                filename: None,
            } => Ok(InputFile::Url(url)),
            RawInputFile {
                url: None,
                base64: Some(base64),
                filename: Some(filename),
            } => Ok(InputFile::Upload { base64, filename }),
            RawInputFile {
                url: None,
                base64: Some(_),
                filename: None,
            } => Err(D::Error::missing_field("filename")),
            _ => Err(D::Error::custom(
                "give either `url`, or `base64` with `filename`",
            )),
        }
    }
}

/// A `sendMessage` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// The chat to send to.
    pub chat_id: ChatId,
    /// The text, at most [`TEXT_LIMIT`] UTF-16 code units.
    pub text: String,
    /// How to parse entities in the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_mode: Option<ParseMode>,
    /// An inline keyboard, or a forced reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_markup: Option<ReplyMarkup>,
    /// Send silently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_notification: Option<bool>,
    /// The message this one replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_message_id: Option<i64>,
    /// The message this one replies to, with options; instead of `reply_to_message_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_parameters: Option<ReplyParameters>,
}

/// A `sendPhoto` or `sendDocument` payload; the file goes in the field named after the method
/// (`photo` or `document`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFile {
    /// The chat to send to.
    pub chat_id: ChatId,
    /// The file.
    pub file: InputFile,
    /// A caption, at most [`CAPTION_LIMIT`] UTF-16 code units.
    pub caption: Option<String>,
    /// How to parse entities in the caption.
    pub parse_mode: Option<ParseMode>,
    /// An inline keyboard, or a forced reply.
    pub reply_markup: Option<ReplyMarkup>,
    /// Send silently.
    pub disable_notification: Option<bool>,
    /// The message this one replies to.
    pub reply_to_message_id: Option<i64>,
    /// The message this one replies to, with options; instead of `reply_to_message_id`.
    pub reply_parameters: Option<ReplyParameters>,
}

/// An `editMessageText` payload: new text for a message the bot sent, never split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditMessageText {
    /// The message's chat.
    pub chat_id: ChatId,
    /// The message, as the send's answer gave it.
    pub message_id: i64,
    /// The new text, at most [`TEXT_LIMIT`] UTF-16 code units.
    pub text: String,
    /// How to parse entities in the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_mode: Option<ParseMode>,
    /// The keyboard the message shows afterwards; without one, it shows none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_markup: Option<InlineKeyboardMarkup>,
}

/// An `editMessageReplyMarkup` payload: new buttons for a message the bot sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditMessageReplyMarkup {
    /// The message's chat.
    pub chat_id: ChatId,
    /// The message, as the send's answer gave it.
    pub message_id: i64,
    /// The new keyboard; `{"inline_keyboard": []}` (or none) removes the buttons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_markup: Option<InlineKeyboardMarkup>,
}

macro_rules! file_fields {
    ($name:ident, $field:ident) => {
        #[derive(Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            chat_id: ChatId,
            $field: InputFile,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            caption: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            parse_mode: Option<ParseMode>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            reply_markup: Option<ReplyMarkup>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            disable_notification: Option<bool>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            reply_to_message_id: Option<i64>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            reply_parameters: Option<ReplyParameters>,
        }

        impl From<$name> for SendFile {
            fn from(f: $name) -> SendFile {
                SendFile {
                    chat_id: f.chat_id,
                    file: f.$field,
                    caption: f.caption,
                    parse_mode: f.parse_mode,
                    reply_markup: f.reply_markup,
                    disable_notification: f.disable_notification,
                    reply_to_message_id: f.reply_to_message_id,
                    reply_parameters: f.reply_parameters,
                }
            }
        }

        impl From<SendFile> for $name {
            fn from(f: SendFile) -> $name {
                $name {
                    chat_id: f.chat_id,
                    $field: f.file,
                    caption: f.caption,
                    parse_mode: f.parse_mode,
                    reply_markup: f.reply_markup,
                    disable_notification: f.disable_notification,
                    reply_to_message_id: f.reply_to_message_id,
                    reply_parameters: f.reply_parameters,
                }
            }
        }
    };
}

file_fields!(PhotoFields, photo);
file_fields!(DocumentFields, document);

/// One Bot API call's worth of payload.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TelegramPayload {
    /// `sendMessage`.
    Message(SendMessage),
    /// `sendPhoto`.
    Photo(SendFile),
    /// `sendDocument`.
    Document(SendFile),
    /// `editMessageText`.
    EditText(EditMessageText),
    /// `editMessageReplyMarkup`.
    EditMarkup(EditMessageReplyMarkup),
}

impl TelegramPayload {
    /// The Bot API method this payload calls.
    pub fn method(&self) -> Method {
        match self {
            TelegramPayload::Message(_) => Method::SendMessage,
            TelegramPayload::Photo(_) => Method::SendPhoto,
            TelegramPayload::Document(_) => Method::SendDocument,
            TelegramPayload::EditText(_) => Method::EditMessageText,
            TelegramPayload::EditMarkup(_) => Method::EditMessageReplyMarkup,
        }
    }

    /// The chat it goes to.
    pub fn chat_id(&self) -> &ChatId {
        match self {
            TelegramPayload::Message(m) => &m.chat_id,
            TelegramPayload::Photo(f) | TelegramPayload::Document(f) => &f.chat_id,
            TelegramPayload::EditText(e) => &e.chat_id,
            TelegramPayload::EditMarkup(e) => &e.chat_id,
        }
    }

    /// The message an edit changes; `None` for a send.
    pub fn message_id(&self) -> Option<i64> {
        match self {
            TelegramPayload::EditText(e) => Some(e.message_id),
            TelegramPayload::EditMarkup(e) => Some(e.message_id),
            _ => None,
        }
    }

    /// Sends it to `chat` instead, e.g. after a supergroup migration.
    pub fn set_chat_id(&mut self, chat: ChatId) {
        match self {
            TelegramPayload::Message(m) => m.chat_id = chat,
            TelegramPayload::Photo(f) | TelegramPayload::Document(f) => f.chat_id = chat,
            TelegramPayload::EditText(e) => e.chat_id = chat,
            TelegramPayload::EditMarkup(e) => e.chat_id = chat,
        }
    }

    /// The file to upload with the request, when there is one (base64 only: URLs go as JSON).
    pub(super) fn upload(&self) -> Option<(&'static str, &InputFile)> {
        match self {
            TelegramPayload::Photo(f) if matches!(f.file, InputFile::Upload { .. }) => {
                Some(("photo", &f.file))
            }
            TelegramPayload::Document(f) if matches!(f.file, InputFile::Upload { .. }) => {
                Some(("document", &f.file))
            }
            _ => None,
        }
    }

    /// The Bot API parameters, as a JSON object without `method`. For an upload, the file's
    /// field holds the submitted `{"base64", "filename"}` object; the connector replaces it with
    /// a multipart part.
    pub fn to_params(&self) -> Map<String, Value> {
        let value = match self {
            TelegramPayload::Message(m) => serde_json::to_value(m),
            TelegramPayload::Photo(f) => serde_json::to_value(PhotoFields::from(f.clone())),
            TelegramPayload::Document(f) => serde_json::to_value(DocumentFields::from(f.clone())),
            TelegramPayload::EditText(e) => serde_json::to_value(e),
            TelegramPayload::EditMarkup(e) => serde_json::to_value(e),
        };
        match value {
            Ok(Value::Object(map)) => map,
            // Plain structs of strings, numbers and options always serialise to objects.
            _ => Map::new(),
        }
    }

    /// The payload as JSON the relay can store and [`validate_payload`] accepts again: the
    /// parameters plus `method` (omitted for `sendMessage`, the default).
    pub fn to_json(&self) -> String {
        let mut params = self.to_params();
        if self.method() != Method::SendMessage {
            params.insert("method".into(), Value::from(self.method().as_str()));
        }
        Value::Object(params).to_string()
    }
}

/// A payload that passed validation: one part, or several when a long text was split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    parts: Vec<TelegramPayload>,
}

impl Validated {
    /// The parts, in the order they must be delivered. Always at least one.
    pub fn parts(&self) -> &[TelegramPayload] {
        &self.parts
    }

    /// The parts, by value.
    pub fn into_parts(self) -> Vec<TelegramPayload> {
        self.parts
    }

    /// Whether a long text was split into more than one part.
    pub fn is_split(&self) -> bool {
        self.parts.len() > 1
    }

    /// The chat every part goes to.
    pub fn chat_id(&self) -> &ChatId {
        // `parts` is never empty: validation builds at least the original payload.
        self.parts[0].chat_id()
    }

    /// The key that keeps this chat's messages in order: the chat id as written.
    pub fn ordering_key(&self) -> String {
        self.chat_id().to_string()
    }

    /// Each part as a JSON payload to enqueue, in order.
    pub fn payloads(&self) -> Vec<String> {
        self.parts.iter().map(TelegramPayload::to_json).collect()
    }
}

/// Parses and checks a payload against `config`, for the relay's submit path.
///
/// Checks every field Telegram would refuse before anything is sent: the `method`
/// (`sendMessage` when absent, `sendPhoto`, `sendDocument`, `editMessageText`,
/// `editMessageReplyMarkup`), unknown fields, the chat id, a positive `message_id` (edits,
/// replies), an empty text, `callback_data` of 1 to 64 bytes (and exactly one of `url` /
/// `callback_data` per button), a forced reply's placeholder of 1 to 64 characters, file URLs,
/// base64 and sizes (photo [`PHOTO_BYTES`], document [`DOCUMENT_BYTES`], after decoding).
/// Texts over [`TEXT_LIMIT`] and captions over [`CAPTION_LIMIT`] UTF-16 code units are split
/// with [`split_text`] when `config.long_texts` is `split` — a caption's overflow follows the
/// file as text messages, and the `reply_markup` goes with the last text part (or stays on the
/// file) — and refused when it is `refuse`. An edit's text is never split: over the limit it is
/// refused. The error names the field.
///
/// ```
/// use ferrule_connectors::telegram::{BotToken, TelegramConfig, validate_payload};
///
/// let config = TelegramConfig::new("123:abc".parse()?);
/// let ok = validate_payload(&config, r#"{"chat_id": 42, "text": "hi"}"#)?;
/// assert_eq!(ok.parts().len(), 1);
/// assert_eq!(ok.ordering_key(), "42");
///
/// let err = validate_payload(&config, r#"{"chat_id": 42, "text": "hi", "colour": 1}"#)
///     .unwrap_err();
/// assert_eq!(err.field(), "colour");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn validate_payload(config: &TelegramConfig, json: &str) -> Result<Validated, PayloadError> {
    validate_with(config.long_texts, json)
}

/// [`validate_payload`] with only the setting it needs.
pub(super) fn validate_with(long_texts: LongTexts, json: &str) -> Result<Validated, PayloadError> {
    let payload = parse_payload(json)?;
    let parts = match payload {
        TelegramPayload::Message(message) => check_message(message, long_texts)?,
        TelegramPayload::Photo(file) => check_file(file, Method::SendPhoto, long_texts)?,
        TelegramPayload::Document(file) => check_file(file, Method::SendDocument, long_texts)?,
        TelegramPayload::EditText(edit) => vec![check_edit_text(edit)?],
        TelegramPayload::EditMarkup(edit) => vec![check_edit_markup(edit)?],
    };
    Ok(Validated { parts })
}

/// Parses `json` into a payload, checking only its shape.
fn parse_payload(json: &str) -> Result<TelegramPayload, PayloadError> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| PayloadError::new("payload", format!("not valid JSON: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(PayloadError::new("payload", "must be a JSON object"));
    };
    let method = match map.remove("method") {
        None => Method::SendMessage,
        Some(Value::String(name)) => match Method::ALL.into_iter().find(|m| m.as_str() == name) {
            Some(method) => method,
            None => {
                let known: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
                return Err(PayloadError::new(
                    "method",
                    format!("`{name}` is not supported; use {}", known.join(", ")),
                ));
            }
        },
        Some(_) => return Err(PayloadError::new("method", "must be a string")),
    };
    let object = Value::Object(map);
    Ok(match method {
        Method::SendMessage => TelegramPayload::Message(from_value(object)?),
        Method::SendPhoto => TelegramPayload::Photo(from_value::<PhotoFields>(object)?.into()),
        Method::SendDocument => {
            TelegramPayload::Document(from_value::<DocumentFields>(object)?.into())
        }
        Method::EditMessageText => TelegramPayload::EditText(from_value(object)?),
        Method::EditMessageReplyMarkup => TelegramPayload::EditMarkup(from_value(object)?),
    })
}

/// Deserialises `value`, naming the field at fault on error.
fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, PayloadError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let message = err.inner().to_string();
        // serde reports missing and unknown fields on the containing object; name the field.
        let named = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|prefix| message.strip_prefix(prefix))
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name.to_owned());
        let field = match (path.as_str(), named) {
            (".", Some(name)) => name,
            (".", None) => "payload".to_owned(),
            (parent, Some(name)) if !parent.ends_with(&name) => format!("{parent}.{name}"),
            (path, _) => path.to_owned(),
        };
        PayloadError::new(field, message)
    })
}

fn check_message(
    message: SendMessage,
    long_texts: LongTexts,
) -> Result<Vec<TelegramPayload>, PayloadError> {
    if message.text.trim().is_empty() {
        return Err(PayloadError::new("text", "must not be empty"));
    }
    check_reply(
        message.reply_to_message_id,
        message.reply_parameters.as_ref(),
    )?;
    check_markup(message.reply_markup.as_ref())?;
    let texts = fit_text(&message.text, "text", TEXT_LIMIT, long_texts)?;
    let last = texts.len() - 1;
    Ok(texts
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            TelegramPayload::Message(SendMessage {
                chat_id: message.chat_id.clone(),
                text,
                parse_mode: message.parse_mode,
                // Buttons under the last part; the reply on the first.
                reply_markup: if i == last {
                    message.reply_markup.clone()
                } else {
                    None
                },
                disable_notification: message.disable_notification,
                reply_to_message_id: if i == 0 {
                    message.reply_to_message_id
                } else {
                    None
                },
                reply_parameters: if i == 0 {
                    message.reply_parameters.clone()
                } else {
                    None
                },
            })
        })
        .collect())
}

fn check_file(
    mut file: SendFile,
    method: Method,
    long_texts: LongTexts,
) -> Result<Vec<TelegramPayload>, PayloadError> {
    let (field, max_bytes) = match method {
        Method::SendPhoto => ("photo", PHOTO_BYTES),
        _ => ("document", DOCUMENT_BYTES),
    };
    check_reply(file.reply_to_message_id, file.reply_parameters.as_ref())?;
    check_markup(file.reply_markup.as_ref())?;
    match &file.file {
        InputFile::Url(url) => {
            let parsed = Url::parse(url)
                .map_err(|e| PayloadError::new(format!("{field}.url"), format!("{e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(PayloadError::new(
                    format!("{field}.url"),
                    "must be an http or https URL",
                ));
            }
        }
        InputFile::Upload { base64, filename } => {
            check_filename(filename)
                .map_err(|r| PayloadError::new(format!("{field}.filename"), r))?;
            // Refuse a huge upload from its encoded length, before decoding it.
            let estimate = base64.len() / 4 * 3;
            if estimate > max_bytes + 3 {
                return Err(too_big(field, estimate, max_bytes));
            }
            let bytes = LENIENT.decode(base64).map_err(|e| {
                PayloadError::new(format!("{field}.base64"), format!("not valid base64: {e}"))
            })?;
            if bytes.len() > max_bytes {
                return Err(too_big(field, bytes.len(), max_bytes));
            }
            if bytes.is_empty() {
                return Err(PayloadError::new(
                    format!("{field}.base64"),
                    "the file is empty",
                ));
            }
        }
    }
    let mut parts = Vec::new();
    let mut rest = Vec::new();
    if let Some(caption) = file.caption.take() {
        if utf16_len(&caption) <= CAPTION_LIMIT {
            file.caption = Some(caption);
        } else {
            let mut texts = fit_text(&caption, "caption", CAPTION_LIMIT, long_texts)?.into_iter();
            file.caption = texts.next();
            // The overflow, re-split to the larger text limit.
            let overflow = caption_overflow(&caption, file.caption.as_deref().unwrap_or(""));
            rest = split_text(overflow, TEXT_LIMIT);
        }
    }
    let chat = file.chat_id.clone();
    let (parse_mode, silent) = (file.parse_mode, file.disable_notification);
    parts.push(match method {
        Method::SendPhoto => TelegramPayload::Photo(file),
        _ => TelegramPayload::Document(file),
    });
    parts.extend(rest.into_iter().map(|text| {
        TelegramPayload::Message(SendMessage {
            chat_id: chat.clone(),
            text,
            parse_mode,
            reply_markup: None,
            disable_notification: silent,
            reply_to_message_id: None,
            reply_parameters: None,
        })
    }));
    Ok(parts)
}

/// The part of `caption` after its first split part `first`.
fn caption_overflow<'a>(caption: &'a str, first: &str) -> &'a str {
    // The first part is a slice of the caption; find it rather than assume it is a prefix.
    let end = caption.find(first).map_or(0, |start| start + first.len());
    caption[end..].trim_start_matches(char::is_whitespace)
}

fn too_big(field: &str, bytes: usize, max: usize) -> PayloadError {
    PayloadError::new(
        format!("{field}.base64"),
        format!(
            "the file is {bytes} bytes; Telegram accepts at most {max} bytes ({} MiB) for a {field}",
            max / (1024 * 1024)
        ),
    )
}

fn check_filename(name: &str) -> Result<(), &'static str> {
    if name.trim().is_empty() {
        return Err("must not be empty");
    }
    if name.len() > 255 {
        return Err("must be at most 255 bytes");
    }
    // Quotes would need escaping in the multipart header, which servers undo inconsistently.
    if name
        .chars()
        .any(|c| c.is_control() || matches!(c, '/' | '\\' | '"'))
    {
        return Err("must not contain control characters, quotes or path separators");
    }
    Ok(())
}

/// The text as parts within `limit`: itself, its split, or an error under `refuse`.
fn fit_text(
    text: &str,
    field: &str,
    limit: usize,
    long_texts: LongTexts,
) -> Result<Vec<String>, PayloadError> {
    let len = utf16_len(text);
    if len <= limit {
        return Ok(vec![text.to_owned()]);
    }
    match long_texts {
        LongTexts::Split => Ok(split_text(text, limit)),
        LongTexts::Refuse => Err(PayloadError::new(
            field.to_owned(),
            format!(
                "is {len} UTF-16 code units; Telegram accepts at most {limit} \
                 (this destination refuses long texts instead of splitting them)"
            ),
        )),
    }
}

fn check_edit_text(edit: EditMessageText) -> Result<TelegramPayload, PayloadError> {
    check_message_id("message_id", edit.message_id)?;
    if edit.text.trim().is_empty() {
        return Err(PayloadError::new("text", "must not be empty"));
    }
    let len = utf16_len(&edit.text);
    if len > TEXT_LIMIT {
        return Err(PayloadError::new(
            "text",
            format!(
                "is {len} UTF-16 code units; Telegram accepts at most {TEXT_LIMIT} (an edit \
                 replaces one message, so its text is never split)"
            ),
        ));
    }
    if let Some(keyboard) = &edit.reply_markup {
        check_keyboard(keyboard)?;
    }
    Ok(TelegramPayload::EditText(edit))
}

fn check_edit_markup(edit: EditMessageReplyMarkup) -> Result<TelegramPayload, PayloadError> {
    check_message_id("message_id", edit.message_id)?;
    if let Some(keyboard) = &edit.reply_markup {
        check_keyboard(keyboard)?;
    }
    Ok(TelegramPayload::EditMarkup(edit))
}

fn check_message_id(field: &'static str, id: i64) -> Result<(), PayloadError> {
    if id <= 0 {
        return Err(PayloadError::new(field, "must be a positive message id"));
    }
    Ok(())
}

/// What a send replies to: one way of saying it, with a positive message id.
fn check_reply(
    reply_to: Option<i64>,
    parameters: Option<&ReplyParameters>,
) -> Result<(), PayloadError> {
    if let Some(id) = reply_to {
        check_message_id("reply_to_message_id", id)?;
    }
    let Some(parameters) = parameters else {
        return Ok(());
    };
    if reply_to.is_some() {
        return Err(PayloadError::new(
            "reply_parameters",
            "give either `reply_to_message_id` or `reply_parameters`, not both",
        ));
    }
    check_message_id("reply_parameters.message_id", parameters.message_id)?;
    if let Some(quote) = &parameters.quote {
        let len = utf16_len(quote);
        if quote.trim().is_empty() || len > QUOTE_LIMIT {
            return Err(PayloadError::new(
                "reply_parameters.quote",
                format!("is {len} UTF-16 code units; Telegram accepts 1 to {QUOTE_LIMIT}"),
            ));
        }
    }
    if parameters.quote_position.is_some_and(|at| at < 0) {
        return Err(PayloadError::new(
            "reply_parameters.quote_position",
            "must not be negative",
        ));
    }
    Ok(())
}

fn check_markup(markup: Option<&ReplyMarkup>) -> Result<(), PayloadError> {
    match markup {
        None => Ok(()),
        Some(ReplyMarkup::InlineKeyboard(keyboard)) => check_keyboard(keyboard),
        Some(ReplyMarkup::ForceReply(force)) => {
            let Some(placeholder) = &force.input_field_placeholder else {
                return Ok(());
            };
            let chars = placeholder.chars().count();
            if !PLACEHOLDER_CHARS.contains(&chars) {
                return Err(PayloadError::new(
                    "reply_markup.input_field_placeholder",
                    format!("is {chars} characters; Telegram accepts 1 to 64"),
                ));
            }
            Ok(())
        }
    }
}

fn check_keyboard(markup: &InlineKeyboardMarkup) -> Result<(), PayloadError> {
    for (r, row) in markup.inline_keyboard.iter().enumerate() {
        if row.is_empty() {
            return Err(PayloadError::new(
                format!("reply_markup.inline_keyboard[{r}]"),
                "a row must have at least one button",
            ));
        }
        for (b, button) in row.iter().enumerate() {
            let at = |name: &str| format!("reply_markup.inline_keyboard[{r}][{b}].{name}");
            if button.text.trim().is_empty() {
                return Err(PayloadError::new(at("text"), "must not be empty"));
            }
            match (&button.url, &button.callback_data) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(PayloadError::new(
                        at("callback_data"),
                        "a button needs exactly one of `url` and `callback_data`",
                    ));
                }
                (Some(url), None) => {
                    if url.trim().is_empty() {
                        return Err(PayloadError::new(at("url"), "must not be empty"));
                    }
                }
                (None, Some(data)) => {
                    if !CALLBACK_DATA_BYTES.contains(&data.len()) {
                        return Err(PayloadError::new(
                            at("callback_data"),
                            format!("is {} bytes; Telegram accepts 1 to 64", data.len()),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Rewrites the chat id of a stored payload, for [`Signal::MigrateChat`](crate::Signal): the
/// relay stores the result and retries with it.
///
/// ```
/// use ferrule_connectors::telegram::rewrite_chat_id;
///
/// let moved = rewrite_chat_id(r#"{"chat_id": -4567, "text": "hi"}"#, -1001234567890123)?;
/// assert_eq!(moved, r#"{"chat_id":-1001234567890123,"text":"hi"}"#);
/// # Ok::<(), ferrule_connectors::telegram::PayloadError>(())
/// ```
pub fn rewrite_chat_id(json: &str, to: i64) -> Result<String, PayloadError> {
    let mut value: Value = serde_json::from_str(json)
        .map_err(|e| PayloadError::new("payload", format!("not valid JSON: {e}")))?;
    let Some(map) = value.as_object_mut() else {
        return Err(PayloadError::new("payload", "must be a JSON object"));
    };
    let Some(chat) = map.get_mut("chat_id") else {
        return Err(PayloadError::new("chat_id", "missing"));
    };
    ChatId::try_from(to)?;
    *chat = Value::from(to);
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(json: &str) -> Result<Validated, PayloadError> {
        validate_with(LongTexts::Split, json)
    }

    fn field_of(json: &str) -> String {
        validate(json).unwrap_err().field().to_owned()
    }

    fn as_json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn parses_each_method() {
        let v = validate(
            r#"{"chat_id": -1001234567890123, "text": "hi", "parse_mode": "HTML",
                "disable_notification": true, "reply_to_message_id": 7,
                "reply_markup": {"inline_keyboard": [[{"text": "ok", "callback_data": "yes"}]]}}"#,
        )
        .unwrap();
        let TelegramPayload::Message(m) = &v.parts()[0] else {
            panic!("not a message")
        };
        assert_eq!(m.chat_id, ChatId::Id(-1_001_234_567_890_123));
        assert_eq!(m.parse_mode, Some(ParseMode::Html));
        assert_eq!(v.chat_id().kind(), ChatKind::Group);

        let v = validate(
            r#"{"method": "sendPhoto", "chat_id": "@news_room", "photo": {"url": "https://x.test/a.jpg"}, "caption": "c"}"#,
        )
        .unwrap();
        assert_eq!(v.parts()[0].method(), Method::SendPhoto);
        assert_eq!(v.ordering_key(), "@news_room");

        let v = validate(
            r#"{"method": "sendDocument", "chat_id": "42", "document": {"base64": "aGVsbG8=", "filename": "a.txt"}}"#,
        )
        .unwrap();
        let TelegramPayload::Document(f) = &v.parts()[0] else {
            panic!("not a document")
        };
        assert_eq!(f.chat_id, ChatId::Id(42));
        assert_eq!(f.file.bytes().as_deref(), Some(&b"hello"[..]));
    }

    #[test]
    fn round_trips_through_json() {
        let json = r#"{"method":"sendDocument","chat_id":-5,"document":{"base64":"aGk","filename":"a.txt"},"caption":"c"}"#;
        let v = validate(json).unwrap();
        let again = validate(&v.payloads()[0]).unwrap();
        assert_eq!(v, again);
        let text = validate(r#"{"chat_id": 1, "text": "x"}"#).unwrap();
        assert_eq!(text.payloads(), [r#"{"chat_id":1,"text":"x"}"#]);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of("[1]"), "payload");
        assert_eq!(field_of("{"), "payload");
        assert_eq!(field_of(r#"{"text": "hi"}"#), "chat_id");
        assert_eq!(field_of(r#"{"chat_id": 1}"#), "text");
        assert_eq!(field_of(r#"{"chat_id": 1, "text": " "}"#), "text");
        assert_eq!(field_of(r#"{"chat_id": 0, "text": "a"}"#), "chat_id");
        assert_eq!(field_of(r#"{"chat_id": "news", "text": "a"}"#), "chat_id");
        assert_eq!(field_of(r#"{"chat_id": true, "text": "a"}"#), "chat_id");
        assert_eq!(
            field_of(r#"{"chat_id": 1, "text": "a", "parse_mode": "bold"}"#),
            "parse_mode"
        );
        assert_eq!(
            field_of(r#"{"method": "sendVideo", "chat_id": 1}"#),
            "method"
        );
        assert_eq!(field_of(r#"{"method": 3, "chat_id": 1}"#), "method");
        assert_eq!(
            field_of(
                r#"{"method": "sendPhoto", "chat_id": 1, "document": {"url": "https://a.test"}}"#
            ),
            "document"
        );
        assert_eq!(
            field_of(r#"{"method": "sendPhoto", "chat_id": 1, "photo": {"base64": "aGk="}}"#),
            "photo.filename"
        );
        assert_eq!(
            field_of(
                r#"{"method": "sendPhoto", "chat_id": 1, "photo": {"url": "ftp://a.test/x"}}"#
            ),
            "photo.url"
        );
        assert_eq!(
            field_of(
                r#"{"method": "sendPhoto", "chat_id": 1, "photo": {"base64": "!!", "filename": "a"}}"#
            ),
            "photo.base64"
        );
        assert_eq!(
            field_of(
                r#"{"method": "sendPhoto", "chat_id": 1, "photo": {"base64": "aGk=", "filename": "../a"}}"#
            ),
            "photo.filename"
        );
        assert_eq!(
            field_of(r#"{"chat_id": 1, "text": "a", "reply_to_message_id": -1}"#),
            "reply_to_message_id"
        );
        assert_eq!(
            field_of(
                r#"{"chat_id": 1, "text": "a", "reply_markup": {"inline_keyboard": [[{"text": "b", "callback_data": 5}]]}}"#
            ),
            "reply_markup.inline_keyboard[0][0].callback_data"
        );
        assert_eq!(
            field_of(
                r#"{"chat_id": 1, "text": "a", "reply_markup": {"inline_keyboard": [[{"text": "b", "pay": true}]]}}"#
            ),
            "reply_markup.inline_keyboard[0][0].pay"
        );
    }

    #[test]
    fn callback_data_is_1_to_64_bytes() {
        let with = |data: &str| {
            validate(&format!(
                r#"{{"chat_id": 1, "text": "a", "reply_markup": {{"inline_keyboard": [[{{"text": "b", "callback_data": "{data}"}}]]}}}}"#
            ))
        };
        assert!(with(&"x".repeat(64)).is_ok());
        // 32 two-byte chars are 64 bytes; one more is 66.
        assert!(with(&"é".repeat(32)).is_ok());
        let err = with(&"é".repeat(33)).unwrap_err();
        assert_eq!(
            err.field(),
            "reply_markup.inline_keyboard[0][0].callback_data"
        );
        assert!(err.reason().contains("66 bytes"), "{err}");
        assert_eq!(
            with("").unwrap_err().field(),
            "reply_markup.inline_keyboard[0][0].callback_data"
        );
        let both = r#"{"chat_id": 1, "text": "a", "reply_markup": {"inline_keyboard": [[{"text": "b", "url": "https://a.test", "callback_data": "x"}]]}}"#;
        assert!(validate(both).unwrap_err().reason().contains("exactly one"));
        let empty_row = r#"{"chat_id": 1, "text": "a", "reply_markup": {"inline_keyboard": [[]]}}"#;
        assert_eq!(field_of(empty_row), "reply_markup.inline_keyboard[0]");
    }

    #[test]
    fn callback_data_is_checked_in_edits_too() {
        let keyboard = |data: &str| serde_json::json!({"inline_keyboard": [[{"text": "b", "callback_data": data}]]});
        for (method, extra) in [
            ("editMessageText", serde_json::json!({"text": "t"})),
            ("editMessageReplyMarkup", serde_json::json!({})),
        ] {
            let with = |data: &str| {
                let mut payload = serde_json::json!({
                    "method": method, "chat_id": 1, "message_id": 2, "reply_markup": keyboard(data)
                });
                for (k, v) in extra.as_object().unwrap() {
                    payload[k] = v.clone();
                }
                validate(&payload.to_string())
            };
            assert!(with(&"x".repeat(64)).is_ok(), "{method}");
            for bad in [String::new(), "x".repeat(65)] {
                assert_eq!(
                    with(&bad).unwrap_err().field(),
                    "reply_markup.inline_keyboard[0][0].callback_data",
                    "{method}: {} bytes",
                    bad.len()
                );
            }
        }
    }

    #[test]
    fn edits_parse_and_round_trip_with_their_method() {
        let v = validate(
            r#"{"method": "editMessageText", "chat_id": -1001234567890123, "message_id": 7,
                "text": "Approved by @ana", "parse_mode": "HTML",
                "reply_markup": {"inline_keyboard": [[{"text": "Merge", "callback_data": "merge:42"}]]}}"#,
        )
        .unwrap();
        let [TelegramPayload::EditText(edit)] = v.parts() else {
            panic!("not one edit: {v:?}")
        };
        assert_eq!(edit.message_id, 7);
        assert_eq!(v.parts()[0].method(), Method::EditMessageText);
        assert!(v.parts()[0].method().is_edit());
        assert_eq!(v.parts()[0].message_id(), Some(7));
        assert_eq!(v.ordering_key(), "-1001234567890123");
        assert_eq!(validate(&v.payloads()[0]).unwrap(), v);

        // An empty keyboard removes the buttons.
        let json = r#"{"method":"editMessageReplyMarkup","chat_id":"@news_room","message_id":3,"reply_markup":{"inline_keyboard":[]}}"#;
        let v = validate(json).unwrap();
        let [TelegramPayload::EditMarkup(edit)] = v.parts() else {
            panic!("not one edit: {v:?}")
        };
        assert_eq!(
            edit.reply_markup.as_ref().map(|m| m.inline_keyboard.len()),
            Some(0)
        );
        assert_eq!(as_json(&v.payloads()[0]), as_json(json));
        assert!(!Method::SendMessage.is_edit());
    }

    #[test]
    fn edit_errors_name_the_field_and_long_texts_are_never_split() {
        let edit = |extra: &str| {
            format!(r#"{{"method": "editMessageText", "chat_id": 5, "message_id": 9{extra}}}"#)
        };
        assert_eq!(field_of(&edit("")), "text");
        assert_eq!(field_of(&edit(r#", "text": " ""#)), "text");
        assert_eq!(
            field_of(r#"{"method": "editMessageText", "chat_id": 5, "text": "a"}"#),
            "message_id"
        );
        assert_eq!(
            field_of(
                r#"{"method": "editMessageText", "chat_id": 5, "message_id": 0, "text": "a"}"#
            ),
            "message_id"
        );
        assert_eq!(
            field_of(r#"{"method": "editMessageText", "message_id": 1, "text": "a"}"#),
            "chat_id"
        );
        assert_eq!(
            field_of(&edit(r#", "text": "a", "inline_message_id": "x""#)),
            "inline_message_id"
        );
        assert_eq!(
            field_of(&edit(
                r#", "text": "a", "reply_markup": {"force_reply": true}"#
            )),
            "reply_markup.force_reply",
            "an edit takes an inline keyboard only"
        );
        assert_eq!(
            field_of(r#"{"method": "editMessageReplyMarkup", "chat_id": 5, "message_id": -2}"#),
            "message_id"
        );
        let err = validate(r#"{"method": "editMessageCaption", "chat_id": 5}"#).unwrap_err();
        assert_eq!(err.field(), "method");
        assert!(err.reason().contains("editMessageReplyMarkup"), "{err}");

        // At the limit passes; one unit over is refused even where sends are split.
        let at_limit = "é".repeat(TEXT_LIMIT);
        let payload = |text: &str| {
            serde_json::json!({"method": "editMessageText", "chat_id": 5, "message_id": 9, "text": text})
                .to_string()
        };
        assert!(!validate(&payload(&at_limit)).unwrap().is_split());
        let err = validate_with(LongTexts::Split, &payload(&format!("{at_limit}a"))).unwrap_err();
        assert_eq!(err.field(), "text");
        assert!(err.reason().contains("4097 UTF-16 code units"), "{err}");
        assert!(err.reason().contains("never split"), "{err}");
    }

    #[test]
    fn force_reply_is_accepted_and_checked() {
        let send =
            |markup: &str| format!(r#"{{"chat_id": 1, "text": "Why?", "reply_markup": {markup}}}"#);
        let v = validate(&send(
            r#"{"force_reply": true, "input_field_placeholder": "Your comment", "selective": true}"#,
        ))
        .unwrap();
        let TelegramPayload::Message(m) = &v.parts()[0] else {
            panic!("not a message")
        };
        assert_eq!(
            m.reply_markup,
            Some(ReplyMarkup::ForceReply(ForceReply {
                input_field_placeholder: Some("Your comment".into()),
                selective: Some(true),
            }))
        );
        assert_eq!(
            as_json(&v.payloads()[0]),
            as_json(
                r#"{"chat_id":1,"text":"Why?","reply_markup":{"force_reply":true,"input_field_placeholder":"Your comment","selective":true}}"#
            )
        );
        assert!(validate(&send(r#"{"force_reply": true}"#)).is_ok());
        // On a file too.
        assert!(validate(r#"{"method": "sendPhoto", "chat_id": 1, "photo": {"url": "https://a.test/p.png"}, "reply_markup": {"force_reply": true}}"#).is_ok());

        assert_eq!(
            field_of(&send(r#"{"force_reply": false}"#)),
            "reply_markup.force_reply"
        );
        assert_eq!(
            field_of(&send(r#"{"force_reply": "yes"}"#)),
            "reply_markup.force_reply"
        );
        let placeholder = |text: &str| {
            send(&format!(
                r#"{{"force_reply": true, "input_field_placeholder": "{text}"}}"#
            ))
        };
        assert!(validate(&placeholder(&"é".repeat(64))).is_ok());
        for bad in ["", &"é".repeat(65)] {
            assert_eq!(
                field_of(&placeholder(bad)),
                "reply_markup.input_field_placeholder"
            );
        }
        for (markup, says) in [
            (
                r#"{"force_reply": true, "inline_keyboard": []}"#,
                "not both",
            ),
            (
                r#"{"inline_keyboard": [], "selective": true}"#,
                "go with `force_reply`",
            ),
            ("{}", "give `inline_keyboard`"),
        ] {
            let err = validate(&send(markup)).unwrap_err();
            assert_eq!(err.field(), "reply_markup", "{markup}");
            assert!(err.reason().contains(says), "{markup}: {err}");
        }
        assert_eq!(
            field_of(&send(r#"{"keyboard": [[{"text": "a"}]]}"#)),
            "reply_markup.keyboard"
        );
    }

    #[test]
    fn reply_parameters_are_accepted_and_checked() {
        let send = |extra: &str| format!(r#"{{"chat_id": 1, "text": "Done."{extra}}}"#);
        let json = r#"{"chat_id":1,"text":"Done.","reply_parameters":{"message_id":7,"chat_id":"@news_room","allow_sending_without_reply":true,"quote":"ship it","quote_parse_mode":"HTML","quote_position":4}}"#;
        let v = validate(json).unwrap();
        assert_eq!(
            as_json(&v.payloads()[0]),
            as_json(json),
            "passed through as given"
        );
        assert_eq!(
            field_of(&send(
                r#", "reply_parameters": {"message_id": 7}, "reply_to_message_id": 7"#
            )),
            "reply_parameters"
        );
        assert_eq!(
            field_of(&send(r#", "reply_parameters": {"message_id": 0}"#)),
            "reply_parameters.message_id"
        );
        assert_eq!(
            field_of(&send(r#", "reply_parameters": {}"#)),
            "reply_parameters.message_id"
        );
        assert_eq!(
            field_of(&send(
                r#", "reply_parameters": {"message_id": 7, "quote": ""}"#
            )),
            "reply_parameters.quote"
        );
        assert_eq!(
            field_of(&send(
                r#", "reply_parameters": {"message_id": 7, "quote_position": -1}"#
            )),
            "reply_parameters.quote_position"
        );
        assert_eq!(
            field_of(&send(
                r#", "reply_parameters": {"message_id": 7, "colour": 1}"#
            )),
            "reply_parameters.colour"
        );
        // A split text replies with its first part and asks for the reply under its last.
        let long = serde_json::json!({
            "chat_id": 1, "text": format!("{}\n\n{}", "a".repeat(4000), "b".repeat(200)),
            "reply_parameters": {"message_id": 7}, "reply_markup": {"force_reply": true},
        })
        .to_string();
        let parts = validate(&long).unwrap().into_parts();
        let [
            TelegramPayload::Message(first),
            TelegramPayload::Message(last),
        ] = parts.as_slice()
        else {
            panic!("not two texts: {parts:?}")
        };
        assert!(first.reply_parameters.is_some() && first.reply_markup.is_none());
        assert!(last.reply_parameters.is_none());
        assert!(matches!(
            last.reply_markup,
            Some(ReplyMarkup::ForceReply(_))
        ));
    }

    #[test]
    fn long_texts_split_or_refuse() {
        // 4097 units: 2049 two-unit emoji is 4098, so use 4095 ASCII and one emoji.
        let text = format!("{} 🎉", "a".repeat(4094));
        assert_eq!(utf16_len(&text), 4097);
        let json = serde_json::json!({
            "chat_id": 9, "text": text, "reply_to_message_id": 3,
            "reply_markup": {"inline_keyboard": [[{"text": "b", "callback_data": "x"}]]}
        })
        .to_string();
        let v = validate(&json).unwrap();
        assert!(v.is_split());
        let parts: Vec<&SendMessage> = v
            .parts()
            .iter()
            .map(|p| match p {
                TelegramPayload::Message(m) => m,
                _ => panic!("not a message"),
            })
            .collect();
        assert_eq!(parts[0].text, "a".repeat(4094));
        assert_eq!(parts[1].text, "🎉");
        assert_eq!(parts[0].reply_to_message_id, Some(3));
        assert_eq!(parts[1].reply_to_message_id, None);
        assert!(parts[0].reply_markup.is_none() && parts[1].reply_markup.is_some());

        let err = validate_with(LongTexts::Refuse, &json).unwrap_err();
        assert_eq!(err.field(), "text");
        assert!(err.reason().contains("4097 UTF-16 code units"), "{err}");
        // Exactly at the limit passes either way.
        let at_limit = serde_json::json!({"chat_id": 9, "text": "é".repeat(4096)}).to_string();
        assert!(
            !validate_with(LongTexts::Refuse, &at_limit)
                .unwrap()
                .is_split()
        );
    }

    #[test]
    fn long_captions_overflow_into_messages() {
        let caption = format!("{}\n\n{}", "a".repeat(1000), "b".repeat(5000));
        let json = serde_json::json!({
            "method": "sendPhoto", "chat_id": -7, "photo": {"url": "https://a.test/p.png"},
            "caption": caption, "parse_mode": "HTML"
        })
        .to_string();
        let v = validate(&json).unwrap();
        let methods: Vec<Method> = v.parts().iter().map(TelegramPayload::method).collect();
        assert_eq!(
            methods,
            [Method::SendPhoto, Method::SendMessage, Method::SendMessage]
        );
        let TelegramPayload::Photo(photo) = &v.parts()[0] else {
            panic!("not a photo")
        };
        assert_eq!(photo.caption.as_deref(), Some("a".repeat(1000).as_str()));
        let rest: String = v.parts()[1..]
            .iter()
            .map(|p| match p {
                TelegramPayload::Message(m) => {
                    assert_eq!(m.parse_mode, Some(ParseMode::Html));
                    m.text.clone()
                }
                _ => panic!("not a message"),
            })
            .collect();
        assert_eq!(rest, "b".repeat(5000));
        let err = validate_with(LongTexts::Refuse, &json).unwrap_err();
        assert_eq!(err.field(), "caption");
    }

    #[test]
    fn size_limits_apply_after_decoding() {
        use base64::engine::general_purpose::STANDARD;
        let photo = |bytes: usize| {
            serde_json::json!({
                "method": "sendPhoto", "chat_id": 1,
                "photo": {"base64": STANDARD.encode(vec![7u8; bytes]), "filename": "p.jpg"}
            })
            .to_string()
        };
        assert!(validate(&photo(PHOTO_BYTES)).is_ok());
        let err = validate(&photo(PHOTO_BYTES + 1)).unwrap_err();
        assert_eq!(err.field(), "photo.base64");
        assert!(err.reason().contains("10 MiB"), "{err}");
        // Far too large: refused from the encoded length alone.
        let err = validate(&photo(PHOTO_BYTES * 2)).unwrap_err();
        assert_eq!(err.field(), "photo.base64");
        assert_eq!(field_of(&photo(0)), "photo.base64");
        // A document may be larger than a photo.
        let document = serde_json::json!({
            "method": "sendDocument", "chat_id": 1,
            "document": {"base64": STANDARD.encode(vec![7u8; PHOTO_BYTES + 1]), "filename": "d.bin"}
        })
        .to_string();
        assert!(validate(&document).is_ok());
    }

    #[test]
    fn rewrites_the_chat_id() {
        let moved = rewrite_chat_id(
            r#"{"method":"sendPhoto","chat_id":"-4567","photo":{"url":"https://a.test/p"}}"#,
            -1_001_234_567_890_123,
        )
        .unwrap();
        let v = validate(&moved).unwrap();
        assert_eq!(v.chat_id(), &ChatId::Id(-1_001_234_567_890_123));
        assert_eq!(rewrite_chat_id("{}", 5).unwrap_err().field(), "chat_id");
        assert_eq!(
            rewrite_chat_id(r#"{"chat_id":1}"#, 0).unwrap_err().field(),
            "chat_id"
        );
    }
}
