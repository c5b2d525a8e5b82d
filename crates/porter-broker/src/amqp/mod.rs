//! RabbitMQ transport over lapin.
//!
//! Both sides declare the task queues with identical arguments (durable, no extra
//! arguments), so whichever starts first creates them. Tasks are transient JSON messages with
//! a per-message `expiration` and the deadline and time limit in headers; the gateway's
//! replies come back on its own exclusive, auto-delete, server-named queue.
//!
//! Both sides reconnect by themselves with capped exponential backoff. A connection loss
//! loses the gateway's reply queue, so its in-flight tasks answer `timeout`; unacknowledged
//! tasks held by a lost worker go back to their queue for another worker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::SelectAll;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use porter_core::routing::Queue;
use porter_core::wire::{HEADER_DEADLINE_MS, HEADER_TIME_LIMIT_MS, Reply, Task};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    BrokerError, Incoming, Outgoing, Pending, Responder, TaskClient, TaskSource, queue_name,
};

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

/// The pseudo-queue of RabbitMQ's direct reply-to.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

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

// ---------------------------------------------------------------------------------------
// Gateway side
// ---------------------------------------------------------------------------------------

/// The gateway's connection: publishes tasks, consumes its reply queue.
#[derive(Clone)]
pub struct AmqpClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    config: AmqpConfig,
    /// The channel of session declarations (see [`crate::session`]), apart from the publishing
    /// channel: a refused declaration closes its channel, and must not close that one.
    sessions: tokio::sync::Mutex<Option<Channel>>,
    pending: Pending,
    live: RwLock<Option<Live>>,
    ready: AtomicBool,
    broken: Notify,
    stop: CancellationToken,
    /// The supervisor, awaited by [`AmqpClient::close`].
    supervisor: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Clone)]
struct Live {
    connection: Arc<Connection>,
    channel: Channel,
    reply_queue: ShortString,
}

impl AmqpClient {
    /// Starts connecting in the background; [`TaskClient::is_ready`] tells when it is up.
    pub fn start(config: AmqpConfig, stop: CancellationToken) -> AmqpClient {
        let inner = Arc::new(ClientInner {
            config,
            sessions: tokio::sync::Mutex::new(None),
            pending: Pending::new(),
            live: RwLock::new(None),
            ready: AtomicBool::new(false),
            broken: Notify::new(),
            stop,
            supervisor: std::sync::Mutex::new(None),
        });
        let supervisor = tokio::spawn(supervise(inner.clone()));
        *inner
            .supervisor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(supervisor);
        AmqpClient { inner }
    }

    /// Stops and waits until the connection is closed, so that nothing of it outlives the
    /// runtime (lapin's I/O thread would report the runtime's shutdown as an error).
    pub async fn close(&self) {
        self.inner.stop.cancel();
        let supervisor = self
            .inner
            .supervisor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(supervisor) = supervisor {
            let _ = supervisor.await;
        }
    }

    /// Waits until connected, up to `timeout`. Returns whether it is connected.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_ready() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    fn live(&self) -> Option<Live> {
        self.inner
            .live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn mark_broken(&self) {
        mark_broken(&self.inner);
    }

    /// The open channel for session declarations, reopened after a refusal or a reconnect.
    async fn session_channel(&self) -> Result<Channel, BrokerError> {
        let live = self.live().ok_or(BrokerError::Unavailable)?;
        let mut current = self.inner.sessions.lock().await;
        if let Some(channel) = current.as_ref()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let channel = live.connection.create_channel().await?;
        *current = Some(channel.clone());
        Ok(channel)
    }
}

fn mark_broken(inner: &ClientInner) {
    if inner.ready.swap(false, Ordering::AcqRel) {
        warn!("broker connection lost; reconnecting");
    }
    *inner
        .live
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    // `notify_waiters` stores no permit: a stale one would end the next connection at once.
    inner.broken.notify_waiters();
}

