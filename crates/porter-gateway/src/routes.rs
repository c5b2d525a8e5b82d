//! The HTTP endpoints.
//!
//! - `GET /pusher/batch-authenticate`: seed 000's batch endpoint.
//! - `POST /pusher/auth`: pusher-js's single-channel request, or the `pusher-js-auth` batch
//!   plugin's indexed form (`channel_name[0]=…`), told apart by their keys.
//! - `POST /presence/heartbeat`, `POST /pusher/webhook`: global presence (`presence.rs`).
//! - `/healthz`, `/readyz`, `/metrics`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use crate::AppState;
use crate::batch::{self, ChannelResult};
use crate::error::ApiError;
use porter_core::channel::validate_socket_id;
use porter_core::reason;

/// Largest request body accepted (form or JSON).
pub const MAX_BODY: usize = 64 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(MAX_BODY))
        .route(
            "/pusher/batch-authenticate",
            web::get().to(batch_authenticate),
        )
        .route("/pusher/auth", web::post().to(pusher_auth))
        .route(
            "/presence/heartbeat",
            web::post().to(crate::presence::heartbeat),
        )
        .route("/pusher/webhook", web::post().to(crate::presence::webhook))
        .route("/auth", web::post().to(crate::sessions::create))
        .service(
            // Rate limited by IP and client id before the admin token is looked at.
            web::resource("/admin/tokens/revoke")
                .wrap(actix_web::middleware::from_fn(
                    crate::protection::rate_limit_before_handler,
                ))
                .route(web::post().to(crate::revocation::revoke)),
        )
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .configure(crate::admin_api::configure);
}

/// Key/value pairs of a query string or form body; `+` and `%xx` decoded.
fn pairs(input: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(input).into_owned().collect()
}

fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn checked_socket_id(socket_id: Option<&str>) -> Result<&str, ApiError> {
    let socket_id = socket_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing_socket_id", "socket_id is required"))?;
    validate_socket_id(socket_id)
        .map_err(|e| ApiError::bad_request("invalid_socket_id", e.to_string()))?;
    Ok(socket_id)
}

/// [`batch::authorize`], with a request-level 401 (a revoked token) audited and counted.
async fn authorize_audited(
    state: &AppState,
    request: &HttpRequest,
    identity: &crate::identity::Identity,
    socket_id: &str,
    channels: &[String],
) -> Result<Vec<(String, ChannelResult)>, ApiError> {
    batch::authorize(state, identity, socket_id, channels)
        .await
        .inspect_err(|e| crate::protection::audit_unauthorized(state, request, Some(identity), e))
}

/// Counts a request by endpoint and the status it got.
pub(crate) fn record(state: &AppState, endpoint: &str, result: &Result<HttpResponse, ApiError>) {
    let status = match result {
        Ok(response) => response.status(),
        Err(error) => error.status,
    };
    state.metrics.request(endpoint, status.as_u16());
}

async fn batch_authenticate(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let result = batch_authenticate_inner(&request, &state).await;
    record(&state, "batch-authenticate", &result);
    result
}

async fn batch_authenticate_inner(
    request: &HttpRequest,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let query = pairs(request.query_string().as_bytes());
    match first(&query, "app_id") {
        Some(app_id) if app_id == state.signer.app_id() => {}
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_app",
                "app_id is not served here",
            ));
        }
        None => {
            return Err(ApiError::bad_request(
                "missing_app_id",
                "app_id is required",
            ));
        }
    }
    let socket_id = checked_socket_id(first(&query, "socket_id"))?;
    let channels: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "channels" || k == "channels[]")
        .map(|(_, v)| v.clone())
        .collect();
    if channels.is_empty() {
        return Err(ApiError::bad_request(
            "missing_channels",
            "give at least one `channels` parameter",
        ));
    }
    if channels.len() > state.config.max_channels.saturating_mul(2) {
        // Far beyond the limit even before deduplication: refuse without more work.
        return Err(too_many(state));
    }
    let identity = crate::protection::identify_rate_limited(state, request).await?;
    let results = authorize_audited(state, request, &identity, socket_id, &channels).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Accept-CH", "DPR"))
        .insert_header(("Accept-CH-Lifetime", "3600"))
        .json(batch::batch_body(&results)))
}

fn too_many(state: &AppState) -> ApiError {
    ApiError::bad_request(
        "too_many_channels",
        format!("at most {} channels per request", state.config.max_channels),
    )
}

