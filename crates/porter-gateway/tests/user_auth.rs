//! `POST /pusher/user-auth` in process: the gateway with a real worker behind it over the
//! local transport and the memory store. A sign-in signs `socket_id::user::user_data` with the
//! user's info and watchlist set through the admin API; every refusal path answers a JSON
//! error: no or bad socket id, an anonymous caller, a revoked token, a policy without
//! `[signin]`, a decision that says no, a worker whose policy disagrees, a store that does not
//! answer. Refusals are audited under `[signin]`; the IP is charged before the token.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{App, test, web};
use porter_core::cache::RuleStamps;
use porter_core::policy::Policy;
use porter_core::signing::{Secret, Signer};
use porter_gateway::admin_guard::AdminGuard;
use porter_gateway::protection::{Protection, ProtectionConfig};
use porter_gateway::{AppState, GatewayConfig};
use porter_identity::{Resolver, Sessions, Verifier};
use porter_store::memory::MemoryStore;
use porter_store::observed::{Observed, Observer};
use porter_store::{Revocation, Store, StoreError};
use porter_worker::registry::Registry;
use porter_worker::{Authorizer, Worker, WorkerConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const JWT_SECRET: &[u8] = b"jwt-secret";
const ADMIN_TOKEN: &str = "admin-token";
const SOCKET: &str = "1234.5678";
const RULE: &str = "[[rule]]\nname = \"r\"\npattern = \"private-{x}\"\nallow = \"anyone\"\n";
const SIGNIN: &str =
    "[signin]\nallow = \"authenticated\"\nuser_info = \"store\"\nwatchlist = true\n";

fn signer() -> Signer {
    Signer::new("100000", "app-key", &Secret::new("app-secret"), None).unwrap()
}

/// A gateway of `policy` over `store`, and a worker of `worker_policy` over `worker_store`.
fn gateway(
    policy: &str,
    store: Arc<dyn Store>,
    worker_policy: &str,
    worker_store: Arc<dyn Store>,
    stop: &CancellationToken,
) -> web::Data<AppState> {
    gateway_protected(
        policy,
        store,
        worker_policy,
        worker_store,
        ProtectionConfig::default(),
        stop,
    )
}

/// [`gateway`] with these rate limits.
fn gateway_protected(
    policy: &str,
    store: Arc<dyn Store>,
    worker_policy: &str,
    worker_store: Arc<dyn Store>,
    protection: ProtectionConfig,
    stop: &CancellationToken,
) -> web::Data<AppState> {
    let policy = Arc::new(Policy::from_toml(policy).expect("the gateway's policy parses"));
    let worker_policy = Arc::new(Policy::from_toml(worker_policy).expect("the worker's parses"));
    let (client, source) = porter_broker::local::channel(stop.clone());
    let client = Arc::new(client);
    let worker = Worker::new(
        Authorizer::new(worker_policy, worker_store, Registry::builtin()),
        WorkerConfig { concurrency: 4 },
    );
    actix_web::rt::spawn(async move { worker.run(source).await });
    let sessions = Sessions::new(store.clone(), client.clone(), Duration::from_secs(3600));
    web::Data::new(AppState {
        signer: signer(),
        scoped: Default::default(),
        stamps: RuleStamps::of(&policy),
        policy,
        tasks: client,
        store,
        identity: Resolver::new(Verifier::hs256(Some(JWT_SECRET))).with_sessions(sessions),
        config: GatewayConfig::default(),
        metrics: Default::default(),
        admin: AdminGuard::new(Some(ADMIN_TOKEN)),
        protection: Protection::new(protection),
    })
}

/// The usual set-up: one policy, one store, for gateway and worker.
fn shared(policy: &str, stop: &CancellationToken) -> (web::Data<AppState>, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::default());
    (
        gateway(policy, store.clone(), policy, store.clone(), stop),
        store,
    )
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

/// Sends a request; its status and JSON body.
macro_rules! call {
    ($app:expr, $request:expr) => {{
        let response = test::call_service($app, $request.to_request()).await;
        let status = response.status().as_u16();
        let body = test::read_body(response).await;
        (
            status,
            serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
        )
    }};
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(user: &str, jti: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "email": format!("{user}@example.com"), "exp": now() + 600, "jti": jti}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
    )
    .unwrap()
}

/// What pusher-js sends: a form with the socket id, the app's params, its headers.
fn sign_in(form: &[(&str, &str)], bearer: Option<&str>) -> test::TestRequest {
    let mut request = test::TestRequest::post()
        .uri("/pusher/user-auth")
        .set_form(form);
    if let Some(token) = bearer {
        request = request.insert_header(("Authorization", format!("Bearer {token}")));
    }
    request
}

