//! The workers' half of the events queue over RabbitMQ, and the session exchanges published
//! events are delivered to.
//!
//! [`AmqpEventSource`] consumes `{prefix}events` (declared by [`super::declare_events_queues`],
//! the one declaration the gateway uses too) with a prefetch window, and settles each delivery
//! as the worker says: `basic.ack`; `basic.nack` with requeue; or `basic.reject` without
//! requeue, which RabbitMQ dead-letters to `{prefix}events.dead`. It reconnects with backoff,
//! like the task source; what was not acknowledged when a connection went is delivered again,
//! and the worker's marks make that harmless.
//!
//! [`AmqpSessionExchanges`] publishes to `data.<session-id>.published` on a channel of its own
//! with publisher confirms. Publishing to an exchange that does not exist makes the broker
//! close the channel (404 NOT_FOUND), so each publish first checks the exchange with a passive
//! declaration: a missing one is [`SessionDelivery::NoExchange`], and the channel the broker
//! closed is replaced before the next publish. Errors never name the exchange (it holds the
//! session id). The publisher holds its lock across each broker round trip, so every one (the
//! passive declaration, the confirm, a new channel) has [`SESSION_BROKER_TIMEOUT`]: a broker
//! that stops answering (blocked on a resource alarm, a partition) costs one publish
//! [`BrokerError::Unavailable`] (the worker retries the publication later) and the connection,
//! instead of hanging every publication behind the lock.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{FieldTable, ShortString};
use lapin::{Acker, BasicProperties, Channel, Confirmation, Connection, Consumer, ErrorKind};
use porter_core::publish::Publication;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{AmqpConfig, BACKOFF_START, back_off, declare_events_queues};
use crate::event_source::{EventDelivery, EventSource, Settle};
use crate::events::events_queue_name;
use crate::session::exchange_name;
use crate::session_publish::{SessionDelivery, SessionExchanges};
use crate::{BrokerError, SourceStatus, short_string};

const CONSUMER_TAG: &str = "porter-events";

/// How long a stop waits for the broker to take back the publications not handed out.
const HAND_BACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the session publisher waits for any one answer of the broker (the exchange check,
/// the confirm, a new channel) before it gives the connection up: as the gateway's sink does.
pub const SESSION_BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Consumes the events queue.
pub struct AmqpEventSource {
    config: AmqpConfig,
    prefetch: u16,
    stop: CancellationToken,
    live: Option<(Connection, Channel, Consumer)>,
    stopped: bool,
    status: Arc<SourceStatus>,
}

impl AmqpEventSource {
    /// A source that connects on first use; `stop` ends it (a signal).
    pub fn new(config: AmqpConfig, prefetch: u16, stop: CancellationToken) -> AmqpEventSource {
        AmqpEventSource {
            config,
            prefetch: prefetch.max(1),
            stop,
            live: None,
            stopped: false,
            status: Arc::default(),
        }
    }

    /// What the health checks read: connected, consuming.
    pub fn status(&self) -> Arc<SourceStatus> {
        self.status.clone()
    }

    fn drop_connection(&mut self) {
        self.live = None;
        self.status.set_connected(false);
    }

    async fn connect(&self) -> Result<(Connection, Channel, Consumer), BrokerError> {
        let connection = super::connect("events-worker", &self.config).await?;
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        declare_events_queues(&channel, &self.config.queue_prefix, self.config.queue_type).await?;
        let consumer = channel
            .basic_consume(
                short_string(events_queue_name(&self.config.queue_prefix))?,
                CONSUMER_TAG.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((connection, channel, consumer))
    }
}

struct AmqpSettle(Acker);

#[async_trait]
impl Settle for AmqpSettle {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        self.0.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    async fn requeue(self: Box<Self>) -> Result<(), BrokerError> {
        let options = BasicNackOptions {
            requeue: true,
            multiple: false,
        };
        self.0.nack(options).await?;
        Ok(())
    }

    async fn dead_letter(self: Box<Self>) -> Result<(), BrokerError> {
        // Without requeue the queue's dead-letter settings move it to `{prefix}events.dead`.
        self.0.reject(BasicRejectOptions { requeue: false }).await?;
        Ok(())
    }
}

#[async_trait]
impl EventSource for AmqpEventSource {
    async fn next(&mut self) -> Option<EventDelivery> {
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
                            info!("events worker connected to the broker");
                            self.status.set_connected(true);
                            self.status.set_consuming(true);
                            delay = BACKOFF_START;
                            self.live = Some(live);
                        }
                        Err(error) => {
                            warn!(%error, retry_in_ms = delay.as_millis() as u64, "events worker cannot connect to the broker");
                            tokio::select! {
                                () = self.stop.cancelled() => return None,
                                () = back_off(&mut delay) => continue,
                            }
                        }
                    }
                }
            }
            let (_, _, consumer) = self.live.as_mut()?;
            let delivery = tokio::select! {
                () = self.stop.cancelled() => return None,
                delivery = consumer.next() => delivery,
            };
            match delivery {
                Some(Ok(delivery)) => {
                    let publication = serde_json::from_slice::<Publication>(&delivery.data)
                        .map_err(|e| e.to_string());
                    return Some(EventDelivery {
                        publication,
                        redelivered: delivery.redelivered,
                        settle: Box::new(AmqpSettle(delivery.acker.clone())),
                    });
                }
                Some(Err(error)) => {
                    warn!(%error, "events worker lost its broker connection; reconnecting");
                    self.drop_connection();
                }
                None => {
                    warn!("events consumer was cancelled; reconnecting");
                    self.drop_connection();
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
        let Some((_, channel, consumer)) = self.live.as_mut() else {
            return;
        };
        let handing_back = async {
            if let Err(error) = channel
                .basic_cancel(CONSUMER_TAG.into(), BasicCancelOptions::default())
                .await
            {
                warn!(%error, "could not cancel the events consumer");
            }
            while let Some(Ok(delivery)) = consumer.next().await {
                let requeue = BasicNackOptions {
                    requeue: true,
                    multiple: false,
                };
                if let Err(error) = delivery.acker.nack(requeue).await {
                    warn!(%error, "could not hand back a publication; it goes back when the connection closes");
                }
            }
        };
        if tokio::time::timeout(HAND_BACK_TIMEOUT, handing_back)
            .await
            .is_err()
        {
            warn!(
                "the broker did not take back the buffered publications in time; they go back when the connection closes"
            );
        }
    }
}

