//! The table's DynamoDB stream on moto, read the way Lambda's event source reads it and handed
//! over in Lambda's event shape: what the `fold` function receives in a deployment.

use aws_sdk_dynamodbstreams::types::{AttributeValue, ShardIteratorType};
use serde_json::{Value, json};

/// A reader of one table's stream from its beginning (trim horizon), like an event source
/// mapping with `StartingPosition: TRIM_HORIZON`.
pub struct StreamTap {
    client: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    /// The next iterator of each shard read so far, by shard id.
    iterators: Vec<(String, Option<String>)>,
}

impl StreamTap {
    /// Opens the stream of `table` (created with one, as `ensure_table` does).
    pub async fn open(table: &str) -> StreamTap {
        let config = aws_config::load_from_env().await;
        let dynamo = aws_sdk_dynamodb::Client::new(&config);
        let described = dynamo
            .describe_table()
            .table_name(table)
            .send()
            .await
            .expect("describe the table");
        let stream_arn = described
            .table
            .and_then(|t| t.latest_stream_arn)
            .expect("the table has a stream");
        StreamTap {
            client: aws_sdk_dynamodbstreams::Client::new(&config),
            stream_arn,
            iterators: Vec::new(),
        }
    }

    /// Every record written since the last call (all shards), in Lambda's DynamoDB event
    /// records' shape, in stream order per shard.
    pub async fn records(&mut self) -> Vec<Value> {
        let shards = self
            .client
            .describe_stream()
            .stream_arn(&self.stream_arn)
            .send()
            .await
            .expect("describe the stream")
            .stream_description
            .and_then(|d| d.shards)
            .unwrap_or_default();
        for shard in shards {
            let id = shard.shard_id.unwrap_or_default();
            if self.iterators.iter().any(|(known, _)| *known == id) {
                continue;
            }
            let iterator = self
                .client
                .get_shard_iterator()
                .stream_arn(&self.stream_arn)
                .shard_id(&id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .expect("a shard iterator")
                .shard_iterator;
            self.iterators.push((id, iterator));
        }
        let mut out = Vec::new();
        for (_, iterator) in self.iterators.iter_mut() {
            while let Some(current) = iterator.clone() {
                let page = self
                    .client
                    .get_records()
                    .shard_iterator(current)
                    .send()
                    .await
                    .expect("stream records");
                let records = page.records.unwrap_or_default();
                let empty = records.is_empty();
                out.extend(
                    records
                        .into_iter()
                        .map(|r| lambda_record(&self.stream_arn, r)),
                );
                *iterator = page.next_shard_iterator;
                if empty {
                    break;
                }
            }
        }
        out
    }
}

/// One stream record as Lambda's DynamoDB event carries it.
fn lambda_record(stream_arn: &str, record: aws_sdk_dynamodbstreams::types::Record) -> Value {
    let change = record
        .dynamodb
        .unwrap_or_else(|| aws_sdk_dynamodbstreams::types::StreamRecord::builder().build());
    let image = |item: Option<&std::collections::HashMap<String, AttributeValue>>| {
        item.map(|item| {
            item.iter()
                .map(|(name, value)| (name.clone(), attribute_json(value)))
                .collect::<serde_json::Map<_, _>>()
        })
    };
    json!({
        "eventID": record.event_id,
        "eventName": record.event_name.map(|n| n.as_str().to_string()),
        "eventSource": "aws:dynamodb",
        "eventSourceARN": stream_arn,
        "awsRegion": record.aws_region,
        "dynamodb": {
            "Keys": image(change.keys.as_ref()),
            "NewImage": image(change.new_image.as_ref()),
            "SequenceNumber": change.sequence_number,
            "SizeBytes": change.size_bytes,
            "StreamViewType": change.stream_view_type.map(|v| v.as_str().to_string()),
        }
    })
}

/// An attribute value in DynamoDB's JSON form (`{"S": …}`, `{"N": …}`, …).
fn attribute_json(value: &AttributeValue) -> Value {
    use base64::Engine;
    match value {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        AttributeValue::Null(_) => json!({"NULL": true}),
        AttributeValue::B(b) => {
            json!({"B": base64::engine::general_purpose::STANDARD.encode(b.as_ref())})
        }
        AttributeValue::Ss(v) => json!({"SS": v}),
        AttributeValue::Ns(v) => json!({"NS": v}),
        AttributeValue::L(v) => json!({"L": v.iter().map(attribute_json).collect::<Vec<_>>()}),
        AttributeValue::M(m) => {
            json!({"M": m.iter().map(|(k, v)| (k.clone(), attribute_json(v))).collect::<serde_json::Map<_, _>>()})
        }
        other => json!({"UNKNOWN": format!("{other:?}")}),
    }
}
