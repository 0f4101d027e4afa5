//! Helpers for tests and benchmarks, built only with the `testing` feature: servers that
//! behave like the services the relay delivers to.
//!
//! Nothing here is part of the relay a user runs; the default build leaves it out.

pub mod fake_bot_api;
