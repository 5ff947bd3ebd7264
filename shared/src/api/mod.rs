//! The HTTP API: routing, JSON in and out, the error mapping and the security headers.
//! Lambda ([`lambda`]) and the embedded server both hand their requests to [`handle`].

pub mod lambda;
pub mod portal;
pub mod resources;

use std::time::Instant;

use bytes::Bytes;
use http::{Method, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::context::Hub;
use crate::error::{ErrorCode, HubError, Result};
use crate::service::events::PublishRequest;
use crate::service::history::EventListRequest;
use crate::service::recovery::RecoverRequest;
use crate::service::subscriptions::{SubscribeRequest, UpdateRequest};
use crate::trace::{TraceParent, spans};
use resources::{
    AttemptOut, AttemptPageOut, CreatedSubscriptionOut, DeletedOut, EventDetailOut, EventOut,
    EventPageOut, EventTypeOut, EventTypePageOut, PortalSessionOut, PublishBatchOut,
    PublishItemOut, PublishedOut, RecoveredOut, ResentOut, SecretOut, SettingsOut, SubscriptionOut,
    SubscriptionPageOut, TestEventOut, to_json,
};
use tracing::Instrument;

/// Largest request body the API reads: room for a batch publish of 100 events (each event's own
/// limits are checked on it).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Headers on every API response.
pub const SECURITY_HEADERS: [(&str, &str); 6] = [
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("content-security-policy", "default-src 'none'"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

/// Every operation of the API. Each Lambda function serves a subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `POST /v1/subscriptions`
    Subscribe,
    /// `GET /v1/subscriptions`
    List,
    /// `DELETE /v1/subscriptions?owner=me`
    UnsubscribeOwn,
    /// `GET /v1/subscriptions/{id}`
    Get,
    /// `PATCH /v1/subscriptions/{id}`
    Update,
    /// `DELETE /v1/subscriptions/{id}`
    Unsubscribe,
    /// `GET /v1/subscriptions/{id}/confirm`
    Confirm,
    /// `GET /v1/subscriptions/{id}/deliveries`
    Deliveries,
    /// `GET /v1/subscriptions/{id}/secret`
    Secret,
    /// `POST /v1/subscriptions/{id}/secret/rotate`
    RotateSecret,
    /// `POST /v1/events`
    Publish,
    /// `POST /v1/subscriptions/{id}/deliveries/{event_id}/resend`
    Resend,
    /// `POST /v1/subscriptions/{id}/recover`
    Recover,
    /// `POST /v1/subscriptions/{id}/test`
    SendTest,
    /// `POST /v1/portal/sessions`
    MintPortalSession,
    /// `GET /portal`: the customer portal, its assets and its API under `/portal/api`.
    Portal,
    /// `GET /v1/events`
    ListEvents,
    /// `GET /v1/events/{event_id}`
    ReadEvent,
    /// `GET /v1/event-types`
    ListEventTypes,
    /// `GET /v1/event-types/openapi.json`
    ExportCatalog,
    /// `PUT /v1/event-types/{topic}`
    PutEventType,
    /// `GET /v1/event-types/{topic}`
    GetEventType,
    /// `DELETE /v1/event-types/{topic}`
    ArchiveEventType,
    /// `GET /v1/settings`
    ReadSettings,
    /// `PATCH /v1/settings`
    UpdateSettings,
}

impl Operation {
    /// Every operation (the embedded server serves them all).
    pub const ALL: &'static [Operation] = &[
        Operation::Subscribe,
        Operation::List,
        Operation::UnsubscribeOwn,
        Operation::Get,
        Operation::Update,
        Operation::Unsubscribe,
        Operation::Confirm,
        Operation::Deliveries,
        Operation::Secret,
        Operation::RotateSecret,
        Operation::Publish,
        Operation::Resend,
        Operation::Recover,
        Operation::SendTest,
        Operation::MintPortalSession,
        Operation::Portal,
        Operation::ListEvents,
        Operation::ReadEvent,
        Operation::ListEventTypes,
        Operation::ExportCatalog,
        Operation::PutEventType,
        Operation::GetEventType,
        Operation::ArchiveEventType,
        Operation::ReadSettings,
        Operation::UpdateSettings,
    ];
}

/// The API Lambda functions: each serves a subset of the operations (as `template.yaml` routes
/// them), and its `main.rs` names it here, so a typo does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFunction {
    /// `POST /v1/subscriptions`.
    Subscribe,
    /// The confirmation link.
    Confirm,
    /// Removal, one or all of the caller's own.
    Unsubscribe,
    /// Reads, updates, delivery logs, secrets, resend, recover, test events, the event history,
    /// the event-type catalog and settings, and the portal (its sessions, page and API).
    Manage,
    /// `POST /v1/events`.
    Publish,
}

