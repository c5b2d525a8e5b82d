//! `POST /auth` `{"email", "token"}`: verifies the token as a bearer token would be, checks
//! that its `email` claim is the given email (case-insensitively), and answers
//! `{"sessionId"}` (see `porter_identity::sessions` and docs/sessions.md).
//!
//! Every failed authentication answers `unauthorized`, as the system this replaces did; the
//! audit log and `porter_auth_failures_total` keep the real reason (`email_mismatch`,
//! `token_expired`, …). A revoked token says `token_revoked`.

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use porter_identity::{Caller, Credential, Identity, subject};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::audit::KnownCaller;
use crate::error::{ApiError, Audit};
use crate::state::AppState;

#[derive(Deserialize)]
struct AuthBody {
    email: Option<String>,
    token: Option<String>,
}

/// Folds a failed authentication into `unauthorized`, audited under its real code.
fn folded(error: impl Into<ApiError>) -> ApiError {
    let error = error.into();
    if error.status == StatusCode::UNAUTHORIZED && error.code != "token_revoked" {
        ApiError::unauthorized("unauthorized", error.message).audited(Audit::AuthFailed(error.code))
    } else {
        error
    }
}

pub async fn create(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let sessions = state.identity.sessions().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "sessions_disabled",
            "sessions are not enabled on this gateway",
        )
    })?;
    let body: AuthBody = serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request("invalid_body", "send JSON {\"email\": …, \"token\": …}")
    })?;
    let email = body.email.as_deref().map(str::trim).unwrap_or_default();
    let token = body.token.as_deref().map(str::trim).unwrap_or_default();
    if email.is_empty() || token.is_empty() {
        return Err(ApiError::bad_request(
            "missing_parameters",
            "both `email` and `token` are required",
        ));
    }
    let claims = state
        .identity
        .verifier()
        .verify(token)
        .await
        .map_err(folded)?;
    let user_id = subject(&claims).map_err(folded)?;
    let identity = Identity {
        user_id: Some(user_id),
        credential: Some(Credential::of(token, &claims)),
        ..Identity::default()
    };
    request.extensions_mut().insert(KnownCaller::of(&identity));
    let matches = claims
        .get("email")
        .and_then(Value::as_str)
        .is_some_and(|claimed| claimed.trim().eq_ignore_ascii_case(email));
    if !matches {
        return Err(folded(ApiError::unauthorized(
            "email_mismatch",
            "the email does not match the token",
        )));
    }
    let caller = Caller::from_token(identity);
    caller
        .ensure_not_revoked(state.store.as_ref())
        .await
        .map_err(folded)?;
    let identity = caller.identity();
    let id = sessions
        .open(
            identity.user_id.clone().unwrap_or_default(),
            claims,
            identity.credential.clone().unwrap_or_default(),
        )
        .await
        .map_err(folded)?;
    Ok(HttpResponse::Ok().json(json!({ "sessionId": id })))
}
