//! The event-type catalog's operations (docs/catalog.md): declaring, reading and archiving event
//! types, the account's catalog settings, the exported document, and the check publish makes
//! against a per-process cache of compiled schemas.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::auth::{Caller, Reach, SCOPE_ADMIN};
use crate::catalog::{
    CatalogSettings, CatalogView, CompiledSchema, EXPORT_NAME, EventType, MAX_DESCRIPTION_CHARS,
    MAX_EVENT_TYPES, MAX_EXAMPLE_BYTES, MAX_EXAMPLES, SchemaValidation, UnknownTopics, Verdict,
    Violation,
};
use crate::context::Hub;
use crate::error::{ErrorCode, HubError, Result};
use crate::metrics::SchemaOutcome;
use crate::topic::{OPERATIONAL_PREFIX, Topic};

/// How long a process trusts its copy of an account's catalog before reading it again: the
/// process that changes a catalog sees the change at once, every other process within this.
pub const CATALOG_FRESH_FOR: Duration = Duration::from_secs(2);
/// Accounts whose catalog one process keeps; past it the cache starts over.
const CACHED_ACCOUNTS: usize = 10_000;

/// The body of `PUT /v1/event-types/{topic}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTypeRequest {
    /// What the event means.
    #[serde(default)]
    pub description: String,
    /// The JSON Schema (2020-12) of its `data`.
    pub schema: Option<Value>,
    /// Example `data` payloads.
    #[serde(default)]
    pub examples: Vec<Value>,
    /// Marks it as on its way out.
    #[serde(default)]
    pub deprecated: bool,
}

/// The body of `PATCH /v1/settings`: what is given changes, the rest stays.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    /// `off`, `warn` or `enforce`.
    pub schema_validation: Option<SchemaValidation>,
    /// `allow` or `refuse`.
    pub unknown_topics: Option<UnknownTopics>,
}

/// One account's cached catalog (with when it goes stale) and the lock that keeps its loads to
/// one at a time.
#[derive(Default)]
struct CachedCatalog {
    view: Option<(Instant, Arc<CatalogView>)>,
    load: Arc<tokio::sync::Mutex<()>>,
}

/// This process's copies of the catalogs publish checks against, compiled schemas included
/// (compiling is the expensive part; a view reuses what the previous one compiled).
#[derive(Default)]
pub struct Catalogs {
    accounts: RwLock<HashMap<String, CachedCatalog>>,
}

impl Catalogs {
    /// The account's view if it is fresh, and the lock to load it otherwise.
    fn fresh(&self, account: &str) -> std::result::Result<Arc<CatalogView>, ()> {
        let accounts = self.accounts.read().unwrap_or_else(|p| p.into_inner());
        match accounts.get(account).and_then(|c| c.view.as_ref()) {
            Some((stale_at, view)) if Instant::now() < *stale_at => Ok(view.clone()),
            _ => Err(()),
        }
    }

    fn entry<T>(&self, account: &str, with: impl FnOnce(&mut CachedCatalog) -> T) -> T {
        let mut accounts = self.accounts.write().unwrap_or_else(|p| p.into_inner());
        if accounts.len() >= CACHED_ACCOUNTS && !accounts.contains_key(account) {
            accounts.clear();
        }
        with(accounts.entry(account.to_string()).or_default())
    }

    /// Forgets the account's view (this process changed its catalog).
    fn forget(&self, account: &str) {
        self.entry(account, |c| {
            if let Some((stale_at, _)) = &mut c.view {
                *stale_at = Instant::now();
            }
        });
    }
}

/// What publish found for one event: nothing to say, or the violations it accepted (warn).
pub type SchemaWarnings = Vec<Violation>;

impl Hub {
    /// The account's catalog as publish sees it: this process's copy while fresh, else read
    /// again (one read per account at a time; if the read fails and a copy exists, the copy).
    pub async fn catalog_view(&self, account: &str) -> Result<Arc<CatalogView>> {
        if let Ok(view) = self.catalogs.fresh(account) {
            return Ok(view);
        }
        let load = self.catalogs.entry(account, |c| c.load.clone());
        let _loading = load.lock().await;
        if let Ok(view) = self.catalogs.fresh(account) {
            return Ok(view);
        }
        let previous = self
            .catalogs
            .entry(account, |c| c.view.as_ref().map(|(_, v)| v.clone()));
        let stored = match self.store.catalog(account).await {
            Ok(stored) => stored,
            Err(err) => {
                return previous.ok_or(err.clone()).inspect(|_| {
                    tracing::warn!(account, error = %err, "could not read the catalog; publishing against the last copy");
                });
            }
        };
        let view = Arc::new(CatalogView::build(stored, previous.as_deref()));
        self.catalogs.entry(account, |c| {
            c.view = Some((Instant::now() + CATALOG_FRESH_FOR, view.clone()))
        });
        Ok(view)
    }

