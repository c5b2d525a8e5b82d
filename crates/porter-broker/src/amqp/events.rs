//! The events queue over RabbitMQ: its declaration, shared by gateway and worker, and the
//! gateway's confirming publisher ([`AmqpEventSink`]).
//!
//! `{prefix}events` is durable and dead-letters to `{prefix}events.dead` through the default
//! exchange (`x-dead-letter-exchange: ""`, `x-dead-letter-routing-key: {prefix}events.dead`):
//! where a worker's reject without requeue sends a publication it can never apply, and, on
//! quorum queues, where RabbitMQ sends one delivered more than [`EVENTS_DELIVERY_LIMIT`] times.
//! Both queues follow `PORTER_QUEUE_TYPE` as the task queues do.
//!
//! The sink keeps its own connection and one channel in confirm mode, replaced (with the
//! task client's backoff, from the next node of `AMQP_URL`) when it is lost or when a
//! publish fails or goes unconfirmed. A publication is a persistent message (`delivery_mode`
//! 2) with the publication id as message id, published `mandatory`, so one that reaches no
//! queue comes back instead of vanishing; [`EventSink::publish`] returns `Ok` only on the
//! broker's ack of a routed message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use porter_core::publish::Publication;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{AmqpConfig, BACKOFF_START, QueueType, back_off, close_connection, connect};
use crate::events::{EventSink, dead_events_queue_name, events_queue_name};
use crate::{BrokerError, short_string};

/// How many times a quorum events queue delivers a publication before it dead-letters it:
/// the broker's backstop for one that kills every worker that takes it.
///
/// Far above the task queues' [`QUORUM_DELIVERY_LIMIT`](super::QUORUM_DELIVERY_LIMIT): a quorum
/// queue counts every return, and the worker hands a publication back (after a 1 s pause) for
/// as long as a step cannot run: another delivery's claim (held up to the worker's 120 s
/// `CLAIM_TTL` by a worker that died), or Redis or the broker away. At 1,000 returns a
/// publication outlasts a dead claimer's claim several times over and an outage of about a
/// quarter of an hour; `porter_worker`'s `publish::consumer` checks at compile time that it
/// stays above `CLAIM_TTL` / `RETRY_PAUSE`.
pub const EVENTS_DELIVERY_LIMIT: i64 = 1000;

/// How long the broker may take to confirm a publication before the sink gives up on the
/// channel (the request is answered 503; its retry goes to a new channel).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the supervisor looks at the connection while idle.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// The AMQP `type` of a publication message.
pub const PUBLICATION_TYPE: &str = "porter.publication";

/// The arguments of the events queue.
fn events_queue_arguments(prefix: &str, queue_type: QueueType) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dead_events_queue_name(prefix).into()),
    );
    if queue_type == QueueType::Quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(EVENTS_DELIVERY_LIMIT),
        );
    }
    arguments
}

/// The arguments of the dead-letter queue: only its type.
fn dead_queue_arguments(queue_type: QueueType) -> FieldTable {
    let mut arguments = FieldTable::default();
    if queue_type == QueueType::Quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    arguments
}

/// Declares the events queue and its dead-letter queue, both durable. Gateway and worker must
/// declare them with the same arguments, or the second gets PRECONDITION_FAILED: this is the
/// only place that declares them.
pub async fn declare_events_queues(
    channel: &Channel,
    prefix: &str,
    queue_type: QueueType,
) -> Result<(), BrokerError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    // The dead-letter queue first: nothing dead-lettered is ever unroutable.
    channel
        .queue_declare(
            short_string(dead_events_queue_name(prefix))?,
            durable,
            dead_queue_arguments(queue_type),
        )
        .await?;
    channel
        .queue_declare(
            short_string(events_queue_name(prefix))?,
            durable,
            events_queue_arguments(prefix, queue_type),
        )
        .await?;
    Ok(())
}

/// The AMQP properties of a publication message.
fn publication_properties(publication: &Publication) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id(ShortString::from(publication.id.clone()))
        .with_type(PUBLICATION_TYPE.into())
        .with_timestamp(publication.accepted_ms / 1000)
        .with_delivery_mode(2)
}

struct SinkInner {
    config: AmqpConfig,
    queue: ShortString,
    channel: RwLock<Option<Channel>>,
    ready: AtomicBool,
    broken: Notify,
    stop: CancellationToken,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The gateway's publisher of publications: its own connection, one confirming channel.
#[derive(Clone)]
pub struct AmqpEventSink {
    inner: Arc<SinkInner>,
}

impl AmqpEventSink {
    /// Starts connecting in the background (and reconnecting until `stop`); publishes fail
    /// with [`BrokerError::Unavailable`] until connected.
    pub fn start(
        config: AmqpConfig,
        stop: CancellationToken,
    ) -> Result<AmqpEventSink, BrokerError> {
        let queue = short_string(events_queue_name(&config.queue_prefix))?;
        let inner = Arc::new(SinkInner {
            config,
            queue,
            channel: RwLock::new(None),
            ready: AtomicBool::new(false),
            broken: Notify::new(),
            stop,
            supervisor: Mutex::new(None),
        });
        let handle = tokio::spawn(supervise(inner.clone()));
        *inner
            .supervisor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handle);
        Ok(AmqpEventSink { inner })
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

