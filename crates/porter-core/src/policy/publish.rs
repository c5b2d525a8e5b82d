//! What a rule says about the events published to its channels (`POST /apps/{id}/events`):
//! which of them are retained, for how long, and whose sessions receive them.
//!
//! - `retain = ["*"]` (event names, `*` standing for any run of characters) keeps the latest
//!   data of each matching event name on the channel, so the next subscriber receives it with
//!   its authorization. It needs `data.events = true`: retained events nobody reads are state
//!   with no use.
//! - `retain_ttl` (whole seconds, default a day): how long a retained event lasts.
//! - `owner = "{object_id}"` (a template over the captures) names the user whose live sessions
//!   receive every event published to the channel; `owner = "store"` looks the owner up in the
//!   store (`owner:{channel}`).

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Value;

use crate::pattern::{render_template, template_names};

/// How long a retained event lasts when the rule does not say.
pub const DEFAULT_RETAIN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest a retained event may last: thirty days.
pub const MAX_RETAIN_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Pusher's longest event name, and so the longest pattern that can match one.
const MAX_EVENT_NAME: usize = 200;

/// An event-name pattern: literal text, where each `*` stands for any run of characters
/// (none included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPattern(String);

impl EventPattern {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `name` is matched: the literal parts appear in order, the first at the
    /// start and the last at the end.
    pub fn matches(&self, name: &str) -> bool {
        let mut parts = self.0.split('*');
        // `split` always yields at least one part.
        let first = parts.next().unwrap_or_default();
        let Some(mut rest) = name.strip_prefix(first) else {
            return false;
        };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else {
            // No `*`: the whole name is the literal.
            return rest.is_empty();
        };
        for part in middle {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}

/// Whose sessions receive a channel's published events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A template over the rule's captures, e.g. `{object_id}`.
    Template(String),
    /// The user id stored for the channel (`owner:{channel}` in the store).
    Store,
}

impl Owner {
    /// The owner's user id from the channel's captures; `None` for [`Owner::Store`] (the
    /// caller asks the store) or when the template renders to nothing.
    pub fn from_captures(&self, captures: &BTreeMap<String, String>) -> Option<String> {
        match self {
            Owner::Template(template) => {
                let id = render_template(template, captures);
                (!id.is_empty()).then_some(id)
            }
            Owner::Store => None,
        }
    }
}

/// A rule's settings for published events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSpec {
    /// Event names whose latest data is retained; empty: none.
    pub retain: Vec<EventPattern>,
    pub retain_ttl: Duration,
    /// Whose live sessions receive the events; `None`: nobody's.
    pub owner: Option<Owner>,
}

impl Default for PublishSpec {
    fn default() -> PublishSpec {
        PublishSpec {
            retain: Vec::new(),
            retain_ttl: DEFAULT_RETAIN_TTL,
            owner: None,
        }
    }
}

impl PublishSpec {
    /// True when an event of this name published to the rule's channels is retained.
    pub fn retains(&self, event: &str) -> bool {
        self.retain.iter().any(|p| p.matches(event))
    }
}

/// Reads `retain`, `retain_ttl` and `owner` from a rule's table. `captures` are the names
/// the owner template may use; `serves_events` says whether the rule hands retained events
/// to subscribers (`data.events = true`). Errors name the field.
pub(super) fn parse_publish(
    table: &toml::Table,
    captures: &[&str],
    serves_events: bool,
) -> Result<PublishSpec, (&'static str, String)> {
    let mut spec = PublishSpec::default();
    if let Some(value) = table.get("retain") {
        let list = value.as_array().ok_or((
            "retain",
            "must be an array of event names or patterns (`*` matches any run of characters), e.g. [\"stream.*\"]".to_owned(),
        ))?;
        for item in list {
            let pattern = item
                .as_str()
                .ok_or(("retain", "every entry must be a string".to_owned()))?;
            if pattern.is_empty() || pattern.len() > MAX_EVENT_NAME {
                return Err((
                    "retain",
                    format!("an entry must be 1 to {MAX_EVENT_NAME} characters long"),
                ));
            }
            if pattern.chars().any(char::is_control) {
                return Err((
                    "retain",
                    "an entry must not contain control characters".to_owned(),
                ));
            }
            spec.retain.push(EventPattern(pattern.to_owned()));
        }
        if !spec.retain.is_empty() && !serves_events {
            return Err((
                "retain",
                "retained events reach subscribers only with `data.events = true`; add it, or drop `retain`".to_owned(),
            ));
        }
    }
    if let Some(value) = table.get("retain_ttl") {
        if spec.retain.is_empty() {
            return Err((
                "retain_ttl",
                "is the lifetime of retained events, but `retain` names none".to_owned(),
            ));
        }
        spec.retain_ttl = parse_retain_ttl(value).map_err(|m| ("retain_ttl", m))?;
    }
    spec.owner = match table.get("owner") {
        None => None,
        Some(Value::String(s)) if s == "store" => Some(Owner::Store),
        Some(Value::String(template)) => {
            let names = template_names(template);
            if names.is_empty() {
                return Err((
                    "owner",
                    format!(
                        "`{template}` names no capture; use a template such as \"{{object_id}}\", or \"store\""
                    ),
                ));
            }
            if let Some(unknown) = names.iter().find(|n| !captures.contains(n)) {
                return Err((
                    "owner",
                    format!(
                        "`{{{unknown}}}` is not a capture of the pattern (a publisher has no user id of its own)"
                    ),
                ));
            }
            Some(Owner::Template(template.clone()))
        }
        Some(_) => {
            return Err((
                "owner",
                "must be a template over the captures (\"{object_id}\") or \"store\"".to_owned(),
            ));
        }
    };
    Ok(spec)
}

