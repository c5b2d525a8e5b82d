//! `POST /pusher/user-auth`: pusher-js 8's `userAuthentication` request (`signin()`): a form
//! (or JSON) body with `socket_id` and the app's configured params, the caller's credentials
//! in its configured headers (`Authorization`, `X-Session-ID`). Answered 200
//! `{"auth", "user_data"}`, or a JSON error (403 when refused).
//!
//! The IP is charged and the caller resolved by `RateLimiter::identify`, as on every endpoint
//! that resolves a caller; the decision, revocation check, signing and audit are
//! `Authorizer::sign_in` (`crate::authorize::signin`).

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::ApiError;
use crate::http::fields::Fields;
use crate::state::AppState;

pub async fn user_auth(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let fields = Fields::from_body(content_type, &body)
        .map_err(|error| ApiError::bad_request("invalid_body", error.to_string()))?;
    let socket_id = super::checked_socket_id(fields.first("socket_id"))?;
    let caller = state
        .rate_limiter()
        .identify(&state.identity, &request)
        .await?;
    let auth = state.authorizer().sign_in(&caller, socket_id).await?;
    Ok(HttpResponse::Ok().json(auth))
}
