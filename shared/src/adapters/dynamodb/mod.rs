//! The DynamoDB adapter of the [`Store`] port: one on-demand table, keys `pk`/`sk`, TTL on
//! `expires_at` (epoch seconds) on every item, and three sparse indexes (`by_account` for listing
//! and counting, `by_owner` for listing one customer's bound subscriptions, `by_sweep_time` for
//! the sweeper). Accounts in composite keys have `%` and `#` escaped.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | subscription | `SUB#{id}` | `SUB` |
//! | delivery attempt | `SUB#{id}` | `ATT#{ms}#{rand}` |
//! | kept delivery (failing, exhausted, parked) | `SUB#{id}` | `KEPT#{event id}` |
//! | callback index, account-wide | `CB#{account}#{sha256(url)}` | `CB` |
//! | callback index, bound to an owner | `CB#{account}#{sha256(owner)}#{sha256(url)}` | `CB` |
//! | allowance (a count per window) | `AL#{key}` | `AL` |
//! | topic entry (fan-out) | `T#{account}#{pattern}` | `{id}` |
//! | event idempotency key | `EVK#{account}#{key}` | `EVK` |
//! | kept events (the history, [`history`]) | `EVT#{account}#{day number}` | `{first event id}#{digest}` |
//! | event types and catalog settings ([`catalog`]) | `CAT#{account}` | `TYPE#{topic}`, `SETTINGS` |
//!
//! Fan-out is one `Query` per pattern matching the topic; nothing ever scans.
//!
//! [`keys`] holds the layout, [`provision`] makes the table; this file is the store.

mod catalog;
mod history;
mod keys;
mod provision;
pub mod stream;

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    DeleteRequest, Put, PutRequest, ReturnValue, TransactWriteItem, Update, WriteRequest,
};

use self::keys::*;
use super::aws_error;
use crate::error::{HubError, Result};
use crate::model::{
    AttemptRecord, DeliveredTally, KeptDelivery, KeptEvent, KeptState, Subscription, TopicEntry,
};
use crate::ports::{
    ClaimOutcome, EventQuery, HistoryStore, KeyClaim, KeyStore, PaceStore, Page, Store,
};
use crate::topic::Pattern;

pub use self::keys::{HISTORY_PARTITION_MS, SWEEP_BUCKET_SECS};

/// Index of subscriptions by account, in creation order.
pub const ACCOUNT_INDEX: &str = "by_account";
/// Index of the subscriptions bound to one owner, in creation order.
pub const OWNER_INDEX: &str = "by_owner";
/// Index of subscriptions by the day the sweeper next has to look at them, for the sweeper.
pub const SWEEP_INDEX: &str = "by_sweep_time";
/// How many buckets back a sweep looks: a 7-day lease plus a day; older leftovers are TTL's.
pub const SWEEP_LOOKBACK_BUCKETS: i64 = 9;

