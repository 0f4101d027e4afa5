//! [`AnyStore`]: the backend chosen at run time from a URL, without `dyn`.

use std::time::{Duration, SystemTime};

use crate::alert::{AlertFilter, AlertPage, AlertRecord, NewAlert};
use crate::audit::{AuditEntry, AuditFilter, AuditPage, NewAuditEntry};
use crate::chats::RouteChat;
use crate::error::{Result, StoreError};
use crate::load::{Meter, StoreLoad};
use crate::options::StoreOptions;
use crate::pause::Paused;
#[cfg(feature = "postgres")]
use crate::postgres::PgStore;
use crate::rollup::{ReasonCount, RollupBatch, Series, SeriesQuery};
use crate::run::{
    Advance, Advanced, NewRun, RunChange, RunDetail, RunFilter, RunId, RunPage, RunStats, Started,
    Wait,
};
use crate::schedule::{Fired, NewOccurrence, Occurrence};
use crate::shared_breaker::{BreakerUpdate, SharedBreaker};
use crate::shared_limit::{SlotAnswer, SlotBatch};
use crate::sqlite::{SqliteOptions, SqliteStore};
use crate::store::Store;
use crate::types::{
    AttemptReport, Claimed, Cursor, Depths, Enqueued, Filter, InboundPage, Lease, MessageDetail,
    MessageId, NewInbound, NewMessage, Page, Recorded, ReplayReport, ReplayTarget, Stats,
};

/// One of the store backends, itself a [`Store`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyStore {
    /// The embedded SQLite backend.
    Sqlite(SqliteStore),
    /// The PostgreSQL backend, shared by many processes.
    #[cfg(feature = "postgres")]
    Postgres(PgStore),
}

/// Opens the store named by `url`: `sqlite://path` (relative), `sqlite:///abs/path`, or (with
/// the `postgres` feature) `postgres://…` / `postgresql://…` (see
/// [`PgOptions`](crate::PgOptions)).
///
/// ```no_run
/// # async fn demo() -> Result<(), ferrule_store::StoreError> {
/// use ferrule_store::{NewMessage, Store, StoreOptions};
///
/// let store = ferrule_store::open("sqlite://relay.db", StoreOptions::default()).await?;
/// let id = store
///     .enqueue(NewMessage::new("telegram:ops", serde_json::json!({"text": "hi"})))
///     .await?
///     .id();
/// # let _ = id; Ok(()) }
/// ```
pub async fn open(url: &str, options: StoreOptions) -> Result<AnyStore> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
    match scheme {
        "sqlite" => Ok(AnyStore::Sqlite(
            SqliteStore::open(SqliteOptions::from_url(url, options)?).await?,
        )),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(AnyStore::Postgres(PgStore::open(url, options).await?)),
        _ => Err(StoreError::InvalidUrl {
            url: redact(url),
            reason: if cfg!(feature = "postgres") {
                "unsupported scheme; expected `sqlite://<path>` or `postgres://…`".into()
            } else {
                "unsupported scheme; expected `sqlite://<path>` (built without `postgres`)".into()
            },
        }),
    }
}

/// The URL without a password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            let userinfo = &url[start + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..start + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Runs one operation on the backend, bounded by the store's operation timeout (see
/// [`AnyStore::bounded`]): every operation added here is bounded without a word more.
macro_rules! dispatch {
    ($self:ident, $store:ident => $s:ident . $method:ident ( $($arg:expr),* $(,)? ) .await) => {
        $self
            .bounded(stringify!($method), async {
                match $self {
                    AnyStore::Sqlite($store) => $s.$method($($arg),*).await,
                    #[cfg(feature = "postgres")]
                    AnyStore::Postgres($store) => $s.$method($($arg),*).await,
                }
            })
            .await
    };
}

impl AnyStore {
    /// The store's load: its writer's queue, the PostgreSQL pool, operations that timed out.
    pub fn load(&self) -> StoreLoad {
        match self {
            AnyStore::Sqlite(s) => s.load(),
            #[cfg(feature = "postgres")]
            AnyStore::Postgres(s) => s.load(),
        }
    }

