//! The Redis store against the real Redis (127.0.0.1:6379) and against the Redis Cluster of
//! `scripts/cluster.sh up redis` (127.0.0.1:7001-7006, or `PORTER_TEST_REDIS_CLUSTER`): the same
//! test bodies on both. Global presence, the GCRA script, the replay guard, revocation
//! lifetimes, sessions and the batch look-up across slots. Each test uses its own key prefix.

use std::time::Duration;

use porter_store::redis::RedisStore;
use porter_store::{
    CacheLookup, Keys, MAX_REVOCATION_TTL, PresenceEvent, Quota, RateCheck, RateDecision,
    Revocation, Store,
};

const REDIS_URL: &str = "redis://127.0.0.1:6379/";
const CLUSTER_URL: &str = "redis+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

use PresenceEvent::{Joined, Left};

/// Which Redis a test body runs against.
#[derive(Clone, Copy, Debug)]
enum Target {
    Single,
    Cluster,
}

fn cluster_url() -> String {
    std::env::var("PORTER_TEST_REDIS_CLUSTER").unwrap_or_else(|_| CLUSTER_URL.to_owned())
}

/// Each body becomes two tests, `single` and `cluster`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod single {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Target::Single).await
            })*
        }
        mod cluster {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Target::Cluster).await
            })*
        }
    };
}

on_both!(
    online_means_heartbeating_or_in_any_presence_channel,
    the_gcra_script_allows_the_burst_refuses_atomically_and_refills,
    a_sighting_is_first_only_once,
    presence_webhooks_applied_out_of_order_leave_no_stale_member,
    sighted_reads_without_marking,
    revocations_keep_their_whole_ttl_or_no_expiry_past_any_ttl,
    a_batch_look_up_reads_every_slot_and_sees_revocations,
    sessions_slide_and_are_only_ever_shortened,
    user_info_and_watchlists_are_replaced_whole,
);

/// A plain connection to one node of the cluster, by port.
async fn node(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The masters of the cluster as (node id, port), from `CLUSTER NODES`.
async fn masters() -> Vec<(String, u16)> {
    let mut any = node(7001).await;
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut any)
        .await
        .unwrap();
    nodes
        .lines()
        .filter(|line| line.contains("master") && !line.contains("fail"))
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let id = fields.next()?.to_owned();
            let port = fields.next()?.split(['@', ':']).nth(1)?.parse().ok()?;
            Some((id, port))
        })
        .collect()
}

/// Moves `slot` with its keys from one master to another, as `redis-cli --cluster reshard`
/// does: IMPORTING / MIGRATING, MIGRATE the keys, then the new owner on every master.
async fn move_slot(slot: u16, from: &(String, u16), to: &(String, u16)) {
    let (mut source, mut target) = (node(from.1).await, node(to.1).await);
    let set = |state: &str, id: &str| {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SETSLOT").arg(slot).arg(state).arg(id);
        cmd
    };
    let _: () = set("IMPORTING", &from.0)
        .query_async(&mut target)
        .await
        .unwrap();
    let _: () = set("MIGRATING", &to.0)
        .query_async(&mut source)
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(1000)
        .query_async(&mut source)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(to.1)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query_async(&mut source)
            .await
            .unwrap();
    }
    for (_, port) in masters().await {
        let mut master = node(port).await;
        let _: () = set("NODE", &to.0).query_async(&mut master).await.unwrap();
    }
}

