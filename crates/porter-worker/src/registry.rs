//! Receivers: the pieces that gather what rides along with a subscription, registered per
//! channel type and feature, as the signal receivers of the system Porter replaces were.
//!
//! Every receiver registered for the task's type and feature runs, in registration order.
//! Private results merge their events; for presence the last receiver that sets user info
//! wins. The built-in receivers read the rule's `data` spec, so the policy file decides what
//! they contribute; an embedding application can register its own.
//!
//! When the store does not answer ([`is_unavailable`]), what a receiver reads is either
//! optional or required. Retained events and online flags are optional: the channel is
//! authorized without them (no events, no `user.online` event rather than a wrong `false`).
//! User info from the store is required (a presence member must be described as the rule says,
//! not half): the channel is refused as `store_unavailable` ([`refusal_for`]). The breaker of the
//! Redis store fails such calls at once, so neither costs the request a timeout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use porter_core::channel::{Channel, ChannelKind};
use porter_core::pattern::{render_template, template_names};
use porter_core::policy::{Rule, UserInfoSource};
use porter_core::reason::Reason;
use porter_core::wire::{AuthData, Event, Task};
use porter_store::{Store, StoreError};
use serde_json::{Map, Value};

use crate::webhook::WebhookAnswer;

/// What a receiver sees.
pub struct Context<'a> {
    pub task: &'a Task,
    pub channel: &'a Channel<'a>,
    pub rule: &'a Rule,
    pub store: &'a dyn Store,
    /// The answer of the webhook whose allow the decision rests on; never a refusal's.
    pub webhook: Option<&'a WebhookAnswer>,
    /// Set by a receiver that left optional data out because the store did not answer: such
    /// an answer is given, but not cached (the next one should carry the data).
    pub partial: AtomicBool,
}

impl Context<'_> {
    /// Whether a receiver left optional data out.
    pub fn is_partial(&self) -> bool {
        self.partial.load(Ordering::Relaxed)
    }

    fn left_out(&self) {
        self.partial.store(true, Ordering::Relaxed);
    }
}

#[async_trait]
pub trait Receiver: Send + Sync {
    /// A short name for logs.
    fn name(&self) -> &'static str;
    async fn receive(&self, cx: &Context<'_>, out: &mut AuthData) -> Result<(), StoreError>;
}

#[derive(Clone)]
struct Registration {
    kind: Option<ChannelKind>,
    feature: Option<String>,
    receiver: Arc<dyn Receiver>,
}

#[derive(Default, Clone)]
pub struct Registry {
    receivers: Arc<Vec<Registration>>,
}

impl Registry {
    /// The built-in receivers, for every channel type and feature.
    pub fn builtin() -> Registry {
        let mut registry = Registry::default();
        registry.register(None, None, Arc::new(RetainedEvents));
        registry.register(None, None, Arc::new(OnlineStatus));
        registry.register(None, None, Arc::new(WebhookData));
        registry.register(None, None, Arc::new(MemberInfo));
        registry
    }

    /// Registers a receiver for a channel type and feature (`None` = all).
    pub fn register(
        &mut self,
        kind: Option<ChannelKind>,
        feature: Option<&str>,
        receiver: Arc<dyn Receiver>,
    ) {
        // Copy-on-write: a registry shared by running workers is never changed under them.
        Arc::make_mut(&mut self.receivers).push(Registration {
            kind,
            feature: feature.map(str::to_owned),
            receiver,
        });
    }

    /// Runs every matching receiver.
    pub async fn run(&self, cx: &Context<'_>) -> Result<AuthData, StoreError> {
        let mut out = AuthData::default();
        for registration in self.receivers.iter() {
            let kind_ok = registration.kind.is_none_or(|k| k == cx.channel.kind);
            let feature_ok = registration
                .feature
                .as_deref()
                .is_none_or(|f| f == cx.channel.feature);
            if kind_ok && feature_ok {
                registration.receiver.receive(cx, &mut out).await?;
            }
        }
        Ok(out)
    }
}

/// Whether a store error says the store did not answer (rather than refused a command).
pub fn is_unavailable(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable(_) | StoreError::Timeout)
}

/// The reason a channel is refused with when gathering its data failed.
pub fn refusal_for(error: &StoreError) -> Reason {
    if is_unavailable(error) {
        Reason::StoreUnavailable
    } else {
        Reason::Internal
    }
}

/// Stored event data (and user info values) are JSON; anything else is handed over as a
/// string.
pub(crate) fn event_data(raw: String) -> Value {
    serde_json::from_str(&raw).unwrap_or(Value::String(raw))
}

