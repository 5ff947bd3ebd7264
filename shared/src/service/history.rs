//! The event history (`docs/operations.md`, "Event history"): fan-out keeps every event with its
//! payload and the subscriptions it went to for the retention; the API lists and reads them
//! within the caller's reach, redacted as the caller's customers receive them, and resends any
//! delivery of a kept event, delivered ones included.

use std::time::Duration;

use serde_json::{Value, json};

use crate::auth::{Caller, SCOPE_READ};
use crate::clock::parse_rfc3339;
use crate::context::Hub;
use crate::error::{ErrorCode, HubError, Result};
use crate::model::{
    AttemptRecord, DeliveryOrder, DeliveryTask, Event, KeptEvent, KeptState, Subscription,
    TaskPayload, id_time_ms, queue_json,
};
use crate::ports::{Audience, EventQuery, OutgoingMessage, Page};
use crate::service::delivery::{event_body, remove_pointers};
use crate::topic::Pattern;

/// Most deliveries one event's read shows (name one with `subscription_id` to see any other).
pub const MAX_DELIVERIES_SHOWN: usize = 25;
/// How many history pages one `recover` with `"include": "all"` reads at most before it answers
/// with a cursor (each page is a bounded read).
const RECOVER_SCANS: usize = 20;

/// `GET /v1/events`'s query, as given.
#[derive(Debug, Clone, Default)]
pub struct EventListRequest {
    /// Only this topic, or the topics under a pattern (`door.*`).
    pub topic: Option<String>,
    /// Only the events addressed to this owner (a bound caller: its own only).
    pub owner: Option<String>,
    /// Only the events fanned out to this subscription.
    pub subscription_id: Option<String>,
    /// Published at or after (RFC 3339); default: the retention's start.
    pub since: Option<String>,
    /// Published before (RFC 3339); default: now.
    pub until: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1–100 (default 50).
    pub limit: Option<usize>,
}

/// One delivery of a kept event, as the event's read shows it.
#[derive(Debug, Clone)]
pub struct DeliveryView {
    /// The subscription.
    pub subscription_id: String,
    /// Where the delivery stands.
    pub status: DeliveryStatus,
    /// Its attempts still in the delivery log, oldest first.
    pub attempts: Vec<AttemptRecord>,
    /// The body as the subscription receives it (its secrecy level applied, its `user_data`).
    pub body: Value,
}

/// Where one delivery of a kept event stands, from the delivery log and the kept deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// An attempt was answered `2xx`.
    Delivered,
    /// It failed and a retry is queued (or it was resent and is on its way).
    Retrying,
    /// Every attempt of its schedule failed.
    Exhausted,
    /// Held while its subscription is paused or disabled.
    Parked,
    /// Attempted and failed, and nothing is kept of it (the subscription answered `410`, or
    /// its lease ended first).
    Failed,
    /// No attempt is logged yet (queued; or, with the lean delivery log, delivered without a
    /// log entry).
    Pending,
}

/// A kept event as the caller may see it.
#[derive(Debug, Clone)]
pub struct EventView {
    /// The record (its data redacted for the caller).
    pub kept: KeptEvent,
    /// Its deliveries, on a read of one event.
    pub deliveries: Vec<DeliveryView>,
    /// Whether it went to more subscriptions in the caller's reach than `deliveries` shows.
    pub more_deliveries: bool,
}

impl Hub {
    /// The history record of `event`, fanned out to `count` subscriptions of which `listed` are
    /// the first.
    pub(crate) fn history_record(
        &self,
        event: &Event,
        listed: Vec<String>,
        count: usize,
    ) -> KeptEvent {
        KeptEvent {
            event: event.clone(),
            subscriptions: listed,
            fanned_out: count as u64,
            until_ms: self.retained_until(event.timestamp_ms),
        }
    }

    /// Keeps fan-out's records, if the history is on. A full database skips them (logged): the
    /// history never holds deliveries back. Any other failure fails the fan-out, which is tried
    /// again.
    pub(crate) async fn keep_history(&self, records: Vec<KeptEvent>) -> Result<()> {
        if !self.settings.history || records.is_empty() {
            return Ok(());
        }
        let count = records.len();
        match self.store.keep_events(records).await {
            Err(HubError::StorageFull { .. }) => {
                tracing::warn!(
                    events = count,
                    "storage full: events not kept in the history"
                );
                Ok(())
            }
            other => other,
        }
    }

    fn require_history(&self) -> Result<()> {
        if self.settings.history {
            Ok(())
        } else {
            Err(HubError::HistoryOff)
        }
    }

