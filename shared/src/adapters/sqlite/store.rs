//! The SQLite [`Store`]: a subscription is one row (its JSON, with the columns its indexes and
//! counters need); topic entries, idempotency keys, the delivery log and kept deliveries are
//! tables of their own.
//! Every conditional write checks and writes in one operation of the writer, so it is atomic.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::db::{Admission, SqliteDb, db_error};
use crate::catalog::{CatalogSettings, EventType, StoredCatalog};
use crate::error::{HubError, Result};
use crate::model::{
    AttemptRecord, DeliveredTally, KeptDelivery, KeptEvent, KeptState, Subscription,
    SubscriptionStatus, TopicEntry,
};
use crate::ports::{
    CatalogStore, ClaimOutcome, EventQuery, HISTORY_SCAN, HistoryStore, KeyClaim, KeyStore,
    PaceStore, Page, Store,
};
use crate::topic::Pattern;

/// Keeps the last this many attempts per subscription (older ones are deleted as new ones come;
/// all of them go when they outlive the lease they were made under).
const ATTEMPT_LOG_LEN: i64 = 1000;
/// Rows deleted per statement while pruning, so one prune never holds the writer long.
const PRUNE_CHUNK: i64 = 5000;
/// Free pages above which a prune gives space back to the file system.
const FREE_PAGES_TO_RECLAIM: i64 = 32;

/// A [`Store`] in a SQLite database.
#[derive(Clone)]
pub struct SqliteStore {
    db: SqliteDb,
}

impl SqliteStore {
    /// The store of `db`.
    pub fn new(db: SqliteDb) -> Self {
        SqliteStore { db }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(HubError::backend)
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| HubError::backend(format!("a stored row: {e}")))
}

const SUBSCRIPTION_COLUMNS: &str = "body, odometer, failing_since_ms, last_delivered_ms, pace";

