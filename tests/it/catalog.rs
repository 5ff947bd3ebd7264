//! The event-type catalog (docs/catalog.md): the catalog store contract on every adapter; on
//! every backend, types declared with schemas and examples, publish checked per the account's
//! settings (enforce refuses with the pointer, warn delivers and counts, unknown topics allowed
//! or refused), deprecated types marked, archiving, scopes; the exported OpenAPI 3.1 document
//! checked by `openapi-spec-validator`, with each example validated against it by `jsonschema`.

use hub::ports::CatalogStore;
use hub_tests::*;
use serde_json::{Value, json};

/// A key of account `acme` that may read and publish, not manage the catalog.
const KEY_READER: &str = "key-acme-reader";

/// The schema of `order.paid`: an object with a non-negative integer `amount` and a currency.
fn order_paid_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["order_id", "amount", "currency"],
        "properties": {
            "order_id": {"type": "string"},
            "amount": {"$ref": "#/$defs/cents"},
            "currency": {"enum": ["EUR", "USD"]}
        },
        "$defs": {"cents": {"type": "integer", "minimum": 0}}
    })
}

/// Declares `order.paid` (schema, example) and `order.legacy` (deprecated, no schema) as `acme`.
async fn declare_orders(hub: &HubProcess) {
    let paid = hub
        .call(
            "PUT",
            "/v1/event-types/order.paid",
            Some(KEY_A),
            Some(json!({
                "description": "An order was paid in full.",
                "schema": order_paid_schema(),
                "examples": [{"order_id": "o-1", "amount": 1250, "currency": "EUR"}]
            })),
        )
        .await;
    assert_eq!(paid.status, 200, "{}", paid.body);
    assert_eq!(paid.body["topic"], "order.paid");
    assert_eq!(paid.body["deprecated"], false);
    let legacy = hub
        .call(
            "PUT",
            "/v1/event-types/order.legacy",
            Some(KEY_A),
            Some(
                json!({"description": "The old order event.", "deprecated": true,
                        "examples": [{"id": 7}]}),
            ),
        )
        .await;
    assert_eq!(legacy.status, 200, "{}", legacy.body);
}

