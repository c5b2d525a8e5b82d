//! The gateway's protection rules, in process: rate limits charged around authentication,
//! client-id buckets per user, the admin endpoint's rate limit, CORS `Vary`, webhooks that
//! fail half-way, the body deadline (in tokio's paused time) and actix's own refusals in the
//! JSON shape. The store is the memory one (optionally failing on cue) and the transport the
//! in-process one with no worker: the requests here never publish a task.
//!
//! Over 500 lines on purpose: each `tests/*.rs` file is its own test binary, linked against
//! the whole gateway, so the protection tests share one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, test, web};
use porter_core::cache::RuleStamps;
use porter_core::policy::Policy;
use porter_core::signing::{Secret, Signer};
use porter_gateway::protection::{Protection, ProtectionConfig};
use porter_gateway::{AppState, GatewayConfig};
use porter_identity::{Resolver, Verifier};
use porter_store::memory::MemoryStore;
use porter_store::observed::{Observed, Observer};
use porter_store::{Store, StoreError};
use serde_json::{Value, json};

const JWT_SECRET: &[u8] = b"jwt-secret";
/// Every request here comes from this client.
const PEER: &str = "203.0.113.7:40000";
const BATCH: &str = "/pusher/batch-authenticate?app_id=100000&socket_id=1.2&channels=public-x";

/// Fails the `update_presence` calls numbered in `fail_updates` (counting from 1), as Redis
/// failing half-way through a webhook would.
#[derive(Default)]
struct FailUpdates {
    updates: AtomicUsize,
    fail_updates: Vec<usize>,
}

impl Observer for FailUpdates {
    fn before(&self, call: &'static str) -> Result<(), StoreError> {
        if call != "update_presence" {
            return Ok(());
        }
        let number = self.updates.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_updates.contains(&number) {
            return Err(StoreError::Timeout);
        }
        Ok(())
    }
}

fn signer() -> Signer {
    Signer::new("100000", "key", &Secret::new("secret"), None).unwrap()
}

fn state(store: Arc<dyn Store>, protection: ProtectionConfig) -> web::Data<AppState> {
    let (client, _source) = porter_broker::local::channel(Default::default());
    web::Data::new(AppState {
        signer: signer(),
        policy: Arc::new(Policy::default()),
        stamps: RuleStamps::of(&Policy::default()),
        tasks: Arc::new(client),
        store,
        identity: Resolver::new(Verifier::hs256(Some(JWT_SECRET))),
        config: GatewayConfig::default(),
        metrics: Default::default(),
        admin: porter_gateway::admin_guard::AdminGuard::new(Some("admin-token")),
        protection: Protection::new(protection),
        scoped: Default::default(),
    })
}

/// The gateway's app as `porter gateway` wires it: the same `configure`. (A macro: the
/// service's type cannot be named without depending on actix-http.)
macro_rules! app {
    ($state:expr) => {
        test::init_service(
            App::new()
                .app_data($state)
                .configure(|cfg| porter_gateway::configure(cfg, &Policy::default())),
        )
        .await
    };
}

fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
    )
    .unwrap()
}

fn batch(headers: &[(&str, &str)]) -> test::TestRequest {
    let mut request = test::TestRequest::get()
        .uri(BATCH)
        .peer_addr(PEER.parse().unwrap());
    for (name, value) in headers {
        request = request.insert_header((*name, *value));
    }
    request
}

fn status(response: &ServiceResponse<impl MessageBody>) -> u16 {
    response.status().as_u16()
}

#[actix_web::test]
async fn failed_authentications_are_charged_to_the_ip() {
    let state = state(
        Arc::new(MemoryStore::default()),
        ProtectionConfig {
            rate_ip: Some("2/m".parse().unwrap()),
            ..ProtectionConfig::default()
        },
    );
    let app = app!(state);
    let bad = [("Authorization", "Bearer not.a.token")];
    for _ in 0..2 {
        let response = test::call_service(&app, batch(&bad).to_request()).await;
        assert_eq!(status(&response), 401);
    }
    // The two failures spent the IP's budget: a good token from that IP waits too.
    let good = format!("Bearer {}", token("7"));
    let response = test::call_service(&app, batch(&[("Authorization", &good)]).to_request()).await;
    assert_eq!(status(&response), 429);
    assert!(response.headers().contains_key("retry-after"));
    // A bad session id is a failed authentication like a bad token.
    let response = test::call_service(
        &app,
        batch(&[("X-Session-ID", "00000000000000000000000000000000")]).to_request(),
    )
    .await;
    assert_eq!(status(&response), 429, "refused before the session look-up");
}

