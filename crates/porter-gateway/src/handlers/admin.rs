//! The administration API of the policy's data: channel members, retained events, and the
//! decision for a (channel, user) pair. Every endpoint is behind the admin guard of the `/admin` scope
//! (`crate::middleware::admin`) and its rate limit.
//!
//! - `PUT|DELETE /admin/channels/{channel}/members/{user_id}`: add or remove a member.
//! - `PUT /admin/channels/{channel}/events/{event}` (body: the event's JSON data): retain an
//!   event; `DELETE …/events/{event}` clears one, `DELETE …/events` clears them all.
//! - `GET /admin/decision?channel=…&user_id=…`: runs the decision in a worker, as a request of
//!   that user would, and shows the rule, the verdict and the data, unsigned; `POST` the same
//!   with `claims` (and a scoped endpoint's route `params`) to try rules that compare claims.
//!
//! Architecture Invariant: every change drops the cached results of the channel it touches
//! (the cache hash of its cache name, which drops `-encrypted`), before answering, so the
//! next request decides afresh: a removed member is refused on their next subscription.

use actix_web::{HttpResponse, web};
use porter_core::channel::Channel;
use porter_core::reason::Reason;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tracing::info;

use porter_identity::Identity;

use crate::authorize::{Prepared, Verdict};
use crate::error::ApiError;
use crate::state::AppState;

/// Longest user id or event name accepted.
const MAX_NAME: usize = 200;

pub(super) fn channel_of(name: &str) -> Result<Channel<'_>, ApiError> {
    Channel::parse(name).map_err(|e| ApiError::bad_request("invalid_channel", e.to_string()))
}

pub(super) fn checked_name<'a>(what: &'static str, value: &'a str) -> Result<&'a str, ApiError> {
    if value.is_empty() || value.len() > MAX_NAME || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("{what} must be 1 to {MAX_NAME} characters without control characters"),
        ));
    }
    Ok(value)
}

pub(super) fn store_failed(error: porter_store::StoreError) -> ApiError {
    tracing::warn!(%error, "admin change failed in the store");
    ApiError::store_unavailable()
}

/// Drops the channel's cached results: the change must show on the next request.
async fn invalidate(state: &AppState, channel: &Channel<'_>) -> Result<(), ApiError> {
    state
        .store
        .drop_cached(&channel.cache_name())
        .await
        .map_err(store_failed)
}

pub async fn add_member(
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    set_member(path, &state, true).await
}

pub async fn remove_member(
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    set_member(path, &state, false).await
}

/// Adds (`member`) or removes a user of a channel's member set, then drops the channel's cache.
async fn set_member(
    path: web::Path<(String, String)>,
    state: &AppState,
    member: bool,
) -> Result<HttpResponse, ApiError> {
    let (channel, user_id) = path.into_inner();
    let channel = channel_of(&channel)?;
    let user_id = checked_name("user_id", &user_id)?;
    let set = channel.cache_name();
    let changed = if member {
        state.store.add_member(&set, user_id).await
    } else {
        state.store.remove_member(&set, user_id).await
    };
    changed.map_err(store_failed)?;
    invalidate(state, &channel).await?;
    info!(channel = channel.name, member, "admin: membership changed");
    Ok(HttpResponse::Ok()
        .json(json!({ "channel": channel.name, "user_id": user_id, "member": member })))
}

pub async fn set_event(
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (channel, event) = path.into_inner();
    let channel = channel_of(&channel)?;
    let event = checked_name("event", &event)?;
    let data: Value = serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request("invalid_body", "the body must be the event's data as JSON")
    })?;
    state
        .store
        .set_retained_event(&channel.cache_name(), event, &data.to_string())
        .await
        .map_err(store_failed)?;
    invalidate(&state, &channel).await?;
    info!(channel = channel.name, event, "admin: retained event set");
    Ok(HttpResponse::Ok().json(json!({ "channel": channel.name, "event": event, "data": data })))
}

