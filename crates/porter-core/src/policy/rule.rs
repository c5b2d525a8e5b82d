//! One rule of a policy and what it decides: who may subscribe ([`Allow`]), what data rides
//! along ([`DataSpec`]), whether and for whom the result is cached ([`CacheSpec`]) and how a
//! private channel's data reaches the client ([`PrivateData`]).

use std::fmt;
use std::time::Duration;

use crate::channel::ChannelKind;
use crate::pattern::{Constraints, Pattern, template_names};
use crate::routing::Route;

/// The longest time limit or expiry a rule may ask for: tasks are worthless after seconds.
pub const MAX_DURATION: Duration = Duration::from_secs(60);

/// Who may subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    /// Everybody, authenticated or not.
    Anyone,
    /// Any caller with a user id.
    Authenticated,
    /// The channel's object id equals the caller's user id.
    Owner,
    /// The caller's user id is in the channel's member set.
    Member,
    /// Each named claim of the caller's token equals the named capture (claim → capture),
    /// checked in declaration order: the first mismatch is the refusal (`claim_mismatch:{claim}`).
    Claims(Vec<(String, String)>),
    /// The application decides over HTTP.
    Webhook {
        url: String,
        /// How long the call may take; past it the decision is `authorizer_unavailable`.
        /// Without it the call is bounded only by the rule's time limit (`time limit exceeded`).
        timeout: Option<Duration>,
    },
    AnyOf(Vec<Allow>),
    AllOf(Vec<Allow>),
}

impl Allow {
    /// True when the decision is the same for every caller, so it may be cached for all.
    pub fn is_caller_independent(&self) -> bool {
        match self {
            Allow::Anyone => true,
            Allow::AnyOf(options) => options.contains(&Allow::Anyone),
            Allow::AllOf(all) => all.iter().all(Allow::is_caller_independent),
            _ => false,
        }
    }

    /// Every webhook URL this decision may call.
    pub fn webhook_urls(&self) -> Vec<&str> {
        match self {
            Allow::Webhook { url, .. } => vec![url.as_str()],
            Allow::AnyOf(all) | Allow::AllOf(all) => {
                all.iter().flat_map(Allow::webhook_urls).collect()
            }
            _ => Vec::new(),
        }
    }
}

impl fmt::Display for Allow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, name: &str, all: &[Allow]| {
            write!(f, "{name}(")?;
            for (i, a) in all.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{a}")?;
            }
            f.write_str(")")
        };
        match self {
            Allow::Anyone => f.write_str("anyone"),
            Allow::Authenticated => f.write_str("authenticated"),
            Allow::Owner => f.write_str("owner"),
            Allow::Member => f.write_str("member"),
            Allow::Claims(pairs) => {
                f.write_str("claims(")?;
                for (i, (claim, capture)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{claim} = {{{capture}}}")?;
                }
                f.write_str(")")
            }
            Allow::Webhook { url, timeout } => match timeout {
                Some(t) => write!(f, "webhook({url}, timeout {} ms)", t.as_millis()),
                None => write!(f, "webhook({url})"),
            },
            Allow::AnyOf(all) => list(f, "any_of", all),
            Allow::AllOf(all) => list(f, "all_of", all),
        }
    }
}

/// Where presence user info comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserInfoSource {
    /// No user info beyond fixed fields.
    None,
    /// The user hash in the store, else the token's `name`.
    Store,
    /// The caller's token claims (without registered claims such as `exp`).
    Claims,
    /// The webhook authorizer's answer.
    Webhook,
}

/// What rides along with a successful subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSpec {
    /// Retained events of the channel (`ext.pusher:retained:{channel}`).
    pub events: bool,
    /// A `user.online` event with the online status of the object id's user.
    pub online: bool,
    /// Presence user info source.
    pub user_info: UserInfoSource,
    /// Member id template (`guest_{booking_id}`); the caller's user id when absent.
    pub user_id: Option<String>,
    /// Fixed user info fields, templates over captures.
    /// In declaration order, which is the order of the fields in the signed `user_info`.
    pub info: Vec<(String, String)>,
}

impl DataSpec {
    /// True when the data does not depend on who asks.
    pub fn is_caller_independent(&self) -> bool {
        matches!(self.user_info, UserInfoSource::None)
            && self
                .user_id
                .as_deref()
                .is_none_or(|t| !template_names(t).contains(&"user_id"))
    }

    /// True when the result carries presence member data.
    pub fn has_member(&self, kind: ChannelKind) -> bool {
        kind.is_presence() || self.user_id.is_some() || !self.info.is_empty()
    }
}

/// For whom a cached result holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// The same for every caller: the `ANNON` client of the system Porter replaces.
    Anonymous,
    /// Per user id.
    User,
}

impl CacheScope {
    /// The cache hash field for a caller: the replaced system's `ANNON`, or `user:{id}`.
    /// `None` when the result is per user and the caller has no user id.
    pub fn field(self, user_id: Option<&str>) -> Option<String> {
        match self {
            CacheScope::Anonymous => Some(crate::wire::ANONYMOUS_SCOPE.to_owned()),
            CacheScope::User => user_id.map(|u| format!("user:{u}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSpec {
    pub scope: CacheScope,
    pub ttl: Duration,
}

/// How a private channel's data reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateData {
    /// In an unsigned `events` field: what sockudo and soketi accept.
    Events,
    /// Signed into `channel_data`, as the system Porter replaces did with the Python SDK.
    Signed,
}

/// One rule of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub patterns: Vec<Pattern>,
    pub constraints: Constraints,
    pub route: Route,
    pub allow: Allow,
    pub data: DataSpec,
    pub cache: Option<CacheSpec>,
    pub private_data: Option<PrivateData>,
}
