//! The SMTP connector against a real SMTP server on 127.0.0.1 ([`Sink`]), scripted per command.
//!
//! Most tests use `tls = "none"`; the TLS tests at the end run the sink with STARTTLS or
//! implicit TLS and a certificate from a CA made for the test ([`TestCa`]).

use std::time::Duration;

use ferrule_policy::clock::{self, ManualClock};
use ferrule_policy::{Outcome, SharedClock};

use super::sink::{Answer, Options, Sink, SinkTls, TestCa, Transaction};
use super::*;
use crate::{AnyConnector, Connector, Delivery};

const MESSAGE_ID: &str = "01JD5ZQ8X3V7K2M9N4P6R8T0W1";
const FROM: &str = "ferrule <relay@example.com>";
const PASSWORD: &str = "s3cret-Pa55word";

fn delivery(payload: &str, attempt: u32) -> Delivery<'_> {
    Delivery {
        message_id: MESSAGE_ID,
        destination: "mail",
        payload,
        attempt,
        traceparent: None,
    }
}

/// A plain-text message to one recipient.
const SIMPLE: &str =
    r#"{"to": ["ada@example.org"], "subject": "Build 42 passed", "text": "All green."}"#;

/// A connector to `sink` without TLS, adjusted by `edit`.
fn connector(sink: &Sink, clock: SharedClock, edit: impl FnOnce(&mut SmtpConfig)) -> SmtpConnector {
    let mut config = SmtpConfig::new(sink.addr.ip().to_string(), FROM);
    config.port = Some(sink.addr.port());
    config.tls = TlsMode::None;
    edit(&mut config);
    SmtpConnector::new(config, clock).unwrap()
}

fn only(transactions: &[Transaction]) -> &Transaction {
    assert_eq!(transactions.len(), 1, "{transactions:#?}");
    &transactions[0]
}

/// Lets lettre's pool take back a connection: it does so in a task spawned when the send ends.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn sends_the_headers_and_text_body() {
    let sink = Sink::start(Options::default()).await;
    let clock = ManualClock::new(); // wall clock 2026-01-01T00:00:00Z, a Thursday
    let smtp = connector(&sink, clock.shared(), |_| {});
    let payload = r#"{
        "to": ["Ada Lovelace <ada@example.org>", "grace@example.org"],
        "cc": ["ops@example.org"],
        "subject": "Build 42 passed",
        "text": "All green.\nSee you.\n.\nA line with only a dot above.",
        "reply_to": "Support <support@example.com>",
        "in_reply_to": "build-41@ci.example.com",
        "references": ["<build-40@ci.example.com>", "build-41@ci.example.com"]
    }"#;

    let result = smtp.deliver(&delivery(payload, 1)).await;
    assert_eq!(result.outcome, Outcome::Success, "{}", result.detail);
    assert_eq!(result.code, Some(250));
    assert_eq!(result.detail, "250 2.0.0 Ok: queued as 1");
    assert_eq!(result.signal, None);

    let sent = sink.transactions();
    let sent = only(&sent);
    assert_eq!(sent.ehlo, "example.com");
    assert_eq!(sent.mail_from, "relay@example.com");
    assert_eq!(
        sent.rcpt_to,
        ["ada@example.org", "grace@example.org", "ops@example.org"]
    );
    let header = |name: &str| sent.header(name).unwrap_or_else(|| panic!("no {name}"));
    assert_eq!(header("From"), "ferrule <relay@example.com>");
    assert_eq!(
        header("To"),
        "\"Ada Lovelace\" <ada@example.org>, grace@example.org"
    );
    assert_eq!(header("Cc"), "ops@example.org");
    assert_eq!(header("Subject"), "Build 42 passed");
    assert_eq!(header("Reply-To"), "Support <support@example.com>");
    assert_eq!(header("Message-ID"), format!("<{MESSAGE_ID}@example.com>"));
    assert_eq!(header("In-Reply-To"), "<build-41@ci.example.com>");
    assert_eq!(
        header("References"),
        "<build-40@ci.example.com> <build-41@ci.example.com>"
    );
    assert_eq!(header("Date"), "Thu, 01 Jan 2026 00:00:00 +0000");
    assert!(
        header("Content-Type").starts_with("text/plain"),
        "{}",
        header("Content-Type")
    );
    assert_eq!(sent.header("Bcc"), None);
    assert_eq!(
        sent.body(),
        "All green.\r\nSee you.\r\n.\r\nA line with only a dot above.\r\n"
    );
}

