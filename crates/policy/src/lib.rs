//! Composable resilience policies for async calls.
//!
//! `ferrule-policy` wraps any async operation in retry (backoff, jitter, `Retry-After`, retry
//! budget), circuit breaker, timeout and deadline, bulkhead, rate limiter, fallback and chaos
//! policies. Each policy lives in its own module with the same shape — the policy, its serde
//! config with `validate()`, its error, and a `tower` layer — and reads time only through the
//! [`Clock`] in its [`Context`], so tests run on a [`ManualClock`].
//!
//! Every policy decides from an [`Outcome`] produced by a [`Classify`] implementation, and
//! reports failures as [`Error<E>`], which carries the operation's own error or the policy's
//! typed rejection, plus the number of attempts made.

pub mod breaker;
pub mod bulkhead;
pub mod chaos;
pub mod classify;
pub mod clock;
pub mod config;
mod context;
pub mod duration;
pub mod error;
pub mod event;
pub mod fallback;
pub mod pipeline;
pub mod rate_limit;
pub mod retry;
pub mod timeout;

pub use breaker::{CircuitOpen, CircuitState};
pub use classify::{Classify, ErrorsAreTransient, Outcome};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use config::ConfigError;
pub use context::Context;
pub use error::{BoxError, Error, ErrorKind};
pub use event::{Event, Observer, SharedObserver};
pub use pipeline::{Pipeline, PipelineConfig};
