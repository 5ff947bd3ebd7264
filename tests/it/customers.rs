//! Customers as a boundary, on every backend, through the API and the portal's API: who receives
//! what (an event addressed to a customer, a broadcast, an unaddressed event), the secrecy
//! floor of a customer's session, callbacks unique per customer, the per-customer limits, list
//! cursors that name only reachable ids, and sessions never wider than their minter.

use std::collections::BTreeSet;

use hub_tests::*;
use serde_json::{Value, json};

/// A platform key limited to `door.*` (read and subscribe).
const KEY_DOORS: &str = "key-doors";
/// A platform key that may subscribe but not read.
const KEY_SUBSCRIBE_ONLY: &str = "key-subscribe-only";

/// A hub with the two limited platform keys beside the suite's usual ones.
async fn start(backend: Backend, extra: &[&str]) -> HubProcess {
    let doors = format!("{KEY_DOORS}=acme:webhooks:read,webhooks:subscribe,topic:door.*");
    let subscribe_only = format!("{KEY_SUBSCRIBE_ONLY}=acme:webhooks:subscribe");
    let mut args = vec!["--api-key", &doors, "--api-key", &subscribe_only];
    args.extend_from_slice(extra);
    HubProcess::start(backend, &args).await
}

/// Mints a portal session for `owner` with the platform's key; returns its token.
async fn session(hub: &HubProcess, owner: &str) -> String {
    let minted = hub
        .call(
            "POST",
            "/v1/portal/sessions",
            Some(KEY_A),
            Some(json!({ "owner": owner })),
        )
        .await;
    assert_eq!(minted.status, 201, "{}", minted.body);
    minted.body["token"].as_str().unwrap().to_string()
}

fn portal(path: &str) -> String {
    format!("/portal/api{path}")
}

/// Subscribes through a portal session (the portal's API); the raw answer.
async fn portal_subscribe(hub: &HubProcess, token: &str, body: Value) -> Answer {
    hub.call(
        "POST",
        &portal("/v1/subscriptions"),
        Some(token),
        Some(body),
    )
    .await
}

/// Subscribes `path` to `door.*` through `session`, or with the platform's key when `None`; the
/// raw answer.
async fn door_subscription(
    hub: &HubProcess,
    receiver: &TestReceiver,
    session: Option<&str>,
    path: &str,
) -> Answer {
    let body = json!({"callback_url": receiver.url(path), "topics": ["door.*"]});
    match session {
        Some(token) => portal_subscribe(hub, token, body).await,
        None => {
            hub.call("POST", "/v1/subscriptions", Some(KEY_A), Some(body))
                .await
        }
    }
}

/// Customer B and the platform each make a `door.*` subscription: whatever held customer A
/// back does not hold them.
async fn others_are_not_held(hub: &HubProcess, receiver: &TestReceiver, bob: &str) {
    for (session, path) in [(Some(bob), "/b"), (None, "/platform")] {
        let made = door_subscription(hub, receiver, session, path).await;
        assert_eq!(made.status, 201, "{path}: {}", made.body);
    }
}

/// The event ids delivered at `path`.
fn event_ids_at(receiver: &TestReceiver, path: &str) -> BTreeSet<String> {
    events_at(&receiver.received(), path)
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect()
}

fn id_of(answer: &Value) -> String {
    answer["id"].as_str().unwrap().to_string()
}

/// Walks a listing with `limit=1` from `base` (`/v1/subscriptions` or the portal's), as
/// `token`; returns the ids in order and every cursor it was handed.
async fn walk(hub: &HubProcess, base: &str, token: &str) -> (Vec<String>, Vec<String>) {
    let (mut ids, mut cursors) = (Vec::new(), Vec::new());
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let path = match &cursor {
            Some(c) => format!("{base}?limit=1&cursor={c}"),
            None => format!("{base}?limit=1"),
        };
        let page = hub.call("GET", &path, Some(token), None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        ids.extend(
            page.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_string()),
        );
        match page.body["next_cursor"].as_str() {
            Some(next) => {
                cursors.push(next.to_string());
                cursor = Some(next.to_string());
            }
            None => return (ids, cursors),
        }
    }
    panic!("the walk did not end");
}

mod scenarios {
    use super::*;

