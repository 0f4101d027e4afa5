//! The mail parser on notification mails written like GitHub's, a plain mail, and mail it must
//! refuse.

use super::*;

/// A GitHub notification: `headers` (without the common ones) and a plain-text `body`, sent as
/// `multipart/alternative` with an HTML part, as GitHub sends them.
fn github_mail(message_id: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "Date: Tue, 01 Dec 2026 10:15:00 -0800\r\n\
         From: Marty McFly <notifications@github.com>\r\n\
         Reply-To: octo/hello <reply+ABC123@reply.github.com>\r\n\
         To: octo/hello <hello@noreply.github.com>\r\n\
         Cc: Doc Brown <doc@example.com>, Review requested <review_requested@noreply.github.com>\r\n\
         Message-ID: <{message_id}>\r\n\
         Subject: Re: [octo/hello] Fix the flux capacitor (PR #42)\r\n\
         Mime-Version: 1.0\r\n\
         Content-Type: multipart/alternative;\r\n boundary=\"--==_mimepart_65f0\";\r\n charset=UTF-8\r\n\
         Content-Transfer-Encoding: 7bit\r\n\
         Precedence: list\r\n\
         X-GitHub-Sender: marty\r\n\
         X-GitHub-Recipient: doc\r\n\
         List-ID: octo/hello <hello.octo.github.com>\r\n\
         List-Archive: https://github.com/octo/hello\r\n\
         List-Unsubscribe: <mailto:unsub+ABC123@reply.github.com>\r\n\
         X-Auto-Response-Suppress: All\r\n\
         {extra_headers}\
         \r\n\
         ----==_mimepart_65f0\r\n\
         Content-Type: text/plain;\r\n charset=UTF-8\r\n\
         Content-Transfer-Encoding: 7bit\r\n\
         \r\n\
         {body}\r\n\
         ----==_mimepart_65f0\r\n\
         Content-Type: text/html;\r\n charset=UTF-8\r\n\
         Content-Transfer-Encoding: 7bit\r\n\
         \r\n\
         <p>{body}</p>\r\n\
         ----==_mimepart_65f0--\r\n"
    )
    .into_bytes()
}

fn github(raw: &[u8]) -> GithubContext {
    parse(raw).unwrap().github.expect("a GitHub notification")
}

#[test]
fn a_new_pull_request_names_its_repository_number_reason_and_link() {
    let raw = github_mail(
        "octo/hello/pull/42@github.com",
        "X-GitHub-Reason: review_requested\r\nX-GitHub-PullRequestStatus: open\r\n",
        "@doc requested your review on: octo/hello#42 Fix the flux capacitor.\r\n\r\n\
         You can view, comment on, or merge this pull request online at:\r\n\r\n\
         \x20 https://github.com/octo/hello/pull/42\r\n\r\n\
         Patch Links:\r\n\r\n\
         \x20 * https://github.com/octo/hello/pull/42.patch\r\n\
         \x20 * https://github.com/octo/hello/pull/42.diff\r\n",
    );
    let mail = parse(&raw).unwrap();
    assert_eq!(mail.key, "octo/hello/pull/42@github.com");
    let s = &mail.summary;
    assert_eq!(
        s.from,
        Mailbox {
            name: Some("Marty McFly".into()),
            address: "notifications@github.com".into()
        }
    );
    assert_eq!(s.to[0].address, "hello@noreply.github.com");
    assert_eq!(s.cc.len(), 2);
    assert_eq!(
        s.subject.as_deref(),
        Some("Re: [octo/hello] Fix the flux capacitor (PR #42)")
    );
    assert_eq!(s.date.as_deref(), Some("2026-12-01T10:15:00-08:00"));
    assert!(
        s.text.starts_with("@doc requested your review"),
        "{}",
        s.text
    );
    assert!(
        !s.text.contains("<p>"),
        "the text part, not the HTML: {}",
        s.text
    );
    assert_eq!(s.size, raw.len());
    assert_eq!(
        mail.github,
        Some(GithubContext {
            repository: "octo/hello".into(),
            kind: GithubThread::Pull,
            number: 42,
            event: GithubEvent::Opened,
            event_id: None,
            reason: Some("review_requested".into()),
            sender: Some("marty".into()),
            pull_request_status: Some("open".into()),
            labels: vec![],
            // Not the `.patch` or `.diff` links that follow it.
            url: Some("https://github.com/octo/hello/pull/42".into()),
        })
    );
}

