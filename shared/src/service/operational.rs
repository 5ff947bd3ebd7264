//! Operational events: what the hub tells an account about its own subscriptions, as ordinary
//! events under the reserved `hub.` topics, delivered (signed, retried) to whichever of the
//! account's subscriptions listen to them (`docs/operations.md` lists each with its data).

use serde_json::{Value, json};

use crate::auth::{Caller, SCOPE_SUBSCRIBE};
use crate::context::Hub;
use crate::error::{HubError, Result};
use crate::model::{
    DeliveryTask, Event, Subscription, SubscriptionStatus, TaskPayload, new_event_id, queue_json,
};
use crate::ports::OutgoingMessage;
use crate::topic::Topic;

/// The topic of a test event: sent by the hub to one subscription on request (the portal's
/// "send test event"), whatever its topics, signed and retried like any delivery.
pub const TEST_TOPIC: &str = "hub.test";

/// The operational topics the hub publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationalTopic {
    /// A delivery used up its schedule; it is kept for `recover` and `resend`.
    DeliveryExhausted,
    /// A subscription has failed without a success for the warning time; it will be disabled
    /// if that goes on.
    SubscriptionFailing,
    /// A subscription was disabled after failing continuously; its deliveries are parked.
    SubscriptionDisabled,
    /// A `recover` queued a subscription's exhausted deliveries again.
    SubscriptionRecovered,
    /// A subscription's lease ends soon (sent with its own `subscription.expiring` notice).
    SubscriptionExpiring,
}

impl OperationalTopic {
    /// Every operational topic.
    pub const ALL: &'static [OperationalTopic] = &[
        OperationalTopic::DeliveryExhausted,
        OperationalTopic::SubscriptionFailing,
        OperationalTopic::SubscriptionDisabled,
        OperationalTopic::SubscriptionRecovered,
        OperationalTopic::SubscriptionExpiring,
    ];

    /// Its topic name.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationalTopic::DeliveryExhausted => "hub.delivery.exhausted",
            OperationalTopic::SubscriptionFailing => "hub.subscription.failing",
            OperationalTopic::SubscriptionDisabled => "hub.subscription.disabled",
            OperationalTopic::SubscriptionRecovered => "hub.subscription.recovered",
            OperationalTopic::SubscriptionExpiring => "hub.subscription.expiring",
        }
    }

    fn topic(self) -> Topic {
        Topic::parse(self.as_str()).expect("operational topics follow the grammar")
    }
}

impl Hub {
    /// Publishes an operational event about `sub` to its account (queued like any event, so it
    /// reaches the account's subscriptions to its topic), addressed to the subscription's owner
    /// when it is bound to one: the platform and that customer hear of it, no other customer.
    /// Best effort: a failure is logged, never the caller's failure, since what it reports has
    /// already happened and is recorded.
    pub async fn emit(&self, sub: &Subscription, topic: OperationalTopic, data: Value) {
        let now = self.now_ms();
        let account = sub.account.as_str();
        let event = Event {
            owner: sub.bound_owner().map(str::to_string),
            ..Event::new(new_event_id(now), account, topic.topic(), now, data)
        };
        let sent = self
            .events
            .send(vec![OutgoingMessage {
                body: queue_json(&event),
                delay: std::time::Duration::ZERO,
                group: None,
            }])
            .await;
        match sent {
            Ok(()) => {
                tracing::info!(event_id = %event.id, account, topic = topic.as_str(), "operational event")
            }
            Err(err) => {
                tracing::warn!(account, topic = topic.as_str(), error = %err, "could not publish an operational event")
            }
        }
    }
}

impl Hub {
    /// `POST /v1/subscriptions/{id}/test`: queues a `hub.test` event for this one subscription,
    /// so its receiver can check it verifies what arrives. Only an active subscription takes one
    /// (a paused or pending one would drop it), and the answer is its event id.
    pub async fn send_test_event(&self, caller: &Caller, id: &str) -> Result<String> {
        caller.require(SCOPE_SUBSCRIBE)?;
        let sub = self.owned(caller, id).await?;
        if sub.status != SubscriptionStatus::Active {
            return Err(HubError::NotActive(sub.status.as_str()));
        }
        let now = self.now_ms();
        let event = Event {
            owner: sub.bound_owner().map(str::to_string),
            ..Event::new(
                new_event_id(now),
                &sub.account,
                Topic::parse(TEST_TOPIC).expect("the test topic follows the grammar"),
                now,
                subscription_data(
                    &sub.id,
                    json!({"message": "a test event, sent on request; it needs no action"}),
                ),
            )
        };
        self.enqueue_delivery(&DeliveryTask::new(
            sub.id.clone(),
            TaskPayload::Notice {
                event: event.clone(),
            },
        ))
        .await?;
        Ok(event.id)
    }
}

/// The data of a `hub.subscription.*` event: which subscription, and any details.
pub fn subscription_data(subscription_id: &str, details: Value) -> Value {
    let mut data = json!({ "subscription_id": subscription_id });
    if let (Some(data), Value::Object(details)) = (data.as_object_mut(), details) {
        data.extend(details);
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operational_topic_is_in_the_reserved_namespace() {
        for topic in OperationalTopic::ALL {
            assert!(topic.topic().is_operational(), "{}", topic.as_str());
        }
    }
}
