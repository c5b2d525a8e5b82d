//! Bearer tokens: how they are verified ([`JwtSettings`], [`Verifier`]) and whose they are
//! ([`subject`]).
//!
//! Tokens are verified with HS256 (`PORTER_JWT_SECRET`) and RS256/ES256 (and the other
//! asymmetric algorithms) with keys from a JWKS ([`crate::jwks`]), against the configured
//! issuer, audience, leeway and allowed algorithms. Two rules rule out the classic attacks:
//!
//! - `alg: none` is never accepted (jsonwebtoken has no such algorithm; the header fails to
//!   parse), and a token's `alg` must be in the allowed list;
//! - a key is only used with algorithms of its own family: HMAC algorithms use the configured
//!   secret (or `oct` JWKs), never an RSA or EC public key, so an HS256 token "signed" with the
//!   RSA public key as secret is refused.
//!
//! The time claims are checked again after jsonwebtoken, by [`crate::time_claims`]: a token
//! whose `exp`, `nbf` or `iat` is present but not a number is refused, and `exp` and `nbf` hold
//! for every JSON number (fractions, values past `u64`), not only those jsonwebtoken reads.
//!
//! Revocation is NOT checked here: the gateway checks it in the same store round trip as its
//! cache look-up and hands the outcome to [`crate::Caller::settle`]; other endpoints call
//! [`crate::Caller::ensure_not_revoked`].

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::clock::now_secs;
use crate::error::{AlgorithmError, IdentityError, JwksError};
use crate::jwks::{Family, Jwks, JwksSource, KeyError};
use crate::time_claims::{self, TimeClaimError};

/// How tokens are verified.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// The HMAC secret (HS256/384/512).
    pub secret: Option<Vec<u8>>,
    /// Where the public keys come from (RS*, PS*, ES*, EdDSA).
    pub jwks: Option<JwksSource>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Accepted `aud` values; when set a token must carry one of them.
    pub audience: Vec<String>,
    /// Tolerated clock skew for `exp` and `nbf`.
    pub leeway: Duration,
    /// Allowed `alg` values; empty means HS256 with a secret plus RS256 and ES256 with a JWKS.
    pub algorithms: Vec<Algorithm>,
    /// Least time between two JWKS refreshes caused by unknown `kid`s.
    pub jwks_refresh_interval: Duration,
    /// Age after which the cached JWKS is read again.
    pub jwks_max_age: Duration,
    /// How long a revoked `jti` stays revoked when the revocation does not say.
    pub revocation_ttl: Duration,
}

