//! Scoped-token endpoints: the routes a policy declares with `[[endpoint]]` (seed 003's guest
//! chat is one), registered at start-up.
//!
//! The gateway's part is narrow: read the token (query parameter, or the same field of the
//! body, where pusher-js puts `auth.params`), verify its HS256 signature and expiry with the
//! endpoint's secret, match the channel against the endpoint's rules with the route's
//! parameters pinned, and hand the token's claims and the captures to a worker as one task.
//! The worker decides with the rule's `allow`; the gateway signs. Refusals become the
//! endpoint's messages: `{"error": "Forbidden", "message": …}`.
//!
//! Architecture Invariant: no decision beyond token validity and channel shape is made here;
//! a scoped rule is decided by a worker like every other rule.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use porter_core::channel::{Channel, validate_socket_id};
use porter_core::endpoint::{Endpoint, MESSAGE_INVALID_TOKEN, MESSAGE_NO_MATCH};
use porter_core::policy::Policy;
use porter_core::reason;
use serde_json::{Map, Value, json};
use tracing::{debug, warn};

use crate::AppState;
use crate::batch::{Prepared, decide_one, finish};
use crate::identity::{Credential, Identity};

/// Said for a bad token when the endpoint sets no message: never whether the object exists.
const DEFAULT_INVALID_TOKEN: &str = "Invalid or expired token";
const DEFAULT_NO_MATCH: &str = "Invalid channel format";
/// Seed 003's error for input it cannot use (a malformed body or socket id), with a message.
const BAD_INPUT: &str = "Authentication failed";

/// The verification keys of the policy's endpoints, by endpoint index.
#[derive(Default)]
pub struct ScopedKeys {
    keys: Vec<Option<DecodingKey>>,
}

impl ScopedKeys {
    /// Reads each endpoint's secret through `secret_of(env name)`. An endpoint without a
    /// secret refuses every token (and says so in the log once, here).
    pub fn new(policy: &Policy, secret_of: impl Fn(&str) -> Option<String>) -> ScopedKeys {
        let keys = policy
            .endpoints()
            .iter()
            .map(|endpoint| {
                let secret = secret_of(&endpoint.secret_env).filter(|s| !s.is_empty());
                if secret.is_none() {
                    warn!(path = %endpoint.path, env = %endpoint.secret_env, "scoped endpoint has no token secret; it refuses every token");
                }
                secret.map(|s| DecodingKey::from_secret(s.as_bytes()))
            })
            .collect();
        ScopedKeys { keys }
    }

    fn verify(&self, index: usize, token: &str) -> Option<Map<String, Value>> {
        let key = self.keys.get(index)?.as_ref()?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_nbf = true;
        jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .ok()
            .map(|data| data.claims)
    }
}

/// Which endpoint a registered route serves.
#[derive(Debug, Clone, Copy)]
struct EndpointIndex(usize);

/// Registers one `POST` route per endpoint of the policy.
pub fn configure(cfg: &mut web::ServiceConfig, policy: &Policy) {
    for (index, endpoint) in policy.endpoints().iter().enumerate() {
        cfg.service(
            web::resource(endpoint.path.as_str())
                .app_data(web::Data::new(EndpointIndex(index)))
                .route(web::post().to(scoped_auth)),
        );
    }
}

fn body_error(status: StatusCode, error: &str, message: Option<&str>) -> HttpResponse {
    let body = match message {
        Some(message) => json!({ "error": error, "message": message }),
        None => json!({ "error": error }),
    };
    let mut response = HttpResponse::build(status);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.insert_header(("Retry-After", "1"));
    }
    response.json(body)
}

fn forbidden(message: &str) -> HttpResponse {
    body_error(StatusCode::FORBIDDEN, "Forbidden", Some(message))
}

/// The request's fields, from a JSON or form body.
#[derive(Default)]
struct Fields {
    socket_id: Option<String>,
    channel_name: Option<String>,
    token: Option<String>,
}

