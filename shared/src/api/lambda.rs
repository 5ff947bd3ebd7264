//! API Gateway HTTP API (payload v2) requests into [`ApiRequest`]s, and the caller from the JWT
//! authorizer's claims and scopes.

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt};

use super::ApiRequest;
use crate::auth::{Caller, STRICTEST_SECRECY};
use crate::runtime::config::JwtClaims;

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
        traceparent: crate::trace::TraceParent::from_headers(req.headers()),
    }
}

/// The caller the JWT authorizer vouched for: the account from the account claim, the scopes
/// from the authorizer's `scopes` or the token's `scope` claim (a token without scopes holds
/// none). A token carrying the owner claim is bound to that customer (with the secrecy floor
/// its floor claim sets, else the strictest); any other is the platform's, its owner `sub`.
pub fn jwt_caller(req: &Request, claims: &JwtClaims) -> Option<Caller> {
    let jwt = req.request_context_ref()?.authorizer()?.jwt.as_ref()?;
    let account = jwt
        .claims
        .get(&claims.account_claim)
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
    let bound_to = jwt
        .claims
        .get(&claims.owner_claim)
        .filter(|o| !o.is_empty());
    Some(match bound_to {
        Some(customer) => {
            let floor = jwt
                .claims
                .get(&claims.secrecy_floor_claim)
                .and_then(|f| f.parse::<u8>().ok())
                .filter(|f| *f <= STRICTEST_SECRECY)
                .unwrap_or(STRICTEST_SECRECY);
            Caller::bound(account, customer.clone(), Some(scopes), floor)
        }
        None => Caller::of_account(account, owner, Some(scopes)),
    })
}
