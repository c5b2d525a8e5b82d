//! Task authentication over the real RabbitMQ (docs/task-auth.md): a forged reply published
//! to a gateway's reply queue and a forged task published to a task queue come to nothing;
//! old and new processes work together during a rollout; a key rotation loses nothing; bad
//! settings stop a process with one line.
//!
//! Over 500 lines for the reason `distributed.rs` gives: it is part of that test binary rather
//! than one more binary to link.

use std::time::{Duration, Instant};

use porter_broker::now_ms;
use porter_core::task_auth::{
    HEADER_SIGNATURE, Message, Mode, ReplyMessage, TaskAuth, TaskKeys, TaskMessage,
};
use porter_core::wire::{HEADER_DEADLINE_MS, HEADER_TIME_LIMIT_MS};
use serde_json::json;

use super::common::*;
use super::{get_json, rand_digits, short_policy};

const TASK_KEY: &str = "distributed-test-task-key-one-0001";
const NEXT_TASK_KEY: &str = "distributed-test-task-key-two-0002";
/// A key of the forger's own: right length and format, not one the deployment holds.
const FORGER_KEY: &str = "a-key-the-forger-made-up-by-itself";

fn signer(keys: &str) -> TaskAuth {
    TaskAuth::new(Some(Mode::Require), Some(TaskKeys::parse(keys).unwrap())).unwrap()
}

fn with_signature(properties: lapin::BasicProperties, signature: &str) -> lapin::BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(
        HEADER_SIGNATURE.into(),
        lapin::types::AMQPValue::LongString(signature.into()),
    );
    properties.with_headers(headers)
}

fn reply_to_task<'a>(correlation_id: &'a str, body: &'a [u8]) -> Message<'a> {
    Message::Reply(ReplyMessage {
        correlation_id: Some(correlation_id),
        body,
    })
}

/// A broker user who can publish and consume on the vhost but holds no task key: a test-side
/// lapin connection.
struct Forger {
    connection: lapin::Connection,
    channel: lapin::Channel,
}

impl Forger {
    async fn connect() -> Forger {
        let properties = lapin::ConnectionProperties::default();
        let connection = lapin::Connection::connect(AMQP_URL, properties)
            .await
            .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("a channel");
        Forger {
            connection,
            channel,
        }
    }

    /// Declares a task queue as gateways and workers declare it.
    async fn declare(&self, queue: &str) {
        self.channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .expect("declare the task queue");
    }

