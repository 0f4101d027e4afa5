//! The SMTP connector: each message becomes one e-mail, sent over a pool of SMTP connections.
//!
//! The payload is checked by [`validate_payload`] (the relay calls it at submit time too, to
//! answer 422). Each attempt builds the message with a `Message-ID` of
//! `<{ferrule message id}@{message_id_domain}>`, identical on every retry so receivers and
//! mail clients can recognise a duplicate, and a `Date` from the connector's clock, then sends
//! it with lettre's pooled `AsyncSmtpTransport`.
//!
//! | what happened | outcome | `code` | signal |
//! |---|---|---|---|
//! | the final reply to `DATA` is 2yz | [`Outcome::Success`] | the reply code | |
//! | any 4yz reply (421 "closing" included) | [`Outcome::Transient`] | the reply code | |
//! | 530, 534, 535, 538 (authentication refused or required) | [`Outcome::Permanent`] | the reply code | [`Signal::Unauthorized`] |
//! | any other 5yz reply | [`Outcome::Permanent`] | the reply code | |
//! | the server's certificate is refused (untrusted issuer, expired, another name) or TLS has no version or cipher in common | [`Outcome::Permanent`] | none | |
//! | connect error, reset, closed connection, other TLS failure (handshake cut short), timeout | [`Outcome::Transient`] | none | |
//! | the server lacks what the message needs (`STARTTLS`, an `AUTH` mechanism, `SMTPUTF8`) | [`Outcome::Permanent`] | none | |
//! | invalid payload or message id | [`Outcome::Permanent`] | none | |
//!
//! **Output.** A success's [`DeliveryResult::output`] is `{"message_id": "<…@…>"}`: the
//! `Message-ID` the e-mail was sent with, angle brackets included, as a later e-mail's
//! `in_reply_to` or `references` takes it.
//!
//! `detail` quotes the server's reply with its RFC 3463 enhanced status code, e.g.
//! `550 5.1.1 user unknown`. A message goes to all its recipients in one transaction: if the
//! server refuses one `RCPT TO`, the whole attempt fails with that reply (lettre sends no
//! partial transactions), so one bad address among several makes the message permanent.

mod config;
mod payload;
#[cfg(test)]
mod sink;
#[cfg(test)]
mod tests;

