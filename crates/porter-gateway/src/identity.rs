//! Who is asking: a JWT from `Authorization: Bearer`, a session from `X-Session-ID`
//! (seed 001, see [`crate::sessions`]), and the client id of seed 000.
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
//! Revocation is NOT checked here: the batch checks it in the same Redis round trip as its
//! cache look-up ([`crate::batch`]); other endpoints call [`crate::revocation::ensure_not_revoked`].

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use porter_store::Revocation;
use serde_json::{Map, Value};
use sha2::Digest;

use crate::error::ApiError;
use crate::jwks::{Family, Jwks, JwksSource, KeyError};
use crate::sessions::Sessions;

/// The caller of one request.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub claims: Map<String, Value>,
    /// The token the caller authenticated with (directly, or when opening its session).
    pub credential: Option<Credential>,
    /// The session the caller came with, if any: what to do once its revocation check
    /// is known (see [`crate::sessions::SessionUse`]). Its `Debug` never shows the id.
    pub session: Option<crate::sessions::SessionUse>,
}

/// What names a token for revocation. Never the token itself, and not its signature either:
/// an ES256 signature `(r, s)` has a twin `(r, n - s)` that verifies too, so a hash of the
/// whole token would let the holder of a revoked token make an unrevoked copy.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credential {
    /// SHA-256 of the token's signed part (`header.payload`), lowercase hex.
    pub token_sha256: String,
    /// The token's `jti` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl Credential {
    pub fn of(token: &str, claims: &Map<String, Value>) -> Credential {
        Credential {
            token_sha256: token_sha256(token),
            jti: claims
                .get("jti")
                .and_then(Value::as_str)
                .filter(|j| !j.is_empty())
                .map(str::to_owned),
        }
    }
}

impl Identity {
    /// The revocations that would end this caller's right to ask.
    pub fn revocations(&self) -> Vec<Revocation<'_>> {
        let Some(credential) = &self.credential else {
            return Vec::new();
        };
        let mut revocations = vec![Revocation::TokenSha256(&credential.token_sha256)];
        if let Some(jti) = &credential.jti {
            revocations.push(Revocation::Jti(jti));
        }
        revocations
    }
}

/// SHA-256 of a token's signed part (`header.payload`, without the signature), lowercase
/// hex: the only form in which a token is ever stored. The signature is left out because it
/// is malleable (ES256: `(r, s)` and `(r, n - s)` both verify), while the signed part is
/// fixed by the signature check itself.
pub fn token_sha256(token: &str) -> String {
    let token = token.trim();
    let signed = token.rsplit_once('.').map_or(token, |(signed, _)| signed);
    hex::encode(sha2::Sha256::digest(signed.as_bytes()))
}

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
pub fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, String> {
    names
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .map(|name| {
            name.parse::<Algorithm>()
                .map_err(|_| format!("unknown or forbidden JWT algorithm `{name}`"))
        })
        .collect()
}