impl ApiFunction {
    /// Every API function.
    pub const ALL: &'static [ApiFunction] = &[
        ApiFunction::Subscribe,
        ApiFunction::Confirm,
        ApiFunction::Unsubscribe,
        ApiFunction::Manage,
        ApiFunction::Publish,
    ];

    /// Its name, as its crate under `functions/` and its sample under `events/` are named.
    pub fn name(self) -> &'static str {
        match self {
            ApiFunction::Subscribe => "subscribe",
            ApiFunction::Confirm => "confirm",
            ApiFunction::Unsubscribe => "unsubscribe",
            ApiFunction::Manage => "manage",
            ApiFunction::Publish => "publish",
        }
    }

    /// The operations it serves.
    pub fn operations(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            ApiFunction::Subscribe => &[Subscribe],
            ApiFunction::Confirm => &[Confirm],
            ApiFunction::Unsubscribe => &[Unsubscribe, UnsubscribeOwn],
            ApiFunction::Manage => &[
                List,
                Get,
                Update,
                Deliveries,
                Secret,
                RotateSecret,
                Resend,
                Recover,
                SendTest,
                MintPortalSession,
                Portal,
                ListEvents,
                ReadEvent,
                ListEventTypes,
                ExportCatalog,
                PutEventType,
                GetEventType,
                ArchiveEventType,
                ReadSettings,
                UpdateSettings,
            ],
            ApiFunction::Publish => &[Publish],
        }
    }
}

/// A request as the router sees it, whichever server received it.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// Method.
    pub method: Method,
    /// Path, without the query.
    pub path: String,
    /// Raw query string.
    pub query: Option<String>,
    /// Raw body.
    pub body: Bytes,
    /// Request id for the logs.
    pub request_id: String,
    /// The `Authorization: Bearer` token, where one came; read here only by the portal's API
    /// (the servers resolve every other caller before the router).
    pub bearer: Option<String>,
    /// The producer's trace context (its `traceparent` header), where a valid one came: the
    /// events it publishes continue that trace.
    pub traceparent: Option<crate::trace::TraceParent>,
}

