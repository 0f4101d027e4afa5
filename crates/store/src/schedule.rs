//! Occurrences of schedules: each occurrence recorded once, with the message or run it fired.
//!
//! An occurrence is a row unique on `(schedule, manual, scheduled_for)`. Recording one
//! ([`Store::record_occurrence`](crate::Store::record_occurrence)) inserts that row and, in the
//! same transaction and only when the row is new, enqueues its message or starts its run. Any
//! number of processes sharing the store may try the same occurrence: the first commits it, the
//! others find it ([`Fired::Existing`]) and write nothing. That is how a schedule fires exactly
//! once without a leader.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::common::check_key;
use crate::error::{Result, StoreError};
use crate::run::{NewRun, RunChange, RunId};
use crate::types::{MessageId, NewMessage};

/// Longest `reason` kept with a skipped occurrence.
pub const MAX_SKIP_REASON_BYTES: usize = 512;

/// What became of an occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OccurrenceState {
    /// Its message was enqueued or its run started.
    Fired,
    /// It was passed over (missed while no relay ran, outside the catch-up policy).
    Skipped,
}

impl OccurrenceState {
    /// The stable name stored and shown: `fired`, `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            OccurrenceState::Fired => "fired",
            OccurrenceState::Skipped => "skipped",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "fired" => Some(OccurrenceState::Fired),
            "skipped" => Some(OccurrenceState::Skipped),
            _ => None,
        }
    }
}

/// One recorded occurrence of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occurrence {
    /// The schedule's name.
    pub schedule: String,
    /// The time the occurrence was due (for a manual trigger: when it was asked for).
    pub scheduled_for: SystemTime,
    /// Whether an operator triggered it, apart from the cron pattern.
    pub manual: bool,
    /// What became of it.
    pub state: OccurrenceState,
    /// When it was recorded (the store's clock).
    pub recorded_at: SystemTime,
    /// The message it enqueued (or found under its idempotency key), when it fired one.
    pub message_id: Option<MessageId>,
    /// The run it started (or found under its dedupe key), when it fired one.
    pub run_id: Option<RunId>,
    /// Why it was skipped.
    pub reason: Option<String>,
}

/// What an occurrence does when it is recorded first.
// One value per occurrence, moved once into the store: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum OccurrenceAction {
    /// Enqueue this message (its idempotency key is honoured as by
    /// [`Store::enqueue`](crate::Store::enqueue)).
    Enqueue(NewMessage),
    /// Start this run with this change, as [`Store::start_run`](crate::Store::start_run) does.
    StartRun(NewRun, RunChange),
    /// Record the occurrence as skipped, for this reason.
    Skip(String),
}

/// An occurrence to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOccurrence {
    /// The schedule's name.
    pub schedule: String,
    /// When it is due.
    pub scheduled_for: SystemTime,
    /// Whether an operator triggered it (a separate key space from the cron's occurrences).
    pub manual: bool,
    /// What it does when it is new.
    pub action: OccurrenceAction,
}

/// The answer of [`Store::record_occurrence`](crate::Store::record_occurrence).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fired {
    /// This call recorded it, and fired or skipped it.
    Created(Occurrence),
    /// It was recorded before (by this process or another): nothing was written.
    Existing(Occurrence),
}

impl Fired {
    /// The occurrence, new or found.
    pub fn occurrence(&self) -> &Occurrence {
        match self {
            Fired::Created(o) | Fired::Existing(o) => o,
        }
    }

    /// Whether this call recorded it.
    pub fn is_created(&self) -> bool {
        matches!(self, Fired::Created(_))
    }
}

/// Refuses an empty or overlong schedule name and an overlong skip reason.
pub(crate) fn check(new: &NewOccurrence) -> Result<()> {
    check_key("schedule", Some(&new.schedule), false)?;
    if let OccurrenceAction::Skip(reason) = &new.action
        && reason.len() > MAX_SKIP_REASON_BYTES
    {
        return Err(StoreError::InvalidOption {
            field: "reason",
            reason: format!(
                "is {} bytes; the maximum is {MAX_SKIP_REASON_BYTES}",
                reason.len()
            ),
        });
    }
    Ok(())
}

/// The state column read back, or a corrupt-row error.
pub(crate) fn state_of(text: &str) -> Result<OccurrenceState> {
    OccurrenceState::parse(text).ok_or_else(|| StoreError::Corrupt {
        detail: format!("stored occurrence state {text:?} is unknown"),
        source: None,
    })
}

/// An action checked and encoded for a backend.
#[derive(Debug)]
pub(crate) enum EncodedAction {
    Enqueue(Box<(NewMessage, crate::common::Encoded)>),
    StartRun(
        Box<(
            crate::transition::EncodedRun,
            crate::transition::EncodedChange,
        )>,
    ),
    Skip(String),
}

/// An occurrence checked and encoded for a backend.
#[derive(Debug)]
pub(crate) struct EncodedOccurrence {
    pub(crate) schedule: String,
    pub(crate) scheduled_for: i64,
    pub(crate) manual: bool,
    pub(crate) action: EncodedAction,
}

/// Checks `new` and encodes its message or run, refusing a payload over `max_payload`.
pub(crate) fn encode(new: NewOccurrence, max_payload: usize) -> Result<EncodedOccurrence> {
    check(&new)?;
    let action = match new.action {
        OccurrenceAction::Enqueue(message) => {
            let encoded = crate::common::encode(&message, max_payload)?;
            EncodedAction::Enqueue(Box::new((message, encoded)))
        }
        OccurrenceAction::StartRun(run, change) => EncodedAction::StartRun(Box::new((
            crate::transition::encode_run(run, max_payload)?,
            crate::transition::encode_change(change, max_payload)?,
        ))),
        OccurrenceAction::Skip(reason) => EncodedAction::Skip(reason),
    };
    Ok(EncodedOccurrence {
        schedule: new.schedule,
        scheduled_for: crate::types::to_millis(new.scheduled_for),
        manual: new.manual,
        action,
    })
}
