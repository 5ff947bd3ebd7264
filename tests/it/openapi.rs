//! `openapi.yaml` describes every route the router serves, and no route it does not serve.
//! (The test command also runs schemathesis against `webhook-hub serve` with it.)

use std::collections::BTreeSet;

/// `(METHOD, path)` of every operation under `paths:` in the OpenAPI document.
fn documented() -> BTreeSet<(String, String)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml")).unwrap();
    let mut ops = BTreeSet::new();
    let mut in_paths = false;
    let mut path = String::new();
    for line in text.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /") {
            path = format!("/{}", p.trim_end_matches(':'));
        } else if let Some(m) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':'))
            && ["get", "put", "post", "patch", "delete", "head", "options"].contains(&m)
        {
            ops.insert((m.to_ascii_uppercase(), path.clone()));
        }
    }
    ops
}

#[test]
fn every_route_is_described_and_nothing_else() {
    let served: BTreeSet<(String, String)> = hub::api::ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let documented = documented();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.yaml: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "openapi.yaml describes routes the router does not serve: {unserved:?}"
    );
    assert_eq!(served.len(), 25);
}

#[test]
fn every_lambda_function_serves_only_its_routes() {
    let mut covered = Vec::new();
    for function in hub::api::ApiFunction::ALL {
        covered.extend_from_slice(function.operations());
    }
    covered.sort_by_key(|op| format!("{op:?}"));
    let mut all = hub::api::Operation::ALL.to_vec();
    all.sort_by_key(|op| format!("{op:?}"));
    assert_eq!(
        covered, all,
        "each operation is served by exactly one API function"
    );
}

/// The document as JSON.
fn document() -> serde_json::Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml")).unwrap();
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("openapi.yaml parses");
    serde_json::to_value(yaml).unwrap()
}

/// A schema's required fields and properties, following `$ref` and merging `allOf`.
fn fields(
    doc: &serde_json::Value,
    schema: &serde_json::Value,
) -> (BTreeSet<String>, BTreeSet<String>) {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return fields(doc, &doc["components"]["schemas"][name]);
    }
    let (mut required, mut properties) = (BTreeSet::new(), BTreeSet::new());
    for part in schema["allOf"].as_array().into_iter().flatten() {
        let (r, p) = fields(doc, part);
        required.extend(r);
        properties.extend(p);
    }
    required.extend(
        schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| f.as_str().unwrap().to_string()),
    );
    properties.extend(
        schema["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k.clone()),
    );
    (required, properties)
}

/// Every field a response type writes is documented, and every documented required field is
/// written.
fn conforms(
    doc: &serde_json::Value,
    schema: &serde_json::Value,
    body: &serde_json::Value,
    what: &str,
) {
    let (required, properties) = fields(doc, schema);
    let written: BTreeSet<String> = body.as_object().unwrap().keys().cloned().collect();
    let missing: Vec<_> = required.difference(&written).collect();
    let undocumented: Vec<_> = written.difference(&properties).collect();
    assert!(
        missing.is_empty(),
        "{what}: required but not written: {missing:?}"
    );
    assert!(
        undocumented.is_empty(),
        "{what}: written but not documented: {undocumented:?}"
    );
}

