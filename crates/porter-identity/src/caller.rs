//! The caller of one request: its [`Identity`], and the session action still pending on it.
//!
//! A caller that came with a session carries a [`SessionUse`]: what to do with the session
//! once the caller's revocation check is known. The check itself and its outcome live in
//! [`crate::revocation`] ([`Caller::settle`], [`Caller::ensure_not_revoked`]); the sessions
//! themselves in [`crate::sessions`], which makes the uses. Both build on this module, which
//! uses neither.

use std::sync::Arc;
use std::time::Duration;

use porter_broker::TaskClient;
use porter_store::{Revocation, Store};
use tracing::warn;

use crate::model::Identity;

/// Who is asking, and what is owed to their session once their revocation check is known.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub identity: Identity,
    session: Option<SessionUse>,
}

impl Caller {
    /// A caller without a token or session, with the client id it gave, if any.
    pub fn anonymous(client_id: Option<String>) -> Caller {
        Caller {
            identity: Identity {
                client_id,
                ..Identity::default()
            },
            session: None,
        }
    }

    /// A caller identified by a token alone: no session to renew or delete.
    pub fn from_token(identity: Identity) -> Caller {
        Caller {
            identity,
            session: None,
        }
    }

    /// A caller that came with a session.
    pub(crate) fn from_session(identity: Identity, session: SessionUse) -> Caller {
        Caller {
            identity,
            session: Some(session),
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The identity, without the pending session action.
    pub fn into_identity(self) -> Identity {
        self.identity
    }

    /// The revocations that would end this caller's right to ask.
    pub fn revocations(&self) -> Vec<Revocation<'_>> {
        self.identity.revocations()
    }

    /// The use of the session the caller came with, if any.
    pub(crate) fn session_use(&self) -> Option<&SessionUse> {
        self.session.as_ref()
    }
}

/// A use of a session, carried by its [`Caller`] until the revocation check is known
/// ([`Caller::settle`]): a check that passed then renews the exchange lease (when due), and
/// a revoked token deletes the session. Renewing before the check would keep the exchange of
/// a revoked session alive. Its `Debug` never shows the session id.
#[derive(Clone)]
pub struct SessionUse {
    id: String,
    /// The lease renewal due with this use, if any.
    renewal: Option<LeaseRenewal>,
}

#[derive(Clone)]
struct LeaseRenewal {
    exchanges: Arc<dyn TaskClient>,
    lease: Duration,
}

impl std::fmt::Debug for SessionUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the id: a Caller may be debug-printed.
        f.debug_struct("SessionUse")
            .field("renewal_due", &self.renewal.is_some())
            .finish_non_exhaustive()
    }
}

impl SessionUse {
    /// A use of session `id`; `renewal` is the exchange lease to renew once it passes, when
    /// this use is the one due to renew it.
    pub(crate) fn new(id: String, renewal: Option<(Arc<dyn TaskClient>, Duration)>) -> SessionUse {
        SessionUse {
            id,
            renewal: renewal.map(|(exchanges, lease)| LeaseRenewal { exchanges, lease }),
        }
    }

    /// The revocation check passed: renews the exchange lease in the background, when due.
    pub(crate) fn passed(&self) {
        let Some(renewal) = self.renewal.clone() else {
            return;
        };
        let id = self.id.clone();
        tokio::spawn(async move {
            if let Err(error) = renewal.exchanges.renew_session(&id, renewal.lease).await {
                warn!(error = %redact(&error.to_string(), &id), "could not renew a session exchange");
            }
        });
    }

    /// The session's token is revoked: the session is deleted, so that it stays refused
    /// after the revocation itself has expired.
    pub(crate) async fn revoked(&self, store: &dyn Store) {
        if let Err(error) = store.forget_session(&self.id).await {
            warn!(%error, "could not delete a revoked session");
        }
    }
}

/// Broker errors name the exchange, which contains the session id: keep it out of logs.
pub(crate) fn redact(text: &str, session_id: &str) -> String {
    text.replace(session_id, "<session>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_the_session_id() {
        let text = "NOT_FOUND - no exchange 'data.0123.published'";
        assert_eq!(
            redact(text, "0123"),
            "NOT_FOUND - no exchange 'data.<session>.published'"
        );
    }

    #[test]
    fn debug_never_shows_the_session_id() {
        let id = "0123456789abcdef0123456789abcdef";
        let caller = Caller::from_session(
            Identity {
                user_id: Some("7".into()),
                ..Identity::default()
            },
            SessionUse::new(id.into(), None),
        );
        let text = format!("{caller:?}");
        assert!(text.contains("SessionUse"), "{text}");
        assert!(!text.contains(id), "{text}");
    }

    #[test]
    fn callers_without_a_session_have_nothing_pending() {
        let anonymous = Caller::anonymous(Some("web".into()));
        assert_eq!(anonymous.identity().client_id.as_deref(), Some("web"));
        assert!(anonymous.identity().user_id.is_none());
        assert!(anonymous.session_use().is_none());
        assert!(anonymous.revocations().is_empty());
        let token = Caller::from_token(Identity {
            user_id: Some("7".into()),
            ..Identity::default()
        });
        assert!(token.session_use().is_none());
        assert_eq!(token.into_identity().user_id.as_deref(), Some("7"));
    }
}
