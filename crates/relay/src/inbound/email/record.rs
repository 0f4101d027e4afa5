//! Recording one parsed mail of an `[[inbound.email]]` source: stored once under its key with
//! its forward, and counted.

use ferrule_store::{NewInbound, NewMessage, Recorded, StoreError};
use serde_json::json;

use super::{MAX_KEY_BYTES, ParsedMail};
use crate::config::EmailSource;
use crate::state::{AppState, Counters};
use crate::telemetry::prometheus::{
    INBOUND_EMAIL_DUPLICATES, INBOUND_EMAILS, INBOUND_EMAILS_REFUSED,
};

/// The store's source name for a mail source's events: `email:<name>`.
pub fn source(name: &str) -> String {
    format!("email:{name}")
}

/// Records `mail`, posted to `source`: stores `{"summary", "github"}` under the mail's key (its
/// `Message-ID`, else a hash) and, in the same transaction and only when the mail is new,
/// enqueues its forward to `forward_to`. A mail recorded before is a `Duplicate`: nothing is
/// written and nothing forwarded. The raw message is not kept.
pub async fn record_mail(
    state: &AppState,
    source: &EmailSource,
    mail: ParsedMail,
) -> Result<Recorded, StoreError> {
    let store_source = self::source(&source.name);
    let forward = source
        .forward_to
        .as_ref()
        .map(|to| forward_message(to, &store_source, &mail));
    let event = NewInbound {
        payload: json!({"summary": mail.summary, "github": mail.github}),
        source: store_source,
        external_id: mail.key,
        forward,
    };
    let recorded = crate::inbound::store_event(state, event).await?;
    let name = source.name.clone();
    if recorded.is_created() {
        Counters::bump(&state.counters.inbound_emails);
        metrics::counter!(INBOUND_EMAILS.name, "source" => name).increment(1);
    } else {
        Counters::bump(&state.counters.inbound_email_duplicates);
        metrics::counter!(INBOUND_EMAIL_DUPLICATES.name, "source" => name).increment(1);
        tracing::debug!(source = %source.name, "a mail recorded before was ignored");
    }
    Ok(recorded)
}

/// Counts a mail `source` refused with `reason`, the API error's code (one of
/// [`EMAIL_REFUSAL_REASONS`](crate::telemetry::prometheus::EMAIL_REFUSAL_REASONS)).
pub fn count_refused(state: &AppState, source: &str, reason: &'static str) {
    Counters::bump(&state.counters.inbound_emails_refused);
    metrics::counter!(
        INBOUND_EMAILS_REFUSED.name,
        "source" => source.to_owned(),
        "reason" => reason
    )
    .increment(1);
}

/// The message a new mail is forwarded as: `{"source", "email", "github"}`. Mail about one
/// GitHub pull request or issue shares an ordering key, so its receiver gets the thread in
/// order.
/// The forward of a mail, under the trace of the request that posted it.
fn forward_message(to: &str, source: &str, mail: &ParsedMail) -> NewMessage {
    let message = NewMessage::new(
        to,
        json!({"source": source, "email": mail.summary, "github": mail.github}),
    )
    .traceparent(crate::telemetry::trace::current().to_string());
    let thread = mail
        .github
        .as_ref()
        .map(|github| format!("{source}:{}#{}", github.repository, github.number))
        // A repository name that long is not GitHub's; such mail goes unordered rather than
        // refused by the store's key limit.
        .filter(|key| key.len() <= MAX_KEY_BYTES);
    match thread {
        Some(key) => message.ordering_key(key),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn mail(extra: &str) -> ParsedMail {
        super::super::parse(
            format!(
                "From: Octo <notifications@github.com>\r\nTo: team@example.com\r\n\
                 Subject: [octo/hello] Fix it (#42)\r\n{extra}\r\nbody\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn a_github_forward_is_ordered_by_its_thread_and_others_are_not() {
        let github =
            mail("Message-ID: <octo/hello/pull/42/c7@github.com>\r\nX-GitHub-Reason: comment\r\n");
        let m = forward_message("app", "email:gh", &github);
        assert_eq!(m.destination, "app");
        assert_eq!(m.ordering_key.as_deref(), Some("email:gh:octo/hello#42"));
        assert_eq!(m.payload["source"], "email:gh");
        assert_eq!(m.payload["email"]["subject"], "[octo/hello] Fix it (#42)");
        assert_eq!(m.payload["github"]["event"], "comment");

        let plain = mail("Message-ID: <1@example.com>\r\n");
        let m = forward_message("app", "email:gh", &plain);
        assert_eq!(m.ordering_key, None);
        assert_eq!(m.payload["github"], Value::Null);

        let long = format!("{}/r", "o".repeat(600));
        let huge = mail(&format!(
            "Message-ID: <{long}/pull/1@github.com>\r\nX-GitHub-Reason: x\r\n"
        ));
        assert_eq!(forward_message("app", "email:gh", &huge).ordering_key, None);
    }
}