impl Default for JwtSettings {
    fn default() -> JwtSettings {
        JwtSettings {
            secret: None,
            jwks: None,
            issuer: None,
            audience: Vec::new(),
            leeway: Duration::from_secs(5),
            algorithms: Vec::new(),
            jwks_refresh_interval: Duration::from_secs(60),
            jwks_max_age: Duration::from_secs(3600),
            revocation_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Parses `PORTER_JWT_ALGORITHMS`-style names; `none` and unknown names are errors.
pub fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, AlgorithmError> {
    names
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .map(|name| {
            name.parse::<Algorithm>().map_err(|_| AlgorithmError {
                name: name.to_owned(),
            })
        })
        .collect()
}

/// Verifies bearer tokens.
pub struct Verifier {
    secret: Option<DecodingKey>,
    jwks: Option<Jwks>,
    algorithms: Vec<Algorithm>,
    validation: Validation,
    revocation_ttl: Duration,
}

impl Verifier {
    /// `None` accepts no tokens: every bearer token is refused, anonymous calls still work.
    pub fn hs256(secret: Option<&[u8]>) -> Verifier {
        Verifier::new(JwtSettings {
            secret: secret.map(<[u8]>::to_vec),
            ..JwtSettings::default()
        })
    }

    pub fn new(settings: JwtSettings) -> Verifier {
        let secret = settings
            .secret
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(DecodingKey::from_secret);
        let jwks = settings.jwks.clone().map(|source| {
            Jwks::new(
                source,
                settings.jwks_refresh_interval,
                settings.jwks_max_age,
            )
        });
        let mut algorithms = settings.algorithms.clone();
        if algorithms.is_empty() {
            if secret.is_some() {
                algorithms.push(Algorithm::HS256);
            }
            if jwks.is_some() {
                algorithms.extend([Algorithm::RS256, Algorithm::ES256]);
            }
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = settings.leeway.as_secs();
        validation.validate_nbf = true;
        // `exp` is required by `time_claims::check`, which also says when it is not a number
        // (jsonwebtoken would call that "no `exp`").
        let mut required = Vec::new();
        match &settings.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        if settings.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&settings.audience);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Verifier {
            secret,
            jwks,
            algorithms,
            validation,
            revocation_ttl: settings.revocation_ttl,
        }
    }

    /// The tolerated clock skew on `exp` and `nbf`.
    pub fn leeway(&self) -> Duration {
        Duration::from_secs(self.validation.leeway)
    }

    /// How long a `jti` revocation lasts when its token's expiry is unknown.
    pub fn revocation_ttl(&self) -> Duration {
        self.revocation_ttl
    }

    /// The JWKS cache, when one is configured.
    pub fn jwks(&self) -> Option<&Jwks> {
        self.jwks.as_ref()
    }

    /// Reads the JWKS at start-up, so the first requests do not wait for it.
    pub async fn preload(&self) -> Result<(), JwksError> {
        match &self.jwks {
            Some(jwks) => jwks.load().await.map(drop),
            None => Ok(()),
        }
    }

    /// Verifies a token and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Map<String, Value>, IdentityError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            // Also where `alg: none` ends: it is not an algorithm jsonwebtoken knows.
            IdentityError::invalid_token("the token is malformed")
        })?;
        if !self.algorithms.contains(&header.alg) {
            return Err(IdentityError::invalid_token(
                "the token's algorithm is not accepted",
            ));
        }
        let key = self.key_for(&header).await?;
        let mut validation = self.validation.clone();
        // Exactly the header's algorithm, already checked against the list and the key family.
        validation.algorithms = vec![header.alg];
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|error| {
                use jsonwebtoken::errors::ErrorKind;
                match error.kind() {
                    ErrorKind::ExpiredSignature => IdentityError::TokenExpired,
                    ErrorKind::ImmatureSignature => {
                        IdentityError::invalid_token("the token is not valid yet")
                    }
                    ErrorKind::InvalidIssuer => {
                        IdentityError::invalid_token("the token's issuer is not accepted")
                    }
                    ErrorKind::InvalidAudience => {
                        IdentityError::invalid_token("the token's audience is not accepted")
                    }
                    ErrorKind::MissingRequiredClaim(claim) => {
                        IdentityError::invalid_token(format!("the token has no `{claim}` claim"))
                    }
                    _ => IdentityError::invalid_token(
                        "the token is malformed or its signature is wrong",
                    ),
                }
            })?;
        let leeway = self.validation.leeway.min(i64::MAX as u64) as i64;
        time_claims::check(&claims, now_secs(), leeway).map_err(|error| match error {
            TimeClaimError::Expired => IdentityError::TokenExpired,
            other => IdentityError::invalid_token(other.to_string()),
        })?;
        Ok(claims)
    }

    /// The key for a token's header: the secret for HMAC, a JWK of the right family otherwise.
    async fn key_for(&self, header: &jsonwebtoken::Header) -> Result<DecodingKey, IdentityError> {
        let family = Family::of(header.alg);
        if family == Family::Hmac
            && let Some(secret) = &self.secret
        {
            return Ok(secret.clone());
        }
        let Some(jwks) = &self.jwks else {
            return Err(IdentityError::invalid_token(
                "no key of this gateway verifies this token",
            ));
        };
        jwks.key_for(header.kid.as_deref(), header.alg)
            .await
            .map_err(|error| match error {
                KeyError::Unavailable => IdentityError::KeysUnavailable,
                KeyError::UnknownKey => {
                    IdentityError::invalid_token("no key matches the token's `kid`")
                }
                KeyError::AmbiguousKey => IdentityError::invalid_token(
                    "the token has no `kid` and several keys could verify it",
                ),
            })
    }
}

/// The user id of verified claims: `sub`, a non-empty string or a number.
pub fn subject(claims: &Map<String, Value>) -> Result<String, IdentityError> {
    match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(IdentityError::invalid_token(
            "the token has no subject (`sub`)",
        )),
    }
}

#[cfg(test)]
mod tests;
