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
        rule: one_line(rule),
        field: one_line(field),
        message: one_line(&message.into()),
    }
}

/// Text quoted from a policy (names, keys, values) with its control characters escaped, so
/// an error is always one line: the CLI promises one, and log lines must not be forged.
pub(super) fn one_line(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line_whatever_they_quote() {
        let error = field_error("#1 `a\nb`", "x\ry", "`\u{1b}[2J` is\tbad").to_string();
        assert_eq!(
            error,
            "rule #1 `a\\nb`: field `x\\ry`: `\\u{1b}[2J` is\\tbad"
        );
        assert!(!error.chars().any(char::is_control), "{error}");
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
