//! Receivers: the pieces that gather what rides along with a subscription, registered per
//! channel type and feature, as the signal receivers of the system Porter replaces were.
//!
//! Every receiver registered for the task's type and feature runs, in registration order.
//! Private results merge their events; for presence the last receiver that sets user info
//! wins. The built-in receivers read the rule's `data` spec, so the policy file decides what
//! they contribute; an embedding application can register its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use porter_core::channel::{Channel, ChannelKind};
use porter_core::pattern::render_template;
use porter_core::policy::{Rule, UserInfoSource};
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
    pub webhook: Option<&'a WebhookAnswer>,
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

/// Stored event data is JSON; anything else is handed over as a string.
fn event_data(raw: String) -> Value {
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
            let events = cx.store.retained_events(&cx.channel.cache_name()).await?;
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
            let online = cx.store.is_online(user).await?;
            out.events.push(Event {
                event: "user.online".to_owned(),
                data: serde_json::json!({ "user_id": user, "online": online }),
            });
        }
        Ok(())
    }
}

/// Events from the webhook authorizer's answer.
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
        if let Some(user) = &cx.task.user_id {
            values.insert("user_id".to_owned(), user.clone());
        }
        let user_id = match &spec.user_id {
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