    /// Customers A and B and the platform each subscribe `*`: an event addressed to A reaches A
    /// and the platform, never B; a broadcast reaches all three; an unaddressed event only the
    /// platform; a field marked sensitive is removed for A although A asked for level 0.
    pub async fn events_reach_only_the_customer_they_concern(backend: Backend) {
        let hub = start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let (alice, bob) = (
            session(&hub, "customer-a").await,
            session(&hub, "customer-b").await,
        );
        let a = portal_subscribe(
            &hub,
            &alice,
            json!({"callback_url": receiver.url("/a"), "topics": ["*"], "secrecy_level": 0}),
        )
        .await;
        assert_eq!(a.status, 201, "{}", a.body);
        assert_eq!(
            (&a.body["owner"], &a.body["bound"], &a.body["secrecy_level"]),
            (&json!("customer-a"), &json!(true), &json!(2)),
            "bound to A, never below the session's floor (the strictest by default)"
        );
        let b = portal_subscribe(
            &hub,
            &bob,
            json!({"callback_url": receiver.url("/b"), "topics": ["*"]}),
        )
        .await;
        assert_eq!(b.status, 201, "{}", b.body);
        let platform = subscribe_pending(
            &hub,
            &receiver,
            KEY_A,
            "/platform",
            json!({"topics": ["*"]}),
        )
        .await;
        assert_eq!(
            platform["bound"], false,
            "the platform's key is account-wide"
        );
        confirm_at(&hub, &receiver, "/a", &id_of(&a.body)).await;
        confirm_at(&hub, &receiver, "/b", &id_of(&b.body)).await;
        confirm_at(&hub, &receiver, "/platform", &id_of(&platform)).await;

        let event = |extra: Value| {
            let mut body = json!({"topic": "door.opened", "data": {"door": 7, "pin": "4321"},
                                  "sensitive": {"/data/pin": 2}});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().cloned().unwrap());
            body
        };
        let to_a = id_of(&publish(&hub, KEY_A, event(json!({"owner": "customer-a"}))).await);
        let broadcast = id_of(&publish(&hub, KEY_A, event(json!({"broadcast": true}))).await);
        let unaddressed = id_of(&publish(&hub, KEY_A, event(json!({}))).await);
        let to_b = id_of(&publish(&hub, KEY_A, event(json!({"owner": "customer-b"}))).await);

        // The hub's own decisions, then what each receiver took.
        assert_eq!(fanned_out(&hub, &to_a).await, 2, "A and the platform");
        assert_eq!(fanned_out(&hub, &broadcast).await, 3, "everyone");
        assert_eq!(
            fanned_out(&hub, &unaddressed).await,
            1,
            "the platform alone"
        );
        assert_eq!(fanned_out(&hub, &to_b).await, 2, "B and the platform");
        receiver
            .wait_until_events(WAIT, |seen| {
                events_at(seen, "/platform").len() >= 4
                    && events_at(seen, "/a").len() >= 2
                    && events_at(seen, "/b").len() >= 2
            })
            .await;
        let set = |ids: &[&String]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(event_ids_at(&receiver, "/a"), set(&[&to_a, &broadcast]));
        assert_eq!(event_ids_at(&receiver, "/b"), set(&[&to_b, &broadcast]));
        assert_eq!(
            event_ids_at(&receiver, "/platform"),
            set(&[&to_a, &broadcast, &unaddressed, &to_b])
        );

        // What A received: its owner in the envelope, the sensitive field gone; the platform
        // (level 1) keeps a level-2 field.
        let seen = receiver.received();
        let body_at = |path: &str, id: &str| {
            events_at(&seen, path)
                .into_iter()
                .find(|r| r.json()["id"] == id)
                .unwrap()
                .json()
        };
        let at_a = body_at("/a", &to_a);
        assert_eq!(at_a["owner"], "customer-a");
        assert!(at_a["data"].get("pin").is_none(), "{at_a}");
        assert_eq!(at_a["data"]["door"], 7);
        assert_eq!(body_at("/platform", &to_a)["data"]["pin"], "4321");
        assert_eq!(body_at("/b", &broadcast)["broadcast"], true);
        assert!(body_at("/platform", &unaddressed).get("owner").is_none());