use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ferrule_policy::classify::SmtpReply;
use ferrule_policy::duration::readable;
use ferrule_policy::{Outcome, SharedClock};
use lettre::message::{MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{self, AsyncSmtpTransportBuilder, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{Value, json};

pub use self::config::{SmtpConfig, SmtpPassword, SmtpPoolConfig, TlsMode};
pub use self::payload::{
    MAX_RECIPIENTS, MAX_SUBJECT_CHARS, PayloadError, Validated, validate_payload,
};
use crate::shared::quote_within;
use crate::{Connector, ConnectorError, Delivery, DeliveryResult, Signal};
pub use lettre::message::Mailbox;

/// The most characters of a server reply or error quoted in a result's detail.
const DETAIL_CHARS: usize = 300;

/// SMTP replies that refuse or demand authentication (RFC 4954 §6): the destination's
/// credentials, not the message, are at fault.
const AUTH_CODES: &[u16] = &[530, 534, 535, 538];

type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// Delivers messages to one SMTP destination.
///
/// Built once per destination; cloning is cheap and shares the connection pool. The pool is
/// opened on the first delivery (lettre's pool needs a running tokio runtime), so building a
/// connector, e.g. for `ferrule config check`, connects to nothing.
///
/// ```
/// use ferrule_connectors::smtp::{SmtpConfig, SmtpConnector};
///
/// let config: SmtpConfig = toml::from_str(r#"
///     host = "smtp.example.com"
///     username = "relay@example.com"
///     password = "hunter2"
///     from = "ferrule <relay@example.com>"
/// "#)?;
/// assert_eq!(config.effective_port(), 587);
/// let connector = SmtpConnector::new(config, ferrule_policy::clock::system())?;
/// assert!(!format!("{connector:?}").contains("hunter2"));
///
/// let bad = SmtpConfig::new("smtp.example.com", "not a mailbox");
/// let err = SmtpConnector::new(bad, ferrule_policy::clock::system()).unwrap_err();
/// assert_eq!(err.field(), Some("from"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SmtpConnector {
    inner: Arc<Inner>,
}

struct Inner {
    /// Makes a transport (a fresh pool); holds the credentials.
    builder: AsyncSmtpTransportBuilder,
    /// The current transport, built on first use and replaced after a timeout.
    transport: Mutex<Option<Transport>>,
    from: Mailbox,
    message_id_domain: String,
    host: String,
    port: u16,
    tls: TlsMode,
    timeout: Duration,
    password: Option<SmtpPassword>,
    clock: SharedClock,
}

impl SmtpConnector {
    /// Validates `config` and builds the connector; `clock` dates messages, times attempts
    /// out and measures their duration.
    pub fn new(config: SmtpConfig, clock: SharedClock) -> Result<Self, ConnectorError> {
        let parsed = config.parse()?;
        let host = config.host.trim().to_owned();
        let mut builder = Transport::builder_dangerous(host.clone())
            .port(parsed.port)
            .tls(parsed.tls)
            .timeout(Some(config.timeout))
            .hello_name(ClientId::Domain(parsed.hello_name))
            .pool_config(
                PoolConfig::new()
                    .max_size(config.pool.max_size)
                    .idle_timeout(config.pool.idle_timeout),
            );
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(SmtpConnector {
            inner: Arc::new(Inner {
                builder,
                transport: Mutex::new(None),
                from: parsed.from,
                message_id_domain: parsed.message_id_domain,
                host,
                port: parsed.port,
                tls: config.tls,
                timeout: config.timeout,
                password: config.password,
                clock,
            }),
        })
    }

    /// One health check: a connection to the server (TLS and authentication as configured)
    /// that is greeted and answers `NOOP`, on the connector's pool.
    pub(crate) async fn check_connection(&self) -> crate::CheckResult {
        match self.inner.transport().test_connection().await {
            Ok(true) => Ok(format!(
                "{}:{} answered NOOP",
                self.inner.host, self.inner.port
            )),
            Ok(false) => Err(format!(
                "{}:{} did not answer NOOP",
                self.inner.host, self.inner.port
            )),
            Err(e) => Err(format!("{}:{}: {e}", self.inner.host, self.inner.port)),
        }
    }

    /// The `Message-ID` this connector gives the message with ferrule id `message_id`, e.g.
    /// `<01JD5ZQ8X3V7K2M9N4P6R8T0W1@relay.example.com>`; `None` when the id cannot be used
    /// in one (ULIDs always can).
    pub fn message_id_for(&self, message_id: &str) -> Option<String> {
        payload::is_dot_atom(message_id)
            .then(|| format!("<{message_id}@{}>", self.inner.message_id_domain))
    }

    /// The message `email` becomes with the `Message-ID` `id`, dated now by the connector's
    /// clock.
    fn build_message(&self, id: &str, email: &Validated) -> Result<Message, String> {
        let mut builder = Message::builder()
            .from(self.inner.from.clone())
            .date(self.inner.clock.system_now())
            .message_id(Some(id.to_owned()))
            .subject(email.subject.clone());
        for mailbox in &email.to {
            builder = builder.to(mailbox.clone());
        }
        for mailbox in &email.cc {
            builder = builder.cc(mailbox.clone());
        }
        for mailbox in &email.bcc {
            builder = builder.bcc(mailbox.clone());
        }
        if let Some(reply_to) = &email.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        if let Some(in_reply_to) = &email.in_reply_to {
            builder = builder.in_reply_to(in_reply_to.clone());
        }
        if !email.references.is_empty() {
            builder = builder.references(email.references.join(" "));
        }
        let built = match (&email.text, &email.html) {
            (Some(text), Some(html)) => builder.multipart(MultiPart::alternative_plain_html(
                text.clone(),
                html.clone(),
            )),
            (Some(text), None) => builder.singlepart(SinglePart::plain(text.clone())),
            (None, Some(html)) => builder.singlepart(SinglePart::html(html.clone())),
            (None, None) => return Err("the payload has no body".to_owned()),
        };
        built.map_err(|e| format!("could not build the message: {e}"))
    }

    /// One attempt, without the timing.
    async fn attempt(&self, delivery: &Delivery<'_>) -> Attempt {
        let email = match validate_payload(delivery.payload) {
            Ok(email) => email,
            Err(err) => return Attempt::permanent(format!("invalid payload: {err}")),
        };
        let Some(id) = self.message_id_for(delivery.message_id) else {
            return Attempt::permanent(
                "the message id cannot be used in a Message-ID header".to_owned(),
            );
        };
        let message = match self.build_message(&id, &email) {
            Ok(message) => message,
            Err(detail) => return Attempt::permanent(detail),
        };
        let transport = self.inner.transport();
        let timeout = self.inner.clock.sleep(self.inner.timeout);
        tokio::select! {
            result = transport.send(message) => match result {
                Ok(response) => Attempt {
                    outcome: Outcome::Success,
                    code: Some(i32::from(u16::from(response.code()))),
                    detail: self.redact(&reply_detail(
                        response.code().into(),
                        &response.message().collect::<Vec<_>>().join(" "),
                    )),
                    signal: None,
                    output: Some(json!({ "message_id": id })),
                },
                Err(err) => self.classify_error(&err),
            },
            () = timeout => {
                // The timed-out connection goes back to lettre's pool unmarked, possibly in
                // the middle of a command, where a late reply would answer the next command.
                // Replace the whole pool so that no later delivery uses it.
                self.inner.reset_transport();
                Attempt {
                    outcome: Outcome::Transient,
                    code: None,
                    detail: format!("timed out after {}", readable(self.inner.timeout)),
                    signal: None,
                    output: None,
                }
            }
        }
    }

    fn classify_error(&self, err: &smtp::Error) -> Attempt {
        if let Some(code) = err.status() {
            let code = u16::from(code);
            let text = err.source().map(ToString::to_string).unwrap_or_default();
            let outcome = ferrule_policy::classify::classify_smtp_code(code);
            let signal = (outcome == Outcome::Permanent && AUTH_CODES.contains(&code))
                .then_some(Signal::Unauthorized);
            return Attempt {
                outcome,
                code: Some(i32::from(code)),
                detail: self.redact(&reply_detail(code, &text)),
                signal,
                output: None,
            };
        }
        let (outcome, what) = if err.is_timeout() {
            (Outcome::Transient, "timed out")
        } else if lasting_tls_failure(err) {
            // The server's certificate is not trusted (unknown issuer, expired, issued for
            // another name) or it shares no TLS version or cipher with us. The next attempt
            // meets the same certificate and the same settings, so retrying only delays the
            // verdict: an operator must fix the server or `tls_root_ca`. A handshake cut
            // short (reset, closed, timed out) stays transient below: that one may pass.
            (Outcome::Permanent, "TLS refused")
        } else if err.is_client() {
            (Outcome::Permanent, "refused by the client")
        } else if err.is_tls() {
            (Outcome::Transient, "TLS failed")
        } else if err.is_response() {
            (Outcome::Transient, "bad or missing reply")
        } else {
            (Outcome::Transient, "connection failed")
        };
        let mut detail = format!(
            "{what} ({}:{}, tls {})",
            self.inner.host,
            self.inner.port,
            tls_name(self.inner.tls)
        );
        let mut source = err.source();
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        Attempt {
            outcome,
            code: None,
            detail: self.redact(&quote_within(&detail, DETAIL_CHARS)),
            signal: None,
            output: None,
        }
    }

    /// `detail` with the password, should a server or library ever echo it, replaced.
    fn redact(&self, detail: &str) -> String {
        match &self.inner.password {
            Some(password) if !password.expose().is_empty() => {
                detail.replace(password.expose(), "***")
            }
            _ => detail.to_owned(),
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Option<Transport>> {
        self.transport
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The current transport, built if there is none.
    fn transport(&self) -> Transport {
        self.lock()
            .get_or_insert_with(|| self.builder.clone().build())
            .clone()
    }

    /// Drops the current transport; the next delivery builds a fresh one.
    fn reset_transport(&self) {
        let old = self.lock().take();
        drop(old);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let transport = self
            .transport
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // lettre's pool spawns its clean-up on the tokio runtime when dropped, which panics
        // outside one (e.g. a connector dropped after the runtime shut down). The process is
        // ending then: leak the pool instead.
        if let Some(transport) = transport
            && tokio::runtime::Handle::try_current().is_err()
        {
            std::mem::forget(transport);
        }
    }
}

impl fmt::Debug for SmtpConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("SmtpConnector")
            .field("host", &inner.host)
            .field("port", &inner.port)
            .field("tls", &inner.tls)
            .field("from", &inner.from.to_string())
            .field("message_id_domain", &inner.message_id_domain)
            .field("password", &inner.password)
            .field("timeout", &inner.timeout)
            .finish_non_exhaustive()
    }
}

impl Connector for SmtpConnector {
    async fn deliver(&self, delivery: &Delivery<'_>) -> DeliveryResult {
        let start = self.inner.clock.now();
        let attempt = self.attempt(delivery).await;
        DeliveryResult {
            outcome: attempt.outcome,
            code: attempt.code,
            detail: attempt.detail,
            duration: self.inner.clock.now().saturating_duration_since(start),
            signal: attempt.signal,
            output: attempt.output,
        }
    }
}

/// What one attempt produced, before timing.
struct Attempt {
    outcome: Outcome,
    code: Option<i32>,
    detail: String,
    signal: Option<Signal>,
    output: Option<Value>,
}

impl Attempt {
    fn permanent(detail: String) -> Self {
        Attempt {
            outcome: Outcome::Permanent,
            code: None,
            detail,
            signal: None,
            output: None,
        }
    }
}

/// Whether `err` comes from a TLS handshake that failed for a reason retrying cannot cure:
/// the server's certificate was refused, it presented none, or the two sides have no TLS
/// version or cipher suite in common.
///
/// lettre wraps the handshake's `io::Error`, and tokio-rustls puts the `rustls::Error` inside
/// that; `io::Error::source` skips its payload, so each `io::Error` is opened by hand.
fn lasting_tls_failure(err: &smtp::Error) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(cause) = source {
        let tls = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::PeerIncompatible(_)
            );
        }
        source = cause.source();
    }
    false
}

fn tls_name(tls: TlsMode) -> &'static str {
    match tls {
        TlsMode::None => "none",
        TlsMode::Starttls => "starttls",
        TlsMode::Tls => "tls",
    }
}

/// A server reply as `550 5.1.1 user unknown`: the code, the enhanced status code when the
/// server sent one, and the text, on one line of at most [`DETAIL_CHARS`] characters.
fn reply_detail(code: u16, text: &str) -> String {
    let line = quote_within(&format!("{code} {text}"), DETAIL_CHARS);
    match SmtpReply::parse(&line) {
        Ok(reply) => reply.to_string(),
        Err(_) => line,
    }
}