/// `data.events`: the channel's retained events (`attatch_retained_events` in the system Porter
/// replaces).
struct RetainedEvents;

#[async_trait]
impl Receiver for RetainedEvents {
    fn name(&self) -> &'static str {
        "retained_events"
    }

    async fn receive(&self, cx: &Context<'_>, out: &mut AuthData) -> Result<(), StoreError> {
        if cx.rule.data.events {
            let events = match cx.store.retained_events(&cx.channel.cache_name()).await {
                Ok(events) => events,
                // Optional data: authorized without the retained events.
                Err(error) if is_unavailable(&error) => {
                    tracing::warn!(channel = %cx.task.channel, %error, "store unavailable; authorizing without the retained events");
                    cx.left_out();
                    return Ok(());
                }
                Err(error) => return Err(error),
            };
            out.events
                .extend(events.into_iter().map(|(event, data)| Event {
                    event,
                    data: event_data(data),
                }));
        }
        Ok(())
    }
}

/// `data.online`: a `user.online` event for the object id's user (`get_online_status` in the system
/// Porter replaces), fed by global presence.
struct OnlineStatus;

#[async_trait]
impl Receiver for OnlineStatus {
    fn name(&self) -> &'static str {
        "online_status"
    }

    async fn receive(&self, cx: &Context<'_>, out: &mut AuthData) -> Result<(), StoreError> {
        let object = cx
            .task
            .captures
            .get("object_id")
            .map(String::as_str)
            .or(cx.channel.object_id);
        if let (true, Some(user)) = (cx.rule.data.online, object) {
            let online = match cx.store.is_online(user).await {
                Ok(online) => online,
                // Optional data: no `user.online` event rather than a guessed one.
                Err(error) if is_unavailable(&error) => {
                    tracing::warn!(channel = %cx.task.channel, %error, "store unavailable; authorizing without the online status");
                    cx.left_out();
                    return Ok(());
                }
                Err(error) => return Err(error),
            };
            out.events.push(Event {
                event: "user.online".to_owned(),
                data: serde_json::json!({ "user_id": user, "online": online }),
            });
        }
        Ok(())
    }
}

/// Events from the answer of the webhook that allowed ([`crate::decision`] hands on no other).
struct WebhookData;

#[async_trait]
impl Receiver for WebhookData {
    fn name(&self) -> &'static str {
        "webhook_data"
    }

    async fn receive(&self, cx: &Context<'_>, out: &mut AuthData) -> Result<(), StoreError> {
        if let Some(answer) = cx.webhook {
            out.events.extend(answer.events.iter().cloned());
        }
        Ok(())
    }
}

/// Claims that describe the token rather than the user.
const REGISTERED_CLAIMS: &[&str] = &["exp", "iat", "nbf", "iss", "aud", "sub", "jti"];

/// Presence member data: the member's id and user info.
struct MemberInfo;

