//! The loopback webhook receiver: verifies each delivery's signature, records it per message
//! id, and answers with the fault of the moment (500, 429 with `Retry-After`, slow, reset,
//! blackhole).
//!
//! It is a hand-rolled hyper server rather than an axum app because a connection reset needs
//! the socket: each connection keeps a duplicate of its file descriptor, and a handler in
//! reset mode sets `SO_LINGER` to zero on it and drops the connection, so the kernel sends RST.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::cli::ReceiverFault;
use crate::error::{Error, Result};
use crate::relay::{ATTEMPT_TIMEOUT, INSTANCE_HEADER};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A request of a message id arriving this much before its `Retry-After` allowed is still
/// accepted: the store keeps times to the millisecond.
pub(crate) const RETRY_AFTER_TOLERANCE: Duration = Duration::from_millis(5);

/// One 2xx answer: the message was delivered.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    /// When the request arrived, since the run's origin.
    pub(crate) at: Duration,
    /// The relay instance that sent it.
    pub(crate) instance: String,
}

/// An attempt that came before the `Retry-After` the receiver had answered for its id.
#[derive(Debug, Clone)]
pub(crate) struct EarlyAttempt {
    /// When the 429 was answered.
    pub(crate) answered_at: Duration,
    /// The relay process it was answered to.
    pub(crate) answered_process: String,
    /// The earliest time the next attempt was allowed.
    pub(crate) allowed_at: Duration,
    /// When the early attempt arrived.
    pub(crate) at: Duration,
    /// The instance that made it.
    pub(crate) instance: String,
}

/// Everything the receiver saw of one message id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Record {
    /// Requests, whatever they were answered with.
    pub(crate) requests: u32,
    /// Requests whose signature did not verify.
    pub(crate) bad_signatures: u32,
    /// The 2xx answers, in order.
    pub(crate) deliveries: Vec<Delivery>,
    /// The payload's `n` (the submitter's message number).
    pub(crate) n: Option<u64>,
    /// Set by a 429: when and to which process it was answered, and when the next attempt may
    /// come.
    pub(crate) retry_after: Option<(Duration, String, Duration)>,
    /// Attempts that came too early.
    pub(crate) early: Vec<EarlyAttempt>,
}

/// Answers given per fault, for the report.
#[derive(Debug, Default)]
struct Answers {
    ok: AtomicU64,
    error_500: AtomicU64,
    too_many: AtomicU64,
    slow: AtomicU64,
    reset: AtomicU64,
    blackhole: AtomicU64,
    unsigned: AtomicU64,
}

/// Counts of what the receiver answered.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub(crate) struct AnswerCounts {
    /// 200s (deliveries).
    pub(crate) ok: u64,
    /// 500s.
    pub(crate) error_500: u64,
    /// 429s with `Retry-After`.
    pub(crate) too_many: u64,
    /// 200s after the relay's timeout.
    pub(crate) slow: u64,
    /// Connections reset.
    pub(crate) reset: u64,
    /// Requests never answered.
    pub(crate) blackhole: u64,
    /// Requests without a `webhook-id` (not counted anywhere else).
    pub(crate) unsigned: u64,
}

struct Shared {
    origin: Instant,
    key: Vec<u8>,
    fault: AtomicU8,
    /// Bumped by every fault switch, so a window's end clears only its own fault.
    generation: AtomicU64,
    retry_after_secs: AtomicU8,
    records: Mutex<HashMap<String, Record>>,
    answers: Answers,
    /// Per relay process: when it got each 2xx, since the origin.
    last_ok: Mutex<HashMap<String, Vec<Duration>>>,
}