/// Every route of the API: method, path template (`{id}` is a subscription id, `{event_id}` an
/// event's, `{topic}` an event type's), operation.
/// The router, the Lambda functions and the OpenAPI coverage test all read this one table.
pub const ROUTES: &[(&str, &str, Operation)] = &[
    ("POST", "/v1/subscriptions", Operation::Subscribe),
    ("GET", "/v1/subscriptions", Operation::List),
    ("DELETE", "/v1/subscriptions", Operation::UnsubscribeOwn),
    ("GET", "/v1/subscriptions/{id}", Operation::Get),
    ("PATCH", "/v1/subscriptions/{id}", Operation::Update),
    ("DELETE", "/v1/subscriptions/{id}", Operation::Unsubscribe),
    ("GET", "/v1/subscriptions/{id}/confirm", Operation::Confirm),
    (
        "GET",
        "/v1/subscriptions/{id}/deliveries",
        Operation::Deliveries,
    ),
    ("GET", "/v1/subscriptions/{id}/secret", Operation::Secret),
    (
        "POST",
        "/v1/subscriptions/{id}/secret/rotate",
        Operation::RotateSecret,
    ),
    ("POST", "/v1/events", Operation::Publish),
    ("GET", "/v1/events", Operation::ListEvents),
    ("GET", "/v1/events/{event_id}", Operation::ReadEvent),
    (
        "POST",
        "/v1/subscriptions/{id}/deliveries/{event_id}/resend",
        Operation::Resend,
    ),
    ("POST", "/v1/subscriptions/{id}/recover", Operation::Recover),
    ("POST", "/v1/subscriptions/{id}/test", Operation::SendTest),
    ("POST", "/v1/portal/sessions", Operation::MintPortalSession),
    ("GET", "/portal", Operation::Portal),
    ("GET", "/v1/event-types", Operation::ListEventTypes),
    // Before `{topic}`: the export's name is kept out of the catalog's topics.
    (
        "GET",
        "/v1/event-types/openapi.json",
        Operation::ExportCatalog,
    ),
    ("PUT", "/v1/event-types/{topic}", Operation::PutEventType),
    ("GET", "/v1/event-types/{topic}", Operation::GetEventType),
    (
        "DELETE",
        "/v1/event-types/{topic}",
        Operation::ArchiveEventType,
    ),
    ("GET", "/v1/settings", Operation::ReadSettings),
    ("PATCH", "/v1/settings", Operation::UpdateSettings),
];

/// The ids a request's path names: the subscription (`{id}`) and, for a resend, the event
/// (`{event_id}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathIds {
    /// The subscription id.
    pub id: Option<String>,
    /// The event id.
    pub event_id: Option<String>,
    /// The event type's topic.
    pub topic: Option<String>,
}

/// The ids of `path` if it fits `template`.
fn match_template(template: &str, path: &str) -> Option<PathIds> {
    let mut ids = PathIds::default();
    let mut given = path.trim_end_matches('/').split('/');
    for want in template.split('/') {
        let got = given.next()?;
        let slot = match want {
            "{id}" => &mut ids.id,
            "{event_id}" => &mut ids.event_id,
            "{topic}" => &mut ids.topic,
            _ if want == got => continue,
            _ => return None,
        };
        if got.is_empty() {
            return None;
        }
        *slot = Some(got.to_string());
    }
    given.next().is_none().then_some(ids)
}

/// Finds the operation and the ids a request's path names.
pub fn route(method: &Method, path: &str) -> Result<(Operation, PathIds)> {
    let mut path_known = false;
    for (route_method, template, op) in ROUTES {
        if let Some(ids) = match_template(template, path) {
            path_known = true;
            if method.as_str() == *route_method {
                return Ok((*op, ids));
            }
        }
    }
    Err(if path_known {
        HubError::MethodNotAllowed
    } else {
        HubError::NotFound("route")
    })
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn query_usize(query: Option<&str>, name: &str) -> Result<Option<usize>> {
    query_param(query, name)
        .map(|v| {
            v.parse().map_err(|_| {
                HubError::invalid(
                    ErrorCode::InvalidLimit,
                    format!("`{name}` must be a positive integer"),
                )
            })
        })
        .transpose()
}

fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(HubError::invalid(
            ErrorCode::InvalidJson,
            "the request needs a JSON body",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| HubError::invalid(ErrorCode::InvalidJson, format!("invalid JSON body: {e}")))
}

/// A JSON response with the security headers.
pub fn respond(status: u16, body: Option<&Value>) -> http::Response<Bytes> {
    let mut builder = http::Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    for (name, value) in SECURITY_HEADERS {
        builder = builder.header(name, value);
    }
    let bytes = match body {
        Some(value) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(serde_json::to_vec(value).expect("JSON values serialize"))
        }
        None => Bytes::new(),
    };
    builder.body(bytes).expect("static headers are valid")
}

