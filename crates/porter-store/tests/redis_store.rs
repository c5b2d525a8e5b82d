//! The Redis store against the real Redis (127.0.0.1:6379): global presence, the GCRA
//! script and the replay guard. Each test uses its own key prefix.

use std::time::Duration;

use porter_store::redis::RedisStore;
use porter_store::{Keys, Quota, RateCheck, RateDecision, Store};

const REDIS_URL: &str = "redis://127.0.0.1:6379/";

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
    store.join_presence("7", "presence-a@1").await.unwrap();
    store.join_presence("7", "presence-b@2").await.unwrap();
    assert!(store.is_online("7").await.unwrap());
    store.leave_presence("7", "presence-a@1").await.unwrap();
    assert!(store.is_online("7").await.unwrap(), "still in presence-b@2");
    store.leave_presence("7", "presence-b@2").await.unwrap();
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
