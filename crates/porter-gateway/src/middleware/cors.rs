//! CORS for browser clients that call the gateway from another origin.
//!
//! Off unless origins are configured (`PORTER_CORS_ORIGINS`; `*` allows any). For an allowed
//! `Origin`, a preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered 204 here,
//! without reaching a handler, and every other response (errors included, so a browser can
//! read a 429's `Retry-After`) carries `Access-Control-Allow-Origin`. A preflight from an
//! origin that is not allowed gets 403 `cors_origin_not_allowed`; other requests from it pass
//! through without CORS headers, so the browser withholds the response from the page. With
//! CORS on, every response carries `Vary: Origin` (added to any `Vary` already there), so a
//! shared cache never hands one origin's answer to another.
//!
//! Credentials mode is not enabled: callers authenticate with headers (`Authorization`,
//! `X-Session-ID`), not cookies.

use actix_web::HttpResponse;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, VARY};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;

use crate::error::{ApiError, Audit};

/// Request headers a browser may send cross-origin.
pub const ALLOWED_HEADERS: &str =
    "authorization, content-type, x-client-id, x-client-pk, x-session-id";
/// Response headers a page may read.
const EXPOSED_HEADERS: &str = "retry-after";
/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE: &str = "600";

/// Whether `origin` is in the configured list.
pub fn allows(origins: &[String], origin: &str) -> bool {
    origins.iter().any(|o| o == "*" || o == origin)
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// Adds `Vary: Origin` beside whatever `Vary` the response already has (e.g. the
/// compression's `Accept-Encoding`), once.
fn vary_origin(headers: &mut HeaderMap) {
    let present = headers
        .get_all(VARY)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case("origin") || v.trim() == "*");
    if !present {
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }
}

/// The CORS middleware; a no-op when no origins are configured.
pub async fn cors(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let origin = request
        .headers()
        .get("origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let state = super::state_of(&request);
    let Some(state) = state.filter(|s| !s.protection.config.cors_origins.is_empty()) else {
        return next
            .call(request)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let Some(origin) = origin else {
        // The answer to a request without `Origin` differs from one with it: a shared
        // cache must not hand it to a browser.
        let mut response = next.call(request).await?;
        vary_origin(response.headers_mut());
        return Ok(response.map_into_left_body());
    };
    let origins = &state.protection.config.cors_origins;
    let allowed = allows(origins, &origin);
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key("access-control-request-method");
    if preflight {
        if !allowed {
            let error = ApiError::new(
                StatusCode::FORBIDDEN,
                "cors_origin_not_allowed",
                "this origin may not call the gateway",
            )
            .audited(Audit::Refused {
                rule: "cors_origin",
            });
            let mut response = request.error_response(error);
            vary_origin(response.headers_mut());
            return Ok(response.map_into_right_body());
        }
        let mut response = HttpResponse::NoContent().finish();
        let headers = response.headers_mut();
        insert(headers, "access-control-allow-origin", &origin);
        insert(
            headers,
            "access-control-allow-methods",
            "GET, POST, OPTIONS",
        );
        insert(headers, "access-control-allow-headers", ALLOWED_HEADERS);
        insert(headers, "access-control-max-age", MAX_AGE);
        vary_origin(response.headers_mut());
        return Ok(request.into_response(response).map_into_right_body());
    }
    let mut response = next.call(request).await?;
    let headers = response.headers_mut();
    if allowed {
        insert(headers, "access-control-allow-origin", &origin);
        insert(headers, "access-control-expose-headers", EXPOSED_HEADERS);
    }
    // Allowed or not, the answer depends on the origin.
    vary_origin(headers);
    Ok(response.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_by_wildcard() {
        let list = vec!["https://app.example".to_owned()];
        assert!(allows(&list, "https://app.example"));
        assert!(!allows(&list, "https://app.example.evil"));
        assert!(!allows(&list, "http://app.example"));
        assert!(allows(&["*".to_owned()], "https://anything"));
        assert!(!allows(&[], "https://app.example"));
    }
}
