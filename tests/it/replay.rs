//! Every sample in `events/` replayed through its function's handler (as `sam local invoke -e`
//! would, without Docker), on the in-memory backend, with the answers asserted.

use std::path::PathBuf;

use aws_lambda_events::event::sqs::SqsEvent;
use hub::api::ApiFunction;
use hub::model::SubscriptionStatus;
use hub::runtime::config::JwtClaims;
use hub::runtime::consume::QueueRole;
use hub::runtime::lambda::{api_handler, fold_handler, sqs_handler, sweep_handler};
use hub::runtime::memory_hub;
use hub::{Hub, Settings};
use hub_tests::{SAMPLE_SUB, event_sample, sample_subscription};
use serde_json::Value;

fn hub() -> Hub {
    memory_hub(Settings::default()).0
}

/// Seeds the subscription the samples name (account `acme`, topic `door.request.allowed`).
async fn seed(hub: &Hub, status: SubscriptionStatus, callback_url: &str) {
    let sub = sample_subscription(hub.now_ms(), status, callback_url);
    hub.store.save(&sub, None).await.unwrap();
}

async fn replay_api(hub: &Hub, function: ApiFunction) -> (u16, Value) {
    let request = lambda_http::request::from_str(&event_sample(function.name()))
        .expect("sample parses as an API Gateway request");
    let response = api_handler(hub, function.operations(), &JwtClaims::default(), request).await;
    let status = response.status().as_u16();
    let body = match response.body() {
        lambda_http::Body::Text(text) => serde_json::from_str(text).unwrap(),
        _ => Value::Null,
    };
    (status, body)
}

#[tokio::test]
async fn subscribe_sample_creates_a_pending_subscription() {
    let (status, body) = replay_api(&hub(), ApiFunction::Subscribe).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "pending");
    assert_eq!(body["account"], "acme");
    assert!(body["secret"].as_str().unwrap().starts_with("whsec_"));
}

/// A per-end-user token (the owner claim, `webhook_owner`) subscribes `*` at secrecy level 0:
/// its subscription is bound to its customer, at the strictest level, and fan-out sends it only
/// that customer's events and broadcasts.
#[tokio::test]
async fn a_token_with_the_owner_claim_makes_a_bound_subscription() {
    let hub = hub();
    seed(
        &hub,
        SubscriptionStatus::Active,
        "https://hooks.example.com/webhooks",
    )
    .await;
    let request = lambda_http::request::from_str(&event_sample("subscribe-customer")).unwrap();
    let response = api_handler(
        &hub,
        ApiFunction::Subscribe.operations(),
        &JwtClaims::default(),
        request,
    )
    .await;
    assert_eq!(response.status().as_u16(), 201);
    let lambda_http::Body::Text(text) = response.body() else {
        panic!("a JSON body");
    };
    let body: Value = serde_json::from_str(text).unwrap();
    assert_eq!(
        (&body["owner"], &body["bound"], &body["secrecy_level"]),
        (
            &serde_json::json!("customer-42"),
            &serde_json::json!(true),
            &serde_json::json!(2)
        ),
        "{body}"
    );
    let id = body["id"].as_str().unwrap();
    let pending = hub.store.get(id).await.unwrap().unwrap();
    let mut active = pending.clone();
    active.status = SubscriptionStatus::Active;
    active.version += 1;
    hub.store.save(&active, Some(&pending)).await.unwrap();
    let event = |owner: Option<&str>, broadcast: bool| hub::model::Event {
        owner: owner.map(str::to_string),
        broadcast,
        ..hub::model::Event::new(
            hub::model::new_id("evt_", hub.now_ms()),
            "acme",
            hub::topic::Topic::parse("door.request.allowed").unwrap(),
            hub.now_ms(),
            serde_json::json!({}),
        )
    };
    // The sample's account-wide subscription, and the customer's where the event is its own.
    for (event, expected) in [
        (event(Some("customer-42"), false), 2),
        (event(None, true), 2),
        (event(None, false), 1),
        (event(Some("customer-7"), false), 1),
    ] {
        assert_eq!(hub.fan_out(&event).await.unwrap(), expected, "{event:?}");
    }
    // The same token lists only its customer's subscription.
    let mut claims = serde_json::json!({"sub": "acme", "webhook_owner": "customer-42",
                                        "scope": "webhooks:read"});
    let (status, listed) = manage_as(&hub, claims.clone(), "sub").await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["id"], id);
    claims["webhook_owner"] = serde_json::json!("customer-7");
    let (_, listed) = manage_as(&hub, claims, "sub").await;
    assert_eq!(listed["data"], serde_json::json!([]));
}