/// A subscription from a row of [`SUBSCRIPTION_COLUMNS`]: the counters come from their columns.
fn subscription_from(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Subscription>> {
    let body: String = row.get(0)?;
    let odometer: i64 = row.get(1)?;
    let failing_since: Option<i64> = row.get(2)?;
    let last_delivered: Option<i64> = row.get(3)?;
    let pace: Option<String> = row.get(4)?;
    Ok(from_json::<Subscription>(&body).and_then(|mut sub| {
        sub.odometer = odometer.max(0) as u64;
        sub.failing_since_ms = failing_since;
        sub.last_delivered_ms = last_delivered;
        sub.pace = pace.as_deref().map(from_json).transpose()?;
        Ok(sub)
    }))
}

fn one_subscription(
    conn: &Connection,
    filter: &str,
    params: impl rusqlite::Params,
) -> Result<Option<Subscription>> {
    let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE {filter}");
    conn.prepare_cached(&sql)
        .and_then(|mut s| s.query_row(params, subscription_from).optional())
        .map_err(db_error)?
        .transpose()
}

fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(e, _)
        if e.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn unlink_topics(conn: &Connection, sub: &Subscription) -> Result<()> {
    let mut delete = conn
        .prepare_cached(
            "DELETE FROM topic_entries WHERE account = ?1 AND pattern = ?2 AND subscription_id = ?3",
        )
        .map_err(db_error)?;
    for pattern in &sub.topics {
        delete
            .execute(params![sub.account, pattern.as_str(), sub.id])
            .map_err(db_error)?;
    }
    Ok(())
}

/// Removes the row of `id` with its topic entries (those of the stored copy and of `also`).
fn remove_row(conn: &Connection, id: &str, also: Option<&Subscription>) -> Result<bool> {
    let stored = one_subscription(conn, "id = ?1", [id])?;
    for sub in stored.iter().chain(also) {
        unlink_topics(conn, sub)?;
    }
    let removed = conn
        .prepare_cached("DELETE FROM subscriptions WHERE id = ?1")
        .and_then(|mut s| s.execute([id]))
        .map_err(db_error)?;
    Ok(removed > 0)
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn key(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let name = name.to_string();
        self.db
            .read(move |conn| {
                conn.prepare_cached("SELECT key FROM hub_keys WHERE name = ?1")
                    .and_then(|mut s| s.query_row([&name], |r| r.get(0)).optional())
                    .map_err(db_error)
            })
            .await
    }

    async fn hub_key(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>> {
        let (name, fresh) = (name.to_string(), fresh.to_vec());
        self.db
            .write(move |conn| {
                conn.prepare_cached("INSERT OR IGNORE INTO hub_keys (name, key) VALUES (?1, ?2)")
                    .and_then(|mut s| s.execute(params![name, fresh]))
                    .and_then(|_| {
                        conn.prepare_cached("SELECT key FROM hub_keys WHERE name = ?1")?
                            .query_row([&name], |r| r.get::<_, Vec<u8>>(0))
                    })
                    .map_err(db_error)
            })
            .await
    }

    async fn replace_key(&self, name: &str, expected: &[u8], value: &[u8]) -> Result<bool> {
        let (name, expected, value) = (name.to_string(), expected.to_vec(), value.to_vec());
        self.db
            .write(move |conn| {
                conn.prepare_cached("UPDATE hub_keys SET key = ?3 WHERE name = ?1 AND key = ?2")
                    .and_then(|mut s| s.execute(params![name, expected, value]))
                    .map(|changed| changed == 1)
                    .map_err(db_error)
            })
            .await
    }
}

#[async_trait]
impl HistoryStore for SqliteStore {
    async fn keep_events(&self, events: Vec<KeptEvent>) -> Result<()> {
        let rows: Vec<(String, String, i64, String)> = events
            .iter()
            .map(|k| {
                let e = &k.event;
                Ok((e.account.clone(), e.id.clone(), k.until_ms, to_json(k)?))
            })
            .collect::<Result<_>>()?;
        // Not waited for, and new work for the size limit: the writer commits it before the
        // event's acknowledgement (sent after it), and at the limit the history is what is
        // skipped first (logged), never the deliveries.
        let room = self.db.room(Admission::NewWork);
        self.db
            .write_behind("keep events in the history", move |conn| {
                room.check(conn)?;
                let mut insert = conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO events (account, id, until_ms, record)
                     VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(db_error)?;
                for (account, id, until, record) in &rows {
                    insert
                        .execute(params![account, id, until, record])
                        .map_err(db_error)?;
                }
                Ok(())
            });
        Ok(())
    }

    async fn kept_event(
        &self,
        account: &str,
        event_id: &str,
        now_ms: i64,
    ) -> Result<Option<KeptEvent>> {
        let (account, id) = (account.to_string(), event_id.to_string());
        let record: Option<String> = self
            .db
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT record FROM events WHERE account = ?1 AND id = ?2 AND until_ms > ?3",
                )
                .and_then(|mut s| {
                    s.query_row(params![account, id, now_ms], |r| r.get(0))
                        .optional()
                })
                .map_err(db_error)
            })
            .await?;
        record.as_deref().map(from_json).transpose()
    }

    async fn scan_events(&self, query: &EventQuery) -> Result<Vec<KeptEvent>> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let (low, high) = query.id_bounds();
        let bound = |b: std::ops::Bound<String>, op_in: &str, op_ex: &str| match b {
            Included(k) => (format!("id {op_in} ?"), Some(k)),
            Excluded(k) => (format!("id {op_ex} ?"), Some(k)),
            Unbounded => ("1".to_string(), None),
        };
        let (low_sql, low_key) = bound(low, ">=", ">");
        let (high_sql, high_key) = bound(high, "<=", "<");
        let order = if query.oldest_first { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT record FROM events WHERE account = ? AND until_ms > ? AND {low_sql} AND {high_sql}
             ORDER BY id {order} LIMIT {}",
            HISTORY_SCAN + 1
        );
        let (account, now) = (query.account.clone(), query.now_ms);
        let records: Vec<String> = self
            .db
            .read(move |conn| {
                let mut values: Vec<rusqlite::types::Value> = vec![account.into(), now.into()];
                values.extend(low_key.map(Into::into));
                values.extend(high_key.map(Into::into));
                let mut select = conn.prepare_cached(&sql).map_err(db_error)?;
                select
                    .query_map(rusqlite::params_from_iter(values), |r| r.get(0))
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
                    .map_err(db_error)
            })
            .await?;
        records.iter().map(|text| from_json(text)).collect()
    }

    async fn trim_events(&self, now_ms: i64, max_events: u64) -> Result<()> {
        loop {
            let deleted = self
                .db
                .write(move |conn| {
                    conn.prepare_cached(
                        "DELETE FROM events WHERE seq IN
                            (SELECT seq FROM events WHERE until_ms <= ?1 LIMIT ?2)",
                    )
                    .and_then(|mut s| s.execute(params![now_ms, PRUNE_CHUNK]))
                    .map_err(db_error)
                })
                .await?;
            if (deleted as i64) < PRUNE_CHUNK {
                break;
            }
        }
        let held: i64 = self
            .db
            .read(|conn| {
                conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))
                    .map_err(db_error)
            })
            .await?;
        let mut excess = held.saturating_sub(i64::try_from(max_events).unwrap_or(i64::MAX));
        while excess > 0 {
            let chunk = excess.min(PRUNE_CHUNK);
            // The oldest events of all accounts go first (each ends a retention after it was
            // published).
            self.db
                .write(move |conn| {
                    conn.prepare_cached(
                        "DELETE FROM events WHERE seq IN
                            (SELECT seq FROM events ORDER BY until_ms, seq LIMIT ?1)",
                    )
                    .and_then(|mut s| s.execute(params![chunk]))
                    .map_err(db_error)
                })
                .await?;
            excess -= chunk;
        }
        self.db.reclaim_free_pages(FREE_PAGES_TO_RECLAIM).await
    }
}

