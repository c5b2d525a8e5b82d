//! The `[signin]` section of a policy: who may use Pusher user authentication
//! (`POST /pusher/user-auth`, pusher-js's `signin()`) and what rides along in the signed
//! `user_data` (`{"id", "user_info"?, "watchlist"?}`).
//!
//! It is decided like a channel, by one worker task on the queue the section names, with the
//! section's time limit and expiry. A policy without the section refuses user authentication
//! at the gateway (no task is sent).
//!
//! ```toml
//! [signin]
//! allow = "authenticated"      # or a webhook, any_of / all_of of those
//! user_info = "store"          # "none" (default) or "store": the `user:{id}` hash
//! watchlist = true             # the user's watchlist set
//! queue = "auth"               # time_limit, expires: as a rule's
//! ```

use std::fmt;

use toml::Value;

use super::error::{PolicyError, field_error};
use super::fields::{parse_allow, parse_duration, webhook_timeouts};
use super::rule::{Allow, UserInfoSource};
use crate::routing::{Queue, Route};

/// The label of the section in errors and in `porter policy check`.
const LABEL: &str = "[signin]";

const FIELDS: &[&str] = &[
    "allow",
    "user_info",
    "watchlist",
    "queue",
    "time_limit",
    "expires",
];

/// The `[signin]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signin {
    /// Who may sign in. Anonymous callers never may (the gateway refuses them first), so
    /// `anyone` means any caller with a user id.
    pub allow: Allow,
    /// `None` or `Store` (the user's info hash, the one presence reads).
    pub user_info: UserInfoSource,
    /// Whether `user_data` carries the user's watchlist.
    pub watchlist: bool,
    pub route: Route,
}

/// Whether a decision may serve user authentication: there is no channel, so nothing that
/// compares captures or looks a channel up.
fn channel_free(allow: &Allow) -> Result<(), String> {
    match allow {
        Allow::Member => Err(
            "`member` checks a channel's member set, and user authentication has no channel".into(),
        ),
        Allow::AnyOf(all) | Allow::AllOf(all) => all.iter().try_for_each(channel_free),
        _ => Ok(()),
    }
}

/// Reads the `[signin]` table.
pub(super) fn parse_signin(raw: &Value) -> Result<Signin, PolicyError> {
    let err = |field: &str, message: String| field_error(LABEL, field, message);
    let table = raw
        .as_table()
        .ok_or_else(|| err("signin", "must be a table: write `[signin]`".into()))?;
    if let Some(unknown) = table.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(err(
            unknown,
            format!("unknown field; expected one of {}", FIELDS.join(", ")),
        ));
    }
    // No captures: `owner` and `claims` have nothing to compare, and say so.
    let allow = match table.get("allow") {
        None => {
            return Err(err(
                "allow",
                "is required (e.g. `allow = \"authenticated\"`)".into(),
            ));
        }
        Some(v) => parse_allow(v, &[]).map_err(|m| err("allow", m))?,
    };
    channel_free(&allow).map_err(|m| err("allow", m))?;
    let user_info = match table.get("user_info") {
        None => UserInfoSource::None,
        Some(Value::String(s)) if s == "none" => UserInfoSource::None,
        Some(Value::String(s)) if s == "store" => UserInfoSource::Store,
        Some(_) => return Err(err("user_info", "must be `none` or `store`".into())),
    };
    let watchlist = match table.get("watchlist") {
        None => false,
        Some(Value::Boolean(b)) => *b,
        Some(_) => return Err(err("watchlist", "must be true or false".into())),
    };
    let default = Route::DEFAULT;
    let queue = match table.get("queue") {
        None => default.queue,
        Some(Value::String(q)) => Queue::parse(q).ok_or_else(|| {
            err(
                "queue",
                format!("`{q}` is not a queue; use `auth` or `auth/high`"),
            )
        })?,
        Some(_) => return Err(err("queue", "must be a string".into())),
    };
    let duration = |field: &str, fallback| match table.get(field) {
        None => Ok(fallback),
        Some(v) => parse_duration(v).map_err(|m| err(field, m)),
    };
    let route = Route {
        queue,
        time_limit: duration("time_limit", default.time_limit)?,
        expires: duration("expires", default.expires)?,
    };
    if let Some(timeout) = webhook_timeouts(&allow)
        .into_iter()
        .find(|t| *t >= route.time_limit)
    {
        return Err(err(
            "allow",
            format!(
                "webhook timeout {} ms must be shorter than the section's time_limit ({} ms)",
                timeout.as_millis(),
                route.time_limit.as_millis()
            ),
        ));
    }
    Ok(Signin {
        allow,
        user_info,
        watchlist,
        route,
    })
}