/// Whole seconds from 1 to [`MAX_RETAIN_TTL`].
fn parse_retain_ttl(value: &Value) -> Result<Duration, String> {
    match value {
        Value::Integer(i) => match u64::try_from(*i) {
            Ok(s) if (1..=MAX_RETAIN_TTL.as_secs()).contains(&s) => Ok(Duration::from_secs(s)),
            _ => Err(format!(
                "must be a whole number of seconds from 1 to {}",
                MAX_RETAIN_TTL.as_secs()
            )),
        },
        _ => Err(format!(
            "must be a whole number of seconds from 1 to {}",
            MAX_RETAIN_TTL.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(p: &str) -> EventPattern {
        EventPattern(p.to_owned())
    }

    #[test]
    fn patterns_match_literals_and_stars() {
        assert!(pattern("stream.online").matches("stream.online"));
        assert!(!pattern("stream.online").matches("stream.onlineX"));
        assert!(!pattern("stream.online").matches("xstream.online"));
        assert!(pattern("*").matches(""));
        assert!(pattern("*").matches("anything at all"));
        assert!(pattern("stream.*").matches("stream."));
        assert!(pattern("stream.*").matches("stream.viewers.updated"));
        assert!(!pattern("stream.*").matches("goal.added"));
        assert!(pattern("*.updated").matches("goal.progress.updated"));
        assert!(!pattern("*.updated").matches("goal.added"));
        assert!(pattern("goal.*.updated").matches("goal.progress.updated"));
        assert!(!pattern("goal.*.updated").matches("goal.updated"));
        // The last literal may not overlap the middle one it follows.
        assert!(!pattern("a*ab").matches("ab"));
        assert!(pattern("a*b*c").matches("abc"));
        assert!(!pattern("a*b*c").matches("acb"));
    }

    fn table(source: &str) -> toml::Table {
        source.parse().expect("test TOML")
    }

    fn parse(source: &str, serves_events: bool) -> Result<PublishSpec, (&'static str, String)> {
        parse_publish(&table(source), &["feature", "object_id"], serves_events)
    }

    #[test]
    fn a_rule_without_the_fields_retains_nothing_and_has_no_owner() {
        let spec = parse("", true).unwrap();
        assert_eq!(spec, PublishSpec::default());
        assert!(!spec.retains("stream.online"));
    }

    #[test]
    fn retain_ttl_and_owner_are_read() {
        let spec = parse(
            r#"retain = ["stream.*", "goal.added"]
               retain_ttl = 600
               owner = "{object_id}""#,
            true,
        )
        .unwrap();
        assert!(spec.retains("stream.online"));
        assert!(spec.retains("goal.added"));
        assert!(!spec.retains("goal.started"));
        assert_eq!(spec.retain_ttl, Duration::from_secs(600));
        let captures = BTreeMap::from([("object_id".to_owned(), "42".to_owned())]);
        assert_eq!(
            spec.owner.unwrap().from_captures(&captures).as_deref(),
            Some("42")
        );
        assert_eq!(
            parse(r#"owner = "store""#, true).unwrap().owner,
            Some(Owner::Store)
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_field_named() {
        for (source, field, says) in [
            (r#"retain = "stream.*""#, "retain", "must be an array"),
            (r#"retain = [1]"#, "retain", "must be a string"),
            (r#"retain = [""]"#, "retain", "1 to 200"),
            (r#"retain = ["a\u0007"]"#, "retain", "control characters"),
            ("retain_ttl = 60", "retain_ttl", "`retain` names none"),
            (
                "retain = [\"*\"]\nretain_ttl = 0",
                "retain_ttl",
                "from 1 to 2592000",
            ),
            (
                "retain = [\"*\"]\nretain_ttl = 2592001",
                "retain_ttl",
                "from 1 to",
            ),
            (
                "retain = [\"*\"]\nretain_ttl = \"1h\"",
                "retain_ttl",
                "whole number",
            ),
            (r#"owner = "alice""#, "owner", "names no capture"),
            (r#"owner = "{user_id}""#, "owner", "not a capture"),
            (r#"owner = true"#, "owner", "must be a template"),
        ] {
            let (f, message) = parse(source, true).expect_err(source);
            assert_eq!(f, field, "{source}");
            assert!(message.contains(says), "{source}: {message}");
        }
        let (f, message) = parse(r#"retain = ["*"]"#, false).unwrap_err();
        assert_eq!(f, "retain");
        assert!(message.contains("data.events = true"), "{message}");
    }
}