/// The rows of `account`'s catalog: its types' records in topic order, and its settings'.
fn catalog_rows(
    conn: &Connection,
    account: &str,
) -> rusqlite::Result<(Vec<String>, Option<String>)> {
    let types = conn
        .prepare_cached("SELECT record FROM event_types WHERE account = ?1 ORDER BY topic")?
        .query_map([account], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    let settings = conn
        .prepare_cached("SELECT record FROM catalog_settings WHERE account = ?1")?
        .query_row([account], |r| r.get(0))
        .optional()?;
    Ok((types, settings))
}

fn catalog_of(types: Vec<String>, settings: Option<String>) -> Result<StoredCatalog> {
    Ok(StoredCatalog {
        types: types.iter().map(|t| from_json(t)).collect::<Result<_>>()?,
        settings: settings.as_deref().map(from_json).transpose()?,
    })
}

/// `account`'s catalog in the database at `path`, read without opening it for writing (so
/// `webhook-hub catalog export` runs beside `serve`, which holds the file).
pub fn catalog_snapshot(
    path: &std::path::Path,
    account: &str,
) -> std::result::Result<StoredCatalog, String> {
    let conn = super::schema::open_read_only(path)?;
    let (types, settings) = catalog_rows(&conn, account).map_err(|e| {
        format!(
            "{}: {e} (a database from before the catalog has none: start serve on it once)",
            path.display()
        )
    })?;
    catalog_of(types, settings).map_err(|e| e.to_string())
}

#[async_trait]
impl CatalogStore for SqliteStore {
    async fn catalog(&self, account: &str) -> Result<StoredCatalog> {
        let account = account.to_string();
        let (types, settings) = self
            .db
            .read(move |conn| catalog_rows(conn, &account).map_err(db_error))
            .await?;
        catalog_of(types, settings)
    }

    async fn put_event_type(&self, account: &str, event_type: &EventType) -> Result<()> {
        let (account, topic, record) = (
            account.to_string(),
            event_type.topic.as_str().to_string(),
            to_json(event_type)?,
        );
        let room = self.db.room(Admission::NewWork);
        self.db
            .write(move |conn| {
                room.check(conn)?;
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO event_types (account, topic, record) VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut s| s.execute(params![account, topic, record]))
                .map(|_| ())
                .map_err(db_error)
            })
            .await
    }

    async fn put_catalog_settings(&self, account: &str, settings: &CatalogSettings) -> Result<()> {
        let (account, record) = (account.to_string(), to_json(settings)?);
        let room = self.db.room(Admission::NewWork);
        self.db
            .write(move |conn| {
                room.check(conn)?;
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO catalog_settings (account, record) VALUES (?1, ?2)",
                )
                .and_then(|mut s| s.execute(params![account, record]))
                .map(|_| ())
                .map_err(db_error)
            })
            .await
    }
}

