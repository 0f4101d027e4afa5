//! [`validate_payload`]: an e-mail message payload, checked field by field.

use lettre::message::Mailbox;
use serde_json::{Map, Value};

/// The most recipients (`to`, `cc` and `bcc` together) one message may have: RFC 5321 §4.5.3.1.8
/// obliges servers to accept at least 100.
pub const MAX_RECIPIENTS: usize = 100;

/// The most characters a subject may have. RFC 5322 limits a line to 998 characters; a longer
/// subject is a mistake, not a message.
pub const MAX_SUBJECT_CHARS: usize = 998;

/// The fields a payload may have.
const FIELDS: &[&str] = &[
    "to",
    "cc",
    "bcc",
    "subject",
    "text",
    "html",
    "reply_to",
    "in_reply_to",
    "references",
];

/// A payload that passed [`validate_payload`]: everything the connector needs to build the
/// message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Validated {
    /// `To` recipients.
    pub to: Vec<Mailbox>,
    /// `Cc` recipients.
    pub cc: Vec<Mailbox>,
    /// Blind recipients: they receive the message (an SMTP `RCPT TO`) but appear in no header.
    pub bcc: Vec<Mailbox>,
    /// The subject, without line breaks or other control characters.
    pub subject: String,
    /// The plain-text body, if any.
    pub text: Option<String>,
    /// The HTML body, if any. With `text` too, the message is `multipart/alternative`.
    pub html: Option<String>,
    /// Where replies should go, if not to the sender.
    pub reply_to: Option<Mailbox>,
    /// The `Message-ID` this message answers, in angle brackets.
    pub in_reply_to: Option<String>,
    /// The `Message-ID`s of the thread, oldest first, each in angle brackets.
    pub references: Vec<String>,
}

impl Validated {
    /// How many recipients the message has, `to`, `cc` and `bcc` together.
    pub fn recipient_count(&self) -> usize {
        self.to.len() + self.cc.len() + self.bcc.len()
    }
}

pub use crate::PayloadError;

/// Checks an e-mail payload (JSON text as stored) and parses it.
///
/// ```json
/// {"to": ["Ada <ada@example.com>"], "cc": [], "bcc": [], "subject": "Build 42 passed",
///  "text": "plain body", "html": "<p>HTML body</p>", "reply_to": "ops@example.com",
///  "in_reply_to": "<build-41@example.com>", "references": ["<build-40@example.com>"]}
/// ```
///
/// `to` and `subject` are required, and so is at least one recipient (in `to`, `cc` or `bcc`;
/// at most [`MAX_RECIPIENTS`]) and at least one of `text` and `html`. Addresses are mailboxes
/// (`addr@domain` or `Name <addr@domain>`). No subject or address may contain a line break or
/// another control character, so no payload can add a header. `references` is a list of
/// message ids (or one string of them separated by spaces); message ids may leave out their
/// angle brackets. Unknown fields are refused, so a typo (`"bc"`) does not silently drop
/// recipients.
///
/// ```
/// use ferrule_connectors::smtp::validate_payload;
///
/// let email = validate_payload(
///     r#"{"to": ["Ada <ada@example.com>"], "subject": "hi", "text": "hello", "in_reply_to": "x1@example.com"}"#,
/// )?;
/// assert_eq!(email.to[0].email.to_string(), "ada@example.com");
/// assert_eq!(email.in_reply_to.as_deref(), Some("<x1@example.com>"));
///
/// let err = validate_payload(r#"{"to": ["a@example.com"], "subject": "hi\r\nBcc: x@evil.example"}"#)
///     .unwrap_err();
/// assert_eq!(err.field(), "subject");
/// # Ok::<(), ferrule_connectors::smtp::PayloadError>(())
/// ```
pub fn validate_payload(json: &str) -> Result<Validated, PayloadError> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| PayloadError::new("payload", format!("not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(PayloadError::new("payload", "must be a JSON object"));
    };
    if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(PayloadError::new(
            quote_key(unknown),
            format!("unknown field; expected one of {}", FIELDS.join(", ")),
        ));
    }

    let mut count = 0;
    let to = mailbox_list(&map, "to", true, &mut count)?;
    let cc = mailbox_list(&map, "cc", false, &mut count)?;
    let bcc = mailbox_list(&map, "bcc", false, &mut count)?;
    if count == 0 {
        return Err(PayloadError::new(
            "to",
            "at least one recipient is required (in `to`, `cc` or `bcc`)",
        ));
    }

    let subject = match map.get("subject") {
        None => return Err(PayloadError::new("subject", "is required")),
        Some(value) => string(value, "subject")?,
    };
    if subject.chars().count() > MAX_SUBJECT_CHARS {
        return Err(PayloadError::new(
            "subject",
            format!("longer than {MAX_SUBJECT_CHARS} characters"),
        ));
    }
    header_text(&subject, "subject")?;

    let text = optional_string(&map, "text")?;
    let html = optional_string(&map, "html")?;
    if text.is_none() && html.is_none() {
        return Err(PayloadError::new(
            "text",
            "a body is required: set `text`, `html` or both",
        ));
    }

    let reply_to = match map.get("reply_to") {
        None | Some(Value::Null) => None,
        Some(value) => Some(mailbox(&string(value, "reply_to")?, "reply_to")?),
    };
    let in_reply_to = match map.get("in_reply_to") {
        None | Some(Value::Null) => None,
        Some(value) => Some(message_id(&string(value, "in_reply_to")?, "in_reply_to")?),
    };
    let references = match map.get("references") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(ids)) => ids
            .split_ascii_whitespace()
            .map(|id| message_id(id, "references"))
            .collect::<Result<_, _>>()?,
        Some(Value::Array(ids)) => ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let field = format!("references[{i}]");
                message_id(&string(id, &field)?, &field)
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(PayloadError::new(
                "references",
                "must be a list of message ids or a string of them",
            ));
        }
    };

    Ok(Validated {
        to,
        cc,
        bcc,
        subject,
        text,
        html,
        reply_to,
        in_reply_to,
        references,
    })
}