fn admin(request: test::TestRequest) -> test::TestRequest {
    request.insert_header(("Authorization", format!("Bearer {ADMIN_TOKEN}")))
}

/// Checks a 200 answer the way the realtime server does, and returns its `user_data`.
fn verified(body: &Value) -> Value {
    let user_data = body["user_data"].as_str().expect("user_data is a string");
    let expected = signer().sign_user(SOCKET, user_data);
    assert_eq!(
        body["auth"], expected.auth,
        "the signature covers the returned string"
    );
    serde_json::from_str(user_data).expect("user_data is JSON")
}

#[actix_web::test]
async fn a_user_signs_in_with_the_info_and_watchlist_the_admin_api_set() {
    captured_logs();
    let stop = CancellationToken::new();
    let (state, _) = shared(&format!("{RULE}{SIGNIN}"), &stop);
    let app = app!(state);

    let (status, body) = call!(
        &app,
        admin(test::TestRequest::put().uri("/admin/users/alice/info"))
            .set_json(json!({"name": "Alice", "plan": {"tier": 2}}))
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = call!(
        &app,
        admin(test::TestRequest::put().uri("/admin/users/alice/watchlist"))
            .set_json(json!(["carol", "bob", "bob"]))
    );
    assert_eq!(
        (status, &body["watchlist"]),
        (200, &json!(["bob", "carol"]))
    );
    let (_, info) = call!(
        &app,
        admin(test::TestRequest::get().uri("/admin/users/alice/info"))
    );
    assert_eq!(info["info"], json!({"name": "Alice", "plan": {"tier": 2}}));

    let alice = token("alice", "j-alice");
    let form = [("socket_id", SOCKET), ("app_param", "x")];
    let (status, body) = call!(&app, sign_in(&form, Some(&alice)));
    assert_eq!(status, 200, "{body}");
    let user_data = verified(&body);
    assert_eq!(
        user_data,
        json!({"id": "alice", "user_info": {"name": "Alice", "plan": {"tier": 2}}, "watchlist": ["bob", "carol"]})
    );
    assert!(
        body["user_data"]
            .as_str()
            .unwrap()
            .starts_with(r#"{"id":"alice""#),
        "the id comes first: {body}"
    );

    // A JSON body reads the same.
    let (status, body) = call!(
        &app,
        test::TestRequest::post()
            .uri("/pusher/user-auth")
            .insert_header(("Authorization", format!("Bearer {alice}")))
            .set_json(json!({"socket_id": SOCKET}))
    );
    assert_eq!(status, 200, "{body}");

    // Deleted through the admin API: the next sign-in carries none of it (the token's
    // claims have no `name`), and an empty watchlist is still a watchlist.
    for path in ["/admin/users/alice/info", "/admin/users/alice/watchlist"] {
        let (status, _) = call!(&app, admin(test::TestRequest::delete().uri(path)));
        assert_eq!(status, 200, "{path}");
    }
    let (_, watchlist) = call!(
        &app,
        admin(test::TestRequest::get().uri("/admin/users/alice/watchlist"))
    );
    assert_eq!(watchlist["watchlist"], json!([]));
    let (_, body) = call!(&app, sign_in(&form, Some(&alice)));
    assert_eq!(verified(&body), json!({"id": "alice", "watchlist": []}));
    stop.cancel();
}

#[actix_web::test]
async fn a_session_signs_in_like_its_token() {
    captured_logs();
    let stop = CancellationToken::new();
    let (state, _) = shared(&format!("{RULE}{SIGNIN}"), &stop);
    let app = app!(state);
    let (status, opened) = call!(
        &app,
        test::TestRequest::post()
            .uri("/auth")
            .set_json(json!({"email": "bo@example.com", "token": token("bo", "j-bo")}))
    );
    assert_eq!(status, 200, "{opened}");
    let session = opened["sessionId"]
        .as_str()
        .expect("a session id")
        .to_owned();
    let (status, body) = call!(
        &app,
        sign_in(&[("socket_id", SOCKET)], None).insert_header(("X-Session-ID", session.as_str()))
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(verified(&body)["id"], "bo");
    stop.cancel();
}

#[actix_web::test]
async fn bad_requests_and_callers_are_refused_before_any_task() {
    captured_logs();
    let stop = CancellationToken::new();
    let (state, store) = shared(&format!("{RULE}{SIGNIN}"), &stop);
    let app = app!(state);
    let alice = token("alice", "j-alice");

    for (form, code) in [
        (vec![], "missing_socket_id"),
        (vec![("socket_id", "")], "missing_socket_id"),
        (vec![("socket_id", "not-a-socket")], "invalid_socket_id"),
    ] {
        let (status, body) = call!(&app, sign_in(&form, Some(&alice)));
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(code)),
            "{form:?}"
        );
    }
    let (status, body) = call!(
        &app,
        test::TestRequest::post()
            .uri("/pusher/user-auth")
            .insert_header(("Content-Type", "application/json"))
            .set_payload("{")
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_body"))
    );

    // Anonymous: a client id is no user.
    let (status, body) = call!(
        &app,
        sign_in(&[("socket_id", SOCKET)], None).insert_header(("X-Client-ID", "web"))
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("unauthenticated"))
    );

    // A bad token, and a revoked one.
    let (status, body) = call!(&app, sign_in(&[("socket_id", SOCKET)], Some("nope")));
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    store
        .revoke(Revocation::Jti("j-alice"), Duration::from_secs(60))
        .await
        .unwrap();
    let (status, body) = call!(&app, sign_in(&[("socket_id", SOCKET)], Some(&alice)));
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_revoked"))
    );
    stop.cancel();
}

