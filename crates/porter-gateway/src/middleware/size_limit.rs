//! Refuses, before any handler runs, a request whose headers or declared body are too
//! large (`crate::http::limits::oversized`).

use actix_web::Error;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

use crate::http::limits::oversized;

pub async fn size_limit(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if let Some(state) = super::state_of(&request)
        && let Some(error) = oversized(request.headers(), state.protection.config.max_header_bytes)
    {
        return Ok(request.error_response(error).map_into_right_body());
    }
    next.call(request)
        .await
        .map(ServiceResponse::map_into_left_body)
}
