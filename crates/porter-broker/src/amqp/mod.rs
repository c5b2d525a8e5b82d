//! RabbitMQ transport over lapin: what the gateway and worker halves share.
//!
//! Both sides declare the task queues with identical arguments ([`declare_task_queue`]), so
//! whichever starts first creates them: durable classic queues without extra arguments (the
//! default), or quorum queues with a delivery limit ([`QueueType::Quorum`], for a cluster).
//! Tasks are transient JSON messages with a per-message `expiration` and the deadline and time
//! limit in headers; the gateway's replies come back on its own exclusive, auto-delete,
//! server-named queue, which is always classic (a quorum queue cannot be exclusive).
//!
//! `AMQP_URL` may list the nodes of a cluster, comma separated ([`node_urls`]). Every process
//! starts at a random node of the list and each (re)connection goes to the next one
//! ([`connect`]), so the connections spread over the nodes and a dead node costs one backoff
//! step, and a node that accepts TCP but never answers the handshake one [`CONNECT_TIMEOUT`].
//! Both sides reconnect by themselves with capped exponential backoff (lapin's own automatic
//! recovery stays off, see [`connection_properties`]). A connection loss
//! loses the gateway's reply queue, so the gateway answers its in-flight tasks
//! `broker_unavailable` at once ([`Pending::fail_all`](crate::Pending::fail_all)) and declares a
//! new reply queue on the next node; unacknowledged tasks held by a lost worker go back to
//! their queue for another worker.
//!
//! This module holds the configuration, the reply mode, connection set-up, the one
//! [`declare_task_queue`] and the backoff; `client.rs` is the gateway half ([`AmqpClient`]),
//! `source.rs` the worker half ([`AmqpSource`]), and neither uses the other.
//! `events.rs` is the events queue of published events: the one [`declare_events_queues`] of
//! gateway and worker, and the gateway's confirming publisher ([`AmqpEventSink`]).
//!
//! Credentials: a URL's userinfo must never reach a log line or an error message. The URL is
//! checked once at start-up by [`check_url`], whose errors never quote it; [`AmqpConfig`]'s
//! `Debug` masks it; and [`redact_url`] masks the userinfo of every URL in a text, for what
//! cannot be checked in advance: RabbitMQ echoes parts of the URL (a refused vhost) in errors
//! that lapin logs itself, so the binary passes every log line through it.

mod client;
mod event_source;
mod events;
mod outbox;
mod source;

pub use client::AmqpClient;
pub use event_source::{AmqpEventSource, AmqpSessionExchanges};
pub use events::{AmqpEventSink, EVENTS_DELIVERY_LIMIT, PUBLICATION_TYPE, declare_events_queues};
pub use source::AmqpSource;

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties};
use thiserror::Error;
use tracing::debug;

use crate::{BrokerError, short_string};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How long opening a connection (TCP, then the AMQP handshake) may take before the attempt
/// counts as failed and the next node is tried. lapin has no such limit of its own: a node that
/// accepts TCP but never answers the handshake (a hung broker, a wrong port) would hold the
/// caller for ever. RabbitMQ itself gives a client 10 s (`handshake_timeout`); a healthy node
/// answers in milliseconds.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the rest of a connection's set-up (channels, `basic.qos`, declares, consumers)
/// may take once the handshake is done: a broker that answers the handshake and then hangs
/// must fail the attempt, not hold the reconnect loop.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a `connection.close` waits for the broker's close-ok: a stuck broker must not
/// block a reconnect or a shutdown (the socket goes with the connection either way).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How many times a quorum queue delivers a task before it drops it (`x-delivery-limit`).
///
/// A task that crashes every worker that takes it would otherwise circle for ever. Workers
/// give up on a task themselves, answering it without running it, once its `x-delivery-count`
/// reaches their own threshold below this limit (`porter_worker`'s `GIVE_UP_DELIVERY_COUNT`);
/// this limit is the broker's backstop for a task that kills the worker before even that.
/// Past it RabbitMQ drops the task: no dead-letter queue, because a task is worth nothing once
/// its `expiration` (seconds) has passed and nobody would drain such a queue. The gateway's
/// channel then answers `timeout` at its deadline.
pub const QUORUM_DELIVERY_LIMIT: i64 = 10;

