//! Task authentication on AMQP messages: which properties of a message are signed, read by
//! one function on both sides, and the [`HEADER_SIGNATURE`] header that carries the signature.
//!
//! The gateway builds a task's properties, reads them back through [`task_message`] (the same
//! function the worker reads a delivery with), signs that, and adds the header; the worker
//! verifies exactly the values it then acts on (deadline and time limit included). The MAC
//! itself is `porter_core::task_auth`.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use porter_core::task_auth::{HEADER_SIGNATURE, Message, ReplyMessage, TaskAuth, TaskMessage};
use porter_core::wire::{HEADER_DEADLINE_MS, HEADER_TIME_LIMIT_MS};

/// RabbitMQ's direct reply-to pseudo-queue. A worker sees it as `amq.rabbitmq.reply-to.<tag>`,
/// a name the gateway cannot know when it signs, so both sides sign the bare name.
pub(crate) const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// A numeric header as the worker reads it: any integer type, `None` if absent, negative or
/// not a number.
pub(crate) fn header_u64(headers: &Option<FieldTable>, name: &str) -> Option<u64> {
    let value = headers.as_ref()?.inner().get(name)?;
    let number = match value {
        AMQPValue::LongLongInt(v) => *v,
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        AMQPValue::Timestamp(v) => *v as i64,
        _ => return None,
    };
    u64::try_from(number).ok()
}

/// The signed view of a task: what the worker acts on, as it reads it.
pub(crate) fn task_message<'a>(properties: &'a BasicProperties, body: &'a [u8]) -> TaskMessage<'a> {
    let reply_to = properties.reply_to().as_ref().map(|r| r.as_str());
    TaskMessage {
        correlation_id: properties.correlation_id().as_ref().map(|c| c.as_str()),
        reply_to: reply_to.map(|name| {
            let direct = name
                .strip_prefix(DIRECT_REPLY_TO)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
            if direct { DIRECT_REPLY_TO } else { name }
        }),
        expiration: properties.expiration().as_ref().map(|e| e.as_str()),
        deadline_ms: header_u64(properties.headers(), HEADER_DEADLINE_MS),
        time_limit_ms: header_u64(properties.headers(), HEADER_TIME_LIMIT_MS),
        body,
    }
}

/// The signed view of a reply: the correlation id it answers, and its body.
pub(crate) fn reply_message<'a>(
    properties: &'a BasicProperties,
    body: &'a [u8],
) -> ReplyMessage<'a> {
    ReplyMessage {
        correlation_id: properties.correlation_id().as_ref().map(|c| c.as_str()),
        body,
    }
}

/// The signature header's value; `None` only when the header is absent. A header of another
/// type reads as an empty (malformed) signature, never as a missing one.
pub(crate) fn signature(properties: &BasicProperties) -> Option<&[u8]> {
    let value = properties
        .headers()
        .as_ref()?
        .inner()
        .get(HEADER_SIGNATURE)?;
    Some(match value {
        AMQPValue::LongString(text) => text.as_bytes(),
        AMQPValue::ShortString(text) => text.as_str().as_bytes(),
        _ => b"",
    })
}

/// Signs a task's final properties over what [`task_message`] reads back from them.
pub(crate) fn signed_task(
    auth: &TaskAuth,
    properties: BasicProperties,
    body: &[u8],
) -> BasicProperties {
    let signature = auth.sign(&Message::Task(task_message(&properties, body)));
    match signature {
        None => properties,
        Some(signature) => with_signature(properties, signature),
    }
}

/// Signs a reply's final properties over what [`reply_message`] reads back from them.
pub(crate) fn signed_reply(
    auth: &TaskAuth,
    properties: BasicProperties,
    body: &[u8],
) -> BasicProperties {
    let signature = auth.sign(&Message::Reply(reply_message(&properties, body)));
    match signature {
        None => properties,
        Some(signature) => with_signature(properties, signature),
    }
}

