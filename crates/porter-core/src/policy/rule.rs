//! One rule of a policy and what it decides: who may subscribe ([`Allow`]), what data rides
//! along ([`DataSpec`]), whether and for whom the result is cached ([`CacheSpec`]) and how a
//! private channel's data reaches the client ([`PrivateData`]).
//!
//! The questions the parser asks of a rule before it accepts it live here too: what in it
//! depends on the caller ([`Rule::caller_dependence`], which decides whether a result may be
//! shared), which captures an allowed caller cannot have picked ([`Allow::pinned_captures`]),
//! and whether it reads token claims ([`Rule::reads_claims`]).

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use super::publish::PublishSpec;
use super::webhook_url::WebhookUrl;
use crate::channel::ChannelKind;
use crate::pattern::{Constraints, Pattern, template_names};
use crate::routing::Route;

/// The longest time limit or expiry a rule may ask for: tasks are worthless after seconds.
pub const MAX_DURATION: Duration = Duration::from_secs(60);

/// The shortest time limit, expiry or webhook timeout: anything shorter rounds to nothing.
pub const MIN_DURATION: Duration = Duration::from_millis(1);

/// The longest a result may be cached: a day, past which a cache is a second database.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

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
        /// Captures fill only its path, percent-encoded ([`WebhookUrl::render`]).
        url: WebhookUrl,
        /// How long the call may take; past it the decision is `authorizer_unavailable`.
        /// Without it the call is bounded only by the rule's time limit (`time limit exceeded`).
        timeout: Option<Duration>,
    },
    AnyOf(Vec<Allow>),
    AllOf(Vec<Allow>),
}