/// Where to connect and which queues to use.
#[derive(Clone)]
pub struct AmqpConfig {
    /// One `amqp://user:password@host:port/vhost` URL, or the comma-separated URLs of a
    /// cluster's nodes; check it with [`check_url`] first.
    pub url: String,
    /// Prepended to `auth` and `auth/high`.
    pub queue_prefix: String,
    /// How the gateway receives replies.
    pub reply_mode: ReplyMode,
    /// Signing and verification of tasks and replies (`TaskAuth::off()`: none).
    pub task_auth: porter_core::task_auth::TaskAuth,
    /// The type of the task queues; gateways and workers of one deployment must agree.
    pub queue_type: QueueType,
}

/// Masks the URL's userinfo: a config printed with `{:?}` must not show the password.
impl fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<String> = node_urls(&self.url).map(redact_url).collect();
        f.debug_struct("AmqpConfig")
            .field("url", &nodes.join(","))
            .field("queue_prefix", &self.queue_prefix)
            .field("reply_mode", &self.reply_mode)
            .field("queue_type", &self.queue_type)
            .finish()
    }
}

/// Why a broker URL was refused. The text never quotes the URL, which holds the password.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UrlError {
    /// Nothing between two commas, or no URL at all.
    #[error("is empty (a comma separates node URLs; percent-encode a comma in a password as %2C)")]
    Empty,
    #[error("holds whitespace or a control character (percent-encode it)")]
    Whitespace,
    #[error("is not a valid AMQP URL ({0})")]
    Invalid(String),
    /// One URL of a list is bad; it is named by its position only.
    #[error("node {node} of {nodes} {error}")]
    Node {
        node: usize,
        nodes: usize,
        error: Box<UrlError>,
    },
}

/// The node URLs of a broker URL: one URL, or the comma-separated URLs of a cluster's nodes,
/// each trimmed of surrounding spaces (only spaces: other whitespace is refused by
/// [`check_url`]). A comma inside a password must be percent-encoded.
pub fn node_urls(url: &str) -> impl Iterator<Item = &str> {
    url.split(',').map(|node| node.trim_matches(' '))
}

/// Checks a broker URL (or each URL of a list) the way lapin will read it, so that a bad one
/// is refused at start-up with a message that does not quote it: a list's bad element is named
/// "node 2 of 3".
pub fn check_url(url: &str) -> Result<(), UrlError> {
    let nodes = node_urls(url).count();
    if nodes == 1 {
        return check_node_url(url.trim_matches(' '));
    }
    for (index, node) in node_urls(url).enumerate() {
        check_node_url(node).map_err(|error| UrlError::Node {
            node: index + 1,
            nodes,
            error: Box::new(error),
        })?;
    }
    Ok(())
}

fn check_node_url(url: &str) -> Result<(), UrlError> {
    if url.is_empty() {
        return Err(UrlError::Empty);
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UrlError::Whitespace);
    }
    url.parse::<AMQPUri>().map(drop).map_err(|reason| {
        // The parser quotes the whole input in some of its messages ("Invalid URL: '…'").
        let reason = if reason.contains(url) || reason.contains('@') {
            "not an absolute URL".to_owned()
        } else {
            redact_url(&reason)
        };
        UrlError::Invalid(reason)
    })
}

