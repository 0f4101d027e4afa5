//! Integration tests for ferrule-store: the conformance suite, instantiated once per backend,
//! plus backend-specific tests (bad input, locking, crash safety).

mod alerts;
mod audit;
mod chats;
mod conformance;
mod crash;
mod pause;
#[cfg(feature = "postgres")]
mod postgres;
mod rollup;
mod runs;
mod schedules;
mod search;
mod shared_breaker;
mod shared_limit;
mod sqlite;
