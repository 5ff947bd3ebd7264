//! The embedded mode's workers: pollers that do in-process what the SQS event sources do on
//! AWS (same consumers, same visibility-based retries), and the sweep loop that EventBridge
//! drives on AWS. All stop on one shutdown signal and finish the attempts in flight.
//!
//! Deliveries run in per-subscription lanes: at most [`PER_SUBSCRIPTION_CONCURRENCY`] attempts
//! of one subscription at once. A message for a saturated subscription is parked (its visibility
//! extended, which does not count as a receive) without taking a slot, so a receiver that hangs
//! holds back only itself.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

use super::consume::{QueueRole, consume, consume_batch, queue_of};
use crate::context::Hub;
use crate::ports::{Queue, ReceivedMessage};
use crate::service::ingest::IngestSource;

/// How many messages the deliveries poller works on at once.
pub const DELIVERY_CONCURRENCY: usize = 512;
/// How many attempts to one subscription run at once.
pub const PER_SUBSCRIPTION_CONCURRENCY: usize = 32;
/// How many events are fanned out at once.
pub const FANOUT_CONCURRENCY: usize = 16;
/// How long a parked message stays hidden; the keeper renews it every [`PARKED_RENEWAL`] while it
/// waits, so after a crash it is back within this time.
const PARKED_VISIBILITY: Duration = Duration::from_secs(30);
/// How often the visibility of parked messages is renewed.
const PARKED_RENEWAL: Duration = Duration::from_secs(10);

/// Per-subscription lanes: how many attempts run, and the messages waiting their turn.
#[derive(Default)]
struct Lanes {
    lanes: Mutex<HashMap<String, Lane>>,
}

#[derive(Default)]
struct Lane {
    running: usize,
    parked: VecDeque<ReceivedMessage>,
}

impl Lanes {
    /// Takes a place in `key`'s lane if there is one.
    fn try_enter(&self, key: &str) -> bool {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let lane = lanes.entry(key.to_string()).or_default();
        let free = lane.running < PER_SUBSCRIPTION_CONCURRENCY;
        if free {
            lane.running += 1;
        }
        free
    }

    /// Parks `msg` in `key`'s lane, or hands it back with a place if one came free meanwhile.
    fn park(&self, key: &str, msg: ReceivedMessage) -> Option<ReceivedMessage> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let lane = lanes.entry(key.to_string()).or_default();
        if lane.running < PER_SUBSCRIPTION_CONCURRENCY {
            lane.running += 1;
            return Some(msg);
        }
        lane.parked.push_back(msg);
        None
    }

    /// The receipts of every parked message.
    fn parked_receipts(&self) -> Vec<String> {
        let lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        lanes
            .values()
            .flat_map(|lane| lane.parked.iter().map(|m| m.receipt.clone()))
            .collect()
    }

    /// After an attempt: the next parked message of the lane (keeping the place), or leaves it.
    fn next(&self, key: &str) -> Option<ReceivedMessage> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let lane = lanes.get_mut(key)?;
        if let Some(msg) = lane.parked.pop_front() {
            return Some(msg);
        }
        lane.running -= 1;
        if lane.running == 0 {
            lanes.remove(key);
        }
        None
    }
}

/// The subscription a deliveries message is for (its lane), without parsing the whole task.
fn lane_key(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Peek {
        subscription_id: String,
    }
    serde_json::from_str::<Peek>(body)
        .map(|p| p.subscription_id)
        .unwrap_or_default()
}

async fn process(hub: &Hub, queue: &Arc<dyn Queue>, role: QueueRole, msg: &ReceivedMessage) {
    acknowledge(queue, msg, consume(hub, role, msg).await).await;
}

/// Removes a message that is done; one that is not comes back after its visibility timeout.
async fn acknowledge(queue: &Arc<dyn Queue>, msg: &ReceivedMessage, done: bool) {
    if done && let Err(err) = queue.ack(&msg.receipt).await {
        tracing::warn!(error = %err, message_id = %msg.id, "ack failed; the message will come back");
    }
}

/// Polls one queue until `shutdown` turns true, then waits for the messages in flight.
pub async fn poll(
    hub: Hub,
    role: QueueRole,
    concurrency: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let queue = queue_of(&hub, role);
    let slots = Arc::new(Semaphore::new(concurrency));
    let lanes = Arc::new(Lanes::default());
    let keeper = tokio::spawn(keep_parked_hidden(
        queue.clone(),
        lanes.clone(),
        shutdown.clone(),
    ));
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
        if role == QueueRole::Events && !messages.is_empty() {
            // Fanned out together: each pattern read once for the whole poll.
            let permits = slots
                .clone()
                .acquire_many_owned(messages.len() as u32)
                .await
                .expect("semaphore open");
            let (hub, queue) = (hub.clone(), queue.clone());
            tokio::spawn(async move {
                let done = consume_batch(&hub, role, &messages).await;
                for (msg, done) in messages.iter().zip(done) {
                    acknowledge(&queue, msg, done).await;
                }
                drop(permits);
            });
            continue;
        }
        for msg in messages {
            let permit: OwnedSemaphorePermit =
                slots.clone().acquire_owned().await.expect("semaphore open");
            let (hub, queue, lanes) = (hub.clone(), queue.clone(), lanes.clone());
            let key = lane_key(&msg.body);
            let first = if lanes.try_enter(&key) {
                msg
            } else {
                // Hide it while it waits (this does not count as a receive), then park it.
                let _ = queue.postpone(&msg.receipt, PARKED_VISIBILITY).await;
                match lanes.park(&key, msg) {
                    Some(msg) => msg,
                    None => continue,
                }
            };
            tokio::spawn(async move {
                let mut next = Some(first);
                while let Some(msg) = next {
                    process(&hub, &queue, role, &msg).await;
                    next = lanes.next(&key);
                }
                drop(permit);
            });
        }
    }
    // Finish what is in flight.
    let _ = slots.acquire_many(concurrency as u32).await;
    keeper.abort();
}

/// Renews the visibility of parked messages until shutdown.
async fn keep_parked_hidden(
    queue: Arc<dyn Queue>,
    lanes: Arc<Lanes>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PARKED_RENEWAL) => {}
            _ = shutdown.changed() => return,
        }
        for receipt in lanes.parked_receipts() {
            let _ = queue.postpone(&receipt, PARKED_VISIBILITY).await;
        }
    }
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

/// Starts the fan-out and delivery pollers, the ingest pollers where ingest queues are
/// configured, and the sweep loop.
pub fn start_workers(
    hub: &Hub,
    sweep_interval: Duration,
    shutdown: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut workers = vec![
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
    ];
    for (queue, source) in [
        (&hub.ingest.direct, IngestSource::Direct),
        (&hub.ingest.bus, IngestSource::Bus),
    ] {
        if queue.is_some() {
            workers.push(tokio::spawn(poll(
                hub.clone(),
                QueueRole::Ingest(source),
                FANOUT_CONCURRENCY,
                shutdown.clone(),
            )));
        }
    }
    workers
}
