//! The gateway half of the RabbitMQ transport: [`AmqpClient`] publishes tasks and reads the
//! replies from its reply queue into the [`Pending`] table.
//!
//! A supervisor task keeps one connection up, reconnecting with the shared backoff to the next
//! node of the list. A lost connection (or a cancelled reply consumer: the reply queue's node
//! went) loses the reply queue, and with it every reply still due on it, so the supervisor
//! answers all tasks in flight `broker_unavailable` at once ([`Pending::fail_all`]) rather than
//! letting their channels wait out the deadline, then declares a new reply queue on the next
//! connection.
//!
//! On quorum task queues the publishing channel is in confirm mode, and a batch the broker has
//! not confirmed within [`CONFIRM_TIMEOUT`] (or refused) counts as a lost connection too: a
//! channel opened while a queue's leader had just died, before the surviving nodes noticed,
//! was seen to swallow every later publish (RabbitMQ 3.10, `kill -9` of the leader's node), so
//! only a new channel recovers. Classic queues keep unconfirmed publishing, as before.
//!
//! Tasks are signed with the configured task keys; every reply goes through
//! [`Pending::deliver`], which drops and counts what does not authenticate. A message of type
//! [`REPLY_BATCH_TYPE`] holds several replies (workers coalesce the replies of the tasks that
//! say this gateway reads them, `Task::coalesce`); each inside goes through
//! [`Pending::deliver`] on its own ([`Pending::deliver_batch`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, Consumer, PublisherConfirm};
use porter_core::reason::Reason;
use porter_core::routing::Queue;
use porter_core::task_auth::TaskAuth;
use porter_core::wire::{HEADER_DEADLINE_MS, HEADER_TIME_LIMIT_MS, REPLY_BATCH_TYPE};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    AmqpConfig, BACKOFF_START, QueueType, ReplyMode, back_off, close_connection, connect,
    declare_task_queue, set_up,
};
use crate::auth::{DIRECT_REPLY_TO, reply_message, signature, signed_task};
use crate::{
    BatchRefusal, BatchSummary, BrokerError, Delivery, MAX_BATCH_REPLIES, Outgoing, Pending,
    TaskClient, queue_name, short_string,
};

