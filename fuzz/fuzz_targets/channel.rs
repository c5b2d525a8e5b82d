//! Channel names and socket ids (`porter_core::channel`), the first thing every
//! authorization endpoint reads from a client.
//!
//! Invariants: parsing never panics; a parsed channel is exactly its input, split into a type
//! prefix, a feature without `@` and an optional object id that put back together give the
//! name; whatever `Channel::parse` accepts `validate_channel_name` accepts; a socket id is
//! accepted exactly when it is `digits.digits` (checked against a second, byte-wise reading).
#![no_main]

use libfuzzer_sys::fuzz_target;
use porter_core::channel::{
    Channel, ChannelError, ChannelKind, MAX_CHANNEL_LEN, is_channel_char, validate_channel_name,
    validate_socket_id,
};

fuzz_target!(|data: &[u8]| {
    // Bytes that are not UTF-8 reach the parser as the lossy text actix would hand over.
    let text = String::from_utf8_lossy(data);
    check_channel(&text);
    check_socket_id(&text);
});

fn check_channel(name: &str) {
    match Channel::parse(name) {
        Ok(channel) => {
            assert_eq!(channel.name, name);
            assert!(validate_channel_name(name).is_ok());
            assert!(name.len() <= MAX_CHANNEL_LEN);
            assert!(name.chars().all(is_channel_char));
            assert_ne!(channel.kind, ChannelKind::Public);
            assert!(!channel.feature.contains('@'));
            let rebuilt = match channel.object_id {
                Some(object_id) => {
                    format!("{}{}@{object_id}", channel.kind.prefix(), channel.feature)
                }
                None => format!("{}{}", channel.kind.prefix(), channel.feature),
            };
            assert_eq!(rebuilt, name);
            assert!(!name[channel.kind.prefix().len()..].is_empty());
        }
        Err(ChannelError::Public) => {
            assert!(validate_channel_name(name).is_ok());
            assert!(!name.starts_with("private-") && !name.starts_with("presence-"));
        }
        Err(ChannelError::MissingName) => {
            assert!(matches!(
                name,
                "private-" | "private-encrypted-" | "presence-"
            ));
        }
        Err(_) => assert!(validate_channel_name(name).is_err()),
    }
}

fn check_socket_id(socket_id: &str) {
    let bytes = socket_id.as_bytes();
    let dots = bytes.iter().filter(|&&b| b == b'.').count();
    let expected = dots == 1
        && bytes.first().is_some_and(u8::is_ascii_digit)
        && bytes.last().is_some_and(u8::is_ascii_digit)
        && bytes.iter().all(|&b| b == b'.' || b.is_ascii_digit());
    assert_eq!(
        validate_socket_id(socket_id).is_ok(),
        expected,
        "{socket_id:?}"
    );
}
