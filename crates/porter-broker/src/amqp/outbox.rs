//! A worker connection's outbox: the replies its tasks finished, published in as few messages
//! as possible, and the acknowledgements they allow, in as few `basic.ack`s as possible.
//!
//! One flusher task per connection owns the reply channel. It sleeps until a task finishes,
//! yields once (so that the tasks woken in the same turn, typically the rest of a gateway's
//! batch answered by one Redis round trip, finish too), then takes everything that is waiting
//! and publishes it: there is no timer on this path, replies go out the moment the outbox's
//! buffer runs dry. Replies for one reply queue whose tasks allow it ([`Task::coalesce`]) go
//! in one [`ReplyBatch`] message, each entry signed for its own correlation id as a single
//! reply would be; the rest (an older gateway's tasks, a lone reply) go as single replies,
//! exactly as before coalescing.
//!
//! Only after a reply is published does its task count as replied in the channel's
//! [`AckWindow`], which decides the acks (one `multiple` for the replied low end, single acks
//! above a stalled task). The flusher wakes on a timer only when acks wait above a task still
//! running, to send them once that task counts as stalled ([`ACK_STALL`]).
//!
//! A channel the flusher cannot use any more (a publish or an ack fails, or the reply channel
//! is no longer open while the connection may still be up) would stall the worker for good:
//! no reply goes out, so no task is acknowledged, and the prefetch fills with tasks nobody
//! answers. The flusher then cancels the connection's `broken` token, on which the source drops
//! the connection and reconnects; the unacknowledged tasks go back to their queue. A task
//! whose responder is dropped unanswered ([`Event::Abandoned`]) leaves its window and is handed
//! back (`basic.nack`, requeue) before any ack of the same turn could cover it.
//!
//! [`Task::coalesce`]: porter_core::wire::Task::coalesce

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel};
use porter_core::task_auth::{Message, ReplyMessage, TaskAuth};
use porter_core::wire::{BatchedReply, FORMAT_VERSION, REPLY_BATCH_TYPE, ReplyBatch};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::BrokerError;
use crate::acks::{Ack, AckWindow};
use crate::auth::signed_reply;

/// How long the lowest unacknowledged task of a channel may run before the replied tasks
/// above it are acknowledged one by one instead of waiting to go in one `multiple` with it.
/// Acks are off the answer's path (the reply is out already), so waiting costs only prefetch
/// room; a webhook that takes seconds must not hold the window that long.
pub(super) const ACK_STALL: Duration = Duration::from_millis(20);

/// The most replies in one coalesced message, and events taken in one flush.
const MAX_BATCH: usize = 64;

/// What the source and the responders tell the flusher, in the order it happened.
pub(super) enum Event {
    /// The source took delivery `tag` from the channel of lane `lane` (one lane per queue).
    Delivered { lane: usize, tag: u64 },
    /// A task is done: publish its reply (if any), then let its ack go.
    Finished(Finished),
    /// A task's responder was dropped without replying (its handler panicked): hand the
    /// delivery back to its queue (`basic.nack`, requeue) instead of holding it for ever.
    Abandoned { lane: usize, tag: u64 },
    /// The connection is about to close: finish what is queued, send every ack allowed.
    Close(oneshot::Sender<()>),
}

pub(super) struct Finished {
    pub lane: usize,
    pub tag: u64,
    /// `None`: nothing to publish (a task dropped unanswered, or one without `reply_to`).
    pub reply: Option<OutgoingReply>,
    /// Told once the reply is published (or could not be).
    pub done: Option<oneshot::Sender<Result<(), BrokerError>>>,
}

pub(super) struct OutgoingReply {
    pub reply_to: ShortString,
    pub correlation_id: Option<ShortString>,
    /// The task's gateway reads coalesced replies.
    pub coalesce: bool,
    /// The serialized [`porter_core::wire::Reply`], the bytes that are signed.
    pub body: Box<RawValue>,
}

/// The handle the source and its responders send [`Event`]s through.
#[derive(Clone)]
pub(super) struct Outbox {
    sender: mpsc::UnboundedSender<Event>,
}

impl Outbox {
    /// Starts the flusher of one connection: `replies` publishes, `lanes[i]` is the channel
    /// whose deliveries lane `i` acknowledges. `broken` is cancelled once a channel fails
    /// the flusher: the connection must be dropped for its tasks to go back to the broker.
    pub(super) fn start(
        replies: Channel,
        lanes: Vec<Channel>,
        auth: TaskAuth,
        broken: CancellationToken,
    ) -> Outbox {
        let (sender, events) = mpsc::unbounded_channel();
        tokio::spawn(flush(events, replies, lanes, auth, broken));
        Outbox { sender }
    }

