//! `POST /apps/{app_id}/events` and `/batch_events` in process: what is queued for an accepted
//! publish (the body as sent), and every refusal (key, signature, timestamp, body_md5, app id,
//! JSON, each of Pusher's limits, a replay, the broker or the store away), none of which
//! queues anything; and that every copy of one signed request (a replay, two racing, the retry
//! after a 503) is the same publication id, so that the worker applies it once. The events
//! queue is the in-process one, behind switches that play the broker going away, a confirm
//! lost after the broker queued, and two copies racing; the store is the memory one (failing
//! on cue).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::{App, test, web};
use async_trait::async_trait;
use porter_broker::BrokerError;
use porter_broker::events::EventSink;
use porter_broker::local_events::{LocalEventReceiver, LocalEventSink, events_channel};
use porter_core::cache::RuleStamps;
use porter_core::policy::Policy;
use porter_core::publish::{
    MAX_BATCH_EVENTS, MAX_CHANNELS_PER_EVENT, MAX_DATA_BYTES, MAX_EVENT_NAME_LEN,
    MAX_PUBLISH_CHANNEL_LEN, Publication, PublishKind, VerifiedRequest, publication_id,
    signed_query,
};
use porter_core::signing::{Secret, Signer};
use porter_gateway::handlers::publish::Publishing;
use porter_gateway::protection::{Protection, ProtectionConfig};
use porter_gateway::{AppState, GatewayConfig};
use porter_identity::{Resolver, Verifier};
use porter_store::memory::MemoryStore;
use porter_store::observed::{Observed, Observer};
use porter_store::{Store, StoreError};
use serde_json::{Value, json};

const APP_ID: &str = "100000";
const KEY: &str = "key";
const SECRET: &str = "secret";

/// The local events queue, which refuses every publish while `down` (the broker away), queues
/// but then fails while `lose_confirms` (the broker kept it, its confirm never came), and,
/// with a `gate`, holds each publish until that many are waiting (copies racing).
struct Switchable {
    inner: LocalEventSink,
    down: AtomicBool,
    lose_confirms: AtomicBool,
    gate: std::sync::Mutex<Option<Arc<tokio::sync::Barrier>>>,
}

#[async_trait]
impl EventSink for Switchable {
    async fn publish(&self, publication: &Publication) -> Result<(), BrokerError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BrokerError::Unavailable);
        }
        let gate = self.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            // Bounded, so that a gateway publishing only one of the copies fails the test
            // rather than hanging it.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), gate.wait()).await;
        }
        self.inner.publish(publication).await?;
        if self.lose_confirms.load(Ordering::SeqCst) {
            return Err(BrokerError::Unavailable);
        }
        Ok(())
    }

    fn is_ready(&self) -> bool {
        !self.down.load(Ordering::SeqCst)
    }
}

/// Fails every call named `fail` while set.
#[derive(Default)]
struct FailCall {
    fail: std::sync::Mutex<Option<&'static str>>,
}

/// The store's view of the shared [`FailCall`] switch.
struct Faults(Arc<FailCall>);

impl Observer for Faults {
    fn before(&self, call: &'static str) -> Result<(), StoreError> {
        if *self.0.fail.lock().unwrap() == Some(call) {
            return Err(StoreError::Timeout);
        }
        Ok(())
    }
}

struct Harness {
    state: web::Data<AppState>,
    publishing: web::Data<Publishing>,
    sink: Arc<Switchable>,
    receiver: LocalEventReceiver,
    store_faults: Arc<FailCall>,
    /// The task transport's worker end, kept open so that the gateway's broker is ready.
    _tasks: porter_broker::local::LocalSource,
}

fn harness() -> Harness {
    let (client, tasks) = porter_broker::local::channel(Default::default());
    let store_faults = Arc::new(FailCall::default());
    let store: Arc<dyn Store> = Arc::new(Observed::new(
        MemoryStore::default(),
        Faults(store_faults.clone()),
    ));
    let state = web::Data::new(AppState {
        signer: Signer::new(APP_ID, KEY, &Secret::new(SECRET), None).unwrap(),
        policy: Arc::new(Policy::default()),
        stamps: RuleStamps::of(&Policy::default()),
        tasks: Arc::new(client),
        store,
        identity: Resolver::new(Verifier::hs256(Some(b"jwt"))),
        config: GatewayConfig::default(),
        metrics: Default::default(),
        admin: porter_gateway::admin_guard::AdminGuard::new(Some("admin-token")),
        protection: Protection::new(ProtectionConfig::default()),
        scoped: Default::default(),
    });
    let (inner, receiver) = events_channel(64);
    let sink = Arc::new(Switchable {
        inner,
        down: AtomicBool::new(false),
        lose_confirms: AtomicBool::new(false),
        gate: Default::default(),
    });
    let publishing = web::Data::new(Publishing::new(
        APP_ID,
        KEY,
        Secret::new(SECRET),
        sink.clone(),
    ));
    Harness {
        state,
        publishing,
        sink,
        receiver,
        store_faults,
        _tasks: tasks,
    }
}

