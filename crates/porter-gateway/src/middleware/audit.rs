//! Audits every error response: a failed authentication or a protection refusal is logged
//! under `porter::audit` (`crate::audit`) and counted, from the [`Audit`] its [`ApiError`]
//! carries and the caller that identification left in the request.
//!
//! Architecture Invariant: request-level refusals and failed authentications are audited
//! here and only here, for every route: a handler returns the error and is done.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};

use crate::audit::{self, KnownCaller, Who};
use crate::error::{ApiError, Audit};
use crate::http::client::client_id_of;

pub async fn audit(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let state = super::state_of(&request);
    let response = next.call(request).await?;
    let (Some(state), Some(error)) = (
        state,
        response
            .response()
            .error()
            .and_then(|e| e.as_error::<ApiError>()),
    ) else {
        return Ok(response);
    };
    let request = response.request();
    let ip = state.protection.proxies.client_ip(request);
    let known = request.extensions().get::<KnownCaller>().cloned();
    let who = match &known {
        Some(known) => known.who(ip),
        None => Who {
            client: client_id_of(request),
            ..Who::ip(ip)
        },
    };
    match error.audit {
        Audit::Silent => {}
        Audit::AuthFailed(code) => {
            audit::auth_failed(&who, code);
            state.metrics.auth_failure(code);
        }
        Audit::Refused { rule } => {
            audit::refused(&who, None, rule, error.code);
            state.metrics.protection_refusal(rule);
        }
    }
    Ok(response)
}
