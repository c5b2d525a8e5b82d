//! A user's presence-channel memberships as Pusher webhooks report them (global presence), kept so
//! that webhooks applied out of order cannot leave a stale member behind.
//!
//! Two hashes per user, channel → the webhook's `time_ms` of the last event applied to it:
//! `presence-joined:{user}` holds the channels the user is in, `presence-left:{user}` the
//! channels they left (tombstones). An event older than what either hash says of its channel
//! is ignored, so a `member_added` delivered after a later `member_removed` (Pusher retries,
//! several gateways) does not bring the user back. Events with the same `time_ms` (one
//! webhook's events) apply in order.
//!
//! Expiry, the safety net for `member_removed` webhooks that never arrive: every update drops
//! the memberships and tombstones more than [`PRESENCE_CHANNELS_TTL`] older than the event,
//! and sets the joined hash to expire that long after its newest `member_added`, whatever
//! event did the update. A lost `member_removed` thus keeps a user online at most
//! [`PRESENCE_CHANNELS_TTL`] past their newest join, not forever.
//!
//! [`PRESENCE_SCRIPT`] does this atomically in Redis; [`apply`] is the same in Rust, for the
//! in-memory store. Times are the webhook's, so Redis's clock plays no part.

use std::collections::BTreeMap;

use crate::PRESENCE_CHANNELS_TTL;

/// What a webhook says about a user and a presence channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceEvent {
    Joined,
    Left,
}

/// How an event changed a user's presence record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceUpdate {
    /// False when the event was older than what is stored for its channel, and ignored.
    pub applied: bool,
    /// Milliseconds from the event until the joined hash expires; `None` when it is empty.
    pub joined_expires_in_ms: Option<u64>,
}

fn ttl_ms() -> u64 {
    PRESENCE_CHANNELS_TTL.as_millis() as u64
}

fn time_of(map: &BTreeMap<String, String>, channel: &str) -> Option<u64> {
    map.get(channel).and_then(|t| t.parse().ok())
}

/// Applies one event at `time_ms` to the joined and left hashes of a user.
pub fn apply(
    joined: &mut BTreeMap<String, String>,
    left: &mut BTreeMap<String, String>,
    channel: &str,
    event: PresenceEvent,
    time_ms: u64,
) -> PresenceUpdate {
    let newer_known = [time_of(joined, channel), time_of(left, channel)]
        .into_iter()
        .flatten()
        .any(|stored| stored > time_ms);
    if !newer_known {
        match event {
            PresenceEvent::Joined => {
                left.remove(channel);
                joined.insert(channel.to_owned(), time_ms.to_string());
            }
            PresenceEvent::Left => {
                joined.remove(channel);
                left.insert(channel.to_owned(), time_ms.to_string());
            }
        }
    }
    let horizon = time_ms.saturating_sub(ttl_ms());
    let fresh = |t: &String| t.parse::<u64>().is_ok_and(|t| t >= horizon);
    joined.retain(|_, t| fresh(t));
    left.retain(|_, t| fresh(t));
    let newest = joined.values().filter_map(|t| t.parse::<u64>().ok()).max();
    PresenceUpdate {
        applied: !newer_known,
        joined_expires_in_ms: newest.map(|n| (n + ttl_ms()).saturating_sub(time_ms).max(1)),
    }
}

/// The Redis version of [`apply`]. KEYS[1] = joined hash, KEYS[2] = left hash; ARGV[1] =
/// channel, ARGV[2] = `join` or `leave`, ARGV[3] = the event's `time_ms`, ARGV[4] = the TTL in
/// ms. Returns 1 when applied, 0 when ignored as older than what is stored.
pub const PRESENCE_SCRIPT: &str = r#"
local joined, left = KEYS[1], KEYS[2]
local channel, event = ARGV[1], ARGV[2]
local now, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local applied = 1
for _, key in ipairs({joined, left}) do
  local stored = tonumber(redis.call('HGET', key, channel))
  if stored and stored > now then applied = 0 end
end
if applied == 1 then
  if event == 'join' then
    redis.call('HDEL', left, channel)
    redis.call('HSET', joined, channel, ARGV[3])
  else
    redis.call('HDEL', joined, channel)
    redis.call('HSET', left, channel, ARGV[3])
  end
