//! RabbitMQ transport over lapin: what the gateway and worker halves share.
//!
//! Both sides declare the task queues with identical arguments (durable, no extra
//! arguments), so whichever starts first creates them. Tasks are transient JSON messages with
//! a per-message `expiration` and the deadline and time limit in headers; the gateway's
//! replies come back on its own exclusive, auto-delete, server-named queue.
//!
//! Both sides reconnect by themselves with capped exponential backoff. A connection loss
//! loses the gateway's reply queue, so its in-flight tasks answer `timeout`; unacknowledged
//! tasks held by a lost worker go back to their queue for another worker.
//!
//! This module holds the configuration, the reply mode, connection set-up, the one
//! [`declare_task_queue`] and the backoff; `client.rs` is the gateway half ([`AmqpClient`]),
//! `source.rs` the worker half ([`AmqpSource`]), and neither uses the other.

mod client;
mod source;

pub use client::AmqpClient;
pub use source::AmqpSource;

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ConnectionProperties};

use crate::BrokerError;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where to connect and which queues to use.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    pub url: String,
    /// Prepended to `auth` and `auth/high`.
    pub queue_prefix: String,
    /// How the gateway receives replies.
    pub reply_mode: ReplyMode,
}

/// Where workers send the gateway's replies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReplyMode {
    /// An exclusive, auto-delete, server-named queue per gateway connection (the default:
    /// measured faster on our hosts, see docs/benchmarks.md).
    #[default]
    Exclusive,
    /// RabbitMQ's direct reply-to pseudo-queue `amq.rabbitmq.reply-to` (no queue at all).
    DirectReplyTo,
}

impl std::str::FromStr for ReplyMode {
    type Err = String;

    /// `exclusive`, or `direct` (also `direct-reply-to`).
    fn from_str(name: &str) -> Result<ReplyMode, String> {
        match name {
            "exclusive" => Ok(ReplyMode::Exclusive),
            "direct" | "direct-reply-to" => Ok(ReplyMode::DirectReplyTo),
            _ => Err(format!(
                "unknown reply mode `{name}`; use exclusive or direct"
            )),
        }
    }
}

/// Connection properties; `name` is what the RabbitMQ management UI shows for the connection.
fn connection_properties(role: &str, config: &AmqpConfig) -> ConnectionProperties {
    let mut properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let name = format!(
        "porter {role} pid {} {}",
        std::process::id(),
        config.queue_prefix
    );
    properties.client_properties.insert(
        "connection_name".into(),
        AMQPValue::LongString(name.trim_end().into()),
    );
    properties
}

/// Declares a task queue. Gateway and worker must use the same arguments, or the second to
/// declare gets PRECONDITION_FAILED: keep this the only place that declares task queues.
async fn declare_task_queue(channel: &Channel, name: &str) -> Result<(), BrokerError> {
    channel
        .queue_declare(
            name,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Sleeps for the current backoff and doubles it, up to the cap.
async fn back_off(delay: &mut Duration) {
    tokio::time::sleep(*delay).await;
    *delay = (*delay * 2).min(BACKOFF_MAX);
}