/// A [`Store`] on one DynamoDB table.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    /// One subscription item, read strongly (`consistent`) or eventually consistently.
    /// The item with this key, if there is one (a strongly consistent read when `consistent`).
    async fn item(&self, key: Item, consistent: bool) -> Result<Option<Item>> {
        Ok(self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(aws_error)?
            .item)
    }

    async fn get_subscription(&self, id: &str, consistent: bool) -> Result<Option<Subscription>> {
        self.item(key(sub_pk(id), "SUB"), consistent)
            .await?
            .as_ref()
            .map(Self::subscription_from)
            .transpose()
    }

    /// The store on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
        }
    }

    fn subscription_from(item: &Item) -> Result<Subscription> {
        let doc =
            get_s(item, "doc").ok_or_else(|| HubError::backend("subscription item without doc"))?;
        let mut sub: Subscription = serde_json::from_str(doc).map_err(HubError::backend)?;
        sub.odometer = get_n(item, "odometer").unwrap_or(0) as u64;
        sub.last_delivered_ms = get_n(item, "last_delivered");
        sub.failing_since_ms = get_n(item, "failing_since");
        sub.pace = get_s(item, "pace")
            .map(serde_json::from_str)
            .transpose()
            .map_err(HubError::backend)?;
        Ok(sub)
    }

    /// Deletes items by key in batches of 25, retrying what DynamoDB leaves unprocessed.
    async fn batch_delete(&self, keys: Vec<Item>) -> Result<()> {
        self.write_all(keys.into_iter().map(|k| {
            DeleteRequest::builder()
                .set_key(Some(k))
                .build()
                .map(|d| WriteRequest::builder().delete_request(d).build())
        }))
        .await
    }

    /// Puts items in batches of 25, retrying what DynamoDB leaves unprocessed.
    pub(super) async fn batch_put(&self, items: Vec<Item>) -> Result<()> {
        self.write_all(items.into_iter().map(|item| {
            PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map(|p| WriteRequest::builder().put_request(p).build())
        }))
        .await
    }

    /// Makes `requests` in `BatchWriteItem`s of 25.
    async fn write_all<E: std::fmt::Display>(
        &self,
        requests: impl IntoIterator<Item = std::result::Result<WriteRequest, E>>,
    ) -> Result<()> {
        let requests: Vec<WriteRequest> = requests
            .into_iter()
            .collect::<std::result::Result<_, E>>()
            .map_err(HubError::backend)?;
        for chunk in requests.chunks(25) {
            self.write_batch(&mut chunk.to_vec()).await?;
        }
        Ok(())
    }

    /// One `BatchWriteItem` of at most 25 requests, retrying what DynamoDB leaves unprocessed.
    async fn write_batch(&self, requests: &mut Vec<WriteRequest>) -> Result<()> {
        for round in 0..8 {
            if requests.is_empty() {
                return Ok(());
            }
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, std::mem::take(requests))
                .send()
                .await
                .map_err(aws_error)?;
            *requests = out
                .unprocessed_items
                .and_then(|mut u| u.remove(&self.table))
                .unwrap_or_default();
            if !requests.is_empty() {
                tokio::time::sleep(Duration::from_millis(50 << round)).await;
            }
        }
        if requests.is_empty() {
            Ok(())
        } else {
            Err(HubError::backend("DynamoDB left writes unprocessed"))
        }
    }

    /// Every item of one partition (all pages), optionally under a sort-key prefix.
    async fn query_partition(&self, pk: String, sk_prefix: Option<&str>) -> Result<Vec<Item>> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_values(":pk", s(pk));
        let query = match sk_prefix {
            Some(prefix) => query
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":prefix", s(prefix)),
            None => query.key_condition_expression("pk = :pk"),
        };
        let mut pages = query.into_paginator().send();
        let mut items = Vec::new();
        while let Some(page) = pages.next().await {
            items.extend(page.map_err(aws_error)?.items.unwrap_or_default());
        }
        Ok(items)
    }
}

#[async_trait]
impl KeyStore for DynamoStore {
    async fn key(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .item(key(HUB_KEYS_PK.to_string(), name), true)
            .await?
            .as_ref()
            .and_then(|item| item.get("key"))
            .and_then(|v| v.as_b().ok())
            .map(|b| b.as_ref().to_vec()))
    }

    async fn hub_key(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>> {
        let key = key(HUB_KEYS_PK.to_string(), name);
        let mut item = key.clone();
        item.insert(
            "key".into(),
            aws_sdk_dynamodb::types::AttributeValue::B(fresh.to_vec().into()),
        );
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        if condition_held(written)? {
            return Ok(fresh.to_vec());
        }
        self.key(name)
            .await?
            .ok_or_else(|| HubError::backend(format!("hub key {name} has no value")))
    }

    async fn replace_key(&self, name: &str, expected: &[u8], value: &[u8]) -> Result<bool> {
        use aws_sdk_dynamodb::types::AttributeValue;
        let written = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(HUB_KEYS_PK.to_string(), name)))
            .update_expression("SET #key = :value")
            .condition_expression("#key = :expected")
            .expression_attribute_names("#key", "key")
            .expression_attribute_values(":value", AttributeValue::B(value.to_vec().into()))
            .expression_attribute_values(":expected", AttributeValue::B(expected.to_vec().into()))
            .send()
            .await;
        condition_held(written)
    }
}