#[test]
fn a_comment_a_push_a_review_and_a_merge_are_told_apart() {
    let comment = github(&github_mail(
        "octo/hello/pull/42/c1234567@github.com",
        "In-Reply-To: <octo/hello/pull/42@github.com>\r\n\
         References: <octo/hello/pull/42@github.com>\r\n\
         X-GitHub-Reason: comment\r\n",
        "Looks good, one nit.\r\n\r\n-- \r\nReply to this email directly, view it on GitHub:\r\n\
         https://github.com/octo/hello/pull/42#issuecomment-1234567\r\n",
    ));
    assert_eq!(
        (comment.event, comment.event_id.as_deref()),
        (GithubEvent::Comment, Some("1234567"))
    );
    assert_eq!(
        comment.url.as_deref(),
        Some("https://github.com/octo/hello/pull/42#issuecomment-1234567")
    );

    let push = github(&github_mail(
        "octo/hello/pull/42/push/17234567890@github.com",
        "In-Reply-To: <octo/hello/pull/42@github.com>\r\nX-GitHub-Reason: push\r\n",
        "@marty pushed 1 commit.\r\n\r\n  * d4e5f6a Address review\r\n\r\nView it on GitHub:\r\n\
         https://github.com/octo/hello/pull/42/files/a1b2c3d..d4e5f6a\r\n",
    ));
    assert_eq!(
        (push.event, push.event_id.as_deref()),
        (GithubEvent::Push, Some("17234567890"))
    );
    assert_eq!(
        push.url.as_deref(),
        Some("https://github.com/octo/hello/pull/42/files/a1b2c3d..d4e5f6a")
    );

    let review = github(&github_mail(
        "octo/hello/pull/42/review/2001@github.com",
        "In-Reply-To: <octo/hello/pull/42@github.com>\r\nX-GitHub-Reason: author\r\n",
        "@doc approved this pull request.\r\n",
    ));
    assert_eq!(
        (review.event, review.event_id.as_deref()),
        (GithubEvent::Review, Some("2001"))
    );
    assert_eq!(review.url, None, "no link in that body");

    let merged = github(&github_mail(
        "octo/hello/pull/42/issue_event/987654321@github.com",
        "In-Reply-To: <octo/hello/pull/42@github.com>\r\n\
         X-GitHub-Reason: state_change\r\n\
         X-GitHub-PullRequestStatus: Merged\r\n\
         X-GitHub-Labels: bug, needs review\r\n",
        "Merged #42 into main.\r\n\r\nhttps://github.com/octo/hello/pull/42#event-987654321.\r\n",
    ));
    assert_eq!(merged.event, GithubEvent::IssueEvent);
    assert_eq!(merged.pull_request_status.as_deref(), Some("merged"));
    assert_eq!(merged.labels, ["bug", "needs review"]);
    assert_eq!(
        merged.url.as_deref(),
        Some("https://github.com/octo/hello/pull/42#event-987654321"),
        "the sentence's full stop is not part of the link"
    );
}

#[test]
fn issues_use_issues_at_the_root_and_issue_below_it() {
    let opened = github(&github_mail(
        "octo/hello/issues/7@github.com",
        "X-GitHub-Reason: subscribed\r\n",
        "The flux capacitor leaks.\r\n\r\nhttps://github.com/octo/hello/issues/7\r\n",
    ));
    assert_eq!(
        (opened.kind, opened.number, opened.event),
        (GithubThread::Issue, 7, GithubEvent::Opened)
    );
    assert_eq!(
        opened.url.as_deref(),
        Some("https://github.com/octo/hello/issues/7")
    );
    let closed = github(&github_mail(
        "octo/hello/issue/7/issue_event/555@github.com",
        "X-GitHub-Reason: state_change\r\n",
        "Closed #7 as completed.\r\n",
    ));
    assert_eq!(
        (closed.kind, closed.number, closed.event),
        (GithubThread::Issue, 7, GithubEvent::IssueEvent)
    );
}

#[test]
fn a_reply_with_its_own_id_is_placed_by_in_reply_to() {
    let raw = github_mail(
        "0123456789abcdef@example.com",
        "In-Reply-To: <octo/hello/pull/42@github.com>\r\nX-GitHub-Reason: mention\r\n",
        "cc @doc\r\n",
    );
    let context = github(&raw);
    assert_eq!((context.number, context.event), (42, GithubEvent::Other));
    assert_eq!(parse(&raw).unwrap().key, "0123456789abcdef@example.com");
}

