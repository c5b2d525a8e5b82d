//! The per-user index of live sessions (`Store::index_session`, `Store::live_sessions`): which
//! sessions' exchanges `data.<session-id>.published` an event for a user goes to.
//!
//! A sorted set per user, `sessions-of:{user}` (on a Redis Cluster hash-tagged by user, like
//! the user's other keys): member = session id, score = the unix ms the session can last until
//! at most (its token's end, which it never outlives). [`INDEX_SCRIPT`] adds a session, drops
//! the entries past their time and sets the key to expire with the last one, so the index
//! never outlives its sessions. A session can end earlier (its sliding TTL ran out, its token
//! was revoked): reading the index checks that each session's key still exists and removes
//! the ones that are gone, so a reader sees only live sessions.
//!
//! The index holds session ids in the clear: they name the exchanges. Sessions themselves are
//! stored under the SHA-256 of their id; this index is the one place a dump of Redis shows
//! usable ids, so read access to Redis must be kept as close as the management UI's list of
//! exchanges (which shows them too).

/// `KEYS[1]` the user's index; `ARGV` session id, until (unix ms), now (unix ms).
pub const INDEX_SCRIPT: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1
"#;

/// Unix milliseconds now, from the system clock: session ends are wall-clock times (a
/// token's `exp`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
