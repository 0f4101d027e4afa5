//! Telling a service manager how the relay is doing, by the `sd_notify` protocol systemd's
//! `Type=notify` units use: `READY=1` once the store is open and the listener bound,
//! `STOPPING=1` when a shutdown starts, and, when the unit sets `WatchdogSec`, `WATCHDOG=1`
//! while the dispatcher's claim loop is alive ([`Heartbeat`]), so that a relay stuck for
//! `WatchdogSec` is killed and restarted instead of sitting there accepting work it never
//! delivers.
//!
//! Outside systemd (no `NOTIFY_SOCKET` in the environment) all of this does nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::state::AppState;

/// When the dispatcher's claim loop last went round, on the monotonic clock of the process
/// (not the relay's injectable clock: the watchdog is about real time passing).
#[derive(Debug)]
pub struct Heartbeat {
    origin: Instant,
    /// Nanoseconds from `origin` to the last beat.
    last: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            origin: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl Heartbeat {
    /// Records that the claim loop is going round now.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    /// How long ago the last beat was (since start when there was none).
    pub fn age(&self) -> Duration {
        self.age_at(Instant::now())
    }

    fn beat_at(&self, now: Instant) {
        let nanos = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        self.last.fetch_max(nanos, Ordering::Relaxed);
    }

    fn age_at(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.origin)
            .saturating_sub(Duration::from_nanos(self.last.load(Ordering::Relaxed)))
    }
}

/// Tells the service manager the relay is serving, with a status line `systemctl status`
/// shows.
pub fn ready(listen: std::net::SocketAddr) {
    let status = format!("serving on {listen}");
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// Tells the service manager the relay is stopping (draining its deliveries).
pub fn stopping() {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("draining deliveries"),
    ]);
}

/// Pings the service manager's watchdog every half `WatchdogSec` while the claim loop beats
/// within `WatchdogSec`; does nothing when the unit has no watchdog. It runs until the process
/// ends.
///
/// A claim loop that has not gone round for `WatchdogSec` gets no ping, so systemd kills the
/// relay (SIGABRT, then the unit's `Restart=`). While the relay shuts down the pings go on
/// unconditionally: the claim loop has stopped on purpose, and the drain is bounded by
/// `server.drain_timeout` and the unit's `TimeoutStopSec`.
pub async fn watchdog(state: AppState) {
    let Some(limit) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = limit / 2;
    let mut withheld = false;
    loop {
        tokio::time::sleep(period).await;
        let age = state.heartbeat.age();
        if alive(age, limit, state.draining()) {
            if withheld {
                tracing::info!("the claim loop is going round again; watchdog pings resume");
                withheld = false;
            }
            notify(&[NotifyState::Watchdog]);
        } else if !withheld {
            tracing::error!(
                since_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
                watchdog_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                "the dispatcher's claim loop is stuck: withholding the watchdog ping, so the \
                 service manager restarts the relay"
            );
            withheld = true;
        }
    }
}

/// Whether the watchdog is pinged: the claim loop beat within `limit`, or the relay is
/// shutting down.
fn alive(age: Duration, limit: Duration, draining: bool) -> bool {
    draining || age < limit
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_ages_from_its_last_beat() {
        let heartbeat = Heartbeat::default();
        let at = |secs| heartbeat.origin + Duration::from_secs(secs);
        assert_eq!(heartbeat.age_at(at(40)), Duration::from_secs(40));
        heartbeat.beat_at(at(35));
        assert_eq!(heartbeat.age_at(at(40)), Duration::from_secs(5));
        // Beats from several tasks race: an older one never moves the last beat back.
        heartbeat.beat_at(at(30));
        assert_eq!(heartbeat.age_at(at(40)), Duration::from_secs(5));
    }

    #[test]
    fn the_watchdog_is_pinged_while_the_loop_beats_or_the_relay_drains() {
        let limit = Duration::from_secs(30);
        assert!(alive(Duration::from_secs(1), limit, false));
        assert!(!alive(Duration::from_secs(31), limit, false));
        assert!(alive(Duration::from_secs(31), limit, true));
    }
}
