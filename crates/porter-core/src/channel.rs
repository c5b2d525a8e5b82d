//! Pusher channel names and socket ids.
//!
//! Validation matches the official Pusher server SDKs: a channel name is 1 to 200 characters
//! of `[-a-zA-Z0-9_=@,.;]`, a socket id is `digits.digits`, both anchored on the whole input
//! (so `"1.1\n"` is refused, unlike a careless `$`-anchored regex).

use std::fmt;

use thiserror::Error;

use crate::reason::Reason;

/// The longest channel name the official SDKs accept.
pub const MAX_CHANNEL_LEN: usize = 200;

/// Why a channel name or socket id was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChannelError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {MAX_CHANNEL_LEN} characters")]
    TooLong,
    #[error("channel name contains a character outside [-a-zA-Z0-9_=@,.;]")]
    InvalidCharacter,
    #[error("public channels need no authorization")]
    Public,
    #[error("channel name has a type prefix but nothing after it")]
    MissingName,
}

impl ChannelError {
    /// The stable reason code a client sees for this refusal.
    pub fn reason(&self) -> Reason {
        match self {
            ChannelError::Public => Reason::PublicChannel,
            _ => Reason::InvalidChannel,
        }
    }
}

/// The socket id is not `digits.digits`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("socket_id must be two groups of digits joined by a dot")]
pub struct InvalidSocketId;

/// The type of a channel, from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelKind {
    Public,
    Private,
    PrivateEncrypted,
    Presence,
}

impl ChannelKind {
    /// The prefix that marks the kind, including its trailing `-`.
    pub fn prefix(self) -> &'static str {
        match self {
            ChannelKind::Public => "",
            ChannelKind::Private => "private-",
            ChannelKind::PrivateEncrypted => "private-encrypted-",
            ChannelKind::Presence => "presence-",
        }
    }

    /// The kind as the system Porter replaces names it on the wire (`private`, `presence`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Public => "public",
            ChannelKind::Private => "private",
            ChannelKind::PrivateEncrypted => "private-encrypted",
            ChannelKind::Presence => "presence",
        }
    }

    pub fn is_presence(self) -> bool {
        self == ChannelKind::Presence
    }

    pub fn is_encrypted(self) -> bool {
        self == ChannelKind::PrivateEncrypted
    }

    fn of(name: &str) -> ChannelKind {
        // Longest prefix first: `private-encrypted-` is also a `private-` prefix.
        [
            ChannelKind::PrivateEncrypted,
            ChannelKind::Private,
            ChannelKind::Presence,
        ]
        .into_iter()
        .find(|kind| name.starts_with(kind.prefix()))
        .unwrap_or(ChannelKind::Public)
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated channel name that needs authorization, split into its parts.
///
/// In the default naming scheme the part after the type prefix is `{feature}@{object_id}`,
/// split at the first `@`; a name without `@` has the whole rest as its feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel<'a> {
    pub name: &'a str,
    pub kind: ChannelKind,
    pub feature: &'a str,
    pub object_id: Option<&'a str>,
}

impl<'a> Channel<'a> {
    /// Parses a channel that needs authorization. Public channels are refused.
    pub fn parse(name: &'a str) -> Result<Channel<'a>, ChannelError> {
        validate_channel_name(name)?;
        let kind = ChannelKind::of(name);
        if kind == ChannelKind::Public {
            return Err(ChannelError::Public);
        }
        let rest = &name[kind.prefix().len()..];
        if rest.is_empty() {
            return Err(ChannelError::MissingName);
        }
        let (feature, object_id) = match rest.split_once('@') {
            Some((feature, object_id)) => (feature, Some(object_id)),
            None => (rest, None),
        };
        Ok(Channel {
            name,
            kind,
            feature,
            object_id,
        })
    }

    /// The name used for cache keys: like the system Porter replaces, it drops the `-encrypted`
    /// part, so an encrypted channel shares its cached data with its plain twin.
    pub fn cache_name(&self) -> std::borrow::Cow<'a, str> {
        match self.kind {
            ChannelKind::PrivateEncrypted => std::borrow::Cow::Owned(format!(
                "private-{}",
                &self.name[ChannelKind::PrivateEncrypted.prefix().len()..]
            )),
            _ => std::borrow::Cow::Borrowed(self.name),
        }
    }
}

