//! Inbound e-mail: one raw RFC 822 message read into what the relay records — a summary of
//! the mail, the key it is recorded once under, and, for a GitHub notification, the pull request
//! or issue it is about.
//!
//! Parsing is `mail-parser`'s, which reads almost anything; what it cannot make a message of, or
//! a message without a `From:` address (RFC 5322 requires one), or a multipart body without its
//! boundary, is refused with a reason ([`MailError`]) rather than recorded as an empty mail.
//!
//! **The key.** A mail is recorded once per `Message-ID` (an inbound-mail service that posts
//! the same mail twice, or a sender that retries, makes one event). A mail without one — or
//! with one too long to be a key — is keyed by a SHA-256 of what identifies it instead.
//!
//! **GitHub context.** A GitHub notification (`X-GitHub-Reason`, or `From:
//! notifications@github.com`) says in its headers what it is about: the repository in `List-ID`
//! (`owner/repo <repo.owner.github.com>`), the pull request or issue and the event in the
//! `Message-ID` family (`<o/r/pull/N@github.com>` for the thread's first mail,
//! `<o/r/pull/N/c123@github.com>` for a comment, `…/push/…`, `…/review/…`,
//! `…/issue_event/…`; issues use `issues/N` at the root and `issue/N/…` below it, and a reply's
//! `In-Reply-To` points at the root), why the recipient got it (`X-GitHub-Reason`), who acted
//! (`X-GitHub-Sender`), the pull request's state (`X-GitHub-PullRequestStatus`, newer mail), its
//! labels (`X-GitHub-Labels`), and the body ends with the link. Mail that is not from GitHub is
//! recorded the same, with no context.
//!
//! [`record_mail`] stores a parsed mail once, with its forward (`record.rs`); the route that
//! takes mail is `api/inbound.rs`.

mod record;

use std::fmt;

use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use self::record::{count_refused, record_mail, source};

/// The longest text body kept in a summary, in characters; a longer one is cut and marked.
pub const MAX_TEXT_CHARS: usize = 20_000;

/// The longest `Message-ID` used as the key as it is (the store's key limit); a longer one is
/// hashed.
const MAX_KEY_BYTES: usize = 500;

/// Why a body is not a mail the relay can record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MailError {
    /// Nothing that reads as a message: empty, or no header section.
    NotAMessage,
    /// No `From:` header with an address.
    NoFrom,
    /// A multipart body whose `Content-Type` names no boundary, so its parts cannot be found.
    NoBoundary {
        /// The declared type, e.g. `multipart/mixed`.
        content_type: String,
    },
}

impl fmt::Display for MailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailError::NotAMessage => {
                f.write_str("not an RFC 822 message: no header section was found")
            }
            MailError::NoFrom => f.write_str("the message has no `From:` address"),
            MailError::NoBoundary { content_type } => write!(
                f,
                "the message is `{content_type}` but its `Content-Type` names no boundary"
            ),
        }
    }
}

impl std::error::Error for MailError {}

/// One mailbox: `Name <address>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mailbox {
    /// The display name, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The address.
    pub address: String,
}

/// What the relay keeps of a mail: enough to act on it and to show it, not the whole message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MailSummary {
    /// The sender.
    pub from: Mailbox,
    /// The `To:` recipients.
    pub to: Vec<Mailbox>,
    /// The `Cc:` recipients.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<Mailbox>,
    /// The subject, if any.
    pub subject: Option<String>,
    /// The `Date:` header as RFC 3339, if it has one that parses.
    pub date: Option<String>,
    /// The `Message-ID`, without angle brackets.
    pub message_id: Option<String>,
    /// The `In-Reply-To` ids, without angle brackets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub in_reply_to: Vec<String>,
    /// The first text body, trimmed, at most [`MAX_TEXT_CHARS`] characters (an HTML-only mail's
    /// text as `mail-parser` renders it).
    pub text: String,
    /// Whether `text` was cut.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub text_truncated: bool,
    /// How many attachments the mail had (they are not kept).
    #[serde(skip_serializing_if = "is_zero")]
    pub attachments: usize,
    /// The raw message's size in bytes.
    pub size: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What a GitHub notification is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GithubContext {
    /// `owner/repo`.
    pub repository: String,
    /// `pull` or `issue`.
    pub kind: GithubThread,
    /// The pull request's or issue's number.
    pub number: u64,
    /// What this mail reports.
    pub event: GithubEvent,
    /// The event's id in its `Message-ID` (a comment, review, push or issue event id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// `X-GitHub-Reason`: why the recipient got it (`review_requested`, `mention`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `X-GitHub-Sender`: the login of who acted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// `X-GitHub-PullRequestStatus`: `open`, `merged` or `closed` (newer mail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_request_status: Option<String>,
    /// `X-GitHub-Labels`, when present.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// The link to the thread found in the body (the last one, where GitHub puts it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A GitHub thread: a pull request or an issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GithubThread {
    /// A pull request.
    Pull,
    /// An issue.
    Issue,
}

