//! An SMTP sink on 127.0.0.1: speaks enough SMTP (RFC 5321) for lettre over plain text,
//! records each accepted message with its envelope, and answers `RCPT TO` for chosen
//! addresses with a scripted reply (e.g. `550 5.1.1 …`, `451 4.3.0 …`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::support::Recorded;

/// One message the sink accepted.
#[derive(Debug, Clone)]
pub(crate) struct Mail {
    /// `MAIL FROM` address.
    pub(crate) from: String,
    /// `RCPT TO` addresses.
    pub(crate) to: Vec<String>,
    /// The message as sent after `DATA`, dot-unstuffed, with CRLF line ends.
    pub(crate) data: String,
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

#[derive(Debug, Default)]
struct Inner {
    mails: Recorded<Mail>,
    rcpt_replies: Mutex<HashMap<String, String>>,
}

/// A running sink.
#[derive(Debug, Clone)]
pub(crate) struct SmtpSink {
    /// The port it listens on.
    pub(crate) port: u16,
    inner: Arc<Inner>,
}

impl SmtpSink {
    /// Starts a sink accepting every recipient.
    pub(crate) async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Inner::default());
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

async fn session(stream: TcpStream, inner: Arc<Inner>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink.test ESMTP ready\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" => "250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8".to_owned(),
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
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
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
                });
                "250 2.0.0 queued".to_owned()
            }
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => "250 2.0.0 ok".to_owned(),
        };
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}
