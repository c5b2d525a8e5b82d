//! Counts every request in `porter_http_requests_total{endpoint, status}`. The endpoint is the
//! name `crate::routes` gives the matched resource; a request that matched none (a 404, or
//! one refused before routing) counts as `other`.

use actix_web::Error;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

pub async fn track(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let state = super::state_of(&request);
    let response = next.call(request).await?;
    if let Some(state) = state {
        let endpoint = response.request().match_name().unwrap_or("other");
        state.metrics.request(endpoint, response.status().as_u16());
    }
    Ok(response)
}