end
local horizon = now - ttl
local newest = nil
for _, key in ipairs({joined, left}) do
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    local t = tonumber(all[i + 1])
    if t == nil or t < horizon then
      redis.call('HDEL', key, all[i])
    elseif key == joined and (newest == nil or t > newest) then
      newest = t
    end
  end
end
if newest ~= nil then
  redis.call('PEXPIRE', joined, math.max(newest + ttl - now, 1))
end
if redis.call('EXISTS', left) == 1 then
  redis.call('PEXPIRE', left, ARGV[4])
end
return applied
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3600 * 1000;

    #[test]
    fn a_join_older_than_the_leave_is_ignored() {
        let (mut joined, mut left) = (BTreeMap::new(), BTreeMap::new());
        // member_removed at 2000 arrives before the member_added at 1000 it follows.
        let leave = apply(
            &mut joined,
            &mut left,
            "presence-a",
            PresenceEvent::Left,
            2000,
        );
        assert!(leave.applied);
        let join = apply(
            &mut joined,
            &mut left,
            "presence-a",
            PresenceEvent::Joined,
            1000,
        );
        assert!(!join.applied);
        assert!(
            joined.is_empty(),
            "the stale join left a member: {joined:?}"
        );
        assert_eq!(join.joined_expires_in_ms, None);
    }

    #[test]
    fn a_leave_older_than_the_join_is_ignored_and_equal_times_apply_in_order() {
        let (mut joined, mut left) = (BTreeMap::new(), BTreeMap::new());
        assert!(
            apply(
                &mut joined,
                &mut left,
                "presence-a",
                PresenceEvent::Joined,
                3000
            )
            .applied
        );
        assert!(
            !apply(
                &mut joined,
                &mut left,
                "presence-a",
                PresenceEvent::Left,
                2000
            )
            .applied
        );
        assert!(joined.contains_key("presence-a"));
        // One webhook's events share a time_ms: the later one in the body wins.
        assert!(
            apply(
                &mut joined,
                &mut left,
                "presence-a",
                PresenceEvent::Left,
                3000
            )
            .applied
        );
        assert!(joined.is_empty());
        assert!(
            apply(
                &mut joined,
                &mut left,
                "presence-a",
                PresenceEvent::Joined,
                3000
            )
            .applied
        );
        assert!(joined.contains_key("presence-a"));
    }

    #[test]
    fn memberships_expire_a_day_after_their_join_whatever_else_happens() {
        let (mut joined, mut left) = (BTreeMap::new(), BTreeMap::new());
        let t0 = 1_000 * HOUR;
        // presence-a's member_removed is lost.
        apply(
            &mut joined,
            &mut left,
            "presence-a",
            PresenceEvent::Joined,
            t0,
        );
        // Activity on another channel 20 h later neither drops nor refreshes presence-a...
        let update = apply(
            &mut joined,
            &mut left,
            "presence-b",
            PresenceEvent::Joined,
            t0 + 20 * HOUR,
        );
        assert_eq!(update.joined_expires_in_ms, Some(24 * HOUR));
        assert!(joined.contains_key("presence-a"));
        // ...but once presence-a is a day old, the next update drops it.
        let update = apply(
            &mut joined,
            &mut left,
            "presence-b",
            PresenceEvent::Left,
            t0 + 25 * HOUR,
        );
        assert!(joined.is_empty(), "{joined:?}");
        assert_eq!(update.joined_expires_in_ms, None);
        // A leave refreshes the expiry from the newest join still listed, not from itself.
        apply(
            &mut joined,
            &mut left,
            "presence-c",
            PresenceEvent::Joined,
            t0 + 26 * HOUR,
        );
        apply(
            &mut joined,
            &mut left,
            "presence-d",
            PresenceEvent::Joined,
            t0 + 27 * HOUR,
        );
        let update = apply(
            &mut joined,
            &mut left,
            "presence-d",
            PresenceEvent::Left,
            t0 + 30 * HOUR,
        );
        assert_eq!(update.joined_expires_in_ms, Some(20 * HOUR));
    }
}
