//! Getting failed deliveries through after all: `resend` of one, `recover` of every delivery
//! exhausted in a window, and the release of parked deliveries when a paused or disabled
//! subscription is resumed. All work on the deliveries a subscription keeps
//! ([`KeptDelivery`]); `docs/operations.md` describes them for users.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::auth::{Caller, SCOPE_SUBSCRIBE};
use crate::clock::{parse_rfc3339, rfc3339};
use crate::context::Hub;
use crate::error::{ErrorCode, HubError, Result};
use crate::model::{
    DeliveryOrder, DeliveryTask, KeptDelivery, KeptState, Subscription, SubscriptionStatus,
    TaskPayload, queue_json,
};
use crate::ports::OutgoingMessage;
use crate::service::delivery::Verdict;
use crate::service::operational::{OperationalTopic, subscription_data};

/// Most deliveries one `recover` call queues again; the answer says when more are left.
pub const MAX_RECOVER: usize = 1000;
/// Parked deliveries read per page while a resume releases them.
const RESUME_PAGE: usize = 25;
/// How long one resume message delivers parked deliveries before it hands over to the next
/// (half the sender function's timeout, so the last attempt always fits).
const RESUME_BUDGET: Duration = Duration::from_secs(15);

/// `POST /v1/subscriptions/{id}/recover`'s body: the window, RFC 3339 (`until` defaults to
/// now), and what it selects.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverRequest {
    /// From this time on (inclusive).
    pub since: String,
    /// Up to this time (exclusive); now when left out.
    #[serde(default)]
    pub until: Option<String>,
    /// Which deliveries: the exhausted ones (by exhaustion time, the default) or every kept
    /// event that went to the subscription (by publication time).
    #[serde(default)]
    pub include: RecoverInclude,
    /// Where a previous `"include": "all"` call stopped (its `next_cursor`).
    #[serde(default)]
    pub cursor: Option<String>,
}

/// What a `recover` queues again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoverInclude {
    /// Deliveries exhausted in the window.
    #[default]
    Exhausted,
    /// Every event of the history published in the window that went to the subscription,
    /// delivered or not.
    All,
}

impl RecoverRequest {
    /// The window in Unix ms, checked: both times RFC 3339, `since` before `until`.
    pub fn bounds(&self, now_ms: i64) -> Result<(i64, i64)> {
        let parse = |name: &str, text: &str| {
            parse_rfc3339(text).ok_or_else(|| {
                HubError::invalid(
                    ErrorCode::InvalidTime,
                    format!("`{name}` must be an RFC 3339 time, e.g. 2026-11-30T10:53:20Z"),
                )
            })
        };
        let since = parse("since", &self.since)?;
        let until = match &self.until {
            Some(text) => parse("until", text)?,
            None => now_ms,
        };
        if since >= until {
            return Err(HubError::invalid(
                ErrorCode::InvalidTime,
                "`since` must come before `until` (or before now)",
            ));
        }
        Ok((since, until))
    }
}

/// What a `recover` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// How many deliveries were queued again.
    pub requeued: usize,
    /// Whether more deliveries of the window are left for another call.
    pub more: bool,
    /// With `"include": "all"`, where the next call goes on (pass it as `cursor`).
    pub next_cursor: Option<String>,
}

impl Hub {
    /// `POST /v1/subscriptions/{id}/deliveries/{event_id}/resend`: queues a kept delivery (one
    /// that failed and is waiting for its retry, or was exhausted) again now, under its
    /// `webhook-id`, with a fresh retry schedule. A parked one waits for the resume instead.
    pub async fn resend(&self, caller: &Caller, id: &str, event_id: &str) -> Result<()> {
        caller.require(SCOPE_SUBSCRIBE)?;
        let sub = self.owned(caller, id).await?;
        match self.store.kept_delivery(&sub.id, event_id).await? {
            Some(kept) if kept.state != KeptState::Parked => self.requeue(&sub, vec![kept]).await?,
            Some(_) => return Err(HubError::Parked),
            None => self.resend_from_history(&sub, event_id).await?,
        }
        tracing::info!(subscription_id = %sub.id, event_id, "delivery resent");
        Ok(())
    }

    /// `POST /v1/subscriptions/{id}/recover`: queues again every delivery of the subscription
    /// that was exhausted from `since_ms` up to `until_ms`, oldest event first, at most
    /// [`MAX_RECOVER`] per call. Each is marked retrying, so the next call goes on with the rest.
    /// With `"include": "all"`, every kept event published in the window that went to it instead
    /// (the history), a cursor carrying the next call on.
    pub async fn recover(
        &self,
        caller: &Caller,
        id: &str,
        req: &RecoverRequest,
    ) -> Result<Recovered> {
        caller.require(SCOPE_SUBSCRIBE)?;
        let (since_ms, until_ms) = req.bounds(self.now_ms())?;
        let sub = self.owned(caller, id).await?;
        let recovered = match req.include {
            RecoverInclude::Exhausted => self.recover_exhausted(&sub, since_ms, until_ms).await?,
            RecoverInclude::All => {
                let (requeued, next_cursor) = self
                    .recover_all(&sub, since_ms, until_ms, req.cursor.clone(), MAX_RECOVER)
                    .await?;
                Recovered {
                    requeued,
                    more: next_cursor.is_some(),
                    next_cursor,
                }
            }
        };
        let Recovered { requeued, more, .. } = recovered;
        tracing::info!(subscription_id = %sub.id, requeued, more, include = ?req.include, "deliveries recovered");
        if requeued > 0 {
            let details = json!({
                "requeued": requeued,
                "since": rfc3339(since_ms),
                "until": rfc3339(until_ms),
            });
            self.emit(
                &sub,
                OperationalTopic::SubscriptionRecovered,
                subscription_data(&sub.id, details),
            )
            .await;
        }
        Ok(recovered)
    }

