//! Who is asking, from what a request presented: `X-Session-ID`, or `Authorization: Bearer`,
//! or nobody. [`Resolver`] holds the token [`Verifier`] and the [`Sessions`], and turns the
//! raw header values ([`Presented`]) into a [`Caller`].
//!
//! Giving both a session and a token is refused ([`IdentityError::Ambiguous`]) rather than
//! guessing which one counts. The client id is attached to the caller in every case; it
//! proves nothing. Header values are taken as the request had them: a value that is not
//! visible ASCII text is refused the way an HTTP library's `to_str()` would refuse it.

use std::time::Duration;

use crate::caller::Caller;
use crate::error::{IdentityError, JwksError};
use crate::jwt::{Verifier, subject};
use crate::model::Credential;
use crate::sessions::Sessions;

/// The identity headers of one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    /// The `Authorization` header's raw value; `None` when absent.
    pub authorization: Option<&'a [u8]>,
    /// The `X-Session-ID` header's raw value; `None` when absent.
    pub session_id: Option<&'a [u8]>,
    /// The caller's client id (as in the system Porter replaces), as the gateway accepts it.
    pub client_id: Option<&'a str>,
}

/// Resolves callers: the verifier of bearer tokens and, when enabled, the sessions.
pub struct Resolver {
    verifier: Verifier,
    sessions: Option<Sessions>,
}

/// A header value as text, when it is what HTTP calls text: visible ASCII and tabs.
fn header_text(value: &[u8]) -> Option<&str> {
    if value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

impl Resolver {
    /// Tokens only; `X-Session-ID` is refused until [`Resolver::with_sessions`].
    pub fn new(verifier: Verifier) -> Resolver {
        Resolver {
            verifier,
            sessions: None,
        }
    }

    /// Enables `X-Session-ID` (and the gateway's `POST /auth`). A session ends when its token
    /// does, with the same leeway as the token's own `exp` check.
    pub fn with_sessions(mut self, sessions: Sessions) -> Resolver {
        self.sessions = Some(sessions.with_leeway(self.verifier.leeway()));
        self
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    pub fn sessions(&self) -> Option<&Sessions> {
        self.sessions.as_ref()
    }

    /// The tolerated clock skew on `exp` and `nbf`, for tokens and sessions alike.
    pub fn leeway(&self) -> Duration {
        self.verifier.leeway()
    }

    /// How long a `jti` revocation lasts when its token's expiry is unknown.
    pub fn revocation_ttl(&self) -> Duration {
        self.verifier.revocation_ttl()
    }

    /// Reads the JWKS at start-up, so the first requests do not wait for it.
    pub async fn preload(&self) -> Result<(), JwksError> {
        self.verifier.preload().await
    }

    /// The caller of a request: its session, or its bearer token, or anonymous. Revocation
    /// is not checked here; see [`Caller::settle`] and [`Caller::ensure_not_revoked`].
    pub async fn resolve(&self, presented: Presented<'_>) -> Result<Caller, IdentityError> {
        let client_id = presented.client_id.map(str::to_owned);
        if let Some(session) = presented.session_id {
            if presented.authorization.is_some() {
                return Err(IdentityError::Ambiguous);
            }
            let session = header_text(session).ok_or(IdentityError::InvalidSession)?;
            let sessions = self
                .sessions
                .as_ref()
                .ok_or(IdentityError::InvalidSession)?;
            let mut caller = sessions.resume(session.trim()).await?;
            caller.identity.client_id = client_id;
            return Ok(caller);
        }
        let mut caller = Caller::anonymous(client_id);
        if let Some(authorization) = presented.authorization {
            let value = header_text(authorization).ok_or_else(|| {
                IdentityError::invalid_token("the Authorization header is not text")
            })?;
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    IdentityError::invalid_token("use `Authorization: Bearer <token>`")
                })?;
            let claims = self.verifier.verify(token).await?;
            caller.identity.user_id = Some(subject(&claims)?);
            caller.identity.credential = Some(Credential::of(token, &claims));
            caller.identity.claims = claims;
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests;
