//! Task and reply signatures (`porter_core::task_auth`): the `x-porter-signature` header any
//! broker user can set on a delivery, and the key list an operator configures
//! (`PORTER_TASK_KEY`).
//!
//! The input is split at NUL bytes into a key list, a correlation id, a `reply_to`, a body and
//! a signature header. Invariants: nothing panics; a parsed key list has key ids of 8 hex
//! digits, the signing key's first; what a process signs it verifies, for that message only (not
//! as a reply, not with another body); a fuzzed header verifies only if it is that signature
//! (hex digits in any case); `accept` lets only a missing header through, `require` nothing
//! unsigned.
#![no_main]

use libfuzzer_sys::fuzz_target;
use porter_core::task_auth::{
    Authenticity, Message, Mode, ReplyMessage, TaskAuth, TaskKeys, TaskMessage, Unauthenticated,
};

const KEYS: &str = "porter-fuzz-task-key-0123456789abcdef,porter-fuzz-old-key-0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let mut next = || parts.next().unwrap_or_default();
    let (key_list, correlation_id, reply_to, body, header) =
        (next(), next(), next(), next(), next());

    if let Ok(keys) = TaskKeys::parse(&String::from_utf8_lossy(key_list)) {
        let ids = keys.ids();
        assert!(!ids.is_empty());
        assert!(
            ids.iter()
                .all(|id| id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }

    let correlation_id = std::str::from_utf8(correlation_id).ok();
    let reply_to = std::str::from_utf8(reply_to).ok();
    let task = Message::Task(TaskMessage {
        correlation_id,
        reply_to,
        expiration: Some("2000"),
        deadline_ms: Some(1_700_000_000_000),
        time_limit_ms: Some(2000),
        body,
    });
    let as_reply = Message::Reply(ReplyMessage {
        correlation_id,
        body,
    });
    let require = auth(Mode::Require);
    let accept = auth(Mode::Accept);
    let signature = require.sign(&task).expect("require mode signs");

    assert_eq!(
        require.verify(&task, Some(signature.as_bytes())),
        Ok(Authenticity::Signed)
    );
    assert!(
        require
            .verify(&as_reply, Some(signature.as_bytes()))
            .is_err()
    );
    let other_body = [body, b"x"].concat();
    let altered = Message::Task(TaskMessage {
        correlation_id,
        reply_to,
        expiration: Some("2000"),
        deadline_ms: Some(1_700_000_000_000),
        time_limit_ms: Some(2000),
        body: &other_body,
    });
    assert_eq!(
        require.verify(&altered, Some(signature.as_bytes())),
        Err(Unauthenticated::BadSignature)
    );

    for auth in [&require, &accept] {
        if auth.verify(&task, Some(header)).is_ok() {
            let (id, tag) = signature.split_at(9);
            assert!(header.len() == signature.len(), "{header:?}");
            assert_eq!(&header[..9], id.as_bytes());
            assert!(header[9..].eq_ignore_ascii_case(tag.as_bytes()));
        }
    }
    assert_eq!(require.verify(&task, None), Err(Unauthenticated::Unsigned));
    assert_eq!(
        accept.verify(&task, None),
        Ok(Authenticity::UnsignedAccepted)
    );
});

fn auth(mode: Mode) -> TaskAuth {
    let keys = TaskKeys::parse(KEYS).expect("the fuzz keys are valid");
    TaskAuth::new(Some(mode), Some(keys)).expect("keys are given")
}