fn with_signature(properties: BasicProperties, signature: String) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(
        HEADER_SIGNATURE.into(),
        AMQPValue::LongString(signature.into()),
    );
    properties.with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use porter_core::task_auth::{Authenticity, Mode, TaskKeys, Unauthenticated};

    const KEY: &str = "the-task-key-of-the-amqp-auth-tests";

    fn auth(mode: Mode) -> TaskAuth {
        TaskAuth::new(Some(mode), Some(TaskKeys::parse(KEY).unwrap())).unwrap()
    }

    /// A task's properties as the gateway builds them (`client.rs`).
    fn task_properties(reply_to: &str) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            HEADER_DEADLINE_MS.into(),
            AMQPValue::LongLongInt(1_700_000_000_000),
        );
        headers.insert(HEADER_TIME_LIMIT_MS.into(), AMQPValue::LongLongInt(500));
        BasicProperties::default()
            .with_correlation_id("t1".into())
            .with_reply_to(reply_to.into())
            .with_expiration("500".into())
            .with_headers(headers)
    }

    fn verify_task(
        auth: &TaskAuth,
        properties: &BasicProperties,
        body: &[u8],
    ) -> Result<Authenticity, Unauthenticated> {
        auth.verify(
            &Message::Task(task_message(properties, body)),
            signature(properties),
        )
    }

    fn with_header(properties: BasicProperties, name: &str, value: AMQPValue) -> BasicProperties {
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(name.into(), value);
        properties.with_headers(headers)
    }

    #[test]
    fn what_the_gateway_signs_the_worker_verifies_and_reads() {
        let auth = auth(Mode::Require);
        let signed = signed_task(&auth, task_properties("amq.gen-abc"), b"{}");
        assert_eq!(verify_task(&auth, &signed, b"{}"), Ok(Authenticity::Signed));
        let read = task_message(&signed, b"{}");
        assert_eq!(read.deadline_ms, Some(1_700_000_000_000));
        assert_eq!(read.time_limit_ms, Some(500));
        assert_eq!(
            verify_task(&auth, &signed, b"{ }"),
            Err(Unauthenticated::BadSignature)
        );
        let unsigned = task_properties("amq.gen-abc");
        assert_eq!(
            verify_task(&auth, &unsigned, b"{}"),
            Err(Unauthenticated::Unsigned)
        );
    }

    #[test]
    fn a_header_retyped_so_the_worker_would_ignore_it_breaks_the_signature() {
        let auth = auth(Mode::Require);
        let signed = signed_task(&auth, task_properties("amq.gen-abc"), b"{}");
        // As a string, the deadline would read as absent: the task would run whenever.
        let retyped = with_header(
            signed.clone(),
            HEADER_DEADLINE_MS,
            AMQPValue::LongString("1700000000000".into()),
        );
        assert_eq!(task_message(&retyped, b"{}").deadline_ms, None);
        assert_eq!(
            verify_task(&auth, &retyped, b"{}"),
            Err(Unauthenticated::BadSignature)
        );
        // Another integer type of the same value reads the same, and so still verifies.
        let widened = with_header(signed, HEADER_TIME_LIMIT_MS, AMQPValue::LongUInt(500));
        assert_eq!(
            verify_task(&auth, &widened, b"{}"),
            Ok(Authenticity::Signed)
        );
    }

    #[test]
    fn direct_reply_to_verifies_after_the_broker_renames_it() {
        let auth = auth(Mode::Require);
        let signed = signed_task(&auth, task_properties(DIRECT_REPLY_TO), b"{}");
        let delivered = signed
            .clone()
            .with_reply_to("amq.rabbitmq.reply-to.g1h2AA5yZXBseUAx.HHzBMtT1Sd6Xrf".into());
        assert_eq!(
            verify_task(&auth, &delivered, b"{}"),
            Ok(Authenticity::Signed)
        );
        let redirected = signed.with_reply_to("amq.gen-forger".into());
        assert_eq!(
            verify_task(&auth, &redirected, b"{}"),
            Err(Unauthenticated::BadSignature)
        );
    }

    #[test]
    fn a_signature_header_of_another_type_is_malformed_not_missing() {
        let auth = auth(Mode::Accept);
        let odd = with_header(
            task_properties("q"),
            HEADER_SIGNATURE,
            AMQPValue::LongLongInt(1),
        );
        assert_eq!(
            verify_task(&auth, &odd, b"{}"),
            Err(Unauthenticated::Malformed)
        );
        assert_eq!(
            verify_task(&auth, &task_properties("q"), b"{}"),
            Ok(Authenticity::UnsignedAccepted)
        );
    }

    #[test]
    fn replies_are_signed_for_their_correlation_id() {
        let auth = auth(Mode::Require);
        let properties = BasicProperties::default().with_correlation_id("t1".into());
        let signed = signed_reply(&auth, properties, b"{}");
        let verify = |properties: &BasicProperties| {
            auth.verify(
                &Message::Reply(reply_message(properties, b"{}")),
                signature(properties),
            )
        };
        assert_eq!(verify(&signed), Ok(Authenticity::Signed));
        let moved = signed.with_correlation_id("t2".into());
        assert_eq!(verify(&moved), Err(Unauthenticated::BadSignature));
        let off = signed_reply(&TaskAuth::off(), BasicProperties::default(), b"{}");
        assert!(signature(&off).is_none());
    }
}
