//! `POST /admin/tokens/revoke` with `{"token": "…"}` or `{"jti": "…"}` (optionally `"exp"`,
//! the token's expiry in Unix seconds, any JSON number), behind the admin guard of the
//! `/admin` scope.
//!
//! A token is stored only as the SHA-256 of its signed part (`porter_identity::token_sha256`),
//! a `jti` as itself, each until the token would be refused as expired anyway
//! (`porter_identity::revocation_ttl`), with `exp` read as any JSON number, a fraction
//! rounded up and one too far out to count kept without expiry; see docs/identity.md.

use actix_web::{HttpResponse, web};
use porter_identity::{NumericDate, now_secs, revocation_ttl, token_sha256, unverified_expiry};
use porter_store::{Revocation, revocation_expiry};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::error::ApiError;
use crate::state::AppState;

/// What a revocation request names: the token's hash (computed here), or a `jti`.
enum RevokedKey<'a> {
    Token(String),
    Jti(&'a str),
}

#[derive(Deserialize)]
struct RevokeBody {
    token: Option<String>,
    jti: Option<String>,
    /// The token's expiry (Unix seconds, a NumericDate: fractions and huge values too), for
    /// a `jti`.
    exp: Option<Value>,
}

/// `POST /admin/tokens/revoke`.
pub async fn revoke(
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body: RevokeBody = serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request(
            "invalid_body",
            "send JSON {\"token\": …} or {\"jti\": …, \"exp\"?: …}",
        )
    })?;
    let token = body
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let jti = body.jti.as_deref().map(str::trim).filter(|j| !j.is_empty());
    let now = now_secs();
    // What to store, and until when (the token's `exp`, when known).
    let (key, expires_at) = match (token, jti) {
        (Some(token), None) => {
            let exp = unverified_expiry(token)
                .map_err(|error| ApiError::bad_request("invalid_token", error.to_string()))?;
            (RevokedKey::Token(token_sha256(token)), exp)
        }
        (None, Some(jti)) if jti.len() <= 512 => {
            let exp = match &body.exp {
                None => None,
                Some(exp) => Some(NumericDate::of(exp).ok_or_else(|| {
                    ApiError::bad_request("invalid_exp", "`exp` must be a number of Unix seconds")
                })?),
            };
            (RevokedKey::Jti(jti), exp)
        }
        (None, Some(_)) => {
            return Err(ApiError::bad_request("invalid_jti", "the jti is too long"));
        }
        _ => {
            return Err(ApiError::bad_request(
                "missing_parameters",
                "give exactly one of `token` or `jti`",
            ));
        }
    };
    let leeway = state.identity.leeway();
    let ttl = match revocation_ttl(expires_at, now, leeway, state.identity.revocation_ttl()) {
        None => {
            return Ok(HttpResponse::Ok().json(json!({
                "revoked": false,
                "reason": "token_expired",
            })));
        }
        Some(ttl) => ttl,
    };
    let (revocation, kind) = match &key {
        RevokedKey::Token(hash) => (Revocation::TokenSha256(hash), "token"),
        RevokedKey::Jti(jti) => (Revocation::Jti(jti), "jti"),
    };
    if let Err(error) = state.store.revoke(revocation, ttl).await {
        warn!(%error, "could not store a revocation");
        return Err(ApiError::store_unavailable());
    }
    // What the store keeps: whole seconds, or no expiry (`null`) past any TTL.
    let expires_in = revocation_expiry(ttl).map(|ttl| ttl.as_secs());
    info!(kind, ttl_secs = ?expires_in, "token revoked");
    Ok(HttpResponse::Ok().json(json!({
        "revoked": true,
        "expires_in": expires_in,
    })))
}