    /// `GET /v1/events`: a page of the kept events the caller may see, newest first.
    pub async fn list_events(
        &self,
        caller: &Caller,
        req: EventListRequest,
    ) -> Result<Page<EventView>> {
        caller.require(SCOPE_READ)?;
        self.require_history()?;
        let now = self.now_ms();
        let limit = req.limit.unwrap_or(50);
        if !(1..=100).contains(&limit) {
            return Err(HubError::invalid(
                ErrorCode::InvalidLimit,
                "limit is between 1 and 100",
            ));
        }
        let topic = req.topic.as_deref().map(Pattern::parse).transpose()?;
        let audience = match (caller.bound_to(), req.owner.as_deref()) {
            (Some(_), named) => Audience::Customer(caller.owner_for(named)?.unwrap_or_default()),
            (None, Some(owner)) => Audience::AddressedTo(crate::validate::owner(owner)?),
            (None, None) => Audience::Everyone,
        };
        if let Some(id) = &req.subscription_id {
            self.owned(caller, id).await?;
        }
        let since = time_param("since", req.since.as_deref())?;
        let until = time_param("until", req.until.as_deref())?;
        let (since, until) = history_window(since, until, now);
        check_cursor(req.cursor.as_deref())?;
        let query = EventQuery {
            account: caller.account.clone(),
            topic,
            audience,
            subscription_id: req.subscription_id,
            since_ms: since,
            until_ms: until,
            cursor: req.cursor,
            limit,
            oldest_first: false,
            now_ms: now,
        };
        let page = query.page_of(self.store.scan_events(&query).await?);
        Ok(Page {
            items: page
                .items
                .into_iter()
                .filter(|k| caller.may_see_topic(&k.event.topic))
                .map(|kept| EventView {
                    kept: redacted(kept, caller.secrecy_floor),
                    deliveries: Vec::new(),
                    more_deliveries: false,
                })
                .collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// `GET /v1/events/{id}`: a kept event the caller may see, with its deliveries to the
    /// subscriptions in the caller's reach (the first [`MAX_DELIVERIES_SHOWN`], or the one named).
    pub async fn read_event(
        &self,
        caller: &Caller,
        event_id: &str,
        subscription_id: Option<&str>,
    ) -> Result<EventView> {
        caller.require(SCOPE_READ)?;
        self.require_history()?;
        let kept = self.visible_event(caller, event_id).await?;
        let named = match subscription_id {
            Some(id) => Some(self.owned(caller, id).await?),
            None => None,
        };
        let mut deliveries = Vec::new();
        let mut more = false;
        let candidates: Vec<&String> = match &named {
            Some(sub) => kept
                .subscriptions
                .iter()
                .filter(|s| **s == sub.id)
                .collect(),
            None => kept.subscriptions.iter().collect(),
        };
        for id in candidates {
            let sub = match (&named, self.store.get(id).await?) {
                (Some(sub), _) => sub.clone(),
                (None, Some(sub)) if caller.reaches(&sub) && caller.may_act_on(&sub.topics) => sub,
                _ => continue,
            };
            if deliveries.len() == MAX_DELIVERIES_SHOWN {
                more = true;
                break;
            }
            deliveries.push(self.delivery_view(&kept.event, &sub).await?);
        }
        if let (Some(sub), true) = (&named, deliveries.is_empty())
            && kept.went_to(sub)
        {
            // A fan-out larger than the record lists: the named subscription matched it.
            deliveries.push(self.delivery_view(&kept.event, sub).await?);
        }
        Ok(EventView {
            kept: redacted(kept, caller.secrecy_floor),
            deliveries,
            more_deliveries: more,
        })
    }

    /// A kept event of the caller's account that the caller may see (its customer boundary and
    /// topic scopes), or `404`.
    async fn visible_event(&self, caller: &Caller, event_id: &str) -> Result<KeptEvent> {
        let now = self.now_ms();
        match self
            .store
            .kept_event(&caller.account, event_id, now)
            .await?
        {
            Some(kept)
                if kept.event.is_for(caller.bound_to())
                    && caller.may_see_topic(&kept.event.topic) =>
            {
                Ok(kept)
            }
            _ => Err(HubError::NotFound("event")),
        }
    }

    async fn delivery_view(&self, event: &Event, sub: &Subscription) -> Result<DeliveryView> {
        let attempts = self
            .store
            .attempts_of_event(&sub.id, &event.id, event.timestamp_ms)
            .await?;
        let kept = self.store.kept_delivery(&sub.id, &event.id).await?;
        let status = match (kept.map(|k| k.state), attempts.iter().any(|a| a.delivered)) {
            (Some(KeptState::Retrying), _) => DeliveryStatus::Retrying,
            (Some(KeptState::Exhausted), _) => DeliveryStatus::Exhausted,
            (Some(KeptState::Parked), _) => DeliveryStatus::Parked,
            (Some(KeptState::Queued), _) if attempts.is_empty() => DeliveryStatus::Pending,
            (Some(KeptState::Queued), _) => DeliveryStatus::Retrying,
            (None, true) => DeliveryStatus::Delivered,
            (None, false) if attempts.is_empty() => DeliveryStatus::Pending,
            (None, false) => DeliveryStatus::Failed,
        };
        Ok(DeliveryView {
            subscription_id: sub.id.clone(),
            status,
            attempts,
            body: event_body(event, sub),
        })
    }

    /// Resends a delivery of a kept event that nothing keeps as failing (a delivered one, most
    /// often): queued again now under its `webhook-id`, with a fresh retry schedule. `404` when
    /// the event is not kept or did not go to the subscription.
    pub(crate) async fn resend_from_history(
        &self,
        sub: &Subscription,
        event_id: &str,
    ) -> Result<()> {
        if !self.settings.history {
            return Err(HubError::NotFound(
                "failed delivery (the event history is off)",
            ));
        }
        let now = self.now_ms();
        let kept = self
            .store
            .kept_event(&sub.account, event_id, now)
            .await?
            .filter(|kept| kept.went_to(sub))
            .ok_or(HubError::NotFound("delivery of a kept event"))?;
        if sub.ordering == DeliveryOrder::Fifo {
            return self.queue_ordered(&sub.id, [&kept.event]).await;
        }
        let task = DeliveryTask::new(sub.id.clone(), TaskPayload::Event { event: kept.event });
        self.enqueue_delivery(&task).await
    }

    /// `recover` with `"include": "all"`: queues again every kept event published in
    /// `since_ms..until_ms` that went to `sub`, delivered or not, oldest first, at most `max`
    /// per call; returns how many, and where the next call goes on (`None` when done).
    pub(crate) async fn recover_all(
        &self,
        sub: &Subscription,
        since_ms: i64,
        until_ms: i64,
        cursor: Option<String>,
        max: usize,
    ) -> Result<(usize, Option<String>)> {
        self.require_history()?;
        check_cursor(cursor.as_deref())?;
        let now = self.now_ms();
        let (since_ms, until_ms) = history_window(Some(since_ms), Some(until_ms), now);
        let mut query = EventQuery {
            account: sub.account.clone(),
            topic: None,
            audience: Audience::Everyone,
            subscription_id: Some(sub.id.clone()),
            since_ms,
            until_ms,
            cursor,
            limit: max,
            oldest_first: true,
            now_ms: now,
        };
        let mut chosen: Vec<Event> = Vec::new();
        let mut next = None;
        for _ in 0..RECOVER_SCANS {
            query.limit = max - chosen.len();
            let page = query.page_of(self.store.scan_events(&query).await?);
            chosen.extend(page.items.into_iter().map(|k| k.event));
            next = page.next_cursor;
            match &next {
                Some(cursor) if chosen.len() < max => query.cursor = Some(cursor.clone()),
                _ => break,
            }
        }
        // Each goes as a kept delivery: settled (forgotten) once delivered, so one that was
        // exhausted does not stay listed as exhausted after it got through.
        if sub.ordering == DeliveryOrder::Fifo {
            let requeued = chosen.len();
            self.queue_ordered(&sub.id, &chosen).await?;
            return Ok((requeued, next));
        }
        let messages: Vec<OutgoingMessage> = chosen
            .into_iter()
            .map(|event| OutgoingMessage {
                body: queue_json(&DeliveryTask {
                    kept: true,
                    ..DeliveryTask::new(sub.id.clone(), TaskPayload::Event { event })
                }),
                delay: Duration::ZERO,
                group: None,
            })
            .collect();
        let requeued = messages.len();
        if requeued > 0 {
            self.send_deliveries(messages).await?;
        }
        Ok((requeued, next))
    }
}

/// A history cursor is an event id the history gave (`next_cursor`).
fn check_cursor(cursor: Option<&str>) -> Result<()> {
    match cursor {
        Some(c) if !c.starts_with("evt_") || id_time_ms(c).is_none() => Err(HubError::invalid(
            ErrorCode::InvalidCursor,
            "`cursor` is the `next_cursor` of a previous answer",
        )),
        _ => Ok(()),
    }
}

/// The part of a window the history can hold anything in: from the longest retention ago
/// (default: all of it) to a little past now (default: now), so a window of centuries reads what
/// one of days does.
fn history_window(since: Option<i64>, until: Option<i64>, now: i64) -> (i64, i64) {
    let oldest = now - crate::context::MAX_RETENTION.as_millis() as i64;
    let newest = now + 3_600_000; // clocks of other processes may run a little ahead
    (
        since.unwrap_or(oldest).clamp(oldest, newest),
        until.unwrap_or(now + 1).clamp(oldest, newest),
    )
}

/// A time query parameter, RFC 3339.
fn time_param(name: &str, text: Option<&str>) -> Result<Option<i64>> {
    text.map(|t| {
        parse_rfc3339(t).ok_or_else(|| {
            HubError::invalid(
                ErrorCode::InvalidTime,
                format!("`{name}` must be an RFC 3339 time, e.g. 2026-11-30T10:53:20Z"),
            )
        })
    })
    .transpose()
}

/// The record with every sensitive field at or below `level` removed from its data, and the
/// sensitive map itself kept only where nothing is removed (the platform's own callers).
fn redacted(mut kept: KeptEvent, level: u8) -> KeptEvent {
    let event = &mut kept.event;
    if event.sensitive.values().any(|l| *l <= level) {
        let mut envelope = json!({"data": std::mem::take(&mut event.data)});
        remove_pointers(
            &mut envelope,
            event
                .sensitive
                .iter()
                .filter(|(_, l)| **l <= level)
                .map(|(pointer, _)| pointer.as_str()),
        );
        event.data = envelope["data"].take();
    }
    if level > 0 {
        event.sensitive.clear();
    }
    kept
}
