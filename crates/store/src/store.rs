//! The [`Store`] trait: every operation the relay needs from its durable memory.

use std::future::Future;
use std::time::{Duration, SystemTime};

use crate::alert::{AlertFilter, AlertPage, AlertRecord, NewAlert};
use crate::audit::{AuditEntry, AuditFilter, AuditPage, NewAuditEntry};
use crate::chats::RouteChat;
use crate::error::Result;
use crate::pause::Paused;
use crate::rollup::{ReasonCount, RollupBatch, Series, SeriesQuery};
use crate::run::{
    Advance, Advanced, NewRun, RunChange, RunDetail, RunFilter, RunId, RunPage, RunStats, Started,
    Wait,
};
use crate::schedule::{Fired, NewOccurrence, Occurrence};
use crate::shared_breaker::{BreakerUpdate, SharedBreaker};
use crate::shared_limit::{SlotAnswer, SlotBatch};
use crate::types::{
    AttemptReport, Claimed, Cursor, Depths, Enqueued, Filter, InboundPage, Lease, MessageDetail,
    MessageId, NewInbound, NewMessage, Page, Recorded, ReplayReport, ReplayTarget, Stats,
};

/// A durable message store.
///
/// Contract shared by every backend (checked by the crate's conformance suite):
///
/// - **Durability**: an operation's future resolves `Ok` only after its effect is committed
///   durably. Nothing a submitter was told is accepted may be lost.
/// - **Events**: every status transition appends an [`Event`](crate::Event) in the same
///   transaction, except that a [`defer`](Self::defer) repeating the deferral before its claim
///   is folded into that event (see [`Event`](crate::Event)).
/// - **Time**: every timestamp written, and "now" in claims, is read from the store's clock
///   ([`StoreOptions::clock`](crate::StoreOptions::clock)), truncated to milliseconds.
/// - **Fencing**: operations taking a [`Lease`] fail with
///   [`StoreError::LeaseLost`](crate::StoreError::LeaseLost) unless the message is still
///   `delivering` under that owner and token.
/// - **FIFO per ordering key**: a message is not claimable while an older message with the same
///   ordering key is pending (`queued`, `retrying`, `delivering`), nor, under
///   [`DeadLetterPolicy::Block`](crate::DeadLetterPolicy::Block), while one is `dead`.
/// - **Runs**: every change of a run ([`start_run`](Self::start_run),
///   [`advance_run`](Self::advance_run), [`complete_and_advance`](Self::complete_and_advance),
///   [`dead_letter_and_advance`](Self::dead_letter_and_advance)) is one transaction with its
///   events, the waits it opens or closes, the messages it enqueues, cancels or retries and the
///   message it ends: a crash leaves all of it or none. A refused change writes nothing.
///   A message tagged with a run is never replayed by [`replay`](Self::replay) (retry it with
///   its run, [`RunChange::retry`](crate::RunChange::retry)), so a step that succeeded never
///   runs again.
pub trait Store: Send + Sync + 'static {
    /// Stores one message, or finds the original when its idempotency key was seen within the
    /// window for the same destination. Concurrent duplicates create exactly one message.
    ///
    /// A duplicate answers [`Enqueued::Duplicate`] with the original's id, its status now (read
    /// in the same transaction; `None` once the message is purged while its key is still
    /// remembered) and whether the two requests conflict: the key keeps the
    /// [`fingerprint`](NewMessage::fingerprint) of the request that took it, and a conflict is
    /// two fingerprints that differ (none on either side is no conflict).
    ///
    /// Refuses a payload over `max_payload_bytes` before any write.
    fn enqueue(&self, message: NewMessage) -> impl Future<Output = Result<Enqueued>> + Send;

    /// Stores several messages in one transaction; answers in the same order, each as
    /// [`enqueue`](Self::enqueue) would, a key repeated within the batch being a duplicate of
    /// its first occurrence. If any payload is too large, nothing is written.
    fn enqueue_batch(
        &self,
        messages: Vec<NewMessage>,
    ) -> impl Future<Output = Result<Vec<Enqueued>>> + Send;

    /// Leases up to `max` messages that are due (`next_attempt_at <= now`, or `delivering` with
    /// an expired lease), earliest due first and then oldest first, to `owner` for `lease`.
    /// Each claimed message becomes `delivering` and its attempt count goes up by one.
    fn claim_due(
        &self,
        owner: &str,
        max: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<Claimed>>> + Send;

    /// Heartbeat: moves the lease's expiry to `now + by` and returns the updated lease.
    fn extend_lease(
        &self,
        lease: &Lease,
        by: Duration,
    ) -> impl Future<Output = Result<Lease>> + Send;

    /// The attempt succeeded: `delivering → delivered`.
    fn complete(
        &self,
        lease: &Lease,
        report: AttemptReport,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The attempt failed and should be retried at `at`: `delivering → retrying`; the report's
    /// detail becomes `last_error`.
    fn reschedule(
        &self,
        lease: &Lease,
        at: SystemTime,
        report: AttemptReport,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The message cannot be delivered: `delivering → dead`; the report's detail (the reason)
    /// becomes `last_error`.
    fn dead_letter(
        &self,
        lease: &Lease,
        report: AttemptReport,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Keeps `response` (what the destination answered) with the message `lease` holds, fenced
    /// like [`complete`](Self::complete) (`LeaseLost` when the lease is not current), in place
    /// of any earlier one. The attempt stays open: end it as usual. Shown by
    /// [`get`](Self::get) as [`MessageDetail::response`]. Refuses a response over
    /// `max_payload_bytes` before any write.
    fn keep_response(
        &self,
        lease: &Lease,
        response: serde_json::Value,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Replaces the payload of the message `lease` holds, fenced like [`complete`](Self::complete)
    /// (`LeaseLost` when the lease is not current). The attempt stays open: end it as usual,
    /// typically with [`reschedule`](Self::reschedule), and the next attempt uses the new
    /// payload. For a destination that moved, e.g. a Telegram chat upgraded to a supergroup.
    /// Refuses a payload over `max_payload_bytes` before any write.
    fn replace_payload(
        &self,
        lease: &Lease,
        payload: serde_json::Value,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Gives an unstarted claim back (shutdown): the message returns to `queued` or `retrying`,
    /// due now, and the attempt is not counted.
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<()>> + Send;

    /// Gives a claim back without spending its attempt, due again at `until`, recording
    /// `reason` in the timeline: the dispatcher uses it when a policy refuses the attempt
    /// before it starts (open circuit, rate limit, full bulkhead). The message returns to
    /// `queued` or `retrying`; `last_error` is left as it was.
    ///
    /// Repeats fold: when the event before this claim's is a deferral with the same status,
    /// attempt and reason, the claim's event is removed and that deferral's
    /// [`repeats`](crate::Event::repeats) goes up by one, with `last_at` now, instead of a new
    /// event being appended. A different reason, a release or an attempt in between starts a
    /// new event.
    fn defer(
        &self,
        lease: &Lease,
        until: SystemTime,
        reason: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Operator cancel of a pending message (`queued`, `retrying`, `delivering`) → `cancelled`.
    /// A worker still holding a lease on it gets `LeaseLost` when it reports.
    fn cancel(
        &self,
        id: MessageId,
        reason: Option<String>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Moves every `delivering` message whose lease has expired to `retrying`, due now, and
    /// returns how many.
    fn recover_expired_leases(&self) -> impl Future<Output = Result<u64>> + Send;

    /// A message with its timeline, or `None`.
    fn get(&self, id: MessageId) -> impl Future<Output = Result<Option<MessageDetail>>> + Send;

    /// Messages matching `filter`, newest first, at most `limit` (1..=1000), continuing after
    /// `cursor`. A [`Filter::payload_contains`](crate::Filter::payload_contains) search is
    /// refused without a creation-time range of at most
    /// [`MAX_TEXT_SEARCH_SPAN`](crate::types::MAX_TEXT_SEARCH_SPAN).
    fn list(
        &self,
        filter: &Filter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> impl Future<Output = Result<Page>> + Send;

    /// Re-queues terminal messages (`dead`, `cancelled`, `delivered`): status `queued`, due now,
    /// attempts reset to zero, last error cleared, events kept. On a dry run nothing changes.
    ///
    /// Messages of a run are left out: a filter skips them, and naming one by id is refused
    /// as an invalid `ids` (retry it with its run instead).
    fn replay(
        &self,
        target: ReplayTarget,
        dry_run: bool,
    ) -> impl Future<Output = Result<ReplayReport>> + Send;

    /// Deletes terminal messages matching `filter`, with their events; returns how many.
    /// Pending messages are never purged.
    fn purge(&self, filter: &Filter) -> impl Future<Output = Result<u64>> + Send;

    /// Deletes the messages among `ids` that match `filter` and are terminal, with their
    /// events; returns how many. Unknown ids and pending messages are skipped, so an operator
    /// tool can page through a listing and purge it chunk by chunk with a progress bar.
    fn purge_ids(
        &self,
        ids: &[MessageId],
        filter: &Filter,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Retention: deletes messages delivered more than `older_than` ago, with their events, and
    /// forgets idempotency keys whose window has passed; returns how many messages.
    ///
    /// Runs that finished more than `older_than` ago go too, with their events and waits
    /// (their keys can then start a new run). An unfinished run is never purged, nor are the
    /// delivered messages of one, so its timeline stays whole however long it waits.
    fn purge_delivered(&self, older_than: Duration) -> impl Future<Output = Result<u64>> + Send;

    /// The queue, scheduled and dead-letter depths, in total and per destination, and how
    /// long the oldest due message has waited, from one snapshot. Read from indexes over the
    /// pending and dead messages only: cheap enough to poll every second however many
    /// delivered messages the store keeps. Messages scheduled ahead with
    /// [`NewMessage::not_before`] are counted apart from the queue (see [`Depths`]).
    fn depths(&self) -> impl Future<Output = Result<Depths>> + Send;

    /// Counts, depths, success rate, processing-time percentiles and top errors over `window`.
    fn stats(&self, window: Duration) -> impl Future<Output = Result<Stats>> + Send;

    /// When the next message becomes due, if any is pending: a dispatcher sleeps until then.
    ///
    /// A store may answer what its last claim read while nothing has woken
    /// [`wait_for_work`](Self::wait_for_work) since: never later than the truth, but possibly
    /// earlier (a message delivered, cancelled or paused since), which costs a dispatcher one
    /// claim that finds nothing.
    fn next_due_at(&self) -> impl Future<Output = Result<Option<SystemTime>>> + Send;

    /// Completes when new work may be available (a message was enqueued, rescheduled, released
    /// or replayed — by this process or, on PostgreSQL, by another). A hint: it can complete
    /// spuriously, so the caller claims and then waits again.
    fn wait_for_work(&self) -> impl Future<Output = ()> + Send;

    /// Takes the wake kept for the next [`wait_for_work`](Store::wait_for_work), if one is,
    /// without waiting: true when new work may have arrived since the last wait ended. A
    /// dispatcher about to ask [`next_due_at`](Store::next_due_at) before it waits claims again
    /// at once instead: that wake made the claim's own next due time stale, so the question
    /// would be a query for nothing.
    fn take_wake(&self) -> bool;

    /// Records an event that arrived from outside, once per `(source, external_id)`.
    ///
    /// A new event is stored and, in the same transaction, its `forward` message is enqueued
    /// (honouring the message's idempotency key like [`enqueue`](Self::enqueue), whose answer
    /// [`Recorded::Created`] carries): an event that was recorded is never lost from its
    /// forward. A repeated pair writes nothing and answers [`Recorded::Duplicate`] with the
    /// original, so a redelivered event never forwards twice. Concurrent duplicates record
    /// exactly one event.
    ///
    /// Refuses an empty or overlong `source` or `external_id`, and a payload (or forward) over
    /// `max_payload_bytes`, before any write.
    fn record_inbound(&self, event: NewInbound) -> impl Future<Output = Result<Recorded>> + Send;

    /// Recorded inbound events, newest first, from `source` only when given, at most `limit`
    /// (1..=1000), continuing after `cursor`.
    fn list_inbound(
        &self,
        source: Option<&str>,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> impl Future<Output = Result<InboundPage>> + Send;

    /// Retention: deletes inbound events recorded more than `older_than` ago; returns how many.
    /// A redelivery of a purged event is recorded again, so keep events longer than the sender
    /// retries (Telegram: 24 hours).
    fn purge_inbound(&self, older_than: Duration) -> impl Future<Output = Result<u64>> + Send;

    /// Starts a run of `run.route`, unique per `(route, dedupe_key)`, and applies `change` to
    /// it in the same transaction (typically: the first step's messages, perhaps a wait).
    ///
    /// A key already started answers [`Started::Existing`] with that run as it is now and
    /// writes nothing; concurrent starts with one key (on PostgreSQL, from any number of
    /// processes) create exactly one run. The new run is `active` unless `change` says
    /// otherwise, at version 1, with one `started` event.
    ///
    /// Refuses bad keys, steps or tokens and a payload or context over `max_payload_bytes`
    /// before any write.
    fn start_run(
        &self,
        run: NewRun,
        change: RunChange,
    ) -> impl Future<Output = Result<Started>> + Send;

    /// Applies a change not tied to a message's end: a button press consuming a wait, an API
    /// signal, an operator's retry or cancel.
    ///
    /// Refused with [`StoreError::RunConflict`](crate::StoreError::RunConflict), writing
    /// nothing, when the run is no longer at `advance.expected_version` or the wait it closes
    /// is not open; [`StoreError::RunNotFound`](crate::StoreError::RunNotFound) when there is
    /// no such run.
    fn advance_run(&self, advance: Advance) -> impl Future<Output = Result<Advanced>> + Send;

    /// The attempt of a run's message succeeded: `delivering → delivered` as
    /// [`complete`](Self::complete) would, and `advance` applied, in one transaction.
    ///
    /// Checked before anything is written, in this order: the lease
    /// ([`LeaseLost`](crate::StoreError::LeaseLost)), the message's run (a message of another
    /// run, or of none, is refused as an invalid `run`), the run's version and the wait to
    /// close ([`RunConflict`](crate::StoreError::RunConflict)). Refused, nothing is written and
    /// the message stays leased: read the run again, decide again, and call again.
    fn complete_and_advance(
        &self,
        lease: &Lease,
        report: AttemptReport,
        advance: Advance,
    ) -> impl Future<Output = Result<Advanced>> + Send;

    /// The run's message cannot be delivered: `delivering → dead` as
    /// [`dead_letter`](Self::dead_letter) would, and `advance` applied, in one transaction,
    /// checked as [`complete_and_advance`](Self::complete_and_advance) is.
    fn dead_letter_and_advance(
        &self,
        lease: &Lease,
        report: AttemptReport,
        advance: Advance,
    ) -> impl Future<Output = Result<Advanced>> + Send;

    /// A run with its events, waits and messages (their ids, steps and statuses), read from
    /// one snapshot, or `None`.
    fn get_run(&self, id: RunId) -> impl Future<Output = Result<Option<RunDetail>>> + Send;

    /// The wait with `token`, or `None`.
    fn find_wait(&self, token: &str) -> impl Future<Output = Result<Option<Wait>>> + Send;

    /// Runs matching `filter`, newest first, at most `limit` (1..=1000), continuing after
    /// `cursor`.
    fn list_runs(
        &self,
        filter: &RunFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> impl Future<Output = Result<RunPage>> + Send;

    /// The runs of `route` that finished within `window` (counts per status and state,
    /// success rate, mean and 95th percentile of processing time without the time spent
    /// waiting, top failure reasons), and its unfinished runs now.
    fn run_stats(
        &self,
        route: &str,
        window: Duration,
    ) -> impl Future<Output = Result<RunStats>> + Send;

    /// Reads a value from the store's small key-value table (e.g. a Telegram update offset).
    fn get_meta(&self, key: &str) -> impl Future<Output = Result<Option<String>>> + Send;

    /// Writes a value to the key-value table durably. Keys starting with `ferrule.` are reserved.
    fn set_meta(&self, key: &str, value: &str) -> impl Future<Output = Result<()>> + Send;

    /// Every key of the key-value table that starts with `prefix` (matched literally, byte by
    /// byte; an empty prefix matches every key), with its value, sorted by key in byte order
    /// (the order of Rust's `str`, the same on every backend). For a family of keys such as
    /// `relay.tokens.<name>`.
    ///
    /// The store's own keys (`ferrule.`) are never listed, and a prefix inside that namespace
    /// is refused like a reserved key in [`set_meta`](Self::set_meta).
    fn list_meta(&self, prefix: &str)
    -> impl Future<Output = Result<Vec<(String, String)>>> + Send;

    /// Deletes a key from the key-value table durably; answers whether it existed. Keys
    /// starting with `ferrule.` are reserved, as for [`set_meta`](Self::set_meta).
    fn delete_meta(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Appends an operator action to the audit log, at the store's now, and answers it as
    /// stored. Refuses an empty or overlong (over 512 bytes) `actor`, `action` or `target`, and
    /// a `detail` that is not a JSON object or is over
    /// [`MAX_DETAIL_BYTES`](crate::audit::MAX_DETAIL_BYTES), before any write.
    fn record_audit(&self, entry: NewAuditEntry)
    -> impl Future<Output = Result<AuditEntry>> + Send;

    /// Audit entries matching `filter`, newest first, at most `limit` (1..=1000), continuing
    /// after `cursor`.
    fn list_audit(
        &self,
        filter: &AuditFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> impl Future<Output = Result<AuditPage>> + Send;

    /// Records an alert the relay raised (see [`alert`](crate::alert)), at the store's now with
    /// a new id, and answers it as stored. Refuses an empty or overlong (over 512 bytes)
    /// `kind`, `subject` or `outcome`, an overlong `severity`, a `message` over
    /// [`MAX_ALERT_MESSAGE_BYTES`](crate::alert::MAX_ALERT_MESSAGE_BYTES) and more than
    /// [`MAX_ALERT_MESSAGES`](crate::alert::MAX_ALERT_MESSAGES) message ids, before any write.
    fn record_alert(&self, alert: NewAlert) -> impl Future<Output = Result<AlertRecord>> + Send;

    /// Alerts matching `filter`, newest first, at most `limit` (1..=1000), continuing after
    /// `cursor`.
    fn list_alerts(
        &self,
        filter: &AlertFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> impl Future<Output = Result<AlertPage>> + Send;

    /// Retention: deletes alerts recorded more than `older_than` ago; returns how many.
    fn purge_alerts(&self, older_than: Duration) -> impl Future<Output = Result<u64>> + Send;

    /// Pauses `destination` (see [`pause`](crate::pause)): from this write on, no process
    /// sharing the store claims its messages until [`resume_destination`](Self::resume_destination).
    /// Pausing a paused destination changes nothing and answers the pause already stored.
    /// Refuses an empty or overlong `destination` or `by`, and a `reason` over
    /// [`MAX_REASON_BYTES`](crate::pause::MAX_REASON_BYTES).
    fn pause_destination(
        &self,
        destination: &str,
        by: &str,
        reason: Option<&str>,
    ) -> impl Future<Output = Result<Paused>> + Send;

    /// Resumes `destination`: its due messages are claimable again and waiting dispatchers are
    /// woken (on PostgreSQL, in every process). Answers whether it was paused.
    fn resume_destination(&self, destination: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Every paused destination, by name.
    fn paused_destinations(&self) -> impl Future<Output = Result<Vec<Paused>>> + Send;

    /// Publishes a destination's shared circuit (see [`shared_breaker`](crate::shared_breaker)):
    /// stores `update` as its row, `update.owner` as the owner, with the epoch one past the
    /// stored one (1 for the first), and answers the row. Refuses an empty or overlong
    /// destination or owner.
    fn publish_breaker(
        &self,
        update: &BreakerUpdate,
    ) -> impl Future<Output = Result<SharedBreaker>> + Send;

    /// Claims the probe of a destination's shared circuit: only if its row is still at `epoch`
    /// (no one published or claimed it since it was read), makes it `probing` by `owner`, with
    /// the epoch one past and `open_until` the time another relay may claim it if no verdict
    /// comes, and answers the row; `None` when another relay was first (or the row is gone).
    fn take_over_breaker(
        &self,
        destination: &str,
        epoch: u64,
        owner: &str,
        open_until: SystemTime,
    ) -> impl Future<Output = Result<Option<SharedBreaker>>> + Send;

    /// Every destination's shared circuit, by name.
    fn shared_breakers(&self) -> impl Future<Output = Result<Vec<SharedBreaker>>> + Send;

    /// Takes places in the send windows shared by the relays on this store (see
    /// [`shared_limit`](crate::shared_limit)): in one transaction, locks the windows `batch`
    /// touches in key order, records its finishes, then admits or refuses each request in order
    /// and answers them in that order. Refuses an empty or overlong owner, key or token, a zero
    /// limit or span, or a line on other than a request's last span, before any write.
    fn take_send_slots(
        &self,
        batch: &SlotBatch,
    ) -> impl Future<Output = Result<Vec<SlotAnswer>>> + Send;

    /// Deletes the shared send windows no batch has touched for longer than `older_than` (by
    /// the store's clock): a chat the relays no longer send to leaves no row behind. A window
    /// idle past its span and its sends' holds is empty, so a later batch that needs it again
    /// starts it afresh. Answers how many were deleted.
    fn purge_send_windows(&self, older_than: Duration) -> impl Future<Output = Result<u64>> + Send;
    /// Sets `route`'s chat mapping of `key` to `chat_id` (see [`chats`](crate::chats)),
    /// replacing the one stored, at the store's now, by `by`; answers the entry stored.
    /// Refuses an empty or overlong `route` or `by`, and a key that is blank, holds a control
    /// character or is over [`MAX_KEY_CHARS`](crate::chats::MAX_KEY_CHARS) characters, before
    /// any write.
    fn set_route_chat(
        &self,
        route: &str,
        key: &str,
        chat_id: i64,
        by: &str,
    ) -> impl Future<Output = Result<RouteChat>> + Send;

    /// Removes `route`'s chat mapping of `key`; answers whether one was stored. Refuses what
    /// [`set_route_chat`](Self::set_route_chat) refuses.
    fn delete_route_chat(
        &self,
        route: &str,
        key: &str,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The chat mappings stored for `route`, or for every route when `None`, by route and key
    /// in byte order.
    fn route_chats(
        &self,
        route: Option<&str>,
    ) -> impl Future<Output = Result<Vec<RouteChat>>> + Send;

    /// Adds `batch` into the per-minute rollup rows, in one transaction: every counter is
    /// added to what the row holds (several processes sharing the store sum up), the last
    /// time of a reason is the later of the two. An empty batch writes nothing; one with an
    /// empty or overlong destination or route name is refused before any write. See
    /// [`rollup`](crate::rollup).
    fn add_rollups(&self, batch: &RollupBatch) -> impl Future<Output = Result<()>> + Send;

    /// The rollups from `query.from` to `query.to`, summed into points of `query.step`
    /// (aligned on `from`'s minute), one point per step including empty ones. Refuses a step
    /// that is not a whole number of minutes, an empty range, or more than
    /// [`MAX_POINTS`](crate::rollup::MAX_POINTS) points, naming the field.
    fn rollup_series(&self, query: &SeriesQuery) -> impl Future<Output = Result<Series>> + Send;

    /// The most frequent failure reasons from `from` to `to` (whole minutes, as
    /// [`rollup_series`](Self::rollup_series)), of `destination` or of every destination,
    /// most frequent first, at most `limit` (1..=1000).
    fn rollup_reasons(
        &self,
        from: SystemTime,
        to: SystemTime,
        destination: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ReasonCount>>> + Send;

    /// Retention: deletes rollup minutes that started more than `older_than` ago; returns how
    /// many rows.
    fn prune_rollups(&self, older_than: Duration) -> impl Future<Output = Result<u64>> + Send;

    /// Records an occurrence of a schedule once per `(schedule, manual, scheduled_for)` (see
    /// [`schedule`](crate::schedule)).
    ///
    /// A new occurrence is stored and, in the same transaction, its action applied: its message
    /// enqueued (honouring the message's idempotency key like [`enqueue`](Self::enqueue)), its
    /// run started (like [`start_run`](Self::start_run), once per dedupe key), or nothing for a
    /// skip; the answer is [`Fired::Created`] with the message or run it names. An occurrence
    /// recorded before writes nothing and answers [`Fired::Existing`] with it as stored, so
    /// concurrent attempts at one occurrence (on PostgreSQL, from any number of processes)
    /// record and fire it exactly once.
    ///
    /// Refuses an empty or overlong `schedule`, a skip reason over
    /// [`MAX_SKIP_REASON_BYTES`](crate::schedule::MAX_SKIP_REASON_BYTES) and what `enqueue` or
    /// `start_run` would refuse, before any write.
    fn record_occurrence(
        &self,
        occurrence: NewOccurrence,
    ) -> impl Future<Output = Result<Fired>> + Send;

    /// The latest recorded occurrence (by `scheduled_for`) of every schedule and kind: at most
    /// one from the cron pattern and one manual per schedule, sorted by schedule in byte order,
    /// the cron one first.
    fn latest_occurrences(&self) -> impl Future<Output = Result<Vec<Occurrence>>> + Send;

    /// Retention: deletes occurrences due more than `older_than` ago, except the latest of each
    /// schedule and kind (which the scheduler resumes from); returns how many.
    fn purge_occurrences(&self, older_than: Duration) -> impl Future<Output = Result<u64>> + Send;
}
