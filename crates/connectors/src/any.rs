//! [`AnyConnector`]: one type for every kind of connector.

use crate::{Connector, Delivery, DeliveryResult};

/// Any connector ferrule has, so the relay can keep one map from destination to connector.
///
/// [`Connector`] is not object-safe (it returns `impl Future`); this enum is the static
/// alternative to a `Box<dyn Connector>`. New kinds of connector become new variants, so match
/// on it with a wildcard arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyConnector {}

impl Connector for AnyConnector {
    async fn deliver(&self, _delivery: &Delivery<'_>) -> DeliveryResult {
        match *self {}
    }
}
