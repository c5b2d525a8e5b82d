//! The in-process transport of `porter dev`: a channel from gateway to workers, and replies
//! straight into the gateway's [`Pending`] table. Same traits, same semantics (expiry,
//! deadline and time limit travel with the task), no broker.
//!
//! Nothing is signed in process, but replies still reach the gateway through
//! [`Pending::deliver`], the function the AMQP transport verifies with (here with
//! authentication off), so both modes take one path into the pending table.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use porter_core::routing::Queue;
use porter_core::task_auth::{ReplyMessage, TaskAuth};
use porter_core::wire::{Reply, Task};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{
    BrokerError, DeliveryHistory, Incoming, Outgoing, Pending, Responder, TaskClient, TaskSource,
    now_ms,
};

/// Tasks waiting in the local queue before publishers are pushed back.
const CAPACITY: usize = 65_536;

struct Message {
    task: Task,
    deadline_ms: u64,
    /// When the message expires unread, as RabbitMQ's `expiration` would drop it.
    expires_at_ms: u64,
    time_limit: Duration,
    queue: Queue,
}

/// Creates a connected client and source. The source may be cloned for several workers.
pub fn channel(stop: CancellationToken) -> (LocalClient, LocalSource) {
    let (sender, receiver) = mpsc::channel(CAPACITY);
    let pending = Pending::new();
    (
        LocalClient {
            sender,
            pending: pending.clone(),
        },
        LocalSource {
            receiver: Arc::new(Mutex::new(receiver)),
            pending,
            stop,
        },
    )
}

#[derive(Clone)]
pub struct LocalClient {
    sender: mpsc::Sender<Message>,
    pending: Pending,
}

#[async_trait]
impl TaskClient for LocalClient {
    async fn publish(&self, tasks: &[Outgoing<'_>]) -> Result<(), BrokerError> {
        let now = now_ms();
        for outgoing in tasks {
            let message = Message {
                task: outgoing.task.clone(),
                deadline_ms: outgoing.deadline_ms,
                expires_at_ms: now + outgoing.route.expires.as_millis() as u64,
                time_limit: outgoing.route.time_limit,
                queue: outgoing.route.queue,
            };
            self.sender
                .send(message)
                .await
                .map_err(|_| BrokerError::Closed)?;
        }
        Ok(())
    }

    fn pending(&self) -> &Pending {
        &self.pending
    }

    fn is_ready(&self) -> bool {
        !self.sender.is_closed()
    }
}

/// The workers' end of the local queue.
#[derive(Clone)]
pub struct LocalSource {
    receiver: Arc<Mutex<mpsc::Receiver<Message>>>,
    pending: Pending,
    stop: CancellationToken,
}

#[async_trait]
impl TaskSource for LocalSource {
    async fn next(&mut self) -> Option<Incoming> {
        loop {
            let message = {
                let mut receiver = self.receiver.lock().await;
                tokio::select! {
                    () = self.stop.cancelled() => return None,
                    message = receiver.recv() => message?,
                }
            };
            if now_ms() > message.expires_at_ms {
                // Expired unread: dropped like a RabbitMQ message past its `expiration`.
                continue;
            }
            let id = message.task.id.clone();
            return Some(Incoming {
                correlation_id: Some(id.clone()),
                task: Ok(message.task),
                queue: message.queue,
                // Nothing is ever handed back in process: every task is a first delivery.
                history: DeliveryHistory::default(),
                deadline_ms: Some(message.deadline_ms),
                time_limit: Some(message.time_limit),
                responder: Box::new(LocalResponder {
                    correlation_id: id,
                    pending: self.pending.clone(),
                }),
            });
        }
    }

    fn stopping(&self) -> BoxFuture<'static, ()> {
        let stop = self.stop.clone();
        Box::pin(async move { stop.cancelled().await })
    }

    // `stop_consuming` keeps the default: a worker takes a task only when it can start it,
    // and what it has not taken stays in the shared channel for the other workers.
}

struct LocalResponder {
    correlation_id: String,
    pending: Pending,
}

#[async_trait]
impl Responder for LocalResponder {
    async fn reply_and_ack(self: Box<Self>, reply: &Reply) -> Result<(), BrokerError> {
        let body = serde_json::to_vec(reply)?;
        let message = ReplyMessage {
            correlation_id: Some(&self.correlation_id),
            body: &body,
        };
        // Late or unclaimed replies are counted by the table itself.
        let _ = self.pending.deliver(&TaskAuth::off(), message, None);
        Ok(())
    }
}