#[actix_web::test]
async fn the_ip_is_charged_once_per_request() {
    let state = state(
        Arc::new(MemoryStore::default()),
        ProtectionConfig {
            rate_ip: Some("3/m".parse().unwrap()),
            rate_user: Some("100/m".parse().unwrap()),
            ..ProtectionConfig::default()
        },
    );
    let app = app!(state);
    let good = format!("Bearer {}", token("7"));
    for _ in 0..3 {
        let response =
            test::call_service(&app, batch(&[("Authorization", &good)]).to_request()).await;
        assert_eq!(status(&response), 200);
    }
    let response = test::call_service(&app, batch(&[("Authorization", &good)]).to_request()).await;
    assert_eq!(status(&response), 429);
}

#[actix_web::test]
async fn the_admin_endpoint_is_rate_limited_before_the_token_check() {
    let state = state(
        Arc::new(MemoryStore::default()),
        ProtectionConfig {
            rate_ip: Some("2/m".parse().unwrap()),
            ..ProtectionConfig::default()
        },
    );
    let app = app!(state);
    let revoke = |admin: &str| {
        test::TestRequest::post()
            .uri("/admin/tokens/revoke")
            .peer_addr(PEER.parse().unwrap())
            .insert_header(("Authorization", format!("Bearer {admin}")))
            .insert_header(("Content-Type", "application/json"))
            .set_payload(json!({"jti": "j-1", "exp": 4_000_000_000u64}).to_string())
            .to_request()
    };
    for guess in ["guess-1", "guess-2"] {
        let response = test::call_service(&app, revoke(guess)).await;
        assert_eq!(status(&response), 401);
    }
    let response = test::call_service(&app, revoke("admin-token")).await;
    assert_eq!(status(&response), 429, "guessing spent the IP's budget");
    let body: Value = test::read_body_json(response).await;
    assert_eq!(body["error"], "rate_limited");
}

#[actix_web::test]
async fn nobody_can_spend_a_users_client_id_budget() {
    let state = state(
        Arc::new(MemoryStore::default()),
        ProtectionConfig {
            rate_client: Some("1/m".parse().unwrap()),
            ..ProtectionConfig::default()
        },
    );
    let app = app!(state);
    // Anyone may send the victim's client id, anonymously or as another user...
    let response = test::call_service(&app, batch(&[("X-Client-ID", "web")]).to_request()).await;
    assert_eq!(status(&response), 200);
    let other = format!("Bearer {}", token("8"));
    let response = test::call_service(
        &app,
        batch(&[("Authorization", &other), ("X-Client-ID", "web")]).to_request(),
    )
    .await;
    assert_eq!(status(&response), 200);
    // ...and the victim's own budget is untouched.
    let victim = format!("Bearer {}", token("7"));
    let as_victim = || batch(&[("Authorization", &victim), ("X-Client-ID", "web")]).to_request();
    assert_eq!(status(&test::call_service(&app, as_victim()).await), 200);
    // The victim's own requests still count against it.
    assert_eq!(status(&test::call_service(&app, as_victim()).await), 429);
    // Anonymous callers share the bucket of the bare client id.
    let response = test::call_service(&app, batch(&[("X-Client-ID", "web")]).to_request()).await;
    assert_eq!(status(&response), 429);
}

