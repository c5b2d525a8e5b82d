//! Charges the IP (and the client id header) of a request before its handler runs: for the
//! routes that authenticate by other means than a user's identity (`/admin`, `POST /auth`,
//! the scoped-token endpoints), so guessing an admin token, a scoped token or a user's email
//! costs rate-limit budget like guessing a user's token.

use actix_web::Error;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

pub async fn rate_limit_first(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if let Some(state) = super::state_of(&request)
        && let Err(error) = state
            .rate_limiter()
            .charge_anonymous(request.request())
            .await
    {
        return Ok(request.error_response(error).map_into_right_body());
    }
    next.call(request)
        .await
        .map(ServiceResponse::map_into_left_body)
}
