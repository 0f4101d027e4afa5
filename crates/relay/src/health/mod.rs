//! What the relay knows about its own health and its dependencies': each dependency's status
//! with thresholds ([`Health`]), the queue depths it estimates between reads of the store
//! ([`Depths`]), a full store disk as one episode ([`storage`]), and what a service manager
//! is told ([`systemd`]: ready, stopping, and the watchdog fed by the claim loop's
//! [`Heartbeat`]), the active checks of the destinations ([`checks`]), and the store's pool and
//! writer load ([`pool`]). The probes that show them
//! (`/livez`, `/readyz`, `/status`, `/metrics`) are in `api/health.rs`.

pub mod checks;
mod dependency;
mod depths;
pub mod pool;
pub mod storage;
pub mod systemd;

pub use self::dependency::{Health, HealthSnapshot, HealthStatus, LastError};
pub use self::depths::Depths;
pub use self::systemd::Heartbeat;
