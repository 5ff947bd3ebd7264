//! The event-type catalog's domain (docs/catalog.md): an account's declared topics, each with a
//! description, an optional JSON Schema (draft 2020-12) of its `data`, examples and a
//! `deprecated` mark; the account's settings for checking events at publish; compiled schemas
//! and the violations they find; and the catalog as an OpenAPI 3.1 document for receivers.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{ErrorCode, HubError, Result};
use crate::topic::Topic;

/// Most event types one account declares (archived ones included): the catalog is read whole.
pub const MAX_EVENT_TYPES: usize = 500;
/// Largest schema of one type, serialized.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Most examples of one type.
pub const MAX_EXAMPLES: usize = 10;
/// Largest example, serialized.
pub const MAX_EXAMPLE_BYTES: usize = 16 * 1024;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
/// Most violations an answer or a log line lists (the first ones found).
pub const MAX_VIOLATIONS_SHOWN: usize = 10;
/// The one topic name the catalog's routes keep for themselves (`/v1/event-types/openapi.json`
/// is the exported document).
pub const EXPORT_NAME: &str = "openapi.json";
/// The JSON Schema dialect of every schema in the catalog.
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// One declared topic of an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventType {
    /// The topic it declares.
    pub topic: Topic,
    /// What the event means, for the people who subscribe to it.
    pub description: String,
    /// The JSON Schema (2020-12) of its `data`, if it has one.
    pub schema: Option<Value>,
    /// Example `data` payloads (each valid against the schema).
    pub examples: Vec<Value>,
    /// Still published, but on its way out: marked in every listing and in the exported document.
    pub deprecated: bool,
    /// Removed from the catalog (`DELETE`): kept for the record, absent from listings unless
    /// asked for, and treated as an unknown topic at publish until it is declared again.
    pub archived: bool,
    /// When it was first declared, Unix ms.
    pub created_ms: i64,
    /// When it last changed, Unix ms.
    pub updated_ms: i64,
}

/// How publish checks an event's `data` against its type's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaValidation {
    /// Not checked.
    Off,
    /// Checked; a mismatch is accepted, counted (`/metrics`) and logged, and the publish answer
    /// lists what did not match.
    #[default]
    Warn,
    /// Checked; a mismatch is refused (`400 schema_violation`, with the first violations).
    Enforce,
}

/// What publish does with a topic the catalog does not declare (or has archived).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownTopics {
    /// Published like any other.
    #[default]
    Allow,
    /// Refused (`400 unknown_event_type`): only declared topics are published.
    Refuse,
}

/// An account's catalog settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CatalogSettings {
    /// How `data` is checked against a schema.
    pub schema_validation: SchemaValidation,
    /// What happens to undeclared topics.
    pub unknown_topics: UnknownTopics,
}

/// An account's catalog as a store holds it.
#[derive(Debug, Clone, Default)]
pub struct StoredCatalog {
    /// Every type, archived ones included, in topic order.
    pub types: Vec<EventType>,
    /// Its settings, if they were ever set.
    pub settings: Option<CatalogSettings>,
}

/// One place where `data` does not match a schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// JSON pointer of the offending value, from the event (`/data/amount`).
    pub pointer: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A schema compiled once for repeated validation (docs/catalog.md, "Validation at publish").
pub struct CompiledSchema(jsonschema::Validator);

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompiledSchema")
    }
}

impl CompiledSchema {
    /// Compiles `schema` as draft 2020-12. Refused: another `$schema` dialect, a schema that is
    /// not valid 2020-12, and references the catalog cannot resolve (nothing is fetched).
    pub fn compile(schema: &Value) -> Result<Self> {
        let invalid = |reason: String| {
            HubError::invalid(
                ErrorCode::InvalidSchema,
                format!("`schema` is not a usable JSON Schema (draft 2020-12): {reason}"),
            )
        };
        if !matches!(schema, Value::Object(_) | Value::Bool(_)) {
            return Err(invalid(
                "a schema is a JSON object (or true / false)".into(),
            ));
        }
        if let Some(dialect) = schema.get("$schema")
            && dialect.as_str().map(|d| d.trim_end_matches('#')) != Some(DIALECT)
        {
            return Err(invalid(format!("`$schema` must be {DIALECT}")));
        }
        if serde_json::to_vec(schema).map_or(usize::MAX, |s| s.len()) > MAX_SCHEMA_BYTES {
            return Err(invalid(format!("larger than {MAX_SCHEMA_BYTES} bytes")));
        }
        jsonschema::draft202012::meta::validate(schema).map_err(|e| invalid(e.to_string()))?;
        jsonschema::draft202012::new(schema)
            .map(CompiledSchema)
            .map_err(|e| invalid(e.to_string()))
    }