async fn supervise(inner: Arc<ClientInner>) {
    let mut delay = BACKOFF_START;
    loop {
        if inner.stop.is_cancelled() {
            return;
        }
        match connect_client(&inner).await {
            Ok((connection, live, consumer)) => {
                delay = BACKOFF_START;
                info!(reply_queue = %live.reply_queue, "connected to the broker");
                *inner
                    .live
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(live);
                inner.ready.store(true, Ordering::Release);
                tokio::select! {
                    () = read_replies(consumer, &inner.pending) => {}
                    () = inner.broken.notified() => {}
                    () = inner.stop.cancelled() => {
                        let _ = connection.close(200, "gateway shutting down").await;
                        // Give lapin's I/O thread its turn to see the close (see `close`).
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return;
                    }
                }
                mark_broken(&inner);
                let _ = connection.close(200, "reconnecting").await;
            }
            Err(error) => {
                warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot connect to the broker");
                tokio::select! {
                    () = back_off(&mut delay) => {}
                    () = inner.stop.cancelled() => return,
                }
            }
        }
    }
}

async fn connect_client(
    inner: &ClientInner,
) -> Result<(Arc<Connection>, Live, Consumer), BrokerError> {
    let connection = Arc::new(
        Connection::connect(
            &inner.config.url,
            connection_properties("gateway", &inner.config),
        )
        .await?,
    );
    let channel = connection.create_channel().await?;
    for queue in Queue::ALL {
        declare_task_queue(&channel, &queue_name(&inner.config.queue_prefix, queue)).await?;
    }
    let reply_queue: ShortString = match inner.config.reply_mode {
        ReplyMode::Exclusive => channel
            .queue_declare(
                "",
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?
            .name()
            .clone(),
        // Direct reply-to needs the consumer on the channel that publishes: `live.channel`.
        ReplyMode::DirectReplyTo => DIRECT_REPLY_TO.into(),
    };
    let consumer = channel
        .basic_consume(
            reply_queue.as_str(),
            "porter-gateway",
            BasicConsumeOptions {
                no_ack: true,
                exclusive: inner.config.reply_mode == ReplyMode::Exclusive,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let live = Live {
        connection: connection.clone(),
        channel,
        reply_queue,
    };
    Ok((connection, live, consumer))
}

/// The AMQP properties of a task message (see the design's wire format).
fn task_properties(outgoing: &Outgoing<'_>, reply_to: &ShortString) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        HEADER_DEADLINE_MS.into(),
        AMQPValue::LongLongInt(outgoing.deadline_ms as i64),
    );
    headers.insert(
        HEADER_TIME_LIMIT_MS.into(),
        AMQPValue::LongLongInt(outgoing.route.time_limit.as_millis() as i64),
    );
    let id = ShortString::from(outgoing.task.id.clone());
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_correlation_id(id.clone())
        .with_message_id(id)
        .with_reply_to(reply_to.clone())
        .with_expiration(outgoing.route.expires.as_millis().to_string().into())
        .with_delivery_mode(1)
        .with_headers(headers)
}

async fn read_replies(mut consumer: Consumer, pending: &Pending) {
    while let Some(delivery) = consumer.next().await {
        let Ok(delivery) = delivery else { return };
        match serde_json::from_slice::<Reply>(&delivery.data) {
            Ok(reply) => {
                if !pending.complete(reply) {
                    debug!("dropped a reply nobody waits for (late or unknown)");
                }
            }
            Err(error) => warn!(%error, "dropped a malformed reply"),
        }
    }
}

#[async_trait]
impl TaskClient for AmqpClient {
    async fn publish(&self, tasks: &[Outgoing<'_>]) -> Result<(), BrokerError> {
        let live = self.live().ok_or(BrokerError::Unavailable)?;
        let mut messages = Vec::with_capacity(tasks.len());
        for outgoing in tasks {
            let body = serde_json::to_vec(outgoing.task)?;
            let queue = queue_name(&self.inner.config.queue_prefix, outgoing.route.queue);
            messages.push((queue, body, outgoing));
        }
        // All publishes are queued before the first is awaited: lapin writes the whole batch
        // in one go instead of one socket write (and one I/O-thread wake-up) per task.
        let publishes = messages.iter().map(|(queue, body, outgoing)| {
            live.channel.basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                body,
                task_properties(outgoing, &live.reply_queue),
            )
        });
        for result in futures_util::future::join_all(publishes).await {
            if let Err(error) = result {
                self.mark_broken();
                return Err(error.into());
            }
        }
        Ok(())
    }

    fn pending(&self) -> &Pending {
        &self.inner.pending
    }

    fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    async fn open_session(&self, session_id: &str, ttl: Duration) -> Result<(), BrokerError> {
        let channel = self.session_channel().await?;
        crate::session::declare_session(&channel, session_id, ttl).await
    }
}

// ---------------------------------------------------------------------------------------
// Worker side
// ---------------------------------------------------------------------------------------

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
