//! The delivery log's DynamoDB stream, as Lambda hands it to the `fold` function: its
//! attempt inserts read back into [`LoggedAttempt`]s for the odometer's fold.

use super::keys::ATTEMPT_SK_PREFIX;
use crate::model::AttemptRecord;
use crate::service::odometer::LoggedAttempt;

/// The delivery-log inserts of a DynamoDB stream event (as Lambda hands it over), in order:
/// other records (subscriptions, indexes, kept deliveries; modifications and removals) are
/// skipped, and so is an item whose `doc` (one attempt) or `docs` (a batch's) does not read (logged, not fatal: a
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
        let image = change.get("NewImage");
        let text = |name: &str| {
            image
                .and_then(|i| i.get(name))
                .and_then(|v| v.get("S"))
                .and_then(serde_json::Value::as_str)
        };
        // One attempt (`doc`) or a batch's (`docs`), as `record_attempts` writes them.
        let records = match (text("doc"), text("docs")) {
            (Some(doc), _) => serde_json::from_str::<AttemptRecord>(doc).map(|r| vec![r]),
            (None, Some(docs)) => serde_json::from_str::<Vec<AttemptRecord>>(docs),
            (None, None) => serde_json::from_str::<Vec<AttemptRecord>>(""),
        };
        match (sequence, records) {
            (Some(sequence), Ok(records)) => logged.extend(
                records
                    .into_iter()
                    .map(|record| LoggedAttempt { sequence, record }),
            ),
            (sequence, records) => {
                tracing::error!(
                    ?sequence,
                    readable = records.is_ok(),
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
            {"eventName": "INSERT", "dynamodb": {"Keys": {"sk": {"S": "ATT#000000000000011#01"}},
                "NewImage": {"docs": {"S": serde_json::to_string(&[&record, &record]).unwrap()}}, "SequenceNumber": "300000000000000000005"}},
        ]});
        let logged = logged_attempts(&event);
        let at = |sequence| LoggedAttempt {
            sequence,
            record: record.clone(),
        };
        assert_eq!(
            logged,
            vec![
                at(300000000000000000001),
                at(300000000000000000005),
                at(300000000000000000005)
            ]
        );
        assert!(logged_attempts(&serde_json::json!({})).is_empty());
    }
}
