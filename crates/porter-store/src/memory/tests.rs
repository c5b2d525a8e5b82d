//! The memory store's unit tests: expiry, online status, rate limits, sightings, revocations,
//! sessions and the sweep of expired entries, on tokio's paused clock where time matters.

use super::*;

#[tokio::test(start_paused = true)]
async fn cache_entries_expire() {
    let store = MemoryStore::default();
    store
        .put_cached("private-a@1", "ANNON", "{}", Duration::from_secs(5))
        .await
        .unwrap();
    let lookup = [CacheLookup {
        channel: "private-a@1",
        scope: "ANNON",
    }];
    assert_eq!(
        store.cached(&lookup).await.unwrap(),
        vec![Some("{}".to_owned())]
    );
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(store.cached(&lookup).await.unwrap(), vec![None]);
}

#[tokio::test(start_paused = true)]
async fn online_while_heartbeating_or_in_any_presence_channel() {
    let store = MemoryStore::default();
    assert!(!store.is_online("7").await.unwrap());
    let update = |channel: &'static str, event, time_ms| {
        let store = &store;
        async move {
            store
                .update_presence("7", channel, event, time_ms)
                .await
                .unwrap()
        }
    };
    assert!(update("presence-a@1", PresenceEvent::Joined, 1000).await);
    assert!(update("presence-b@2", PresenceEvent::Joined, 1000).await);
    assert!(store.is_online("7").await.unwrap());
    assert!(update("presence-a@1", PresenceEvent::Left, 2000).await);
    assert!(store.is_online("7").await.unwrap(), "still in presence-b@2");
    // A member_added older than the member_removed, applied late, changes nothing.
    assert!(!update("presence-a@1", PresenceEvent::Joined, 1500).await);
    store
        .set_online("7", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(update("presence-b@2", PresenceEvent::Left, 2000).await);
    assert!(store.is_online("7").await.unwrap(), "still heartbeating");
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(!store.is_online("7").await.unwrap());
    assert!(!store.is_online("8").await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn rate_limits_refuse_past_the_burst_and_charge_nothing_when_refused() {
    let store = MemoryStore::default();
    let user = RateCheck {
        bucket: "user:7",
        quota: "2/s".parse().unwrap(),
    };
    let ip = RateCheck {
        bucket: "ip:127.0.0.1",
        quota: "3/s".parse().unwrap(),
    };
    for _ in 0..2 {
        assert_eq!(
            store.rate_limit(&[user, ip]).await.unwrap(),
            RateDecision::Allowed
        );
    }
    match store.rate_limit(&[user, ip]).await.unwrap() {
        RateDecision::Limited {
            bucket,
            retry_after,
        } => {
            assert_eq!(bucket, 0, "the user bucket refused");
            assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_millis(500));
        }
        other => panic!("{other:?}"),
    }
    // The refused request did not charge the IP bucket: one more passes there.
    assert_eq!(
        store.rate_limit(&[ip]).await.unwrap(),
        RateDecision::Allowed
    );
    assert!(matches!(
        store.rate_limit(&[ip]).await.unwrap(),
        RateDecision::Limited { bucket: 0, .. }
    ));
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(
        store.rate_limit(&[user]).await.unwrap(),
        RateDecision::Allowed
    );
}

#[tokio::test(start_paused = true)]
async fn a_sighting_repeats_only_after_its_ttl() {
    let store = MemoryStore::default();
    assert!(
        store
            .first_sighting("x", Duration::from_secs(5))
            .await
            .unwrap()
    );
    assert!(
        !store
            .first_sighting("x", Duration::from_secs(5))
            .await
            .unwrap()
    );
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(
        store
            .first_sighting("x", Duration::from_secs(5))
            .await
            .unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn revocations_are_checked_with_the_cache_and_expire() {
    let store = MemoryStore::default();
    let hash = "ab".repeat(32);
    let lookup = [CacheLookup {
        channel: "private-a@1",
        scope: "ANNON",
    }];
    let asked = [Revocation::TokenSha256(&hash), Revocation::Jti("j-1")];
    assert!(!store.lookup(&lookup, &asked).await.unwrap().revoked);
    store
        .revoke(Revocation::Jti("j-1"), Duration::from_secs(10))
        .await
        .unwrap();
    let found = store.lookup(&lookup, &asked).await.unwrap();
    assert!(found.revoked);
    assert_eq!(found.cached, vec![None]);
    assert!(
        !store
            .lookup(&lookup, &[Revocation::Jti("j-2")])
            .await
            .unwrap()
            .revoked
    );
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(!store.lookup(&lookup, &asked).await.unwrap().revoked);
}

#[tokio::test(start_paused = true)]
async fn sessions_slide_and_expire() {
    let store = MemoryStore::default();
    let ttl = Duration::from_secs(10);
    store.create_session("s1", "{}", ttl).await.unwrap();
    tokio::time::advance(Duration::from_secs(8)).await;
    assert_eq!(
        store.touch_session("s1", ttl).await.unwrap().as_deref(),
        Some("{}")
    );
    // Renewed at 8 s: still alive at 16 s, gone 10 s after the last use.
    tokio::time::advance(Duration::from_secs(8)).await;
    assert!(store.touch_session("s1", ttl).await.unwrap().is_some());
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(store.touch_session("s1", ttl).await.unwrap().is_none());
    assert!(store.touch_session("other", ttl).await.unwrap().is_none());
}

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

async fn is_revoked(store: &MemoryStore, jti: &str) -> bool {
    store
        .lookup(&[], &[Revocation::Jti(jti)])
        .await
        .unwrap()
        .revoked
}

#[tokio::test(start_paused = true)]
async fn a_revocation_years_out_lasts_its_whole_ttl() {
    let store = MemoryStore::default();
    // A token valid for ten more years, plus a 30 s leeway.
    let ttl = YEAR * 10 + Duration::from_secs(30);
    store.revoke(Revocation::Jti("decade"), ttl).await.unwrap();
    tokio::time::advance(YEAR * 10).await;
    assert!(
        is_revoked(&store, "decade").await,
        "lapsed before its token"
    );
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(!is_revoked(&store, "decade").await, "kept past its TTL");
}

#[tokio::test(start_paused = true)]
async fn a_revocation_past_any_ttl_is_kept_without_expiry() {
    let store = MemoryStore::default();
    for (jti, ttl) in [
        (
            "just-past",
            crate::MAX_REVOCATION_TTL + Duration::from_secs(1),
        ),
        ("huge", Duration::from_secs(u64::MAX / 2)),
        ("max", Duration::MAX),
    ] {
        store.revoke(Revocation::Jti(jti), ttl).await.unwrap();
    }
    tokio::time::advance(YEAR * 1100).await;
    for jti in ["just-past", "huge", "max"] {
        assert!(is_revoked(&store, jti).await, "{jti} lapsed");
    }
}

#[tokio::test(start_paused = true)]
async fn a_fractional_revocation_ttl_rounds_up() {
    let store = MemoryStore::default();
    store
        .revoke(Revocation::Jti("half"), Duration::from_millis(1500))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_millis(1900)).await;
    assert!(is_revoked(&store, "half").await);
    tokio::time::advance(Duration::from_millis(200)).await;
    assert!(!is_revoked(&store, "half").await);
}

#[tokio::test(start_paused = true)]
async fn sessions_are_capped_and_forgotten() {
    let store = MemoryStore::default();
    let ttl = Duration::from_secs(100);
    store.create_session("s1", "{}", ttl).await.unwrap();
    // A cap never lengthens…
    store
        .cap_session("s1", Duration::from_secs(500))
        .await
        .unwrap();
    store
        .cap_session("s1", Duration::from_secs(5))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(store.touch_session("s1", ttl).await.unwrap().is_none());
    // …and never creates.
    store.cap_session("s2", ttl).await.unwrap();
    assert!(store.touch_session("s2", ttl).await.unwrap().is_none());
    store.create_session("s3", "{}", ttl).await.unwrap();
    store.forget_session("s3").await.unwrap();
    assert!(store.touch_session("s3", ttl).await.unwrap().is_none());
}

#[tokio::test]
async fn members_and_events() {
    let store = MemoryStore::default();
    store.add_member("c", "7").await.unwrap();
    assert!(store.is_member("c", "7").await.unwrap());
    store.remove_member("c", "7").await.unwrap();
    assert!(!store.is_member("c", "7").await.unwrap());
    store.set_retained_event("c", "b", "2").await.unwrap();
    store.set_retained_event("c", "a", "1").await.unwrap();
    assert_eq!(
        store.retained_events("c").await.unwrap(),
        vec![("a".into(), "1".into()), ("b".into(), "2".into())]
    );
    store.clear_retained_events("c", Some("a")).await.unwrap();
    assert_eq!(store.retained_events("c").await.unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn expired_entries_are_swept_as_the_map_grows() {
    let store = MemoryStore::default();
    let ttl = Duration::from_secs(60);
    for i in 0..SWEEP_ABOVE {
        store
            .put_cached(&format!("c{i}"), "ANNON", "{}", ttl)
            .await
            .unwrap();
    }
    tokio::time::advance(Duration::from_secs(61)).await;
    // The next write finds the map at the threshold and sweeps every expired entry.
    store.put_cached("fresh", "ANNON", "{}", ttl).await.unwrap();
    assert_eq!(store.data().len(), 1);
}

#[tokio::test]
async fn user_info_and_watchlists_are_replaced_whole_and_deleted_when_empty() {
    let store = MemoryStore::default();
    let field = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    store
        .set_user_info("7", &[field("name", "Ann"), field("age", "3")])
        .await
        .unwrap();
    store
        .replace_user_info("7", &[field("name", "Bo")])
        .await
        .unwrap();
    assert_eq!(store.user_info("7").await.unwrap(), [field("name", "Bo")]);
    store.replace_user_info("7", &[]).await.unwrap();
    assert_eq!(store.user_info("7").await.unwrap(), []);

    let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(store.watchlist("7").await.unwrap(), Vec::<String>::new());
    store
        .replace_watchlist("7", &ids(&["9", "8"]))
        .await
        .unwrap();
    store
        .replace_watchlist("7", &ids(&["b", "a"]))
        .await
        .unwrap();
    assert_eq!(store.watchlist("7").await.unwrap(), ids(&["a", "b"]));
    assert_eq!(store.watchlist("8").await.unwrap(), Vec::<String>::new());
    store.replace_watchlist("7", &[]).await.unwrap();
    assert_eq!(store.watchlist("7").await.unwrap(), Vec::<String>::new());
}
