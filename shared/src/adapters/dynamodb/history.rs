//! The event history on DynamoDB: events kept in groups, compressed. A write unit is 1 KB of
//! item, so one item per event costs at least a unit per event ($0.625 per million); fan-out
//! writes the events of its batch that were published within [`GROUP_SPAN_MS`] of each other
//! as one item, their JSON deflated, which costs a fraction of a unit per event
//! (BENCHMARKS.md §6).
//!
//! | item | pk | sk |
//! |---|---|---|
//! | a group of kept events | `EVT#{account}#{day of its first event}` | `{first event id}#{digest of its ids}` |
//!
//! A group's events were published at most [`GROUP_SPAN_MS`] after its first one, so the item
//! holding an event is among those whose sort key starts within that span before the event's
//! id: a read by id queries that span (one page), a listing reads the items of its window (and
//! that span before it) in key order, and hands on an event only once no unread item can hold a
//! later (or earlier) one.

use std::collections::HashSet;
use std::io::{Read, Write};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::DynamoStore;
use super::keys::{HISTORY_PARTITION_MS, Item, history_pk, key, n, s, ttl_secs};
use crate::adapters::aws_error;
use crate::error::{HubError, Result};
use crate::model::{KeptEvent, id_time_ms};
use crate::ports::{EventQuery, HISTORY_SCAN};

/// The longest span of publication times one item covers, from its first event on.
const GROUP_SPAN_MS: i64 = 1000;
/// Most events one item holds.
const GROUP_EVENTS: usize = 25;
/// Most JSON one item holds before compression (DynamoDB's item limit is 400 KB; one event of
/// the largest size is an item of its own).
const GROUP_BYTES: usize = 300 * 1024;

/// The ids of `ms` and later sort at or after this key.
fn id_floor(ms: i64) -> String {
    format!("evt_{:012x}", ms.clamp(0, 0xffff_ffff_ffff))
}

/// The day partitions between the times `from_ms` and `to_ms`, in order.
fn days(from_ms: i64, to_ms: i64) -> Vec<i64> {
    let day = |ms: i64| ms.div_euclid(HISTORY_PARTITION_MS);
    (day(from_ms)..=day(to_ms)).collect()
}

fn deflate(json: &[u8]) -> Result<Vec<u8>> {
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(json).map_err(HubError::backend)?;
    encoder.finish().map_err(HubError::backend)
}

/// The events of a group item.
fn group_of(item: &Item) -> Result<Vec<KeptEvent>> {
    let Some(AttributeValue::B(blob)) = item.get("z") else {
        return Err(HubError::backend("history item without its events"));
    };
    let mut json = Vec::new();
    flate2::read::DeflateDecoder::new(blob.as_ref())
        .read_to_end(&mut json)
        .map_err(HubError::backend)?;
    serde_json::from_slice(&json).map_err(HubError::backend)
}

/// `events` in groups that one item each holds: one account's, in id order, published within
/// [`GROUP_SPAN_MS`] of the group's first, at most [`GROUP_EVENTS`] and [`GROUP_BYTES`].
fn groups(events: &[KeptEvent]) -> Result<Vec<(Vec<&KeptEvent>, Vec<u8>)>> {
    let mut sorted: Vec<&KeptEvent> = events.iter().collect();
    sorted.sort_by(|a, b| (&a.event.account, &a.event.id).cmp(&(&b.event.account, &b.event.id)));
    let mut groups: Vec<(Vec<&KeptEvent>, Vec<u8>)> = Vec::new();
    for kept in sorted {
        let json = serde_json::to_vec(kept).map_err(HubError::backend)?;
        let fits = groups.last().is_some_and(|(group, bytes)| {
            let first = &group[0].event;
            first.account == kept.event.account
                && kept.event.timestamp_ms - first.timestamp_ms < GROUP_SPAN_MS
                && group.len() < GROUP_EVENTS
                && bytes.len() + json.len() < GROUP_BYTES
        });
        match groups.last_mut() {
            Some((group, bytes)) if fits => {
                group.push(kept);
                bytes.push(b',');
                bytes.extend(json);
            }
            _ => groups.push((vec![kept], json)),
        }
    }
    Ok(groups)
}

