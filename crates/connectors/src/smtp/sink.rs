//! A scriptable SMTP server on 127.0.0.1 for the connector's tests: it speaks EHLO/HELO,
//! STARTTLS, AUTH PLAIN and LOGIN, MAIL, RCPT, DATA, RSET, NOOP and QUIT, answers each command
//! from a script (or positively), and records every transaction. It serves plain text,
//! STARTTLS or implicit TLS with a certificate from a [`TestCa`] made at test time.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;

/// A certificate authority made for one test, and a server certificate it issued for
/// `127.0.0.1` and `localhost`.
pub(super) struct TestCa {
    /// The CA's certificate, PEM-encoded: what a client is told to trust.
    pub(super) pem: String,
    /// The server side: the server certificate and its key.
    server: Arc<ServerConfig>,
}

impl TestCa {
    /// A fresh CA named `name` and a server certificate from it.
    pub(super) fn new(name: &str) -> TestCa {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, name);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut leaf =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "sink.test");
        let leaf = leaf.signed_by(&key, &ca).unwrap();
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

/// How the sink secures connections.
#[derive(Clone, Default)]
pub(super) enum SinkTls {
    /// Plain text; `STARTTLS` is not advertised and refused.
    #[default]
    None,
    /// Plain text, `STARTTLS` advertised and honoured.
    Starttls(Arc<ServerConfig>),
    /// TLS from the first byte.
    Implicit(Arc<ServerConfig>),
}

impl SinkTls {
    /// `STARTTLS` with the server certificate of `ca`.
    pub(super) fn starttls(ca: &TestCa) -> Self {
        SinkTls::Starttls(ca.server.clone())
    }

    /// Implicit TLS with the server certificate of `ca`.
    pub(super) fn implicit(ca: &TestCa) -> Self {
        SinkTls::Implicit(ca.server.clone())
    }
}

impl std::fmt::Debug for SinkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SinkTls::None => "None",
            SinkTls::Starttls(_) => "Starttls",
            SinkTls::Implicit(_) => "Implicit",
        })
    }
}

/// What the sink does in place of its positive answer to one command.
#[derive(Debug, Clone)]
pub(super) enum Answer {
    /// The positive answer.
    Ok,
    /// This reply; lines separated by `\r\n`, without the final line break.
    Reply(&'static str),
    /// Never answer; keep the connection open.
    Stall,
    /// Close the connection without answering.
    Close,
}

/// Answers to use, in order, for each kind of command; the positive answer when one runs out.
#[derive(Debug, Default)]
pub(super) struct Script {
    /// The greeting of each new connection.
    pub(super) greeting: VecDeque<Answer>,
    /// `MAIL FROM`.
    pub(super) mail: VecDeque<Answer>,
    /// `RCPT TO`, one answer per recipient.
    pub(super) rcpt: VecDeque<Answer>,
    /// The final reply after the message data.
    pub(super) data_end: VecDeque<Answer>,
}

/// One mail transaction, recorded when its data has been received.
#[derive(Debug, Clone)]
pub(super) struct Transaction {
    /// The connection it came on, from 1.
    pub(super) connection: usize,
    /// Whether it came over TLS (implicit, or after `STARTTLS`).
    pub(super) tls: bool,
    /// The `EHLO` (or `HELO`) argument.
    pub(super) ehlo: String,
    /// The credentials the client authenticated with, if it did.
    pub(super) auth: Option<(String, String)>,
    /// The `MAIL FROM` address, without brackets.
    pub(super) mail_from: String,
    /// The accepted `RCPT TO` addresses, without brackets.
    pub(super) rcpt_to: Vec<String>,
    /// The message as received, dot-stuffing removed, lines joined with CRLF.
    pub(super) data: String,
}

impl Transaction {
    /// The message's header section, folded lines unfolded.
    fn headers(&self) -> Vec<(String, String)> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = headers.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.to_owned(), value.trim().to_owned()));
            }
        }
        headers
    }

    /// The value of header `name` (case-insensitive), if present once; panics if repeated.
    pub(super) fn header(&self, name: &str) -> Option<String> {
        let mut found = self
            .headers()
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v);
        let first = found.next();
        assert!(found.next().is_none(), "header {name} repeated");
        first
    }

    /// The body: everything after the header section.
    pub(super) fn body(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
    }
}

