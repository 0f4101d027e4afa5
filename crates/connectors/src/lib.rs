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
mod connector;
mod error;
pub mod webhook;

pub use any::AnyConnector;
pub use connector::{Connector, Delivery, DeliveryResult};
pub use error::{BoxError, ConnectorError, Result};