    /// The first [`MAX_VIOLATIONS_SHOWN`] places where `value` does not match, their pointers
    /// under `at` (`/data` for an event, `/examples/0` for an example).
    pub fn violations(&self, value: &Value, at: &str) -> Vec<Violation> {
        if self.0.is_valid(value) {
            return Vec::new();
        }
        self.0
            .iter_errors(value)
            .take(MAX_VIOLATIONS_SHOWN)
            .map(|error| Violation {
                pointer: format!("{at}{}", error.instance_path().as_str()),
                reason: error.to_string(),
            })
            .collect()
    }
}

/// A declared type as publish sees it: its record and its compiled schema.
#[derive(Debug)]
pub struct LiveType {
    /// The record.
    pub event_type: EventType,
    /// Its schema, compiled (`None`: the type has no schema).
    pub compiled: Option<Arc<CompiledSchema>>,
}

/// What the catalog says of one event at publish.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Publish it.
    Pass,
    /// Publish it, and say what did not match (warn).
    PassWithViolations(Vec<Violation>),
    /// Refuse it: its data does not match (enforce).
    Mismatch(Vec<Violation>),
    /// Refuse it: the topic is not declared and undeclared topics are refused.
    Undeclared,
}

/// One account's catalog, ready for publish: its settings and every live (not archived) type
/// with its compiled schema. Built from a [`StoredCatalog`], reusing what an earlier view
/// compiled when a schema did not change.
#[derive(Debug, Default)]
pub struct CatalogView {
    /// The settings in force.
    pub settings: CatalogSettings,
    /// Live types by topic.
    pub types: HashMap<String, Arc<LiveType>>,
}

impl CatalogView {
    /// The view of `stored`; a type whose schema equals its type's in `previous` keeps that
    /// compiled schema (compiling is the expensive part). A stored schema that no longer
    /// compiles (written by another build) validates nothing, and is logged.
    pub fn build(stored: StoredCatalog, previous: Option<&CatalogView>) -> Self {
        let mut types = HashMap::new();
        for event_type in stored.types.into_iter().filter(|t| !t.archived) {
            let key = event_type.topic.as_str().to_string();
            let reused = previous
                .and_then(|p| p.types.get(&key))
                .filter(|old| old.event_type.schema == event_type.schema)
                .map(|old| old.compiled.clone());
            let compiled = match reused {
                Some(compiled) => compiled,
                None => event_type.schema.as_ref().and_then(|schema| {
                    CompiledSchema::compile(schema)
                        .inspect_err(|e| tracing::warn!(topic = %key, error = %e, "a stored schema does not compile; not validated"))
                        .ok()
                        .map(Arc::new)
                }),
            };
            types.insert(
                key,
                Arc::new(LiveType {
                    event_type,
                    compiled,
                }),
            );
        }
        CatalogView {
            settings: stored.settings.unwrap_or_default(),
            types,
        }
    }

    /// What the catalog says of an event of `topic` carrying `data`: the one rule of
    /// validation at publish.
    pub fn check(&self, topic: &Topic, data: &Value) -> Verdict {
        let Some(live) = self.types.get(topic.as_str()) else {
            return match self.settings.unknown_topics {
                UnknownTopics::Allow => Verdict::Pass,
                UnknownTopics::Refuse => Verdict::Undeclared,
            };
        };
        let mode = self.settings.schema_validation;
        let Some(compiled) = live
            .compiled
            .as_ref()
            .filter(|_| mode != SchemaValidation::Off)
        else {
            return Verdict::Pass;
        };
        let violations = compiled.violations(data, "/data");
        match (violations.is_empty(), mode) {
            (true, _) => Verdict::Pass,
            (false, SchemaValidation::Enforce) => Verdict::Mismatch(violations),
            (false, _) => Verdict::PassWithViolations(violations),
        }
    }
}

/// The `$ref`s of a type's schema moved to where the exported document places it: a local
/// reference (`#/$defs/x`) points inside the schema, so it gets the schema's own path in front.
fn relocate_refs(value: &mut Value, base: &str) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                match inner {
                    Value::String(reference)
                        if (key == "$ref" || key == "$dynamicRef")
                            && reference.starts_with('#') =>
                    {
                        *reference = format!("{base}{}", &reference[1..]);
                    }
                    _ => relocate_refs(inner, base),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| relocate_refs(v, base)),
        _ => {}
    }
}

