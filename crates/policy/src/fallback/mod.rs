//! Fallback: an alternative result when a call fails or is rejected.
