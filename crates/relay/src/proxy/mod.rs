//! The proxy: one forwarded call to an `http` destination, answered synchronously, under the
//! destination's policies — the same circuit breaker object as its queued deliveries, its
//! rate limit and bulkhead, a per-attempt timeout and an overall deadline, retries bounded by
//! a retry budget, and an ordered list of fallback destinations.
//!
//! The route is `ANY /v1/proxy/{destination}/{*path}` (the handler is in `api/proxy.rs`). How
//! one call goes:
//!
//! 1. The request body is kept in memory up to the destination's `max_retry_body`, so that it
//!    can be sent again; a larger body is streamed upstream once and never retried.
//! 2. Each destination of the chain (the addressed one, then its `fallback`s) is tried in turn
//!    while the deadline lasts. An open circuit, a full bulkhead, a rate limit or a pause (the
//!    provider's rate-limit headers said nothing is left) that would outlast the deadline moves
//!    on to the next one.
//! 3. Within a destination, a retryable answer is retried (idempotent methods, calls with an
//!    `Idempotency-Key`, or any call on a destination with `retry_post`) after the backoff or
//!    the server's hint, while the budget allows; when retries are spent, the next destination
//!    is tried. A billing stop raises an alert and also moves on.
//! 4. A successful answer is passed through as it arrives. Before the first byte reaches the
//!    caller, a failure is retried like any other; after it, the stream ends (with an SSE
//!    `event: error` for event streams) and the call counts as failed.
//!
//! Every answer carries `X-Ferrule-Attempts` (attempts across all destinations) and
//! `X-Ferrule-Destination` (the destination that answered, or was tried last).

mod body;
mod call;
mod headers;
mod stream;

pub use self::call::{Call, Failure, ProxyError, run};
pub use self::headers::{ATTEMPTS_HEADER, DEADLINE_HEADER, DESTINATION_HEADER, parse_deadline};
