//! What every policy is built with besides its config: a name, a clock and an observer.

use std::fmt;
use std::sync::Arc;

use crate::clock::{self, SharedClock};
use crate::event::{self, Event, SharedObserver};

/// A policy's name, clock and observer.
///
/// ```
/// use ferrule_policy::{Context, clock::ManualClock, event::TracingObserver};
/// use std::sync::Arc;
///
/// let clock = ManualClock::new();
/// let ctx = Context::new("telegram")
///     .with_clock(clock.shared())
///     .with_observer(Arc::new(TracingObserver));
/// assert_eq!(ctx.name(), "telegram");
/// ```
#[derive(Clone)]
pub struct Context {
    name: Arc<str>,
    clock: SharedClock,
    observer: SharedObserver,
}

impl Default for Context {
    fn default() -> Self {
        Context {
            name: Arc::from("default"),
            clock: clock::system(),
            observer: event::noop(),
        }
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("name", &self.name)
            .field("clock", &self.clock)
            .field("observer", &self.observer)
            .finish()
    }
}

impl Context {
    /// A context named `name` with the system clock and no observer.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Context {
            name: name.into(),
            ..Context::default()
        }
    }

    /// Replaces the clock.
    #[must_use]
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces the observer.
    #[must_use]
    pub fn with_observer(mut self, observer: SharedObserver) -> Self {
        self.observer = observer;
        self
    }

    /// Replaces the name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The policy's name (used in events and metrics labels).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The observer.
    pub fn observer(&self) -> &SharedObserver {
        &self.observer
    }

    /// Sends `event` to the observer.
    #[inline]
    pub fn emit(&self, event: Event<'_>) {
        self.observer.on_event(&event);
    }
}