/// An unknown key as a field name, cut short and without control characters (it is quoted back
/// to the client).
fn quote_key(key: &str) -> String {
    let mut quoted: String = key.chars().filter(|c| !c.is_control()).take(64).collect();
    if key.chars().count() > 64 {
        quoted.push('…');
    }
    quoted
}

/// The list at `key`: absent or `null` is empty unless `required`.
fn mailbox_list(
    map: &Map<String, Value>,
    key: &'static str,
    required: bool,
    count: &mut usize,
) -> Result<Vec<Mailbox>, PayloadError> {
    let items = match map.get(key) {
        None if required => return Err(PayloadError::new(key, "is required")),
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(PayloadError::new(
                key,
                "must be a list of addresses, e.g. [\"Ada <ada@example.com>\"]",
            ));
        }
    };
    let mut mailboxes = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("{key}[{i}]");
        *count += 1;
        if *count > MAX_RECIPIENTS {
            return Err(PayloadError::new(
                field,
                format!("more than {MAX_RECIPIENTS} recipients in `to`, `cc` and `bcc` together"),
            ));
        }
        let text = string(item, &field)?;
        mailboxes.push(mailbox(&text, &field)?);
    }
    Ok(mailboxes)
}

/// A mailbox, `addr@domain` or `Name <addr@domain>`.
fn mailbox(text: &str, field: &str) -> Result<Mailbox, PayloadError> {
    header_text(text, field)?;
    text.trim().parse::<Mailbox>().map_err(|e| {
        PayloadError::new(
            field.to_owned(),
            format!("not an e-mail address ({e}); use `addr@domain` or `Name <addr@domain>`"),
        )
    })
}

/// A message id, `<left@right>`, brackets added when missing.
fn message_id(text: &str, field: &str) -> Result<String, PayloadError> {
    header_text(text, field)?;
    let trimmed = text.trim();
    let inner = trimmed
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(trimmed);
    let valid = inner
        .split_once('@')
        .is_some_and(|(left, right)| is_dot_atom(left) && is_dot_atom(right));
    if valid {
        Ok(format!("<{inner}>"))
    } else {
        Err(PayloadError::new(
            field.to_owned(),
            "not a message id; expected `<left@right>` as in a Message-ID header",
        ))
    }
}

/// RFC 5322 `dot-atom-text`: `atext` characters in runs separated by single dots.
pub(super) fn is_dot_atom(text: &str) -> bool {
    !text.is_empty()
        && text
            .split('.')
            .all(|atom| !atom.is_empty() && atom.bytes().all(is_atext))
}

/// RFC 5322 `atext`: ASCII letters, digits and ``!#$%&'*+-/=?^_`{|}~``.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// Refuses line breaks and other control characters in text bound for a header.
fn header_text(text: &str, field: &str) -> Result<(), PayloadError> {
    if text.contains(['\r', '\n']) {
        return Err(PayloadError::new(
            field.to_owned(),
            "must not contain line breaks",
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(PayloadError::new(
            field.to_owned(),
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn string(value: &Value, field: &str) -> Result<String, PayloadError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        _ => Err(PayloadError::new(field.to_owned(), "must be a string")),
    }
}

fn optional_string(
    map: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<String>, PayloadError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => string(value, key).map(Some),
    }
}
