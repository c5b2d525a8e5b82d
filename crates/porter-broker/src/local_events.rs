//! The in-process events queue of `porter dev`: a bounded channel from the gateway's
//! [`LocalEventSink`] to the workers' [`LocalEventReceiver`], with the acknowledgement
//! semantics of the AMQP queue.
//!
//! A delivery ([`LocalEventDelivery`]) is settled once: acknowledged (applied), handed back
//! (requeued, for a retry) or dead-lettered (kept in a short list that
//! [`LocalEventReceiver::dead_letters`] reads). One dropped unsettled, by a worker that failed
//! mid-way, goes back to the queue as RabbitMQ would requeue a message whose channel closed,
//! marked `redelivered`.
//!
//! The sink refuses at once ([`BrokerError::Unavailable`]) rather than waiting when the
//! channel is full, so a stalled worker turns publishes into 503s instead of hanging them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex as StdMutex};

use async_trait::async_trait;
use porter_core::publish::Publication;
use tokio::sync::{Mutex, mpsc};

use crate::BrokerError;
use crate::events::EventSink;

/// Publications waiting in the local queue before publishes are refused.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Dead-lettered publications kept for inspection; older ones are dropped first.
const DEAD_LETTERS_KEPT: usize = 1_000;

struct Queued {
    publication: Publication,
    redelivered: bool,
}

/// Creates a connected sink and receiver holding at most `capacity` unconsumed publications
/// (at least one). The receiver may be cloned for several workers.
pub fn events_channel(capacity: usize) -> (LocalEventSink, LocalEventReceiver) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    let (requeue, requeued) = mpsc::unbounded_channel();
    (
        LocalEventSink { sender },
        LocalEventReceiver {
            receiver: Arc::new(Mutex::new(receiver)),
            requeued: Arc::new(Mutex::new(requeued)),
            requeue,
            dead: Arc::new(StdMutex::new(VecDeque::new())),
        },
    )
}

/// The gateway's end of the local events queue.
#[derive(Clone)]
pub struct LocalEventSink {
    sender: mpsc::Sender<Queued>,
}

#[async_trait]
impl EventSink for LocalEventSink {
    async fn publish(&self, publication: &Publication) -> Result<(), BrokerError> {
        let queued = Queued {
            publication: publication.clone(),
            redelivered: false,
        };
        self.sender.try_send(queued).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => BrokerError::Unavailable,
            mpsc::error::TrySendError::Closed(_) => BrokerError::Closed,
        })
    }

    fn is_ready(&self) -> bool {
        !self.sender.is_closed()
    }
}

/// The workers' end of the local events queue.
#[derive(Clone)]
pub struct LocalEventReceiver {
    receiver: Arc<Mutex<mpsc::Receiver<Queued>>>,
    requeued: Arc<Mutex<mpsc::UnboundedReceiver<Queued>>>,
    requeue: mpsc::UnboundedSender<Queued>,
    dead: Arc<StdMutex<VecDeque<Publication>>>,
}

impl LocalEventReceiver {
    /// The next publication: a handed-back one first, then the queue's. `None` once every
    /// sink is gone and nothing is left.
    pub async fn recv(&self) -> Option<LocalEventDelivery> {
        let queued = {
            let mut receiver = self.receiver.lock().await;
            let mut requeued = self.requeued.lock().await;
            tokio::select! {
                biased;
                queued = requeued.recv() => queued,
                queued = receiver.recv() => queued,
            }
        }?;
        Some(LocalEventDelivery {
            publication: queued.publication,
            redelivered: queued.redelivered,
            settled: false,
            requeue: self.requeue.clone(),
            dead: self.dead.clone(),
        })
    }

