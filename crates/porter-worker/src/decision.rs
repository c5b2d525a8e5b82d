//! Evaluates a rule's [`Allow`] for a task: who may subscribe.
//!
//! Only a part of the decision that allowed may contribute data: each part hands its webhook
//! answer up only with its allow, so a webhook that refused inside `any_of` (or that allowed
//! inside an `all_of` that then refused) leaves nothing behind for the receivers to merge.
//! Webhook URLs are rendered by [`porter_core::policy::WebhookUrl::render`], which
//! percent-encodes captures into the path and refuses dot segments: such a task is refused,
//! not sent.

use std::future::Future;
use std::pin::Pin;

use porter_core::channel::Channel;
use porter_core::policy::{Allow, RenderError};
use porter_core::reason::Reason;
use porter_core::wire::Task;
use porter_store::Store;
use serde_json::Value;

use crate::webhook::{WebhookAnswer, WebhookClient};

/// The outcome of the decision, with the answer of the webhook that allowed, if one did.
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

/// Decides; `Ok(())` is allowed, `Err(reason)` refused. On allow, `verdict.webhook` is the
/// answer of the webhook that allowed (the last one, under `all_of`); on refusal it is left
/// as it was.
pub fn decide<'a>(
    allow: &'a Allow,
    facts: &'a Facts<'a>,
    verdict: &'a mut Verdict,
) -> Pin<Box<dyn Future<Output = Result<(), Reason>> + Send + 'a>> {
    Box::pin(async move {
        if let Some(answer) = evaluate(allow, facts).await? {
            verdict.webhook = Some(answer);
        }
        Ok(())
    })
}

/// A part of the decision: on allow, the webhook answer it rests on.
type Evaluation<'a> =
    Pin<Box<dyn Future<Output = Result<Option<WebhookAnswer>, Reason>> + Send + 'a>>;

fn evaluate<'a>(allow: &'a Allow, facts: &'a Facts<'a>) -> Evaluation<'a> {
    Box::pin(async move {
        let task = facts.task;
        match allow {
            Allow::Anyone => Ok(None),
            Allow::Authenticated => task
                .user_id
                .as_ref()
                .map(|_| None)
                .ok_or(Reason::Unauthenticated),
            Allow::Owner => {
                let user = task.user_id.as_deref().ok_or(Reason::Unauthenticated)?;
                let object = task
                    .captures
                    .get("object_id")
                    .map(String::as_str)
                    .or(task.object_id.as_deref());
                if object == Some(user) {
                    Ok(None)
                } else {
                    Err(Reason::Forbidden)
                }
            }
            Allow::Member => {
                let user = task.user_id.as_deref().ok_or(Reason::Unauthenticated)?;
                let channel = Channel::parse(&task.channel).map_err(|e| e.reason())?;
                match facts.store.is_member(&channel.cache_name(), user).await {
                    Ok(true) => Ok(None),
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
                Ok(None)
            }
            // Captures may appear in the URL's path (`…/{verdict}`), so one rule can route by
            // channel.
            Allow::Webhook { url, timeout } => {
                let url = url.render(&task.captures).map_err(|error| {
                    tracing::warn!(channel = %task.channel, rule = %task.rule, %error, "webhook url not rendered; refused without asking");
                    match error {
                        RenderError::DotSegment(_) => Reason::InvalidChannel,
                        RenderError::Missing(_) => Reason::Internal,
                    }
                })?;
                match facts.webhooks.ask(&url, task, *timeout).await {
                    None => Err(Reason::AuthorizerUnavailable),
                    Some(answer) if answer.allow => Ok(Some(answer)),
                    Some(answer) => Err(answer
                        .reason
                        .map_or(Reason::Forbidden, |r| Reason::parse(&r))),
                }
            }
            Allow::AnyOf(options) => {
                let mut last = Reason::Forbidden;
                for option in options {
                    match evaluate(option, facts).await {
                        allowed @ Ok(_) => return allowed,
                        Err(reason) => last = reason,
                    }
                }
                Err(last)
            }
            Allow::AllOf(all) => {
                let mut answer = None;
                for part in all {
                    if let Some(newer) = evaluate(part, facts).await? {
                        answer = Some(newer);
                    }
                }
                Ok(answer)
            }
        }
    })
}
