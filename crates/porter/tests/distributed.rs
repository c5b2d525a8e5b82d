//! The distributed path end to end: `porter gateway` and `porter worker` processes over the
//! real RabbitMQ and Redis. Every test uses its own queue and key prefixes.
//!
//! Over 500 lines on purpose: each `tests/*.rs` file is its own test binary, linked against the
//! whole workspace, and on the 2-core CI machine every extra binary costs a link of tens of
//! seconds, so the end-to-end tests are grouped in a few files.

/// Coalesced replies across versions, batched acks, a worker killed mid-window: part of this
/// binary, in a file of its own.
#[path = "distributed/coalesce.rs"]
mod coalesce;
mod common;
/// Forged tasks and replies, mixed versions, key rotation (docs/task-auth.md): part of this
/// binary, in a file of its own.
#[path = "distributed/task_auth.rs"]
mod task_auth;

use std::time::{Duration, Instant};

use common::*;
use porter_broker::now_ms;
use redis::AsyncCommands;
use serde_json::{Value, json};

/// A policy whose limits keep timing-dependent tests short.
const SHORT_POLICY: &str = r#"
[[rule]]
name = "presence"
pattern = "presence-{feature}@{object_id}"
queue = "auth/high"
time_limit = 0.5
expires = 0.5
allow = "authenticated"

[[rule]]
name = "slow"
pattern = "private-slow@{object_id}"
time_limit = 0.3
expires = 3
allow = { webhook = "http://127.0.0.1:PORT/slow" }

[[rule]]
name = "hook"
pattern = "private-hook-{verdict}@{object_id}"
time_limit = 5
expires = 10
allow = { webhook = "http://127.0.0.1:PORT/{verdict}" }

[[rule]]
name = "private"
pattern = "private-{feature}@{object_id}"
time_limit = 0.5
expires = 0.5
allow = "anyone"
data = { events = true }
cache = { scope = "anonymous", ttl = 60 }
"#;

fn short_policy(webhook_port: u16) -> String {
    SHORT_POLICY.replace("PORT", &webhook_port.to_string())
}

