//! API Gateway HTTP API (payload v2) requests into [`ApiRequest`]s, and the caller from the JWT
//! authorizer's claims and scopes.

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt};

use super::ApiRequest;
use crate::auth::Caller;

/// The request, as the router sees it.
pub fn api_request(req: &Request) -> ApiRequest {
    let body = match req.body() {
        Body::Empty => bytes::Bytes::new(),
        Body::Text(text) => bytes::Bytes::from(text.clone()),
        Body::Binary(bin) => bytes::Bytes::from(bin.clone()),
        _ => bytes::Bytes::new(),
    };
    let request_id = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
        _ => None,
    }
    .unwrap_or_else(|| {
        req.lambda_context_ref()
            .map(|c| c.request_id.clone())
            .unwrap_or_default()
    });
    ApiRequest {
        method: req.method().clone(),
        path: req.raw_http_path().to_string(),
        query: req.uri().query().map(str::to_string),
        body,
        request_id,
        bearer: req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_string()),
    }
}

/// The caller the JWT authorizer vouched for: the account from `account_claim`, the owner from
/// `sub`, the scopes from the authorizer's `scopes` or the token's `scope` claim. A token
/// without scopes holds none.
pub fn jwt_caller(req: &Request, account_claim: &str) -> Option<Caller> {
    let jwt = req.request_context_ref()?.authorizer()?.jwt.as_ref()?;
    let account = jwt
        .claims
        .get(account_claim)
        .filter(|a| !a.is_empty())?
        .clone();
    let owner = jwt
        .claims
        .get("sub")
        .cloned()
        .unwrap_or_else(|| account.clone());
    let scopes = match &jwt.scopes {
        Some(scopes) if !scopes.is_empty() => scopes.clone(),
        _ => jwt
            .claims
            .get("scope")
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
    };
    Some(Caller::of_account(account, owner, Some(scopes)))
}
