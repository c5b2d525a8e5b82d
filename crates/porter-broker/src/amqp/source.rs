//! The worker half of the RabbitMQ transport: [`AmqpSource`] consumes the task queues (one
//! channel, and so one prefetch window, per queue) and hands out tasks whose
//! [`AmqpResponder`] publishes the reply to the task's `reply_to` before acknowledging it.
//!
//! It reconnects with the shared backoff; tasks unacknowledged when a connection is lost go
//! back to their queue for another worker.
//!
//! A task that does not authenticate under the configured task keys is never handed out:
//! it is acknowledged without running and without a reply, logged and counted. Dropping
//! rather than answering keeps a worker from signing refusals for whatever correlation id
//! and reply queue a forger names; the real gateway's channel, if any, times out. Replies
//! are signed for the task's correlation id.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::SelectAll;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, Consumer};
use porter_core::routing::Queue;
use porter_core::task_auth::{Message, TaskAuth};
use porter_core::wire::{Reply, Task};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{AmqpConfig, BACKOFF_START, back_off, connection_properties, declare_task_queue};
use crate::auth::{signature, signed_reply, task_message};
use crate::{BrokerError, Incoming, Responder, TaskSource, queue_name};

/// A worker's consumer of one or more task queues.
pub struct AmqpSource {
    config: AmqpConfig,
    queues: Vec<Queue>,
    prefetch: u16,
    stop: CancellationToken,
    live: Option<WorkerLive>,
    connected: Arc<AtomicBool>,
    /// Tasks dropped because they did not authenticate; each drop's log line carries it.
    unauthenticated: AtomicU64,
}

impl AmqpSource {
    pub fn new(
        config: AmqpConfig,
        queues: Vec<Queue>,
        prefetch: u16,
        stop: CancellationToken,
    ) -> AmqpSource {
        AmqpSource {
            config,
            queues,
            prefetch,
            stop,
            live: None,
            connected: Arc::new(AtomicBool::new(false)),
            unauthenticated: AtomicU64::new(0),
        }
    }

    /// A flag that is true while the worker is connected (for health checks).
    pub fn connected_flag(&self) -> Arc<AtomicBool> {
        self.connected.clone()
    }

    async fn connect(&self) -> Result<WorkerLive, BrokerError> {
        let connection = Connection::connect(
            &self.config.url,
            connection_properties("worker", &self.config),
        )
        .await?;
        let replies = connection.create_channel().await?;
        let mut consumers = SelectAll::new();
        for queue in &self.queues {
            // One channel per queue: each gets its own prefetch window.
            let channel = connection.create_channel().await?;
            channel
                .basic_qos(self.prefetch, BasicQosOptions::default())
                .await?;
            let name = queue_name(&self.config.queue_prefix, *queue);
            declare_task_queue(&channel, &name).await?;
            let consumer = channel
                .basic_consume(
                    &name,
                    "porter-worker",
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            consumers.push(consumer);
        }
        Ok(WorkerLive {
            connection,
            replies,
            consumers,
        })
    }
}

/// A worker's live connection: its consumers, and one channel to publish replies on.
struct WorkerLive {
    connection: Connection,
    replies: Channel,
    consumers: SelectAll<Consumer>,
}

#[async_trait]
impl TaskSource for AmqpSource {
    async fn next(&mut self) -> Option<Incoming> {
        let mut delay = BACKOFF_START;
        loop {
            if self.live.is_none() {
                tokio::select! {
                    () = self.stop.cancelled() => return None,
                    result = self.connect() => match result {
                        Ok(live) => {
                            info!(queues = ?self.queues, "worker connected to the broker");
                            self.connected.store(true, Ordering::Release);
                            delay = BACKOFF_START;
                            self.live = Some(live);
                        }
                        Err(error) => {
                            warn!(%error, retry_in_ms = delay.as_millis() as u64, "worker cannot connect to the broker");
                            tokio::select! {
                                () = self.stop.cancelled() => return None,
                                () = back_off(&mut delay) => continue,
                            }
                        }
                    }
                }
            }
            let live = self.live.as_mut()?;
            let delivery = tokio::select! {
                () = self.stop.cancelled() => return None,
                delivery = live.consumers.next() => delivery,
            };
            match delivery {
                Some(Ok(delivery)) => {
                    let props = &delivery.properties;
                    // What is verified is what the worker then acts on: one reading.
                    let signed = task_message(props, &delivery.data);
                    let auth = &self.config.task_auth;
                    if let Err(refusal) = auth.verify(&Message::Task(signed), signature(props)) {
                        let dropped = self.unauthenticated.fetch_add(1, Ordering::Relaxed) + 1;
                        // The code only: the rest of the message is whatever the sender chose.
                        warn!(
                            code = refusal.code(),
                            dropped,
                            "dropped an unauthenticated task without running or answering it"
                        );
                        if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
                            warn!(%error, "could not acknowledge a dropped task");
                        }
                        continue;
                    }
                    let correlation_id = signed.correlation_id.map(str::to_owned);
                    let deadline_ms = signed.deadline_ms;
                    let time_limit = signed.time_limit_ms.map(Duration::from_millis);
                    let task =
                        serde_json::from_slice::<Task>(&delivery.data).map_err(|e| e.to_string());
                    let responder = AmqpResponder {
                        reply_to: props.reply_to().clone(),
                        correlation_id: props.correlation_id().clone(),
                        acker: delivery.acker.clone(),
                        replies: live.replies.clone(),
                        auth: auth.clone(),
                    };
                    return Some(Incoming {
                        task,
                        correlation_id,
                        deadline_ms,
                        time_limit,
                        responder: Box::new(responder),
                    });
                }
                Some(Err(error)) => {
                    warn!(%error, "worker lost its broker connection; reconnecting");
                    self.drop_connection().await;
                }
                None => {
                    warn!("worker's consumers were cancelled; reconnecting");
                    self.drop_connection().await;
                }
            }
        }
    }

    async fn shutdown(&mut self) {
        if let Some(live) = self.live.take() {
            let _ = live.connection.close(200, "worker shutting down").await;
            // lapin's I/O thread notices the close on its next turn; give it that turn before
            // the runtime goes away, or it reports the runtime's shutdown as an I/O error.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.connected.store(false, Ordering::Release);
    }
}

impl AmqpSource {
    async fn drop_connection(&mut self) {
        self.connected.store(false, Ordering::Release);
        if let Some(live) = self.live.take() {
            let _ = live.connection.close(200, "reconnecting").await;
        }
    }
}

/// Replies on the default exchange to the task's `reply_to`, signed, then acks.
struct AmqpResponder {
    reply_to: Option<ShortString>,
    correlation_id: Option<ShortString>,
    acker: lapin::acker::Acker,
    replies: Channel,
    auth: TaskAuth,
}

#[async_trait]
impl Responder for AmqpResponder {
    async fn reply_and_ack(self: Box<Self>, reply: &Reply) -> Result<(), BrokerError> {
        if let Some(reply_to) = &self.reply_to {
            let body = serde_json::to_vec(reply)?;
            let mut properties = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(1);
            if let Some(correlation_id) = &self.correlation_id {
                properties = properties.with_correlation_id(correlation_id.clone());
            }
            let properties = signed_reply(&self.auth, properties, &body);
            self.replies
                .basic_publish(
                    "",
                    reply_to.as_str(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await?;
        }
        self.acker.ack(BasicAckOptions::default()).await?;
        Ok(())
    }
}
