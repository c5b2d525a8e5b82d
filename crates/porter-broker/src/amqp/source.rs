//! The worker half of the RabbitMQ transport: [`AmqpSource`] consumes the task queues (one
//! channel, and so one prefetch window, per queue) and hands out tasks whose
//! [`AmqpResponder`] publishes the reply to the task's `reply_to` before acknowledging it.
//!
//! It reconnects with the shared backoff; tasks unacknowledged when a connection is lost go
//! back to their queue for another worker.
//!
//! Stopping ([`TaskSource::stop_consuming`]) cancels the consumers first (`basic.cancel`), so
//! that the broker sends nothing more, then hands back (`basic.nack`, requeue) every delivery
//! lapin has buffered and the worker has not taken, at once: the prefetch window of a draining
//! worker goes to other workers while their deadlines still hold, instead of coming back only
//! when the connection closes after the drain.
//!
//! Each task carries its [`DeliveryHistory`]: the `redelivered` flag and, on quorum queues,
//! RabbitMQ's `x-delivery-count` header.
//!
//! A task that does not authenticate under the configured task keys is never handed out:
//! it is acknowledged without running and without a reply, logged and counted. Dropping
//! rather than answering keeps a worker from signing refusals for whatever correlation id
//! and reply queue a forger names; the real gateway's channel, if any, times out. Replies
//! are signed for the task's correlation id.
//!
//! Replies and acks go through the connection's outbox (`outbox.rs`): replies of tasks whose
//! gateway reads coalesced replies go out together, one message per reply queue, and acks go
//! out as `multiple` ones once the replies they cover are published, with single acks above a
//! stalled task. A task that does not authenticate is acknowledged through it too, so that
//! every ack of a channel is decided in one place.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::Stream;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::SelectAll;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use porter_core::routing::Queue;
use porter_core::task_auth::Message;
use porter_core::wire::{Reply, Task};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::outbox::{Event, Finished, Outbox, OutgoingReply};
use super::{AmqpConfig, BACKOFF_START, back_off, close_connection, declare_task_queue, set_up};
use crate::auth::{signature, task_message};
use crate::{
    BrokerError, DeliveryHistory, Incoming, Responder, SourceStatus, TaskSource, queue_name,
    short_string,
};

/// The consumer tag of every subscription (tags are per channel, and each queue has its own).
const CONSUMER_TAG: &str = "porter-worker";

/// How long a stop waits for the broker to confirm the cancellations and for the buffered
/// deliveries to be handed back; past it, the rest goes back when the connection closes.
const HAND_BACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a reconnect waits for the outbox to send the acks it holds.
const DROP_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// The header in which quorum queues count earlier deliveries of a message.
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// A worker's consumer of one or more task queues.
pub struct AmqpSource {
    config: AmqpConfig,
    queues: Vec<Queue>,
    prefetch: u16,
    stop: CancellationToken,
    live: Option<WorkerLive>,
    /// Connected, consuming, and tasks dropped unauthenticated (each drop's log line carries
    /// the count).
    status: Arc<SourceStatus>,
    /// Set once [`TaskSource::stop_consuming`] ran: no reconnection, no more tasks.
    stopped: bool,
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
            status: Arc::default(),
            stopped: false,
        }
    }

    /// What the health checks and metrics read: connected, consuming, tasks dropped.
    pub fn status(&self) -> Arc<SourceStatus> {
        self.status.clone()
    }

    async fn connect(&self) -> Result<WorkerLive, BrokerError> {
        let connection = super::connect("worker", &self.config).await?;
        match set_up(self.subscribe(&connection)).await {
            Ok((replies, subscriptions, consumers)) => {
                let broken = CancellationToken::new();
                let outbox = Outbox::start(
                    replies,
                    subscriptions.clone(),
                    self.config.task_auth.clone(),
                    broken.clone(),
                );
                Ok(WorkerLive {
                    connection,
                    outbox,
                    broken,
                    subscriptions,
                    consumers,
                })
            }
            Err(error) => {
                close_connection(&connection, "set-up failed").await;
                Err(error)
            }
        }
    }

    /// Opens the reply channel and one consuming channel per queue.
    async fn subscribe(
        &self,
        connection: &Connection,
    ) -> Result<(Channel, Vec<Channel>, SelectAll<Deliveries>), BrokerError> {
        let replies = connection.create_channel().await?;
        let mut consumers = SelectAll::new();
        let mut subscriptions = Vec::with_capacity(self.queues.len());
        for (lane, &queue) in self.queues.iter().enumerate() {
            // One channel per queue: each gets its own prefetch window.
            let channel = connection.create_channel().await?;
            channel
                .basic_qos(self.prefetch, BasicQosOptions::default())
                .await?;
            let name = queue_name(&self.config.queue_prefix, queue);
            declare_task_queue(&channel, &name, self.config.queue_type).await?;
            let consumer = channel
                .basic_consume(
                    short_string(name)?,
                    CONSUMER_TAG.into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            consumers.push(
                Box::pin(consumer.map(move |delivery| (lane, queue, delivery))) as Deliveries,
            );
            subscriptions.push(channel);
        }
        Ok((replies, subscriptions, consumers))
    }
}

