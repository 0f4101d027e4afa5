//! Embedded, versioned schema migrations, applied at open; a newer schema is refused.

use rusqlite::{Connection, OptionalExtension};

use super::error::Context;
use crate::error::{Result, StoreError};

/// The meta key holding the schema version.
pub(crate) const VERSION_KEY: &str = "ferrule.schema_version";

/// Migrations in order; migration `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: messages, events, idempotency keys, meta.
    "
    CREATE TABLE store_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE messages (
        seq              INTEGER PRIMARY KEY,
        id               TEXT    NOT NULL UNIQUE,
        destination      TEXT    NOT NULL,
        payload          TEXT    NOT NULL,
        headers          TEXT,
        idempotency_key  TEXT,
        ordering_key     TEXT,
        status           TEXT    NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  INTEGER NOT NULL,
        lease_owner      TEXT,
        lease_token      TEXT,
        lease_expires_at INTEGER,
        last_error       TEXT,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL,
        delivered_at     INTEGER,
        event_seq        INTEGER NOT NULL DEFAULT 0
    );
    -- Claims scan this in order: due first, then oldest.
    CREATE INDEX messages_due ON messages (next_attempt_at, seq)
        WHERE status IN ('queued', 'retrying', 'delivering');
    -- FIFO per ordering key: the older messages that can block a key.
    CREATE INDEX messages_fifo ON messages (ordering_key, seq)
        WHERE ordering_key IS NOT NULL AND status IN ('queued', 'retrying', 'delivering', 'dead');
    CREATE INDEX messages_status ON messages (status);
    CREATE INDEX messages_delivered ON messages (delivered_at) WHERE status = 'delivered';

    CREATE TABLE events (
        message_seq INTEGER NOT NULL REFERENCES messages (seq) ON DELETE CASCADE,
        seq         INTEGER NOT NULL,
        at          INTEGER NOT NULL,
        status      TEXT    NOT NULL,
        attempt     INTEGER NOT NULL,
        outcome     TEXT,
        code        TEXT,
        duration_ms INTEGER,
        detail      TEXT,
        PRIMARY KEY (message_seq, seq)
    ) WITHOUT ROWID;
    CREATE INDEX events_failures ON events (at)
        WHERE outcome IN ('transient', 'retry_after', 'permanent');

    CREATE TABLE idempotency (
        destination TEXT    NOT NULL,
        key         TEXT    NOT NULL,
        message_id  TEXT    NOT NULL,
        expires_at  INTEGER NOT NULL,
        PRIMARY KEY (destination, key)
    ) WITHOUT ROWID;
    ",
    // 2: inbound events (e.g. Telegram updates), unique per source and the sender's id.
    "
    CREATE TABLE inbound (
        seq         INTEGER PRIMARY KEY,
        id          TEXT    NOT NULL UNIQUE,
        source      TEXT    NOT NULL,
        external_id TEXT    NOT NULL,
        payload     TEXT    NOT NULL,
        received_at INTEGER NOT NULL,
        UNIQUE (source, external_id)
    );
    -- Listing one source newest first.
    CREATE INDEX inbound_source ON inbound (source, seq);
    -- Retention.
    CREATE INDEX inbound_received ON inbound (received_at);
    ",
    // 3: the partial indexes' conditions without IN lists of three or more values. SQLite
    // evaluates such a list through a temporary b-tree that it builds for every row it writes
    // (a page cache created, a page zeroed, the values inserted): six of them per message, 15 %
    // of the relay's instructions. Lists of two are compared directly. The conditions are the
    // `pending!`, `fifo_blocking!` and `failure_outcome!` macros in `sqlite/mod.rs`, which the
    // queries repeat word for word so SQLite can still use these indexes.
    "
    DROP INDEX messages_due;
    CREATE INDEX messages_due ON messages (next_attempt_at, seq)
        WHERE (status IN ('queued', 'retrying') OR status = 'delivering');
    DROP INDEX messages_fifo;
    CREATE INDEX messages_fifo ON messages (ordering_key, seq)
        WHERE ordering_key IS NOT NULL
          AND (status IN ('queued', 'retrying') OR status IN ('delivering', 'dead'));
    DROP INDEX events_failures;
    CREATE INDEX events_failures ON events (at)
        WHERE (outcome IN ('transient', 'retry_after') OR outcome = 'permanent');
    ",
    // 4: repeated deferrals fold into one event. `repeats` is set (from 1) only on deferral
    // events, which are the only ones that fold; NULL reads as 1. `last_at` is the latest
    // repeat.
    "
    ALTER TABLE events ADD COLUMN repeats INTEGER;
    ALTER TABLE events ADD COLUMN last_at INTEGER;
    ",
    // 5: depths per destination, without the scheduled messages. `not_before` is the first
    // attempt's earliest time as submitted (NULL: none, or forgotten by a replay), apart from
    // `next_attempt_at`, which deferrals and retries move too. `messages_depths` covers the
    // depths query: the pending and dead messages only, in (destination, status) order, so
    // counting them per destination and status needs neither the table nor a sort. Its
    // condition is the `counted!` macro in `sqlite/mod.rs` (lists of two, as in migration 3).
    "
    ALTER TABLE messages ADD COLUMN not_before INTEGER;
    CREATE INDEX messages_depths ON messages (destination, status, not_before)
        WHERE (status IN ('queued', 'retrying') OR status IN ('delivering', 'dead'));
    ",
    // 6: the fingerprint of the request that took an idempotency key, so that a duplicate
    // with another request is told apart (a conflict). NULL for keys taken before, and for
    // requests without one: neither ever conflicts.
    "
    ALTER TABLE idempotency ADD COLUMN fingerprint BLOB;
    ",
    // 7: runs of routes. A message may belong to a run's step (`run_id`, `run_step`; NULL for
    // every other message, and for those stored before). A run is unique per (route,
    // dedupe_key); `event_seq` numbers its events as `messages.event_seq` does. `waited_ms`
    // is the time spent `waiting` in earlier waits, `waiting_since` the start of the current
    // one. A wait is found by its token; `timer_id` is the message that expires it.
    // `runs_finished` and `runs_unfinished` serve the statistics of one route,
    // `runs_retention` the retention purge, `messages_run` a run's messages.
    "
    ALTER TABLE messages ADD COLUMN run_id TEXT;
    ALTER TABLE messages ADD COLUMN run_step TEXT;
    CREATE INDEX messages_run ON messages (run_id) WHERE run_id IS NOT NULL;

    CREATE TABLE runs (
        seq           INTEGER PRIMARY KEY,
        id            TEXT    NOT NULL UNIQUE,
        route         TEXT    NOT NULL,
        dedupe_key    TEXT    NOT NULL,
        status        TEXT    NOT NULL,
        state         TEXT    NOT NULL,
        step          TEXT,
        context       TEXT    NOT NULL,
        version       INTEGER NOT NULL,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        finished_at   INTEGER,
        waited_ms     INTEGER NOT NULL DEFAULT 0,
        waiting_since INTEGER,
        last_error    TEXT,
        event_seq     INTEGER NOT NULL DEFAULT 0,
        UNIQUE (route, dedupe_key)
    );
    CREATE INDEX runs_route ON runs (route, seq);
    CREATE INDEX runs_finished ON runs (route, finished_at) WHERE finished_at IS NOT NULL;
    CREATE INDEX runs_unfinished ON runs (route, status) WHERE finished_at IS NULL;
    CREATE INDEX runs_retention ON runs (finished_at) WHERE finished_at IS NOT NULL;

    CREATE TABLE run_events (
        run_seq     INTEGER NOT NULL REFERENCES runs (seq) ON DELETE CASCADE,
        seq         INTEGER NOT NULL,
        at          INTEGER NOT NULL,
        kind        TEXT    NOT NULL,
        status      TEXT    NOT NULL,
        state       TEXT    NOT NULL,
        step        TEXT,
        message_id  TEXT,
        detail      TEXT,
        duration_ms INTEGER,
        PRIMARY KEY (run_seq, seq)
    ) WITHOUT ROWID;

    CREATE TABLE waits (
        token       TEXT    PRIMARY KEY,
        run_seq     INTEGER NOT NULL REFERENCES runs (seq) ON DELETE CASCADE,
        step        TEXT    NOT NULL,
        state       TEXT    NOT NULL,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        allowed     TEXT,
        attached    TEXT,
        closed_at   INTEGER,
        consumed_by TEXT,
        action      TEXT,
        timer_id    TEXT
    ) WITHOUT ROWID;
    CREATE INDEX waits_run ON waits (run_seq, state);
    ",
    // 8: the audit log of operator actions. `detail` is a JSON object; `audit_actor` and
    // `audit_action` serve the listing filtered by either, newest first. Message search: by
    // destination, creation time (the payload text search is bounded by it), idempotency key
    // and ordering key (`messages_fifo` holds unfinished messages only). Paused destinations,
    // whose messages claims skip (one primary-key lookup per candidate).
    "
    CREATE TABLE audit (
        seq     INTEGER PRIMARY KEY,
        at      INTEGER NOT NULL,
        actor   TEXT    NOT NULL,
        action  TEXT    NOT NULL,
        target  TEXT,
        count   INTEGER,
        detail  TEXT    NOT NULL
    );
    CREATE INDEX audit_actor ON audit (actor, seq);
    CREATE INDEX audit_action ON audit (action, seq);

    CREATE INDEX messages_destination ON messages (destination, seq);
    CREATE INDEX messages_created ON messages (created_at);
    CREATE INDEX messages_idempotency_key ON messages (idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX messages_ordering_key ON messages (ordering_key, seq)
        WHERE ordering_key IS NOT NULL;

    CREATE TABLE paused_destinations (
        destination TEXT    PRIMARY KEY,
        paused_at   INTEGER NOT NULL,
        paused_by   TEXT    NOT NULL,
        reason      TEXT
    ) WITHOUT ROWID;
    ",
    // 9: the answer of a queued call to an `http` destination (JSON: status, headers, body,
    // truncated), kept with its message.
    "ALTER TABLE messages ADD COLUMN response TEXT;",
    // 10: per-minute rollups (see `rollup.rs`): delivery counts and latency histograms per
    // destination (`a0..a15` attempt latency, `d0..d15` submit to delivered, buckets of
    // `BUCKET_BOUNDS_MS`), run counts per route, failure reasons per destination. The relay
    // adds into these rows in batches; `*_minute` serve retention and range reads over every
    // destination or route.
    "
    CREATE TABLE rollup_destinations (
        destination TEXT    NOT NULL,
        minute      INTEGER NOT NULL,
        delivered INTEGER NOT NULL DEFAULT 0,
        retried INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        dead_lettered INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        attempt_ms_sum INTEGER NOT NULL DEFAULT 0,
        a0 INTEGER NOT NULL DEFAULT 0,
        a1 INTEGER NOT NULL DEFAULT 0,
        a2 INTEGER NOT NULL DEFAULT 0,
        a3 INTEGER NOT NULL DEFAULT 0,
        a4 INTEGER NOT NULL DEFAULT 0,
        a5 INTEGER NOT NULL DEFAULT 0,
        a6 INTEGER NOT NULL DEFAULT 0,
        a7 INTEGER NOT NULL DEFAULT 0,
        a8 INTEGER NOT NULL DEFAULT 0,
        a9 INTEGER NOT NULL DEFAULT 0,
        a10 INTEGER NOT NULL DEFAULT 0,
        a11 INTEGER NOT NULL DEFAULT 0,
        a12 INTEGER NOT NULL DEFAULT 0,
        a13 INTEGER NOT NULL DEFAULT 0,
        a14 INTEGER NOT NULL DEFAULT 0,
        a15 INTEGER NOT NULL DEFAULT 0,
        delivery_ms_sum INTEGER NOT NULL DEFAULT 0,
        d0 INTEGER NOT NULL DEFAULT 0,
        d1 INTEGER NOT NULL DEFAULT 0,
        d2 INTEGER NOT NULL DEFAULT 0,
        d3 INTEGER NOT NULL DEFAULT 0,
        d4 INTEGER NOT NULL DEFAULT 0,
        d5 INTEGER NOT NULL DEFAULT 0,
        d6 INTEGER NOT NULL DEFAULT 0,
        d7 INTEGER NOT NULL DEFAULT 0,
        d8 INTEGER NOT NULL DEFAULT 0,
        d9 INTEGER NOT NULL DEFAULT 0,
        d10 INTEGER NOT NULL DEFAULT 0,
        d11 INTEGER NOT NULL DEFAULT 0,
        d12 INTEGER NOT NULL DEFAULT 0,
        d13 INTEGER NOT NULL DEFAULT 0,
        d14 INTEGER NOT NULL DEFAULT 0,
        d15 INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (destination, minute)
    ) WITHOUT ROWID;
    CREATE INDEX rollup_destinations_minute ON rollup_destinations (minute);
    CREATE TABLE rollup_routes (
        route     TEXT    NOT NULL,
        minute    INTEGER NOT NULL,
        started   INTEGER NOT NULL DEFAULT 0,
        completed INTEGER NOT NULL DEFAULT 0,
        failed    INTEGER NOT NULL DEFAULT 0,
        expired   INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (route, minute)
    ) WITHOUT ROWID;
    CREATE INDEX rollup_routes_minute ON rollup_routes (minute);
    CREATE TABLE rollup_reasons (
        destination   TEXT    NOT NULL,
        reason        TEXT    NOT NULL,
        minute        INTEGER NOT NULL,
        count         INTEGER NOT NULL DEFAULT 0,
        dead_lettered INTEGER NOT NULL DEFAULT 0,
        last_at       INTEGER NOT NULL,
        PRIMARY KEY (destination, reason, minute)
    ) WITHOUT ROWID;
    CREATE INDEX rollup_reasons_minute ON rollup_reasons (minute);
    ",
    // 11: occurrences of schedules, one row per (schedule, manual, scheduled_for): the row
    // is written with its message or run, so an occurrence fires once however many relays try.
    "
    CREATE TABLE schedule_occurrences (
        schedule      TEXT    NOT NULL,
        manual        INTEGER NOT NULL,
        scheduled_for INTEGER NOT NULL,
        state         TEXT    NOT NULL,
        recorded_at   INTEGER NOT NULL,
        message_id    TEXT,
        run_id        TEXT,
        reason        TEXT,
        PRIMARY KEY (schedule, manual, scheduled_for)
    ) WITHOUT ROWID;
    ",
    // 12: the W3C trace context a message and a run were submitted under (`traceparent`).
    "ALTER TABLE messages ADD COLUMN traceparent TEXT;
    ALTER TABLE runs ADD COLUMN traceparent TEXT;",
    // 13: routes' chat mappings set through the API (`chats.rs`), laid by the relay over the
    // configured `[[routes.chats]]`.
    "
    CREATE TABLE route_chats (
        route      TEXT    NOT NULL,
        key        TEXT    NOT NULL,
        chat_id    INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        updated_by TEXT    NOT NULL,
        PRIMARY KEY (route, key)
    ) WITHOUT ROWID;
    ",
    // 14: the alert log (see `alert.rs`): one row per alert raised, by id (a ULID), its
    // message ids a JSON array. `alerts_kind` and `alerts_subject` serve the listing filtered
    // by either, newest first; `alerts_at` the retention purge.
    "
    CREATE TABLE alerts (
        id       TEXT    PRIMARY KEY,
        at       INTEGER NOT NULL,
        kind     TEXT    NOT NULL,
        subject  TEXT    NOT NULL,
        severity TEXT,
        message  TEXT    NOT NULL,
        outcome  TEXT    NOT NULL,
        messages TEXT    NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX alerts_kind ON alerts (kind, id);
    CREATE INDEX alerts_subject ON alerts (subject, id);
    CREATE INDEX alerts_at ON alerts (at);
    ",
    // 15: circuit breakers shared by the relays on one store (`breaker.shared`), one row per
    // destination: open, probing or closed, until when, and the relay that owns it.
    "CREATE TABLE shared_breakers (
        destination TEXT    NOT NULL PRIMARY KEY,
        state       TEXT    NOT NULL,
        open_until  INTEGER NOT NULL,
        owner       TEXT    NOT NULL,
        epoch       INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    ) STRICT;",
    // 16: send windows shared by the relays on one store (Telegram's per-bot, per-chat and
    // per-group limits, GitHub's write pace), one row per window key holding its recent sends.
    "CREATE TABLE shared_limits (
        key        TEXT    NOT NULL PRIMARY KEY,
        state      TEXT    NOT NULL,
        updated_at INTEGER NOT NULL
    ) STRICT;",
];

