//! The messages between gateway and workers.
//!
//! A task carries what an authorizer needs to decide and nothing more: never the socket id,
//! never the Pusher secret. Both messages carry a format version `v` so that gateways and
//! workers of different releases can refuse what they do not understand instead of guessing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::channel::ChannelKind;
use crate::reason::Reason;

/// The wire format version this build speaks.
pub const FORMAT_VERSION: u32 = 1;

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

/// One channel to authorize (gateway → worker).
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
        };
        let json = serde_json::to_string(&task).unwrap();
        assert!(json.contains(r#""channel_type":"presence""#));
        assert!(!json.contains("socket"));
        assert_eq!(serde_json::from_str::<Task>(&json).unwrap(), task);
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
}
