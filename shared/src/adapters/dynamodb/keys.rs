//! The table's key layout and item shapes: how each kind of item is keyed and what it holds,
//! in one place (the table is drawn in `docs/design.md`).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::error::{HubError, Result};
use crate::model::{Subscription, TopicEntry};
use crate::topic::Pattern;

/// Width of one sweeper time bucket.
pub const SWEEP_BUCKET_SECS: i64 = 86_400;

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// How every delivery-log item's sort key begins (`ATT#{ms}#{rand}`).
pub const ATTEMPT_SK_PREFIX: &str = "ATT#";

/// A number attribute from its decimal text (stream sequence numbers exceed `i64`).
pub(super) fn n_text(value: String) -> AttributeValue {
    AttributeValue::N(value)
}

pub(super) fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn key(pk: String, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

pub(super) fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub(super) fn get_n(item: &Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// Epoch seconds for the TTL attribute, rounded up so TTL never fires early.
pub(super) fn ttl_secs(ms: i64) -> i64 {
    (ms + 999).div_euclid(1000)
}

pub(super) fn sub_pk(id: &str) -> String {
    format!("SUB#{id}")
}

/// An account as part of a composite key: `%` and `#` escaped, so `#` separates key parts
/// unambiguously whatever the account is called (account `a#b` with key `c` never meets
/// account `a` with key `b#c`).
pub(super) fn account_part(account: &str) -> std::borrow::Cow<'_, str> {
    if account.contains(['%', '#']) {
        account.replace('%', "%25").replace('#', "%23").into()
    } else {
        account.into()
    }
}

/// The sort key of a kept delivery in its subscription's partition.
pub(super) fn kept_sk(event_id: &str) -> String {
    format!("KEPT#{event_id}")
}

/// Above every [`kept_sk`] and below the partition's other sort keys after them (`SUB`).
/// The partition of the hub's own keys (`sk` is the key's name).
pub(super) const HUB_KEYS_PK: &str = "HUB#KEYS";

pub(super) const KEPT_SK_END: &str = "KEPT$";

/// The callback index of a URL among the account-wide subscriptions of `account`
/// (`bound_to` `None`) or among those bound to one owner: a URL is unique within each.
pub(super) fn callback_pk(account: &str, bound_to: Option<&str>, url: &str) -> String {
    let digest = crate::signing::sha256_hex(url.as_bytes());
    match bound_to {
        None => format!("CB#{}#{digest}", account_part(account)),
        Some(owner) => format!(
            "CB#{}#{}#{digest}",
            account_part(account),
            crate::signing::sha256_hex(owner.as_bytes())
        ),
    }
}

/// The callback index of `sub`.
pub(super) fn callback_pk_of(sub: &Subscription) -> String {
    callback_pk(&sub.account, sub.bound_owner(), &sub.callback_url)
}

pub(super) fn topic_pk(account: &str, pattern: &Pattern) -> String {
    format!("T#{}#{pattern}", account_part(account))
}

/// How many ms one history partition spans: a day of one account's events.
pub const HISTORY_PARTITION_MS: i64 = 86_400_000;

/// The history partition of `account`'s events published on the day of `ms` (sort key: the
/// event id, time-ordered).
pub(super) fn history_pk(account: &str, ms: i64) -> String {
    format!(
        "EVT#{}#{}",
        account_part(account),
        ms.div_euclid(HISTORY_PARTITION_MS)
    )
}

pub(super) fn event_key_pk(account: &str, key: &str) -> String {
    format!("EVK#{}#{key}", account_part(account))
}

pub(super) fn account_gsi_pk(account: &str) -> String {
    format!("ACC#{account}")
}

/// The partition of the `by_owner` index that holds the subscriptions of `account` bound to
/// `owner` (the owner hashed: any text, one key part).
pub(super) fn owner_gsi_pk(account: &str, owner: &str) -> String {
    format!(
        "OWN#{}#{}",
        account_part(account),
        crate::signing::sha256_hex(owner.as_bytes())
    )
}

/// Whether an SDK error is DynamoDB refusing a condition (a conditional write, or a transaction
/// cancelled by one).
/// The outcome of a conditional write: `true` when it was made, `false` when its condition did
/// not hold (someone else's state won), an error for anything else.
pub(super) fn condition_held<T, E, R>(
    written: std::result::Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>,
) -> Result<bool>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match written {
        Ok(_) => Ok(true),
        Err(err) if is_condition_failed(&err) => Ok(false),
        Err(err) => Err(crate::adapters::aws_error(err)),
    }
}

pub(super) fn is_condition_failed<E, R>(err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    err.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| {
            code == "ConditionalCheckFailedException" || code == "TransactionCanceledException"
        })
}

pub(super) fn bucket_number(ms: i64) -> i64 {
    ms.div_euclid(1000 * SWEEP_BUCKET_SECS)
}

/// The attributes of a subscription's own item besides its key and the store-maintained
/// counters (`odometer`, `last_delivered`, `failing_since`), as `save` sets them and `import`
/// writes them.
pub(super) fn subscription_attributes(
    sub: &Subscription,
) -> Result<Vec<(&'static str, AttributeValue)>> {
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
    if let Some(owner) = sub.bound_owner() {
        // Sparse: only bound subscriptions are in `by_owner` (a binding never changes).
        attributes.push(("gsi2pk", s(owner_gsi_pk(&sub.account, owner))));
        attributes.push(("gsi2sk", s(sub.id.clone())));
    }
    if let Some(since) = sub.failing_since_ms {
        attributes.push(("failing_since", n(since)));
    }
    Ok(attributes)
}

/// The items that find a subscription: its callback index (first) and one fan-out entry per
/// pattern.
pub(super) fn index_items(sub: &Subscription) -> Result<Vec<Item>> {
    let expires = n(ttl_secs(sub.lapses_at_ms()));
    let mut callback = key(callback_pk_of(sub), "CB");
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