#[async_trait]
impl PaceStore for DynamoStore {
    async fn swap_pace(
        &self,
        subscription_id: &str,
        expected: Option<u64>,
        pace: &crate::pacing::Pace,
    ) -> Result<bool> {
        // An attribute of the subscription's own item (read with it, never written by a save),
        // with its version beside it for the condition.
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(sub_pk(subscription_id), "SUB")))
            .update_expression("SET #pace = :pace, #pv = :pv")
            .expression_attribute_names("#pace", "pace")
            .expression_attribute_names("#pv", "pace_version")
            .expression_attribute_values(
                ":pace",
                s(serde_json::to_string(pace).map_err(HubError::backend)?),
            )
            .expression_attribute_values(":pv", n(pace.version as i64));
        let update = match expected {
            Some(version) => update
                .condition_expression("attribute_exists(pk) AND #pv = :was")
                .expression_attribute_values(":was", n(version as i64)),
            None => {
                update.condition_expression("attribute_exists(pk) AND attribute_not_exists(#pv)")
            }
        };
        match update.send().await {
            Ok(_) => Ok(true),
            Err(err) if is_condition_failed(&err) => Ok(false),
            Err(err) => Err(aws_error(err)),
        }
    }
}

#[async_trait]
impl HistoryStore for DynamoStore {
    async fn keep_events(&self, events: Vec<KeptEvent>) -> Result<()> {
        self.put_history(&events).await
    }

    async fn kept_event(
        &self,
        account: &str,
        event_id: &str,
        now_ms: i64,
    ) -> Result<Option<KeptEvent>> {
        Ok(self
            .history_event(account, event_id)
            .await?
            .filter(|kept| kept.until_ms > now_ms))
    }

    async fn scan_events(&self, query: &EventQuery) -> Result<Vec<KeptEvent>> {
        self.history_scan(query).await
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn get(&self, id: &str) -> Result<Option<Subscription>> {
        self.get_subscription(id, true).await
    }

    async fn get_eventually(&self, id: &str) -> Result<Option<Subscription>> {
        self.get_subscription(id, false).await
    }

    async fn find_by_callback(
        &self,
        account: &str,
        bound_to: Option<&str>,
        callback_url: &str,
    ) -> Result<Option<Subscription>> {
        let index = self
            .item(
                key(callback_pk(account, bound_to, callback_url), "CB"),
                true,
            )
            .await?;
        match index.as_ref().and_then(|item| get_s(item, "sub_id")) {
            Some(id) => Ok(self.get(id).await?.filter(|sub| {
                sub.account == account
                    && sub.bound_owner() == bound_to
                    && sub.callback_url == callback_url
            })),
            None => Ok(None),
        }
    }

    async fn save(&self, sub: &Subscription, previous: Option<&Subscription>) -> Result<()> {
        // The subscription's own item is updated, not replaced, so the store-maintained
        // odometer survives; the version condition makes concurrent saves safe.
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(sub_pk(&sub.id), "SUB")));
        let mut sets = Vec::new();
        for (i, (name, value)) in subscription_attributes(sub)?.into_iter().enumerate() {
            sets.push(format!("#a{i} = :a{i}"));
            update = update
                .expression_attribute_names(format!("#a{i}"), name)
                .expression_attribute_values(format!(":a{i}"), value);
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if sub.failing_since_ms.is_none() {
            expression.push_str(" REMOVE #failing");
            update = update.expression_attribute_names("#failing", "failing_since");
        }
        update = match previous {
            Some(prev) => update
                .condition_expression("#version = :prev")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":prev", n(prev.version as i64)),
            None => update.condition_expression("attribute_not_exists(pk)"),
        };
        let update = update
            .update_expression(expression)
            .build()
            .map_err(HubError::backend)?;
        let mut items = vec![TransactWriteItem::builder().update(update).build()];
        for (i, item) in index_items(sub)?.into_iter().enumerate() {
            let mut put = Put::builder().table_name(&self.table).set_item(Some(item));
            if i == 0 {
                // The callback index: only if free, ours, or left over by a lapsed subscription.
                put = put
                    .condition_expression(
                        "attribute_not_exists(pk) OR #sub = :id OR #expires < :now",
                    )
                    .expression_attribute_names("#sub", "sub_id")
                    .expression_attribute_names("#expires", "expires_at")
                    .expression_attribute_values(":id", s(sub.id.clone()))
                    .expression_attribute_values(
                        ":now",
                        n(time::OffsetDateTime::now_utc().unix_timestamp()),
                    );
            }
            let put = put.build().map_err(HubError::backend)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        let written = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        if let Err(err) = written {
            return Err(if is_condition_failed(&err) {
                HubError::Conflict
            } else {
                aws_error(err)
            });
        }
        if let Some(prev) = previous {
            let stale: Vec<Item> = prev
                .topics
                .iter()
                .filter(|p| !sub.topics.contains(p))
                .map(|p| key(topic_pk(&prev.account, p), prev.id.clone()))
                .collect();
            self.batch_delete(stale).await?;
            if prev.callback_url != sub.callback_url {
                self.delete_callback_index(prev).await?;
            }
        }
        Ok(())
    }

