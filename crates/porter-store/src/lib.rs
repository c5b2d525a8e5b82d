//! Porter's state, behind one [`Store`] trait: the authorization cache, retained events,
//! member sets, user info and online status.
//!
//! [`redis::RedisStore`] is the real one; [`memory::MemoryStore`] serves `porter dev` and unit
//! tests. Key names follow the system Porter replaces (see [`Keys`]); channel-keyed data uses the
//! channel's cache name, which drops `-encrypted`, so an encrypted channel and its plain twin share
//! it.

pub mod memory;
pub mod observed;
pub mod presence;
pub mod ratelimit;
pub mod redis;
pub mod retained;
pub mod session_index;

use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

pub use presence::PresenceEvent;
pub use ratelimit::{Quota, RateCheck, RateDecision};
pub use retained::RetainStamp;

/// How long a presence-channel membership counts after its `member_added`: a safety net for
/// `member_removed` webhooks that never arrive (see [`presence`]).
pub const PRESENCE_CHANNELS_TTL: Duration = Duration::from_secs(24 * 3600);

/// The longest TTL a revocation is stored WITH. A revocation must never lapse before its token,
/// so one asked to last longer (an `exp` centuries away, or past what any clock can count) is
/// kept without expiry instead of being cut short. A thousand years outlives every real token
/// and is far inside what both stores can count (Redis adds the TTL to its clock in `i64`
/// milliseconds, the memory store to a monotonic `Instant`), so no input overflows either.
/// Redis's own largest TTL is not a constant (it shrinks as its clock advances), which is why
/// the longer case is "no expiry" rather than "the largest TTL Redis takes".
pub const MAX_REVOCATION_TTL: Duration = Duration::from_secs(1000 * 366 * 24 * 3600);

/// How long a store keeps a revocation asked to last `ttl`: `Some` of whole seconds (rounded
/// up, at least one, Redis's unit), or `None` (no expiry) past [`MAX_REVOCATION_TTL`]. Both
/// stores go through it, so they keep every revocation equally long.
pub fn revocation_expiry(ttl: Duration) -> Option<Duration> {
    if ttl > MAX_REVOCATION_TTL {
        return None;
    }
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    Some(Duration::from_secs(secs.max(1)))
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store command failed: {0}")]
    Command(String),
    #[error("store did not answer in time")]
    Timeout,
}

/// Redis key names. The default prefix keeps the names of the system Porter replaces.
///
/// On a Redis Cluster ([`Keys::for_cluster`]) the keys that one atomic call touches together
/// carry a hash tag, so they hash to one slot: a user's `online`, `presence-joined` and
/// `presence-left` keys end in `{<user>}` (one `EXISTS`, one presence script), and every
/// rate-limit bucket is under `ratelimit:{ratelimit}:` (one GCRA script charges all the buckets
/// of a request); a channel's `retained` and `retained-at` hashes end in `{<channel>}` (one
/// retain script), and a user's session index in `{<user>}`. Every other name, and every name
/// on a single Redis, is as it always was.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// Whether names carry the hash tags of a Redis Cluster.
    tagged: bool,
}

impl Default for Keys {
    fn default() -> Keys {
        Keys::new(Keys::DEFAULT_PREFIX)
    }
}

impl Keys {
    pub const DEFAULT_PREFIX: &'static str = "ext.pusher:";

    pub fn new(prefix: impl Into<String>) -> Keys {
        Keys {
            prefix: prefix.into(),
            tagged: false,
        }
    }