/// How long the broker may take to confirm a batch of tasks on quorum queues (a Raft commit on a
/// majority: milliseconds) before the publishing channel counts as stuck and is replaced.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);

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
        // A stop must not wait for an attempt in progress (up to `CONNECT_TIMEOUT`).
        let attempt = tokio::select! {
            attempt = connect_client(&inner) => attempt,
            () = inner.stop.cancelled() => return,
        };
        match attempt {
            Ok((connection, live, consumer)) => {
                delay = BACKOFF_START;
                info!(reply_queue = %live.reply_queue, "connected to the broker");
                *inner
                    .live
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(live);
                inner.ready.store(true, Ordering::Release);
                tokio::select! {
                    () = read_replies(consumer, &inner.pending, &inner.config.task_auth) => {}
                    () = inner.broken.notified() => {}
                    () = inner.stop.cancelled() => {
                        close_connection(&connection, "gateway shutting down").await;
                        // Give lapin's I/O thread its turn to see the close (see `close`).
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return;
                    }
                }
                mark_broken(&inner);
                // Every reply still due was addressed to the queue just lost.
                let failed = inner.pending.fail_all(&Reason::BrokerUnavailable);
                if failed > 0 {
                    warn!(
                        failed,
                        "answered the tasks in flight broker_unavailable: their reply queue is gone"
                    );
                }
                close_connection(&connection, "reconnecting").await;
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
    let connection = Arc::new(connect("gateway", &inner.config).await?);
    match set_up(subscribe_replies(inner, &connection)).await {
        Ok((live, consumer)) => Ok((connection, live, consumer)),
        Err(error) => {
            close_connection(&connection, "set-up failed").await;
            Err(error)
        }
    }
}

/// Declares the task queues and the reply queue, and consumes the replies.
async fn subscribe_replies(
    inner: &ClientInner,
    connection: &Arc<Connection>,
) -> Result<(Live, Consumer), BrokerError> {
    let channel = connection.create_channel().await?;
    if inner.config.queue_type == QueueType::Quorum {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
    }
    for queue in Queue::ALL {
        declare_task_queue(
            &channel,
            &queue_name(&inner.config.queue_prefix, queue),
            inner.config.queue_type,
        )
        .await?;
    }
    let reply_queue: ShortString = match inner.config.reply_mode {
        ReplyMode::Exclusive => channel
            .queue_declare(
                ShortString::default(),
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
            reply_queue.clone(),
            "porter-gateway".into(),
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
    Ok((live, consumer))
}

/// The AMQP properties of a task message (see the design's wire format), before signing.
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

/// Replaces the connection if the broker does not confirm a batch in time, or refuses it: the
/// tasks in flight are then answered at once by the supervisor instead of timing out.
async fn watch_confirms(
    inner: Arc<ClientInner>,
    connection: Arc<Connection>,
    confirms: Vec<PublisherConfirm>,
) {
    let stuck =
        match tokio::time::timeout(CONFIRM_TIMEOUT, futures_util::future::join_all(confirms)).await
        {
            Err(_) => Some("not confirmed in time"),
            Ok(results) => results
                .iter()
                .any(|result| !matches!(result, Ok(Confirmation::Ack(_))))
                .then_some("refused"),
        };
    let Some(stuck) = stuck else { return };
    // Only the connection the tasks went out on: a later one may be healthy.
    let current = inner
        .live
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
        .is_some_and(|live| Arc::ptr_eq(&live.connection, &connection));
    if current {
        warn!(
            publish = stuck,
            "the broker did not take published tasks; reconnecting"
        );
        mark_broken(&inner);
    }
}

async fn read_replies(mut consumer: Consumer, pending: &Pending, auth: &TaskAuth) {
    while let Some(delivery) = consumer.next().await {
        let Ok(delivery) = delivery else { return };
        let properties = &delivery.properties;
        let coalesced = properties
            .kind()
            .as_ref()
            .is_some_and(|kind| kind.as_str() == REPLY_BATCH_TYPE);
        if coalesced {
            match pending.deliver_batch(auth, &delivery.data) {
                Ok(outcomes) => log_batch(&outcomes),
                Err(refusal) => log_refused_batch(&refusal),
            }
        } else {
            let message = reply_message(properties, &delivery.data);
            log_delivery(pending.deliver(auth, message, signature(properties)));
        }
    }
}

/// One line per coalesced message, however many of its entries were dropped: a forger's
/// batch must not turn into a flood of log lines. Counts only, nothing the sender chose.
fn log_batch(outcomes: &[Delivery]) {
    let summary = BatchSummary::of(outcomes);
    if summary.refused() > 0 {
        warn!(
            entries = outcomes.len(),
            unauthenticated = summary.unauthenticated,
            wrong_task = summary.wrong_task,
            malformed = summary.malformed,
            unclaimed = summary.unclaimed,
            "dropped replies of a coalesced message"
        );
    } else if summary.unclaimed > 0 {
        debug!(
            unclaimed = summary.unclaimed,
            "dropped coalesced replies nobody waits for (late or unknown)"
        );
    }
}

fn log_refused_batch(refusal: &BatchRefusal) {
    match refusal {
        BatchRefusal::Malformed(error) => warn!(
            code = refusal.code(),
            category = ?error.classify(),
            line = error.line(),
            column = error.column(),
            "dropped a malformed batch of replies"
        ),
        BatchRefusal::Version(version) => warn!(
            code = refusal.code(),
            version, "dropped a batch of replies in an unknown format version"
        ),
        BatchRefusal::TooMany(entries) => warn!(
            code = refusal.code(),
            entries,
            max = MAX_BATCH_REPLIES,
            "dropped a batch of replies with too many entries"
        ),
    }
}

/// Logs what became of a reply that did not reach its waiter.
fn log_delivery(outcome: Delivery) {
    match outcome {
        Delivery::Delivered => {}
        Delivery::Unclaimed => debug!("dropped a reply nobody waits for (late or unknown)"),
        // The code only: the correlation id and body are whatever the sender chose.
        Delivery::Unauthenticated(refusal) => {
            warn!(code = refusal.code(), "dropped an unauthenticated reply");
        }
        Delivery::WrongTask => {
            warn!(
                code = "wrong_task",
                "dropped a reply signed for another task"
            );
        }
        // Where, not serde's text: that can quote what the sender wrote.
        Delivery::Malformed(error) => warn!(
            category = ?error.classify(),
            line = error.line(),
            column = error.column(),
            "dropped a malformed reply"
        ),
    }
}

#[async_trait]
impl TaskClient for AmqpClient {
    async fn publish(&self, tasks: &[Outgoing<'_>]) -> Result<(), BrokerError> {
        let live = self.live().ok_or(BrokerError::Unavailable)?;
        let mut messages = Vec::with_capacity(tasks.len());
        let mut properties = Vec::with_capacity(tasks.len());
        for outgoing in tasks {
            let body = serde_json::to_vec(outgoing.task)?;
            let queue = short_string(queue_name(
                &self.inner.config.queue_prefix,
                outgoing.route.queue,
            ))?;
            properties.push(signed_task(
                &self.inner.config.task_auth,
                task_properties(outgoing, &live.reply_queue),
                &body,
            ));
            messages.push((queue, body));
        }
        // All publishes are queued before the first is awaited: lapin writes the whole batch
        // in one go instead of one socket write (and one I/O-thread wake-up) per task.
        let publishes = messages
            .iter()
            .zip(properties)
            .map(|((queue, body), properties)| {
                live.channel.basic_publish(
                    ShortString::default(),
                    queue.clone(),
                    BasicPublishOptions::default(),
                    body,
                    properties,
                )
            });
        let mut confirms = Vec::with_capacity(tasks.len());
        for result in futures_util::future::join_all(publishes).await {
            match result {
                Ok(confirm) => confirms.push(confirm),
                Err(error) => {
                    self.mark_broken();
                    return Err(error.into());
                }
            }
        }
        if self.inner.config.queue_type == QueueType::Quorum {
            tokio::spawn(watch_confirms(
                self.inner.clone(),
                live.connection.clone(),
                confirms,
            ));
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