impl Allow {
    /// What in the decision depends on who asks; `None` when every part of it is `anyone`.
    /// Even `any_of = [{ webhook = … }, "anyone"]` depends on the caller: the webhook runs
    /// first, with the caller's identity, and its answer carries data.
    pub fn caller_dependence(&self) -> Option<&'static str> {
        match self {
            Allow::Anyone => None,
            Allow::Authenticated => {
                Some("`allow` has `authenticated`, which asks who the caller is")
            }
            Allow::Owner => Some("`allow` has `owner`, which compares the caller's user id"),
            Allow::Member => Some("`allow` has `member`, which looks the caller up"),
            Allow::Claims(_) => Some("`allow` has `claims`, which compares the caller's token"),
            Allow::Webhook { .. } => Some(
                "`allow` has `webhook`, which is asked with the caller's identity and answers for that caller",
            ),
            Allow::AnyOf(all) | Allow::AllOf(all) => all.iter().find_map(Allow::caller_dependence),
        }
    }

    /// True when the decision is the same for every caller, so it may be cached for all.
    pub fn is_caller_independent(&self) -> bool {
        self.caller_dependence().is_none()
    }

    /// The captures an allowed caller cannot have chosen: `owner` pins `object_id` to the
    /// caller's user id and `claims` pins each compared capture to the caller's token. A part
    /// pins only if the decision cannot allow without it: `all_of` pins what any of its parts
    /// pins, `any_of` what all of its options pin.
    pub fn pinned_captures(&self) -> BTreeSet<&str> {
        match self {
            Allow::Owner => BTreeSet::from(["object_id"]),
            Allow::Claims(pairs) => pairs.iter().map(|(_, capture)| capture.as_str()).collect(),
            Allow::AllOf(all) => all.iter().flat_map(Allow::pinned_captures).collect(),
            Allow::AnyOf(options) => {
                let mut pinned = options.iter().map(Allow::pinned_captures);
                let first = pinned.next().unwrap_or_default();
                pinned.fold(first, |common, next| &common & &next)
            }
            Allow::Anyone | Allow::Authenticated | Allow::Member | Allow::Webhook { .. } => {
                BTreeSet::new()
            }
        }
    }

    /// True when no caller without a user id is ever allowed (`authenticated`, `owner` and
    /// `member` need one; a scoped token's `claims` or a webhook do not).
    pub fn requires_user(&self) -> bool {
        match self {
            Allow::Authenticated | Allow::Owner | Allow::Member => true,
            Allow::Anyone | Allow::Claims(_) | Allow::Webhook { .. } => false,
            Allow::AllOf(all) => all.iter().any(Allow::requires_user),
            Allow::AnyOf(options) => options.iter().all(Allow::requires_user),
        }
    }

    /// True when some part compares token claims.
    pub fn compares_claims(&self) -> bool {
        match self {
            Allow::Claims(_) => true,
            Allow::AnyOf(all) | Allow::AllOf(all) => all.iter().any(Allow::compares_claims),
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
    /// What in the data depends on who asks, for a rule that serves presence channels when
    /// `presence`; `None` when it is the same for every caller. The channel's retained events
    /// and the object id's online status are the channel's, not the caller's.
    pub fn caller_dependence(&self, presence: bool) -> Option<&'static str> {
        match self.user_info {
            UserInfoSource::None => {}
            UserInfoSource::Store => {
                return Some("`data.user_info = \"store\"` is the caller's user info");
            }
            UserInfoSource::Claims => {
                return Some("`data.user_info = \"claims\"` is the caller's token claims");
            }
            UserInfoSource::Webhook => {
                return Some(
                    "`data.user_info = \"webhook\"` is the webhook's answer for the caller",
                );
            }
        }
        if self
            .templates()
            .any(|(_, t)| template_names(t).contains(&"user_id"))
        {
            return Some("`{user_id}` in a `data` template is the caller's user id");
        }
        if self.user_id.is_none() && (presence || !self.info.is_empty()) {
            return Some("the member id is the caller's user id (the rule has no `data.user_id`)");
        }
        None
    }

    /// The member data templates, each with the field it is in.
    pub fn templates(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.user_id
            .iter()
            .map(|t| ("user_id", t.as_str()))
            .chain(self.info.iter().map(|(_, t)| ("info", t.as_str())))
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

impl PrivateData {
    /// Which Pusher-protocol servers accept a private channel's subscription signed this way.
    pub fn accepted_by(self) -> &'static str {
        match self {
            PrivateData::Events => "every Pusher-protocol server (Pusher, sockudo, soketi)",
            // They verify a private channel's signature over `socket_id:channel` only, so a
            // signature that also covers `channel_data` does not match and the subscription
            // is refused.
            PrivateData::Signed => {
                "Pusher's own servers only; sockudo and soketi refuse the subscription \
                 (they verify socket_id:channel without channel_data)"
            }
        }
    }
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
    /// What happens to events published to the rule's channels (`retain`, `owner`).
    pub publish: PublishSpec,
}

impl Rule {
    /// How the rule's private (not presence) channels carry data under `default`, the
    /// gateway's setting; `None` when the rule serves no private channel.
    pub fn private_data_under(&self, default: PrivateData) -> Option<PrivateData> {
        self.patterns
            .iter()
            .any(|p| p.as_str().starts_with("private-"))
            .then(|| self.private_data.unwrap_or(default))
    }

    /// True when the rule serves presence channels (some pattern starts with `presence-`).
    pub fn serves_presence(&self) -> bool {
        self.patterns
            .iter()
            .any(|p| p.as_str().starts_with("presence-"))
    }

    /// What in the rule's decision or data depends on who asks; a result may be shared with
    /// every caller (`ANNON`) only when this is `None`.
    pub fn caller_dependence(&self) -> Option<&'static str> {
        self.allow
            .caller_dependence()
            .or_else(|| self.data.caller_dependence(self.serves_presence()))
    }

    /// True when the decision or the data reads the caller's token claims.
    pub fn reads_claims(&self) -> bool {
        self.allow.compares_claims() || self.data.user_info == UserInfoSource::Claims
    }
}
