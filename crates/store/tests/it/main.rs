//! Integration tests for ferrule-store: the conformance suite, instantiated once per backend,
//! plus backend-specific tests (bad input, locking, crash safety).

mod conformance;
#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;
