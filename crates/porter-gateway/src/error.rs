//! Request-level errors: one [`ApiError`], answered as a status and a JSON body
//! `{"error": code, "message": text}`.
//!
//! Codes are stable; messages say what to fix and never echo secrets or tokens. Turning an
//! error into a response has no side effect: the error rides in the response, where the audit
//! and metrics middleware (`crate::middleware`) read what it says about itself ([`Audit`]).

use std::borrow::Cow;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use porter_identity::IdentityError;
use serde_json::json;

/// What the audit middleware records for an error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audit {
    /// Nothing: a malformed request, a missing service.
    Silent,
    /// A failed authentication, under this reason code (logged, and counted in
    /// `porter_auth_failures_total`).
    AuthFailed(&'static str),
    /// A refusal by a protection rule (logged, and counted in
    /// `porter_protection_refusals_total{rule}`).
    Refused { rule: &'static str },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// The `error` field of the body.
    pub code: &'static str,
    /// The `message` field of the body; omitted when empty.
    pub message: Cow<'static, str>,
    /// Seconds for a `Retry-After` header (429 and 503); 503 says 1 unless told otherwise.
    pub retry_after: Option<u64>,
    pub audit: Audit,
}

impl ApiError {
    /// An error; a 401 is audited as a failed authentication under its code.
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> ApiError {
        let audit = if status == StatusCode::UNAUTHORIZED {
            Audit::AuthFailed(code)
        } else {
            Audit::Silent
        };
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            audit,
        }
    }

    /// Sets `Retry-After`, in whole seconds (at least 1).
    pub fn with_retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// Says how the audit middleware records this error.
    pub fn audited(mut self, audit: Audit) -> ApiError {
        self.audit = audit;
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn broker_unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            "the task broker is unavailable; retry shortly",
        )
    }

    /// The store (sessions, revocations, presence, admin data) could not answer.
    pub fn store_unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store is unavailable; retry shortly",
        )
    }
}

impl From<IdentityError> for ApiError {
    fn from(error: IdentityError) -> ApiError {
        let status = match error {
            IdentityError::InvalidToken(_)
            | IdentityError::TokenExpired
            | IdentityError::TokenRevoked
            | IdentityError::InvalidSession => StatusCode::UNAUTHORIZED,
            IdentityError::Ambiguous => StatusCode::BAD_REQUEST,
            IdentityError::KeysUnavailable
            | IdentityError::StoreUnavailable
            | IdentityError::BrokerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, error.code(), error.to_string())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after {
            response.insert_header(("Retry-After", seconds.to_string()));
        } else if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header(("Retry-After", "1"));
        }
        if self.message.is_empty() {
            response.json(json!({ "error": self.code }))
        } else {
            response.json(json!({ "error": self.code, "message": self.message }))
        }
    }
}
