//! GitHub action payloads: what a client submits to act on a pull request, parsed and checked
//! field by field.
//!
//! ```json
//! {"action": "approve", "repo": "octo/app", "number": 42, "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e"}
//! {"action": "request_changes", "repo": "octo/app", "number": 42, "body": "Please add a test."}
//! {"action": "comment", "repo": "octo/app", "number": 42, "body": "Deploying after lunch."}
//! {"action": "merge", "repo": "octo/app", "number": 42, "merge_method": "squash", "sha": "6dcb09b…"}
//! {"action": "label", "repo": "octo/app", "number": 42, "labels": ["approved", "ship-it"]}
//! {"action": "close", "repo": "octo/app", "number": 42}
//! ```
//!
//! [`validate_payload`] is pure, so the relay can answer 422 at submit time with a message
//! naming the field.

use std::fmt;

use serde_json::{Map, Value};

/// The longest `body` accepted, in characters. GitHub refuses bodies over 65,536 characters;
/// the connector keeps room for the hidden marker it appends to comments and reviews.
pub const MAX_BODY_CHARS: usize = 65_000;

/// The longest label name GitHub accepts, in characters.
pub const MAX_LABEL_CHARS: usize = 50;

/// The most labels one `label` action may add.
pub const MAX_LABELS: usize = 100;

/// The fields a payload may have.
const FIELDS: &[&str] = &[
    "action",
    "repo",
    "number",
    "body",
    "sha",
    "merge_method",
    "labels",
];

pub use crate::PayloadError;

/// A repository, `owner/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repo {
    /// The account or organisation that owns it.
    pub owner: String,
    /// The repository's name.
    pub name: String,
}

impl fmt::Display for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// How a pull request is merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MergeMethod {
    /// A merge commit.
    Merge,
    /// One squashed commit.
    Squash,
    /// The commits rebased onto the base branch.
    Rebase,
}

impl MergeMethod {
    /// The name GitHub's API uses: `merge`, `squash` or `rebase`.
    pub fn as_str(self) -> &'static str {
        match self {
            MergeMethod::Merge => "merge",
            MergeMethod::Squash => "squash",
            MergeMethod::Rebase => "rebase",
        }
    }
}

/// What to do to the pull request (or issue), with what each action needs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Approve the pull request: a review with `event: APPROVE`, on `sha` when given.
    Approve {
        /// The review's text, if any.
        body: Option<String>,
        /// The commit approved (lower-case hex); without it GitHub takes the current head.
        sha: Option<String>,
    },
    /// Request changes: a review with `event: REQUEST_CHANGES`, on `sha` when given.
    RequestChanges {
        /// What to change (GitHub requires a text).
        body: String,
        /// The commit reviewed (lower-case hex).
        sha: Option<String>,
    },
    /// Comment on the pull request's conversation (an issue comment).
    Comment {
        /// The comment.
        body: String,
    },
    /// Merge the pull request.
    Merge {
        /// The head the merge is for: if the pull request's head moved, GitHub refuses (409).
        sha: Option<String>,
        /// How to merge; GitHub's default (the repository's) when absent.
        method: Option<MergeMethod>,
    },
    /// Add labels.
    Label {
        /// The label names to add (existing ones stay).
        labels: Vec<String>,
    },
    /// Close the pull request (or issue) without merging.
    Close,
}

impl Action {
    /// The payload's `action` value: `approve`, `request_changes`, `comment`, `merge`, `label`
    /// or `close`.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Approve { .. } => "approve",
            Action::RequestChanges { .. } => "request_changes",
            Action::Comment { .. } => "comment",
            Action::Merge { .. } => "merge",
            Action::Label { .. } => "label",
            Action::Close => "close",
        }
    }
}

/// A payload that passed [`validate_payload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubPayload {
    /// The repository.
    pub repo: Repo,
    /// The pull request's (or issue's) number.
    pub number: u64,
    /// What to do.
    pub action: Action,
}

