//! `porter worker` as a process over the real RabbitMQ and Redis: its listener
//! (`--http-listen`: `/healthz`, `/readyz`, `/metrics`, and a bad address), its drain on SIGTERM
//! under load, and its give-up on a task a quorum queue delivered too often.
//!
//! All in one binary: every `tests/*.rs` file links the whole workspace, which
//! costs tens of seconds on the 2-core CI machine.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use porter_broker::amqp::QueueType;
use porter_broker::now_ms;
use porter_worker::runner::GIVE_UP_DELIVERY_COUNT;
use serde_json::Value;

/// Allowed by anyone, refused to non-members, and decided by the test's webhook by path.
const LISTENER_POLICY: &str = r#"
[[rule]]
name = "open"
pattern = "private-open@{object_id}"
allow = "anyone"

[[rule]]
name = "team"
pattern = "private-team@{object_id}"
allow = "member"

[[rule]]
name = "hook"
pattern = "private-hook-{verdict}@{object_id}"
allow = { webhook = "http://127.0.0.1:PORT/{verdict}" }
"#;

/// A redis-server of the test's own, on its own port, so that the test can kill it.
struct OwnRedis {
    process: Proc,
    url: String,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        OwnRedis {
            process: Proc {
                child,
                name: "redis".into(),
            },
            url: format!("redis://127.0.0.1:{port}/"),
        }
    }

    async fn wait_up(&self) {
        let url = self.url.clone();
        eventually("the test's redis-server", Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                let client = redis::Client::open(url.as_str()).ok()?;
                let mut connection = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .ok()
            }
        })
        .await;
    }
}

async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