/// What the sink requires and advertises.
#[derive(Debug, Clone)]
pub(super) struct Options {
    /// Credentials to require (`530` to `MAIL` without them), or `None` for no `AUTH` at all.
    pub(super) auth: Option<(&'static str, &'static str)>,
    /// The mechanisms advertised after `AUTH` when `auth` is set.
    pub(super) mechanisms: &'static str,
    /// Plain text, STARTTLS or implicit TLS.
    pub(super) tls: SinkTls,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            auth: None,
            mechanisms: "PLAIN LOGIN",
            tls: SinkTls::None,
        }
    }
}

#[derive(Default)]
struct State {
    script: Script,
    transactions: Vec<Transaction>,
    connections: usize,
    /// Every command line received, with its connection number.
    commands: Vec<(usize, String)>,
}

/// A running sink; it stops with the test's runtime.
pub(super) struct Sink {
    pub(super) addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

impl Sink {
    pub(super) async fn start(options: Options) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let changed = Arc::new(Notify::new());
        let (shared, notify) = (state.clone(), changed.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let number = {
                    let mut state = shared.lock().unwrap();
                    state.connections += 1;
                    state.connections
                };
                let (state, notify, options) = (shared.clone(), notify.clone(), options.clone());
                tokio::spawn(async move {
                    let _ = session(stream, number, &options, &state, &notify).await;
                });
            }
        });
        Sink {
            addr,
            state,
            changed,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Edits the script.
    pub(super) fn script(&self, edit: impl FnOnce(&mut Script)) {
        edit(&mut self.state().script);
    }

    pub(super) fn transactions(&self) -> Vec<Transaction> {
        self.state().transactions.clone()
    }

    /// How many TCP connections were accepted.
    pub(super) fn connections(&self) -> usize {
        self.state().connections
    }

    /// Every command received, in order, without connection numbers.
    pub(super) fn commands(&self) -> Vec<String> {
        self.state()
            .commands
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Waits until `done` holds for the recorded state.
    pub(super) async fn wait_until(&self, done: impl Fn(&[String], &[Transaction]) -> bool) {
        loop {
            let notified = self.changed.notified();
            {
                let state = self.state();
                let commands: Vec<String> = state.commands.iter().map(|(_, c)| c.clone()).collect();
                if done(&commands, &state.transactions) {
                    return;
                }
            }
            notified.await;
        }
    }
}

/// A connection, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// How [`serve`] ended.
enum End {
    /// The client quit, closed the connection or broke the protocol.
    Closed,
    /// The client asked for `STARTTLS` and was told to go ahead.
    StartTls,
}

/// Serves one connection: TLS at once, after `STARTTLS`, or never, as `options` say.
async fn session(
    tcp: TcpStream,
    number: usize,
    options: &Options,
    state: &Mutex<State>,
    changed: &Notify,
) -> Option<()> {
    let config = match &options.tls {
        SinkTls::Implicit(config) => {
            let tls = TlsAcceptor::from(config.clone()).accept(tcp).await.ok()?;
            let mut stream = BufReader::new(tls);
            serve(&mut stream, true, true, number, options, state, changed).await;
            return Some(());
        }
        SinkTls::Starttls(config) => Some(config.clone()),
        SinkTls::None => None,
    };
    let mut plain = BufReader::new(tcp);
    let end = serve(&mut plain, true, false, number, options, state, changed).await;
    if let (End::StartTls, Some(config)) = (end, config) {
        // RFC 3207 §4: the client must wait for the handshake; anything it sent after
        // `STARTTLS` in clear would be an injection point, so there must be none.
        if !plain.buffer().is_empty() {
            return None;
        }
        let tls = TlsAcceptor::from(config)
            .accept(plain.into_inner())
            .await
            .ok()?;
        let mut stream = BufReader::new(tls);
        serve(&mut stream, false, true, number, options, state, changed).await;
    }
    Some(())
}

/// Answers with `answer`, or `positive` for [`Answer::Ok`]. `false` when the connection is
/// to end.
async fn answer<S: Stream>(stream: &mut BufReader<S>, answer: Answer, positive: &str) -> bool {
    let text = match answer {
        Answer::Ok => positive,
        Answer::Reply(text) => text,
        Answer::Stall => std::future::pending().await,
        Answer::Close => return false,
    };
    stream
        .get_mut()
        .write_all(format!("{text}\r\n").as_bytes())
        .await
        .is_ok()
}

/// Reads one line without its line break; `None` at the end of the stream.
async fn read_line<S: Stream>(stream: &mut BufReader<S>) -> Option<String> {
    let mut line = String::new();
    match stream.read_line(&mut line).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_owned()),
    }
}

