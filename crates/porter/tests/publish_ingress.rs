//! Publishing through a real `porter gateway` process over the real RabbitMQ and Redis, driven
//! by the official Node server SDK (`pusher` 5, `tests/js/trigger.mjs`) pointed at the gateway
//! by host and port: what reaches the events queue (`{prefix}events`) is read back with
//! `basic.get` and compared with what was sent (no worker runs, so the queue keeps it). Also:
//! a replay of a confirmed request queued once (the done mark in the real Redis), under the
//! request's own publication id, a rejected publication dead-lettered to `{prefix}events.dead`
//! by RabbitMQ, and a gateway whose broker is away answering 503 to the same signed request
//! every time (a 503 marks nothing).

mod common;

use std::time::Duration;

use common::{APP_ID, Deployment, KEY, SECRET};
use lapin::options::{BasicGetOptions, BasicRejectOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use porter_core::publish::{Publication, PublishKind};
use serde_json::{Value, json};

/// Runs `trigger.mjs` against the gateway with `secret`: one JSON answer per call.
fn sdk(deployment: &Deployment, secret: &str, calls: Value) -> Vec<Value> {
    let output = common::js::node(
        "trigger.mjs",
        &[
            ("PORTER_PORT", deployment.port.to_string()),
            ("APP_ID", APP_ID.to_owned()),
            ("KEY", KEY.to_owned()),
            ("SECRET", secret.to_owned()),
            ("CALLS", calls.to_string()),
        ],
    )
    .output()
    .expect("run node");
    assert!(
        output.status.success(),
        "trigger.mjs failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON line per call"))
        .collect()
}

/// Takes every message of `queue` (acknowledging it): the publications, with their AMQP
/// message id and delivery mode.
async fn take_all(queue: &str) -> Vec<(Publication, Option<String>, Option<u8>)> {
    let connection = Connection::connect(common::AMQP_URL, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("a channel");
    let mut out = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        let publication: Publication =
            serde_json::from_slice(&message.delivery.data).expect("a publication");
        let properties = &message.delivery.properties;
        out.push((
            publication,
            properties.message_id().as_ref().map(|id| id.to_string()),
            *properties.delivery_mode(),
        ));
    }
    let _ = connection.close(200, "done".into()).await;
    out
}