async fn set(hub: &HubProcess, settings: Value) {
    let answer = hub
        .call("PATCH", "/v1/settings", Some(KEY_A), Some(settings))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

async fn publish_answer(hub: &HubProcess, body: Value) -> Answer {
    hub.call("POST", "/v1/events", Some(KEY_A), Some(body))
        .await
}

/// `webhook_hub_schema_mismatches_total{outcome=…}` as `/metrics` shows it now.
async fn mismatches(hub: &HubProcess, outcome: &str) -> u64 {
    let text = metrics_text(hub).await;
    let wanted = format!("webhook_hub_schema_mismatches_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&wanted))
        .map_or(0, |n| n.trim().parse().unwrap())
}

mod scenarios {
    use super::*;

    /// The catalog on one backend, from declaring to publishing under each setting.
    pub async fn a_catalog_checks_what_is_published(backend: Backend) {
        let reader = format!("{KEY_READER}=acme:webhooks:read,webhooks:publish");
        let hub = HubProcess::start(backend, &["--api-key", &reader]).await;
        let receiver = TestReceiver::start().await;

        // Managing needs webhooks:admin; reading needs nothing more than the account.
        let refused = hub
            .call(
                "PUT",
                "/v1/event-types/order.paid",
                Some(KEY_READER),
                Some(json!({"description": "x"})),
            )
            .await;
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert_eq!(refused.body["code"], "insufficient_scope");
        declare_orders(&hub).await;

        // Bad declarations: a draft-07 schema, an example that does not match, reserved names.
        for (topic, body, code) in [
            (
                "order.bad",
                json!({"schema": {"$schema": "http://json-schema.org/draft-07/schema#"}}),
                "invalid_schema",
            ),
            (
                "order.bad",
                json!({"schema": order_paid_schema(), "examples": [{"order_id": "o", "amount": -1, "currency": "EUR"}]}),
                "invalid_example",
            ),
            ("hub.test", json!({}), "reserved_topic"),
            ("openapi.json", json!({}), "reserved_topic"),
            ("no", json!({}), "invalid_topic"),
        ] {
            let answer = hub
                .call(
                    "PUT",
                    &format!("/v1/event-types/{topic}"),
                    Some(KEY_A),
                    Some(body),
                )
                .await;
            assert_eq!(answer.status, 400, "{topic}: {}", answer.body);
            assert_eq!(answer.body["code"], code, "{}", answer.body);
        }
        let bad_example = hub
            .call(
                "PUT",
                "/v1/event-types/order.bad",
                Some(KEY_A),
                Some(json!({"schema": order_paid_schema(), "examples": [{"order_id": "o", "amount": -1, "currency": "EUR"}]})),
            )
            .await;
        assert!(
            bad_example.body["message"]
                .as_str()
                .unwrap()
                .contains("/examples/0/amount"),
            "{}",
            bad_example.body
        );

        // The list, in topic order, the deprecated type marked; another account sees nothing.
        let list = hub
            .call("GET", "/v1/event-types", Some(KEY_READER), None)
            .await;
        assert_eq!(list.status, 200, "{}", list.body);
        let topics: Vec<&str> = list.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["topic"].as_str().unwrap())
            .collect();
        assert_eq!(topics, ["order.legacy", "order.paid"]);
        assert_eq!(list.body["data"][0]["deprecated"], true);
        assert_eq!(list.body["data"][1]["schema"], order_paid_schema());
        assert_eq!(list.body["data"][1]["examples"][0]["amount"], 1250);
        let other = hub.call("GET", "/v1/event-types", Some(KEY_B), None).await;
        assert_eq!(other.body["data"], json!([]));
        let one = hub
            .call("GET", "/v1/event-types/order.paid", Some(KEY_A), None)
            .await;
        assert_eq!(one.status, 200);
        assert_eq!(one.body["description"], "An order was paid in full.");

        // The default settings: warn, unknown topics allowed.
        let settings = hub.call("GET", "/v1/settings", Some(KEY_A), None).await;
        assert_eq!(
            settings.body,
            json!({"schema_validation": "warn", "unknown_topics": "allow"})
        );

        subscribe_confirmed(
            &hub,
            &receiver,
            KEY_A,
            "/orders",
            json!({"topics": ["order.*"]}),
        )
        .await;

        // Enforce: a valid event is delivered; an invalid one is refused with the pointer.
        set(&hub, json!({"schema_validation": "enforce"})).await;
        publish(
            &hub,
            KEY_A,
            json!({"topic": "order.paid", "data": {"order_id": "o-2", "amount": 5, "currency": "USD"}}),
        )
        .await;
        receiver
            .wait_for_match(WAIT, |r| r.json()["data"]["order_id"] == "o-2")
            .await;
        let invalid = publish_answer(
            &hub,
            json!({"topic": "order.paid", "data": {"order_id": "o-3", "amount": -5, "currency": "USD"}}),
        )
        .await;
        assert_eq!(invalid.status, 400, "{}", invalid.body);
        assert_eq!(invalid.body["code"], "schema_violation");
        assert_eq!(invalid.body["violations"][0]["pointer"], "/data/amount");
        assert!(
            invalid.body["message"]
                .as_str()
                .unwrap()
                .contains("/data/amount"),
            "{}",
            invalid.body
        );
        let missing = publish_answer(
            &hub,
            json!({"topic": "order.paid", "data": {"order_id": "o-4", "amount": 1}}),
        )
        .await;
        assert_eq!(missing.body["violations"][0]["pointer"], "/data");
        assert!(
            missing.body["violations"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("currency"),
            "{}",
            missing.body
        );
        // In a batch, only the invalid event is refused, with its violations.
        let batch = publish_answer(
            &hub,
            json!({"events": [
                {"topic": "order.paid", "data": {"order_id": "o-5", "amount": 1, "currency": "EUR"}},
                {"topic": "order.paid", "data": {"order_id": "o-6", "amount": "1", "currency": "EUR"}}
            ]}),
        )
        .await;
        assert_eq!(batch.status, 207, "{}", batch.body);
        assert_eq!(batch.body["data"][1]["code"], "schema_violation");
        assert_eq!(
            batch.body["data"][1]["violations"][0]["pointer"],
            "/data/amount"
        );
        receiver
            .wait_for_match(WAIT, |r| r.json()["data"]["order_id"] == "o-5")
            .await;
        assert_eq!(mismatches(&hub, "refused").await, 3);

        // Warn: the invalid event is delivered, counted, and the answer says what did not match.
        set(&hub, json!({"schema_validation": "warn"})).await;
        let warned = publish(
            &hub,
            KEY_A,
            json!({"topic": "order.paid", "data": {"order_id": "o-7", "amount": -7, "currency": "EUR"}}),
        )
        .await;
        assert_eq!(warned["schema_violations"][0]["pointer"], "/data/amount");
        receiver
            .wait_for_match(WAIT, |r| r.json()["data"]["order_id"] == "o-7")
            .await;
        assert_eq!(mismatches(&hub, "accepted").await, 1);
        // The log is written every few milliseconds by a thread of its own: waited for.
        eventually(WAIT, "warn logs it", || async {
            hub.log()
                .contains("does not match its schema")
                .then_some(())
        })
        .await;

        // Off: nothing is checked or counted.
        set(&hub, json!({"schema_validation": "off"})).await;
        let unchecked = publish(
            &hub,
            KEY_A,
            json!({"topic": "order.paid", "data": {"order_id": "o-8"}}),
        )
        .await;
        assert!(unchecked.get("schema_violations").is_none());
        assert_eq!(mismatches(&hub, "accepted").await, 1);

        // Unknown topics: refused when the account says so, allowed otherwise.
        set(&hub, json!({"unknown_topics": "refuse"})).await;
        let unknown = publish_answer(
            &hub,
            json!({"topic": "order.refunded", "data": {"order_id": "o-9"}}),
        )
        .await;
        assert_eq!(unknown.status, 400, "{}", unknown.body);
        assert_eq!(unknown.body["code"], "unknown_event_type");
        publish(
            &hub,
            KEY_A,
            json!({"topic": "order.legacy", "data": {"order_id": "o-10"}}),
        )
        .await;
        receiver
            .wait_for_match(WAIT, |r| r.json()["data"]["order_id"] == "o-10")
            .await;
        set(&hub, json!({"unknown_topics": "allow"})).await;
        publish(
            &hub,
            KEY_A,
            json!({"topic": "order.refunded", "data": {"order_id": "o-11"}}),
        )
        .await;
        receiver
            .wait_for_match(WAIT, |r| r.json()["data"]["order_id"] == "o-11")
            .await;
        let bad_setting = hub
            .call(
                "PATCH",
                "/v1/settings",
                Some(KEY_A),
                Some(json!({"schema_validation": "strict"})),
            )
            .await;
        assert_eq!(bad_setting.status, 400, "{}", bad_setting.body);

        // Archiving: gone from the list (kept when asked for), undeclared at publish.
        let archived = hub
            .call("DELETE", "/v1/event-types/order.legacy", Some(KEY_A), None)
            .await;
        assert_eq!(archived.status, 200, "{}", archived.body);
        assert_eq!(archived.body["archived"], true);
        let list = hub.call("GET", "/v1/event-types", Some(KEY_A), None).await;
        assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
        let all = hub
            .call(
                "GET",
                "/v1/event-types?include_archived=true",
                Some(KEY_A),
                None,
            )
            .await;
        assert_eq!(all.body["data"].as_array().unwrap().len(), 2);
        set(&hub, json!({"unknown_topics": "refuse"})).await;
        let gone = publish_answer(&hub, json!({"topic": "order.legacy", "data": {}})).await;
        assert_eq!(gone.body["code"], "unknown_event_type", "{}", gone.body);
        let again = hub
            .call("DELETE", "/v1/event-types/order.legacy", Some(KEY_A), None)
            .await;
        assert_eq!(again.status, 404);
    }

    /// The exported document passes an OpenAPI 3.1 validator, and every example, wrapped as it
    /// is delivered, validates against its webhook's request body; `catalog export` gives the
    /// same document from the store.
    pub async fn the_catalog_exports_as_openapi(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        declare_orders(&hub).await;
        let nested = hub
            .call(
                "PUT",
                "/v1/event-types/door.opened",
                Some(KEY_A),
                Some(json!({
                    "description": "A door was opened.",
                    "schema": {"type": "object", "properties": {"door": {"type": "string"}, "by": {"$ref": "#/$defs/person"}},
                               "$defs": {"person": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}},
                    "examples": [{"door": "front"}, {"door": "back", "by": {"name": "Ann"}}]
                })),
            )
            .await;
        assert_eq!(nested.status, 200, "{}", nested.body);
        let document = hub
            .call("GET", "/v1/event-types/openapi.json", Some(KEY_A), None)
            .await;
        assert_eq!(document.status, 200, "{}", document.body);
        assert_eq!(
            document.body["webhooks"]["order.legacy"]["post"]["deprecated"],
            true
        );
        let checked = check_document(&document.body);
        assert_eq!(checked, "valid 3 webhooks, 4 examples", "{checked}");
        if let Some(data) = &hub.data {
            let (status, out) = run_to_end(&[
                "catalog".as_ref(),
                "export".as_ref(),
                "--account".as_ref(),
                "acme".as_ref(),
                "--data".as_ref(),
                data.as_os_str(),
            ]);
            assert!(status.success(), "{out}");
            let exported: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(exported, document.body, "the command exports the same");
        }
    }
}

/// Validates `document` with `openapi-spec-validator` (OpenAPI 3.1), then every example of
/// every webhook against that webhook's request-body schema with `jsonschema` (draft 2020-12,
/// references resolved within the document). Answers "valid N webhooks, M examples" or what
/// failed.
fn check_document(document: &Value) -> String {
    let script = r#"
import sys, json
from openapi_spec_validator import validate
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
doc = json.load(sys.stdin)
try:
    validate(doc)
except Exception as e:
    print("invalid document:", e); sys.exit(0)
registry = Registry().with_resource("urn:catalog", Resource(contents=doc, specification=DRAFT202012))
examples = 0
for name, item in doc["webhooks"].items():
    media = item["post"]["requestBody"]["content"]["application/json"]
    pointer = "/webhooks/" + name.replace("~", "~0").replace("/", "~1") + "/post/requestBody/content/application~1json/schema"
    validator = Draft202012Validator({"$ref": "urn:catalog#" + pointer}, registry=registry)
    for key, example in media.get("examples", {}).items():
        errors = list(validator.iter_errors(example["value"]))
        if errors:
            print("example", name, key, "does not validate:", errors[0].message); sys.exit(0)
        examples += 1
    bad = dict(next(iter(media.get("examples", {}).values()), {"value": {}})["value"], type="other.topic")
    if validator.is_valid(bad):
        print("a delivery of another type validates against", name); sys.exit(0)
print(f"valid {len(doc['webhooks'])} webhooks, {examples} examples")
"#;
    String::from_utf8(venv_python(script, &serde_json::to_vec(document).unwrap()))
        .unwrap()
        .trim()
        .to_string()
}

on_every_backend!(
    a_catalog_checks_what_is_published,
    the_catalog_exports_as_openapi
);

/// The catalog store contract, on every adapter directly: types in topic order, a replace in
/// place, settings apart, accounts apart.
mod catalog_store {

    use hub::catalog::{CatalogSettings, EventType, SchemaValidation, UnknownTopics};
    use hub::topic::Topic;

    use super::*;

    fn event_type(topic: &str, description: &str) -> EventType {
        EventType {
            topic: Topic::parse(topic).unwrap(),
            description: description.into(),
            schema: Some(json!({"type": "object"})),
            examples: vec![json!({"n": 1})],
            deprecated: false,
            archived: false,
            created_ms: 1,
            updated_ms: 2,
        }
    }

    async fn contract(store: &dyn CatalogStore) {
        let account = unique("acct#%");
        let empty = store.catalog(&account).await.unwrap();
        assert!(empty.types.is_empty() && empty.settings.is_none());
        store
            .put_event_type(&account, &event_type("b.second", "two"))
            .await
            .unwrap();
        store
            .put_event_type(&account, &event_type("a.first", "one"))
            .await
            .unwrap();
        let mut replaced = event_type("b.second", "two, again");
        replaced.deprecated = true;
        store.put_event_type(&account, &replaced).await.unwrap();
        let settings = CatalogSettings {
            schema_validation: SchemaValidation::Enforce,
            unknown_topics: UnknownTopics::Refuse,
        };
        store
            .put_catalog_settings(&account, &settings)
            .await
            .unwrap();
        let read = store.catalog(&account).await.unwrap();
        assert_eq!(read.types, vec![event_type("a.first", "one"), replaced]);
        assert_eq!(read.settings, Some(settings));
        let neighbour = store.catalog(&format!("{account}x")).await.unwrap();
        assert!(neighbour.types.is_empty() && neighbour.settings.is_none());
    }

    contract_on_every_store!();
}
