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
                    // No member list, no decision: refused as store_unavailable (retry), never
                    // allowed unchecked.
                    Err(error) => {
                        tracing::warn!(channel = %task.channel, %error, "member check failed");
                        Err(crate::registry::refusal_for(&error))
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

#[cfg(test)]
mod tests {
    //! Through the whole [`Authorizer`], against a local webhook that answers by path and
    //! records what it was asked, so the tests see what the receivers merged and what was sent.

    use std::sync::{Arc, Mutex};

    use porter_core::channel::Channel;
    use porter_core::policy::Policy;
    use porter_core::wire::{AuthData, Task};
    use porter_store::Keys;
    use porter_store::memory::MemoryStore;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use crate::authorizer::Authorizer;
    use crate::registry::Registry;
    use porter_core::reason::Reason;

    /// The paths the webhook was asked for.
    type Asked = Arc<Mutex<Vec<String>>>;

    /// A webhook on a local port: `/allow…` allows, anything else refuses, and every answer
    /// carries an event and user info, so a test sees whether they were merged.
    async fn webhook() -> (String, Asked) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let asked = Asked::default();
        let seen = asked.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    // Headers, then as much body as Content-Length says.
                    loop {
                        let n = socket.read(&mut buffer).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buffer[..n]);
                        let text = String::from_utf8_lossy(&request).into_owned();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            if request.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                    let text = String::from_utf8_lossy(&request).into_owned();
                    let path = text.split(' ').nth(1).unwrap_or_default().to_owned();
                    let allow = path.starts_with("/allow");
                    seen.lock().unwrap().push(path.clone());
                    let body = json!({
                        "allow": allow,
                        "events": [{ "event": "from-webhook", "data": { "path": path } }],
                        "user_info": { "name": "from-webhook" },
                    })
                    .to_string();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        (address, asked)
    }

    fn authorizer(policy: &str, address: &str) -> (Arc<Policy>, Authorizer) {
        let policy = Arc::new(Policy::from_toml(&policy.replace("ADDR", address)).unwrap());
        let store = Arc::new(MemoryStore::new(Keys::new("decision-test:")));
        let authorizer = Authorizer::new(policy.clone(), store, Registry::builtin());
        (policy, authorizer)
    }

    /// The task a gateway with the same policy sends for `channel` on behalf of `user`.
    fn task(policy: &Policy, channel: &str, user: Option<&str>) -> Task {
        let matched = policy.match_name(channel).unwrap();
        let parsed = Channel::parse(channel).unwrap();
        serde_json::from_value(json!({
            "id": "t1",
            "channel": channel,
            "channel_type": parsed.kind,
            "feature": parsed.feature,
            "object_id": parsed.object_id,
            "rule": matched.rule.name,
            "captures": matched.captures,
            "client_id": null,
            "user_id": user,
        }))
        .unwrap()
    }

    async fn decide(
        policy: &str,
        channel: &str,
        user: Option<&str>,
    ) -> (Result<AuthData, Reason>, Vec<String>) {
        let (address, asked) = webhook().await;
        let (policy, authorizer) = authorizer(policy, &address);
        let result = authorizer.authorize(&task(&policy, channel, user)).await;
        let asked = asked.lock().unwrap().clone();
        (result, asked)
    }

    #[tokio::test]
    async fn a_webhook_that_refused_contributes_no_data() {
        // Issue 10, finding 2: the refused answer's events and user info were merged.
        let policy = r#"
[[rule]]
name = "room"
pattern = "private-room@{object_id}"
allow = { any_of = [{ webhook = "http://ADDR/deny" }, "anyone"] }

[[rule]]
name = "lounge"
pattern = "presence-lounge@{object_id}"
allow = { any_of = [{ webhook = "http://ADDR/deny" }, "authenticated"] }
data = { user_info = "webhook" }

[[rule]]
name = "nested"
pattern = "private-nested@{object_id}"
allow = { any_of = [{ all_of = [{ webhook = "http://ADDR/allow" }, "member"] }, "anyone"] }
"#;
        let (data, asked) = decide(policy, "private-room@1", Some("alice")).await;
        assert_eq!(asked, ["/deny"], "the webhook was asked");
        assert_eq!(
            data.unwrap().events,
            [],
            "a refusing webhook's events were merged"
        );

        let (data, _) = decide(policy, "presence-lounge@1", Some("alice")).await;
        let data = data.unwrap();
        assert_eq!(data.user_id.as_deref(), Some("alice"));
        assert_eq!(
            data.user_info, None,
            "a refusing webhook's user info was used"
        );

        // The webhook allowed, but the `all_of` it is in refused: its data goes too.
        let (data, asked) = decide(policy, "private-nested@1", Some("alice")).await;
        assert_eq!(asked, ["/allow"]);
        assert_eq!(data.unwrap().events, []);
    }

    #[tokio::test]
    async fn the_webhook_that_allowed_contributes_its_data() {
        let policy = r#"
[[rule]]
name = "lounge"
pattern = "presence-lounge@{object_id}"
allow = { any_of = [{ webhook = "http://ADDR/deny" }, { webhook = "http://ADDR/allow" }] }
data = { user_info = "webhook" }
"#;
        let (data, asked) = decide(policy, "presence-lounge@1", Some("alice")).await;
        assert_eq!(asked, ["/deny", "/allow"]);
        let data = data.unwrap();
        assert_eq!(data.events.len(), 1);
        assert_eq!(data.events[0].data, json!({ "path": "/allow" }));
        assert_eq!(data.user_info, Some(json!({ "name": "from-webhook" })));
    }

    #[tokio::test]
    async fn webhook_urls_take_captures_as_encoded_path_segments() {
        // Issue 10, finding 9: `..` rewrote the path, and nothing was encoded.
        let policy = r#"
[[rule]]
name = "hook"
pattern = "private-hook-{verdict}@{object_id}"
allow = { webhook = "http://ADDR/allow/{verdict}/{object_id}?v=1" }
"#;
        let (data, asked) = decide(policy, "private-hook-a=b@x;y,z@w", Some("alice")).await;
        assert!(data.is_ok(), "{data:?}");
        assert_eq!(asked, ["/allow/a%3Db/x%3By%2Cz%40w?v=1"]);

        for channel in ["private-hook-..@1", "private-hook-.@1", "private-hook-x@.."] {
            let (refused, asked) = decide(policy, channel, Some("alice")).await;
            assert_eq!(refused, Err(Reason::InvalidChannel), "{channel}");
            assert_eq!(asked, Vec::<String>::new(), "{channel} was sent");
        }
    }
}
