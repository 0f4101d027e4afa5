//! Retry: backoff with jitter, max attempts and elapsed time, `Retry-After`, and a retry budget.