macro_rules! app {
    ($harness:expr) => {
        test::init_service(
            App::new()
                .app_data($harness.state.clone())
                .app_data($harness.publishing.clone())
                .configure(|cfg| porter_gateway::configure(cfg, &Policy::default())),
        )
        .await
    };
}

fn now_secs() -> u64 {
    porter_broker::now_ms() / 1000
}

/// A request signed as the SDKs sign it, under `secret`, at `timestamp`, for `path`.
fn signed_with(path: &str, body: &str, secret: &str, timestamp: u64) -> test::TestRequest {
    let query = signed_query(
        KEY,
        &Secret::new(secret),
        "POST",
        path,
        body.as_bytes(),
        timestamp,
    );
    test::TestRequest::post()
        .uri(&format!("{path}?{query}"))
        .insert_header(("content-type", "application/json"))
        .peer_addr("203.0.113.9:4000".parse().unwrap())
        .set_payload(body.to_owned())
}

/// The publication id a request signed as [`signed_with`] signs it must be queued under.
fn id_of(path: &str, body: &str, timestamp: u64) -> String {
    let query = signed_query(
        KEY,
        &Secret::new(SECRET),
        "POST",
        path,
        body.as_bytes(),
        timestamp,
    );
    let (_, signature) = query.split_once("auth_signature=").unwrap();
    let verified = VerifiedRequest {
        signature: signature.to_owned(),
        timestamp,
    };
    publication_id(APP_ID, &verified)
}

fn signed(path: &str, body: &str) -> test::TestRequest {
    signed_with(path, body, SECRET, now_secs())
}

const EVENTS: &str = "/apps/100000/events";
const BATCH: &str = "/apps/100000/batch_events";

fn event(name: &str, data: &str, channels: &[String]) -> String {
    json!({ "name": name, "data": data, "channels": channels }).to_string()
}

fn one_channel() -> Vec<String> {
    vec!["private-stream@42".to_owned()]
}

/// Status and body of a request.
async fn call(
    app: &impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
    request: test::TestRequest,
) -> (u16, Value) {
    let response = test::call_service(app, request.to_request()).await;
    let status = response.status().as_u16();
    let body = test::read_body(response).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// What the queue holds now, acknowledged.
fn drain(receiver: &LocalEventReceiver) -> Vec<Publication> {
    let mut out = Vec::new();
    while let Some(delivery) = futures_util::FutureExt::now_or_never(receiver.recv()).flatten() {
        out.push(delivery.publication().clone());
        delivery.ack();
    }
    out
}

#[actix_web::test]
async fn an_accepted_publish_is_queued_once_with_the_body_as_sent() {
    let h = harness();
    let app = app!(h);
    // Spacing and field order as an SDK might send them: queued byte for byte.
    let body = r#"{"name":"stream.online", "data":"{\"online\":true}","channels":["private-stream@42","public-x"],"socket_id":"1.2"}"#;
    let now = now_secs();
    let request = signed_with(EVENTS, body, SECRET, now);
    assert_eq!(call(&app, request).await, (200, json!({})));
    let batch = r#"{"batch":[{"channel":"a","name":"x","data":"1"},{"channel":"b","name":"y","data":"2","info":"subscription_count"}]}"#;
    let request = signed_with(BATCH, batch, SECRET, now);
    assert_eq!(call(&app, request).await, (200, json!({})));

    let queued = drain(&h.receiver);
    assert_eq!(queued.len(), 2);
    assert_eq!(queued[0].body, body);
    assert_eq!(queued[0].kind, PublishKind::Events);
    assert_eq!(queued[0].app_id, APP_ID);
    assert_eq!(queued[0].events().unwrap().len(), 2);
    assert_eq!(queued[1].body, batch);
    assert_eq!(queued[1].kind, PublishKind::BatchEvents);
    // Each under its request's id.
    assert_eq!(queued[0].id, id_of(EVENTS, body, now));
    assert_eq!(queued[1].id, id_of(BATCH, batch, now));
    assert_ne!(queued[0].id, queued[1].id);
}

#[actix_web::test]
async fn a_replay_is_answered_alike_and_queued_once() {
    let h = harness();
    let app = app!(h);
    let body = event("e", "1", &one_channel());
    let timestamp = now_secs();
    for _ in 0..3 {
        let request = signed_with(EVENTS, &body, SECRET, timestamp);
        assert_eq!(call(&app, request).await, (200, json!({})));
    }
    let queued = drain(&h.receiver);
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].id, id_of(EVENTS, &body, timestamp));
    // The replays of the confirmed request are counted as such.
    let metrics =
        test::call_and_read_body(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(
        metrics
            .lines()
            .any(|line| line.contains(r#"rule="publish_replay""#) && line.ends_with(" 2")),
        "{metrics}"
    );
    // Another request (another second, so another signature) is not a replay.
    let request = signed_with(EVENTS, &body, SECRET, timestamp - 1);
    assert_eq!(call(&app, request).await.0, 200);
    let queued = drain(&h.receiver);
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].id, id_of(EVENTS, &body, timestamp - 1));
}