#[tokio::test]
async fn message_id_is_stable_across_attempts_and_date_follows_the_clock() {
    let sink = Sink::start(Options::default()).await;
    let clock = ManualClock::new();
    let smtp = connector(&sink, clock.shared(), |c| {
        c.message_id_domain = Some("relay.example.net".into());
    });
    let first = smtp.deliver(&delivery(SIMPLE, 1)).await;
    assert_eq!(first.outcome, Outcome::Success);
    clock.advance(Duration::from_secs(90));
    let second = smtp.deliver(&delivery(SIMPLE, 2)).await;
    assert_eq!(second.outcome, Outcome::Success);

    let sent = sink.transactions();
    assert_eq!(sent.len(), 2);
    let expected = format!("<{MESSAGE_ID}@relay.example.net>");
    // The output names the Message-ID sent, for a later e-mail's `in_reply_to`.
    for result in [&first, &second] {
        assert_eq!(result.output, Some(json!({ "message_id": expected })));
    }
    assert_eq!(
        sent[0].header("Message-ID").as_deref(),
        Some(expected.as_str())
    );
    assert_eq!(
        sent[1].header("Message-ID").as_deref(),
        Some(expected.as_str())
    );
    assert_eq!(
        smtp.message_id_for(MESSAGE_ID).as_deref(),
        Some(expected.as_str())
    );
    assert_eq!(
        sent[0].header("Date").as_deref(),
        Some("Thu, 01 Jan 2026 00:00:00 +0000")
    );
    assert_eq!(
        sent[1].header("Date").as_deref(),
        Some("Thu, 01 Jan 2026 00:01:30 +0000")
    );
    // The EHLO name follows the message id domain unless set.
    assert_eq!(sent[0].ehlo, "relay.example.net");
}

#[tokio::test]
async fn html_alone_and_text_with_html_as_alternatives() {
    let sink = Sink::start(Options::default()).await;
    let smtp = connector(&sink, clock::system(), |c| {
        c.hello_name = Some("mx1.example.com".into());
    });
    let html_only =
        r#"{"to": ["ada@example.org"], "subject": "s", "html": "<p>Hello <b>Ada</b></p>"}"#;
    let both = r#"{"to": ["ada@example.org"], "subject": "s", "text": "Hello Ada", "html": "<p>Hello <b>Ada</b></p>"}"#;
    assert_eq!(
        smtp.deliver(&delivery(html_only, 1)).await.outcome,
        Outcome::Success
    );
    assert_eq!(
        smtp.deliver(&delivery(both, 1)).await.outcome,
        Outcome::Success
    );

    let sent = sink.transactions();
    assert_eq!(sent[0].ehlo, "mx1.example.com");
    let content_type = sent[0].header("Content-Type").unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert_eq!(sent[0].body(), "<p>Hello <b>Ada</b></p>\r\n");

    let content_type = sent[1].header("Content-Type").unwrap();
    assert!(
        content_type.starts_with("multipart/alternative;"),
        "{content_type}"
    );
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .unwrap()
        .trim_matches('"');
    let parts: Vec<&str> = sent[1]
        .body()
        .split(&format!("--{boundary}"))
        .map(str::trim)
        .filter(|p| !p.is_empty() && *p != "--")
        .collect();
    assert_eq!(parts.len(), 2, "{parts:#?}");
    // Plain text first, HTML last: clients show the last part they understand.
    assert!(
        parts[0].starts_with("Content-Type: text/plain"),
        "{}",
        parts[0]
    );
    assert!(parts[0].ends_with("Hello Ada"), "{}", parts[0]);
    assert!(
        parts[1].starts_with("Content-Type: text/html"),
        "{}",
        parts[1]
    );
    assert!(
        parts[1].ends_with("<p>Hello <b>Ada</b></p>"),
        "{}",
        parts[1]
    );
}

#[tokio::test]
async fn non_ascii_text_is_encoded() {
    let sink = Sink::start(Options::default()).await;
    let smtp = connector(&sink, clock::system(), |_| {});
    let payload = r#"{"to": ["Zoë <zoe@example.org>"], "subject": "Café ☕ prêt", "text": "Le café est prêt ☕"}"#;
    let result = smtp.deliver(&delivery(payload, 1)).await;
    assert_eq!(result.outcome, Outcome::Success, "{}", result.detail);
    let sent = sink.transactions();
    let sent = only(&sent);
    assert!(sent.data.is_ascii(), "{}", sent.data);
    let subject = sent.header("Subject").unwrap();
    assert!(subject.starts_with("=?utf-8?"), "{subject}");
    assert!(sent.header("Content-Transfer-Encoding").is_some());
    assert_eq!(sent.rcpt_to, ["zoe@example.org"]);
}

#[tokio::test]
async fn bcc_recipients_get_rcpt_but_no_header() {
    let sink = Sink::start(Options::default()).await;
    let smtp = connector(&sink, clock::system(), |_| {});
    let payload = r#"{"to": ["ada@example.org"], "bcc": ["audit@example.com", "Boss <boss@example.com>"],
                      "subject": "s", "text": "t"}"#;
    assert_eq!(
        smtp.deliver(&delivery(payload, 1)).await.outcome,
        Outcome::Success
    );
    let sent = sink.transactions();
    let sent = only(&sent);
    assert_eq!(
        sent.rcpt_to,
        ["ada@example.org", "audit@example.com", "boss@example.com"]
    );
    assert_eq!(sent.header("Bcc"), None);
    assert!(!sent.data.contains("audit@"), "{}", sent.data);
    assert!(!sent.data.contains("boss@"), "{}", sent.data);

    // Bcc alone is enough: the message is sent to undisclosed recipients.
    let payload = r#"{"to": [], "bcc": ["audit@example.com"], "subject": "s", "text": "t"}"#;
    assert_eq!(
        smtp.deliver(&delivery(payload, 1)).await.outcome,
        Outcome::Success
    );
    assert_eq!(sink.transactions()[1].rcpt_to, ["audit@example.com"]);
}