    /// The publications dead-lettered so far (the latest [`DEAD_LETTERS_KEPT`]), oldest first.
    pub fn dead_letters(&self) -> Vec<Publication> {
        self.dead
            .lock()
            .map(|dead| dead.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// One publication taken from the local queue, to be settled once.
pub struct LocalEventDelivery {
    publication: Publication,
    /// The queue delivered this publication before (it was handed back or dropped unsettled).
    pub redelivered: bool,
    settled: bool,
    requeue: mpsc::UnboundedSender<Queued>,
    dead: Arc<StdMutex<VecDeque<Publication>>>,
}

impl LocalEventDelivery {
    /// The publication delivered.
    pub fn publication(&self) -> &Publication {
        &self.publication
    }

    /// Applied: removes it from the queue.
    pub fn ack(mut self) {
        self.settled = true;
    }

    /// Not applied, to be retried: puts it back at the head of the queue.
    pub fn requeue(self) {
        // Dropping unsettled is exactly a requeue.
        drop(self);
    }

    /// Cannot be applied: moves it to the dead letters.
    pub fn dead_letter(mut self) {
        self.settled = true;
        if let Ok(mut dead) = self.dead.lock() {
            if dead.len() == DEAD_LETTERS_KEPT {
                dead.pop_front();
            }
            dead.push_back(self.publication.clone());
        }
    }
}

impl Drop for LocalEventDelivery {
    /// Dropped unsettled: handed back, as RabbitMQ requeues what a closed channel held.
    fn drop(&mut self) {
        if !self.settled {
            // Fails only when every receiver is gone, and then nobody could apply it anyway.
            let _ = self.requeue.send(Queued {
                publication: self.publication.clone(),
                redelivered: true,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use porter_core::publish::{PUBLICATION_VERSION, PublishKind};

    fn publication(id: &str) -> Publication {
        Publication {
            v: PUBLICATION_VERSION,
            id: id.to_owned(),
            app_id: "1".to_owned(),
            kind: PublishKind::Events,
            body: r#"{"name":"e","data":"{}","channels":["c"]}"#.to_owned(),
            accepted_ms: 1,
        }
    }

    #[tokio::test]
    async fn an_acknowledged_publication_is_delivered_once() {
        let (sink, receiver) = events_channel(4);
        sink.publish(&publication("a")).await.unwrap();
        sink.publish(&publication("b")).await.unwrap();
        let first = receiver.recv().await.unwrap();
        assert_eq!(first.publication().id, "a");
        assert!(!first.redelivered);
        first.ack();
        let second = receiver.recv().await.unwrap();
        assert_eq!(second.publication().id, "b");
        second.ack();
        drop(sink);
        assert!(receiver.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_requeued_or_dropped_delivery_comes_back_first_marked_redelivered() {
        let (sink, receiver) = events_channel(4);
        sink.publish(&publication("a")).await.unwrap();
        sink.publish(&publication("b")).await.unwrap();
        receiver.recv().await.unwrap().requeue();
        let again = receiver.recv().await.unwrap();
        assert_eq!(again.publication().id, "a");
        assert!(again.redelivered);
        drop(again);
        let third = receiver.recv().await.unwrap();
        assert_eq!(third.publication().id, "a");
        assert!(third.redelivered);
        third.ack();
        assert_eq!(receiver.recv().await.unwrap().publication().id, "b");
    }

    #[tokio::test]
    async fn a_dead_lettered_delivery_is_kept_aside() {
        let (sink, receiver) = events_channel(4);
        sink.publish(&publication("a")).await.unwrap();
        receiver.recv().await.unwrap().dead_letter();
        assert_eq!(receiver.dead_letters(), vec![publication("a")]);
        drop(sink);
        assert!(receiver.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_a_closed_one_says_so() {
        let (sink, receiver) = events_channel(1);
        sink.publish(&publication("a")).await.unwrap();
        assert!(matches!(
            sink.publish(&publication("b")).await,
            Err(BrokerError::Unavailable)
        ));
        assert!(sink.is_ready());
        drop(receiver);
        assert!(!sink.is_ready());
        assert!(matches!(
            sink.publish(&publication("c")).await,
            Err(BrokerError::Closed)
        ));
    }
}
