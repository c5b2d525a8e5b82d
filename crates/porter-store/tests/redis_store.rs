//! The Redis store against the real Redis (127.0.0.1:6379): global presence, the GCRA
//! script, the replay guard and revocation lifetimes. Each test uses its own key prefix.

use std::time::Duration;

use porter_store::redis::RedisStore;
use porter_store::{
    Keys, MAX_REVOCATION_TTL, PresenceEvent, Quota, RateCheck, RateDecision, Revocation, Store,
};

const REDIS_URL: &str = "redis://127.0.0.1:6379/";

use PresenceEvent::{Joined, Left};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

fn store(test: &str) -> RedisStore {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let prefix = format!("porter-test.store.{test}.{}.{nanos}.", std::process::id());
    RedisStore::new(REDIS_URL, Keys::new(prefix), 4).expect("pool")
}

#[tokio::test]
async fn online_means_heartbeating_or_in_any_presence_channel() {
    let store = store("online");
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

#[tokio::test]
async fn the_gcra_script_allows_the_burst_refuses_atomically_and_refills() {
    let store = store("gcra");
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

#[tokio::test]
async fn a_sighting_is_first_only_once() {
    let store = store("seen");
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

#[tokio::test]
async fn presence_webhooks_applied_out_of_order_leave_no_stale_member() {
    let store = store("presence-order");
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
    let mut redis = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = store.keys().presence_channels("9");
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(fields, vec!["presence-b@1".to_owned()]);
    // The hash expires a day after its newest member_added (t + 10), not after the update.
    let ttl_ms: u64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(ttl_ms > day - 60_000 && ttl_ms <= day - 10, "{ttl_ms}");
}

#[tokio::test]
async fn sighted_reads_without_marking() {
    let store = store("sighted");
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

#[tokio::test]
async fn revocations_keep_their_whole_ttl_or_no_expiry_past_any_ttl() {
    let store = store("revoke");
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
    let mut redis = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut ttls = Vec::new();
    for (jti, _) in cases {
        let key = store.keys().revoked_jti(jti);
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        ttls.push(ttl);
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    // The whole decade (not a year), the fraction rounded up, and -1: no expiry.
    assert!(
        (10 * year + 25..=10 * year + 30).contains(&ttls[0]),
        "{ttls:?}"
    );
    assert_eq!(&ttls[1..], &[2, -1, -1], "{ttls:?}");
}