    /// The catalog's say on one event about to be published: `Ok` with what it accepted
    /// despite the schema (warn), or the refusal (enforce, or an undeclared topic refused).
    pub(crate) fn check_against_catalog(
        &self,
        view: &CatalogView,
        topic: &Topic,
        data: &Value,
    ) -> Result<SchemaWarnings> {
        match view.check(topic, data) {
            Verdict::Pass => Ok(Vec::new()),
            // Counted once the event is queued ([`Hub::accepted_despite_schema`]).
            Verdict::PassWithViolations(violations) => Ok(violations),
            Verdict::Mismatch(violations) => {
                self.metrics.schema_mismatch(SchemaOutcome::refused);
                Err(HubError::SchemaViolation {
                    topic: topic.to_string(),
                    violations,
                })
            }
            Verdict::Undeclared => {
                self.metrics.undeclared_refused();
                Err(HubError::invalid(
                    ErrorCode::UnknownEventType,
                    format!(
                        "`{topic}` is not in the catalog, and this account publishes only declared event types (PUT /v1/event-types/{topic} declares it)"
                    ),
                ))
            }
        }
    }

    /// Counts and logs an event queued although its data did not match its schema (warn):
    /// called where it is queued (publish, ingest), so a repeat or a refusal is not counted.
    pub(crate) fn accepted_despite_schema(
        &self,
        event: &crate::model::Event,
        violations: &[Violation],
    ) {
        if violations.is_empty() {
            return;
        }
        self.metrics.schema_mismatch(SchemaOutcome::accepted);
        tracing::warn!(event_id = %event.id, topic = %event.topic, violations = ?violations, "event data does not match its schema (accepted: schema_validation is warn)");
    }