#[async_trait]
impl PaceStore for SqliteStore {
    async fn swap_pace(
        &self,
        subscription_id: &str,
        expected: Option<u64>,
        pace: &crate::pacing::Pace,
    ) -> Result<bool> {
        let (id, text) = (subscription_id.to_string(), to_json(pace)?);
        let expected = expected.map_or(-1, |v| v as i64);
        self.db
            .write(move |conn| {
                conn.prepare_cached(
                    "UPDATE subscriptions SET pace = ?3
                     WHERE id = ?1 AND coalesce(json_extract(pace, '$.version'), -1) = ?2",
                )
                .and_then(|mut s| s.execute(params![id, expected, text]))
                .map(|updated| updated == 1)
                .map_err(db_error)
            })
            .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, id: &str) -> Result<Option<Subscription>> {
        let id = id.to_string();
        self.db
            .read(move |conn| one_subscription(conn, "id = ?1", [id]))
            .await
    }

    async fn get_eventually(&self, id: &str) -> Result<Option<Subscription>> {
        let id = id.to_string();
        self.db
            .read_committed(move |conn| one_subscription(conn, "id = ?1", [id]))
            .await
    }

    async fn find_by_callback(
        &self,
        account: &str,
        bound_to: Option<&str>,
        callback_url: &str,
    ) -> Result<Option<Subscription>> {
        let args = [
            account.to_string(),
            bound_to.unwrap_or_default().to_string(),
            callback_url.to_string(),
        ];
        self.db
            .read(move |conn| {
                one_subscription(
                    conn,
                    "account = ?1 AND bound_owner = ?2 AND callback_url = ?3",
                    args,
                )
            })
            .await
    }

