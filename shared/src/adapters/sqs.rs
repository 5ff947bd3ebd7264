//! The SQS adapter of the [`Queue`] port: batched sends (10 entries, ≤ 256 KiB), long-poll
//! receives with the receive count, acknowledgements and visibility-based retries. Queues are
//! named or given by URL; `ensure` creates a queue with its dead-letter queue and redrive.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};

use super::aws_error;
use crate::error::{HubError, Result};
use crate::ports::{MAX_HIDE, OutgoingMessage, Queue, QueueStats, ReceivedMessage};

/// The message attribute a producer sets to continue its trace through an ingest queue.
pub const TRACEPARENT_ATTRIBUTE: &str = "traceparent";

/// A message's trace context: its `traceparent` attribute, else the `AWSTraceHeader` SQS
/// keeps for X-Ray (both as SQS and Lambda's event source hand them over).
pub fn message_trace(
    traceparent: Option<&str>,
    aws_trace_header: Option<&str>,
) -> Option<crate::trace::TraceParent> {
    traceparent
        .and_then(crate::trace::TraceParent::parse)
        .or_else(|| aws_trace_header.and_then(crate::trace::TraceParent::from_xray))
}

/// Largest batch SQS takes in one `SendMessageBatch`.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// How `send` packs messages into `SendMessageBatch` calls: at most 10 entries and 256 KiB each.
pub fn batches(messages: &[OutgoingMessage]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    while start < messages.len() {
        let (mut end, mut bytes) = (start, 0);
        while end < messages.len()
            && end - start < 10
            && (end == start || bytes + messages[end].body.len() <= MAX_BATCH_BYTES)
        {
            bytes += messages[end].body.len();
            end += 1;
        }
        ranges.push(start..end);
        start = end;
    }
    ranges
}

/// One SQS queue.
#[derive(Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
    /// Its dead-letter queue's URL, found from its redrive policy the first time one is needed
    /// (no call at cold start).
    dead_letter_url: std::sync::Arc<tokio::sync::OnceCell<String>>,
}

impl SqsQueue {
    /// The queue named (or addressed by URL) `name_or_url`.
    pub async fn open(client: Client, name_or_url: &str) -> Result<Self> {
        let url = if name_or_url.starts_with("http://") || name_or_url.starts_with("https://") {
            name_or_url.to_string()
        } else {
            client
                .get_queue_url()
                .queue_name(name_or_url)
                .send()
                .await
                .map_err(aws_error)?
                .queue_url()
                .unwrap_or_default()
                .to_string()
        };
        Ok(SqsQueue::at(client, url))
    }

    fn at(client: Client, url: String) -> Self {
        SqsQueue {
            client,
            url,
            dead_letter_url: Default::default(),
        }
    }

    /// Whether it is a FIFO queue (its name ends in `.fifo`): a message's group is its
    /// `MessageGroupId`, and no message has a delay of its own.
    fn is_fifo(&self) -> bool {
        self.url.ends_with(".fifo")
    }

    /// The queue, dead-lettering to `other`'s dead-letter queue: the ordered (FIFO) deliveries
    /// queue has no redrive of its own (an ordered message keeps its place whatever its receive
    /// count) and dead-letters what is exhausted with the other deliveries.
    pub fn dead_lettering_with(self, other: &SqsQueue) -> Self {
        SqsQueue {
            dead_letter_url: other.dead_letter_url.clone(),
            ..self
        }
    }

