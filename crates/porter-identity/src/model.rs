//! What identifies a caller once verified: the [`Identity`] (user id, client id, claims) and
//! the [`Credential`] that names its token for revocation.
//!
//! Architecture Invariant: a token is never stored or compared in the clear outside
//! verification: a [`Credential`] keeps only the SHA-256 of the token's signed part and its
//! `jti`.

use porter_store::Revocation;
use serde_json::{Map, Value};
use sha2::Digest;

/// Who the caller of one request is. Anonymous callers have no user id and no credential.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub claims: Map<String, Value>,
    /// The token the caller authenticated with (directly, or when opening its session).
    pub credential: Option<Credential>,
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
    /// The credential of a token with these (verified) claims.
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