#[tokio::test]
async fn confirm_sample_activates_without_a_token() {
    let hub = hub();
    seed(
        &hub,
        SubscriptionStatus::Pending,
        "https://hooks.example.com/webhooks",
    )
    .await;
    let (status, body) = replay_api(&hub, ApiFunction::Confirm).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "active");
}

#[tokio::test]
async fn unsubscribe_sample_deletes() {
    let hub = hub();
    seed(
        &hub,
        SubscriptionStatus::Active,
        "https://hooks.example.com/webhooks",
    )
    .await;
    assert_eq!(replay_api(&hub, ApiFunction::Unsubscribe).await.0, 204);
    assert!(hub.store.get(SAMPLE_SUB).await.unwrap().is_none());
}

#[tokio::test]
async fn manage_sample_lists() {
    let hub = hub();
    seed(
        &hub,
        SubscriptionStatus::Active,
        "https://hooks.example.com/webhooks",
    )
    .await;
    let (status, body) = replay_api(&hub, ApiFunction::Manage).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
}

/// The manage sample with its JWT claims replaced, answered with `account_claim` as the
/// account's claim.
async fn manage_as(hub: &Hub, claims: Value, account_claim: &str) -> (u16, Value) {
    let mut sample: Value = serde_json::from_str(&event_sample("manage")).unwrap();
    sample["requestContext"]["authorizer"]["jwt"]["claims"] = claims;
    let request = lambda_http::request::from_str(&sample.to_string()).unwrap();
    let response = api_handler(
        hub,
        ApiFunction::Manage.operations(),
        &JwtClaims::with_account_claim(account_claim),
        request,
    )
    .await;
    let body = match response.body() {
        lambda_http::Body::Text(text) => serde_json::from_str(text).unwrap(),
        _ => Value::Null,
    };
    (response.status().as_u16(), body)
}

