//! Unit tests of task and reply signatures: every signed field, wrong and rotated keys,
//! missing and malformed headers, the modes, and the documented bytes.

use super::*;

const KEY_A: &str = "a-task-key-of-thirty-two-bytes-aa";
const KEY_B: &str = "b-task-key-of-thirty-two-bytes-bb";

fn auth(mode: Mode, keys: &str) -> TaskAuth {
    TaskAuth::new(Some(mode), Some(TaskKeys::parse(keys).unwrap())).unwrap()
}

fn task<'a>(correlation_id: &'a str, body: &'a [u8]) -> TaskMessage<'a> {
    TaskMessage {
        correlation_id: Some(correlation_id),
        reply_to: Some("amq.gen-reply"),
        expiration: Some("500"),
        deadline_ms: Some(1_700_000_000_000),
        time_limit_ms: Some(500),
        body,
    }
}

fn reply<'a>(correlation_id: &'a str, body: &'a [u8]) -> Message<'a> {
    Message::Reply(ReplyMessage {
        correlation_id: Some(correlation_id),
        body,
    })
}

const BODY: &[u8] = br#"{"v":1,"id":"t1","ok":true,"data":{"user_id":"7"}}"#;

#[test]
fn a_signed_reply_verifies_and_any_change_breaks_it() {
    let auth = auth(Mode::Require, KEY_A);
    let signature = auth.sign(&reply("t1", BODY)).unwrap();
    assert_eq!(
        auth.verify(&reply("t1", BODY), Some(signature.as_bytes())),
        Ok(Authenticity::Signed)
    );
    let tampered = br#"{"v":1,"id":"t1","ok":true,"data":{"user_id":"admin"}}"#;
    assert_eq!(
        auth.verify(&reply("t1", tampered), Some(signature.as_bytes())),
        Err(Unauthenticated::BadSignature)
    );
    // Replayed onto another task.
    assert_eq!(
        auth.verify(&reply("t2", BODY), Some(signature.as_bytes())),
        Err(Unauthenticated::BadSignature)
    );
    let no_correlation = Message::Reply(ReplyMessage {
        correlation_id: None,
        body: BODY,
    });
    assert_eq!(
        auth.verify(&no_correlation, Some(signature.as_bytes())),
        Err(Unauthenticated::BadSignature)
    );
}