    async fn delete(&self, sub: &Subscription) -> Result<()> {
        // The stored copy may list other topics than the caller's copy: remove both.
        let stored = self.get(&sub.id).await?;
        let mut keys: Vec<Item> = Vec::new();
        for s_ in std::iter::once(sub).chain(stored.as_ref()) {
            for pattern in &s_.topics {
                keys.push(key(topic_pk(&s_.account, pattern), s_.id.clone()));
            }
        }
        keys.sort_by(|a, b| get_s(a, "pk").cmp(&get_s(b, "pk")));
        keys.dedup();
        // Its whole partition: the item itself, its delivery log and its kept deliveries.
        keys.extend(
            self.query_partition(sub_pk(&sub.id), None)
                .await?
                .into_iter()
                .filter_map(|item| Some(key(get_s(&item, "pk")?.to_string(), get_s(&item, "sk")?)))
                .filter(|k| get_s(k, "sk") != Some("SUB")),
        );
        keys.push(key(sub_pk(&sub.id), "SUB"));
        // The callback index goes first: a crash half-way leaves no index pointing nowhere.
        for s_ in std::iter::once(sub).chain(stored.as_ref()) {
            self.delete_callback_index(s_).await?;
        }
        self.batch_delete(keys).await?;
        Ok(())
    }

    async fn list(
        &self,
        account: &str,
        bound_to: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Subscription>> {
        // The whole account through `by_account`, one owner's bound ones through `by_owner`.
        let (index, pk, sk, partition) = match bound_to {
            None => (ACCOUNT_INDEX, "gsi1pk", "gsi1sk", account_gsi_pk(account)),
            Some(owner) => (
                OWNER_INDEX,
                "gsi2pk",
                "gsi2sk",
                owner_gsi_pk(account, owner),
            ),
        };
        // A query page stops at 1 MB whatever its `Limit`: keep reading until there is one
        // item more than the page needs (so `next_cursor` is known) or nothing is left.
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .expression_attribute_names("#pk", pk)
                .expression_attribute_values(":part", s(partition.clone()))
                .limit((limit + 1 - items.len()) as i32)
                .set_exclusive_start_key(start.take());
            let query = match cursor.filter(|c| !c.is_empty()) {
                Some(cursor) => query
                    .key_condition_expression("#pk = :part AND #sk > :cursor")
                    .expression_attribute_names("#sk", sk)
                    .expression_attribute_values(":cursor", s(cursor)),
                None => query.key_condition_expression("#pk = :part"),
            };
            let out = query.send().await.map_err(aws_error)?;
            for item in out.items.unwrap_or_default() {
                items.push(Self::subscription_from(&item)?);
            }
            match out.last_evaluated_key {
                Some(next) if !next.is_empty() && items.len() <= limit => start = Some(next),
                _ => break,
            }
        }
        Ok(Page::from_overfetch(items, limit, |s| s.id.clone()))
    }

