//! The gateway's table of tasks awaiting a reply, keyed by task id.
//!
//! Every entry is owned by a [`PendingReply`] guard that removes it when dropped, whether
//! the reply came, the batch deadline passed or the request was cancelled: the table never
//! holds more than the tasks someone is still waiting for. Replies with no waiter (late,
//! duplicate or foreign) are dropped and counted.
//!
//! When the transport loses the queue the replies come back on (the gateway's connection, or
//! the node holding its reply queue), [`Pending::fail_all`] answers every waiter at once with
//! a reason instead of letting it wait out its deadline; a reply that still arrives later finds
//! no waiter and is dropped and counted like any late reply.
//!
//! [`Pending::deliver`] is the only way in, for every transport: it verifies a reply's
//! signature (`porter_core::task_auth`) before it reads the body, binds a signed reply to the
//! correlation id it was signed for, and drops and counts what does not authenticate. So the
//! gateway signs nothing for a reply that a broker user forged. A coalesced message (several
//! replies in one, [`Pending::deliver_batch`]) is opened and each reply inside goes through
//! [`Pending::deliver`] with its own correlation id and signature, as if it had come alone.
//! A coalesced message is refused whole ([`BatchRefusal`]) when it is not a batch, is in
//! another format version, or carries more than [`MAX_BATCH_REPLIES`] entries (no worker
//! sends that many: only a forger would make the gateway verify thousands of signatures for
//! one message).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use porter_core::reason::Reason;
use porter_core::task_auth::{Authenticity, Message, ReplyMessage, TaskAuth, Unauthenticated};
use porter_core::wire::{FORMAT_VERSION, Reply, ReplyBatch};
use tokio::sync::oneshot;

/// The most replies one coalesced message may carry; a worker sends at most 64.
pub const MAX_BATCH_REPLIES: usize = 256;

/// Why a coalesced message was refused whole (nothing in it delivered).
#[derive(Debug, thiserror::Error)]
pub enum BatchRefusal {
    /// Not a [`ReplyBatch`] at all.
    #[error("not a batch of replies")]
    Malformed(#[from] serde_json::Error),
    /// A batch in a format version this gateway does not read; counted as unauthenticated.
    #[error("a batch of replies in format version {0}")]
    Version(u32),
    /// More entries than [`MAX_BATCH_REPLIES`]; counted as unauthenticated.
    #[error("{0} replies in one message, more than {MAX_BATCH_REPLIES}")]
    TooMany(usize),
}

impl BatchRefusal {
    /// A stable code for logs.
    pub fn code(&self) -> &'static str {
        match self {
            BatchRefusal::Malformed(_) => "malformed",
            BatchRefusal::Version(_) => "unknown_version",
            BatchRefusal::TooMany(_) => "too_many_replies",
        }
    }
}

/// What became of the entries of one coalesced message, counted for one log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    pub delivered: usize,
    pub unclaimed: usize,
    pub unauthenticated: usize,
    pub wrong_task: usize,
    pub malformed: usize,
}

impl BatchSummary {
    pub fn of(outcomes: &[Delivery]) -> BatchSummary {
        let mut summary = BatchSummary::default();
        for outcome in outcomes {
            let count = match outcome {
                Delivery::Delivered => &mut summary.delivered,
                Delivery::Unclaimed => &mut summary.unclaimed,
                Delivery::Unauthenticated(_) => &mut summary.unauthenticated,
                Delivery::WrongTask => &mut summary.wrong_task,
                Delivery::Malformed(_) => &mut summary.malformed,
            };
            *count += 1;
        }
        summary
    }

    /// Entries dropped for a reason worth a warning (not merely late).
    pub fn refused(&self) -> usize {
        self.unauthenticated + self.wrong_task + self.malformed
    }
}

/// Shards spread the lock over cores; task ids are random so any hash spreads well.
const SHARDS: usize = 16;

type Shard = Mutex<HashMap<String, oneshot::Sender<Reply>>>;

#[derive(Clone, Default)]
pub struct Pending {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    shards: [Shard; SHARDS],
    dropped: AtomicU64,
    unauthenticated: AtomicU64,
}

