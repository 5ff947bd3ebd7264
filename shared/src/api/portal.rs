//! The customer portal over HTTP (`docs/portal.md`): its page and assets, compiled into the
//! binary, and its API, which is the `/v1` API under `/portal/api`, taking only portal session
//! tokens. Kept apart from `/v1` so that on AWS it can be routed past the JWT authorizer while
//! every `/v1` route stays behind it; the session's scopes are enforced by the same services.

use bytes::Bytes;
use http::header;
use serde::Serialize;

use super::{ApiRequest, Operation, dispatch_operation, error_response, respond, route};
use crate::auth::Caller;
use crate::clock::rfc3339;
use crate::context::Hub;
use crate::error::{HubError, Result};
use crate::service::portal::{PortalAccess, PortalSession};

/// Where the portal lives.
pub const PORTAL_PATH: &str = "/portal";
/// Where its API lives: `/portal/api/v1/...` is `/v1/...` for a portal session.
pub const PORTAL_API_PREFIX: &str = "/portal/api";

/// What a portal session may call: the per-subscription routes and the catalog's reads, never
/// publishing, bulk removal, minting or changing the catalog.
pub const PORTAL_OPERATIONS: &[Operation] = &[
    Operation::Subscribe,
    Operation::List,
    Operation::Get,
    Operation::Update,
    Operation::Unsubscribe,
    Operation::Deliveries,
    Operation::Secret,
    Operation::RotateSecret,
    Operation::Resend,
    Operation::Recover,
    Operation::SendTest,
    Operation::ListEvents,
    Operation::ReadEvent,
    Operation::ListEventTypes,
    Operation::GetEventType,
    Operation::ExportCatalog,
];

const INDEX_HTML: &str = include_str!("../../../portal/index.html");
const APP_JS: &str = include_str!("../../../portal/app.js");
const APP_CSS: &str = include_str!("../../../portal/app.css");

/// The page's own policy: its scripts, styles and API calls from its own origin only, nothing
/// inline, never framed (it reveals secrets and takes clicks that change subscriptions).
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'self'; form-action 'none'; \
     frame-ancestors 'none'";

/// Whether `path` is the portal's (page, assets or API).
pub fn is_portal_path(path: &str) -> bool {
    path == PORTAL_PATH || path.starts_with("/portal/")
}

/// `GET /portal/api/session`: what the page shows of its session.
#[derive(Debug, Serialize)]
struct SessionOut<'a> {
    owner: &'a str,
    topics: Vec<&'a str>,
    access: PortalAccess,
    secrecy_floor: u8,
    expires_at: String,
    theme: &'a std::collections::BTreeMap<String, String>,
}

fn asset(path: &str, content_type: &'static str, body: Bytes) -> http::Response<Bytes> {
    let mut response = respond(200, None).map(|_| body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(PAGE_POLICY),
    );
    // The page is the same for everyone (the session is in the fragment, read by the script).
    headers.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    tracing::debug!(path, "portal asset");
    response
}

/// The page, with a base that makes its relative links work whether it was opened as
/// `/portal` or `/portal/` (or under a prefix in front of the API).
fn page(path: &str) -> http::Response<Bytes> {
    let base = if path.ends_with('/') { "./" } else { "portal/" };
    let html = INDEX_HTML.replace("{{base}}", base);
    asset(path, "text/html; charset=utf-8", Bytes::from(html))
}

/// Answers a request under `/portal`.
pub(super) async fn answer(hub: &Hub, req: &ApiRequest) -> http::Response<Bytes> {
    let rest = &req.path[PORTAL_PATH.len()..];
    let get = req.method == http::Method::GET;
    match rest {
        "" | "/" | "/index.html" if get => return page(&req.path),
        "/app.js" if get => {
            return {
                asset(
                    &req.path,
                    "text/javascript; charset=utf-8",
                    Bytes::from_static(APP_JS.as_bytes()),
                )
            };
        }
        "/app.css" if get => {
            return {
                asset(
                    &req.path,
                    "text/css; charset=utf-8",
                    Bytes::from_static(APP_CSS.as_bytes()),
                )
            };
        }
        _ => {}
    }
    match api(hub, req).await {
        Ok((status, body)) => respond(status, body.as_ref()),
        Err(err) => error_response(&err),
    }
}

async fn session(hub: &Hub, req: &ApiRequest) -> Result<PortalSession> {
    let token = req.bearer.as_deref().ok_or(HubError::InvalidSession)?;
    hub.open_portal_session(token).await
}

async fn api(hub: &Hub, req: &ApiRequest) -> Result<(u16, Option<serde_json::Value>)> {
    let Some(rest) = req.path.strip_prefix(PORTAL_API_PREFIX) else {
        return Err(HubError::NotFound("route"));
    };
    if rest == "/session" {
        if req.method != http::Method::GET {
            return Err(HubError::MethodNotAllowed);
        }
        let session = session(hub, req).await?;
        let out = SessionOut {
            owner: &session.owner,
            topics: session.topics.iter().map(|t| t.as_str()).collect(),
            access: session.access,
            secrecy_floor: session.secrecy_floor,
            expires_at: rfc3339(session.expires_at_ms),
            theme: &session.theme,
        };
        return Ok((200, Some(super::resources::to_json(&out))));
    }
    let (op, ids) = route(&req.method, rest)?;
    if !PORTAL_OPERATIONS.contains(&op) {
        return Err(HubError::NotFound("route"));
    }
    if req.body.len() > super::MAX_BODY_BYTES {
        return Err(HubError::PayloadTooLarge(super::MAX_BODY_BYTES));
    }
    let caller: Caller = session(hub, req).await?.caller();
    let inner = ApiRequest {
        path: rest.to_string(),
        ..req.clone()
    };
    dispatch_operation(hub, op, ids, &inner, caller).await
}
