//! The relay's integration tests: the real router, a real SQLite file, real HTTP receivers.

mod api;
mod binary;
mod delivery;
mod postgres;
mod receiver;
mod support;