/// Publishes to session exchanges, with confirms.
pub struct AmqpSessionExchanges {
    config: AmqpConfig,
    live: Mutex<Option<(Connection, Channel)>>,
}

impl AmqpSessionExchanges {
    /// Connects on first use.
    pub fn new(config: AmqpConfig) -> AmqpSessionExchanges {
        AmqpSessionExchanges {
            config,
            live: Mutex::new(None),
        }
    }

    async fn channel_of(connection: &Connection) -> Result<Channel, BrokerError> {
        let opening = async {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok(channel)
        };
        tokio::time::timeout(SESSION_BROKER_TIMEOUT, opening)
            .await
            .map_err(|_| BrokerError::Unavailable)?
    }

    /// Gives up a connection that stopped answering: the next publish opens a new one. The
    /// old one is closed in the background, where a broker that never answers cannot hold
    /// the lock.
    fn abandon(live: &mut Option<(Connection, Channel)>, what: &'static str) -> BrokerError {
        warn!(
            timeout_ms = SESSION_BROKER_TIMEOUT.as_millis() as u64,
            "the broker did not answer {what} in time; the session publisher reconnects"
        );
        if let Some((connection, _)) = live.take() {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    SESSION_BROKER_TIMEOUT,
                    connection.close(200, "not answering".into()),
                )
                .await;
            });
        }
        BrokerError::Unavailable
    }
}

/// True when the broker answered 404 NOT_FOUND (the exchange does not exist).
fn is_not_found(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ProtocolError(e) if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
    )
}

/// A broker error with the session id taken out of its text.
fn redacted(error: lapin::Error, session_id: &str) -> BrokerError {
    BrokerError::Redacted(error.to_string().replace(session_id, "<session>"))
}

#[async_trait]
impl SessionExchanges for AmqpSessionExchanges {
    async fn publish(
        &self,
        session_id: &str,
        routing_key: &str,
        body: &[u8],
    ) -> Result<SessionDelivery, BrokerError> {
        let mut live = self.live.lock().await;
        let usable = live
            .as_ref()
            .is_some_and(|(c, ch)| c.status().connected() && ch.status().connected());
        if !usable {
            *live = None;
            let connection = super::connect("events-sessions", &self.config).await?;
            let channel = Self::channel_of(&connection).await?;
            *live = Some((connection, channel));
        }
        let Some((connection, channel)) = live.as_mut() else {
            return Err(BrokerError::Unavailable);
        };
        let exchange: ShortString = short_string(exchange_name(session_id))?;
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        let declared = tokio::time::timeout(
            SESSION_BROKER_TIMEOUT,
            channel.exchange_declare(
                exchange.clone(),
                lapin::ExchangeKind::Fanout,
                passive,
                FieldTable::default(),
            ),
        )
        .await;
        let Ok(declared) = declared else {
            return Err(Self::abandon(&mut live, "the exchange check"));
        };
        if let Err(error) = declared {
            if is_not_found(&error) {
                // The broker closed this channel: the next publish gets a new one.
                *channel = Self::channel_of(connection).await?;
                return Ok(SessionDelivery::NoExchange);
            }
            return Err(redacted(error, session_id));
        }
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        let publishing = async {
            channel
                .basic_publish(
                    exchange,
                    short_string(routing_key.to_owned())?,
                    BasicPublishOptions::default(),
                    body,
                    properties,
                )
                .await
                .map_err(|e| redacted(e, session_id))?
                .await
                .map_err(|e| redacted(e, session_id))
        };
        let confirm = match tokio::time::timeout(SESSION_BROKER_TIMEOUT, publishing).await {
            Ok(confirm) => confirm?,
            Err(_) => return Err(Self::abandon(&mut live, "a session publish")),
        };
        match confirm {
            Confirmation::Ack(_) => Ok(SessionDelivery::Delivered),
            // The exchange went between the check and the publish (its channel is closed
            // with it): nothing to deliver to any more.
            _ => {
                *channel = Self::channel_of(connection).await?;
                Ok(SessionDelivery::NoExchange)
            }
        }
    }
}