    async fn count_subscriptions(&self, account: &str) -> Result<usize> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(ACCOUNT_INDEX)
            .key_condition_expression("gsi1pk = :acc")
            .expression_attribute_values(":acc", s(account_gsi_pk(account)))
            .select(aws_sdk_dynamodb::types::Select::Count)
            .into_paginator()
            .send();
        let mut count = 0;
        while let Some(page) = pages.next().await {
            count += page.map_err(aws_error)?.count as usize;
        }
        Ok(count)
    }

    async fn topic_entries(
        &self,
        account: &str,
        pattern: &Pattern,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<TopicEntry>> {
        let pk = topic_pk(account, pattern);
        let mut entries = Vec::new();
        let mut start = cursor.map(|c| key(pk.clone(), c));
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk.clone()))
                .limit((limit + 1 - entries.len()) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(aws_error)?;
            for item in out.items.unwrap_or_default() {
                if let Some(entry) = get_s(&item, "entry") {
                    entries.push(
                        serde_json::from_str::<TopicEntry>(entry).map_err(HubError::backend)?,
                    );
                }
            }
            match out.last_evaluated_key {
                Some(next) if !next.is_empty() && entries.len() <= limit => start = Some(next),
                _ => break,
            }
        }
        Ok(Page::from_overfetch(entries, limit, |e| {
            e.subscription_id.clone()
        }))
    }

    async fn claim_event_key(&self, claim: &KeyClaim) -> Result<ClaimOutcome> {
        let pk = event_key_pk(&claim.account, &claim.key);
        let mut item = key(pk.clone(), "EVK");
        item.insert("event_id".into(), s(claim.event_id.clone()));
        item.insert("state".into(), s("claimed"));
        item.insert("claim_until_ms".into(), n(claim.claim_until_ms));
        item.insert("until_ms".into(), n(claim.window_until_ms));
        item.insert("expires_at".into(), n(ttl_secs(claim.window_until_ms)));
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(
                "attribute_not_exists(pk) OR #until <= :now \
                 OR (#state = :claimed AND #claim_until <= :now)",
            )
            .expression_attribute_names("#until", "until_ms")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#claim_until", "claim_until_ms")
            .expression_attribute_values(":now", n(claim.now_ms))
            .expression_attribute_values(":claimed", s("claimed"))
            .send()
            .await;
        if condition_held(put)? {
            return Ok(ClaimOutcome::Claimed);
        }
        let held = self.item(key(pk, "EVK"), true).await?.unwrap_or_default();
        Ok(match (get_s(&held, "state"), get_s(&held, "event_id")) {
            (Some("queued"), Some(event_id)) => ClaimOutcome::Queued {
                event_id: event_id.to_string(),
            },
            _ => ClaimOutcome::InFlight {
                retry_after_ms: get_n(&held, "claim_until_ms")
                    .map_or(1000, |until| (until - claim.now_ms).max(1000)),
            },
        })
    }

    async fn mark_event_key_queued(&self, account: &str, key_: &str, event_id: &str) -> Result<()> {
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(event_key_pk(account, key_), "EVK")))
            .update_expression("SET #state = :queued")
            .condition_expression("#event = :id")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#event", "event_id")
            .expression_attribute_values(":queued", s("queued"))
            .expression_attribute_values(":id", s(event_id))
            .send()
            .await;
        // Not held: taken over by a later publish meanwhile, whose event is the key's now.
        condition_held(updated).map(drop)
    }

    async fn release_event_key(&self, account: &str, key_: &str, event_id: &str) -> Result<()> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(event_key_pk(account, key_), "EVK")))
            .condition_expression("#event = :id AND #state = :claimed")
            .expression_attribute_names("#event", "event_id")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":id", s(event_id))
            .expression_attribute_values(":claimed", s("claimed"))
            .send()
            .await;
        condition_held(deleted).map(drop)
    }

    async fn remove_if_unchanged(&self, sub: &Subscription) -> Result<bool> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(sub_pk(&sub.id), "SUB")))
            .condition_expression("#version = :v")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":v", n(sub.version as i64))
            .send()
            .await;
        if !condition_held(deleted)? {
            return Ok(false);
        }
        let entries = sub
            .topics
            .iter()
            .map(|p| key(topic_pk(&sub.account, p), sub.id.clone()))
            .collect();
        self.batch_delete(entries).await?;
        self.delete_callback_index(sub).await?;
        Ok(true)
    }

    async fn due_for_sweep(&self, now_ms: i64) -> Result<Vec<Subscription>> {
        let last = bucket_number(now_ms);
        let mut due = Vec::new();
        for bucket in (last - SWEEP_LOOKBACK_BUCKETS + 1)..=last {
            let mut pages = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(SWEEP_INDEX)
                .key_condition_expression("#bucket = :b AND #at <= :now")
                .expression_attribute_names("#bucket", "sweep_bucket")
                .expression_attribute_names("#at", "sweep_at")
                .expression_attribute_values(":b", s(format!("B#{bucket}")))
                .expression_attribute_values(":now", n(now_ms))
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                for item in page.map_err(aws_error)?.items.unwrap_or_default() {
                    due.push(Self::subscription_from(&item)?);
                }
            }
        }
        Ok(due)
    }

    async fn record_attempts(&self, attempts: &[AttemptRecord], expires_at_ms: i64) -> Result<()> {
        // One item per batch of a subscription's attempts (at most ATTEMPTS_PER_ITEM, far from
        // DynamoDB's 400 KB): a write is billed per KB of item, not per attempt, so a batch of
        // ten attempts to one subscription costs about three write units instead of ten.
        let writes = attempts.chunks(ATTEMPTS_PER_ITEM).map(|group| async move {
            // Keyed by its newest attempt, so the log's newest attempt is in its first item.
            let newest = group
                .iter()
                .map(|a| a.started_at_ms)
                .max()
                .unwrap_or_default();
            let random: u32 = rand::random();
            let mut item = key(
                sub_pk(&group[0].subscription_id),
                format!("{ATTEMPT_SK_PREFIX}{newest:015}#{random:08x}"),
            );
            let (name, text) = match group {
                [one] => ("doc", serde_json::to_string(one)),
                many => ("docs", serde_json::to_string(many)),
            };
            item.insert(name.into(), s(text.map_err(HubError::backend)?));
            item.insert("expires_at".into(), n(ttl_secs(expires_at_ms)));
            self.put(item).await
        });
        futures::future::try_join_all(writes).await.map(drop)
    }

    async fn attempts_of_event(
        &self,
        subscription_id: &str,
        event_id: &str,
        event_ms: i64,
    ) -> Result<Vec<AttemptRecord>> {
        // The log's items from the event's publication on, oldest first (every attempt of it
        // came after), up to ATTEMPTS_SEARCHED items.
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        let mut read = 0;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(sub_pk(subscription_id)))
                .expression_attribute_values(
                    ":from",
                    s(format!("{ATTEMPT_SK_PREFIX}{:015}", event_ms.max(0))),
                )
                .expression_attribute_values(":to", s(format!("{ATTEMPT_SK_PREFIX}~")))
                .limit(100)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(aws_error)?;
            for item in out.items.unwrap_or_default() {
                read += 1;
                found.extend(
                    attempts_of(&item)?
                        .into_iter()
                        .filter(|a| a.message_id == event_id),
                );
            }
            match out.last_evaluated_key {
                Some(next) if !next.is_empty() && read < crate::ports::ATTEMPTS_SEARCHED => {
                    start = Some(next)
                }
                _ => break,
            }
        }
        found.sort_by_key(|a| (a.started_at_ms, a.attempt));
        Ok(found)
    }

    async fn attempts(&self, subscription_id: &str, limit: usize) -> Result<Vec<AttemptRecord>> {
        // Items hold one attempt (`doc`) or a batch's (`docs`), keyed by their newest: `limit`
        // items hold at least `limit` attempts, newest first once sorted (at a short page's
        // end, an attempt of the same batch window may give way to an older one).
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :att)")
            .expression_attribute_values(":pk", s(sub_pk(subscription_id)))
            .expression_attribute_values(":att", s(ATTEMPT_SK_PREFIX))
            .scan_index_forward(false)
            .limit(limit as i32)
            .send()
            .await
            .map_err(aws_error)?;
        let mut attempts = Vec::new();
        for item in out.items.unwrap_or_default() {
            attempts.extend(attempts_of(&item)?);
        }
        attempts.sort_by(|a, b| {
            let key = |x: &AttemptRecord| (x.started_at_ms, x.attempt, x.message_id.clone());
            key(b).cmp(&key(a))
        });
        attempts.truncate(limit);
        Ok(attempts)
    }

    async fn keep_delivery(&self, kept: &KeptDelivery) -> Result<()> {
        let mut item = key(sub_pk(&kept.subscription_id), kept_sk(kept.event_id()));
        item.insert(
            "doc".into(),
            s(serde_json::to_string(kept).map_err(HubError::backend)?),
        );
        item.insert("state".into(), s(kept.state.as_str()));
        item.insert("expires_at".into(), n(ttl_secs(kept.expires_at_ms())));
        self.put(item).await
    }

    async fn kept_delivery(
        &self,
        subscription_id: &str,
        event_id: &str,
    ) -> Result<Option<KeptDelivery>> {
        self.item(key(sub_pk(subscription_id), kept_sk(event_id)), true)
            .await?
            .as_ref()
            .and_then(|item| get_s(item, "doc"))
            .map(|doc| serde_json::from_str(doc).map_err(HubError::backend))
            .transpose()
    }

    async fn kept_deliveries(
        &self,
        subscription_id: &str,
        state: KeptState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<KeptDelivery>> {
        // From the cursor's key (itself skipped) to the end of the `KEPT#` range, filtered by
        // state; pages continue until one item more than the page needs has come.
        let after = cursor.unwrap_or("");
        let mut items: Vec<KeptDelivery> = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .filter_expression("#state = :state")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":pk", s(sub_pk(subscription_id)))
                .expression_attribute_values(":from", s(kept_sk(after)))
                .expression_attribute_values(":to", s(KEPT_SK_END))
                .expression_attribute_values(":state", s(state.as_str()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(aws_error)?;
            for item in out.items.unwrap_or_default() {
                let Some(doc) = get_s(&item, "doc") else {
                    continue;
                };
                let kept: KeptDelivery = serde_json::from_str(doc).map_err(HubError::backend)?;
                if kept.event_id() != after {
                    items.push(kept);
                }
            }
            match out.last_evaluated_key {
                Some(next) if !next.is_empty() && items.len() <= limit => start = Some(next),
                _ => break,
            }
        }
        Ok(Page::from_overfetch(items, limit, |k| {
            k.event_id().to_string()
        }))
    }

    async fn take_allowance(
        &self,
        key_: &str,
        now_ms: i64,
        window_ms: i64,
        limit: u32,
    ) -> Result<bool> {
        if limit == 0 {
            return Ok(false);
        }
        let window = now_ms - now_ms.rem_euclid(window_ms);
        let item_key = key(format!("AL#{key_}"), "AL");
        // The same window: one more while under the limit. An older window (or none): start
        // over at one. Conditional writes only; a racing start of the window is counted by the
        // second try. TTL removes the item after its window.
        for _ in 0..2 {
            let counted = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(item_key.clone()))
                .update_expression("ADD used :one")
                .condition_expression("window_start = :window AND used < :limit")
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":window", n(window))
                .expression_attribute_values(":limit", n(i64::from(limit)))
                .send()
                .await;
            if condition_held(counted)? {
                return Ok(true);
            }
            let mut fresh = item_key.clone();
            fresh.insert("window_start".into(), n(window));
            fresh.insert("used".into(), n(1));
            fresh.insert("expires_at".into(), n(ttl_secs(window + window_ms)));
            let started = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(fresh))
                .condition_expression("attribute_not_exists(pk) OR window_start < :window")
                .expression_attribute_values(":window", n(window))
                .send()
                .await;
            if condition_held(started)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn forget_delivery(&self, subscription_id: &str, event_id: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(sub_pk(subscription_id), kept_sk(event_id))))
            .send()
            .await
            .map_err(aws_error)?;
        Ok(())
    }

    async fn record_failure(&self, subscription_id: &str, now_ms: i64) -> Result<Option<i64>> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(sub_pk(subscription_id), "SUB")))
            .condition_expression("attribute_exists(pk)")
            .return_values(ReturnValue::AllNew)
            .update_expression("SET #failing = if_not_exists(#failing, :now)")
            .expression_attribute_names("#failing", "failing_since")
            .expression_attribute_values(":now", n(now_ms));
        match update.send().await {
            Ok(out) => Ok(out
                .attributes
                .as_ref()
                .and_then(|a| get_n(a, "failing_since"))),
            Err(err) if is_condition_failed(&err) => Ok(None),
            Err(err) => Err(aws_error(err)),
        }
    }

    async fn add_delivered(&self, tallies: &[DeliveredTally]) -> Result<()> {
        // One write per subscription, concurrently; each is conditional on the item (a
        // subscription deleted meanwhile is not brought back as counters alone) and, for a
        // stream tally, on its span not being folded yet, for a batch fold's, on its mark not
        // being the last one added (the SDK retries a write whose answer was lost).
        let writes = tallies.iter().map(|tally| async move {
            let mut set = vec!["#last = :last"];
            let mut condition = String::from("attribute_exists(pk)");
            let mut update = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(sub_pk(&tally.subscription_id), "SUB")))
                .expression_attribute_names("#last", "last_delivered")
                .expression_attribute_names("#odometer", "odometer")
                .expression_attribute_values(":last", n(tally.last_delivered_ms))
                .expression_attribute_values(":count", n(tally.delivered as i64));
            if let Some((first, last)) = tally.stream_span {
                set.push("#folded = :to");
                condition.push_str(" AND (attribute_not_exists(#folded) OR #folded < :from)");
                update = update
                    .expression_attribute_names("#folded", "folded_to")
                    .expression_attribute_values(":from", n_text(first.to_string()))
                    .expression_attribute_values(":to", n_text(last.to_string()));
            }
            if let Some(mark) = tally.fold_mark {
                set.push("#mark = :mark");
                condition.push_str(" AND (attribute_not_exists(#mark) OR #mark <> :mark)");
                update = update
                    .expression_attribute_names("#mark", "fold_mark")
                    .expression_attribute_values(":mark", n_text(mark.to_string()));
            }
            let mut expression = format!("SET {} ADD #odometer :count", set.join(", "));
            if tally.ends_streak {
                expression.push_str(" REMOVE #failing");
                update = update.expression_attribute_names("#failing", "failing_since");
            }
            let written = update
                .update_expression(expression)
                .condition_expression(condition)
                .send()
                .await;
            match written {
                Ok(_) => Ok(()),
                Err(err) if is_condition_failed(&err) => Ok(()),
                Err(err) => Err(aws_error(err)),
            }
        });
        futures::future::try_join_all(writes).await.map(drop)
    }
}