#[tokio::test]
async fn authenticates_with_the_configured_credentials() {
    for (mechanisms, expected) in [("PLAIN LOGIN", "AUTH PLAIN"), ("LOGIN", "AUTH LOGIN")] {
        let sink = Sink::start(Options {
            auth: Some(("relay@example.com", PASSWORD)),
            mechanisms,
            ..Options::default()
        })
        .await;
        let smtp = connector(&sink, clock::system(), |c| {
            c.username = Some("relay@example.com".into());
            c.password = Some(SmtpPassword::new(PASSWORD));
        });
        let result = smtp.deliver(&delivery(SIMPLE, 1)).await;
        assert_eq!(
            result.outcome,
            Outcome::Success,
            "{mechanisms}: {}",
            result.detail
        );
        let sent = sink.transactions();
        assert_eq!(
            only(&sent).auth,
            Some(("relay@example.com".to_owned(), PASSWORD.to_owned()))
        );
        assert!(
            sink.commands().iter().any(|c| c.starts_with(expected)),
            "{mechanisms}: {:?}",
            sink.commands()
        );
    }
}

#[tokio::test]
async fn rejected_or_missing_credentials_signal_unauthorized() {
    let sink = Sink::start(Options {
        auth: Some(("relay@example.com", "the-right-one")),
        ..Options::default()
    })
    .await;
    let wrong = connector(&sink, clock::system(), |c| {
        c.username = Some("relay@example.com".into());
        c.password = Some(SmtpPassword::new(PASSWORD));
    });
    let result = wrong.deliver(&delivery(SIMPLE, 1)).await;
    assert_eq!(result.outcome, Outcome::Permanent);
    assert_eq!(result.code, Some(535));
    assert_eq!(
        result.detail,
        "535 5.7.8 Authentication credentials invalid"
    );
    assert_eq!(result.signal, Some(Signal::Unauthorized));
    assert!(!format!("{result:?}").contains(PASSWORD));

    let anonymous = connector(&sink, clock::system(), |_| {});
    let result = anonymous.deliver(&delivery(SIMPLE, 1)).await;
    assert_eq!(result.outcome, Outcome::Permanent);
    assert_eq!(result.code, Some(530));
    assert_eq!(result.detail, "530 5.7.0 Authentication required");
    assert_eq!(result.signal, Some(Signal::Unauthorized));
    assert!(sink.transactions().is_empty());
}

#[tokio::test]
async fn reuses_a_pooled_connection() {
    let sink = Sink::start(Options::default()).await;
    let smtp = connector(&sink, clock::system(), |_| {});
    assert_eq!(
        smtp.deliver(&delivery(SIMPLE, 1)).await.outcome,
        Outcome::Success
    );
    settle().await;
    // A clone shares the pool.
    let clone = smtp.clone();
    assert_eq!(
        clone.deliver(&delivery(SIMPLE, 2)).await.outcome,
        Outcome::Success
    );

    assert_eq!(sink.connections(), 1);
    let sent = sink.transactions();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|t| t.connection == 1));
    let ehlos = sink
        .commands()
        .iter()
        .filter(|c| c.starts_with("EHLO"))
        .count();
    assert_eq!(ehlos, 1, "{:?}", sink.commands());
    // lettre checks a pooled connection with NOOP before reusing it.
    assert!(sink.commands().contains(&"NOOP".to_owned()));
}

/// One scripted failure and what the connector must make of it.
struct Case {
    name: &'static str,
    script: fn(&mut sink::Script),
    payload: &'static str,
    outcome: Outcome,
    code: Option<i32>,
    detail: &'static str,
}

