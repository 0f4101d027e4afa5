//! Logs (`tracing`, human or JSON) and metrics: the process-wide Prometheus recorder and every
//! family the relay exports, described once.

mod logs;
#[cfg(feature = "otel")]
pub mod otel;
pub mod prometheus;
pub mod trace;

pub use self::logs::init_logging;
pub use self::prometheus::metrics;