impl fmt::Display for Signin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "signin:      POST /pusher/user-auth")?;
        writeln!(f, "queue:       {}", self.route.queue)?;
        writeln!(f, "time_limit:  {} ms", self.route.time_limit.as_millis())?;
        writeln!(f, "expires:     {} ms", self.route.expires.as_millis())?;
        writeln!(f, "allow:       {} (never anonymous callers)", self.allow)?;
        let mut data = vec!["id"];
        if self.user_info == UserInfoSource::Store {
            data.push("user_info from store");
        }
        if self.watchlist {
            data.push("watchlist");
        }
        write!(f, "user_data:   {}", data.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::Policy;

    const RULE: &str = "[[rule]]\nname = \"r\"\npattern = \"private-{x}\"\nallow = \"anyone\"\n";

    fn with(section: &str) -> Result<Policy, PolicyError> {
        Policy::from_toml(&format!("{RULE}\n[signin]\n{section}\n"))
    }

    #[test]
    fn a_policy_without_the_section_has_no_signin() {
        assert_eq!(Policy::from_toml(RULE).unwrap().signin(), None);
    }

    #[test]
    fn reads_the_section_with_its_defaults() {
        let policy = with("allow = \"authenticated\"").unwrap();
        let signin = policy.signin().unwrap();
        assert_eq!(signin.allow, Allow::Authenticated);
        assert_eq!(signin.user_info, UserInfoSource::None);
        assert!(!signin.watchlist);
        assert_eq!(signin.route, Route::DEFAULT);

        let policy = with(
            "allow = \"authenticated\"\nuser_info = \"store\"\nwatchlist = true\nqueue = \"auth/high\"\ntime_limit = \"500ms\"\nexpires = 3",
        )
        .unwrap();
        let signin = policy.signin().unwrap();
        assert_eq!(signin.user_info, UserInfoSource::Store);
        assert!(signin.watchlist);
        assert_eq!(signin.route.queue, Queue::AuthHigh);
        assert_eq!(signin.route.time_limit, Duration::from_millis(500));
        assert_eq!(signin.route.expires, Duration::from_secs(3));
        let shown = signin.to_string();
        assert!(shown.contains("user_info from store, watchlist"), "{shown}");
    }

    #[test]
    fn refuses_what_cannot_serve_user_authentication() {
        for (section, field) in [
            ("", "allow"),
            ("allow = \"member\"", "allow"),
            (
                "allow = { any_of = [\"authenticated\", \"member\"] }",
                "allow",
            ),
            ("allow = \"owner\"", "allow"),
            ("allow = { claims = { sub = \"id\" } }", "allow"),
            (
                "allow = \"authenticated\"\nuser_info = \"claims\"",
                "user_info",
            ),
            (
                "allow = \"authenticated\"\nwatchlist = \"yes\"",
                "watchlist",
            ),
            ("allow = \"authenticated\"\nqueue = \"fast\"", "queue"),
            ("allow = \"authenticated\"\nexpires = 0", "expires"),
            ("allow = \"authenticated\"\ncache = true", "cache"),
            (
                "allow = { webhook = { url = \"http://h/x\", timeout = 3 } }",
                "allow",
            ),
        ] {
            match with(section) {
                Err(PolicyError::Field { rule, field: f, .. }) => {
                    assert_eq!((rule.as_str(), f.as_str()), (LABEL, field), "{section}")
                }
                other => panic!("{section}: {other:?}"),
            }
        }
        assert!(matches!(
            Policy::from_toml(&format!("{RULE}\nsignin = 1\n")),
            Err(PolicyError::Field { .. })
        ));
    }
}
