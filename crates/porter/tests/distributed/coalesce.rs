//! Coalesced replies and batched acknowledgements over the real RabbitMQ: a `porter worker`
//! process answers an old gateway's tasks (no `coalesce` field) one message per task, and a new
//! one's so that every reply reaches its waiter; a slow task at the low end of a worker's
//! prefetch window does not hold the acks of the tasks after it; and a worker killed (SIGKILL)
//! with a task unanswered leaves exactly that task, which the next worker answers.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use porter_broker::{TaskClient, now_ms};
use porter_core::wire::{HEADER_DEADLINE_MS, HEADER_TIME_LIMIT_MS, REPLY_BATCH_TYPE, Reply};

use super::common::*;

/// `open` answers at once; `held` asks the test's webhook, which holds its answer while told to.
const POLICY: &str = r#"
[[rule]]
name = "held"
pattern = "private-held@{object_id}"
time_limit = 60
expires = 60
allow = { webhook = "http://127.0.0.1:PORT/held" }

[[rule]]
name = "open"
pattern = "private-open@{object_id}"
time_limit = 5
expires = 30
allow = "anyone"
"#;

/// A webhook that never answers while `hold` is set (the connection stays open) and allows
/// once it is cleared.
async fn holding_webhook(hold: Arc<AtomicBool>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let hold = hold.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16384];
                let mut read = 0;
                loop {
                    match socket.read(&mut buffer[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                    let text = String::from_utf8_lossy(&buffer[..read]).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if read < end + 4 + length {
                        continue;
                    }
                    if hold.load(Ordering::SeqCst) {
                        // Hold the request until the worker gives up or dies.
                        std::future::pending::<()>().await;
                    }
                    let body = r#"{"allow": true}"#;
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                    read = 0;
                }
            });
        }
    });
    port
}

/// A queue's (ready, unacknowledged) message counts, from `rabbitmqctl`.
fn queue_counts(queue: &str) -> Option<(u64, u64)> {
    let output = Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            let mut fields = line.rsplitn(3, char::is_whitespace);
            let unacked = fields.next()?.trim().parse().ok()?;
            let ready = fields.next()?.trim().parse().ok()?;
            (fields.next()?.trim() == queue).then_some((ready, unacked))
        })
}