/// Parses and checks a GitHub payload; the error names the field at fault.
///
/// Checks: a JSON object with only known fields; `action` one of `approve`,
/// `request_changes`, `comment`, `merge`, `label`, `close`; `repo` as `owner/name` with
/// GitHub's characters; `number` a positive integer; `body` required (not blank) for
/// `comment` and `request_changes`, allowed for `approve`, at most [`MAX_BODY_CHARS`]
/// characters; `sha` a 40-hex commit id, for `approve`, `request_changes` and `merge` only;
/// `merge_method` `merge`, `squash` or `rebase`, for `merge` only; `labels` a non-empty list of
/// distinct names of at most [`MAX_LABEL_CHARS`] characters, for `label` only.
///
/// ```
/// use ferrule_connectors::github::{Action, validate_payload};
///
/// let ok = validate_payload(r#"{"action": "close", "repo": "octo/app", "number": 7}"#)?;
/// assert_eq!((ok.repo.to_string(), ok.number, ok.action), ("octo/app".into(), 7, Action::Close));
///
/// let err = validate_payload(r#"{"action": "comment", "repo": "octo/app", "number": 7}"#)
///     .unwrap_err();
/// assert_eq!((err.field(), err.reason()), ("body", "required for `comment`"));
/// # Ok::<(), ferrule_connectors::github::PayloadError>(())
/// ```
pub fn validate_payload(json: &str) -> Result<GithubPayload, PayloadError> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| PayloadError::new("payload", format!("not valid JSON: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(PayloadError::new("payload", "must be a JSON object"));
    };
    if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(PayloadError::new(
            quote_key(unknown),
            format!("unknown field; expected one of {}", FIELDS.join(", ")),
        ));
    }
    let action = match map.remove("action") {
        None => return Err(PayloadError::new("action", ACTION_REASON)),
        Some(Value::String(action)) if ACTIONS.contains(&action.as_str()) => action,
        Some(_) => return Err(PayloadError::new("action", ACTION_REASON)),
    };
    let repo = repo(map.remove("repo"))?;
    let number = number(map.remove("number"))?;
    let action = match action.as_str() {
        "approve" => Action::Approve {
            body: body(&mut map, None)?,
            sha: sha(&mut map)?,
        },
        "request_changes" => Action::RequestChanges {
            body: required_body(&mut map, "request_changes")?,
            sha: sha(&mut map)?,
        },
        "comment" => Action::Comment {
            body: required_body(&mut map, "comment")?,
        },
        "merge" => Action::Merge {
            sha: sha(&mut map)?,
            method: merge_method(map.remove("merge_method"))?,
        },
        "label" => Action::Label {
            labels: labels(map.remove("labels"))?,
        },
        _ => Action::Close,
    };
    // What is left does not apply to this action.
    if let Some(field) = FIELDS.iter().find(|f| map.contains_key(**f)) {
        return Err(PayloadError::new(
            *field,
            format!(
                "does not apply to `{}`; {}",
                action.name(),
                applies_to(field)
            ),
        ));
    }
    Ok(GithubPayload {
        repo,
        number,
        action,
    })
}

const ACTIONS: &[&str] = &[
    "approve",
    "request_changes",
    "comment",
    "merge",
    "label",
    "close",
];

const ACTION_REASON: &str =
    "required: one of approve, request_changes, comment, merge, label, close";

/// Which actions a field is for, for the error about one given to another action.
fn applies_to(field: &str) -> &'static str {
    match field {
        "body" => "it is for comment, request_changes and approve",
        "sha" => "it is for merge, approve and request_changes",
        "merge_method" => "it is for merge",
        "labels" => "it is for label",
        _ => "",
    }
}

/// An unknown key as a field name: as is when it is a plain name, else quoted as JSON.
fn quote_key(key: &str) -> String {
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        key.to_owned()
    } else {
        Value::from(key).to_string()
    }
}

fn repo(value: Option<Value>) -> Result<Repo, PayloadError> {
    let invalid = || PayloadError::new("repo", "must be `owner/name`");
    let Some(Value::String(text)) = value else {
        return Err(invalid());
    };
    let (owner, name) = text.split_once('/').ok_or_else(invalid)?;
    if owner.is_empty() || name.is_empty() || name.contains('/') {
        return Err(invalid());
    }
    if owner.len() > 39
        || owner.starts_with('-')
        || !owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(PayloadError::new(
            "repo",
            "the owner must be 1 to 39 letters, digits or `-`",
        ));
    }
    if name.len() > 100
        || name == "."
        || name == ".."
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(PayloadError::new(
            "repo",
            "the name must be 1 to 100 letters, digits, `-`, `_` or `.`",
        ));
    }
    Ok(Repo {
        owner: owner.to_owned(),
        name: name.to_owned(),
    })
}

fn number(value: Option<Value>) -> Result<u64, PayloadError> {
    match value.as_ref().and_then(Value::as_u64) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(PayloadError::new(
            "number",
            "must be a positive integer: the pull request's number",
        )),
    }
}

/// The optional `body`; `action` names the action when it is required.
fn body(
    map: &mut Map<String, Value>,
    action: Option<&str>,
) -> Result<Option<String>, PayloadError> {
    let text = match map.remove("body") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text),
        Some(_) => return Err(PayloadError::new("body", "must be a string")),
    };
    match (text, action) {
        (None, Some(action)) => Err(PayloadError::new(
            "body",
            format!("required for `{action}`"),
        )),
        (Some(text), _) if text.trim().is_empty() => {
            Err(PayloadError::new("body", "must not be blank"))
        }
        (Some(text), _) if text.chars().count() > MAX_BODY_CHARS => Err(PayloadError::new(
            "body",
            format!("must be at most {MAX_BODY_CHARS} characters"),
        )),
        (text, _) => Ok(text),
    }
}

