//! Published events applied over the real RabbitMQ and Redis: a gateway, an authorizing
//! worker and an events worker (`porter worker --events`) as processes, the official Node
//! server SDK (`pusher`, `tests/js/trigger.mjs`) publishing through the gateway, and a local
//! HTTP stand-in for the upstream realtime server that checks each forwarded request's
//! signature and body.
//!
//! - an event reaches the upstream signed and as sent, a session exchange of the channel's
//!   owner (bound to a test queue) with the routing key `{channel}.{event}`, and a retained
//!   event rides along on the next subscription;
//! - an upstream that keeps failing is retried, then the publication is in the dead-letter
//!   queue `{prefix}events.dead`;
//! - a publication delivered twice (the same id) is applied once.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{AMQP_URL, APP_ID, Deployment, KEY, Proc, SECRET, eventually, js, queue_depth, token};
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use porter_core::publish::{PUBLICATION_VERSION, Publication, PublishKind, signed_query};
use porter_core::signing::Secret;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request the stand-in received.
#[derive(Debug, Clone)]
struct Forwarded {
    path: String,
    body: String,
    /// The query's signature is the one the app's key and secret give for this path and body.
    signed: bool,
}

/// The upstream stand-in: answers with the next of `statuses` (the last repeating).
struct StandIn {
    base: String,
    received: Arc<Mutex<Vec<Forwarded>>>,
    count: Arc<AtomicUsize>,
}

impl StandIn {
    fn received(&self) -> Vec<Forwarded> {
        self.received.lock().unwrap().clone()
    }
}

async fn stand_in(statuses: Vec<u16>) -> StandIn {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let (recorded, counter) = (received.clone(), count.clone());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (recorded, counter, statuses) =
                (recorded.clone(), counter.clone(), statuses.clone());
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 8192];
                let (head, body) = loop {
                    let read = socket.read(&mut chunk).await.unwrap_or(0);
                    if read == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..read]);
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).to_string();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buffer.len() >= end + 4 + length {
                        let body =
                            String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).to_string();
                        break (head, body);
                    }
                };
                let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let params: BTreeMap<&str, &str> = query
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .collect();
                let timestamp = params
                    .get("auth_timestamp")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                let expected = signed_query(
                    KEY,
                    &Secret::new(SECRET),
                    "POST",
                    path,
                    body.as_bytes(),
                    timestamp,
                );
                recorded.lock().unwrap().push(Forwarded {
                    path: path.to_owned(),
                    body,
                    signed: query == expected,
                });
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let status = statuses[n.min(statuses.len() - 1)];
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    StandIn {
        base,
        received,
        count,
    }
}

/// A deployment whose events worker forwards to `upstream`, three attempts 20 ms apart.
fn deployment(test: &str, upstream: &str) -> Deployment {
    Deployment::new(test)
        .with_env("PORTER_UPSTREAM_URL", upstream)
        .with_env("PUSHER_KEY", KEY)
        .with_env("PUSHER_SECRET", SECRET)
        .with_env("PORTER_UPSTREAM_ATTEMPTS", "3")
        .with_env("PORTER_UPSTREAM_BACKOFF_MS", "20")
}

/// The events worker of the deployment (`porter worker --events`).
fn events_worker(deployment: &Deployment) -> Proc {
    deployment.worker_with(&["--events", "--prefetch", "8"])
}

/// Runs `trigger.mjs` with these SDK calls against the gateway; one JSON outcome per call.
async fn trigger(deployment: &Deployment, calls: Value) -> Vec<Value> {
    let vars = [
        ("PORTER_PORT", deployment.port.to_string()),
        ("APP_ID", APP_ID.to_owned()),
        ("KEY", KEY.to_owned()),
        ("SECRET", SECRET.to_owned()),
        ("CALLS", calls.to_string()),
    ];
    let mut command = js::node("trigger.mjs", &vars);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the node runner")
        .expect("run trigger.mjs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let outcomes: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        outcomes.iter().all(|o| o["ok"] == true),
        "{stdout} / {}",
        String::from_utf8_lossy(&output.stderr)
    );
    outcomes
}