/// What a GitHub notification reports, from its `Message-ID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GithubEvent {
    /// The thread's first mail: a new pull request or issue.
    Opened,
    /// A comment (`…/c123@github.com`).
    Comment,
    /// New commits pushed (`…/push/…`).
    Push,
    /// A review (`…/review/…`).
    Review,
    /// A state change, label, assignment, merge… (`…/issue_event/…`).
    IssueEvent,
    /// A reply in the thread whose own id says nothing more (its `In-Reply-To` named the
    /// thread), or an id shape this relay does not know.
    Other,
}

/// A mail as the relay records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedMail {
    /// The key it is recorded once under: its `Message-ID`, else `sha256:<hex>`.
    pub key: String,
    /// The summary.
    pub summary: MailSummary,
    /// What it is about, when it is a GitHub notification.
    pub github: Option<GithubContext>,
}

/// Reads `raw`, one RFC 822 message.
///
/// ```
/// let raw = b"From: Octo <notifications@github.com>\r\n\
///     To: team@example.com\r\n\
///     Subject: [octo/hello] Fix the flux capacitor (#42)\r\n\
///     Message-ID: <octo/hello/pull/42@github.com>\r\n\
///     List-ID: octo/hello <hello.octo.github.com>\r\n\
///     X-GitHub-Reason: review_requested\r\n\
///     X-GitHub-Sender: marty\r\n\r\n\
///     Please review.\r\n\
///     https://github.com/octo/hello/pull/42\r\n";
/// let mail = ferrule::inbound::email::parse(raw)?;
/// assert_eq!(mail.key, "octo/hello/pull/42@github.com");
/// let github = mail.github.unwrap();
/// assert_eq!((github.repository.as_str(), github.number), ("octo/hello", 42));
/// assert_eq!(github.url.as_deref(), Some("https://github.com/octo/hello/pull/42"));
/// # Ok::<(), ferrule::inbound::email::MailError>(())
/// ```
pub fn parse(raw: &[u8]) -> Result<ParsedMail, MailError> {
    let message = MessageParser::default()
        .parse(raw)
        .ok_or(MailError::NotAMessage)?;
    if let Some(content_type) = message.root_part().content_type()
        && content_type.ctype().eq_ignore_ascii_case("multipart")
        && content_type.attribute("boundary").is_none()
    {
        return Err(MailError::NoBoundary {
            content_type: format!("multipart/{}", content_type.subtype().unwrap_or("mixed")),
        });
    }
    let from = message
        .from()
        .and_then(|a| mailboxes(a).into_iter().next())
        .ok_or(MailError::NoFrom)?;
    let message_id = message.message_id().map(str::to_owned);
    let (text, text_truncated) = match message.body_text(0) {
        Some(body) => cut(body.trim(), MAX_TEXT_CHARS),
        None => (String::new(), false),
    };
    let summary = MailSummary {
        to: message.to().map(mailboxes).unwrap_or_default(),
        cc: message.cc().map(mailboxes).unwrap_or_default(),
        subject: message.subject().map(|s| s.trim().to_owned()),
        date: message.date().map(|d| d.to_rfc3339()),
        in_reply_to: ids(message.in_reply_to()),
        text,
        text_truncated,
        attachments: message.attachment_count(),
        size: raw.len(),
        message_id,
        from,
    };
    let github = github_context(&message, &summary);
    let key = match &summary.message_id {
        Some(id) if !id.is_empty() && id.len() <= MAX_KEY_BYTES => id.clone(),
        Some(id) => format!("sha256:{}", hex(&Sha256::digest(id.as_bytes()))),
        None => format!("sha256:{}", hex(&Sha256::digest(raw))),
    };
    Ok(ParsedMail {
        key,
        summary,
        github,
    })
}

/// The mailboxes of an address header, groups flattened.
fn mailboxes(address: &Address<'_>) -> Vec<Mailbox> {
    address
        .iter()
        .filter_map(|a| {
            let address = a.address()?.trim();
            (!address.is_empty()).then(|| Mailbox {
                name: a
                    .name()
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty()),
                address: address.to_owned(),
            })
        })
        .collect()
}

/// Message ids of a header (`In-Reply-To`, `References`), without angle brackets.
fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(id) => vec![id.to_string()],
        HeaderValue::TextList(list) => list.iter().map(|id| id.to_string()).collect(),
        _ => Vec::new(),
    }
}

