//! Porter's task transport.
//!
//! The gateway publishes [`Task`]s through a [`TaskClient`] and awaits their replies in the
//! [`Pending`] table; workers take [`Incoming`] tasks from a [`TaskSource`] and answer each
//! with one reply before acknowledging it. Two implementations share these traits:
//!
//! - [`amqp`]: RabbitMQ over lapin, the distributed mode (queues `auth` and `auth/high`,
//!   one exclusive reply queue per gateway, reconnection with backoff).
//! - [`local`]: an in-process channel pair for `porter dev` and unit tests.
//!
//! Accepted publications (Pusher HTTP API publishes) travel on a separate, durable events
//! queue through an [`events::EventSink`]: over AMQP, or [`local_events`] in process.
//!
//! Over AMQP, tasks and replies are signed with the keys of `porter_core::task_auth`
//! (`auth.rs` reads the signed properties); a worker never runs a task that does not
//! authenticate, and a reply reaches its waiter only through [`Pending::deliver`].

mod acks;
pub mod amqp;
mod auth;
pub mod event_source;
pub mod events;
pub mod local;
pub mod local_events;
pub mod pending;
pub mod session;
pub mod session_publish;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use porter_core::routing::{Queue, Route};
use porter_core::wire::{Reply, Task};
use thiserror::Error;

pub use pending::{BatchRefusal, BatchSummary, Delivery, MAX_BATCH_REPLIES, Pending, PendingReply};

#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("the broker is not connected")]
    Unavailable,
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    /// The node accepted the connection but did not complete the AMQP handshake in time.
    #[error("the broker did not complete the connection handshake within {0:?}")]
    ConnectTimeout(std::time::Duration),
    /// The handshake was done but opening channels, declaring or consuming did not finish in
    /// time.
    #[error("the broker did not complete the connection set-up within {0:?}")]
    SetupTimeout(std::time::Duration),
    /// A queue, exchange or routing key name over AMQP's 255 bytes (the name is not quoted).
    #[error("a broker name of {0} bytes is longer than AMQP's 255")]
    NameTooLong(usize),
    #[error("could not encode a message: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the local transport is closed")]
    Closed,
    /// A broker error on a session exchange, its text without the session id.
    #[error("broker error on a session exchange: {0}")]
    Redacted(String),
}

/// The full name of a task queue: the deployment's prefix followed by `auth` or `auth/high`.
///
/// With the prefix `swag.features.notifications/` the names are exactly those of the system Porter
/// replaces.
pub fn queue_name(prefix: &str, queue: Queue) -> String {
    format!("{prefix}{}", queue.name())
}

/// Checks that every queue name a deployment's prefix makes (the task queues, the events queue
/// and its dead letters) fits AMQP's 255 bytes, so that a long `PORTER_QUEUE_PREFIX` is refused
/// at start-up rather than at every connection attempt.
pub fn check_queue_prefix(prefix: &str) -> Result<(), BrokerError> {
    let names = Queue::ALL
        .into_iter()
        .map(|queue| queue_name(prefix, queue))
        .chain([
            events::events_queue_name(prefix),
            events::dead_events_queue_name(prefix),
        ]);
    for name in names {
        short_string(name)?;
    }
    Ok(())
}

/// An AMQP short string (a queue, exchange or routing key name): at most 255 bytes. lapin's own
/// conversions panic on a longer one; this refuses it (a long `PORTER_QUEUE_PREFIX`).
pub(crate) fn short_string(name: String) -> Result<lapin::types::ShortString, BrokerError> {
    let length = name.len();
    lapin::types::ShortString::try_new(name).map_err(|_| BrokerError::NameTooLong(length))
}

/// A task ready to be published.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub task: &'a Task,
    pub route: Route,
    /// Unix milliseconds after which no worker may start the task.
    pub deadline_ms: u64,
}