async fn amqp() -> lapin::Connection {
    lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ")
}

/// Opens a session for user 7 through `POST /auth`; its id.
async fn open_session(deployment: &Deployment) -> String {
    let token = token("7", &[("email", json!("ann@example.com"))]);
    let answer: Value = reqwest::Client::new()
        .post(deployment.url("/auth"))
        .json(&json!({"email": "ann@example.com", "token": token}))
        .send()
        .await
        .expect("POST /auth")
        .json()
        .await
        .expect("its JSON");
    answer["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {answer}"))
        .to_owned()
}

fn cleanup_queues(prefix: &str) {
    let _ = std::process::Command::new("rabbitmqctl")
        .args(["delete_queue", &format!("{prefix}events")])
        .output();
    let _ = std::process::Command::new("rabbitmqctl")
        .args(["delete_queue", &format!("{prefix}events.dead")])
        .output();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_go_upstream_to_the_owners_sessions_and_ride_along_retained() {
    let upstream = stand_in(vec![200]).await;
    let deployment = deployment("publish-apply", &upstream.base);
    let _gateway = deployment.gateway();
    let _worker = deployment.worker();
    let _events = events_worker(&deployment);
    deployment.wait_ready().await;

    // A session of user 7, its exchange bound to a queue of the test.
    let session = open_session(&deployment).await;
    let connection = amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let queue = format!("{}session-listener", deployment.prefix);
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            format!("data.{session}.published").into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("the session's exchange exists");
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "test".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();

    trigger(
        &deployment,
        json!([
            {"trigger": [["private-user@7"], "message.sent", {"id": 1}]},
            {"triggerBatch": [[{"channel": "private-stream@42", "name": "stream.online", "data": {"online": true}}]]},
        ]),
    )
    .await;

    // The owner's session got the user channel's event, with the hierarchical routing key.
    let delivery = tokio::time::timeout(Duration::from_secs(15), consumer.next())
        .await
        .expect("the session received the event in time")
        .expect("a delivery")
        .expect("a good delivery");
    assert_eq!(delivery.routing_key.as_str(), "private-user@7.message.sent");
    let body: Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(body["channel"], "private-user@7");
    assert_eq!(body["event"], "message.sent");
    assert_eq!(
        serde_json::from_str::<Value>(body["data"].as_str().unwrap()).unwrap(),
        json!({"id": 1})
    );

    // Both publications reached the upstream, signed, each body as the SDK sent it.
    let forwarded = eventually("two forwarded requests", Duration::from_secs(15), || {
        let received = upstream.received();
        async move { (received.len() >= 2).then_some(received) }
    })
    .await;
    let mut paths: Vec<&str> = forwarded.iter().map(|f| f.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            format!("/apps/{APP_ID}/batch_events"),
            format!("/apps/{APP_ID}/events")
        ]
    );
    for request in &forwarded {
        assert!(request.signed, "a bad signature on {request:?}");
        let body: Value = serde_json::from_str(&request.body).unwrap();
        if request.path.ends_with("/events") {
            assert_eq!(body["name"], "message.sent");
            assert_eq!(body["channels"], json!(["private-user@7"]));
        } else {
            assert_eq!(body["batch"][0]["name"], "stream.online");
        }
    }

    // The stream's event is retained: it rides along on the next subscription.
    let url = deployment.batch_url("123.456", &["private-stream@42"]);
    let answer: Value = eventually("the retained event", Duration::from_secs(15), || {
        let url = url.clone();
        async move {
            let answer: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            let events = answer["private-stream@42"]["events"].as_array()?.clone();
            events
                .iter()
                .any(|e| e["event"] == "stream.online")
                .then_some(answer)
        }
    })
    .await;
    let event = answer["private-stream@42"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "stream.online")
        .unwrap()
        .clone();
    assert_eq!(event["data"], json!({"online": true}));
    let _ = connection.close(200, "test done".into()).await;
    cleanup_queues(&deployment.prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_is_retried_then_the_publication_is_dead_lettered() {
    let upstream = stand_in(vec![503]).await;
    let deployment = deployment("publish-dead", &upstream.base);
    let _gateway = deployment.gateway();
    let _events = events_worker(&deployment);
    deployment.wait_ready().await;
    trigger(
        &deployment,
        json!([{"trigger": [["private-goal@1"], "goal.updated", {"p": 1}]}]),
    )
    .await;
    let dead = format!("{}events.dead", deployment.prefix);
    eventually("the dead letter", Duration::from_secs(20), || {
        let dead = dead.clone();
        async move { (queue_depth(&dead) == Some(1)).then_some(()) }
    })
    .await;
    assert_eq!(upstream.count.load(Ordering::SeqCst), 3, "three attempts");
    assert_eq!(
        queue_depth(&format!("{}events", deployment.prefix)),
        Some(0)
    );
    cleanup_queues(&deployment.prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_delivered_twice_is_applied_once() {
    let upstream = stand_in(vec![200]).await;
    let deployment = deployment("publish-twice", &upstream.base);
    let _gateway = deployment.gateway();
    deployment.wait_ready().await;
    // The same publication twice on the queue (a redelivery), before any worker runs.
    let body =
        json!({"name": "stream.online", "data": "{\"n\":1}", "channels": ["private-stream@9"]})
            .to_string();
    let publication = Publication {
        v: PUBLICATION_VERSION,
        id: format!("{}p1", deployment.prefix),
        app_id: APP_ID.to_owned(),
        kind: PublishKind::Events,
        body,
        accepted_ms: 1,
    };
    let connection = amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let queue = format!("{}events", deployment.prefix);
    porter_broker::amqp::declare_events_queues(
        &channel,
        &deployment.prefix,
        porter_broker::amqp::QueueType::Classic,
    )
    .await
    .expect("declare the events queues");
    for _ in 0..2 {
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &serde_json::to_vec(&publication).unwrap(),
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let _events = events_worker(&deployment);
    eventually("both deliveries settled", Duration::from_secs(20), || {
        let queue = queue.clone();
        async move { (queue_depth(&queue) == Some(0)).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(upstream.received().len(), 1, "forwarded once");
    let _ = connection.close(200, "test done".into()).await;
    cleanup_queues(&deployment.prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_an_exchange_is_skipped_and_the_next_event_still_goes_out() {
    let upstream = stand_in(vec![200]).await;
    let deployment = deployment("publish-gone", &upstream.base).capture_logs();
    let _gateway = deployment.gateway();
    let _events = events_worker(&deployment);
    deployment.wait_ready().await;
    // User 8 has two indexed sessions: one whose exchange was never declared (its lease ran
    // out, the broker restarted) and one opened through POST /auth, bound to a test queue.
    let store = porter_store::redis::RedisStore::new(
        common::REDIS_URL,
        porter_store::Keys::new(&deployment.prefix),
        1,
    )
    .unwrap();
    use porter_store::Store;
    let gone = "0123456789abcdef0123456789abcdef";
    store
        .create_session(gone, "{}", Duration::from_secs(60))
        .await
        .unwrap();
    store
        .index_session("8", gone, Duration::from_secs(60))
        .await
        .unwrap();
    let token = token("8", &[("email", json!("bo@example.com"))]);
    let answer: Value = reqwest::Client::new()
        .post(deployment.url("/auth"))
        .json(&json!({"email": "bo@example.com", "token": token}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let live = answer["sessionId"].as_str().expect("a session").to_owned();
    let connection = amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let queue = format!("{}session-listener", deployment.prefix);
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            format!("data.{live}.published").into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "test".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    // An event whose routing key is past AMQP's 255 bytes (`private-user@8.` + 300 bytes)
    // reaches no session, is not retried for ever, and still goes upstream.
    trigger(
        &deployment,
        json!([{"trigger": [["private-user@8"], "é".repeat(150), {"n": 0}]}]),
    )
    .await;
    for n in 1..=2 {
        trigger(
            &deployment,
            json!([{"trigger": [["private-user@8"], "note", {"n": n}]}]),
        )
        .await;
        let delivery = tokio::time::timeout(Duration::from_secs(15), consumer.next())
            .await
            .expect("the live session received the event in time")
            .expect("a delivery")
            .expect("a good delivery");
        let body: Value = serde_json::from_slice(&delivery.data).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(body["data"].as_str().unwrap()).unwrap(),
            json!({"n": n})
        );
    }
    // The broker's 404 for the missing exchange is logged (by lapin) without the session id.
    let logs = deployment.captured_logs();
    assert!(logs.contains("NOT_FOUND"), "the 404 was met: {logs}");
    assert!(!logs.contains(gone), "a session id in the logs: {logs}");
    assert!(!logs.contains(&live), "a session id in the logs: {logs}");
    // The three publications were applied whole: all upstream, nothing left, nothing
    // dead-lettered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while upstream.count.load(Ordering::SeqCst) < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        upstream.count.load(Ordering::SeqCst),
        3,
        "all went upstream"
    );
    let logs = deployment.captured_logs();
    assert!(
        logs.contains("routing key is longer than AMQP allows"),
        "the long key was skipped: {logs}"
    );
    assert_eq!(
        queue_depth(&format!("{}events", deployment.prefix)),
        Some(0)
    );
    assert_eq!(
        queue_depth(&format!("{}events.dead", deployment.prefix)),
        Some(0)
    );
    let _ = connection.close(200, "test done".into()).await;
    cleanup_queues(&deployment.prefix);
}

/// `porter worker --events` with these variables: its exit code and stderr.
fn events_worker_refusing(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_porter"));
    command
        .args(["worker", "--events"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AMQP_URL", AMQP_URL)
        .env("REDIS_URL", common::REDIS_URL);
    for (k, v) in vars {
        command.env(k, v);
    }
    let output = command.output().expect("run porter");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn bad_events_settings_stop_the_events_worker_with_one_line() {
    for (vars, says) in [
        (
            vec![("PORTER_UPSTREAM_URL", "http://h:1,ftp://u:SECRETPW@h")],
            "entry 2 must be http",
        ),
        (
            vec![("PORTER_UPSTREAM_URL", "http://127.0.0.1:1")],
            "PUSHER_KEY and PUSHER_SECRET",
        ),
        (
            vec![
                ("PORTER_UPSTREAM_URL", "http://127.0.0.1:1"),
                ("PUSHER_KEY", "k"),
                ("PUSHER_SECRET", "SECRETPW"),
                ("PORTER_UPSTREAM_ATTEMPTS", "0"),
            ],
            "at least 1",
        ),
        (
            vec![
                ("PORTER_UPSTREAM_URL", "http://127.0.0.1:1"),
                ("PUSHER_KEY", "k"),
                ("PUSHER_SECRET", "SECRETPW"),
                ("PORTER_UPSTREAM_ATTEMPTS", "12"),
            ],
            "at most 11",
        ),
    ] {
        let (code, stderr) = events_worker_refusing(&vars);
        assert_eq!(code, Some(2), "{vars:?}: {stderr}");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("porter:"))
            .collect();
        assert_eq!(lines.len(), 1, "{vars:?}: {stderr}");
        assert!(lines[0].contains(says), "{vars:?}: {stderr}");
        assert!(!stderr.contains("SECRETPW"), "{stderr}");
    }
}
