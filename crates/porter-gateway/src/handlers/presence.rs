//! Global presence: one online status per user, whatever app sends it.
//!
//! A user is online while heartbeating (`POST /presence/heartbeat`, authenticated; the flag
//! lives `PORTER_PRESENCE_TTL` seconds) or while a member of any presence channel, which the
//! realtime server reports by signed webhooks (`POST /pusher/webhook`: `member_added`,
//! `member_removed`). `channel_vacated` drops the channel's cached authorization data. The
//! store's `is_online` combines both, and the workers' `user.online` data reads it.
//!
//! Architecture Invariant: a webhook changes nothing unless its `X-Pusher-Key` and
//! `X-Pusher-Signature` (HMAC of the raw body with the app secret, compared in constant time)
//! are right, its `time_ms` is within `PORTER_WEBHOOK_MAX_AGE` of now, and the same signed
//! body has not been applied before within that window (replays are ignored). A body is
//! marked applied only after all its events are, and membership events older than what the
//! store knows of their user and channel are ignored (`porter_store::presence`), so neither
//! a failure half-way nor webhooks arriving out of order lose or resurrect a membership.

use actix_web::{HttpRequest, HttpResponse, web};
use porter_broker::now_ms;
use porter_core::channel::{Channel, ChannelKind};
use porter_store::{PresenceEvent, Store};
use serde::Deserialize;
use serde_json::json;
use tracing::{debug, warn};

use crate::audit::{self, Who};
use crate::error::ApiError;
use crate::state::AppState;

/// `POST /presence/heartbeat`: marks the caller online for the presence TTL.
pub async fn heartbeat(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = state
        .rate_limiter()
        .identify(&state.identity, &request)
        .await?;
    let Some(user) = caller.identity().user_id.as_deref() else {
        return Err(ApiError::unauthorized(
            "unauthenticated",
            "a heartbeat needs an authenticated user",
        ));
    };
    // A heartbeat makes no cache round trip to carry the revocation check: ask on its own.
    caller.ensure_not_revoked(state.store.as_ref()).await?;
    let ttl = state.protection.config.presence_ttl;
    state.store.set_online(user, ttl).await.map_err(|error| {
        warn!(%error, "could not store a heartbeat");
        ApiError::store_unavailable()
    })?;
    Ok(HttpResponse::Ok().json(json!({ "online": true, "ttl": ttl.as_secs() })))
}

/// A Pusher webhook body.
#[derive(Debug, Deserialize)]
pub struct WebhookBody {
    time_ms: u64,
    #[serde(default)]
    events: Vec<WebhookEvent>,
}