fn webhook(body: &Value) -> test::TestRequest {
    let body = body.to_string();
    test::TestRequest::post()
        .uri("/pusher/webhook")
        .insert_header(("X-Pusher-Key", "key"))
        .insert_header((
            "X-Pusher-Signature",
            signer().webhook_signature(body.as_bytes()),
        ))
        .insert_header(("Content-Type", "application/json"))
        .set_payload(body)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[actix_web::test]
async fn a_webhook_that_fails_half_way_is_applied_in_full_when_retried() {
    let store = Arc::new(Observed::new(
        MemoryStore::default(),
        FailUpdates {
            fail_updates: vec![2],
            ..FailUpdates::default()
        },
    ));
    let app = app!(state(store.clone(), ProtectionConfig::default()));
    let hook = json!({"time_ms": now_ms(), "events": [
        {"name": "member_added", "channel": "presence-a@1", "user_id": "1"},
        {"name": "member_added", "channel": "presence-a@1", "user_id": "2"},
    ]});
    let response = test::call_service(&app, webhook(&hook).to_request()).await;
    assert_eq!(status(&response), 503, "the second event failed");
    assert!(store.inner.is_online("1").await.unwrap());
    assert!(!store.inner.is_online("2").await.unwrap());
    // Pusher's retry is not a replay: both events land.
    let response = test::call_service(&app, webhook(&hook).to_request()).await;
    assert_eq!(status(&response), 200);
    let body: Value = test::read_body_json(response).await;
    assert_eq!(body["applied"], 2, "{body}");
    assert!(store.inner.is_online("2").await.unwrap());
    // Once applied, the same body is a replay.
    let response = test::call_service(&app, webhook(&hook).to_request()).await;
    let body: Value = test::read_body_json(response).await;
    assert_eq!(body["replay"], true, "{body}");
}

#[actix_web::test]
async fn presence_webhooks_arriving_out_of_order_leave_no_stale_member() {
    let store = Arc::new(MemoryStore::default());
    let app = app!(state(store.clone(), ProtectionConfig::default()));
    let t = now_ms();
    let removed = json!({"time_ms": t, "events": [
        {"name": "member_removed", "channel": "presence-a@1", "user_id": "5"},
    ]});
    let added = json!({"time_ms": t - 1000, "events": [
        {"name": "member_added", "channel": "presence-a@1", "user_id": "5"},
    ]});
    assert_eq!(
        status(&test::call_service(&app, webhook(&removed).to_request()).await),
        200
    );
    let response = test::call_service(&app, webhook(&added).to_request()).await;
    let body: Value = test::read_body_json(response).await;
    assert_eq!(body["applied"], 0, "older than the removal: {body}");
    assert!(!store.is_online("5").await.unwrap());
}

#[actix_web::test]
async fn cors_always_varies_on_origin_and_keeps_other_vary_values() {
    let state = state(
        Arc::new(MemoryStore::default()),
        ProtectionConfig {
            cors_origins: vec!["https://app.example".to_owned()],
            ..ProtectionConfig::default()
        },
    );
    let app = test::init_service(
        App::new()
            .app_data(state)
            .wrap(from_fn(porter_gateway::middleware::cors::cors))
            .route(
                "/x",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .insert_header(("Vary", "Accept-Encoding"))
                        .finish()
                }),
            ),
    )
    .await;
    let vary = |response: &ServiceResponse<_>| -> Vec<String> {
        response
            .headers()
            .get_all("vary")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_owned())
            .collect()
    };
    let get = |origin: Option<&str>| {
        let mut request = test::TestRequest::get().uri("/x");
        if let Some(origin) = origin {
            request = request.insert_header(("Origin", origin));
        }
        request.to_request()
    };
    for origin in [
        Some("https://app.example"),
        Some("https://evil.example"),
        None,
    ] {
        let response = test::call_service(&app, get(origin)).await;
        let values = vary(&response);
        assert!(
            values.contains(&"Origin".to_owned()),
            "{origin:?}: {values:?}"
        );
        assert!(
            values.contains(&"Accept-Encoding".to_owned()),
            "{origin:?}: {values:?}"
        );
    }
    let preflight = |origin: &str| {
        test::TestRequest::default()
            .method(actix_web::http::Method::OPTIONS)
            .uri("/x")
            .insert_header(("Origin", origin))
            .insert_header(("Access-Control-Request-Method", "GET"))
            .to_request()
    };
    for (origin, expected) in [("https://app.example", 204), ("https://evil.example", 403)] {
        let response = test::call_service(&app, preflight(origin)).await;
        assert_eq!(status(&response), expected);
        assert_eq!(vary(&response), vec!["Origin".to_owned()], "{origin}");
    }
}

/// A request body as a stream, so a test can send it in chunks, cut it short or stall it.
type BodyStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<web::Bytes, actix_web::error::PayloadError>>>,
>;

/// `POST path` with `body` and no `Content-Length` (as a chunked body arrives). (A macro,
/// like `app!`: the request type is actix-http's.)
macro_rules! streamed_post {
    ($path:expr, $body:expr) => {{
        let body: BodyStream = Box::pin($body);
        test::TestRequest::post()
            .uri($path)
            .peer_addr(PEER.parse().unwrap())
            .insert_header(("content-type", "application/x-www-form-urlencoded"))
            .to_request()
            .replace_payload(actix_web::dev::Payload::Stream { payload: body })
            .0
    }};
}

/// The value of the series `name{labels}` in the app's `/metrics`, 0 when absent.
macro_rules! metric {
    ($app:expr, $series:expr) => {{
        let request = test::TestRequest::get().uri("/metrics").to_request();
        let text =
            String::from_utf8(test::call_and_read_body($app, request).await.to_vec()).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix($series)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    }};
}

