//! Durable message store for the ferrule relay: one [`Store`] trait, SQLite and PostgreSQL
//! backends.
//!
//! The store is the relay's memory: a message is acknowledged to its submitter only after it is
//! committed durably, and from then on it moves through `queued → delivering → delivered` (or
//! `retrying`, `dead`, `cancelled`) under leases held by dispatcher workers, with every
//! transition appended to the message's event timeline in the same transaction.
//!
//! Routes run on the same queue: a [`Run`] walks through steps, each executed by messages
//! tagged with the run and step, and every change of a run is applied in the transaction that
//! ends the step's message (see [`RunChange`] and [`Store::complete_and_advance`]).
//!
//! Every timestamp is read from the [`SharedClock`](ferrule_policy::SharedClock) in
//! [`StoreOptions`], so tests drive lease expiry and due times with a
//! [`ManualClock`](ferrule_policy::ManualClock).

pub mod alert;
mod any;
pub mod audit;
pub mod chats;
mod common;
pub mod error;
pub mod load;
pub mod options;
pub mod pause;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod rollup;
pub mod run;
pub mod schedule;
pub mod shared_breaker;
pub mod shared_limit;
pub mod sqlite;
mod store;
mod transition;
pub mod types;

pub use alert::{AlertFilter, AlertId, AlertPage, AlertRecord, NewAlert};
pub use any::{AnyStore, open};
pub use audit::{AuditEntry, AuditFilter, AuditPage, NewAuditEntry};
pub use chats::RouteChat;
pub use error::{BoxError, ErrorKind, Result, StoreError};
pub use load::{PoolLoad, StoreLoad};
pub use options::{DeadLetterPolicy, PoolObserver, PoolWait, StoreOptions, Synchronous};
pub use pause::Paused;
#[cfg(feature = "postgres")]
pub use postgres::{PgOptions, PgStore};
pub use rollup::{
    DeliveryCounts, Histogram, ReasonCount, RollupBatch, RunCounts, RunOutcome, Series,
    SeriesPoint, SeriesQuery,
};
pub use run::{
    Advance, Advanced, CloseWait, FailureReason, FinishedCounts, NewRun, NewWait, Run, RunChange,
    RunConflict, RunDetail, RunEvent, RunEventKind, RunFilter, RunId, RunMessage, RunPage,
    RunStats, RunStatus, RunStep, Started, StateCount, StepMessage, TIMER_DESTINATION, Wait,
    WaitOutcome, WaitState,
};
pub use schedule::{Fired, NewOccurrence, Occurrence, OccurrenceAction, OccurrenceState};
pub use shared_breaker::{BreakerUpdate, SharedBreaker, SharedState};
pub use shared_limit::{LimitSpan, Refusal, SlotAnswer, SlotBatch, SlotFinish, SlotRequest};
pub use sqlite::{SqliteOptions, SqliteStore};
pub use store::Store;
pub use types::{
    AttemptReport, Claimed, Cursor, Depths, DestinationDepths, Duplicate, Enqueued, ErrorGroup,
    Event, Filter, Inbound, InboundId, InboundPage, Lease, Message, MessageDetail, MessageId,
    NewInbound, NewMessage, OutcomeClass, Page, Recorded, ReplayReport, ReplayTarget, Stats,
    Status, StatusCounts,
};
