//! Delivering published events to session exchanges `data.<session-id>.published` (see
//! [`crate::session`]): the worker's half of "publish the event to every one of the user's
//! sessions".
//!
//! A session whose exchange is gone (its lease expired, the broker restarted) is no error:
//! [`SessionDelivery::NoExchange`] says so, and the caller moves on. Over AMQP publishing to a
//! missing exchange closes the channel, so `amqp::AmqpSessionExchanges` checks the exchange
//! first on a channel of its own and opens a new one when the broker closed it.
//!
//! [`LocalSessionExchanges`] is the in-process stand-in of `porter dev` and the tests: it
//! keeps the latest messages of each session for reading back.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::BrokerError;

/// What became of one message to a session exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionDelivery {
    /// The broker took it (confirmed, over AMQP).
    Delivered,
    /// The session's exchange does not exist (any more): nothing to deliver to.
    NoExchange,
}

/// Publishes messages to session exchanges.
#[async_trait]
pub trait SessionExchanges: Send + Sync + 'static {
    /// Publishes `body` (JSON) to the exchange of `session_id` with `routing_key`.
    async fn publish(
        &self,
        session_id: &str,
        routing_key: &str,
        body: &[u8],
    ) -> Result<SessionDelivery, BrokerError>;
}

/// Messages kept per session by [`LocalSessionExchanges`]; older ones are dropped first.
const KEPT_PER_SESSION: usize = 100;

/// One message a session exchange received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMessage {
    pub routing_key: String,
    pub body: Vec<u8>,
}

/// The in-process session exchanges: every session exists, and keeps its latest messages.
#[derive(Default)]
pub struct LocalSessionExchanges {
    messages: Mutex<HashMap<String, VecDeque<SessionMessage>>>,
}

impl LocalSessionExchanges {
    /// The messages a session received, oldest first.
    pub fn messages(&self, session_id: &str) -> Vec<SessionMessage> {
        self.messages
            .lock()
            .map(|m| {
                m.get(session_id)
                    .map(|q| q.iter().cloned().collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }
}

#[async_trait]
impl SessionExchanges for LocalSessionExchanges {
    async fn publish(
        &self,
        session_id: &str,
        routing_key: &str,
        body: &[u8],
    ) -> Result<SessionDelivery, BrokerError> {
        let mut messages = self.messages.lock().map_err(|_| BrokerError::Closed)?;
        let queue = messages.entry(session_id.to_owned()).or_default();
        if queue.len() == KEPT_PER_SESSION {
            queue.pop_front();
        }
        queue.push_back(SessionMessage {
            routing_key: routing_key.to_owned(),
            body: body.to_vec(),
        });
        // Never the session id in a log line.
        tracing::info!(routing_key, "published event delivered to a session");
        Ok(SessionDelivery::Delivered)
    }
}
