//! A scriptable webhook receiver on 127.0.0.1: a tiny HTTP/1.1 server that answers each
//! request with the next scripted reply (200, 500, 429 + Retry-After, slow, connection reset)
//! and records what it received.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::Recorded;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// This status, empty body.
    Status(u16),
    /// This status with a `Retry-After` header.
    RetryAfter(u16, &'static str),
    /// Wait, then answer with the status.
    Slow(Duration, u16),
    /// Close the connection without answering.
    Reset,
    /// Wait until the gate holds `true`, then answer with the status.
    Held(tokio::sync::watch::Receiver<bool>, u16),
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    pub(crate) at: Instant,
}

impl Hit {
    pub(crate) fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
}

#[derive(Debug, Default)]
struct Inner {
    script: Mutex<VecDeque<Reply>>,
    otherwise: Mutex<Option<Reply>>,
    hits: Recorded<Hit>,
}

/// A running receiver.
#[derive(Debug, Clone)]
pub(crate) struct Receiver {
    /// `http://127.0.0.1:<port>/hook`.
    pub(crate) url: String,
    inner: Arc<Inner>,
}

impl Receiver {
    /// Starts a receiver that answers 200 once its script is used up.
    pub(crate) async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let inner = Arc::new(Inner::default());
        let shared = inner.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Receiver { url, inner }
    }

    /// Appends replies to the script.
    pub(crate) fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.script.lock().unwrap().extend(replies);
    }

    /// The reply once the script is used up (default 200).
    pub(crate) fn otherwise(&self, reply: Reply) {
        *self.inner.otherwise.lock().unwrap() = Some(reply);
    }

    /// Everything received so far.
    pub(crate) fn hits(&self) -> Vec<Hit> {
        self.inner.hits.all()
    }

    /// Waits (at most `limit`) until at least `n` requests arrived.
    pub(crate) async fn wait_for_hits(&self, n: usize, limit: Duration) -> Vec<Hit> {
        self.inner.hits.wait_for(n, limit, "requests").await
    }
}

fn next_reply(inner: &Inner) -> Reply {
    inner
        .script
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| inner.otherwise.lock().unwrap().clone())
        .unwrap_or(Reply::Status(200))
}

async fn serve(mut stream: TcpStream, inner: Arc<Inner>) {
    let mut buf = Vec::new();
    loop {
        // Read the head.
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut headers = HeaderMap::new();
        for line in head.split("\r\n").skip(1).filter(|l| !l.is_empty()) {
            if let Some((name, value)) = line.split_once(':')
                && let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.trim().as_bytes()),
                    HeaderValue::from_str(value.trim()),
                )
            {
                headers.append(n, v);
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        inner.hits.push(Hit {
            headers,
            body,
            at: Instant::now(),
        });
        let (status, extra) = match next_reply(&inner) {
            Reply::Status(s) => (s, String::new()),
            Reply::RetryAfter(s, after) => (s, format!("retry-after: {after}\r\n")),
            Reply::Slow(d, s) => {
                tokio::time::sleep(d).await;
                (s, String::new())
            }
            Reply::Held(mut gate, s) => {
                if gate.wait_for(|open| *open).await.is_err() {
                    return;
                }
                (s, String::new())
            }
            // Dropping the socket mid-exchange: the client sees the connection closed
            // before any response.
            Reply::Reset => return,
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: 0\r\n{extra}connection: keep-alive\r\n\r\n"
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