    /// Closes the connection and waits for the supervisor to end.
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

    fn channel(&self) -> Option<Channel> {
        self.inner
            .channel
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn mark_broken(&self) {
        mark_broken(&self.inner);
    }
}

fn mark_broken(inner: &SinkInner) {
    if inner.ready.swap(false, Ordering::AcqRel) {
        warn!("events broker connection lost; reconnecting");
    }
    *inner
        .channel
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    inner.broken.notify_waiters();
}

#[async_trait]
impl EventSink for AmqpEventSink {
    async fn publish(&self, publication: &Publication) -> Result<(), BrokerError> {
        let channel = self.channel().ok_or(BrokerError::Unavailable)?;
        let body = serde_json::to_vec(publication)?;
        let confirm = channel
            .basic_publish(
                ShortString::default(),
                self.inner.queue.clone(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                publication_properties(publication),
            )
            .await
            .inspect_err(|_| self.mark_broken())?;
        let confirmation = match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
            Ok(confirmation) => confirmation.inspect_err(|_| self.mark_broken())?,
            Err(_) => {
                warn!(publication = %publication.id, "the broker did not confirm a publication in time");
                self.mark_broken();
                return Err(BrokerError::Unavailable);
            }
        };
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => {
                // Routed nowhere: the queue is gone. A new channel declares it again.
                warn!(publication = %publication.id, "a publication reached no queue");
                self.mark_broken();
                Err(BrokerError::Unavailable)
            }
            Confirmation::Nack(_) | Confirmation::NotRequested => {
                warn!(publication = %publication.id, "the broker refused a publication");
                Err(BrokerError::Unavailable)
            }
        }
    }

    fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }
}

async fn supervise(inner: Arc<SinkInner>) {
    let mut delay = BACKOFF_START;
    loop {
        if inner.stop.is_cancelled() {
            return;
        }
        let attempt = tokio::select! {
            attempt = connect_sink(&inner) => attempt,
            () = inner.stop.cancelled() => return,
        };
        match attempt {
            Ok((connection, channel)) => {
                delay = BACKOFF_START;
                info!(queue = %inner.queue, "events publisher connected to the broker");
                *inner
                    .channel
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(channel.clone());
                inner.ready.store(true, Ordering::Release);
                loop {
                    tokio::select! {
                        () = inner.broken.notified() => break,
                        () = inner.stop.cancelled() => {
                            close_connection(&connection, "gateway shutting down").await;
                            return;
                        }
                        () = tokio::time::sleep(WATCH_INTERVAL) => {
                            if !connection.status().connected() || !channel.status().connected() {
                                break;
                            }
                        }
                    }
                }
                mark_broken(&inner);
                close_connection(&connection, "reconnecting").await;
            }
            Err(error) => {
                warn!(%error, retry_in_ms = delay.as_millis() as u64, "events publisher cannot connect to the broker");
                tokio::select! {
                    () = back_off(&mut delay) => {}
                    () = inner.stop.cancelled() => return,
                }
            }
        }
    }
}

async fn connect_sink(inner: &SinkInner) -> Result<(Connection, Channel), BrokerError> {
    let connection = connect("gateway-events", &inner.config).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    declare_events_queues(
        &channel,
        &inner.config.queue_prefix,
        inner.config.queue_type,
    )
    .await?;
    Ok((connection, channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_events_queue_dead_letters_to_its_dead_queue_and_follows_the_queue_type() {
        let classic = events_queue_arguments("p.", QueueType::Classic);
        let inner = classic.inner();
        assert_eq!(
            inner.get("x-dead-letter-exchange"),
            Some(&AMQPValue::LongString("".into()))
        );
        assert_eq!(
            inner.get("x-dead-letter-routing-key"),
            Some(&AMQPValue::LongString("p.events.dead".into()))
        );
        assert_eq!(inner.get("x-queue-type"), None);
        let quorum = events_queue_arguments("p.", QueueType::Quorum);
        assert_eq!(
            quorum.inner().get("x-delivery-limit"),
            Some(&AMQPValue::LongLongInt(EVENTS_DELIVERY_LIMIT))
        );
        assert_eq!(
            dead_queue_arguments(QueueType::Classic),
            FieldTable::default()
        );
        assert_eq!(
            dead_queue_arguments(QueueType::Quorum)
                .inner()
                .get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
    }

    #[test]
    fn a_publication_is_persistent_and_named_by_its_id() {
        let publication = Publication {
            v: porter_core::publish::PUBLICATION_VERSION,
            id: "p-1".into(),
            app_id: "1".into(),
            kind: porter_core::publish::PublishKind::Events,
            body: "{}".into(),
            accepted_ms: 12_345,
        };
        let properties = publication_properties(&publication);
        assert_eq!(properties.delivery_mode(), &Some(2));
        assert_eq!(
            properties.message_id().as_ref().map(|id| id.as_str()),
            Some("p-1")
        );
        assert_eq!(properties.timestamp(), &Some(12));
    }
}
