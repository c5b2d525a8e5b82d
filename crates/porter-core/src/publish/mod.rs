//! Events published through Porter's copy of Pusher's HTTP API (`POST /apps/{app_id}/events`
//! and `POST /apps/{app_id}/batch_events`), and the message that carries one such request
//! from the gateway to the workers that apply it.
//!
//! The gateway checks a request and hands it on whole, as a [`Publication`]: the body as
//! received, so that the worker can forward it upstream byte for byte, and an id that makes
//! applying it again (a redelivery, or another copy of the same signed request) a no-op: the
//! id is the request's own ([`publication_id`]). The worker reads the events out of it with
//! [`Publication::events`].
//!
//! The checks are here, pure: the bodies of both endpoints and Pusher's limits (`body.rs`,
//! [`parse_body`]), and the request signature of Pusher's HTTP API (`request_auth.rs`,
//! [`ApiCredentials::verify`]). Every refusal is a [`PublishError`] with a stable
//! [`PublishErrorCode`] and the [`PublishErrorClass`] the gateway turns into a status.

mod body;
mod request_auth;

pub use body::{
    MAX_BATCH_EVENTS, MAX_CHANNELS_PER_EVENT, MAX_DATA_BYTES, MAX_EVENT_NAME_LEN,
    MAX_PUBLISH_CHANNEL_LEN, parse_body,
};
pub use request_auth::{
    ApiCredentials, SignedRequest, TIMESTAMP_WINDOW_SECS, VerifiedRequest, body_md5, signed_query,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The format version of [`Publication`] this build speaks.
pub const PUBLICATION_VERSION: u32 = 1;

fn publication_version() -> u32 {
    PUBLICATION_VERSION
}

/// Which endpoint of Pusher's HTTP API a publication came through: the body's shape and the
/// upstream path it is forwarded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishKind {
    /// `POST /apps/{app_id}/events`: one event to one or more channels.
    Events,
    /// `POST /apps/{app_id}/batch_events`: several events, one channel each.
    BatchEvents,
}

impl PublishKind {
    /// The path of Pusher's HTTP API for this kind, under `/apps/{app_id}`.
    pub fn path_suffix(self) -> &'static str {
        match self {
            PublishKind::Events => "events",
            PublishKind::BatchEvents => "batch_events",
        }
    }
}

/// One accepted publish request (gateway → workers), on the durable events queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    #[serde(default = "publication_version")]
    pub v: u32,
    /// The signed request's name ([`publication_id`]): every copy of one request (a replay, the
    /// SDK's retry after a 503) carries the same id. Also the AMQP message id. Workers apply a
    /// publication at most once per id.
    pub id: String,
    pub app_id: String,
    pub kind: PublishKind,
    /// The request body exactly as received (JSON text), already checked by the gateway.
    pub body: String,
    /// Unix milliseconds when the gateway accepted it: orders retained events.
    pub accepted_ms: u64,
}

impl Publication {
    /// Checks a request body of `kind` (UTF-8, format, Pusher's limits) and wraps it, as
    /// received, into the publication the gateway queues; also returns how many events it
    /// publishes (one per channel).
    pub fn accept(
        id: String,
        app_id: String,
        kind: PublishKind,
        body: &[u8],
        accepted_ms: u64,
    ) -> Result<(Publication, usize), PublishError> {
        let body = std::str::from_utf8(body).map_err(|_| PublishError::InvalidUtf8)?;
        let events = parse_body(kind, body)?.len();
        let publication = Publication {
            v: PUBLICATION_VERSION,
            id,
            app_id,
            kind,
            body: body.to_owned(),
            accepted_ms,
        };
        Ok((publication, events))
    }

    /// The events the publication's body publishes, one per channel, in order. The gateway
    /// checked the body before queueing it; this reads it again with the same checks, so a
    /// publication of another release, or one tampered with on the queue, is refused
    /// rather than half applied.
    pub fn events(&self) -> Result<Vec<PublishedEvent>, PublishError> {
        if self.v != PUBLICATION_VERSION {
            return Err(PublishError::UnknownVersion(self.v));
        }
        parse_body(self.kind, &self.body)
    }
}