        // Lowering the level later is held at the floor too.
        let patched = hub
            .call(
                "PATCH",
                &portal(&format!("/v1/subscriptions/{}", id_of(&a.body))),
                Some(&alice),
                Some(json!({"secrecy_level": 0})),
            )
            .await;
        assert_eq!(patched.status, 200, "{}", patched.body);
        assert_eq!(patched.body["secrecy_level"], 2);
    }

    /// A's URL registered by B and by the platform makes three subscriptions with three
    /// secrets; subscribing again refreshes each caller's own.
    pub async fn callbacks_are_unique_per_customer(backend: Backend) {
        let hub = start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let (alice, bob) = (
            session(&hub, "customer-a").await,
            session(&hub, "customer-b").await,
        );
        let body = json!({"callback_url": receiver.url("/shared"), "topics": ["door.*"]});
        let by_a = portal_subscribe(&hub, &alice, body.clone()).await;
        let by_b = portal_subscribe(&hub, &bob, body.clone()).await;
        let by_platform = hub
            .call("POST", "/v1/subscriptions", Some(KEY_A), Some(body.clone()))
            .await;
        let mut ids = BTreeSet::new();
        let mut secrets = BTreeSet::new();
        for answer in [&by_a, &by_b, &by_platform] {
            assert_eq!(answer.status, 201, "{}", answer.body);
            ids.insert(id_of(&answer.body));
            secrets.insert(answer.body["secret"].as_str().unwrap().to_string());
        }
        assert_eq!(
            (ids.len(), secrets.len()),
            (3, 3),
            "three subscriptions, three secrets"
        );
        // Subscribing again refreshes one's own, never another's.
        let again = portal_subscribe(&hub, &bob, body.clone()).await;
        assert_eq!(again.status, 200, "{}", again.body);
        assert_eq!(id_of(&again.body), id_of(&by_b.body));
        let again = hub
            .call("POST", "/v1/subscriptions", Some(KEY_A), Some(body.clone()))
            .await;
        assert_eq!(
            (again.status, id_of(&again.body)),
            (200, id_of(&by_platform.body))
        );
        // The platform names the customer to refresh (or create) a bound one.
        let mut for_a = body.clone();
        for_a["owner"] = json!("customer-a");
        let again = hub
            .call("POST", "/v1/subscriptions", Some(KEY_A), Some(for_a))
            .await;
        assert_eq!((again.status, id_of(&again.body)), (200, id_of(&by_a.body)));
        // A customer cannot name another, nor move a subscription to another owner.
        let mut for_b = body.clone();
        for_b["owner"] = json!("customer-b");
        let refused = portal_subscribe(&hub, &alice, for_b).await;
        assert_eq!(
            (refused.status, refused.body["code"].as_str()),
            (403, Some("insufficient_scope"))
        );
        let moved = hub
            .call(
                "PATCH",
                &format!("/v1/subscriptions/{}", id_of(&by_a.body)),
                Some(KEY_A),
                Some(json!({"owner": "customer-b"})),
            )
            .await;
        assert_eq!(
            (moved.status, moved.body["code"].as_str()),
            (400, Some("immutable_owner"))
        );
        // Each confirmation is signed with its own subscription's secret.
        receiver
            .wait_until_events(WAIT, |seen| {
                seen.iter()
                    .filter(|r| r.path == "/shared" && r.json()["type"] == "Confirmation")
                    .count()
                    >= 3
            })
            .await;
        for answer in [&by_a, &by_b, &by_platform] {
            let id = id_of(&answer.body);
            let secret = answer.body["secret"].as_str().unwrap();
            let confirmation = receiver
                .received()
                .into_iter()
                .find(|r| r.json()["subscription"]["id"] == id.as_str())
                .unwrap();
            assert!(verify_standard(secret, &confirmation), "{id}");
        }
    }

    /// A's 26th subscription is refused (`409 owner_subscription_limit_reached`), pending ones
    /// counted; B and the platform are not held by it.
    pub async fn a_customer_holds_at_most_its_limit(backend: Backend) {
        let hub = start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let (alice, bob) = (
            session(&hub, "customer-a").await,
            session(&hub, "customer-b").await,
        );
        for n in 0..25 {
            let made = door_subscription(&hub, &receiver, Some(&alice), &format!("/a{n}")).await;
            assert_eq!(made.status, 201, "{n}: {}", made.body);
        }
        let refused = door_subscription(&hub, &receiver, Some(&alice), "/a25").await;
        assert_eq!(
            (refused.status, refused.body["code"].as_str()),
            (409, Some("owner_subscription_limit_reached")),
            "{}",
            refused.body
        );
        // Nor may the platform make a 26th for A.
        let for_a = hub
            .call(
                "POST",
                "/v1/subscriptions",
                Some(KEY_A),
                Some(
                    json!({"callback_url": receiver.url("/a26"), "topics": ["door.*"],
                            "owner": "customer-a"}),
                ),
            )
            .await;
        assert_eq!(for_a.body["code"], "owner_subscription_limit_reached");
        // Refreshing one A holds is no new subscription.
        let refresh = door_subscription(&hub, &receiver, Some(&alice), "/a0").await;
        assert_eq!(refresh.status, 200, "{}", refresh.body);
        others_are_not_held(&hub, &receiver, &bob).await;
    }

    /// Confirmation requests per customer and hour are bounded: past the bound a subscribe is
    /// refused with `429` and `Retry-After`, nothing is stored and nothing is sent; other
    /// customers and the platform are not held by it.
    pub async fn confirmations_per_customer_are_bounded(backend: Backend) {
        let hub = start(backend, &["--confirmations-per-owner-hour", "2"]).await;
        let receiver = TestReceiver::start().await;
        let (alice, bob) = (
            session(&hub, "customer-a").await,
            session(&hub, "customer-b").await,
        );
        for n in 0..2 {
            let made = door_subscription(&hub, &receiver, Some(&alice), &format!("/a{n}")).await;
            assert_eq!(made.status, 201, "{}", made.body);
        }
        let refused = door_subscription(&hub, &receiver, Some(&alice), "/a2").await;
        assert_eq!(
            (refused.status, refused.body["code"].as_str()),
            (429, Some("too_many_confirmations")),
            "{}",
            refused.body
        );
        let retry_after: u64 = refused.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=3600).contains(&retry_after), "{retry_after}");
        let listed = hub
            .call("GET", &portal("/v1/subscriptions"), Some(&alice), None)
            .await;
        assert_eq!(
            listed.body["data"].as_array().unwrap().len(),
            2,
            "nothing stored"
        );
        others_are_not_held(&hub, &receiver, &bob).await;
        receiver
            .wait_until_events(WAIT, |seen| {
                seen.iter().any(|r| r.path == "/b") && seen.iter().any(|r| r.path == "/platform")
            })
            .await;
        assert!(
            !receiver.received().iter().any(|r| r.path == "/a2"),
            "no confirmation went out for the refused one"
        );
    }

    /// A `limit=1` walk never yields, nor hands a cursor of, an id the caller cannot reach:
    /// A's portal walk, and a topic-limited platform key's.
    pub async fn list_cursors_name_only_reachable_ids(backend: Backend) {
        let hub = start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let (alice, bob) = (
            session(&hub, "customer-a").await,
            session(&hub, "customer-b").await,
        );
        let mut mine = Vec::new();
        let mut doors = Vec::new();
        for n in 0..3 {
            // Interleaved, so the account's order mixes everyone's ids.
            let a = portal_subscribe(
                &hub,
                &alice,
                json!({"callback_url": receiver.url(&format!("/a{n}")), "topics": ["door.*"]}),
            )
            .await;
            mine.push(id_of(&a.body));
            doors.push(id_of(&a.body));
            let b = portal_subscribe(
                &hub,
                &bob,
                json!({"callback_url": receiver.url(&format!("/b{n}")), "topics": ["door.*"]}),
            )
            .await;
            doors.push(id_of(&b.body));
            let p = hub
                .call(
                    "POST",
                    "/v1/subscriptions",
                    Some(KEY_A),
                    Some(json!({"callback_url": receiver.url(&format!("/p{n}")),
                                "topics": ["billing.paid"]})),
                )
                .await;
            assert_eq!(p.status, 201, "{}", p.body);
        }
        // Listings go in id order; ids made within one millisecond order by their random
        // part, not by when they were made.
        mine.sort();
        doors.sort();
        let (ids, cursors) = walk(&hub, &portal("/v1/subscriptions"), &alice).await;
        assert_eq!(ids, mine, "A walks exactly its own");
        assert!(cursors.iter().all(|c| mine.contains(c)), "{cursors:?}");
        let (ids, cursors) = walk(&hub, "/v1/subscriptions", KEY_DOORS).await;
        assert_eq!(
            ids, doors,
            "the door key walks exactly the door subscriptions"
        );
        assert!(cursors.iter().all(|c| doors.contains(c)), "{cursors:?}");
        // The platform sees everyone's, bound ones marked.
        let (ids, _) = walk(&hub, "/v1/subscriptions", KEY_A).await;
        assert_eq!(ids.len(), 9);
    }

    /// A session carries no scope its minter lacks: a write session takes `webhooks:read` too.
    pub async fn sessions_are_never_wider_than_their_minter(backend: Backend) {
        let hub = start(backend, &[]).await;
        let write = hub
            .call(
                "POST",
                "/v1/portal/sessions",
                Some(KEY_SUBSCRIBE_ONLY),
                Some(json!({"owner": "customer-a"})),
            )
            .await;
        assert_eq!(
            (write.status, write.body["code"].as_str()),
            (403, Some("insufficient_scope")),
            "{}",
            write.body
        );
        let wider_topics = hub
            .call(
                "POST",
                "/v1/portal/sessions",
                Some(KEY_DOORS),
                Some(json!({"owner": "customer-a", "topics": ["*"]})),
            )
            .await;
        assert_eq!(wider_topics.body["code"], "insufficient_scope");
        let ok = hub
            .call(
                "POST",
                "/v1/portal/sessions",
                Some(KEY_DOORS),
                Some(json!({"owner": "customer-a", "secrecy_floor": 0})),
            )
            .await;
        assert_eq!(ok.status, 201, "{}", ok.body);
        // A session minted with a lower floor lets its customer choose level 0.
        let receiver = TestReceiver::start().await;
        let token = ok.body["token"].as_str().unwrap();
        let made = portal_subscribe(
            &hub,
            token,
            json!({"callback_url": receiver.url("/a"), "topics": ["door.opened"],
                   "secrecy_level": 0}),
        )
        .await;
        assert_eq!(made.status, 201, "{}", made.body);
        assert_eq!(made.body["secrecy_level"], 0);
    }

    /// The platform subscribes on a customer's behalf: the subscription is bound to that
    /// customer, shows in the customer's portal, and receives only its events.
    pub async fn the_platform_binds_a_subscription_to_a_customer(backend: Backend) {
        let hub = start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let made =
            subscribe_confirmed(&hub, &receiver, KEY_A, "/a", json!({"owner": "customer-a"})).await;
        assert_eq!(
            (&made["owner"], &made["bound"]),
            (&json!("customer-a"), &json!(true))
        );
        let alice = session(&hub, "customer-a").await;
        let listed = hub
            .call("GET", &portal("/v1/subscriptions"), Some(&alice), None)
            .await;
        assert_eq!(listed.body["data"][0]["id"], made["id"]);
        let topic = json!({"topic": "door.request.allowed", "data": {}});
        let mut for_b = topic.clone();
        for_b["owner"] = json!("customer-b");
        let mut for_a = topic.clone();
        for_a["owner"] = json!("customer-a");
        assert_eq!(
            fanned_out(&hub, &id_of(&publish(&hub, KEY_A, for_b).await)).await,
            0
        );
        assert_eq!(
            fanned_out(&hub, &id_of(&publish(&hub, KEY_A, topic).await)).await,
            0
        );
        let to_a = id_of(&publish(&hub, KEY_A, for_a).await);
        assert_eq!(fanned_out(&hub, &to_a).await, 1);
        let delivered = receiver
            .wait_for_match(WAIT, |r| r.path == "/a" && r.json()["id"] == to_a.as_str())
            .await;
        assert_eq!(delivered.json()["owner"], "customer-a");
        // An event is addressed to one owner or broadcast, not both.
        let both = hub
            .call(
                "POST",
                "/v1/events",
                Some(KEY_A),
                Some(
                    json!({"topic": "door.opened", "data": {}, "owner": "customer-a",
                            "broadcast": true}),
                ),
            )
            .await;
        assert_eq!(
            (both.status, both.body["code"].as_str()),
            (400, Some("invalid_owner"))
        );
    }

    /// A `PATCH` cannot widen a subscription's topics past its caller's: not past a
    /// `topic:door.*` key's, nor past a portal session's topics; within them it may.
    pub async fn a_change_never_widens_topics_past_the_caller(backend: Backend) {
        let hub = start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let by_key = subscribe_pending(
            &hub,
            &receiver,
            KEY_DOORS,
            "/doors",
            json!({"topics": ["door.opened"]}),
        )
        .await;
        let patch = |id: &str, topics: Value| {
            (
                format!("/v1/subscriptions/{id}"),
                Some(json!({ "topics": topics })),
            )
        };
        let (path, body) = patch(by_key["id"].as_str().unwrap(), json!(["*"]));
        let wider = hub.call("PATCH", &path, Some(KEY_DOORS), body).await;
        assert_eq!(wider.status, 403, "{}", wider.body);
        assert_eq!(wider.body["code"], "insufficient_scope");
        let (path, body) = patch(by_key["id"].as_str().unwrap(), json!(["door.closed"]));
        let within = hub.call("PATCH", &path, Some(KEY_DOORS), body).await;
        assert_eq!(within.status, 200, "{}", within.body);
        let stored = hub.call("GET", &path, Some(KEY_A), None).await;
        assert_eq!(
            stored.body["topics"],
            json!(["door.closed"]),
            "nothing widened"
        );

        let minted = hub
            .call(
                "POST",
                "/v1/portal/sessions",
                Some(KEY_A),
                Some(json!({"owner": "customer-p", "topics": ["door.*"]})),
            )
            .await;
        assert_eq!(minted.status, 201, "{}", minted.body);
        let token = minted.body["token"].as_str().unwrap();
        let by_session = portal_subscribe(
            &hub,
            token,
            json!({"callback_url": receiver.url("/portal"), "topics": ["door.opened"]}),
        )
        .await;
        assert_eq!(by_session.status, 201, "{}", by_session.body);
        let id = by_session.body["id"].as_str().unwrap();
        let wider = hub
            .call(
                "PATCH",
                &portal(&format!("/v1/subscriptions/{id}")),
                Some(token),
                Some(json!({"topics": ["alarm.*"]})),
            )
            .await;
        assert_eq!(wider.status, 403, "{}", wider.body);
        let stored = hub
            .call("GET", &format!("/v1/subscriptions/{id}"), Some(KEY_A), None)
            .await;
        assert_eq!(
            stored.body["topics"],
            json!(["door.opened"]),
            "nothing widened"
        );
    }
}

