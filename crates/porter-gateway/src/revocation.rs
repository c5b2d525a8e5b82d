//! Token revocation (seed 004): `POST /admin/tokens/revoke` with `{"token": "…"}` or
//! `{"jti": "…"}` (optionally `"exp"`, the token's expiry in Unix seconds).
//!
//! A token is stored only as the SHA-256 of its signed part `header.payload`
//! (`{prefix}blacklist:token:{sha256}`; the signature is left out because ES256 signatures
//! are malleable, see [`crate::identity::token_sha256`]), a `jti` as
//! `{prefix}blacklist:jti:{jti}`, each with a TTL of the token's remaining lifetime plus the
//! verifier's leeway plus a second: until the token is refused as expired anyway. For a
//! `jti` without `exp` the TTL is the configured revocation TTL (plus the leeway), which must
//! cover the longest token lifetime the issuer hands out. Sessions cannot outlive a
//! revocation: a session ends with its token's `exp`, and the first use that finds its
//! token revoked deletes it.
//!
//! Checking happens in the batch, in the same Redis round trip as the cache look-up
//! ([`crate::batch`]); endpoints without a batch call [`ensure_not_revoked`]. A revoked
//! token gets 401 `token_revoked`. When the store cannot answer, a request that carries a
//! token is refused with 503 rather than served unchecked.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use porter_store::{Revocation, Store};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use crate::AppState;
use crate::error::ApiError;
use crate::identity::{Identity, token_sha256};
use crate::sessions::now_secs;

/// The refusal of a revoked token or of a session opened with one.
pub fn revoked() -> ApiError {
    ApiError::unauthorized("token_revoked", "the token has been revoked")
}

/// The refusal when the store cannot tell whether a credential is still good.
pub fn store_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the session and revocation store is unavailable; retry shortly",
    )
}

/// Acts on the outcome of a revocation check. A revoked token's session is deleted, so that it
/// stays refused once the revocation has expired; only a session that passed may have its
/// exchange lease renewed.
pub(crate) async fn settle(
    store: &dyn Store,
    identity: &Identity,
    revoked_now: bool,
) -> Result<(), ApiError> {
    if revoked_now {
        if let Some(session) = &identity.session {
            session.revoked(store).await;
        }
        return Err(revoked());
    }
    if let Some(session) = &identity.session {
        session.passed();
    }
    Ok(())
}

/// Checks a caller's token against the revocations, alone (no cache look-up to share with).
pub async fn ensure_not_revoked(store: &dyn Store, identity: &Identity) -> Result<(), ApiError> {
    let revocations = identity.revocations();
    if revocations.is_empty() {
        return Ok(());
    }
    match store.lookup(&[], &revocations).await {
        Ok(found) => settle(store, identity, found.revoked).await,
        Err(error) => {
            warn!(%error, "could not check revocations");
            Err(store_unavailable())
        }
    }
}

/// What a revocation request names: the token's hash (computed here), or a `jti`.
enum RevokedKey<'a> {
    Token(String),
    Jti(&'a str),
}

#[derive(Deserialize)]
struct RevokeBody {
    token: Option<String>,
    jti: Option<String>,
    /// The token's expiry (Unix seconds), for a `jti`.
    exp: Option<i64>,
}

/// The claims of a JWT, read WITHOUT verifying it: only to learn how long to keep its
/// revocation. The caller is an administrator; nothing here grants access.
fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// How long to keep a revocation: until the token is refused as expired anyway, i.e. its
/// `exp` plus the leeway, plus a second for the rounding of both clocks. `None` when the
/// token has already ended. Without an `exp`, the configured fallback (plus the leeway).
fn revocation_ttl(
    exp: Option<i64>,
    now: i64,
    leeway: Duration,
    fallback: Duration,
) -> Option<Duration> {
    let Some(exp) = exp else {
        return Some(fallback.saturating_add(leeway));
    };
    let leeway_secs = leeway.as_secs().min(i64::MAX as u64) as i64;
    let end = exp.saturating_add(leeway_secs);
    (end > now).then(|| Duration::from_secs(end.saturating_sub(now) as u64 + 1))
}

/// `POST /admin/tokens/revoke`.
pub async fn revoke(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let result = revoke_inner(&request, &body, &state).await;
    crate::routes::record(&state, "admin-revoke", &result);
    result
}

async fn revoke_inner(
    request: &HttpRequest,
    body: &[u8],
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    // A wrong admin token is a failed authentication: audited and counted like any other.
    state
        .admin
        .check(request)
        .inspect_err(|error| crate::protection::audit_unauthorized(state, request, None, error))?;
    let body: RevokeBody = serde_json::from_slice(body).map_err(|_| {
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
            let claims = unverified_claims(token)
                .ok_or_else(|| ApiError::bad_request("invalid_token", "the token is not a JWT"))?;
            let exp = claims.get("exp").and_then(Value::as_i64);
            (RevokedKey::Token(token_sha256(token)), exp)
        }
        (None, Some(jti)) if jti.len() <= 512 => (RevokedKey::Jti(jti), body.exp),
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
        return Err(store_unavailable());
    }
    info!(kind, ttl_secs = ttl.as_secs(), "token revoked");
    Ok(HttpResponse::Ok().json(json!({
        "revoked": true,
        "expires_in": ttl.as_secs(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_last_until_the_token_is_refused_as_expired() {
        let leeway = Duration::from_secs(30);
        let fallback = Duration::from_secs(3600);
        // exp + leeway + 1 s: a token still inside its leeway stays revoked.
        assert_eq!(
            revocation_ttl(Some(1_100), 1_000, leeway, fallback),
            Some(Duration::from_secs(131))
        );
        // Past exp but within the leeway: the token is still accepted, so still revoked.
        assert_eq!(
            revocation_ttl(Some(990), 1_000, leeway, fallback),
            Some(Duration::from_secs(21))
        );
        assert_eq!(revocation_ttl(Some(960), 1_000, leeway, fallback), None);
        assert_eq!(
            revocation_ttl(None, 1_000, leeway, fallback),
            Some(Duration::from_secs(3630))
        );
        // A bogus far-future exp does not overflow (the store clamps the TTL).
        assert!(revocation_ttl(Some(i64::MAX), 1_000, leeway, fallback).is_some());
    }

    #[test]
    fn unverified_claims_read_the_payload_only() {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub": "1", "exp": 42}),
            &jsonwebtoken::EncodingKey::from_secret(b"x"),
        )
        .unwrap();
        assert_eq!(unverified_claims(&token).unwrap()["exp"], 42);
        assert!(unverified_claims("not-a-token").is_none());
        assert!(unverified_claims("a.b.c.d").is_none());
        assert!(unverified_claims("a.!!!.c").is_none());
    }
}