    /// Creates the FIFO queue `name` (ending in `.fifo`) if missing, as `template.yaml` does:
    /// no redrive, `visibility` as its visibility timeout.
    pub async fn ensure_fifo(client: Client, name: &str, visibility: Duration) -> Result<Self> {
        let url = client
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                visibility.as_secs().to_string(),
            )
            .send()
            .await
            .map_err(aws_error)?
            .queue_url
            .unwrap_or_default();
        Ok(SqsQueue::at(client, url))
    }

    /// The dead-letter queue named by this queue's redrive policy.
    async fn dead_letter_url(&self) -> Result<&str> {
        self.dead_letter_url
            .get_or_try_init(|| async {
                let policy = self
                    .client
                    .get_queue_attributes()
                    .queue_url(&self.url)
                    .attribute_names(QueueAttributeName::RedrivePolicy)
                    .send()
                    .await
                    .map_err(aws_error)?
                    .attributes
                    .and_then(|mut a| a.remove(&QueueAttributeName::RedrivePolicy))
                    .ok_or_else(|| HubError::backend("the queue has no redrive policy"))?;
                let arn = serde_json::from_str::<serde_json::Value>(&policy)
                    .ok()
                    .and_then(|p| p["deadLetterTargetArn"].as_str().map(str::to_string))
                    .ok_or_else(|| HubError::backend("unreadable redrive policy"))?;
                // arn:aws:sqs:<region>:<account>:<name>
                let mut parts = arn.rsplit(':');
                let (name, owner) = (parts.next().unwrap_or_default(), parts.next());
                let url = self
                    .client
                    .get_queue_url()
                    .queue_name(name)
                    .set_queue_owner_aws_account_id(owner.map(str::to_string))
                    .send()
                    .await
                    .map_err(aws_error)?
                    .queue_url
                    .unwrap_or_default();
                Ok::<_, HubError>(url)
            })
            .await
            .map(String::as_str)
    }

    /// Its dead-letter queue (named by its redrive policy), for the operator's
    /// `webhook-hub dead-letters`.
    pub async fn dead_letter_queue(&self) -> Result<SqsQueue> {
        let url = self.dead_letter_url().await?.to_string();
        Ok(SqsQueue::at(self.client.clone(), url))
    }

    /// Creates the queue `name` (if missing) with a dead-letter queue `{name}-dlq` that takes a
    /// message after `max_receives` receives, as `template.yaml` does.
    pub async fn ensure(
        client: Client,
        name: &str,
        visibility: Duration,
        max_receives: u32,
    ) -> Result<Self> {
        let dlq_url = client
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
            .send()
            .await
            .map_err(aws_error)?
            .queue_url
            .unwrap_or_default();
        let dlq_arn = client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(aws_error)?
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .unwrap_or_default();
        let redrive =
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives})
                .to_string();
        let url = client
            .create_queue()
            .queue_name(name)
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                visibility.as_secs().to_string(),
            )
            .attributes(QueueAttributeName::RedrivePolicy, redrive)
            .send()
            .await
            .map_err(aws_error)?
            .queue_url
            .unwrap_or_default();
        let queue = SqsQueue::at(client, url);
        let _ = queue.dead_letter_url.set(dlq_url);
        Ok(queue)
    }

    /// The queue URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one batch; entries SQS failed on its side (a partial failure) are sent again, alone,
    /// with a growing pause, so the entries it took are never sent twice. An entry refused as
    /// the sender's fault is not retried.
    async fn send_batch(&self, batch: &[OutgoingMessage]) -> Result<()> {
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        let mut pass = 0;
        let fifo = self.is_fifo();
        // On a FIFO queue, a fresh deduplication id per message: the hub deduplicates itself,
        // and a resend within SQS's 5-minute window must not be dropped. Kept across the passes
        // of this call, so an entry SQS took but reported failed is not taken twice.
        let dedup: Vec<String> = batch
            .iter()
            .map(|_| format!("{:032x}", rand::random::<u128>()))
            .collect();
        loop {
            let entries = pending
                .iter()
                .map(|&i| {
                    let m = &batch[i];
                    let entry = SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(&m.body);
                    let entry = if fifo {
                        entry
                            .message_group_id(m.group.as_deref().unwrap_or("hub"))
                            .message_deduplication_id(&dedup[i])
                    } else {
                        entry.delay_seconds(
                            (m.delay.as_millis().div_ceil(1000) as u64).min(900) as i32
                        )
                    };
                    entry.build().map_err(HubError::backend)
                })
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|err| {
                    // The input itself refused (too long, invalid content) is not worth retrying.
                    use aws_sdk_sqs::error::ProvideErrorMetadata;
                    let refused = err
                        .as_service_error()
                        .and_then(|e| e.code())
                        .is_some_and(|c| {
                            [
                                "BatchRequestTooLong",
                                "InvalidMessageContents",
                                "AWS.SimpleQueueService.BatchRequestTooLong",
                                "AWS.SimpleQueueService.InvalidMessageContents",
                            ]
                            .contains(&c)
                        });
                    if refused {
                        HubError::Rejected("the message was refused by the queue".into())
                    } else {
                        aws_error(err)
                    }
                })?;
            let Some(failed) = out.failed().first() else {
                return Ok(());
            };
            let detail = format!(
                "SQS refused {} of {} messages: {}",
                out.failed().len(),
                pending.len(),
                failed.message().unwrap_or(failed.code())
            );
            if out.failed().iter().any(|f| f.sender_fault()) {
                tracing::warn!(error = %detail, "queue refused the input");
                return Err(HubError::Rejected(
                    "the message was refused by the queue".into(),
                ));
            }
            pass += 1;
            if pass == PARTIAL_FAILURE_TRIES {
                return Err(HubError::backend(detail));
            }
            tracing::warn!(error = %detail, "sending again only the messages SQS failed");
            pending = out
                .failed()
                .iter()
                .filter_map(|f| f.id().parse().ok())
                .filter(|i: &usize| *i < batch.len())
                .collect();
            tokio::time::sleep(partial_failure_pause(pass - 1)).await;
        }
    }
}