impl WebhookBody {
    /// Reads a raw webhook body; public so that `fuzz/` can feed it arbitrary bytes.
    pub fn parse(body: &[u8]) -> Result<WebhookBody, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

#[derive(Debug, Deserialize)]
struct WebhookEvent {
    name: String,
    #[serde(default)]
    channel: Option<String>,
    /// A string in Pusher's webhooks; numbers are accepted too.
    #[serde(default)]
    user_id: Option<serde_json::Value>,
}

impl WebhookEvent {
    fn user(&self) -> Option<String> {
        match self.user_id.as_ref()? {
            serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

fn header<'a>(request: &'a HttpRequest, name: &str) -> &'a str {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// `POST /pusher/webhook`: presence and cache upkeep from the realtime server.
pub async fn webhook(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let signature = header(&request, "x-pusher-signature");
    if !state
        .signer
        .verify_webhook(header(&request, "x-pusher-key"), signature, &body)
    {
        return Err(ApiError::unauthorized(
            "invalid_webhook_signature",
            "X-Pusher-Key or X-Pusher-Signature is missing or wrong",
        ));
    }
    let hook = WebhookBody::parse(&body).map_err(|_| {
        ApiError::bad_request(
            "invalid_body",
            "the body is not a Pusher webhook (`time_ms`, `events`)",
        )
    })?;
    let max_age = state.protection.config.webhook_max_age;
    let age_ms = now_ms().abs_diff(hook.time_ms);
    if u128::from(age_ms) > max_age.as_millis() {
        return Err(ApiError::unauthorized(
            "webhook_stale",
            "the webhook's time_ms is outside the accepted window",
        ));
    }
    // The verified signature identifies the signed body; seen twice within the window is a
    // replay (or a redelivery of one already applied): acknowledged, not applied again. The
    // body is marked seen only AFTER its events are applied: a store failure half-way answers
    // 503 and leaves it unmarked, so Pusher's retry applies it (the events are idempotent and
    // ordered by `time_ms`, so re-applying the part that did land changes nothing).
    let seen_id = format!("webhook:{}", signature.to_ascii_lowercase());
    let seen = state.store.sighted(&seen_id).await.map_err(|error| {
        warn!(%error, "could not check a webhook for replay");
        ApiError::store_unavailable()
    })?;
    if seen {
        // Answered 200 (Pusher must not retry), so audited here rather than by the middleware.
        let who = Who::ip(state.protection.proxies.client_ip(&request));
        audit::refused(&who, None, "webhook_replay", "webhook_replayed");
        state.metrics.protection_refusal("webhook_replay");
        return Ok(HttpResponse::Ok().json(json!({ "ok": true, "applied": 0, "replay": true })));
    }
    let mut applied = 0;
    for event in &hook.events {
        if apply(state.store.as_ref(), event, hook.time_ms).await? {
            applied += 1;
        }
    }
    if let Err(error) = state.store.first_sighting(&seen_id, max_age * 2).await {
        // Applied already: answering 503 would only make Pusher send it again. Unmarked, a
        // replay within the window re-applies the same events, which changes nothing.
        warn!(%error, "could not mark a webhook as applied");
    }
    Ok(HttpResponse::Ok().json(json!({ "ok": true, "applied": applied })))
}

/// Applies one webhook event of a webhook sent at `time_ms`; `false` when it is not one Porter
/// acts on, or is older than what the store already knows of that user and channel.
async fn apply(store: &dyn Store, event: &WebhookEvent, time_ms: u64) -> Result<bool, ApiError> {
    let Some(name) = event.channel.as_deref() else {
        return Ok(false);
    };
    let Ok(channel) = Channel::parse(name) else {
        debug!(channel = ?name, "webhook for an invalid channel name ignored");
        return Ok(false);
    };
    let user = event.user();
    let membership = match event.name.as_str() {
        "member_added" => Some(PresenceEvent::Joined),
        "member_removed" => Some(PresenceEvent::Left),
        _ => None,
    };
    let result = match (event.name.as_str(), membership, user.as_deref()) {
        (_, Some(membership), Some(user)) if channel.kind == ChannelKind::Presence => {
            store.update_presence(user, name, membership, time_ms).await
        }
        ("channel_vacated", _, _) => store
            .drop_cached(&channel.cache_name())
            .await
            .map(|()| true),
        _ => return Ok(false),
    };
    result.map_err(|error| {
        warn!(%error, event = %event.name, "could not apply a webhook event");
        ApiError::store_unavailable()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `fuzz/` (`webhook_body`): serde_json skips a field it ignores without checking
    /// its UTF-8, so such a body reads, and the fields Porter acts on are unaffected. Harmless:
    /// only a signed body is read, and nothing reads the skipped bytes.
    #[test]
    fn invalid_utf8_in_an_ignored_field_leaves_the_read_fields_intact() {
        let body = b"{\"time_ms\":3400000000000,\"events\":[{\"name\":\"ved\",\
            \"ahannel\":\"pr\xff\xff\xff\xffesence@chat-0\",\"user_id\":7}]}";
        let hook = WebhookBody::parse(body).unwrap();
        assert_eq!(hook.time_ms, 3_400_000_000_000);
        assert_eq!(hook.events.len(), 1);
        assert_eq!(hook.events[0].name, "ved");
        assert_eq!(hook.events[0].channel, None);
        assert_eq!(hook.events[0].user().as_deref(), Some("7"));
    }

    /// Found by `fuzz/` too: a skipped number is not checked against the range of an f64.
    #[test]
    fn an_out_of_range_number_in_an_ignored_field_is_skipped() {
        let hook = WebhookBody::parse(b"{\"time_ms\":5,\"extra\":-69e99699999999999}").unwrap();
        assert_eq!(hook.time_ms, 5);
        assert!(hook.events.is_empty());
    }

    #[test]
    fn invalid_utf8_in_a_field_porter_reads_refuses_the_body() {
        let body = b"{\"time_ms\":1,\"events\":[{\"name\":\"member_added\",\
            \"channel\":\"presence-\xff\",\"user_id\":\"7\"}]}";
        assert!(WebhookBody::parse(body).is_err());
    }
}