#[test]
fn the_repository_comes_from_list_id_and_a_link_to_another_number_does_not_count() {
    let raw = github_mail(
        "octo/hello/pull/4@github.com",
        "X-GitHub-Reason: mention\r\n",
        "See https://github.com/octo/hello/pull/42 and https://github.com/octo/hello/pull/420\r\n",
    );
    let context = github(&raw);
    assert_eq!(context.repository, "octo/hello");
    assert_eq!(context.url, None, "#42 and #420 are not #4");
    assert_eq!(
        repository_of_list_id("\"octo/hello\" <hello.octo.github.com>").as_deref(),
        Some("octo/hello")
    );
    assert_eq!(repository_of_list_id("<hello.octo.github.com>"), None);
    assert_eq!(repository_of_list_id("a b/c <x>"), None);
}

#[test]
fn mail_that_is_not_from_github_is_recorded_without_context() {
    let raw = b"From: Ops <ops@example.org>\r\nTo: relay@example.com\r\n\
        Subject: Disk almost full\r\nMessage-ID: <disk-1@example.org>\r\n\
        Date: Tue, 1 Dec 2026 18:00:00 +0000\r\n\r\nOnly 2 % left on /var.\r\n";
    let mail = parse(raw).unwrap();
    assert_eq!(mail.github, None);
    assert_eq!(mail.key, "disk-1@example.org");
    assert_eq!(mail.summary.text, "Only 2 % left on /var.");
    // A GitHub-looking id alone does not make a GitHub notification.
    let spoof =
        b"From: someone@example.org\r\nMessage-ID: <octo/hello/pull/42@github.com>\r\n\r\nhi\r\n";
    assert_eq!(parse(spoof).unwrap().github, None);
}

#[test]
fn mail_without_a_message_id_is_keyed_by_its_content() {
    let a = b"From: a@example.org\r\nSubject: one\r\n\r\nbody\r\n";
    let b = b"From: a@example.org\r\nSubject: two\r\n\r\nbody\r\n";
    let key = parse(a).unwrap().key;
    assert!(key.starts_with("sha256:") && key.len() == 7 + 64, "{key}");
    assert_eq!(parse(a).unwrap().key, key, "the same mail, the same key");
    assert_ne!(parse(b).unwrap().key, key);
    let long_id = format!(
        "From: a@example.org\r\nMessage-ID: <{}@x>\r\n\r\nb\r\n",
        "i".repeat(600)
    );
    assert!(
        parse(long_id.as_bytes())
            .unwrap()
            .key
            .starts_with("sha256:")
    );
}

#[test]
fn long_text_is_cut_and_marked() {
    let raw = format!(
        "From: a@example.org\r\n\r\n{}\r\n",
        "ä".repeat(MAX_TEXT_CHARS + 10)
    );
    let summary = parse(raw.as_bytes()).unwrap().summary;
    assert_eq!(summary.text.chars().count(), MAX_TEXT_CHARS);
    assert!(summary.text_truncated);
}

#[test]
fn what_is_not_a_mail_is_refused_with_a_reason() {
    assert_eq!(parse(b""), Err(MailError::NotAMessage));
    assert_eq!(
        parse(b"hello world\r\nthis is text\r\n"),
        Err(MailError::NotAMessage)
    );
    assert_eq!(parse(br#"{"email": "not really"}"#), Err(MailError::NoFrom));
    assert_eq!(
        parse(b"To: a@example.org\r\nSubject: no sender\r\n\r\nbody\r\n"),
        Err(MailError::NoFrom)
    );
    let no_boundary = b"From: a@example.org\r\nContent-Type: multipart/mixed\r\n\r\n--x\r\n\
        Content-Type: text/plain\r\n\r\nhi\r\n--x--\r\n";
    let e = parse(no_boundary).unwrap_err();
    assert_eq!(
        e,
        MailError::NoBoundary {
            content_type: "multipart/mixed".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "the message is `multipart/mixed` but its `Content-Type` names no boundary"
    );
}

#[test]
fn the_summary_serialises_without_empty_fields() {
    let raw = b"From: a@example.org\r\nMessage-ID: <m@x>\r\n\r\nhi\r\n";
    let json = serde_json::to_value(parse(raw).unwrap().summary).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "from": {"address": "a@example.org"}, "to": [], "subject": null, "date": null,
            "message_id": "m@x", "text": "hi", "size": raw.len()
        })
    );
}