    pub(super) fn send(&self, event: Event) -> Result<(), BrokerError> {
        self.sender
            .send(event)
            .map_err(|_| BrokerError::Unavailable)
    }

    /// Flushes everything queued and every ack it allows, then stops the flusher; waits at
    /// most `timeout`.
    pub(super) async fn close(&self, timeout: Duration) {
        let (closed, wait) = oneshot::channel();
        if self.send(Event::Close(closed)).is_ok()
            && tokio::time::timeout(timeout, wait).await.is_err()
        {
            warn!("the outbox did not flush in time; unacknowledged tasks go back to the broker");
        }
    }
}

async fn flush(
    mut events: mpsc::UnboundedReceiver<Event>,
    replies: Channel,
    lanes: Vec<Channel>,
    auth: TaskAuth,
    broken: CancellationToken,
) {
    let mut windows: Vec<AckWindow> = lanes.iter().map(|_| AckWindow::default()).collect();
    let mut taken = Vec::with_capacity(MAX_BATCH);
    loop {
        let stall = windows.iter().filter_map(|w| w.next_stall(ACK_STALL)).min();
        let first = match stall {
            None => events.recv().await,
            Some(at) => tokio::select! {
                event = events.recv() => event,
                () = tokio::time::sleep_until(at.into()) => {
                    send_acks(&lanes, &mut windows, false, &broken).await;
                    continue;
                }
            },
        };
        // Every sender gone: the connection was dropped, and its channels with it.
        let Some(first) = first else { return };
        tokio::task::yield_now().await;
        taken.push(first);
        while taken.len() < MAX_BATCH {
            match events.try_recv() {
                Ok(event) => taken.push(event),
                Err(_) => break,
            }
        }
        let now = Instant::now();
        let mut finished = Vec::new();
        let mut closing = None;
        let mut abandoned = Vec::new();
        for event in taken.drain(..) {
            match event {
                Event::Delivered { lane, tag } => windows[lane].delivered(tag, now),
                Event::Finished(task) => finished.push(task),
                Event::Abandoned { lane, tag } => {
                    if windows[lane].abandoned(tag) {
                        abandoned.push((lane, tag));
                    }
                }
                Event::Close(closed) => closing = Some(closed),
            }
        }
        // Before any ack of this turn: a `multiple` must not cover an abandoned delivery.
        hand_back(&lanes, &abandoned, &broken).await;
        let results = publish(&replies, &auth, &finished).await;
        let failed = results
            .iter()
            .any(|result| matches!(result, Err(BrokerError::Amqp(_))));
        if failed || !replies.status().connected() {
            // Every later reply would fail the same way: only a new connection helps.
            if !broken.is_cancelled() {
                warn!("the reply channel is unusable; the worker reconnects");
            }
            broken.cancel();
        }
        for (task, result) in finished.into_iter().zip(results) {
            if result.is_ok() {
                windows[task.lane].replied(task.tag);
            }
            if let Some(done) = task.done {
                let _ = done.send(result);
            }
        }
        send_acks(&lanes, &mut windows, closing.is_some(), &broken).await;
        if let Some(closed) = closing {
            let _ = closed.send(());
            return;
        }
    }
}

/// Sends the acks each lane's window allows now (`all`: whatever has replied).
/// A failed ack cancels `broken`: that lane's channel is gone, and its tasks return only with
/// the connection.
async fn send_acks(
    lanes: &[Channel],
    windows: &mut [AckWindow],
    all: bool,
    broken: &CancellationToken,
) {
    let now = Instant::now();
    let mut sends = Vec::new();
    for (channel, window) in lanes.iter().zip(windows.iter_mut()) {
        for ack in window.take(now, ACK_STALL, all) {
            let (tag, multiple) = match ack {
                Ack::One(tag) => (tag, false),
                Ack::UpTo(tag) => (tag, true),
            };
            sends.push(channel.basic_ack(tag, BasicAckOptions { multiple }));
        }
    }
    for result in futures_util::future::join_all(sends).await {
        if let Err(error) = result {
            // The channel is gone: the broker hands its unacknowledged tasks to others.
            warn!(%error, "could not acknowledge tasks");
            broken.cancel();
        }
    }
}

/// Hands abandoned deliveries back to their queues, one `basic.nack` (requeue) each.
async fn hand_back(lanes: &[Channel], abandoned: &[(usize, u64)], broken: &CancellationToken) {
    let nacks = abandoned.iter().map(|&(lane, tag)| {
        lanes[lane].basic_nack(
            tag,
            BasicNackOptions {
                multiple: false,
                requeue: true,
            },
        )
    });
    for result in futures_util::future::join_all(nacks).await {
        if let Err(error) = result {
            warn!(%error, "could not hand back an abandoned task");
            broken.cancel();
        }
    }
    if !abandoned.is_empty() {
        warn!(
            tasks = abandoned.len(),
            "handed back tasks dropped without a reply"
        );
    }
}