    /// `PUT /v1/event-types/{topic}`: declares or replaces a type (a replaced archived type
    /// comes back). Needs `webhooks:admin`, and the platform's own reach.
    pub async fn put_event_type(
        &self,
        caller: &Caller,
        topic: &str,
        req: EventTypeRequest,
    ) -> Result<EventType> {
        require_admin(caller)?;
        let topic = declarable(topic)?;
        if req.description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(HubError::invalid(
                ErrorCode::InvalidDescription,
                format!("`description` is at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        if req.examples.len() > MAX_EXAMPLES {
            return Err(HubError::invalid(
                ErrorCode::InvalidExample,
                format!("at most {MAX_EXAMPLES} `examples`"),
            ));
        }
        let compiled = req
            .schema
            .as_ref()
            .map(CompiledSchema::compile)
            .transpose()?;
        for (i, example) in req.examples.iter().enumerate() {
            if serde_json::to_vec(example).map_or(usize::MAX, |e| e.len()) > MAX_EXAMPLE_BYTES {
                return Err(HubError::invalid(
                    ErrorCode::InvalidExample,
                    format!("`examples/{i}` is larger than {MAX_EXAMPLE_BYTES} bytes"),
                ));
            }
            crate::validate::event_data(example).map_err(|e| {
                HubError::invalid(ErrorCode::InvalidExample, format!("`examples/{i}`: {e}"))
            })?;
            if let Some(first) = compiled.as_ref().and_then(|c| {
                c.violations(example, &format!("/examples/{i}"))
                    .into_iter()
                    .next()
            }) {
                return Err(HubError::invalid(
                    ErrorCode::InvalidExample,
                    format!(
                        "an example does not match the schema at {}: {}",
                        first.pointer, first.reason
                    ),
                ));
            }
        }
        let stored = self.store.catalog(&caller.account).await?;
        let existing = stored.types.iter().find(|t| t.topic == topic);
        if existing.is_none() && stored.types.len() >= MAX_EVENT_TYPES {
            return Err(HubError::invalid(
                ErrorCode::EventTypeLimitReached,
                format!(
                    "the account already declares {MAX_EVENT_TYPES} event types, the most it may"
                ),
            ));
        }
        let now = self.now_ms();
        let event_type = EventType {
            topic,
            description: req.description,
            schema: req.schema,
            examples: req.examples,
            deprecated: req.deprecated,
            archived: false,
            created_ms: existing.map_or(now, |t| t.created_ms),
            updated_ms: now,
        };
        self.store
            .put_event_type(&caller.account, &event_type)
            .await?;
        self.catalogs.forget(&caller.account);
        Ok(event_type)
    }

    /// `DELETE /v1/event-types/{topic}`: archives a type (kept for the record; publish treats
    /// its topic as undeclared). Needs `webhooks:admin`.
    pub async fn archive_event_type(&self, caller: &Caller, topic: &str) -> Result<EventType> {
        require_admin(caller)?;
        let topic = Topic::parse(topic)?;
        let stored = self.store.catalog(&caller.account).await?;
        let mut event_type = stored
            .types
            .into_iter()
            .find(|t| t.topic == topic && !t.archived)
            .ok_or(HubError::NotFound("event type"))?;
        event_type.archived = true;
        event_type.updated_ms = self.now_ms();
        self.store
            .put_event_type(&caller.account, &event_type)
            .await?;
        self.catalogs.forget(&caller.account);
        Ok(event_type)
    }

    /// `GET /v1/event-types`: the account's types in topic order that the caller may see (a
    /// topic-limited caller, a portal session for one, only those its scopes cover), archived
    /// ones only when asked for. Open to every caller of the account.
    pub async fn event_types(
        &self,
        caller: &Caller,
        include_archived: bool,
    ) -> Result<Vec<EventType>> {
        let stored = self.store.catalog(&caller.account).await?;
        Ok(stored
            .types
            .into_iter()
            .filter(|t| (include_archived || !t.archived) && caller.may_see_topic(&t.topic))
            .collect())
    }

    /// `GET /v1/event-types/{topic}`: one type (archived ones too), if the caller may see it.
    pub async fn event_type(&self, caller: &Caller, topic: &str) -> Result<EventType> {
        let topic = Topic::parse(topic)?;
        self.event_types(caller, true)
            .await?
            .into_iter()
            .find(|t| t.topic == topic)
            .ok_or(HubError::NotFound("event type"))
    }

    /// `GET /v1/event-types/openapi.json`: the live types the caller may see, as an OpenAPI 3.1
    /// document of webhooks.
    pub async fn catalog_document(&self, caller: &Caller) -> Result<Value> {
        let types = self.event_types(caller, false).await?;
        Ok(crate::catalog::openapi_document(&caller.account, &types))
    }

    /// `GET /v1/settings`: the account's catalog settings (the defaults until changed).
    pub async fn catalog_settings(&self, caller: &Caller) -> Result<CatalogSettings> {
        Ok(self
            .store
            .catalog(&caller.account)
            .await?
            .settings
            .unwrap_or_default())
    }

    /// `PATCH /v1/settings`: changes what the body gives. Needs `webhooks:admin`.
    pub async fn update_catalog_settings(
        &self,
        caller: &Caller,
        update: SettingsUpdate,
    ) -> Result<CatalogSettings> {
        require_admin(caller)?;
        let mut settings = self.catalog_settings(caller).await?;
        if let Some(mode) = update.schema_validation {
            settings.schema_validation = mode;
        }
        if let Some(unknown) = update.unknown_topics {
            settings.unknown_topics = unknown;
        }
        self.store
            .put_catalog_settings(&caller.account, &settings)
            .await?;
        self.catalogs.forget(&caller.account);
        Ok(settings)
    }
}

/// Managing the catalog takes `webhooks:admin`, and is the platform's: a caller bound to one
/// customer never changes what every customer receives.
fn require_admin(caller: &Caller) -> Result<()> {
    if caller.reach == Reach::Bound {
        return Err(HubError::InsufficientScope(format!(
            "{SCOPE_ADMIN} (a caller bound to a customer reads the catalog only)"
        )));
    }
    caller.require(SCOPE_ADMIN)
}

/// A topic a producer may declare: valid, not the hub's own, not the export's name.
fn declarable(topic: &str) -> Result<Topic> {
    let topic = Topic::parse(topic)?;
    if topic.is_operational() {
        return Err(HubError::invalid(
            ErrorCode::ReservedTopic,
            format!("topics under `{OPERATIONAL_PREFIX}` are the hub's own; declare another name"),
        ));
    }
    if topic.as_str() == EXPORT_NAME {
        return Err(HubError::invalid(
            ErrorCode::ReservedTopic,
            format!("`{EXPORT_NAME}` names the exported document; declare another name"),
        ));
    }
    Ok(topic)
}
