//! SMTP destinations end to end: the real relay and router, an SMTP sink on 127.0.0.1.

use std::time::Duration;

use ferrule::config::{DestinationConfig, DestinationKind};
use ferrule_connectors::smtp::TlsMode;
use serde_json::json;

use crate::smtp_sink::{SmtpSink, TestCa};
use crate::support::start;

const WAIT: Duration = Duration::from_secs(10);

/// An SMTP destination `name` on the loopback `port`, plain text, retrying after 1 s.
pub(crate) fn smtp(name: &str, port: u16) -> DestinationConfig {
    DestinationConfig {
        name: name.into(),
        kind: DestinationKind::Smtp,
        host: Some("127.0.0.1".into()),
        port: Some(port),
        tls: Some(TlsMode::None),
        from: Some("ferrule <relay@example.com>".into()),
        timeout: Some(Duration::from_secs(5)),
        retry: Some(json!({
            "backoff": {"kind": "fixed", "delay": "1s"},
            "jitter": "none",
            "max_attempts": 3,
        })),
        ..DestinationConfig::default()
    }
}

#[tokio::test]
async fn an_email_is_delivered_with_a_message_id_from_the_ferrule_id() {
    let sink = SmtpSink::start().await;
    let port = sink.port;
    let relay = start(|c| c.destinations.push(smtp("mail", port))).await;
    let id = relay
        .submit(
            "mail",
            json!({
                "to": ["Ops <ops@example.org>"],
                "cc": ["audit@example.org"],
                "subject": "Disk almost full",
                "text": "Only 2 % left on /var.",
            }),
        )
        .await;
    relay.wait_for_status(&id, "delivered", WAIT).await;
    let mails = sink.wait_for_mails(1, WAIT).await;
    let mail = &mails[0];
    assert_eq!(mail.from, "relay@example.com");
    assert_eq!(mail.to, ["ops@example.org", "audit@example.org"]);
    assert_eq!(mail.header("Subject").unwrap(), "Disk almost full");
    assert_eq!(
        mail.header("Message-ID").unwrap(),
        format!("<{id}@example.com>")
    );
    assert!(
        mail.data.contains("Only 2 % left on /var."),
        "{}",
        mail.data
    );
}

#[tokio::test]
async fn a_permanent_smtp_refusal_dead_letters_with_the_enhanced_code() {
    let sink = SmtpSink::start().await;
    sink.refuse("nobody@example.org", "550 5.1.1 no such user");
    let port = sink.port;
    let relay = start(|c| c.destinations.push(smtp("mail", port))).await;
    let id = relay
        .submit(
            "mail",
            json!({"to": ["nobody@example.org"], "subject": "s", "text": "t"}),
        )
        .await;
    let message = relay.wait_for_status(&id, "dead", WAIT).await;
    assert_eq!(message["attempts"], 1, "5xx is not retried: {message:#}");
    let error = message["last_error"].as_str().unwrap();
    assert!(error.contains("5.1.1"), "{message:#}");
    assert!(sink.mails().is_empty());
}

#[tokio::test]
async fn a_transient_smtp_refusal_is_retried() {
    let sink = SmtpSink::start().await;
    sink.refuse("busy@example.org", "451 4.3.0 try again later");
    let port = sink.port;
    let relay = start(|c| c.destinations.push(smtp("mail", port))).await;
    let id = relay
        .submit(
            "mail",
            json!({"to": ["busy@example.org"], "subject": "s", "text": "t"}),
        )
        .await;
    let message = relay.wait_for_status(&id, "retrying", WAIT).await;
    assert!(
        message["last_error"].as_str().unwrap().contains("4.3.0"),
        "{message:#}"
    );
}

#[tokio::test]
async fn an_email_is_delivered_over_starttls_to_a_server_of_a_private_ca() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mail-ca.pem");
    std::fs::write(&root, &ca.pem).unwrap();
    let sink = SmtpSink::start_starttls(&ca).await;
    let port = sink.port;
    let relay = start(|c| {
        let mut mail = smtp("mail", port);
        mail.tls = Some(TlsMode::Starttls);
        mail.tls_root_ca = Some(root.clone());
        c.destinations.push(mail);
    })
    .await;
    let id = relay
        .submit(
            "mail",
            json!({"to": ["ops@example.org"], "subject": "Private CA", "text": "Sealed."}),
        )
        .await;
    let message = relay.wait_for_status(&id, "delivered", WAIT).await;
    assert_eq!(message["attempts"], 1, "{message:#}");
    let mails = sink.wait_for_mails(1, WAIT).await;
    let mail = &mails[0];
    assert!(mail.tls, "the message crossed in clear");
    assert_eq!(mail.to, ["ops@example.org"]);
    assert_eq!(mail.header("Subject").unwrap(), "Private CA");
    assert_eq!(
        mail.header("Message-ID").unwrap(),
        format!("<{id}@example.com>")
    );
    assert!(mail.data.contains("Sealed."), "{}", mail.data);
}

#[tokio::test]
async fn a_server_certificate_the_relay_does_not_trust_dead_letters_at_once() {
    let ca = TestCa::new();
    let sink = SmtpSink::start_starttls(&ca).await;
    let port = sink.port;
    // No `tls_root_ca`: the platform's roots do not know the test CA.
    let relay = start(|c| {
        let mut mail = smtp("mail", port);
        mail.tls = Some(TlsMode::Starttls);
        c.destinations.push(mail);
    })
    .await;
    let id = relay
        .submit(
            "mail",
            json!({"to": ["ops@example.org"], "subject": "s", "text": "t"}),
        )
        .await;
    let message = relay.wait_for_status(&id, "dead", WAIT).await;
    assert_eq!(message["attempts"], 1, "not retried: {message:#}");
    let error = message["last_error"].as_str().unwrap();
    assert!(error.contains("certificate"), "{message:#}");
    assert!(sink.mails().is_empty());
}