pub async fn clear_event(
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (channel, event) = path.into_inner();
    let channel = channel_of(&channel)?;
    let event = checked_name("event", &event)?;
    state
        .store
        .clear_retained_events(&channel.cache_name(), Some(event))
        .await
        .map_err(store_failed)?;
    invalidate(&state, &channel).await?;
    info!(
        channel = channel.name,
        event, "admin: retained event cleared"
    );
    Ok(HttpResponse::Ok().json(json!({ "channel": channel.name, "cleared": [event] })))
}

pub async fn clear_events(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let channel = path.into_inner();
    let channel = channel_of(&channel)?;
    state
        .store
        .clear_retained_events(&channel.cache_name(), None)
        .await
        .map_err(store_failed)?;
    invalidate(&state, &channel).await?;
    info!(channel = channel.name, "admin: all retained events cleared");
    Ok(HttpResponse::Ok().json(json!({ "channel": channel.name, "cleared": "all" })))
}

#[derive(Deserialize)]
pub struct DecisionQuery {
    channel: String,
    user_id: Option<String>,
}

/// `POST /admin/decision`: like the `GET`, with the caller's token claims as well, so rules
/// that compare claims can be tried (`{"channel", "user_id"?, "claims"?, "params"?}`; `params`
/// stand in for the route parameters of a scoped endpoint).
#[derive(Deserialize)]
struct DecisionBody {
    channel: String,
    user_id: Option<String>,
    #[serde(default)]
    claims: Map<String, Value>,
    #[serde(default)]
    params: std::collections::BTreeMap<String, String>,
}

pub async fn decision(
    query: web::Query<DecisionQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    decide_for(
        &state,
        DecisionBody {
            channel: query.channel,
            user_id: query.user_id,
            claims: Map::new(),
            params: Default::default(),
        },
    )
    .await
}

pub async fn decision_with_claims(
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body: DecisionBody = serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request(
            "invalid_body",
            "expected {\"channel\", \"user_id\"?, \"claims\"?, \"params\"?}",
        )
    })?;
    decide_for(&state, body).await
}

async fn decide_for(state: &AppState, asked: DecisionBody) -> Result<HttpResponse, ApiError> {
    let channel = channel_of(&asked.channel)?;
    let user_id = match asked.user_id.as_deref().filter(|u| !u.is_empty()) {
        Some(user) => Some(checked_name("user_id", user)?.to_owned()),
        None => None,
    };
    let mut found = state.policy.match_channel(&channel);
    // A scoped rule is matched as its endpoint would, with the given route parameters.
    if let Ok(matched) = &found
        && let Some(endpoint) = state
            .policy
            .endpoints()
            .iter()
            .find(|e| e.rules.contains(&matched.rule.name))
    {
        found = state
            .policy
            .match_for_endpoint(endpoint, &channel, &asked.params);
    }
    let matched = match found {
        Ok(matched) => matched,
        Err(error) => {
            return Ok(HttpResponse::Ok().json(json!({
                "channel": channel.name,
                "rule": Value::Null,
                "allowed": false,
                "reason": error.reason(),
            })));
        }
    };
    let rule = matched.rule.name.clone();
    let captures = matched.captures.clone();
    let mut claims = asked.claims;
    if let Some(user) = &user_id {
        claims.insert("sub".to_owned(), Value::String(user.clone()));
    }
    let identity = Identity {
        user_id,
        client_id: None,
        claims,
        ..Identity::default()
    };
    let prepared = Prepared { channel, matched };
    // A what-if: decided by a worker, never cached, so it grants the real user nothing.
    let verdict = state
        .authorizer()
        .decide(&prepared, &identity, true)
        .await?;
    let mut body = json!({
        "channel": prepared.channel.name,
        "user_id": identity.user_id,
        "rule": rule,
        "captures": captures,
        "scoped": state.policy.is_scoped(&rule),
    });
    match verdict {
        Verdict::Allowed(data) => {
            body["allowed"] = Value::Bool(true);
            body["data"] = serde_json::to_value(&data).unwrap_or(Value::Null);
        }
        Verdict::Refused(reason) => {
            body["allowed"] = Value::Bool(false);
            body["reason"] = json!(reason);
        }
        Verdict::TimedOut => {
            body["allowed"] = Value::Bool(false);
            body["reason"] = json!(Reason::Timeout);
        }
    }
    Ok(HttpResponse::Ok().json(body))
}