#[tokio::test]
async fn classifies_every_kind_of_reply() {
    const TWO: &str =
        r#"{"to": ["ada@example.org", "nobody@example.org"], "subject": "s", "text": "t"}"#;
    let cases = [
        Case {
            name: "busy mailbox at RCPT",
            script: |s| s.rcpt.push_back(Answer::Reply("450 4.2.1 mailbox busy")),
            payload: SIMPLE,
            outcome: Outcome::Transient,
            code: Some(450),
            detail: "450 4.2.1 mailbox busy",
        },
        Case {
            name: "unknown user at RCPT",
            script: |s| s.rcpt.push_back(Answer::Reply("550 5.1.1 user unknown")),
            payload: SIMPLE,
            outcome: Outcome::Permanent,
            code: Some(550),
            detail: "550 5.1.1 user unknown",
        },
        Case {
            name: "the second of two recipients unknown",
            script: |s| {
                s.rcpt.push_back(Answer::Ok);
                s.rcpt.push_back(Answer::Reply("550 5.1.1 user unknown"));
            },
            payload: TWO,
            outcome: Outcome::Permanent,
            code: Some(550),
            detail: "550 5.1.1 user unknown",
        },
        Case {
            name: "shutting down after DATA",
            script: |s| {
                s.data_end
                    .push_back(Answer::Reply("421 4.3.2 shutting down"))
            },
            payload: SIMPLE,
            outcome: Outcome::Transient,
            code: Some(421),
            detail: "421 4.3.2 shutting down",
        },
        Case {
            name: "shutting down at the greeting",
            script: |s| {
                s.greeting
                    .push_back(Answer::Reply("421 4.3.2 shutting down"))
            },
            payload: SIMPLE,
            outcome: Outcome::Transient,
            code: Some(421),
            detail: "421 4.3.2 shutting down",
        },
        Case {
            name: "out of storage at MAIL",
            script: |s| {
                s.mail
                    .push_back(Answer::Reply("452 4.3.1 insufficient system storage"))
            },
            payload: SIMPLE,
            outcome: Outcome::Transient,
            code: Some(452),
            detail: "452 4.3.1 insufficient system storage",
        },
        Case {
            name: "a multi-line rejection after DATA",
            script: |s| {
                s.data_end.push_back(Answer::Reply(
                    "554-5.7.1 message rejected as spam\r\n554 5.7.1 see https://postmaster.example",
                ));
            },
            payload: SIMPLE,
            outcome: Outcome::Permanent,
            code: Some(554),
            detail: "554 5.7.1 message rejected as spam see https://postmaster.example",
        },
        Case {
            name: "a reply without an enhanced code",
            script: |s| s.rcpt.push_back(Answer::Reply("551 User not local")),
            payload: SIMPLE,
            outcome: Outcome::Permanent,
            code: Some(551),
            detail: "551 User not local",
        },
        Case {
            name: "connection closed at RCPT",
            script: |s| s.rcpt.push_back(Answer::Close),
            payload: SIMPLE,
            outcome: Outcome::Transient,
            code: None,
            detail: "bad or missing reply",
        },
    ];
    for case in cases {
        let sink = Sink::start(Options::default()).await;
        sink.script(case.script);
        let smtp = connector(&sink, clock::system(), |_| {});
        let result = smtp.deliver(&delivery(case.payload, 1)).await;
        assert_eq!(
            result.outcome, case.outcome,
            "{}: {}",
            case.name, result.detail
        );
        assert_eq!(result.code, case.code, "{}: {}", case.name, result.detail);
        assert!(
            result.detail.starts_with(case.detail),
            "{}: {}",
            case.name,
            result.detail
        );
        assert_eq!(result.signal, None, "{}", case.name);
        assert_eq!(
            result.output, None,
            "{}: a failure has no output",
            case.name
        );
        // After a failure the next attempt starts afresh and succeeds.
        settle().await;
        let retry = smtp.deliver(&delivery(case.payload, 2)).await;
        assert_eq!(
            retry.outcome,
            Outcome::Success,
            "{}: retry: {}",
            case.name,
            retry.detail
        );
    }
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut config = SmtpConfig::new("127.0.0.1", FROM);
    config.port = Some(port);
    config.tls = TlsMode::None;
    let smtp = SmtpConnector::new(config, clock::system()).unwrap();
    let result = smtp.deliver(&delivery(SIMPLE, 1)).await;
    assert_eq!(result.outcome, Outcome::Transient, "{}", result.detail);
    assert_eq!(result.code, None);
    assert!(
        result
            .detail
            .starts_with(&format!("connection failed (127.0.0.1:{port}, tls none)")),
        "{}",
        result.detail
    );
}

#[tokio::test]
async fn a_stalled_server_times_out_and_its_connection_is_not_reused() {
    let sink = Sink::start(Options::default()).await;
    sink.script(|s| s.data_end.push_back(Answer::Stall));
    let clock = ManualClock::new();
    let smtp = connector(&sink, clock.shared(), |c| {
        c.timeout = Duration::from_secs(5)
    });

    let attempt = tokio::spawn({
        let smtp = smtp.clone();
        async move { smtp.deliver(&delivery(SIMPLE, 1)).await }
    });
    // The server has the whole message and never answers.
    sink.wait_until(|_, sent| sent.len() == 1).await;
    clock.advance(Duration::from_secs(5));
    let result = attempt.await.unwrap();
    assert_eq!(result.outcome, Outcome::Transient);
    assert_eq!(result.code, None);
    assert_eq!(result.detail, "timed out after 5s");
    assert_eq!(result.duration, Duration::from_secs(5));

    // The stalled connection is abandoned: the retry opens a new one and succeeds. (Were it
    // reused, its NOOP would never be answered; real time bounds that failure.)
    settle().await;
    let retry = tokio::time::timeout(Duration::from_secs(10), smtp.deliver(&delivery(SIMPLE, 2)))
        .await
        .expect("the retry reused the stalled connection");
    assert_eq!(retry.outcome, Outcome::Success, "{}", retry.detail);
    assert_eq!(sink.connections(), 2);
    let sent = sink.transactions();
    assert_eq!(sent[1].connection, 2);
    assert_eq!(sent[0].header("Message-ID"), sent[1].header("Message-ID"));
}

#[tokio::test]
async fn a_stall_before_data_times_out_too() {
    let sink = Sink::start(Options::default()).await;
    sink.script(|s| s.rcpt.push_back(Answer::Stall));
    let clock = ManualClock::new();
    let smtp = connector(&sink, clock.shared(), |c| {
        c.timeout = Duration::from_secs(2)
    });
    let attempt = tokio::spawn({
        let smtp = smtp.clone();
        async move { smtp.deliver(&delivery(SIMPLE, 1)).await }
    });
    sink.wait_until(|commands, _| commands.iter().any(|c| c.starts_with("RCPT")))
        .await;
    clock.advance(Duration::from_secs(2));
    let result = attempt.await.unwrap();
    assert_eq!(
        (result.outcome, result.detail.as_str()),
        (Outcome::Transient, "timed out after 2s")
    );
    assert!(sink.transactions().is_empty());
}

