//! Reading and checking the bodies of Pusher's two publish endpoints, with Pusher's limits.
//!
//! `POST /apps/{app_id}/events`: `{"name", "data", "channels": [..] | "channel", "socket_id"?,
//! "info"?}`, one event to one or more channels. `POST /apps/{app_id}/batch_events`:
//! `{"batch": [{"channel", "name", "data", "socket_id"?, "info"?}, ..]}`, several events with
//! one channel each. Fields Pusher does not define are ignored, as Pusher ignores them (the
//! body is forwarded upstream as received).

use serde::Deserialize;

use super::{PublishError, PublishKind, PublishedEvent};
use crate::channel::{is_channel_char, validate_socket_id};

// Pusher's limits. Sources: the HTTP API reference ("POST event": `data` "limited to 10KB",
// a larger one answered 413; between 1 and 100 channel names per event,
// https://pusher.com/docs/channels/server_api/http-api/#publishing-events), the batch events
// announcement ("up to 10 events per request" on multi-tenant clusters,
// https://pusher.com/blog/publish-batches-of-events-at-scale-with-the-batch-events-api/),
// Pusher's support article "What does the error 'Invalid channel name' mean?" (at most 164
// characters, prefixes included), and the official Node server SDK `pusher` 5.3.4
// (`lib/pusher.js`: event names of at most 200 characters, at most 100 channels per trigger).
// The SDK checks channel names against 200 characters; Pusher's service, which Porter stands in
// for, refuses past 164, and so does Porter.

/// The longest event name, in characters.
pub const MAX_EVENT_NAME_LEN: usize = 200;
/// The longest channel name a publish may name, in characters.
pub const MAX_PUBLISH_CHANNEL_LEN: usize = 164;
/// The most channels one event of `POST /events` may go to.
pub const MAX_CHANNELS_PER_EVENT: usize = 100;
/// The most events one `POST /batch_events` may carry.
pub const MAX_BATCH_EVENTS: usize = 10;
/// The largest `data` of one event, in bytes (10 KiB).
pub const MAX_DATA_BYTES: usize = 10 * 1024;

/// The prefix of the channels of Pusher's server-to-user events (`sendToUser` in the SDKs).
const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";

/// The `info` attributes Pusher's publish endpoints know. Porter answers before the realtime
/// server has the counts, so it accepts them and returns no channel attributes.
const INFO_ATTRIBUTES: &[&str] = &["subscription_count", "user_count"];

#[derive(Deserialize)]
struct EventsBody {
    name: String,
    data: String,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
}

#[derive(Deserialize)]
struct BatchBody {
    batch: Vec<BatchItem>,
}

#[derive(Deserialize)]
struct BatchItem {
    channel: String,
    name: String,
    data: String,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
}

/// Reads a body of `kind` and checks it against Pusher's limits: the events it publishes, one
/// per channel, in order.
pub fn parse_body(kind: PublishKind, body: &str) -> Result<Vec<PublishedEvent>, PublishError> {
    match kind {
        PublishKind::Events => parse_events(body),
        PublishKind::BatchEvents => parse_batch(body),
    }
}

fn parse_events(body: &str) -> Result<Vec<PublishedEvent>, PublishError> {
    let body: EventsBody = serde_json::from_str(body).map_err(invalid_json)?;
    let channels = match (body.channels, body.channel) {
        (Some(channels), None) => channels,
        (None, Some(channel)) => vec![channel],
        (None, None) => return Err(PublishError::NoChannels),
        (Some(_), Some(_)) => return Err(PublishError::ChannelAndChannels),
    };
    if channels.is_empty() {
        return Err(PublishError::NoChannels);
    }
    if channels.len() > MAX_CHANNELS_PER_EVENT {
        return Err(PublishError::TooManyChannels(channels.len()));
    }
    check_event(
        &body.name,
        &body.data,
        body.socket_id.as_deref(),
        body.info.as_deref(),
    )?;
    for channel in &channels {
        check_channel(channel)?;
    }
    Ok(channels
        .into_iter()
        .map(|channel| PublishedEvent {
            channel,
            name: body.name.clone(),
            data: body.data.clone(),
            socket_id: body.socket_id.clone(),
        })
        .collect())
}

fn parse_batch(body: &str) -> Result<Vec<PublishedEvent>, PublishError> {
    let body: BatchBody = serde_json::from_str(body).map_err(invalid_json)?;
    if body.batch.is_empty() {
        return Err(PublishError::EmptyBatch);
    }
    if body.batch.len() > MAX_BATCH_EVENTS {
        return Err(PublishError::TooManyEvents(body.batch.len()));
    }
    body.batch
        .into_iter()
        .map(|item| {
            check_event(
                &item.name,
                &item.data,
                item.socket_id.as_deref(),
                item.info.as_deref(),
            )?;
            check_channel(&item.channel)?;
            Ok(PublishedEvent {
                channel: item.channel,
                name: item.name,
                data: item.data,
                socket_id: item.socket_id,
            })
        })
        .collect()
}

fn invalid_json(error: serde_json::Error) -> PublishError {
    // serde_json's messages name the field and position, never more than a short token of
    // the input; one line, as every Porter message.
    PublishError::InvalidBody(error.to_string().replace('\n', " "))
}

fn check_event(
    name: &str,
    data: &str,
    socket_id: Option<&str>,
    info: Option<&str>,
) -> Result<(), PublishError> {
    if name.is_empty() {
        return Err(PublishError::EmptyEventName);
    }
    if name.chars().count() > MAX_EVENT_NAME_LEN {
        return Err(PublishError::EventNameTooLong);
    }
    if data.len() > MAX_DATA_BYTES {
        return Err(PublishError::DataTooLarge(data.len()));
    }
    if let Some(socket_id) = socket_id {
        validate_socket_id(socket_id).map_err(|_| PublishError::InvalidSocketId)?;
    }
    if let Some(info) = info {
        check_info(info)?;
    }
    Ok(())
}

/// `info`: a comma-separated list of attribute names; unknown ones are refused, as a typo
/// would otherwise go unnoticed (the answer never carries attributes, see [`INFO_ATTRIBUTES`]).
fn check_info(info: &str) -> Result<(), PublishError> {
    if info.is_empty() {
        return Ok(());
    }
    for attribute in info.split(',') {
        if !INFO_ATTRIBUTES.contains(&attribute) {
            return Err(PublishError::UnknownInfoAttribute);
        }
    }
    Ok(())
}

/// A channel a publish may name: any Pusher channel name (public ones included: publishing
/// needs no subscription rule) of at most [`MAX_PUBLISH_CHANNEL_LEN`] characters, or a
/// server-to-user channel `#server-to-user-{user id}`.
fn check_channel(channel: &str) -> Result<(), PublishError> {
    let rest = channel
        .strip_prefix(SERVER_TO_USER_PREFIX)
        .unwrap_or(channel);
    if rest.is_empty() {
        return Err(PublishError::InvalidChannel);
    }
    if channel.chars().count() > MAX_PUBLISH_CHANNEL_LEN {
        return Err(PublishError::ChannelNameTooLong);
    }
    if !rest.chars().all(is_channel_char) {
        return Err(PublishError::InvalidChannel);
    }
    Ok(())
}
