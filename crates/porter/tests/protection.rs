//! Abuse protection and global presence end to end, over the real RabbitMQ and Redis:
//! rate limits shared by gateway replicas, Pusher webhooks (forgery, replay, presence,
//! cache upkeep), heartbeats, the in-flight cap, CORS and header limits, slow bodies and
//! actix's own refusals over raw TCP, and a whole flow whose captured logs must not contain
//! the bearer token. Every test has its own prefixes.
//!
//! Over 500 lines on purpose: each `tests/*.rs` file is its own test binary, linked against the
//! whole workspace, and on the 2-core CI machine every extra binary costs a link of tens of
//! seconds, so the end-to-end tests are grouped in a few files.

mod common;

use std::time::Duration;

use common::*;
use hmac::{Hmac, Mac};
use redis::AsyncCommands;
use serde_json::{Value, json};
use sha2::Sha256;

/// `private-user@{id}` carries the online status of user `{id}`, uncached so every request
/// reads the current presence.
const PRESENCE_POLICY: &str = r#"
[[rule]]
name = "presence"
pattern = "presence-{feature}@{object_id}"
queue = "auth/high"
time_limit = 2
expires = 2
allow = "authenticated"

[[rule]]
name = "user-online"
pattern = "private-user@{object_id}"
time_limit = 2
expires = 2
allow = "anyone"
data = { online = true }

[[rule]]
name = "private"
pattern = "private-{feature}@{object_id}"
time_limit = 2
expires = 2
allow = "anyone"
data = { events = true }
cache = { scope = "anonymous", ttl = 60 }
"#;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn webhook_signature(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn webhook_body(time_ms: u64, events: Value) -> String {
    json!({ "time_ms": time_ms, "events": events }).to_string()
}

/// Posts a webhook signed with `secret` under `key`.
async fn post_webhook(
    deployment: &Deployment,
    key: &str,
    secret: &str,
    body: &str,
) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(deployment.url("/pusher/webhook"))
        .header("content-type", "application/json")
        .header("X-Pusher-Key", key)
        .header("X-Pusher-Signature", webhook_signature(secret, body))
        .body(body.to_owned())
        .send()
        .await
        .expect("webhook request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The online status of `user` as a client sees it: the `user.online` event of
/// `private-user@{user}`.
async fn online_via_channel(deployment: &Deployment, user: &str) -> bool {
    let channel = format!("private-user@{user}");
    let url = deployment.batch_url("123.456", &[&channel]);
    let response = reqwest::get(&url).await.expect("batch request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let events = body[&channel]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {body}"));
    let event = events
        .iter()
        .find(|e| e["event"] == "user.online")
        .unwrap_or_else(|| panic!("no user.online in {body}"));
    assert_eq!(event["data"]["user_id"], user);
    event["data"]["online"].as_bool().expect("online flag")
}

async fn get(url: &str, token: Option<&str>, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.expect("request")
}