/// How many times a batch call is made for the entries SQS failed on its side.
const PARTIAL_FAILURE_TRIES: u32 = 4;

/// The pause before sending failed entries again after `pass`: 50 ms, 200 ms, 800 ms, with
/// full jitter (the entries failed on SQS's side, often under load).
fn partial_failure_pause(pass: u32) -> Duration {
    let ceiling = 50u64 << (2 * pass.min(5));
    Duration::from_millis(rand::random_range(ceiling / 2..=ceiling))
}

#[async_trait]
impl Queue for SqsQueue {
    /// The approximate counts SQS keeps (waiting, in flight, delayed); the age of the oldest
    /// message is a CloudWatch metric of the queue, not an attribute, so it is left out here.
    async fn stats(&self) -> Result<Option<QueueStats>> {
        let names = [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            QueueAttributeName::ApproximateNumberOfMessagesDelayed,
        ];
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(aws_error)?;
        let attributes = out.attributes.unwrap_or_default();
        let depth = names
            .iter()
            .filter_map(|n| attributes.get(n)?.parse::<u64>().ok())
            .sum();
        Ok(Some(QueueStats {
            depth,
            oldest_age: None,
        }))
    }

    async fn send(&self, messages: Vec<OutgoingMessage>) -> Result<()> {
        for range in batches(&messages) {
            self.send_batch(&messages[range]).await?;
        }
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SenderId)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::AwsTraceHeader)
            .message_attribute_names(TRACEPARENT_ATTRIBUTE)
            .send()
            .await
            .map_err(aws_error)?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| ReceivedMessage {
                receive_count: m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
                sender: m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::SenderId))
                    .cloned(),
                sent_at_ms: m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                    .and_then(|t| t.parse().ok()),
                trace: message_trace(
                    m.message_attributes
                        .as_ref()
                        .and_then(|a| a.get(TRACEPARENT_ATTRIBUTE))
                        .and_then(|v| v.string_value()),
                    m.attributes
                        .as_ref()
                        .and_then(|a| a.get(&MessageSystemAttributeName::AwsTraceHeader))
                        .map(String::as_str),
                ),
                id: m.message_id.unwrap_or_default(),
                receipt: m.receipt_handle.unwrap_or_default(),
                body: m.body.unwrap_or_default(),
            })
            .collect())
    }

    async fn ack(&self, receipt: &str) -> Result<()> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(aws_error)?;
        Ok(())
    }

    async fn postpone(&self, receipt: &str, delay: Duration) -> Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(delay.min(MAX_HIDE).as_millis().div_ceil(1000) as i32)
            .send()
            .await
            .map_err(aws_error)?;
        Ok(())
    }

    async fn ack_all(&self, receipts: &[String]) -> Result<()> {
        // DeleteMessageBatch takes ten entries a call; deletes SQS failed on its side are made
        // again, alone, as in a send.
        for chunk in receipts.chunks(10) {
            let mut pending: Vec<usize> = (0..chunk.len()).collect();
            let mut pass = 0;
            while !pending.is_empty() {
                let entries = pending
                    .iter()
                    .map(|&i| {
                        aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(&chunk[i])
                            .build()
                            .map_err(|e| HubError::backend(e.to_string()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let out = self
                    .client
                    .delete_message_batch()
                    .queue_url(&self.url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(aws_error)?;
                let Some(failed) = out.failed.first() else {
                    break;
                };
                let detail = format!(
                    "{} of {} deletes refused: {}",
                    out.failed.len(),
                    pending.len(),
                    failed.message.as_deref().unwrap_or(&failed.code)
                );
                pass += 1;
                if pass == PARTIAL_FAILURE_TRIES || out.failed.iter().any(|f| f.sender_fault) {
                    return Err(HubError::backend(detail));
                }
                pending = out
                    .failed
                    .iter()
                    .filter_map(|f| f.id.parse().ok())
                    .filter(|i: &usize| *i < chunk.len())
                    .collect();
                tokio::time::sleep(partial_failure_pause(pass - 1)).await;
            }
        }
        Ok(())
    }

    async fn postpone_each(&self, holds: &[(String, Duration)]) -> Result<()> {
        // SQS hides for whole seconds: the holds of the same second go ten to a call.
        let mut by_second: Vec<(u128, Vec<String>)> = Vec::new();
        for (receipt, delay) in holds {
            let second = (*delay).min(MAX_HIDE).as_millis().div_ceil(1000);
            match by_second.iter_mut().find(|(s, _)| *s == second) {
                Some((_, receipts)) => receipts.push(receipt.clone()),
                None => by_second.push((second, vec![receipt.clone()])),
            }
        }
        let mut outcome = Ok(());
        for (second, receipts) in by_second {
            let delay = Duration::from_secs(second as u64);
            if let Err(err) = self.postpone_all(&receipts, delay).await
                && outcome.is_ok()
            {
                outcome = Err(err);
            }
        }
        outcome
    }

    async fn postpone_all(&self, receipts: &[String], delay: Duration) -> Result<()> {
        let seconds = delay.min(MAX_HIDE).as_millis().div_ceil(1000) as i32;
        // ChangeMessageVisibilityBatch takes ten entries a call; a receipt that is no longer
        // valid fails alone (its entry), not the call.
        for chunk in receipts.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, receipt)| {
                    aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .visibility_timeout(seconds)
                        .build()
                        .map_err(|e| HubError::backend(e.to_string()))
                })
                .collect::<Result<Vec<_>>>()?;
            self.client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(aws_error)?;
        }
        Ok(())
    }

    async fn dead_letter(&self, body: String) -> Result<()> {
        let url = self.dead_letter_url().await?;
        self.client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .map_err(aws_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(sizes: &[usize]) -> Vec<OutgoingMessage> {
        sizes
            .iter()
            .map(|n| OutgoingMessage {
                body: "x".repeat(*n),
                delay: Duration::ZERO,
                group: None,
            })
            .collect()
    }

    #[test]
    fn batches_hold_ten_messages_and_256_kib() {
        // 25 small messages: 10 + 10 + 5.
        assert_eq!(batches(&messages(&[10; 25])), [0..10, 10..20, 20..25]);
        // 100 KiB each: two fit in 256 KiB, a third does not.
        assert_eq!(batches(&messages(&[100 * 1024; 5])), [0..2, 2..4, 4..5]);
        // One message of the largest size travels alone.
        assert_eq!(
            batches(&messages(&[10, 256 * 1024, 10])),
            [0..1, 1..2, 2..3]
        );
        assert!(batches(&[]).is_empty());
    }
}
