//! Rate limiting (GCRA, via `governor`), keyed or not, that says when a refused call may go.

mod error;

pub use error::RateLimited;