/// What every delivery's headers carry, as OpenAPI header parameters.
fn signature_headers() -> Value {
    json!([
        {"name": "webhook-id", "in": "header", "required": true,
         "description": "The delivery's id: the same on every retry of it (deduplicate on it).",
         "schema": {"type": "string"}},
        {"name": "webhook-timestamp", "in": "header", "required": true,
         "description": "Unix seconds when this attempt was signed; refuse old ones (replays).",
         "schema": {"type": "string", "pattern": "^[0-9]+$"}},
        {"name": "webhook-signature", "in": "header", "required": true,
         "description": "Space-separated signatures: `v1,<base64 HMAC-SHA256 of \"{webhook-id}.{webhook-timestamp}.{body}\">` (Standard Webhooks), or `v1a,<base64 Ed25519>`; several during a secret rotation.",
         "schema": {"type": "string"}}
    ])
}

/// The envelope every event delivery wraps `data` in.
fn envelope_schema() -> Value {
    json!({
        "type": "object",
        "description": "The envelope of every event delivery; `data` is the event type's own payload.",
        "required": ["id", "type", "timestamp", "account", "subscription_id", "data"],
        "properties": {
            "id": {"type": "string", "description": "The event id (evt_…)."},
            "type": {"type": "string", "description": "The topic."},
            "timestamp": {"type": "string", "format": "date-time", "description": "When it was published."},
            "account": {"type": "string"},
            "subscription_id": {"type": "string", "description": "The subscription it was delivered to."},
            "owner": {"type": "string", "description": "The customer the event concerns, when it names one."},
            "broadcast": {"type": "boolean", "description": "Present (true) when sent to every customer on purpose."},
            "user_data": {"description": "The subscription's user_data, echoed."},
            "data": {}
        }
    })
}