/// True for the characters the official SDKs allow in a channel name.
pub fn is_channel_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=' | '@' | ',' | '.' | ';')
}

/// Validates a channel name as the official server SDKs do.
pub fn validate_channel_name(name: &str) -> Result<(), ChannelError> {
    if name.is_empty() {
        return Err(ChannelError::Empty);
    }
    if name.len() > MAX_CHANNEL_LEN {
        return Err(ChannelError::TooLong);
    }
    if !name.chars().all(is_channel_char) {
        return Err(ChannelError::InvalidCharacter);
    }
    Ok(())
}

/// Validates a socket id: `\A\d+\.\d+\z` (ASCII digits only).
pub fn validate_socket_id(socket_id: &str) -> Result<(), InvalidSocketId> {
    let (left, right) = socket_id.split_once('.').ok_or(InvalidSocketId)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(left) && digits(right) {
        Ok(())
    } else {
        Err(InvalidSocketId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_feature_and_object_at_first_at() {
        let c = Channel::parse("private-stream-viewer@42").unwrap();
        assert_eq!(c.kind, ChannelKind::Private);
        assert_eq!(c.feature, "stream-viewer");
        assert_eq!(c.object_id, Some("42"));

        let c = Channel::parse("presence-chat@a@b").unwrap();
        assert_eq!(c.kind, ChannelKind::Presence);
        assert_eq!(c.feature, "chat");
        assert_eq!(c.object_id, Some("a@b"));
    }

    #[test]
    fn longest_prefix_wins() {
        let c = Channel::parse("private-encrypted-chat@9").unwrap();
        assert_eq!(c.kind, ChannelKind::PrivateEncrypted);
        assert_eq!(c.feature, "chat");
        assert_eq!(c.cache_name(), "private-chat@9");
        assert_eq!(
            Channel::parse("private-chat@9").unwrap().cache_name(),
            "private-chat@9"
        );
    }

    #[test]
    fn name_without_at_is_all_feature() {
        let c = Channel::parse("private-hotel-grand-guest-chat-booking-BK-1").unwrap();
        assert_eq!(c.feature, "hotel-grand-guest-chat-booking-BK-1");
        assert_eq!(c.object_id, None);
    }

    #[test]
    fn refusals_are_typed() {
        assert_eq!(Channel::parse(""), Err(ChannelError::Empty));
        assert_eq!(Channel::parse("stream@1"), Err(ChannelError::Public));
        assert_eq!(Channel::parse("private-"), Err(ChannelError::MissingName));
        assert_eq!(
            Channel::parse("private-a b"),
            Err(ChannelError::InvalidCharacter)
        );
        assert_eq!(
            Channel::parse("private-ä"),
            Err(ChannelError::InvalidCharacter)
        );
        let long = format!("private-{}", "a".repeat(193));
        assert_eq!(Channel::parse(&long), Err(ChannelError::TooLong));
        let max = format!("private-{}", "a".repeat(192));
        assert!(Channel::parse(&max).is_ok());
        assert_eq!(ChannelError::Public.reason().as_str(), "public_channel");
        assert_eq!(ChannelError::TooLong.reason().as_str(), "invalid_channel");
    }

    #[test]
    fn socket_ids_are_anchored() {
        assert!(validate_socket_id("123456.654321").is_ok());
        assert!(validate_socket_id("1.1").is_ok());
        for bad in [
            "", "1", "1.", ".1", "1.1\n", "1.1\n:", ":1.1", "1.1:", "a.1", "1.1.1", "1,1", "١.١",
            " 1.1",
        ] {
            assert_eq!(validate_socket_id(bad), Err(InvalidSocketId), "{bad:?}");
        }
    }
}