/// The schema version this binary writes.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

/// The schema version recorded in the database (0 for an empty database).
pub(crate) fn current_version(conn: &Connection) -> Result<i64> {
    let has_meta: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'store_meta')",
            [],
            |row| row.get(0),
        )
        .ctx("reading the schema")?;
    if !has_meta {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
            .ctx("reading the schema")?;
        if tables > 0 {
            return Err(StoreError::Corrupt {
                detail: "the database has tables but no ferrule schema version".into(),
                source: None,
            });
        }
        return Ok(0);
    }
    let value: Option<String> = conn
        .query_row(
            "SELECT value FROM store_meta WHERE key = ?1",
            [VERSION_KEY],
            |row| row.get(0),
        )
        .optional()
        .ctx("reading the schema version")?;
    match value {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| StoreError::Corrupt {
            detail: format!("schema version `{v}` is not a number"),
            source: None,
        }),
    }
}

/// Brings the schema to [`LATEST`], one transaction per migration; refuses a newer schema.
/// Returns the version found before migrating.
pub(crate) fn migrate(conn: &mut Connection) -> Result<i64> {
    let found = current_version(conn)?;
    if found > LATEST {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: LATEST,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as i64 + 1;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx("starting a migration")?;
        tx.execute_batch(sql)
            .ctx(&format!("applying migration {version}"))?;
        tx.execute(
            "INSERT INTO store_meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            rusqlite::params![VERSION_KEY, version.to_string()],
        )
        .ctx("recording the schema version")?;
        tx.commit().ctx("committing a migration")?;
        tracing::info!(version, "applied store migration");
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_an_empty_database_and_refuses_a_newer_one() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), 0);
        assert_eq!(current_version(&conn).unwrap(), LATEST);
        assert_eq!(migrate(&mut conn).unwrap(), LATEST);
        conn.execute(
            "UPDATE store_meta SET value = ?1 WHERE key = ?2",
            rusqlite::params![(LATEST + 1).to_string(), VERSION_KEY],
        )
        .unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
    }

    #[test]
    fn a_version_3_database_with_rows_upgrades() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute(
            "INSERT INTO store_meta (key, value) VALUES (?1, '3')",
            [VERSION_KEY],
        )
        .unwrap();
        conn.execute_batch(
            "INSERT INTO messages (seq, id, destination, payload, idempotency_key, status,
                 next_attempt_at, created_at, updated_at, event_seq)
             VALUES (1, '01ARZ3NDEKTSV4RRFFQ69G5FAV', 'd', '1', 'k', 'queued', 5, 5, 5, 2);
             INSERT INTO events (message_seq, seq, at, status, attempt, detail)
             VALUES (1, 1, 5, 'queued', 0, NULL), (1, 2, 6, 'queued', 0, 'circuit open');
             INSERT INTO idempotency (destination, key, message_id, expires_at)
             VALUES ('d', 'k', '01ARZ3NDEKTSV4RRFFQ69G5FAV', 99);",
        )
        .unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), 3);
        assert_eq!(current_version(&conn).unwrap(), LATEST);
        // Old events are single and never fold (no `repeats`), old messages not scheduled,
        // old keys without a fingerprint.
        let events: Vec<crate::types::Event> = conn
            .prepare(&format!(
                "SELECT {} FROM events ORDER BY seq",
                super::super::rows::EVENT_COLUMNS
            ))
            .unwrap()
            .query_map([], super::super::rows::event)
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(events.iter().all(|e| e.repeats == 1 && e.last_at.is_none()));
        let raw: Option<i64> = conn
            .query_row("SELECT repeats FROM events WHERE seq = 2", [], |r| r.get(0))
            .unwrap();
        assert_eq!(raw, None);
        let (not_before, fingerprint): (Option<i64>, Option<Vec<u8>>) = conn
            .query_row(
                "SELECT m.not_before, k.fingerprint FROM messages m, idempotency k",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((not_before, fingerprint), (None, None));
        let indexed: i64 = conn
            .query_row(
                "SELECT count(*) FROM messages INDEXED BY messages_depths
                 WHERE (status IN ('queued', 'retrying') OR status IN ('delivering', 'dead'))",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            indexed, 1,
            "the existing pending message is in the new index"
        );
    }

    /// Two messages, as a store at schema version 6 keeps them: `A…V` queued (with an
    /// idempotency key), `A…W` delivered, each with its events.
    pub(crate) const V6_ROWS: &str = "
        INSERT INTO messages (seq, id, destination, payload, idempotency_key, status,
             attempts, next_attempt_at, created_at, updated_at, delivered_at, event_seq)
        VALUES (1, '01ARZ3NDEKTSV4RRFFQ69G5FAV', 'd', '{\"n\":1}', 'k', 'queued', 0, 5, 5, 5,
                NULL, 1),
               (2, '01ARZ3NDEKTSV4RRFFQ69G5FAW', 'd', '{\"n\":2}', NULL, 'delivered', 1, 5, 5,
                6, 6, 3);
        INSERT INTO events (message_seq, seq, at, status, attempt, detail)
        VALUES (1, 1, 5, 'queued', 0, NULL), (2, 1, 5, 'queued', 0, NULL),
               (2, 2, 5, 'delivering', 1, 'claimed by w'), (2, 3, 6, 'delivered', 1, NULL);
        INSERT INTO idempotency (destination, key, message_id, expires_at)
        VALUES ('d', 'k', '01ARZ3NDEKTSV4RRFFQ69G5FAV', 99);";

    #[tokio::test]
    async fn a_version_6_database_with_rows_upgrades_to_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v6.db");
        let mut conn = Connection::open(&path).unwrap();
        for sql in &MIGRATIONS[..6] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute(
            "INSERT INTO store_meta (key, value) VALUES (?1, '6')",
            [VERSION_KEY],
        )
        .unwrap();
        conn.execute_batch(V6_ROWS).unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), 6);
        drop(conn);
        let clock = ferrule_policy::ManualClock::new();
        let store = crate::SqliteStore::open(crate::SqliteOptions::new(
            &path,
            crate::StoreOptions::with_clock(clock.shared()),
        ))
        .await
        .unwrap();
        crate::run::upgraded::exercise(
            &store,
            "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap(),
            "01ARZ3NDEKTSV4RRFFQ69G5FAW".parse().unwrap(),
        )
        .await;
    }

    #[test]
    fn a_foreign_database_is_not_migrated() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE other (x)").unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }
}
