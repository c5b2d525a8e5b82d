//! Events published through Porter's copy of Pusher's HTTP API (`POST /apps/{app_id}/events`
//! and `POST /apps/{app_id}/batch_events`), and the message that carries one such request
//! from the gateway to the workers that apply it.
//!
//! The gateway checks a request and hands it on whole, as a [`Publication`]: the body as
//! received, so that the worker can forward it upstream byte for byte, and an id that makes
//! applying it again (a redelivery) a no-op. The worker reads the events out of it with
//! [`Publication::events`].

use serde::{Deserialize, Serialize};

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
    /// Unique per accepted request; also the AMQP message id. Workers apply a publication at
    /// most once per id.
    pub id: String,
    pub app_id: String,
    pub kind: PublishKind,
    /// The request body exactly as received (JSON text), already checked by the gateway.
    pub body: String,
    /// Unix milliseconds when the gateway accepted it: orders retained events.
    pub accepted_ms: u64,
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
