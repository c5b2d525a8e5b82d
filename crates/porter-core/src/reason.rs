//! Why a channel was not authorized: one typed [`Reason`], serialized as the stable strings
//! clients match on.
//!
//! The strings are part of the public API (batch answers, the reply wire format, audit lines):
//! they never change meaning once shipped, never carry secrets and never say whether an object
//! exists. Each reason also has a [`ReasonClass`], and every consumer that needs an HTTP status
//! matches on the class (or the reason) exhaustively, so a reason without a status cannot be
//! written: a new variant does not compile until every table knows it.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The prefix of [`Reason::ClaimMismatch`]: `claim_mismatch:booking_id`.
const CLAIM_MISMATCH_PREFIX: &str = "claim_mismatch:";

/// Longest free-text reason an application's webhook may give; longer ones become `forbidden`.
pub const MAX_APPLICATION_REASON: usize = 200;

/// Why a channel was refused, or why no decision was made.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The channel name is not a valid Pusher channel name.
    InvalidChannel,
    /// Public channels need no authorization.
    PublicChannel,
    /// No policy rule matches the channel (or gateway and worker policies disagree).
    NoRule,
    /// The rule needs an authenticated caller and the request had none.
    Unauthenticated,
    /// The policy refused the caller.
    Forbidden,
    /// A `claims` rule refused: the named claim of the caller's own token differs from its
    /// capture, so a scoped endpoint can say which check failed.
    ClaimMismatch(String),
    /// The application's webhook refused, in its own words (at most
    /// [`MAX_APPLICATION_REASON`] bytes).
    Application(String),
    /// No reply from a worker before the batch deadline.
    Timeout,
    /// The task reached a worker after its deadline and was not run.
    Expired,
    /// The authorizer ran past the rule's time limit and was cancelled.
    TimeLimitExceeded,
    /// The application's webhook authorizer did not give a usable answer.
    AuthorizerUnavailable,
    /// The worker failed for a reason of its own (malformed task, a store command refused, …).
    Internal,
    /// The store (Redis) did not answer, and the rule cannot decide or gather what it must
    /// without it (a `member` check, user info from the store); optional data is left out
    /// instead (see docs/reliability.md).
    StoreUnavailable,
    /// The gateway could not hand the task to the broker.
    BrokerUnavailable,
    /// The gateway has too many tasks in flight.
    Overloaded,
    /// An encrypted channel was allowed but this gateway has no encryption master key.
    EncryptionNotConfigured,
}

/// What kind of answer a reason is: what a client should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonClass {
    /// The request named something that cannot be authorized (fix the request).
    Invalid,
    /// A decision was made, and it was no.
    Refused,
    /// No decision in time (retry).
    TimedOut,
    /// Porter or a dependency could not decide (retry later).
    Unavailable,
}