/// The JSON error body of a [`HubError`]; the one place errors become HTTP.
pub fn error_response(err: &HubError) -> http::Response<Bytes> {
    let mut body = json!({"code": err.code(), "message": err.public_message()});
    if !err.violations().is_empty() {
        body["violations"] = json!(err.violations());
    }
    let mut response = respond(err.status(), Some(&body));
    match err {
        HubError::Unauthorized => {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        HubError::InProgress { retry_after_secs }
        | HubError::StorageFull { retry_after_secs }
        | HubError::TooManyConfirmations {
            retry_after_secs, ..
        } => {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                http::HeaderValue::from(*retry_after_secs),
            );
        }
        _ => {}
    }
    response
}

/// Answers one API request. `allowed` is the set of operations this process serves (a Lambda
/// function serves its own); `caller` is the authenticated caller, if the request had a valid token.
pub async fn handle(
    hub: &Hub,
    allowed: &[Operation],
    req: ApiRequest,
    caller: Option<Caller>,
) -> http::Response<Bytes> {
    let started = Instant::now();
    let account = caller
        .as_ref()
        .map(|c| c.account.clone())
        .unwrap_or_default();
    let span = spans::request(
        req.method.as_str(),
        || route_template(&req),
        req.traceparent.as_ref(),
    );
    let result = if portal::is_portal_path(&req.path) {
        if allowed.contains(&Operation::Portal) {
            Ok(portal::answer(hub, &req).instrument(span.clone()).await)
        } else {
            Err(HubError::NotFound("route"))
        }
    } else {
        dispatch(hub, allowed, &req, caller)
            .instrument(span.clone())
            .await
            .map(|(status, body)| respond(status, body.as_ref()))
    };
    let response = match result {
        Ok(response) => response,
        Err(err) => {
            match &err {
                HubError::Backend(detail) => {
                    tracing::error!(request_id = %req.request_id, error = %detail, "backend failure")
                }
                HubError::Rejected(detail) => {
                    tracing::warn!(request_id = %req.request_id, error = %detail, "input refused by a backing service")
                }
                _ => {}
            }
            error_response(&err)
        }
    };
    spans::answered(&span, response.status().as_u16(), &account);
    tracing::info!(
        request_id = %req.request_id, account = %account, method = %req.method, path = %req.path,
        status = response.status().as_u16(), latency_ms = started.elapsed().as_millis() as u64, "request"
    );
    response
}

/// The route template a request matches (`/v1/subscriptions/{id}`; `/portal` for the portal's
/// pages), for its span's name.
fn route_template(req: &ApiRequest) -> Option<&'static str> {
    if portal::is_portal_path(&req.path) {
        return Some("/portal");
    }
    let (op, _) = route(&req.method, &req.path).ok()?;
    ROUTES
        .iter()
        .find(|(method, _, o)| *o == op && *method == req.method.as_str())
        .map(|(_, template, _)| *template)
}

async fn dispatch(
    hub: &Hub,
    allowed: &[Operation],
    req: &ApiRequest,
    caller: Option<Caller>,
) -> Result<(u16, Option<Value>)> {
    let (op, ids) = route(&req.method, &req.path)?;
    if !allowed.contains(&op) {
        return Err(HubError::NotFound("route"));
    }
    if req.body.len() > MAX_BODY_BYTES {
        return Err(HubError::PayloadTooLarge(MAX_BODY_BYTES));
    }
    let query = req.query.as_deref();
    if op == Operation::Confirm {
        let id = ids.id.unwrap_or_default();
        let token = query_param(query, "token").ok_or_else(|| {
            HubError::invalid(
                ErrorCode::MissingToken,
                "the `token` query parameter is required",
            )
        })?;
        let sub = hub.confirm(&id, &token).await?;
        return Ok((200, Some(to_json(&SubscriptionOut::from(&sub)))));
    }
    let caller = caller.ok_or(HubError::Unauthorized)?;
    dispatch_operation(hub, op, ids, req, caller).await
}

