//! Applying published events in process: the memory store, the local session exchanges and
//! a local HTTP stand-in for the upstream server. Retained state (and older publications not
//! overwriting it), the owner's sessions, a redelivery applied once, the upstream's retries,
//! refusals and dead letters, and a store that does not answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use porter_broker::events::EventSink;
use porter_broker::local_events::events_channel;
use porter_broker::session_publish::LocalSessionExchanges;
use porter_core::policy::Policy;
use porter_core::publish::{PUBLICATION_VERSION, Publication, PublishKind};
use porter_core::signing::Secret;
use porter_store::memory::MemoryStore;
use porter_store::observed::{Observed, Observer};
use porter_store::{CacheLookup, Keys, Store, StoreError};
use porter_worker::publish::consumer::EventConsumer;
use porter_worker::publish::metrics::{PublishMetrics, Settled};
use porter_worker::publish::upstream::{AppCredentials, RetryPolicy, Upstream, parse_bases};
use porter_worker::publish::{Applier, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn publication(id: &str, accepted_ms: u64, body: &str) -> Publication {
    Publication {
        v: PUBLICATION_VERSION,
        id: id.to_owned(),
        app_id: "123".to_owned(),
        kind: PublishKind::Events,
        body: body.to_owned(),
        accepted_ms,
    }
}

fn event(channel: &str, name: &str, data: &str) -> String {
    serde_json::json!({ "name": name, "data": data, "channels": [channel] }).to_string()
}

struct Setup {
    store: Arc<MemoryStore>,
    exchanges: Arc<LocalSessionExchanges>,
    applier: Applier,
}

fn setup(upstream: Option<Upstream>) -> Setup {
    let store = Arc::new(MemoryStore::new(Keys::default()));
    let exchanges = Arc::new(LocalSessionExchanges::default());
    let applier = Applier::new(
        store.clone(),
        Arc::new(Policy::default()),
        exchanges.clone(),
        upstream,
        PublishMetrics::default(),
    );
    Setup {
        store,
        exchanges,
        applier,
    }
}

#[tokio::test]
async fn a_retained_event_is_stored_and_the_cached_decision_dropped() {
    let s = setup(None);
    s.store
        .put_cached("private-stream@42", "ANNON", "{}", Duration::from_secs(60))
        .await
        .unwrap();
    let p = publication(
        "p1",
        100,
        &event("private-stream@42", "stream.online", "{\"on\":true}"),
    );
    assert_eq!(s.applier.apply(&p).await, Verdict::Applied);
    assert_eq!(
        s.store.retained_events("private-stream@42").await.unwrap(),
        vec![("stream.online".to_owned(), "{\"on\":true}".to_owned())]
    );
    let cached = s
        .store
        .cached(&[CacheLookup {
            channel: "private-stream@42",
            scope: "ANNON",
        }])
        .await
        .unwrap();
    assert_eq!(cached, vec![None], "the cached decision was dropped");
    // An older publication, applied late, does not overwrite it.
    let older = publication(
        "p0",
        50,
        &event("private-stream@42", "stream.online", "\"old\""),
    );
    assert_eq!(s.applier.apply(&older).await, Verdict::Applied);
    assert_eq!(
        s.store.retained_events("private-stream@42").await.unwrap()[0].1,
        "{\"on\":true}"
    );
    // A channel whose rule retains nothing keeps nothing.
    let goal = publication("p2", 200, &event("private-goal@1", "goal.updated", "{}"));
    assert_eq!(s.applier.apply(&goal).await, Verdict::Applied);
    assert!(
        s.store
            .retained_events("private-goal@1")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_event_reaches_every_live_session_of_the_owner_once() {
    let s = setup(None);
    for id in ["sa", "sb", "sother"] {
        s.store
            .create_session(id, "{}", Duration::from_secs(60))
            .await
            .unwrap();
    }
    for (user, id) in [("7", "sa"), ("7", "sb"), ("8", "sother")] {
        s.store
            .index_session(user, id, Duration::from_secs(60))
            .await
            .unwrap();
    }
    let p = publication(
        "p1",
        1,
        &event("private-user@7", "message.sent", "{\"id\":9}"),
    );
    assert_eq!(s.applier.apply(&p).await, Verdict::Applied);
    // A redelivery of the same publication sends nothing again.
    assert_eq!(s.applier.apply(&p).await, Verdict::Applied);
    for id in ["sa", "sb"] {
        let messages = s.exchanges.messages(id);
        assert_eq!(messages.len(), 1, "{id}");
        assert_eq!(messages[0].routing_key, "private-user@7.message.sent");
        let body: serde_json::Value = serde_json::from_slice(&messages[0].body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"channel": "private-user@7", "event": "message.sent", "data": "{\"id\":9}"})
        );
    }
    assert!(s.exchanges.messages("sother").is_empty());
    // A channel without an owner reaches no session.
    let p = publication("p2", 2, &event("private-stream@7", "stream.online", "{}"));
    assert_eq!(s.applier.apply(&p).await, Verdict::Applied);
    assert_eq!(s.exchanges.messages("sa").len(), 1);
}

#[tokio::test]
async fn an_event_whose_routing_key_is_too_long_skips_the_sessions_and_is_not_retried() {
    let s = setup(None);
    s.store
        .create_session("sa", "{}", Duration::from_secs(60))
        .await
        .unwrap();
    s.store
        .index_session("7", "sa", Duration::from_secs(60))
        .await
        .unwrap();
    // 150 characters, 300 bytes: `private-user@7.` + it is past AMQP's 255 bytes.
    let long = "é".repeat(150);
    let too_long = publication("p0", 1, &event("private-user@7", &long, "{}"));
    assert_eq!(s.applier.apply(&too_long).await, Verdict::Applied);
    assert!(s.exchanges.messages("sa").is_empty());
    let short = publication("p1", 2, &event("private-user@7", "message.sent", "{}"));
    assert_eq!(s.applier.apply(&short).await, Verdict::Applied);
    let messages = s.exchanges.messages("sa");
    assert_eq!(
        messages.len(),
        1,
        "only the event with a short key went out"
    );
    assert_eq!(messages[0].routing_key, "private-user@7.message.sent");
    let metrics = s.applier.metrics();
    assert_eq!(metrics.session_count("routing_key_too_long"), 1);
    assert_eq!(metrics.session_count("delivered"), 1);
    // A key of exactly 255 bytes still goes out: 15 + 120 two-byte characters.
    let fits = "é".repeat((255 - "private-user@7.".len()) / 2);
    let p = publication("p2", 3, &event("private-user@7", &fits, "{}"));
    assert_eq!(s.applier.apply(&p).await, Verdict::Applied);
    assert_eq!(s.exchanges.messages("sa").len(), 2);
    assert_eq!(s.exchanges.messages("sa")[1].routing_key.len(), 255);
}

#[tokio::test]
async fn a_store_owner_is_looked_up() {
    let policy = Policy::from_toml(
        r#"
[[rule]]
name = "doc"
pattern = "private-doc-{id}"
allow = "anyone"
owner = "store"
"#,
    )
    .unwrap();
    let store = Arc::new(MemoryStore::new(Keys::default()));
    let exchanges = Arc::new(LocalSessionExchanges::default());
    let applier = Applier::new(
        store.clone(),
        Arc::new(policy),
        exchanges.clone(),
        None,
        PublishMetrics::default(),
    );
    store
        .create_session("s1", "{}", Duration::from_secs(60))
        .await
        .unwrap();
    store
        .index_session("ann", "s1", Duration::from_secs(60))
        .await
        .unwrap();
    let p = publication("p1", 1, &event("private-doc-5", "edited", "x"));
    assert_eq!(applier.apply(&p).await, Verdict::Applied);
    assert!(exchanges.messages("s1").is_empty(), "no owner stored yet");
    store
        .set_channel_owner("private-doc-5", Some("ann"))
        .await
        .unwrap();
    let p = publication("p2", 2, &event("private-doc-5", "edited", "y"));
    assert_eq!(applier.apply(&p).await, Verdict::Applied);
    assert_eq!(
        exchanges.messages("s1")[0].routing_key,
        "private-doc-5.edited"
    );
}

#[tokio::test]
async fn a_malformed_publication_is_dead_lettered() {
    let s = setup(None);
    let verdict = s.applier.apply(&publication("p1", 1, "{not json")).await;
    assert!(matches!(verdict, Verdict::DeadLetter(_)), "{verdict:?}");
    let mut other_version = publication("p2", 1, &event("private-stream@1", "e", "{}"));
    other_version.v = 99;
    assert!(matches!(
        s.applier.apply(&other_version).await,
        Verdict::DeadLetter(_)
    ));
}

/// Fails every call named in it.
#[derive(Clone)]
struct FailCalls(Arc<Mutex<Vec<&'static str>>>);

impl Observer for FailCalls {
    fn before(&self, call: &'static str) -> Result<(), StoreError> {
        if self.0.lock().unwrap().contains(&call) {
            Err(StoreError::Unavailable("down".into()))
        } else {
            Ok(())
        }
    }
}

#[tokio::test]
async fn a_store_that_does_not_answer_hands_the_publication_back_and_nothing_is_lost() {
    let failing = FailCalls(Arc::new(Mutex::new(vec!["retain_event"])));
    let store = Arc::new(Observed::new(
        MemoryStore::new(Keys::default()),
        failing.clone(),
    ));
    let applier = Applier::new(
        store.clone(),
        Arc::new(Policy::default()),
        Arc::new(LocalSessionExchanges::default()),
        None,
        PublishMetrics::default(),
    );
    let p = publication("p1", 1, &event("private-stream@1", "stream.online", "1"));
    assert!(matches!(applier.apply(&p).await, Verdict::Retry(_)));
    failing.0.lock().unwrap().clear();
    assert_eq!(applier.apply(&p).await, Verdict::Applied);
    assert_eq!(
        store
            .retained_events("private-stream@1")
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A local HTTP stand-in for the upstream server: answers each request with the next status
/// of `statuses` (the last one repeating) and records the request lines and bodies.
struct StandIn {
    base: String,
    requests: Arc<Mutex<Vec<(String, String)>>>,
    count: Arc<AtomicUsize>,
}

async fn stand_in(statuses: Vec<u16>) -> StandIn {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let (recorded, counter) = (requests.clone(), count.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let status = statuses[n.min(statuses.len() - 1)];
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    let read = socket.read(&mut chunk).await.unwrap_or(0);
                    if read == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..read]);
                    let text = String::from_utf8_lossy(&buffer).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let head = text[..end].to_owned();
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buffer.len() >= end + 4 + length {
                            let body = String::from_utf8_lossy(&buffer[end + 4..end + 4 + length])
                                .to_string();
                            break (head, body);
                        }
                    }
                };
                let line = head.lines().next().unwrap_or_default().to_owned();
                recorded.lock().unwrap().push((line, body));
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    StandIn {
        base,
        requests,
        count,
    }
}

fn upstream(base: &str, attempts: u32) -> Upstream {
    Upstream::new(
        parse_bases(base).unwrap(),
        AppCredentials {
            key: "app-key".into(),
            secret: Secret::new(b"app-secret".to_vec()),
        },
        RetryPolicy {
            attempts,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            timeout: Duration::from_secs(2),
        },
    )
    .expect("an HTTP client")
}

#[tokio::test]
async fn the_body_goes_upstream_as_received_signed_once_per_publication() {
    let server = stand_in(vec![200]).await;
    let s = setup(Some(upstream(&server.base, 3)));
    let body = event("private-stream@1", "stream.online", "{\"a\":1}");
    let p = publication("p1", 1, &body);
    assert_eq!(s.applier.apply(&p).await, Verdict::Applied);
    assert_eq!(s.applier.apply(&p).await, Verdict::Applied);
    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "a redelivery is not forwarded again");
    let (line, received) = &requests[0];
    assert_eq!(received, &body);
    let target = line.split(' ').nth(1).unwrap();
    let (path, query) = target.split_once('?').unwrap();
    assert_eq!(path, "/apps/123/events");
    let params: std::collections::BTreeMap<&str, &str> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    assert_eq!(params["auth_key"], "app-key");
    assert_eq!(params["auth_version"], "1.0");
    assert_eq!(
        params["body_md5"],
        porter_core::publish::body_md5(body.as_bytes())
    );
    // The signature verifies as Porter's own gateway (and Pusher) check it.
    let timestamp: u64 = params["auth_timestamp"].parse().unwrap();
    let expected = porter_core::publish::signed_query(
        "app-key",
        &Secret::new(b"app-secret".to_vec()),
        "POST",
        path,
        body.as_bytes(),
        timestamp,
    );
    assert_eq!(query, expected);
}