/// What became of a reply handed to [`Pending::deliver`].
#[derive(Debug)]
pub enum Delivery {
    /// Its waiter has it.
    Delivered,
    /// Authentic, but nobody waits for it (late, duplicate or unknown); counted as dropped.
    Unclaimed,
    /// It does not authenticate; counted as unauthenticated, its body never read.
    Unauthenticated(Unauthenticated),
    /// Signed for one task, naming another in its body; counted as unauthenticated.
    WrongTask,
    /// Authentic, but its body is not a reply.
    Malformed(serde_json::Error),
}

fn shard_of(id: &str) -> usize {
    // FNV-1a: cheap and good enough for random uuids.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    (hash % SHARDS as u64) as usize
}

impl Pending {
    pub fn new() -> Pending {
        Pending::default()
    }

    fn shard(
        &self,
        id: &str,
    ) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Reply>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single
        // insert/remove), so a poisoned lock is safe to keep using.
        self.inner.shards[shard_of(id)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a task id; the guard receives its reply.
    pub fn register(&self, id: &str) -> PendingReply {
        let (sender, receiver) = oneshot::channel();
        self.shard(id).insert(id.to_owned(), sender);
        PendingReply {
            id: id.to_owned(),
            receiver,
            pending: self.clone(),
        }
    }

    /// Hands a reply message to its waiter if it authenticates under `auth`: the one way a
    /// reply reaches a waiter, whatever the transport.
    pub fn deliver(
        &self,
        auth: &TaskAuth,
        message: ReplyMessage<'_>,
        signature: Option<&[u8]>,
    ) -> Delivery {
        let authenticity = match auth.verify(&Message::Reply(message), signature) {
            Ok(authenticity) => authenticity,
            Err(refusal) => {
                self.inner.unauthenticated.fetch_add(1, Ordering::Relaxed);
                return Delivery::Unauthenticated(refusal);
            }
        };
        let reply = match serde_json::from_slice::<Reply>(message.body) {
            Ok(reply) => reply,
            Err(error) => return Delivery::Malformed(error),
        };
        // The signature covers the correlation id, not the body's `id` field as such: the
        // reply may only complete the task it was signed for.
        if authenticity == Authenticity::Signed && message.correlation_id != Some(&reply.id) {
            self.inner.unauthenticated.fetch_add(1, Ordering::Relaxed);
            return Delivery::WrongTask;
        }
        if self.complete(reply) {
            Delivery::Delivered
        } else {
            Delivery::Unclaimed
        }
    }

    /// Hands each reply of a coalesced message ([`ReplyBatch`], AMQP `type`
    /// [`REPLY_BATCH_TYPE`](porter_core::wire::REPLY_BATCH_TYPE)) to its waiter through
    /// [`Pending::deliver`], each verified on its own for its own correlation id: what one
    /// forged or tampered entry costs is that entry. `Err` when the message is refused whole
    /// (nothing in it delivered): not a batch, another format version, or too many entries.
    pub fn deliver_batch(
        &self,
        auth: &TaskAuth,
        body: &[u8],
    ) -> Result<Vec<Delivery>, BatchRefusal> {
        let batch: ReplyBatch<'_> = serde_json::from_slice(body)?;
        let refusal = if batch.v != FORMAT_VERSION {
            Some(BatchRefusal::Version(batch.v))
        } else if batch.replies.len() > MAX_BATCH_REPLIES {
            Some(BatchRefusal::TooMany(batch.replies.len()))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            self.inner.unauthenticated.fetch_add(1, Ordering::Relaxed);
            return Err(refusal);
        }
        Ok(batch
            .replies
            .iter()
            .map(|entry| {
                let message = ReplyMessage {
                    correlation_id: entry.correlation_id.as_deref(),
                    body: entry.body.get().as_bytes(),
                };
                let signature = entry.signature.as_deref().map(str::as_bytes);
                self.deliver(auth, message, signature)
            })
            .collect())
    }

    /// Hands a reply to its waiter. Returns false (and counts it) when nobody waits.
    fn complete(&self, reply: Reply) -> bool {
        let sender = self.shard(&reply.id).remove(&reply.id);
        let delivered = sender.is_some_and(|s| s.send(reply).is_ok());
        if !delivered {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
        delivered
    }

    /// Answers every task awaiting a reply with a refusal for `reason` (e.g.
    /// `broker_unavailable` when the reply queue is lost) and forgets them. Returns how many it
    /// answered. A task registered after the call is not affected.
    pub fn fail_all(&self, reason: &Reason) -> usize {
        let mut failed = 0;
        for shard in &self.inner.shards {
            // Taken out under the lock, answered outside it: a waiter's guard dropping at once
            // locks the same shard.
            let senders: Vec<_> = shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain()
                .collect();
            for (id, sender) in senders {
                if sender.send(Reply::refused(id, reason.clone())).is_ok() {
                    failed += 1;
                }
            }
        }
        failed
    }

    /// Tasks currently awaiting a reply.
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replies that arrived with nobody waiting (late or unknown).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Replies dropped because they did not authenticate (forged, tampered, unsigned where
    /// signatures are required, or signed for another task).
    pub fn unauthenticated(&self) -> u64 {
        self.inner.unauthenticated.load(Ordering::Relaxed)
    }
}

/// A registered task; awaiting it yields the reply. Dropping it forgets the task.
pub struct PendingReply {
    id: String,
    receiver: oneshot::Receiver<Reply>,
    pending: Pending,
}

impl PendingReply {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Waits for the reply until the deadline; `None` when it did not come in time.
    pub async fn wait_until(mut self, deadline: tokio::time::Instant) -> Option<Reply> {
        tokio::time::timeout_at(deadline, &mut self.receiver)
            .await
            .ok()
            .and_then(Result::ok)
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        self.pending.shard(&self.id).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use porter_core::task_auth::{Mode, TaskKeys};
    use porter_core::wire::AuthData;
    use std::time::Duration;

    #[tokio::test]
    async fn reply_reaches_its_waiter_and_entry_is_gone() {
        let pending = Pending::new();
        let waiter = pending.register("a");
        assert_eq!(pending.len(), 1);
        assert!(pending.complete(Reply::refused("a", Reason::parse("no"))));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        assert_eq!(
            waiter.wait_until(deadline).await.unwrap().reason,
            Some(Reason::parse("no"))
        );
        assert_eq!(pending.len(), 0);
    }

    #[tokio::test]
    async fn timeout_and_late_reply_leave_nothing_behind() {
        let pending = Pending::new();
        let waiter = pending.register("b");
        let deadline = tokio::time::Instant::now() + Duration::from_millis(10);
        assert!(waiter.wait_until(deadline).await.is_none());
        assert_eq!(pending.len(), 0);
        assert!(!pending.complete(Reply::refused("b", Reason::Timeout)));
        assert_eq!(pending.dropped(), 1);
        assert_eq!(pending.len(), 0);
    }

    const KEY: &str = "the-task-key-of-the-pending-tests";
    const OTHER_KEY: &str = "another-task-key-nobody-here-has";

    fn auth(mode: Mode, key: &str) -> TaskAuth {
        TaskAuth::new(Some(mode), Some(TaskKeys::parse(key).unwrap())).unwrap()
    }

    fn body(id: &str, user_id: &str) -> Vec<u8> {
        let data = AuthData {
            user_id: Some(user_id.into()),
            ..AuthData::default()
        };
        serde_json::to_vec(&Reply::allowed(id, data)).unwrap()
    }

    fn message<'a>(correlation_id: &'a str, body: &'a [u8]) -> ReplyMessage<'a> {
        ReplyMessage {
            correlation_id: Some(correlation_id),
            body,
        }
    }

    /// Delivers a reply signed by `signer` (unsigned when it is off).
    fn deliver(
        pending: &Pending,
        gateway: &TaskAuth,
        signer: &TaskAuth,
        correlation_id: &str,
        body: &[u8],
    ) -> Delivery {
        let message = message(correlation_id, body);
        let signature = signer.sign(&Message::Reply(message));
        pending.deliver(gateway, message, signature.as_deref().map(str::as_bytes))
    }

    async fn received_user(waiter: PendingReply) -> Option<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        waiter.wait_until(deadline).await?.data?.user_id
    }

    #[tokio::test]
    async fn forged_replies_never_reach_their_waiter_and_are_counted() {
        let pending = Pending::new();
        let gateway = auth(Mode::Require, KEY);
        let waiter = pending.register("a");
        let forged = body("a", "admin");
        let tampered = {
            let message = message("a", b"{\"v\":1,\"id\":\"a\",\"ok\":false}");
            gateway.sign(&Message::Reply(message)).unwrap()
        };
        let outcomes = [
            deliver(&pending, &gateway, &TaskAuth::off(), "a", &forged),
            deliver(
                &pending,
                &gateway,
                &auth(Mode::Require, OTHER_KEY),
                "a",
                &forged,
            ),
            pending.deliver(&gateway, message("a", &forged), Some(tampered.as_bytes())),
            pending.deliver(&gateway, message("a", &forged), Some(b"garbage")),
            // Signed by a real worker for task b, addressed in its body to a.
            deliver(&pending, &gateway, &gateway, "b", &forged),
        ];
        assert!(
            matches!(
                outcomes,
                [
                    Delivery::Unauthenticated(Unauthenticated::Unsigned),
                    Delivery::Unauthenticated(Unauthenticated::UnknownKey),
                    Delivery::Unauthenticated(Unauthenticated::BadSignature),
                    Delivery::Unauthenticated(Unauthenticated::Malformed),
                    Delivery::WrongTask,
                ]
            ),
            "{outcomes:?}"
        );
        assert_eq!(pending.unauthenticated(), 5);
        assert_eq!(pending.dropped(), 0);
        assert_eq!(pending.len(), 1, "the task still waits");

        let real = body("a", "7");
        assert!(matches!(
            deliver(&pending, &gateway, &gateway, "a", &real),
            Delivery::Delivered
        ));
        assert_eq!(received_user(waiter).await.as_deref(), Some("7"));
    }

    #[tokio::test]
    async fn accept_mode_takes_unsigned_replies_but_not_bad_signatures() {
        let pending = Pending::new();
        let gateway = auth(Mode::Accept, KEY);
        let waiter = pending.register("a");
        let reply = body("a", "7");
        assert!(matches!(
            deliver(
                &pending,
                &gateway,
                &auth(Mode::Accept, OTHER_KEY),
                "a",
                &reply
            ),
            Delivery::Unauthenticated(Unauthenticated::UnknownKey)
        ));
        assert!(matches!(
            deliver(&pending, &gateway, &TaskAuth::off(), "a", &reply),
            Delivery::Delivered
        ));
        assert_eq!(received_user(waiter).await.as_deref(), Some("7"));
        assert_eq!(pending.unauthenticated(), 1);
    }

    #[tokio::test]
    async fn a_rotated_worker_still_reaches_the_gateway_and_late_replies_are_unclaimed() {
        let pending = Pending::new();
        let gateway = auth(Mode::Require, &format!("{OTHER_KEY},{KEY}"));
        let waiter = pending.register("a");
        let reply = body("a", "7");
        let worker = auth(Mode::Require, KEY);
        assert!(matches!(
            deliver(&pending, &gateway, &worker, "a", &reply),
            Delivery::Delivered
        ));
        assert_eq!(received_user(waiter).await.as_deref(), Some("7"));
        assert!(matches!(
            deliver(&pending, &gateway, &worker, "a", &reply),
            Delivery::Unclaimed
        ));
        assert_eq!((pending.dropped(), pending.unauthenticated()), (1, 0));
    }

    #[tokio::test]
    async fn without_keys_every_reply_is_delivered_as_before() {
        let pending = Pending::new();
        let waiter = pending.register("a");
        let reply = body("a", "7");
        assert!(matches!(
            pending.deliver(&TaskAuth::off(), message("zz", &reply), Some(b"garbage")),
            Delivery::Delivered
        ));
        assert_eq!(received_user(waiter).await.as_deref(), Some("7"));
        assert!(matches!(
            pending.deliver(&TaskAuth::off(), message("a", b"not json"), None),
            Delivery::Malformed(_)
        ));
    }

    #[tokio::test]
    async fn fail_all_answers_every_waiter_at_once_and_late_replies_are_dropped() {
        let pending = Pending::new();
        let ids: Vec<String> = (0..40).map(|i| format!("task-{i}")).collect();
        let waiters: Vec<_> = ids.iter().map(|id| pending.register(id)).collect();
        // One whose request went away already: nobody to answer, not counted.
        drop(pending.register("gone"));
        assert_eq!(pending.fail_all(&Reason::BrokerUnavailable), ids.len());
        assert!(pending.is_empty());

        // Far from the deadline: the answers are already there.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
        let started = std::time::Instant::now();
        for (id, waiter) in ids.iter().zip(waiters) {
            let reply = waiter.wait_until(deadline).await.expect("answered");
            assert_eq!(&reply.id, id);
            assert!(!reply.ok);
            assert_eq!(reply.reason, Some(Reason::BrokerUnavailable));
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no waiter hung");

        // The real reply arriving late finds nobody and is counted, as any late reply.
        let late = body("task-3", "7");
        assert!(matches!(
            pending.deliver(&TaskAuth::off(), message("task-3", &late), None),
            Delivery::Unclaimed
        ));
        assert_eq!(pending.dropped(), 1);

        // A task registered afterwards (on the next reply queue) is untouched by the failure.
        let next = pending.register("after");
        assert_eq!(pending.len(), 1);
        assert!(pending.complete(Reply::refused("after", Reason::parse("no"))));
        assert_eq!(
            next.wait_until(deadline).await.and_then(|r| r.reason),
            Some(Reason::parse("no"))
        );
        assert_eq!(pending.fail_all(&Reason::BrokerUnavailable), 0);
    }

    /// A coalesced message as a worker writes it: each entry signed by `signer` for its own
    /// correlation id.
    fn batch(signer: &TaskAuth, entries: &[(&str, &[u8])]) -> Vec<u8> {
        let raws: Vec<Box<serde_json::value::RawValue>> = entries
            .iter()
            .map(|(_, body)| {
                serde_json::value::RawValue::from_string(String::from_utf8(body.to_vec()).unwrap())
                    .unwrap()
            })
            .collect();
        let replies = entries
            .iter()
            .zip(&raws)
            .map(|((cid, _), raw)| {
                let message = message(cid, raw.get().as_bytes());
                porter_core::wire::BatchedReply {
                    correlation_id: Some((*cid).into()),
                    signature: signer.sign(&Message::Reply(message)).map(Into::into),
                    body: raw,
                }
            })
            .collect();
        let batch = ReplyBatch {
            v: porter_core::wire::FORMAT_VERSION,
            replies,
        };
        serde_json::to_vec(&batch).unwrap()
    }

    #[tokio::test]
    async fn a_batch_reaches_each_waiter_and_each_entry_is_verified_on_its_own() {
        let pending = Pending::new();
        let gateway = auth(Mode::Require, KEY);
        let (a, b, c) = (
            pending.register("a"),
            pending.register("b"),
            pending.register("c"),
        );
        let body_a = body("a", "7");
        let body_b = body("b", "8");
        // A worker's batch: a and b signed for themselves.
        let good = batch(&gateway, &[("a", &body_a), ("b", &body_b)]);
        let outcomes = pending.deliver_batch(&gateway, &good).unwrap();
        assert!(
            matches!(outcomes[..], [Delivery::Delivered, Delivery::Delivered]),
            "{outcomes:?}"
        );
        assert_eq!(received_user(a).await.as_deref(), Some("7"));
        assert_eq!(received_user(b).await.as_deref(), Some("8"));

        // A forger's batch for c: unsigned, another key, a's real signature moved onto c's
        // body, and a body naming c under a signature for b.
        let forged = body("c", "admin");
        let mut entries = batch(&TaskAuth::off(), &[("c", &forged)]);
        let outcomes = pending.deliver_batch(&gateway, &entries).unwrap();
        assert!(matches!(
            outcomes[..],
            [Delivery::Unauthenticated(Unauthenticated::Unsigned)]
        ));
        entries = batch(&auth(Mode::Require, OTHER_KEY), &[("c", &forged)]);
        let outcomes = pending.deliver_batch(&gateway, &entries).unwrap();
        assert!(matches!(
            outcomes[..],
            [Delivery::Unauthenticated(Unauthenticated::UnknownKey)]
        ));
        let text = String::from_utf8(good.clone()).unwrap();
        let moved = text.replacen(
            &String::from_utf8(body_a.clone()).unwrap(),
            &String::from_utf8(body("c", "admin")).unwrap(),
            1,
        );
        let moved = moved.replacen(r#""cid":"a""#, r#""cid":"c""#, 1);
        let outcomes = pending.deliver_batch(&gateway, moved.as_bytes()).unwrap();
        assert!(
            matches!(
                outcomes[..],
                [
                    Delivery::Unauthenticated(Unauthenticated::BadSignature),
                    Delivery::Unclaimed
                ]
            ),
            "{outcomes:?}"
        );
        entries = batch(&gateway, &[("b", &forged)]);
        let outcomes = pending.deliver_batch(&gateway, &entries).unwrap();
        assert!(matches!(outcomes[..], [Delivery::WrongTask]));
        assert_eq!(pending.unauthenticated(), 4);
        assert_eq!(pending.len(), 1, "c still waits");

        // Not a batch at all: nothing delivered, an error to log.
        assert!(pending.deliver_batch(&gateway, b"[1,2]").is_err());
        assert!(pending.deliver_batch(&gateway, &body("c", "7")).is_err());

        assert!(matches!(
            pending.deliver_batch(&gateway, b"[1,2]"),
            Err(BatchRefusal::Malformed(_))
        ));
        assert_eq!(
            pending.unauthenticated(),
            4,
            "a malformed message is not counted"
        );

        let real = body("c", "9");
        let outcomes = pending
            .deliver_batch(&gateway, &batch(&gateway, &[("c", &real)]))
            .unwrap();
        assert!(matches!(outcomes[..], [Delivery::Delivered]));
        assert_eq!(received_user(c).await.as_deref(), Some("9"));
    }

    #[tokio::test]
    async fn a_single_reply_from_an_old_worker_still_reaches_a_coalescing_gateway() {
        // Literally what a worker from before coalescing publishes: one reply, its own message.
        let pending = Pending::new();
        let waiter = pending.register("t1");
        let old = br#"{"v":1,"id":"t1","ok":true,"data":{"user_id":"7"}}"#;
        assert!(matches!(
            pending.deliver(&TaskAuth::off(), message("t1", old), None),
            Delivery::Delivered
        ));
        assert_eq!(received_user(waiter).await.as_deref(), Some("7"));
    }

    #[test]
    fn dropping_a_waiter_forgets_the_task() {
        let pending = Pending::new();
        drop(pending.register("c"));
        assert!(pending.is_empty());
    }

    #[tokio::test]
    async fn a_batch_in_another_version_or_past_the_cap_is_refused_whole_and_counted() {
        let pending = Pending::new();
        let gateway = auth(Mode::Require, KEY);
        let waiter = pending.register("a");
        let reply = body("a", "7");
        let good = String::from_utf8(batch(&gateway, &[("a", &reply)])).unwrap();
        let future = good.replacen(r#""v":1"#, r#""v":2"#, 1);
        assert_ne!(future, good);
        assert!(matches!(
            pending.deliver_batch(&gateway, future.as_bytes()),
            Err(BatchRefusal::Version(2))
        ));
        assert_eq!(pending.unauthenticated(), 1);
        // Past the cap: every entry is authentic, and still none is delivered.
        let bodies: Vec<Vec<u8>> = (0..=MAX_BATCH_REPLIES).map(|_| reply.clone()).collect();
        let entries: Vec<(&str, &[u8])> = bodies.iter().map(|b| ("a", b.as_slice())).collect();
        let many = batch(&gateway, &entries);
        assert!(matches!(
            pending.deliver_batch(&gateway, &many),
            Err(BatchRefusal::TooMany(n)) if n == MAX_BATCH_REPLIES + 1
        ));
        assert_eq!(pending.unauthenticated(), 2);
        assert_eq!(pending.len(), 1, "a still waits");
        // At the cap it is read: the first entry reaches a, the rest are unclaimed.
        let at_cap = batch(&gateway, &entries[..MAX_BATCH_REPLIES]);
        let outcomes = pending.deliver_batch(&gateway, &at_cap).unwrap();
        let summary = BatchSummary::of(&outcomes);
        assert_eq!(
            summary,
            BatchSummary {
                delivered: 1,
                unclaimed: MAX_BATCH_REPLIES - 1,
                ..BatchSummary::default()
            }
        );
        assert_eq!(summary.refused(), 0);
        assert_eq!(received_user(waiter).await.as_deref(), Some("7"));
    }

    #[test]
    fn a_batch_summary_counts_each_kind_of_outcome() {
        let malformed = serde_json::from_slice::<Reply>(b"{").unwrap_err();
        let outcomes = [
            Delivery::Delivered,
            Delivery::Unauthenticated(Unauthenticated::Unsigned),
            Delivery::Unauthenticated(Unauthenticated::BadSignature),
            Delivery::WrongTask,
            Delivery::Malformed(malformed),
            Delivery::Unclaimed,
        ];
        let summary = BatchSummary::of(&outcomes);
        assert_eq!(
            summary,
            BatchSummary {
                delivered: 1,
                unclaimed: 1,
                unauthenticated: 2,
                wrong_task: 1,
                malformed: 1,
            }
        );
        assert_eq!(summary.refused(), 4);
    }
}