/// The id of the publication a verified request makes: hex SHA-256 of `{app_id}:{signature}`.
///
/// The signature is the request's name: it covers the method, the path, the timestamp and
/// (through `body_md5`) the body, and [`ApiCredentials::verify`] hands back the one it computed,
/// so two copies of a request always give the same id and two different requests different
/// ones. That is what makes "answered 200" safe under replays and timeouts: a copy published
/// again (the gateway's confirm timed out but the broker had it; two copies raced) is the
/// same publication to the worker, applied once. Hashed, so the id is of fixed length and
/// does not show the signature.
pub fn publication_id(app_id: &str, verified: &VerifiedRequest) -> String {
    let mut digest = Sha256::new();
    digest.update(app_id.as_bytes());
    digest.update(b":");
    digest.update(verified.signature.as_bytes());
    hex::encode(digest.finalize())
}

/// One event to one channel, as a publication's body describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedEvent {
    pub channel: String,
    pub name: String,
    /// The event's data: a string in Pusher's HTTP API (usually JSON text).
    pub data: String,
    /// The publisher's own socket, excluded from delivery by the realtime server.
    pub socket_id: Option<String>,
}

/// Why a publish request, or a publication on the queue, is refused.
///
/// The messages follow the wording of Pusher's own answers where Pusher has one, and never
/// quote a signature, a key or data.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PublishError {
    #[error("Unknown app id")]
    UnknownApp,
    #[error("Missing required parameter: {0}")]
    MissingAuthParameter(&'static str),
    #[error("Query parameters must not repeat")]
    DuplicateParameter,
    #[error("Unknown auth_key")]
    UnknownKey,
    #[error("Unsupported auth_version: only 1.0 is supported")]
    UnsupportedAuthVersion,
    #[error("auth_timestamp must be unix seconds")]
    InvalidTimestamp,
    #[error(
        "Timestamp expired: auth_timestamp is not within {TIMESTAMP_WINDOW_SECS}s of server time"
    )]
    StaleTimestamp,
    #[error("Invalid body_md5: it is not the MD5 of the body")]
    BodyMd5Mismatch,
    #[error("Invalid signature: the auth_signature does not match the request")]
    InvalidSignature,
    #[error("Request body must be valid UTF-8")]
    InvalidUtf8,
    #[error("Invalid JSON body: {0}")]
    InvalidBody(String),
    #[error("Event name must not be empty")]
    EmptyEventName,
    #[error("Event name too long: at most {MAX_EVENT_NAME_LEN} characters")]
    EventNameTooLong,
    #[error("Missing channels: give `channels` (1 to {MAX_CHANNELS_PER_EVENT} names) or `channel`")]
    NoChannels,
    #[error("Give either `channels` or `channel`, not both")]
    ChannelAndChannels,
    #[error("Too many channels: {0} given, at most {MAX_CHANNELS_PER_EVENT} per event")]
    TooManyChannels(usize),
    #[error("Invalid channel name: only [-a-zA-Z0-9_=@,.;] are allowed")]
    InvalidChannel,
    #[error("Channel name too long: at most {MAX_PUBLISH_CHANNEL_LEN} characters")]
    ChannelNameTooLong,
    #[error("Batch must not be empty")]
    EmptyBatch,
    #[error("Batch too large: {0} events given, at most {MAX_BATCH_EVENTS}")]
    TooManyEvents(usize),
    #[error("Event data too large: {0} bytes, at most {MAX_DATA_BYTES}")]
    DataTooLarge(usize),
    #[error("Invalid socket_id")]
    InvalidSocketId,
    #[error("Unknown info attribute: only subscription_count and user_count are known")]
    UnknownInfoAttribute,
    #[error("Unknown publication format version {0}")]
    UnknownVersion(u32),
}

/// The stable code of a [`PublishError`]: the `error` field of the gateway's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishErrorCode {
    UnknownApp,
    MissingAuthParameter,
    DuplicateParameter,
    UnknownKey,
    UnsupportedAuthVersion,
    InvalidTimestamp,
    StaleTimestamp,
    InvalidBodyMd5,
    InvalidSignature,
    InvalidBody,
    InvalidEventName,
    NoChannels,
    TooManyChannels,
    InvalidChannel,
    EmptyBatch,
    TooManyEvents,
    DataTooLarge,
    InvalidSocketId,
    InvalidInfo,
    UnknownVersion,
}