#[actix_web::test]
async fn a_policy_without_a_signin_section_refuses_user_authentication() {
    captured_logs();
    let stop = CancellationToken::new();
    let (state, _) = shared(RULE, &stop);
    let app = app!(state);
    let (status, body) = call!(
        &app,
        sign_in(&[("socket_id", SOCKET)], Some(&token("alice", "j")))
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("signin_not_configured")),
        "{body}"
    );
    stop.cancel();
}

/// A webhook on a local port that refuses every sign-in in its own words.
async fn refusing_webhook() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    actix_web::rt::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            // The whole request: headers, then the body Content-Length announces.
            while let Ok(n) = socket.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let body = r#"{"allow": false, "reason": "banned"}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    format!("http://{address}/signin")
}

#[actix_web::test]
async fn what_the_worker_refuses_is_a_403_or_a_503() {
    captured_logs();
    let url = refusing_webhook().await;
    let stop = CancellationToken::new();
    let alice = token("alice", "j-alice");
    let form = [("socket_id", SOCKET)];

    // The policy's decision says no.
    let policy = format!(
        "{RULE}[signin]\nallow = {{ all_of = [\"authenticated\", {{ webhook = \"{url}\" }}] }}\n"
    );
    let (state, _) = shared(&policy, &stop);
    let app = app!(state);
    let (status, body) = call!(&app, sign_in(&form, Some(&alice)));
    assert_eq!(
        (status, &body),
        (403, &json!({"error": "forbidden", "message": "banned"}))
    );

    // The worker's policy has no section (a rollout with differing policies).
    let store = Arc::new(MemoryStore::default());
    let with = format!("{RULE}{SIGNIN}");
    let app = app!(gateway(&with, store.clone(), RULE, store, &stop));
    let (status, body) = call!(&app, sign_in(&form, Some(&alice)));
    assert_eq!(
        (status, &body["message"]),
        (403, &json!("no_rule")),
        "{body}"
    );

    // The worker's store does not answer: retry later, never a user_data without its parts.
    let down: Arc<dyn Store> = Arc::new(Observed::new(MemoryStore::default(), Down));
    let app = app!(gateway(
        &with,
        Arc::new(MemoryStore::default()),
        &with,
        down,
        &stop
    ));
    let (status, body) = call!(&app, sign_in(&form, Some(&alice)));
    assert_eq!(
        (status, &body),
        (
            503,
            &json!({"error": "unavailable", "message": "store_unavailable"})
        )
    );
    stop.cancel();
}

/// Fails every store call as a Redis that does not answer.
struct Down;

impl Observer for Down {
    fn before(&self, _call: &'static str) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("down for the test".into()))
    }
}