/// A worker's live connection: its consumers, and the outbox of its replies and acks.
struct WorkerLive {
    connection: Connection,
    outbox: Outbox,
    /// Cancelled by the outbox when a channel of this connection can no longer publish or
    /// acknowledge (the connection itself may be up): the source then reconnects.
    broken: CancellationToken,
    /// The channel of each queue's consumer (its lane), to cancel it on.
    subscriptions: Vec<Channel>,
    /// Every queue's deliveries, each with the queue it came from.
    consumers: SelectAll<Deliveries>,
}

/// One queue's deliveries, each with its lane and the queue it came from.
type Deliveries =
    std::pin::Pin<Box<dyn Stream<Item = (usize, Queue, lapin::Result<Delivery>)> + Send + Sync>>;

#[async_trait]
impl TaskSource for AmqpSource {
    async fn next(&mut self) -> Option<Incoming> {
        let mut delay = BACKOFF_START;
        loop {
            if self.stopped {
                return None;
            }
            if self.live.is_none() {
                tokio::select! {
                    () = self.stop.cancelled() => return None,
                    result = self.connect() => match result {
                        Ok(live) => {
                            info!(queues = ?self.queues, "worker connected to the broker");
                            self.status.set_connected(true);
                            self.status.set_consuming(true);
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
                () = live.broken.cancelled() => Err(()),
                delivery = live.consumers.next() => Ok(delivery),
            };
            let Ok(delivery) = delivery else {
                warn!("worker's reply or ack channel failed; reconnecting");
                self.drop_connection().await;
                continue;
            };
            match delivery {
                Some((lane, queue, Ok(delivery))) => {
                    let tag = delivery.delivery_tag;
                    // Before anything can finish: the acks of this lane are decided in order.
                    // (It cannot fail: the flusher outlives every sender but a closing one.)
                    let _ = live.outbox.send(Event::Delivered { lane, tag });
                    let props = &delivery.properties;
                    // What is verified is what the worker then acts on: one reading.
                    let signed = task_message(props, &delivery.data);
                    let auth = &self.config.task_auth;
                    if let Err(refusal) = auth.verify(&Message::Task(signed), signature(props)) {
                        let dropped = self.status.count_unauthenticated(queue);
                        // The code only: the rest of the message is whatever the sender chose.
                        warn!(
                            code = refusal.code(),
                            %queue,
                            dropped,
                            "dropped an unauthenticated task without running or answering it"
                        );
                        // Acknowledged without a reply, in its turn among the lane's acks.
                        let dropped = Finished {
                            lane,
                            tag,
                            reply: None,
                            done: None,
                        };
                        if live.outbox.send(Event::Finished(dropped)).is_err() {
                            warn!("could not acknowledge a dropped task");
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
                        coalesce: task.as_ref().is_ok_and(|task| task.coalesce),
                        lane,
                        tag,
                        outbox: live.outbox.clone(),
                        answered: false,
                    };
                    let history = DeliveryHistory {
                        redelivered: delivery.redelivered,
                        previous_deliveries: delivery_count(props),
                    };
                    return Some(Incoming {
                        task,
                        correlation_id,
                        queue,
                        history,
                        deadline_ms,
                        time_limit,
                        responder: Box::new(responder),
                    });
                }
                Some((_, _, Err(error))) => {
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

    fn stopping(&self) -> BoxFuture<'static, ()> {
        let stop = self.stop.clone();
        Box::pin(async move { stop.cancelled().await })
    }

    async fn stop_consuming(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        self.status.set_consuming(false);
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let handing_back = async {
            // Cancel first: once each cancel-ok is in, lapin has every delivery the broker
            // sent on that consumer buffered ahead of the stream's end.
            for channel in &live.subscriptions {
                if let Err(error) = channel
                    .basic_cancel(CONSUMER_TAG.into(), BasicCancelOptions::default())
                    .await
                {
                    warn!(%error, "could not cancel a consumer; its deliveries go back when the connection closes");
                }
            }
            let mut handed_back = 0u64;
            // The stream ends once every consumer's end has been read.
            while let Some((_, _, delivery)) = live.consumers.next().await {
                let Ok(delivery) = delivery else { break };
                let requeue = BasicNackOptions {
                    requeue: true,
                    multiple: false,
                };
                match delivery.acker.nack(requeue).await {
                    Ok(true) => handed_back += 1,
                    // The channel is gone: the broker requeues the task itself.
                    Ok(false) => {}
                    Err(error) => {
                        warn!(%error, "could not hand back a task; it goes back when the connection closes")
                    }
                }
            }
            handed_back
        };
        match tokio::time::timeout(HAND_BACK_TIMEOUT, handing_back).await {
            Ok(handed_back) => {
                info!(
                    handed_back,
                    "stopped consuming; handed back the tasks not started"
                )
            }
            Err(_) => warn!(
                timeout_ms = HAND_BACK_TIMEOUT.as_millis() as u64,
                "stopped consuming; the broker did not confirm in time, the rest goes back when the connection closes"
            ),
        }
    }

    async fn shutdown(&mut self) {
        self.stop_consuming().await;
        if let Some(live) = self.live.take() {
            // The acks still held (replies out, waiting for a `multiple`) go before the close.
            live.outbox.close(HAND_BACK_TIMEOUT).await;
            close_connection(&live.connection, "worker shutting down").await;
            // lapin's I/O thread notices the close on its next turn; give it that turn before
            // the runtime goes away, or it reports the runtime's shutdown as an I/O error.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.status.set_connected(false);
    }
}

impl AmqpSource {
    async fn drop_connection(&mut self) {
        self.status.set_connected(false);
        self.status.set_consuming(false);
        if let Some(live) = self.live.take() {
            // A consumer cancelled by the broker (or a lane lost) leaves a healthy connection
            // whose replied tasks still wait for a `multiple` ack: send them before closing,
            // or they would be redelivered for nothing.
            if live.connection.status().connected() && !live.broken.is_cancelled() {
                live.outbox.close(DROP_FLUSH_TIMEOUT).await;
            }
            close_connection(&live.connection, "reconnecting").await;
        }
    }
}

/// Earlier deliveries by the quorum queue's count; `None` on a classic queue (no header) or
/// when the header is not a non-negative integer.
fn delivery_count(properties: &BasicProperties) -> Option<u64> {
    let value = properties
        .headers()
        .as_ref()?
        .inner()
        .get(DELIVERY_COUNT_HEADER)?;
    match *value {
        AMQPValue::ShortShortUInt(n) => Some(n.into()),
        AMQPValue::ShortUInt(n) => Some(n.into()),
        AMQPValue::LongUInt(n) => Some(n.into()),
        AMQPValue::ShortShortInt(n) => u64::try_from(n).ok(),
        AMQPValue::ShortInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongLongInt(n) => u64::try_from(n).ok(),
        _ => None,
    }
}

/// Hands the reply to the connection's outbox, which publishes it on the default exchange to
/// the task's `reply_to` (signed; coalesced with others if the task allows it) and acks the
/// task once it is published.
struct AmqpResponder {
    reply_to: Option<ShortString>,
    correlation_id: Option<ShortString>,
    /// The task's gateway reads coalesced replies.
    coalesce: bool,
    lane: usize,
    tag: u64,
    outbox: Outbox,
    /// Handed to the outbox as finished; until then, dropping the responder abandons the task.
    answered: bool,
}

/// A responder dropped without an answer (the handler panicked, or its future was dropped)
/// would hold its delivery, and every ack above it, until the connection closes: the outbox
/// hands it back to the queue instead.
impl Drop for AmqpResponder {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.outbox.send(Event::Abandoned {
                lane: self.lane,
                tag: self.tag,
            });
        }
    }
}

#[async_trait]
impl Responder for AmqpResponder {
    async fn reply_and_ack(mut self: Box<Self>, reply: &Reply) -> Result<(), BrokerError> {
        let reply = match self.reply_to.take() {
            Some(reply_to) => Some(OutgoingReply {
                reply_to,
                correlation_id: self.correlation_id.take(),
                coalesce: self.coalesce,
                body: serde_json::value::to_raw_value(reply)?,
            }),
            None => None,
        };
        let (done, published) = tokio::sync::oneshot::channel();
        self.answered = true;
        self.outbox.send(Event::Finished(Finished {
            lane: self.lane,
            tag: self.tag,
            reply,
            done: Some(done),
        }))?;
        // A flusher gone with its connection: nothing was acked, the broker requeues the task.
        published.await.unwrap_or(Err(BrokerError::Unavailable))
    }
}
#[cfg(test)]
mod tests {
    use lapin::types::{AMQPValue, FieldTable};

    use super::*;

    fn with_header(value: AMQPValue) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(DELIVERY_COUNT_HEADER.into(), value);
        BasicProperties::default().with_headers(headers)
    }

    #[test]
    fn the_quorum_queues_delivery_count_is_read_whatever_integer_type_carries_it() {
        for value in [
            AMQPValue::LongLongInt(3),
            AMQPValue::LongInt(3),
            AMQPValue::LongUInt(3),
            AMQPValue::ShortUInt(3),
            AMQPValue::ShortShortUInt(3),
        ] {
            assert_eq!(
                delivery_count(&with_header(value.clone())),
                Some(3),
                "{value:?}"
            );
        }
    }

    #[test]
    fn no_count_on_a_classic_queue_or_from_a_header_that_is_not_a_count() {
        assert_eq!(delivery_count(&BasicProperties::default()), None);
        for value in [
            AMQPValue::LongLongInt(-1),
            AMQPValue::LongString("3".into()),
            AMQPValue::Boolean(true),
        ] {
            assert_eq!(
                delivery_count(&with_header(value.clone())),
                None,
                "{value:?}"
            );
        }
    }

    /// A connection the outbox reports broken is dropped, and the task the worker held comes
    /// back on the next one (over the real broker).
    #[tokio::test]
    async fn a_broken_connection_is_dropped_and_its_tasks_come_back() {
        use lapin::options::{BasicPublishOptions, QueueDeleteOptions};
        let prefix = format!(
            "porter-test-broken-{}-{}.",
            std::process::id(),
            rand_suffix()
        );
        let config = AmqpConfig {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            queue_prefix: prefix.clone(),
            reply_mode: super::super::ReplyMode::Exclusive,
            task_auth: porter_core::task_auth::TaskAuth::off(),
            queue_type: super::super::QueueType::Classic,
        };
        let connection =
            lapin::Connection::connect(&config.url, lapin::ConnectionProperties::default())
                .await
                .expect("the test broker at 127.0.0.1:5672");
        let channel = connection.create_channel().await.unwrap();
        let name = queue_name(&prefix, Queue::Auth);
        declare_task_queue(&channel, &name, config.queue_type)
            .await
            .unwrap();
        channel
            .basic_publish(
                ShortString::default(),
                name.as_str().into(),
                BasicPublishOptions::default(),
                b"not a task",
                BasicProperties::default().with_correlation_id("t1".into()),
            )
            .await
            .unwrap();
        let mut source = AmqpSource::new(config, vec![Queue::Auth], 4, CancellationToken::new());
        let within = Duration::from_secs(10);
        let first = tokio::time::timeout(within, source.next())
            .await
            .unwrap()
            .expect("the task");
        assert!(!first.history.redelivered);
        source.live.as_ref().expect("connected").broken.cancel();
        let again = tokio::time::timeout(within, source.next())
            .await
            .expect("the source reconnects by itself")
            .expect("the task again");
        assert!(again.history.redelivered);
        assert_eq!(again.correlation_id.as_deref(), Some("t1"));
        drop((first, again));
        source.shutdown().await;
        let _ = channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = connection.close(200, "test done".into()).await;
    }

    /// A reconnect on a healthy connection sends the acks the outbox held first: the replied
    /// task does not come back, the one still running does (over the real broker).
    #[tokio::test]
    async fn a_reconnect_on_a_healthy_connection_sends_the_held_acks_first() {
        use lapin::options::{BasicPublishOptions, QueueDeleteOptions};
        let prefix = format!(
            "porter-test-flush-{}-{}.",
            std::process::id(),
            rand_suffix()
        );
        let config = AmqpConfig {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            queue_prefix: prefix.clone(),
            reply_mode: super::super::ReplyMode::Exclusive,
            task_auth: porter_core::task_auth::TaskAuth::off(),
            queue_type: super::super::QueueType::Classic,
        };
        let connection =
            lapin::Connection::connect(&config.url, lapin::ConnectionProperties::default())
                .await
                .expect("the test broker at 127.0.0.1:5672");
        let channel = connection.create_channel().await.unwrap();
        let name = queue_name(&prefix, Queue::Auth);
        declare_task_queue(&channel, &name, config.queue_type)
            .await
            .unwrap();
        for id in ["t1", "t2"] {
            channel
                .basic_publish(
                    ShortString::default(),
                    name.as_str().into(),
                    BasicPublishOptions::default(),
                    b"not a task",
                    BasicProperties::default().with_correlation_id(id.into()),
                )
                .await
                .unwrap();
        }
        let mut source = AmqpSource::new(config, vec![Queue::Auth], 4, CancellationToken::new());
        let within = Duration::from_secs(10);
        let mut next = async || {
            tokio::time::timeout(within, source.next())
                .await
                .expect("a task in time")
                .expect("a task")
        };
        let t1 = next().await;
        let t2 = next().await;
        assert_eq!(t2.correlation_id.as_deref(), Some("t2"));
        // t2 replied (no reply_to: nothing to publish) above t1, still running: its ack waits
        // for a `multiple` with t1.
        t2.responder
            .reply_and_ack(&Reply::refused("t2", porter_core::reason::Reason::Expired))
            .await
            .unwrap();
        source.drop_connection().await;
        let again = tokio::time::timeout(within, source.next())
            .await
            .expect("the source reconnects")
            .expect("a task");
        assert_eq!(again.correlation_id.as_deref(), Some("t1"));
        assert!(again.history.redelivered);
        drop((t1, again));
        source.shutdown().await;
        // Everything the worker held is back in the queue now: t1 alone.
        let mut queued = 0;
        for _ in 0..50 {
            queued = channel
                .queue_declare(
                    name.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .unwrap()
                .message_count();
            if queued > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(queued, 1, "t2 was acknowledged, not requeued");
        let _ = channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = connection.close(200, "test done".into()).await;
    }

    fn rand_suffix() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0);
        hasher.finish()
    }
}
