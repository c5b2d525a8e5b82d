//! Scoped-token endpoints: the routes a policy declares with `[[endpoint]]` (the guest chat
//! of `deploy/policy.example.toml` is one), registered at start-up by `crate::routes`.
//!
//! The gateway's part is narrow: read the token (query parameter, or the same field of the
//! body, where pusher-js puts `auth.params`), verify its HS256 signature and expiry with the
//! endpoint's secret, match the channel against the endpoint's rules with the route's
//! parameters pinned, and hand the token's claims and the captures to a worker as one task.
//! The worker decides with the rule's `allow`; the gateway signs. Refusals become the
//! endpoint's messages: `{"error": "Forbidden", "message": …}`. A bad or revoked token is
//! audited as a failed authentication, a refused channel like any other.
//!
//! Architecture Invariant: no decision beyond token validity and channel shape is made here;
//! a scoped rule is decided by a worker like every other rule.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use porter_core::channel::{Channel, validate_socket_id};
use porter_core::endpoint::{Endpoint, MESSAGE_INVALID_TOKEN, MESSAGE_NO_MATCH};
use porter_core::reason::{Reason, ReasonClass};
use porter_identity::{Caller, Credential, Identity, IdentityError};
use serde_json::Value;
use tracing::debug;

use crate::audit::KnownCaller;
use crate::authorize::{Outcome, Prepared};
use crate::error::{ApiError, Audit};
use crate::http::client::client_id_of;
use crate::http::fields::{Fields, is_json};
use crate::state::AppState;

/// Said for a bad token when the endpoint sets no message: never whether the object exists.
const DEFAULT_INVALID_TOKEN: &str = "Invalid or expired token";
const DEFAULT_NO_MATCH: &str = "Invalid channel format";
/// The error for input the endpoint cannot use (a malformed body or socket id).
const BAD_INPUT: &str = "Authentication failed";

/// Which endpoint a registered route serves.
#[derive(Debug, Clone, Copy)]
pub struct EndpointIndex(pub usize);

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message.to_owned())
}

/// One answer for every bad token (forged, expired, another secret, revoked): it never tells
/// whether the booking, or whatever the token names, exists. Audited under `why`.
fn bad_token(endpoint: &Endpoint, why: &'static str) -> ApiError {
    forbidden(
        endpoint
            .message(MESSAGE_INVALID_TOKEN)
            .unwrap_or(DEFAULT_INVALID_TOKEN),
    )
    .audited(Audit::AuthFailed(why))
}

pub async fn scoped_auth(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
    which: web::Data<EndpointIndex>,
) -> Result<HttpResponse, ApiError> {
    let Some(endpoint) = state.policy.endpoints().get(which.0) else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", ""));
    };
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    // An empty JSON body carries no fields (the token may be in the query).
    let fields = if body.is_empty() && is_json(content_type) {
        Ok(Fields::default())
    } else {
        Fields::from_body(content_type, &body)
    };
    let Ok(fields) = fields else {
        return Err(ApiError::bad_request(
            BAD_INPUT,
            "the body must be a JSON object or a form",
        ));
    };
    let query = Fields::from_form(request.query_string().as_bytes());
    let token_field = endpoint.token_query.as_str();
    let (Some(token), Some(socket_id), Some(channel_name)) = (
        present(query.first(token_field).or(fields.first(token_field))),
        present(fields.first("socket_id")),
        present(fields.first("channel_name")),
    ) else {
        return Err(ApiError::bad_request("Missing required parameters", ""));
    };

    fn present(value: Option<&str>) -> Option<&str> {
        value.filter(|v| !v.is_empty())
    }

    let Some(claims) = state.scoped.verify(which.0, token) else {
        debug!(path = %endpoint.path, "scoped token refused");
        return Err(bad_token(endpoint, "invalid_token"));
    };
    if validate_socket_id(socket_id).is_err() {
        return Err(ApiError::bad_request(
            BAD_INPUT,
            "socket_id must be two groups of digits joined by a dot",
        ));
    }
    let no_match = || {
        forbidden(
            endpoint
                .message(MESSAGE_NO_MATCH)
                .unwrap_or(DEFAULT_NO_MATCH),
        )
    };
    let Ok(channel) = Channel::parse(channel_name) else {
        return Err(no_match());
    };
    let params: BTreeMap<String, String> = endpoint
        .params
        .iter()
        .filter_map(|name| {
            request
                .match_info()
                .get(name)
                .map(|value| (name.clone(), value.to_owned()))
        })
        .collect();
    let Ok(matched) = state.policy.match_for_endpoint(endpoint, &channel, &params) else {
        return Err(no_match());
    };

    let identity = Identity {
        credential: Some(Credential::of(token, &claims)),
        user_id: match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        },
        client_id: client_id_of(&request).map(str::to_owned),
        claims,
    };
    request.extensions_mut().insert(KnownCaller::of(&identity));
    // A revoked scoped token (`POST /admin/tokens/revoke` takes any JWT) gets the same answer
    // as any other bad token.
    let caller = Caller::from_token(identity);
    match caller.ensure_not_revoked(state.store.as_ref()).await {
        Ok(()) => {}
        Err(IdentityError::TokenRevoked) => return Err(bad_token(endpoint, "token_revoked")),
        Err(error) => return Err(error.into()),
    }
    let prepared = Prepared { channel, matched };
    match state
        .authorizer()
        .one(&prepared, caller.identity(), socket_id)
        .await?
    {
        Outcome::Signed(signed) => Ok(HttpResponse::Ok().json(signed)),
        refused => Err(refusal(
            endpoint,
            &refused.reason().unwrap_or(Reason::Internal),
        )),
    }
}

/// A refusal in the endpoint's words: 403 for decisions, 504/503 when none was made.
fn refusal(endpoint: &Endpoint, reason: &Reason) -> ApiError {
    let why = reason.as_str();
    let said = |fallback: &str| endpoint.message(&why).unwrap_or(fallback).to_owned();
    match reason.class() {
        ReasonClass::TimedOut => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Gateway Timeout",
            said("authorization timed out"),
        ),
        ReasonClass::Unavailable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            said(&why),
        ),
        ReasonClass::Invalid | ReasonClass::Refused => forbidden(&said(&why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use porter_core::policy::Policy;

    #[test]
    fn refusals_use_the_endpoint_messages() {
        let policy = Policy::from_toml(
            "[[rule]]\nname = \"g\"\npattern = \"private-g-{id}\"\nallow = { claims = { id = \"id\" } }\n[[endpoint]]\npath = \"/g\"\ntoken = { query = \"t\" }\nrules = \"g\"\n[endpoint.messages]\n\"claim_mismatch:id\" = \"Not yours\"\n",
        )
        .unwrap();
        let endpoint = &policy.endpoints()[0];
        let mismatch = refusal(endpoint, &Reason::ClaimMismatch("id".into()));
        assert_eq!(mismatch.status, 403);
        assert_eq!(mismatch.message, "Not yours");
        assert_eq!(refusal(endpoint, &Reason::Forbidden).status, 403);
        assert_eq!(refusal(endpoint, &Reason::Timeout).status, 504);
        assert_eq!(
            refusal(endpoint, &Reason::AuthorizerUnavailable).status,
            503
        );
        assert_eq!(endpoint.message("claim_mismatch:id"), Some("Not yours"));
    }
}
