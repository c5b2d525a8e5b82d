//! Answers every error response in the JSON error shape: an error response that does not
//! carry an [`ApiError`] (an extractor's `PayloadError`, a query string actix could not read,
//! the body deadline) or a bare error status with an empty body (no route, no such method)
//! is replaced by the [`ApiError`] of `crate::http::framework_errors`, with a stable code.
//! The new response carries that `ApiError`, so the audit middleware outside this one audits
//! and counts it like the gateway's own refusals; other headers (`Allow`, CORS) and the
//! response's extensions are kept.
//!
//! Errors that actix-http answers before the app sees a request (a malformed request line
//! or header, more than 96 headers, a head over 128 KiB, a head that times out) never reach
//! any middleware: see `docs/protection.md`.

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse};

use crate::error::ApiError;
use crate::http::framework_errors::{from_framework, from_status};

pub async fn json_errors(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let response = next.call(request).await?;
    let Some(error) = replacement(&response) else {
        return Ok(response.map_into_left_body());
    };
    let (request, mut old) = response.into_parts();
    let mut new = HttpResponse::from_error(error);
    // The new body's own headers win; every value of the others is kept.
    let own: Vec<_> = new.headers().keys().cloned().collect();
    for (name, value) in old.headers() {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH && !own.contains(name) {
            new.headers_mut().append(name.clone(), value.clone());
        }
    }
    let extensions = std::mem::take(&mut *old.extensions_mut());
    new.extensions_mut().extend(extensions);
    Ok(ServiceResponse::new(request, new).map_into_right_body())
}

/// The `ApiError` that should answer instead of `response`, if it is one of actix's.
fn replacement<B: MessageBody>(response: &ServiceResponse<B>) -> Option<ApiError> {
    let status = response.status();
    match response.response().error() {
        Some(error) if error.as_error::<ApiError>().is_some() => None,
        Some(error) => Some(from_framework(error, status)),
        None if (status.is_client_error() || status.is_server_error())
            && matches!(
                response.response().body().size(),
                BodySize::None | BodySize::Sized(0)
            ) =>
        {
            Some(from_status(status))
        }
        None => None,
    }
}
