//! Request size and time limits: header bytes and the declared body length, checked before any
//! handler runs (by `crate::middleware::size_limit`), the body cap the extractors apply, and
//! the edge's time and connection bounds ([`EdgeLimits`]: the body deadline enforced by
//! `crate::middleware::body_timeout`, the rest by the HTTP server the binary builds).

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;

use crate::error::{ApiError, Audit};

/// Largest request body accepted (form or JSON).
pub const MAX_BODY: usize = 64 * 1024;

/// Time and connection bounds of the HTTP edge. The app reads [`EdgeLimits::body_timeout`]
/// from its app data (the default when absent); `porter gateway` gives the others to actix's
/// `HttpServer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeLimits {
    /// From the request head to the last byte of its body; past it the request gets 408
    /// `request_timeout`.
    pub body_timeout: Duration,
    /// From the connection (or the previous response) to a complete request head; past it
    /// actix answers 408 with an empty body and closes.
    pub head_timeout: Duration,
    /// How long a closing connection waits for the client to shut down its side.
    pub disconnect_timeout: Duration,
    /// Connections one HTTP worker serves at once; past it new connections wait in the
    /// listen backlog.
    pub max_connections: usize,
}

impl Default for EdgeLimits {
    fn default() -> EdgeLimits {
        EdgeLimits {
            body_timeout: Duration::from_secs(5),
            head_timeout: Duration::from_secs(5),
            disconnect_timeout: Duration::from_secs(1),
            max_connections: 4096,
        }
    }
}

/// What a body that missed its deadline reads as: the I/O error inside the `PayloadError`
/// the extractors see, told apart from other I/O errors by this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request body did not arrive within {} ms", .after.as_millis())]
pub struct BodyTimedOut {
    pub after: Duration,
}

/// 408 `request_timeout`, audited as the `body_timeout` rule.
pub fn body_timed_out(after: Option<Duration>) -> ApiError {
    let message = match after {
        Some(after) => BodyTimedOut { after }.to_string(),
        None => "the request did not arrive in time".to_owned(),
    };
    ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message).audited(Audit::Refused {
        rule: "body_timeout",
    })
}

/// 413 `body_too_large`, audited as the `max_body_bytes` rule.
pub fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body may be at most {MAX_BODY} bytes"),
    )
    .audited(Audit::Refused {
        rule: "max_body_bytes",
    })
}

/// 431 `headers_too_large`, audited as the `max_header_bytes` rule.
pub fn headers_too_large(max_header_bytes: Option<usize>) -> ApiError {
    let message = match max_header_bytes {
        Some(max) => format!("request headers may total at most {max} bytes"),
        None => "the request headers are too large".to_owned(),
    };
    ApiError::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        message,
    )
    .audited(Audit::Refused {
        rule: "max_header_bytes",
    })
}

/// The refusal of a request whose header names and values together exceed `max_header_bytes`
/// (431 `headers_too_large`) or whose declared `Content-Length` exceeds [`MAX_BODY`]
/// (413 `body_too_large`). Bodies without a declared length are still cut off at `MAX_BODY`
/// by the extractors (and answered alike, by `crate::http::framework_errors`).
pub fn oversized(headers: &HeaderMap, max_header_bytes: usize) -> Option<ApiError> {
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    let body_bytes = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if header_bytes > max_header_bytes {
        Some(headers_too_large(Some(max_header_bytes)))
    } else if body_bytes > MAX_BODY as u64 {
        Some(body_too_large())
    } else {
        None
    }
}