fn parse_body(request: &HttpRequest, body: &[u8], token_field: &str) -> Result<Fields, ()> {
    let is_json = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        if body.is_empty() {
            return Ok(Fields::default());
        }
        let value: Value = serde_json::from_slice(body).map_err(drop)?;
        let object = value.as_object().ok_or(())?;
        let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
        return Ok(Fields {
            socket_id: text("socket_id"),
            channel_name: text("channel_name"),
            token: text(token_field),
        });
    }
    let mut fields = Fields::default();
    for (key, value) in url::form_urlencoded::parse(body) {
        let slot = match key.as_ref() {
            "socket_id" => &mut fields.socket_id,
            "channel_name" => &mut fields.channel_name,
            k if k == token_field => &mut fields.token,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(value.into_owned());
        }
    }
    Ok(fields)
}

async fn scoped_auth(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
    which: web::Data<EndpointIndex>,
) -> HttpResponse {
    let response = match state.policy.endpoints().get(which.0) {
        Some(endpoint) => scoped_auth_inner(&request, &body, &state, which.0, endpoint).await,
        None => body_error(StatusCode::NOT_FOUND, "not_found", None),
    };
    state.metrics.request("scoped", response.status().as_u16());
    response
}

async fn scoped_auth_inner(
    request: &HttpRequest,
    body: &[u8],
    state: &AppState,
    index: usize,
    endpoint: &Endpoint,
) -> HttpResponse {
    // Seed 003's checklist: rate limited, by IP, before the token is looked at.
    if let Err(error) =
        crate::protection::check_rate(state, request, &crate::identity::Identity::default()).await
    {
        return actix_web::ResponseError::error_response(&error);
    }
    let Ok(fields) = parse_body(request, body, &endpoint.token_query) else {
        return body_error(
            StatusCode::BAD_REQUEST,
            BAD_INPUT,
            Some("the body must be a JSON object or a form"),
        );
    };
    let token = url::form_urlencoded::parse(request.query_string().as_bytes())
        .find(|(k, _)| k == endpoint.token_query.as_str())
        .map(|(_, v)| v.into_owned())
        .or(fields.token);
    let present = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    let (true, true, true) = (
        present(&token),
        present(&fields.socket_id),
        present(&fields.channel_name),
    ) else {
        return body_error(StatusCode::BAD_REQUEST, "Missing required parameters", None);
    };
    let (token, socket_id, channel_name) = (
        token.unwrap_or_default(),
        fields.socket_id.unwrap_or_default(),
        fields.channel_name.unwrap_or_default(),
    );

    // One answer for every bad token (forged, expired, another secret): it never tells
    // whether the booking, or whatever the token names, exists.
    let Some(claims) = state.scoped.verify(index, &token) else {
        debug!(path = %endpoint.path, "scoped token refused");
        return forbidden(
            endpoint
                .message(MESSAGE_INVALID_TOKEN)
                .unwrap_or(DEFAULT_INVALID_TOKEN),
        );
    };
    if validate_socket_id(&socket_id).is_err() {
        return body_error(
            StatusCode::BAD_REQUEST,
            BAD_INPUT,
            Some("socket_id must be two groups of digits joined by a dot"),
        );
    }
    let no_match = || {
        forbidden(
            endpoint
                .message(MESSAGE_NO_MATCH)
                .unwrap_or(DEFAULT_NO_MATCH),
        )
    };
    let Ok(channel) = Channel::parse(&channel_name) else {
        return no_match();
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
        return no_match();
    };

    let credential = Credential::of(&token, &claims);
    let identity = Identity {
        credential: Some(credential),
        user_id: match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        },
        client_id: crate::identity::client_id_of(request).map(str::to_owned),
        claims,
        ..Identity::default()
    };
    // A revoked scoped token (`POST /admin/tokens/revoke` takes any JWT) gets the same answer as
    // any other bad token.
    match crate::revocation::ensure_not_revoked(state.store.as_ref(), &identity).await {
        Ok(()) => {}
        Err(error) if error.code == "token_revoked" => {
            return forbidden(
                endpoint
                    .message(MESSAGE_INVALID_TOKEN)
                    .unwrap_or(DEFAULT_INVALID_TOKEN),
            );
        }
        Err(error) => return body_error(error.status, error.code, Some(&error.message)),
    }
    let prepared = Prepared {
        index: 0,
        channel,
        matched,
    };
    let reply = match decide_one(state, &prepared, &identity).await {
        Err(error) => return body_error(error.status, error.code, Some(&error.message)),
        Ok(reply) => reply,
    };
    let outcome = finish(state, &socket_id, &prepared, reply);
    match outcome {
        Ok(signed) => HttpResponse::Ok().json(signed),
        Err(why) => refusal(endpoint, &why),
    }
}

