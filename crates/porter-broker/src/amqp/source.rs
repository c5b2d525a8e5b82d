//! The worker half of the RabbitMQ transport: [`AmqpSource`] consumes the task queues (one
//! channel, and so one prefetch window, per queue) and hands out tasks whose
//! [`AmqpResponder`] publishes the reply to the task's `reply_to` before acknowledging it.
//!
//! It reconnects with the shared backoff; tasks unacknowledged when a connection is lost go
//! back to their queue for another worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::SelectAll;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, Consumer};
use porter_core::routing::Queue;
use porter_core::wire::{HEADER_DEADLINE_MS, HEADER_TIME_LIMIT_MS, Reply, Task};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{AmqpConfig, BACKOFF_START, back_off, connection_properties, declare_task_queue};
use crate::{BrokerError, Incoming, Responder, TaskSource, queue_name};

/// A worker's consumer of one or more task queues.
pub struct AmqpSource {
    config: AmqpConfig,
    queues: Vec<Queue>,
    prefetch: u16,
    stop: CancellationToken,
    live: Option<WorkerLive>,
    connected: Arc<AtomicBool>,
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

fn header_u64(headers: &Option<FieldTable>, name: &str) -> Option<u64> {
    let value = headers.as_ref()?.inner().get(name)?;
    let number = match value {
        AMQPValue::LongLongInt(v) => *v,
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        AMQPValue::Timestamp(v) => *v as i64,
        _ => return None,
    };
    u64::try_from(number).ok()
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
                    let correlation_id = props.correlation_id().as_ref().map(|c| c.to_string());
                    let deadline_ms = header_u64(props.headers(), HEADER_DEADLINE_MS);
                    let time_limit = header_u64(props.headers(), HEADER_TIME_LIMIT_MS)
                        .map(Duration::from_millis);
                    let task =
                        serde_json::from_slice::<Task>(&delivery.data).map_err(|e| e.to_string());
                    let responder = AmqpResponder {
                        reply_to: props.reply_to().clone(),
                        correlation_id: props.correlation_id().clone(),
                        acker: delivery.acker.clone(),
                        replies: live.replies.clone(),
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

/// Replies on the default exchange to the task's `reply_to`, then acks.
struct AmqpResponder {
    reply_to: Option<ShortString>,
    correlation_id: Option<ShortString>,
    acker: lapin::acker::Acker,
    replies: Channel,
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