async fn metrics(deployment: &Deployment) -> String {
    reqwest::get(deployment.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_shared_by_two_gateways_on_one_redis() {
    // 4 per minute: nothing refills during the test.
    let first = Deployment::new("ratelimit").with_env("PORTER_RATE_LIMIT_USER", "4/m");
    let second = first.sibling();
    let _gateways = [first.gateway(), second.gateway()];
    first.wait_ready().await;
    second.wait_ready().await;

    // A public channel is refused in the batch without any task: no worker needed.
    let token = token("7", &[]);
    let mut statuses = Vec::new();
    for i in 0..4 {
        let deployment = if i % 2 == 0 { &first } else { &second };
        let url = deployment.batch_url("1.1", &["public-x"]);
        statuses.push(get(&url, Some(&token), &[]).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200]);
    for deployment in [&first, &second] {
        let response = get(
            &deployment.batch_url("1.1", &["public-x"]),
            Some(&token),
            &[],
        )
        .await;
        assert_eq!(response.status(), 429);
        let retry: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=15).contains(&retry), "Retry-After {retry}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "rate_limited");
    }
    // The single-channel endpoint shares the budget.
    let refused = reqwest::Client::new()
        .post(second.url("/pusher/auth"))
        .bearer_auth(&token)
        .form(&[("socket_id", "1.1"), ("channel_name", "public-x")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);

    // Another user has a budget of their own; anonymous callers are not user-limited.
    let other = token_for_other_user();
    let url = first.batch_url("1.1", &["public-x"]);
    assert_eq!(get(&url, Some(&other), &[]).await.status(), 200);
    assert_eq!(get(&url, None, &[]).await.status(), 200);

    let mut redis = first.redis().await;
    let bucket = format!("{}ratelimit:user:7", first.prefix);
    let ttl: i64 = redis.pttl(&bucket).await.unwrap();
    assert!(ttl > 0, "the bucket expires by itself ({ttl})");
    assert!(metrics(&first).await.contains("rule=\"rate_limit_user\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_spend_the_ip_budget_of_every_gateway() {
    // 3 per minute: nothing refills during the test.
    let first = Deployment::new("ratelimit-authfail").with_env("PORTER_RATE_LIMIT_IP", "3/m");
    let second = first.sibling();
    let _gateways = [first.gateway(), second.gateway()];
    first.wait_ready().await;
    second.wait_ready().await;

    // Two guesses at a token on the first gateway, one at the admin token on the second...
    let url = first.batch_url("1.1", &["public-x"]);
    assert_eq!(
        get(&url, Some("guessed.token.value"), &[]).await.status(),
        401
    );
    assert_eq!(
        get(&url, Some("another.guessed.token"), &[]).await.status(),
        401
    );
    let admin = reqwest::Client::new()
        .post(second.url("/admin/tokens/revoke"))
        .bearer_auth("guessed-admin-token")
        .json(&json!({"jti": "j"}))
        .send()
        .await
        .unwrap();
    assert!(admin.status().is_client_error(), "{}", admin.status());
    assert_ne!(admin.status(), 429);
    // ...spent the IP's budget on both: even a good token waits now.
    for deployment in [&first, &second] {
        let url = deployment.batch_url("1.1", &["public-x"]);
        let response = get(&url, Some(&token("7", &[])), &[]).await;
        assert_eq!(response.status(), 429);
    }
    assert!(metrics(&first).await.contains("rule=\"rate_limit_ip\""));
}

fn token_for_other_user() -> String {
    token("8", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ip_limit_believes_forwarded_for_only_from_trusted_proxies() {
    let trusting = Deployment::new("iplimit")
        .with_env("PORTER_RATE_LIMIT_IP", "2/m")
        .with_env("PORTER_TRUSTED_PROXIES", "127.0.0.1/32,::1");
    let mut untrusting = trusting.sibling();
    untrusting
        .extra_env
        .retain(|(k, _)| k != "PORTER_TRUSTED_PROXIES");
    let _gateways = [trusting.gateway(), untrusting.gateway()];
    trusting.wait_ready().await;
    untrusting.wait_ready().await;

    let url = trusting.batch_url("1.1", &["public-x"]);
    let from = |ip: &'static str| [("X-Forwarded-For", ip)];
    assert_eq!(get(&url, None, &from("203.0.113.1")).await.status(), 200);
    assert_eq!(get(&url, None, &from("203.0.113.1")).await.status(), 200);
    assert_eq!(get(&url, None, &from("203.0.113.1")).await.status(), 429);
    // Another client behind the same proxy has its own budget.
    assert_eq!(get(&url, None, &from("203.0.113.2")).await.status(), 200);
    // A spoofed leftmost hop does not help: the proxy appended the real client.
    assert_eq!(
        get(&url, None, &from("198.51.100.9, 203.0.113.1"))
            .await
            .status(),
        429
    );

    // Without trusted proxies the header is ignored: every request is 127.0.0.1's.
    let url = untrusting.batch_url("1.1", &["public-x"]);
    assert_eq!(get(&url, None, &from("192.0.2.1")).await.status(), 200);
    assert_eq!(get(&url, None, &from("192.0.2.2")).await.status(), 200);
    assert_eq!(get(&url, None, &from("192.0.2.3")).await.status(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_id_limit_counts_per_client_id() {
    let deployment = Deployment::new("clientlimit").with_env("PORTER_RATE_LIMIT_CLIENT", "2/m");
    let _gateway = deployment.gateway();
    deployment.wait_ready().await;
    let url = deployment.batch_url("1.1", &["public-x"]);
    let a = [("X-Client-ID", "client-a")];
    assert_eq!(get(&url, None, &a).await.status(), 200);
    assert_eq!(get(&url, None, &a).await.status(), 200);
    let limited = get(&url, None, &a).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(
        get(&url, None, &[("X-Client-ID", "client-b")])
            .await
            .status(),
        200
    );
    // No client id: no client bucket to charge.
    for _ in 0..3 {
        assert_eq!(get(&url, None, &[]).await.status(), 200);
    }
    assert!(
        metrics(&deployment)
            .await
            .contains("porter_protection_refusals_total{rule=\"rate_limit_client\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_webhooks_change_nothing() {
    let deployment = Deployment::new("webhook-forgery").with_policy(PRESENCE_POLICY);
    let _gateway = deployment.gateway();
    let _worker = deployment.worker();
    deployment.wait_ready().await;
    let mut redis = deployment.redis().await;
    let channels_key = format!("{}presence-joined:42", deployment.prefix);

    let added = webhook_body(
        now_ms(),
        json!([{"name": "member_added", "channel": "presence-chat@1", "user_id": "42"}]),
    );
    // Signed with the wrong secret, under the wrong key, unsigned.
    let (status, body) = post_webhook(&deployment, KEY, "not-the-secret", &added).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_webhook_signature");
    let (status, _) = post_webhook(&deployment, "other-key", SECRET, &added).await;
    assert_eq!(status, 401);
    let unsigned = reqwest::Client::new()
        .post(deployment.url("/pusher/webhook"))
        .body(added.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let exists: bool = redis.exists(&channels_key).await.unwrap();
    assert!(!exists, "a forged webhook changed presence");
    assert!(!online_via_channel(&deployment, "42").await);

    // Correctly signed but old: a replay of a captured webhook.
    let old = webhook_body(
        now_ms() - 10 * 60 * 1000,
        json!([{"name": "member_added", "channel": "presence-chat@1", "user_id": "42"}]),
    );
    let (status, body) = post_webhook(&deployment, KEY, SECRET, &old).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "webhook_stale");
    assert!(!online_via_channel(&deployment, "42").await);

    // The genuine one applies; sent again within the window it is not applied twice, so a
    // replay after `member_removed` cannot bring the user back online.
    let (status, body) = post_webhook(&deployment, KEY, SECRET, &added).await;
    assert_eq!((status, &body["applied"]), (200, &json!(1)), "{body}");
    assert!(online_via_channel(&deployment, "42").await);
    let removed = webhook_body(
        now_ms(),
        json!([{"name": "member_removed", "channel": "presence-chat@1", "user_id": "42"}]),
    );
    let (status, _) = post_webhook(&deployment, KEY, SECRET, &removed).await;
    assert_eq!(status, 200);
    assert!(!online_via_channel(&deployment, "42").await);
    let (status, body) = post_webhook(&deployment, KEY, SECRET, &added).await;
    assert_eq!(status, 200);
    assert_eq!(body["replay"], true, "{body}");
    assert!(!online_via_channel(&deployment, "42").await);

    let text = metrics(&deployment).await;
    assert!(text.contains("porter_auth_failures_total{reason=\"invalid_webhook_signature\"} 3"));
    assert!(text.contains("porter_auth_failures_total{reason=\"webhook_stale\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_added_and_removed_flip_the_online_status() {
    let deployment = Deployment::new("webhook-presence").with_policy(PRESENCE_POLICY);
    let _gateway = deployment.gateway();
    let _worker = deployment.worker();
    deployment.wait_ready().await;

    assert!(!online_via_channel(&deployment, "77").await);
    // Member of two presence channels of different apps (global presence: one status for both).
    let both = webhook_body(
        now_ms(),
        json!([
            {"name": "member_added", "channel": "presence-chat@1", "user_id": "77"},
            {"name": "member_added", "channel": "presence-stream@9", "user_id": 77},
            {"name": "channel_occupied", "channel": "presence-chat@1"},
        ]),
    );
    let (status, body) = post_webhook(&deployment, KEY, SECRET, &both).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], 2);
    assert!(online_via_channel(&deployment, "77").await);
    assert!(!online_via_channel(&deployment, "78").await, "only user 77");

    let left_one = webhook_body(
        now_ms(),
        json!([{"name": "member_removed", "channel": "presence-chat@1", "user_id": "77"}]),
    );
    assert_eq!(
        post_webhook(&deployment, KEY, SECRET, &left_one).await.0,
        200
    );
    assert!(
        online_via_channel(&deployment, "77").await,
        "still in presence-stream@9"
    );

    let left_all = webhook_body(
        now_ms(),
        json!([{"name": "member_removed", "channel": "presence-stream@9", "user_id": "77"}]),
    );
    assert_eq!(
        post_webhook(&deployment, KEY, SECRET, &left_all).await.0,
        200
    );
    assert!(!online_via_channel(&deployment, "77").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_marks_the_user_online_for_the_ttl() {
    let deployment = Deployment::new("heartbeat")
        .with_policy(PRESENCE_POLICY)
        .with_env("PORTER_PRESENCE_TTL", "30");
    let _gateway = deployment.gateway();
    let _worker = deployment.worker();
    deployment.wait_ready().await;
    let client = reqwest::Client::new();
    let url = deployment.url("/presence/heartbeat");

    let anonymous = client.post(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"], "unauthenticated");
    let bad = client
        .post(&url)
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert!(!online_via_channel(&deployment, "51").await);

    let ok = client
        .post(&url)
        .bearer_auth(token("51", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(online_via_channel(&deployment, "51").await);
    let mut redis = deployment.redis().await;
    let key = format!("{}online:51", deployment.prefix);
    let ttl: i64 = redis.ttl(&key).await.unwrap();
    assert!((1..=30).contains(&ttl), "{ttl}");
    // When the flag expires (here: deleted) the user is offline again.
    let _: () = redis.del(&key).await.unwrap();
    assert!(!online_via_channel(&deployment, "51").await);
    assert!(
        metrics(&deployment)
            .await
            .contains("reason=\"unauthenticated\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_vacated_drops_the_cached_data_of_that_channel() {
    let deployment = Deployment::new("vacated");
    let _gateway = deployment.gateway();
    deployment.wait_ready().await;
    let mut redis = deployment.redis().await;
    let vacated = format!("{}channel-data-v2:private-chat@9", deployment.prefix);
    let other = format!("{}channel-data-v2:private-chat@10", deployment.prefix);
    for key in [&vacated, &other] {
        let _: () = redis.hset(key, "ANNON", "{}").await.unwrap();
    }
    // The encrypted twin shares the cache entry (its cache name drops `-encrypted`).
    let body = webhook_body(
        now_ms(),
        json!([{"name": "channel_vacated", "channel": "private-encrypted-chat@9"}]),
    );
    let (status, answer) = post_webhook(&deployment, KEY, SECRET, &body).await;
    assert_eq!(status, 200, "{answer}");
    let gone: bool = redis.exists(&vacated).await.unwrap();
    let kept: bool = redis.exists(&other).await.unwrap();
    assert!(!gone, "the vacated channel's cache entry is dropped");
    assert!(kept, "other channels keep theirs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_cap_refuses_a_burst_with_503_never_500() {
    // No worker: admitted tasks stay in flight until their deadline (2 s + grace).
    let deployment = Deployment::new("inflight").with_env("PORTER_MAX_TASKS_IN_FLIGHT", "3");
    let _gateway = deployment.gateway();
    deployment.wait_ready().await;

    let client = reqwest::Client::new();
    let requests = (0..20).map(|i| {
        let url = deployment.batch_url("1.1", &[&format!("private-order@{i}")]);
        let client = client.clone();
        async move {
            let response = client.get(&url).send().await.expect("request");
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, retry_after, body)
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    let mut admitted = 0;
    let mut refused = 0;
    for (status, retry_after, body) in &answers {
        match status {
            200 => {
                admitted += 1;
                let channel = body.as_object().unwrap().values().next().unwrap();
                assert_eq!(channel["reason"], "timeout", "{body}");
            }
            503 => {
                refused += 1;
                assert_eq!(body["error"], "overloaded", "{body}");
                assert_eq!(retry_after.as_deref(), Some("1"));
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(
        admitted >= 3,
        "the first requests up to the cap are admitted"
    );
    assert!(refused >= 1, "a burst past the cap is refused");
    assert_eq!(admitted + refused, 20);

    let text = metrics(&deployment).await;
    assert!(text.contains("porter_tasks_in_flight_cap 3"), "{text}");
    assert!(text.contains("porter_tasks_in_flight 0"), "{text}");
    assert!(text.contains(&format!(
        "porter_protection_refusals_total{{rule=\"tasks_in_flight_cap\"}} {refused}"
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_request_size_limits() {
    let deployment = Deployment::new("cors")
        .with_env("PORTER_CORS_ORIGINS", "https://app.example")
        .with_env("PORTER_MAX_HEADER_BYTES", "4096");
    let _gateway = deployment.gateway();
    deployment.wait_ready().await;
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, deployment.url("/pusher/auth"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type",
            )
            .send()
    };

    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(allowed.status(), 204);
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );

    let denied = preflight("https://evil.example").await.unwrap();
    assert_eq!(denied.status(), 403);
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    // Actual requests from an allowed origin carry the header, errors included.
    let refused = client
        .post(deployment.url("/pusher/auth"))
        .header("Origin", "https://app.example")
        .form(&[("socket_id", "bad")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let foreign = client
        .get(deployment.url("/healthz"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(
        foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    // Headers past the limit: 431 with a JSON error, not a dropped connection or a 500.
    let big = client
        .get(deployment.url("/healthz"))
        .header("X-Padding", "a".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 431);
    let body: Value = big.json().await.unwrap();
    assert_eq!(body["error"], "headers_too_large");

    // A declared body past the limit: 413 with a JSON error, before any handler runs.
    let huge = client
        .post(deployment.url("/pusher/auth"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "socket_id=1.1&channel_name={}",
            "a".repeat(70 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let body: Value = huge.json().await.unwrap();
    assert_eq!(body["error"], "body_too_large");

    // Channels per request are capped (PORTER_MAX_CHANNELS, 100 by default).
    let names: Vec<String> = (0..101).map(|i| format!("private-a@{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let response = client
        .get(deployment.batch_url("1.1", &refs))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "too_many_channels");
}

/// Sends `request` over a fresh TCP connection, then (when `trickle`) a one-byte chunk a
/// second, and reads until the gateway closes the connection. Panics past `bound`: a
/// connection the gateway never answers or never closes is the failure under test, not a
/// slow machine.
async fn raw_exchange(port: u16, request: &[u8], trickle: bool, bound: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(request).await.expect("send");
    let (mut reader, mut writer) = stream.into_split();
    // Holds the write half open until the answer is read: dropping it would send a FIN,
    // which the gateway rightly reads as a body cut short.
    let trickler = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            // One-byte chunks: a chunked body that is valid and never ends.
            if trickle && writer.write_all(b"1\r\na\r\n").await.is_err() {
                break;
            }
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(bound, reader.read_to_end(&mut answer)).await;
    trickler.abort();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    match read {
        Ok(_) => answer,
        Err(_) => panic!("no answer and close within {bound:?}; got {answer:?}"),
    }
}

/// A whole answer of the gateway, status line to body: `status`, a JSON body with `code`,
/// its length declared, and the connection closed.
fn assert_json_refusal(answer: &str, status: u16, code: &str) {
    let (head, body) = answer.split_once("\r\n\r\n").expect(answer);
    assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
    assert!(head.contains("content-type: application/json"), "{answer}");
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{answer}"
    );
    assert!(head.contains("connection: close"), "{answer}");
    let body: Value = serde_json::from_str(body).expect(answer);
    assert_eq!(body["error"], code, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_get_408_and_actix_refusals_answer_json() {
    let deployment = Deployment::new("edge")
        .with_env("PORTER_BODY_TIMEOUT_MS", "300")
        // Long enough that a loaded CI machine still delivers every complete head in time.
        .with_env("PORTER_HEAD_TIMEOUT_MS", "1500");
    let _gateway = deployment.gateway();
    deployment.wait_ready().await;
    let port = deployment.port;
    // Far above the 300 ms deadline; without it these connections stay open for minutes.
    let bound = Duration::from_secs(15);
    let head = "POST /pusher/auth HTTP/1.1\r\nHost: porter\r\n\
                Content-Type: application/x-www-form-urlencoded\r\n";

    // A declared length the client never sends.
    let declared = format!("{head}Content-Length: 100\r\n\r\nsocket_id=1.2");
    let answer = raw_exchange(port, declared.as_bytes(), false, bound).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");
    // A chunked body that stalls, trickling a byte now and then: answered, and the
    // connection closed rather than drained as slowly as the client likes.
    let chunked = format!("{head}Transfer-Encoding: chunked\r\n\r\nd\r\nsocket_id=1.2\r\n");
    let answer = raw_exchange(port, chunked.as_bytes(), true, bound).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");

    // A chunked body over the limit is refused by the extractor, in JSON.
    let big = "a".repeat(70 * 1024);
    let over = format!(
        "{head}Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let answer = raw_exchange(port, over.as_bytes(), false, bound).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/json"), "{answer}");
    assert!(answer.contains(r#""error":"body_too_large""#), "{answer}");
    // No route: JSON too.
    let answer = raw_exchange(
        port,
        b"GET /nope HTTP/1.1\r\nHost: porter\r\nConnection: close\r\n\r\n",
        false,
        bound,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains(r#""error":"not_found""#), "{answer}");
    // What actix-http refuses before the app runs (a head it cannot parse, over 96 headers,
    // one that never completes) goes out in the JSON shape too, and is counted.
    let answer = raw_exchange(port, b"GARBAGE\r\n\r\n", false, bound).await;
    assert_json_refusal(&answer, 400, "invalid_request");
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let crowded = format!("GET /healthz HTTP/1.1\r\nHost: porter\r\n{many}\r\n");
    let answer = raw_exchange(port, crowded.as_bytes(), false, bound).await;
    assert_json_refusal(&answer, 431, "headers_too_large");
    let unfinished = b"GET /healthz HTTP/1.1\r\nHost: porter\r\n";
    let answer = raw_exchange(port, unfinished, false, bound).await;
    assert_json_refusal(&answer, 408, "request_timeout");

    let metrics = metrics(&deployment).await;
    for series in [
        "porter_protection_refusals_total{rule=\"body_timeout\"} 2",
        "porter_protection_refusals_total{rule=\"max_body_bytes\"} 1",
        "porter_protection_refusals_total{rule=\"request_head\"} 3",
        "porter_http_requests_total{endpoint=\"auth\",status=\"408\"} 2",
        "porter_http_requests_total{endpoint=\"other\",status=\"404\"} 1",
        "porter_http_requests_total{endpoint=\"request_head\",status=\"400\"} 1",
        "porter_http_requests_total{endpoint=\"request_head\",status=\"408\"} 1",
        "porter_http_requests_total{endpoint=\"request_head\",status=\"431\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_secret_appears_in_the_logs_of_a_whole_flow() {
    let deployment = Deployment::new("nolog")
        .with_policy(PRESENCE_POLICY)
        .with_env("RUST_LOG", "debug")
        .with_env("PORTER_RATE_LIMIT_USER", "4/m")
        .capture_logs();
    let mut gateway = deployment.gateway();
    let mut worker = deployment.worker();
    deployment.wait_ready().await;
    let client = reqwest::Client::new();

    let token = token(
        "9001",
        &[
            ("name", json!("Nine")),
            ("email", json!("nine@example.com")),
        ],
    );
    // A well-formed token signed with another key: refused, and must not be logged either.
    let forged = {
        let (head, _) = token.rsplit_once('.').unwrap();
        format!("{head}.AAAAbogusSignatureAAAAAAAAAAAAAAAAAAAAAAAAAA")
    };
    // A session opened with the token (`POST /auth`): its id must not be logged either.
    let session = client
        .post(deployment.url("/auth"))
        .json(&json!({"email": "nine@example.com", "token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), 200);
    let session_id = session.json::<Value>().await.unwrap()["sessionId"]
        .as_str()
        .expect("a session id")
        .to_owned();
    let mut must_not_appear: Vec<String> = vec![
        token.clone(),
        forged.clone(),
        SECRET.to_owned(),
        JWT_SECRET.to_owned(),
        MASTER_KEY.to_owned(),
        session_id.clone(),
    ];
    // The token's signature alone must not leak either.
    must_not_appear.push(token.rsplit_once('.').unwrap().1.to_owned());

    let channels = ["private-user@9001", "presence-chat@1", "private-stream@5"];
    let url = deployment.batch_url("123.456", &channels);
    let response = get(&url, Some(&token), &[("X-Client-ID", "web-client")]).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["presence-chat@1"]["auth"].is_string(), "{body}");

    let single = client
        .post(deployment.url("/pusher/auth"))
        .bearer_auth(&token)
        .form(&[
            ("socket_id", "123.456"),
            ("channel_name", "private-stream@5"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(single.status(), 200);
    let heartbeat = client
        .post(deployment.url("/presence/heartbeat"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(heartbeat.status(), 200);
    let by_session = get(&url, None, &[("X-Session-ID", session_id.as_str())]).await;
    assert_eq!(by_session.status(), 200, "the session identifies user 9001");
    // Past the rate limit, a refusal is audited (who, rule, why), without the token.
    let limited = get(&url, Some(&token), &[]).await;
    assert_eq!(limited.status(), 429);
    // A channel refused by the policy (presence needs a user) is audited with its rule.
    let anonymous = get(
        &deployment.batch_url("123.456", &["presence-chat@2"]),
        None,
        &[],
    )
    .await;
    assert_eq!(anonymous.status(), 200);
    let refused = get(&url, Some(&forged), &[]).await;
    assert_eq!(refused.status(), 401);
    let hook = webhook_body(
        now_ms(),
        json!([{"name": "member_added", "channel": "presence-chat@1", "user_id": "9001"}]),
    );
    assert_eq!(post_webhook(&deployment, KEY, SECRET, &hook).await.0, 200);
    assert_eq!(post_webhook(&deployment, KEY, "wrong", &hook).await.0, 401);

    // Stop both processes so everything they buffered is written.
    gateway.terminate(Duration::from_secs(5));
    worker.terminate(Duration::from_secs(10));
    let logs = deployment.captured_logs();
    assert!(
        logs.contains("porter::audit") && logs.contains("auth_failed"),
        "the capture holds the debug and audit logs:\n{logs}"
    );
    assert!(logs.contains("rate_limit_user"), "the 429 is audited");
    assert!(logs.contains("9001"), "audit lines name the user");
    assert!(
        logs.lines().any(|l| l.contains("porter::audit")
            && l.contains("presence-chat@2")
            && l.contains("unauthenticated")),
        "the policy refusal is audited with its channel and reason"
    );
    for secret in &must_not_appear {
        assert!(
            !logs.contains(secret.as_str()),
            "a token or secret appears in the logs: {}…",
            &secret[..secret.len().min(12)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn porter_dev_counts_rate_limits_in_memory() {
    let port = free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_porter"))
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--rate-limit-ip",
            "2/m",
            "--cors-origins",
            "https://app.example",
        ])
        .env_clear()
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start porter dev");
    let _dev = Proc {
        child,
        name: "dev".into(),
    };
    let base = format!("http://127.0.0.1:{port}");
    let healthz = format!("{base}/healthz");
    eventually("porter dev to listen", Duration::from_secs(20), || async {
        reqwest::get(&healthz)
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;
    let url =
        format!("{base}/pusher/batch-authenticate?app_id={APP_ID}&socket_id=1.1&channels=public-x");
    assert_eq!(get(&url, None, &[]).await.status(), 200);
    assert_eq!(get(&url, None, &[]).await.status(), 200);
    let limited = get(&url, None, &[("Origin", "https://app.example")]).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    // Browsers can read the refusal: CORS headers ride on errors too.
    assert_eq!(
        limited.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}