/// The text with the userinfo of every URL in it masked: in each whitespace-separated word,
/// everything between the first `//` and the last `@` becomes `***`.
///
/// It needs no valid URL, so it also masks what a parser would refuse
/// (`amqp://u:pw@[::1` → `amqp://***@[::1`) and several URLs run together
/// (`amqp://u:a@h/x,amqp://v:b@k` → `amqp://***@k`): masking too much is the safe side.
pub fn redact_url(text: &str) -> String {
    const MASK: &str = "***";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("//") {
        let (before, after) = rest.split_at(start + 2);
        out.push_str(before);
        let word = after
            .find(char::is_whitespace)
            .map_or(after, |end| &after[..end]);
        match word.rfind('@') {
            Some(at) => {
                out.push_str(MASK);
                rest = &after[at..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// Where workers send the gateway's replies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReplyMode {
    /// An exclusive, auto-delete, server-named queue per gateway connection (the default:
    /// measured faster on our hosts, see docs/benchmarks.md).
    #[default]
    Exclusive,
    /// RabbitMQ's direct reply-to pseudo-queue `amq.rabbitmq.reply-to` (no queue at all).
    DirectReplyTo,
}

impl std::str::FromStr for ReplyMode {
    type Err = String;

    /// `exclusive`, or `direct` (also `direct-reply-to`).
    fn from_str(name: &str) -> Result<ReplyMode, String> {
        match name {
            "exclusive" => Ok(ReplyMode::Exclusive),
            "direct" | "direct-reply-to" => Ok(ReplyMode::DirectReplyTo),
            _ => Err(format!(
                "unknown reply mode `{name}`; use exclusive or direct"
            )),
        }
    }
}

/// The type of the task queues (`PORTER_QUEUE_TYPE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueueType {
    /// Durable classic queues with no arguments: a single node, declared exactly as before
    /// queue types existed, so existing queues keep matching.
    #[default]
    Classic,
    /// Durable quorum queues (replicated over a cluster's nodes, surviving a node's loss) with
    /// the [`QUORUM_DELIVERY_LIMIT`].
    Quorum,
}

impl std::str::FromStr for QueueType {
    type Err = String;

    /// `classic` or `quorum`.
    fn from_str(name: &str) -> Result<QueueType, String> {
        match name {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            _ => Err(format!(
                "unknown queue type `{name}`; use classic or quorum"
            )),
        }
    }
}

/// The rotation over the nodes of `AMQP_URL`: one per process, starting at a random node.
fn node_cursor() -> &'static AtomicUsize {
    static CURSOR: OnceLock<AtomicUsize> = OnceLock::new();
    CURSOR.get_or_init(|| {
        // The standard library's randomly keyed hasher: a random start without a dependency.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        AtomicUsize::new(random as usize)
    })
}

/// Opens a connection to the next node of `config.url` (one URL: always that one). Each call
/// moves on by one node, so a reconnection after a loss, or a retry after a failure, goes to
/// the next node: a dead node costs one backoff step, and the processes' connections spread
/// over the nodes from their random starts.
pub(super) async fn connect(role: &str, config: &AmqpConfig) -> Result<Connection, BrokerError> {
    let nodes: Vec<&str> = node_urls(&config.url).collect();
    let index = node_cursor().fetch_add(1, Ordering::Relaxed) % nodes.len();
    debug!(
        role,
        node = index + 1,
        nodes = nodes.len(),
        "connecting to the broker"
    );
    let connecting = Connection::connect(nodes[index], connection_properties(role, config));
    // On a timeout the abandoned attempt's lapin I/O thread and socket remain until the node
    // closes its end (RabbitMQ does after its `handshake_timeout`); lapin gives no handle to
    // end an attempt before the handshake is done.
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(connection) => Ok(connection?),
        Err(_) => Err(BrokerError::ConnectTimeout(CONNECT_TIMEOUT)),
    }
}

/// Connection properties; `name` is what the RabbitMQ management UI shows for the connection.
///
/// lapin runs on the current tokio runtime (its `tokio` feature). Its automatic recovery stays
/// off (lapin's default, with no retries of the TCP connection either): Porter reconnects by
/// itself, to the next node of the list, because a lost connection means a lost reply queue
/// (answered at once, `Pending::fail_all`) and a worker's unacknowledged tasks going back to
/// their queue, which a transparent recovery would hide.
fn connection_properties(role: &str, config: &AmqpConfig) -> ConnectionProperties {
    let name = format!(
        "porter {role} pid {} {}",
        std::process::id(),
        config.queue_prefix
    );
    ConnectionProperties::default().with_connection_name(name.trim_end().into())
}

/// The arguments a task queue is declared with.
fn task_queue_arguments(queue_type: QueueType) -> FieldTable {
    let mut arguments = FieldTable::default();
    if queue_type == QueueType::Quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(QUORUM_DELIVERY_LIMIT),
        );
    }
    arguments
}

/// Declares a task queue. Gateway and worker must use the same arguments, or the second to
/// declare gets PRECONDITION_FAILED: keep this the only place that declares task queues.
async fn declare_task_queue(
    channel: &Channel,
    name: &str,
    queue_type: QueueType,
) -> Result<(), BrokerError> {
    channel
        .queue_declare(
            short_string(name.to_owned())?,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            task_queue_arguments(queue_type),
        )
        .await?;
    Ok(())
}

