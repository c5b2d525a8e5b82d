//! The messages between gateway and workers.
//!
//! A task carries what an authorizer needs to decide and nothing more: never the socket id,
//! never the Pusher secret. Both messages carry a format version `v` so that gateways and
//! workers of different releases can refuse what they do not understand instead of guessing.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::channel::ChannelKind;
use crate::reason::Reason;

/// The wire format version this build speaks.
pub const FORMAT_VERSION: u32 = 1;

/// The format version of a [`TaskKind::Signin`] task. A channel task stays at
/// [`FORMAT_VERSION`], so workers of every release decide it; a signin task is a version
/// newer, so a worker from before user authentication refuses it as an unknown format
/// (`internal_error`) instead of reading it as a channel subscription (its `kind` would be
/// an unknown field, ignored).
pub const SIGNIN_FORMAT_VERSION: u32 = 2;

/// The AMQP `type` of a reply message that carries a [`ReplyBatch`]; a message without it is
/// one [`Reply`].
pub const REPLY_BATCH_TYPE: &str = "porter.reply-batch";

/// AMQP header: unix milliseconds after which a worker must not run the task.
pub const HEADER_DEADLINE_MS: &str = "x-deadline-ms";
/// AMQP header: how long the authorizer may run, in milliseconds.
pub const HEADER_TIME_LIMIT_MS: &str = "x-time-limit-ms";

/// The anonymous client id under which the system Porter replaces caches results shared by
/// every caller.
pub const ANONYMOUS_SCOPE: &str = "ANNON";

fn format_version() -> u32 {
    FORMAT_VERSION
}

/// What a task asks a worker to decide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// A channel subscription: what every task was before there were kinds (the default,
    /// and never written, so a channel task reads as it always did).
    #[default]
    Channel,
    /// Pusher user authentication (`POST /pusher/user-auth`), decided by the policy's
    /// `[signin]` section. The channel fields are empty (`channel`, `feature`) and not read;
    /// `rule` is [`SIGNIN_RULE`].
    Signin,
}

impl TaskKind {
    pub fn is_channel(&self) -> bool {
        *self == TaskKind::Channel
    }

    /// The format version a task of this kind is written in.
    pub fn format_version(self) -> u32 {
        match self {
            TaskKind::Channel => FORMAT_VERSION,
            TaskKind::Signin => SIGNIN_FORMAT_VERSION,
        }
    }
}

/// The `rule` of a signin task (and its label in logs and metrics): the policy section.
pub const SIGNIN_RULE: &str = "[signin]";

/// One channel to authorize, or one user to sign in (gateway → worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    #[serde(default = "format_version")]
    pub v: u32,
    /// Task id; also the AMQP correlation and message id.
    pub id: String,
    pub channel: String,
    pub channel_type: ChannelKind,
    pub feature: String,
    pub object_id: Option<String>,
    /// The policy rule the gateway matched; the worker checks it against its own policy.
    pub rule: String,
    /// Named captures of the rule's pattern (and route parameters).
    #[serde(default)]
    pub captures: BTreeMap<String, String>,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    /// Verified token claims of the caller.
    #[serde(default)]
    pub claims: serde_json::Map<String, Value>,
    /// A what-if decision (the admin API's): decided as usual, but nothing is cached, so
    /// claims the real caller does not have grant nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// The gateway reads coalesced replies ([`ReplyBatch`]): a worker may answer this task in
    /// one message together with other tasks for the same reply queue. Absent (a gateway from
    /// before coalescing) it is false, and the task gets a reply message of its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub coalesce: bool,
    /// What to decide; absent (a channel) in every task of format 1.
    #[serde(default, skip_serializing_if = "TaskKind::is_channel")]
    pub kind: TaskKind,
}

impl Task {
    /// Whether this build understands the task: its version is the one its kind is written
    /// in. A task of a newer format, or a kind that claims an older one, is refused.
    pub fn is_understood(&self) -> bool {
        self.v == self.kind.format_version()
    }
}