    /// Reads a task queue, as a broker user with read rights on it could.
    async fn consume(&self, queue: &str) -> lapin::Consumer {
        self.declare(queue).await;
        self.channel
            .basic_consume(
                queue.into(),
                "forger".into(),
                lapin::options::BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .expect("consume")
    }

    /// An exclusive queue of the forger's own, for replies to the tasks it forges.
    async fn reply_queue(&self) -> (String, lapin::Consumer) {
        let queue = self
            .channel
            .queue_declare(
                "".into(),
                lapin::options::QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .expect("declare a reply queue");
        let name = queue.name().to_string();
        (name.clone(), self.consume_existing(&name).await)
    }

    async fn consume_existing(&self, queue: &str) -> lapin::Consumer {
        self.channel
            .basic_consume(
                queue.into(),
                "forger-replies".into(),
                lapin::options::BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .expect("consume replies")
    }

    async fn publish(&self, queue: &str, body: &[u8], properties: lapin::BasicProperties) {
        self.channel
            .basic_publish(
                "".into(),
                queue.into(),
                lapin::options::BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    async fn close(self) {
        let _ = self.connection.close(200, "forger done".into()).await;
    }
}

async fn next_delivery(consumer: &mut lapin::Consumer, what: &str) -> lapin::message::Delivery {
    use futures_util::StreamExt;
    tokio::time::timeout(Duration::from_secs(15), consumer.next())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("the consumer is open")
        .expect("a delivery")
}

async fn metrics_of(deployment: &Deployment) -> String {
    reqwest::get(deployment.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_reply_is_dropped_and_counted_and_the_channel_times_out() {
    for mode in ["accept", "require"] {
        let deployment = Deployment::new("forgedreply")
            .with_policy(&short_policy(9))
            .with_env("PORTER_TASK_KEYS", TASK_KEY)
            .with_env("PORTER_TASK_AUTH", mode);
        let _gateway = deployment.gateway();
        deployment.wait_ready().await;
        // No worker: whoever reads the task queue can answer, as a broker user could.
        let forger = Forger::connect().await;
        let mut tasks = forger
            .consume(&format!("{}auth/high", deployment.prefix))
            .await;

        let url = deployment.batch_url("1.1", &["presence-x@1"]);
        let token = token("7", &[]);
        let request = tokio::spawn(async move { get_json(&url, Some(&token)).await });
        let task = next_delivery(&mut tasks, "the gateway's task").await;
        assert!(
            task.properties
                .headers()
                .as_ref()
                .is_some_and(|h| h.inner().contains_key(HEADER_SIGNATURE)),
            "{mode}: the gateway signs its tasks"
        );
        let correlation_id = task.properties.correlation_id().clone().expect("an id");
        let reply_to = task.properties.reply_to().clone().expect("a reply queue");
        let id = correlation_id.as_str();
        let forged = serde_json::to_vec(
            &json!({"v": 1, "id": id, "ok": true, "data": {"user_id": "admin"}}),
        )
        .unwrap();
        let reply_properties =
            || lapin::BasicProperties::default().with_correlation_id(correlation_id.clone());
        let reply = |body| reply_to_task(id, body);
        let wrong_key = signer(FORGER_KEY).sign(&reply(&forged)).unwrap();
        // A real signature, over a refusal, on the forged body.
        let refusal = serde_json::to_vec(&json!({"v": 1, "id": id, "ok": false})).unwrap();
        let tampered = signer(TASK_KEY).sign(&reply(&refusal)).unwrap();
        let mut sent = 0;
        for signature in [wrong_key, tampered] {
            forger
                .publish(
                    reply_to.as_str(),
                    &forged,
                    with_signature(reply_properties(), &signature),
                )
                .await;
            sent += 1;
        }
        if mode == "require" {
            forger
                .publish(reply_to.as_str(), &forged, reply_properties())
                .await;
            sent += 1;
        }

        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            body["presence-x@1"],
            json!({"reason": "timeout"}),
            "{mode}: nothing forged is signed"
        );
        let counted = format!("porter_unauthenticated_replies_total {sent}");
        eventually(
            "the forged replies to be counted",
            Duration::from_secs(5),
            || async {
                metrics_of(&deployment)
                    .await
                    .lines()
                    .any(|l| l == counted)
                    .then_some(())
            },
        )
        .await;
        forger.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_task_is_not_run() {
    for mode in ["accept", "require"] {
        let deployment = Deployment::new("forgedtask")
            .with_policy(&short_policy(9))
            .capture_logs()
            .with_env("PORTER_TASK_KEYS", TASK_KEY)
            .with_env("PORTER_TASK_AUTH", mode);
        let forger = Forger::connect().await;
        // Declared first, so that what is published before the worker is up waits for it.
        let queue = format!("{}auth", deployment.prefix);
        forger.declare(&queue).await;
        let _worker = deployment.worker();
        let (reply_to, mut replies) = forger.reply_queue().await;

        let task = |id: &str| {
            serde_json::to_vec(&json!({
                "v": 1, "id": id, "channel": "private-feed@1", "channel_type": "private",
                "feature": "feed", "object_id": "1", "rule": "private",
                "captures": {"feature": "feed", "object_id": "1"},
            }))
            .unwrap()
        };
        // The properties a gateway gives a task (`amqp/client.rs`), and what it signs of them.
        let deadline = i64::try_from(now_ms() + 60_000).unwrap();
        let properties = |id: &str| {
            let mut headers = lapin::types::FieldTable::default();
            headers.insert(
                HEADER_DEADLINE_MS.into(),
                lapin::types::AMQPValue::LongLongInt(deadline),
            );
            headers.insert(
                HEADER_TIME_LIMIT_MS.into(),
                lapin::types::AMQPValue::LongLongInt(5_000),
            );
            lapin::BasicProperties::default()
                .with_correlation_id(id.into())
                .with_reply_to(reply_to.as_str().into())
                .with_expiration("60000".into())
                .with_headers(headers)
        };
        let signed = |keys: &str, id: &str, body: &[u8]| {
            signer(keys)
                .sign(&Message::Task(TaskMessage {
                    correlation_id: Some(id),
                    reply_to: Some(&reply_to),
                    expiration: Some("60000"),
                    deadline_ms: Some(deadline as u64),
                    time_limit_ms: Some(5_000),
                    body,
                }))
                .unwrap()
        };

        let mut forged = vec![
            (
                "forged-wrong-key",
                Some(signed(
                    FORGER_KEY,
                    "forged-wrong-key",
                    &task("forged-wrong-key"),
                )),
            ),
            // A real signature over another body.
            (
                "forged-tampered",
                Some(signed(TASK_KEY, "forged-tampered", &task("another"))),
            ),
        ];
        if mode == "require" {
            forged.push(("forged-unsigned", None));
        }
        for (id, signature) in &forged {
            let mut props = properties(id);
            if let Some(signature) = signature {
                props = with_signature(props, signature);
            }
            forger.publish(&queue, &task(id), props).await;
        }
        // Then a task signed as a gateway signs: it runs, which proves the worker read the
        // forged ones (the queue is first in, first out) and dropped them.
        let control = "control";
        let body = task(control);
        forger
            .publish(
                &queue,
                &body,
                with_signature(properties(control), &signed(TASK_KEY, control, &body)),
            )
            .await;

        let reply = next_delivery(&mut replies, "the control task's reply").await;
        assert_eq!(
            reply
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str()),
            Some(control),
            "{mode}: only the authentic task is answered"
        );
        let signature = reply
            .properties
            .headers()
            .as_ref()
            .and_then(|h| match h.inner().get(HEADER_SIGNATURE) {
                Some(lapin::types::AMQPValue::LongString(s)) => Some(s.as_bytes().to_vec()),
                _ => None,
            })
            .expect("the worker signs its reply");
        let verified =
            signer(TASK_KEY).verify(&reply_to_task(control, &reply.data), Some(&signature));
        assert!(verified.is_ok(), "{mode}: {verified:?}");

        let logs = eventually(
            "the worker's drop lines",
            Duration::from_secs(5),
            || async {
                let logs = deployment.captured_logs();
                (logs.matches("dropped an unauthenticated task").count() == forged.len())
                    .then_some(logs)
            },
        )
        .await;
        assert!(
            logs.contains("bad_signature") && logs.contains("unknown_key"),
            "{logs}"
        );
        for (id, _) in &forged {
            assert!(
                !logs.contains(id),
                "no log line carries what the forger chose: {logs}"
            );
        }
        forger.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_gateway_keeps_working_with_an_accept_worker_and_a_require_worker_refuses_it() {
    let deployment = Deployment::new("mixedversions")
        .with_policy(&short_policy(9))
        .capture_logs();
    // An old gateway: no keys, signs nothing.
    let _gateway = deployment.gateway();
    deployment.wait_ready().await;
    let token = token("7", &[]);
    let ask = |socket: &str| {
        let url = deployment.batch_url(socket, &["presence-x@1"]);
        let token = token.clone();
        async move { get_json(&url, Some(&token)).await.1["presence-x@1"].clone() }
    };

    // New workers of the same deployment, with keys.
    let mut workers = deployment.sibling();
    workers.extra_env = vec![
        ("PORTER_TASK_KEYS".into(), TASK_KEY.into()),
        ("PORTER_TASK_AUTH".into(), "accept".into()),
    ];
    let mut accepting = workers.worker();
    eventually(
        "the accept worker to answer",
        Duration::from_secs(15),
        || async { ask("2.2").await.get("auth").map(drop) },
    )
    .await;
    accepting.kill();

    workers.extra_env[1].1 = "require".into();
    let _requiring = workers.worker();
    eventually(
        "the require worker to drop an unsigned task",
        Duration::from_secs(15),
        || async {
            let answer = ask("3.3").await;
            assert_eq!(
                answer,
                json!({"reason": "timeout"}),
                "a require worker runs nothing unsigned"
            );
            let logs = deployment.captured_logs();
            (logs.contains("dropped an unauthenticated task") && logs.contains("unsigned"))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_tasks_and_replies_round_trip_across_a_key_rotation_in_both_reply_modes() {
    let deployment = Deployment::new("rotation")
        .with_policy(&short_policy(9))
        .with_env("PORTER_TASK_KEYS", &format!("{NEXT_TASK_KEY},{TASK_KEY}"));
    // Mid-rotation: this gateway signs with the next key, the worker still with the old one.
    let _gateway = deployment.gateway();
    let mut direct = deployment.sibling();
    direct.extra_env.clear();
    let keys_file = std::env::temp_dir().join(format!("{}task-keys", deployment.prefix));
    std::fs::write(&keys_file, format!("{TASK_KEY}\n{NEXT_TASK_KEY}\n")).unwrap();
    direct.extra_env.extend([
        (
            "PORTER_TASK_KEYS_FILE".into(),
            keys_file.display().to_string(),
        ),
        ("PORTER_REPLY_MODE".into(), "direct".into()),
    ]);
    let _direct_gateway = direct.gateway();
    let mut workers = deployment.sibling();
    workers.extra_env = vec![(
        "PORTER_TASK_KEYS".into(),
        format!("{TASK_KEY},{NEXT_TASK_KEY}"),
    )];
    let _worker = workers.worker();
    deployment.wait_ready().await;
    direct.wait_ready().await;

    let token = token("7", &[]);
    for gateway in [&deployment, &direct] {
        eventually("a signed round trip", Duration::from_secs(15), || async {
            let socket = format!("{}.1", rand_digits());
            let (_, body) =
                get_json(&gateway.batch_url(&socket, &["presence-x@1"]), Some(&token)).await;
            body["presence-x@1"].get("auth").map(drop)
        })
        .await;
        let metrics = metrics_of(gateway).await;
        assert!(
            metrics
                .lines()
                .any(|l| l == "porter_unauthenticated_replies_total 0"),
            "{metrics}"
        );
    }
    let _ = std::fs::remove_file(keys_file);
}

/// `porter worker` with the given task-auth settings, which must refuse them before connecting.
fn refused_worker(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_porter"));
    command
        .arg("worker")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        // Nothing listens here: a worker that got past its settings would retry, not exit.
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start porter worker");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("porter worker accepted {env:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_task_auth_settings_exit_2_with_one_line_that_quotes_no_key() {
    let both_file = std::env::temp_dir().join(format!(
        "porter-task-keys-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&both_file, TASK_KEY).unwrap();
    let both_file = both_file.display().to_string();
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[("PORTER_TASK_KEYS", "a-short-secret-key")], "at least 32"),
        (
            &[("PORTER_TASK_KEYS", &format!("{TASK_KEY},{TASK_KEY}"))],
            "same key",
        ),
        (&[("PORTER_TASK_AUTH", "require")], "needs task keys"),
        (
            &[
                ("PORTER_TASK_KEYS", TASK_KEY),
                ("PORTER_TASK_AUTH", "sometimes"),
            ],
            "use off, accept or require",
        ),
        (
            &[
                ("PORTER_TASK_KEYS", TASK_KEY),
                ("PORTER_TASK_KEYS_FILE", &both_file),
            ],
            "not both",
        ),
        (
            &[("PORTER_TASK_KEYS_FILE", "/nonexistent/porter-task-keys")],
            "cannot read PORTER_TASK_KEYS_FILE",
        ),
    ];
    for (env, message) in cases {
        let (code, stderr) = refused_worker(env);
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{env:?}: {stderr}");
        assert!(stderr.contains(message), "{env:?}: {stderr}");
        assert!(
            !stderr.contains("a-short-secret-key") && !stderr.contains(TASK_KEY),
            "{stderr}"
        );
    }
    let _ = std::fs::remove_file(both_file);
}
