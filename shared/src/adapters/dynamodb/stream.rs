//! The delivery log's DynamoDB stream, as Lambda hands it to the `fold` function: its
//! attempt inserts read back into [`LoggedAttempt`]s for the odometer's fold.

use super::keys::ATTEMPT_SK_PREFIX;
use crate::model::AttemptRecord;
use crate::service::odometer::LoggedAttempt;

/// The delivery-log inserts of a DynamoDB stream event (as Lambda hands it over), in order:
/// other records (subscriptions, indexes, kept deliveries; modifications and removals) are
/// skipped, and so is an item whose `doc` does not read as an attempt (logged, not fatal: a
/// record that can never be read must not hold back the stream).
pub fn logged_attempts(event: &serde_json::Value) -> Vec<LoggedAttempt> {
    let records = event
        .get("Records")
        .and_then(serde_json::Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut logged = Vec::new();
    for record in records {
        if record.get("eventName").and_then(serde_json::Value::as_str) != Some("INSERT") {
            continue;
        }
        let Some(change) = record.get("dynamodb") else {
            continue;
        };
        let is_attempt = change
            .pointer("/Keys/sk/S")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|sk| sk.starts_with(ATTEMPT_SK_PREFIX));
        if !is_attempt {
            continue;
        }
        let sequence = change
            .get("SequenceNumber")
            .and_then(serde_json::Value::as_str)
            .and_then(|s| s.parse::<u128>().ok());
        let doc = change
            .pointer("/NewImage/doc/S")
            .and_then(serde_json::Value::as_str);
        match (sequence, doc.map(serde_json::from_str::<AttemptRecord>)) {
            (Some(sequence), Some(Ok(record))) => logged.push(LoggedAttempt { sequence, record }),
            (sequence, doc) => {
                tracing::error!(
                    ?sequence,
                    readable = matches!(doc, Some(Ok(_))),
                    "a delivery-log stream record the fold cannot read: skipped"
                );
            }
        }
    }
    logged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_readable_attempt_inserts_are_folded() {
        let record = AttemptRecord {
            subscription_id: "sub_a".into(),
            message_id: "evt_1".into(),
            attempt: 1,
            started_at_ms: 10,
            latency_ms: 3,
            status_code: Some(200),
            error: None,
            delivered: true,
            next_attempt_at_ms: None,
            counted: true,
        };
        let doc = serde_json::to_string(&record).unwrap();
        let event = serde_json::json!({"Records": [
            {"eventName": "INSERT", "dynamodb": {"Keys": {"pk": {"S": "SUB#sub_a"}, "sk": {"S": "ATT#000000000000010#00"}},
                "NewImage": {"doc": {"S": doc}}, "SequenceNumber": "300000000000000000001"}},
            {"eventName": "MODIFY", "dynamodb": {"Keys": {"sk": {"S": "SUB"}}, "SequenceNumber": "300000000000000000002"}},
            {"eventName": "INSERT", "dynamodb": {"Keys": {"sk": {"S": "KEPT#evt_1"}}, "NewImage": {"doc": {"S": "{}"}}, "SequenceNumber": "300000000000000000003"}},
            {"eventName": "INSERT", "dynamodb": {"Keys": {"sk": {"S": "ATT#x"}}, "NewImage": {"doc": {"S": "{"}}, "SequenceNumber": "300000000000000000004"}},
        ]});
        let logged = logged_attempts(&event);
        assert_eq!(
            logged,
            vec![LoggedAttempt {
                sequence: 300000000000000000001,
                record
            }]
        );
        assert!(logged_attempts(&serde_json::json!({})).is_empty());
    }
}