/// A retained event handed to a subscriber of a private channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event: String,
    pub data: Value,
}

/// What an authorizer adds to a successful subscription.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthData {
    /// Retained events of a private channel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    /// The presence member's id (presence channels, and private ones that sign member data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_info: Option<Value>,
    /// The user ids of a signed-in user's watchlist (user authentication only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchlist: Option<Vec<String>>,
}

/// The outcome of one task (worker → gateway).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default = "format_version")]
    pub v: u32,
    pub id: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<AuthData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

impl Reply {
    pub fn allowed(id: impl Into<String>, data: AuthData) -> Reply {
        Reply {
            v: FORMAT_VERSION,
            id: id.into(),
            ok: true,
            data: Some(data),
            reason: None,
        }
    }

    pub fn refused(id: impl Into<String>, reason: Reason) -> Reply {
        Reply {
            v: FORMAT_VERSION,
            id: id.into(),
            ok: false,
            data: None,
            reason: Some(reason),
        }
    }

    /// Turns the reply into the authorizer's verdict.
    pub fn into_result(self) -> Result<AuthData, Reason> {
        if self.ok {
            Ok(self.data.unwrap_or_default())
        } else {
            Err(self.reason.unwrap_or(Reason::Forbidden))
        }
    }
}

/// Several replies for one reply queue in one message (worker → gateway, AMQP `type`
/// [`REPLY_BATCH_TYPE`]), sent only for tasks whose gateway set [`Task::coalesce`].
///
/// Each entry is exactly what a reply message of its own would carry: the correlation id of
/// the task it answers, the value of its signature header, and its body as the bytes that were
/// signed ([`RawValue`] keeps them as sent). So each entry is verified on its own, for its own
/// task, and the envelope itself needs no signature: it decides nothing.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReplyBatch<'a> {
    #[serde(default = "format_version")]
    pub v: u32,
    #[serde(borrow)]
    pub replies: Vec<BatchedReply<'a>>,
}