fn decode(b64: &str) -> String {
    String::from_utf8(STANDARD.decode(b64.trim()).unwrap_or_default()).unwrap_or_default()
}

/// Speaks SMTP on `stream` until the client quits or asks for `STARTTLS`; greets first if
/// `greet`. `secure` says whether `stream` is TLS already.
async fn serve<S: Stream>(
    stream: &mut BufReader<S>,
    greet: bool,
    secure: bool,
    number: usize,
    options: &Options,
    state: &Mutex<State>,
    changed: &Notify,
) -> End {
    serve_commands(stream, greet, secure, number, options, state, changed)
        .await
        .unwrap_or(End::Closed)
}

async fn serve_commands<S: Stream>(
    stream: &mut BufReader<S>,
    greet: bool,
    secure: bool,
    number: usize,
    options: &Options,
    state: &Mutex<State>,
    changed: &Notify,
) -> Option<End> {
    let next = |pick: fn(&mut Script) -> &mut VecDeque<Answer>| {
        pick(&mut state.lock().unwrap().script)
            .pop_front()
            .unwrap_or(Answer::Ok)
    };
    if greet {
        let greeting = next(|s| &mut s.greeting);
        if !answer(stream, greeting, "220 sink.test ESMTP ready").await {
            return None;
        }
    }
    let offers_starttls = !secure && matches!(options.tls, SinkTls::Starttls(_));
    let mut ehlo = String::new();
    let mut auth: Option<(String, String)> = None;
    let mut mail_from: Option<String> = None;
    let mut rcpt_to = Vec::new();
    let mut queued = 0;
    loop {
        let line = read_line(stream).await?;
        state.lock().unwrap().commands.push((number, line.clone()));
        changed.notify_waiters();
        let upper = line.to_ascii_uppercase();
        let verb = upper.split(' ').next().unwrap_or_default();
        let argument = line.get(verb.len()..).unwrap_or_default().trim().to_owned();
        let ok = match verb {
            "EHLO" => {
                ehlo = argument;
                let auth_line = match options.auth {
                    Some(_) => format!("250-AUTH {}\r\n", options.mechanisms),
                    None => String::new(),
                };
                let starttls_line = if offers_starttls {
                    "250-STARTTLS\r\n"
                } else {
                    ""
                };
                answer(
                    stream,
                    Answer::Ok,
                    &format!("250-sink.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n{starttls_line}{auth_line}250 SIZE 10000000"),
                )
                .await
            }
            "STARTTLS" if offers_starttls => {
                answer(stream, Answer::Ok, "220 2.0.0 Ready to start TLS").await;
                return Some(End::StartTls);
            }
            "HELO" => {
                ehlo = argument;
                answer(stream, Answer::Ok, "250 sink.test").await
            }
            "AUTH" => {
                let mut words = argument.split_whitespace();
                let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
                let initial = words.next().map(str::to_owned);
                let credentials = match mechanism.as_str() {
                    "PLAIN" => {
                        let response = match initial {
                            Some(r) => r,
                            None => {
                                answer(stream, Answer::Ok, "334 ").await;
                                read_line(stream).await?
                            }
                        };
                        let decoded = decode(&response);
                        let mut parts = decoded.split('\0').skip(1);
                        (
                            parts.next().unwrap_or_default().to_owned(),
                            parts.next().unwrap_or_default().to_owned(),
                        )
                    }
                    "LOGIN" => {
                        let user = match initial {
                            Some(u) => u,
                            None => {
                                answer(stream, Answer::Ok, "334 VXNlcm5hbWU6").await;
                                read_line(stream).await?
                            }
                        };
                        answer(stream, Answer::Ok, "334 UGFzc3dvcmQ6").await;
                        let password = read_line(stream).await?;
                        (decode(&user), decode(&password))
                    }
                    _ => {
                        answer(stream, Answer::Reply("504 5.5.4 unknown mechanism"), "").await;
                        continue;
                    }
                };
                let valid = options
                    .auth
                    .is_some_and(|(u, p)| credentials.0 == u && credentials.1 == p);
                if valid {
                    auth = Some(credentials);
                    answer(stream, Answer::Ok, "235 2.7.0 Authentication successful").await
                } else {
                    answer(
                        stream,
                        Answer::Reply("535 5.7.8 Authentication credentials invalid"),
                        "",
                    )
                    .await
                }
            }
            "MAIL" if options.auth.is_some() && auth.is_none() => {
                answer(
                    stream,
                    Answer::Reply("530 5.7.0 Authentication required"),
                    "",
                )
                .await
            }
            "MAIL" => {
                let reply = next(|s| &mut s.mail);
                if matches!(reply, Answer::Ok) {
                    mail_from = Some(address(&line));
                }
                answer(stream, reply, "250 2.1.0 Ok").await
            }
            "RCPT" => {
                let reply = next(|s| &mut s.rcpt);
                if matches!(reply, Answer::Ok) {
                    rcpt_to.push(address(&line));
                }
                answer(stream, reply, "250 2.1.5 Ok").await
            }
            "DATA" if mail_from.is_none() || rcpt_to.is_empty() => {
                answer(stream, Answer::Reply("554 5.5.1 No valid recipients"), "").await
            }
            "DATA" => {
                answer(stream, Answer::Ok, "354 End data with <CR><LF>.<CR><LF>").await;
                let mut lines = Vec::new();
                loop {
                    let line = read_line(stream).await?;
                    if line == "." {
                        break;
                    }
                    lines.push(line.strip_prefix('.').map_or(line.clone(), str::to_owned));
                }
                queued += 1;
                state.lock().unwrap().transactions.push(Transaction {
                    connection: number,
                    tls: secure,
                    ehlo: ehlo.clone(),
                    auth: auth.clone(),
                    mail_from: mail_from.take().unwrap_or_default(),
                    rcpt_to: std::mem::take(&mut rcpt_to),
                    data: lines.join("\r\n"),
                });
                changed.notify_waiters();
                let reply = next(|s| &mut s.data_end);
                answer(stream, reply, &format!("250 2.0.0 Ok: queued as {queued}")).await
            }
            "RSET" => {
                mail_from = None;
                rcpt_to.clear();
                answer(stream, Answer::Ok, "250 2.0.0 Ok").await
            }
            "NOOP" => answer(stream, Answer::Ok, "250 2.0.0 Ok").await,
            "QUIT" => {
                answer(stream, Answer::Ok, "221 2.0.0 Bye").await;
                return Some(End::Closed);
            }
            _ => {
                answer(
                    stream,
                    Answer::Reply("502 5.5.2 Command not recognized"),
                    "",
                )
                .await
            }
        };
        if !ok {
            return None;
        }
    }
}

/// The address in `MAIL FROM:<a@b> PARAMS` or `RCPT TO:<a@b>`.
fn address(line: &str) -> String {
    let start = line.find('<').map_or(0, |i| i + 1);
    let end = line[start..].find('>').map_or(line.len(), |i| start + i);
    line[start..end].to_owned()
}
