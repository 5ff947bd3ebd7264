//! The queue consumers, shared by the Lambda functions (SQS event batches) and the embedded
//! pollers: fan-out of an events-queue message, one delivery of a deliveries-queue message.

use std::time::Duration;

use super::lambda::QueueRole;
use crate::hub::Hub;
use crate::model::{DeliveryTask, Event};
use crate::ports::ReceivedMessage;
use crate::service::delivery::Verdict;

/// The queue a consumer role reads.
pub fn queue_of(hub: &Hub, role: QueueRole) -> std::sync::Arc<dyn crate::ports::Queue> {
    match role {
        QueueRole::Events => hub.events.clone(),
        QueueRole::Deliveries => hub.deliveries.clone(),
    }
}

/// Processes one message of `role`'s queue; `true` when it may be removed. The Lambda handlers
/// and the embedded pollers both go through here.
pub async fn consume(hub: &Hub, role: QueueRole, msg: &ReceivedMessage) -> bool {
    match role {
        QueueRole::Events => fan_out_message(hub, msg).await,
        QueueRole::Deliveries => deliver_message(hub, msg).await,
    }
}

/// Fans out one events-queue message; `true` when it may be removed.
pub async fn fan_out_message(hub: &Hub, msg: &ReceivedMessage) -> bool {
    let event: Event = match serde_json::from_str(&msg.body) {
        Ok(event) => event,
        Err(err) => {
            tracing::error!(message_id = %msg.id, error = %err, "unreadable events message: left to the dead-letter queue");
            return false;
        }
    };
    match hub.fan_out(&event).await {
        Ok(_) => true,
        Err(err) => {
            tracing::warn!(event_id = %event.id, error = %err, "fan-out failed; the message will come back");
            false
        }
    }
}

/// Makes one delivery attempt for a deliveries-queue message and settles its visibility;
/// `true` when it may be removed. A retry hides the message for the schedule's delay (SQS keeps
/// counting receives, which is the attempt number); an exhausted one is made visible at once so
/// the queue's redrive moves it to the dead-letter queue.
pub async fn deliver_message(hub: &Hub, msg: &ReceivedMessage) -> bool {
    let task: DeliveryTask = match serde_json::from_str(&msg.body) {
        Ok(task) => task,
        Err(err) => {
            tracing::error!(message_id = %msg.id, error = %err, "unreadable delivery message: left to the dead-letter queue");
            return false;
        }
    };
    let verdict = match hub.deliver(&task, msg.receive_count).await {
        Ok(verdict) => verdict,
        Err(err) => {
            tracing::warn!(subscription_id = %task.subscription_id, error = %err, "delivery failed before the attempt; the message will come back");
            return false;
        }
    };
    let hide_for = match verdict {
        Verdict::Done => return true,
        Verdict::RetryIn(delay) => delay,
        Verdict::Exhausted => Duration::ZERO,
    };
    if let Err(err) = hub.deliveries.postpone(&msg.receipt, hide_for).await {
        tracing::warn!(subscription_id = %task.subscription_id, error = %err, "could not schedule the retry; the queue's visibility timeout will");
    }
    false
}
