//! The database file's schema and the checks made before it is used: the file must be a SQLite
//! database, of this application (`PRAGMA application_id`), of a schema version this build
//! knows (`PRAGMA user_version`), and pass `PRAGMA quick_check`. Forward migrations run at start;
//! a fresh or empty file gets the whole schema.

use std::path::Path;

use rusqlite::Connection;

/// `PRAGMA application_id` of a webhook-hub database ("WHub").
pub const APPLICATION_ID: i32 = 0x5748_7562;

/// The migrations, in order: migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: subscriptions with their indexes, fan-out entries, idempotency keys, delivery logs and
    // the queues' messages.
    r#"
    CREATE TABLE subscriptions (
        id               TEXT PRIMARY KEY,
        account          TEXT NOT NULL,
        callback_url     TEXT NOT NULL,
        version          INTEGER NOT NULL,
        sweep_at_ms      INTEGER NOT NULL,
        odometer         INTEGER NOT NULL DEFAULT 0,
        failing_since_ms INTEGER,
        body             TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX subscriptions_by_callback ON subscriptions (account, callback_url);
    CREATE INDEX subscriptions_by_account ON subscriptions (account, id);
    CREATE INDEX subscriptions_by_sweep ON subscriptions (sweep_at_ms);

    CREATE TABLE topic_entries (
        account         TEXT NOT NULL,
        pattern         TEXT NOT NULL,
        subscription_id TEXT NOT NULL,
        entry           TEXT NOT NULL,
        PRIMARY KEY (account, pattern, subscription_id)
    ) WITHOUT ROWID;

    CREATE TABLE event_keys (
        account         TEXT NOT NULL,
        key             TEXT NOT NULL,
        event_id        TEXT NOT NULL,
        queued          INTEGER NOT NULL,
        claim_until_ms  INTEGER NOT NULL,
        window_until_ms INTEGER NOT NULL,
        PRIMARY KEY (account, key)
    ) WITHOUT ROWID;
    CREATE INDEX event_keys_by_window ON event_keys (window_until_ms);

    CREATE TABLE attempts (
        subscription_id TEXT NOT NULL,
        n               INTEGER NOT NULL,
        expires_at_ms   INTEGER NOT NULL,
        record          TEXT NOT NULL,
        PRIMARY KEY (subscription_id, n)
    ) WITHOUT ROWID;
    CREATE INDEX attempts_by_expiry ON attempts (expires_at_ms);

    CREATE TABLE messages (
        id            INTEGER PRIMARY KEY,
        queue         TEXT NOT NULL,
        body          TEXT NOT NULL,
        visible_at_ms INTEGER NOT NULL,
        receive_count INTEGER NOT NULL DEFAULT 0,
        receipt       INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX messages_by_visibility ON messages (queue, visible_at_ms, id);
    "#,
    // 2: when each message was sent, for the age of the oldest one (0 for messages sent before).
    r#"
    ALTER TABLE messages ADD COLUMN sent_at_ms INTEGER NOT NULL DEFAULT 0;
    "#,
    // 3: deliveries kept with their subscription (failing, exhausted, parked), in event order.
    r#"
    CREATE TABLE kept_deliveries (
        subscription_id TEXT NOT NULL,
        event_id        TEXT NOT NULL,
        state           TEXT NOT NULL,
        expires_at_ms   INTEGER NOT NULL,
        record          TEXT NOT NULL,
        PRIMARY KEY (subscription_id, event_id)
    ) WITHOUT ROWID;
    CREATE INDEX kept_deliveries_by_expiry ON kept_deliveries (expires_at_ms);
    "#,
    // 4: when each subscription last had an event delivered.
    r#"
    ALTER TABLE subscriptions ADD COLUMN last_delivered_ms INTEGER;
    "#,
    // 5: the hub's own keys (the portal's session-signing key).
    r#"
    CREATE TABLE hub_keys (
        name TEXT PRIMARY KEY,
        key  BLOB NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 6: customers as a boundary: a callback URL is unique per account and bound owner ('' for
    // account-wide subscriptions, which every earlier one is); a customer's subscriptions are
    // listed through an index of their own; allowances (confirmations per customer and hour).
    r#"
    ALTER TABLE subscriptions ADD COLUMN bound_owner TEXT NOT NULL DEFAULT '';
    DROP INDEX subscriptions_by_callback;
    CREATE UNIQUE INDEX subscriptions_by_callback
        ON subscriptions (account, bound_owner, callback_url);
    CREATE INDEX subscriptions_by_owner ON subscriptions (account, bound_owner, id);
    CREATE TABLE allowances (
        key             TEXT PRIMARY KEY,
        window_start_ms INTEGER NOT NULL,
        used            INTEGER NOT NULL,
        expires_at_ms   INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX allowances_by_expiry ON allowances (expires_at_ms);
    "#,
    // 7: which hidden messages a process holds (received, or parked by the poller) rather than
    // postponed on purpose (a retry's delay), so a restart under the file's lock makes the held
    // ones visible at once.
    r#"
    ALTER TABLE messages ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
    "#,
    // 8: the odometer fold's last mark, so a fold tried again is not counted twice.
    r#"
    ALTER TABLE subscriptions ADD COLUMN fold_mark INTEGER;
    "#,
    // 9: the event history: every event fan-out saw, with its payload, until the retention. A
    // rowid table: its rows (about a kilobyte) fit a leaf page, where a WITHOUT ROWID row over
    // about 1,000 bytes spills into overflow pages; and it is written in append order.
    r#"
    CREATE TABLE events (
        seq      INTEGER PRIMARY KEY,
        account  TEXT NOT NULL,
        id       TEXT NOT NULL,
        until_ms INTEGER NOT NULL,
        record   TEXT NOT NULL
    );
    CREATE UNIQUE INDEX events_by_id ON events (account, id);
    CREATE INDEX events_by_expiry ON events (until_ms);
    "#,
    // 10: delivery controls: each subscription's pace (its limit's schedule and its back-off),
    // beside it like its counters; and ordered message groups (a message of a group is handed
    // out only when no earlier one of its group is left).
    r#"
    ALTER TABLE subscriptions ADD COLUMN pace TEXT;
    ALTER TABLE messages ADD COLUMN grp TEXT;
    CREATE INDEX messages_by_group ON messages (queue, grp, id) WHERE grp IS NOT NULL;
    "#,
    // 11: the event-type catalog: each account's declared types (their JSON) and its settings.
    r#"
    CREATE TABLE event_types (
        account TEXT NOT NULL,
        topic   TEXT NOT NULL,
        record  TEXT NOT NULL,
        PRIMARY KEY (account, topic)
    );
    CREATE TABLE catalog_settings (
        account TEXT PRIMARY KEY,
        record  TEXT NOT NULL
    );
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Why a file cannot be used, in words for the operator.
pub type Refusal = String;

/// The database at `path` opened read-only, its header checked first: for the commands that read
/// a file `serve` may hold (its keys before `serve` takes it, `catalog export` beside it).
pub fn open_read_only(path: &Path) -> Result<Connection, Refusal> {
    check_header(path)?;
    Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("{}: {e}", path.display()))
}

/// Checks the first bytes of an existing, non-empty file: a SQLite database starts with
/// `SQLite format 3\0`. Anything else is refused before SQLite touches it.
pub fn check_header(path: &Path) -> Result<(), Refusal> {
    use std::io::Read;
    let Ok(mut file) = std::fs::File::open(path) else {
        return Ok(()); // not there yet: created fresh
    };
    let mut header = [0u8; 16];
    let read = file.read(&mut header).map_err(|e| e.to_string())?;
    if read == 0 {
        return Ok(()); // an empty file: initialized fresh
    }
    if read < 16 || &header != b"SQLite format 3\0" {
        return Err(format!(
            "{} is not a SQLite database (it does not start with the SQLite header); \
             refusing to use or overwrite it",
            path.display()
        ));
    }
    Ok(())
}

/// Makes `conn`'s database this build's: a fresh one gets the whole schema, an older one is
/// migrated forward, anything else is refused.
pub fn prepare(conn: &Connection, path: &Path) -> Result<(), Refusal> {
    let corrupt = |e: rusqlite::Error| {
        format!(
            "{} cannot be read as a SQLite database ({e}); it may be corrupt: restore it from a \
             backup or move it away",
            path.display()
        )
    };
    let application_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(corrupt)?;
    let version: i32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(corrupt)?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(corrupt)?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(corrupt)?;
    if check != "ok" {
        return Err(format!(
            "{} is corrupt (quick_check: {check}); restore it from a backup or move it away",
            path.display()
        ));
    }
    if application_id == 0 && objects == 0 {
        // A fresh file: page reuse must be chosen before the first table exists.
        conn.execute_batch(&format!(
            "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA application_id = {APPLICATION_ID};"
        ))
        .map_err(|e| e.to_string())?;
    } else if application_id != APPLICATION_ID {
        return Err(format!(
            "{} is a SQLite database of another application (application_id {application_id:#x}, \
             {objects} schema objects), not a webhook-hub database; refusing to use it",
            path.display()
        ));
    } else if version > SCHEMA_VERSION {
        return Err(format!(
            "{} was written by a newer webhook-hub (schema version {version}; this build knows \
             up to {SCHEMA_VERSION}); run that version or restore a backup",
            path.display()
        ));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let to = i + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {migration}; PRAGMA user_version = {to}; COMMIT;"
        ))
        .map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            format!(
                "{}: migrating the schema to version {to} failed: {e}",
                path.display()
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_file_migrates_forward_keeping_its_messages() {
        let dir = std::env::temp_dir().join(format!("wh-migrate-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v1.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID}; {} PRAGMA user_version = 1;
                 INSERT INTO messages (queue, body, visible_at_ms) VALUES ('deliveries', '{{}}', 5);",
                MIGRATIONS[0]
            ))
            .unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        prepare(&conn, &path).unwrap();
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let (body, sent): (String, i64) = conn
            .query_row("SELECT body, sent_at_ms FROM messages", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((body.as_str(), sent), ("{}", 0), "kept, with no send time");
        drop(conn);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
