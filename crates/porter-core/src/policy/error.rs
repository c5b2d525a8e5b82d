//! The typed errors of the policy: a policy file that cannot be used ([`PolicyError`]), and a
//! channel that no rule serves ([`MatchError`]).

use thiserror::Error;

use crate::channel::ChannelError;

/// A policy file that cannot be used, with the rule and field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    #[error("policy is not valid TOML: {0}")]
    Syntax(String),
    #[error("policy has no rules")]
    NoRules,
    #[error("{0}")]
    Document(String),
    #[error("rule {rule}: field `{field}`: {message}")]
    Field {
        rule: String,
        field: String,
        message: String,
    },
}

/// The error of one field of a rule (or of an endpoint, labelled like a rule).
pub(super) fn field_error(rule: &str, field: &str, message: impl Into<String>) -> PolicyError {
    PolicyError::Field {
        rule: rule.to_owned(),
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Why a channel has no rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MatchError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("no policy rule matches the channel")]
    NoRule,
}

impl MatchError {
    pub fn reason(&self) -> crate::reason::Reason {
        match self {
            MatchError::Channel(e) => e.reason(),
            MatchError::NoRule => crate::reason::Reason::NoRule,
        }
    }
}
