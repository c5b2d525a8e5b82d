//! The authorization policy end to end over the real RabbitMQ and Redis: every `allow` mode,
//! webhook authorizers, per-user caching, the admin API, the hotel guest chat through the
//! shipped example policy, and the `porter policy` tools. One deployment per test, many
//! assertions each, to keep the number of processes modest.
//!
//! Over 500 lines on purpose: each `tests/*.rs` file is its own test binary, linked against the
//! whole workspace, and on the 2-core CI machine every extra binary costs a link of tens of
//! seconds, so the end-to-end tests are grouped in a few files.

mod common;

use std::process::Command;

use common::*;
use redis::AsyncCommands;
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "admin-integration-token";
const GUEST_SECRET: &str = "guest-integration-secret";

/// One rule per `allow` mode, plus webhook rules pointed at the test's webhook server.
const MODES_POLICY: &str = r#"
[[rule]]
name = "open"
pattern = "private-open@{object_id}"
allow = "anyone"

[[rule]]
name = "authed"
pattern = "private-authed@{object_id}"
allow = "authenticated"

[[rule]]
name = "own"
pattern = "private-own@{object_id}"
allow = "owner"
cache = { scope = "user", ttl = 60 }

[[rule]]
name = "club"
pattern = "private-club@{object_id}"
allow = "member"
data = { events = true }
cache = { scope = "user", ttl = 60 }

[[rule]]
name = "team"
pattern = "private-team-{team}-room-{room}"
allow = { claims = { team = "team", room = "room" } }

[[rule]]
name = "either"
pattern = "private-either@{object_id}"
allow = { any_of = ["owner", "member"] }

[[rule]]
name = "both"
pattern = "private-both@{object_id}"
allow = { all_of = ["authenticated", "member"] }

[[rule]]
name = "slowhook"
pattern = "private-slowhook@{object_id}"
time_limit = 2
expires = 3
allow = { webhook = { url = "http://127.0.0.1:PORT/slow", timeout = "300ms" } }

[[rule]]
name = "hook"
pattern = "private-hook-{verdict}@{object_id}"
time_limit = 0.5
expires = 3
allow = { webhook = "http://127.0.0.1:PORT/{verdict}" }

[[rule]]
name = "presence-hook"
pattern = "presence-hook@{object_id}"
allow = { webhook = "http://127.0.0.1:PORT/allow" }
data = { user_info = "webhook" }
"#;

/// `GET /pusher/batch-authenticate` for one channel: the channel's entry of the answer.
async fn channel_answer(
    deployment: &Deployment,
    socket_id: &str,
    channel: &str,
    token: Option<&str>,
) -> Value {
    let client = reqwest::Client::new();
    let mut request = client.get(deployment.batch_url(socket_id, &[channel]));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("batch request");
    assert_eq!(response.status(), 200, "{channel}");
    let body: Value = response.json().await.expect("JSON body");
    body[channel].clone()
}

/// Asserts a private channel was allowed and signed for this socket.
fn assert_allowed(answer: &Value, socket_id: &str, channel: &str) {
    assert_eq!(
        answer["auth"],
        expected_auth(socket_id, channel, None),
        "{channel}: {answer}"
    );
}

fn assert_refused(answer: &Value, reason: &str, channel: &str) {
    assert_eq!(answer, &json!({ "reason": reason }), "{channel}");
}

