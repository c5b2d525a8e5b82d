//! The workers' side of the events queue (see [`crate::events`]): a stream of
//! [`EventDelivery`]s, each settled once, after the worker applied it or gave up on it.
//!
//! Settling follows the queue's contract: [`Settle::ack`] once every step was applied (or
//! found applied before), [`Settle::requeue`] when a step could not run yet (the store or
//! broker is away: another try later), [`Settle::dead_letter`] when it never will (a body that
//! does not parse, an upstream that refused it or kept failing): over AMQP a reject without
//! requeue, which RabbitMQ dead-letters to `{prefix}events.dead`.
//!
//! Implementations: the local queue of `porter dev` here (over [`LocalEventReceiver`]), and
//! `amqp::AmqpEventSource`.

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use porter_core::publish::Publication;

use crate::BrokerError;
use crate::local_events::{LocalEventDelivery, LocalEventReceiver};

/// Settles one delivery of the events queue.
#[async_trait]
pub trait Settle: Send {
    /// Applied: removes it from the queue.
    async fn ack(self: Box<Self>) -> Result<(), BrokerError>;
    /// Not applied yet: back to the queue for another try.
    async fn requeue(self: Box<Self>) -> Result<(), BrokerError>;
    /// Never applicable: to the dead-letter queue.
    async fn dead_letter(self: Box<Self>) -> Result<(), BrokerError>;
}

/// One publication taken from the events queue.
pub struct EventDelivery {
    /// The decoded publication, or why its message could not be decoded.
    pub publication: Result<Publication, String>,
    /// The queue delivered it before (a worker died or handed it back).
    pub redelivered: bool,
    pub settle: Box<dyn Settle>,
}

/// A stream of publications to apply.
#[async_trait]
pub trait EventSource: Send {
    /// The next publication, or `None` once the source has stopped.
    async fn next(&mut self) -> Option<EventDelivery>;

    /// Resolves when the source is asked to stop; the default never resolves.
    fn stopping(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }

    /// Stops taking publications; what was received but not handed out goes back to the
    /// queue. Calling it again does nothing.
    async fn stop_consuming(&mut self) {}
}

struct LocalSettle(LocalEventDelivery);

#[async_trait]
impl Settle for LocalSettle {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        self.0.ack();
        Ok(())
    }

    async fn requeue(self: Box<Self>) -> Result<(), BrokerError> {
        self.0.requeue();
        Ok(())
    }

    async fn dead_letter(self: Box<Self>) -> Result<(), BrokerError> {
        self.0.dead_letter();
        Ok(())
    }
}

#[async_trait]
impl EventSource for LocalEventReceiver {
    async fn next(&mut self) -> Option<EventDelivery> {
        let delivery = self.recv().await?;
        Some(EventDelivery {
            publication: Ok(delivery.publication().clone()),
            redelivered: delivery.redelivered,
            settle: Box::new(LocalSettle(delivery)),
        })
    }
}
