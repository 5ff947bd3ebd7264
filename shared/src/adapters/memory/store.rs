//! The in-memory [`Store`]: versioned saves, the callback index, per-pattern topic entries,
//! idempotency keys with their window (pruned as claims come in) and a capped delivery log.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

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

#[derive(Default)]
struct StoreState {
    subscriptions: BTreeMap<String, Subscription>,
    /// Subscription ids by account, bound owner (`""`: account-wide) and callback URL.
    by_callback: HashMap<CallbackKey, String>,
    /// Allowances: the window they count in (its start, Unix ms) and how many were taken.
    allowances: HashMap<String, (i64, u32)>,
    topics: HashMap<(String, Pattern), BTreeSet<String>>,
    event_keys: HashMap<(String, String), KeyState>,
    claims_since_prune: usize,
    attempts: HashMap<String, Vec<AttemptRecord>>,
    /// How far each subscription's odometer has folded the delivery log's stream.
    folded_to: HashMap<String, u128>,
    /// The batch fold's last mark added to each subscription's odometer.
    fold_marks: HashMap<String, u64>,
    /// Kept deliveries by subscription, then by event id (time-ordered).
    kept: HashMap<String, BTreeMap<String, KeptDelivery>>,
    /// The hub's own keys by name.
    hub_keys: HashMap<String, Vec<u8>>,
    /// Kept events by account, then by event id (time-ordered).
    history: HashMap<String, BTreeMap<String, KeptEvent>>,
    /// Event types by account, then by topic.
    event_types: HashMap<String, BTreeMap<String, EventType>>,
    /// Catalog settings by account.
    catalog_settings: HashMap<String, CatalogSettings>,
}

/// Where a callback URL is unique: the account, the owner a subscription is bound to (`""` for
/// account-wide ones) and the URL.
type CallbackKey = (String, String, String);

fn callback_key(account: &str, bound_to: Option<&str>, url: &str) -> CallbackKey {
    (
        account.to_string(),
        bound_to.unwrap_or_default().to_string(),
        url.to_string(),
    )
}

fn callback_key_of(sub: &Subscription) -> CallbackKey {
    callback_key(&sub.account, sub.bound_owner(), &sub.callback_url)
}

/// An idempotency key: claimed by one publish, then queued.
struct KeyState {
    event_id: String,
    queued: bool,
    claim_until_ms: i64,
    window_until_ms: i64,
}

/// Expired idempotency keys are dropped after this many claims.
const PRUNE_EVERY_CLAIMS: usize = 1024;

/// Keeps the last this many attempts per subscription.
const ATTEMPT_LOG_LEN: usize = 100;

/// A [`Store`] in process memory.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<StoreState>,
}

