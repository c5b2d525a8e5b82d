//! Sessions: the gateway's `POST /auth` `{"email", "token"}` verifies the token as a bearer token
//! would be, checks that its `email` claim is the given email, and opens a session here
//! ([`Sessions::open`]), answering `{"sessionId"}`. The session id is then accepted in
//! `X-Session-ID` by every authorization endpoint ([`Sessions::resume`]), with the user id and
//! claims of the token that opened it.
//!
//! - The session lives in the store (`{prefix}session:{sha256(id)}`) with a sliding TTL: every
//!   use renews it in the same command that reads it (GETEX).
//! - A session ends when its token does: it is refused (and deleted) once the token's `exp`
//!   plus the leeway has passed, and its key never outlives that moment by design (the TTL
//!   is capped at creation and after every renewal near the end).
//! - Opening a session declares its fanout exchange `data.<session-id>.published`, whose
//!   lifetime follows the session through a lease queue (see `porter_broker::session`). The
//!   lease is renewed only once a use has passed its revocation check ([`SessionUse`]).
//! - The session remembers the token's hash and `jti`: revoking the token ends its sessions;
//!   the first use that finds the revocation deletes the session.
//! - Session ids are 128-bit random (UUID v4) hex strings and never appear in a log line.
//! - Every session is in its user's index of live sessions (`Store::index_session`) until its
//!   token's end at the latest, so a published event for the user reaches its exchange; the
//!   index is written before the session, so a session never exists unindexed, and a session
//!   that ends is taken out (an index entry of a session deleted elsewhere, e.g. on a
//!   revocation, is dropped by the next read, which checks that the session still exists).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use porter_broker::TaskClient;
use porter_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::warn;

use crate::caller::{Caller, SessionUse, redact};
use crate::clock::now_secs;
use crate::error::IdentityError;
use crate::model::{Credential, Identity};
use crate::time_claims;

/// The session store and exchange declarations, with the sliding TTL.
pub struct Sessions {
    store: Arc<dyn Store>,
    exchanges: Arc<dyn TaskClient>,
    ttl: Duration,
    /// Tolerated clock skew past a token's `exp`, as for bearer tokens.
    leeway: Duration,
    /// When this gateway last renewed each session's exchange lease.
    renewed: Mutex<HashMap<String, Instant>>,
    /// When the renewal table was last swept: at most once per renewal step, so a table
    /// above [`RENEWED_SWEEP_AT`] of live sessions is not walked on every request.
    swept: Mutex<Instant>,
}

/// How long a token with these claims stays good from `now` (its `exp` plus the leeway), or
/// `None` when it has ended or has no numeric `exp`.
fn remaining(claims: &Map<String, Value>, leeway: Duration, now: i64) -> Option<Duration> {
    // The earlier second of a fractional `exp`, as the token's own check counts it.
    let exp = time_claims::claim(claims, "exp").ok().flatten()?;
    let end = exp
        .floor_secs()
        .saturating_add(leeway.as_secs().min(i64::MAX as u64) as i64);
    (end > now).then(|| Duration::from_secs(end.abs_diff(now)))
}

/// A lease is renewed at most once per `ttl / RENEWALS_PER_TTL` by one gateway, so a busy
/// session costs the broker a few declarations per TTL, not one per request. To make up for
/// the renewals skipped, the lease lasts that much longer than the session's TTL: the
/// exchange may outlive its session by up to that step, never the other way round.
const RENEWALS_PER_TTL: u32 = 4;
/// Sessions remembered in the renewal table before expired entries are swept out.
const RENEWED_SWEEP_AT: usize = 10_000;

/// What a session remembers of the token that opened it.
#[derive(Debug, Serialize, Deserialize)]
struct SessionRecord {
    user_id: String,
    #[serde(default)]
    claims: Map<String, Value>,
    credential: Credential,
}

impl Sessions {
    pub fn new(store: Arc<dyn Store>, exchanges: Arc<dyn TaskClient>, ttl: Duration) -> Sessions {
        Sessions {
            store,
            exchanges,
            ttl: ttl.max(Duration::from_secs(1)),
            leeway: Duration::ZERO,
            renewed: Mutex::new(HashMap::new()),
            swept: Mutex::new(Instant::now()),
        }
    }

