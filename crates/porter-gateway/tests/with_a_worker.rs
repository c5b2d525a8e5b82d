//! The gateway with a real worker behind it, in process (the local transport, the memory
//! store):
//!
//! - the edges every route shares, on the routes that once lacked them: the `/admin` routes are
//!   rate limited by IP before the admin token is looked at and audit a wrong token, and the
//!   guest endpoint (a scoped-token endpoint of `deploy/policy.example.toml`) audits a bad token
//!   and a refused channel;
//! - the cache: a cached allow stands only for the rule that wrote it, and the admin API's
//!   what-if decisions write nothing.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::{App, test, web};
use porter_core::cache::RuleStamps;
use porter_core::policy::Policy;
use porter_core::signing::{Secret, Signer};
use porter_gateway::admin_guard::AdminGuard;
use porter_gateway::protection::{Protection, ProtectionConfig};
use porter_gateway::scoped_keys::ScopedKeys;
use porter_gateway::{AppState, GatewayConfig};
use porter_identity::{Resolver, Verifier};
use porter_store::memory::MemoryStore;
use porter_store::{CacheLookup, Store};
use porter_worker::registry::Registry;
use porter_worker::{Authorizer, Worker, WorkerConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const POLICY: &str = include_str!("../../../deploy/policy.example.toml");
const GUEST_SECRET: &str = "guest-secret";
const ADMIN_TOKEN: &str = "admin-token";
const PEER: &str = "203.0.113.9:40000";
const JWT_SECRET: &[u8] = b"jwt-secret";
const MASTER_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// The gateway with a worker of its own; both stop with `stop`.
fn gateway(protection: ProtectionConfig, stop: &CancellationToken) -> web::Data<AppState> {
    gateway_with(POLICY, Arc::new(MemoryStore::default()), protection, stop)
}

/// The gateway of `policy` over `store`, with a worker of its own.
fn gateway_with(
    policy: &str,
    store: Arc<MemoryStore>,
    protection: ProtectionConfig,
    stop: &CancellationToken,
) -> web::Data<AppState> {
    let policy = Arc::new(Policy::from_toml(policy).expect("the policy parses"));
    let (client, source) = porter_broker::local::channel(stop.clone());
    let authorizer = Authorizer::new(policy.clone(), store.clone(), Registry::builtin());
    let worker = Worker::new(authorizer, WorkerConfig { concurrency: 8 });
    actix_web::rt::spawn(async move { worker.run(source).await });
    web::Data::new(AppState {
        signer: Signer::new("100000", "key", &Secret::new("secret"), Some(MASTER_KEY)).unwrap(),
        scoped: ScopedKeys::new(&policy, |name| {
            (name == "PORTER_GUEST_TOKEN_SECRET").then(|| GUEST_SECRET.to_owned())
        }),
        stamps: RuleStamps::of(&policy),
        policy,
        tasks: Arc::new(client),
        store,
        identity: Resolver::new(Verifier::hs256(Some(JWT_SECRET))),
        config: GatewayConfig::default(),
        metrics: Default::default(),
        admin: AdminGuard::new(Some(ADMIN_TOKEN)),
        protection: Protection::new(protection),
    })
}

macro_rules! app {
    ($state:expr) => {{
        let state = $state;
        let policy = state.policy.clone();
        test::init_service(
            App::new()
                .app_data(state)
                .configure(move |cfg| porter_gateway::configure(cfg, &policy)),
        )
        .await
    }};
}

fn status(response: &ServiceResponse<impl MessageBody>) -> u16 {
    response.status().as_u16()
}

/// The `/metrics` page of an app.
macro_rules! metrics {
    ($app:expr) => {{
        let request = test::TestRequest::get().uri("/metrics").to_request();
        let response = test::call_service($app, request).await;
        String::from_utf8(test::read_body(response).await.to_vec()).unwrap()
    }};
}

/// Every admin route, as a request with the wrong admin token.
fn admin_requests() -> Vec<test::TestRequest> {
    let channel = "/admin/channels/private-stream@42";
    vec![
        test::TestRequest::put().uri(&format!("{channel}/members/7")),
        test::TestRequest::delete().uri(&format!("{channel}/members/7")),
        test::TestRequest::put()
            .uri(&format!("{channel}/events/stream.online"))
            .set_json(json!({"online": true})),
        test::TestRequest::delete().uri(&format!("{channel}/events/stream.online")),
        test::TestRequest::delete().uri(&format!("{channel}/events")),
        test::TestRequest::get().uri("/admin/decision?channel=private-stream@42"),
        test::TestRequest::post()
            .uri("/admin/decision")
            .set_json(json!({"channel": "private-stream@42"})),
        test::TestRequest::post()
            .uri("/admin/tokens/revoke")
            .set_json(json!({"jti": "x"})),
        test::TestRequest::get().uri("/admin/users/7/info"),
        test::TestRequest::put()
            .uri("/admin/users/7/info")
            .set_json(json!({"name": "Ann"})),
        test::TestRequest::delete().uri("/admin/users/7/info"),
        test::TestRequest::get().uri("/admin/users/7/watchlist"),
        test::TestRequest::put()
            .uri("/admin/users/7/watchlist")
            .set_json(json!(["8"])),
        test::TestRequest::delete().uri("/admin/users/7/watchlist"),
    ]
}

#[actix_web::test]
async fn every_admin_route_charges_the_ip_before_the_admin_token() {
    captured_logs();
    for (number, _) in admin_requests().iter().enumerate() {
        let stop = CancellationToken::new();
        let app = app!(gateway(
            ProtectionConfig {
                rate_ip: Some("2/m".parse().unwrap()),
                ..ProtectionConfig::default()
            },
            &stop,
        ));
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let request = admin_requests()
                .swap_remove(number)
                .peer_addr(PEER.parse().unwrap())
                .insert_header(("Authorization", "Bearer wrong"))
                .to_request();
            statuses.push(status(&test::call_service(&app, request).await));
        }
        // Guessing admin tokens costs the guesser's IP budget, on every admin route.
        assert_eq!(statuses, [401, 401, 429], "admin route #{number}");
        stop.cancel();
    }
}

