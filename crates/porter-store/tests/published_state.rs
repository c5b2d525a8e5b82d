//! What published events write, on the real Redis (127.0.0.1:6379), on the Redis Cluster of
//! `scripts/cluster.sh up redis` (127.0.0.1:7001-7006, or `PORTER_TEST_REDIS_CLUSTER`), where
//! every script's keys must share one slot, and on the memory store, with the same test bodies: retained events ordered by publication (an older one never
//! overwrites a newer one), their TTL, the channel owner, and the per-user index of live
//! sessions. Each Redis test uses its own key prefix.

use std::sync::Arc;
use std::time::Duration;

use porter_store::memory::MemoryStore;
use porter_store::redis::RedisStore;
use porter_store::{Keys, RetainStamp, Store};

const REDIS_URL: &str = "redis://127.0.0.1:6379/";
const CLUSTER_URL: &str = "redis+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

fn prefix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "test-published-{}-{nanos}-{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn redis() -> Arc<dyn Store> {
    Arc::new(RedisStore::new(REDIS_URL, Keys::new(prefix()), 1).expect("a valid URL"))
}

fn cluster() -> Arc<dyn Store> {
    let url = std::env::var("PORTER_TEST_REDIS_CLUSTER").unwrap_or_else(|_| CLUSTER_URL.to_owned());
    Arc::new(RedisStore::new(&url, Keys::new(prefix()), 1).expect("a valid URL"))
}

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new(Keys::new(prefix())))
}

macro_rules! on_all {
    ($($name:ident),* $(,)?) => {
        mod on_redis {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::redis()).await
            })*
        }
        mod on_cluster {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::cluster()).await
            })*
        }
        mod in_memory {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::memory()).await
            })*
        }
    };
}

on_all!(
    an_older_publication_never_overwrites_a_newer_one,
    a_retained_event_lasts_its_ttl,
    clearing_a_retained_event_clears_its_stamp,
    channel_owners_are_set_and_cleared,
    the_session_index_lists_only_live_sessions,
);

fn stamp(accepted_ms: u64, id: &str) -> RetainStamp<'_> {
    RetainStamp {
        accepted_ms,
        publication_id: id,
    }
}

const HOUR: Duration = Duration::from_secs(3600);

async fn an_older_publication_never_overwrites_a_newer_one(store: Arc<dyn Store>) {
    let channel = "private-stream@1";
    assert!(
        store
            .retain_event(channel, "stream.online", "\"new\"", stamp(200, "b"), HOUR)
            .await
            .unwrap()
    );
    // A redelivered older publication arrives late: refused, the newer data stays.
    assert!(
        !store
            .retain_event(channel, "stream.online", "\"old\"", stamp(100, "z"), HOUR)
            .await
            .unwrap()
    );
    // Another event name is independent.
    assert!(
        store
            .retain_event(channel, "goal.added", "{\"id\":1}", stamp(50, "a"), HOUR)
            .await
            .unwrap()
    );
    // Same millisecond: the larger publication id wins in either order.
    assert!(
        !store
            .retain_event(channel, "stream.online", "\"a\"", stamp(200, "a"), HOUR)
            .await
            .unwrap()
    );
    assert!(
        store
            .retain_event(channel, "stream.online", "\"c\"", stamp(200, "c"), HOUR)
            .await
            .unwrap()
    );
    assert_eq!(
        store.retained_events(channel).await.unwrap(),
        vec![
            ("goal.added".to_owned(), "{\"id\":1}".to_owned()),
            ("stream.online".to_owned(), "\"c\"".to_owned()),
        ]
    );
}

async fn a_retained_event_lasts_its_ttl(store: Arc<dyn Store>) {
    let channel = "private-stream@2";
    let short = Duration::from_millis(300);
    store
        .retain_event(channel, "a", "1", stamp(1, "p"), short)
        .await
        .unwrap();
    assert_eq!(store.retained_events(channel).await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        store.retained_events(channel).await.unwrap().is_empty(),
        "the event outlived its TTL"
    );
    // Its stamp went with it: an older publication is no longer held back.
    assert!(
        store
            .retain_event(channel, "a", "0", stamp(0, "o"), HOUR)
            .await
            .unwrap()
    );
}

async fn clearing_a_retained_event_clears_its_stamp(store: Arc<dyn Store>) {
    let channel = "private-campaign@3";
    store
        .retain_event(channel, "e", "1", stamp(10, "p"), HOUR)
        .await
        .unwrap();
    store
        .clear_retained_events(channel, Some("e"))
        .await
        .unwrap();
    assert!(store.retained_events(channel).await.unwrap().is_empty());
    assert!(
        store
            .retain_event(channel, "e", "0", stamp(5, "o"), HOUR)
            .await
            .unwrap(),
        "a cleared event holds nothing against an older publication"
    );
    store.clear_retained_events(channel, None).await.unwrap();
    assert!(
        store
            .retain_event(channel, "e", "00", stamp(1, "n"), HOUR)
            .await
            .unwrap()
    );
}

async fn channel_owners_are_set_and_cleared(store: Arc<dyn Store>) {
    assert_eq!(store.channel_owner("private-x@1").await.unwrap(), None);
    store
        .set_channel_owner("private-x@1", Some("7"))
        .await
        .unwrap();
    assert_eq!(
        store.channel_owner("private-x@1").await.unwrap().as_deref(),
        Some("7")
    );
    store.set_channel_owner("private-x@1", None).await.unwrap();
    assert_eq!(store.channel_owner("private-x@1").await.unwrap(), None);
}

async fn the_session_index_lists_only_live_sessions(store: Arc<dyn Store>) {
    let ids = ["s-live", "s-ended", "s-forgotten", "s-short"];
    for id in ids {
        store.create_session(id, "{}", HOUR).await.unwrap();
    }
    for id in &ids[..3] {
        store.index_session("7", id, HOUR).await.unwrap();
    }
    store
        .index_session("7", "s-short", Duration::from_millis(200))
        .await
        .unwrap();
    store.index_session("8", "s-other", HOUR).await.unwrap();
    store.create_session("s-other", "{}", HOUR).await.unwrap();
    // Ended without the index hearing of it (its key is gone): left out, and pruned.
    store.forget_session("s-ended").await.unwrap();
    // Ended and taken out of the index.
    store.forget_session("s-forgotten").await.unwrap();
    store.unindex_session("7", "s-forgotten").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut live = store.live_sessions("7").await.unwrap();
    live.sort();
    assert_eq!(
        live,
        ["s-live"],
        "s-short is past the end it was indexed with"
    );
    assert_eq!(store.live_sessions("8").await.unwrap(), ["s-other"]);
    assert!(store.live_sessions("9").await.unwrap().is_empty());
}