fn required_body(map: &mut Map<String, Value>, action: &str) -> Result<String, PayloadError> {
    Ok(body(map, Some(action))?.unwrap_or_default())
}

fn sha(map: &mut Map<String, Value>) -> Result<Option<String>, PayloadError> {
    match map.remove("sha") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(sha))
            if sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok(Some(sha.to_ascii_lowercase()))
        }
        Some(_) => Err(PayloadError::new(
            "sha",
            "must be a commit id: 40 hexadecimal characters",
        )),
    }
}

fn merge_method(value: Option<Value>) -> Result<Option<MergeMethod>, PayloadError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(method)) => match method.as_str() {
            "merge" => Ok(Some(MergeMethod::Merge)),
            "squash" => Ok(Some(MergeMethod::Squash)),
            "rebase" => Ok(Some(MergeMethod::Rebase)),
            _ => Err(PayloadError::new(
                "merge_method",
                "must be merge, squash or rebase",
            )),
        },
        Some(_) => Err(PayloadError::new(
            "merge_method",
            "must be merge, squash or rebase",
        )),
    }
}

fn labels(value: Option<Value>) -> Result<Vec<String>, PayloadError> {
    let reason = "required for `label`: a non-empty list of label names";
    let Some(Value::Array(items)) = value else {
        return Err(PayloadError::new("labels", reason));
    };
    if items.is_empty() {
        return Err(PayloadError::new("labels", reason));
    }
    if items.len() > MAX_LABELS {
        return Err(PayloadError::new(
            "labels",
            format!("must have at most {MAX_LABELS} names"),
        ));
    }
    let mut labels: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let field = || format!("labels[{i}]");
        let Value::String(label) = item else {
            return Err(PayloadError::new(field(), "must be a string"));
        };
        if label.trim().is_empty() {
            return Err(PayloadError::new(field(), "must not be blank"));
        }
        if label.chars().count() > MAX_LABEL_CHARS {
            return Err(PayloadError::new(
                field(),
                format!("must be at most {MAX_LABEL_CHARS} characters"),
            ));
        }
        if label.chars().any(char::is_control) {
            return Err(PayloadError::new(
                field(),
                "must not contain control characters",
            ));
        }
        if labels.contains(&label) {
            return Err(PayloadError::new(field(), "is listed twice"));
        }
        labels.push(label);
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "6dcb09b5b57875f334f61aebed695e2e4193db5e";

    fn refused(json: &str) -> (String, String) {
        let err = validate_payload(json).unwrap_err();
        (err.field().to_owned(), err.reason().to_owned())
    }

    fn field_of(json: &str) -> String {
        refused(json).0
    }

    #[test]
    fn parses_each_action() {
        let parse = |json: &str| validate_payload(json).unwrap();
        let approve = parse(&format!(
            r#"{{"action": "approve", "repo": "octo-org/app.rs", "number": 42, "sha": "{}"}}"#,
            SHA.to_uppercase()
        ));
        assert_eq!(approve.repo.owner, "octo-org");
        assert_eq!(approve.repo.name, "app.rs");
        assert_eq!(approve.number, 42);
        assert_eq!(
            approve.action,
            Action::Approve {
                body: None,
                sha: Some(SHA.to_owned())
            }
        );
        assert_eq!(
            parse(r#"{"action": "request_changes", "repo": "o/r", "number": 1, "body": "no"}"#)
                .action,
            Action::RequestChanges {
                body: "no".into(),
                sha: None
            }
        );
        assert_eq!(
            parse(r#"{"action": "comment", "repo": "o/r", "number": 1, "body": "hi"}"#).action,
            Action::Comment { body: "hi".into() }
        );
        assert_eq!(
            parse(r#"{"action": "merge", "repo": "o/r", "number": 1, "merge_method": "squash"}"#)
                .action,
            Action::Merge {
                sha: None,
                method: Some(MergeMethod::Squash)
            }
        );
        assert_eq!(
            parse(r#"{"action": "label", "repo": "o/r", "number": 1, "labels": ["a", "b c"]}"#)
                .action,
            Action::Label {
                labels: vec!["a".into(), "b c".into()]
            }
        );
        assert_eq!(
            parse(r#"{"action": "close", "repo": "o/r", "number": 1}"#).action,
            Action::Close
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of("[1]"), "payload");
        assert_eq!(field_of("{"), "payload");
        assert_eq!(field_of(r#"{"repo": "o/r", "number": 1}"#), "action");
        assert_eq!(
            refused(r#"{"action": "delete", "repo": "o/r", "number": 1}"#),
            ("action".into(), ACTION_REASON.into())
        );
        assert_eq!(
            field_of(r#"{"action": 1, "repo": "o/r", "number": 1}"#),
            "action"
        );
        for repo in [
            r#""octo""#,
            r#""/r""#,
            r#""o/""#,
            r#""o/r/x""#,
            r#""-o/r""#,
            r#""o/..""#,
            r#""o/r s""#,
            "1",
        ] {
            let json = format!(r#"{{"action": "close", "repo": {repo}, "number": 1}}"#);
            assert_eq!(field_of(&json), "repo", "{repo}");
        }
        for number in ["0", "-1", "1.5", r#""1""#, "null"] {
            let json = format!(r#"{{"action": "close", "repo": "o/r", "number": {number}}}"#);
            assert_eq!(field_of(&json), "number", "{number}");
        }
        assert_eq!(field_of(r#"{"action": "close", "repo": "o/r"}"#), "number");
        assert_eq!(
            refused(r#"{"action": "request_changes", "repo": "o/r", "number": 1}"#),
            ("body".into(), "required for `request_changes`".into())
        );
        assert_eq!(
            field_of(r#"{"action": "comment", "repo": "o/r", "number": 1, "body": " \n"}"#),
            "body"
        );
        assert_eq!(
            field_of(r#"{"action": "comment", "repo": "o/r", "number": 1, "body": 5}"#),
            "body"
        );
        let long = "x".repeat(MAX_BODY_CHARS + 1);
        assert_eq!(
            field_of(&format!(
                r#"{{"action": "comment", "repo": "o/r", "number": 1, "body": "{long}"}}"#
            )),
            "body"
        );
        for sha in [
            r#""abc""#,
            r#""6dcb09b5b57875f334f61aebed695e2e4193db5g""#,
            "40",
        ] {
            let json =
                format!(r#"{{"action": "merge", "repo": "o/r", "number": 1, "sha": {sha}}}"#);
            assert_eq!(field_of(&json), "sha", "{sha}");
        }
        assert_eq!(
            field_of(r#"{"action": "merge", "repo": "o/r", "number": 1, "merge_method": "ff"}"#),
            "merge_method"
        );
        assert_eq!(
            field_of(r#"{"action": "label", "repo": "o/r", "number": 1, "labels": []}"#),
            "labels"
        );
        assert_eq!(
            field_of(r#"{"action": "label", "repo": "o/r", "number": 1}"#),
            "labels"
        );
        assert_eq!(
            field_of(r#"{"action": "label", "repo": "o/r", "number": 1, "labels": ["a", ""]}"#),
            "labels[1]"
        );
        assert_eq!(
            field_of(r#"{"action": "label", "repo": "o/r", "number": 1, "labels": ["a", 2]}"#),
            "labels[1]"
        );
        assert_eq!(
            field_of(r#"{"action": "label", "repo": "o/r", "number": 1, "labels": ["a", "a"]}"#),
            "labels[1]"
        );
        let long = "x".repeat(MAX_LABEL_CHARS + 1);
        assert_eq!(
            field_of(&format!(
                r#"{{"action": "label", "repo": "o/r", "number": 1, "labels": ["{long}"]}}"#
            )),
            "labels[0]"
        );
        assert_eq!(
            refused(r#"{"action": "close", "repo": "o/r", "number": 1, "colour": "red"}"#).0,
            "colour"
        );
        assert_eq!(
            refused(r#"{"action": "close", "repo": "o/r", "number": 1, "a b": 1}"#).0,
            r#""a b""#
        );
    }

    #[test]
    fn fields_of_another_action_are_refused_naming_them() {
        assert_eq!(
            refused(
                r#"{"action": "comment", "repo": "o/r", "number": 1, "body": "x", "merge_method": "merge"}"#
            ),
            (
                "merge_method".into(),
                "does not apply to `comment`; it is for merge".into()
            )
        );
        let json = format!(
            r#"{{"action": "comment", "repo": "o/r", "number": 1, "body": "x", "sha": "{SHA}"}}"#
        );
        assert_eq!(field_of(&json), "sha");
        assert_eq!(
            field_of(r#"{"action": "merge", "repo": "o/r", "number": 1, "body": "x"}"#),
            "body"
        );
        assert_eq!(
            field_of(r#"{"action": "close", "repo": "o/r", "number": 1, "labels": ["a"]}"#),
            "labels"
        );
        assert_eq!(
            field_of(r#"{"action": "approve", "repo": "o/r", "number": 1, "labels": ["a"]}"#),
            "labels"
        );
    }
}
