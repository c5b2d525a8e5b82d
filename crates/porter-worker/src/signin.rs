//! Decides a signin task (Pusher user authentication) with the policy's `[signin]` section:
//! who may sign in ([`crate::decision::decide`], as for a channel), then what rides along in
//! `user_data`: the user's info from the store (the `user:{id}` hash presence reads, else the
//! token's `name`) and the user's watchlist.
//!
//! Both are required when the section asks for them: without the store the sign-in is refused
//! as `store_unavailable` (a watchlist left out would silently hide every watched user), never
//! answered with less than the policy says. Nothing here is cached.

use porter_core::policy::{Signin, UserInfoSource};
use porter_core::reason::Reason;
use porter_core::wire::AuthData;
use serde_json::{Map, Value};

use crate::decision::{Facts, Verdict, decide};
use crate::registry::{event_data, refusal_for};

/// The data a signed-in user gets, or why not. `signin` is the worker's own section: a
/// policy without one refuses (`no_rule`), as a gateway and worker whose policies disagree
/// should.
pub async fn sign_in(signin: Option<&Signin>, facts: &Facts<'_>) -> Result<AuthData, Reason> {
    let task = facts.task;
    let Some(signin) = signin else {
        tracing::warn!("a signin task reached a worker whose policy has no [signin] section");
        return Err(Reason::NoRule);
    };
    let user = task.user_id.as_deref().ok_or(Reason::Unauthenticated)?;
    decide(&signin.allow, facts, &mut Verdict::default()).await?;

    let user_info = match signin.user_info {
        UserInfoSource::Store => {
            let fields = facts.store.user_info(user).await.map_err(|error| {
                tracing::warn!(%error, "store failed while reading user info for a sign-in");
                refusal_for(&error)
            })?;
            let mut info: Map<String, Value> = fields
                .into_iter()
                .map(|(field, value)| (field, event_data(value)))
                .collect();
            if info.is_empty()
                && let Some(name) = task.claims.get("name")
            {
                info.insert("name".to_owned(), name.clone());
            }
            (!info.is_empty()).then_some(Value::Object(info))
        }
        // The parser admits only `none` and `store`.
        _ => None,
    };
    let watchlist = if signin.watchlist {
        Some(facts.store.watchlist(user).await.map_err(|error| {
            tracing::warn!(%error, "store failed while reading a watchlist for a sign-in");
            refusal_for(&error)
        })?)
    } else {
        None
    };
    Ok(AuthData {
        user_id: Some(user.to_owned()),
        user_info,
        watchlist,
        ..AuthData::default()
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use porter_core::policy::Policy;
    use porter_core::wire::{SIGNIN_FORMAT_VERSION, SIGNIN_RULE, Task, TaskKind};
    use porter_store::memory::MemoryStore;
    use porter_store::observed::{Observed, Observer};
    use porter_store::{Keys, Store, StoreError};
    use serde_json::json;

    use crate::authorizer::Authorizer;
    use crate::registry::Registry;

    use super::*;

    const RULE: &str = "[[rule]]\nname = \"r\"\npattern = \"private-{x}\"\nallow = \"anyone\"\n";
    const FULL: &str =
        "[signin]\nallow = \"authenticated\"\nuser_info = \"store\"\nwatchlist = true\n";

    fn task(user: Option<&str>, claims: serde_json::Value) -> Task {
        serde_json::from_value(json!({
            "v": SIGNIN_FORMAT_VERSION, "kind": "signin", "id": "s1", "channel": "",
            "channel_type": "private", "feature": "", "object_id": null, "rule": SIGNIN_RULE,
            "client_id": null, "user_id": user, "claims": claims,
        }))
        .unwrap()
    }

    async fn decide(section: &str, store: Arc<dyn Store>, task: &Task) -> Result<AuthData, Reason> {
        let policy = Arc::new(Policy::from_toml(&format!("{RULE}{section}")).unwrap());
        Authorizer::new(policy, store, Registry::builtin())
            .authorize(task)
            .await
    }

    async fn alice_store() -> Arc<dyn Store> {
        let store = MemoryStore::new(Keys::new("signin-test:"));
        store
            .set_user_info(
                "alice",
                &[("name".into(), "Alice".into()), ("age".into(), "3".into())],
            )
            .await
            .unwrap();
        store
            .replace_watchlist("alice", &["bob".into(), "carol".into()])
            .await
            .unwrap();
        Arc::new(store)
    }

    #[tokio::test]
    async fn a_user_signs_in_with_the_stored_info_and_watchlist() {
        let data = decide(FULL, alice_store().await, &task(Some("alice"), json!({})))
            .await
            .unwrap();
        assert_eq!(data.user_id.as_deref(), Some("alice"));
        assert_eq!(data.user_info, Some(json!({"age": 3, "name": "Alice"})));
        assert_eq!(
            data.watchlist,
            Some(vec!["bob".to_owned(), "carol".to_owned()])
        );
    }

    #[tokio::test]
    async fn only_what_the_section_asks_for_rides_along() {
        let section = "[signin]\nallow = \"authenticated\"\n";
        let data = decide(
            section,
            alice_store().await,
            &task(Some("alice"), json!({})),
        )
        .await
        .unwrap();
        assert_eq!((data.user_info, data.watchlist), (None, None));
        // Nothing stored: the token's name, as for presence; an empty watchlist is still one.
        let empty: Arc<dyn Store> = Arc::new(MemoryStore::new(Keys::new("signin-empty:")));
        let data = decide(FULL, empty, &task(Some("dan"), json!({"name": "Dan"})))
            .await
            .unwrap();
        assert_eq!(data.user_info, Some(json!({"name": "Dan"})));
        assert_eq!(data.watchlist, Some(vec![]));
    }

    #[tokio::test]
    async fn refusals() {
        let store = alice_store().await;
        // No user: the gateway refuses first, but a worker does not trust that.
        assert_eq!(
            decide(FULL, store.clone(), &task(None, json!({}))).await,
            Err(Reason::Unauthenticated)
        );
        // The worker's policy has no section: gateway and worker disagree.
        assert_eq!(
            decide("", store.clone(), &task(Some("alice"), json!({}))).await,
            Err(Reason::NoRule)
        );
        // A decision that says no.
        let webhook_less = "[signin]\nallow = { all_of = [\"authenticated\", { webhook = \"http://127.0.0.1:9/no\" }] }\n";
        assert_eq!(
            decide(webhook_less, store, &task(Some("alice"), json!({}))).await,
            Err(Reason::AuthorizerUnavailable)
        );
    }

    /// Fails every store call as a Redis that does not answer.
    struct Down;

    impl Observer for Down {
        fn before(&self, _call: &'static str) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("down for the test".into()))
        }
    }

    #[tokio::test]
    async fn without_the_store_the_sign_in_is_refused_not_answered_with_less() {
        let down: Arc<dyn Store> = Arc::new(Observed::new(
            MemoryStore::new(Keys::new("signin-down:")),
            Down,
        ));
        for section in [
            FULL,
            "[signin]\nallow = \"authenticated\"\nwatchlist = true\n",
        ] {
            assert_eq!(
                decide(section, down.clone(), &task(Some("alice"), json!({}))).await,
                Err(Reason::StoreUnavailable),
                "{section}"
            );
        }
        // A section that reads nothing from the store does not need it.
        let bare = "[signin]\nallow = \"authenticated\"\n";
        assert!(
            decide(bare, down, &task(Some("alice"), json!({})))
                .await
                .is_ok()
        );
    }

    #[test]
    fn the_test_task_is_a_signin_task() {
        let task = task(Some("alice"), json!({}));
        assert_eq!(task.kind, TaskKind::Signin);
        assert!(task.is_understood());
    }
}
