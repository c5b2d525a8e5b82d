//! Who is asking: a JWT from `Authorization: Bearer`, and the client id of seed 000.

use actix_web::HttpRequest;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The caller of one request.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub claims: Map<String, Value>,
}

/// Verifies bearer tokens (HS256 with `PORTER_JWT_SECRET`).
pub struct Verifier {
    key: Option<DecodingKey>,
    validation: Validation,
}

impl Verifier {
    /// `None` accepts no tokens: every bearer token is refused, anonymous calls still work.
    pub fn hs256(secret: Option<&[u8]>) -> Verifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_nbf = true;
        Verifier {
            key: secret
                .filter(|s| !s.is_empty())
                .map(DecodingKey::from_secret),
            validation,
        }
    }

    /// Verifies a token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, ApiError> {
        let key = self.key.as_ref().ok_or_else(|| {
            ApiError::unauthorized(
                "invalid_token",
                "bearer tokens are not accepted by this gateway",
            )
        })?;
        jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation)
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
                    _ => ApiError::unauthorized(
                        "invalid_token",
                        "the token is malformed or its signature is wrong",
                    ),
                }
            })
    }

    /// Resolves the caller of a request.
    pub fn identify(&self, request: &HttpRequest) -> Result<Identity, ApiError> {
        let client_id = header(request, "x-client-id").filter(|c| !c.is_empty() && c.len() <= 200);
        let mut identity = Identity {
            client_id,
            ..Identity::default()
        };
        if let Some(authorization) = request.headers().get("authorization") {
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
            let claims = self.verify(token)?;
            identity.user_id = match claims.get("sub") {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => {
                    return Err(ApiError::unauthorized(
                        "invalid_token",
                        "the token has no subject (`sub`)",
                    ));
                }
            };
            identity.claims = claims;
        }
        Ok(identity)
    }
}

fn header(request: &HttpRequest, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)?
        .to_str()
        .ok()
        .map(str::to_owned)
}
