//! Polls every live relay while a run lasts: `/readyz` every 100 ms (keeping only the changes)
//! and RSS every second.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::relay::{Instance, TOKEN};

/// A `/readyz` answer slower than this is recorded as `slow <status>`: a readiness probe
/// with a one-second timeout would have failed.
const SLOW_PROBE: Duration = Duration::from_secs(1);

/// One observed change.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// When it was observed, since the run's origin.
    pub(crate) at: Duration,
    /// Which instance.
    pub(crate) instance: String,
    /// The new value: `/readyz`'s HTTP status, `slow <status>` after more than a second, or
    /// `error` when it did not answer within two.
    pub(crate) value: String,
}

/// What the monitor observed.
#[derive(Debug, Default, Clone)]
pub(crate) struct Observed {
    /// `/readyz` answers whenever they changed (`"200"`, `"503"`, `"error"`).
    pub(crate) readyz: Vec<Change>,
    /// Processes found exited without the harness stopping them.
    pub(crate) crashes: Vec<Change>,
}

/// The running monitor; stop it with [`Monitor::stop`].
#[derive(Debug)]
pub(crate) struct Monitor {
    observed: Arc<Mutex<Observed>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    /// Starts polling `instances`.
    pub(crate) fn start(origin: Instant, instances: Arc<Vec<Arc<Instance>>>) -> Self {
        let observed = Arc::new(Mutex::new(Observed::default()));
        let (stop, mut stopped) = watch::channel(false);
        let out = observed.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap_or_default();
            let mut last_ready: Vec<Option<(u32, String)>> = vec![None; instances.len()];
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut round = 0u64;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return,
                }
                round += 1;
                let polls = instances.iter().enumerate().map(|(i, inst)| {
                    let http = http.clone();
                    async move {
                        let (Some(base), pid) = (inst.base(), inst.pid()) else {
                            return (i, None);
                        };
                        let asked = Instant::now();
                        let ready = match http
                            .get(format!("{base}/readyz"))
                            .bearer_auth(TOKEN)
                            .send()
                            .await
                        {
                            // A probe's own timeout would have failed it.
                            Ok(r) if asked.elapsed() > SLOW_PROBE => {
                                format!("slow {}", r.status().as_u16())
                            }
                            Ok(r) => r.status().as_u16().to_string(),
                            Err(_) => "error".to_owned(),
                        };
                        if round.is_multiple_of(10) {
                            inst.sample_rss();
                        }
                        (i, Some((pid, ready)))
                    }
                });
                let results = futures_util::future::join_all(polls).await;
                let at = origin.elapsed();
                let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
                for (i, ready) in results {
                    let name = &instances[i].name;
                    if let Some((pid, value)) = ready
                        && last_ready[i].as_ref() != Some(&(pid, value.clone()))
                    {
                        last_ready[i] = Some((pid, value.clone()));
                        o.readyz.push(Change {
                            at,
                            instance: name.clone(),
                            value,
                        });
                    }
                }
            }
        });
        Monitor {
            observed,
            stop,
            task,
        }
    }

    /// Records that a process of `instance` exited without being stopped.
    pub(crate) fn crashed(&self, at: Duration, instance: &str, status: String) {
        self.observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .crashes
            .push(Change {
                at,
                instance: instance.to_owned(),
                value: status,
            });
    }

    /// What was observed so far.
    pub(crate) fn observed(&self) -> Observed {
        self.observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops polling.
    pub(crate) fn stop(&self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}