/// The catalog as an OpenAPI 3.1 document: each live type is a `webhooks` entry whose request
/// body is the delivery envelope with `data` from its schema, with the signature headers and
/// examples, so a receiver can generate its types from it (docs/catalog.md, "For receivers").
pub fn openapi_document(account: &str, types: &[EventType]) -> Value {
    let mut webhooks = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    schemas.insert("Envelope".into(), envelope_schema());
    for event_type in types.iter().filter(|t| !t.archived) {
        let topic = event_type.topic.as_str();
        let data_path = format!("#/components/schemas/{topic}");
        let data_schema = match &event_type.schema {
            Some(schema) => {
                let mut schema = schema.clone();
                relocate_refs(&mut schema, &data_path);
                if let Value::Object(map) = &mut schema {
                    map.remove("$schema");
                    map.remove("$id");
                }
                schema
            }
            None => json!({"description": "This event type declares no schema."}),
        };
        schemas.insert(topic.to_string(), data_schema);
        let body_schema = json!({
            "allOf": [{"$ref": "#/components/schemas/Envelope"}],
            "properties": {
                "type": {"const": topic},
                "data": {"$ref": data_path},
            }
        });
        let examples: serde_json::Map<String, Value> = event_type
            .examples
            .iter()
            .enumerate()
            .map(|(i, data)| {
                let delivery = json!({
                    "id": "evt_0193a5b2c4d00000000000000000",
                    "type": topic,
                    "timestamp": "2026-12-01T10:00:00.000Z",
                    "account": account,
                    "subscription_id": "sub_0193a5b2c4d00000000000000000",
                    "data": data,
                    "user_data": null,
                });
                (format!("example{}", i + 1), json!({"value": delivery}))
            })
            .collect();
        let mut media = json!({"schema": body_schema});
        if !examples.is_empty() {
            media["examples"] = Value::Object(examples);
        }
        let mut operation = json!({
            "operationId": topic,
            "summary": topic,
            "description": event_type.description,
            "parameters": signature_headers(),
            "requestBody": {"required": true, "content": {"application/json": media}},
            "responses": {
                "2XX": {"description": "Delivered. Anything else is retried on the schedule; 410 unsubscribes."}
            }
        });
        if event_type.deprecated {
            operation["deprecated"] = json!(true);
        }
        webhooks.insert(topic.to_string(), json!({"post": operation}));
    }
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": DIALECT,
        "info": {
            "title": format!("Webhooks of {account}"),
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every event type a subscription may receive from webhook-hub, as delivered: \
                the envelope, the event's data, and the Standard Webhooks signature headers."
        },
        "webhooks": webhooks,
        "components": {"schemas": schemas}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_type(topic: &str, schema: Option<Value>) -> EventType {
        EventType {
            topic: Topic::parse(topic).unwrap(),
            description: "d".into(),
            schema,
            examples: vec![],
            deprecated: false,
            archived: false,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    fn view(settings: CatalogSettings, types: Vec<EventType>) -> CatalogView {
        CatalogView::build(
            StoredCatalog {
                types,
                settings: Some(settings),
            },
            None,
        )
    }

    #[test]
    fn violations_point_into_the_event() {
        let schema = CompiledSchema::compile(&json!({
            "type": "object", "required": ["amount"],
            "properties": {"amount": {"type": "integer", "minimum": 0}}
        }))
        .unwrap();
        assert!(schema.violations(&json!({"amount": 3}), "/data").is_empty());
        let found = schema.violations(&json!({"amount": -1}), "/data");
        assert_eq!(found[0].pointer, "/data/amount");
        assert!(found[0].reason.contains("minimum"), "{found:?}");
        let missing = schema.violations(&json!({}), "/data");
        assert_eq!(missing[0].pointer, "/data");
    }

    #[test]
    fn only_2020_12_schemas_that_resolve_compile() {
        for bad in [
            json!({"$schema": "http://json-schema.org/draft-07/schema#"}),
            json!({"type": "no-such-type"}),
            json!({"$ref": "https://example.com/remote.json"}),
            json!("a string"),
        ] {
            let err = CompiledSchema::compile(&bad).unwrap_err();
            assert_eq!(err.code(), "invalid_schema", "{bad}");
        }
        CompiledSchema::compile(
            &json!({"$schema": DIALECT, "$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n"}),
        )
        .unwrap();
    }

    #[test]
    fn the_settings_decide_the_verdict() {
        let types = vec![event_type(
            "door.opened",
            Some(json!({"type": "object", "required": ["door"]})),
        )];
        let topic = Topic::parse("door.opened").unwrap();
        let other = Topic::parse("door.closed").unwrap();
        let bad = json!({});
        let with = |schema_validation, unknown_topics| {
            view(
                CatalogSettings {
                    schema_validation,
                    unknown_topics,
                },
                types.clone(),
            )
        };
        use SchemaValidation::*;
        use UnknownTopics::*;
        assert_eq!(with(Off, Allow).check(&topic, &bad), Verdict::Pass);
        assert!(matches!(
            with(Warn, Allow).check(&topic, &bad),
            Verdict::PassWithViolations(_)
        ));
        assert!(matches!(
            with(Enforce, Allow).check(&topic, &bad),
            Verdict::Mismatch(_)
        ));
        assert_eq!(
            with(Enforce, Allow).check(&topic, &json!({"door": 1})),
            Verdict::Pass
        );
        assert_eq!(with(Enforce, Allow).check(&other, &bad), Verdict::Pass);
        assert_eq!(with(Off, Refuse).check(&other, &bad), Verdict::Undeclared);
        let mut archived = types.clone();
        archived[0].archived = true;
        let v = view(
            CatalogSettings {
                schema_validation: Enforce,
                unknown_topics: Refuse,
            },
            archived,
        );
        assert_eq!(v.check(&topic, &bad), Verdict::Undeclared, "archived");
    }

    #[test]
    fn the_document_places_local_refs_under_the_type() {
        let types = vec![event_type(
            "order.paid",
            Some(
                json!({"$defs": {"money": {"type": "integer"}}, "properties": {"amount": {"$ref": "#/$defs/money"}}}),
            ),
        )];
        let doc = openapi_document("acme", &types);
        assert_eq!(
            doc["components"]["schemas"]["order.paid"]["properties"]["amount"]["$ref"],
            "#/components/schemas/order.paid/$defs/money"
        );
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["webhooks"]["order.paid"]["post"]["requestBody"].is_object());
    }
}

#[cfg(test)]
mod hostile {
    use super::*;

    /// Schemas that refer to themselves in a loop are refused or validate in bounded time,
    /// never hang or overflow the stack.
    #[test]
    fn reference_loops_do_not_hang() {
        for schema in [
            json!({"$ref": "#"}),
            json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
            json!({"properties": {"x": {"$ref": "#"}}}),
            json!({"pattern": "^(a+)+$"}),
        ] {
            if let Ok(compiled) = CompiledSchema::compile(&schema) {
                let _ = compiled.violations(&json!({"x": {"x": {"x": 1}}}), "/data");
                let _ = compiled
                    .violations(&json!("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!"), "/data");
            }
        }
    }
}