/// What kind of refusal a [`PublishError`] is: the gateway's status for it comes from one
/// exhaustive match over this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishErrorClass {
    /// The app id of the path is not this gateway's (404, as Pusher answers).
    NotFound,
    /// The request is not signed by the app (401).
    Unauthorized,
    /// The body breaks the format or a limit (400).
    BadRequest,
    /// An event's data is over [`MAX_DATA_BYTES`] (413, as Pusher answers).
    TooLarge,
}

impl PublishError {
    pub fn code(&self) -> PublishErrorCode {
        use PublishErrorCode as C;
        match self {
            PublishError::UnknownApp => C::UnknownApp,
            PublishError::MissingAuthParameter(_) => C::MissingAuthParameter,
            PublishError::DuplicateParameter => C::DuplicateParameter,
            PublishError::UnknownKey => C::UnknownKey,
            PublishError::UnsupportedAuthVersion => C::UnsupportedAuthVersion,
            PublishError::InvalidTimestamp => C::InvalidTimestamp,
            PublishError::StaleTimestamp => C::StaleTimestamp,
            PublishError::BodyMd5Mismatch => C::InvalidBodyMd5,
            PublishError::InvalidSignature => C::InvalidSignature,
            PublishError::InvalidUtf8 | PublishError::InvalidBody(_) => C::InvalidBody,
            PublishError::EmptyEventName | PublishError::EventNameTooLong => C::InvalidEventName,
            PublishError::NoChannels | PublishError::ChannelAndChannels => C::NoChannels,
            PublishError::TooManyChannels(_) => C::TooManyChannels,
            PublishError::InvalidChannel | PublishError::ChannelNameTooLong => C::InvalidChannel,
            PublishError::EmptyBatch => C::EmptyBatch,
            PublishError::TooManyEvents(_) => C::TooManyEvents,
            PublishError::DataTooLarge(_) => C::DataTooLarge,
            PublishError::InvalidSocketId => C::InvalidSocketId,
            PublishError::UnknownInfoAttribute => C::InvalidInfo,
            PublishError::UnknownVersion(_) => C::UnknownVersion,
        }
    }

    pub fn class(&self) -> PublishErrorClass {
        self.code().class()
    }
}

impl PublishErrorCode {
    /// The code as sent: snake case, stable.
    pub fn as_str(self) -> &'static str {
        use PublishErrorCode as C;
        match self {
            C::UnknownApp => "unknown_app",
            C::MissingAuthParameter => "missing_auth_parameter",
            C::DuplicateParameter => "duplicate_parameter",
            C::UnknownKey => "unknown_key",
            C::UnsupportedAuthVersion => "unsupported_auth_version",
            C::InvalidTimestamp => "invalid_timestamp",
            C::StaleTimestamp => "stale_timestamp",
            C::InvalidBodyMd5 => "invalid_body_md5",
            C::InvalidSignature => "invalid_signature",
            C::InvalidBody => "invalid_body",
            C::InvalidEventName => "invalid_event_name",
            C::NoChannels => "no_channels",
            C::TooManyChannels => "too_many_channels",
            C::InvalidChannel => "invalid_channel",
            C::EmptyBatch => "empty_batch",
            C::TooManyEvents => "too_many_events",
            C::DataTooLarge => "data_too_large",
            C::InvalidSocketId => "invalid_socket_id",
            C::InvalidInfo => "invalid_info",
            C::UnknownVersion => "unknown_version",
        }
    }

    pub fn class(self) -> PublishErrorClass {
        use PublishErrorCode as C;
        match self {
            C::UnknownApp => PublishErrorClass::NotFound,
            C::MissingAuthParameter
            | C::DuplicateParameter
            | C::UnknownKey
            | C::UnsupportedAuthVersion
            | C::InvalidTimestamp
            | C::StaleTimestamp
            | C::InvalidBodyMd5
            | C::InvalidSignature => PublishErrorClass::Unauthorized,
            C::InvalidBody
            | C::InvalidEventName
            | C::NoChannels
            | C::TooManyChannels
            | C::InvalidChannel
            | C::EmptyBatch
            | C::TooManyEvents
            | C::InvalidSocketId
            | C::InvalidInfo
            | C::UnknownVersion => PublishErrorClass::BadRequest,
            C::DataTooLarge => PublishErrorClass::TooLarge,
        }
    }
}

#[cfg(test)]
mod tests;
