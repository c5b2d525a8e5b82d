//! Step 2 of applying a publication: the owner's sessions. For each event whose channel's
//! rule names an owner (`owner = "{object_id}"`, or `"store"`: the channel's owner in the
//! store), the event goes to the exchange `data.<session-id>.published` of every live session
//! of that user (the store's index, `Store::live_sessions`), with the routing key
//! `{channel}.{event}` and the body `{"channel", "event", "data"}`.
//!
//! Each delivery is marked once sent ([`Mark::session`]), so a redelivered publication sends
//! again only what did not go out. A session whose exchange is gone is skipped, not an error.
//!
//! An AMQP routing key is a short string, at most [`MAX_ROUTING_KEY_BYTES`] bytes, and
//! `{channel}.{event}` can be longer (a 200-character event name, multi-byte characters). No
//! retry would ever send such an event, so it is skipped for the sessions (a warning, and
//! `porter_worker_session_deliveries_total{result="routing_key_too_long"}` per session) while
//! the publication goes on to the upstream servers. Skipped rather than truncated or hashed: a
//! cut key would match bindings meant for another event. The check is here, before any
//! [`SessionExchanges`], so `porter dev`'s in-process exchanges skip exactly what RabbitMQ would.

use porter_broker::BrokerError;
use porter_broker::session_publish::{SessionDelivery, SessionExchanges};
use porter_core::channel::Channel;
use porter_core::policy::{Owner, Policy};
use porter_core::publish::{Publication, PublishedEvent};
use porter_store::{Store, StoreError};
use serde_json::json;
use thiserror::Error;

use super::marks::{Claim, Mark};
use super::metrics::PublishMetrics;

/// Why a delivery to the sessions could not be made now.
#[derive(Debug, Error)]
pub enum FanOutError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("another delivery of the publication is sending it now")]
    Busy,
}

/// The longest routing key AMQP carries (a short string), in bytes.
pub const MAX_ROUTING_KEY_BYTES: usize = 255;

/// The routing key of an event on a session exchange: the proposal's hierarchical name, or
/// `None` when it is longer than [`MAX_ROUTING_KEY_BYTES`].
pub fn routing_key(event: &PublishedEvent) -> Option<String> {
    let key = format!("{}.{}", event.channel, event.name);
    (key.len() <= MAX_ROUTING_KEY_BYTES).then_some(key)
}

/// The message body a session receives.
pub fn body(event: &PublishedEvent) -> Vec<u8> {
    json!({ "channel": event.channel, "event": event.name, "data": event.data })
        .to_string()
        .into_bytes()
}

/// The user whose sessions receive the channel's events, if the rule names one.
async fn owner_of(
    store: &dyn Store,
    policy: &Policy,
    event: &PublishedEvent,
) -> Result<Option<String>, StoreError> {
    let Ok(channel) = Channel::parse(&event.channel) else {
        return Ok(None);
    };
    let Ok(matched) = policy.match_channel(&channel) else {
        return Ok(None);
    };
    match &matched.rule.publish.owner {
        None => Ok(None),
        Some(Owner::Store) => store.channel_owner(&channel.cache_name()).await,
        Some(owner) => Ok(owner.from_captures(&matched.captures)),
    }
}

/// Sends every event of `publication` to its owner's live sessions.
pub(super) async fn fan_out(
    store: &dyn Store,
    exchanges: &dyn SessionExchanges,
    policy: &Policy,
    publication: &Publication,
    events: &[PublishedEvent],
    metrics: &PublishMetrics,
) -> Result<(), FanOutError> {
    for (index, event) in events.iter().enumerate() {
        let Some(owner) = owner_of(store, policy, event).await? else {
            continue;
        };
        let sessions = store.live_sessions(&owner).await?;
        if sessions.is_empty() {
            continue;
        }
        let Some(key) = routing_key(event) else {
            tracing::warn!(
                publication = %publication.id,
                channel = %event.channel,
                event_bytes = event.name.len(),
                "event's routing key is longer than AMQP allows; not sent to the owner's sessions"
            );
            for _ in &sessions {
                metrics.session_skipped_key_too_long();
            }
            continue;
        };
        let body = body(event);
        for session in sessions {
            let mark = Mark::session(&publication.id, index, &session);
            match mark.claim(store).await? {
                Claim::Done => {
                    metrics.step_skipped();
                    continue;
                }
                Claim::Busy => return Err(FanOutError::Busy),
                Claim::Claimed => {}
            }
            let delivery = match exchanges.publish(&session, &key, &body).await {
                Ok(delivery) => delivery,
                Err(error) => {
                    if let Err(error) = mark.release(store).await {
                        tracing::warn!(%error, "could not release a delivery's claim; it expires by itself");
                    }
                    return Err(error.into());
                }
            };
            metrics.session(delivery == SessionDelivery::Delivered);
            mark.set(store).await?;
        }
    }
    Ok(())
}
