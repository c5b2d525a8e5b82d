//! Token revocation: how long a revocation is kept, and the check of a caller
//! against the revocations. The `POST /admin/tokens/revoke` handler itself is the gateway's.
//!
//! A token is stored only as the SHA-256 of its signed part `header.payload`
//! (`{prefix}blacklist:token:{sha256}`; the signature is left out because ES256 signatures
//! are malleable, see [`crate::model::token_sha256`]), a `jti` as
//! `{prefix}blacklist:jti:{jti}`, each with a TTL of the token's remaining lifetime plus the
//! verifier's leeway plus a second: until the token is refused as expired anyway
//! ([`revocation_ttl`]). `exp` is read as any JSON number ([`unverified_expiry`]): a fraction
//! rounds up, and one too far out to count is kept without expiry, never cut to a default. For a `jti` without `exp` the TTL is the configured revocation TTL
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
use thiserror::Error;
use tracing::warn;

use crate::caller::Caller;
use crate::error::IdentityError;
use crate::time_claims::{self, NumericDate, TimeClaimError};

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

/// Why a token's expiry cannot be read for its revocation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnreadableExpiry {
    #[error("the token is not a JWT")]
    NotAJwt,
    /// Such a token is refused by every verifier, but its revocation is not guessed at.
    #[error(transparent)]
    NotANumber(#[from] TimeClaimError),
}

/// The `exp` of a JWT, read WITHOUT verifying it (see [`unverified_claims`]), as the
/// [`revocation_ttl`] of its revocation needs it: any JSON number, `None` when absent.
pub fn unverified_expiry(token: &str) -> Result<Option<NumericDate>, UnreadableExpiry> {
    let claims = unverified_claims(token).ok_or(UnreadableExpiry::NotAJwt)?;
    Ok(time_claims::claim(&claims, "exp")?)
}

/// How long to keep a revocation: until the token is refused as expired anyway, i.e. the later
/// second of its `exp` plus the leeway, plus a second for the rounding of both clocks. `None`
/// when the token has already ended. Without an `exp`, the configured fallback (plus the
/// leeway). An `exp` past what a TTL can count gives a TTL the store keeps without expiry
/// (`porter_store::revocation_expiry`), so a revocation never lapses before its token.
pub fn revocation_ttl(
    exp: Option<NumericDate>,
    now: i64,
    leeway: Duration,
    fallback: Duration,
) -> Option<Duration> {
    let Some(exp) = exp else {
        return Some(fallback.saturating_add(leeway));
    };
    let leeway_secs = leeway.as_secs().min(i64::MAX as u64) as i64;
    let end = exp.ceil_secs().saturating_add(leeway_secs);
    (end > now).then(|| Duration::from_secs(end.abs_diff(now).saturating_add(1)))
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
        let at = |secs| Some(NumericDate::from_secs(secs));
        // exp + leeway + 1 s: a token still inside its leeway stays revoked.
        assert_eq!(
            revocation_ttl(at(1_100), 1_000, leeway, fallback),
            Some(Duration::from_secs(131))
        );
        // Past exp but within the leeway: the token is still accepted, so still revoked.
        assert_eq!(
            revocation_ttl(at(990), 1_000, leeway, fallback),
            Some(Duration::from_secs(21))
        );
        assert_eq!(revocation_ttl(at(960), 1_000, leeway, fallback), None);
        assert_eq!(
            revocation_ttl(None, 1_000, leeway, fallback),
            Some(Duration::from_secs(3630))
        );
        // Extremes do not overflow.
        assert!(revocation_ttl(at(i64::MAX), i64::MIN, leeway, fallback).is_some());
        assert_eq!(revocation_ttl(at(i64::MIN), 1_000, leeway, fallback), None);
    }

    fn token_with(claims: Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"x"),
        )
        .unwrap()
    }

    const YEAR: u64 = 365 * 24 * 3600;

    /// Revokes `token` at Unix time `now` in the memory store, as `POST /admin/tokens/revoke`
    /// does, and says whether it is still revoked `after` that.
    async fn revoked_after(token: &str, now: i64, leeway: Duration, after: Duration) -> bool {
        let store = MemoryStore::default();
        let exp = unverified_expiry(token).unwrap();
        let ttl = revocation_ttl(exp, now, leeway, Duration::from_secs(24 * 3600)).unwrap();
        let hash = crate::model::token_sha256(token);
        let revocation = Revocation::TokenSha256(&hash);
        store.revoke(revocation, ttl).await.unwrap();
        tokio::time::advance(after).await;
        store.lookup(&[], &[revocation]).await.unwrap().revoked
    }

    #[tokio::test(start_paused = true)]
    async fn a_revocation_covers_exp_plus_leeway_for_every_form_of_exp() {
        let leeway = Duration::from_secs(30);
        let now = 1_767_225_600 - 3 * 24 * 3600;
        // A fractional exp, three days out (past the 24 h default TTL): revoked until
        // exp + leeway, rounded up, and no longer than a second after.
        let fractional = token_with(json!({"sub": "7", "exp": 1_767_225_600.5}));
        let until = Duration::from_millis(3 * 24 * 3600 * 1000 + 500) + leeway;
        assert!(revoked_after(&fractional, now, leeway, until).await);
        assert!(!revoked_after(&fractional, now, leeway, until + Duration::from_secs(2)).await);
        // Ten years out (past the old 366-day clamp).
        let decade = token_with(json!({"sub": "7", "exp": now + 10 * YEAR as i64}));
        let until = Duration::from_secs(10 * YEAR) + leeway;
        assert!(revoked_after(&decade, now, leeway, until).await);
        assert!(!revoked_after(&decade, now, leeway, until + Duration::from_secs(2)).await);
        // Past i64::MAX, as an integer and as a float: kept for good (here, 2000 years).
        for exp in [json!(u64::MAX), json!(1e300)] {
            let token = token_with(json!({"sub": "7", "exp": exp}));
            let after = Duration::from_secs(2000 * YEAR);
            assert!(revoked_after(&token, now, leeway, after).await, "{exp}");
        }
    }

    #[test]
    fn an_exp_that_is_not_a_number_is_not_guessed_at() {
        assert_eq!(
            unverified_expiry(&token_with(json!({"sub": "7", "exp": "next year"}))),
            Err(UnreadableExpiry::NotANumber(TimeClaimError::NotANumber(
                "exp"
            )))
        );
        assert_eq!(
            unverified_expiry("not-a-token"),
            Err(UnreadableExpiry::NotAJwt)
        );
        assert_eq!(
            unverified_expiry(&token_with(json!({"sub": "7"}))),
            Ok(None)
        );
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
