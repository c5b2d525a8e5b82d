//! Failover over the 3-node RabbitMQ cluster of `scripts/cluster.sh` (which `make services`
//! brings up): `porter gateway` and `porter worker` processes with `AMQP_URL` listing the three
//! nodes and quorum task queues, under load, while the tests kill, stop and restart nodes.
//!
//! Each test asserts what the clients got (every channel signed or answered with a reason, no
//! 500, no request left hanging) and prints how long the recovery took and how many channels
//! failed meanwhile; those figures go to docs/reliability.md, never into an assertion (only
//! generous bounds that detect a hang). The tests kill nodes, so they take turns ([`CLUSTER`])
//! and put every node back before they end, even when they fail ([`Restore`]).
//!
//! Without the cluster they fail, saying how to start it: they are part of `make test`.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use porter_broker::amqp::QueueType;
use porter_broker::now_ms;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// One test at a time kills nodes.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/cluster.sh");
const NODES: usize = 3;
const AMQP_PORT_BASE: u16 = 5700;

/// Concurrent client loops of the load.
const LOOPS: usize = 8;
/// How long a client loop waits after a failed channel before its next request.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// A request that takes longer than this is a hang (the rule's deadline is 3 s).
const HANG: Duration = Duration::from_secs(20);

/// A rule whose webhook counts the runs of each channel's task.
const POLICY: &str = r#"
[[rule]]
name = "load"
pattern = "private-load@{object_id}"
time_limit = 1
expires = 3
allow = { webhook = "http://127.0.0.1:PORT/allow" }
"#;