/// Most attempts one delivery-log item holds (a few KB; DynamoDB allows 400 KB).
const ATTEMPTS_PER_ITEM: usize = 50;

/// The attempts one delivery-log item holds: its `doc` (one) or `docs` (a batch's).
pub(crate) fn attempts_of(item: &Item) -> Result<Vec<AttemptRecord>> {
    if let Some(doc) = get_s(item, "doc") {
        return Ok(vec![serde_json::from_str(doc).map_err(HubError::backend)?]);
    }
    match get_s(item, "docs") {
        Some(docs) => serde_json::from_str(docs).map_err(HubError::backend),
        None => Ok(Vec::new()),
    }
}

impl DynamoStore {
    /// Writes `item` whole, unconditionally (the delivery log, kept deliveries).
    async fn put(&self, item: Item) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(aws_error)?;
        Ok(())
    }

    /// Removes a subscription's callback index item, unless another subscription owns it by now.
    async fn delete_callback_index(&self, sub: &Subscription) -> Result<()> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(callback_pk_of(sub), "CB")))
            .condition_expression("#sub = :id")
            .expression_attribute_names("#sub", "sub_id")
            .expression_attribute_values(":id", s(sub.id.clone()))
            .send()
            .await;
        condition_held(deleted).map(drop)
    }
}
