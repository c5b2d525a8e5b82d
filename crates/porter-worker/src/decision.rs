//! Evaluates a rule's [`Allow`] for a task: who may subscribe.

use std::future::Future;
use std::pin::Pin;

use porter_core::channel::Channel;
use porter_core::pattern::render_template;
use porter_core::policy::Allow;
use porter_core::reason::Reason;
use porter_core::wire::Task;
use porter_store::Store;
use serde_json::Value;

use crate::webhook::{WebhookAnswer, WebhookClient};

/// The outcome of the decision, with the webhook's answer when one was asked.
#[derive(Debug, Default)]
pub struct Verdict {
    pub refusal: Option<Reason>,
    pub webhook: Option<WebhookAnswer>,
}

/// What a decision may consult.
pub struct Facts<'a> {
    pub task: &'a Task,
    pub store: &'a dyn Store,
    pub webhooks: &'a WebhookClient,
}

/// A claim's value as the string it is compared with (strings as they are, numbers and
/// booleans in their JSON form); objects and arrays never match.
fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Decides; `Ok(())` is allowed, `Err(reason)` refused.
pub fn decide<'a>(
    allow: &'a Allow,
    facts: &'a Facts<'a>,
    verdict: &'a mut Verdict,
) -> Pin<Box<dyn Future<Output = Result<(), Reason>> + Send + 'a>> {
    Box::pin(async move {
        let task = facts.task;
        match allow {
            Allow::Anyone => Ok(()),
            Allow::Authenticated => task
                .user_id
                .as_ref()
                .map(drop)
                .ok_or(Reason::Unauthenticated),
            Allow::Owner => {
                let user = task.user_id.as_deref().ok_or(Reason::Unauthenticated)?;
                let object = task
                    .captures
                    .get("object_id")
                    .map(String::as_str)
                    .or(task.object_id.as_deref());
                if object == Some(user) {
                    Ok(())
                } else {
                    Err(Reason::Forbidden)
                }
            }
            Allow::Member => {
                let user = task.user_id.as_deref().ok_or(Reason::Unauthenticated)?;
                let channel = Channel::parse(&task.channel).map_err(|e| e.reason())?;
                match facts.store.is_member(&channel.cache_name(), user).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(Reason::Forbidden),
                    Err(error) => {
                        tracing::warn!(channel = %task.channel, %error, "member check failed");
                        Err(Reason::Internal)
                    }
                }
            }
            Allow::Claims(pairs) => {
                for (claim, capture) in pairs {
                    let expected = task.captures.get(capture);
                    let actual = task.claims.get(claim).and_then(claim_text);
                    if expected.is_none() || actual.as_ref() != expected {
                        return Err(if task.claims.is_empty() {
                            Reason::Unauthenticated
                        } else {
                            Reason::ClaimMismatch(claim.clone())
                        });
                    }
                }
                Ok(())
            }
            // Captures may appear in the URL (`…/{verdict}`), so one rule can route by channel.
            Allow::Webhook { url, timeout } => match facts
                .webhooks
                .ask(&render_template(url, &task.captures), task, *timeout)
                .await
            {
                None => Err(Reason::AuthorizerUnavailable),
                Some(answer) => {
                    let allowed = answer.allow;
                    let refusal = answer.reason.clone();
                    verdict.webhook = Some(answer);
                    if allowed {
                        Ok(())
                    } else {
                        Err(refusal.map_or(Reason::Forbidden, |r| Reason::parse(&r)))
                    }
                }
            },
            Allow::AnyOf(options) => {
                let mut last = Reason::Forbidden;
                for option in options {
                    match decide(option, facts, verdict).await {
                        Ok(()) => return Ok(()),
                        Err(reason) => last = reason,
                    }
                }
                Err(last)
            }
            Allow::AllOf(all) => {
                for option in all {
                    decide(option, facts, verdict).await?;
                }
                Ok(())
            }
        }
    })
}