#[tokio::test]
async fn a_failing_upstream_is_retried_then_the_publication_dead_lettered() {
    let server = stand_in(vec![503, 429, 200]).await;
    let s = setup(Some(upstream(&server.base, 3)));
    let p = publication("p1", 1, &event("private-stream@1", "e", "1"));
    assert_eq!(
        s.applier.apply(&p).await,
        Verdict::Applied,
        "third time lucky"
    );
    assert_eq!(server.count.load(Ordering::SeqCst), 3);

    let server = stand_in(vec![500]).await;
    let s = setup(Some(upstream(&server.base, 3)));
    let verdict = s.applier.apply(&p).await;
    assert!(
        matches!(&verdict, Verdict::DeadLetter(r) if r.contains("3 attempts")),
        "{verdict:?}"
    );
    assert_eq!(server.count.load(Ordering::SeqCst), 3);
    // Retained state was applied all the same, once.
    assert_eq!(
        s.store
            .retained_events("private-stream@1")
            .await
            .unwrap()
            .len(),
        1
    );

    let server = stand_in(vec![401]).await;
    let s = setup(Some(upstream(&server.base, 3)));
    let verdict = s.applier.apply(&p).await;
    assert!(
        matches!(&verdict, Verdict::DeadLetter(r) if r.contains("401")),
        "{verdict:?}"
    );
    assert_eq!(
        server.count.load(Ordering::SeqCst),
        1,
        "a 4xx is not retried"
    );

    // A redirect is not followed (the signature is for this server) and not retried.
    let server = stand_in(vec![302]).await;
    let s = setup(Some(upstream(&server.base, 3)));
    let verdict = s.applier.apply(&p).await;
    assert!(
        matches!(&verdict, Verdict::DeadLetter(r) if r.contains("302")),
        "{verdict:?}"
    );
    assert_eq!(
        server.count.load(Ordering::SeqCst),
        1,
        "a 3xx is not retried"
    );

    // Nobody listening: connection errors are retried too, then dead-lettered.
    let s = setup(Some(upstream("http://127.0.0.1:1", 2)));
    assert!(matches!(s.applier.apply(&p).await, Verdict::DeadLetter(_)));
}