/// The running receiver.
#[derive(Clone)]
pub(crate) struct Receiver {
    shared: Arc<Shared>,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn fault_code(fault: Option<ReceiverFault>) -> u8 {
    match fault {
        None => 0,
        Some(ReceiverFault::Error500) => 1,
        Some(ReceiverFault::TooMany) => 2,
        Some(ReceiverFault::Slow) => 3,
        Some(ReceiverFault::Reset) => 4,
        Some(ReceiverFault::Blackhole) => 5,
    }
}

fn fault_of(code: u8) -> Option<ReceiverFault> {
    match code {
        1 => Some(ReceiverFault::Error500),
        2 => Some(ReceiverFault::TooMany),
        3 => Some(ReceiverFault::Slow),
        4 => Some(ReceiverFault::Reset),
        5 => Some(ReceiverFault::Blackhole),
        _ => None,
    }
}

impl Receiver {
    /// Binds 127.0.0.1 on a free port and starts serving; `secret` is the `whsec_…` secret.
    pub(crate) async fn start(origin: Instant, secret: &str) -> Result<Self> {
        let key = secret
            .strip_prefix("whsec_")
            .and_then(|b| STANDARD.decode(b).ok())
            .ok_or_else(|| Error::Setup("the webhook secret is not whsec_<base64>".into()))?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::io("binding the receiver", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the receiver's address", e))?;
        let shared = Arc::new(Shared {
            origin,
            key,
            fault: AtomicU8::new(0),
            generation: AtomicU64::new(0),
            retry_after_secs: AtomicU8::new(1),
            records: Mutex::new(HashMap::new()),
            answers: Answers::default(),
            last_ok: Mutex::new(HashMap::new()),
        });
        tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Receiver { shared, addr })
    }

    /// The URL the relays deliver to.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Switches the fault (None: answer 200). A 429's `Retry-After` is `retry_after_secs`.
    /// Returns the switch's generation for [`Receiver::clear_fault`].
    pub(crate) fn set_fault(&self, fault: Option<ReceiverFault>, retry_after_secs: u8) -> u64 {
        self.shared
            .retry_after_secs
            .store(retry_after_secs.max(1), Ordering::Relaxed);
        self.shared
            .fault
            .store(fault_code(fault), Ordering::Relaxed);
        self.shared.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Answers 200 again, unless the fault was switched since `generation`.
    pub(crate) fn clear_fault(&self, generation: u64) {
        if self.shared.generation.load(Ordering::Acquire) == generation {
            self.set_fault(None, 1);
        }
    }

    /// A copy of every record, by message id.
    pub(crate) fn records(&self) -> HashMap<String, Record> {
        self.shared
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether message `id` has been delivered (answered 2xx).
    pub(crate) fn delivered_count(&self) -> usize {
        self.shared
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| !r.deliveries.is_empty())
            .count()
    }

    /// Whether each of `ids` has been delivered; the ids not yet delivered.
    pub(crate) fn undelivered<'a>(&self, ids: impl Iterator<Item = &'a String>) -> Vec<String> {
        let records = self
            .shared
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        ids.filter(|id| records.get(*id).is_none_or(|r| r.deliveries.is_empty()))
            .cloned()
            .collect()
    }

    /// The first 2xx process `process` got at or after `since`.
    pub(crate) fn first_ok_after(&self, process: &str, since: Duration) -> Option<Duration> {
        let last = self
            .shared
            .last_ok
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        last.get(process)?.iter().copied().find(|at| *at >= since)
    }

