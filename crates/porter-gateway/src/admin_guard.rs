//! The guard of the administration endpoints: `Authorization: Bearer <PORTER_ADMIN_TOKEN>`,
//! applied to the whole `/admin` scope by `crate::middleware::admin`.
//!
//! Without a configured token every admin endpoint answers 404, so an unconfigured gateway
//! exposes no admin surface at all. The token is compared in constant time and never logged.

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use porter_core::signing::Secret;

use crate::error::ApiError;

/// The configured admin token, if any.
#[derive(Debug, Clone, Default)]
pub struct AdminGuard {
    token: Option<Secret>,
}

impl AdminGuard {
    /// An empty token disables the admin API.
    pub fn new(token: Option<&str>) -> AdminGuard {
        AdminGuard {
            token: token.filter(|t| !t.is_empty()).map(Secret::new),
        }
    }

    /// Admits a request that carries the admin token.
    pub fn check(&self, request: &HttpRequest) -> Result<(), ApiError> {
        let token = self.token.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "admin_disabled",
                "the admin API is not enabled on this gateway",
            )
        })?;
        let presented = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        if token.matches(presented.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                "admin_unauthorized",
                "a valid admin token is required",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn admits_only_the_configured_token() {
        let guard = AdminGuard::new(Some("s3cret"));
        let good = TestRequest::default()
            .insert_header(("Authorization", "Bearer s3cret"))
            .to_http_request();
        let bad = TestRequest::default()
            .insert_header(("Authorization", "Bearer s3cre"))
            .to_http_request();
        let none = TestRequest::default().to_http_request();
        assert!(guard.check(&good).is_ok());
        assert_eq!(guard.check(&bad).unwrap_err().code, "admin_unauthorized");
        assert_eq!(guard.check(&none).unwrap_err().code, "admin_unauthorized");
    }

    #[test]
    fn without_a_token_the_admin_api_does_not_exist() {
        let guard = AdminGuard::new(Some(""));
        let request = TestRequest::default()
            .insert_header(("Authorization", "Bearer "))
            .to_http_request();
        assert_eq!(
            guard.check(&request).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
    }
}
