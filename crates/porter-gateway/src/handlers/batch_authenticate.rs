//! `GET /pusher/batch-authenticate?app_id=&socket_id=&channels=…`: the batch endpoint. The
//! answer is an object keyed by channel, each value a signed auth or `{"reason"}`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::authorize::outcome::batch_body;
use crate::error::ApiError;
use crate::http::fields::Fields;
use crate::state::AppState;

pub async fn batch_authenticate(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = Fields::from_form(request.query_string().as_bytes());
    match query.first("app_id") {
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
    let socket_id = super::checked_socket_id(query.first("socket_id"))?;
    let channels: Vec<String> = query
        .any_of(&["channels", "channels[]"])
        .map(str::to_owned)
        .collect();
    if channels.is_empty() {
        return Err(ApiError::bad_request(
            "missing_channels",
            "give at least one `channels` parameter",
        ));
    }
    if channels.len() > state.config.max_channels.saturating_mul(2) {
        // Far beyond the limit even before deduplication: refuse without more work.
        return Err(state.config.too_many_channels());
    }
    let caller = state
        .rate_limiter()
        .identify(&state.identity, &request)
        .await?;
    let results = state
        .authorizer()
        .batch(&caller, socket_id, &channels)
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Accept-CH", "DPR"))
        .insert_header(("Accept-CH-Lifetime", "3600"))
        .json(batch_body(&results)))
}
