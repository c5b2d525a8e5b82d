//! The revocation check shares the batch's one store round trip with the cache look-up (token
//! revocation keeps the batch endpoint's "one round trip per batch"). A counting store records
//! every call the batch makes; the transport is the in-process one, with no worker behind it, so a
//! request that reached the fan-out would time out instead of answering.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use porter_core::cache::{CachedDecision, RuleStamps};
use porter_core::policy::Policy;
use porter_core::signing::{Secret, Signer};
use porter_core::wire::AuthData;
use porter_gateway::authorize::Outcome;
use porter_gateway::protection::{Protection, ProtectionConfig};
use porter_gateway::{AppState, GatewayConfig};
use porter_identity::{Caller, Credential, Identity, Resolver, Verifier};
use porter_store::memory::MemoryStore;
use porter_store::observed::{Observed, Observer};
use porter_store::{Revocation, Store, StoreError};

/// Counts the store calls that reach the memory store.
#[derive(Default)]
struct Calls {
    calls: AtomicUsize,
    lookups: AtomicUsize,
}

impl Observer for Calls {
    fn before(&self, call: &'static str) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if call == "lookup" {
            self.lookups.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

type Counting = Observed<MemoryStore, Calls>;

fn counting() -> Arc<Counting> {
    Arc::new(Observed::new(MemoryStore::default(), Calls::default()))
}

fn state(store: Arc<Counting>) -> AppState {
    let (client, _source) = porter_broker::local::channel(Default::default());
    AppState {
        signer: Signer::new("100000", "key", &Secret::new("secret"), None).unwrap(),
        policy: Arc::new(Policy::default()),
        stamps: RuleStamps::of(&Policy::default()),
        tasks: Arc::new(client),
        store,
        identity: Resolver::new(Verifier::hs256(Some(b"s"))),
        config: GatewayConfig::default(),
        metrics: Default::default(),
        admin: Default::default(),
        protection: Protection::new(ProtectionConfig::default()),
        scoped: Default::default(),
    }
}

/// The cache entry a worker writes for an allow of `channel` under the default policy.
fn entry_of(channel: &str) -> String {
    let policy = Policy::default();
    let rule = policy.match_name(channel).unwrap().rule;
    let stamps = RuleStamps::of(&policy);
    CachedDecision::encode(
        &rule.name,
        stamps.get(&rule.name).unwrap(),
        &AuthData::default(),
    )
    .unwrap()
}

fn caller() -> Caller {
    Caller::from_token(Identity {
        user_id: Some("7".into()),
        credential: Some(Credential {
            token_sha256: "cd".repeat(32),
            jti: Some("jti-7".into()),
        }),
        ..Identity::default()
    })
}

#[tokio::test]
async fn a_cache_hit_and_the_revocation_check_take_one_store_call() {
    let store = counting();
    store
        .inner
        .put_cached(
            "private-stream@42",
            "ANNON",
            &entry_of("private-stream@42"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let state = state(store.clone());
    let channels = [
        "private-stream@42".to_owned(),
        "private-stream@42".to_owned(),
    ];
    let results = state
        .authorizer()
        .batch(&caller(), "1.2", &channels)
        .await
        .unwrap();
    assert!(
        matches!(results[0].1, Outcome::Signed(_)),
        "served from the cache: {results:?}"
    );
    assert_eq!(store.observer.calls.load(Ordering::SeqCst), 1);
    assert_eq!(store.observer.lookups.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_revoked_caller_is_refused_in_that_same_call() {
    let store = counting();
    store
        .inner
        .revoke(Revocation::Jti("jti-7"), Duration::from_secs(60))
        .await
        .unwrap();
    let state = state(store.clone());
    let error = state
        .authorizer()
        .batch(&caller(), "1.2", &["private-stream@42".to_owned()])
        .await
        .unwrap_err();
    assert_eq!((error.status.as_u16(), error.code), (401, "token_revoked"));
    assert_eq!(store.observer.calls.load(Ordering::SeqCst), 1);
    // The same holds when nothing in the batch is cacheable: one call, for the revocation.
    let error = state
        .authorizer()
        .batch(&caller(), "1.2", &["presence-chat@1".to_owned()])
        .await
        .unwrap_err();
    assert_eq!(error.code, "token_revoked");
    assert_eq!(store.observer.lookups.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn anonymous_callers_without_cacheable_channels_cost_no_store_call() {
    let store = counting();
    let state = state(store.clone());
    let results = state
        .authorizer()
        .batch(&Caller::anonymous(None), "1.2", &["public-x".to_owned()])
        .await
        .unwrap();
    assert!(!matches!(results[0].1, Outcome::Signed(_)));
    assert_eq!(store.observer.calls.load(Ordering::SeqCst), 0);
}
