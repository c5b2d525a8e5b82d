//! Token revocation: how long a revocation is kept, and the check of a caller
//! against the revocations. The `POST /admin/tokens/revoke` handler itself is the gateway's.
//!
//! A token is stored only as the SHA-256 of its signed part `header.payload`
//! (`{prefix}blacklist:token:{sha256}`; the signature is left out because ES256 signatures
//! are malleable, see [`crate::model::token_sha256`]), a `jti` as
//! `{prefix}blacklist:jti:{jti}`, each with a TTL of the token's remaining lifetime plus the
//! verifier's leeway plus a second: until the token is refused as expired anyway
//! ([`revocation_ttl`]). For a `jti` without `exp` the TTL is the configured revocation TTL
//! (plus the leeway), which must cover the longest token lifetime the issuer hands out.
//! Sessions cannot outlive a revocation: a session ends with its token's `exp`, and the first
//! use that finds its token revoked deletes it ([`Caller::settle`]).
//!
//! Checking happens in the gateway's batch, in the same store round trip as the cache
//! look-up, whose outcome goes to [`Caller::settle`]; endpoints without a batch call
//! [`Caller::ensure_not_revoked`]. A revoked token is refused with
//! [`IdentityError::TokenRevoked`]. When the store cannot answer, a request that carries a
//! token is refused ([`IdentityError::StoreUnavailable`]) rather than served unchecked.

use std::time::Duration;

use base64::Engine;
use porter_store::Store;
use serde_json::{Map, Value};
use tracing::warn;

use crate::caller::Caller;
use crate::error::IdentityError;

impl Caller {
    /// Acts on the outcome of a revocation check. A revoked token's session is deleted, so
    /// that it stays refused once the revocation has expired; only a session that passed may
    /// have its exchange lease renewed.
    pub async fn settle(&self, store: &dyn Store, revoked: bool) -> Result<(), IdentityError> {
        if revoked {
            if let Some(session) = self.session_use() {
                session.revoked(store).await;
            }
            return Err(IdentityError::TokenRevoked);
        }
        if let Some(session) = self.session_use() {
            session.passed();
        }
        Ok(())
    }

    /// Checks the caller's token against the revocations, alone (no cache look-up to share
    /// with). A caller without a token passes without asking the store.
    pub async fn ensure_not_revoked(&self, store: &dyn Store) -> Result<(), IdentityError> {
        let revocations = self.revocations();
        if revocations.is_empty() {
            return Ok(());
        }
        match store.lookup(&[], &revocations).await {
            Ok(found) => self.settle(store, found.revoked).await,
            Err(error) => {
                warn!(%error, "could not check revocations");
                Err(IdentityError::StoreUnavailable)
            }
        }
    }
}

