//! `LISTEN ferrule_work`: wakes idle dispatchers when any process makes work available.
//!
//! A trigger on `messages` runs `pg_notify('ferrule_work', <schema>)` whenever a row becomes
//! claimable (or, for a message with an ordering key, leaves a blocking status). PostgreSQL
//! delivers the notification at commit, to every listening connection of every process. Each
//! store opens one listening connection lazily, on the first [`Waker::wait`].

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::{OnceCell, watch};
use tokio::task::AbortHandle;

/// The channel the trigger notifies; the payload is the schema name.
pub(crate) const CHANNEL: &str = "ferrule_work";

/// How long the listener waits before reconnecting after an error.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Wakes [`Waker::wait`] callers on notifications for one schema.
#[derive(Debug)]
pub(crate) struct Waker {
    wakeups: Arc<watch::Sender<u64>>,
    task: OnceCell<AbortHandle>,
    connect: PgConnectOptions,
    connect_timeout: Duration,
    schema: String,
}

impl Waker {
    pub(crate) fn new(
        connect: PgConnectOptions,
        connect_timeout: Duration,
        schema: String,
    ) -> Self {
        Waker {
            wakeups: Arc::new(watch::Sender::new(0)),
            task: OnceCell::new(),
            connect,
            connect_timeout,
            schema,
        }
    }

    /// Completes on the next notification for this schema. The first call starts the listener
    /// and returns as soon as it listens (work may have arrived before). If the listener cannot
    /// connect, returns after a short delay so the caller polls instead.
    pub(crate) async fn wait(&self) {
        let mut rx = self.wakeups.subscribe();
        let mut started_now = false;
        let started = self
            .task
            .get_or_try_init(|| {
                started_now = true;
                self.start()
            })
            .await;
        match started {
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for new work; polling");
                tokio::time::sleep(RECONNECT_DELAY).await;
            }
            Ok(_) if started_now => {}
            Ok(_) => {
                // The sender lives as long as `self`, so `changed` only fails after drop.
                let _ = rx.changed().await;
            }
        }
    }

    async fn start(&self) -> Result<AbortHandle, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(self.connect_timeout)
            .connect_lazy_with(self.connect.clone());
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.ignore_pool_close_event(true);
        listener.listen(CHANNEL).await?;
        let wakeups = self.wakeups.clone();
        let schema = self.schema.clone();
        let task = tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) if n.payload() == schema => {
                        wakeups.send_modify(|g| *g = g.wrapping_add(1));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        // Reconnected: notifications may have been lost, so wake everyone.
                        wakeups.send_modify(|g| *g = g.wrapping_add(1));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "work listener failed; reconnecting");
                        wakeups.send_modify(|g| *g = g.wrapping_add(1));
                        tokio::time::sleep(RECONNECT_DELAY).await;
                    }
                }
            }
        });
        Ok(task.abort_handle())
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}
