//! Why a caller could not be identified, and why a key set or algorithm list could not be
//! used.
//!
//! [`IdentityError`] has one variant per outcome a request can meet; its `Display` is the
//! message a client is shown and [`IdentityError::code`] the stable code next to it. Neither
//! ever echoes a token, a secret or a session id. Which HTTP status each variant gets is the
//! gateway's business, not this crate's.
//!
//! [`JwksError`] and [`AlgorithmError`] are configuration and loading errors: they reach an
//! operator's log or the start-up error, never a client.

use std::borrow::Cow;
use std::path::PathBuf;

/// Why a request's caller is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The token (or the `Authorization` header carrying it) is not acceptable; the text says
    /// why, e.g. "the token's issuer is not accepted".
    #[error("{0}")]
    InvalidToken(Cow<'static, str>),
    /// The token's `exp` (plus the leeway) has passed, also when opening a session with it.
    #[error("the token has expired")]
    TokenExpired,
    /// The token, or the token a session was opened with, has been revoked.
    #[error("the token has been revoked")]
    TokenRevoked,
    /// The session id is unknown, expired or malformed; which of these is not said.
    #[error("the session does not exist or has expired; open a new one with POST /auth")]
    InvalidSession,
    /// Both `X-Session-ID` and `Authorization` were given.
    #[error("send either X-Session-ID or Authorization, not both")]
    Ambiguous,
    /// The key set that would verify the token cannot be loaded.
    #[error("the token keys cannot be loaded; retry shortly")]
    KeysUnavailable,
    /// The store cannot tell whether a session or token is still good.
    #[error("the session and revocation store is unavailable; retry shortly")]
    StoreUnavailable,
    /// A session's exchange cannot be declared.
    #[error("the task broker is unavailable; retry shortly")]
    BrokerUnavailable,
}

impl IdentityError {
    /// An [`IdentityError::InvalidToken`] saying why.
    pub fn invalid_token(why: impl Into<Cow<'static, str>>) -> IdentityError {
        IdentityError::InvalidToken(why.into())
    }

    /// The stable code of the outcome, as answered to clients and written to the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            IdentityError::InvalidToken(_) => "invalid_token",
            IdentityError::TokenExpired => "token_expired",
            IdentityError::TokenRevoked => "token_revoked",
            IdentityError::InvalidSession => "invalid_session",
            IdentityError::Ambiguous => "ambiguous_identity",
            IdentityError::KeysUnavailable => "identity_unavailable",
            IdentityError::StoreUnavailable => "store_unavailable",
            IdentityError::BrokerUnavailable => "broker_unavailable",
        }
    }
}

/// Why a JSON Web Key Set could not be read, or may not be read from where it is configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("not a valid URL: {0}")]
    InvalidUrl(String),
    /// Plain `http://` to a host that is not loopback, or another scheme.
    #[error(
        "a JWKS URL must be https:// (plain http:// only to a loopback host such as 127.0.0.1, \
         ::1 or localhost)"
    )]
    InsecureUrl,
    #[error("cannot read {}: {reason}", path.display())]
    ReadFile { path: PathBuf, reason: String },
    #[error("the JWKS read was cancelled")]
    ReadCancelled,
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
    /// The request failed; the text holds the error and its causes.
    #[error("cannot fetch the JWKS: {0}")]
    Fetch(String),
    /// The URL answered with a status that is not a success, e.g. "404 Not Found".
    #[error("the JWKS URL answered {0}")]
    Status(String),
    #[error("the JWKS is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The body broke off; the text holds the error and its causes.
    #[error("cannot read the JWKS: {0}")]
    Body(String),
    #[error("the JWKS is not UTF-8")]
    NotUtf8,
    #[error("the JWKS is not JSON: {0}")]
    NotJson(String),
    #[error("the JWKS has no `keys` array")]
    NoKeys,
}

/// A JWT algorithm name that is unknown, or `none`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown or forbidden JWT algorithm `{name}`")]
pub struct AlgorithmError {
    /// The name as configured (trimmed).
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages_are_the_stable_ones() {
        let cases = [
            (
                IdentityError::invalid_token("the token is malformed"),
                "invalid_token",
                "the token is malformed",
            ),
            (
                IdentityError::TokenExpired,
                "token_expired",
                "the token has expired",
            ),
            (
                IdentityError::TokenRevoked,
                "token_revoked",
                "the token has been revoked",
            ),
            (
                IdentityError::InvalidSession,
                "invalid_session",
                "the session does not exist or has expired; open a new one with POST /auth",
            ),
            (
                IdentityError::Ambiguous,
                "ambiguous_identity",
                "send either X-Session-ID or Authorization, not both",
            ),
            (
                IdentityError::KeysUnavailable,
                "identity_unavailable",
                "the token keys cannot be loaded; retry shortly",
            ),
            (
                IdentityError::StoreUnavailable,
                "store_unavailable",
                "the session and revocation store is unavailable; retry shortly",
            ),
            (
                IdentityError::BrokerUnavailable,
                "broker_unavailable",
                "the task broker is unavailable; retry shortly",
            ),
        ];
        for (error, code, message) in cases {
            assert_eq!(error.code(), code);
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn configuration_errors_read_as_before() {
        assert_eq!(
            JwksError::InsecureUrl.to_string(),
            "a JWKS URL must be https:// (plain http:// only to a loopback host such as \
             127.0.0.1, ::1 or localhost)"
        );
        assert_eq!(
            JwksError::TooLarge { limit: 10 }.to_string(),
            "the JWKS is larger than 10 bytes"
        );
        assert_eq!(
            AlgorithmError {
                name: "none".into()
            }
            .to_string(),
            "unknown or forbidden JWT algorithm `none`"
        );
    }
}
