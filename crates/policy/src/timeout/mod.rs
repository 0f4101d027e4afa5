//! Timeout per attempt and an overall deadline.

mod error;

pub use error::Elapsed;