#[actix_web::test]
async fn a_wrong_admin_token_is_audited_on_every_admin_route() {
    captured_logs();
    let stop = CancellationToken::new();
    let app = app!(gateway(ProtectionConfig::default(), &stop));
    let routes = admin_requests().len();
    for request in admin_requests() {
        let request = request
            .peer_addr(PEER.parse().unwrap())
            .insert_header(("Authorization", "Bearer wrong"))
            .to_request();
        assert_eq!(status(&test::call_service(&app, request).await), 401);
    }
    let metrics = metrics!(&app);
    assert!(
        metrics.contains(&format!(
            "porter_auth_failures_total{{reason=\"admin_unauthorized\"}} {routes}"
        )),
        "{metrics}"
    );
    stop.cancel();
}

/// A `MakeWriter` for tracing that keeps every line.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log lines of this test binary. One global subscriber, installed before any test logs:
/// tracing caches per call site whether anyone listens, so a subscriber set for one thread
/// misses lines whose call site another thread reached first.
fn captured_logs() -> &'static Lines {
    static LINES: OnceLock<Lines> = OnceLock::new();
    LINES.get_or_init(|| {
        let lines = Lines::default();
        let writer = lines.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        lines
    })
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

fn guest_token(hotel: &str, booking: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"hotel": hotel, "booking_id": booking, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(GUEST_SECRET.as_bytes()),
    )
    .unwrap()
}

fn guest_auth(token: &str, channel: &str) -> test::TestRequest {
    test::TestRequest::post()
        .uri(&format!(
            "/api/guest/hotel/grand/chat/pusher/auth?token={token}"
        ))
        .peer_addr(PEER.parse().unwrap())
        .set_form([("socket_id", "123.456"), ("channel_name", channel)])
}

