//! The submitter: posts messages at a target rate with an `Idempotency-Key` each, to any live
//! instance, and retries the same key elsewhere when an instance dies mid-request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::relay::{DESTINATION, Instance, TOKEN};

/// How long one message may keep being retried before the submitter gives up on it.
const GIVE_UP_AFTER: Duration = Duration::from_secs(90);

/// A message the relay acknowledged.
#[derive(Debug, Clone)]
pub(crate) struct Acked {
    /// The submitter's number for it (also the payload's `n`).
    pub(crate) n: u64,
    /// The id the relay answered with.
    pub(crate) id: String,
    /// When the first request for it was sent.
    pub(crate) sent: Instant,
    /// Requests it took (1 when the first was acknowledged).
    pub(crate) requests: u32,
    /// Whether the acknowledgement was a 200 (the key had been stored before).
    pub(crate) replayed: bool,
}

/// What the submitter saw.
#[derive(Debug, Default)]
pub(crate) struct Submitted {
    /// Acknowledged messages.
    pub(crate) acked: Vec<Acked>,
    /// Messages given up on, with the last error.
    pub(crate) unacked: Vec<(u64, String)>,
    /// Failed requests by cause (`connect`, `503`, …).
    pub(crate) failures: HashMap<String, u64>,
}

/// Submits to the live instances of a run.
#[derive(Debug, Clone)]
pub(crate) struct Submitter {
    http: reqwest::Client,
    instances: Arc<Vec<Arc<Instance>>>,
    run: String,
    next_instance: Arc<AtomicU64>,
    out: Arc<Mutex<Submitted>>,
}

impl Submitter {
    /// A submitter over `instances`; `run` makes the idempotency keys unique per run.
    pub(crate) fn new(instances: Arc<Vec<Arc<Instance>>>, run: String) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Submitter {
            http,
            instances,
            run,
            next_instance: Arc::new(AtomicU64::new(0)),
            out: Arc::default(),
        }
    }

    /// The idempotency key of message `n`.
    pub(crate) fn key(&self, n: u64) -> String {
        format!("chaos-{}-{n}", self.run)
    }

    /// The base URL of a live instance, round robin; `None` while every one is down.
    fn pick(&self) -> Option<String> {
        let count = self.instances.len() as u64;
        for _ in 0..count {
            let i = self.next_instance.fetch_add(1, Ordering::Relaxed) % count;
            if let Some(base) = self.instances[i as usize].base() {
                return Some(base);
            }
        }
        None
    }

    /// Submits messages `0..messages` at `rate` per second; returns once each is acked or
    /// given up on.
    pub(crate) async fn run_at_rate(&self, messages: u64, rate: u64) -> Submitted {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..messages {
            tick.tick().await;
            let this = self.clone();
            tasks.spawn(async move { this.submit_one(n).await });
        }
        while tasks.join_next().await.is_some() {}
        self.take()
    }

    /// Submits messages `0..messages` from `clients` concurrent clients as fast as they are
    /// acknowledged.
    pub(crate) async fn run_flat_out(&self, messages: u64, clients: usize) -> Submitted {
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let (this, next) = (self.clone(), next.clone());
            tasks.spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= messages {
                        break;
                    }
                    this.submit_one(n).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        self.take()
    }

    fn take(&self) -> Submitted {
        std::mem::take(&mut *self.out.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn fail(&self, cause: String) {
        *self
            .out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failures
            .entry(cause)
            .or_default() += 1;
    }

    /// Posts message `n` until an instance acknowledges it or `GIVE_UP_AFTER` passes.
    async fn submit_one(&self, n: u64) {
        let sent = Instant::now();
        let key = self.key(n);
        let body = json!({"destination": DESTINATION, "payload": {"event": "chaos", "n": n}});
        let mut requests = 0;
        let mut last_error = String::from("no instance was up");
        while sent.elapsed() < GIVE_UP_AFTER {
            let Some(base) = self.pick() else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            requests += 1;
            match self.post(&base, &key, &body).await {
                Ok((id, replayed)) => {
                    self.out
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .acked
                        .push(Acked {
                            n,
                            id,
                            sent,
                            requests,
                            replayed,
                        });
                    return;
                }
                Err(cause) => {
                    self.fail(cause.clone());
                    last_error = cause;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        self.out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unacked
            .push((n, last_error));
    }

    /// One request: the id and whether it was a replay (200), or the failure's cause.
    async fn post(
        &self,
        base: &str,
        key: &str,
        body: &serde_json::Value,
    ) -> Result<(String, bool), String> {
        let response = self
            .http
            .post(format!("{base}/v1/messages"))
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    "connect".to_owned()
                } else if e.is_timeout() {
                    "timeout".to_owned()
                } else {
                    let mut cause = "request".to_owned();
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        cause = format!("request: {s}");
                        source = s.source();
                    }
                    cause
                }
            })?;
        let status = response.status().as_u16();
        let value: serde_json::Value = response
            .json()
            .await
            .map_err(|_| format!("{status} (unreadable body)"))?;
        match (status, value["id"].as_str()) {
            (200 | 202, Some(id)) => Ok((id.to_owned(), status == 200)),
            _ => Err(format!(
                "{status} {}",
                value["error"]["code"].as_str().unwrap_or("")
            )),
        }
    }

    /// Submits `key` again to a live instance and returns the id it answers with.
    pub(crate) async fn resubmit(&self, n: u64) -> Option<String> {
        let body = json!({"destination": DESTINATION, "payload": {"event": "chaos", "n": n}});
        let base = self.pick()?;
        self.post(&base, &self.key(n), &body)
            .await
            .ok()
            .map(|(id, _)| id)
    }
}