#[tokio::test]
async fn invalid_payloads_and_ids_are_permanent_without_connecting() {
    let sink = Sink::start(Options::default()).await;
    let smtp = connector(&sink, clock::system(), |_| {});
    let result = smtp
        .deliver(&delivery(
            r#"{"to": ["nobody"], "subject": "s", "text": "t"}"#,
            1,
        ))
        .await;
    assert_eq!(result.outcome, Outcome::Permanent);
    assert!(
        result
            .detail
            .starts_with("invalid payload: invalid `to[0]`"),
        "{}",
        result.detail
    );

    let bad_id = Delivery {
        message_id: "not <a> dot-atom",
        ..delivery(SIMPLE, 1)
    };
    let result = smtp.deliver(&bad_id).await;
    assert_eq!(result.outcome, Outcome::Permanent);
    assert_eq!(smtp.message_id_for("not <a> dot-atom"), None);
    assert_eq!(sink.connections(), 0);
}

#[test]
fn payload_validation_names_the_field() {
    let field = |json: &str| validate_payload(json).unwrap_err().field().to_owned();
    let many: Vec<String> = (0..MAX_RECIPIENTS)
        .map(|i| format!("\"u{i}@example.org\""))
        .collect();
    let too_many = format!(
        r#"{{"to": [{}], "bcc": ["one@example.org"], "subject": "s", "text": "t"}}"#,
        many.join(",")
    );
    let long_subject = format!(
        r#"{{"to": ["a@example.org"], "subject": "{}", "text": "t"}}"#,
        "x".repeat(MAX_SUBJECT_CHARS + 1)
    );
    let cases: &[(&str, &str)] = &[
        ("not json", "payload"),
        (r#"["a@example.org"]"#, "payload"),
        (r#"{"subject": "s", "text": "t"}"#, "to"),
        (r#"{"to": [], "subject": "s", "text": "t"}"#, "to"),
        (
            r#"{"to": "a@example.org", "subject": "s", "text": "t"}"#,
            "to",
        ),
        (
            r#"{"to": ["a@example.org", "nobody"], "subject": "s", "text": "t"}"#,
            "to[1]",
        ),
        (
            r#"{"to": ["a@example.org", 7], "subject": "s", "text": "t"}"#,
            "to[1]",
        ),
        (
            r#"{"to": ["a@example.org\r\nBcc: x@evil.example"], "subject": "s", "text": "t"}"#,
            "to[0]",
        ),
        (
            r#"{"to": ["a@example.org"], "cc": ["Eve <eve@example.org>\n"], "subject": "s", "text": "t"}"#,
            "cc[0]",
        ),
        (
            r#"{"to": ["a@example.org"], "bcc": {"x": 1}, "subject": "s", "text": "t"}"#,
            "bcc",
        ),
        (r#"{"to": ["a@example.org"], "text": "t"}"#, "subject"),
        (
            r#"{"to": ["a@example.org"], "subject": "hi\r\nBcc: x@evil.example", "text": "t"}"#,
            "subject",
        ),
        (
            r#"{"to": ["a@example.org"], "subject": "tab\there", "text": "t"}"#,
            "subject",
        ),
        (
            r#"{"to": ["a@example.org"], "subject": 5, "text": "t"}"#,
            "subject",
        ),
        (r#"{"to": ["a@example.org"], "subject": "s"}"#, "text"),
        (
            r#"{"to": ["a@example.org"], "subject": "s", "text": null}"#,
            "text",
        ),
        (
            r#"{"to": ["a@example.org"], "subject": "s", "text": ["t"]}"#,
            "text",
        ),
        (
            r#"{"to": ["a@example.org"], "subject": "s", "html": 1}"#,
            "html",
        ),
        (
            r#"{"to": ["a@example.org"], "subject": "s", "text": "t", "reply_to": "nope"}"#,
            "reply_to",
        ),
        (
            r#"{"to": ["a@example.org"], "subject": "s", "text": "t", "in_reply_to": "no-at-sign"}"#,
            "in_reply_to",
        ),
        (
            r#"{"to": ["a@example.org"], "subject": "s", "text": "t", "in_reply_to": "<a@b>\r\nX: y"}"#,
            "in_reply_to",
        ),
        (
            r#"{"to": ["a@example.org"], "subject": "s", "text": "t", "references": ["<a@b>", "<c d@e>"]}"#,
            "references[1]",
        ),
        (
            r#"{"to": ["a@example.org"], "subject": "s", "text": "t", "references": 3}"#,
            "references",
        ),
        (
            r#"{"to": ["a@example.org"], "subject": "s", "text": "t", "bc": ["x@example.org"]}"#,
            "bc",
        ),
    ];
    for (json, expected) in cases {
        assert_eq!(field(json), *expected, "{json}");
    }
    assert_eq!(field(&too_many), "bcc[0]");
    assert_eq!(field(&long_subject), "subject");

    let err =
        validate_payload(r#"{"to": ["a@example.org", "nobody"], "subject": "s", "text": "t"}"#)
            .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid `to[1]`: not an e-mail address"),
        "{err}"
    );

    // Exactly the limit is fine; so is a references string.
    let at_limit = format!(
        r#"{{"to": [{}], "subject": "s", "html": "<p>h</p>"}}"#,
        many.join(",")
    );
    assert_eq!(
        validate_payload(&at_limit).unwrap().recipient_count(),
        MAX_RECIPIENTS
    );
    let email = validate_payload(
        r#"{"to": ["a@example.org"], "subject": "", "text": "t", "references": "<a@b> c@d", "cc": null}"#,
    )
    .unwrap();
    assert_eq!(email.references, ["<a@b>", "<c@d>"]);
    assert!(email.cc.is_empty() && email.html.is_none());
}

#[test]
fn config_defaults_and_unknown_fields() {
    let config: SmtpConfig =
        toml::from_str("host = \"smtp.example.com\"\nfrom = \"relay@example.com\"").unwrap();
    assert_eq!(
        config,
        SmtpConfig::new("smtp.example.com", "relay@example.com")
    );
    assert_eq!(config.tls, TlsMode::Starttls);
    assert_eq!(config.effective_port(), 587);
    assert_eq!(config.timeout, Duration::from_secs(30));
    assert_eq!(config.pool.max_size, 4);
    assert_eq!(config.pool.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.validate().map_err(|e| e.to_string()), Ok(()));

    for (tls, port) in [("none", 25), ("starttls", 587), ("tls", 465)] {
        let config: SmtpConfig = toml::from_str(&format!(
            "host = \"h.example\"\nfrom = \"a@example.com\"\ntls = \"{tls}\""
        ))
        .unwrap();
        assert_eq!(config.effective_port(), port, "{tls}");
    }
    let config: SmtpConfig = toml::from_str(
        "host = \"h.example\"\nport = 2525\nfrom = \"a@example.com\"\ntls = \"tls\"\n\
         username = \"u\"\npassword = \"p\"\ntimeout = \"1m\"\npool = { max_size = 1, idle_timeout = \"5s\" }",
    )
    .unwrap();
    assert_eq!(config.effective_port(), 2525);
    assert_eq!(config.timeout, Duration::from_secs(60));
    assert_eq!(
        config.pool,
        SmtpPoolConfig {
            max_size: 1,
            idle_timeout: Duration::from_secs(5)
        }
    );
    assert!(SmtpConnector::new(config, clock::system()).is_ok());

    let unknown =
        toml::from_str::<SmtpConfig>("host = \"h\"\nfrom = \"a@example.com\"\nretries = 3");
    assert!(unknown.unwrap_err().to_string().contains("retries"));
    let unknown =
        toml::from_str::<SmtpConfig>("host = \"h\"\nfrom = \"a@example.com\"\npool = { size = 3 }");
    assert!(unknown.unwrap_err().to_string().contains("size"));
    let bad_tls =
        toml::from_str::<SmtpConfig>("host = \"h\"\nfrom = \"a@example.com\"\ntls = \"ssl\"");
    assert!(bad_tls.is_err());
}

#[test]
fn validation_names_the_field() {
    let check = |edit: &dyn Fn(&mut SmtpConfig)| {
        let mut config = SmtpConfig::new("smtp.example.com", FROM);
        edit(&mut config);
        let err = config.validate().unwrap_err();
        // The constructor refuses what validate refuses.
        let built = SmtpConnector::new(config, clock::system()).unwrap_err();
        assert_eq!(built.field(), err.field());
        assert!(!err.to_string().contains(PASSWORD), "{err}");
        err.field().unwrap_or_default().to_owned()
    };
    let password = || Some(SmtpPassword::new(PASSWORD));
    assert_eq!(check(&|c| c.host = String::new()), "host");
    assert_eq!(check(&|c| c.host = "smtp example.com".into()), "host");
    assert_eq!(
        check(&|c| c.host = "smtp://smtp.example.com".into()),
        "host"
    );
    assert_eq!(check(&|c| c.port = Some(0)), "port");
    assert_eq!(check(&|c| c.username = Some("u".into())), "password");
    assert_eq!(check(&|c| c.password = password()), "username");
    assert_eq!(
        check(&|c| {
            c.username = Some(String::new());
            c.password = password();
        }),
        "username"
    );
    assert_eq!(
        check(&|c| {
            c.username = Some("u".into());
            c.password = Some(SmtpPassword::new("a\r\nRSET"));
        }),
        "password"
    );
    assert_eq!(check(&|c| c.from = "not a mailbox".into()), "from");
    assert_eq!(
        check(&|c| c.from = "relay@example.com\r\nBcc: x@evil.example".into()),
        "from"
    );
    assert_eq!(
        check(&|c| c.from = "relay@bücher.example".into()),
        "message_id_domain"
    );
    assert_eq!(
        check(&|c| c.message_id_domain = Some("bad domain".into())),
        "message_id_domain"
    );
    assert_eq!(
        check(&|c| c.message_id_domain = Some("a..b".into())),
        "message_id_domain"
    );
    assert_eq!(check(&|c| c.hello_name = Some("<x>".into())), "hello_name");
    assert_eq!(check(&|c| c.timeout = Duration::ZERO), "timeout");
    assert_eq!(check(&|c| c.pool.max_size = 0), "pool.max_size");
    assert_eq!(
        check(&|c| c.pool.idle_timeout = Duration::ZERO),
        "pool.idle_timeout"
    );

    // An internationalised sender domain is fine with an explicit message id domain.
    let mut config = SmtpConfig::new("127.0.0.1", "relay@bücher.example");
    config.message_id_domain = Some("relay.example.com".into());
    assert_eq!(config.validate().map_err(|e| e.to_string()), Ok(()));
}

#[test]
fn debug_and_serialize_hide_the_password() {
    let mut config = SmtpConfig::new("smtp.example.com", FROM);
    config.username = Some("relay@example.com".into());
    config.password = Some(SmtpPassword::new(PASSWORD));
    let debug = format!("{config:?}");
    let json = serde_json::to_string(&config).unwrap();
    let toml = toml::to_string(&config).unwrap();
    for shown in [&debug, &json, &toml] {
        assert!(shown.contains("***"), "{shown}");
        assert!(shown.contains("relay@example.com"), "{shown}");
        assert!(!shown.contains(PASSWORD), "password leaked: {shown}");
    }
    let smtp = SmtpConnector::new(config, clock::system()).unwrap();
    let debug = format!("{smtp:?}");
    assert!(!debug.contains(PASSWORD), "password leaked: {debug}");
    assert!(debug.contains("smtp.example.com"), "{debug}");
    let any = AnyConnector::from(smtp);
    assert!(!format!("{any:?}").contains(PASSWORD));
}

#[tokio::test]
async fn any_connector_delegates_to_smtp() {
    let sink = Sink::start(Options::default()).await;
    let any = AnyConnector::from(connector(&sink, clock::system(), |_| {}));
    let result = any.deliver(&delivery(SIMPLE, 1)).await;
    assert_eq!(result.outcome, Outcome::Success, "{}", result.detail);
    assert_eq!(sink.transactions().len(), 1);
}

#[test]
fn a_connector_dropped_outside_a_runtime_does_not_panic() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let smtp = runtime.block_on(async {
        let sink = Sink::start(Options::default()).await;
        let smtp = connector(&sink, clock::system(), |_| {});
        assert_eq!(
            smtp.deliver(&delivery(SIMPLE, 1)).await.outcome,
            Outcome::Success
        );
        smtp
    });
    drop(runtime);
    drop(smtp);
}

/// `ca`'s certificate in a PEM file, kept while the returned directory lives.
fn root_ca_file(ca: &TestCa) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, &ca.pem).unwrap();
    (dir, path)
}

/// A sink serving `tls` and a connector to it in `mode`, trusting `root` (a PEM path) if
/// given; the connector names the server `127.0.0.1`, which the sink's certificate covers.
async fn tls_pair(
    tls: SinkTls,
    mode: TlsMode,
    root: Option<&std::path::Path>,
) -> (Sink, SmtpConnector) {
    let sink = Sink::start(Options {
        tls,
        ..Options::default()
    })
    .await;
    let mut config = SmtpConfig::new("127.0.0.1", FROM);
    config.port = Some(sink.addr.port());
    config.tls = mode;
    config.tls_root_ca = root.map(ToOwned::to_owned);
    let smtp = SmtpConnector::new(config, clock::system()).unwrap();
    (sink, smtp)
}

/// The message `SIMPLE` as the sink recorded it, checked header by header, over TLS.
fn assert_simple_arrived_over_tls(sink: &Sink) {
    let sent = sink.transactions();
    let sent = only(&sent);
    assert!(sent.tls, "the message crossed in clear: {sent:#?}");
    assert_eq!(sent.mail_from, "relay@example.com");
    assert_eq!(sent.rcpt_to, ["ada@example.org"]);
    assert_eq!(sent.header("From").unwrap(), FROM);
    assert_eq!(sent.header("To").unwrap(), "ada@example.org");
    assert_eq!(sent.header("Subject").unwrap(), "Build 42 passed");
    assert_eq!(
        sent.header("Message-ID").unwrap(),
        format!("<{MESSAGE_ID}@example.com>")
    );
    assert_eq!(sent.body(), "All green.\r\n");
}

#[tokio::test]
async fn delivers_over_starttls_to_a_server_of_the_configured_root_ca() {
    let ca = TestCa::new("ferrule test CA");
    let (_dir, root) = root_ca_file(&ca);
    let (sink, smtp) = tls_pair(SinkTls::starttls(&ca), TlsMode::Starttls, Some(&root)).await;

    let result = smtp.deliver(&delivery(SIMPLE, 1)).await;
    assert_eq!(result.outcome, Outcome::Success, "{}", result.detail);
    assert_eq!(result.code, Some(250));
    assert_simple_arrived_over_tls(&sink);
    // EHLO in clear, STARTTLS, then EHLO again inside TLS before the transaction.
    let commands = sink.commands();
    let verbs: Vec<&str> = commands
        .iter()
        .map(|c| c.split([' ', ':']).next().unwrap())
        .collect();
    assert_eq!(
        verbs[..5],
        ["EHLO", "STARTTLS", "EHLO", "MAIL", "RCPT"],
        "{commands:?}"
    );
}

#[tokio::test]
async fn delivers_over_implicit_tls_to_a_server_of_the_configured_root_ca() {
    let ca = TestCa::new("ferrule test CA");
    let (_dir, root) = root_ca_file(&ca);
    let (sink, smtp) = tls_pair(SinkTls::implicit(&ca), TlsMode::Tls, Some(&root)).await;

    let result = smtp.deliver(&delivery(SIMPLE, 1)).await;
    assert_eq!(result.outcome, Outcome::Success, "{}", result.detail);
    assert_simple_arrived_over_tls(&sink);
    assert!(!sink.commands().iter().any(|c| c == "STARTTLS"));
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_refused_permanently_before_any_mail() {
    let ca = TestCa::new("ferrule test CA");
    let other = TestCa::new("some other CA");
    let (_dir, other_root) = root_ca_file(&other);
    for (tls, mode) in [
        (SinkTls::starttls(&ca), TlsMode::Starttls),
        (SinkTls::implicit(&ca), TlsMode::Tls),
    ] {
        // The platform's roots alone, and a root file of another CA: neither trusts it.
        for root in [None, Some(other_root.as_path())] {
            let (sink, smtp) = tls_pair(tls.clone(), mode, root).await;
            let result = smtp.deliver(&delivery(SIMPLE, 1)).await;
            assert_eq!(
                result.outcome,
                Outcome::Permanent,
                "{mode:?} {root:?}: {}",
                result.detail
            );
            assert_eq!(result.code, None);
            assert!(
                result.detail.starts_with("TLS refused") && result.detail.contains("certificate"),
                "{mode:?}: {}",
                result.detail
            );
            assert!(sink.transactions().is_empty());
            assert!(
                !sink.commands().iter().any(|c| c.starts_with("MAIL")),
                "{:?}",
                sink.commands()
            );
        }
    }
}

#[tokio::test]
async fn starttls_never_falls_back_to_clear_text() {
    // A server that does not offer STARTTLS, and a connector with credentials to lose.
    let sink = Sink::start(Options {
        auth: Some(("relay@example.com", PASSWORD)),
        ..Options::default()
    })
    .await;
    let mut config = SmtpConfig::new("127.0.0.1", FROM);
    config.port = Some(sink.addr.port());
    config.tls = TlsMode::Starttls;
    config.username = Some("relay@example.com".into());
    config.password = Some(SmtpPassword::new(PASSWORD));
    let smtp = SmtpConnector::new(config, clock::system()).unwrap();

    let result = smtp.deliver(&delivery(SIMPLE, 1)).await;
    assert_eq!(result.outcome, Outcome::Permanent, "{}", result.detail);
    assert!(result.detail.contains("STARTTLS"), "{}", result.detail);
    assert!(sink.transactions().is_empty());
    let commands = sink.commands();
    assert!(
        commands
            .iter()
            .all(|c| c.starts_with("EHLO") || c.starts_with("QUIT")),
        "only EHLO (and QUIT) may cross in clear: {commands:?}"
    );
}

#[tokio::test]
async fn a_tls_handshake_cut_short_is_transient() {
    // A server that accepts the connection and closes it before the TLS handshake ends.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            drop(stream);
        }
    });
    let mut config = SmtpConfig::new("127.0.0.1", FROM);
    config.port = Some(port);
    config.tls = TlsMode::Tls;
    let smtp = SmtpConnector::new(config, clock::system()).unwrap();
    let result = smtp.deliver(&delivery(SIMPLE, 1)).await;
    assert_eq!(result.outcome, Outcome::Transient, "{}", result.detail);
    assert!(
        !result.detail.starts_with("TLS refused"),
        "{}",
        result.detail
    );
    server.abort();
}