#[actix_web::test]
async fn the_admin_api_refuses_bad_user_data() {
    captured_logs();
    let stop = CancellationToken::new();
    let (state, _) = shared(&format!("{RULE}{SIGNIN}"), &stop);
    let app = app!(state);
    let too_many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    for (request, code) in [
        (
            test::TestRequest::put()
                .uri("/admin/users/alice/info")
                .set_json(json!(["not", "an", "object"])),
            "invalid_body",
        ),
        (
            test::TestRequest::put()
                .uri("/admin/users/alice/watchlist")
                .set_json(json!({"not": "a list"})),
            "invalid_body",
        ),
        (
            test::TestRequest::put()
                .uri("/admin/users/alice/watchlist")
                .set_json(json!(too_many)),
            "watchlist_too_long",
        ),
        (
            test::TestRequest::put()
                .uri("/admin/users/alice/watchlist")
                .set_json(json!(["ok", ""])),
            "invalid_name",
        ),
        (
            test::TestRequest::put()
                .uri("/admin/users/alice/info")
                .set_json(json!({"": 1})),
            "invalid_name",
        ),
    ] {
        let (status, body) = call!(&app, admin(request));
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(code)),
            "{body}"
        );
    }
    // Without the admin token: nothing.
    let (status, _) = call!(
        &app,
        test::TestRequest::get().uri("/admin/users/alice/watchlist")
    );
    assert_eq!(status, 401);
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

/// The log lines of this test binary, from one global subscriber (debug level).
fn captured_logs() -> String {
    static LINES: OnceLock<Lines> = OnceLock::new();
    let lines = LINES.get_or_init(|| {
        let lines = Lines::default();
        let writer = lines.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        lines
    });
    String::from_utf8_lossy(&lines.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
}

#[actix_web::test]
async fn refusals_are_audited_under_signin_and_no_token_is_logged() {
    captured_logs();
    let url = refusing_webhook().await;
    let stop = CancellationToken::new();
    let policy = format!(
        "{RULE}[signin]\nallow = {{ all_of = [\"authenticated\", {{ webhook = \"{url}\" }}] }}\n"
    );
    let (state, _) = shared(&policy, &stop);
    let app = app!(state);
    let token = token("audited-user", "j-audited");
    let (status, _) = call!(&app, sign_in(&[("socket_id", SOCKET)], Some(&token)));
    assert_eq!(status, 403);
    let (status, _) = call!(
        &app,
        sign_in(&[("socket_id", SOCKET)], None).insert_header(("X-Client-ID", "audited-client"))
    );
    assert_eq!(status, 403);
    let logs = captured_logs();
    let audited = |user: &str, why: &str| {
        logs.lines().any(|line| {
            line.contains("porter::audit")
                && line.contains("rule=\"[signin]\"")
                && line.contains(user)
                && line.contains(why)
        })
    };
    assert!(audited("audited-user", "why=\"banned\""), "{logs}");
    assert!(
        audited("audited-client", "why=\"unauthenticated\""),
        "{logs}"
    );
    assert!(!logs.contains(&token), "a token was logged");
    stop.cancel();
}

#[actix_web::test]
async fn the_ip_is_charged_before_the_token_is_looked_at() {
    captured_logs();
    let stop = CancellationToken::new();
    let store = Arc::new(MemoryStore::default());
    let policy = format!("{RULE}{SIGNIN}");
    let protection = ProtectionConfig {
        rate_ip: Some("2/m".parse().unwrap()),
        ..ProtectionConfig::default()
    };
    let app = app!(gateway_protected(
        &policy,
        store.clone(),
        &policy,
        store,
        protection,
        &stop
    ));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let request = sign_in(&[("socket_id", SOCKET)], Some("not-a-token"))
            .peer_addr("203.0.113.7:40000".parse().unwrap());
        statuses.push(call!(&app, request).0);
    }
    assert_eq!(statuses, [401, 401, 429]);
    stop.cancel();
}

/// A sign-in whose worker does not answer by the section's deadline is a 504, audited under
/// `[signin]` with the reason `timeout` like every other refusal.
#[actix_web::test]
async fn a_sign_in_that_times_out_is_a_504_and_audited() {
    captured_logs();
    // A webhook that takes the connection and never answers: the worker waits past the
    // gateway's deadline (`expires` plus the grace), well within its own time limit.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    actix_web::rt::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let stop = CancellationToken::new();
    let policy = format!(
        "{RULE}[signin]\nallow = {{ all_of = [\"authenticated\", {{ webhook = \"http://{address}/signin\" }}] }}\ntime_limit = 10\nexpires = \"100ms\"\n"
    );
    let (state, _) = shared(&policy, &stop);
    let app = app!(state);
    let token = token("slow-user", "j-slow");
    let (status, body) = call!(&app, sign_in(&[("socket_id", SOCKET)], Some(&token)));
    assert_eq!(status, 504, "{body}");
    let logs = captured_logs();
    assert!(
        logs.lines().any(|line| line.contains("porter::audit")
            && line.contains("rule=\"[signin]\"")
            && line.contains("slow-user")
            && line.contains("why=\"timeout\"")),
        "{logs}"
    );
    stop.cancel();
}
