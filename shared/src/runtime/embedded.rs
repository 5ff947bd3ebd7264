//! The embedded mode's workers: pollers that do in-process what the SQS event sources do on
//! AWS (same consumers, same visibility-based retries), and the sweep loop that EventBridge
//! drives on AWS. All stop on one shutdown signal and finish the attempts in flight.
//!
//! Deliveries run in per-subscription lanes: at most [`PER_SUBSCRIPTION_CONCURRENCY`] attempts
//! of one subscription at once. A message for a saturated subscription is parked (its visibility
//! extended, which does not count as a receive) without taking a slot, so a receiver that hangs
//! holds back only itself. A lane works in batches, as the sender's SQS event source hands it
//! batches on AWS: the messages of one poll for a subscription go through the consumer together
//! (one read of the subscription, one delivery-log write, one odometer fold), and when a batch is
//! done its places take as many parked messages as the next batch.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

use super::consume::{QueueRole, consume_batch, consume_batch_then, queue_of};
use crate::context::Hub;
use crate::ports::{Queue, ReceivedMessage};
use crate::service::ingest::IngestSource;

/// How many messages the deliveries poller works on at once.
pub const DELIVERY_CONCURRENCY: usize = 512;
/// How many messages one poll asks for: the embedded queues hand over this many in one
/// operation (on SQLite, one writer operation for the lot); SQS gives at most 10 a call.
const POLL_BATCH: usize = 100;
/// The most messages of one lane attempted as one batch: a lane's places are shared by a few
/// batches, so one slow attempt holds back only its batch's places while the others go on
/// (measured: one lane of 32 places delivered about as fast in batches of 8, 16 or 32; 16
/// keeps the store's writes per delivery low).
const LANE_BATCH: usize = 16;
/// How many attempts to one subscription run at once.
pub const PER_SUBSCRIPTION_CONCURRENCY: usize = 32;
/// How many events are fanned out at once: several fan-out batches in flight, so the next
/// batch's reads and sends overlap the last one's writes (on SQLite, each is a group commit to
/// wait for; measured: with one batch of 16 in flight the fan-out, not the sender, bounded the
/// SQLite mode, and again with 64 events in batches of 16). At most this many events' bodies
/// are held by the fan-out.
pub const FANOUT_CONCURRENCY: usize = 128;
/// How many events one fan-out batch takes (each pattern read once for the batch).
const FANOUT_POLL_BATCH: usize = 32;
/// How long a parked message stays hidden; the keeper renews it every [`PARKED_RENEWAL`] while it
/// waits, so after a crash it is back within this time.
const PARKED_VISIBILITY: Duration = Duration::from_secs(30);
/// How often the visibility of parked messages is renewed.
const PARKED_RENEWAL: Duration = Duration::from_secs(10);
/// How many parked messages one renewal call hides again (one writer operation on SQLite).
const RENEWAL_CHUNK: usize = 500;

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
    /// Takes up to `wanted` places in `key`'s lane; how many it got.
    fn enter(&self, key: &str, wanted: usize) -> usize {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let lane = lanes.entry(key.to_string()).or_default();
        let places = wanted.min(PER_SUBSCRIPTION_CONCURRENCY.saturating_sub(lane.running));
        lane.running += places;
        places
    }

    /// Parks `msgs` in `key`'s lane, except as many as places came free meanwhile: those are
    /// handed back with their places.
    fn park(&self, key: &str, mut msgs: Vec<ReceivedMessage>) -> Vec<ReceivedMessage> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let lane = lanes.entry(key.to_string()).or_default();
        let places = msgs
            .len()
            .min(PER_SUBSCRIPTION_CONCURRENCY.saturating_sub(lane.running));
        lane.running += places;
        let parked = msgs.split_off(places);
        lane.parked.extend(parked);
        msgs
    }

    /// Whether no lane has a batch running (and so none has messages parked).
    fn is_empty(&self) -> bool {
        self.lanes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// The receipts of every parked message.
    fn parked_receipts(&self) -> Vec<String> {
        let lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        lanes
            .values()
            .flat_map(|lane| lane.parked.iter().map(|m| m.receipt.clone()))
            .collect()
    }

    /// After a batch that held `held` places: up to that many parked messages, keeping their
    /// places; the places not refilled are given back (and the lane left once it is empty).
    fn next_batch(&self, key: &str, held: usize) -> Vec<ReceivedMessage> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(lane) = lanes.get_mut(key) else {
            return Vec::new();
        };
        let take = held.min(lane.parked.len());
        let batch: Vec<ReceivedMessage> = lane.parked.drain(..take).collect();
        lane.running -= held - take;
        if lane.running == 0 {
            lanes.remove(key);
        }
        batch
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

/// Removes the messages that are done, in one call; one that is not comes back after its
/// visibility timeout.
async fn acknowledge(queue: &Arc<dyn Queue>, msgs: &[ReceivedMessage], done: &[bool]) {
    let receipts: Vec<String> = msgs
        .iter()
        .zip(done)
        .filter(|(_, done)| **done)
        .map(|(msg, _)| msg.receipt.clone())
        .collect();
    if receipts.is_empty() {
        return;
    }
    // A queue that pushes back (SQS throttling or unavailable beyond the SDK's own retries) is
    // asked again after a pause: an acknowledgement lost is a delivery made twice.
    for pause in ACK_PAUSES.iter().map(Some).chain([None]) {
        match queue.ack_all(&receipts).await {
            Ok(()) => return,
            Err(err) => match pause {
                Some(pause) if err.is_transient() => tokio::time::sleep(*pause).await,
                _ => {
                    tracing::warn!(error = %err, messages = receipts.len(), "ack failed; the messages will come back");
                    return;
                }
            },
        }
    }
}

/// The pauses before asking a queue again to acknowledge messages.
const ACK_PAUSES: [Duration; 2] = [Duration::from_millis(200), Duration::from_secs(1)];

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
    let work = LaneWork {
        hub: hub.clone(),
        queue: queue.clone(),
        role,
        lanes: lanes.clone(),
        slots: slots.clone(),
    };
    let keeper = tokio::spawn(keep_parked_hidden(
        queue.clone(),
        lanes.clone(),
        shutdown.clone(),
    ));
    while !*shutdown.borrow() {
        let most = if matches!(role, QueueRole::Deliveries | QueueRole::Ordered) {
            POLL_BATCH
        } else {
            FANOUT_POLL_BATCH
        };
        let free = slots.available_permits().clamp(1, most);
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
                acknowledge(&queue, &messages, &done).await;
                drop(permits);
            });
            continue;
        }
        // The poll's messages by lane, in the order received: each lane's start as one batch
        // as far as it has places, the rest parked, hidden while they wait (one call for the
        // poll's parked messages; this does not count as a receive).
        let mut by_lane: Vec<(String, Vec<ReceivedMessage>)> = Vec::new();
        for msg in messages {
            let key = lane_key(&msg.body);
            match by_lane.iter_mut().find(|(k, _)| *k == key) {
                Some((_, msgs)) => msgs.push(msg),
                None => by_lane.push((key, vec![msg])),
            }
        }
        let mut to_park = Vec::new();
        for (key, mut msgs) in by_lane {
            let places = lanes.enter(&key, msgs.len());
            let waiting = msgs.split_off(places);
            while !msgs.is_empty() {
                let rest = msgs.split_off(msgs.len().min(LANE_BATCH));
                run_lane(&work, key.clone(), msgs).await;
                msgs = rest;
            }
            if !waiting.is_empty() {
                to_park.push((key, waiting));
            }
        }
        if !to_park.is_empty() {
            let receipts: Vec<String> = to_park
                .iter()
                .flat_map(|(_, msgs)| msgs.iter().map(|m| m.receipt.clone()))
                .collect();
            let _ = queue.hold_all(&receipts, PARKED_VISIBILITY).await;
            for (key, msgs) in to_park {
                let freed = lanes.park(&key, msgs);
                if !freed.is_empty() {
                    // Places came free meanwhile.
                    run_lane(&work, key, freed).await;
                }
            }
        }
    }
    // Finish what is in flight, parked messages included: a lane is left once its last batch
    // found nothing parked, and every batch holds slots until its messages are settled.
    loop {
        drop(slots.acquire_many(concurrency as u32).await);
        if lanes.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    keeper.abort();
}