fn script(args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(SCRIPT)
        .args(args)
        .output()
        .expect("run scripts/cluster.sh")
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The cluster's `AMQP_URL`, after checking that every node is up.
fn require_cluster() -> String {
    let status = script(&["status", "rabbitmq"]);
    assert!(
        status.status.success(),
        "the RabbitMQ cluster is not up: start it with `scripts/cluster.sh up` (`make services` \
         does)\n{}{}",
        stdout(&status),
        String::from_utf8_lossy(&status.stderr)
    );
    let urls = script(&["urls", "rabbitmq"]);
    assert!(urls.status.success(), "scripts/cluster.sh urls rabbitmq");
    stdout(&urls).trim().to_owned()
}

fn node_pid(node: usize) -> Option<u32> {
    let output = script(&["pid", "rabbitmq", &node.to_string()]);
    output
        .status
        .success()
        .then(|| stdout(&output).trim().parse().ok())
        .flatten()
}

fn kill_node(node: usize) {
    let pid = node_pid(node).expect("the node to kill runs");
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill -9");
    assert!(status.success(), "kill -9 {pid}");
}

fn stop_node(node: usize) {
    let output = script(&["stop-node", "rabbitmq", &node.to_string()]);
    assert!(output.status.success(), "stop-node {node}: {output:?}");
}

/// Starts a node again and returns how long it took until it had booted and rejoined.
fn start_node(node: usize) -> Duration {
    let started = Instant::now();
    let output = script(&["start-node", "rabbitmq", &node.to_string()]);
    assert!(output.status.success(), "start-node {node}: {output:?}");
    started.elapsed()
}

/// `rabbitmqctl` against the first running node.
fn ctl(args: &[&str]) -> String {
    try_ctl(args).unwrap_or_else(|| panic!("no node of the cluster answers rabbitmqctl {args:?}"))
}

fn try_ctl(args: &[&str]) -> Option<String> {
    for node in 1..=NODES {
        if node_pid(node).is_none() {
            continue;
        }
        let node = node.to_string();
        let mut all = vec!["ctl", "rabbitmq", &node];
        all.extend_from_slice(args);
        let output = script(&all);
        if output.status.success() {
            return Some(stdout(&output));
        }
    }
    None
}

fn running_members() -> String {
    ctl(&[
        "eval",
        "lists:flatten([atom_to_list(N) ++ \" \" || N <- rabbit_nodes:all_running()]).",
    ])
}

/// The node (1..=3) the connection whose name holds `needle` is on, from its server port.
fn node_of_connection(needle: &str) -> Option<usize> {
    ctl(&[
        "list_connections",
        "--no-table-headers",
        "port",
        "client_properties",
    ])
    .lines()
    .filter(|line| line.contains(needle))
    .find_map(|line| {
        let port: u16 = line.split_whitespace().next()?.parse().ok()?;
        let node = usize::from(port.checked_sub(AMQP_PORT_BASE)?);
        (1..=NODES).contains(&node).then_some(node)
    })
}

/// The test's task queues as RabbitMQ sees them (printed with the figures).
fn queue_state(prefix: &str) -> String {
    try_ctl(&[
        "list_queues",
        "--no-table-headers",
        "name",
        "leader",
        "online",
        "consumers",
        "messages_ready",
        "messages_unacknowledged",
    ])
    .unwrap_or_default()
    .lines()
    .filter(|line| line.contains(prefix) || line.contains("amq.gen"))
    .collect::<Vec<_>>()
    .join("; ")
}

/// The node leading a quorum queue.
fn quorum_leader(queue: &str) -> Option<usize> {
    ctl(&[
        "list_queues",
        "--no-table-headers",
        "name",
        "type",
        "leader",
    ])
    .lines()
    .find_map(|line| {
        let mut columns = line.split_whitespace();
        let (name, kind, leader) = (columns.next()?, columns.next()?, columns.next()?);
        (name == queue && kind == "quorum").then_some(())?;
        let number = leader
            .strip_prefix("porter-rabbit-")?
            .split('@')
            .next()?
            .parse()
            .ok()?;
        Some(number)
    })
}

/// Puts every node back and removes the test's queues, however the test ends.
struct Restore {
    prefix: String,
}

impl Drop for Restore {
    fn drop(&mut self) {
        for node in 1..=NODES {
            if node_pid(node).is_none() {
                let _ = script(&["start-node", "rabbitmq", &node.to_string()]);
            }
        }
        for queue in ["auth", "auth/high"] {
            let _ = try_ctl(&["delete_queue", &format!("{}{queue}", self.prefix)]);
        }
    }
}

/// Runs of each channel's task, as the webhook saw them.
type Runs = Arc<Mutex<HashMap<String, u32>>>;

/// A keep-alive HTTP server that allows every channel and counts each channel's calls.
async fn counting_webhook() -> (u16, Runs) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let runs: Runs = Arc::default();
    let counted = runs.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let runs = counted.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    // Every complete request in the buffer.
                    while let Some(end) = find(&buffer, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buffer.len() < end + 4 + length {
                            break;
                        }
                        let body: Value =
                            serde_json::from_slice(&buffer[end + 4..end + 4 + length])
                                .unwrap_or(Value::Null);
                        buffer.drain(..end + 4 + length);
                        if let Some(channel) = body["channel"].as_str() {
                            *runs.lock().unwrap().entry(channel.to_owned()).or_default() += 1;
                        }
                        let answer = r#"{"allow": true}"#;
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                            answer.len()
                        );
                        if socket.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, runs)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What a client got for one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Signed,
    /// A per-channel reason, or a single-channel request's error code.
    Reason(String),
}

#[derive(Debug, Clone)]
struct Answer {
    /// Since the load started.
    at: Duration,
    channel: String,
    got: Got,
}

/// What went wrong beyond a reason: a 500, a bad signature, a hang, an unexpected shape.
type Defects = Arc<Mutex<Vec<String>>>;