/// A slot moved between shards after the store read its shard map (a resharding): the batch
/// look-up meets `MOVED`, re-reads the map and still answers every entry right.
#[tokio::test]
async fn a_look_up_after_a_resharding_still_reads_every_entry() {
    let store = store_on(Target::Cluster, "reshard");
    // The moved slot holds only this test's keys: they share a hash tag of their own.
    let tag = format!("reshard-{}", std::process::id());
    let tagged: Vec<String> = (0..3).map(|i| format!("private-{{{tag}}}-{i}")).collect();
    let others: Vec<String> = (0..12).map(|i| format!("private-reshard-{i}")).collect();
    let channels: Vec<&String> = tagged.iter().chain(&others).collect();
    for channel in &channels {
        store
            .put_cached(channel, "ANNON", channel, Duration::from_secs(60))
            .await
            .unwrap();
    }
    let lookups: Vec<CacheLookup<'_>> = channels
        .iter()
        .map(|channel| CacheLookup {
            channel,
            scope: "ANNON",
        })
        .collect();
    let expected: Vec<Option<String>> = channels.iter().map(|c| Some((*c).clone())).collect();
    assert_eq!(store.cached(&lookups).await.unwrap(), expected);

    let slot = redis::cluster_routing::get_slot(tag.as_bytes());
    let masters = masters().await;
    let owner = {
        let mut any = node(7001).await;
        let slots: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut any)
            .await
            .unwrap();
        let redis::Value::Array(ranges) = slots else {
            panic!("CLUSTER SLOTS: {slots:?}");
        };
        ranges
            .iter()
            .find_map(|range| {
                let redis::Value::Array(fields) = range else {
                    return None;
                };
                let (redis::Value::Int(start), redis::Value::Int(end)) = (&fields[0], &fields[1])
                else {
                    return None;
                };
                let redis::Value::Array(master) = &fields[2] else {
                    return None;
                };
                let redis::Value::Int(port) = master[1] else {
                    return None;
                };
                (*start..=*end)
                    .contains(&i64::from(slot))
                    .then_some(port as u16)
            })
            .expect("the slot has an owner")
    };
    let from = masters
        .iter()
        .find(|m| m.1 == owner)
        .expect("owner")
        .clone();
    let to = masters
        .iter()
        .find(|m| m.1 != owner)
        .expect("another master")
        .clone();
    move_slot(slot, &from, &to).await;
    let answer = store.cached(&lookups).await;
    let again = store.cached(&lookups).await;
    // Put the slot back before asserting, so the cluster is as it was whatever happens.
    move_slot(slot, &to, &from).await;
    assert_eq!(answer.unwrap(), expected, "the look-up that met MOVED");
    assert_eq!(again.unwrap(), expected, "the look-up over the re-read map");
    assert_eq!(
        store.cached(&lookups).await.unwrap(),
        expected,
        "after the slot moved back"
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

fn store_on(target: Target, test: &str) -> RedisStore {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let prefix = format!("porter-test.store.{test}.{}.{nanos}.", std::process::id());
    let url = match target {
        Target::Single => REDIS_URL.to_owned(),
        Target::Cluster => {
            let first = cluster_url()
                .trim_start_matches("redis+cluster://")
                .split(',')
                .next()
                .unwrap_or_default()
                .to_owned();
            assert!(
                std::net::TcpStream::connect(&first).is_ok(),
                "no Redis Cluster node answers on {first}: start one with `scripts/cluster.sh up redis`"
            );
            cluster_url()
        }
    };
    RedisStore::new(&url, Keys::new(prefix), 4).expect("a valid URL")
}

/// A plain connection to the same Redis, to look at what the store wrote.
enum Raw {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

async fn raw(target: Target) -> Raw {
    match target {
        Target::Single => Raw::Single(
            redis::Client::open(REDIS_URL)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        ),
        Target::Cluster => {
            let nodes: Vec<String> = cluster_url()
                .trim_start_matches("redis+cluster://")
                .split(',')
                .map(|n| format!("redis://{n}/"))
                .collect();
            Raw::Cluster(
                redis::cluster::ClusterClient::new(nodes)
                    .unwrap()
                    .get_async_connection()
                    .await
                    .expect("the cluster of scripts/cluster.sh up redis answers"),
            )
        }
    }
}

impl Raw {
    async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> T {
        match self {
            Raw::Single(c) => cmd.query_async(c).await.unwrap(),
            Raw::Cluster(c) => cmd.query_async(c).await.unwrap(),
        }
    }
}

async fn online_means_heartbeating_or_in_any_presence_channel(target: Target) {
    let store = store_on(target, "online");
    assert!(!store.is_online("7").await.unwrap());
    let t = now_ms();
    for channel in ["presence-a@1", "presence-b@2"] {
        let applied = store
            .update_presence("7", channel, Joined, t)
            .await
            .unwrap();
        assert!(applied);
    }
    assert!(store.is_online("7").await.unwrap());
    assert!(
        store
            .update_presence("7", "presence-a@1", Left, t + 1)
            .await
            .unwrap()
    );
    assert!(store.is_online("7").await.unwrap(), "still in presence-b@2");
    assert!(
        store
            .update_presence("7", "presence-b@2", Left, t + 1)
            .await
            .unwrap()
    );
    assert!(!store.is_online("7").await.unwrap());
    store
        .set_online("7", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(store.is_online("7").await.unwrap());
    assert!(!store.is_online("8").await.unwrap());
}

async fn the_gcra_script_allows_the_burst_refuses_atomically_and_refills(target: Target) {
    let store = store_on(target, "gcra");
    let quota: Quota = "10/s".parse().unwrap();
    let user = RateCheck {
        bucket: "user:7",
        quota: "3/m".parse().unwrap(),
    };
    let ip = RateCheck {
        bucket: "ip:127.0.0.1",
        quota,
    };
    for _ in 0..3 {
        assert_eq!(
            store.rate_limit(&[ip, user]).await.unwrap(),
            RateDecision::Allowed
        );
    }
    match store.rate_limit(&[ip, user]).await.unwrap() {
        RateDecision::Limited {
            bucket,
            retry_after,
        } => {
            assert_eq!(bucket, 1, "the user bucket refused");
            assert!(
                retry_after > Duration::from_secs(10) && retry_after <= Duration::from_secs(20)
            );
        }
        other => panic!("{other:?}"),
    }
    // The refused request charged nothing: the IP bucket has 7 of its 10 left.
    for _ in 0..7 {
        assert_eq!(
            store.rate_limit(&[ip]).await.unwrap(),
            RateDecision::Allowed
        );
    }
    let RateDecision::Limited { retry_after, .. } = store.rate_limit(&[ip]).await.unwrap() else {
        panic!("the IP burst is spent");
    };
    assert!(retry_after <= Duration::from_millis(100));
    // After one interval (100 ms) one more request passes.
    tokio::time::sleep(retry_after + Duration::from_millis(20)).await;
    assert_eq!(
        store.rate_limit(&[ip]).await.unwrap(),
        RateDecision::Allowed
    );
}

async fn a_sighting_is_first_only_once(target: Target) {
    let store = store_on(target, "seen");
    assert!(
        store
            .first_sighting("webhook:ab", Duration::from_secs(5))
            .await
            .unwrap()
    );
    assert!(
        !store
            .first_sighting("webhook:ab", Duration::from_secs(5))
            .await
            .unwrap()
    );
    assert!(
        store
            .first_sighting("webhook:cd", Duration::from_secs(5))
            .await
            .unwrap()
    );
}

async fn presence_webhooks_applied_out_of_order_leave_no_stale_member(target: Target) {
    let store = store_on(target, "presence-order");
    let t = now_ms();
    // member_removed (t + 5) is applied before the member_added (t) it follows.
    assert!(
        store
            .update_presence("9", "presence-a@1", Left, t + 5)
            .await
            .unwrap()
    );
    assert!(
        !store
            .update_presence("9", "presence-a@1", Joined, t)
            .await
            .unwrap(),
        "the older member_added must be ignored"
    );
    assert!(!store.is_online("9").await.unwrap());
    // And the other way round: a member_removed older than the join is ignored.
    assert!(
        store
            .update_presence("9", "presence-b@1", Joined, t + 10)
            .await
            .unwrap()
    );
    assert!(
        !store
            .update_presence("9", "presence-b@1", Left, t + 8)
            .await
            .unwrap()
    );
    assert!(store.is_online("9").await.unwrap());
    // A member_added of more than a day ago (its member_removed lost) is dropped by the next
    // update of that user, whatever channel it is about.
    let day = 24 * 3600 * 1000;
    assert!(
        store
            .update_presence("9", "presence-c@1", Joined, t - day - 1)
            .await
            .unwrap()
    );
    assert!(
        store
            .update_presence("9", "presence-d@1", Left, t + 20)
            .await
            .unwrap()
    );
    let mut redis = raw(target).await;
    let key = store.keys().presence_channels("9");
    let fields: Vec<String> = redis.query(redis::cmd("HKEYS").arg(&key)).await;
    assert_eq!(fields, vec!["presence-b@1".to_owned()]);
    // The hash expires a day after its newest member_added (t + 10), not after the update.
    let ttl_ms: u64 = redis.query(redis::cmd("PTTL").arg(&key)).await;
    assert!(ttl_ms > day - 60_000 && ttl_ms <= day - 10, "{ttl_ms}");
}

async fn sighted_reads_without_marking(target: Target) {
    let store = store_on(target, "sighted");
    assert!(!store.sighted("webhook:ef").await.unwrap());
    assert!(
        !store.sighted("webhook:ef").await.unwrap(),
        "reading does not mark"
    );
    assert!(
        store
            .first_sighting("webhook:ef", Duration::from_secs(5))
            .await
            .unwrap()
    );
    assert!(store.sighted("webhook:ef").await.unwrap());
}

async fn revocations_keep_their_whole_ttl_or_no_expiry_past_any_ttl(target: Target) {
    let store = store_on(target, "revoke");
    let year: i64 = 365 * 24 * 3600;
    let decade = Duration::from_secs(10 * year as u64 + 30);
    let cases = [
        ("decade", decade),
        ("fraction", Duration::from_millis(1500)),
        ("past-max", MAX_REVOCATION_TTL + Duration::from_secs(1)),
        ("max", Duration::MAX),
    ];
    for (jti, ttl) in cases {
        store.revoke(Revocation::Jti(jti), ttl).await.unwrap();
        let found = store.lookup(&[], &[Revocation::Jti(jti)]).await.unwrap();
        assert!(found.revoked, "{jti}");
    }
    let mut redis = raw(target).await;
    let mut ttls = Vec::new();
    for (jti, _) in cases {
        let key = store.keys().revoked_jti(jti);
        let ttl: i64 = redis.query(redis::cmd("TTL").arg(&key)).await;
        ttls.push(ttl);
        let _: () = redis.query(redis::cmd("DEL").arg(&key)).await;
    }
    // The whole decade (not a year), the fraction rounded up, and -1: no expiry.
    assert!(
        (10 * year + 25..=10 * year + 30).contains(&ttls[0]),
        "{ttls:?}"
    );
    assert_eq!(&ttls[1..], &[2, -1, -1], "{ttls:?}");
}

async fn a_batch_look_up_reads_every_slot_and_sees_revocations(target: Target) {
    let store = store_on(target, "lookup");
    // Twenty channels: on the cluster their keys fall on every shard.
    let channels: Vec<String> = (0..20).map(|i| format!("private-batch-{i}")).collect();
    for (i, channel) in channels.iter().enumerate().filter(|(i, _)| i % 3 != 0) {
        store
            .put_cached(
                channel,
                "ANNON",
                &format!("data-{i}"),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
    }
    let lookups: Vec<CacheLookup<'_>> = channels
        .iter()
        .map(|channel| CacheLookup {
            channel,
            scope: "ANNON",
        })
        .collect();
    let expected: Vec<Option<String>> = (0..20)
        .map(|i| (i % 3 != 0).then(|| format!("data-{i}")))
        .collect();
    assert_eq!(store.cached(&lookups).await.unwrap(), expected);
    let revocations = [
        Revocation::Jti("batch-jti"),
        Revocation::TokenSha256("batch-sha"),
    ];
    let found = store.lookup(&lookups, &revocations).await.unwrap();
    assert_eq!(found.cached, expected);
    assert!(!found.revoked);
    store
        .revoke(
            Revocation::TokenSha256("batch-sha"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let found = store.lookup(&lookups, &revocations).await.unwrap();
    assert_eq!(found.cached, expected, "the entries are read as before");
    assert!(found.revoked, "the second revocation is in force");
    let found = store
        .lookup(&[], &[Revocation::Jti("batch-jti")])
        .await
        .unwrap();
    assert!(!found.revoked);
    store.drop_cached(&channels[1]).await.unwrap();
    assert_eq!(store.cached(&lookups[1..2]).await.unwrap(), vec![None]);
}

async fn sessions_slide_and_are_only_ever_shortened(target: Target) {
    let store = store_on(target, "sessions");
    let mut redis = raw(target).await;
    let key = store.keys().session("s-1");
    store
        .create_session("s-1", r#"{"user":"7"}"#, Duration::from_secs(100))
        .await
        .unwrap();
    let data = store
        .touch_session("s-1", Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(data.as_deref(), Some(r#"{"user":"7"}"#));
    let ttl: i64 = redis.query(redis::cmd("TTL").arg(&key)).await;
    assert!((295..=300).contains(&ttl), "GETEX renewed it: {ttl}");
    // PEXPIRE … LT: shortens, never lengthens, never creates.
    store
        .cap_session("s-1", Duration::from_secs(50))
        .await
        .unwrap();
    store
        .cap_session("s-1", Duration::from_secs(500))
        .await
        .unwrap();
    let ttl: i64 = redis.query(redis::cmd("TTL").arg(&key)).await;
    assert!((45..=50).contains(&ttl), "capped, not lengthened: {ttl}");
    store
        .cap_session("s-2", Duration::from_secs(50))
        .await
        .unwrap();
    assert_eq!(
        store
            .touch_session("s-2", Duration::from_secs(50))
            .await
            .unwrap(),
        None
    );
    store.forget_session("s-1").await.unwrap();
    assert_eq!(
        store
            .touch_session("s-1", Duration::from_secs(50))
            .await
            .unwrap(),
        None
    );
}

/// The admin API's replacements of a user's info and watchlist: atomic, whole, and an empty
/// one deletes the key (a user id with braces keeps its watchlist in one slot too).
async fn user_info_and_watchlists_are_replaced_whole(target: Target) {
    let store = store_on(target, "watchlist");
    let field = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for user in ["7", "a{b}c"] {
        store
            .set_user_info(user, &[field("name", "Ann"), field("age", "3")])
            .await
            .unwrap();
        store
            .replace_user_info(user, &[field("name", "Bo")])
            .await
            .unwrap();
        assert_eq!(store.user_info(user).await.unwrap(), [field("name", "Bo")]);
        store.replace_user_info(user, &[]).await.unwrap();
        assert_eq!(store.user_info(user).await.unwrap(), []);

        store
            .replace_watchlist(user, &ids(&["9", "8"]))
            .await
            .unwrap();
        store
            .replace_watchlist(user, &ids(&["b", "a"]))
            .await
            .unwrap();
        assert_eq!(store.watchlist(user).await.unwrap(), ids(&["a", "b"]));
        store.replace_watchlist(user, &[]).await.unwrap();
        assert_eq!(store.watchlist(user).await.unwrap(), Vec::<String>::new());
    }
}
