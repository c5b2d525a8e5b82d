//! The events queue: where the gateway hands accepted publications
//! ([`Publication`](porter_core::publish::Publication)) to the workers that apply them.
//!
//! Unlike tasks, publications must survive the broker and a crash of the worker: the queue is
//! durable, messages are persistent, and the gateway answers a publish 200 only after
//! [`EventSink::publish`] returned, which an implementation does only once the broker has
//! confirmed the message (publisher confirms over AMQP; the bounded channel's acceptance in
//! process). Workers acknowledge a publication after applying it, so it is applied at least
//! once; its id makes applying it again a no-op.
//!
//! Two implementations: `amqp::AmqpEventSink` (the durable queue `{prefix}events` and its
//! dead-letter queue `{prefix}events.dead`) and [`crate::local_events`] (`porter dev`).

use async_trait::async_trait;
use porter_core::publish::Publication;

use crate::BrokerError;

/// The name of the events queue under a deployment's prefix.
pub fn events_queue_name(prefix: &str) -> String {
    format!("{prefix}events")
}

/// The name of the dead-letter queue of the events queue: where a publication goes that a
/// worker rejected for good (it could not be applied) or, on quorum queues, that was delivered
/// too often.
pub fn dead_events_queue_name(prefix: &str) -> String {
    format!("{prefix}events.dead")
}

/// The gateway's side of the events queue.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Hands a publication to the queue. Returns `Ok` only once the broker has taken
    /// responsibility for it (confirmed it); any error means it may not have been queued,
    /// and the caller must not report success.
    async fn publish(&self, publication: &Publication) -> Result<(), BrokerError>;

    /// True while the sink is connected and can publish (for `/readyz`).
    fn is_ready(&self) -> bool;
}