    /// The same names with the hash tags a Redis Cluster needs. A prefix holding `{` or `}`
    /// would move every tag, so it is refused.
    pub fn for_cluster(self) -> Result<Keys, StoreError> {
        if self.prefix.contains(['{', '}']) {
            return Err(StoreError::Unavailable(
                "a key prefix used with a Redis Cluster must not contain `{` or `}` (they make a hash tag)".to_owned(),
            ));
        }
        Ok(Keys {
            tagged: true,
            ..self
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the names carry Redis Cluster hash tags.
    pub fn is_tagged(&self) -> bool {
        self.tagged
    }

    /// `{prefix}{kind}{user}`, or on a cluster `{prefix}{kind}{{user}}`: the user's keys share
    /// one slot. A user id holding a brace cannot be its own tag (Redis would cut the tag at
    /// its first `}`, and an empty tag hashes the whole name), so its tag is the SHA-256 hex
    /// of the id, followed by the id itself to keep the name unique and readable.
    fn of_user(&self, kind: &str, user_id: &str) -> String {
        if !self.tagged {
            return format!("{}{kind}{user_id}", self.prefix);
        }
        if user_id.is_empty() || user_id.contains(['{', '}']) {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(user_id.as_bytes());
            return format!("{}{kind}{{{}}}{user_id}", self.prefix, hex::encode(digest));
        }
        format!("{}{kind}{{{user_id}}}", self.prefix)
    }

    /// Hash of cached authorizer data: field = cache scope (`ANNON` or `user:{id}`).
    pub fn channel_data(&self, channel: &str) -> String {
        format!("{}channel-data-v2:{channel}", self.prefix)
    }

    /// Hash of retained events: event name → JSON data.
    pub fn retained(&self, channel: &str) -> String {
        // Tagged on a cluster like a user's keys, for the retain script (see [`retained`]).
        self.of_user("retained:", channel)
    }

    /// Hash of the stamps of published retained events: event name →
    /// `accepted_ms:expires_ms:publication_id` (see [`retained`]).
    pub fn retained_stamps(&self, channel: &str) -> String {
        self.of_user("retained-at:", channel)
    }

    /// Sorted set of a user's live session ids, scored by the unix ms they last until at
    /// most (see [`session_index`]).
    pub fn user_sessions(&self, user_id: &str) -> String {
        self.of_user("sessions-of:", user_id)
    }

    /// The user id that owns a channel, for rules with `owner = "store"`.
    pub fn owner(&self, channel: &str) -> String {
        format!("{}owner:{channel}", self.prefix)
    }

    /// Set of user ids allowed by `member` rules.
    pub fn members(&self, channel: &str) -> String {
        format!("{}members:{channel}", self.prefix)
    }

    /// Hash of a user's presence info.
    pub fn user(&self, user_id: &str) -> String {
        format!("{}user:{user_id}", self.prefix)
    }

    /// Set of the user ids a user watches (Pusher user authentication's `watchlist`). On a
    /// cluster it carries the user's hash tag, like the online keys.
    pub fn watchlist(&self, user_id: &str) -> String {
        self.of_user("watchlist:", user_id)
    }

    /// The global presence flag of a user, with a TTL.
    pub fn online(&self, user_id: &str) -> String {
        self.of_user("online:", user_id)
    }

    /// Hash of the presence channels a user is a member of → the `time_ms` of the webhook
    /// that said so, kept by Pusher webhooks (global presence: a user is online while in any
    /// presence channel or heartbeating; see [`presence`]).
    pub fn presence_channels(&self, user_id: &str) -> String {
        self.of_user("presence-joined:", user_id)
    }

    /// Hash of the presence channels a user left → the `time_ms` of the webhook that said
    /// so: tombstones against older `member_added` webhooks applied late.
    pub fn presence_left(&self, user_id: &str) -> String {
        self.of_user("presence-left:", user_id)
    }

    /// A rate-limit bucket's GCRA state (`bucket` is e.g. `user:7`, `client:abc`, `ip:…`).
    /// On a cluster every bucket is under one hash tag: a request's buckets (its IP and client
    /// id, or its user and the user's client) are charged atomically by one script, and the
    /// buckets are shared between requests, so only one slot for all of them keeps every
    /// combination in one slot. The rate limits are thus served by one shard (see
    /// docs/scaling.md).
    pub fn rate_limit(&self, bucket: &str) -> String {
        if self.tagged {
            format!("{}ratelimit:{{ratelimit}}:{bucket}", self.prefix)
        } else {
            format!("{}ratelimit:{bucket}", self.prefix)
        }
    }

    /// Marks a message id (e.g. a webhook signature) as seen, against replays.
    pub fn seen(&self, id: &str) -> String {
        format!("{}seen:{id}", self.prefix)
    }
    /// A revoked token, by the SHA-256 hex of the whole token (never the token itself).
    pub fn revoked_token(&self, token_sha256: &str) -> String {
        format!("{}blacklist:token:{token_sha256}", self.prefix)
    }

    /// A revoked token id (`jti` claim).
    pub fn revoked_jti(&self, jti: &str) -> String {
        format!("{}blacklist:jti:{jti}", self.prefix)
    }

    /// A session (`POST /auth`), by the SHA-256 hex of its id, so that the keys of a Redis dump
    /// are not usable session ids.
    pub fn session(&self, session_id: &str) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(session_id.as_bytes());
        format!("{}session:{}", self.prefix, hex::encode(digest))
    }

    /// The key of a revocation.
    pub fn revocation(&self, revocation: Revocation<'_>) -> String {
        match revocation {
            Revocation::TokenSha256(hash) => self.revoked_token(hash),
            Revocation::Jti(jti) => self.revoked_jti(jti),
        }
    }
}

/// What a revocation names: a token by its SHA-256 hex, or a token id (`jti`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation<'a> {
    TokenSha256(&'a str),
    Jti(&'a str),
}

/// The answer of [`Store::lookup`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// One entry per cache look-up, in order.
    pub cached: Vec<Option<String>>,
    /// True when any of the revocations asked about is in force.
    pub revoked: bool,
}

/// One cache look-up: the channel's cache name and the scope field.
#[derive(Debug, Clone, Copy)]
pub struct CacheLookup<'a> {
    pub channel: &'a str,
    pub scope: &'a str,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads several cache entries in one round trip.
    async fn cached(&self, lookups: &[CacheLookup<'_>]) -> Result<Vec<Option<String>>, StoreError>;
    /// Writes a cache entry; the TTL applies to the channel's whole hash.
    async fn put_cached(
        &self,
        channel: &str,
        scope: &str,
        data: &str,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// Drops every cached entry of a channel.
    async fn drop_cached(&self, channel: &str) -> Result<(), StoreError>;

    /// Retained events of a channel, event name → JSON data, sorted by name.
    async fn retained_events(&self, channel: &str) -> Result<Vec<(String, String)>, StoreError>;
    async fn set_retained_event(
        &self,
        channel: &str,
        event: &str,
        data: &str,
    ) -> Result<(), StoreError>;
    /// Clears one retained event, or all of them when `event` is `None`.
    async fn clear_retained_events(
        &self,
        channel: &str,
        event: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Retains a published event's data for `ttl`, unless the data held for the event came
    /// from a newer publication (see [`retained`]): `false` then, and nothing changes.
    async fn retain_event(
        &self,
        channel: &str,
        event: &str,
        data: &str,
        stamp: RetainStamp<'_>,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// The user id stored as a channel's owner (`owner = "store"` rules).
    async fn channel_owner(&self, channel: &str) -> Result<Option<String>, StoreError>;
    /// Sets (or, with `None`, clears) a channel's owner.
    async fn set_channel_owner(
        &self,
        channel: &str,
        user_id: Option<&str>,
    ) -> Result<(), StoreError>;

    async fn is_member(&self, channel: &str, user_id: &str) -> Result<bool, StoreError>;
    async fn add_member(&self, channel: &str, user_id: &str) -> Result<(), StoreError>;
    async fn remove_member(&self, channel: &str, user_id: &str) -> Result<(), StoreError>;

    /// A user's info hash, sorted by field.
    async fn user_info(&self, user_id: &str) -> Result<Vec<(String, String)>, StoreError>;
    async fn set_user_info(
        &self,
        user_id: &str,
        fields: &[(String, String)],
    ) -> Result<(), StoreError>;

    /// Replaces a user's info hash with `fields` in one atomic step; no fields deletes it.
    async fn replace_user_info(
        &self,
        user_id: &str,
        fields: &[(String, String)],
    ) -> Result<(), StoreError>;

    /// The user ids a user watches, sorted.
    async fn watchlist(&self, user_id: &str) -> Result<Vec<String>, StoreError>;
    /// Replaces a user's watchlist in one atomic step; an empty list deletes it.
    async fn replace_watchlist(&self, user_id: &str, watched: &[String]) -> Result<(), StoreError>;

    /// Online = heartbeating (the `online` key is live) or in any presence channel.
    async fn is_online(&self, user_id: &str) -> Result<bool, StoreError>;
    async fn set_online(&self, user_id: &str, ttl: Duration) -> Result<(), StoreError>;
    /// Records that a user joined (Pusher `member_added`) or left (`member_removed`) a
    /// presence channel, by a webhook of `time_ms`. `false` when ignored because a newer
    /// event of that user and channel was applied before (see [`presence`]).
    async fn update_presence(
        &self,
        user_id: &str,
        channel: &str,
        event: PresenceEvent,
        time_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Checks and charges the rate-limit buckets of one request, atomically: a request
    /// refused by any bucket charges none.
    async fn rate_limit(&self, checks: &[RateCheck<'_>]) -> Result<RateDecision, StoreError>;

    /// `true` the first time an id is seen within `ttl`, `false` on a repeat (replay guard).
    async fn first_sighting(&self, id: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Whether an id was seen by [`Store::first_sighting`] within its TTL, without marking
    /// it: to check for a replay before applying, and mark only once applied.
    async fn sighted(&self, id: &str) -> Result<bool, StoreError>;
    /// Removes the mark [`Store::first_sighting`] set: what it marked did not happen after all
    /// (a publish the broker did not take), so a retry of it must be accepted.
    async fn forget_sighting(&self, id: &str) -> Result<(), StoreError>;

    /// Reads cache entries and checks revocations in ONE round trip, so that checking a
    /// caller's token costs an authorization nothing extra.
    async fn lookup(
        &self,
        cache: &[CacheLookup<'_>],
        revocations: &[Revocation<'_>],
    ) -> Result<Lookup, StoreError>;
    /// Records a revocation until `ttl` has passed (the token's remaining lifetime), or for
    /// good when `ttl` is past [`MAX_REVOCATION_TTL`]: implementations go through
    /// [`revocation_expiry`], never cutting a revocation short.
    async fn revoke(&self, revocation: Revocation<'_>, ttl: Duration) -> Result<(), StoreError>;

    /// Stores a new session's data (JSON) with its TTL.
    async fn create_session(
        &self,
        session_id: &str,
        data: &str,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// A session's data with its TTL renewed to `ttl` (sliding expiry), or `None` when it
    /// does not exist or has expired.
    async fn touch_session(
        &self,
        session_id: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError>;
    /// Shortens a session's remaining TTL to at most `ttl`: never lengthens it, never
    /// creates the session (a session may not outlive the token that opened it).
    async fn cap_session(&self, session_id: &str, ttl: Duration) -> Result<(), StoreError>;
    /// Deletes a session (its token was revoked or has expired).
    async fn forget_session(&self, session_id: &str) -> Result<(), StoreError>;
    /// Adds a session to its user's index of live sessions for at most `until` (its token's
    /// remaining life): see [`session_index`].
    async fn index_session(
        &self,
        user_id: &str,
        session_id: &str,
        until: Duration,
    ) -> Result<(), StoreError>;
    /// Removes a session from its user's index (it ended).
    async fn unindex_session(&self, user_id: &str, session_id: &str) -> Result<(), StoreError>;
    /// The user's sessions that still exist; the index entries of ended ones are removed.
    async fn live_sessions(&self, user_id: &str) -> Result<Vec<String>, StoreError>;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_tag_what_one_call_touches_and_nothing_else() {
        let single = Keys::new("p:");
        let cluster = Keys::new("p:").for_cluster().expect("a brace-free prefix");
        assert_eq!(single.online("7"), "p:online:7");
        assert_eq!(single.rate_limit("user:7"), "p:ratelimit:user:7");
        assert_eq!(cluster.online("7"), "p:online:{7}");
        assert_eq!(single.watchlist("7"), "p:watchlist:7");
        assert_eq!(cluster.watchlist("7"), "p:watchlist:{7}");
        assert_eq!(cluster.presence_channels("7"), "p:presence-joined:{7}");
        assert_eq!(cluster.presence_left("7"), "p:presence-left:{7}");
        assert_eq!(
            cluster.rate_limit("user:7"),
            "p:ratelimit:{ratelimit}:user:7"
        );
        assert_eq!(single.retained("c"), "p:retained:c");
        assert_eq!(cluster.retained("c"), "p:retained:{c}");
        assert_eq!(cluster.retained_stamps("c"), "p:retained-at:{c}");
        assert_eq!(cluster.user_sessions("7"), "p:sessions-of:{7}");
        for name in ["channel-data-v2:", "owner:", "members:", "session:"] {
            let (a, b) = match name {
                "channel-data-v2:" => (single.channel_data("c"), cluster.channel_data("c")),
                "owner:" => (single.owner("c"), cluster.owner("c")),
                "members:" => (single.members("c"), cluster.members("c")),
                _ => (single.session("s"), cluster.session("s")),
            };
            assert_eq!(a, b, "{name} keeps its name on a cluster");
        }
        // A brace in the id cannot cut the tag short: the tag is its hash, the id follows.
        let odd = cluster.online("}x{");
        assert!(
            odd.starts_with("p:online:{") && odd.ends_with("}}x{"),
            "{odd}"
        );
        assert_eq!(
            odd.split('{')
                .nth(1)
                .map(|t| t.split('}').next().unwrap_or("").len()),
            Some(64)
        );
        assert!(Keys::new("a{b}:").for_cluster().is_err());
    }

    #[test]
    fn revocation_expiries_round_up_and_never_cut_short() {
        let secs = Duration::from_secs;
        assert_eq!(revocation_expiry(Duration::ZERO), Some(secs(1)));
        assert_eq!(
            revocation_expiry(Duration::from_millis(1001)),
            Some(secs(2))
        );
        assert_eq!(revocation_expiry(secs(90)), Some(secs(90)));
        assert_eq!(
            revocation_expiry(MAX_REVOCATION_TTL),
            Some(MAX_REVOCATION_TTL)
        );
        assert_eq!(revocation_expiry(MAX_REVOCATION_TTL + secs(1)), None);
        assert_eq!(revocation_expiry(Duration::MAX), None);
    }
}