/// The gateway's side: publish tasks, receive their replies.
#[async_trait]
pub trait TaskClient: Send + Sync + 'static {
    /// Publishes tasks. Register each task id in [`TaskClient::pending`] first, so that a
    /// fast reply cannot arrive before anyone waits for it.
    async fn publish(&self, tasks: &[Outgoing<'_>]) -> Result<(), BrokerError>;

    /// Where replies are delivered, by task id.
    fn pending(&self) -> &Pending;

    /// True while the transport can publish.
    fn is_ready(&self) -> bool;

    /// Declares a new session's exchange `data.<session-id>.published` with a lease of
    /// `ttl` (see [`session`]). Transports without exchanges (the local one) keep this no-op.
    async fn open_session(&self, _session_id: &str, _ttl: Duration) -> Result<(), BrokerError> {
        Ok(())
    }

    /// Renews a session's lease after a use, so that its exchange lives as long as it.
    async fn renew_session(&self, session_id: &str, ttl: Duration) -> Result<(), BrokerError> {
        self.open_session(session_id, ttl).await
    }
}

/// Answers one delivery and acknowledges it.
#[async_trait]
pub trait Responder: Send {
    /// Sends the reply, then acknowledges the task. A reply that cannot be sent leaves the
    /// task unacknowledged so that the broker can hand it to another worker. Over AMQP the
    /// reply may go out in one message with others for the same reply queue, and the ack in
    /// one `multiple` with others, but never before the reply (`amqp/outbox.rs`); it returns
    /// once the reply is published.
    async fn reply_and_ack(self: Box<Self>, reply: &Reply) -> Result<(), BrokerError>;
}

/// What the broker says about earlier deliveries of a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryHistory {
    /// The broker delivered this task before (AMQP's `redelivered` flag, on every queue type).
    pub redelivered: bool,
    /// How many times it was delivered before and not acknowledged: the `x-delivery-count`
    /// header of quorum queues. Classic queues do not count (`None`).
    pub previous_deliveries: Option<u64>,
}

/// A task taken from a queue, with what the worker needs to answer it.
pub struct Incoming {
    /// The decoded task, or why it could not be decoded.
    pub task: Result<Task, String>,
    /// The correlation id, which names the task even when its body is garbage.
    pub correlation_id: Option<String>,
    /// The queue it came from.
    pub queue: Queue,
    pub history: DeliveryHistory,
    /// Unix milliseconds after which the task must not run.
    pub deadline_ms: Option<u64>,
    pub time_limit: Option<Duration>,
    pub responder: Box<dyn Responder>,
}

/// The worker's side: a stream of tasks from one or more queues.
///
/// A worker asks for a task only when it can start it at once, so that a task it holds is
/// always a task it runs: whatever the transport has buffered beyond that is the source's to
/// hand back when it stops ([`TaskSource::stop_consuming`]).
#[async_trait]
pub trait TaskSource: Send {
    /// The next task, or `None` once the source has been stopped.
    async fn next(&mut self) -> Option<Incoming>;

    /// Resolves when the source is asked to stop (a signal), so that a worker waiting for a
    /// free slot rather than in [`TaskSource::next`] hears it at once. The default never
    /// resolves: such a source stops only by ending [`TaskSource::next`].
    fn stopping(&self) -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }

    /// Stops taking tasks: cancels the subscriptions, so that the broker sends nothing more,
    /// and hands back at once every task received but not handed out, for other workers to
    /// run. Tasks already handed out are not touched: the worker answers them. Called before
    /// the drain; calling it again does nothing.
    async fn stop_consuming(&mut self) {}

    /// Releases the connection after the worker has finished what it holds.
    async fn shutdown(&mut self) {}
}

/// What a task source tells a worker's health checks and metrics, updated as it runs.
#[derive(Debug, Default)]
pub struct SourceStatus {
    connected: AtomicBool,
    consuming: AtomicBool,
    /// Tasks dropped because they did not authenticate, by queue (`Queue::ALL` order).
    unauthenticated: [AtomicU64; 2],
}

impl SourceStatus {
    /// Connected to the broker.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Subscribed to its queues and taking tasks (false once it stops consuming).
    pub fn is_consuming(&self) -> bool {
        self.consuming.load(Ordering::Acquire)
    }

    /// Tasks of `queue` dropped so far because they did not authenticate.
    pub fn unauthenticated(&self, queue: Queue) -> u64 {
        self.unauthenticated[queue_index(queue)].load(Ordering::Relaxed)
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }

    pub fn set_consuming(&self, consuming: bool) {
        self.consuming.store(consuming, Ordering::Release);
    }

    /// Counts a dropped task; returns how many of its queue were dropped so far.
    pub fn count_unauthenticated(&self, queue: Queue) -> u64 {
        self.unauthenticated[queue_index(queue)].fetch_add(1, Ordering::Relaxed) + 1
    }
}

fn queue_index(queue: Queue) -> usize {
    match queue {
        Queue::Auth => 0,
        Queue::AuthHigh => 1,
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
