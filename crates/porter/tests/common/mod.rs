//! Test harness: starts `porter gateway` and `porter worker` processes against the real
//! RabbitMQ and Redis, each test with its own queue and key prefixes, and stops them by pid.

#![allow(dead_code)]

pub mod js;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

pub const APP_ID: &str = "100000";
pub const KEY: &str = "278d425bdf160c739803";
pub const SECRET: &str = "7ad3773142a6692b25b8";
pub const MASTER_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
pub const JWT_SECRET: &str = "integration-secret";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/";

/// A unique prefix for one test's queues and keys.
pub fn unique_prefix(test: &str) -> String {
    format!("porter-test.{test}.{}.", uuid::Uuid::new_v4().simple())
}

/// A child process, killed by pid when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, at once.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, without waiting.
    pub fn signal_term(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.signal_term();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// One test's deployment settings.
pub struct Deployment {
    pub prefix: String,
    pub policy: Option<PathBuf>,
    pub port: u16,
    pub extra_env: Vec<(String, String)>,
    /// When set, each process's stdout and stderr go to a file in this directory instead of
    /// the test's stderr (see [`Deployment::capture_logs`]).
    pub log_dir: Option<PathBuf>,
}

impl Deployment {
    pub fn new(test: &str) -> Deployment {
        Deployment {
            prefix: unique_prefix(test),
            policy: None,
            port: free_port(),
            extra_env: Vec::new(),
            log_dir: None,
        }
    }

    /// Another gateway of the same deployment (same prefixes, policy and settings) on its
    /// own port.
    pub fn sibling(&self) -> Deployment {
        Deployment {
            prefix: self.prefix.clone(),
            policy: self.policy.clone(),
            port: free_port(),
            extra_env: self.extra_env.clone(),
            log_dir: self.log_dir.clone(),
        }
    }

    /// Sets an environment variable of every process started after this.
    pub fn with_env(mut self, key: &str, value: &str) -> Deployment {
        self.extra_env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Captures stdout and stderr of every process started after this into files, read
    /// back with [`Deployment::captured_logs`].
    pub fn capture_logs(mut self) -> Deployment {
        let dir = std::env::temp_dir().join(format!("{}logs", self.prefix));
        std::fs::create_dir_all(&dir).expect("create log dir");
        self.log_dir = Some(dir);
        self
    }

    /// Everything the processes wrote so far, file by file.
    pub fn captured_logs(&self) -> String {
        let mut all = String::new();
        let Some(dir) = &self.log_dir else {
            return all;
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .expect("read log dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        paths.sort();
        for path in paths {
            all.push_str(&format!("==> {} <==\n", path.display()));
            all.push_str(&String::from_utf8_lossy(
                &std::fs::read(&path).expect("read log"),
            ));
        }
        all
    }

    /// Routes a process's output to a new file of the log directory, when capturing.
    fn route_output(&self, command: &mut Command, name: &str) {
        if let Some(dir) = &self.log_dir {
            let path = dir.join(format!("{name}-{}.log", uuid::Uuid::new_v4().simple()));
            let file = std::fs::File::create(&path).expect("create log file");
            let copy = file.try_clone().expect("clone log file");
            command.stdout(Stdio::from(file)).stderr(Stdio::from(copy));
        }
    }

    /// Writes a policy file for this test.
    pub fn with_policy(mut self, toml: &str) -> Deployment {
        let path = std::env::temp_dir().join(format!("{}policy.toml", self.prefix));
        std::fs::write(&path, toml).expect("write policy");
        self.policy = Some(path);
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_porter"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("AMQP_URL", AMQP_URL)
            .env("REDIS_URL", REDIS_URL)
            .env("PORTER_QUEUE_PREFIX", &self.prefix)
            .env("PORTER_KEY_PREFIX", &self.prefix)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(policy) = &self.policy {
            command.env("PORTER_POLICY", policy);
        }
        for (k, v) in &self.extra_env {
            command.env(k, v);
        }
        command
    }

    pub fn gateway(&self) -> Proc {
        let listen = format!("127.0.0.1:{}", self.port);
        let mut command = self.command(&["gateway", "--listen", &listen, "--http-workers", "1"]);
        self.route_output(&mut command, "gateway");
        let child = command
            .env("PUSHER_APP_ID", APP_ID)
            .env("PUSHER_KEY", KEY)
            .env("PUSHER_SECRET", SECRET)
            .env("PUSHER_ENCRYPTION_MASTER_KEY_BASE64", MASTER_KEY)
            .env("PORTER_JWT_SECRET", JWT_SECRET)
            .spawn()
            .expect("start gateway");
        Proc {
            child,
            name: "gateway".into(),
        }
    }

    pub fn worker(&self) -> Proc {
        let mut command = self.command(&["worker", "--concurrency", "16", "--prefetch", "16"]);
        self.route_output(&mut command, "worker");
        let child = command.spawn().expect("start worker");
        Proc {
            child,
            name: "worker".into(),
        }
    }

    /// A worker of the deployment with these arguments after `worker` (concurrency,
    /// prefetch, `--http-listen`, …).
    pub fn worker_with(&self, args: &[&str]) -> Proc {
        let mut command = self.command(&[&["worker"], args].concat());
        self.route_output(&mut command, "worker");
        let child = command.spawn().expect("start worker");
        Proc {
            child,
            name: "worker".into(),
        }
    }

    /// Waits until `/readyz` says the gateway is connected to the broker and Redis.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(self.url("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("gateway on port {} never became ready", self.port);
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(REDIS_URL)
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to Redis")
    }

    pub fn batch_url(&self, socket_id: &str, channels: &[&str]) -> String {
        let mut url = self.url(&format!(
            "/pusher/batch-authenticate?app_id={APP_ID}&socket_id={socket_id}"
        ));
        for channel in channels {
            url.push_str("&channels=");
            url.push_str(channel);
        }
        url
    }
}

/// Removes what this test left on the shared services: its two durable task queues and its
/// Redis keys. Runs after the test's processes are gone (they are declared after the
/// deployment, so they drop first), on a thread of its own because `Drop` cannot await.
impl Drop for Deployment {
    fn drop(&mut self) {
        let prefix = self.prefix.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let properties = lapin::ConnectionProperties::default();
                if let Ok(connection) = lapin::Connection::connect(AMQP_URL, properties).await
                    && let Ok(channel) = connection.create_channel().await
                {
                    for queue in ["auth", "auth/high"] {
                        let _ = channel
                            .queue_delete(
                                format!("{prefix}{queue}").into(),
                                lapin::options::QueueDeleteOptions::default(),
                            )
                            .await;
                    }
                    let _ = connection.close(200, "test cleanup".into()).await;
                }
                if let Ok(client) = redis::Client::open(REDIS_URL)
                    && let Ok(mut redis) = client.get_multiplexed_async_connection().await
                {
                    let keys: Vec<String> = redis::cmd("KEYS")
                        .arg(format!("{prefix}*"))
                        .query_async(&mut redis)
                        .await
                        .unwrap_or_default();
                    if !keys.is_empty() {
                        let _: redis::RedisResult<()> =
                            redis::cmd("DEL").arg(&keys).query_async(&mut redis).await;
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// An HS256 token for the gateway.
pub fn token(sub: &str, extra: &[(&str, Value)]) -> String {
    let mut claims = Map::new();
    claims.insert("sub".into(), sub.into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    claims.insert("exp".into(), (now + 600).into());
    for (k, v) in extra {
        claims.insert((*k).into(), v.clone());
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// Recomputes a Pusher auth signature independently of the code under test.
pub fn expected_auth(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(socket_id.as_bytes());
    mac.update(b":");
    mac.update(channel.as_bytes());
    if let Some(data) = channel_data {
        mac.update(b":");
        mac.update(data.as_bytes());
    }
    format!("{KEY}:{}", hex::encode(mac.finalize().into_bytes()))
}

/// Messages ready in a queue, from `rabbitmqctl`.
pub fn queue_depth(queue: &str) -> Option<u64> {
    let output = Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            let (name, count) = line.rsplit_once(char::is_whitespace)?;
            (name.trim() == queue).then(|| count.trim().parse().ok())?
        })
}

/// Polls until the closure returns `Some`, or panics after the timeout.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A tiny HTTP server for webhook authorizers: answers by path after an optional delay.
pub async fn webhook_server() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16384];
                let mut read = 0;
                // Read headers and body (Content-Length).
                loop {
                    let Ok(n) = socket.read(&mut buffer[read..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    read += n;
                    let text = String::from_utf8_lossy(&buffer[..read]).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if read >= end + 4 + length {
                            let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                            let body_text = text[end + 4..].to_owned();
                            let (status, body, delay) = match path.as_str() {
                                "/allow" => ("200 OK", r#"{"allow": true, "user_info": {"name": "Hooked"}, "events": [{"event": "hook.said", "data": {"ok": true}}]}"#.to_owned(), 0),
                                "/deny" => ("200 OK", r#"{"allow": false, "reason": "not_subscribed"}"#.to_owned(), 0),
                                "/slow" => ("200 OK", r#"{"allow": true}"#.to_owned(), 1500),
                                "/500" => ("500 Internal Server Error", "oops".to_owned(), 0),
                                "/garbage" => ("200 OK", "<html>".to_owned(), 0),
                                "/echo" => ("200 OK", format!(r#"{{"allow": true, "events": [{{"event": "request", "data": {body_text}}}]}}"#), 0),
                                _ => ("404 Not Found", String::new(), 0),
                            };
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                            let response = format!(
                                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = socket.write_all(response.as_bytes()).await;
                            read = 0;
                        }
                    }
                    if read == buffer.len() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Closes, from the broker's side, every connection of this deployment (named after its
/// prefix), leaving other tests' connections alone. Returns how many were closed.
pub fn close_connections_of(prefix: &str) -> usize {
    let output = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl list_connections");
    let mut closed = 0;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        // The client properties carry `connection_name`, which ends with the queue prefix.
        let Some((pid, properties)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        if properties.contains(prefix) {
            let status = Command::new("rabbitmqctl")
                .args(["close_connection", pid.trim(), "porter reconnect test"])
                .status()
                .expect("rabbitmqctl close_connection");
            if status.success() {
                closed += 1;
            }
        }
    }
    closed
}

/// A gateway's task client of the test's own, on the queues of `prefix` (of type
/// `queue_type`) at `url`, without task keys, once it is connected.
pub async fn task_client(
    url: &str,
    prefix: &str,
    queue_type: porter_broker::amqp::QueueType,
    stop: tokio_util::sync::CancellationToken,
) -> porter_broker::amqp::AmqpClient {
    let client = porter_broker::amqp::AmqpClient::start(
        porter_broker::amqp::AmqpConfig {
            url: url.into(),
            queue_prefix: prefix.into(),
            reply_mode: Default::default(),
            task_auth: porter_core::task_auth::TaskAuth::off(),
            queue_type,
        },
        stop,
    );
    assert!(
        client.wait_ready(Duration::from_secs(10)).await,
        "the test's task client connects"
    );
    client
}

/// The task a gateway publishes for an anonymous caller on `channel`, a private channel named
/// `private-{feature}@{object_id}`, matched by `rule`.
pub fn private_task(channel: &str, rule: &str) -> porter_core::wire::Task {
    let name = channel
        .strip_prefix("private-")
        .expect("a private channel's name");
    let (feature, object_id) = name.split_once('@').unwrap_or((name, ""));
    porter_core::wire::Task {
        v: porter_core::wire::FORMAT_VERSION,
        id: uuid::Uuid::new_v4().to_string(),
        channel: channel.into(),
        channel_type: porter_core::channel::ChannelKind::Private,
        feature: feature.into(),
        object_id: (!object_id.is_empty()).then(|| object_id.to_owned()),
        rule: rule.into(),
        captures: Default::default(),
        client_id: None,
        user_id: None,
        claims: Default::default(),
        dry_run: false,
        coalesce: false,
        kind: porter_core::wire::TaskKind::Channel,
    }
}

/// Publishes `task` with the expiration `expires` and the deadline `deadline_ms` (unix ms),
/// registered before it goes out, and returns its waiter.
pub async fn publish_one(
    client: &impl porter_broker::TaskClient,
    task: &porter_core::wire::Task,
    expires: Duration,
    deadline_ms: u64,
) -> porter_broker::PendingReply {
    let waiter = client.pending().register(&task.id);
    let route = porter_core::routing::Route {
        expires,
        ..porter_core::routing::Route::DEFAULT
    };
    client
        .publish(&[porter_broker::Outgoing {
            task,
            route,
            deadline_ms,
        }])
        .await
        .expect("publish the task");
    waiter
}