    /// The longest one operation may take ([`StoreOptions::operation_timeout`]).
    pub fn operation_timeout(&self) -> Duration {
        match self {
            AnyStore::Sqlite(s) => s.operation_timeout(),
            #[cfg(feature = "postgres")]
            AnyStore::Postgres(s) => s.operation_timeout(),
        }
    }

    fn meter(&self) -> &Meter {
        match self {
            AnyStore::Sqlite(s) => s.meter(),
            #[cfg(feature = "postgres")]
            AnyStore::Postgres(s) => s.meter(),
        }
    }

    /// Runs `op`, giving up with [`StoreError::Timeout`] once the operation timeout has passed:
    /// the one place every [`Store`] operation of an `AnyStore` is bounded, so a lock held
    /// elsewhere, an exhausted pool or a stalled writer answers the caller instead of hanging
    /// it. The backend's work is dropped with the future (PostgreSQL also stops the statement
    /// on its side, through `statement_timeout`); a write already handed to the writer may
    /// still commit.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        op: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let after = self.operation_timeout();
        match tokio::time::timeout(after, op).await {
            Ok(result) => result,
            Err(_) => {
                self.meter().operation_timed_out();
                Err(StoreError::Timeout { operation, after })
            }
        }
    }
}

impl Store for AnyStore {
    async fn enqueue(&self, message: NewMessage) -> Result<Enqueued> {
        dispatch!(self, s => s.enqueue(message).await)
    }

