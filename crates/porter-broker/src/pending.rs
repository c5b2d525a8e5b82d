//! The gateway's table of tasks awaiting a reply, keyed by task id.
//!
//! Every entry is owned by a [`PendingReply`] guard that removes it when dropped, whether
//! the reply came, the batch deadline passed or the request was cancelled: the table never
//! holds more than the tasks someone is still waiting for. Replies with no waiter (late,
//! duplicate or foreign) are dropped and counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use porter_core::wire::Reply;
use tokio::sync::oneshot;

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

    /// Hands a reply to its waiter. Returns false (and counts it) when nobody waits.
    pub fn complete(&self, reply: Reply) -> bool {
        let sender = self.shard(&reply.id).remove(&reply.id);
        let delivered = sender.is_some_and(|s| s.send(reply).is_ok());
        if !delivered {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
        delivered
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
    use porter_core::reason::Reason;
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

    #[test]
    fn dropping_a_waiter_forgets_the_task() {
        let pending = Pending::new();
        drop(pending.register("c"));
        assert!(pending.is_empty());
    }
}