async fn get_json(url: &str, token: Option<&str>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_through_two_workers_is_signed_correctly() {
    let deployment = Deployment::new("batch");
    let _gateway = deployment.gateway();
    let _workers = [deployment.worker(), deployment.worker()];
    deployment.wait_ready().await;

    let mut redis = deployment.redis().await;
    let retained = format!("{}retained:private-stream@42", deployment.prefix);
    let _: () = redis
        .hset(&retained, "stream.online", r#"{"online":true}"#)
        .await
        .unwrap();
    let user = format!("{}user:7", deployment.prefix);
    let _: () = redis.hset(&user, "name", r#""Ann""#).await.unwrap();

    let token = token("7", &[("name", json!("Ann"))]);
    let channels = [
        "private-stream@42",
        "presence-stream@42",
        "private-encrypted-chat@9",
        "presence-chat@1",
    ];
    let url = deployment.batch_url("123.456", &channels);
    let (status, body) = get_json(&url, Some(&token)).await;
    assert_eq!(status, 200, "{body}");

    let private = &body["private-stream@42"];
    assert_eq!(
        private["auth"],
        expected_auth("123.456", "private-stream@42", None)
    );
    assert_eq!(
        private["events"],
        json!([{"event": "stream.online", "data": {"online": true}}])
    );
    assert!(
        private.get("channel_data").is_none(),
        "private channels sign over socket:channel only"
    );

    for channel in ["presence-stream@42", "presence-chat@1"] {
        let presence = &body[channel];
        let data = presence["channel_data"]
            .as_str()
            .expect("presence channel_data");
        assert_eq!(
            presence["auth"],
            expected_auth("123.456", channel, Some(data))
        );
        let member: Value = serde_json::from_str(data).unwrap();
        assert_eq!(
            member,
            json!({"user_id": "7", "user_info": {"name": "Ann"}})
        );
    }

    let encrypted = &body["private-encrypted-chat@9"];
    assert_eq!(
        encrypted["auth"],
        expected_auth("123.456", "private-encrypted-chat@9", None)
    );
    assert_eq!(
        encrypted["shared_secret"],
        "saHo25pnAgmUNRidTBy6Nupzu5Xo+CowRSHDELh3ML8="
    );

    // The worker wrote the shared cache entry of the private channel.
    let cache = format!("{}channel-data-v2:private-stream@42", deployment.prefix);
    let cached: Option<String> = redis.hget(&cache, "ANNON").await.unwrap();
    assert!(cached.expect("cache entry").contains("stream.online"));
    let ttl: i64 = redis.ttl(&cache).await.unwrap();
    assert!(ttl > 0 && ttl <= 60, "{ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_workers_uncached_channels_time_out() {
    let deployment = Deployment::new("noworker").with_policy(&short_policy(9));
    let _gateway = deployment.gateway();
    deployment.wait_ready().await;

    let token = token("7", &[]);
    let started = Instant::now();
    let url = deployment.batch_url("1.2", &["private-feed@1", "presence-feed@2"]);
    let (status, body) = get_json(&url, Some(&token)).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(body["private-feed@1"], json!({"reason": "timeout"}));
    assert_eq!(body["presence-feed@2"], json!({"reason": "timeout"}));
    // The batch deadline is 0.5 s expires + 0.25 s grace: it must not hang far beyond it.
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

    // Nothing stays pending: the gauge is back to zero.
    let metrics = reqwest::get(deployment.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("porter_tasks_pending 0"), "{metrics}");
    assert!(
        metrics.contains("porter_channels_total{outcome=\"timeout\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tasks_are_not_run_and_slow_authorizers_are_cut_off() {
    let hook = webhook_server().await;
    let deployment = Deployment::new("deadline").with_policy(&short_policy(hook));
    let _gateway = deployment.gateway();
    let _worker = deployment.worker();
    deployment.wait_ready().await;

    // A slow webhook (1.5 s) under a 0.3 s time limit.
    let (status, body) = get_json(&deployment.batch_url("1.2", &["private-slow@1"]), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["private-slow@1"],
        json!({"reason": "time limit exceeded"})
    );

    // A task published with a deadline already past is answered `expired` without running.
    let stop = tokio_util::sync::CancellationToken::new();
    let client = task_client(
        AMQP_URL,
        &deployment.prefix,
        Default::default(),
        stop.clone(),
    )
    .await;
    let task = private_task("private-feed@1", "private");
    let waiter = publish_one(&client, &task, Duration::from_secs(5), now_ms() - 1000).await;
    let reply = waiter
        .wait_until(tokio::time::Instant::now() + Duration::from_secs(5))
        .await
        .expect("a reply");
    assert_eq!(
        reply.reason.map(|r| r.to_string()).as_deref(),
        Some("expired")
    );
    // Had it run, it would have cached its result.
    let mut redis = deployment.redis().await;
    let cached: Option<String> = redis
        .hget(
            format!("{}channel-data-v2:private-feed@1", deployment.prefix),
            "ANNON",
        )
        .await
        .unwrap();
    assert_eq!(cached, None);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_hit_publishes_nothing() {
    let deployment = Deployment::new("cachehit").with_policy(&short_policy(9));
    let _gateway = deployment.gateway();
    deployment.wait_ready().await;

    // No worker runs: only the cache can answer.
    let mut redis = deployment.redis().await;
    let cache = format!("{}channel-data-v2:private-goal@5", deployment.prefix);
    // The entry a worker of this policy writes: the rule's stamp and the data.
    let policy = porter_core::policy::Policy::from_toml(&short_policy(9)).unwrap();
    let rule = policy.match_name("private-goal@5").unwrap().rule;
    let stamps = porter_core::cache::RuleStamps::of(&policy);
    let data: porter_core::wire::AuthData =
        serde_json::from_str(r#"{"events":[{"event":"goal.updated","data":{"p":1}}]}"#).unwrap();
    let entry = porter_core::cache::CachedDecision::encode(
        &rule.name,
        stamps.get(&rule.name).unwrap(),
        &data,
    )
    .unwrap();
    let _: () = redis.hset(&cache, "ANNON", entry).await.unwrap();
    let _: () = redis.expire(&cache, 60).await.unwrap();

    for socket in ["1.1", "2.2"] {
        let (status, body) =
            get_json(&deployment.batch_url(socket, &["private-goal@5"]), None).await;
        assert_eq!(status, 200);
        let channel = &body["private-goal@5"];
        // Re-signed for each socket.
        assert_eq!(
            channel["auth"],
            expected_auth(socket, "private-goal@5", None)
        );
        assert_eq!(channel["events"][0]["event"], "goal.updated");
    }
    let queue = format!("{}auth", deployment.prefix);
    assert_eq!(
        queue_depth(&queue),
        Some(0),
        "a hit must not publish a task"
    );
    let metrics = reqwest::get(deployment.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("porter_channels_total{outcome=\"cache_hit\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("porter_task_round_trip_seconds_count 0"),
        "{metrics}"
    );
}

/// Waits until a worker of the deployment answers (its consumer is up).
async fn until_a_worker_consumes(deployment: &Deployment) {
    eventually("a worker to consume", Duration::from_secs(10), || async {
        let (_, body) = get_json(
            &deployment.batch_url("1.1", &["private-hook-allow@0"]),
            None,
        )
        .await;
        body["private-hook-allow@0"].get("auth").map(drop)
    })
    .await;
}

/// Asks for `private-hook-slow@1`, whose `/slow` webhook answers after 1.5 s under the `hook`
/// rule's 5 s limit, and returns once a worker holds the task (0.5 s in).
async fn slow_task_in_hand(
    deployment: &Deployment,
    socket_id: &str,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let url = deployment.batch_url(socket_id, &["private-hook-slow@1"]);
    let request = tokio::spawn(async move { get_json(&url, None).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_leaves_it_to_another() {
    let hook = webhook_server().await;
    let mut deployment = Deployment::new("sigkill").with_policy(&short_policy(hook));
    deployment
        .extra_env
        .push(("PORTER_GRACE_MS".into(), "2000".into()));
    let _gateway = deployment.gateway();
    let mut doomed = deployment.worker();
    deployment.wait_ready().await;
    // Let the doomed worker connect and take the task before the survivor exists.
    until_a_worker_consumes(&deployment).await;
    // The worker is killed while it waits on the slow webhook, the task unacknowledged.
    let request = slow_task_in_hand(&deployment, "3.3").await;
    doomed.kill();
    let _survivor = deployment.worker();

    let (status, body) = request.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        body["private-hook-slow@1"]["auth"],
        expected_auth("3.3", "private-hook-slow@1", None),
        "{body}"
    );

    let (_, body) = get_json(
        &deployment.batch_url("4.4", &["private-hook-allow@2"]),
        None,
    )
    .await;
    assert_eq!(
        body["private-hook-allow@2"]["events"][0]["event"],
        "hook.said"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_task_in_hand_and_leaves_the_rest_to_others() {
    let hook = webhook_server().await;
    let deployment = Deployment::new("sigterm").with_policy(&short_policy(hook));
    let _gateway = deployment.gateway();
    let mut draining = deployment.worker();
    deployment.wait_ready().await;
    until_a_worker_consumes(&deployment).await;
    // SIGTERM arrives while the worker waits on the slow webhook.
    let in_hand = slow_task_in_hand(&deployment, "5.5").await;
    draining.signal_term();
    // Published after the signal: the draining worker must not take it.
    let url = deployment.batch_url("6.6", &["private-hook-allow@2"]);
    let after = tokio::spawn(async move { get_json(&url, None).await });

    let (status, body) = in_hand.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        body["private-hook-slow@1"]["auth"],
        expected_auth("5.5", "private-hook-slow@1", None),
        "the task in hand is finished and answered: {body}"
    );
    let exit = draining
        .terminate(Duration::from_secs(10))
        .expect("the worker exits after draining");
    assert!(exit.success(), "a drained worker exits cleanly: {exit:?}");

    // Nothing lost: the task published after SIGTERM waits in the queue for the next worker.
    let _next = deployment.worker();
    let (status, body) = after.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        body["private-hook-allow@2"]["auth"],
        expected_auth("6.6", "private-hook-allow@2", None),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_and_worker_recover_when_the_broker_drops_connections() {
    let deployment = Deployment::new("reconnect").with_policy(&short_policy(9));
    let _gateway = deployment.gateway();
    let _worker = deployment.worker();
    deployment.wait_ready().await;
    let token = token("7", &[]);
    let works = || async {
        // A presence channel is never cached: it needs the whole path.
        let socket = format!("{}.1", rand_digits());
        let (status, body) = get_json(
            &deployment.batch_url(&socket, &["presence-x@1"]),
            Some(&token),
        )
        .await;
        (status == 200 && body["presence-x@1"].get("auth").is_some()).then_some(())
    };
    eventually("the first round trip", Duration::from_secs(10), works).await;

    // Only this test's gateway (its task and events connections) and worker: other tests run
    // in parallel on the same broker.
    assert_eq!(close_connections_of(&deployment.prefix), 3);

    eventually(
        "recovery after the broker closed every connection",
        Duration::from_secs(30),
        works,
    )
    .await;
}

fn rand_digits() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_documented_errors_never_500() {
    let deployment = Deployment::new("badinput").with_policy(&short_policy(9));
    let _gateway = deployment.gateway();
    deployment.wait_ready().await;
    let client = reqwest::Client::new();
    let base = deployment.url("/pusher/batch-authenticate");

    let cases: Vec<(String, u16, &str)> = vec![
        (
            format!("{base}?app_id={APP_ID}&socket_id=1.1%0A&channels=private-a@1"),
            400,
            "invalid_socket_id",
        ),
        (
            format!("{base}?app_id={APP_ID}&socket_id=%3A1.1&channels=private-a@1"),
            400,
            "invalid_socket_id",
        ),
        (
            format!("{base}?app_id={APP_ID}&channels=private-a@1"),
            400,
            "missing_socket_id",
        ),
        (
            format!("{base}?app_id=999&socket_id=1.1&channels=private-a@1"),
            404,
            "unknown_app",
        ),
        (
            format!("{base}?socket_id=1.1&channels=private-a@1"),
            400,
            "missing_app_id",
        ),
        (
            format!("{base}?app_id={APP_ID}&socket_id=1.1"),
            400,
            "missing_channels",
        ),
        (
            format!(
                "{base}?app_id={APP_ID}&socket_id=1.1{}",
                (0..101)
                    .map(|i| format!("&channels=private-a@{i}"))
                    .collect::<String>()
            ),
            400,
            "too_many_channels",
        ),
    ];
    for (url, status, code) in cases {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{url}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], code, "{url}");
    }

    // Malformed and expired tokens: 401 for the whole request.
    let url = deployment.batch_url("1.1", &["private-a@1"]);
    for bad in ["garbage", "a.b.c", ""] {
        let response = client
            .get(&url)
            .header("Authorization", format!("Bearer {bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "{bad:?}");
    }
    let expired = token("7", &[("exp", json!(1_000_000))]);
    let response = client.get(&url).bearer_auth(expired).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "token_expired"
    );

    // Invalid channel names are per-channel reasons; duplicates are answered once.
    let long = format!("private-{}", "a".repeat(300));
    let url = deployment.batch_url(
        "1.1",
        &[
            "private-a%20b@1",
            "public-x",
            &long,
            "private-unknown",
            "private-unknown",
        ],
    );
    let (status, body) = get_json(&url, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["private-a b@1"], json!({"reason": "invalid_channel"}));
    assert_eq!(body["public-x"], json!({"reason": "public_channel"}));
    assert_eq!(body[&long], json!({"reason": "invalid_channel"}));
    assert_eq!(body["private-unknown"], json!({"reason": "no_rule"}));
    assert_eq!(body.as_object().unwrap().len(), 4);

    // POST /pusher/auth: empty, garbage and wrong JSON bodies.
    let post = deployment.url("/pusher/auth");
    for (content_type, body, status) in [
        ("application/x-www-form-urlencoded", "", 400),
        (
            "application/x-www-form-urlencoded",
            "\u{0}\u{1}garbage",
            400,
        ),
        ("application/json", "{not json", 400),
        ("application/json", "[1,2]", 400),
        ("application/x-www-form-urlencoded", "socket_id=1.1", 400),
        (
            "application/x-www-form-urlencoded",
            "socket_id=1.1&channel_name=public",
            400,
        ),
        (
            "application/x-www-form-urlencoded",
            "socket_id=1.1&channel_name=private-unknown",
            403,
        ),
    ] {
        let response = client
            .post(&post)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{body:?}");
        let json: Value = response.json().await.unwrap();
        assert!(json["error"].is_string(), "{body:?}: {json}");
    }
}
