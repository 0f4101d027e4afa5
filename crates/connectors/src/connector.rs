//! The connector contract: a [`Delivery`] in, a [`DeliveryResult`] out.

use std::future::Future;
use std::time::Duration;

use ferrule_policy::Outcome;

use crate::Signal;

/// One delivery attempt of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery<'a> {
    /// The ferrule message id (a ULID); stable across retries, so receivers can de-duplicate.
    pub message_id: &'a str,
    /// The destination name from the relay configuration.
    pub destination: &'a str,
    /// The message payload: JSON text exactly as stored.
    pub payload: &'a str,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// The W3C `traceparent` of this attempt (the message's trace, a span of its own), which
    /// HTTP connectors (webhook, http) send as the `traceparent` header.
    pub traceparent: Option<&'a str>,
}

/// What one attempt produced, for the store's event row and for the policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryResult {
    /// What the attempt means: success, transient, retry-after or permanent.
    pub outcome: Outcome,
    /// The protocol's status code when one came back (an HTTP status, later an SMTP reply code).
    pub code: Option<i32>,
    /// A short, human-readable account of what happened. Never contains a secret.
    pub detail: String,
    /// How long the attempt took.
    pub duration: Duration,
    /// What the dispatcher must do beyond the outcome, if anything.
    pub signal: Option<Signal>,
    /// What the destination answered that a later step of a route may use: a small JSON
    /// object without secrets, set when the outcome is a success and `None` otherwise. Each
    /// connector's module documents its shape: a Telegram message's `message_id` and
    /// `chat_id`, a GitHub review's `id` and `html_url`, an e-mail's `message_id`, a webhook's
    /// `status` and JSON `body`.
    pub output: Option<serde_json::Value>,
}

/// Delivers one attempt of one message to one destination.
///
/// Implementations make exactly one attempt and never fail: every problem (a refused target, a
/// timeout, an error status) becomes a [`DeliveryResult`] whose [`Outcome`] tells the
/// dispatcher whether to retry. They hold no per-message state, so one connector serves every
/// message of its destination concurrently.
///
/// The method returns `impl Future`, so the trait is not object-safe; hold connectors of
/// different kinds in an [`AnyConnector`](crate::AnyConnector).
///
/// ```
/// use std::time::Duration;
/// use ferrule_connectors::{Connector, Delivery, DeliveryResult};
/// use ferrule_policy::Outcome;
///
/// /// Accepts everything without sending it anywhere.
/// struct Sink;
///
/// impl Connector for Sink {
///     async fn deliver(&self, delivery: &Delivery<'_>) -> DeliveryResult {
///         DeliveryResult {
///             outcome: Outcome::Success,
///             code: None,
///             detail: format!("dropped {} bytes", delivery.payload.len()),
///             duration: Duration::ZERO,
///             signal: None,
///             output: None,
///         }
///     }
/// }
/// # let delivery = Delivery { message_id: "01J", destination: "sink", payload: "{}", attempt: 1, traceparent: None };
/// # let result = block_on(Sink.deliver(&delivery));
/// # assert_eq!(result.detail, "dropped 2 bytes");
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
pub trait Connector: Send + Sync {
    /// Makes one attempt to deliver `delivery` and says what it produced.
    fn deliver(&self, delivery: &Delivery<'_>) -> impl Future<Output = DeliveryResult> + Send;
}