impl DynamoStore {
    /// A query of `account`'s history items of one day whose keys lie from `from` to `to`.
    fn history_items(
        &self,
        account: &str,
        day: i64,
        from: &str,
        to: &str,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", s(history_pk(account, day * HISTORY_PARTITION_MS)))
            .expression_attribute_values(":from", s(from))
            .expression_attribute_values(":to", s(to))
    }

    /// The items one group each, compressed, in `BatchWriteItem`s of 25.
    pub(super) async fn put_history(&self, events: &[KeptEvent]) -> Result<()> {
        let mut items = Vec::new();
        for (group, joined) in groups(events)? {
            let first = &group[0].event;
            let ids: Vec<&str> = group.iter().map(|k| k.event.id.as_str()).collect();
            let digest = crate::signing::sha256_hex(ids.join(",").as_bytes());
            // A retried fan-out may group differently: another digest, another item (an event
            // in two items is read once).
            let mut item = key(
                history_pk(&first.account, first.timestamp_ms),
                format!("{}#{}", first.id, &digest[..16]),
            );
            let json = [b"[".as_slice(), &joined, b"]"].concat();
            item.insert("z".into(), AttributeValue::B(Blob::new(deflate(&json)?)));
            let until = group.iter().map(|k| k.until_ms).max().unwrap_or_default();
            item.insert("expires_at".into(), n(ttl_secs(until)));
            items.push(item);
        }
        self.batch_put(items).await
    }

