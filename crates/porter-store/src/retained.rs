//! Retained events written by published events (`Store::retain_event`): the latest data of
//! each event name on a channel, which a redelivered or late OLDER publication never
//! overwrites, each kept for its rule's TTL.
//!
//! Two hashes per channel, both named after the channel (and on a Redis Cluster under the same
//! hash tag, so one script touches both): `retained:{channel}`, event → data, the hash every
//! subscriber reads (and the admin API writes); and `retained-at:{channel}`, event → the stamp
//! `accepted_ms:expires_ms:publication_id` of the publication that wrote it. An event is
//! written unless the stamp held for it is newer, ordered by the gateway's `accepted_ms` and,
//! for two publications of the same millisecond, by publication id, so every worker settles
//! on the same winner whatever order deliveries arrive in.
//!
//! Expiry: Redis 7.0 has no per-field TTL, so each write drops the events whose own TTL has
//! passed (from both hashes) and sets both keys to expire with the latest event that remains.
//! An event thus lasts its TTL, or until the next write after its TTL, never longer than the
//! key. Events the admin API set (no stamp) are kept until the key expires.
//!
//! [`RETAIN_SCRIPT`] does this atomically in Redis (with Redis's clock); [`apply`] is the same
//! in Rust, for the in-memory store.

use std::collections::BTreeMap;

/// Which publication wrote a retained event, to order it against others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetainStamp<'a> {
    /// Unix milliseconds when the gateway accepted the publication.
    pub accepted_ms: u64,
    /// The publication's id: orders two publications of the same millisecond.
    pub publication_id: &'a str,
}

/// `KEYS[1]` the retained hash, `KEYS[2]` the stamps hash; `ARGV` event, data, accepted_ms,
/// publication id, TTL in ms. Returns 1 when written, 0 when a newer publication's data is
/// held.
pub const RETAIN_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local accepted = tonumber(ARGV[3])
local held = redis.call('HGET', KEYS[2], ARGV[1])
if held then
  local at, exp, id = string.match(held, '^(%d+):(%d+):(.*)$')
  at = tonumber(at)
  exp = tonumber(exp)
  if at and exp and exp > now and (at > accepted or (at == accepted and id > ARGV[4])) then
    return 0
  end
end
local expires = now + tonumber(ARGV[5])
local latest = expires
local stamps = redis.call('HGETALL', KEYS[2])
for i = 1, #stamps, 2 do
  local exp = tonumber(string.match(stamps[i + 1], '^%d+:(%d+):'))
  if exp == nil or exp <= now then
    redis.call('HDEL', KEYS[1], stamps[i])
    redis.call('HDEL', KEYS[2], stamps[i])
  elseif exp > latest then
    latest = exp
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3] .. ':' .. expires .. ':' .. ARGV[4])
redis.call('PEXPIREAT', KEYS[1], latest)
redis.call('PEXPIREAT', KEYS[2], latest)
return 1
"#;

/// A stamp's parts: accepted_ms, expires_ms, publication id.
fn parse_stamp(stamp: &str) -> Option<(u64, u64, &str)> {
    let mut parts = stamp.splitn(3, ':');
    let at = parts.next()?.parse().ok()?;
    let expires = parts.next()?.parse().ok()?;
    Some((at, expires, parts.next()?))
}

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retained {
    /// False when a newer publication's data was held and kept.
    pub written: bool,
    /// When both hashes expire (ms on the caller's clock), once written.
    pub expires_ms: u64,
}

/// Retains `data` for `event` in the two hashes of a channel at `now_ms`, as
/// [`RETAIN_SCRIPT`] does.
pub fn apply(
    retained: &mut BTreeMap<String, String>,
    stamps: &mut BTreeMap<String, String>,
    event: &str,
    data: &str,
    stamp: RetainStamp<'_>,
    ttl_ms: u64,
    now_ms: u64,
) -> Retained {
    if let Some((at, expires, id)) = stamps.get(event).and_then(|s| parse_stamp(s))
        && expires > now_ms
        && (at, id) > (stamp.accepted_ms, stamp.publication_id)
    {
        return Retained {
            written: false,
            expires_ms: 0,
        };
    }
    let expires = now_ms + ttl_ms;
    let mut latest = expires;
    let stale: Vec<String> = stamps
        .iter()
        .filter_map(|(name, s)| match parse_stamp(s) {
            Some((_, exp, _)) if exp > now_ms => {
                latest = latest.max(exp);
                None
            }
            _ => Some(name.clone()),
        })
        .collect();
    for name in stale {
        retained.remove(&name);
        stamps.remove(&name);
    }
    retained.insert(event.to_owned(), data.to_owned());
    stamps.insert(
        event.to_owned(),
        format!("{}:{expires}:{}", stamp.accepted_ms, stamp.publication_id),
    );
    Retained {
        written: true,
        expires_ms: latest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(accepted_ms: u64, publication_id: &str) -> RetainStamp<'_> {
        RetainStamp {
            accepted_ms,
            publication_id,
        }
    }

    #[test]
    fn an_older_publication_never_overwrites_a_newer_one() {
        let (mut data, mut stamps) = (BTreeMap::new(), BTreeMap::new());
        let mut put = |value: &str, s| apply(&mut data, &mut stamps, "e", value, s, 1000, 50);
        assert!(put("new", stamp(20, "b")).written);
        assert!(!put("old", stamp(10, "z")).written);
        // Same millisecond: the larger id wins, whichever arrives first.
        assert!(!put("same-ms-smaller-id", stamp(20, "a")).written);
        assert!(put("same-ms-larger-id", stamp(20, "c")).written);
        // The same publication again (a redelivery) writes the same data again: harmless.
        assert!(put("same-ms-larger-id", stamp(20, "c")).written);
        assert_eq!(data["e"], "same-ms-larger-id");
    }

    #[test]
    fn expired_events_are_dropped_and_the_keys_live_as_long_as_the_latest() {
        let (mut data, mut stamps) = (BTreeMap::new(), BTreeMap::new());
        apply(&mut data, &mut stamps, "a", "1", stamp(1, "p"), 100, 0);
        let b = apply(&mut data, &mut stamps, "b", "2", stamp(2, "q"), 1000, 10);
        assert_eq!(b.expires_ms, 1010);
        // At 150 `a` (expired at 100) goes with the next write; `b` stays.
        let c = apply(&mut data, &mut stamps, "c", "3", stamp(3, "r"), 10, 150);
        assert!(c.written);
        assert_eq!(c.expires_ms, 1010, "the latest event sets the expiry");
        assert_eq!(data.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(stamps.keys().collect::<Vec<_>>(), ["b", "c"]);
        // An expired stamp does not hold back an older publication: nothing is held any more.
        let late = apply(&mut data, &mut stamps, "c", "old", stamp(1, "a"), 10, 500);
        assert!(late.written);
        // An event the admin API set (no stamp) is left alone.
        data.insert("admin".into(), "x".into());
        apply(&mut data, &mut stamps, "d", "4", stamp(4, "s"), 10, 600);
        assert_eq!(data["admin"], "x");
    }
}