#[tokio::test]
async fn jwt_callers_without_scopes_without_the_account_or_with_a_custom_claim() {
    let hub = hub();
    seed(
        &hub,
        SubscriptionStatus::Active,
        "https://hooks.example.com/webhooks",
    )
    .await;
    // No scope at all: authenticated, allowed nothing.
    let (status, body) = manage_as(&hub, serde_json::json!({"sub": "acme"}), "sub").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("insufficient_scope")),
        "{body}"
    );
    // No account claim: not a caller.
    let (status, body) = manage_as(
        &hub,
        serde_json::json!({"scope": "webhooks:read", "email": "a@example.com"}),
        "sub",
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    // The account from a custom claim; `sub` is then only the owner.
    let claims =
        serde_json::json!({"sub": "user-7", "custom:tenant": "acme", "scope": "webhooks:read"});
    let (status, body) = manage_as(&hub, claims.clone(), "custom:tenant").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["id"], SAMPLE_SUB);
    // Read with the default claim, the same token is account `user-7`, which holds nothing.
    let (status, body) = manage_as(&hub, claims, "sub").await;
    assert_eq!(
        (status, body["data"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{body}"
    );
}

#[tokio::test]
async fn publish_sample_is_accepted_once() {
    let hub = hub();
    let (status, body) = replay_api(&hub, ApiFunction::Publish).await;
    assert_eq!(status, 202, "{body}");
    assert!(body["id"].as_str().unwrap().starts_with("evt_"));
    let (_, again) = replay_api(&hub, ApiFunction::Publish).await;
    assert_eq!(again["duplicate"], true, "the sample's id is remembered");
}

#[tokio::test]
async fn functions_refuse_routes_of_other_functions() {
    let request = lambda_http::request::from_str(&event_sample("subscribe")).unwrap();
    let response = api_handler(
        &hub(),
        ApiFunction::Publish.operations(),
        &JwtClaims::default(),
        request,
    )
    .await;
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test]
async fn fanout_sample_queues_one_delivery_per_match() {
    let hub = hub();
    seed(
        &hub,
        SubscriptionStatus::Active,
        "https://hooks.example.com/webhooks",
    )
    .await;
    let event: SqsEvent = serde_json::from_str(&event_sample("fanout")).unwrap();
    let response = sqs_handler(&hub, QueueRole::Events, event).await;
    assert!(response.batch_item_failures.is_empty());
    let queued = hub
        .deliveries
        .receive(10, std::time::Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    assert!(queued[0].body.contains(SAMPLE_SUB));
}

/// The fan-out function also reads the ingest queues: a record from one (by its
/// `eventSourceARN`) is published for its sender's account and fanned out; a refused one is
/// dead-lettered, and neither is reported failed.
#[tokio::test]
async fn fanout_routes_ingest_queue_records_by_their_source() {
    use hub::adapters::memory::MemoryQueue;
    use hub::runtime::lambda::sqs_handler_routed;
    use hub::service::ingest::IngestSource;
    let mut hub = memory_hub(Settings {
        ingest_senders: [("AROAPRODUCER".to_string(), "acme".to_string())].into(),
        ..Settings::default()
    })
    .0;
    let dead = std::sync::Arc::new(MemoryQueue::new(
        std::time::Duration::from_secs(30),
        5,
        None,
    ));
    hub.ingest.direct = Some(std::sync::Arc::new(MemoryQueue::new(
        std::time::Duration::from_secs(30),
        5,
        Some(dead.clone()),
    )));
    seed(
        &hub,
        SubscriptionStatus::Active,
        "https://hooks.example.com/webhooks",
    )
    .await;
    let mut event: SqsEvent = serde_json::from_str(&event_sample("fanout")).unwrap();
    let template = event.records[0].clone();
    event.records = ["door.request.allowed", "not a topic"]
        .iter()
        .enumerate()
        .map(|(i, topic)| {
            let mut record = template.clone();
            record.message_id = Some(format!("ingest-{i}"));
            record.event_source_arn = Some("arn:aws:sqs:us-east-1:123456789012:hub-ingest".into());
            record
                .attributes
                .insert("SenderId".into(), "AROAPRODUCER:session".into());
            record.body = Some(serde_json::json!({"topic": topic, "data": {"n": i}}).to_string());
            record
        })
        .collect();
    let routes = [(
        "hub-ingest".to_string(),
        QueueRole::Ingest(IngestSource::Direct),
    )];
    let response = sqs_handler_routed(&hub, QueueRole::Events, &routes, event).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let queued = hub
        .deliveries
        .receive(10, std::time::Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(
        queued.len(),
        1,
        "the valid one fanned out to the seeded subscription"
    );
    assert!(queued[0].body.contains(SAMPLE_SUB) && queued[0].body.contains("\"n\":0"));
    assert_eq!(dead.len(), 1, "the refused one is dead-lettered");
}

#[tokio::test]
async fn sender_sample_queues_the_retry_and_reports_only_what_it_could_not_settle() {
    // The first message's subscription answers nothing (connection refused): its retry goes on
    // the queue as a new message carrying the attempt count; the second names no subscription
    // and is dropped as done. Nothing is reported failed.
    let mut hub = memory_hub(Settings {
        allow_private_targets: true,
        ..Settings::default()
    })
    .0;
    seed(
        &hub,
        SubscriptionStatus::Active,
        "http://127.0.0.1:1/refused",
    )
    .await;
    let event: SqsEvent = serde_json::from_str(&event_sample("sender")).unwrap();
    let first_id = event.records[0].message_id.clone().unwrap();
    let response = sqs_handler(&hub, QueueRole::Deliveries, event).await;
    assert!(response.batch_item_failures.is_empty());
    let log = hub.store.attempts(SAMPLE_SUB, 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].error.map(|e| e.as_str()), Some("connect"));
    let retry = hub
        .deliveries
        .receive(10, std::time::Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(retry.len(), 0, "the retry waits for its delay (5 s)");

    // When the retry cannot be queued, exactly that message is reported, to come back.
    let flaky = std::sync::Arc::new(hub_tests::FlakyQueue::wrap(hub.deliveries.clone()));
    flaky
        .fail_send
        .store(1, std::sync::atomic::Ordering::SeqCst);
    hub.deliveries = flaky;
    let event: SqsEvent = serde_json::from_str(&event_sample("sender")).unwrap();
    let response = sqs_handler(&hub, QueueRole::Deliveries, event).await;
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, vec![first_id]);
}

#[tokio::test]
async fn sweeper_sample_runs_a_sweep() {
    // A subscription whose lease ended a minute ago, due for the sweep; the sample is the
    // Scheduler's event as the function receives it.
    let hub = hub();
    let now = hub.now_ms();
    let mut lapsed = sample_subscription(
        now - 3_600_000,
        SubscriptionStatus::Active,
        "https://hooks.example.com/lapsed",
    );
    lapsed.expires_at_ms = now - 60_000;
    hub.store.save(&lapsed, None).await.unwrap();
    let event: aws_lambda_events::event::eventbridge::EventBridgeEvent<Value> =
        serde_json::from_str(&event_sample("sweeper")).expect("an EventBridge Scheduler event");
    assert_eq!(event.source, "aws.scheduler");
    let answer = sweep_handler(&hub).await.unwrap();
    assert_eq!(answer["removed"], 1, "{answer}");
    assert!(hub.store.get(SAMPLE_SUB).await.unwrap().is_none());
    assert_eq!(sweep_handler(&hub).await.unwrap()["removed"], 0);
}

#[tokio::test]
async fn fold_sample_counts_its_delivery_once() {
    // The sample is a DynamoDB stream batch as Lambda hands it over: one delivery-log insert,
    // a success of the sample subscription.
    let hub = hub();
    seed(
        &hub,
        SubscriptionStatus::Active,
        "https://hooks.example.com/webhooks",
    )
    .await;
    let event: Value = serde_json::from_str(&event_sample("fold")).unwrap();
    let answer = fold_handler(&hub, event.clone()).await.unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"attempts": 1, "subscriptions": 1})
    );
    let sub = hub.store.get(SAMPLE_SUB).await.unwrap().unwrap();
    assert_eq!(sub.odometer, 1);
    assert_eq!(sub.last_delivered_ms, Some(1_795_849_500_123));
    // Handed over again (a retried batch): counted once.
    fold_handler(&hub, event).await.unwrap();
    assert_eq!(
        hub.store.get(SAMPLE_SUB).await.unwrap().unwrap().odometer,
        1
    );
}