/// One message to publish: a single reply (`entries` of one) or a coalesced batch.
struct Outgoing<'a> {
    reply_to: &'a ShortString,
    entries: Vec<usize>,
    batch: bool,
}

/// Publishes the replies of `finished`, coalescing where allowed; one result per task.
async fn publish(
    replies: &Channel,
    auth: &TaskAuth,
    finished: &[Finished],
) -> Vec<Result<(), BrokerError>> {
    let mut messages: Vec<Outgoing<'_>> = Vec::new();
    let mut groups: HashMap<&ShortString, usize> = HashMap::new();
    for (index, task) in finished.iter().enumerate() {
        let Some(reply) = &task.reply else { continue };
        if reply.coalesce {
            if let Some(&at) = groups.get(&reply.reply_to)
                && messages[at].entries.len() < MAX_BATCH
            {
                messages[at].entries.push(index);
                messages[at].batch = true;
                continue;
            }
            groups.insert(&reply.reply_to, messages.len());
        }
        messages.push(Outgoing {
            reply_to: &reply.reply_to,
            entries: vec![index],
            batch: false,
        });
    }
    let mut results: Vec<Result<(), BrokerError>> = finished.iter().map(|_| Ok(())).collect();
    let mut bodies = Vec::with_capacity(messages.len());
    for message in &messages {
        let reply = |index: usize| finished[index].reply.as_ref();
        let encoded = if message.batch {
            batch_message(auth, message.entries.iter().filter_map(|&i| reply(i)))
        } else {
            reply(message.entries[0])
                .map(|reply| single_message(auth, reply))
                .ok_or(BrokerError::Unavailable)
        };
        bodies.push(encoded);
    }
    // Every publish is queued before the first is awaited: one socket write for the lot.
    let mut publishes = Vec::new();
    let mut sent = Vec::new();
    for (message, encoded) in messages.iter().zip(&bodies) {
        match encoded {
            Ok((properties, body)) => {
                publishes.push(replies.basic_publish(
                    ShortString::default(),
                    message.reply_to.clone(),
                    BasicPublishOptions::default(),
                    body,
                    properties.clone(),
                ));
                sent.push(message);
            }
            Err(error) => {
                warn!(%error, "could not encode replies");
                for &index in &message.entries {
                    results[index] = Err(BrokerError::Unavailable);
                }
            }
        }
    }
    for (message, result) in sent
        .into_iter()
        .zip(futures_util::future::join_all(publishes).await)
    {
        if message.batch {
            debug!(
                replies = message.entries.len(),
                "published coalesced replies"
            );
        }
        if let Err(error) = result {
            for &index in &message.entries {
                results[index] = Err(BrokerError::Amqp(error.clone()));
            }
        }
    }
    results
}

fn reply_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(1)
}

/// A reply on its own, as every worker sent it before coalescing.
fn single_message(auth: &TaskAuth, reply: &OutgoingReply) -> (BasicProperties, Vec<u8>) {
    let body = reply.body.get().as_bytes().to_vec();
    let mut properties = reply_properties();
    if let Some(correlation_id) = &reply.correlation_id {
        properties = properties.with_correlation_id(correlation_id.clone());
    }
    (signed_reply(auth, properties, &body), body)
}