async fn delete_queues(prefix: &str) {
    let connection = Connection::connect(common::AMQP_URL, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("a channel");
    for queue in ["events", "events.dead", "auth", "auth/high"] {
        let _ = channel
            .queue_delete(
                format!("{prefix}{queue}").as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await;
    }
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test]
async fn the_node_sdk_publishes_through_porter_onto_the_durable_events_queue() {
    let deployment = Deployment::new("publish_sdk");
    let mut gateway = deployment.gateway();
    deployment.wait_ready().await;

    let long_channel = "c".repeat(165);
    let answers = sdk(
        &deployment,
        SECRET,
        json!([
            { "trigger": [["private-stream@42", "public-x"], "stream.online", { "online": true }, { "socket_id": "123.456" }] },
            { "triggerBatch": [[
                { "channel": "private-campaign@3", "name": "goal.progress", "data": { "p": 40 } },
                { "channel": "my-channel", "name": "plain", "data": "text" },
            ]] },
            // Past Pusher's channel name limit (164), which the SDK (200) lets through.
            { "trigger": [long_channel, "e", "x"] },
            // Data over 10 KiB.
            { "trigger": ["my-channel", "big", "d".repeat(10 * 1024 + 1)] },
        ]),
    );
    assert_eq!(answers[0]["ok"], true, "{}", answers[0]);
    assert_eq!(
        (answers[0]["status"].as_u64(), answers[0]["body"].as_str()),
        (Some(200), Some("{}"))
    );
    assert_eq!(answers[1]["status"], 200, "{}", answers[1]);
    assert_eq!(answers[2]["status"], 400, "{}", answers[2]);
    let refused: Value = serde_json::from_str(answers[2]["body"].as_str().unwrap()).unwrap();
    assert_eq!(refused["error"], "invalid_channel");
    assert_eq!(answers[3]["status"], 413, "{}", answers[3]);

    // With another secret every call is refused 401, and nothing is queued.
    let answers = sdk(
        &deployment,
        "not-the-secret",
        json!([{ "trigger": ["my-channel", "e", "x"] }]),
    );
    assert_eq!(answers[0]["status"], 401, "{}", answers[0]);
    let refused: Value = serde_json::from_str(answers[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(refused["error"], "invalid_signature");

    let queued = take_all(&format!("{}events", deployment.prefix)).await;
    assert_eq!(queued.len(), 2, "{queued:?}");
    let (events, events_id, events_mode) = &queued[0];
    assert_eq!(events.kind, PublishKind::Events);
    assert_eq!(events.app_id, APP_ID);
    assert_eq!(events_id.as_deref(), Some(events.id.as_str()));
    assert_eq!(*events_mode, Some(2), "persistent");
    // The body as the SDK sent it: its JSON, field for field.
    let body: Value = serde_json::from_str(&events.body).unwrap();
    assert_eq!(
        body,
        json!({ "name": "stream.online", "data": "{\"online\":true}",
                "channels": ["private-stream@42", "public-x"], "socket_id": "123.456" })
    );
    let published = events.events().unwrap();
    assert_eq!(published.len(), 2);
    assert_eq!(published[1].channel, "public-x");
    let (batch, batch_id, _) = &queued[1];
    assert_eq!(batch.kind, PublishKind::BatchEvents);
    assert_eq!(batch_id.as_deref(), Some(batch.id.as_str()));
    assert_ne!(batch.id, events.id);
    let items: Vec<_> = batch
        .events()
        .unwrap()
        .into_iter()
        .map(|e| (e.channel, e.name, e.data))
        .collect();
    assert_eq!(
        items,
        [
            (
                "private-campaign@3".to_owned(),
                "goal.progress".to_owned(),
                r#"{"p":40}"#.to_owned()
            ),
            (
                "my-channel".to_owned(),
                "plain".to_owned(),
                "text".to_owned()
            ),
        ]
    );

    gateway.kill();
    delete_queues(&deployment.prefix).await;
}

#[tokio::test]
async fn a_replayed_signed_request_is_answered_alike_and_queued_once() {
    let deployment = Deployment::new("publish_replay");
    let mut gateway = deployment.gateway();
    deployment.wait_ready().await;
    let body = r#"{"name":"e","data":"1","channel":"my-channel"}"#;
    let now = porter_broker::now_ms() / 1000;
    for _ in 0..3 {
        let response = publish(&deployment, body, now).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "{}");
    }
    let queued = take_all(&format!("{}events", deployment.prefix)).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].0.body, body);
    // The publication id (and AMQP message id) is the signed request's.
    let id = request_id(body, now);
    assert_eq!(queued[0].0.id, id);
    assert_eq!(queued[0].1.as_deref(), Some(id.as_str()));
    gateway.kill();
    delete_queues(&deployment.prefix).await;
}

/// The publication id of the request [`publish`] sends for `body` at `timestamp`.
fn request_id(body: &str, timestamp: u64) -> String {
    let query = porter_core::publish::signed_query(
        KEY,
        &porter_core::signing::Secret::new(SECRET),
        "POST",
        &format!("/apps/{APP_ID}/events"),
        body.as_bytes(),
        timestamp,
    );
    let (_, signature) = query.split_once("auth_signature=").expect("signed");
    let verified = porter_core::publish::VerifiedRequest {
        signature: signature.to_owned(),
        timestamp,
    };
    porter_core::publish::publication_id(APP_ID, &verified)
}

/// Publishes one event through the gateway, signed as the SDKs sign, at `timestamp`.
async fn publish(deployment: &Deployment, body: &str, timestamp: u64) -> reqwest::Response {
    let path = format!("/apps/{APP_ID}/events");
    let query = porter_core::publish::signed_query(
        KEY,
        &porter_core::signing::Secret::new(SECRET),
        "POST",
        &path,
        body.as_bytes(),
        timestamp,
    );
    reqwest::Client::new()
        .post(deployment.url(&format!("{path}?{query}")))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn a_rejected_publication_is_dead_lettered_and_the_declaration_is_the_workers() {
    let deployment = Deployment::new("publish_dead");
    let mut gateway = deployment.gateway();
    deployment.wait_ready().await;
    let body = r#"{"name":"e","data":"1","channel":"my-channel"}"#;
    let response = publish(&deployment, body, porter_broker::now_ms() / 1000).await;
    assert_eq!(response.status(), 200);

    let connection = Connection::connect(common::AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    // What a worker declares: the same arguments, or RabbitMQ would refuse it (406).
    porter_broker::amqp::declare_events_queues(
        &channel,
        &deployment.prefix,
        porter_broker::amqp::QueueType::Classic,
    )
    .await
    .expect("the worker's declaration matches the gateway's");
    // A worker that can never apply it rejects it without requeue: it moves to the dead queue.
    let message = channel
        .basic_get(
            format!("{}events", deployment.prefix).as_str().into(),
            BasicGetOptions { no_ack: false },
        )
        .await
        .unwrap()
        .expect("the publication is queued");
    message
        .delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let dead = common::eventually(
        "the publication is dead-lettered",
        Duration::from_secs(5),
        || async {
            take_all(&format!("{}events.dead", deployment.prefix))
                .await
                .pop()
        },
    )
    .await;
    assert_eq!(dead.0.body, body);
    assert!(
        take_all(&format!("{}events", deployment.prefix))
            .await
            .is_empty()
    );
    let _ = connection.close(200, "done".into()).await;
    gateway.kill();
    delete_queues(&deployment.prefix).await;
}

#[tokio::test]
async fn with_the_broker_away_a_publish_is_503_every_time_never_taken_for_a_replay() {
    // A broker that is not there: nothing listens on this port.
    let dead_broker = format!("amqp://guest:guest@127.0.0.1:{}/%2f", common::free_port());
    let deployment = Deployment::new("publish_away").with_env("AMQP_URL", &dead_broker);
    let mut gateway = deployment.gateway();
    let client = reqwest::Client::new();
    common::eventually("the gateway answers", Duration::from_secs(20), || async {
        let response = client.get(deployment.url("/healthz")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    let body = r#"{"name":"e","data":"1","channel":"my-channel"}"#;
    let now = porter_broker::now_ms() / 1000;
    // The same signed request twice: a refusal marks nothing done (in the real Redis), so the
    // second is tried again, not answered 200 as a replay.
    for _ in 0..2 {
        let response = publish(&deployment, body, now).await;
        assert_eq!(response.status(), 503);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], "broker_unavailable", "{answer}");
    }
    gateway.kill();
}

#[tokio::test]
async fn on_quorum_queues_a_publish_is_confirmed_and_the_queues_are_quorum() {
    let deployment = Deployment::new("publish_quorum").with_env("PORTER_QUEUE_TYPE", "quorum");
    let mut gateway = deployment.gateway();
    deployment.wait_ready().await;
    let body = r#"{"name":"e","data":"1","channel":"my-channel"}"#;
    let response = publish(&deployment, body, porter_broker::now_ms() / 1000).await;
    assert_eq!(response.status(), 200);
    let connection = Connection::connect(common::AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    // Declared as quorum queues (a classic declaration of them would be refused, 406).
    porter_broker::amqp::declare_events_queues(
        &channel,
        &deployment.prefix,
        porter_broker::amqp::QueueType::Quorum,
    )
    .await
    .expect("the events queues are quorum queues");
    let _ = connection.close(200, "done".into()).await;
    let queued = take_all(&format!("{}events", deployment.prefix)).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].0.body, body);
    gateway.kill();
    delete_queues(&deployment.prefix).await;
}

#[tokio::test]
async fn the_events_publisher_reconnects_after_the_broker_closed_its_connection() {
    let deployment = Deployment::new("publish_reconnect");
    let mut gateway = deployment.gateway();
    deployment.wait_ready().await;
    let first = r#"{"name":"e","data":"1","channel":"my-channel"}"#;
    assert_eq!(
        publish(&deployment, first, porter_broker::now_ms() / 1000)
            .await
            .status(),
        200
    );
    // The gateway's two connections (tasks, events), closed by the broker.
    assert_eq!(common::close_connections_of(&deployment.prefix), 2);
    // Until the sink is back a publish is 503 (nothing queued); then 200 again. Each try is
    // another request (its data differs), so no try is a replay of another.
    let mut attempt = 0;
    common::eventually("publishing works again", Duration::from_secs(20), || {
        attempt += 1;
        let body = format!(r#"{{"name":"e","data":"again {attempt}","channel":"my-channel"}}"#);
        let deployment = &deployment;
        async move {
            let status = publish(deployment, &body, porter_broker::now_ms() / 1000)
                .await
                .status();
            assert!(status == 200 || status == 503, "{status}");
            (status == 200).then_some(())
        }
    })
    .await;
    let queued = take_all(&format!("{}events", deployment.prefix)).await;
    assert_eq!(queued.first().map(|q| q.0.body.as_str()), Some(first));
    // Exactly the accepted ones: the first, and the one answered 200 after the reconnection.
    assert_eq!(queued.len(), 2, "{queued:?}");
    gateway.kill();
    delete_queues(&deployment.prefix).await;
}