/// `text` cut to at most `max` characters, and whether it was.
fn cut(text: &str, max: usize) -> (String, bool) {
    match text.char_indices().nth(max) {
        Some((at, _)) => (text[..at].to_owned(), true),
        None => (text.to_owned(), false),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A header's raw value, trimmed, if present and not empty.
fn raw_header<'a>(message: &'a mail_parser::Message<'_>, name: &'static str) -> Option<&'a str> {
    message
        .header_raw(name)
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The GitHub context of `message`, when it is a GitHub notification that names its thread.
fn github_context(
    message: &mail_parser::Message<'_>,
    summary: &MailSummary,
) -> Option<GithubContext> {
    let reason = raw_header(message, "X-GitHub-Reason").map(str::to_owned);
    let from_github = summary
        .from
        .address
        .eq_ignore_ascii_case("notifications@github.com");
    if reason.is_none() && !from_github {
        return None;
    }
    // The mail's own id names the thread and the event; a reply whose own id does not follow
    // the family still points at the thread's root in `In-Reply-To`.
    let (thread, event) = summary
        .message_id
        .as_deref()
        .and_then(thread_of)
        .or_else(|| {
            summary.in_reply_to.iter().find_map(|id| {
                let (thread, _) = thread_of(id)?;
                Some((thread, (GithubEvent::Other, None)))
            })
        })?;
    let repository = raw_header(message, "List-ID")
        .and_then(repository_of_list_id)
        .unwrap_or(thread.repository);
    let labels = raw_header(message, "X-GitHub-Labels")
        .map(|l| {
            l.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let url = thread_url(&summary.text, &repository, thread.kind, thread.number);
    Some(GithubContext {
        repository,
        kind: thread.kind,
        number: thread.number,
        event: event.0,
        event_id: event.1,
        reason,
        sender: raw_header(message, "X-GitHub-Sender").map(str::to_owned),
        pull_request_status: raw_header(message, "X-GitHub-PullRequestStatus")
            .map(|s| s.to_ascii_lowercase()),
        labels,
        url,
    })
}

/// A thread named by a `Message-ID`.
struct Thread {
    repository: String,
    kind: GithubThread,
    number: u64,
}

/// Reads a GitHub `Message-ID` (without brackets): `o/r/pull/N@host`, `o/r/pull/N/c123@host`,
/// `o/r/pull/N/push/…@host`, `o/r/pull/N/review/ID@host`, `o/r/pull/N/issue_event/ID@host`,
/// `o/r/issues/N@host`, `o/r/issue/N/…@host`.
fn thread_of(id: &str) -> Option<(Thread, (GithubEvent, Option<String>))> {
    let (local, _host) = id.rsplit_once('@')?;
    let mut parts = local.split('/');
    let owner = parts.next().filter(|s| !s.is_empty())?;
    let repo = parts.next().filter(|s| !s.is_empty())?;
    let kind = match parts.next()? {
        "pull" => GithubThread::Pull,
        "issues" | "issue" => GithubThread::Issue,
        _ => return None,
    };
    let number: u64 = parts.next()?.parse().ok().filter(|n| *n > 0)?;
    let rest: Vec<&str> = parts.collect();
    let event = match rest.as_slice() {
        [] => (GithubEvent::Opened, None),
        [comment]
            if comment.len() > 1
                && comment.starts_with('c')
                && comment[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            (GithubEvent::Comment, Some(comment[1..].to_owned()))
        }
        ["push", id, ..] => (GithubEvent::Push, Some((*id).to_owned())),
        ["review", id, ..] => (GithubEvent::Review, Some((*id).to_owned())),
        ["issue_event", id, ..] => (GithubEvent::IssueEvent, Some((*id).to_owned())),
        _ => (GithubEvent::Other, None),
    };
    Some((
        Thread {
            repository: format!("{owner}/{repo}"),
            kind,
            number,
        },
        event,
    ))
}

/// `owner/repo` from a `List-ID` such as `octo/hello <hello.octo.github.com>`.
fn repository_of_list_id(list_id: &str) -> Option<String> {
    let phrase = list_id.split('<').next()?.trim().trim_matches('"').trim();
    let (owner, repo) = phrase.split_once('/')?;
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    (valid(owner) && valid(repo)).then(|| format!("{owner}/{repo}"))
}

/// The last link in `text` to the thread (`…/owner/repo/pull/N`, or `/issues/N`), with what
/// follows it in the URL (`#issuecomment-…`, `/files`), or `None`. Links to other things that
/// start the same (`…/pull/42.patch`, `…/pull/420`) do not count.
fn thread_url(text: &str, repository: &str, kind: GithubThread, number: u64) -> Option<String> {
    let segment = match kind {
        GithubThread::Pull => "pull",
        GithubThread::Issue => "issues",
    };
    let needle = format!("/{repository}/{segment}/{number}");
    text.split(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '(' | ')' | '"'))
        .map(|word| word.trim_end_matches(['.', ',', ';', ':']))
        .rfind(|word| {
            word.starts_with("https://")
                && word.find(&needle).is_some_and(|at| {
                    let rest = &word[at + needle.len()..];
                    rest.is_empty() || rest.starts_with(['#', '/', '?'])
                })
        })
        .map(str::to_owned)
}

#[cfg(test)]
mod tests;
