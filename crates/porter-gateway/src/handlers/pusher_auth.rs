//! `POST /pusher/auth`: pusher-js's single-channel request (`socket_id`, `channel_name`),
//! answered with the signed auth or a JSON error (403 for a refusal), and the
//! `pusher-js-auth` batch plugin's indexed form (`channel_name[0]=…`), answered in the
//! plugin's shape. Form or JSON bodies, told apart by their keys.

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{HttpRequest, HttpResponse, web};
use porter_core::reason::Reason;

use crate::authorize::outcome::{Outcome, plugin_body, status_of};
use crate::error::ApiError;
use crate::http::fields::Fields;
use crate::state::AppState;

pub async fn pusher_auth(
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
    let indexed = fields.indexed("channel_name");
    if !indexed.is_empty() {
        if indexed.len() > state.config.max_channels {
            return Err(state.config.too_many_channels());
        }
        let results = state
            .authorizer()
            .batch(&caller, socket_id, &indexed)
            .await?;
        return Ok(HttpResponse::Ok().json(plugin_body(&results)));
    }
    let channel = fields
        .first("channel_name")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing_channel_name", "channel_name is required"))?
        .to_owned();
    let mut results = state
        .authorizer()
        .batch(&caller, socket_id, &[channel])
        .await?;
    match results.pop().map(|(_, outcome)| outcome) {
        Some(Outcome::Signed(signed)) => Ok(HttpResponse::Ok().json(signed)),
        Some(refused) => Err(refusal(refused.reason().unwrap_or(Reason::Internal))),
        None => Err(refusal(Reason::Internal)),
    }
}

/// A single-channel refusal, with the status of its reason's class.
fn refusal(reason: Reason) -> ApiError {
    let (status, code) = status_of(&reason);
    ApiError::new(status, code, reason.to_string())
}