impl Reason {
    /// The stable string of this reason.
    pub fn as_str(&self) -> Cow<'_, str> {
        Cow::Borrowed(match self {
            Reason::InvalidChannel => "invalid_channel",
            Reason::PublicChannel => "public_channel",
            Reason::NoRule => "no_rule",
            Reason::Unauthenticated => "unauthenticated",
            Reason::Forbidden => "forbidden",
            Reason::Timeout => "timeout",
            Reason::Expired => "expired",
            Reason::TimeLimitExceeded => "time limit exceeded",
            Reason::AuthorizerUnavailable => "authorizer_unavailable",
            Reason::Internal => "internal_error",
            Reason::StoreUnavailable => "store_unavailable",
            Reason::BrokerUnavailable => "broker_unavailable",
            Reason::Overloaded => "overloaded",
            Reason::EncryptionNotConfigured => "encryption_not_configured",
            Reason::ClaimMismatch(claim) => {
                return Cow::Owned(format!("{CLAIM_MISMATCH_PREFIX}{claim}"));
            }
            Reason::Application(text) => return Cow::Borrowed(text),
        })
    }

    /// Reads a reason back from its string. Any string that is not one of Porter's own is an
    /// application's words; an empty or over-long one is `forbidden`, as the worker would
    /// have said.
    pub fn parse(text: &str) -> Reason {
        match text {
            "invalid_channel" => Reason::InvalidChannel,
            "public_channel" => Reason::PublicChannel,
            "no_rule" => Reason::NoRule,
            "unauthenticated" => Reason::Unauthenticated,
            "forbidden" => Reason::Forbidden,
            "timeout" => Reason::Timeout,
            "expired" => Reason::Expired,
            "time limit exceeded" => Reason::TimeLimitExceeded,
            "authorizer_unavailable" => Reason::AuthorizerUnavailable,
            "internal_error" => Reason::Internal,
            "store_unavailable" => Reason::StoreUnavailable,
            "broker_unavailable" => Reason::BrokerUnavailable,
            "overloaded" => Reason::Overloaded,
            "encryption_not_configured" => Reason::EncryptionNotConfigured,
            other => match other.strip_prefix(CLAIM_MISMATCH_PREFIX) {
                Some(claim) if !claim.is_empty() => Reason::ClaimMismatch(claim.to_owned()),
                _ => Reason::application(other),
            },
        }
    }

    /// An application's refusal; empty or over-long text is `forbidden`.
    pub fn application(text: &str) -> Reason {
        if text.is_empty() || text.len() > MAX_APPLICATION_REASON {
            Reason::Forbidden
        } else {
            Reason::Application(text.to_owned())
        }
    }

    pub fn class(&self) -> ReasonClass {
        match self {
            Reason::InvalidChannel | Reason::PublicChannel => ReasonClass::Invalid,
            Reason::NoRule
            | Reason::Unauthenticated
            | Reason::Forbidden
            | Reason::ClaimMismatch(_)
            | Reason::Application(_) => ReasonClass::Refused,
            Reason::Timeout | Reason::Expired | Reason::TimeLimitExceeded => ReasonClass::TimedOut,
            Reason::AuthorizerUnavailable
            | Reason::Internal
            | Reason::StoreUnavailable
            | Reason::BrokerUnavailable
            | Reason::Overloaded
            | Reason::EncryptionNotConfigured => ReasonClass::Unavailable,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.as_str())
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Reason, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Reason::parse(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Reason; 16] = [
        Reason::InvalidChannel,
        Reason::PublicChannel,
        Reason::NoRule,
        Reason::Unauthenticated,
        Reason::Forbidden,
        Reason::ClaimMismatch(String::new()),
        Reason::Application(String::new()),
        Reason::Timeout,
        Reason::Expired,
        Reason::TimeLimitExceeded,
        Reason::AuthorizerUnavailable,
        Reason::Internal,
        Reason::StoreUnavailable,
        Reason::BrokerUnavailable,
        Reason::Overloaded,
        Reason::EncryptionNotConfigured,
    ];

    #[test]
    fn every_reason_round_trips_through_its_string() {
        for reason in ALL {
            let reason = match reason {
                Reason::ClaimMismatch(_) => Reason::ClaimMismatch("booking_id".into()),
                Reason::Application(_) => Reason::Application("booking cancelled".into()),
                other => other,
            };
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), reason);
        }
    }

    #[test]
    fn the_strings_are_the_shipped_ones() {
        assert_eq!(Reason::TimeLimitExceeded.as_str(), "time limit exceeded");
        assert_eq!(Reason::Internal.as_str(), "internal_error");
        assert_eq!(
            Reason::ClaimMismatch("hotel".into()).as_str(),
            "claim_mismatch:hotel"
        );
        assert_eq!(
            Reason::parse("claim_mismatch:"),
            Reason::application("claim_mismatch:")
        );
        assert_eq!(Reason::parse(""), Reason::Forbidden);
        assert_eq!(Reason::parse(&"x".repeat(201)), Reason::Forbidden);
    }
}