impl MemoryStore {
    /// How many idempotency keys it holds (expired ones are pruned as claims come in).
    pub fn event_key_count(&self) -> usize {
        self.lock().event_keys.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StoreState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl StoreState {
    fn unlink(&mut self, sub: &Subscription) {
        for pattern in &sub.topics {
            if let Some(set) = self.topics.get_mut(&(sub.account.clone(), pattern.clone())) {
                set.remove(&sub.id);
            }
        }
        let key = callback_key_of(sub);
        if self.by_callback.get(&key) == Some(&sub.id) {
            self.by_callback.remove(&key);
        }
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn key(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().hub_keys.get(name).cloned())
    }

    async fn hub_key(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>> {
        Ok(self
            .lock()
            .hub_keys
            .entry(name.to_string())
            .or_insert_with(|| fresh.to_vec())
            .clone())
    }

    async fn replace_key(&self, name: &str, expected: &[u8], value: &[u8]) -> Result<bool> {
        let mut state = self.lock();
        match state.hub_keys.get_mut(name) {
            Some(stored) if stored.as_slice() == expected => {
                *stored = value.to_vec();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl HistoryStore for MemoryStore {
    async fn keep_events(&self, events: Vec<KeptEvent>) -> Result<()> {
        let mut state = self.lock();
        for kept in events {
            let id = kept.event.id.clone();
            match state.history.get_mut(&kept.event.account) {
                Some(events) => events.insert(id, kept),
                None => {
                    let account = kept.event.account.clone();
                    state.history.entry(account).or_default().insert(id, kept)
                }
            };
        }
        Ok(())
    }

    async fn kept_event(
        &self,
        account: &str,
        event_id: &str,
        now_ms: i64,
    ) -> Result<Option<KeptEvent>> {
        Ok(self
            .lock()
            .history
            .get(account)
            .and_then(|events| events.get(event_id))
            .filter(|kept| kept.until_ms > now_ms)
            .cloned())
    }

    async fn scan_events(&self, query: &EventQuery) -> Result<Vec<KeptEvent>> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let state = self.lock();
        let Some(events) = state.history.get(&query.account) else {
            return Ok(Vec::new());
        };
        let (low, high) = query.id_bounds();
        let key = |b: &std::ops::Bound<String>| match b {
            Included(k) | Excluded(k) => Some(k.clone()),
            Unbounded => None,
        };
        if let (Some(l), Some(h)) = (key(&low), key(&high))
            && l >= h
        {
            return Ok(Vec::new()); // an empty window (BTreeMap's range would panic on it)
        }
        let range = events.range((low, high)).map(|(_, kept)| kept.clone());
        Ok(if query.oldest_first {
            range.take(HISTORY_SCAN + 1).collect()
        } else {
            range.rev().take(HISTORY_SCAN + 1).collect()
        })
    }

    async fn trim_events(&self, now_ms: i64, max_events: u64) -> Result<()> {
        let mut state = self.lock();
        for events in state.history.values_mut() {
            events.retain(|_, kept| kept.until_ms > now_ms);
        }
        let total: usize = state.history.values().map(BTreeMap::len).sum();
        let mut excess = total.saturating_sub(max_events as usize);
        while excess > 0 {
            // The oldest event of all accounts goes first.
            let Some(account) = state
                .history
                .iter()
                .filter_map(|(account, events)| Some((events.keys().next()?, account)))
                .min()
                .map(|(_, account)| account.clone())
            else {
                break;
            };
            let events = state.history.get_mut(&account).expect("found just now");
            events.pop_first();
            excess -= 1;
        }
        state.history.retain(|_, events| !events.is_empty());
        Ok(())
    }
}

#[async_trait]
impl CatalogStore for MemoryStore {
    async fn catalog(&self, account: &str) -> Result<StoredCatalog> {
        let state = self.lock();
        Ok(StoredCatalog {
            types: state
                .event_types
                .get(account)
                .map(|types| types.values().cloned().collect())
                .unwrap_or_default(),
            settings: state.catalog_settings.get(account).copied(),
        })
    }

    async fn put_event_type(&self, account: &str, event_type: &EventType) -> Result<()> {
        self.lock()
            .event_types
            .entry(account.to_string())
            .or_default()
            .insert(event_type.topic.as_str().to_string(), event_type.clone());
        Ok(())
    }

    async fn put_catalog_settings(&self, account: &str, settings: &CatalogSettings) -> Result<()> {
        self.lock()
            .catalog_settings
            .insert(account.to_string(), *settings);
        Ok(())
    }
}

#[async_trait]
impl PaceStore for MemoryStore {
    async fn swap_pace(
        &self,
        subscription_id: &str,
        expected: Option<u64>,
        pace: &crate::pacing::Pace,
    ) -> Result<bool> {
        let mut state = self.lock();
        let Some(sub) = state.subscriptions.get_mut(subscription_id) else {
            return Ok(false);
        };
        if sub.pace.as_ref().map(|p| p.version) != expected {
            return Ok(false);
        }
        sub.pace = Some(pace.clone());
        Ok(true)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn take_allowance(
        &self,
        key: &str,
        now_ms: i64,
        window_ms: i64,
        limit: u32,
    ) -> Result<bool> {
        let window = now_ms - now_ms.rem_euclid(window_ms);
        let mut state = self.lock();
        state
            .allowances
            .retain(|_, (start, _)| *start + window_ms > now_ms);
        let (start, used) = state
            .allowances
            .entry(key.to_string())
            .or_insert((window, 0));
        if *start != window {
            (*start, *used) = (window, 0);
        }
        if *used >= limit {
            return Ok(false);
        }
        *used += 1;
        Ok(true)
    }

    async fn count_by_status(&self) -> Result<Option<Vec<(SubscriptionStatus, u64)>>> {
        let mut counts = std::collections::BTreeMap::new();
        for sub in self.lock().subscriptions.values() {
            *counts.entry(sub.status).or_insert(0u64) += 1;
        }
        Ok(Some(counts.into_iter().collect()))
    }

    async fn get(&self, id: &str) -> Result<Option<Subscription>> {
        Ok(self.lock().subscriptions.get(id).cloned())
    }

    async fn find_by_callback(
        &self,
        account: &str,
        bound_to: Option<&str>,
        callback_url: &str,
    ) -> Result<Option<Subscription>> {
        let state = self.lock();
        Ok(state
            .by_callback
            .get(&callback_key(account, bound_to, callback_url))
            .and_then(|id| state.subscriptions.get(id))
            .cloned())
    }

    async fn save(&self, sub: &Subscription, previous: Option<&Subscription>) -> Result<()> {
        let mut state = self.lock();
        let stored_version = state.subscriptions.get(&sub.id).map(|s| s.version);
        if stored_version != previous.map(|p| p.version) {
            return Err(HubError::Conflict);
        }
        let callback_key = callback_key_of(sub);
        if let Some(holder) = state.by_callback.get(&callback_key)
            && holder != &sub.id
            && state.subscriptions.contains_key(holder)
        {
            // Another subscription holds this callback: one subscription per callback.
            return Err(HubError::Conflict);
        }
        let (odometer, last_delivered, pace) = state
            .subscriptions
            .get(&sub.id)
            .map_or((0, None, None), |s| {
                (s.odometer, s.last_delivered_ms, s.pace.clone())
            });
        if let Some(prev) = previous {
            state.unlink(prev);
        }
        let mut stored = sub.clone();
        stored.odometer = odometer;
        stored.last_delivered_ms = last_delivered;
        stored.pace = pace;
        for pattern in &sub.topics {
            state
                .topics
                .entry((sub.account.clone(), pattern.clone()))
                .or_default()
                .insert(sub.id.clone());
        }
        state.by_callback.insert(callback_key, sub.id.clone());
        state.subscriptions.insert(sub.id.clone(), stored);
        Ok(())
    }

    async fn delete(&self, sub: &Subscription) -> Result<()> {
        let mut state = self.lock();
        if let Some(stored) = state.subscriptions.remove(&sub.id) {
            state.unlink(&stored);
        }
        state.attempts.remove(&sub.id);
        state.kept.remove(&sub.id);
        state.folded_to.remove(&sub.id);
        state.fold_marks.remove(&sub.id);
        Ok(())
    }

    async fn list(
        &self,
        account: &str,
        bound_to: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Subscription>> {
        let state = self.lock();
        let start = cursor.unwrap_or("");
        let items: Vec<Subscription> = state
            .subscriptions
            .range::<str, _>((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded))
            .filter(|(_, s)| {
                s.account == account && bound_to.is_none_or(|o| s.bound_owner() == Some(o))
            })
            .take(limit + 1)
            .map(|(_, s)| s.clone())
            .collect();
        Ok(Page::from_overfetch(items, limit, |s| s.id.clone()))
    }

    async fn count_subscriptions(&self, account: &str) -> Result<usize> {
        let state = self.lock();
        Ok(state
            .subscriptions
            .values()
            .filter(|s| s.account == account)
            .count())
    }

    async fn topic_entries(
        &self,
        account: &str,
        pattern: &Pattern,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<TopicEntry>> {
        let state = self.lock();
        let Some(ids) = state.topics.get(&(account.to_string(), pattern.clone())) else {
            return Ok(Page {
                items: vec![],
                next_cursor: None,
            });
        };
        let start = cursor.unwrap_or("").to_string();
        let items: Vec<TopicEntry> = ids
            .range((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded))
            .filter_map(|id| state.subscriptions.get(id))
            .take(limit + 1)
            .map(TopicEntry::of)
            .collect();
        Ok(Page::from_overfetch(items, limit, |e| {
            e.subscription_id.clone()
        }))
    }

    async fn claim_event_key(&self, claim: &KeyClaim) -> Result<ClaimOutcome> {
        let mut state = self.lock();
        state.claims_since_prune += 1;
        if state.claims_since_prune >= PRUNE_EVERY_CLAIMS {
            state.claims_since_prune = 0;
            let now = claim.now_ms;
            state.event_keys.retain(|_, k| k.window_until_ms > now);
        }
        let slot = (claim.account.clone(), claim.key.clone());
        if let Some(held) = state.event_keys.get(&slot)
            && held.window_until_ms > claim.now_ms
        {
            if held.queued {
                return Ok(ClaimOutcome::Queued {
                    event_id: held.event_id.clone(),
                });
            }
            if held.claim_until_ms > claim.now_ms {
                return Ok(ClaimOutcome::InFlight {
                    retry_after_ms: held.claim_until_ms - claim.now_ms,
                });
            }
            // An abandoned claim: taken over below.
        }
        state.event_keys.insert(
            slot,
            KeyState {
                event_id: claim.event_id.clone(),
                queued: false,
                claim_until_ms: claim.claim_until_ms,
                window_until_ms: claim.window_until_ms,
            },
        );
        Ok(ClaimOutcome::Claimed)
    }

    async fn mark_event_key_queued(&self, account: &str, key: &str, event_id: &str) -> Result<()> {
        let mut state = self.lock();
        if let Some(held) = state
            .event_keys
            .get_mut(&(account.to_string(), key.to_string()))
            && held.event_id == event_id
        {
            held.queued = true;
        }
        Ok(())
    }

    async fn remove_if_unchanged(&self, sub: &Subscription) -> Result<bool> {
        let mut state = self.lock();
        if state.subscriptions.get(&sub.id).map(|s| s.version) != Some(sub.version) {
            return Ok(false);
        }
        if let Some(stored) = state.subscriptions.remove(&sub.id) {
            state.unlink(&stored);
        }
        state.attempts.remove(&sub.id);
        state.kept.remove(&sub.id);
        Ok(true)
    }

    async fn due_for_sweep(&self, now_ms: i64) -> Result<Vec<Subscription>> {
        let state = self.lock();
        Ok(state
            .subscriptions
            .values()
            .filter(|s| s.sweep_at_ms() <= now_ms)
            .cloned()
            .collect())
    }

    async fn release_event_key(&self, account: &str, key: &str, event_id: &str) -> Result<()> {
        let mut state = self.lock();
        let slot = (account.to_string(), key.to_string());
        if state
            .event_keys
            .get(&slot)
            .is_some_and(|held| held.event_id == event_id && !held.queued)
        {
            state.event_keys.remove(&slot);
        }
        Ok(())
    }

    async fn record_attempts(&self, attempts: &[AttemptRecord], _expires_at_ms: i64) -> Result<()> {
        let mut state = self.lock();
        for attempt in attempts {
            let log = state
                .attempts
                .entry(attempt.subscription_id.clone())
                .or_default();
            log.push(attempt.clone());
            if log.len() > ATTEMPT_LOG_LEN {
                log.remove(0);
            }
        }
        Ok(())
    }

    async fn attempts(&self, subscription_id: &str, limit: usize) -> Result<Vec<AttemptRecord>> {
        let state = self.lock();
        Ok(state
            .attempts
            .get(subscription_id)
            .map(|log| log.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn keep_delivery(&self, kept: &KeptDelivery) -> Result<()> {
        self.lock()
            .kept
            .entry(kept.subscription_id.clone())
            .or_default()
            .insert(kept.event_id().to_string(), kept.clone());
        Ok(())
    }

    async fn kept_delivery(
        &self,
        subscription_id: &str,
        event_id: &str,
    ) -> Result<Option<KeptDelivery>> {
        Ok(self
            .lock()
            .kept
            .get(subscription_id)
            .and_then(|kept| kept.get(event_id))
            .cloned())
    }

    async fn kept_deliveries(
        &self,
        subscription_id: &str,
        state: KeptState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<KeptDelivery>> {
        let store = self.lock();
        let start = cursor.unwrap_or("");
        let items = store
            .kept
            .get(subscription_id)
            .map(|kept| {
                kept.range::<str, _>((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded))
                    .map(|(_, k)| k)
                    .filter(|k| k.state == state)
                    .take(limit + 1)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Ok(Page::from_overfetch(items, limit, |k: &KeptDelivery| {
            k.event_id().to_string()
        }))
    }

    async fn forget_delivery(&self, subscription_id: &str, event_id: &str) -> Result<()> {
        let mut state = self.lock();
        if let Some(kept) = state.kept.get_mut(subscription_id) {
            kept.remove(event_id);
            if kept.is_empty() {
                state.kept.remove(subscription_id);
            }
        }
        Ok(())
    }

    async fn record_failure(&self, subscription_id: &str, now_ms: i64) -> Result<Option<i64>> {
        let mut state = self.lock();
        let Some(sub) = state.subscriptions.get_mut(subscription_id) else {
            return Ok(None);
        };
        Ok(Some(*sub.failing_since_ms.get_or_insert(now_ms)))
    }

    async fn add_delivered(&self, tallies: &[DeliveredTally]) -> Result<()> {
        let mut state = self.lock();
        for tally in tallies {
            if let Some((first, last)) = tally.stream_span {
                let folded = state
                    .folded_to
                    .entry(tally.subscription_id.clone())
                    .or_default();
                if *folded >= first {
                    continue;
                }
                *folded = last;
            }
            if let Some(mark) = tally.fold_mark {
                let last = state.fold_marks.insert(tally.subscription_id.clone(), mark);
                if last == Some(mark) {
                    continue;
                }
            }
            let Some(sub) = state.subscriptions.get_mut(&tally.subscription_id) else {
                continue;
            };
            sub.odometer += tally.delivered;
            sub.last_delivered_ms = sub.last_delivered_ms.max(Some(tally.last_delivered_ms));
            if tally.ends_streak {
                sub.failing_since_ms = None;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expired_idempotency_keys_are_pruned() {
        let store = MemoryStore::default();
        let claim = |i: usize, now_ms: i64| KeyClaim {
            account: "acme".into(),
            key: format!("k{i}"),
            event_id: format!("evt_{i}"),
            now_ms,
            claim_until_ms: now_ms + 30_000,
            window_until_ms: now_ms + 86_400_000,
        };
        for i in 0..5000 {
            store.claim_event_key(&claim(i, 0)).await.unwrap();
        }
        assert_eq!(store.event_key_count(), 5000);
        for i in 0..PRUNE_EVERY_CLAIMS {
            store
                .claim_event_key(&claim(10_000 + i, 86_400_001))
                .await
                .unwrap();
        }
        assert!(
            store.event_key_count() <= PRUNE_EVERY_CLAIMS,
            "the 5,000 expired keys are gone: {}",
            store.event_key_count()
        );
    }
}
