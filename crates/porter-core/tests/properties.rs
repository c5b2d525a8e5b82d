//! Property tests: the parsers never panic, and accept exactly what the official SDKs accept.

use porter_core::channel::{Channel, ChannelError, ChannelKind, validate_socket_id};
use porter_core::pattern::{Constraints, Pattern};
use porter_core::policy::Policy;
use proptest::prelude::*;

const CHARSET: &str = "-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_=@,.;";

/// The SDKs' rule, written independently of the crate: `\A[-a-zA-Z0-9_=@,.;]{1,200}\z`.
fn sdk_accepts(name: &str) -> bool {
    !name.is_empty() && name.len() <= 200 && name.chars().all(|c| CHARSET.contains(c))
}

fn channelish() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        Just(""),
        Just("private-"),
        Just("presence-"),
        Just("private-encrypted-")
    ];
    let body = prop_oneof![
        "[-a-zA-Z0-9_=@,.;]{0,210}",
        "[a-z]{1,12}@[0-9]{1,6}",
        any::<String>(),
        "[-a-z@ \\n:#\u{e9}\u{661}]{0,20}",
    ];
    (prefix, body).prop_map(|(p, b)| format!("{p}{b}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn channel_parser_accepts_exactly_sdk_names(name in channelish()) {
        let parsed = Channel::parse(&name);
        if !sdk_accepts(&name) {
            prop_assert!(matches!(
                parsed,
                Err(ChannelError::Empty | ChannelError::TooLong | ChannelError::InvalidCharacter)
            ));
        } else {
            match parsed {
                Ok(channel) => {
                    prop_assert_ne!(channel.kind, ChannelKind::Public);
                    prop_assert!(name.starts_with(channel.kind.prefix()));
                    // The parts reassemble into the name.
                    let mut rebuilt = format!("{}{}", channel.kind.prefix(), channel.feature);
                    if let Some(object) = channel.object_id {
                        rebuilt.push('@');
                        rebuilt.push_str(object);
                    }
                    prop_assert_eq!(rebuilt, name.clone());
                    prop_assert!(!channel.feature.contains('@'));
                }
                Err(ChannelError::Public) => {
                    prop_assert!(!name.starts_with("private-") && !name.starts_with("presence-"));
                }
                Err(ChannelError::MissingName) => {
                    prop_assert!(name == "private-" || name == "presence-" || name == "private-encrypted-");
                }
                Err(other) => prop_assert!(false, "unexpected {:?} for {:?}", other, name),
            }
        }
    }

    #[test]
    fn socket_id_parser_is_anchored(s in prop_oneof!["[0-9]{1,8}\\.[0-9]{1,8}", any::<String>(), "[0-9.:\\n ]{0,12}"]) {
        let reference = {
            let parts: Vec<&str> = s.split('.').collect();
            parts.len() == 2 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        prop_assert_eq!(validate_socket_id(&s).is_ok(), reference);
    }

    #[test]
    fn policy_matching_never_panics(name in channelish()) {
        let policy = Policy::default();
        if let Ok(m) = policy.match_name(&name) {
            prop_assert!(sdk_accepts(&name));
            prop_assert!(m.captures.values().all(|v| !v.is_empty()));
        }
    }

    #[test]
    fn pattern_matching_never_panics(pattern in "[a-z{}@-]{1,20}", name in any::<String>()) {
        if let Ok(p) = Pattern::parse(&pattern) {
            let _ = p.captures(&name, &Constraints::new());
        }
    }

    #[test]
    fn policy_parser_never_panics(source in any::<String>()) {
        let _ = Policy::from_toml(&source);
    }
}