/// Verifies bearer tokens and resolves sessions.
pub struct Verifier {
    secret: Option<DecodingKey>,
    jwks: Option<Jwks>,
    algorithms: Vec<Algorithm>,
    validation: Validation,
    revocation_ttl: Duration,
    sessions: Option<Sessions>,
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
        let mut required = vec!["exp"];
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
            sessions: None,
        }
    }

    /// Enables `X-Session-ID` and `POST /auth`. A session ends when its token does, with
    /// the same leeway as the token's own `exp` check.
    pub fn with_sessions(mut self, sessions: Sessions) -> Verifier {
        let leeway = Duration::from_secs(self.validation.leeway);
        self.sessions = Some(sessions.with_leeway(leeway));
        self
    }

    /// The tolerated clock skew on `exp` and `nbf`.
    pub fn leeway(&self) -> Duration {
        Duration::from_secs(self.validation.leeway)
    }

    pub fn sessions(&self) -> Option<&Sessions> {
        self.sessions.as_ref()
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
    pub async fn preload(&self) -> Result<(), String> {
        match &self.jwks {
            Some(jwks) => jwks.load().await.map(drop),
            None => Ok(()),
        }
    }

    /// Verifies a token and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Map<String, Value>, ApiError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            // Also where `alg: none` ends: it is not an algorithm jsonwebtoken knows.
            ApiError::unauthorized("invalid_token", "the token is malformed")
        })?;
        if !self.algorithms.contains(&header.alg) {
            return Err(ApiError::unauthorized(
                "invalid_token",
                "the token's algorithm is not accepted",
            ));
        }
        let key = self.key_for(&header).await?;
        let mut validation = self.validation.clone();
        // Exactly the header's algorithm, already checked against the list and the key family.
        validation.algorithms = vec![header.alg];
        jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|error| {
                use jsonwebtoken::errors::ErrorKind;
                match error.kind() {
                    ErrorKind::ExpiredSignature => {
                        ApiError::unauthorized("token_expired", "the token has expired")
                    }
                    ErrorKind::ImmatureSignature => {
                        ApiError::unauthorized("invalid_token", "the token is not valid yet")
                    }
                    ErrorKind::InvalidIssuer => ApiError::unauthorized(
                        "invalid_token",
                        "the token's issuer is not accepted",
                    ),
                    ErrorKind::InvalidAudience => ApiError::unauthorized(
                        "invalid_token",
                        "the token's audience is not accepted",
                    ),
                    ErrorKind::MissingRequiredClaim(claim) => ApiError::unauthorized(
                        "invalid_token",
                        format!("the token has no `{claim}` claim"),
                    ),
                    _ => ApiError::unauthorized(
                        "invalid_token",
                        "the token is malformed or its signature is wrong",
                    ),
                }
            })
    }

    /// The key for a token's header: the secret for HMAC, a JWK of the right family otherwise.
    async fn key_for(&self, header: &jsonwebtoken::Header) -> Result<DecodingKey, ApiError> {
        let family = Family::of(header.alg);
        if family == Family::Hmac
            && let Some(secret) = &self.secret
        {
            return Ok(secret.clone());
        }
        let Some(jwks) = &self.jwks else {
            return Err(ApiError::unauthorized(
                "invalid_token",
                "no key of this gateway verifies this token",
            ));
        };
        jwks.key_for(header.kid.as_deref(), header.alg)
            .await
            .map_err(|error| match error {
                KeyError::Unavailable => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "identity_unavailable",
                    "the token keys cannot be loaded; retry shortly",
                ),
                KeyError::UnknownKey => {
                    ApiError::unauthorized("invalid_token", "no key matches the token's `kid`")
                }
                KeyError::AmbiguousKey => ApiError::unauthorized(
                    "invalid_token",
                    "the token has no `kid` and several keys could verify it",
                ),
            })
    }

    /// Resolves the caller of a request: `X-Session-ID`, or `Authorization: Bearer`, or
    /// anonymous. Giving both is refused rather than guessing which one counts.
    pub async fn identify(&self, request: &HttpRequest) -> Result<Identity, ApiError> {
        let client_id = client_id_of(request).map(str::to_owned);
        let session = request.headers().get("x-session-id");
        let authorization = request.headers().get("authorization");
        if let Some(session) = session {
            if authorization.is_some() {
                return Err(ApiError::bad_request(
                    "ambiguous_identity",
                    "send either X-Session-ID or Authorization, not both",
                ));
            }
            let session = session.to_str().map_err(|_| Sessions::invalid())?;
            let sessions = self.sessions.as_ref().ok_or_else(Sessions::invalid)?;
            let mut identity = sessions.resume(session.trim()).await?;
            identity.client_id = client_id;
            return Ok(identity);
        }
        let mut identity = Identity {
            client_id,
            ..Identity::default()
        };
        if let Some(authorization) = authorization {
            let value = authorization.to_str().map_err(|_| {
                ApiError::unauthorized("invalid_token", "the Authorization header is not text")
            })?;
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    ApiError::unauthorized("invalid_token", "use `Authorization: Bearer <token>`")
                })?;
            let claims = self.verify(token).await?;
            identity.user_id = Some(subject(&claims)?);
            identity.credential = Some(Credential::of(token, &claims));
            identity.claims = claims;
        }
        Ok(identity)
    }
}

