//! An SMTP sink on 127.0.0.1: speaks enough SMTP (RFC 5321) for lettre over plain text or
//! STARTTLS (RFC 3207), records each accepted message with its envelope, and answers
//! `RCPT TO` for chosen addresses with a scripted reply (e.g. `550 5.1.1 …`, `451 4.3.0 …`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::support::Recorded;

/// A CA made for one test and the server side of a certificate it issued for `127.0.0.1`.
pub(crate) struct TestCa {
    /// The CA certificate, PEM-encoded, for a destination's `tls_root_ca`.
    pub(crate) pem: String,
    server: Arc<ServerConfig>,
}

impl TestCa {
    /// A fresh CA and a server certificate from it.
    pub(crate) fn new() -> TestCa {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "ferrule relay test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let server = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        TestCa {
            pem: ca.pem(),
            server: Arc::new(server),
        }
    }
}

/// One message the sink accepted.
#[derive(Debug, Clone)]
pub(crate) struct Mail {
    /// `MAIL FROM` address.
    pub(crate) from: String,
    /// `RCPT TO` addresses.
    pub(crate) to: Vec<String>,
    /// The message as sent after `DATA`, dot-unstuffed, with CRLF line ends.
    pub(crate) data: String,
    /// Whether it came inside TLS (after `STARTTLS`).
    pub(crate) tls: bool,
}

impl Mail {
    /// The value of the first header `name` (unfolded).
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut()
                && line.starts_with([' ', '\t'])
            {
                v.push_str(line.trim_start());
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_owned());
            }
        }
        value
    }
}

#[derive(Default)]
struct Inner {
    mails: Recorded<Mail>,
    rcpt_replies: Mutex<HashMap<String, String>>,
    /// The server side of `STARTTLS`, which is offered when set.
    starttls: Option<Arc<ServerConfig>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("mails", &self.mails)
            .field("starttls", &self.starttls.is_some())
            .finish_non_exhaustive()
    }
}

/// A running sink.
#[derive(Debug, Clone)]
pub(crate) struct SmtpSink {
    /// The port it listens on.
    pub(crate) port: u16,
    inner: Arc<Inner>,
}

impl SmtpSink {
    /// Starts a sink accepting every recipient, in plain text only.
    pub(crate) async fn start() -> SmtpSink {
        SmtpSink::start_with(None).await
    }

    /// Starts a sink that offers `STARTTLS` with the server certificate of `ca`.
    pub(crate) async fn start_starttls(ca: &TestCa) -> SmtpSink {
        SmtpSink::start_with(Some(ca.server.clone())).await
    }

    async fn start_with(starttls: Option<Arc<ServerConfig>>) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Inner {
            starttls,
            ..Inner::default()
        });
        let shared = inner.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, shared.clone()));
            }
        });
        SmtpSink { port, inner }
    }

    /// Answers `RCPT TO:<address>` with `reply` (a whole reply line, e.g. `550 5.1.1 no`).
    pub(crate) fn refuse(&self, address: &str, reply: &str) {
        self.inner
            .rcpt_replies
            .lock()
            .unwrap()
            .insert(address.to_ascii_lowercase(), reply.to_owned());
    }

    /// Every accepted message so far.
    pub(crate) fn mails(&self) -> Vec<Mail> {
        self.inner.mails.all()
    }

    /// Waits (at most `limit`) until `n` messages were accepted.
    pub(crate) async fn wait_for_mails(&self, n: usize, limit: Duration) -> Vec<Mail> {
        self.inner.mails.wait_for(n, limit, "mails").await
    }
}

/// The address inside `<…>` of a `MAIL FROM:` / `RCPT TO:` argument.
fn address(arg: &str) -> String {
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg[start..].find('>').map_or(arg.len(), |i| start + i);
    arg[start..end].to_owned()
}

/// Serves one connection: in clear, then inside TLS if the client asks for `STARTTLS`.
async fn session(stream: TcpStream, inner: Arc<Inner>) -> std::io::Result<()> {
    let mut plain = BufReader::new(stream);
    plain
        .get_mut()
        .write_all(b"220 sink.test ESMTP ready\r\n")
        .await?;
    if !commands(&mut plain, &inner, false).await? {
        return Ok(());
    }
    let Some(config) = inner.starttls.clone() else {
        return Ok(());
    };
    if !plain.buffer().is_empty() {
        // Commands pipelined after STARTTLS came in clear (RFC 3207 §4): refuse them.
        return Ok(());
    }
    let tls = TlsAcceptor::from(config).accept(plain.into_inner()).await?;
    commands(&mut BufReader::new(tls), &inner, true).await?;
    Ok(())
}

/// Answers commands until the client quits (`false`) or is told to start TLS (`true`).
async fn commands<S: AsyncRead + AsyncWrite + Unpin>(
    lines: &mut BufReader<S>,
    inner: &Inner,
    secure: bool,
) -> std::io::Result<bool> {
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(false);
        }
        let command = line.trim_end().to_owned();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" if inner.starttls.is_some() && !secure => {
                "250-sink.test\r\n250-8BITMIME\r\n250-STARTTLS\r\n250 SMTPUTF8".to_owned()
            }
            "EHLO" => "250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8".to_owned(),
            "STARTTLS" if inner.starttls.is_some() && !secure => {
                lines
                    .get_mut()
                    .write_all(b"220 2.0.0 ready to start TLS\r\n")
                    .await?;
                return Ok(true);
            }
            "HELO" => "250 sink.test".to_owned(),
            "MAIL" => {
                from = address(&command);
                to.clear();
                "250 2.1.0 ok".to_owned()
            }
            "RCPT" => {
                let rcpt = address(&command);
                let scripted = inner
                    .rcpt_replies
                    .lock()
                    .unwrap()
                    .get(&rcpt.to_ascii_lowercase())
                    .cloned();
                match scripted {
                    Some(reply) => reply,
                    None => {
                        to.push(rcpt);
                        "250 2.1.5 ok".to_owned()
                    }
                }
            }
            "DATA" => {
                lines
                    .get_mut()
                    .write_all(b"354 end with <CRLF>.<CRLF>\r\n")
                    .await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(false);
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                inner.mails.push(Mail {
                    from: from.clone(),
                    to: std::mem::take(&mut to),
                    data,
                    tls: secure,
                });
                "250 2.0.0 queued".to_owned()
            }
            "QUIT" => {
                lines.get_mut().write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(false);
            }
            _ => "250 2.0.0 ok".to_owned(),
        };
        lines
            .get_mut()
            .write_all(format!("{reply}\r\n").as_bytes())
            .await?;
    }
}