    /// The kept event `event_id` of `account`: among the items whose first event was published
    /// within [`GROUP_SPAN_MS`] before it.
    pub(super) async fn history_event(
        &self,
        account: &str,
        event_id: &str,
    ) -> Result<Option<KeptEvent>> {
        let Some(ms) = id_time_ms(event_id).filter(|_| event_id.starts_with("evt_")) else {
            return Ok(None);
        };
        let (from, to) = (id_floor(ms - GROUP_SPAN_MS), format!("{event_id}#~"));
        for day in days(ms - GROUP_SPAN_MS, ms) {
            let mut pages = self
                .history_items(account, day, &from, &to)
                .consistent_read(true)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                for item in page.map_err(aws_error)?.items.unwrap_or_default() {
                    if let Some(kept) = group_of(&item)?
                        .into_iter()
                        .find(|k| k.event.id == event_id)
                    {
                        return Ok(Some(kept));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The kept events of `query`'s window and order, at most [`HISTORY_SCAN`] + 1: the items
    /// are read in key order from [`GROUP_SPAN_MS`] before the window, and an event is handed on
    /// once no unread item can hold one that sorts before it.
    pub(super) async fn history_scan(&self, query: &EventQuery) -> Result<Vec<KeptEvent>> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let (low, high) = query.id_bounds();
        let within = |id: &str| {
            let above = match &low {
                Included(k) => id >= k.as_str(),
                Excluded(k) => id > k.as_str(),
                Unbounded => true,
            };
            let below = match &high {
                Included(k) => id <= k.as_str(),
                Excluded(k) => id < k.as_str(),
                Unbounded => true,
            };
            above && below
        };
        let bound_ms = |b: &std::ops::Bound<String>, default: i64| match b {
            Included(k) | Excluded(k) => id_time_ms(k).unwrap_or(default),
            Unbounded => default,
        };
        let (low_ms, high_ms) = (bound_ms(&low, 0), bound_ms(&high, 0xffff_ffff_ffff));
        if low_ms > high_ms {
            return Ok(Vec::new());
        }
        // Items whose first event lies from a span before the window to its end (an item's key
        // is its first id and a suffix, so an excluded `high` is past every item starting at it).
        let to = match &high {
            Included(k) => format!("{k}#~"),
            Excluded(k) => k.clone(),
            Unbounded => "evt_~".into(),
        };
        let from = id_floor(low_ms - GROUP_SPAN_MS);
        let mut partitions = days(low_ms - GROUP_SPAN_MS, high_ms);
        if !query.oldest_first {
            partitions.reverse();
        }
        let mut seen = HashSet::new();
        let mut pending: Vec<KeptEvent> = Vec::new();
        let mut settled: Vec<KeptEvent> = Vec::new();
        let settle =
            |pending: &mut Vec<KeptEvent>, settled: &mut Vec<KeptEvent>, frontier: Option<i64>| {
                // Newest first: no unread item holds an event at or after its first + span;
                // oldest first: none holds one before its first.
                let done = |k: &KeptEvent| match frontier {
                    None => true,
                    Some(f) if query.oldest_first => k.event.timestamp_ms < f,
                    Some(f) => k.event.timestamp_ms >= f + GROUP_SPAN_MS,
                };
                let (ready, wait): (Vec<_>, Vec<_>) = pending.drain(..).partition(done);
                *pending = wait;
                settled.extend(ready);
            };
        'partitions: for day in partitions {
            let mut start: Option<Item> = None;
            loop {
                let out = self
                    .history_items(&query.account, day, &from, &to)
                    .scan_index_forward(query.oldest_first)
                    .limit(100)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(aws_error)?;
                for item in out.items.unwrap_or_default() {
                    let first_ms = super::keys::get_s(&item, "sk").and_then(id_time_ms);
                    for kept in group_of(&item)? {
                        if within(&kept.event.id) && seen.insert(kept.event.id.clone()) {
                            pending.push(kept);
                        }
                    }
                    settle(&mut pending, &mut settled, first_ms);
                    if settled.len() > HISTORY_SCAN {
                        break 'partitions;
                    }
                }
                match out.last_evaluated_key {
                    Some(next) if !next.is_empty() => start = Some(next),
                    _ => break,
                }
            }
        }
        if settled.len() <= HISTORY_SCAN {
            settle(&mut pending, &mut settled, None); // every item is read
        }
        if query.oldest_first {
            settled.sort_by(|a, b| a.event.id.cmp(&b.event.id));
        } else {
            settled.sort_by(|a, b| b.event.id.cmp(&a.event.id));
        }
        settled.truncate(HISTORY_SCAN + 1);
        Ok(settled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Event;
    use crate::topic::Topic;

    fn kept(account: &str, ms: i64, n: u64) -> KeptEvent {
        KeptEvent {
            event: Event::new(
                format!("evt_{ms:012x}{n:016x}"),
                account,
                Topic::parse("door.opened").unwrap(),
                ms,
                serde_json::json!({"n": n}),
            ),
            subscriptions: vec![],
            fanned_out: 0,
            until_ms: ms + 1,
        }
    }

    #[test]
    fn groups_hold_one_accounts_events_of_one_span() {
        let events = vec![
            kept("a", 10_000, 1),
            kept("a", 10_999, 2),
            kept("a", 11_000, 3),
            kept("b", 10_500, 4),
        ];
        let made = groups(&events).unwrap();
        let ids: Vec<Vec<u64>> = made
            .iter()
            .map(|(g, _)| {
                g.iter()
                    .map(|k| k.event.data["n"].as_u64().unwrap())
                    .collect()
            })
            .collect();
        assert_eq!(ids, vec![vec![1, 2], vec![3], vec![4]]);
        let many: Vec<KeptEvent> = (0..30).map(|n| kept("a", 5_000, n)).collect();
        assert_eq!(groups(&many).unwrap().len(), 2, "at most 25 a group");
    }

    #[test]
    fn a_group_compresses_and_reads_back() {
        let events: Vec<KeptEvent> = (0..10).map(|n| kept("a", 5_000 + n as i64, n)).collect();
        let (_, joined) = groups(&events).unwrap().remove(0);
        let json = [b"[".as_slice(), &joined, b"]"].concat();
        let item = Item::from([(
            "z".to_string(),
            AttributeValue::B(Blob::new(deflate(&json).unwrap())),
        )]);
        assert_eq!(group_of(&item).unwrap(), events);
    }
}