/// One reply inside a [`ReplyBatch`].
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchedReply<'a> {
    /// The correlation id of the task it answers (a single reply's AMQP `correlation_id`).
    #[serde(
        borrow,
        rename = "cid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub correlation_id: Option<Cow<'a, str>>,
    /// What a single reply's `x-porter-signature` header would hold; absent when unsigned.
    #[serde(
        borrow,
        rename = "sig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub signature: Option<Cow<'a, str>>,
    /// The [`Reply`], byte for byte as signed.
    #[serde(borrow)]
    pub body: &'a RawValue,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_round_trips_and_has_no_socket_id() {
        let task = Task {
            v: FORMAT_VERSION,
            id: "t1".into(),
            channel: "presence-stream@42".into(),
            channel_type: ChannelKind::Presence,
            feature: "stream".into(),
            object_id: Some("42".into()),
            rule: "presence".into(),
            captures: BTreeMap::from([("feature".into(), "stream".into())]),
            client_id: Some("c".into()),
            user_id: Some("7".into()),
            claims: serde_json::Map::new(),
            dry_run: false,
            coalesce: false,
            kind: TaskKind::Channel,
        };
        let json = serde_json::to_string(&task).unwrap();
        assert!(json.contains(r#""channel_type":"presence""#));
        assert!(!json.contains("socket"));
        assert_eq!(serde_json::from_str::<Task>(&json).unwrap(), task);
        // A channel task is written exactly as before kinds existed.
        assert!(!json.contains("kind"), "{json}");
        assert!(task.is_understood());
    }

    #[test]
    fn a_signin_task_is_a_newer_format_that_old_workers_refuse() {
        let channel = r#"{"v": 1, "id": "t", "channel": "private-a@1", "channel_type": "private",
            "feature": "a", "object_id": "1", "rule": "r", "client_id": null, "user_id": "7"}"#;
        let old: Task = serde_json::from_str(channel).unwrap();
        assert_eq!(old.kind, TaskKind::Channel, "no kind reads as a channel");
        assert!(old.is_understood());

        let mut signin = old.clone();
        signin.kind = TaskKind::Signin;
        signin.v = TaskKind::Signin.format_version();
        let json = serde_json::to_value(&signin).unwrap();
        assert_eq!(json["kind"], "signin");
        assert_eq!(json["v"], SIGNIN_FORMAT_VERSION);
        assert!(signin.is_understood());
        // What a worker from before kinds checks: only its own version.
        assert_ne!(signin.v, 1, "an old worker would read it as a channel");
        // A signin that claims format 1 is not understood either.
        signin.v = FORMAT_VERSION;
        assert!(!signin.is_understood());
        // A kind this build does not know is a malformed task, not a channel.
        let unknown = channel.replace(r#""v": 1"#, r#""v": 1, "kind": "teleport""#);
        assert!(serde_json::from_str::<Task>(&unknown).is_err());
    }

    #[test]
    fn reply_shapes_match_the_design() {
        let ok = Reply::allowed(
            "a",
            AuthData {
                events: vec![Event {
                    event: "e".into(),
                    data: serde_json::json!({"x": 1}),
                }],
                ..AuthData::default()
            },
        );
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            serde_json::json!({"v": 1, "id": "a", "ok": true, "data": {"events": [{"event": "e", "data": {"x": 1}}]}})
        );
        let no = Reply::refused("b", Reason::Expired);
        assert_eq!(
            serde_json::to_value(&no).unwrap(),
            serde_json::json!({"v": 1, "id": "b", "ok": false, "reason": "expired"})
        );
        assert_eq!(no.into_result(), Err(Reason::Expired));
    }

    /// A task as a gateway from before coalescing writes it, literally.
    const OLD_TASK: &str = r#"{"v":1,"id":"t1","channel":"private-a@1","channel_type":"private",
        "feature":"a","object_id":"1","rule":"r","captures":{},"client_id":null,"user_id":"7",
        "claims":{}}"#;

    #[test]
    fn a_task_from_an_old_gateway_asks_for_single_replies() {
        let task: Task = serde_json::from_str(OLD_TASK).unwrap();
        assert!(!task.coalesce);
        // And such a task is written as before: no new field.
        assert!(!serde_json::to_string(&task).unwrap().contains("coalesce"));
    }

    #[test]
    fn an_old_worker_reads_a_coalescing_task_as_before() {
        /// The task of a worker from before coalescing: the same fields, without `coalesce`.
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct OldWorkerTask {
            v: u32,
            id: String,
            channel: String,
            rule: String,
            user_id: Option<String>,
        }
        let mut task: Task = serde_json::from_str(OLD_TASK).unwrap();
        task.coalesce = true;
        let json = serde_json::to_string(&task).unwrap();
        assert!(json.contains(r#""coalesce":true"#), "{json}");
        let old: OldWorkerTask = serde_json::from_str(&json).unwrap();
        assert_eq!((old.v, old.id.as_str()), (FORMAT_VERSION, "t1"));
    }

    #[test]
    fn a_reply_batch_keeps_each_body_byte_for_byte() {
        // Spacing and key order as a worker signed them: the bytes must come back unchanged.
        let text = r#"{"v":1,"replies":[{"cid":"a","sig":"k:1","body":{"v":1, "id":"a","ok":true}},{"cid":"b","body":{"id":"b","ok":false,"reason":"expired"}}]}"#;
        let batch: ReplyBatch<'_> = serde_json::from_str(text).unwrap();
        assert_eq!(batch.replies.len(), 2);
        let first = &batch.replies[0];
        assert_eq!(first.correlation_id.as_deref(), Some("a"));
        assert_eq!(first.signature.as_deref(), Some("k:1"));
        assert_eq!(first.body.get(), r#"{"v":1, "id":"a","ok":true}"#);
        assert_eq!(batch.replies[1].signature, None);
        let reply: Reply = serde_json::from_str(batch.replies[1].body.get()).unwrap();
        assert_eq!(reply.into_result(), Err(Reason::Expired));
        assert_eq!(serde_json::to_string(&batch).unwrap(), text);
    }
}
