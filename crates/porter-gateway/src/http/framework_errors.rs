//! actix-web's own refusals as [`ApiError`]s: what an extractor, the router or the body
//! deadline answered, reshaped by `crate::middleware::json_errors` into the JSON error shape
//! with a stable code, so a client never has to parse actix's plain-text messages and the
//! audit middleware counts them like the gateway's own refusals.
//!
//! Messages are fixed per cause (or actix's description of a query string it could not
//! read): they never echo a body or a header.

use actix_web::error::{PayloadError, QueryPayloadError};
use actix_web::http::StatusCode;

use super::limits::{BodyTimedOut, body_timed_out, body_too_large, headers_too_large};
use crate::error::ApiError;

/// The JSON error for an actix error that is not an [`ApiError`], answered with `status`.
pub fn from_framework(error: &actix_web::Error, status: StatusCode) -> ApiError {
    if let Some(payload) = error.as_error::<PayloadError>() {
        return from_payload(payload);
    }
    if let Some(query) = error.as_error::<QueryPayloadError>() {
        return ApiError::bad_request("invalid_query", query.to_string());
    }
    from_status(status)
}

fn from_payload(error: &PayloadError) -> ApiError {
    match error {
        PayloadError::Overflow => body_too_large(),
        PayloadError::Io(io) => match io.get_ref().and_then(|e| e.downcast_ref::<BodyTimedOut>()) {
            Some(timed_out) => body_timed_out(Some(timed_out.after)),
            None => unreadable_body(),
        },
        _ => unreadable_body(),
    }
}

fn unreadable_body() -> ApiError {
    ApiError::bad_request(
        "invalid_body",
        "the request body could not be read (cut short, badly chunked or badly encoded)",
    )
}

/// The JSON error for a bare error status (an actix response with no error and no body:
/// no route, no such method, …), by status.
pub fn from_status(status: StatusCode) -> ApiError {
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such endpoint"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this endpoint does not take this method (see Allow)",
        ),
        StatusCode::REQUEST_TIMEOUT => return body_timed_out(None),
        StatusCode::PAYLOAD_TOO_LARGE => return body_too_large(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => return headers_too_large(None),
        StatusCode::LENGTH_REQUIRED => ("length_required", "the request needs a Content-Length"),
        StatusCode::URI_TOO_LONG => ("uri_too_long", "the request URI is too long"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "the Content-Type of the body is not accepted here",
        ),
        status if status.is_server_error() => ("internal_error", "the gateway failed"),
        _ => ("bad_request", "the request could not be read"),
    };
    ApiError::new(status, code, message)
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::time::Duration;

    use super::*;
    use crate::error::Audit;

    #[test]
    fn payload_errors_map_to_their_refusals() {
        let overflow = from_framework(
            &PayloadError::Overflow.into(),
            StatusCode::PAYLOAD_TOO_LARGE,
        );
        assert_eq!(
            (overflow.status, overflow.code, overflow.audit),
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                Audit::Refused {
                    rule: "max_body_bytes"
                }
            )
        );
        let after = Duration::from_millis(250);
        let timed_out = PayloadError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            BodyTimedOut { after },
        ));
        let error = from_framework(&timed_out.into(), StatusCode::BAD_REQUEST);
        assert_eq!(error.status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(error.code, "request_timeout");
        assert!(error.message.contains("250 ms"), "{}", error.message);
        // Any other I/O error, even a timeout that is not the body deadline, is a bad body.
        let other = PayloadError::Io(io::Error::from(io::ErrorKind::TimedOut));
        let error = from_framework(&other.into(), StatusCode::BAD_REQUEST);
        assert_eq!(
            (error.status, error.code),
            (StatusCode::BAD_REQUEST, "invalid_body")
        );
        let incomplete = from_framework(
            &PayloadError::Incomplete(None).into(),
            StatusCode::BAD_REQUEST,
        );
        assert_eq!(incomplete.code, "invalid_body");
    }

    #[test]
    fn every_error_status_gets_a_stable_code_and_keeps_its_status() {
        for (status, code) in [
            (StatusCode::BAD_REQUEST, "bad_request"),
            (StatusCode::NOT_FOUND, "not_found"),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            (StatusCode::IM_A_TEAPOT, "bad_request"),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        ] {
            let error = from_status(status);
            assert_eq!((error.status, error.code), (status, code));
            assert!(!error.message.is_empty());
        }
    }
}