#[test]
fn tls_root_ca_is_read_and_checked_when_built() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca = TestCa::new("ferrule test CA");
    let other = TestCa::new("some other CA");
    let bundle = write(
        "bundle.pem",
        &format!("# two roots\n{}{}", ca.pem, other.pem),
    );
    let empty = write("empty.pem", "");
    let key_only = write(
        "key.pem",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let not_der = write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    );
    let broken = write(
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    );
    let missing = dir.path().join("missing.pem");

    let config = |path: &std::path::Path, tls: TlsMode| {
        let mut config = SmtpConfig::new("smtp.example.com", FROM);
        config.tls = tls;
        config.tls_root_ca = Some(path.to_owned());
        config
    };
    for tls in [TlsMode::Starttls, TlsMode::Tls] {
        let good = config(&bundle, tls);
        assert_eq!(good.validate().map_err(|e| e.to_string()), Ok(()));
        assert!(SmtpConnector::new(good, clock::system()).is_ok());
    }
    for (path, tls, expected) in [
        (&missing, TlsMode::Starttls, "cannot be read"),
        (&empty, TlsMode::Starttls, "holds no certificate"),
        (&key_only, TlsMode::Tls, "holds no certificate"),
        (&broken, TlsMode::Starttls, "is not valid PEM"),
        (&not_der, TlsMode::Starttls, "not usable as a root"),
        (&bundle, TlsMode::None, "has no use with `tls = \"none\"`"),
    ] {
        let err = config(path, tls).validate().unwrap_err();
        assert_eq!(err.field(), Some("tls_root_ca"), "{path:?}: {err}");
        let message = err.to_string();
        assert!(message.contains(expected), "{path:?}: {message}");
        if tls != TlsMode::None {
            assert!(
                message.contains(&path.display().to_string()),
                "names the file: {message}"
            );
        }
        let built = SmtpConnector::new(config(path, tls), clock::system()).unwrap_err();
        assert_eq!(built.field(), Some("tls_root_ca"));
    }
    let parsed: SmtpConfig = toml::from_str(
        "host = \"h.example\"\nfrom = \"a@example.com\"\ntls_root_ca = \"/etc/ferrule/ca.pem\"",
    )
    .unwrap();
    assert_eq!(
        parsed.tls_root_ca.as_deref(),
        Some(std::path::Path::new("/etc/ferrule/ca.pem"))
    );
}
