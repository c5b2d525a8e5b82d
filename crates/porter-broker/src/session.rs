//! Session exchanges of the sessions `POST /auth` opens: every session owns a fanout exchange
//! `data.<session-id>.published` that the application publishes the session's data to and the
//! client binds its own queue to.
//!
//! RabbitMQ has no TTL for exchanges, so the exchange's life is tied to a *lease queue*:
//!
//! - the exchange is declared `auto_delete`: RabbitMQ deletes it once its last binding goes;
//! - the lease queue `data.<sha256(session-id)[..32]>.lease` is bound to it and declared with
//!   `x-expires` = the session TTL, and `x-max-length` = 0 so the copies of published messages
//!   it receives are dropped at once instead of piling up;
//! - every use of the session declares the lease again, which renews its `x-expires` (RabbitMQ
//!   counts a redeclare as use);
//! - when the session is no longer used, the lease queue expires with it, its binding goes, and
//!   the auto-delete exchange is deleted (unless a client's own queue is still bound to it;
//!   then it goes when that queue does).
//!
//! Names: the exchange's name is the one sessions are specified with and carries the session id, so
//! anyone who can list the vhost's exchanges (management UI, `rabbitmqctl`) sees live session ids:
//! keep those rights to operators. The lease queue is named by a hash of the id instead, and the
//! exchange is declared with fixed arguments only: the declaration the broker may refuse
//! (`x-expires` differs after `PORTER_SESSION_TTL` changed → PRECONDITION_FAILED, which lapin logs
//! with the server's text) names only the hash.
//!
//! Declaring is idempotent: every renewal declares exchange, lease and binding again, so a
//! lease that expired early (a broker restart) is restored by the next use of the session.
//!
//! On a cluster the lease queue stays a classic, non-durable queue, whatever the task queues'
//! type: a lease is a throwaway queue per session, and a quorum queue (always durable,
//! replicated through Raft) is made for neither a short life nor renewal by redeclaration. It
//! lives on the node of the gateway connection that declared it. When that node goes, RabbitMQ deletes the queue with its binding and so the
//! exchange; the next use of the session, through any gateway on any node, declares all three
//! again, as after a broker restart.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::{BrokerError, short_string};

/// The session's fanout exchange.
pub fn exchange_name(session_id: &str) -> String {
    format!("data.{session_id}.published")
}

/// The queue whose expiry ends the session's exchange: named by the first 128 bits of the
/// SHA-256 of the session id, never the id, because a refused declaration of it ends up in
/// lapin's logs with the queue's name.
pub fn lease_queue_name(session_id: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(session_id.as_bytes());
    format!("data.{}.lease", hex::encode(&digest[..16]))
}

/// Declares (or renews) a session's exchange, lease queue and binding.
pub async fn declare_session(
    channel: &Channel,
    session_id: &str,
    ttl: Duration,
) -> Result<(), BrokerError> {
    let exchange = short_string(exchange_name(session_id))?;
    let lease: ShortString = lease_queue_name(session_id).into();
    channel
        .exchange_declare(
            exchange.clone(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut arguments = FieldTable::default();
    // RabbitMQ refuses an `x-expires` below 1 ms; a lease always lasts at least a second.
    let expires_ms = ttl.as_millis().clamp(1000, i64::MAX as u128) as i64;
    arguments.insert("x-expires".into(), AMQPValue::LongLongInt(expires_ms));
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    channel
        .queue_declare(lease.clone(), QueueDeclareOptions::default(), arguments)
        .await?;
    channel
        .queue_bind(
            lease,
            exchange,
            ShortString::default(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_name_is_the_specified_one() {
        assert_eq!(exchange_name("abc"), "data.abc.published");
    }

    #[test]
    fn the_lease_queue_does_not_name_the_session() {
        let id = "0123456789abcdef0123456789abcdef";
        let lease = lease_queue_name(id);
        assert!(!lease.contains(id), "{lease}");
        // sha256("0123…cdef")[..16], hex: stable, so every gateway renews the same queue.
        assert_eq!(lease.len(), "data.".len() + 32 + ".lease".len());
        assert_eq!(lease, lease_queue_name(id));
        assert_ne!(lease, lease_queue_name("0123456789abcdef0123456789abcdee"));
    }
}