/// Runs one routed operation for an authenticated caller (the `/v1` API's and the portal's).
async fn dispatch_operation(
    hub: &Hub,
    op: Operation,
    ids: PathIds,
    req: &ApiRequest,
    caller: Caller,
) -> Result<(u16, Option<Value>)> {
    let query = req.query.as_deref();
    let id = ids.id.unwrap_or_default();
    match op {
        Operation::Subscribe => {
            let done = hub
                .subscribe(&caller, json_body::<SubscribeRequest>(&req.body)?)
                .await?;
            let subscription = SubscriptionOut::from(&done.subscription);
            Ok(if done.created {
                let created = CreatedSubscriptionOut {
                    subscription,
                    secret: done.secret.unwrap_or_default(),
                };
                (201, Some(to_json(&created)))
            } else {
                (200, Some(to_json(&subscription)))
            })
        }
        Operation::List => {
            let page = hub
                .list_subscriptions(
                    &caller,
                    query_usize(query, "limit")?,
                    query_param(query, "cursor").as_deref(),
                )
                .await?;
            let body = SubscriptionPageOut {
                data: page.items.iter().map(SubscriptionOut::from).collect(),
                next_cursor: page.next_cursor,
            };
            Ok((200, Some(to_json(&body))))
        }
        Operation::UnsubscribeOwn => {
            if query_param(query, "owner").as_deref() != Some("me") {
                return Err(HubError::invalid(
                    ErrorCode::MissingOwner,
                    "bulk removal takes `owner=me`",
                ));
            }
            let deleted = hub.unsubscribe_all_of_owner(&caller).await?;
            Ok((200, Some(to_json(&DeletedOut { deleted }))))
        }
        Operation::Get => {
            let sub = hub.get_subscription(&caller, &id).await?;
            Ok((200, Some(to_json(&SubscriptionOut::from(&sub)))))
        }
        Operation::Update => {
            let sub = hub
                .update_subscription(&caller, &id, json_body::<UpdateRequest>(&req.body)?)
                .await?;
            Ok((200, Some(to_json(&SubscriptionOut::from(&sub)))))
        }
        Operation::Unsubscribe => {
            hub.unsubscribe(&caller, &id).await?;
            Ok((204, None))
        }
        Operation::Deliveries => {
            let attempts = hub
                .deliveries_of(&caller, &id, query_usize(query, "limit")?)
                .await?;
            let body = AttemptPageOut {
                data: attempts.iter().map(AttemptOut::from).collect(),
            };
            Ok((200, Some(to_json(&body))))
        }
        Operation::Secret => {
            let secret = hub.subscription_secret(&caller, &id).await?;
            Ok((200, Some(to_json(&SecretOut { secret }))))
        }
        Operation::RotateSecret => {
            #[derive(serde::Deserialize, Default)]
            #[serde(deny_unknown_fields)]
            struct Rotate {
                secret: Option<String>,
            }
            let body: Rotate = if req.body.iter().all(u8::is_ascii_whitespace) {
                Rotate::default()
            } else {
                json_body(&req.body)?
            };
            let (_, secret) = hub.rotate_secret(&caller, &id, body.secret).await?;
            Ok((200, Some(to_json(&SecretOut { secret }))))
        }
        Operation::Publish => publish(hub, &caller, req).await,
        Operation::Resend => {
            let event_id = ids.event_id.unwrap_or_default();
            hub.resend(&caller, &id, &event_id).await?;
            Ok((202, Some(to_json(&ResentOut { event_id }))))
        }
        Operation::Recover => {
            let window: RecoverRequest = json_body(&req.body)?;
            let recovered = hub.recover(&caller, &id, &window).await?;
            let body = RecoveredOut {
                requeued: recovered.requeued,
                more: recovered.more,
                next_cursor: recovered.next_cursor,
            };
            Ok((202, Some(to_json(&body))))
        }
        Operation::ListEvents => {
            let param = |name| query_param(query, name);
            let request = EventListRequest {
                topic: param("topic"),
                owner: param("owner"),
                subscription_id: param("subscription_id"),
                since: param("since"),
                until: param("until"),
                cursor: param("cursor"),
                limit: query_usize(query, "limit")?,
            };
            let page = hub.list_events(&caller, request).await?;
            let body = EventPageOut {
                data: page.items.iter().map(|v| EventOut::from(&v.kept)).collect(),
                next_cursor: page.next_cursor,
            };
            Ok((200, Some(to_json(&body))))
        }
        Operation::ReadEvent => {
            let event_id = ids.event_id.unwrap_or_default();
            let subscription = query_param(query, "subscription_id");
            let view = hub
                .read_event(&caller, &event_id, subscription.as_deref())
                .await?;
            Ok((200, Some(to_json(&EventDetailOut::from(&view)))))
        }
        Operation::SendTest => {
            let event_id = hub.send_test_event(&caller, &id).await?;
            let body = TestEventOut {
                event_id,
                topic: crate::service::operational::TEST_TOPIC,
            };
            Ok((202, Some(to_json(&body))))
        }
        Operation::MintPortalSession => {
            let minted = hub
                .mint_portal_session(&caller, json_body(&req.body)?)
                .await?;
            Ok((201, Some(to_json(&PortalSessionOut::from(&minted)))))
        }
        Operation::ListEventTypes => {
            let archived = query_param(query, "include_archived").is_some_and(|v| v == "true");
            let types = hub.event_types(&caller, archived).await?;
            let body = EventTypePageOut {
                data: types.iter().map(EventTypeOut::from).collect(),
                next_cursor: None,
            };
            Ok((200, Some(to_json(&body))))
        }
        Operation::ExportCatalog => Ok((200, Some(hub.catalog_document(&caller).await?))),
        Operation::PutEventType => {
            let topic = ids.topic.unwrap_or_default();
            let event_type = hub
                .put_event_type(&caller, &topic, json_body(&req.body)?)
                .await?;
            Ok((200, Some(to_json(&EventTypeOut::from(&event_type)))))
        }
        Operation::GetEventType => {
            let event_type = hub
                .event_type(&caller, &ids.topic.unwrap_or_default())
                .await?;
            Ok((200, Some(to_json(&EventTypeOut::from(&event_type)))))
        }
        Operation::ArchiveEventType => {
            let event_type = hub
                .archive_event_type(&caller, &ids.topic.unwrap_or_default())
                .await?;
            Ok((200, Some(to_json(&EventTypeOut::from(&event_type)))))
        }
        Operation::ReadSettings => {
            let settings: SettingsOut = hub.catalog_settings(&caller).await?;
            Ok((200, Some(to_json(&settings))))
        }
        Operation::UpdateSettings => {
            let settings: SettingsOut = hub
                .update_catalog_settings(&caller, json_body(&req.body)?)
                .await?;
            Ok((200, Some(to_json(&settings))))
        }
        Operation::Confirm | Operation::Portal => Err(HubError::NotFound("route")),
    }
}