/// Sleeps for the current backoff and doubles it, up to the cap.
/// Runs the set-up of a new connection within [`SETUP_TIMEOUT`].
async fn set_up<T>(steps: impl Future<Output = Result<T, BrokerError>>) -> Result<T, BrokerError> {
    set_up_within(SETUP_TIMEOUT, steps).await
}

async fn set_up_within<T>(
    timeout: Duration,
    steps: impl Future<Output = Result<T, BrokerError>>,
) -> Result<T, BrokerError> {
    tokio::time::timeout(timeout, steps)
        .await
        .unwrap_or(Err(BrokerError::SetupTimeout(timeout)))
}

/// Closes `connection`, waiting at most [`CLOSE_TIMEOUT`] for the broker to confirm.
async fn close_connection(connection: &Connection, reason: &str) {
    match tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, reason.into())).await {
        Ok(_) => {}
        Err(_) => debug!(
            timeout_ms = CLOSE_TIMEOUT.as_millis() as u64,
            "the broker did not confirm the close in time"
        ),
    }
}

async fn back_off(delay: &mut Duration) {
    tokio::time::sleep(*delay).await;
    *delay = (*delay * 2).min(BACKOFF_MAX);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    /// A node that accepts TCP connections and never answers: it reads nothing and sends
    /// nothing, holding every socket open. Returns its URL and a count of accepted connections.
    async fn silent_node() -> (String, tokio::sync::watch::Receiver<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let port = listener.local_addr().expect("its address").port();
        let (accepted, count) = tokio::sync::watch::channel(0);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
                accepted.send_replace(held.len());
            }
        });
        (format!("amqp://guest:guest@127.0.0.1:{port}/%2f"), count)
    }

    fn config(url: String) -> AmqpConfig {
        AmqpConfig {
            url,
            queue_prefix: "silent.".into(),
            reply_mode: ReplyMode::Exclusive,
            task_auth: porter_core::task_auth::TaskAuth::off(),
            queue_type: QueueType::Classic,
        }
    }

    /// Waits until the node has accepted `n` connections; the bound only keeps a broken
    /// build from hanging the test run.
    async fn accepted(count: &mut tokio::sync::watch::Receiver<usize>, n: usize) -> bool {
        let bound = CONNECT_TIMEOUT * 3;
        tokio::time::timeout(bound, count.wait_for(|&accepted| accepted >= n))
            .await
            .is_ok_and(|result| result.is_ok())
    }

    #[test]
    fn a_name_past_amqps_255_bytes_is_refused_not_a_panic() {
        let longest = "p".repeat(255);
        assert_eq!(
            short_string(longest.clone())
                .map(|name| name.as_str().len())
                .ok(),
            Some(255)
        );
        let prefix = "p".repeat(250);
        let name = crate::queue_name(&prefix, porter_core::routing::Queue::AuthHigh);
        assert!(
            matches!(short_string(name), Err(BrokerError::NameTooLong(259))),
            "a 250-byte queue prefix"
        );
    }

    #[tokio::test]
    async fn a_set_up_step_that_never_ends_fails_the_attempt_instead_of_hanging() {
        let bound = Duration::from_millis(20);
        let stuck = set_up_within(bound, std::future::pending::<Result<(), BrokerError>>());
        let attempt = tokio::time::timeout(Duration::from_secs(5), stuck)
            .await
            .expect("the attempt ends by itself");
        assert!(
            matches!(attempt, Err(BrokerError::SetupTimeout(timeout)) if timeout == bound),
            "{attempt:?}"
        );
        // A step that finishes is untouched.
        assert!(matches!(set_up_within(bound, async { Ok(7) }).await, Ok(7)));
    }

    #[tokio::test]
    async fn a_node_that_never_answers_the_handshake_fails_the_attempt_instead_of_hanging() {
        let (url, mut count) = silent_node().await;
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT * 3, connect("test", &config(url)))
            .await
            .expect("the attempt ends by itself");
        assert!(
            matches!(attempt, Err(BrokerError::ConnectTimeout(timeout)) if timeout == CONNECT_TIMEOUT),
            "{attempt:?}"
        );
        assert!(
            accepted(&mut count, 1).await,
            "the node took the TCP connection"
        );
    }

    #[tokio::test]
    async fn a_gateway_gives_up_on_a_silent_node_tries_again_and_stops_at_once() {
        let (url, mut count) = silent_node().await;
        let stop = CancellationToken::new();
        let client = AmqpClient::start(config(url), stop.clone());
        assert!(
            accepted(&mut count, 2).await,
            "a second attempt after the first timed out"
        );
        assert!(!crate::TaskClient::is_ready(&client));
        let closed = tokio::time::timeout(CONNECT_TIMEOUT, client.close()).await;
        assert!(closed.is_ok(), "close waits for no attempt in progress");
    }

    #[tokio::test]
    async fn a_worker_gives_up_on_a_silent_node_tries_again_and_stops_at_once() {
        let (url, mut count) = silent_node().await;
        let stop = CancellationToken::new();
        let mut source = AmqpSource::new(
            config(url),
            vec![porter_core::routing::Queue::Auth],
            1,
            stop.clone(),
        );
        let status = source.status();
        let next =
            tokio::spawn(async move { crate::TaskSource::next(&mut source).await.is_none() });
        assert!(
            accepted(&mut count, 2).await,
            "a second attempt after the first timed out"
        );
        assert!(!status.is_connected());
        stop.cancel();
        let ended = tokio::time::timeout(CONNECT_TIMEOUT, next).await;
        assert!(
            matches!(ended, Ok(Ok(true))),
            "the worker's source ends on the stop, without a task: {ended:?}"
        );
    }

    #[test]
    fn redact_url_masks_the_userinfo_of_every_url() {
        let cases = [
            (
                "amqp://guest:SECRETPW@127.0.0.1:5672/%2f",
                "amqp://***@127.0.0.1:5672/%2f",
            ),
            ("redis://:REDISPW@redis:6379/", "redis://***@redis:6379/"),
            // Unparseable: the mask needs no valid URL.
            ("amqp://u:PW@[::1", "amqp://***@[::1"),
            ("amqp://u:pa/ss@h/v", "amqp://***@h/v"),
            // Run together, as a comma-separated list reaches the vhost.
            (
                "amqp://u:SECRETPW@127.0.0.1:1/x,amqp://v:OTHERPW@h:2",
                "amqp://***@h:2",
            ),
            // As RabbitMQ echoes a vhost, inside a longer line, twice.
            (
                r#"reply_text: "NOT_ALLOWED - vhost x,amqp://v:OTHERPW@h:2 not found" message: "vhost x,amqp://v:OTHERPW@h:2""#,
                r#"reply_text: "NOT_ALLOWED - vhost x,amqp://***@h:2 not found" message: "vhost x,amqp://***@h:2""#,
            ),
        ];
        for (text, redacted) in cases {
            assert_eq!(redact_url(text), redacted, "{text}");
        }
    }

    #[test]
    fn redact_url_leaves_text_without_userinfo_alone() {
        for text in [
            "",
            "broker error: IO error: Connection refused (os error 111)",
            "amqp://127.0.0.1:5672/%2f",
            "see https://example.com/docs, or mail ops@example.com",
            "a // b @ c",
            "trailing //",
        ] {
            assert_eq!(redact_url(text), text);
        }
    }

    #[test]
    fn check_url_accepts_one_amqp_url() {
        for url in [
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            "amqp://porter-gateway:pw@rabbitmq/",
            "amqp://localhost",
        ] {
            assert_eq!(check_url(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn check_url_accepts_a_list_of_node_urls() {
        let list = "amqp://u:PW1@127.0.0.1:5701/%2f,amqp://u:PW2@127.0.0.1:5702/%2f, amqp://u:PW3@127.0.0.1:5703/%2f";
        assert_eq!(check_url(list), Ok(()));
        assert_eq!(
            node_urls(list).collect::<Vec<_>>(),
            [
                "amqp://u:PW1@127.0.0.1:5701/%2f",
                "amqp://u:PW2@127.0.0.1:5702/%2f",
                "amqp://u:PW3@127.0.0.1:5703/%2f"
            ]
        );
        // A percent-encoded comma is part of a password, not a separator.
        assert_eq!(node_urls("amqp://u:a%2Cb@h/").count(), 1);
    }

    #[test]
    fn check_url_names_a_bad_node_by_position_only() {
        let cases = [
            (
                "amqp://u:SECRETPW@127.0.0.1:1/x,amqp://v:OTHER PW@h:2",
                UrlError::Node {
                    node: 2,
                    nodes: 2,
                    error: Box::new(UrlError::Whitespace),
                },
            ),
            (
                "amqp://u:SECRETPW@h:1/,,amqp://v:OTHERPW@h:2",
                UrlError::Node {
                    node: 2,
                    nodes: 3,
                    error: Box::new(UrlError::Empty),
                },
            ),
            (
                "amqp://u:SECRETPW@h:1/,",
                UrlError::Node {
                    node: 2,
                    nodes: 2,
                    error: Box::new(UrlError::Empty),
                },
            ),
        ];
        for (url, expected) in cases {
            let error = check_url(url).expect_err(url);
            assert_eq!(error, expected, "{url}");
            let text = error.to_string();
            assert!(!text.contains("PW"), "{url}: {text}");
        }
        let error = check_url("amqp://u:SECRETPW@h/,http://v:OTHERPW@h:2/,amqp://w@h")
            .expect_err("a bad scheme")
            .to_string();
        assert!(
            error.starts_with("node 2 of 3 is not a valid AMQP URL"),
            "{error}"
        );
        assert!(!error.contains("PW"), "{error}");
        assert_eq!(check_url(""), Err(UrlError::Empty));
    }

    #[test]
    fn task_queue_arguments_are_none_for_classic_and_a_delivery_limit_for_quorum() {
        assert_eq!(
            task_queue_arguments(QueueType::Classic),
            FieldTable::default()
        );
        let quorum = task_queue_arguments(QueueType::Quorum);
        let inner = quorum.inner();
        assert_eq!(
            inner.get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
        assert_eq!(
            inner.get("x-delivery-limit"),
            Some(&AMQPValue::LongLongInt(QUORUM_DELIVERY_LIMIT))
        );
        assert_eq!("quorum".parse(), Ok(QueueType::Quorum));
        assert_eq!("classic".parse(), Ok(QueueType::Classic));
        assert!("Quorum".parse::<QueueType>().is_err());
    }

    #[test]
    fn check_url_refuses_bad_urls_without_quoting_them() {
        let cases = [
            ("amqp://u:SECRET PW@h/", UrlError::Whitespace),
            ("amqp://u:SECRETPW@h/\n", UrlError::Whitespace),
        ];
        for (url, expected) in cases {
            assert_eq!(check_url(url), Err(expected), "{url}");
        }
        for url in [
            "amqp://u:SECRETPW@[::1",
            "amqp:u:SECRETPW@h",
            "http://u:SECRETPW@h/",
            "u:SECRETPW@h",
            "amqp://u:SECRETPW@h:notaport/",
        ] {
            let error = check_url(url).expect_err(url).to_string();
            assert!(!error.contains("SECRETPW"), "{url}: {error}");
            assert!(error.contains("not a valid AMQP URL"), "{url}: {error}");
        }
    }

    #[test]
    fn debug_of_a_config_masks_the_password() {
        let config = AmqpConfig {
            url: "amqp://guest:SECRETPW@127.0.0.1:5672/%2f".into(),
            queue_prefix: "p.".into(),
            reply_mode: ReplyMode::Exclusive,
            task_auth: porter_core::task_auth::TaskAuth::off(),
            queue_type: QueueType::Quorum,
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("SECRETPW"), "{debug}");
        assert!(debug.contains("127.0.0.1:5672"), "{debug}");
        let list = AmqpConfig {
            url: "amqp://u:SECRETPW@127.0.0.1:5701/%2f,amqp://u:OTHERPW@127.0.0.1:5702/%2f".into(),
            ..config
        };
        let debug = format!("{list:?}");
        assert!(!debug.contains("PW"), "{debug}");
        assert!(
            debug.contains("127.0.0.1:5701") && debug.contains("127.0.0.1:5702"),
            "{debug}"
        );
    }
}