#[actix_web::test]
async fn a_body_that_stops_arriving_is_answered_408_at_its_deadline() {
    use futures_util::StreamExt;
    use porter_gateway::http::limits::EdgeLimits;
    use tokio::time::{Duration, Instant};

    // Virtual time: the stalled body would otherwise hang the test, and no sleep is real.
    tokio::time::pause();
    let limits = EdgeLimits {
        body_timeout: Duration::from_millis(300),
        ..EdgeLimits::default()
    };
    let app = test::init_service(
        App::new()
            .app_data(state(
                Arc::new(MemoryStore::default()),
                ProtectionConfig::default(),
            ))
            .app_data(limits)
            .configure(|cfg| porter_gateway::configure(cfg, &Policy::default())),
    )
    .await;

    // 13 bytes of a longer body, then nothing.
    let stalled = futures_util::stream::iter([Ok(web::Bytes::from_static(b"socket_id=1.2"))])
        .chain(futures_util::stream::pending());
    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(3600),
        test::call_service(&app, streamed_post!("/pusher/auth", stalled)),
    )
    .await
    .expect("answered, not left hanging");
    // Virtual time: exactly the deadline, give or take the timer's millisecond.
    let elapsed = started.elapsed();
    assert!(
        (limits.body_timeout..limits.body_timeout + Duration::from_millis(2)).contains(&elapsed),
        "answered at the deadline, not {elapsed:?}"
    );
    assert_eq!(status(&response), 408);
    let body: Value = test::read_body_json(response).await;
    assert_eq!(body["error"], "request_timeout");
    assert_eq!(
        metric!(
            &app,
            "porter_protection_refusals_total{rule=\"body_timeout\"}"
        ),
        1
    );

    // A body that arrives in pieces, all within the deadline, is read whole.
    let slow_but_in_time = futures_util::stream::iter([Ok(web::Bytes::from_static(
        b"socket_id=1.2",
    ))])
    .chain(futures_util::stream::once(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(web::Bytes::from_static(b"&channel_name=public-x"))
    }));
    let response = test::call_service(&app, streamed_post!("/pusher/auth", slow_but_in_time)).await;
    let body: Value = test::read_body_json(response).await;
    assert_ne!(body["error"], "request_timeout", "{body}");
    assert_eq!(body["error"], "invalid_channel", "{body}");
}

#[actix_web::test]
async fn actix_refusals_answer_in_the_json_shape_and_are_counted() {
    let app = app!(state(
        Arc::new(MemoryStore::default()),
        ProtectionConfig::default()
    ));
    let json = |response: &ServiceResponse<_>| {
        response
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("application/json")
    };

    // A chunked body over the limit: no Content-Length for the size middleware to see, so
    // the extractor's overflow answers.
    let chunk = web::Bytes::from(vec![b'a'; 16 * 1024]);
    let huge = futures_util::stream::iter((0..5).map(move |_| Ok(chunk.clone())));
    let response = test::call_service(&app, streamed_post!("/pusher/auth", huge)).await;
    assert_eq!(status(&response), 413);
    assert!(json(&response));
    let body: Value = test::read_body_json(response).await;
    assert_eq!(body["error"], "body_too_large");
    assert_eq!(
        metric!(
            &app,
            "porter_protection_refusals_total{rule=\"max_body_bytes\"}"
        ),
        1
    );
    assert_eq!(
        metric!(
            &app,
            "porter_http_requests_total{endpoint=\"auth\",status=\"413\"}"
        ),
        1
    );

    // A body cut short by the peer.
    let cut = futures_util::stream::iter([
        Ok(web::Bytes::from_static(b"socket_id=1.2")),
        Err(actix_web::error::PayloadError::Incomplete(None)),
    ]);
    let response = test::call_service(&app, streamed_post!("/pusher/auth", cut)).await;
    assert_eq!(status(&response), 400);
    let body: Value = test::read_body_json(response).await;
    assert_eq!(body["error"], "invalid_body");

    // A query string the admin endpoint cannot read.
    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/admin/decision?user_id=7")
            .peer_addr(PEER.parse().unwrap())
            .insert_header(("Authorization", "Bearer admin-token"))
            .to_request(),
    )
    .await;
    assert_eq!(status(&response), 400);
    let body: Value = test::read_body_json(response).await;
    assert_eq!(body["error"], "invalid_query");

    // The router's bare 404 and 405, the latter keeping its `Allow`.
    let response =
        test::call_service(&app, test::TestRequest::get().uri("/nope").to_request()).await;
    assert_eq!(status(&response), 404);
    assert!(json(&response));
    let body: Value = test::read_body_json(response).await;
    assert_eq!(body["error"], "not_found");
    let response = test::call_service(
        &app,
        test::TestRequest::delete().uri("/pusher/auth").to_request(),
    )
    .await;
    assert_eq!(status(&response), 405);
    assert_eq!(response.headers().get("allow").unwrap(), "POST");
    let body: Value = test::read_body_json(response).await;
    assert_eq!(body["error"], "method_not_allowed");

    // What the gateway answers itself is left as it is.
    let response = test::call_service(&app, batch(&[]).to_request()).await;
    assert_eq!(status(&response), 200);
}