async fn get_json(url: &str) -> (u16, Value) {
    let (status, body) = get(url).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Waits until the worker's `/readyz` says ready (connected, store answering, consuming).
async fn until_ready(listen: &str) {
    let url = format!("http://{listen}/readyz");
    eventually("the worker to be ready", Duration::from_secs(20), || {
        let url = url.clone();
        async move {
            let (status, body) = get_json(&url).await;
            (status == 200 && body["ready"] == true).then_some(())
        }
    })
    .await;
}

/// The value of one exact sample line's series (`name{labels}`), if the page has it.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reports_health_readiness_and_counts_over_real_services() {
    let hook = webhook_server().await;
    let deployment = Deployment::new("listener")
        .with_policy(&LISTENER_POLICY.replace("PORT", &hook.to_string()));
    let redis = OwnRedis::start();
    redis.wait_up().await;
    // Only the worker uses the test's own Redis: the gateway keeps the shared one, so that
    // killing this one tells on the worker alone.
    let worker_side = deployment.sibling().with_env("REDIS_URL", &redis.url);
    let listen = format!("127.0.0.1:{}", free_port());
    let _gateway = deployment.gateway();
    let mut worker = worker_side.worker_with(&[
        "--concurrency",
        "4",
        "--prefetch",
        "8",
        "--http-listen",
        &listen,
    ]);
    let mut redis = redis;
    deployment.wait_ready().await;
    until_ready(&listen).await;

    let (status, body) = get_json(&format!("http://{listen}/healthz")).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &Value::from("ok")),
        "{body}"
    );
    let (status, body) = get_json(&format!("http://{listen}/nowhere")).await;
    assert_eq!((status, &body["error"]), (404, &Value::from("not_found")));
    // Another method on a served path: 405 naming the one allowed, as the gateway answers.
    let wrong = reqwest::Client::new()
        .post(format!("http://{listen}/metrics"))
        .send()
        .await
        .expect("POST /metrics");
    assert_eq!(wrong.status(), 405);
    assert_eq!(wrong.headers()["allow"], "GET");
    let body: Value = wrong.json().await.expect("JSON body");
    assert_eq!(body["error"], "method_not_allowed");
    let (_, page) = get(&format!("http://{listen}/metrics")).await;
    assert_eq!(
        sample(&page, "porter_worker_broker_connected"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(sample(&page, "porter_worker_concurrency_limit"), Some(4.0));
    assert_eq!(
        sample(
            &page,
            r#"porter_worker_tasks_total{queue="auth",outcome="allowed"}"#
        ),
        Some(0.0)
    );

    let channels = [
        "private-open@1",
        "private-open@2",
        "private-team@1",
        "private-hook-500@1",
    ];
    let client = reqwest::Client::new();
    let body: Value = client
        .get(deployment.batch_url("1.1", &channels))
        .bearer_auth(token("alice", &[]))
        .send()
        .await
        .expect("batch request")
        .json()
        .await
        .expect("a JSON answer");
    for channel in ["private-open@1", "private-open@2"] {
        assert_eq!(
            body[channel]["auth"],
            expected_auth("1.1", channel, None),
            "{body}"
        );
    }
    assert_eq!(body["private-team@1"]["reason"], "forbidden", "{body}");
    assert_eq!(
        body["private-hook-500@1"]["reason"], "authorizer_unavailable",
        "{body}"
    );

    // A task leaves the in-flight count once acked, just after its reply went out.
    let metrics_url = format!("http://{listen}/metrics");
    let page = eventually(
        "the tasks in flight to be acked",
        Duration::from_secs(10),
        || {
            let metrics_url = metrics_url.clone();
            async move {
                let (status, page) = get(&metrics_url).await;
                (status == 200 && sample(&page, "porter_worker_tasks_in_flight") == Some(0.0))
                    .then_some(page)
            }
        },
    )
    .await;
    for (series, value) in [
        (
            r#"porter_worker_tasks_total{queue="auth",outcome="allowed"}"#,
            2.0,
        ),
        (
            r#"porter_worker_tasks_total{queue="auth",outcome="refused"}"#,
            2.0,
        ),
        (
            r#"porter_worker_tasks_total{queue="auth",outcome="expired"}"#,
            0.0,
        ),
        (
            r#"porter_worker_refusals_total{queue="auth",reason="forbidden"}"#,
            1.0,
        ),
        (
            r#"porter_worker_refusals_total{queue="auth",reason="authorizer_unavailable"}"#,
            1.0,
        ),
        (
            r#"porter_worker_webhook_failures_total{kind="status"}"#,
            1.0,
        ),
        ("porter_worker_webhook_duration_seconds_count", 1.0),
        (
            r#"porter_worker_task_duration_seconds_count{rule="open"}"#,
            2.0,
        ),
        (
            r#"porter_worker_task_duration_seconds_count{rule="team"}"#,
            1.0,
        ),
        (
            r#"porter_worker_redelivered_tasks_total{queue="auth"}"#,
            0.0,
        ),
        ("porter_worker_tasks_in_flight", 0.0),
    ] {
        assert_eq!(sample(&page, series), Some(value), "{series} in:\n{page}");
    }

    // The store goes away: the worker is alive but not ready, and says why.
    redis.process.kill();
    let readyz = format!("http://{listen}/readyz");
    let body = eventually(
        "/readyz to say the store is down",
        Duration::from_secs(20),
        || {
            let readyz = readyz.clone();
            async move {
                let (status, body) = get_json(&readyz).await;
                (status == 503).then_some(body)
            }
        },
    )
    .await;
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["store"], false, "{body}");
    assert_eq!(body["broker"], true, "{body}");
    assert_eq!(body["not_ready"], serde_json::json!(["store"]), "{body}");
    assert_eq!(get(&format!("http://{listen}/healthz")).await.0, 200);

    // A member check without the store is refused, and counted under its reason.
    let body: Value = client
        .get(deployment.batch_url("2.2", &["private-team@2"]))
        .bearer_auth(token("alice", &[]))
        .send()
        .await
        .expect("batch request")
        .json()
        .await
        .expect("a JSON answer");
    let reason = body["private-team@2"]["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("refused with a reason: {body}"))
        .to_owned();
    assert_ne!(reason, "timeout", "{body}");
    let (_, page) = get(&format!("http://{listen}/metrics")).await;
    let series = format!(r#"porter_worker_refusals_total{{queue="auth",reason="{reason}"}}"#);
    assert_eq!(sample(&page, &series), Some(1.0), "{series} in:\n{page}");
    assert_eq!(
        sample(&page, "porter_worker_store_errors_total"),
        Some(1.0),
        "{page}"
    );

    // SIGTERM: the worker drains (nothing in hand) and exits cleanly, listener and all.
    let exit = worker
        .terminate(Duration::from_secs(15))
        .expect("the worker exits after SIGTERM");
    assert!(exit.success(), "{exit:?}");
    assert_eq!(get(&format!("http://{listen}/healthz")).await.0, 0);
}

/// The webhook of every channel answers after 1.5 s; a task must start within 1 s of being
/// published (`expires`), and the gateway waits 1 s + its 3 s grace for the answer.
const DRAIN_POLICY: &str = r#"
[[rule]]
name = "slow"
pattern = "private-slow@{object_id}"
time_limit = 3
expires = 1
allow = { webhook = "http://127.0.0.1:PORT/slow" }
"#;

/// Channels asked for, one per request, while one of two workers is stopped.
const LOAD_REQUESTS: usize = 40;
const LOAD_INTERVAL: Duration = Duration::from_millis(150);
/// The request after which the first worker gets SIGTERM.
const STOP_AFTER: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_under_load_loses_no_channel() {
    let hook = webhook_server().await;
    let deployment = Deployment::new("drain")
        .with_policy(&DRAIN_POLICY.replace("PORT", &hook.to_string()))
        .with_env("PORTER_GRACE_MS", "3000");
    let _gateway = deployment.gateway();
    let listen_a = format!("127.0.0.1:{}", free_port());
    let listen_b = format!("127.0.0.1:{}", free_port());
    // Either worker alone can carry the load (about 7 channels a second of 1.5 s each).
    let worker_args = |listen: &str| {
        [
            "--concurrency",
            "16",
            "--prefetch",
            "32",
            "--http-listen",
            listen,
        ]
        .map(str::to_owned)
    };
    let args_a = worker_args(&listen_a);
    let args_b = worker_args(&listen_b);
    let mut stopped = deployment.worker_with(&args_a.each_ref().map(String::as_str));
    let _survivor = deployment.worker_with(&args_b.each_ref().map(String::as_str));
    deployment.wait_ready().await;
    until_ready(&listen_a).await;
    until_ready(&listen_b).await;

    let client = reqwest::Client::new();
    let mut requests = Vec::with_capacity(LOAD_REQUESTS);
    let mut draining = None;
    for i in 0..LOAD_REQUESTS {
        let channel = format!("private-slow@{i}");
        let socket_id = format!("{i}.1");
        let url = deployment.batch_url(&socket_id, &[&channel]);
        let client = client.clone();
        requests.push((
            channel,
            socket_id,
            tokio::spawn(async move {
                let response = client.get(url).send().await.expect("batch request");
                response.json::<Value>().await.unwrap_or(Value::Null)
            }),
        ));
        if i == STOP_AFTER {
            // Mid-load: the worker holds running tasks and keeps getting new ones.
            stopped.signal_term();
            // While it drains it is alive but not ready: it no longer consumes.
            let readyz = format!("http://{listen_a}/readyz");
            draining = Some(tokio::spawn(async move {
                eventually(
                    "the draining worker's /readyz",
                    Duration::from_secs(20),
                    || {
                        let readyz = readyz.clone();
                        async move {
                            match get_json(&readyz).await {
                                (503, body) => Some(Some(body)),
                                // Gone already: the drain ended before a probe saw it.
                                (0, _) => Some(None),
                                _ => None,
                            }
                        }
                    },
                )
                .await
            }));
        }
        tokio::time::sleep(LOAD_INTERVAL).await;
    }
    if let Some(body) = draining.expect("the worker was stopped").await.unwrap() {
        assert_eq!(body["consuming"], false, "{body}");
        assert_eq!(
            body["not_ready"],
            serde_json::json!(["consuming"]),
            "{body}"
        );
        eprintln!("draining worker's /readyz: {body}");
    }

    let mut lost = Vec::new();
    for (channel, socket_id, request) in requests {
        let body = request.await.expect("the request task");
        if body[&channel]["auth"] != expected_auth(&socket_id, &channel, None) {
            lost.push(format!("{channel}: {}", body[&channel]));
        }
    }
    assert!(lost.is_empty(), "channels lost to the drain: {lost:#?}");

    let exit = stopped
        .terminate(Duration::from_secs(15))
        .expect("the stopped worker exits after its drain");
    assert!(exit.success(), "a drained worker exits cleanly: {exit:?}");
    // The survivor took what the stopped one handed back, and is still consuming.
    let (status, page) = get(&format!("http://{listen_b}/metrics")).await;
    assert_eq!(status, 200);
    let allowed = sample(
        &page,
        r#"porter_worker_tasks_total{queue="auth",outcome="allowed"}"#,
    )
    .expect("allowed tasks counted");
    assert!(allowed >= 1.0, "{page}");
    assert_eq!(
        sample(
            &page,
            r#"porter_worker_tasks_total{queue="auth",outcome="expired"}"#
        ),
        Some(0.0),
        "{page}"
    );
    // How many came back from the stopped worker depends on what it had buffered: shown, not
    // asserted.
    eprintln!(
        "survivor: {allowed} allowed, {:?} redelivered",
        sample(
            &page,
            r#"porter_worker_redelivered_tasks_total{queue="auth"}"#
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_taken_listen_address_is_exit_code_2_and_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a local port");
    let taken = taken.local_addr().expect("its address").to_string();
    for (address, expected) in [
        ("nonsense", "is not an IP:PORT address"),
        ("127.0.0.1:99999", "is not an IP:PORT address"),
        (taken.as_str(), "cannot listen on"),
    ] {
        let deployment = Deployment::new("listen-address").capture_logs();
        let mut worker = deployment.worker_with(&["--http-listen", address]);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = worker.child.try_wait().expect("wait for the worker") {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{address}: the worker kept running"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status.code(), Some(2), "{address}");
        let logs = deployment.captured_logs();
        let lines: Vec<&str> = logs
            .lines()
            .filter(|line| !line.starts_with("==> "))
            .collect();
        assert_eq!(lines.len(), 1, "{address}: {lines:#?}");
        assert!(
            lines[0].contains("--http-listen"),
            "{address}: {}",
            lines[0]
        );
        assert!(lines[0].contains(expected), "{address}: {}", lines[0]);
    }
}

/// Takes the task waiting in `queue` and hands it back `times` times, as workers that die
/// holding it would; returns the `x-delivery-count` the broker put on the last one.
async fn hand_back(queue: &str, times: usize) -> Option<lapin::types::AMQPValue> {
    use lapin::options::{BasicGetOptions, BasicNackOptions};
    let properties = lapin::ConnectionProperties::default();
    let connection = lapin::Connection::connect(AMQP_URL, properties)
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("a channel");
    let mut count = None;
    for _ in 0..times {
        let message = eventually("the task in its queue", Duration::from_secs(10), || {
            let channel = channel.clone();
            async move {
                channel
                    .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                    .await
                    .ok()
                    .flatten()
            }
        })
        .await;
        count = message
            .delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|headers| headers.inner().get("x-delivery-count").cloned());
        let requeue = BasicNackOptions {
            requeue: true,
            multiple: false,
        };
        message.delivery.acker.nack(requeue).await.expect("nack");
    }
    let _ = connection.close(200, "test done".into()).await;
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_delivered_too_often_on_a_quorum_queue_is_answered_without_running() {
    let deployment = Deployment::new("give-up")
        .with_policy(LISTENER_POLICY)
        .with_env("PORTER_QUEUE_TYPE", "quorum");
    let stop = tokio_util::sync::CancellationToken::new();
    let client = task_client(
        AMQP_URL,
        &deployment.prefix,
        QueueType::Quorum,
        stop.clone(),
    )
    .await;
    let task = private_task("private-open@1", "open");
    let waiter = publish_one(&client, &task, Duration::from_secs(60), now_ms() + 60_000).await;

    // GIVE_UP_DELIVERY_COUNT deliveries that were never acknowledged: the next one carries
    // that count.
    let queue = format!("{}auth", deployment.prefix);
    let times = GIVE_UP_DELIVERY_COUNT as usize;
    let last_seen = hand_back(&queue, times).await;
    let before_last = GIVE_UP_DELIVERY_COUNT as i64 - 1;
    assert!(
        matches!(
            last_seen,
            Some(lapin::types::AMQPValue::LongLongInt(n)) if n == before_last
        ) || matches!(
            last_seen,
            Some(lapin::types::AMQPValue::LongInt(n)) if i64::from(n) == before_last
        ),
        "delivery {times} counts {before_last} before it: {last_seen:?}"
    );

    let listen = format!("127.0.0.1:{}", free_port());
    let _worker = deployment.worker_with(&["--http-listen", &listen]);
    let reply = waiter
        .wait_until(tokio::time::Instant::now() + Duration::from_secs(20))
        .await
        .expect("the worker answers the task");
    assert_eq!(
        reply.reason.map(|r| r.to_string()).as_deref(),
        Some("internal_error")
    );
    let (_, page) = get(&format!("http://{listen}/metrics")).await;
    for (series, value) in [
        (
            r#"porter_worker_tasks_total{queue="auth",outcome="gave_up"}"#,
            1.0,
        ),
        (
            r#"porter_worker_tasks_total{queue="auth",outcome="allowed"}"#,
            0.0,
        ),
        (
            r#"porter_worker_redelivered_tasks_total{queue="auth"}"#,
            1.0,
        ),
        (
            r#"porter_worker_task_duration_seconds_count{rule="open"}"#,
            0.0,
        ),
    ] {
        assert_eq!(sample(&page, series), Some(value), "{series} in:\n{page}");
    }
    client.close().await;
}
