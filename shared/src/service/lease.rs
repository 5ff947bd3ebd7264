//! Leases that end on time: the sweep removes lapsed subscriptions (expired, or unconfirmed for
//! 24 h) with all their items, and sends each active subscription one `subscription.expiring`
//! notice when a tenth of its lease (at most 24 h) remains.

use crate::context::Hub;
use crate::error::Result;
use crate::model::{DeliveryTask, Event, Subscription, TaskPayload};
use crate::service::operational::{OperationalTopic, subscription_data};
use crate::signing::sha256_hex;
use crate::topic::Topic;
use tracing::Instrument;

/// Topic of the notice sent before a lease ends.
pub const EXPIRING_TOPIC: &str = "subscription.expiring";

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Lapsed subscriptions removed.
    pub removed: usize,
    /// `subscription.expiring` notices queued.
    pub notices: usize,
}

impl Hub {
    /// One sweep: removes every lapsed subscription the store's expiry index finds, and queues
    /// the expiring notices that are due.
    pub async fn sweep(&self) -> Result<SweepReport> {
        let span = crate::trace::spans::sweep();
        let report = self.sweep_unspanned().instrument(span.clone()).await;
        if let Ok(report) = &report {
            crate::trace::spans::swept(&span, report.removed, report.notices);
        }
        report
    }

    async fn sweep_unspanned(&self) -> Result<SweepReport> {
        let now = self.now_ms();
        let mut report = SweepReport::default();
        for sub in self.store.due_for_sweep(now).await? {
            if sub.is_expired(now) {
                if !self.store.remove_if_unchanged(&sub).await? {
                    continue; // refreshed meanwhile
                }
                tracing::info!(subscription_id = %sub.id, account = %sub.account, status = ?sub.status, "subscription.expired");
                report.removed += 1;
            } else if self.send_expiry_notice(&sub, now).await? {
                report.notices += 1;
            }
        }
        // What outlived the retention goes first, so the store's prune gives its space back.
        let retained_from = now - self.settings.retention.as_millis() as i64;
        for queue in [&self.events, &self.deliveries] {
            match queue.prune_dead_letters(retained_from).await {
                Ok(0) => {}
                Ok(dropped) => tracing::info!(dropped, "dead letters past the retention dropped"),
                Err(err) => tracing::warn!(error = %err, "dropping old dead letters failed"),
            }
        }
        if let Err(err) = self.store.prune(now).await {
            tracing::warn!(error = %err, "pruning expired keys and delivery logs failed");
        }
        // Also with the history off: what an earlier run kept still ends with its retention.
        let max_events = self.settings.history_max_events;
        if let Err(err) = self.store.trim_events(now, max_events).await {
            tracing::warn!(error = %err, "trimming the event history failed");
        }
        Ok(report)
    }

    /// Queues the `subscription.expiring` notice once per lease, if the subscription wants it:
    /// queued first, then marked sent, so a crash between the two repeats the notice (with the
    /// same `webhook-id`, derived from the lease) rather than losing it.
    async fn send_expiry_notice(&self, due: &Subscription, now: i64) -> Result<bool> {
        // The index copy may be stale or partial: decide on the stored subscription.
        let Some(sub) = self.store.get(&due.id).await? else {
            return Ok(false);
        };
        if sub.notice_at_ms().is_none_or(|at| at > now) || sub.is_expired(now) {
            return Ok(false);
        }
        let lease_key = format!("{}\0{}", sub.id, sub.expires_at_ms);
        let event = Event {
            owner: sub.bound_owner().map(str::to_string),
            ..Event::new(
                format!("evt_{}", &sha256_hex(lease_key.as_bytes())[..28]),
                &sub.account,
                Topic::parse(EXPIRING_TOPIC)?,
                now,
                serde_json::json!({"id": sub.id, "validity_ts": crate::clock::seconds_ts(sub.expires_at_ms)}),
            )
        };
        self.enqueue_delivery(&DeliveryTask::new(
            sub.id.clone(),
            TaskPayload::Notice { event },
        ))
        .await?;
        let details = serde_json::json!({
            "callback_url": sub.callback_url,
            "expires_at": crate::clock::rfc3339(sub.expires_at_ms),
        });
        self.emit(
            &sub,
            OperationalTopic::SubscriptionExpiring,
            subscription_data(&sub.id, details),
        )
        .await;
        let mut marked = sub.clone();
        marked.expiry_notice_sent = true;
        marked.version += 1;
        if let Err(err) = self.store.save(&marked, Some(&sub)).await {
            // Changed meanwhile (or the store failed): the next sweep decides again, and may
            // queue the notice once more under the same id.
            tracing::info!(subscription_id = %sub.id, error = %err, "expiry notice queued but not marked");
        }
        Ok(true)
    }
}
