//! Which shard of a Redis Cluster serves which slot: for sending the keys of one batch look-up
//! as one pipeline per shard (the redis crate's async cluster client routes a pipeline as a
//! unit, to the node of its first key, so a pipeline must not span shards), and for keeping one
//! [`Breaker`] per shard, so a dead master fails fast only the calls that go to it.
//!
//! The map is read with `CLUSTER SLOTS`. A shard is a set of slot ranges served by one master
//! (and its replicas); a failover changes the master's address but not the ranges, so the
//! grouping stays right and the client's own slot map (which it refreshes on `MOVED` and lost
//! connections) finds the new master. Only a resharding moves slots between shards: a
//! pipeline that then meets a `MOVED` fails, and the store re-reads the map and sends that
//! look-up key by key (correct, only slower) (see `RedisStore::lookup`).

use std::sync::Arc;

use redis::Value;
use redis::cluster_routing::get_slot;

use crate::redis::breaker::Breaker;

/// The number of hash slots of a Redis Cluster.
const SLOTS: usize = 16384;

/// Slot → shard, with one breaker per shard.
#[derive(Debug)]
pub struct ShardMap {
    /// The shard index of every slot; `None` for a slot no master serves.
    of_slot: Vec<Option<u16>>,
    breakers: Vec<Breaker>,
}

impl ShardMap {
    /// The map of a `CLUSTER SLOTS` answer: `[[start, end, [host, port, id, …], replicas…], …]`.
    pub fn from_cluster_slots(answer: &Value) -> Option<ShardMap> {
        let Value::Array(ranges) = answer else {
            return None;
        };
        let mut masters: Vec<Vec<u8>> = Vec::new();
        let mut of_slot = vec![None; SLOTS];
        for range in ranges {
            let Value::Array(fields) = range else {
                return None;
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return None;
            };
            // The master's node id names the shard; its address would do as well until a
            // failover, the id does not change with it.
            let id = match master.get(2) {
                Some(Value::BulkString(id)) => id.clone(),
                _ => match (master.first(), master.get(1)) {
                    (Some(Value::BulkString(host)), Some(Value::Int(port))) => {
                        let mut address = host.clone();
                        address.extend_from_slice(format!(":{port}").as_bytes());
                        address
                    }
                    _ => return None,
                },
            };
            let shard = match masters.iter().position(|m| *m == id) {
                Some(shard) => shard,
                None => {
                    masters.push(id);
                    masters.len() - 1
                }
            };
            let (start, end) = (usize::try_from(*start).ok()?, usize::try_from(*end).ok()?);
            if start > end || end >= SLOTS {
                return None;
            }
            for slot in &mut of_slot[start..=end] {
                *slot = Some(shard as u16);
            }
        }
        Some(ShardMap {
            of_slot,
            breakers: masters.iter().map(|_| Breaker::default()).collect(),
        })
    }

    /// A map that knows no shard: every key is grouped by its own slot.
    pub fn unknown() -> ShardMap {
        ShardMap {
            of_slot: vec![None; SLOTS],
            breakers: Vec::new(),
        }
    }

    /// The shard serving `key`'s slot, if the map knows one.
    pub fn shard_of(&self, key: &[u8]) -> Option<usize> {
        self.of_slot[usize::from(get_slot(key))].map(usize::from)
    }

    /// The breaker of a shard.
    pub fn breaker(&self, shard: usize) -> Option<&Breaker> {
        self.breakers.get(shard)
    }

    /// How many shards the map has.
    pub fn len(&self) -> usize {
        self.breakers.len()
    }

    /// Whether the map knows no shard.
    pub fn is_empty(&self) -> bool {
        self.breakers.is_empty()
    }
}

/// Groups the indices of `keys` by shard, in first-seen order of the shards; a key of an
/// unserved slot gets a group of its own slot. Each group is sent as one pipeline.
pub fn group_by_shard(map: &ShardMap, keys: &[&[u8]]) -> Vec<Vec<usize>> {
    #[derive(PartialEq)]
    enum Group {
        Shard(usize),
        Slot(u16),
    }
    let mut groups: Vec<(Group, Vec<usize>)> = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        let group = match map.shard_of(key) {
            Some(shard) => Group::Shard(shard),
            None => Group::Slot(get_slot(key)),
        };
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, members)) => members.push(index),
            None => groups.push((group, vec![index])),
        }
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

/// A shared, replaceable map: read by every call, replaced when re-read.
pub type SharedMap = Arc<ShardMap>;

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64, id: &str) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(id.as_bytes().to_vec()),
        ])
    }

    fn range(start: i64, end: i64, master: Value) -> Value {
        Value::Array(vec![Value::Int(start), Value::Int(end), master])
    }

    #[test]
    fn keys_group_by_the_shard_of_their_slot() {
        // Two ranges of one master are one shard; slots 12000.. are unserved.
        let answer = Value::Array(vec![
            range(0, 5000, node("127.0.0.1", 7001, "a")),
            range(5001, 9000, node("127.0.0.1", 7002, "b")),
            range(9001, 11999, node("127.0.0.1", 7001, "a")),
        ]);
        let map = ShardMap::from_cluster_slots(&answer).expect("a well-formed answer");
        assert_eq!(map.len(), 2);
        // Slots (CLUSTER KEYSLOT): "a" 15495, "b" 3300, "c" 7365, "d" 11298, "{d}x" 11298.
        let keys: [&[u8]; 5] = [b"b", b"c", b"d", b"a", b"{d}x"];
        assert_eq!(map.shard_of(b"b"), Some(0));
        assert_eq!(map.shard_of(b"d"), Some(0));
        assert_eq!(map.shard_of(b"c"), Some(1));
        assert_eq!(map.shard_of(b"a"), None);
        assert_eq!(
            group_by_shard(&map, &keys),
            vec![vec![0, 2, 4], vec![1], vec![3]]
        );
    }

    #[test]
    fn a_malformed_answer_is_no_map() {
        assert!(ShardMap::from_cluster_slots(&Value::Nil).is_none());
        let answer = Value::Array(vec![range(5, 3, node("h", 1, "a"))]);
        assert!(ShardMap::from_cluster_slots(&answer).is_none());
        let answer = Value::Array(vec![range(0, 16384, node("h", 1, "a"))]);
        assert!(ShardMap::from_cluster_slots(&answer).is_none());
    }
}