/// The claims of a JWT, read WITHOUT verifying it: only to learn how long to keep its
/// revocation. The caller is an administrator; nothing here grants access.
pub fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// How long to keep a revocation: until the token is refused as expired anyway, i.e. its
/// `exp` plus the leeway, plus a second for the rounding of both clocks. `None` when the
/// token has already ended. Without an `exp`, the configured fallback (plus the leeway).
pub fn revocation_ttl(
    exp: Option<i64>,
    now: i64,
    leeway: Duration,
    fallback: Duration,
) -> Option<Duration> {
    let Some(exp) = exp else {
        return Some(fallback.saturating_add(leeway));
    };
    let leeway_secs = leeway.as_secs().min(i64::MAX as u64) as i64;
    let end = exp.saturating_add(leeway_secs);
    (end > now).then(|| Duration::from_secs(end.saturating_sub(now) as u64 + 1))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use porter_broker::{BrokerError, Outgoing, Pending, TaskClient};
    use porter_store::memory::MemoryStore;
    use porter_store::observed::{Observed, Observer};
    use porter_store::{Revocation, StoreError};
    use serde_json::json;
    use tokio::sync::mpsc;

    use super::*;
    use crate::clock::now_secs;
    use crate::model::{Credential, Identity};
    use crate::sessions::Sessions;

    #[test]
    fn revocations_last_until_the_token_is_refused_as_expired() {
        let leeway = Duration::from_secs(30);
        let fallback = Duration::from_secs(3600);
        // exp + leeway + 1 s: a token still inside its leeway stays revoked.
        assert_eq!(
            revocation_ttl(Some(1_100), 1_000, leeway, fallback),
            Some(Duration::from_secs(131))
        );
        // Past exp but within the leeway: the token is still accepted, so still revoked.
        assert_eq!(
            revocation_ttl(Some(990), 1_000, leeway, fallback),
            Some(Duration::from_secs(21))
        );
        assert_eq!(revocation_ttl(Some(960), 1_000, leeway, fallback), None);
        assert_eq!(
            revocation_ttl(None, 1_000, leeway, fallback),
            Some(Duration::from_secs(3630))
        );
        // A bogus far-future exp does not overflow (the store clamps the TTL).
        assert!(revocation_ttl(Some(i64::MAX), 1_000, leeway, fallback).is_some());
    }

    #[test]
    fn unverified_claims_read_the_payload_only() {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub": "1", "exp": 42}),
            &jsonwebtoken::EncodingKey::from_secret(b"x"),
        )
        .unwrap();
        assert_eq!(unverified_claims(&token).unwrap()["exp"], 42);
        assert!(unverified_claims("not-a-token").is_none());
        assert!(unverified_claims("a.b.c.d").is_none());
        assert!(unverified_claims("a.!!!.c").is_none());
    }

    /// The local transport, telling the test of every lease renewal.
    struct Renewals {
        inner: porter_broker::local::LocalClient,
        renewed: mpsc::UnboundedSender<Duration>,
    }

    #[async_trait]
    impl TaskClient for Renewals {
        async fn publish(&self, tasks: &[Outgoing<'_>]) -> Result<(), BrokerError> {
            self.inner.publish(tasks).await
        }
        fn pending(&self) -> &Pending {
            self.inner.pending()
        }
        fn is_ready(&self) -> bool {
            self.inner.is_ready()
        }
        async fn renew_session(&self, _session_id: &str, ttl: Duration) -> Result<(), BrokerError> {
            let _ = self.renewed.send(ttl);
            Ok(())
        }
    }

    /// Sessions over `store`, with a session opened for a token named `token_sha256`.
    async fn a_session(
        store: Arc<MemoryStore>,
    ) -> (Sessions, String, mpsc::UnboundedReceiver<Duration>) {
        let (client, _source) = porter_broker::local::channel(Default::default());
        let (renewed, renewals) = mpsc::unbounded_channel();
        let exchanges = Arc::new(Renewals {
            inner: client,
            renewed,
        });
        let sessions = Sessions::new(store, exchanges, Duration::from_secs(60));
        let mut claims = Map::new();
        claims.insert("exp".into(), Value::from(now_secs() + 600));
        let credential = Credential {
            token_sha256: "cd".repeat(32),
            jti: None,
        };
        let id = sessions.open("7".into(), claims, credential).await.unwrap();
        (sessions, id, renewals)
    }

    #[tokio::test(start_paused = true)]
    async fn a_passed_check_renews_the_lease_and_keeps_the_session() {
        let store = Arc::new(MemoryStore::default());
        let (sessions, id, mut renewals) = a_session(store.clone()).await;
        let caller = sessions.resume(&id).await.unwrap();
        // Nothing is renewed before the check is known.
        tokio::task::yield_now().await;
        assert!(renewals.try_recv().is_err());
        caller.ensure_not_revoked(store.as_ref()).await.unwrap();
        let lease = tokio::time::timeout(Duration::from_secs(5), renewals.recv()).await;
        assert_eq!(lease, Ok(Some(sessions.lease())));
        assert!(sessions.resume(&id).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_revoked_check_deletes_the_session_and_renews_nothing() {
        let store = Arc::new(MemoryStore::default());
        let (sessions, id, mut renewals) = a_session(store.clone()).await;
        let caller = sessions.resume(&id).await.unwrap();
        store
            .revoke(
                Revocation::TokenSha256(&"cd".repeat(32)),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        assert_eq!(
            caller.ensure_not_revoked(store.as_ref()).await,
            Err(IdentityError::TokenRevoked)
        );
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            renewals.try_recv().is_err(),
            "a revoked session's lease was renewed"
        );
        // Deleted, so it stays refused once the revocation expires.
        assert_eq!(
            sessions.resume(&id).await.unwrap_err(),
            IdentityError::InvalidSession
        );
    }

    #[tokio::test]
    async fn settle_refuses_a_revoked_token_without_a_session_too() {
        let store = MemoryStore::default();
        let caller = Caller::from_token(Identity {
            user_id: Some("7".into()),
            credential: Some(Credential::default()),
            ..Identity::default()
        });
        assert_eq!(
            caller.settle(&store, true).await,
            Err(IdentityError::TokenRevoked)
        );
        assert_eq!(caller.settle(&store, false).await, Ok(()));
    }

    /// Fails every call to the store.
    struct Down;

    impl Observer for Down {
        fn before(&self, _call: &'static str) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("down for the test".into()))
        }
    }

    #[tokio::test]
    async fn an_unanswered_check_is_refused_and_a_tokenless_caller_asks_nothing() {
        let store = Observed::new(MemoryStore::default(), Down);
        let caller = Caller::from_token(Identity {
            user_id: Some("7".into()),
            credential: Some(Credential::default()),
            ..Identity::default()
        });
        assert_eq!(
            caller.ensure_not_revoked(&store).await,
            Err(IdentityError::StoreUnavailable)
        );
        // No credential, nothing to check: the store is not asked (it would fail).
        assert_eq!(
            Caller::anonymous(None).ensure_not_revoked(&store).await,
            Ok(())
        );
    }
}
