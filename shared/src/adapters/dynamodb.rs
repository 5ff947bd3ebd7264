//! The DynamoDB adapter of the [`Store`] port: one on-demand table, keys `pk`/`sk`, TTL on
//! `expires_at` (epoch seconds) on every item, and two sparse indexes (`by_account` for listing,
//! `by_expiry` for the sweeper).
//!
//! | item | pk | sk |
//! |---|---|---|
//! | subscription | `SUB#{id}` | `SUB` |
//! | delivery attempt | `SUB#{id}` | `ATT#{ms}#{rand}` |
//! | callback index | `CB#{account}#{sha256(url)}` | `CB` |
//! | topic entry (fan-out) | `T#{account}#{pattern}` | `{id}` |
//! | event idempotency key | `EVK#{account}#{key}` | `EVK` |
//!
//! Fan-out is one `Query` per pattern matching the topic; nothing ever scans.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, Put, PutRequest, ReturnValue,
    ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem, Update, WriteRequest,
};

use super::aws_error;
use crate::error::{HubError, Result};
use crate::model::{AttemptRecord, Subscription, TopicEntry};
use crate::ports::{ClaimOutcome, KeyClaim, Page, Store};
use crate::topic::Pattern;

/// Index of subscriptions by account, in creation order.
pub const ACCOUNT_INDEX: &str = "by_account";
/// Index of subscriptions by the day the sweeper next has to look at them, for the sweeper.
pub const SWEEP_INDEX: &str = "by_sweep_time";
/// Width of one sweeper time bucket.
pub const SWEEP_BUCKET_SECS: i64 = 86_400;
/// How many buckets back a sweep looks: a 7-day lease plus a day; older leftovers are TTL's.
pub const SWEEP_LOOKBACK_BUCKETS: i64 = 9;

type Item = HashMap<String, AttributeValue>;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn key(pk: String, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_n(item: &Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// Epoch seconds for the TTL attribute, rounded up so TTL never fires early.
fn ttl_secs(ms: i64) -> i64 {
    (ms + 999).div_euclid(1000)
}

fn sub_pk(id: &str) -> String {
    format!("SUB#{id}")
}

/// An account as part of a composite key: `%` and `#` escaped, so `#` separates key parts
/// unambiguously whatever the account is called (account `a#b` with key `c` never meets
/// account `a` with key `b#c`).
fn account_part(account: &str) -> std::borrow::Cow<'_, str> {
    if account.contains(['%', '#']) {
        account.replace('%', "%25").replace('#', "%23").into()
    } else {
        account.into()
    }
}

fn callback_pk(account: &str, url: &str) -> String {
    let digest = crate::signing::sha256_hex(url.as_bytes());
    format!("CB#{}#{digest}", account_part(account))
}

fn topic_pk(account: &str, pattern: &Pattern) -> String {
    format!("T#{}#{pattern}", account_part(account))
}

fn event_key_pk(account: &str, key: &str) -> String {
    format!("EVK#{}#{key}", account_part(account))
}

fn account_gsi_pk(account: &str) -> String {
    format!("ACC#{account}")
}

/// Whether an SDK error is DynamoDB refusing a condition (a conditional write, or a transaction
/// cancelled by one).
fn is_condition_failed<E, R>(err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    err.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| {
            code == "ConditionalCheckFailedException" || code == "TransactionCanceledException"
        })
}

fn bucket_number(ms: i64) -> i64 {
    ms.div_euclid(1000 * SWEEP_BUCKET_SECS)
}

/// The attributes of a subscription's own item besides its key and the store-maintained
/// counters (`odometer`, `failing_since`), as `save` sets them and `import` writes them.
fn subscription_attributes(sub: &Subscription) -> Result<Vec<(&'static str, AttributeValue)>> {
    let mut attributes = vec![
        (
            "doc",
            s(serde_json::to_string(sub).map_err(HubError::backend)?),
        ),
        ("version", n(sub.version as i64)),
        ("expires_at", n(ttl_secs(sub.lapses_at_ms()))),
        ("sweep_at", n(sub.sweep_at_ms())),
        (
            "sweep_bucket",
            s(format!("B#{}", bucket_number(sub.sweep_at_ms()))),
        ),
        ("gsi1pk", s(account_gsi_pk(&sub.account))),
        ("gsi1sk", s(sub.id.clone())),
    ];
    if let Some(since) = sub.failing_since_ms {
        attributes.push(("failing_since", n(since)));
    }
    Ok(attributes)
}