#[tokio::test]
async fn the_consumer_acknowledges_requeues_and_dead_letters_by_the_verdict() {
    let server = stand_in(vec![400]).await;
    let s = setup(Some(upstream(&server.base, 1)));
    let metrics = s.applier.metrics().clone();
    let (sink, receiver) = events_channel(8);
    let good = publication("ok", 1, &event("private-goal@1", "e", "1"));
    let bad = publication("bad", 2, "{");
    sink.publish(&good).await.unwrap();
    sink.publish(&bad).await.unwrap();
    drop(sink);
    let dead = receiver.clone();
    EventConsumer::new(Arc::new(s.applier), 2)
        .with_retry_pause(Duration::from_millis(1))
        .run(receiver)
        .await;
    // `good` reached the upstream, which refused it (400): both are dead letters.
    let mut ids: Vec<String> = dead.dead_letters().into_iter().map(|p| p.id).collect();
    ids.sort();
    assert_eq!(ids, ["bad", "ok"]);
    assert_eq!(metrics.settled_count(Settled::DeadLettered), 2);
    assert_eq!(metrics.settled_count(Settled::Applied), 0);
}

#[tokio::test]
async fn two_deliveries_applied_at_once_forward_once() {
    let server = stand_in(vec![200]).await;
    let s = setup(Some(upstream(&server.base, 3)));
    let p = publication("p1", 1, &event("private-stream@1", "stream.online", "1"));
    let (a, b) = tokio::join!(s.applier.apply(&p), s.applier.apply(&p));
    let mut verdicts = [a, b];
    verdicts.sort_by_key(|v| matches!(v, Verdict::Retry(_)));
    assert_eq!(verdicts[0], Verdict::Applied, "{verdicts:?}");
    assert!(
        matches!(&verdicts[1], Verdict::Retry(r) if r.contains("another delivery")),
        "{verdicts:?}"
    );
    // The one handed back finds everything done when it comes round again.
    assert_eq!(s.applier.apply(&p).await, Verdict::Applied);
    assert_eq!(server.count.load(Ordering::SeqCst), 1);
}
