//! A session's life against token revocation, in process: the memory store and a transport that
//! records lease renewals. A session whose token is revoked is deleted by the first use that finds
//! out, and its exchange lease is renewed only by uses that passed the revocation check. Failed
//! `POST /auth` and admin-token checks are counted as failed authentications.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::{App, test, web};
use async_trait::async_trait;
use porter_broker::{BrokerError, Outgoing, Pending, TaskClient};
use porter_core::cache::RuleStamps;
use porter_core::policy::Policy;
use porter_core::signing::{Secret, Signer};
use porter_gateway::admin_guard::AdminGuard;
use porter_gateway::authorize::Outcome;
use porter_gateway::protection::{Protection, ProtectionConfig};
use porter_gateway::{AppState, GatewayConfig};
use porter_identity::{Credential, Resolver, Sessions, Verifier};
use porter_store::memory::MemoryStore;
use porter_store::{Revocation, Store};
use serde_json::{Map, Value, json};

const JWT_SECRET: &[u8] = b"session-lifecycle-secret";

/// The local transport, counting lease renewals.
struct Recording {
    inner: porter_broker::local::LocalClient,
    renewals: AtomicUsize,
}

#[async_trait]
impl TaskClient for Recording {
    async fn publish(&self, tasks: &[Outgoing<'_>]) -> Result<(), BrokerError> {
        self.inner.publish(tasks).await
    }
    fn pending(&self) -> &Pending {
        self.inner.pending()
    }
    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }
    async fn renew_session(&self, _session_id: &str, _ttl: Duration) -> Result<(), BrokerError> {
        self.renewals.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn setup() -> (AppState, Arc<MemoryStore>, Arc<Recording>) {
    let (client, _source) = porter_broker::local::channel(Default::default());
    let recording = Arc::new(Recording {
        inner: client,
        renewals: AtomicUsize::new(0),
    });
    let store = Arc::new(MemoryStore::default());
    let sessions = Sessions::new(store.clone(), recording.clone(), Duration::from_secs(3600));
    let state = AppState {
        signer: Signer::new("100000", "key", &Secret::new("secret"), None).unwrap(),
        policy: Arc::new(Policy::default()),
        stamps: RuleStamps::of(&Policy::default()),
        tasks: recording.clone(),
        store: store.clone(),
        identity: Resolver::new(Verifier::hs256(Some(JWT_SECRET))).with_sessions(sessions),
        config: GatewayConfig::default(),
        metrics: Default::default(),
        admin: AdminGuard::new(Some("admin-secret")),
        protection: Protection::new(ProtectionConfig::default()),
        scoped: Default::default(),
    };
    (state, store, recording)
}

async fn open(state: &AppState, jti: &str) -> String {
    let mut claims = Map::new();
    claims.insert("exp".into(), Value::from(now() + 600));
    let credential = Credential {
        token_sha256: "ef".repeat(32),
        jti: Some(jti.into()),
    };
    state
        .identity
        .sessions()
        .unwrap()
        .open("7".into(), claims, credential)
        .await
        .unwrap()
}

/// Lets spawned tasks (lease renewals) run; a bounded number of yields, no clock.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// A channel name that fails to parse: the batch still checks revocations, and needs no
/// worker to answer.
const NO_WORK: &str = "private-!!";

#[tokio::test]
async fn a_revoked_session_is_deleted_and_its_lease_not_renewed() {
    let (state, store, recording) = setup();
    let sessions = state.identity.sessions().unwrap();
    let id = open(&state, "jti-revoked").await;
    store
        .revoke(Revocation::Jti("jti-revoked"), Duration::from_secs(60))
        .await
        .unwrap();

    // The first use of the session is due a lease renewal; it finds the revocation.
    let identity = sessions.resume(&id).await.unwrap();
    let error = state
        .authorizer()
        .batch(&identity, "1.2", &[NO_WORK.to_owned()])
        .await
        .unwrap_err();
    assert_eq!(error.code, "token_revoked");
    settle().await;
    assert_eq!(
        recording.renewals.load(Ordering::SeqCst),
        0,
        "a revoked session's exchange lease must not be renewed"
    );
    // The session is gone: it stays refused once the revocation key has expired.
    assert!(
        store
            .touch_session(&id, Duration::from_secs(1))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        sessions.resume(&id).await.unwrap_err().code(),
        "invalid_session"
    );
}

#[tokio::test]
async fn a_session_that_passes_its_check_renews_its_lease() {
    let (state, _store, recording) = setup();
    let sessions = state.identity.sessions().unwrap();
    let id = open(&state, "jti-good").await;
    let identity = sessions.resume(&id).await.unwrap();
    let results = state
        .authorizer()
        .batch(&identity, "1.2", &[NO_WORK.to_owned()])
        .await
        .unwrap();
    assert!(!matches!(results[0].1, Outcome::Signed(_)));
    for _ in 0..10 {
        if recording.renewals.load(Ordering::SeqCst) > 0 {
            break;
        }
        settle().await;
    }
    assert_eq!(recording.renewals.load(Ordering::SeqCst), 1);
    // The Debug form of an identity never shows the session id.
    assert!(!format!("{identity:?}").contains(&id));
}

fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
    )
    .unwrap()
}

#[actix_web::test]
async fn failed_session_openings_and_admin_checks_are_counted() {
    let (state, store, _recording) = setup();
    let state = web::Data::new(state);
    let app = test::init_service(
        App::new()
            .app_data(state.clone())
            .configure(|cfg| porter_gateway::configure(cfg, &Policy::default())),
    )
    .await;
    let post = |path: &str, body: Value, auth: Option<&str>| {
        let mut request = test::TestRequest::post().uri(path).set_json(body);
        if let Some(auth) = auth {
            request = request.insert_header(("Authorization", format!("Bearer {auth}")));
        }
        request.to_request()
    };
    let token =
        hs256(&json!({"sub": "7", "email": "a@example.com", "exp": now() + 600, "jti": "j-9"}));

    let cases = [
        (
            json!({"email": "a@example.com", "token": "not-a-jwt"}),
            "unauthorized",
        ),
        (
            json!({"email": "b@example.com", "token": token}),
            "unauthorized",
        ),
    ];
    for (body, code) in cases {
        let response = test::call_service(&app, post("/auth", body, None)).await;
        assert_eq!(response.status(), 401);
        let body: Value = test::read_body_json(response).await;
        assert_eq!(body["error"], code);
    }
    store
        .revoke(Revocation::Jti("j-9"), Duration::from_secs(60))
        .await
        .unwrap();
    let response = test::call_service(
        &app,
        post(
            "/auth",
            json!({"email": "a@example.com", "token": token}),
            None,
        ),
    )
    .await;
    assert_eq!(response.status(), 401);
    let body: Value = test::read_body_json(response).await;
    assert_eq!(body["error"], "token_revoked");

    let response = test::call_service(
        &app,
        post("/admin/tokens/revoke", json!({"jti": "x"}), Some("wrong")),
    )
    .await;
    assert_eq!(response.status(), 401);

    let metrics = state.metrics.render_protection(0, None);
    for reason in [
        "invalid_token",
        "email_mismatch",
        "token_revoked",
        "admin_unauthorized",
    ] {
        assert!(
            metrics.contains(&format!(
                "porter_auth_failures_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason} not counted:\n{metrics}"
        );
    }
}
