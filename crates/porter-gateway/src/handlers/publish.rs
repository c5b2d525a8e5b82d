//! Publishing through Porter: `POST /apps/{app_id}/events` and `POST /apps/{app_id}/batch_events`
//! in the wire format of Pusher's HTTP API, so that an application's official server SDK
//! points at Porter by host and port and nothing else changes.
//!
//! A request is checked (`porter_core::publish`: the app id, the request signature, the body
//! and Pusher's limits), then handed whole to the durable events queue as one
//! [`Publication`], and answered 200 `{}` only once the broker confirmed it
//! ([`EventSink::publish`]). Workers apply it later (retained state, upstream forwarding,
//! session fan-out). The answer never carries `info` attributes: the counts are the realtime
//! server's, and Porter answers before it has the event.
//!
//! Architecture Invariant: a 200 means the broker confirmed the publication, and every copy
//! of one signed request is the same publication: its id is the request's
//! ([`publication_id`], from the verified `auth_signature`), so the worker, which applies a
//! publication once per id, applies it once however many copies were queued. With the broker
//! away (or its confirm timing out) the answer is 503 `broker_unavailable` and nothing is
//! marked: the message may or may not be on the queue, and the SDK's retry is published
//! again under the same id, which is safe.
//!
//! Replays: a request confirmed once is marked done in the store (`Store::first_sighting`,
//! with a TTL of twice the timestamp window) only AFTER the broker's confirm; each request
//! first reads the mark (`Store::sighted`, which marks nothing), and a done one is answered
//! the same 200 and queues nothing. Copies racing before the mark both publish, with the same
//! id. So the same event sent twice by the same app within one second (identical signature)
//! is applied once.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use porter_broker::events::EventSink;
use porter_broker::now_ms;
use porter_core::publish::{
    ApiCredentials, Publication, PublishError, PublishErrorClass, PublishKind, SignedRequest,
    TIMESTAMP_WINDOW_SECS, publication_id,
};
use porter_core::signing::Secret;
use porter_store::Store;
use serde_json::json;
use tracing::{debug, warn};

use crate::audit::{self, Who};
use crate::error::ApiError;
use crate::state::AppState;

/// What the publish endpoints need beyond [`AppState`]: the app's credentials (the gateway's
/// `PUSHER_APP_ID`, `PUSHER_KEY`, `PUSHER_SECRET`) and the events queue. Registered as its own
/// `web::Data`; without it the endpoints answer 404 `publishing_disabled`.
pub struct Publishing {
    app_id: String,
    key: String,
    secret: Secret,
    sink: Arc<dyn EventSink>,
}

impl Publishing {
    pub fn new(app_id: &str, key: &str, secret: Secret, sink: Arc<dyn EventSink>) -> Publishing {
        Publishing {
            app_id: app_id.to_owned(),
            key: key.to_owned(),
            secret,
            sink,
        }
    }

    /// True while the events queue can take publications.
    pub fn is_ready(&self) -> bool {
        self.sink.is_ready()
    }
}

/// `POST /apps/{app_id}/events`: one event to one or more channels.
pub async fn events(
    request: HttpRequest,
    app_id: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
    publishing: Option<web::Data<Publishing>>,
) -> Result<HttpResponse, ApiError> {
    let publishing = enabled(publishing)?;
    publish(
        PublishKind::Events,
        &request,
        &app_id,
        &body,
        &state,
        &publishing,
    )
    .await
}

/// `POST /apps/{app_id}/batch_events`: up to ten events, one channel each.
pub async fn batch_events(
    request: HttpRequest,
    app_id: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
    publishing: Option<web::Data<Publishing>>,
) -> Result<HttpResponse, ApiError> {
    let publishing = enabled(publishing)?;
    publish(
        PublishKind::BatchEvents,
        &request,
        &app_id,
        &body,
        &state,
        &publishing,
    )
    .await
}

fn enabled(publishing: Option<web::Data<Publishing>>) -> Result<web::Data<Publishing>, ApiError> {
    publishing.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "publishing_disabled",
            "this gateway does not accept published events",
        )
    })
}

/// The status and JSON error of a refused publish: Pusher's statuses.
fn refusal(error: PublishError) -> ApiError {
    let status = match error.class() {
        PublishErrorClass::NotFound => StatusCode::NOT_FOUND,
        PublishErrorClass::Unauthorized => StatusCode::UNAUTHORIZED,
        PublishErrorClass::BadRequest => StatusCode::BAD_REQUEST,
        PublishErrorClass::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
    };
    ApiError::new(status, error.code().as_str(), error.to_string())
}

async fn publish(
    kind: PublishKind,
    request: &HttpRequest,
    app_id: &str,
    body: &[u8],
    state: &AppState,
    publishing: &Publishing,
) -> Result<HttpResponse, ApiError> {
    if app_id != publishing.app_id {
        return Err(refusal(PublishError::UnknownApp));
    }
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(request.query_string().as_bytes())
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
    let credentials = ApiCredentials {
        key: &publishing.key,
        secret: &publishing.secret,
    };
    let signed = SignedRequest {
        method: request.method().as_str(),
        path: request.path(),
        query: &query,
        body,
    };
    let verified = credentials
        .verify(&signed, now_ms() / 1000)
        .map_err(refusal)?;
    let id = publication_id(app_id, &verified);
    let (publication, events) =
        Publication::accept(id, app_id.to_owned(), kind, body, now_ms()).map_err(refusal)?;

    let done_key = format!("publish:{app_id}:{}", verified.signature);
    if already_done(state.store.as_ref(), &done_key).await? {
        // Answered 200 (the SDK must not retry), so audited here rather than by the middleware.
        let who = Who::ip(state.protection.proxies.client_ip(request));
        audit::refused(&who, None, "publish_replay", "publish_replayed");
        state.metrics.protection_refusal("publish_replay");
        return Ok(HttpResponse::Ok().json(json!({})));
    }
    if let Err(error) = publishing.sink.publish(&publication).await {
        warn!(%error, publication = %publication.id, "the events queue did not take a publication");
        // Nothing is marked: the retry publishes again, under the same id, so even if the
        // broker did keep this copy (a confirm that timed out) the worker applies it once.
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            "the event broker did not confirm the event; it may or may not have been queued; \
             retrying the same request is safe",
        ));
    }
    mark_done(state.store.as_ref(), &done_key).await;
    debug!(publication = %publication.id, ?kind, events, "publication queued");
    Ok(HttpResponse::Ok().json(json!({})))
}

/// Whether this signed request was confirmed before (within the mark's TTL). Reads only: the
/// mark is set after the confirm, by [`mark_done`].
async fn already_done(store: &dyn Store, done_key: &str) -> Result<bool, ApiError> {
    store.sighted(done_key).await.map_err(|error| {
        warn!(%error, "could not check a publication for replay");
        ApiError::store_unavailable()
    })
}

/// Marks a confirmed request done for twice the timestamp window (a timestamp may be that far
/// from another within the window). Best effort: the publication is confirmed whatever
/// happens here, and without the mark a replay is only published again under the same id.
async fn mark_done(store: &dyn Store, done_key: &str) {
    let ttl = Duration::from_secs(2 * TIMESTAMP_WINDOW_SECS);
    if let Err(error) = store.first_sighting(done_key, ttl).await {
        warn!(%error, "could not mark a confirmed publication done; a replay would be published again");
    }
}
