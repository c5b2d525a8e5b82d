//! RabbitMQ transport over lapin: what the gateway and worker halves share.
//!
//! Both sides declare the task queues with identical arguments (durable, no extra
//! arguments), so whichever starts first creates them. Tasks are transient JSON messages with
//! a per-message `expiration` and the deadline and time limit in headers; the gateway's
//! replies come back on its own exclusive, auto-delete, server-named queue.
//!
//! Both sides reconnect by themselves with capped exponential backoff. A connection loss
//! loses the gateway's reply queue, so its in-flight tasks answer `timeout`; unacknowledged
//! tasks held by a lost worker go back to their queue for another worker.
//!
//! This module holds the configuration, the reply mode, connection set-up, the one
//! [`declare_task_queue`] and the backoff; `client.rs` is the gateway half ([`AmqpClient`]),
//! `source.rs` the worker half ([`AmqpSource`]), and neither uses the other.
//!
//! Credentials: a URL's userinfo must never reach a log line or an error message. The URL is
//! checked once at start-up by [`check_url`], whose errors never quote it; [`AmqpConfig`]'s
//! `Debug` masks it; and [`redact_url`] masks the userinfo of every URL in a text, for what
//! cannot be checked in advance: RabbitMQ echoes parts of the URL (a refused vhost) in errors
//! that lapin logs itself, so the binary passes every log line through it.

mod client;
mod source;

pub use client::AmqpClient;
pub use source::AmqpSource;

use std::fmt;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::AMQPUri;
use lapin::{Channel, ConnectionProperties};
use thiserror::Error;

use crate::BrokerError;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where to connect and which queues to use.
#[derive(Clone)]
pub struct AmqpConfig {
    /// One `amqp://user:password@host:port/vhost` URL; check it with [`check_url`] first.
    pub url: String,
    /// Prepended to `auth` and `auth/high`.
    pub queue_prefix: String,
    /// How the gateway receives replies.
    pub reply_mode: ReplyMode,
    /// Signing and verification of tasks and replies (`TaskAuth::off()`: none).
    pub task_auth: porter_core::task_auth::TaskAuth,
}

/// Masks the URL's userinfo: a config printed with `{:?}` must not show the password.
impl fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &redact_url(&self.url))
            .field("queue_prefix", &self.queue_prefix)
            .field("reply_mode", &self.reply_mode)
            .finish()
    }
}

/// Why a broker URL was refused. The text never quotes the URL, which holds the password.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UrlError {
    /// Several URLs in one: lapin would take everything after the first host as the vhost,
    /// and RabbitMQ would echo it, the other URLs' passwords included, in its refusal.
    #[error(
        "holds a comma: give one broker URL (a list of brokers is not supported yet; \
         percent-encode a comma in the password as %2C)"
    )]
    List,
    #[error("holds whitespace or a control character (percent-encode it)")]
    Whitespace,
    #[error("is not a valid AMQP URL ({0})")]
    Invalid(String),
}

/// Checks a broker URL the way lapin will read it, so that a bad one is refused at start-up
/// with a message that does not quote it.
///
/// A comma is refused rather than read as a list: nothing connects to a second broker yet,
/// and the first URI alone would silently ignore the rest.
pub fn check_url(url: &str) -> Result<(), UrlError> {
    if url.contains(',') {
        return Err(UrlError::List);
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

/// Connection properties; `name` is what the RabbitMQ management UI shows for the connection.
fn connection_properties(role: &str, config: &AmqpConfig) -> ConnectionProperties {
    let mut properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let name = format!(
        "porter {role} pid {} {}",
        std::process::id(),
        config.queue_prefix
    );
    properties.client_properties.insert(
        "connection_name".into(),
        AMQPValue::LongString(name.trim_end().into()),
    );
    properties
}

/// Declares a task queue. Gateway and worker must use the same arguments, or the second to
/// declare gets PRECONDITION_FAILED: keep this the only place that declares task queues.
async fn declare_task_queue(channel: &Channel, name: &str) -> Result<(), BrokerError> {
    channel
        .queue_declare(
            name,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Sleeps for the current backoff and doubles it, up to the cap.
async fn back_off(delay: &mut Duration) {
    tokio::time::sleep(*delay).await;
    *delay = (*delay * 2).min(BACKOFF_MAX);
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn check_url_refuses_bad_urls_without_quoting_them() {
        let cases = [
            (
                "amqp://u:SECRETPW@127.0.0.1:1/x,amqp://v:OTHERPW@h:2",
                UrlError::List,
            ),
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
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("SECRETPW"), "{debug}");
        assert!(debug.contains("127.0.0.1:5672"), "{debug}");
    }
}
