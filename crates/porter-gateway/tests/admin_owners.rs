//! `GET|PUT|DELETE /admin/channels/{channel}/owner` in process, over the memory store: the
//! owner set through the admin API is the one the events worker reads (`owner:{cache name}`,
//! shared by a channel and its `-encrypted` twin), and every refusal answers a JSON error:
//! a bad channel name, a bad body, a bad user id, no or a wrong admin token, a store that does
//! not answer.

use std::sync::Arc;
use std::time::Duration;

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
use porter_store::{Store, StoreError};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const ADMIN_TOKEN: &str = "admin-token";
const POLICY: &str = "[[rule]]\nname = \"doc\"\npattern = \"private-doc-{id}\"\nallow = \"anyone\"\n\
                      owner = \"store\"\n";

/// A gateway over `store`; no worker: the owner API never asks one.
fn gateway(store: Arc<dyn Store>, stop: &CancellationToken) -> web::Data<AppState> {
    let policy = Arc::new(Policy::from_toml(POLICY).expect("the policy parses"));
    let (client, _source) = porter_broker::local::channel(stop.clone());
    let client = Arc::new(client);
    let sessions = Sessions::new(store.clone(), client.clone(), Duration::from_secs(3600));
    web::Data::new(AppState {
        signer: Signer::new("100000", "app-key", &Secret::new("app-secret"), None).unwrap(),
        scoped: Default::default(),
        stamps: RuleStamps::of(&policy),
        policy,
        tasks: client,
        store,
        identity: Resolver::new(Verifier::hs256(Some(b"jwt-secret"))).with_sessions(sessions),
        config: GatewayConfig::default(),
        metrics: Default::default(),
        admin: AdminGuard::new(Some(ADMIN_TOKEN)),
        protection: Protection::new(ProtectionConfig::default()),
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

fn admin(request: test::TestRequest) -> test::TestRequest {
    request.insert_header(("Authorization", format!("Bearer {ADMIN_TOKEN}")))
}

const OWNER: &str = "/admin/channels/private-doc-5/owner";

#[actix_web::test]
async fn the_owner_set_through_the_admin_api_is_the_one_the_events_worker_reads() {
    let stop = CancellationToken::new();
    let store = Arc::new(MemoryStore::default());
    let app = app!(gateway(store.clone(), &stop));

    let (status, body) = call!(&app, admin(test::TestRequest::get().uri(OWNER)));
    assert_eq!(
        (status, body),
        (200, json!({"channel": "private-doc-5", "user_id": null}))
    );

    let (status, body) = call!(
        &app,
        admin(test::TestRequest::put().uri(OWNER)).set_json(json!({"user_id": "7"}))
    );
    assert_eq!(
        (status, body),
        (200, json!({"channel": "private-doc-5", "user_id": "7"}))
    );
    assert_eq!(
        store
            .channel_owner("private-doc-5")
            .await
            .unwrap()
            .as_deref(),
        Some("7"),
        "stored where the events worker looks"
    );
    let (_, body) = call!(&app, admin(test::TestRequest::get().uri(OWNER)));
    assert_eq!(body["user_id"], "7");

    // The encrypted twin shares the key (its cache name), as it shares members.
    let (status, body) = call!(
        &app,
        admin(test::TestRequest::put().uri("/admin/channels/private-encrypted-doc-5/owner"))
            .set_json(json!({"user_id": "8"}))
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["channel"], "private-encrypted-doc-5");
    let (_, body) = call!(&app, admin(test::TestRequest::get().uri(OWNER)));
    assert_eq!(body["user_id"], "8", "a PUT replaces the owner");

    let (status, body) = call!(&app, admin(test::TestRequest::delete().uri(OWNER)));
    assert_eq!(
        (status, body),
        (200, json!({"channel": "private-doc-5", "user_id": null}))
    );
    assert_eq!(store.channel_owner("private-doc-5").await.unwrap(), None);
    let (_, body) = call!(
        &app,
        admin(test::TestRequest::get().uri("/admin/channels/private-encrypted-doc-5/owner"))
    );
    assert_eq!(body["user_id"], Value::Null);
    // Deleting what is not there is not an error.
    let (status, _) = call!(&app, admin(test::TestRequest::delete().uri(OWNER)));
    assert_eq!(status, 200);
    stop.cancel();
}

#[actix_web::test]
async fn the_owner_api_refuses_bad_channels_bodies_and_user_ids() {
    let stop = CancellationToken::new();
    let store = Arc::new(MemoryStore::default());
    let app = app!(gateway(store.clone(), &stop));
    let bad_channel = "/admin/channels/private-doc%205/owner";
    let long_id = "u".repeat(201);
    let put = |uri: &str| test::TestRequest::put().uri(uri);
    for (request, code) in [
        (test::TestRequest::get().uri(bad_channel), "invalid_channel"),
        (
            put(bad_channel).set_json(json!({"user_id": "7"})),
            "invalid_channel",
        ),
        (
            test::TestRequest::delete().uri(bad_channel),
            "invalid_channel",
        ),
        (put(OWNER).set_payload("not json"), "invalid_body"),
        (put(OWNER).set_json(json!({})), "invalid_body"),
        (put(OWNER).set_json(json!({"user_id": 7})), "invalid_body"),
        (put(OWNER).set_json(json!(["7"])), "invalid_body"),
        (
            put(OWNER).set_json(json!({"user_id": "7", "extra": true})),
            "invalid_body",
        ),
        (put(OWNER).set_json(json!({"user_id": ""})), "invalid_name"),
        (
            put(OWNER).set_json(json!({"user_id": "a\nb"})),
            "invalid_name",
        ),
        (
            put(OWNER).set_json(json!({"user_id": long_id})),
            "invalid_name",
        ),
    ] {
        let (status, body) = call!(&app, admin(request));
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(code)),
            "{body}"
        );
        assert!(body["message"].is_string(), "{body}");
    }
    assert_eq!(
        store.channel_owner("private-doc-5").await.unwrap(),
        None,
        "no refused request changed the owner"
    );

    // Without the admin token, or with a wrong one: nothing, and nothing changes.
    for request in [
        test::TestRequest::get().uri(OWNER),
        put(OWNER).set_json(json!({"user_id": "7"})),
        test::TestRequest::delete().uri(OWNER),
        put(OWNER)
            .insert_header(("Authorization", "Bearer not-the-token"))
            .set_json(json!({"user_id": "7"})),
    ] {
        let (status, body) = call!(&app, request);
        assert_eq!(status, 401, "{body}");
        assert!(body["error"].is_string(), "{body}");
    }
    assert_eq!(store.channel_owner("private-doc-5").await.unwrap(), None);
    stop.cancel();
}

/// Fails the owner calls, as a Redis that stops answering them.
struct OwnerDown;

impl Observer for OwnerDown {
    fn before(&self, call: &'static str) -> Result<(), StoreError> {
        match call {
            "channel_owner" | "set_channel_owner" => {
                Err(StoreError::Unavailable("down for the test".into()))
            }
            _ => Ok(()),
        }
    }
}

#[actix_web::test]
async fn a_store_that_does_not_answer_is_a_503_not_a_guess() {
    let stop = CancellationToken::new();
    let down: Arc<dyn Store> = Arc::new(Observed::new(MemoryStore::default(), OwnerDown));
    let app = app!(gateway(down, &stop));
    for request in [
        test::TestRequest::get().uri(OWNER),
        test::TestRequest::put()
            .uri(OWNER)
            .set_json(json!({"user_id": "7"})),
        test::TestRequest::delete().uri(OWNER),
    ] {
        let (status, body) = call!(&app, admin(request));
        assert_eq!(
            (status, &body),
            (
                503,
                &json!({"error": "store_unavailable", "message": "the store is unavailable; retry shortly"})
            )
        );
    }
    stop.cancel();
}