/// Two copies of one signed request in flight at once: neither is marked done before the
/// other's check, so both are published and answered 200, and both carry the request's id,
/// which the worker applies once.
#[actix_web::test]
async fn two_copies_racing_are_both_queued_under_the_same_id() {
    let h = harness();
    let app = app!(h);
    let body = event("e", "1", &one_channel());
    let timestamp = now_secs();
    *h.sink.gate.lock().unwrap() = Some(Arc::new(tokio::sync::Barrier::new(2)));
    let (first, second) = futures_util::join!(
        call(&app, signed_with(EVENTS, &body, SECRET, timestamp)),
        call(&app, signed_with(EVENTS, &body, SECRET, timestamp)),
    );
    assert_eq!((first, second), ((200, json!({})), (200, json!({}))));
    let ids: Vec<_> = drain(&h.receiver).into_iter().map(|p| p.id).collect();
    let id = id_of(EVENTS, &body, timestamp);
    assert_eq!(ids, [id.clone(), id]);
}

/// A confirm that never came (the broker queued it all the same) is answered 503; the SDK's
/// retry is published again, under the same id, so the worker applies the event once.
#[actix_web::test]
async fn after_a_lost_confirm_the_retry_is_queued_under_the_same_id() {
    let h = harness();
    let app = app!(h);
    let body = event("e", "1", &one_channel());
    let timestamp = now_secs();
    h.sink.lose_confirms.store(true, Ordering::SeqCst);
    let (status, answer) = call(&app, signed_with(EVENTS, &body, SECRET, timestamp)).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("broker_unavailable"))
    );
    h.sink.lose_confirms.store(false, Ordering::SeqCst);
    let request = signed_with(EVENTS, &body, SECRET, timestamp);
    assert_eq!(call(&app, request).await, (200, json!({})));
    let ids: Vec<_> = drain(&h.receiver).into_iter().map(|p| p.id).collect();
    let id = id_of(EVENTS, &body, timestamp);
    assert_eq!(ids, [id.clone(), id]);
    // Confirmed now: a further copy is a replay.
    let request = signed_with(EVENTS, &body, SECRET, timestamp);
    assert_eq!(call(&app, request).await, (200, json!({})));
    assert!(drain(&h.receiver).is_empty());
}