/// What the batches of every lane share.
#[derive(Clone)]
struct LaneWork {
    hub: Hub,
    queue: Arc<dyn Queue>,
    role: QueueRole,
    lanes: Arc<Lanes>,
    /// The poller's slots: one per message from its batch's start until it is settled.
    slots: Arc<Semaphore>,
}

/// Starts a batch of `key`'s lane with `first` (messages holding places in it), once the
/// poller has a slot for each: the poller waits here when it has none.
async fn run_lane(work: &LaneWork, key: String, first: Vec<ReceivedMessage>) {
    let permit = work
        .slots
        .clone()
        .acquire_many_owned(first.len() as u32)
        .await
        .expect("semaphore open");
    spawn_batch(work.clone(), key, first, permit);
}

/// Runs one batch of `key`'s lane. When its attempts are over, its places take as many parked
/// messages as there are, a next batch that runs beside this one's log write and settling (with
/// slots of its own), and the places not refilled are given back; this batch keeps its slots
/// until its messages are settled.
fn spawn_batch(
    work: LaneWork,
    key: String,
    batch: Vec<ReceivedMessage>,
    permit: OwnedSemaphorePermit,
) {
    tokio::spawn(async move {
        let held = batch.len();
        let hand_over = || {
            let next = work.lanes.next_batch(&key, held);
            if !next.is_empty() {
                let (work, key) = (work.clone(), key.clone());
                tokio::spawn(async move { run_lane(&work, key, next).await });
            }
        };
        let done = consume_batch_then(&work.hub, work.role, &batch, hand_over).await;
        acknowledge(&work.queue, &batch, &done).await;
        drop(permit);
    });
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
        for receipts in lanes.parked_receipts().chunks(RENEWAL_CHUNK) {
            let _ = queue.hold_all(receipts, PARKED_VISIBILITY).await;
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
    if !Arc::ptr_eq(&hub.ordered, &hub.deliveries) {
        // A queue of its own (AWS's FIFO queue): the embedded queues keep groups themselves.
        workers.push(tokio::spawn(poll(
            hub.clone(),
            QueueRole::Ordered,
            DELIVERY_CONCURRENCY,
            shutdown.clone(),
        )));
    }
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