/// A refusal in the endpoint's words: 403 for decisions, 504/503 when none was made.
fn refusal(endpoint: &Endpoint, why: &str) -> HttpResponse {
    match why {
        reason::TIMEOUT | reason::EXPIRED | reason::TIME_LIMIT_EXCEEDED => body_error(
            StatusCode::GATEWAY_TIMEOUT,
            "Gateway Timeout",
            Some(endpoint.message(why).unwrap_or("authorization timed out")),
        ),
        reason::BROKER_UNAVAILABLE | reason::INTERNAL | reason::AUTHORIZER_UNAVAILABLE => {
            body_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
                Some(endpoint.message(why).unwrap_or(why)),
            )
        }
        _ => forbidden(endpoint.message(why).unwrap_or(why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn reads_json_and_form_bodies_with_the_token_field() {
        let json = TestRequest::default()
            .insert_header(("content-type", "application/json"))
            .to_http_request();
        let fields = parse_body(
            &json,
            br#"{"socket_id": "1.2", "channel_name": "private-a", "token": "t"}"#,
            "token",
        )
        .unwrap();
        assert_eq!(fields.socket_id.as_deref(), Some("1.2"));
        assert_eq!(fields.channel_name.as_deref(), Some("private-a"));
        assert_eq!(fields.token.as_deref(), Some("t"));
        assert!(parse_body(&json, b"[1]", "token").is_err());
        assert!(parse_body(&json, b"{", "token").is_err());
        assert!(parse_body(&json, b"", "token").unwrap().socket_id.is_none());

        let form = TestRequest::default().to_http_request();
        let fields = parse_body(
            &form,
            b"socket_id=1.2&channel_name=private-a&guest=g&socket_id=9.9",
            "guest",
        )
        .unwrap();
        assert_eq!(fields.socket_id.as_deref(), Some("1.2"), "first value wins");
        assert_eq!(fields.token.as_deref(), Some("g"));
    }

    #[test]
    fn refusals_use_the_endpoint_messages() {
        let policy = Policy::from_toml(
            "[[rule]]\nname = \"g\"\npattern = \"private-g-{id}\"\nallow = { claims = { id = \"id\" } }\n[[endpoint]]\npath = \"/g\"\ntoken = { query = \"t\" }\nrules = \"g\"\n[endpoint.messages]\n\"claim_mismatch:id\" = \"Not yours\"\n",
        )
        .unwrap();
        let endpoint = &policy.endpoints()[0];
        assert_eq!(refusal(endpoint, "claim_mismatch:id").status(), 403);
        assert_eq!(refusal(endpoint, "forbidden").status(), 403);
        assert_eq!(refusal(endpoint, reason::TIMEOUT).status(), 504);
        assert_eq!(
            refusal(endpoint, reason::AUTHORIZER_UNAVAILABLE).status(),
            503
        );
        assert_eq!(endpoint.message("claim_mismatch:id"), Some("Not yours"));
    }

    #[test]
    fn an_endpoint_without_a_secret_accepts_no_token() {
        let policy = Policy::from_toml(
            "[[rule]]\nname = \"g\"\npattern = \"private-g-{id}\"\nallow = { claims = { id = \"id\" } }\n[[endpoint]]\npath = \"/g\"\ntoken = { query = \"t\", secret_env = \"G_SECRET\" }\nrules = \"g\"\n",
        )
        .unwrap();
        let claims = serde_json::json!({ "id": "1", "exp": 4_000_000_000u64 });
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"s"),
        )
        .unwrap();
        let without = ScopedKeys::new(&policy, |_| None);
        assert!(without.verify(0, &token).is_none());
        let with = ScopedKeys::new(&policy, |name| (name == "G_SECRET").then(|| "s".to_owned()));
        assert_eq!(with.verify(0, &token).unwrap()["id"], "1");
        assert!(with.verify(1, &token).is_none(), "no such endpoint");
        let other = ScopedKeys::new(&policy, |_| Some("other".to_owned()));
        assert!(other.verify(0, &token).is_none());
    }
}