async fn admin(
    method: reqwest::Method,
    deployment: &Deployment,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method, deployment.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("admin request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A gateway and a worker on the modes policy (its webhooks on a local test server), with the
/// admin API on. The processes are returned after the deployment, so they stop before it
/// cleans up.
async fn modes_deployment(name: &str) -> (Deployment, Proc, Proc) {
    let hook = webhook_server().await;
    let deployment = Deployment::new(name)
        .with_policy(&MODES_POLICY.replace("PORT", &hook.to_string()))
        .with_env("PORTER_ADMIN_TOKEN", ADMIN_TOKEN);
    let gateway = deployment.gateway();
    let worker = deployment.worker();
    deployment.wait_ready().await;
    (deployment, gateway, worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_allow_mode_allows_and_refuses() {
    let (deployment, _gateway, _worker) = modes_deployment("modes").await;
    let mut redis = deployment.redis().await;
    let ann = token("7", &[]);
    let bob = token("8", &[]);

    // anyone
    let a = channel_answer(&deployment, "1.1", "private-open@1", None).await;
    assert_allowed(&a, "1.1", "private-open@1");

    // authenticated
    let a = channel_answer(&deployment, "1.1", "private-authed@1", None).await;
    assert_refused(&a, "unauthenticated", "private-authed@1");
    let a = channel_answer(&deployment, "1.1", "private-authed@1", Some(&ann)).await;
    assert_allowed(&a, "1.1", "private-authed@1");

    // owner
    let a = channel_answer(&deployment, "1.1", "private-own@7", Some(&ann)).await;
    assert_allowed(&a, "1.1", "private-own@7");
    let a = channel_answer(&deployment, "1.1", "private-own@7", Some(&bob)).await;
    assert_refused(&a, "forbidden", "private-own@7 as 8");
    let a = channel_answer(&deployment, "1.1", "private-own@7", None).await;
    assert_refused(&a, "unauthenticated", "private-own@7 anonymous");

    // member (the set is written directly, as an application may)
    let members = format!("{}members:private-club@5", deployment.prefix);
    let a = channel_answer(&deployment, "1.1", "private-club@5", Some(&ann)).await;
    assert_refused(&a, "forbidden", "private-club@5 before joining");
    let _: () = redis.sadd(&members, "7").await.unwrap();
    let a = channel_answer(&deployment, "1.1", "private-club@5", Some(&ann)).await;
    assert_allowed(&a, "1.1", "private-club@5");

    // claims against captures with hyphenated values
    let channel = "private-team-red-sox-room-a-1";
    let fan = token("9", &[("team", json!("red-sox")), ("room", json!("a-1"))]);
    let a = channel_answer(&deployment, "1.1", channel, Some(&fan)).await;
    assert_allowed(&a, "1.1", channel);
    // Claims are checked in declaration order; the first mismatch names its claim.
    let other = token("9", &[("team", json!("red")), ("room", json!("a-1"))]);
    let a = channel_answer(&deployment, "1.1", channel, Some(&other)).await;
    assert_refused(&a, "claim_mismatch:team", channel);
    let other = token("9", &[("team", json!("red-sox")), ("room", json!("a"))]);
    let a = channel_answer(&deployment, "1.1", channel, Some(&other)).await;
    assert_refused(&a, "claim_mismatch:room", channel);
    let a = channel_answer(&deployment, "1.1", channel, Some(&ann)).await;
    assert_refused(&a, "claim_mismatch:team", channel);
    let a = channel_answer(&deployment, "1.1", channel, None).await;
    assert_refused(&a, "unauthenticated", channel);

    // any_of: owner or member
    let a = channel_answer(&deployment, "1.1", "private-either@7", Some(&ann)).await;
    assert_allowed(&a, "1.1", "private-either@7");
    let a = channel_answer(&deployment, "1.1", "private-either@7", Some(&bob)).await;
    assert_refused(&a, "forbidden", "private-either@7 as 8");
    let _: () = redis
        .sadd(
            format!("{}members:private-either@7", deployment.prefix),
            "8",
        )
        .await
        .unwrap();
    let a = channel_answer(&deployment, "1.1", "private-either@7", Some(&bob)).await;
    assert_allowed(&a, "1.1", "private-either@7");

    // all_of: authenticated and member
    let a = channel_answer(&deployment, "1.1", "private-both@3", None).await;
    assert_refused(&a, "unauthenticated", "private-both@3 anonymous");
    let a = channel_answer(&deployment, "1.1", "private-both@3", Some(&ann)).await;
    assert_refused(&a, "forbidden", "private-both@3 before joining");
    let _: () = redis
        .sadd(format!("{}members:private-both@3", deployment.prefix), "7")
        .await
        .unwrap();
    let a = channel_answer(&deployment, "1.1", "private-both@3", Some(&ann)).await;
    assert_allowed(&a, "1.1", "private-both@3");

    // webhook: allow (with its events), deny (with its reason), 500, garbage, too slow
    let a = channel_answer(&deployment, "1.1", "private-hook-allow@1", Some(&ann)).await;
    assert_allowed(&a, "1.1", "private-hook-allow@1");
    assert_eq!(
        a["events"],
        json!([{ "event": "hook.said", "data": { "ok": true } }])
    );
    let a = channel_answer(&deployment, "1.1", "private-hook-deny@1", Some(&ann)).await;
    assert_refused(&a, "not_subscribed", "private-hook-deny@1");
    let a = channel_answer(&deployment, "1.1", "private-hook-500@1", Some(&ann)).await;
    assert_refused(&a, "authorizer_unavailable", "private-hook-500@1");
    let a = channel_answer(&deployment, "1.1", "private-hook-garbage@1", Some(&ann)).await;
    assert_refused(&a, "authorizer_unavailable", "private-hook-garbage@1");
    // The server answers `/slow` after 1.5 s; the rule's time limit is 0.5 s.
    let a = channel_answer(&deployment, "1.1", "private-hook-slow@1", Some(&ann)).await;
    assert_refused(&a, "time limit exceeded", "private-hook-slow@1");
    // With its own timeout (300 ms, well inside the 2 s time limit) a slow webhook is
    // `authorizer_unavailable`, like any other webhook failure.
    let a = channel_answer(&deployment, "1.1", "private-slowhook@1", Some(&ann)).await;
    assert_refused(&a, "authorizer_unavailable", "private-slowhook@1");
    // The webhook saw the facts of the task (echoed back as an event).
    let a = channel_answer(&deployment, "1.1", "private-hook-echo@1", Some(&fan)).await;
    let seen = &a["events"][0]["data"];
    assert_eq!(seen["channel"], "private-hook-echo@1");
    assert_eq!(seen["captures"]["verdict"], "echo");
    assert_eq!(seen["user_id"], "9");
    assert_eq!(seen["claims"]["team"], "red-sox");
    assert!(
        seen.get("socket_id").is_none(),
        "the socket id never leaves the gateway"
    );

    // webhook user info on a presence channel
    let a = channel_answer(&deployment, "1.1", "presence-hook@1", Some(&ann)).await;
    let data = a["channel_data"].as_str().expect("channel_data");
    assert_eq!(
        serde_json::from_str::<Value>(data).unwrap(),
        json!({ "user_id": "7", "user_info": { "name": "Hooked" } })
    );
    assert_eq!(
        a["auth"],
        expected_auth("1.1", "presence-hook@1", Some(data))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_cache_and_admin_changes_take_effect_at_once() {
    let (deployment, _gateway, _worker) = modes_deployment("cache").await;
    let mut redis = deployment.redis().await;
    let ann = token("7", &[]);
    let bob = token("8", &[]);
    let cache_key = |channel: &str| format!("{}channel-data-v2:{channel}", deployment.prefix);

    // A per-user decision is cached under `user:7` only, and never served to user 8.
    let a = channel_answer(&deployment, "2.1", "private-own@7", Some(&ann)).await;
    assert_allowed(&a, "2.1", "private-own@7");
    let fields: Vec<String> = redis.hkeys(cache_key("private-own@7")).await.unwrap();
    assert_eq!(fields, vec!["user:7".to_owned()]);
    let a = channel_answer(&deployment, "2.2", "private-own@7", Some(&bob)).await;
    assert_refused(&a, "forbidden", "private-own@7 as 8 after 7 was cached");
    let a = channel_answer(&deployment, "2.2", "private-own@7", None).await;
    assert_refused(
        &a,
        "unauthenticated",
        "private-own@7 anonymous after 7 was cached",
    );
    // The cached entry is re-signed for the new socket.
    let a = channel_answer(&deployment, "2.3", "private-own@7", Some(&ann)).await;
    assert_allowed(&a, "2.3", "private-own@7");

    // The admin API refuses callers without the token.
    let path = "/admin/channels/private-club@5/members/7";
    let (status, body) = admin(reqwest::Method::PUT, &deployment, path, None, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("admin_unauthorized"))
    );
    let (status, _) = admin(reqwest::Method::PUT, &deployment, path, Some("wrong"), None).await;
    assert_eq!(status, 401);
    let (status, _) = admin(
        reqwest::Method::GET,
        &deployment,
        "/admin/decision?channel=private-own@7&user_id=7",
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
    let members: Vec<String> = redis
        .smembers(format!("{}members:private-club@5", deployment.prefix))
        .await
        .unwrap();
    assert!(members.is_empty(), "a refused admin call changed nothing");

    // Membership through the admin API; the decision is cached per user.
    let (status, body) = admin(
        reqwest::Method::PUT,
        &deployment,
        path,
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let a = channel_answer(&deployment, "2.1", "private-club@5", Some(&ann)).await;
    assert_allowed(&a, "2.1", "private-club@5");
    assert!(a.get("events").is_none());
    let cached: bool = redis
        .hexists(cache_key("private-club@5"), "user:7")
        .await
        .unwrap();
    assert!(cached);

    // A retained event set through the admin API shows on the next request.
    let (status, _) = admin(
        reqwest::Method::PUT,
        &deployment,
        "/admin/channels/private-club@5/events/club.news",
        Some(ADMIN_TOKEN),
        Some(json!({ "headline": "hi" })),
    )
    .await;
    assert_eq!(status, 200);
    let a = channel_answer(&deployment, "2.1", "private-club@5", Some(&ann)).await;
    assert_eq!(
        a["events"],
        json!([{ "event": "club.news", "data": { "headline": "hi" } }])
    );
    let stored: Option<String> = redis
        .hget(
            format!("{}retained:private-club@5", deployment.prefix),
            "club.news",
        )
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some(r#"{"headline":"hi"}"#));
    let (status, _) = admin(
        reqwest::Method::PUT,
        &deployment,
        "/admin/channels/private-club@5/events/club.bell",
        Some(ADMIN_TOKEN),
        Some(json!(1)),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = admin(
        reqwest::Method::DELETE,
        &deployment,
        "/admin/channels/private-club@5/events/club.news",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let a = channel_answer(&deployment, "2.1", "private-club@5", Some(&ann)).await;
    assert_eq!(a["events"], json!([{ "event": "club.bell", "data": 1 }]));
    let (status, _) = admin(
        reqwest::Method::DELETE,
        &deployment,
        "/admin/channels/private-club@5/events",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let a = channel_answer(&deployment, "2.1", "private-club@5", Some(&ann)).await;
    assert!(a.get("events").is_none(), "{a}");

    // Removing the member takes effect on the very next request, though 7's entry was cached.
    let cached: bool = redis
        .hexists(cache_key("private-club@5"), "user:7")
        .await
        .unwrap();
    assert!(cached);
    let (status, _) = admin(
        reqwest::Method::DELETE,
        &deployment,
        path,
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let exists: bool = redis.exists(cache_key("private-club@5")).await.unwrap();
    assert!(!exists, "the channel's cache was dropped");
    let a = channel_answer(&deployment, "2.1", "private-club@5", Some(&ann)).await;
    assert_refused(&a, "forbidden", "private-club@5 after removal");

    // The decision for a (channel, user) pair, unsigned.
    let (status, body) = admin(
        reqwest::Method::GET,
        &deployment,
        "/admin/decision?channel=private-own@7&user_id=7",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["rule"], "own");
    assert_eq!(body["allowed"], true);
    assert_eq!(body["captures"]["object_id"], "7");
    assert!(body.get("auth").is_none());
    let (_, body) = admin(
        reqwest::Method::GET,
        &deployment,
        "/admin/decision?channel=private-own@7&user_id=8",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(
        (body["allowed"].as_bool(), body["reason"].as_str()),
        (Some(false), Some("forbidden"))
    );
    let (_, body) = admin(
        reqwest::Method::GET,
        &deployment,
        "/admin/decision?channel=private-nothing@1",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(body["reason"], "no_rule");
    // With claims, for rules that compare them.
    let ask = |room: &str| {
        json!({
            "channel": "private-team-red-sox-room-a-1",
            "user_id": "9",
            "claims": { "team": "red-sox", "room": room },
        })
    };
    let (status, body) = admin(
        reqwest::Method::POST,
        &deployment,
        "/admin/decision",
        Some(ADMIN_TOKEN),
        Some(ask("a-1")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["rule"].as_str(), body["allowed"].as_bool()),
        (Some("team"), Some(true))
    );
    let (_, body) = admin(
        reqwest::Method::POST,
        &deployment,
        "/admin/decision",
        Some(ADMIN_TOKEN),
        Some(ask("a")),
    )
    .await;
    assert_eq!(body["reason"], "claim_mismatch:room");
    let (status, _) = admin(
        reqwest::Method::POST,
        &deployment,
        "/admin/decision",
        None,
        Some(ask("a-1")),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = admin(
        reqwest::Method::POST,
        &deployment,
        "/admin/decision",
        Some(ADMIN_TOKEN),
        Some(json!(["not", "an", "object"])),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_body"))
    );

    let (status, body) = admin(
        reqwest::Method::PUT,
        &deployment,
        "/admin/channels/bad%20name/members/7",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_channel"))
    );
}

fn example_policy() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/policy.example.toml"
    );
    std::fs::read_to_string(path).expect("deploy/policy.example.toml")
}

fn porter(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_porter"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run porter");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A guest token as `porter token guest` mints it.
fn guest_token(hotel: &str, booking: &str, ttl: &str) -> String {
    let (ok, stdout, stderr) = porter(
        &[
            "token",
            "guest",
            "--hotel",
            hotel,
            "--booking",
            booking,
            "--ttl",
            ttl,
        ],
        &[("PORTER_GUEST_TOKEN_SECRET", GUEST_SECRET)],
    );
    assert!(ok, "{stderr}");
    stdout.trim().to_owned()
}

fn expired_guest_token(secret: &str, exp_offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({
        "hotel": "grand-hotel",
        "booking_id": "BK-2025-ABC123",
        "exp": now + exp_offset,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

enum Body<'a> {
    Json(Value),
    Form(&'a [(&'a str, &'a str)]),
}

async fn guest_auth(
    deployment: &Deployment,
    hotel: &str,
    token: Option<&str>,
    body: Body<'_>,
) -> (u16, Value) {
    let mut url = deployment.url(&format!("/api/guest/hotel/{hotel}/chat/pusher/auth"));
    if let Some(token) = token {
        url.push_str("?token=");
        url.push_str(token);
    }
    let client = reqwest::Client::new();
    let request = match body {
        Body::Json(value) => client.post(url).json(&value),
        Body::Form(fields) => client.post(url).form(fields),
    };
    let response = request.send().await.expect("guest auth request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_chat_answers_every_specified_case() {
    let mut deployment = Deployment::new("guest").with_policy(&example_policy());
    deployment
        .extra_env
        .push(("PORTER_GUEST_TOKEN_SECRET".into(), GUEST_SECRET.into()));
    deployment
        .extra_env
        .push(("PORTER_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()));
    let _gateway = deployment.gateway();
    let _worker = deployment.worker();
    deployment.wait_ready().await;

    let channel = "private-hotel-grand-hotel-guest-chat-booking-BK-2025-ABC123";
    let token = guest_token("grand-hotel", "BK-2025-ABC123", "3600");
    let forbidden = |message: &str| json!({ "error": "Forbidden", "message": message });

    // 1. Valid request, JSON body: 200 with `auth` and the guest's signed `channel_data`.
    let (status, body) = guest_auth(
        &deployment,
        "grand-hotel",
        Some(&token),
        Body::Json(json!({ "socket_id": "123456.654321", "channel_name": channel })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Byte for byte the guest chat's specified `channel_data`: the fields in its order.
    let data = body["channel_data"].as_str().expect("channel_data");
    assert_eq!(
        data,
        r#"{"user_id":"guest_BK-2025-ABC123","user_info":{"name":"Guest","booking_id":"BK-2025-ABC123"}}"#
    );
    assert_eq!(
        body,
        json!({
            "auth": expected_auth("123456.654321", channel, Some(data)),
            "channel_data": data,
        })
    );

    // The same as a form (pusher-js), with the token in the body as pusher-js's `auth.params`.
    let (status, body) = guest_auth(
        &deployment,
        "grand-hotel",
        None,
        Body::Form(&[
            ("socket_id", "1.2"),
            ("channel_name", channel),
            ("token", &token),
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["auth"],
        expected_auth("1.2", channel, body["channel_data"].as_str())
    );

    // 2. Wrong booking.
    let (status, body) = guest_auth(
        &deployment,
        "grand-hotel",
        Some(&token),
        Body::Json(json!({
            "socket_id": "123456.654321",
            "channel_name": "private-hotel-grand-hotel-guest-chat-booking-DIFFERENT-BOOKING",
        })),
    )
    .await;
    assert_eq!(
        (status, body),
        (403, forbidden("Channel access denied - booking mismatch"))
    );

    // 3. Invalid format, and a channel of another hotel at this hotel's route.
    for other in [
        "private-some-other-format",
        "private-hotel-seaside-inn-guest-chat-booking-BK-2025-ABC123",
        "presence-hotel-grand-hotel-guest-chat-booking-BK-2025-ABC123",
        "not a channel",
    ] {
        let (status, body) = guest_auth(
            &deployment,
            "grand-hotel",
            Some(&token),
            Body::Json(json!({ "socket_id": "123456.654321", "channel_name": other })),
        )
        .await;
        assert_eq!(
            (status, body),
            (403, forbidden("Invalid channel format")),
            "{other}"
        );
    }

    // 4. A token of another hotel, used at this hotel's route for a channel with its booking.
    let seaside = guest_token("seaside-inn", "BK-2025-ABC123", "3600");
    let (status, body) = guest_auth(
        &deployment,
        "grand-hotel",
        Some(&seaside),
        Body::Json(json!({ "socket_id": "123456.654321", "channel_name": channel })),
    )
    .await;
    assert_eq!((status, body), (403, forbidden("Hotel access denied")));

    // 5. Expired, forged or garbage tokens: one answer that says nothing about the booking.
    let invalid = forbidden("Invalid token or booking not found");
    for bad in [
        expired_guest_token(GUEST_SECRET, -120),
        expired_guest_token("another-secret", 3600),
        "garbage".to_owned(),
    ] {
        let (status, body) = guest_auth(
            &deployment,
            "grand-hotel",
            Some(&bad),
            Body::Json(json!({ "socket_id": "123456.654321", "channel_name": channel })),
        )
        .await;
        assert_eq!((status, &body), (403, &invalid), "{bad}");
    }

    // 6. Missing parameters: token, socket_id or channel_name.
    let missing = json!({ "error": "Missing required parameters" });
    let cases = [
        (None, json!({ "socket_id": "1.2", "channel_name": channel })),
        (Some(&token), json!({ "channel_name": channel })),
        (Some(&token), json!({ "socket_id": "1.2" })),
        (
            Some(&token),
            json!({ "socket_id": "", "channel_name": channel }),
        ),
    ];
    for (token, body) in cases {
        let (status, answer) = guest_auth(
            &deployment,
            "grand-hotel",
            token.map(String::as_str),
            Body::Json(body.clone()),
        )
        .await;
        assert_eq!((status, &answer), (400, &missing), "{body}");
    }

    // Input it cannot use: 400 with the guest chat's catch-all error, never a 500.
    let (status, body) = guest_auth(
        &deployment,
        "grand-hotel",
        Some(&token),
        Body::Json(json!({ "socket_id": "1.2\n", "channel_name": channel })),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("Authentication failed"))
    );
    let response = reqwest::Client::new()
        .post(deployment.url(&format!(
            "/api/guest/hotel/grand-hotel/chat/pusher/auth?token={token}"
        )))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "Authentication failed");

    // The guest rule is served only by its endpoint: a bearer token with the same claims
    // gets nothing from the general endpoints.
    let bearer = common::token(
        "x",
        &[
            ("hotel", json!("grand-hotel")),
            ("booking_id", json!("BK-2025-ABC123")),
        ],
    );
    let a = channel_answer(&deployment, "1.2", channel, Some(&bearer)).await;
    assert_eq!(a, json!({ "reason": "no_rule" }));
    // The admin API explains a scoped rule as its endpoint decides it.
    let ask = |hotel: &str| {
        json!({
            "channel": channel,
            "claims": { "hotel": hotel, "booking_id": "BK-2025-ABC123" },
            "params": { "hotel_slug": "grand-hotel" },
        })
    };
    let (status, body) = admin(
        reqwest::Method::POST,
        &deployment,
        "/admin/decision",
        Some(ADMIN_TOKEN),
        Some(ask("grand-hotel")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["rule"], "guest-chat");
    assert_eq!(body["scoped"], true);
    assert_eq!(body["allowed"], true, "{body}");
    assert_eq!(body["data"]["user_id"], "guest_BK-2025-ABC123");
    let (_, body) = admin(
        reqwest::Method::POST,
        &deployment,
        "/admin/decision",
        Some(ADMIN_TOKEN),
        Some(ask("seaside-inn")),
    )
    .await;
    assert_eq!(body["reason"], "claim_mismatch:hotel");

    // The rest of the catalogue still works with the example policy.
    let a = channel_answer(&deployment, "1.2", "private-stream@42", None).await;
    assert_allowed(&a, "1.2", "private-stream@42");

    // A revoked guest token gets the same answer as any other bad token (token revocation covers
    // the guest chat).
    let (status, _) = admin(
        reqwest::Method::POST,
        &deployment,
        "/admin/tokens/revoke",
        Some(ADMIN_TOKEN),
        Some(json!({ "token": token })),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = guest_auth(
        &deployment,
        "grand-hotel",
        Some(&token),
        Body::Json(json!({ "socket_id": "123456.654321", "channel_name": channel })),
    )
    .await;
    assert_eq!(
        (status, body),
        (403, forbidden("Invalid token or booking not found"))
    );
}

#[test]
fn policy_tools_check_and_explain() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/policy.example.toml"
    );
    let (ok, stdout, stderr) = porter(&["policy", "check", example], &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("6 rules, 1 endpoints, valid"), "{stdout}");
    for line in [
        "signin:      POST /pusher/user-auth",
        "allow:       authenticated (never anonymous callers)",
        "user_data:   id, user_info from store, watchlist",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }

    let (ok, stdout, stderr) = porter(
        &[
            "policy",
            "explain",
            "private-hotel-grand-hotel-guest-chat-booking-BK-2025-ABC123",
            "--policy",
            example,
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    for line in [
        "rule:        guest-chat",
        "captures:    booking_id = BK-2025-ABC123, hotel_slug = grand-hotel",
        "allow:       claims(booking_id = {booking_id}, hotel = {hotel_slug})",
        "data:        user_id = guest_{booking_id}, info.name = Guest, info.booking_id = {booking_id}",
        "cache:       no",
        "served by:   POST /api/guest/hotel/{hotel_slug}/chat/pusher/auth only",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }

    // The built-in policy, with the routing of the system Porter replaces.
    let (ok, stdout, _) = porter(&["policy", "explain", "private-encrypted-stream@42"], &[]);
    assert!(ok);
    for line in [
        "rule:        private-stream",
        "queue:       auth/high",
        "time_limit:  4000 ms",
        "data:        retained events",
        "cache:       shared (ANNON) for 60 s",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }

    // A channel no rule matches, and a broken policy, fail with the reason and the field.
    let (ok, _, stderr) = porter(&["policy", "explain", "private-unknown@1"], &[]);
    assert!(!ok);
    assert!(stderr.contains("no_rule"), "{stderr}");
    let broken = std::env::temp_dir().join(format!("{}broken.toml", unique_prefix("tools")));
    std::fs::write(
        &broken,
        "[[rule]]\nname = \"r\"\npattern = \"private-{x}\"\nallow = { claims = { a = \"nope\" } }\n",
    )
    .unwrap();
    let (ok, _, stderr) = porter(&["policy", "check", broken.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(
        stderr.contains("rule #1 `r`: field `allow`") && stderr.contains("nope"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(broken);
}

/// `porter policy check` on a policy, as (exit code, stdout, stderr).
fn check_policy(source: &str) -> (Option<i32>, String, String) {
    let file = std::env::temp_dir().join(format!("{}policy.toml", unique_prefix("check")));
    std::fs::write(&file, source).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_porter"))
        .args(["policy", "check", file.to_str().unwrap()])
        .env_clear()
        .output()
        .expect("run porter");
    let _ = std::fs::remove_file(file);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn policy_check_says_which_servers_the_private_data_setting_works_with() {
    // The example's guest chat signs its member data into `channel_data`, as the system
    // Porter replaces did: only Pusher's own servers accept that.
    let (code, stdout, stderr) = check_policy(&example_policy());
    assert_eq!(code, Some(0), "{stderr}");
    let signed = stdout
        .lines()
        .find(|l| l.contains("sign their data into `channel_data`"))
        .unwrap_or_else(|| panic!("no line for signed private data in\n{stdout}"));
    assert!(signed.contains("`guest-chat`"), "{signed}");
    assert!(signed.contains("sockudo and soketi refuse"), "{signed}");
    assert!(signed.contains("private_data = \"events\""), "{signed}");
    let events = stdout
        .lines()
        .find(|l| l.contains("unsigned `events` field"))
        .unwrap_or_else(|| panic!("no line for events in\n{stdout}"));
    assert!(events.contains("every Pusher-protocol server"), "{events}");
    assert!(!events.contains("`guest-chat`"), "{events}");

    // Only `events` in use: no warning line at all.
    let plain = "[[rule]]\nname = \"p\"\npattern = \"private-x-{id}\"\nallow = \"authenticated\"\n";
    let (code, stdout, _) = check_policy(plain);
    assert_eq!(code, Some(0));
    assert!(!stdout.contains("channel_data"), "{stdout}");
    assert!(
        stdout.contains("`p` carry data in an unsigned `events` field"),
        "{stdout}"
    );
}

#[test]
fn policy_check_refuses_unsafe_policies_in_one_line() {
    // Issue 10, findings 2, 4, 5, 8 and 9: each was accepted before (1e30 panicked).
    let rule = |name: &str, body: &str| format!("[[rule]]\nname = \"{name}\"\n{body}\n");
    for (source, needle) in [
        (
            rule(
                "shared-hook",
                "pattern = \"private-x@{object_id}\"\nallow = { any_of = [{ webhook = \"http://h/x\" }, \"anyone\"] }\ncache = { scope = \"anonymous\" }",
            ),
            "field `cache`: scope `anonymous`",
        ),
        (
            rule(
                "any-member",
                "pattern = \"presence-x@{object_id}\"\nallow = \"authenticated\"\ndata = { user_id = \"{object_id}\" }",
            ),
            "field `data.user_id`: `{object_id}`: `{object_id}` is not pinned",
        ),
        (
            rule(
                "user-capture",
                "pattern = \"presence-x@{user_id}\"\nallow = \"authenticated\"",
            ),
            "field `pattern`: a capture may not be named `user_id`",
        ),
        (
            rule(
                "cached-claims",
                "pattern = \"private-t-{team}\"\nallow = { claims = { team = \"team\" } }\ncache = { scope = \"user\" }",
            ),
            "field `cache`: the rule reads token claims",
        ),
        (
            rule(
                "forever",
                "pattern = \"private-x@{object_id}\"\nallow = \"anyone\"\ntime_limit = 1e30",
            ),
            "field `time_limit`: must be from 1 ms to 60 s",
        ),
        (
            rule(
                "host-hook",
                "pattern = \"private-x@{object_id}\"\nallow = { webhook = \"http://{object_id}.app/x\" }",
            ),
            "field `allow`: webhook url `http://{object_id}.app/x` has a `{…}` in its authority",
        ),
    ] {
        let name = source.split('"').nth(1).unwrap().to_owned();
        let (code, stdout, stderr) = check_policy(&source);
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert_eq!(stdout, "", "{name}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("rule #1 `{name}`: {needle}")),
            "{name}: {stderr}"
        );
    }

    // A name with a newline in it cannot split the line.
    let (code, _, stderr) =
        check_policy("[[rule]]\nname = \"a\\nb\"\npattern = \"private-x\"\nallow = \"nobody\"\n");
    assert_eq!(code, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("rule #1 `a\\nb`: field `allow`"),
        "{stderr}"
    );

    // The gateway, the worker and `porter dev` load policies the same way: exit 2, one line,
    // before they connect to anything.
    let file = std::env::temp_dir().join(format!("{}forever.toml", unique_prefix("start")));
    std::fs::write(
        &file,
        rule(
            "forever",
            "pattern = \"private-x@{object_id}\"\nallow = \"anyone\"\ntime_limit = 1e30",
        ),
    )
    .unwrap();
    for command in ["worker", "dev"] {
        let output = Command::new(env!("CARGO_BIN_EXE_porter"))
            .args([command, "--policy", file.to_str().unwrap()])
            .env_clear()
            .output()
            .expect("run porter");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{command}: {stderr}");
        assert!(
            stderr.contains("rule #1 `forever`: field `time_limit`"),
            "{command}: {stderr}"
        );
    }
    let _ = std::fs::remove_file(file);
}

#[test]
fn policy_check_says_whether_user_authentication_is_on() {
    let rule = "[[rule]]\nname = \"r\"\npattern = \"private-{x}\"\nallow = \"anyone\"\n";
    let (code, stdout, stderr) = check_policy(rule);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("signin:      off (no [signin] section)"),
        "{stdout}"
    );
    let (code, _, stderr) = check_policy(&format!("{rule}[signin]\nallow = \"member\"\n"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("rule [signin]: field `allow`") && stderr.lines().count() == 1,
        "{stderr}"
    );
}