#[test]
fn response_types_match_the_document() {
    use hub::api::resources::*;
    use hub::model::{AttemptRecord, ReceiverAuth, Subscription};
    let doc = document();
    let schema = |name: &str| doc["components"]["schemas"][name].clone();
    let mut sub = Subscription::new_pending(
        "sub_1".into(),
        "acme".into(),
        "acme:1".into(),
        "https://example.com/hook".into(),
        1_800_000_000_000,
        hub::keyring::Sealed::plain("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    );
    sub.receiver_auth = Some(ReceiverAuth::Bearer {
        token: hub::keyring::Sealed::plain("t"),
    });
    let out = SubscriptionOut::from(&sub);
    conforms(
        &doc,
        &schema("Subscription"),
        &to_json(&out),
        "Subscription",
    );
    let created = CreatedSubscriptionOut {
        subscription: out.clone(),
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
    };
    conforms(
        &doc,
        &schema("CreatedSubscription"),
        &to_json(&created),
        "CreatedSubscription",
    );
    let page = SubscriptionPageOut {
        data: vec![out],
        next_cursor: None,
    };
    conforms(
        &doc,
        &schema("SubscriptionPage"),
        &to_json(&page),
        "SubscriptionPage",
    );
    conforms(
        &doc,
        &schema("Secret"),
        &to_json(&SecretOut { secret: "s".into() }),
        "Secret",
    );
    let attempt = AttemptOut::from(&AttemptRecord {
        subscription_id: "sub_1".into(),
        message_id: "evt_1".into(),
        attempt: 1,
        started_at_ms: 1_800_000_000_000,
        latency_ms: 3,
        status_code: None,
        error: Some(hub::model::AttemptError::Timeout),
        delivered: false,
        next_attempt_at_ms: Some(1_800_000_005_000),
        counted: true,
    });
    conforms(&doc, &schema("Attempt"), &to_json(&attempt), "Attempt");
    let test_event = TestEventOut {
        event_id: "evt_1".into(),
        topic: "hub.test",
    };
    conforms(
        &doc,
        &schema("TestEventSent"),
        &to_json(&test_event),
        "TestEventSent",
    );
    let portal = PortalSessionOut {
        url: "http://127.0.0.1:3000/portal#session=whpt_x.y".into(),
        token: "whpt_x.y".into(),
        owner: "alice".into(),
        topics: vec![hub::topic::Pattern::parse("door.*").unwrap()],
        access: hub::service::portal::PortalAccess::Write,
        secrecy_floor: 2,
        expires_at: "2026-11-28T10:00:00.000Z".into(),
    };
    conforms(
        &doc,
        &schema("PortalSession"),
        &to_json(&portal),
        "PortalSession",
    );
    let response = |path: &str, method: &str, status: &str| {
        doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
            .clone()
    };
    let log = AttemptPageOut {
        data: vec![attempt],
    };
    conforms(
        &doc,
        &response("/v1/subscriptions/{id}/deliveries", "get", "200"),
        &to_json(&log),
        "deliveries",
    );
    let published = PublishedOut {
        id: "evt_1".into(),
        topic: hub::topic::Topic::parse("door.opened").unwrap(),
        duplicate: false,
        schema_violations: vec![violation()],
    };
    conforms(
        &doc,
        &response("/v1/events", "post", "202"),
        &to_json(&published),
        "publish",
    );
    let batch = PublishBatchOut {
        data: vec![
            PublishItemOut::Accepted {
                index: 0,
                status: 202,
                id: "evt_1".into(),
                topic: hub::topic::Topic::parse("door.opened").unwrap(),
                duplicate: false,
                schema_violations: vec![],
            },
            PublishItemOut::Refused {
                index: 1,
                status: 400,
                code: hub::ErrorCode::SchemaViolation,
                message: "bad".into(),
                violations: vec![violation()],
            },
        ],
        accepted: 1,
        failed: 1,
    };
    for status in ["200", "207"] {
        conforms(
            &doc,
            &schema("PublishBatch"),
            &to_json(&batch),
            "batch publish",
        );
        assert_eq!(
            response("/v1/events", "post", status)["$ref"],
            "#/components/schemas/PublishBatch"
        );
    }
    let items =
        &doc["components"]["schemas"]["PublishBatch"]["properties"]["data"]["items"]["oneOf"];
    for (item, variant) in to_json(&batch)["data"].as_array().unwrap().iter().zip(0..) {
        conforms(&doc, &items[variant], item, "batch item");
    }
    conforms(
        &doc,
        &response("/v1/subscriptions", "delete", "200"),
        &to_json(&DeletedOut { deleted: 2 }),
        "bulk delete",
    );
    conforms(
        &doc,
        &response(
            "/v1/subscriptions/{id}/deliveries/{event_id}/resend",
            "post",
            "202",
        ),
        &to_json(&ResentOut {
            event_id: "evt_1".into(),
        }),
        "resend",
    );
    conforms(
        &doc,
        &response("/v1/subscriptions/{id}/recover", "post", "202"),
        &to_json(&RecoveredOut {
            requeued: 3,
            more: false,
            next_cursor: None,
        }),
        "recover",
    );
    conforms(
        &doc,
        &response("/v1/subscriptions/{id}/recover", "post", "202"),
        &to_json(&RecoveredOut {
            requeued: 1000,
            more: true,
            next_cursor: Some("evt_0190000000000000000000000000".into()),
        }),
        "recover all",
    );
    let event_type = EventTypeOut::from(&hub::catalog::EventType {
        topic: hub::topic::Topic::parse("order.paid").unwrap(),
        description: "paid".into(),
        schema: Some(serde_json::json!({"type": "object"})),
        examples: vec![serde_json::json!({"amount": 1})],
        deprecated: true,
        archived: false,
        created_ms: 1_764_000_000_000,
        updated_ms: 1_764_000_000_000,
    });
    conforms(
        &doc,
        &schema("EventType"),
        &to_json(&event_type),
        "EventType",
    );
    conforms(
        &doc,
        &schema("EventTypeList"),
        &to_json(&EventTypePageOut {
            data: vec![event_type],
            next_cursor: None,
        }),
        "EventTypeList",
    );
    conforms(
        &doc,
        &schema("Settings"),
        &to_json(&hub::catalog::CatalogSettings::default()),
        "Settings",
    );
    let kept = hub::model::KeptEvent {
        event: hub::model::Event {
            owner: Some("alice".into()),
            sensitive: [("/data/pin".to_string(), 2)].into(),
            ..hub::model::Event::new(
                "evt_0190000000000000000000000000".into(),
                "acme",
                hub::topic::Topic::parse("door.opened").unwrap(),
                1_764_000_000_000,
                serde_json::json!({"door": 7}),
            )
        },
        subscriptions: vec!["sub_1".into()],
        fanned_out: 1,
        until_ms: 1_764_600_000_000,
    };
    let page = EventPageOut {
        data: vec![EventOut::from(&kept)],
        next_cursor: Some("evt_0190000000000000000000000000".into()),
    };
    conforms(
        &doc,
        &response("/v1/events", "get", "200"),
        &to_json(&page),
        "event history",
    );
    let view = hub::service::history::EventView {
        kept,
        deliveries: vec![hub::service::history::DeliveryView {
            subscription_id: "sub_1".into(),
            status: hub::service::history::DeliveryStatus::Delivered,
            attempts: vec![],
            body: serde_json::json!({"id": "evt_0190000000000000000000000000"}),
        }],
        more_deliveries: false,
    };
    conforms(
        &doc,
        &response("/v1/events/{event_id}", "get", "200"),
        &to_json(&EventDetailOut::from(&view)),
        "one event",
    );
}

fn violation() -> hub::catalog::Violation {
    hub::catalog::Violation {
        pointer: "/data/amount".into(),
        reason: "-1 is less than the minimum of 0".into(),
    }
}