/// The items that find a subscription: its callback index (first) and one fan-out entry per
/// pattern.
fn index_items(sub: &Subscription) -> Result<Vec<Item>> {
    let expires = n(ttl_secs(sub.lapses_at_ms()));
    let mut callback = key(callback_pk(&sub.account, &sub.callback_url), "CB");
    callback.insert("sub_id".into(), s(sub.id.clone()));
    callback.insert("expires_at".into(), expires.clone());
    let entry = serde_json::to_string(&TopicEntry::of(sub)).map_err(HubError::backend)?;
    let mut items = vec![callback];
    for pattern in &sub.topics {
        let mut item = key(topic_pk(&sub.account, pattern), sub.id.clone());
        item.insert("entry".into(), s(entry.clone()));
        item.insert("expires_at".into(), expires.clone());
        items.push(item);
    }
    Ok(items)
}

/// A [`Store`] on one DynamoDB table.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    /// The store on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
        }
    }

    /// Creates the table (if missing) with the keys, indexes and TTL `template.yaml` declares.
    pub async fn ensure_table(&self) -> Result<()> {
        let attr = |name: &str, kind: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(kind)
                .build()
                .map_err(HubError::backend)
        };
        let key_el = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(HubError::backend)
        };
        let index = |name: &str,
                     hash: &str,
                     range: &str,
                     projection: ProjectionType|
         -> Result<GlobalSecondaryIndex> {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key_el(hash, KeyType::Hash)?)
                .key_schema(key_el(range, KeyType::Range)?)
                .projection(if projection == ProjectionType::Include {
                    Projection::builder()
                        .projection_type(projection)
                        .non_key_attributes("doc")
                        .build()
                } else {
                    Projection::builder().projection_type(projection).build()
                })
                .build()
                .map_err(HubError::backend)
        };
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("sk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("gsi1pk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("gsi1sk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("sweep_bucket", ScalarAttributeType::S)?)
            .attribute_definitions(attr("sweep_at", ScalarAttributeType::N)?)
            .key_schema(key_el("pk", KeyType::Hash)?)
            .key_schema(key_el("sk", KeyType::Range)?)
            .global_secondary_indexes(index(
                ACCOUNT_INDEX,
                "gsi1pk",
                "gsi1sk",
                ProjectionType::All,
            )?)
            .global_secondary_indexes(index(
                SWEEP_INDEX,
                "sweep_bucket",
                "sweep_at",
                ProjectionType::Include,
            )?)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) =>
            {
                return Ok(());
            }
            Err(err) => return Err(aws_error(err)),
        }
        for _ in 0..100 {
            let status = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(aws_error)?
                .table
                .and_then(|t| t.table_status);
            if status == Some(aws_sdk_dynamodb::types::TableStatus::Active) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name("expires_at")
                    .enabled(true)
                    .build()
                    .map_err(HubError::backend)?,
            )
            .send()
            .await
            .map_err(aws_error)?;
        Ok(())
    }

    fn subscription_from(item: &Item) -> Result<Subscription> {
        let doc =
            get_s(item, "doc").ok_or_else(|| HubError::backend("subscription item without doc"))?;
        let mut sub: Subscription = serde_json::from_str(doc).map_err(HubError::backend)?;
        sub.odometer = get_n(item, "odometer").unwrap_or(0) as u64;
        sub.failing_since_ms = get_n(item, "failing_since");
        Ok(sub)
    }

    /// Writes subscriptions with their indexes in batches, without version checks: a bulk
    /// import for migrations and restores (and for seeding large tables in tests).
    pub async fn import(&self, subs: &[Subscription]) -> Result<()> {
        let mut items = Vec::new();
        for sub in subs {
            let mut item = key(sub_pk(&sub.id), "SUB");
            item.extend(
                subscription_attributes(sub)?
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v)),
            );
            item.insert("odometer".into(), n(sub.odometer as i64));
            items.push(item);
            items.extend(index_items(sub)?);
        }
        for chunk in items.chunks(25) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|item| {
                    PutRequest::builder()
                        .set_item(Some(item.clone()))
                        .build()
                        .map(|p| WriteRequest::builder().put_request(p).build())
                        .map_err(HubError::backend)
                })
                .collect::<Result<_>>()?;
            self.write_batch(&mut requests).await?;
        }
        Ok(())
    }

    /// Deletes items by key in batches of 25, retrying what DynamoDB leaves unprocessed.
    async fn batch_delete(&self, keys: Vec<Item>) -> Result<()> {
        for chunk in keys.chunks(25) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|k| {
                    DeleteRequest::builder()
                        .set_key(Some(k.clone()))
                        .build()
                        .map(|d| WriteRequest::builder().delete_request(d).build())
                        .map_err(HubError::backend)
                })
                .collect::<Result<_>>()?;
            self.write_batch(&mut requests).await?;
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
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":pk", s(pk.clone()))
                .set_exclusive_start_key(start.take());
            query = match sk_prefix {
                Some(prefix) => query
                    .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                    .expression_attribute_values(":prefix", s(prefix)),
                None => query.key_condition_expression("pk = :pk"),
            };
            let out = query.send().await.map_err(aws_error)?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => return Ok(items),
            }
        }
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn get(&self, id: &str) -> Result<Option<Subscription>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(sub_pk(id), "SUB")))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws_error)?;
        out.item.as_ref().map(Self::subscription_from).transpose()
    }

    async fn find_by_callback(
        &self,
        account: &str,
        callback_url: &str,
    ) -> Result<Option<Subscription>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(callback_pk(account, callback_url), "CB")))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws_error)?;
        match out.item.as_ref().and_then(|item| get_s(item, "sub_id")) {
            Some(id) => Ok(self
                .get(id)
                .await?
                .filter(|sub| sub.account == account && sub.callback_url == callback_url)),
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
        keys.extend(
            self.query_partition(sub_pk(&sub.id), Some("ATT#"))
                .await?
                .into_iter()
                .filter_map(|item| Some(key(get_s(&item, "pk")?.to_string(), get_s(&item, "sk")?))),
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
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Subscription>> {
        // A query page stops at 1 MB whatever its `Limit`: keep reading until there is one
        // item more than the page needs (so `next_cursor` is known) or nothing is left.
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(ACCOUNT_INDEX)
                .expression_attribute_values(":acc", s(account_gsi_pk(account)))
                .limit((limit + 1 - items.len()) as i32)
                .set_exclusive_start_key(start.take());
            let query = match cursor.filter(|c| !c.is_empty()) {
                Some(cursor) => query
                    .key_condition_expression("gsi1pk = :acc AND gsi1sk > :cursor")
                    .expression_attribute_values(":cursor", s(cursor)),
                None => query.key_condition_expression("gsi1pk = :acc"),
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
        let next_cursor = (items.len() > limit).then(|| {
            items.truncate(limit);
            items.last().map(|s| s.id.clone()).unwrap_or_default()
        });
        Ok(Page { items, next_cursor })
    }

    async fn count_subscriptions(&self, account: &str) -> Result<usize> {
        let mut count = 0;
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(ACCOUNT_INDEX)
                .key_condition_expression("gsi1pk = :acc")
                .expression_attribute_values(":acc", s(account_gsi_pk(account)))
                .select(aws_sdk_dynamodb::types::Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(aws_error)?;
            count += out.count as usize;
            match out.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => return Ok(count),
            }
        }
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
        let next_cursor = (entries.len() > limit).then(|| {
            entries.truncate(limit);
            entries
                .last()
                .map(|e| e.subscription_id.clone())
                .unwrap_or_default()
        });
        Ok(Page {
            items: entries,
            next_cursor,
        })
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
        match put {
            Ok(_) => return Ok(ClaimOutcome::Claimed),
            Err(err) if is_condition_failed(&err) => {}
            Err(err) => return Err(aws_error(err)),
        }
        let held = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, "EVK")))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws_error)?
            .item
            .unwrap_or_default();
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
        match updated {
            Ok(_) => Ok(()),
            // Taken over by a later publish meanwhile: its event is the key's now.
            Err(err) if is_condition_failed(&err) => Ok(()),
            Err(err) => Err(aws_error(err)),
        }
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
        match deleted {
            Ok(_) => Ok(()),
            Err(err) if is_condition_failed(&err) => Ok(()),
            Err(err) => Err(aws_error(err)),
        }
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
        match deleted {
            Ok(_) => {}
            Err(err) if is_condition_failed(&err) => return Ok(false),
            Err(err) => return Err(aws_error(err)),
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
            let mut start: Option<Item> = None;
            loop {
                let out = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(SWEEP_INDEX)
                    .key_condition_expression("#bucket = :b AND #at <= :now")
                    .expression_attribute_names("#bucket", "sweep_bucket")
                    .expression_attribute_names("#at", "sweep_at")
                    .expression_attribute_values(":b", s(format!("B#{bucket}")))
                    .expression_attribute_values(":now", n(now_ms))
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(aws_error)?;
                for item in out.items.unwrap_or_default() {
                    due.push(Self::subscription_from(&item)?);
                }
                match out.last_evaluated_key {
                    Some(next) if !next.is_empty() => start = Some(next),
                    _ => break,
                }
            }
        }
        Ok(due)
    }

    async fn record_attempt(&self, attempt: &AttemptRecord, expires_at_ms: i64) -> Result<()> {
        let random: u32 = rand::random();
        let mut item = key(
            sub_pk(&attempt.subscription_id),
            format!("ATT#{:015}#{random:08x}", attempt.started_at_ms),
        );
        item.insert(
            "doc".into(),
            s(serde_json::to_string(attempt).map_err(HubError::backend)?),
        );
        item.insert("expires_at".into(), n(ttl_secs(expires_at_ms)));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(aws_error)?;
        Ok(())
    }

    async fn attempts(&self, subscription_id: &str, limit: usize) -> Result<Vec<AttemptRecord>> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :att)")
            .expression_attribute_values(":pk", s(sub_pk(subscription_id)))
            .expression_attribute_values(":att", s("ATT#"))
            .scan_index_forward(false)
            .limit(limit as i32)
            .send()
            .await
            .map_err(aws_error)?;
        out.items
            .unwrap_or_default()
            .iter()
            .filter_map(|item| get_s(item, "doc"))
            .map(|doc| serde_json::from_str(doc).map_err(HubError::backend))
            .collect()
    }

    async fn record_outcome(
        &self,
        subscription_id: &str,
        delivered: bool,
        now_ms: i64,
    ) -> Result<Option<i64>> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(sub_pk(subscription_id), "SUB")))
            .condition_expression("attribute_exists(pk)")
            .return_values(ReturnValue::AllNew);
        let update = if delivered {
            update
                .update_expression("ADD #odometer :one REMOVE #failing")
                .expression_attribute_names("#odometer", "odometer")
                .expression_attribute_names("#failing", "failing_since")
                .expression_attribute_values(":one", n(1))
        } else {
            update
                .update_expression("SET #failing = if_not_exists(#failing, :now)")
                .expression_attribute_names("#failing", "failing_since")
                .expression_attribute_values(":now", n(now_ms))
        };
        match update.send().await {
            Ok(out) => Ok(out
                .attributes
                .as_ref()
                .and_then(|a| get_n(a, "failing_since"))),
            Err(err) if is_condition_failed(&err) => Ok(None),
            Err(err) => Err(aws_error(err)),
        }
    }
}

impl DynamoStore {
    /// Removes a subscription's callback index item, unless another subscription owns it by now.
    async fn delete_callback_index(&self, sub: &Subscription) -> Result<()> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(
                callback_pk(&sub.account, &sub.callback_url),
                "CB",
            )))
            .condition_expression("#sub = :id")
            .expression_attribute_names("#sub", "sub_id")
            .expression_attribute_values(":id", s(sub.id.clone()))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(err) if is_condition_failed(&err) => Ok(()),
            Err(err) => Err(aws_error(err)),
        }
    }
}