/// The fields of a `POST /pusher/auth` body, from a form or JSON.
struct AuthRequest {
    socket_id: Option<String>,
    /// `channel_name` of pusher-js's single request.
    single: Option<String>,
    /// `channel_name[i]` of the batch plugin, in index order.
    indexed: Vec<String>,
}

fn parse_auth_body(request: &HttpRequest, body: &[u8]) -> Result<AuthRequest, ApiError> {
    let is_json = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        let value: Value = serde_json::from_slice(body)
            .map_err(|_| ApiError::bad_request("invalid_body", "the body is not valid JSON"))?;
        let object = value.as_object().ok_or_else(|| {
            ApiError::bad_request("invalid_body", "the body must be a JSON object")
        })?;
        let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
        let indexed = match object.get("channel_name") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        return Ok(AuthRequest {
            socket_id: text("socket_id"),
            single: text("channel_name"),
            indexed,
        });
    }
    let fields = pairs(body);
    let mut indexed: Vec<(usize, String)> = fields
        .iter()
        .filter_map(|(k, v)| {
            let index = k
                .strip_prefix("channel_name[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            Some((index, v.clone()))
        })
        .collect();
    indexed.sort_by_key(|(i, _)| *i);
    Ok(AuthRequest {
        socket_id: first(&fields, "socket_id").map(str::to_owned),
        single: first(&fields, "channel_name").map(str::to_owned),
        indexed: indexed.into_iter().map(|(_, v)| v).collect(),
    })
}

async fn pusher_auth(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let result = pusher_auth_inner(&request, &body, &state).await;
    record(&state, "auth", &result);
    result
}

async fn pusher_auth_inner(
    request: &HttpRequest,
    body: &[u8],
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let form = parse_auth_body(request, body)?;
    let socket_id = checked_socket_id(form.socket_id.as_deref())?;
    let identity = crate::protection::identify_rate_limited(state, request).await?;
    if !form.indexed.is_empty() {
        if form.indexed.len() > state.config.max_channels {
            return Err(too_many(state));
        }
        let results =
            authorize_audited(state, request, &identity, socket_id, &form.indexed).await?;
        return Ok(HttpResponse::Ok().json(plugin_body(&results)));
    }
    let channel = form
        .single
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing_channel_name", "channel_name is required"))?;
    let mut results = authorize_audited(state, request, &identity, socket_id, &[channel]).await?;
    match results.pop().map(|(_, result)| result) {
        Some(Ok(signed)) => Ok(HttpResponse::Ok().json(signed)),
        Some(Err(reason)) => Err(refusal(reason)),
        None => Err(refusal(reason::INTERNAL.to_owned())),
    }
}

/// A single-channel refusal: 403 for decisions, 504/503 when no decision was made.
fn refusal(why: String) -> ApiError {
    let (status, code) = match why.as_str() {
        reason::TIMEOUT | reason::EXPIRED | reason::TIME_LIMIT_EXCEEDED => {
            (StatusCode::GATEWAY_TIMEOUT, "timeout")
        }
        reason::BROKER_UNAVAILABLE
        | reason::INTERNAL
        | reason::AUTHORIZER_UNAVAILABLE
        | reason::OVERLOADED => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        reason::INVALID_CHANNEL | reason::PUBLIC_CHANNEL => {
            (StatusCode::BAD_REQUEST, "invalid_channel")
        }
        _ => (StatusCode::FORBIDDEN, "forbidden"),
    };
    ApiError::new(status, code, why)
}

/// The `pusher-js-auth` plugin's format: `{"<channel>": {"status": 200, "data": {…}}}`.
fn plugin_body(results: &[(String, ChannelResult)]) -> Value {
    let mut body = serde_json::Map::with_capacity(results.len());
    for (name, result) in results {
        let value = match result {
            Ok(signed) => json!({ "status": 200, "data": signed }),
            Err(reason) => json!({ "status": 403, "reason": reason }),
        };
        body.insert(name.clone(), value);
    }
    Value::Object(body)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let broker = state.tasks.is_ready();
    let store = state.store.ping().await.is_ok();
    let status = if broker && store {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status).json(json!({ "broker": broker, "store": store }))
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let pending = state.tasks.pending();
    let mut body = state.metrics.render(pending.len(), pending.dropped());
    body.push_str(&state.metrics.render_protection(
        state.protection.tasks_in_flight(),
        state.protection.tasks_in_flight_cap(),
    ));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body)
}