/// `POST /v1/events`: one event (`202`), or `{"events": [...]}`, a batch answered item by item
/// (`200` when all were accepted, `207` otherwise).
async fn publish(hub: &Hub, caller: &Caller, req: &ApiRequest) -> Result<(u16, Option<Value>)> {
    let body: Value = json_body(&req.body)?;
    let Some(events) = body.get("events") else {
        let event = PublishRequest {
            trace: TraceParent::carried(&tracing::Span::current(), req.traceparent.as_ref()),
            ..parse_event(body)?
        };
        let published = hub.publish(caller, event).await?;
        let body = PublishedOut {
            id: published.id,
            topic: published.topic,
            duplicate: published.duplicate,
            schema_violations: published.schema_violations,
        };
        return Ok((202, Some(to_json(&body))));
    };
    let (Value::Array(events), 1) = (events, body.as_object().map_or(0, |o| o.len())) else {
        return Err(HubError::invalid(
            ErrorCode::InvalidBatch,
            "a batch is `{\"events\": [...]}` and nothing else",
        ));
    };
    let items = events
        .iter()
        .cloned()
        .map(|event| {
            parse_event(event).map(|event| PublishRequest {
                trace: TraceParent::carried(&tracing::Span::current(), req.traceparent.as_ref()),
                ..event
            })
        })
        .collect();
    let results = hub.publish_batch(caller, items).await?;
    let data: Vec<PublishItemOut> = results
        .into_iter()
        .enumerate()
        .map(|(index, result)| match result {
            Ok(published) => PublishItemOut::Accepted {
                index,
                status: 202,
                id: published.id,
                topic: published.topic,
                duplicate: published.duplicate,
                schema_violations: published.schema_violations,
            },
            Err(err) => {
                if let HubError::Backend(detail) = &err {
                    tracing::error!(request_id = %req.request_id, index, error = %detail, "backend failure");
                }
                PublishItemOut::Refused {
                    index,
                    status: err.status(),
                    code: err.error_code(),
                    message: err.public_message(),
                    violations: err.violations().to_vec(),
                }
            }
        })
        .collect();
    let accepted = data.iter().filter(|item| item.accepted()).count();
    let failed = data.len() - accepted;
    let status = if failed == 0 { 200 } else { 207 };
    let body = PublishBatchOut {
        data,
        accepted,
        failed,
    };
    Ok((status, Some(to_json(&body))))
}

