//! Delivery connectors for the ferrule relay: one attempt of one message to one destination.
//!
//! A connector turns a [`Delivery`] (a stored message and its attempt number) into a request to
//! the outside world and classifies what came back as a [`DeliveryResult`]: an
//! [`Outcome`](ferrule_policy::Outcome) for the policies, a status code and a short detail for
//! the store's event row. Connectors never retry, sleep or schedule: the relay's dispatcher
//! does that durably, under the policies of `ferrule-policy`.
//!
//! Every connector implements [`Connector`]; [`AnyConnector`] holds any one of them, so the
//! relay can keep one map from destination name to connector. Constructors validate their
//! configuration and return a [`ConnectorError`] naming the field.

mod any;
mod check;
mod connector;
mod error;
pub mod github;
pub mod http;
mod shared;
pub mod smtp;
pub mod telegram;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod webhook;

use std::time::Duration;

pub use any::AnyConnector;
pub use check::{CheckResult, CheckTarget};
pub use connector::{Connector, Delivery, DeliveryResult};
pub use error::{BoxError, ConnectorError, PayloadError, Result};

/// Something the dispatcher must act on beyond the attempt's [`Outcome`](ferrule_policy::Outcome),
/// reported in [`DeliveryResult::signal`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signal {
    /// Stop sending to this destination for this long (Telegram's flood control is bot-wide).
    /// The breaker must not count the attempt as a failure.
    PauseDestination(Duration),
    /// The Telegram group was upgraded to a supergroup: rewrite the payload's chat id from
    /// `from` to `to` and retry.
    MigrateChat {
        /// The chat id the payload names.
        from: String,
        /// The supergroup's chat id (may exceed 32 bits).
        to: i64,
    },
    /// The destination's credentials were rejected (a Telegram 401, an SMTP 535): force-open the
    /// destination's breaker and raise an alert.
    Unauthorized,
}
