//! The admin token guard of the `/admin` scope: without the token no admin handler runs
//! (`crate::admin_guard`).

use actix_web::Error;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

pub async fn require_admin(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if let Some(state) = super::state_of(&request)
        && let Err(error) = state.admin.check(request.request())
    {
        return Ok(request.error_response(error).map_into_right_body());
    }
    next.call(request)
        .await
        .map(ServiceResponse::map_into_left_body)
}