/// `LOOPS` closed loops of requests: even loops POST `/pusher/auth` (one channel), odd loops
/// GET the batch endpoint with two channels. Every channel name is unique.
async fn load(
    deployment: &Deployment,
    stop: CancellationToken,
    started: Instant,
) -> (Vec<Answer>, Vec<String>) {
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let defects: Defects = Arc::default();
    let client = reqwest::Client::builder().timeout(HANG).build().unwrap();
    let mut loops = Vec::new();
    for index in 0..LOOPS {
        let (client, stop, answers, defects) = (
            client.clone(),
            stop.clone(),
            answers.clone(),
            defects.clone(),
        );
        let auth_url = deployment.url("/pusher/auth");
        let base = deployment.batch_url("1.2", &[]);
        loops.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                n += 1;
                let one = format!("private-load@{index}x{n}");
                let results = if index % 2 == 0 {
                    single(&client, &auth_url, &one).await
                } else {
                    let two = format!("private-load@{index}y{n}");
                    let url = format!("{base}&channels={one}&channels={two}");
                    batch(&client, &url, &[&one, &two]).await
                };
                let at = started.elapsed();
                match results {
                    Ok(results) => {
                        // A client whose channel failed retries after a pause, as pusher-js
                        // does: the failure count then says how many such retries it took.
                        let failed = results.iter().any(|(_, got)| *got != Got::Signed);
                        answers.lock().unwrap().extend(
                            results
                                .into_iter()
                                .map(|(channel, got)| Answer { at, channel, got }),
                        );
                        if failed {
                            tokio::time::sleep(RETRY_PAUSE).await;
                        }
                    }
                    Err(defect) => {
                        defects.lock().unwrap().push(defect);
                        // Do not spin on a failing gateway.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    stop.cancelled().await;
    for task in loops {
        let _ = task.await;
    }
    let answers = answers.lock().unwrap().clone();
    let defects = defects.lock().unwrap().clone();
    (answers, defects)
}

async fn single(
    client: &reqwest::Client,
    url: &str,
    channel: &str,
) -> Result<Vec<(String, Got)>, String> {
    let response = client
        .post(url)
        .form(&[("socket_id", "1.2"), ("channel_name", channel)])
        .send()
        .await
        .map_err(|e| format!("{channel}: no answer ({e})"))?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let got = match status {
        200 if body["auth"] == expected_auth("1.2", channel, None) => Got::Signed,
        503 | 504 | 429 => Got::Reason(
            body["error"]
                .as_str()
                .ok_or_else(|| format!("{channel}: {status} without a code: {body}"))?
                .to_owned(),
        ),
        _ => return Err(format!("{channel}: {status} {body}")),
    };
    Ok(vec![(channel.to_owned(), got)])
}

async fn batch(
    client: &reqwest::Client,
    url: &str,
    channels: &[&str],
) -> Result<Vec<(String, Got)>, String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("batch: no answer ({e})"))?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status == 503 {
        // The whole batch refused (the broker not connected at all): every channel has it.
        let code = body["error"].as_str().unwrap_or("").to_owned();
        if code.is_empty() {
            return Err(format!("batch: 503 without a code: {body}"));
        }
        return Ok(channels
            .iter()
            .map(|c| ((*c).to_owned(), Got::Reason(code.clone())))
            .collect());
    }
    if status != 200 {
        return Err(format!("batch: {status} {body}"));
    }
    channels
        .iter()
        .map(|channel| {
            let entry = &body[*channel];
            if entry["auth"] == expected_auth("1.2", channel, None) {
                Ok(((*channel).to_owned(), Got::Signed))
            } else if let Some(reason) = entry["reason"].as_str() {
                Ok(((*channel).to_owned(), Got::Reason(reason.to_owned())))
            } else {
                Err(format!("batch: {channel}: {entry}"))
            }
        })
        .collect()
}

/// The figures of one fault: how long after it channels were signed again (the last failed
/// channel), how many failed, by reason.
struct Figures {
    recovered_after: Duration,
    failed: usize,
    by_reason: HashMap<String, usize>,
    signed_after: usize,
}

fn figures(answers: &[Answer], fault_at: Duration) -> Figures {
    let mut by_reason: HashMap<String, usize> = HashMap::new();
    let mut last_failure = fault_at;
    let mut signed_after = 0;
    for answer in answers.iter().filter(|a| a.at >= fault_at) {
        match &answer.got {
            Got::Signed => signed_after += 1,
            Got::Reason(reason) => {
                *by_reason.entry(reason.clone()).or_default() += 1;
                last_failure = last_failure.max(answer.at);
            }
        }
    }
    Figures {
        recovered_after: last_failure - fault_at,
        failed: by_reason.values().sum(),
        by_reason,
        signed_after,
    }
}

/// A gateway and two workers on the cluster, with quorum task queues.
fn deployment(test: &str, urls: &str, webhook: u16) -> Deployment {
    Deployment::new(test)
        .with_policy(&POLICY.replace("PORT", &webhook.to_string()))
        .with_env("AMQP_URL", urls)
        .with_env("PORTER_QUEUE_TYPE", "quorum")
}

/// Runs the load, applies `fault` after `before`, keeps the load on for `after`, and checks
/// what every client got.
async fn under_load(
    deployment: &Deployment,
    before: Duration,
    after: Duration,
    fault: impl FnOnce() + Send + 'static,
) -> (Vec<Answer>, Duration) {
    let stop = CancellationToken::new();
    let started = Instant::now();
    let fault_at = Arc::new(Mutex::new(None));
    let injector = {
        let (stop, fault_at) = (stop.clone(), fault_at.clone());
        tokio::spawn(async move {
            tokio::time::sleep(before).await;
            *fault_at.lock().unwrap() = Some(started.elapsed());
            tokio::task::spawn_blocking(fault).await.unwrap();
            tokio::time::sleep(after).await;
            stop.cancel();
        })
    };
    let (answers, defects) = load(deployment, stop, started).await;
    injector.await.unwrap();
    assert!(
        defects.is_empty(),
        "clients got {} defective answers (500, bad signature or no answer), e.g. {:?}",
        defects.len(),
        &defects[..defects.len().min(5)]
    );
    let fault_at = fault_at.lock().unwrap().expect("the fault ran");
    (answers, fault_at)
}

/// Signed/failed channels per second from a second before the fault: `+1s 120/3 …`.
fn timeline(answers: &[Answer], fault_at: Duration) -> String {
    let mut seconds: std::collections::BTreeMap<i64, (usize, usize)> = Default::default();
    for answer in answers {
        let second = (answer.at.as_millis() as i64 - fault_at.as_millis() as i64).div_euclid(1000);
        let entry = seconds.entry(second).or_default();
        if answer.got == Got::Signed {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    seconds
        .into_iter()
        .filter(|(second, _)| *second >= -1)
        .map(|(second, (signed, failed))| format!("{second:+}s {signed}/{failed}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks that the load was served before the fault and again at its end, and prints the
/// figures.
fn report(test: &str, answers: &[Answer], fault_at: Duration) -> Figures {
    let before = answers
        .iter()
        .filter(|a| a.at < fault_at && a.got == Got::Signed)
        .count();
    assert!(before > 0, "{test}: nothing was signed before the fault");
    let figures = figures(answers, fault_at);
    let end = answers.iter().map(|a| a.at).max().unwrap_or_default();
    println!("TIMELINE {test}: {}", timeline(answers, fault_at));
    assert!(
        answers
            .iter()
            .any(|a| a.at > fault_at + figures.recovered_after && a.got == Got::Signed)
            && figures.recovered_after < end - fault_at,
        "{test}: channels were not signed again after the fault ({:?})",
        figures.by_reason
    );
    println!(
        "FIGURES {test}: recovered after {} ms; {} channels failed {:?}; {} signed after the \
         fault, {} before",
        figures.recovered_after.as_millis(),
        figures.failed,
        figures.by_reason,
        figures.signed_after,
        before
    );
    figures
}

/// Every channel answered `Signed` ran its task at least once; more than once is what
/// at-least-once allows after a redelivery, printed.
fn check_runs(test: &str, answers: &[Answer], runs: &Runs) {
    let runs = runs.lock().unwrap();
    let mut twice = 0;
    for answer in answers.iter().filter(|a| a.got == Got::Signed) {
        let count = runs.get(&answer.channel).copied().unwrap_or(0);
        assert!(
            count >= 1,
            "{test}: {} signed without running",
            answer.channel
        );
        if count > 1 {
            twice += 1;
        }
    }
    println!("FIGURES {test}: {twice} signed channels ran more than once (redelivered)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_gateways_node_fails_its_tasks_at_once_and_the_gateway_moves_on() {
    let _turn = CLUSTER.lock().await;
    let urls = require_cluster();
    let (webhook, runs) = counting_webhook().await;
    let deployment = deployment("cluster-kill", &urls, webhook);
    let _restore = Restore {
        prefix: deployment.prefix.clone(),
    };
    let gateway = deployment.gateway();
    let _workers = [deployment.worker(), deployment.worker()];
    deployment.wait_ready().await;
    let connection = format!("porter gateway pid {} ", gateway.pid());
    let node = eventually("the gateway's connection", Duration::from_secs(10), || {
        let connection = connection.clone();
        async move { node_of_connection(&connection) }
    })
    .await;

    let (answers, fault_at) = under_load(
        &deployment,
        Duration::from_secs(2),
        Duration::from_secs(8),
        move || kill_node(node),
    )
    .await;
    println!("QUEUES {}", queue_state(&deployment.prefix));
    println!(
        "RUNS {} webhook calls for {} answers; killed node {node}",
        runs.lock().unwrap().values().sum::<u32>(),
        answers.len()
    );
    let figures = report("kill -9 of the gateway's node", &answers, fault_at);
    assert!(
        figures.by_reason.keys().all(|r| matches!(
            r.as_str(),
            "broker_unavailable" | "unavailable" | "timeout" | "overloaded"
        )),
        "only unavailability reasons: {:?}",
        figures.by_reason
    );
    check_runs("kill -9 of the gateway's node", &answers, &runs);
    let moved = node_of_connection(&connection).expect("the gateway reconnected");
    assert_ne!(moved, node, "the gateway moved to another node");

    // The killed node comes back and rejoins; the gateway goes to it again when its
    // connection moves on (the broker closing it stands for a later failure).
    let took = start_node(node);
    let members = running_members();
    assert!(
        members.contains(&format!("porter-rabbit-{node}@localhost")),
        "node {node} rejoined: {members}"
    );
    println!(
        "FIGURES restart: node {node} booted and rejoined in {} ms",
        took.as_millis()
    );
    let mut on = moved;
    for _ in 0..(2 * NODES) {
        if on == node {
            break;
        }
        close_gateway_connection(&connection);
        on = eventually(
            "the gateway's next connection",
            Duration::from_secs(15),
            || {
                let connection = connection.clone();
                async move { node_of_connection(&connection).filter(|n| *n != on) }
            },
        )
        .await;
    }
    assert_eq!(on, node, "the gateway uses the restarted node again");
    deployment.wait_ready().await;
    let client = reqwest::Client::builder().timeout(HANG).build().unwrap();
    let got = single(
        &client,
        &deployment.url("/pusher/auth"),
        "private-load@after",
    )
    .await
    .expect("an answer");
    assert_eq!(got[0].1, Got::Signed, "signed through the restarted node");
}

/// Closes the gateway's connection from the broker's side.
fn close_gateway_connection(needle: &str) {
    let listing = ctl(&[
        "list_connections",
        "--no-table-headers",
        "pid",
        "client_properties",
    ]);
    let pid = listing
        .lines()
        .find(|line| line.contains(needle))
        .and_then(|line| line.split_whitespace().next())
        .expect("the gateway's connection")
        .to_owned();
    ctl(&["close_connection", &pid, "porter failover test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_the_quorum_leader_loses_no_task() {
    let _turn = CLUSTER.lock().await;
    let urls = require_cluster();
    let (webhook, runs) = counting_webhook().await;
    let deployment = deployment("cluster-leader", &urls, webhook);
    let _restore = Restore {
        prefix: deployment.prefix.clone(),
    };
    let _gateway = deployment.gateway();
    let _workers = [deployment.worker(), deployment.worker()];
    deployment.wait_ready().await;
    let queue = format!("{}auth", deployment.prefix);
    let leader = eventually("the task queue's leader", Duration::from_secs(10), || {
        let queue = queue.clone();
        async move { quorum_leader(&queue) }
    })
    .await;

    let (answers, fault_at) = under_load(
        &deployment,
        Duration::from_secs(2),
        Duration::from_secs(8),
        move || stop_node(leader),
    )
    .await;
    println!("QUEUES {}", queue_state(&deployment.prefix));
    let figures = report("stop of the quorum leader", &answers, fault_at);
    let new_leader = quorum_leader(&queue).expect("a new leader");
    assert_ne!(new_leader, leader, "another node leads the queue");
    // A task lost in the queue would leave its channel waiting out the deadline: `timeout`.
    assert_eq!(
        figures.by_reason.get("timeout").copied().unwrap_or(0),
        0,
        "no task lost: {:?}",
        figures.by_reason
    );
    check_runs("stop of the quorum leader", &answers, &runs);
    let took = start_node(leader);
    println!(
        "FIGURES restart: node {leader} booted and rejoined in {} ms",
        took.as_millis()
    );
}

fn messages_in(queue: &str) -> Option<u64> {
    try_ctl(&["list_queues", "--no-table-headers", "name", "messages"])?
        .lines()
        .find_map(|line| {
            let (name, count) = line.rsplit_once(char::is_whitespace)?;
            (name.trim() == queue).then(|| count.trim().parse().ok())?
        })
}

/// RabbitMQ 3.10's quorum queues honour the per-message `expiration` (a task nobody took in
/// time is dropped by the queue, never run), and the worker still refuses a task past its
/// deadline header (`expired`, without running it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_task_queues_keep_expiration_and_deadline() {
    let _turn = CLUSTER.lock().await;
    let urls = require_cluster();
    let (webhook, runs) = counting_webhook().await;
    let deployment = deployment("cluster-ttl", &urls, webhook);
    let _restore = Restore {
        prefix: deployment.prefix.clone(),
    };
    let stop = CancellationToken::new();
    let client = task_client(&urls, &deployment.prefix, QueueType::Quorum, stop.clone()).await;
    let queue = format!("{}auth", deployment.prefix);
    assert!(
        quorum_leader(&queue).is_some(),
        "the task queue was declared as a quorum queue"
    );

    // No worker yet: the task waits in the queue until its expiration drops it.
    let stale = private_task("private-load@stale", "load");
    let stale_waiter =
        publish_one(&client, &stale, Duration::from_millis(300), now_ms() + 300).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _worker = deployment.worker();
    // The worker's consumer reaches the queue's head: an expired message is dropped there.
    eventually("the expired task gone", Duration::from_secs(15), || {
        let queue = queue.clone();
        async move { (messages_in(&queue) == Some(0)).then_some(()) }
    })
    .await;

    // A live task runs: the worker is consuming.
    let live = private_task("private-load@live", "load");
    let live_waiter = publish_one(&client, &live, Duration::from_secs(5), now_ms() + 5000).await;
    let reply = live_waiter
        .wait_until(tokio::time::Instant::now() + Duration::from_secs(15))
        .await
        .expect("a reply to the live task");
    assert!(reply.ok, "{reply:?}");

    // Past its deadline header (its expiration still far): answered `expired`, not run.
    let late = private_task("private-load@late", "load");
    let late_waiter = publish_one(&client, &late, Duration::from_secs(5), now_ms() - 1000).await;
    let reply = late_waiter
        .wait_until(tokio::time::Instant::now() + Duration::from_secs(10))
        .await
        .expect("a reply to the late task");
    assert_eq!(
        reply.reason.map(|r| r.to_string()).as_deref(),
        Some("expired")
    );

    assert!(
        stale_waiter
            .wait_until(tokio::time::Instant::now())
            .await
            .is_none(),
        "the expired task was never answered"
    );
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.get("private-load@live"), Some(&1), "{runs:?}");
    assert_eq!(runs.get("private-load@stale"), None, "expired: never run");
    assert_eq!(
        runs.get("private-load@late"),
        None,
        "past its deadline: never run"
    );
    client.close().await;
}

/// Runs `porter <role>` with `env` until it exits (it must, at once) and returns its exit code
/// and stderr.
fn refused_start(role: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_porter"));
    command
        .arg(role)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PUSHER_KEY", KEY)
        .env("PUSHER_SECRET", SECRET)
        .stdin(std::process::Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start porter");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("poll porter").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("porter {role} did not refuse its settings: it kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("porter's output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Operator input of the cluster settings: a bad queue type, a bad node of the list or a queue
/// prefix too long for AMQP's names stops gateway and worker with exit code 2 and one line,
/// which never quotes a password. Needs no cluster (nothing connects).
#[test]
fn bad_cluster_settings_are_one_line_and_exit_2() {
    let list = "amqp://u:FIRSTPW@127.0.0.1:5701/%2f,amqp://u:SECOND PW@127.0.0.1:5702/%2f";
    for role in ["gateway", "worker"] {
        let (code, stderr) = refused_start(role, &[("PORTER_QUEUE_TYPE", "qourum")]);
        assert_eq!(code, Some(2), "{role}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{role}: {stderr}");
        assert!(stderr.contains("PORTER_QUEUE_TYPE"), "{role}: {stderr}");

        let (code, stderr) = refused_start(role, &[("AMQP_URL", list)]);
        assert_eq!(code, Some(2), "{role}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{role}: {stderr}");
        assert!(stderr.contains("node 2 of 2"), "{role}: {stderr}");
        assert!(!stderr.contains("PW"), "{role}: {stderr}");

        // A prefix that makes a queue name longer than AMQP's 255 bytes.
        let long_prefix = "p".repeat(250);
        let (code, stderr) = refused_start(role, &[("PORTER_QUEUE_PREFIX", &long_prefix)]);
        assert_eq!(code, Some(2), "{role}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{role}: {stderr}");
        assert!(stderr.contains("PORTER_QUEUE_PREFIX"), "{role}: {stderr}");
    }
}