#[async_trait]
impl Receiver for MemberInfo {
    fn name(&self) -> &'static str {
        "member_info"
    }

    async fn receive(&self, cx: &Context<'_>, out: &mut AuthData) -> Result<(), StoreError> {
        let spec = &cx.rule.data;
        if !spec.has_member(cx.channel.kind) {
            return Ok(());
        }
        let mut values: BTreeMap<String, String> = cx.task.captures.clone();
        // `{user_id}` is the caller's id and nothing else, even if a task carried a capture
        // of that name (the parser refuses one): never a member id the caller picked.
        values.remove("user_id");
        if let Some(user) = &cx.task.user_id {
            values.insert("user_id".to_owned(), user.clone());
        }
        let user_id = match &spec.user_id {
            // Without a caller id there is no member, rather than one named `{user_id}`.
            Some(template)
                if cx.task.user_id.is_none() && template_names(template).contains(&"user_id") =>
            {
                None
            }
            Some(template) => Some(render_template(template, &values)),
            None => cx.task.user_id.clone(),
        };
        let mut info = match spec.user_info {
            UserInfoSource::None => Map::new(),
            UserInfoSource::Store => {
                let mut info = Map::new();
                if let Some(user) = &cx.task.user_id {
                    for (field, value) in cx.store.user_info(user).await? {
                        info.insert(field, event_data(value));
                    }
                }
                if info.is_empty()
                    && let Some(name) = cx.task.claims.get("name")
                {
                    info.insert("name".to_owned(), name.clone());
                }
                info
            }
            UserInfoSource::Claims => cx
                .task
                .claims
                .iter()
                .filter(|(k, _)| !REGISTERED_CLAIMS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            UserInfoSource::Webhook => match cx.webhook.and_then(|a| a.user_info.clone()) {
                Some(Value::Object(map)) => map,
                _ => Map::new(),
            },
        };
        for (field, template) in &spec.info {
            info.insert(
                field.clone(),
                Value::String(render_template(template, &values)),
            );
        }
        out.user_id = user_id;
        out.user_info = if info.is_empty() {
            None
        } else {
            Some(Value::Object(info))
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use porter_core::policy::Policy;
    use porter_store::Keys;
    use porter_store::memory::MemoryStore;
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn a_capture_named_user_id_never_becomes_the_member_id() {
        // The parser refuses such a capture; a task that carries one anyway (a gateway with
        // another policy, a forged task) must not pick the member.
        let policy = Policy::from_toml(
            "[[rule]]\nname = \"p\"\npattern = \"presence-p@{object_id}\"\nallow = \"authenticated\"\ndata = { user_info = \"none\", user_id = \"u-{user_id}\" }\n",
        )
        .unwrap();
        let store = Arc::new(MemoryStore::new(Keys::new("registry-test:")));
        let channel = Channel::parse("presence-p@1").unwrap();
        let task = |user: Option<&str>| -> Task {
            serde_json::from_value(json!({
                "id": "t", "channel": "presence-p@1", "channel_type": "presence",
                "feature": "p", "object_id": "1", "rule": "p",
                "captures": { "object_id": "1", "user_id": "admin" },
                "client_id": null, "user_id": user,
            }))
            .unwrap()
        };
        for (user, member) in [(Some("alice"), Some("u-alice")), (None, None)] {
            let task = task(user);
            let cx = Context {
                task: &task,
                channel: &channel,
                rule: &policy.rules()[0],
                store: store.as_ref(),
                webhook: None,
                partial: AtomicBool::new(false),
            };
            let data = Registry::builtin().run(&cx).await.unwrap();
            assert_eq!(data.user_id.as_deref(), member, "{user:?}");
        }
    }

    /// Fails every store call as a Redis that does not answer.
    struct Down;

    impl porter_store::observed::Observer for Down {
        fn before(&self, _call: &'static str) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("down for the test".into()))
        }
    }

    #[tokio::test]
    async fn without_the_store_optional_data_is_left_out_and_required_data_refuses() {
        let policy = Policy::from_toml(concat!(
            "[[rule]]\nname = \"opt\"\npattern = \"private-o@{object_id}\"\nallow = \"anyone\"\n",
            "data = { events = true, online = true }\n",
            "[[rule]]\nname = \"req\"\npattern = \"presence-r@{object_id}\"\nallow = \"authenticated\"\n",
            "data = { user_info = \"store\" }\n",
        ))
        .unwrap();
        let store = porter_store::observed::Observed::new(
            MemoryStore::new(Keys::new("registry-down:")),
            Down,
        );
        let task = |channel: &str, kind: &str, rule: &str| -> Task {
            serde_json::from_value(json!({
                "id": "t", "channel": channel, "channel_type": kind,
                "feature": "o", "object_id": "1", "rule": rule,
                "captures": { "object_id": "1" },
                "client_id": null, "user_id": "7",
            }))
            .unwrap()
        };
        let optional = task("private-o@1", "private", "opt");
        let channel = Channel::parse("private-o@1").unwrap();
        let cx = Context {
            task: &optional,
            channel: &channel,
            rule: &policy.rules()[0],
            store: &store,
            webhook: None,
            partial: AtomicBool::new(false),
        };
        let data = Registry::builtin()
            .run(&cx)
            .await
            .expect("optional data only");
        assert!(data.events.is_empty(), "{:?}", data.events);
        assert!(cx.is_partial(), "what was left out is not to be cached");

        let required = task("presence-r@1", "presence", "req");
        let channel = Channel::parse("presence-r@1").unwrap();
        let cx = Context {
            task: &required,
            channel: &channel,
            rule: &policy.rules()[1],
            store: &store,
            webhook: None,
            partial: AtomicBool::new(false),
        };
        let error = Registry::builtin()
            .run(&cx)
            .await
            .expect_err("user info is required");
        assert_eq!(refusal_for(&error), Reason::StoreUnavailable);
        assert_eq!(
            refusal_for(&StoreError::Command("WRONGTYPE".into())),
            Reason::Internal
        );
    }
}
