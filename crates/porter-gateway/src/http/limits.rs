//! Request size limits: header bytes and the declared body length, checked before any
//! handler runs (by `crate::middleware::size_limit`), and the body cap the extractors apply.

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;

use crate::error::{ApiError, Audit};

/// Largest request body accepted (form or JSON).
pub const MAX_BODY: usize = 64 * 1024;

/// The refusal of a request whose header names and values together exceed `max_header_bytes`
/// (431 `headers_too_large`) or whose declared `Content-Length` exceeds [`MAX_BODY`]
/// (413 `body_too_large`). Bodies without a declared length are still cut off at `MAX_BODY`
/// by the extractors.
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
        Some(
            ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                format!("request headers may total at most {max_header_bytes} bytes"),
            )
            .audited(Audit::Refused {
                rule: "max_header_bytes",
            }),
        )
    } else if body_bytes > MAX_BODY as u64 {
        Some(
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body may be at most {MAX_BODY} bytes"),
            )
            .audited(Audit::Refused {
                rule: "max_body_bytes",
            }),
        )
    } else {
        None
    }
}