on_every_backend!(
    events_reach_only_the_customer_they_concern,
    callbacks_are_unique_per_customer,
    a_customer_holds_at_most_its_limit,
    confirmations_per_customer_are_bounded,
    list_cursors_name_only_reachable_ids,
    sessions_are_never_wider_than_their_minter,
    the_platform_binds_a_subscription_to_a_customer,
    a_change_never_widens_topics_past_the_caller,
);

/// A table made by a version before customers lacks the `by_owner` index: `--create-resources`
/// adds it, and a customer's listing (read through it) works at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_table_gets_the_owner_index() {
    use aws_sdk_dynamodb::types::{DeleteGlobalSecondaryIndexAction, GlobalSecondaryIndexUpdate};
    let name = unique("older");
    // The first start makes the table; then it is made an older version's, without the index.
    drop(HubProcess::start_on(Backend::Aws, &name, &[], &[]).await);
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws_config::load_from_env().await);
    let indexes = |described: aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput| {
        described
            .table
            .and_then(|t| t.global_secondary_indexes)
            .unwrap_or_default()
            .iter()
            .filter_map(|i| i.index_name().map(str::to_string))
            .collect::<BTreeSet<_>>()
    };
    dynamodb
        .update_table()
        .table_name(&name)
        .global_secondary_index_updates(
            GlobalSecondaryIndexUpdate::builder()
                .delete(
                    DeleteGlobalSecondaryIndexAction::builder()
                        .index_name("by_owner")
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let described = dynamodb.describe_table().table_name(&name).send().await;
    assert!(!indexes(described.unwrap()).contains("by_owner"));

    let hub = HubProcess::start_on(Backend::Aws, &name, &[], &[]).await;
    let described = dynamodb.describe_table().table_name(&name).send().await;
    assert!(indexes(described.unwrap()).contains("by_owner"));
    let receiver = TestReceiver::start().await;
    let alice = session(&hub, "customer-a").await;
    let made = portal_subscribe(
        &hub,
        &alice,
        json!({"callback_url": receiver.url("/a"), "topics": ["door.*"]}),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let listed = hub
        .call("GET", &portal("/v1/subscriptions"), Some(&alice), None)
        .await;
    assert_eq!(
        listed.body["data"][0]["id"], made.body["id"],
        "{}",
        listed.body
    );
}
