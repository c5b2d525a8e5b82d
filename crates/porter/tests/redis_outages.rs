//! Redis going away under a real gateway and worker: a single Redis that the test starts on a
//! port of its own and kills (by pid), and a master of the Redis Cluster of
//! `scripts/cluster.sh up redis` killed with `kill -9` under load. Both assert what clients got:
//! every channel signed or answered with a reason, no 500, no hang; the failover test prints how
//! long until normal answers resumed (the figures of docs/reliability.md).
//!
//! The tests that kill cluster nodes run one at a time (`CLUSTER_NODES`) and leave the cluster
//! healthy (the node restarted and rejoined as a replica). One binary for both: each test binary
//! costs a link on the 2-core CI machine.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use redis::AsyncCommands;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// Serializes the tests that kill nodes of the shared cluster.
static CLUSTER_NODES: Mutex<()> = Mutex::const_new(());

const CLUSTER_URL: &str = "redis+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003,127.0.0.1:7004,127.0.0.1:7005,127.0.0.1:7006";

/// A request may take this long before it counts as a hang (generous: CI is slow).
const HANG: Duration = Duration::from_secs(10);

fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

/// A redis-server of the test's own, on a free port, stopped by pid.
struct OwnRedis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl OwnRedis {
    fn start(test: &str) -> OwnRedis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("{}redis", unique_prefix(test)));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut redis = OwnRedis {
            child: None,
            port,
            dir,
        };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server (again, on the same port) and waits until it answers.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9` by pid.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What one batch request got.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    took: Duration,
}

async fn batch(client: &reqwest::Client, url: &str, token: Option<&str>) -> Answer {
    let started = Instant::now();
    let mut request = client.get(url).timeout(HANG);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .expect("an answer before the hang bound");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        body,
        took: started.elapsed(),
    }
}

/// Every channel is signed or has a reason; returns how many were signed with their retained
/// event (`seeded`).
fn check_channels(answer: &Answer, channels: &[String]) -> usize {
    assert_eq!(answer.status, 200, "{:?}", answer);
    let mut complete = 0;
    for channel in channels {
        let entry = &answer.body[channel.as_str()];
        if entry.get("auth").is_some() {
            let seeded = json!({"event": "seeded", "data": {"channel": channel}});
            let events = entry["events"].as_array().cloned().unwrap_or_default();
            if events.contains(&seeded) {
                complete += 1;
            }
        } else {
            let reason = entry["reason"].as_str();
            assert!(
                reason.is_some_and(|r| !r.is_empty()),
                "{channel}: neither signed nor a reason: {entry}"
            );
        }
    }
    complete
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_gone_private_channels_are_signed_without_their_events_and_tokens_fail_closed() {
    let mut redis = OwnRedis::start("store-down");
    let deployment = Deployment::new("store-down").with_env("REDIS_URL", &redis.url());
    let _gateway = deployment.gateway();
    let _worker = deployment.worker();
    deployment.wait_ready().await;

    // The default policy: `private-message` and `private-user` carry retained events (and
    // private-user an online flag); presence needs a token.
    let channels: Vec<String> = (0..4)
        .flat_map(|i| [format!("private-message@{i}"), format!("private-user@{i}")])
        .collect();
    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for channel in &channels {
        let key = format!("{}retained:{channel}", deployment.prefix);
        let data = json!({ "channel": channel }).to_string();
        let _: () = connection.hset(&key, "seeded", data).await.unwrap();
    }
    let names: Vec<&str> = channels.iter().map(String::as_str).collect();
    let client = reqwest::Client::new();
    let url = deployment.batch_url("1.2", &names);
    let up = batch(&client, &url, None).await;
    assert_eq!(check_channels(&up, &channels), channels.len(), "{up:?}");
    // private-user carries a user.online event besides.
    for i in 0..4 {
        let events = &up.body[format!("private-user@{i}")]["events"];
        assert_eq!(events.as_array().map(Vec::len), Some(2), "{events}");
    }

    redis.kill();
    // Fresh channels (no cache entry to hit): the worker reads the store for them.
    let fresh: Vec<String> = (10..14)
        .flat_map(|i| [format!("private-message@{i}"), format!("private-user@{i}")])
        .collect();
    let fresh_names: Vec<&str> = fresh.iter().map(String::as_str).collect();
    let mut took = Vec::new();
    for round in 0..5 {
        let url = deployment.batch_url(&format!("1.{round}"), &fresh_names);
        let down = batch(&client, &url, None).await;
        check_channels(&down, &fresh);
        for channel in &fresh {
            let entry = &down.body[channel.as_str()];
            assert_eq!(
                entry["auth"],
                expected_auth(&format!("1.{round}"), channel, None),
                "{channel} is signed without the store: {entry}"
            );
            assert!(entry.get("events").is_none(), "{entry}");
        }
        took.push(down.took);
    }
    println!(
        "single redis down: batch of {} private channels answered in {:?} (median of {}; each {:?})",
        fresh.len(),
        median(took.clone()),
        took.len(),
        took
    );

    // A token's revocation cannot be checked: refused, never served unchecked.
    let token = token("7", &[]);
    let url = deployment.batch_url("1.9", &["presence-chat@1", "private-message@1"]);
    let refused = batch(&client, &url, Some(&token)).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.body["error"], "store_unavailable", "{refused:?}");

    // Redis comes back (empty): answers carry the store's data again, unaided.
    redis.restart();
    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for channel in &fresh {
        let key = format!("{}retained:{channel}", deployment.prefix);
        let data = json!({ "channel": channel }).to_string();
        let _: () = connection.hset(&key, "seeded", data).await.unwrap();
    }
    let url = deployment.batch_url("1.20", &fresh_names);
    eventually("answers with events after Redis is back", HANG, || {
        let (client, url, fresh) = (&client, &url, &fresh);
        async move {
            let answer = batch(client, url, None).await;
            (check_channels(&answer, fresh) == fresh.len()).then_some(())
        }
    })
    .await;
}

/// `scripts/cluster.sh <args>`, which must succeed.
fn cluster_script(args: &[&str]) -> String {
    let output = Command::new("bash")
        .arg(scripts().join("cluster.sh"))
        .args(args)
        .output()
        .expect("run scripts/cluster.sh");
    assert!(
        output.status.success(),
        "scripts/cluster.sh {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `scripts/cluster/redis.sh status`: one line per node; exits non-zero while a node is down.
fn redis_status() -> (bool, String) {
    let output = Command::new("bash")
        .arg(scripts().join("cluster/redis.sh"))
        .arg("status")
        .output()
        .expect("run scripts/cluster/redis.sh");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// The node numbers (1-6) that are masters now.
fn masters() -> Vec<u32> {
    redis_status()
        .1
        .lines()
        .filter(|line| line.contains(" master "))
        .filter_map(|line| line.strip_prefix("redis-")?.split(' ').next()?.parse().ok())
        .collect()
}

async fn cluster_connection() -> redis::cluster_async::ClusterConnection {
    let nodes: Vec<String> = (7001..=7006)
        .map(|port| format!("redis://127.0.0.1:{port}/"))
        .collect();
    redis::cluster::ClusterClient::new(nodes)
        .unwrap()
        .get_async_connection()
        .await
        .expect("the cluster answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_master_killed_under_load_fails_over_and_porter_follows() {
    let _serial = CLUSTER_NODES.lock().await;
    cluster_script(&["up", "redis"]);
    let deployment = Deployment::new("redis-failover").with_env("REDIS_URL", CLUSTER_URL);
    let _gateway = deployment.gateway();
    let _worker = deployment.worker();
    deployment.wait_ready().await;

    // 30 channels: their keys fall on every shard.
    let channels: Vec<String> = (0..30).map(|i| format!("private-message@{i}")).collect();
    let mut connection = cluster_connection().await;
    // The names the store uses on a cluster (retained events are hash-tagged by channel).
    let keys = porter_store::Keys::new(deployment.prefix.clone())
        .for_cluster()
        .expect("a prefix without braces");
    for channel in &channels {
        let key = keys.retained(channel);
        let data = json!({ "channel": channel }).to_string();
        let _: () = connection.hset(&key, "seeded", data).await.unwrap();
    }
    let names: Vec<&str> = channels.iter().map(String::as_str).collect();
    let url = deployment.batch_url("3.4", &names);
    let client = reqwest::Client::new();
    let first = batch(&client, &url, None).await;
    assert_eq!(check_channels(&first, &channels), 30, "{first:?}");

    // Load: tokenless batches of all 30 channels, and token-carrying ones (their revocation
    // check fails closed while its shard is down), back to back until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let token = token("7", &[("jti", json!("failover-jti"))]);
    let load = {
        let (stop, client, url, channels, token) = (
            stop.clone(),
            client.clone(),
            url.clone(),
            channels.clone(),
            token.clone(),
        );
        let token_url = deployment.batch_url("3.5", &names[..5]);
        tokio::spawn(async move {
            let mut seen: Vec<(Instant, usize, u16)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let answer = batch(&client, &url, None).await;
                assert!(answer.took < HANG, "a batch hung: {answer:?}");
                let complete = check_channels(&answer, &channels);
                let with_token = batch(&client, &token_url, Some(&token)).await;
                assert!(
                    with_token.status == 200
                        || (with_token.status == 503
                            && with_token.body["error"] == "store_unavailable"),
                    "a token-carrying batch got {with_token:?}"
                );
                seen.push((Instant::now(), complete, with_token.status));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    let victim = *masters().first().expect("a master");
    let pid = cluster_script(&["pid", "redis", &victim.to_string()]);
    let killed_at = Instant::now();
    let status = Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -9 {pid}");

    // Normal answers resume once the replica took over and Porter follows the new slot map.
    let mut resumed = None;
    let mut promoted = None;
    let deadline = killed_at + Duration::from_secs(30);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = masters();
        if !now.contains(&victim) && now.len() == 3 {
            promoted.get_or_insert_with(|| killed_at.elapsed());
            let answer = batch(&client, &url, None).await;
            if check_channels(&answer, &channels) == channels.len() {
                resumed = Some(killed_at.elapsed());
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = load.await.expect("the load saw only good answers");
    let resumed = resumed.expect("normal answers resumed within 30 s of the kill");
    let degraded = seen
        .iter()
        .filter(|(at, complete, _)| *at > killed_at && *complete < channels.len())
        .count();
    let refused_tokens = seen.iter().filter(|(_, _, status)| *status == 503).count();
    println!(
        "redis failover: master redis-{victim} killed; replica promoted after {promoted:?}, \
         normal answers resumed after {resumed:?}; \
         {} load rounds, {degraded} with channels signed without their events, \
         {refused_tokens} token batches refused 503 store_unavailable",
        seen.len()
    );
    let after: Vec<_> = seen.iter().filter(|(at, ..)| *at > killed_at).collect();
    assert!(!after.is_empty(), "the load ran through the failover");
    assert!(
        seen.iter()
            .rev()
            .take(3)
            .all(|(_, complete, status)| *complete == channels.len() && *status == 200),
        "the load ended on normal answers"
    );

    // The killed node comes back, rejoins as a replica, and the cluster is whole again: only
    // once the replica has its master's data could it take over in turn.
    cluster_script(&["start-node", "redis", &victim.to_string()]);
    eventually(
        "the restarted node to rejoin as a replica",
        HANG * 3,
        || async {
            let (all_up, text) = redis_status();
            let rejoined = text.lines().any(|line| {
                line.starts_with(&format!("redis-{victim} ")) && line.contains(" slave synced ")
            });
            (all_up && rejoined && text.lines().all(|line| line.contains("cluster_state:ok")))
                .then_some(())
        },
    )
    .await;
    let again = batch(&client, &url, None).await;
    assert_eq!(
        check_channels(&again, &channels),
        channels.len(),
        "{again:?}"
    );
    let with_token = batch(
        &client,
        &deployment.batch_url("3.6", &names[..5]),
        Some(&token),
    )
    .await;
    assert_eq!(with_token.status, 200, "{with_token:?}");

    for channel in &channels {
        let _: redis::RedisResult<()> = connection.del(keys.retained(channel)).await;
    }
}
