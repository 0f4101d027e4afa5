//! Helpers for tests, built for this crate's own tests and, with the `testing` feature, for the
//! relay's: servers on 127.0.0.1 that behave like the services the connectors talk to.
//!
//! Nothing here is part of a build a user runs; the default build leaves it out.

pub mod fake_github;