/// Several replies in one [`ReplyBatch`], each signed for its own correlation id.
fn batch_message<'a>(
    auth: &TaskAuth,
    replies: impl Iterator<Item = &'a OutgoingReply>,
) -> Result<(BasicProperties, Vec<u8>), BrokerError> {
    let replies = replies
        .map(|reply| {
            let correlation_id = reply.correlation_id.as_ref().map(|c| c.as_str());
            let signed = ReplyMessage {
                correlation_id,
                body: reply.body.get().as_bytes(),
            };
            BatchedReply {
                correlation_id: correlation_id.map(Into::into),
                signature: auth.sign(&Message::Reply(signed)).map(Into::into),
                body: &reply.body,
            }
        })
        .collect();
    let body = serde_json::to_vec(&ReplyBatch {
        v: FORMAT_VERSION,
        replies,
    })?;
    let properties = reply_properties().with_type(REPLY_BATCH_TYPE.into());
    Ok((properties, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pending;
    use crate::pending::Delivery;
    use porter_core::reason::Reason;
    use porter_core::task_auth::{Mode, TaskKeys};
    use porter_core::wire::Reply;

    fn reply(id: &str) -> OutgoingReply {
        OutgoingReply {
            reply_to: "amq.gen-q".into(),
            correlation_id: Some(id.into()),
            coalesce: true,
            body: serde_json::value::to_raw_value(&Reply::refused(id, Reason::Expired)).unwrap(),
        }
    }

    #[tokio::test]
    async fn a_coalesced_message_reaches_each_waiter_through_the_gateways_check() {
        let auth = TaskAuth::new(
            Some(Mode::Require),
            Some(TaskKeys::parse("the-task-key-of-the-outbox-tests-0").unwrap()),
        )
        .unwrap();
        let pending = Pending::new();
        let waiters: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|id| pending.register(id))
            .collect();
        let replies = [reply("a"), reply("b"), reply("c")];
        let (properties, body) = batch_message(&auth, replies.iter()).unwrap();
        assert_eq!(
            properties.kind().as_ref().map(|k| k.as_str()),
            Some(REPLY_BATCH_TYPE)
        );
        assert!(properties.correlation_id().is_none());
        let outcomes = pending.deliver_batch(&auth, &body).unwrap();
        assert!(outcomes.iter().all(|o| matches!(o, Delivery::Delivered)));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        for waiter in waiters {
            let got = waiter.wait_until(deadline).await.unwrap();
            assert_eq!(got.reason, Some(Reason::Expired));
        }
        // A single reply is what it always was: the body alone, signed as a reply.
        let (properties, body) = single_message(&auth, &reply("d"));
        assert!(properties.kind().is_none());
        let waiter = pending.register("d");
        let message = crate::auth::reply_message(&properties, &body);
        assert!(matches!(
            pending.deliver(&auth, message, crate::auth::signature(&properties)),
            Delivery::Delivered
        ));
        assert!(waiter.wait_until(deadline).await.is_some());
    }

    /// A reply channel closed under a live connection: the publish fails, its task is not
    /// acknowledged, and the flusher tells the connection to go (over the real broker).
    #[tokio::test]
    async fn a_closed_reply_channel_breaks_the_connection_instead_of_stalling_it() {
        let connection = lapin::Connection::connect(
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            lapin::ConnectionProperties::default(),
        )
        .await
        .expect("the test broker at 127.0.0.1:5672");
        let replies = connection.create_channel().await.unwrap();
        let lane = connection.create_channel().await.unwrap();
        let broken = CancellationToken::new();
        let outbox = Outbox::start(replies.clone(), vec![lane], TaskAuth::off(), broken.clone());
        replies
            .close(200, "closed by the test".into())
            .await
            .unwrap();
        assert!(connection.status().connected());
        outbox.send(Event::Delivered { lane: 0, tag: 1 }).unwrap();
        let (done, published) = oneshot::channel();
        outbox
            .send(Event::Finished(Finished {
                lane: 0,
                tag: 1,
                reply: Some(reply("a")),
                done: Some(done),
            }))
            .unwrap();
        let result = published.await.expect("the flusher answers");
        assert!(matches!(result, Err(BrokerError::Amqp(_))), "{result:?}");
        tokio::time::timeout(Duration::from_secs(5), broken.cancelled())
            .await
            .expect("the connection is told to go");
        let _ = connection.close(200, "test done".into()).await;
    }

    /// An abandoned delivery goes back to its queue (redelivered), over the real broker.
    #[tokio::test]
    async fn an_abandoned_task_is_handed_back_to_its_queue() {
        use futures_util::StreamExt;
        use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
        use lapin::types::FieldTable;
        let connection = lapin::Connection::connect(
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            lapin::ConnectionProperties::default(),
        )
        .await
        .expect("the test broker at 127.0.0.1:5672");
        let lane = connection.create_channel().await.unwrap();
        let queue = lane
            .queue_declare(
                ShortString::default(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .name()
            .clone();
        lane.basic_publish(
            ShortString::default(),
            queue.clone(),
            BasicPublishOptions::default(),
            b"task",
            BasicProperties::default(),
        )
        .await
        .unwrap();
        let mut consumer = lane
            .basic_consume(
                queue,
                "abandon-test".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let within = Duration::from_secs(5);
        let first = tokio::time::timeout(within, consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(!first.redelivered);
        let replies = connection.create_channel().await.unwrap();
        let broken = CancellationToken::new();
        let outbox = Outbox::start(replies, vec![lane], TaskAuth::off(), broken.clone());
        let tag = first.delivery_tag;
        outbox.send(Event::Delivered { lane: 0, tag }).unwrap();
        outbox.send(Event::Abandoned { lane: 0, tag }).unwrap();
        let again = tokio::time::timeout(within, consumer.next())
            .await
            .expect("the task comes back")
            .unwrap()
            .unwrap();
        assert!(again.redelivered);
        assert_eq!(again.data, b"task");
        assert!(!broken.is_cancelled());
        let _ = connection.close(200, "test done".into()).await;
    }
}