    async fn enqueue_batch(&self, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>> {
        dispatch!(self, s => s.enqueue_batch(messages).await)
    }

    async fn claim_due(&self, owner: &str, max: usize, lease: Duration) -> Result<Vec<Claimed>> {
        dispatch!(self, s => s.claim_due(owner, max, lease).await)
    }

    async fn extend_lease(&self, lease: &Lease, by: Duration) -> Result<Lease> {
        dispatch!(self, s => s.extend_lease(lease, by).await)
    }

    async fn complete(&self, lease: &Lease, report: AttemptReport) -> Result<()> {
        dispatch!(self, s => s.complete(lease, report).await)
    }

    async fn reschedule(&self, lease: &Lease, at: SystemTime, report: AttemptReport) -> Result<()> {
        dispatch!(self, s => s.reschedule(lease, at, report).await)
    }

    async fn dead_letter(&self, lease: &Lease, report: AttemptReport) -> Result<()> {
        dispatch!(self, s => s.dead_letter(lease, report).await)
    }

    async fn replace_payload(&self, lease: &Lease, payload: serde_json::Value) -> Result<()> {
        dispatch!(self, s => s.replace_payload(lease, payload).await)
    }

    async fn keep_response(&self, lease: &Lease, response: serde_json::Value) -> Result<()> {
        dispatch!(self, s => s.keep_response(lease, response).await)
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        dispatch!(self, s => s.release(lease).await)
    }

    async fn defer(&self, lease: &Lease, until: SystemTime, reason: &str) -> Result<()> {
        dispatch!(self, s => s.defer(lease, until, reason).await)
    }

    async fn cancel(&self, id: MessageId, reason: Option<String>) -> Result<()> {
        dispatch!(self, s => s.cancel(id, reason).await)
    }

    async fn recover_expired_leases(&self) -> Result<u64> {
        dispatch!(self, s => s.recover_expired_leases().await)
    }

    async fn get(&self, id: MessageId) -> Result<Option<MessageDetail>> {
        dispatch!(self, s => s.get(id).await)
    }

    async fn list(&self, filter: &Filter, cursor: Option<&Cursor>, limit: usize) -> Result<Page> {
        dispatch!(self, s => s.list(filter, cursor, limit).await)
    }

    async fn replay(&self, target: ReplayTarget, dry_run: bool) -> Result<ReplayReport> {
        dispatch!(self, s => s.replay(target, dry_run).await)
    }

    async fn purge(&self, filter: &Filter) -> Result<u64> {
        dispatch!(self, s => s.purge(filter).await)
    }

    async fn purge_ids(&self, ids: &[MessageId], filter: &Filter) -> Result<u64> {
        dispatch!(self, s => s.purge_ids(ids, filter).await)
    }

    async fn purge_delivered(&self, older_than: Duration) -> Result<u64> {
        dispatch!(self, s => s.purge_delivered(older_than).await)
    }

    async fn depths(&self) -> Result<Depths> {
        dispatch!(self, s => s.depths().await)
    }

    async fn stats(&self, window: Duration) -> Result<Stats> {
        dispatch!(self, s => s.stats(window).await)
    }

    async fn next_due_at(&self) -> Result<Option<SystemTime>> {
        dispatch!(self, s => s.next_due_at().await)
    }

    async fn wait_for_work(&self) {
        // Not bounded: waiting for work is what it is for.
        match self {
            AnyStore::Sqlite(s) => s.wait_for_work().await,
            #[cfg(feature = "postgres")]
            AnyStore::Postgres(s) => s.wait_for_work().await,
        }
    }

    fn take_wake(&self) -> bool {
        match self {
            AnyStore::Sqlite(s) => s.take_wake(),
            #[cfg(feature = "postgres")]
            AnyStore::Postgres(s) => s.take_wake(),
        }
    }

    async fn record_inbound(&self, event: NewInbound) -> Result<Recorded> {
        dispatch!(self, s => s.record_inbound(event).await)
    }

    async fn list_inbound(
        &self,
        source: Option<&str>,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<InboundPage> {
        dispatch!(self, s => s.list_inbound(source, cursor, limit).await)
    }

    async fn purge_inbound(&self, older_than: Duration) -> Result<u64> {
        dispatch!(self, s => s.purge_inbound(older_than).await)
    }

    async fn start_run(&self, run: NewRun, change: RunChange) -> Result<Started> {
        dispatch!(self, s => s.start_run(run, change).await)
    }

    async fn advance_run(&self, advance: Advance) -> Result<Advanced> {
        dispatch!(self, s => s.advance_run(advance).await)
    }

    async fn complete_and_advance(
        &self,
        lease: &Lease,
        report: AttemptReport,
        advance: Advance,
    ) -> Result<Advanced> {
        dispatch!(self, s => s.complete_and_advance(lease, report, advance).await)
    }

    async fn dead_letter_and_advance(
        &self,
        lease: &Lease,
        report: AttemptReport,
        advance: Advance,
    ) -> Result<Advanced> {
        dispatch!(self, s => s.dead_letter_and_advance(lease, report, advance).await)
    }

    async fn get_run(&self, id: RunId) -> Result<Option<RunDetail>> {
        dispatch!(self, s => s.get_run(id).await)
    }

    async fn find_wait(&self, token: &str) -> Result<Option<Wait>> {
        dispatch!(self, s => s.find_wait(token).await)
    }

    async fn list_runs(
        &self,
        filter: &RunFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<RunPage> {
        dispatch!(self, s => s.list_runs(filter, cursor, limit).await)
    }

    async fn run_stats(&self, route: &str, window: Duration) -> Result<RunStats> {
        dispatch!(self, s => s.run_stats(route, window).await)
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        dispatch!(self, s => s.get_meta(key).await)
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        dispatch!(self, s => s.set_meta(key, value).await)
    }

    async fn list_meta(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        dispatch!(self, s => s.list_meta(prefix).await)
    }

    async fn delete_meta(&self, key: &str) -> Result<bool> {
        dispatch!(self, s => s.delete_meta(key).await)
    }

    async fn record_audit(&self, entry: NewAuditEntry) -> Result<AuditEntry> {
        dispatch!(self, s => s.record_audit(entry).await)
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<AuditPage> {
        dispatch!(self, s => s.list_audit(filter, cursor, limit).await)
    }

    async fn record_alert(&self, alert: NewAlert) -> Result<AlertRecord> {
        dispatch!(self, s => s.record_alert(alert).await)
    }

    async fn list_alerts(
        &self,
        filter: &AlertFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<AlertPage> {
        dispatch!(self, s => s.list_alerts(filter, cursor, limit).await)
    }

    async fn purge_alerts(&self, older_than: Duration) -> Result<u64> {
        dispatch!(self, s => s.purge_alerts(older_than).await)
    }

    async fn pause_destination(
        &self,
        destination: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<Paused> {
        dispatch!(self, s => s.pause_destination(destination, by, reason).await)
    }

    async fn resume_destination(&self, destination: &str) -> Result<bool> {
        dispatch!(self, s => s.resume_destination(destination).await)
    }

    async fn paused_destinations(&self) -> Result<Vec<Paused>> {
        dispatch!(self, s => s.paused_destinations().await)
    }

    async fn publish_breaker(&self, update: &BreakerUpdate) -> Result<SharedBreaker> {
        dispatch!(self, s => s.publish_breaker(update).await)
    }

    async fn take_over_breaker(
        &self,
        destination: &str,
        epoch: u64,
        owner: &str,
        open_until: SystemTime,
    ) -> Result<Option<SharedBreaker>> {
        dispatch!(self, s => s.take_over_breaker(destination, epoch, owner, open_until).await)
    }

    async fn shared_breakers(&self) -> Result<Vec<SharedBreaker>> {
        dispatch!(self, s => s.shared_breakers().await)
    }

    async fn take_send_slots(&self, batch: &SlotBatch) -> Result<Vec<SlotAnswer>> {
        dispatch!(self, s => s.take_send_slots(batch).await)
    }

    async fn purge_send_windows(&self, older_than: Duration) -> Result<u64> {
        dispatch!(self, s => s.purge_send_windows(older_than).await)
    }

    async fn set_route_chat(
        &self,
        route: &str,
        key: &str,
        chat_id: i64,
        by: &str,
    ) -> Result<RouteChat> {
        dispatch!(self, s => s.set_route_chat(route, key, chat_id, by).await)
    }

    async fn delete_route_chat(&self, route: &str, key: &str) -> Result<bool> {
        dispatch!(self, s => s.delete_route_chat(route, key).await)
    }

    async fn route_chats(&self, route: Option<&str>) -> Result<Vec<RouteChat>> {
        dispatch!(self, s => s.route_chats(route).await)
    }

    async fn add_rollups(&self, batch: &RollupBatch) -> Result<()> {
        dispatch!(self, s => s.add_rollups(batch).await)
    }

    async fn rollup_series(&self, query: &SeriesQuery) -> Result<Series> {
        dispatch!(self, s => s.rollup_series(query).await)
    }

    async fn rollup_reasons(
        &self,
        from: SystemTime,
        to: SystemTime,
        destination: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ReasonCount>> {
        dispatch!(self, s => s.rollup_reasons(from, to, destination, limit).await)
    }

    async fn prune_rollups(&self, older_than: Duration) -> Result<u64> {
        dispatch!(self, s => s.prune_rollups(older_than).await)
    }

    async fn record_occurrence(&self, occurrence: NewOccurrence) -> Result<Fired> {
        dispatch!(self, s => s.record_occurrence(occurrence).await)
    }

    async fn latest_occurrences(&self) -> Result<Vec<Occurrence>> {
        dispatch!(self, s => s.latest_occurrences().await)
    }

    async fn purge_occurrences(&self, older_than: Duration) -> Result<u64> {
        dispatch!(self, s => s.purge_occurrences(older_than).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(redact("sqlite://a.db"), "sqlite://a.db");
    }

    #[tokio::test]
    async fn unknown_schemes_are_refused() {
        let err = open("mysql://u:pw@h/db", StoreOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidUrl { .. }), "{err}");
        assert!(!err.to_string().contains("pw"), "{err}");
    }
}