/// One event of a publish body.
fn parse_event(value: Value) -> Result<PublishRequest> {
    serde_json::from_value(value)
        .map_err(|e| HubError::invalid(ErrorCode::InvalidJson, format!("invalid event: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_become_http_in_one_place() {
        let busy = error_response(&HubError::InProgress {
            retry_after_secs: 7,
        });
        assert_eq!(busy.status(), 409);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "7");
        let body: Value = serde_json::from_slice(busy.body()).unwrap();
        assert_eq!(body["code"], "in_progress");

        let down = error_response(&HubError::backend(
            "arn:aws:sqs:us-east-1:123456789012:webhook-hub-events does not exist",
        ));
        assert_eq!(down.status(), 503);
        let body: Value = serde_json::from_slice(down.body()).unwrap();
        assert_eq!(body["code"], "backend_unavailable");
        assert!(!body["message"].as_str().unwrap().contains("arn:"));
        assert_eq!(
            error_response(&HubError::Rejected("x".into())).status(),
            400
        );
    }

    #[test]
    fn routes_every_operation() {
        assert_eq!(
            route(&Method::POST, "/v1/subscriptions").unwrap().0,
            Operation::Subscribe
        );
        assert_eq!(
            route(&Method::GET, "/v1/subscriptions/sub_1").unwrap(),
            (
                Operation::Get,
                PathIds {
                    id: Some("sub_1".into()),
                    ..PathIds::default()
                }
            )
        );
        assert_eq!(
            route(
                &Method::POST,
                "/v1/subscriptions/sub_1/deliveries/evt_2/resend"
            )
            .unwrap(),
            (
                Operation::Resend,
                PathIds {
                    id: Some("sub_1".into()),
                    event_id: Some("evt_2".into()),
                    topic: None
                }
            )
        );
        assert_eq!(
            route(&Method::POST, "/v1/subscriptions/sub_1/deliveries//resend")
                .unwrap_err()
                .code(),
            "not_found"
        );
        assert_eq!(
            route(&Method::POST, "/v1/subscriptions/sub_1/secret/rotate")
                .unwrap()
                .0,
            Operation::RotateSecret
        );
        assert_eq!(
            route(&Method::PUT, "/v1/subscriptions").unwrap_err().code(),
            "method_not_allowed"
        );
        assert_eq!(
            route(&Method::GET, "/v2/nothing").unwrap_err().code(),
            "not_found"
        );
    }
}