#[actix_web::test]
async fn the_guest_endpoint_audits_bad_tokens_and_refusals_and_signs_through_a_worker() {
    let lines = captured_logs();
    let stop = CancellationToken::new();
    let app = app!(gateway(ProtectionConfig::default(), &stop));
    let channel = "private-hotel-grand-guest-chat-booking-B1";

    // A forged token: the endpoint's words, and a failed authentication on record.
    let forged = guest_token("grand", "B1").replace('.', ".x");
    let response = test::call_service(&app, guest_auth(&forged, channel).to_request()).await;
    assert_eq!(status(&response), 403);
    let body: Value = test::read_body_json(response).await;
    assert_eq!(body["message"], "Invalid token or booking not found");

    // Another booking's token: refused by the worker's claims check, and audited.
    let response = test::call_service(
        &app,
        guest_auth(&guest_token("grand", "B2"), channel).to_request(),
    )
    .await;
    assert_eq!(status(&response), 403);
    let body: Value = test::read_body_json(response).await;
    assert_eq!(body["message"], "Channel access denied - booking mismatch");

    // The right token: decided by the worker, signed by the gateway.
    let response = test::call_service(
        &app,
        guest_auth(&guest_token("grand", "B1"), channel).to_request(),
    )
    .await;
    assert_eq!(status(&response), 200);
    let body: Value = test::read_body_json(response).await;
    assert!(body["auth"].as_str().unwrap().starts_with("key:"), "{body}");
    let member: Value = serde_json::from_str(body["channel_data"].as_str().unwrap()).unwrap();
    assert_eq!(member["user_id"], "guest_B1");

    let metrics = metrics!(&app);
    assert!(
        metrics.contains("porter_auth_failures_total{reason=\"invalid_token\"} 1"),
        "{metrics}"
    );
    let log = lines.text();
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("porter::audit"))
        .collect();
    assert!(
        audit
            .iter()
            .any(|l| l.contains("auth_failed") && l.contains("invalid_token")),
        "{log}"
    );
    assert!(
        audit.iter().any(|l| l.contains("refused")
            && l.contains(channel)
            && l.contains("guest-chat")
            && l.contains("claim_mismatch:booking_id")),
        "{log}"
    );
    assert!(!log.contains(&forged), "a token reached the log");
    stop.cancel();
}

/// An encrypted channel decided by a strict rule and its plain twin by a looser one, both
/// cached per user: the twins share a cache key, since cache names drop `-encrypted`.
const TWINS: &str = r#"
[[rule]]
name = "strict"
pattern = "private-encrypted-{feature}@{object_id}"
allow = "owner"
cache = { scope = "user", ttl = 60 }

[[rule]]
name = "loose"
pattern = "private-{feature}@{object_id}"
allow = "authenticated"
cache = { scope = "user", ttl = 60 }
"#;

fn bearer(user: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
    )
    .unwrap();
    format!("Bearer {token}")
}

#[actix_web::test]
async fn a_cached_allow_of_one_rule_never_opens_a_channel_of_another() {
    captured_logs();
    let stop = CancellationToken::new();
    let app = app!(gateway_with(
        TWINS,
        Arc::new(MemoryStore::default()),
        ProtectionConfig::default(),
        &stop
    ));
    let auth = |channel: &str| {
        test::TestRequest::post()
            .uri("/pusher/auth")
            .insert_header(("Authorization", bearer("8")))
            .set_form([("socket_id", "123.456"), ("channel_name", channel)])
            .to_request()
    };
    // User 8 does not own chat 7: the encrypted channel is refused…
    let response = test::call_service(&app, auth("private-encrypted-chat@7")).await;
    assert_eq!(status(&response), 403);
    // …the plain twin is allowed, and cached under the twins' shared key…
    let response = test::call_service(&app, auth("private-chat@7")).await;
    assert_eq!(status(&response), 200);
    // …and the encrypted channel is still refused: the cached allow is the loose rule's.
    let response = test::call_service(&app, auth("private-encrypted-chat@7")).await;
    assert_eq!(status(&response), 403);
    let body: Value = test::read_body_json(response).await;
    assert!(body.get("shared_secret").is_none(), "{body}");
    stop.cancel();
}

#[actix_web::test]
async fn admin_decisions_are_dry_runs_that_cache_nothing() {
    captured_logs();
    let stop = CancellationToken::new();
    let store = Arc::new(MemoryStore::default());
    let app = app!(gateway_with(
        TWINS,
        store.clone(),
        ProtectionConfig::default(),
        &stop
    ));
    for request in [
        test::TestRequest::get().uri("/admin/decision?channel=private-encrypted-chat@7&user_id=7"),
        test::TestRequest::post()
            .uri("/admin/decision")
            .set_json(json!({
                "channel": "private-chat@7", "user_id": "7", "claims": {"role": "admin"}
            })),
    ] {
        let request = request
            .insert_header(("Authorization", format!("Bearer {ADMIN_TOKEN}")))
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(status(&response), 200);
        let body: Value = test::read_body_json(response).await;
        assert_eq!(body["allowed"], true, "{body}");
    }
    // The worker decided, and wrote nothing a real request of user 7 would be served from.
    let looked = [CacheLookup {
        channel: "private-chat@7",
        scope: "user:7",
    }];
    let found = store.lookup(&looked, &[]).await.unwrap();
    assert_eq!(found.cached, vec![None]);
    stop.cancel();
}