    /// What the receiver answered so far.
    pub(crate) fn answers(&self) -> AnswerCounts {
        let a = &self.shared.answers;
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AnswerCounts {
            ok: l(&a.ok),
            error_500: l(&a.error_500),
            too_many: l(&a.too_many),
            slow: l(&a.slow),
            reset: l(&a.reset),
            blackhole: l(&a.blackhole),
            unsigned: l(&a.unsigned),
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        // A second handle on the socket, to set SO_LINGER = 0 when a handler resets it.
        let Ok(handle) = socket2::SockRef::from(&stream).try_clone() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let reset = Arc::new(Notify::new());
            let on_reset = reset.clone();
            let service = service_fn(move |request| {
                let (shared, reset) = (shared.clone(), on_reset.clone());
                async move { Ok::<_, Infallible>(handle_request(shared, reset, request).await) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = reset.notified() => {
                    let _ = handle.set_linger(Some(Duration::ZERO));
                }
            }
            // Dropping the last handle with a zero linger sends RST.
            drop(handle);
        });
    }
}

fn response(
    status: StatusCode,
    headers: &[(&str, String)],
    body: &'static str,
) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    builder
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn header<'a>(request: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Whether `signatures` (space-separated `v1,<base64>`) holds the HMAC of `{id}.{ts}.{body}`.
pub(crate) fn signature_valid(
    key: &[u8],
    id: &str,
    ts: &str,
    body: &[u8],
    signatures: &str,
) -> bool {
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return false;
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    signatures.split(' ').any(|s| s == expected)
}

async fn handle_request(
    shared: Arc<Shared>,
    reset: Arc<Notify>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let fault = fault_of(shared.fault.load(Ordering::Relaxed));
    let id = header(&request, "webhook-id").map(str::to_owned);
    let ts = header(&request, "webhook-timestamp")
        .unwrap_or("")
        .to_owned();
    let signature = header(&request, "webhook-signature")
        .unwrap_or("")
        .to_owned();
    let instance = header(&request, INSTANCE_HEADER).unwrap_or("?").to_owned();
    let body = match request.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return response(StatusCode::BAD_REQUEST, &[], "unreadable body"),
    };
    let at = shared.origin.elapsed();
    let Some(id) = id else {
        shared.answers.unsigned.fetch_add(1, Ordering::Relaxed);
        return response(StatusCode::BAD_REQUEST, &[], "no webhook-id");
    };
    let valid = signature_valid(&shared.key, &id, &ts, &body, &signature);
    let n = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["n"].as_u64());
    let retry_after = u64::from(shared.retry_after_secs.load(Ordering::Relaxed));
    {
        let mut records = shared.records.lock().unwrap_or_else(|e| e.into_inner());
        let record = records.entry(id).or_default();
        record.requests += 1;
        record.n = record.n.or(n);
        if !valid {
            record.bad_signatures += 1;
        }
        if let Some((answered_at, answered_process, allowed_at)) = record.retry_after.take()
            && at + RETRY_AFTER_TOLERANCE < allowed_at
        {
            record.early.push(EarlyAttempt {
                answered_at,
                answered_process,
                allowed_at,
                at,
                instance: instance.clone(),
            });
        }
        match fault {
            None => record.deliveries.push(Delivery {
                at,
                instance: instance.clone(),
            }),
            Some(ReceiverFault::TooMany) => {
                record.retry_after =
                    Some((at, instance.clone(), at + Duration::from_secs(retry_after)));
            }
            Some(_) => {}
        }
    }
    let answers = &shared.answers;
    match fault {
        None => {
            answers.ok.fetch_add(1, Ordering::Relaxed);
            shared
                .last_ok
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(instance)
                .or_default()
                .push(at);
            response(StatusCode::OK, &[], "ok")
        }
        Some(ReceiverFault::Error500) => {
            answers.error_500.fetch_add(1, Ordering::Relaxed);
            response(StatusCode::INTERNAL_SERVER_ERROR, &[], "injected 500")
        }
        Some(ReceiverFault::TooMany) => {
            answers.too_many.fetch_add(1, Ordering::Relaxed);
            response(
                StatusCode::TOO_MANY_REQUESTS,
                &[("retry-after", retry_after.to_string())],
                "injected 429",
            )
        }
        Some(ReceiverFault::Slow) => {
            answers.slow.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(ATTEMPT_TIMEOUT + Duration::from_millis(300)).await;
            response(StatusCode::OK, &[], "too late")
        }
        Some(ReceiverFault::Reset) => {
            answers.reset.fetch_add(1, Ordering::Relaxed);
            reset.notify_one();
            std::future::pending().await
        }
        Some(ReceiverFault::Blackhole) => {
            answers.blackhole.fetch_add(1, Ordering::Relaxed);
            // Far past the relay's timeout; it will have closed the connection long before.
            tokio::time::sleep(ATTEMPT_TIMEOUT * 30).await;
            response(StatusCode::SERVICE_UNAVAILABLE, &[], "blackhole")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example from the Standard Webhooks specification's reference tests.
        let key = STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap_or_default();
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let ts = "1614265330";
        let body = br#"{"test": 2432232314}"#;
        let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert!(signature_valid(&key, id, ts, body, good));
        assert!(signature_valid(
            &key,
            id,
            ts,
            body,
            &format!("v1,bogus {good}")
        ));
        assert!(!signature_valid(&key, id, "1614265331", body, good));
        assert!(!signature_valid(&key, id, ts, b"{}", good));
    }
}