#[test]
fn every_task_property_the_worker_acts_on_is_signed() {
    let auth = auth(Mode::Require, KEY_A);
    let original = task("t1", BODY);
    let signature = auth.sign(&Message::Task(original)).unwrap();
    assert_eq!(
        auth.verify(&Message::Task(original), Some(signature.as_bytes())),
        Ok(Authenticity::Signed)
    );
    let changes: [(&str, TaskMessage<'_>); 8] = [
        ("body", task("t1", br#"{"v":1,"id":"t1"}"#)),
        ("correlation id", task("t2", BODY)),
        (
            "reply_to",
            TaskMessage {
                reply_to: Some("forger"),
                ..original
            },
        ),
        (
            "no reply_to",
            TaskMessage {
                reply_to: None,
                ..original
            },
        ),
        (
            "expiration",
            TaskMessage {
                expiration: Some("50000"),
                ..original
            },
        ),
        (
            "deadline",
            TaskMessage {
                deadline_ms: Some(1_800_000_000_000),
                ..original
            },
        ),
        (
            "no deadline",
            TaskMessage {
                deadline_ms: None,
                ..original
            },
        ),
        (
            "time limit",
            TaskMessage {
                time_limit_ms: Some(60_000),
                ..original
            },
        ),
    ];
    for (what, changed) in changes {
        assert_eq!(
            auth.verify(&Message::Task(changed), Some(signature.as_bytes())),
            Err(Unauthenticated::BadSignature),
            "{what}"
        );
    }
}

#[test]
fn fields_do_not_run_into_each_other() {
    let auth = auth(Mode::Require, KEY_A);
    // The same bytes split differently between reply_to and expiration.
    let one = TaskMessage {
        reply_to: Some("ab"),
        expiration: Some("c"),
        ..task("t1", BODY)
    };
    let other = TaskMessage {
        reply_to: Some("a"),
        expiration: Some("bc"),
        ..one
    };
    assert_ne!(
        auth.sign(&Message::Task(one)),
        auth.sign(&Message::Task(other))
    );
}

#[test]
fn a_task_signature_does_not_pass_for_a_reply() {
    let auth = auth(Mode::Require, KEY_A);
    let as_task = Message::Task(TaskMessage {
        correlation_id: Some("t1"),
        reply_to: None,
        expiration: None,
        deadline_ms: None,
        time_limit_ms: None,
        body: BODY,
    });
    let signature = auth.sign(&as_task).unwrap();
    assert_eq!(
        auth.verify(&reply("t1", BODY), Some(signature.as_bytes())),
        Err(Unauthenticated::BadSignature)
    );
}

#[test]
fn a_wrong_key_is_refused_in_both_modes() {
    let signer = auth(Mode::Require, KEY_B);
    let signature = signer.sign(&reply("t1", BODY)).unwrap();
    for mode in [Mode::Accept, Mode::Require] {
        assert_eq!(
            auth(mode, KEY_A).verify(&reply("t1", BODY), Some(signature.as_bytes())),
            Err(Unauthenticated::UnknownKey),
            "{mode}"
        );
    }
    // A forger who copies a real key id still needs the key.
    let real = auth(Mode::Require, KEY_A);
    let forged = format!("{}:{}", real.signing_key_id().unwrap(), "ab".repeat(32));
    assert_eq!(
        real.verify(&reply("t1", BODY), Some(forged.as_bytes())),
        Err(Unauthenticated::BadSignature)
    );
}

#[test]
fn tampering_is_refused_in_accept_mode_too() {
    let auth = auth(Mode::Accept, KEY_A);
    let signature = auth.sign(&reply("t1", BODY)).unwrap();
    assert_eq!(
        auth.verify(&reply("t1", b"{}"), Some(signature.as_bytes())),
        Err(Unauthenticated::BadSignature)
    );
}

#[test]
fn a_missing_signature_passes_only_in_accept_mode() {
    assert_eq!(
        auth(Mode::Accept, KEY_A).verify(&reply("t1", BODY), None),
        Ok(Authenticity::UnsignedAccepted)
    );
    assert_eq!(
        auth(Mode::Require, KEY_A).verify(&reply("t1", BODY), None),
        Err(Unauthenticated::Unsigned)
    );
    assert_eq!(
        TaskAuth::off().verify(&reply("t1", BODY), None),
        Ok(Authenticity::Unchecked)
    );
    // Off checks nothing, garbage included: the behaviour before signing.
    assert_eq!(
        TaskAuth::off().verify(&reply("t1", BODY), Some(b"garbage")),
        Ok(Authenticity::Unchecked)
    );
    assert_eq!(TaskAuth::off().sign(&reply("t1", BODY)), None);
}

#[test]
fn malformed_signatures_are_refused() {
    let auth = auth(Mode::Accept, KEY_A);
    let id = auth.signing_key_id().unwrap().to_owned();
    for bad in [
        String::new(),
        "no-colon".to_owned(),
        format!("{id}:"),
        format!("{id}:{}", "zz".repeat(32)),
        format!("{id}:{}", "ab".repeat(31)),
        format!("{id}x:{}", "ab".repeat(32)),
    ] {
        assert_eq!(
            auth.verify(&reply("t1", BODY), Some(bad.as_bytes())),
            Err(Unauthenticated::Malformed),
            "{bad:?}"
        );
    }
    assert_eq!(
        auth.verify(&reply("t1", BODY), Some(&[0xff, 0xfe])),
        Err(Unauthenticated::Malformed)
    );
}

#[test]
fn a_rotated_list_signs_with_its_first_key_and_verifies_with_all() {
    let old = auth(Mode::Require, KEY_A);
    let rotating = auth(Mode::Require, &format!("{KEY_B},{KEY_A}"));
    let rotated = auth(Mode::Require, KEY_B);
    let from_old = old.sign(&reply("t1", BODY)).unwrap();
    let from_rotating = rotating.sign(&reply("t1", BODY)).unwrap();
    assert_eq!(
        rotating.verify(&reply("t1", BODY), Some(from_old.as_bytes())),
        Ok(Authenticity::Signed)
    );
    assert_eq!(
        rotated.verify(&reply("t1", BODY), Some(from_rotating.as_bytes())),
        Ok(Authenticity::Signed)
    );
    // Once the old key is gone from the list, what it signed is refused.
    assert_eq!(
        rotated.verify(&reply("t1", BODY), Some(from_old.as_bytes())),
        Err(Unauthenticated::UnknownKey)
    );
    assert_eq!(rotating.signing_key_id(), rotated.signing_key_id());
}

#[test]
fn the_signature_is_the_documented_hmac() {
    // Recomputed by hand from docs/task-auth.md, independently of `Message::feed`.
    let auth = auth(Mode::Require, KEY_A);
    let id = hex::encode(
        Sha256::new()
            .chain_update(b"porter task key id\n")
            .chain_update(KEY_A)
            .finalize(),
    )[..8]
        .to_owned();
    let mut mac = HmacSha256::new_from_slice(KEY_A.as_bytes()).unwrap();
    mac.update(b"porter reply v1\n");
    mac.update(id.as_bytes());
    mac.update(&[1]);
    mac.update(&2u64.to_be_bytes());
    mac.update(b"t1");
    mac.update(&(BODY.len() as u64).to_be_bytes());
    mac.update(BODY);
    let expected = format!("{id}:{}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(auth.sign(&reply("t1", BODY)), Some(expected));
}

#[test]
fn key_lists_parse_from_commas_or_lines() {
    let keys = TaskKeys::parse(&format!(" {KEY_A} ,\n{KEY_B}\n\n")).unwrap();
    assert_eq!(keys.ids().len(), 2);
    assert!(keys.ids().iter().all(|id| id.len() == 8));
    let file = TaskKeys::parse(&format!("{KEY_B}\r\n{KEY_A}\r\n")).unwrap();
    assert_eq!(file.ids(), [keys.ids()[1], keys.ids()[0]]);
}

#[test]
fn bad_key_lists_are_refused_without_echoing_keys() {
    let cases = [
        ("", TaskAuthError::NoKeys),
        (" , \n", TaskAuthError::NoKeys),
        (
            "short-secret",
            TaskAuthError::KeyTooShort {
                position: 1,
                len: 12,
            },
        ),
        (
            &format!("{KEY_A},{KEY_B},{KEY_A}") as &str,
            TaskAuthError::DuplicateKey {
                first: 1,
                second: 3,
            },
        ),
    ];
    for (list, expected) in cases {
        let error = TaskKeys::parse(list).unwrap_err();
        assert_eq!(error, expected, "{list:?}");
        assert!(!error.to_string().contains("short-secret"), "{error}");
    }
    let error = TaskKeys::parse(&format!("{KEY_A},tiny")).unwrap_err();
    assert!(!error.to_string().contains("tiny"), "{error}");
}

#[test]
fn the_mode_defaults_to_require_with_keys_and_off_without() {
    let keys = || Some(TaskKeys::parse(KEY_A).unwrap());
    assert_eq!(TaskAuth::new(None, keys()).unwrap().mode(), Mode::Require);
    assert_eq!(TaskAuth::new(None, None).unwrap().mode(), Mode::Off);
    let off = TaskAuth::new(Some(Mode::Off), keys()).unwrap();
    assert_eq!(off.mode(), Mode::Off);
    assert_eq!(off.sign(&reply("t1", BODY)), None);
    for mode in [Mode::Accept, Mode::Require] {
        assert_eq!(
            TaskAuth::new(Some(mode), None).unwrap_err(),
            TaskAuthError::NeedsKeys(mode)
        );
    }
    assert_eq!("accept".parse::<Mode>(), Ok(Mode::Accept));
    assert_eq!(
        "on".parse::<Mode>(),
        Err(TaskAuthError::UnknownMode("on".into()))
    );
}

#[test]
fn printing_shows_key_ids_never_keys() {
    let auth = auth(Mode::Require, &format!("{KEY_A},{KEY_B}"));
    let printed = format!("{auth:?}");
    assert!(
        printed.contains(auth.signing_key_id().unwrap()),
        "{printed}"
    );
    assert!(!printed.contains("task-key"), "{printed}");
}
