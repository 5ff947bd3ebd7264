//! The embedded mode's workers: pollers that do in-process what the SQS event sources do on
//! AWS (same consumers, same visibility-based retries), and the sweep loop that EventBridge
//! drives on AWS. All stop on one shutdown signal and finish the attempts in flight.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::consume::{deliver_message, fan_out_message};
use super::lambda::QueueRole;
use crate::hub::Hub;

/// How many messages the deliveries poller works on at once; a slow receiver holds one slot.
pub const DELIVERY_CONCURRENCY: usize = 512;
/// How many events are fanned out at once.
pub const FANOUT_CONCURRENCY: usize = 16;

/// Polls one queue until `shutdown` turns true, then waits for the messages in flight.
pub async fn poll(
    hub: Hub,
    role: QueueRole,
    concurrency: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let queue = match role {
        QueueRole::Events => hub.events.clone(),
        QueueRole::Deliveries => hub.deliveries.clone(),
    };
    let slots = Arc::new(Semaphore::new(concurrency));
    while !*shutdown.borrow() {
        let free = slots.available_permits().clamp(1, 10);
        let received = tokio::select! {
            received = queue.receive(free, Duration::from_secs(1)) => received,
            _ = shutdown.changed() => break,
        };
        let messages = match received {
            Ok(messages) => messages,
            Err(err) => {
                tracing::warn!(error = %err, ?role, "receive failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        for msg in messages {
            let permit = slots.clone().acquire_owned().await.expect("semaphore open");
            let (hub, queue) = (hub.clone(), queue.clone());
            tokio::spawn(async move {
                let done = match role {
                    QueueRole::Events => fan_out_message(&hub, &msg).await,
                    QueueRole::Deliveries => deliver_message(&hub, &msg).await,
                };
                if done && let Err(err) = queue.ack(&msg.receipt).await {
                    tracing::warn!(error = %err, message_id = %msg.id, "ack failed; the message will come back");
                }
                drop(permit);
            });
        }
    }
    // Finish what is in flight.
    let _ = slots.acquire_many(concurrency as u32).await;
}

/// Sweeps every `interval` until `shutdown` turns true.
pub async fn sweep_every(hub: Hub, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        match hub.sweep().await {
            Ok(report) if report.removed + report.notices > 0 => {
                tracing::info!(removed = report.removed, notices = report.notices, "sweep")
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "sweep failed"),
        }
    }
}

/// Starts the fan-out and delivery pollers and the sweep loop.
pub fn start_workers(
    hub: &Hub,
    sweep_interval: Duration,
    shutdown: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(poll(
            hub.clone(),
            QueueRole::Events,
            FANOUT_CONCURRENCY,
            shutdown.clone(),
        )),
        tokio::spawn(poll(
            hub.clone(),
            QueueRole::Deliveries,
            DELIVERY_CONCURRENCY,
            shutdown.clone(),
        )),
        tokio::spawn(sweep_every(hub.clone(), sweep_interval, shutdown.clone())),
    ]
}