    /// Sets the tolerated clock skew past a token's `exp` (the verifier's leeway).
    pub fn with_leeway(mut self, leeway: Duration) -> Sessions {
        self.leeway = leeway;
        self
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The least time between two lease renewals of one session by this gateway.
    fn renew_every(&self) -> Duration {
        self.ttl / RENEWALS_PER_TTL
    }

    /// How long a lease lasts: the session TTL plus the renewal step.
    pub fn lease(&self) -> Duration {
        self.ttl + self.renew_every()
    }

    /// Whether this use of the session should renew its lease; records the renewal.
    fn renewal_due(&self, id: &str) -> bool {
        self.renewal_due_at(id, Instant::now())
    }

    fn renewal_due_at(&self, id: &str, now: Instant) -> bool {
        let step = self.renew_every();
        let mut renewed = self.renewed.lock().unwrap_or_else(PoisonError::into_inner);
        if renewed.len() >= RENEWED_SWEEP_AT {
            // Always taken after `renewed`, so the two locks cannot deadlock.
            let mut swept = self.swept.lock().unwrap_or_else(PoisonError::into_inner);
            if now.saturating_duration_since(*swept) >= step {
                renewed.retain(|_, at| now.saturating_duration_since(*at) < step);
                *swept = now;
            }
        }
        match renewed.get(id) {
            Some(at) if now.duration_since(*at) < step => false,
            _ => {
                renewed.insert(id.to_owned(), now);
                true
            }
        }
    }

    /// A session id as [`Sessions::open`] makes them: 32 lowercase hex digits.
    fn well_formed(id: &str) -> bool {
        id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    /// Opens a session: declares its exchange, then stores it. Returns the session id.
    /// A token that has already ended (`exp` plus the leeway) opens nothing:
    /// [`IdentityError::TokenExpired`].
    pub async fn open(
        &self,
        user_id: String,
        claims: Map<String, Value>,
        credential: Credential,
    ) -> Result<String, IdentityError> {
        // The session ends when its token does, and its key with it.
        let Some(remaining) = remaining(&claims, self.leeway, now_secs()) else {
            return Err(IdentityError::TokenExpired);
        };
        let ttl = self.ttl.min(remaining).max(Duration::from_secs(1));
        let id = uuid::Uuid::new_v4().simple().to_string();
        if let Err(error) = self.exchanges.open_session(&id, self.lease()).await {
            warn!(error = %redact(&error.to_string(), &id), "could not declare a session exchange");
            return Err(IdentityError::BrokerUnavailable);
        }
        // Indexed until its token's end, which the session never outlives.
        if let Err(error) = self.store.index_session(&user_id, &id, remaining).await {
            warn!(%error, "could not index a session");
            return Err(IdentityError::StoreUnavailable);
        }
        let record = SessionRecord {
            user_id,
            claims,
            credential,
        };
        let data = serde_json::to_string(&record).map_err(|_| IdentityError::StoreUnavailable)?;
        if let Err(error) = self.store.create_session(&id, &data, ttl).await {
            warn!(%error, "could not store a session");
            return Err(IdentityError::StoreUnavailable);
        }
        Ok(id)
    }

    /// The caller of a session, its TTL renewed (up to its token's end). A session whose
    /// token has ended is refused and deleted. Its exchange lease is renewed only once the
    /// caller's revocation check passed ([`Caller::settle`]). The client id is left to the
    /// caller of this function.
    pub async fn resume(&self, id: &str) -> Result<Caller, IdentityError> {
        if !Self::well_formed(id) {
            return Err(IdentityError::InvalidSession);
        }
        let data = match self.store.touch_session(id, self.ttl).await {
            Ok(Some(data)) => data,
            Ok(None) => return Err(IdentityError::InvalidSession),
            Err(error) => {
                warn!(%error, "could not read a session");
                return Err(IdentityError::StoreUnavailable);
            }
        };
        let record: SessionRecord =
            serde_json::from_str(&data).map_err(|_| IdentityError::InvalidSession)?;
        let Some(remaining) = remaining(&record.claims, self.leeway, now_secs()) else {
            // The token has ended: so has the session, whatever its sliding TTL says.
            if let Err(error) = self.store.forget_session(id).await {
                warn!(%error, "could not delete an ended session");
            }
            if let Err(error) = self.store.unindex_session(&record.user_id, id).await {
                warn!(%error, "could not take an ended session out of its user's index");
            }
            return Err(IdentityError::InvalidSession);
        };
        if remaining < self.ttl {
            // GETEX just renewed the key past the token's end: bring it back, off the
            // request's path (a read after the end is refused anyway).
            let store = self.store.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                if let Err(error) = store.cap_session(&id, remaining).await {
                    warn!(%error, "could not cap a session's TTL");
                }
            });
        }
        let renewal = self
            .renewal_due(id)
            .then(|| (self.exchanges.clone(), self.lease()));
        let identity = Identity {
            user_id: Some(record.user_id),
            client_id: None,
            claims: record.claims,
            credential: Some(record.credential),
        };
        Ok(Caller::from_session(
            identity,
            SessionUse::new(id.to_owned(), renewal),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_ids_reach_the_store() {
        let id = uuid::Uuid::new_v4().simple().to_string();
        assert!(Sessions::well_formed(&id));
        assert!(!Sessions::well_formed(&id.to_uppercase()));
        assert!(!Sessions::well_formed("abc"));
        assert!(!Sessions::well_formed(&format!("{id}0")));
        assert!(!Sessions::well_formed("zz345678901234567890123456789012"));
    }

    #[test]
    fn leases_are_renewed_once_per_step_and_outlast_the_session() {
        let (client, _source) = porter_broker::local::channel(Default::default());
        let sessions = Sessions::new(
            Arc::new(porter_store::memory::MemoryStore::default()),
            Arc::new(client),
            Duration::from_secs(3600),
        );
        assert_eq!(sessions.lease(), Duration::from_secs(4500));
        assert!(sessions.renewal_due("a"));
        assert!(!sessions.renewal_due("a"), "renewed a moment ago");
        assert!(sessions.renewal_due("b"), "each session has its own step");
    }

    #[test]
    fn the_renewal_table_is_swept_at_most_once_per_step() {
        let (client, _source) = porter_broker::local::channel(Default::default());
        let sessions = Sessions::new(
            Arc::new(porter_store::memory::MemoryStore::default()),
            Arc::new(client),
            Duration::from_secs(400),
        );
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let len = || sessions.renewed.lock().unwrap().len();
        for i in 0..RENEWED_SWEEP_AT {
            assert!(sessions.renewal_due_at(&format!("a{i}"), at(0)));
        }
        // 90 s later (step = 100 s) nothing is due for a sweep yet: all of it stays.
        for i in 0..RENEWED_SWEEP_AT {
            sessions.renewal_due_at(&format!("b{i}"), at(90));
        }
        assert_eq!(len(), 2 * RENEWED_SWEEP_AT);
        // A step after the last sweep: the a's (100 s old) go, the b's (10 s old) stay.
        sessions.renewal_due_at("x", at(100));
        assert_eq!(len(), RENEWED_SWEEP_AT + 1);
        // At 195 s the b's are stale, but the last sweep was 95 s ago: no sweep, no walk.
        sessions.renewal_due_at("y", at(195));
        assert_eq!(len(), RENEWED_SWEEP_AT + 2);
        // At 200 s a sweep is due again: only y (5 s old) and the new z stay.
        sessions.renewal_due_at("z", at(200));
        assert_eq!(len(), 2);
    }

    #[tokio::test]
    async fn sessions_round_trip_through_the_store() {
        let (client, _source) = porter_broker::local::channel(Default::default());
        let sessions = Sessions::new(
            Arc::new(porter_store::memory::MemoryStore::default()),
            Arc::new(client),
            Duration::from_secs(60),
        );
        let mut claims = Map::new();
        claims.insert("team".into(), Value::from("blue"));
        claims.insert("exp".into(), Value::from(now_secs() + 600));
        let credential = Credential {
            token_sha256: "ab".repeat(32),
            jti: Some("j".into()),
        };
        let id = sessions
            .open("42".into(), claims, credential.clone())
            .await
            .unwrap();
        let caller = sessions.resume(&id).await.unwrap();
        assert_eq!(caller.identity.user_id.as_deref(), Some("42"));
        assert_eq!(caller.identity.claims["team"], "blue");
        assert_eq!(caller.identity.credential, Some(credential));
        assert!(
            caller.session_use().is_some(),
            "the use is owned by its caller"
        );
        let other = uuid::Uuid::new_v4().simple().to_string();
        assert_eq!(
            sessions.resume(&other).await.unwrap_err().code(),
            "invalid_session"
        );
    }

    #[tokio::test]
    async fn a_session_is_in_its_users_index_while_it_lives() {
        let store = Arc::new(porter_store::memory::MemoryStore::default());
        let sessions = memory_sessions(store.clone());
        let id = sessions
            .open(
                "7".into(),
                claims_until(now_secs() + 600),
                Credential::default(),
            )
            .await
            .unwrap();
        assert_eq!(store.live_sessions("7").await.unwrap(), vec![id.clone()]);
        assert!(store.live_sessions("8").await.unwrap().is_empty());
        // It ends (deleted, as a revocation does): no longer listed.
        store.forget_session(&id).await.unwrap();
        assert!(store.live_sessions("7").await.unwrap().is_empty());
    }

    fn memory_sessions(store: Arc<porter_store::memory::MemoryStore>) -> Sessions {
        let (client, _source) = porter_broker::local::channel(Default::default());
        Sessions::new(store, Arc::new(client), Duration::from_secs(3600))
            .with_leeway(Duration::from_secs(5))
    }

    fn claims_until(exp: i64) -> Map<String, Value> {
        let mut claims = Map::new();
        claims.insert("exp".into(), Value::from(exp));
        claims
    }

    #[tokio::test]
    async fn a_session_ends_when_its_token_does() {
        let store = Arc::new(porter_store::memory::MemoryStore::default());
        let sessions = memory_sessions(store.clone());
        // A session stored while its token was good, read after the token's exp + leeway
        // (the clock moved on; the sliding TTL alone would keep it forever).
        let id = uuid::Uuid::new_v4().simple().to_string();
        let store_with = |claims| {
            let record = SessionRecord {
                user_id: "7".into(),
                claims,
                credential: Credential::default(),
            };
            let (store, id) = (store.clone(), id.clone());
            async move {
                let data = serde_json::to_string(&record).unwrap();
                store
                    .create_session(&id, &data, Duration::from_secs(3600))
                    .await
                    .unwrap();
            }
        };
        store_with(claims_until(now_secs() - 6)).await;
        assert_eq!(
            sessions.resume(&id).await.unwrap_err().code(),
            "invalid_session"
        );
        // …and it is deleted, not just refused.
        assert!(
            store
                .touch_session(&id, Duration::from_secs(1))
                .await
                .unwrap()
                .is_none()
        );
        // Within the leeway it is still good, as the token itself would be.
        store_with(claims_until(now_secs() - 2)).await;
        assert!(sessions.resume(&id).await.is_ok());
        // A record without `exp` (tokens are verified with `exp` required) is refused.
        store_with(Map::new()).await;
        assert!(sessions.resume(&id).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_key_expires_with_its_token() {
        let store = Arc::new(porter_store::memory::MemoryStore::default());
        let sessions = memory_sessions(store.clone());
        // The token ends in 30 s (+5 s leeway); the sliding TTL is an hour.
        let id = sessions
            .open(
                "7".into(),
                claims_until(now_secs() + 30),
                Credential::default(),
            )
            .await
            .unwrap();
        assert!(sessions.resume(&id).await.is_ok());
        // The renewal's cap runs in the background.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        tokio::time::advance(Duration::from_secs(40)).await;
        assert!(
            store
                .touch_session(&id, Duration::from_secs(1))
                .await
                .unwrap()
                .is_none(),
            "the session key outlived its token"
        );
        // An already ended token opens nothing.
        assert_eq!(
            sessions
                .open(
                    "7".into(),
                    claims_until(now_secs() - 60),
                    Credential::default()
                )
                .await,
            Err(IdentityError::TokenExpired)
        );
    }
}