    /// The exhausted deliveries of `sub` in the window, queued again and marked retrying.
    async fn recover_exhausted(
        &self,
        sub: &Subscription,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Recovered> {
        let mut chosen = Vec::new();
        let mut cursor: Option<String> = None;
        let more = loop {
            let page = self
                .store
                .kept_deliveries(&sub.id, KeptState::Exhausted, cursor.as_deref(), 100)
                .await?;
            for kept in page.items {
                if (since_ms..until_ms).contains(&kept.since_ms) {
                    if chosen.len() == MAX_RECOVER {
                        break;
                    }
                    chosen.push(kept);
                }
            }
            if chosen.len() == MAX_RECOVER {
                break true;
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break false,
            }
        };
        let requeued = chosen.len();
        self.requeue(sub, chosen).await?;
        Ok(Recovered {
            requeued,
            more,
            next_cursor: None,
        })
    }

    /// Queues kept deliveries again (first), then marks them retrying: a crash in between
    /// queues them once more later (a duplicate under the same `webhook-id`, never a loss).
    async fn requeue(&self, sub: &Subscription, kept: Vec<KeptDelivery>) -> Result<()> {
        if kept.is_empty() {
            return Ok(());
        }
        if sub.ordering == DeliveryOrder::Fifo {
            // Back in the subscription's line, in event order.
            return self.requeue_ordered(&sub.id, kept).await;
        }
        let messages = kept
            .iter()
            .map(|k| OutgoingMessage {
                body: queue_json(&DeliveryTask::again(k)),
                delay: Duration::ZERO,
                group: None,
            })
            .collect();
        self.send_deliveries(messages).await?;
        let now = self.now_ms();
        for chunk in kept.chunks(16) {
            let marked: Vec<KeptDelivery> = chunk
                .iter()
                .map(|k| KeptDelivery {
                    state: KeptState::Retrying,
                    since_ms: now,
                    until_ms: Some(self.retained_until(now)),
                    ..k.clone()
                })
                .collect();
            futures::future::try_join_all(marked.iter().map(|k| self.store.keep_delivery(k)))
                .await?;
        }
        Ok(())
    }

    /// Queues the release of a resumed subscription's parked deliveries.
    pub(crate) async fn queue_resume(&self, subscription_id: &str) -> Result<()> {
        self.enqueue_delivery(&DeliveryTask::new(subscription_id, TaskPayload::Resume))
            .await
    }

    /// Delivers a subscription's parked deliveries one after another in event order (the
    /// sender's handling of a resume message), for up to [`RESUME_BUDGET`]; then queues a resume
    /// for the rest. A delivery that fails goes on with its own retries, so later ones are not
    /// held back by it. Stops when the subscription is paused or disabled again.
    pub async fn release_parked(&self, subscription_id: &str) -> Result<()> {
        if let Some(sub) = self.store.get(subscription_id).await?
            && sub.ordering == DeliveryOrder::Fifo
            && sub.status == SubscriptionStatus::Active
        {
            // Back in its line, a page at a time (each page queued before the next is read).
            loop {
                let page = self
                    .store
                    .kept_deliveries(subscription_id, KeptState::Parked, None, RESUME_PAGE)
                    .await?;
                if page.items.is_empty() {
                    return Ok(());
                }
                self.requeue(&sub, page.items).await?;
            }
        }
        let started = Instant::now();
        let mut seen = HashSet::new();
        loop {
            let page = self
                .store
                .kept_deliveries(subscription_id, KeptState::Parked, None, RESUME_PAGE)
                .await?;
            if page.items.is_empty() {
                return Ok(());
            }
            for kept in page.items {
                if !seen.insert(kept.event_id().to_string()) {
                    // Still parked after its turn: nothing more this message can do.
                    return Ok(());
                }
                if started.elapsed() >= RESUME_BUDGET {
                    return self.queue_resume(subscription_id).await;
                }
                let task = DeliveryTask::again(&kept);
                let now = self.now_ms();
                let verdict = self.deliver(&task).await?;
                if verdict == Verdict::Parked {
                    return Ok(()); // paused or disabled again: its resume goes on from here
                }
                self.settle(task, &verdict, now).await?;
            }
        }
    }
}