#[test]
fn every_sample_has_a_replay() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "confirm",
            "fanout",
            "fold",
            "manage",
            "publish",
            "sender",
            "subscribe",
            "subscribe-customer",
            "sweeper",
            "unsubscribe"
        ]
    );
}

/// The manage function on AWS serves the portal past the JWT authorizer (`template.yaml` routes
/// `/portal` and `/portal/{proxy+}` with no authorizer): the page to anyone, the portal's API to
/// a portal session token, and the `/v1` API still only to the authorizer's callers.
#[tokio::test]
async fn manage_serves_the_portal_without_the_jwt_authorizer() {
    let hub = hub();
    // The sample's subscription, bound to the customer the session is minted for.
    let mut sub = sample_subscription(
        hub.now_ms(),
        SubscriptionStatus::Active,
        "https://hooks.example.com/webhooks",
    );
    (sub.owner, sub.bound) = ("customer-42".into(), true);
    hub.store.save(&sub, None).await.unwrap();
    let platform = hub::auth::Caller::of_account("acme", "acme", None);
    let request = serde_json::from_value(serde_json::json!({"owner": "customer-42"})).unwrap();
    let minted = hub.mint_portal_session(&platform, request).await.unwrap();
    // The sample, as API Gateway sends an unauthorized route: no authorizer context.
    let as_portal = |path: &str, bearer: &str| {
        let mut event: Value = serde_json::from_str(&event_sample("manage")).unwrap();
        event["rawPath"] = path.into();
        event["rawQueryString"] = "".into();
        event["requestContext"]["http"]["path"] = path.into();
        event["requestContext"]
            .as_object_mut()
            .unwrap()
            .remove("authorizer");
        event["headers"]["authorization"] = format!("Bearer {bearer}").into();
        lambda_http::request::from_str(&event.to_string()).unwrap()
    };
    // One call of `function`'s handler: status and text body.
    let call = async |function: ApiFunction, path: &str, bearer: &str| {
        let response = api_handler(
            &hub,
            function.operations(),
            &JwtClaims::default(),
            as_portal(path, bearer),
        )
        .await;
        let body = match response.body() {
            lambda_http::Body::Text(text) => text.clone(),
            _ => String::new(),
        };
        (response.status().as_u16(), body)
    };
    let (status, page) = call(ApiFunction::Manage, "/portal", "").await;
    assert_eq!(status, 200);
    assert!(page.contains("<base href=\"portal/\">"));
    let (status, body) = call(
        ApiFunction::Manage,
        "/portal/api/v1/subscriptions",
        &minted.token,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(hub_tests::SAMPLE_SUB), "{body}");
    let (status, _) = call(ApiFunction::Manage, "/v1/subscriptions", &minted.token).await;
    assert_eq!(status, 401, "no JWT context: the /v1 API refuses");
    // Other functions do not serve it.
    let (status, _) = call(ApiFunction::Subscribe, "/portal", "").await;
    assert_eq!(status, 404);
}