fn coalescing(mut task: porter_core::wire::Task) -> porter_core::wire::Task {
    task.coalesce = true;
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_task_holds_no_acks_and_a_killed_worker_leaves_exactly_its_unanswered_task() {
    let hold = Arc::new(AtomicBool::new(true));
    let port = holding_webhook(hold.clone()).await;
    let deployment =
        Deployment::new("coalesce-kill").with_policy(&POLICY.replace("PORT", &port.to_string()));
    let queue = format!("{}auth", deployment.prefix);
    let stop = tokio_util::sync::CancellationToken::new();
    let client = task_client(
        AMQP_URL,
        &deployment.prefix,
        porter_broker::amqp::QueueType::Classic,
        stop.clone(),
    )
    .await;
    let mut first = deployment.worker();
    let expires = Duration::from_secs(60);
    let deadline_ms = now_ms() + 60_000;
    let wait = tokio::time::Instant::now() + Duration::from_secs(60);

    // The held task first, so that it is the lowest delivery tag of the worker's window.
    let held = coalescing(private_task("private-held@1", "held"));
    let held_waiter = publish_one(&client, &held, expires, deadline_ms).await;
    let mut fast = Vec::new();
    for i in 0..8 {
        let task = coalescing(private_task(&format!("private-open@{i}"), "open"));
        fast.push(publish_one(&client, &task, expires, deadline_ms).await);
    }
    for waiter in fast {
        let reply = waiter
            .wait_until(wait)
            .await
            .expect("a fast task is answered");
        assert!(reply.ok, "{reply:?}");
    }
    // Every fast task is acknowledged while the held one still runs: one unacked, none ready.
    eventually(
        "the fast tasks' acks behind the held task",
        Duration::from_secs(20),
        || async { (queue_counts(&queue) == Some((0, 1))).then_some(()) },
    )
    .await;

    first.kill();
    // Exactly the unanswered task goes back to the queue.
    eventually(
        "the held task back in the queue",
        Duration::from_secs(20),
        || async { (queue_counts(&queue) == Some((1, 0))).then_some(()) },
    )
    .await;

    hold.store(false, Ordering::SeqCst);
    let _second = deployment.worker();
    let reply = held_waiter
        .wait_until(wait)
        .await
        .expect("the next worker answers the held task");
    assert!(reply.ok, "{reply:?}");
    eventually("the queue drained", Duration::from_secs(20), || async {
        (queue_counts(&queue) == Some((0, 0))).then_some(())
    })
    .await;
    // No fast task was run and answered a second time (a repeat would find nobody waiting).
    assert_eq!(client.pending().dropped(), 0);
    assert_eq!(client.pending().unauthenticated(), 0);
    client.close().await;
}

/// Publishes `tasks` to `queue` as a gateway of one version or the other would, with its own
/// reply queue, and returns every reply message that comes back: (AMQP type, body).
async fn replies_to(
    queue: &str,
    tasks: &[porter_core::wire::Task],
) -> Vec<(Option<String>, Vec<u8>)> {
    let connection = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("a channel");
    let reply_queue = channel
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
        .expect("a reply queue")
        .name()
        .clone();
    let mut consumer = channel
        .basic_consume(
            reply_queue.clone(),
            "coalesce-test".into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("consume the replies");
    for task in tasks {
        let mut headers = lapin::types::FieldTable::default();
        headers.insert(
            HEADER_DEADLINE_MS.into(),
            lapin::types::AMQPValue::LongLongInt((now_ms() + 30_000) as i64),
        );
        headers.insert(
            HEADER_TIME_LIMIT_MS.into(),
            lapin::types::AMQPValue::LongLongInt(5_000),
        );
        let properties = lapin::BasicProperties::default()
            .with_content_type("application/json".into())
            .with_correlation_id(task.id.clone().into())
            .with_reply_to(reply_queue.clone())
            .with_expiration("30000".into())
            .with_headers(headers);
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                lapin::options::BasicPublishOptions::default(),
                &serde_json::to_vec(task).unwrap(),
                properties,
            )
            .await
            .expect("publish a task");
    }
    let mut messages = Vec::new();
    let mut answered = 0;
    while answered < tasks.len() {
        let delivery = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .expect("every task answered in time")
            .expect("the reply consumer is open")
            .expect("a reply");
        let kind = delivery.properties.kind().as_ref().map(|k| k.to_string());
        answered += match kind.as_deref() {
            Some(REPLY_BATCH_TYPE) => {
                let batch: porter_core::wire::ReplyBatch<'_> =
                    serde_json::from_slice(&delivery.data).expect("a batch of replies");
                batch.replies.len()
            }
            _ => 1,
        };
        messages.push((kind, delivery.data));
    }
    let _ = connection.close(200, "coalesce test done".into()).await;
    messages
}

/// The task ids a set of reply messages answers.
fn answered_ids(messages: &[(Option<String>, Vec<u8>)]) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for (kind, body) in messages {
        if kind.as_deref() == Some(REPLY_BATCH_TYPE) {
            let batch: porter_core::wire::ReplyBatch<'_> = serde_json::from_slice(body).unwrap();
            for entry in batch.replies {
                let reply: Reply = serde_json::from_str(entry.body.get()).unwrap();
                assert_eq!(entry.correlation_id.as_deref(), Some(reply.id.as_str()));
                ids.insert(reply.id);
            }
        } else {
            let reply: Reply = serde_json::from_slice(body).unwrap();
            ids.insert(reply.id);
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_gateway_gets_one_reply_per_task_and_a_new_one_gets_every_reply() {
    let deployment = Deployment::new("coalesce-versions").with_policy(&POLICY.replace("PORT", "9"));
    let queue = format!("{}auth", deployment.prefix);
    let _worker = deployment.worker();
    // Let the worker declare the queue before the tasks go out.
    eventually("the task queue", Duration::from_secs(20), || async {
        queue_counts(&queue).map(|_| ())
    })
    .await;

    // An old gateway's tasks: written without the field, as before coalescing.
    let old: Vec<_> = (0..12)
        .map(|i| private_task(&format!("private-open@{i}"), "open"))
        .collect();
    assert!(
        !String::from_utf8(serde_json::to_vec(&old[0]).unwrap())
            .unwrap()
            .contains("coalesce")
    );
    let messages = replies_to(&queue, &old).await;
    assert_eq!(messages.len(), old.len(), "one message per task");
    assert!(messages.iter().all(|(kind, _)| kind.is_none()));
    let ids: BTreeSet<String> = old.iter().map(|t| t.id.clone()).collect();
    assert_eq!(answered_ids(&messages), ids);

    // A new gateway's: every task answered exactly once, in however many messages.
    let new: Vec<_> = (0..12)
        .map(|i| coalescing(private_task(&format!("private-open@{i}"), "open")))
        .collect();
    let messages = replies_to(&queue, &new).await;
    let ids: BTreeSet<String> = new.iter().map(|t| t.id.clone()).collect();
    assert_eq!(answered_ids(&messages), ids);
    eprintln!(
        "12 coalescing tasks answered in {} reply messages",
        messages.len()
    );
}