/// The user id of verified claims: `sub`, a non-empty string or a number.
pub fn subject(claims: &Map<String, Value>) -> Result<String, ApiError> {
    match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(ApiError::unauthorized(
            "invalid_token",
            "the token has no subject (`sub`)",
        )),
    }
}

/// The caller's `X-Client-ID` (seed 000's client id): non-empty, at most 200 bytes, else none.
pub fn client_id_of(request: &HttpRequest) -> Option<&str> {
    request
        .headers()
        .get("x-client-id")
        .and_then(|v| v.to_str().ok())
        .filter(|c| !c.is_empty() && c.len() <= 200)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"unit-test-secret";
    const RSA_A_KEY: &str = include_str!("../testdata/rsa-a.key.pem");
    const RSA_A_PUB: &str = include_str!("../testdata/rsa-a.pub.pem");
    const RSA_A_JWK: &str = include_str!("../testdata/rsa-a.jwk.json");
    const EC_A_KEY: &str = include_str!("../testdata/ec-a.key.pem");
    const EC_A_JWK: &str = include_str!("../testdata/ec-a.jwk.json");

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn claims(extra: Value) -> Value {
        let mut claims =
            json!({"sub": "u1", "exp": now() + 600, "iss": "https://idp", "aud": "porter"});
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    }

    fn hs(claims: &Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn rs(claims: &Value, kid: &str) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_rsa_pem(RSA_A_KEY.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn es(claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("ec-a".into());
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_ec_pem(EC_A_KEY.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn test_verifier(algorithms: Vec<Algorithm>) -> (Verifier, std::path::PathBuf) {
        let path =
            std::env::temp_dir().join(format!("porter-unit-jwks-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&path, format!("{{\"keys\": [{RSA_A_JWK}, {EC_A_JWK}]}}")).unwrap();
        let verifier = Verifier::new(JwtSettings {
            secret: Some(SECRET.to_vec()),
            jwks: Some(JwksSource::File(path.clone())),
            issuer: Some("https://idp".into()),
            audience: vec!["porter".into()],
            leeway: Duration::from_secs(0),
            algorithms,
            ..JwtSettings::default()
        });
        (verifier, path)
    }

    async fn code(verifier: &Verifier, token: &str) -> &'static str {
        verifier.verify(token).await.unwrap_err().code
    }

    #[tokio::test]
    async fn hs256_rs256_es256_verify() {
        let (verifier, path) = test_verifier(Vec::new());
        let good = claims(json!({}));
        assert_eq!(
            verifier.verify(&hs(&good, SECRET)).await.unwrap()["sub"],
            "u1"
        );
        assert_eq!(
            verifier.verify(&rs(&good, "rsa-a")).await.unwrap()["sub"],
            "u1"
        );
        assert_eq!(verifier.verify(&es(&good)).await.unwrap()["sub"], "u1");
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test]
    async fn algorithm_confusion_is_refused() {
        // HS256 allowed too: the RSA public key must still never be used as an HMAC secret.
        let (verifier, path) = test_verifier(Vec::new());
        let forged = claims(json!({"sub": "admin"}));
        for key in [RSA_A_PUB.as_bytes(), RSA_A_JWK.as_bytes()] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("rsa-a".into());
            let token =
                jsonwebtoken::encode(&header, &forged, &EncodingKey::from_secret(key)).unwrap();
            assert_eq!(code(&verifier, &token).await, "invalid_token");
        }
        // With only RS256 allowed, HS256 is refused before any key is looked at.
        let (rs_only, path2) = test_verifier(vec![Algorithm::RS256]);
        assert!(
            rs_only
                .verify(&hs(&forged, SECRET))
                .await
                .unwrap_err()
                .message
                .contains("algorithm")
        );
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(path2);
    }

    #[tokio::test]
    async fn alg_none_is_refused() {
        let (verifier, path) = test_verifier(Vec::new());
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = b64.encode(claims(json!({})).to_string());
        for alg in ["none", "None", "NONE"] {
            let head = b64.encode(format!("{{\"alg\":\"{alg}\",\"typ\":\"JWT\"}}"));
            assert_eq!(
                code(&verifier, &format!("{head}.{payload}.")).await,
                "invalid_token"
            );
        }
        assert!(parse_algorithms(&["none".into()]).is_err());
        assert_eq!(
            parse_algorithms(&["RS256".into(), " ES256".into()]).unwrap(),
            vec![Algorithm::RS256, Algorithm::ES256]
        );
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test]
    async fn time_issuer_and_audience_are_checked() {
        let (verifier, path) = test_verifier(Vec::new());
        let expired = claims(json!({"exp": now() - 60}));
        assert_eq!(
            code(&verifier, &rs(&expired, "rsa-a")).await,
            "token_expired"
        );
        let early = claims(json!({"nbf": now() + 600}));
        let error = verifier.verify(&rs(&early, "rsa-a")).await.unwrap_err();
        assert!(error.message.contains("not valid yet"), "{error:?}");
        let issuer = claims(json!({"iss": "https://evil"}));
        let error = verifier.verify(&es(&issuer)).await.unwrap_err();
        assert!(error.message.contains("issuer"), "{error:?}");
        let audience = claims(json!({"aud": "someone-else"}));
        let error = verifier.verify(&hs(&audience, SECRET)).await.unwrap_err();
        assert!(error.message.contains("audience"), "{error:?}");
        let mut no_aud = claims(json!({}));
        no_aud.as_object_mut().unwrap().remove("aud");
        assert_eq!(code(&verifier, &hs(&no_aud, SECRET)).await, "invalid_token");
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test]
    async fn unknown_kid_and_wrong_key_are_refused() {
        let (verifier, path) = test_verifier(Vec::new());
        let good = claims(json!({}));
        assert_eq!(
            code(&verifier, &rs(&good, "rsa-zzz")).await,
            "invalid_token"
        );
        // An ES256 token that names the RSA key's kid: wrong family, refused.
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("rsa-a".into());
        let token = jsonwebtoken::encode(
            &header,
            &good,
            &EncodingKey::from_ec_pem(EC_A_KEY.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(code(&verifier, &token).await, "invalid_token");
        // A secret that is not ours.
        assert_eq!(code(&verifier, &hs(&good, b"other")).await, "invalid_token");
        let _ = std::fs::remove_file(path);
    }

    /// `a - b` for 32-byte big-endian numbers, `a > b`.
    fn sub_be(a: &[u8], b: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 32];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let mut d = a[i] as i16 - b[i] as i16 - borrow;
            borrow = i16::from(d < 0);
            if d < 0 {
                d += 256;
            }
            out[i] = d as u8;
        }
        out
    }

    #[tokio::test]
    async fn an_es256_signature_twin_names_the_same_token() {
        // The order n of P-256: (r, s) and (r, n - s) are both valid signatures.
        let order = hex::decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")
            .unwrap();
        let (verifier, path) = test_verifier(Vec::new());
        let token = es(&claims(json!({})));
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signature = b64.decode(signature).unwrap();
        let (r, s) = signature.split_at(32);
        let twin = format!("{signed}.{}", b64.encode([r, &sub_be(&order, s)].concat()));
        assert_ne!(twin, token);
        // The twin verifies: it is the same token to anyone checking signatures…
        let verified = verifier.verify(&twin).await.unwrap();
        // …so it must be the same token to revocation too.
        assert_eq!(
            Credential::of(&twin, &verified),
            Credential::of(&token, &verified)
        );
        assert_eq!(token_sha256(&twin), token_sha256(&token));
        // A different payload is a different token.
        assert_ne!(
            token_sha256(&token),
            token_sha256(&es(&claims(json!({"sub": "u2"}))))
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn credentials_hash_the_token_and_keep_the_jti() {
        let claims = json!({"jti": "j-7"});
        let credential = Credential::of("a.b.c", claims.as_object().unwrap());
        assert_eq!(credential.token_sha256, token_sha256("a.b.c"));
        assert_eq!(credential.token_sha256.len(), 64);
        assert_ne!(credential.token_sha256, "a.b.c");
        let identity = Identity {
            credential: Some(credential),
            ..Identity::default()
        };
        assert_eq!(identity.revocations().len(), 2);
        assert!(Identity::default().revocations().is_empty());
    }
}
