//! The revocation check shares the batch's one store round trip with the cache look-up
//! (seed 004 with seed 000's "one round trip per batch"). A counting store records every
//! call the batch makes; the transport is the in-process one, with no worker behind it, so a
//! request that reached the fan-out would time out instead of answering.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use porter_core::policy::Policy;
use porter_core::signing::{Secret, Signer};
use porter_gateway::identity::{Credential, Identity, Verifier};
use porter_gateway::protection::{Protection, ProtectionConfig};
use porter_gateway::{AppState, GatewayConfig, batch};
use porter_store::memory::MemoryStore;
use porter_store::{
    CacheLookup, Lookup, PresenceEvent, RateCheck, RateDecision, Revocation, Store, StoreError,
};

/// A memory store that counts the calls that reach it.
#[derive(Default)]
struct Counting {
    inner: MemoryStore,
    calls: AtomicUsize,
    lookups: AtomicUsize,
}

impl Counting {
    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Store for Counting {
    async fn cached(&self, lookups: &[CacheLookup<'_>]) -> Result<Vec<Option<String>>, StoreError> {
        self.count();
        self.inner.cached(lookups).await
    }
    async fn put_cached(
        &self,
        channel: &str,
        scope: &str,
        data: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.count();
        self.inner.put_cached(channel, scope, data, ttl).await
    }
    async fn drop_cached(&self, channel: &str) -> Result<(), StoreError> {
        self.count();
        self.inner.drop_cached(channel).await
    }
    async fn retained_events(&self, channel: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.count();
        self.inner.retained_events(channel).await
    }
    async fn set_retained_event(
        &self,
        channel: &str,
        event: &str,
        data: &str,
    ) -> Result<(), StoreError> {
        self.count();
        self.inner.set_retained_event(channel, event, data).await
    }
    async fn clear_retained_events(
        &self,
        channel: &str,
        event: Option<&str>,
    ) -> Result<(), StoreError> {
        self.count();
        self.inner.clear_retained_events(channel, event).await
    }
    async fn is_member(&self, channel: &str, user_id: &str) -> Result<bool, StoreError> {
        self.count();
        self.inner.is_member(channel, user_id).await
    }
    async fn add_member(&self, channel: &str, user_id: &str) -> Result<(), StoreError> {
        self.count();
        self.inner.add_member(channel, user_id).await
    }
    async fn remove_member(&self, channel: &str, user_id: &str) -> Result<(), StoreError> {
        self.count();
        self.inner.remove_member(channel, user_id).await
    }
    async fn user_info(&self, user_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.count();
        self.inner.user_info(user_id).await
    }
    async fn set_user_info(
        &self,
        user_id: &str,
        fields: &[(String, String)],
    ) -> Result<(), StoreError> {
        self.count();
        self.inner.set_user_info(user_id, fields).await
    }
    async fn is_online(&self, user_id: &str) -> Result<bool, StoreError> {
        self.count();
        self.inner.is_online(user_id).await
    }
    async fn set_online(&self, user_id: &str, ttl: Duration) -> Result<(), StoreError> {
        self.count();
        self.inner.set_online(user_id, ttl).await
    }
    async fn lookup(
        &self,
        cache: &[CacheLookup<'_>],
        revocations: &[Revocation<'_>],
    ) -> Result<Lookup, StoreError> {
        self.count();
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.lookup(cache, revocations).await
    }
    async fn revoke(&self, revocation: Revocation<'_>, ttl: Duration) -> Result<(), StoreError> {
        self.count();
        self.inner.revoke(revocation, ttl).await
    }
    async fn create_session(
        &self,
        session_id: &str,
        data: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.count();
        self.inner.create_session(session_id, data, ttl).await
    }
    async fn touch_session(
        &self,
        session_id: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        self.count();
        self.inner.touch_session(session_id, ttl).await
    }
    async fn cap_session(&self, session_id: &str, ttl: Duration) -> Result<(), StoreError> {
        self.count();
        self.inner.cap_session(session_id, ttl).await
    }
    async fn forget_session(&self, session_id: &str) -> Result<(), StoreError> {
        self.count();
        self.inner.forget_session(session_id).await
    }
    async fn update_presence(
        &self,
        user_id: &str,
        channel: &str,
        event: PresenceEvent,
        time_ms: u64,
    ) -> Result<bool, StoreError> {
        self.count();
        self.inner
            .update_presence(user_id, channel, event, time_ms)
            .await
    }
    async fn rate_limit(&self, checks: &[RateCheck<'_>]) -> Result<RateDecision, StoreError> {
        self.count();
        self.inner.rate_limit(checks).await
    }
    async fn first_sighting(&self, id: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.count();
        self.inner.first_sighting(id, ttl).await
    }
    async fn sighted(&self, id: &str) -> Result<bool, StoreError> {
        self.count();
        self.inner.sighted(id).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

fn state(store: Arc<Counting>) -> AppState {
    let (client, _source) = porter_broker::local::channel(Default::default());
    AppState {
        signer: Signer::new("100000", "key", &Secret::new("secret"), None).unwrap(),
        policy: Arc::new(Policy::default()),
        tasks: Arc::new(client),
        store,
        identity: Verifier::hs256(Some(b"s")),
        config: GatewayConfig::default(),
        metrics: Default::default(),
        admin: Default::default(),
        protection: Protection::new(ProtectionConfig::default()),
        scoped: Default::default(),
    }
}

fn caller() -> Identity {
    Identity {
        user_id: Some("7".into()),
        credential: Some(Credential {
            token_sha256: "cd".repeat(32),
            jti: Some("jti-7".into()),
        }),
        ..Identity::default()
    }
}

#[tokio::test]
async fn a_cache_hit_and_the_revocation_check_take_one_store_call() {
    let store = Arc::new(Counting::default());
    store
        .inner
        .put_cached("private-stream@42", "ANNON", "{}", Duration::from_secs(60))
        .await
        .unwrap();
    let state = state(store.clone());
    let channels = [
        "private-stream@42".to_owned(),
        "private-stream@42".to_owned(),
    ];
    let results = batch::authorize(&state, &caller(), "1.2", &channels)
        .await
        .unwrap();
    assert!(results[0].1.is_ok(), "served from the cache: {results:?}");
    assert_eq!(store.calls.load(Ordering::SeqCst), 1);
    assert_eq!(store.lookups.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_revoked_caller_is_refused_in_that_same_call() {
    let store = Arc::new(Counting::default());
    store
        .inner
        .revoke(Revocation::Jti("jti-7"), Duration::from_secs(60))
        .await
        .unwrap();
    let state = state(store.clone());
    let error = batch::authorize(&state, &caller(), "1.2", &["private-stream@42".to_owned()])
        .await
        .unwrap_err();
    assert_eq!((error.status.as_u16(), error.code), (401, "token_revoked"));
    assert_eq!(store.calls.load(Ordering::SeqCst), 1);
    // The same holds when nothing in the batch is cacheable: one call, for the revocation.
    let error = batch::authorize(&state, &caller(), "1.2", &["presence-chat@1".to_owned()])
        .await
        .unwrap_err();
    assert_eq!(error.code, "token_revoked");
    assert_eq!(store.lookups.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn anonymous_callers_without_cacheable_channels_cost_no_store_call() {
    let store = Arc::new(Counting::default());
    let state = state(store.clone());
    let results = batch::authorize(
        &state,
        &Identity::default(),
        "1.2",
        &["public-x".to_owned()],
    )
    .await
    .unwrap();
    assert!(results[0].1.is_err());
    assert_eq!(store.calls.load(Ordering::SeqCst), 0);
}
