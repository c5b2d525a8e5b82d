//! Pusher user authentication (`POST /pusher/user-auth`): one signin task on the queue the
//! policy's `[signin]` section names, decided by a worker like a channel, and the worker's
//! data signed for the caller's socket as `socket_id::user::user_data`.
//!
//! Refused here, before any task: a policy without `[signin]` (`signin_not_configured`) and a
//! caller without a user id (`unauthenticated`); every refusal, here or by the worker, is
//! audited once, under the rule `[signin]`. Revocations are checked by
//! `Caller::ensure_not_revoked` (there is no cache look-up to carry them), which also settles
//! the caller's session. Requests are counted by the `track` middleware (endpoint
//! `user-auth`), not as channels.
//!
//! Architecture Invariant: the string that is signed is the string that is returned:
//! `user_data` is serialized once, here ([`user_data`]), signed, and sent as is.

use actix_web::http::StatusCode;
use porter_core::channel::ChannelKind;
use porter_core::policy::Signin;
use porter_core::reason::Reason;
use porter_core::signing::UserAuth;
use porter_core::wire::{AuthData, SIGNIN_FORMAT_VERSION, SIGNIN_RULE, Task, TaskKind};
use porter_identity::{Caller, Identity};
use serde_json::{Map, Value};

use crate::audit::{self, Who};
use crate::authorize::Authorizer;
use crate::authorize::outcome::{Verdict, status_of};
use crate::error::ApiError;

/// The signin task of a caller: no channel (its fields are empty and not read), the caller's
/// identity, the section as its rule.
pub fn signin_task(identity: &Identity) -> Task {
    Task {
        v: SIGNIN_FORMAT_VERSION,
        id: uuid::Uuid::new_v4().to_string(),
        channel: String::new(),
        channel_type: ChannelKind::Private,
        feature: String::new(),
        object_id: None,
        rule: SIGNIN_RULE.to_owned(),
        captures: Default::default(),
        client_id: identity.client_id.clone(),
        user_id: identity.user_id.clone(),
        claims: identity.claims.clone(),
        dry_run: false,
        coalesce: true,
        kind: TaskKind::Signin,
    }
}

/// The `user_data` of a signed-in user: `{"id", "user_info"?, "watchlist"?}`, in that order,
/// serialized once. The id is the caller's own, whatever the worker answered.
pub fn user_data(user_id: &str, data: AuthData) -> String {
    let mut object = Map::new();
    object.insert("id".to_owned(), Value::String(user_id.to_owned()));
    if let Some(info) = data.user_info {
        object.insert("user_info".to_owned(), info);
    }
    if let Some(watchlist) = data.watchlist {
        object.insert(
            "watchlist".to_owned(),
            Value::Array(watchlist.into_iter().map(Value::String).collect()),
        );
    }
    Value::Object(object).to_string()
}

/// A refusal of the whole request, with the status of its reason's class (403 for a no).
fn refusal(reason: &Reason) -> ApiError {
    let (status, code) = status_of(reason);
    ApiError::new(status, code, reason.to_string())
}

impl Authorizer<'_> {
    /// Signs the caller in for `socket_id`, or says why not.
    pub async fn sign_in(&self, caller: &Caller, socket_id: &str) -> Result<UserAuth, ApiError> {
        let identity = caller.identity();
        let who = Who::of(identity, None);
        let refused = |why: &str, error: ApiError| {
            audit::refused(&who, None, SIGNIN_RULE, why);
            error
        };
        let Some(signin) = self.policy.signin() else {
            return Err(refused(
                "signin_not_configured",
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "signin_not_configured",
                    "user authentication is off: the policy has no [signin] section",
                ),
            ));
        };
        let Some(user) = identity.user_id.as_deref() else {
            return Err(refused(
                Reason::Unauthenticated.as_str().as_ref(),
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "unauthenticated",
                    "user authentication needs a token or a session",
                ),
            ));
        };
        caller.ensure_not_revoked(self.store).await?;
        match self.decide_signin(signin, identity).await? {
            Verdict::Allowed(data) => Ok(self.signer.sign_user(socket_id, &user_data(user, data))),
            Verdict::Refused(reason) => Err(refused(&reason.as_str(), refusal(&reason))),
            Verdict::TimedOut => Err(refused(
                &Reason::Timeout.as_str(),
                refusal(&Reason::Timeout),
            )),
        }
    }

    /// One signin task through a worker, on the section's route.
    async fn decide_signin(
        &self,
        signin: &Signin,
        identity: &Identity,
    ) -> Result<Verdict, ApiError> {
        let task = signin_task(identity);
        let mut verdicts = self.fan_out().run_routed(&[(signin.route, &task)]).await?;
        Ok(verdicts.pop().unwrap_or(Verdict::TimedOut))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_has_the_id_first_and_only_what_the_worker_gave() {
        let bare = user_data("7", AuthData::default());
        assert_eq!(bare, r#"{"id":"7"}"#);
        let full = user_data(
            "7",
            AuthData {
                user_id: Some("someone-else".into()),
                user_info: Some(serde_json::json!({"name": "Ann", "age": 3})),
                watchlist: Some(vec!["8".into(), "9".into()]),
                ..AuthData::default()
            },
        );
        assert_eq!(
            full,
            r#"{"id":"7","user_info":{"name":"Ann","age":3},"watchlist":["8","9"]}"#
        );
    }

    #[test]
    fn a_signin_task_is_understood_and_carries_no_channel() {
        let identity = Identity {
            user_id: Some("7".into()),
            ..Identity::default()
        };
        let task = signin_task(&identity);
        assert!(task.is_understood());
        assert_eq!(task.kind, TaskKind::Signin);
        assert!(task.channel.is_empty());
        assert_eq!(task.user_id.as_deref(), Some("7"));
    }
}