#[actix_web::test]
async fn bad_credentials_and_signatures_are_refused_401_and_queue_nothing() {
    let h = harness();
    let app = app!(h);
    let body = event("e", "1", &one_channel());
    let now = now_secs();

    let wrong_secret = signed_with(EVENTS, &body, "not-the-secret", now);
    let wrong_key = {
        let query = signed_query(
            "other-key",
            &Secret::new(SECRET),
            "POST",
            EVENTS,
            body.as_bytes(),
            now,
        );
        test::TestRequest::post()
            .uri(&format!("{EVENTS}?{query}"))
            .set_payload(body.clone())
    };
    let stale = signed_with(EVENTS, &body, SECRET, now - 601);
    let future = signed_with(EVENTS, &body, SECRET, now + 601);
    // The signature covers the body through body_md5: another body breaks it.
    let other_body = {
        let query = signed_query(
            KEY,
            &Secret::new(SECRET),
            "POST",
            EVENTS,
            body.as_bytes(),
            now,
        );
        test::TestRequest::post()
            .uri(&format!("{EVENTS}?{query}"))
            .set_payload(event("f", "1", &one_channel()))
    };
    // A body_md5 that matches the body, but not what was signed.
    let forged_md5 = {
        let query = signed_query(
            KEY,
            &Secret::new(SECRET),
            "POST",
            EVENTS,
            body.as_bytes(),
            now,
        );
        let other = event("f", "1", &one_channel());
        let query = query.replace(
            &porter_core::publish::body_md5(body.as_bytes()),
            &porter_core::publish::body_md5(other.as_bytes()),
        );
        test::TestRequest::post()
            .uri(&format!("{EVENTS}?{query}"))
            .set_payload(other)
    };
    let unsigned = test::TestRequest::post()
        .uri(EVENTS)
        .set_payload(body.clone());
    let cases = [
        (wrong_secret, "invalid_signature"),
        (wrong_key, "unknown_key"),
        (stale, "stale_timestamp"),
        (future, "stale_timestamp"),
        (other_body, "invalid_body_md5"),
        (forged_md5, "invalid_signature"),
        (unsigned, "missing_auth_parameter"),
    ];
    for (request, code) in cases {
        let (status, answer) = call(&app, request).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some(code)),
            "{answer}"
        );
        assert!(answer["message"].is_string());
    }
    assert!(drain(&h.receiver).is_empty());
    // Failed authentications are counted by the audit middleware, by code.
    let metrics =
        test::call_and_read_body(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(
        metrics.contains(r#"reason="invalid_signature""#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"endpoint="publish-events""#),
        "{metrics}"
    );
}

#[actix_web::test]
async fn another_app_id_is_404_and_a_bad_body_400() {
    let h = harness();
    let app = app!(h);
    let body = event("e", "1", &one_channel());
    let (status, answer) = call(&app, signed("/apps/999/events", &body)).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("unknown_app"))
    );

    for (path, body, code) in [
        (EVENTS, "{not json".to_owned(), "invalid_body"),
        (
            EVENTS,
            r#"{"name":"e","data":{"a":1},"channel":"a"}"#.to_owned(),
            "invalid_body",
        ),
        (
            EVENTS,
            r#"{"name":"e","data":"x"}"#.to_owned(),
            "no_channels",
        ),
        (
            EVENTS,
            r#"{"name":"e","data":"x","channel":"a b"}"#.to_owned(),
            "invalid_channel",
        ),
        (
            EVENTS,
            r#"{"name":"e","data":"x","channel":"a","socket_id":"x"}"#.to_owned(),
            "invalid_socket_id",
        ),
        (
            EVENTS,
            r#"{"name":"e","data":"x","channel":"a","info":"colour"}"#.to_owned(),
            "invalid_info",
        ),
        (BATCH, r#"{"batch":[]}"#.to_owned(), "empty_batch"),
        (BATCH, body.clone(), "invalid_body"),
    ] {
        let (status, answer) = call(&app, signed(path, &body)).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some(code)),
            "{body}: {answer}"
        );
    }
    assert!(drain(&h.receiver).is_empty());
}

#[actix_web::test]
async fn each_of_pushers_limits_is_refused_one_past_it() {
    let h = harness();
    let app = app!(h);
    let channels = |n: usize| (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>();
    let item = r#"{"channel":"a","name":"x","data":"1"}"#;
    let batch_of = |n: usize| format!(r#"{{"batch":[{}]}}"#, vec![item; n].join(","));
    let cases = [
        (
            EVENTS,
            event(&"n".repeat(MAX_EVENT_NAME_LEN + 1), "1", &one_channel()),
            400,
            "invalid_event_name",
        ),
        (
            EVENTS,
            event("e", "1", &channels(MAX_CHANNELS_PER_EVENT + 1)),
            400,
            "too_many_channels",
        ),
        (
            EVENTS,
            event("e", "1", &["c".repeat(MAX_PUBLISH_CHANNEL_LEN + 1)]),
            400,
            "invalid_channel",
        ),
        (
            EVENTS,
            event("e", &"d".repeat(MAX_DATA_BYTES + 1), &one_channel()),
            413,
            "data_too_large",
        ),
        (
            BATCH,
            batch_of(MAX_BATCH_EVENTS + 1),
            400,
            "too_many_events",
        ),
        // Past the gateway's body cap, refused by the size middleware before the handler.
        (
            EVENTS,
            event("e", &"d".repeat(70 * 1024), &one_channel()),
            413,
            "body_too_large",
        ),
    ];
    for (path, body, status, code) in cases {
        let (got, answer) = call(&app, signed(path, &body)).await;
        assert_eq!(
            (got, answer["error"].as_str()),
            (status, Some(code)),
            "{answer}"
        );
    }
    assert!(drain(&h.receiver).is_empty());
    // At each limit, accepted.
    let at_limits = [
        (
            EVENTS,
            event(
                &"n".repeat(MAX_EVENT_NAME_LEN),
                &"d".repeat(MAX_DATA_BYTES),
                &one_channel(),
            ),
        ),
        (EVENTS, event("e", "1", &channels(MAX_CHANNELS_PER_EVENT))),
        (
            EVENTS,
            event("e", "1", &["c".repeat(MAX_PUBLISH_CHANNEL_LEN)]),
        ),
        (BATCH, batch_of(MAX_BATCH_EVENTS)),
    ];
    for (path, body) in at_limits {
        assert_eq!(call(&app, signed(path, &body)).await.0, 200);
    }
    assert_eq!(drain(&h.receiver).len(), 4);
}

#[actix_web::test]
async fn with_the_broker_away_503_and_the_retry_of_the_same_request_is_accepted() {
    let h = harness();
    let app = app!(h);
    let body = event("e", "1", &one_channel());
    let timestamp = now_secs();
    h.sink.down.store(true, Ordering::SeqCst);
    let (status, answer) = call(&app, signed_with(EVENTS, &body, SECRET, timestamp)).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("broker_unavailable"))
    );
    assert!(drain(&h.receiver).is_empty());
    // Back: the very same signed request is not taken for a replay.
    h.sink.down.store(false, Ordering::SeqCst);
    assert_eq!(
        call(&app, signed_with(EVENTS, &body, SECRET, timestamp))
            .await
            .0,
        200
    );
    let queued = drain(&h.receiver);
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].id, id_of(EVENTS, &body, timestamp));
}