    async fn save(&self, sub: &Subscription, previous: Option<&Subscription>) -> Result<()> {
        let sub = sub.clone();
        let previous = previous.cloned();
        // A new subscription is new work under the size limit; a change to one is not.
        let room = self.db.room(match previous {
            None => Admission::NewWork,
            Some(_) => Admission::Derived,
        });
        self.db
            .write(move |conn| {
                room.check(conn)?;
                let stored: Option<i64> = conn
                    .prepare_cached("SELECT version FROM subscriptions WHERE id = ?1")
                    .and_then(|mut s| s.query_row([&sub.id], |r| r.get(0)).optional())
                    .map_err(db_error)?;
                if stored != previous.as_ref().map(|p| p.version as i64) {
                    return Err(HubError::Conflict);
                }
                if let Some(prev) = &previous {
                    unlink_topics(conn, prev)?;
                }
                let written = conn
                    .prepare_cached(
                        "INSERT INTO subscriptions
                            (id, account, callback_url, version, sweep_at_ms, failing_since_ms, body,
                             bound_owner)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                         ON CONFLICT (id) DO UPDATE SET
                            account = excluded.account, callback_url = excluded.callback_url,
                            bound_owner = excluded.bound_owner,
                            version = excluded.version, sweep_at_ms = excluded.sweep_at_ms,
                            failing_since_ms = excluded.failing_since_ms, body = excluded.body",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            sub.id,
                            sub.account,
                            sub.callback_url,
                            sub.version as i64,
                            sub.sweep_at_ms(),
                            sub.failing_since_ms,
                            to_json(&sub).map_err(|e| rusqlite::Error::ToSqlConversionFailure(
                                Box::new(std::io::Error::other(e.to_string()))
                            ))?,
                            sub.bound_owner().unwrap_or_default(),
                        ])
                    });
                match written {
                    // Another subscription holds this callback: one subscription per callback.
                    Err(err) if is_unique_violation(&err) => return Err(HubError::Conflict),
                    other => other.map_err(db_error)?,
                };
                let entry = to_json(&TopicEntry::of(&sub))?;
                let mut insert = conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO topic_entries (account, pattern, subscription_id, entry)
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(db_error)?;
                for pattern in &sub.topics {
                    insert
                        .execute(params![sub.account, pattern.as_str(), sub.id, entry])
                        .map_err(db_error)?;
                }
                Ok(())
            })
            .await
    }

    async fn delete(&self, sub: &Subscription) -> Result<()> {
        let sub = sub.clone();
        self.db
            .write(move |conn| {
                remove_row(conn, &sub.id, Some(&sub))?;
                for sql in [
                    "DELETE FROM attempts WHERE subscription_id = ?1",
                    "DELETE FROM kept_deliveries WHERE subscription_id = ?1",
                ] {
                    conn.prepare_cached(sql)
                        .and_then(|mut s| s.execute([&sub.id]))
                        .map_err(db_error)?;
                }
                Ok(())
            })
            .await
    }

    async fn list(
        &self,
        account: &str,
        bound_to: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Subscription>> {
        let (account, after) = (account.to_string(), cursor.unwrap_or("").to_string());
        let bound_to = bound_to.map(str::to_string);
        self.db
            .read(move |conn| {
                // `?4` is NULL for the whole account, else the owner whose bound ones are listed.
                let mut select = conn
                    .prepare_cached(&format!(
                        "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions
                         WHERE account = ?1 AND id > ?2 AND (?4 IS NULL OR bound_owner = ?4)
                         ORDER BY id LIMIT ?3"
                    ))
                    .map_err(db_error)?;
                let items = select
                    .query_map(
                        params![account, after, limit as i64 + 1, bound_to],
                        subscription_from,
                    )
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(db_error)?
                    .into_iter()
                    .collect::<Result<Vec<_>>>()?;
                Ok(Page::from_overfetch(items, limit, |s| s.id.clone()))
            })
            .await
    }

    async fn count_subscriptions(&self, account: &str) -> Result<usize> {
        let account = account.to_string();
        self.db
            .read(move |conn| {
                conn.prepare_cached("SELECT count(*) FROM subscriptions WHERE account = ?1")
                    .and_then(|mut s| s.query_row([account], |r| r.get::<_, i64>(0)))
                    .map(|n| n as usize)
                    .map_err(db_error)
            })
            .await
    }

    async fn topic_entries(
        &self,
        account: &str,
        pattern: &Pattern,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<TopicEntry>> {
        let (account, pattern) = (account.to_string(), pattern.as_str().to_string());
        let after = cursor.unwrap_or("").to_string();
        self.db
            .read_committed(move |conn| {
                let mut select = conn
                    .prepare_cached(
                        "SELECT entry FROM topic_entries
                         WHERE account = ?1 AND pattern = ?2 AND subscription_id > ?3
                         ORDER BY subscription_id LIMIT ?4",
                    )
                    .map_err(db_error)?;
                let items = select
                    .query_map(params![account, pattern, after, limit as i64 + 1], |r| {
                        r.get::<_, String>(0)
                    })
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(db_error)?
                    .iter()
                    .map(|text| from_json::<TopicEntry>(text))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Page::from_overfetch(items, limit, |e| {
                    e.subscription_id.clone()
                }))
            })
            .await
    }

    async fn claim_event_key(&self, claim: &KeyClaim) -> Result<ClaimOutcome> {
        let claim = claim.clone();
        let room = self.db.room(Admission::NewWork);
        self.db
            .write(move |conn| {
                room.check(conn)?;
                let held: Option<(String, bool, i64, i64)> = conn
                    .prepare_cached(
                        "SELECT event_id, queued, claim_until_ms, window_until_ms FROM event_keys
                         WHERE account = ?1 AND key = ?2",
                    )
                    .and_then(|mut s| {
                        s.query_row([&claim.account, &claim.key], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                        })
                        .optional()
                    })
                    .map_err(db_error)?;
                if let Some((event_id, queued, claim_until, window_until)) = held
                    && window_until > claim.now_ms
                {
                    if queued {
                        return Ok(ClaimOutcome::Queued { event_id });
                    }
                    if claim_until > claim.now_ms {
                        return Ok(ClaimOutcome::InFlight {
                            retry_after_ms: claim_until - claim.now_ms,
                        });
                    }
                    // An abandoned claim: taken over below.
                }
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO event_keys
                        (account, key, event_id, queued, claim_until_ms, window_until_ms)
                     VALUES (?1, ?2, ?3, 0, ?4, ?5)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        claim.account,
                        claim.key,
                        claim.event_id,
                        claim.claim_until_ms,
                        claim.window_until_ms
                    ])
                })
                .map_err(db_error)?;
                Ok(ClaimOutcome::Claimed)
            })
            .await
    }

    async fn mark_event_key_queued(&self, account: &str, key: &str, event_id: &str) -> Result<()> {
        let args = [account.to_string(), key.to_string(), event_id.to_string()];
        self.db
            .write_one(move |conn| {
                conn.prepare_cached(
                    "UPDATE event_keys SET queued = 1
                     WHERE account = ?1 AND key = ?2 AND event_id = ?3",
                )
                .and_then(|mut s| s.execute(args))
                .map(|_| ())
                .map_err(db_error)
            })
            .await
    }

    async fn release_event_key(&self, account: &str, key: &str, event_id: &str) -> Result<()> {
        let args = [account.to_string(), key.to_string(), event_id.to_string()];
        self.db
            .write_one(move |conn| {
                conn.prepare_cached(
                    "DELETE FROM event_keys
                     WHERE account = ?1 AND key = ?2 AND event_id = ?3 AND queued = 0",
                )
                .and_then(|mut s| s.execute(args))
                .map(|_| ())
                .map_err(db_error)
            })
            .await
    }

    async fn remove_if_unchanged(&self, sub: &Subscription) -> Result<bool> {
        let sub = sub.clone();
        self.db
            .write(move |conn| {
                let stored: Option<i64> = conn
                    .prepare_cached("SELECT version FROM subscriptions WHERE id = ?1")
                    .and_then(|mut s| s.query_row([&sub.id], |r| r.get(0)).optional())
                    .map_err(db_error)?;
                if stored != Some(sub.version as i64) {
                    return Ok(false);
                }
                remove_row(conn, &sub.id, None)
            })
            .await
    }

    async fn due_for_sweep(&self, now_ms: i64) -> Result<Vec<Subscription>> {
        self.db
            .read(move |conn| {
                let mut select = conn
                    .prepare_cached(&format!(
                        "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions
                         WHERE sweep_at_ms <= ?1 ORDER BY sweep_at_ms"
                    ))
                    .map_err(db_error)?;
                select
                    .query_map([now_ms], subscription_from)
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(db_error)?
                    .into_iter()
                    .collect()
            })
            .await
    }

    async fn record_attempts(&self, attempts: &[AttemptRecord], expires_at_ms: i64) -> Result<()> {
        let records: Vec<(String, String)> = attempts
            .iter()
            .map(|a| Ok((a.subscription_id.clone(), to_json(a)?)))
            .collect::<Result<_>>()?;
        // Not waited for: the writer commits it before the message's acknowledgement, which is
        // sent after it; a crash before that commit loses both, and the attempt is made again.
        let room = self.db.room(Admission::Derived);
        self.db
            .write_behind("record delivery attempts", move |conn| {
                room.check(conn)?;
                for (id, record) in &records {
                    let n: i64 = conn
                        .prepare_cached(
                            "SELECT coalesce(max(n), 0) + 1 FROM attempts WHERE subscription_id = ?1",
                        )
                        .and_then(|mut s| s.query_row([id], |r| r.get(0)))
                        .map_err(db_error)?;
                    conn.prepare_cached(
                        "INSERT INTO attempts (subscription_id, n, expires_at_ms, record)
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .and_then(|mut s| s.execute(params![id, n, expires_at_ms, record]))
                    .map_err(db_error)?;
                    conn.prepare_cached(
                        "DELETE FROM attempts WHERE subscription_id = ?1 AND n <= ?2",
                    )
                    .and_then(|mut s| s.execute(params![id, n - ATTEMPT_LOG_LEN]))
                    .map_err(db_error)?;
                }
                Ok(())
            });
        Ok(())
    }

    async fn attempts(&self, subscription_id: &str, limit: usize) -> Result<Vec<AttemptRecord>> {
        let id = subscription_id.to_string();
        self.db
            .read(move |conn| {
                let mut select = conn
                    .prepare_cached(
                        "SELECT record FROM attempts WHERE subscription_id = ?1
                         ORDER BY n DESC LIMIT ?2",
                    )
                    .map_err(db_error)?;
                select
                    .query_map(params![id, limit as i64], |r| r.get::<_, String>(0))
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(db_error)?
                    .iter()
                    .map(|text| from_json(text))
                    .collect()
            })
            .await
    }

    async fn keep_delivery(&self, kept: &KeptDelivery) -> Result<()> {
        let (id, event_id) = (kept.subscription_id.clone(), kept.event_id().to_string());
        let (state, expires, record) = (kept.state.as_str(), kept.expires_at_ms(), to_json(kept)?);
        let room = self.db.room(Admission::Derived);
        self.db
            .write(move |conn| {
                room.check(conn)?;
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO kept_deliveries
                     (subscription_id, event_id, state, expires_at_ms, record)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut s| s.execute(params![id, event_id, state, expires, record]))
                .map(|_| ())
                .map_err(db_error)
            })
            .await
    }

    async fn kept_delivery(
        &self,
        subscription_id: &str,
        event_id: &str,
    ) -> Result<Option<KeptDelivery>> {
        let (id, event_id) = (subscription_id.to_string(), event_id.to_string());
        self.db
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT record FROM kept_deliveries WHERE subscription_id = ?1 AND event_id = ?2",
                )
                .and_then(|mut s| {
                    s.query_row(params![id, event_id], |r| r.get::<_, String>(0))
                        .optional()
                })
                .map_err(db_error)?
                .map(|text| from_json(&text))
                .transpose()
            })
            .await
    }

    async fn kept_deliveries(
        &self,
        subscription_id: &str,
        state: KeptState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<KeptDelivery>> {
        let (id, after) = (
            subscription_id.to_string(),
            cursor.unwrap_or("").to_string(),
        );
        let items: Vec<KeptDelivery> = self
            .db
            .read(move |conn| {
                let mut select = conn
                    .prepare_cached(
                        "SELECT record FROM kept_deliveries
                         WHERE subscription_id = ?1 AND state = ?2 AND event_id > ?3
                         ORDER BY event_id LIMIT ?4",
                    )
                    .map_err(db_error)?;
                select
                    .query_map(params![id, state.as_str(), after, limit as i64 + 1], |r| {
                        r.get::<_, String>(0)
                    })
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(db_error)?
                    .iter()
                    .map(|text| from_json(text))
                    .collect()
            })
            .await?;
        Ok(Page::from_overfetch(items, limit, |k| {
            k.event_id().to_string()
        }))
    }

    async fn forget_delivery(&self, subscription_id: &str, event_id: &str) -> Result<()> {
        let (id, event_id) = (subscription_id.to_string(), event_id.to_string());
        self.db
            .write(move |conn| {
                conn.prepare_cached(
                    "DELETE FROM kept_deliveries WHERE subscription_id = ?1 AND event_id = ?2",
                )
                .and_then(|mut s| s.execute(params![id, event_id]))
                .map(|_| ())
                .map_err(db_error)
            })
            .await
    }

    async fn record_failure(&self, subscription_id: &str, now_ms: i64) -> Result<Option<i64>> {
        let id = subscription_id.to_string();
        self.db
            .write(move |conn| {
                // No RETURNING: SQLite compiles it as a temporary trigger, which expires every
                // prepared statement of the connection each time it runs.
                let updated = conn
                    .prepare_cached(
                        "UPDATE subscriptions SET failing_since_ms = coalesce(failing_since_ms, ?2)
                         WHERE id = ?1",
                    )
                    .and_then(|mut s| s.execute(params![id, now_ms]))
                    .map_err(db_error)?;
                if updated == 0 {
                    return Ok(None);
                }
                let since = conn
                    .prepare_cached("SELECT failing_since_ms FROM subscriptions WHERE id = ?1")
                    .and_then(|mut s| s.query_row([&id], |r| r.get::<_, Option<i64>>(0)));
                since.optional().map(Option::flatten).map_err(db_error)
            })
            .await
    }

    async fn add_delivered(&self, tallies: &[DeliveredTally]) -> Result<()> {
        // Not waited for, like the attempt records they follow: successes only count. The
        // stream spans of DynamoDB's fold never reach this store.
        let tallies = tallies.to_vec();
        self.db.write_behind("count deliveries", move |conn| {
            let mut update = conn
                .prepare_cached(
                    "UPDATE subscriptions SET odometer = odometer + ?2,
                     last_delivered_ms = max(coalesce(last_delivered_ms, 0), ?3),
                     failing_since_ms = CASE WHEN ?4 THEN NULL ELSE failing_since_ms END,
                     fold_mark = coalesce(?5, fold_mark)
                     WHERE id = ?1 AND (?5 IS NULL OR fold_mark IS NOT ?5)",
                )
                .map_err(db_error)?;
            for t in &tallies {
                update
                    .execute(params![
                        t.subscription_id,
                        t.delivered as i64,
                        t.last_delivered_ms,
                        t.ends_streak,
                        t.fold_mark.map(|mark| mark as i64)
                    ])
                    .map_err(db_error)?;
            }
            Ok(())
        });
        Ok(())
    }

    async fn take_allowance(
        &self,
        key: &str,
        now_ms: i64,
        window_ms: i64,
        limit: u32,
    ) -> Result<bool> {
        if limit == 0 {
            return Ok(false);
        }
        let key = key.to_string();
        let window = now_ms - now_ms.rem_euclid(window_ms);
        let room = self.db.room(Admission::NewWork);
        self.db
            .write(move |conn| {
                room.check(conn)?;
                // A new window starts the count over; the count only grows below the limit.
                let taken = conn
                    .prepare_cached(
                        "INSERT INTO allowances (key, window_start_ms, used, expires_at_ms)
                         VALUES (?1, ?2, 1, ?3)
                         ON CONFLICT (key) DO UPDATE SET
                            used = CASE WHEN window_start_ms = excluded.window_start_ms
                                        THEN used + 1 ELSE 1 END,
                            window_start_ms = excluded.window_start_ms,
                            expires_at_ms = excluded.expires_at_ms
                         WHERE window_start_ms != excluded.window_start_ms OR used < ?4",
                    )
                    .and_then(|mut s| s.execute(params![key, window, window + window_ms, limit]))
                    .map_err(db_error)?;
                Ok(taken > 0)
            })
            .await
    }

    async fn count_by_status(&self) -> Result<Option<Vec<(SubscriptionStatus, u64)>>> {
        let counts: Vec<(String, i64)> = self
            .db
            .read(|conn| {
                let mut statement = conn
                    .prepare_cached(
                        "SELECT json_extract(body, '$.status'), count(*) FROM subscriptions GROUP BY 1",
                    )
                    .map_err(db_error)?;
                let rows = statement
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                    .map_err(db_error)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
            })
            .await?;
        Ok(Some(
            counts
                .into_iter()
                .filter_map(|(status, n)| {
                    serde_json::from_value(serde_json::Value::String(status))
                        .ok()
                        .map(|s| (s, n.max(0) as u64))
                })
                .collect(),
        ))
    }

    async fn prune(&self, now_ms: i64) -> Result<()> {
        // Chunk by chunk, each its own operation, so other writes go in between.
        for sql in [
            "DELETE FROM event_keys WHERE (account, key) IN
                (SELECT account, key FROM event_keys WHERE window_until_ms <= ?1 LIMIT ?2)",
            "DELETE FROM attempts WHERE (subscription_id, n) IN
                (SELECT subscription_id, n FROM attempts WHERE expires_at_ms <= ?1 LIMIT ?2)",
            "DELETE FROM kept_deliveries WHERE (subscription_id, event_id) IN
                (SELECT subscription_id, event_id FROM kept_deliveries
                 WHERE expires_at_ms <= ?1 LIMIT ?2)",
            "DELETE FROM allowances WHERE key IN
                (SELECT key FROM allowances WHERE expires_at_ms <= ?1 LIMIT ?2)",
        ] {
            loop {
                let deleted = self
                    .db
                    .write(move |conn| {
                        conn.prepare_cached(sql)
                            .and_then(|mut s| s.execute(params![now_ms, PRUNE_CHUNK]))
                            .map_err(db_error)
                    })
                    .await?;
                if (deleted as i64) < PRUNE_CHUNK {
                    break;
                }
            }
        }
        self.db.reclaim_free_pages(FREE_PAGES_TO_RECLAIM).await
    }
}
