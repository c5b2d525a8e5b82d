//! Marks of the steps applied for a publication, so that a redelivery (a worker died after
//! applying, before acknowledging) applies each step at most once: `seen:publish:{id}:{step}`
//! through the store's replay guard, set only once the step succeeded and checked before it
//! runs. A step that fails is not marked and runs again on the next delivery.
//!
//! Two deliveries of one publication can run at once (a redelivery while the first is still
//! being applied, on this worker or another). So a step is first *claimed*
//! (`seen:publish:{id}:{step}:claim`, set if absent, for [`CLAIM_TTL`]): only the claimer runs
//! it; the other delivery finds it [`Claim::Busy`] and is handed back, to find it done later. A
//! claimer that fails releases its claim; one that dies leaves it to expire.

use std::time::Duration;

use porter_store::{Store, StoreError};
use sha2::{Digest, Sha256};

/// How long a step's mark lasts: well past any redelivery (a requeue loop while the store
/// or broker is away, or an operator moving dead letters back a day later).
pub const MARK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a claim holds a step for its claimer: past the longest a step takes (an upstream's
/// attempts, at most `upstream::MAX_ATTEMPTS` of at most 5 s each with their waits: checked at
/// compile time there), so a live claimer keeps it, and a dead one's step is retried after it.
///
/// The release is a plain delete of the claim key, not a compare-and-delete against a token of
/// the claimer: the store has no such operation. So a claimer that overran its claim (a
/// process paused past `CLAIM_TTL`) may, on release, delete the claim a second delivery took
/// since; a third could then run the step alongside the second. The bound on the attempts
/// keeps a live claimer inside its claim; beyond that, the step's mark catches any copy that
/// starts after one finished.
pub const CLAIM_TTL: Duration = Duration::from_secs(120);

/// Who may run a step now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// It was done before: skip it.
    Done,
    /// This delivery holds it: run it, then [`Mark::set`] (or [`Mark::release`] on failure).
    Claimed,
    /// Another delivery is running it now: try again later.
    Busy,
}

/// One step of one publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark(String);

impl Mark {
    /// The retained-state step of the publication.
    pub fn retained(publication_id: &str) -> Mark {
        Mark(format!("publish:{publication_id}:retained"))
    }

    /// The delivery of event `index` to one session: by a digest of the session id, never
    /// the id.
    pub fn session(publication_id: &str, index: usize, session_id: &str) -> Mark {
        Mark(format!(
            "publish:{publication_id}:session:{index}:{}",
            short_digest(session_id)
        ))
    }

    /// The forwarding to one upstream base URL.
    pub fn upstream(publication_id: &str, base: &str) -> Mark {
        Mark(format!(
            "publish:{publication_id}:upstream:{}",
            short_digest(base)
        ))
    }

    /// Whether the step was applied before.
    pub async fn is_set(&self, store: &dyn Store) -> Result<bool, StoreError> {
        store.sighted(&self.0).await
    }

    /// Records that the step was applied, and drops the claim.
    pub async fn set(&self, store: &dyn Store) -> Result<(), StoreError> {
        store.first_sighting(&self.0, MARK_TTL).await?;
        self.release(store).await
    }

    fn claim_key(&self) -> String {
        format!("{}:claim", self.0)
    }

    /// Done before, claimed now by this delivery, or busy in another.
    pub async fn claim(&self, store: &dyn Store) -> Result<Claim, StoreError> {
        if self.is_set(store).await? {
            return Ok(Claim::Done);
        }
        if store.first_sighting(&self.claim_key(), CLAIM_TTL).await? {
            // Done between the two looks: the claim is not needed.
            if self.is_set(store).await? {
                self.release(store).await?;
                return Ok(Claim::Done);
            }
            Ok(Claim::Claimed)
        } else {
            Ok(Claim::Busy)
        }
    }

    /// Gives the claim up (the step failed): the next delivery may run it.
    pub async fn release(&self, store: &dyn Store) -> Result<(), StoreError> {
        store.forget_sighting(&self.claim_key()).await
    }
}

fn short_digest(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_name_no_session_id_and_differ_by_step() {
        let id = "0123456789abcdef0123456789abcdef";
        let mark = Mark::session("p1", 0, id);
        assert!(!mark.0.contains(id), "{mark:?}");
        assert_ne!(mark, Mark::session("p1", 1, id));
        assert_ne!(mark, Mark::session("p2", 0, id));
        assert_ne!(
            Mark::upstream("p1", "http://a"),
            Mark::upstream("p1", "http://b")
        );
        assert_ne!(Mark::retained("p1"), Mark::retained("p2"));
    }
}