#[actix_web::test]
async fn with_the_store_away_503_and_nothing_queued() {
    let h = harness();
    let app = app!(h);
    *h.store_faults.fail.lock().unwrap() = Some("sighted");
    let (status, answer) = call(&app, signed(EVENTS, &event("e", "1", &one_channel()))).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("store_unavailable"))
    );
    assert!(drain(&h.receiver).is_empty());
}

/// The done mark is set after the confirm, best effort: when the store fails then, the answer
/// is still 200 (the broker has it), and a replay is published again, under the same id.
#[actix_web::test]
async fn a_done_mark_the_store_could_not_set_still_answers_200_and_the_replay_keeps_the_id() {
    let h = harness();
    let app = app!(h);
    let body = event("e", "1", &one_channel());
    let timestamp = now_secs();
    *h.store_faults.fail.lock().unwrap() = Some("first_sighting");
    for _ in 0..2 {
        let request = signed_with(EVENTS, &body, SECRET, timestamp);
        assert_eq!(call(&app, request).await, (200, json!({})));
    }
    let ids: Vec<_> = drain(&h.receiver).into_iter().map(|p| p.id).collect();
    let id = id_of(EVENTS, &body, timestamp);
    assert_eq!(ids, [id.clone(), id]);
}

#[actix_web::test]
async fn a_closed_events_queue_is_503_too() {
    let h = harness();
    let Harness {
        state,
        publishing,
        receiver,
        ..
    } = h;
    drop(receiver);
    let app = test::init_service(
        App::new()
            .app_data(state)
            .app_data(publishing)
            .configure(|cfg| porter_gateway::configure(cfg, &Policy::default())),
    )
    .await;
    let (status, answer) = call(&app, signed(EVENTS, &event("e", "1", &one_channel()))).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("broker_unavailable"))
    );
}

#[actix_web::test]
async fn without_publishing_configured_the_endpoints_answer_404() {
    let h = harness();
    let app = test::init_service(
        App::new()
            .app_data(h.state.clone())
            .configure(|cfg| porter_gateway::configure(cfg, &Policy::default())),
    )
    .await;
    let (status, answer) = call(&app, signed(EVENTS, &event("e", "1", &one_channel()))).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("publishing_disabled"))
    );
}

/// `/readyz` says whether publications can be queued: a gateway whose events publisher is not
/// connected would answer every publish 503, so it is not ready, and says why.
#[actix_web::test]
async fn readyz_is_not_ready_while_the_events_publisher_is_away() {
    let h = harness();
    let app = app!(h);
    for (down, status) in [(false, 200), (true, 503)] {
        h.sink.down.store(down, Ordering::SeqCst);
        let response =
            test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
        assert_eq!(response.status().as_u16(), status, "publisher down: {down}");
        let body: Value = test::read_body_json(response).await;
        assert_eq!(body["events"], !down, "{body}");
        assert_eq!(body["broker"], true, "{body}");
    }
}
