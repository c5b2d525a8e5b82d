//! The keys of a parsed JSON Web Key Set and how one is picked for a token.
//!
//! Every key remembers its family (RSA, EC, Ed, HMAC) and, when the JWK says so, its one
//! algorithm; [`KeySet::find`] only ever returns a key of the token's algorithm's family,
//! which is what rules out algorithm confusion (an RSA public key used as an HMAC secret).

use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::error::JwksError;

/// The kinds of keys; a key verifies only algorithms of its own family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

impl Family {
    pub fn of(algorithm: Algorithm) -> Family {
        match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => Family::Rsa,
            Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
            Algorithm::EdDSA => Family::Ed,
        }
    }
}

/// One usable verification key.
pub(super) struct Key {
    pub(super) kid: Option<String>,
    family: Family,
    /// The JWK's own `alg`, when it names one.
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

#[derive(Default)]
pub(super) struct KeySet {
    pub(super) keys: Vec<Key>,
    /// When the set was read; `None` before the first successful read.
    pub(super) loaded_at: Option<Instant>,
}

pub(super) enum Found {
    Key(DecodingKey),
    Missing,
    Ambiguous,
}

impl KeySet {
    pub(super) fn find(&self, kid: Option<&str>, algorithm: Algorithm) -> Found {
        let family = Family::of(algorithm);
        let mut candidates = self.keys.iter().filter(|k| {
            k.family == family
                && k.algorithm.is_none_or(|a| a == algorithm)
                && kid.is_none_or(|kid| k.kid.as_deref() == Some(kid))
        });
        match (candidates.next(), candidates.next()) {
            (Some(key), None) => Found::Key(key.key.clone()),
            (Some(_), Some(_)) if kid.is_none() => Found::Ambiguous,
            // Two keys with one `kid`: the first wins, as with most providers' libraries.
            (Some(key), Some(_)) => Found::Key(key.key.clone()),
            (None, _) => Found::Missing,
        }
    }
}

/// Parses a JWKS document. Keys that cannot verify signatures (`use: enc`, encryption
/// algorithms, unsupported types) are skipped rather than failing the whole set.
pub(super) fn parse_key_set(text: &str) -> Result<Vec<Key>, JwksError> {
    let document: Value =
        serde_json::from_str(text).map_err(|e| JwksError::NotJson(e.to_string()))?;
    let entries = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JwksError::NoKeys)?;
    let mut keys = Vec::with_capacity(entries.len());
    for entry in entries {
        let jwk: Jwk = match serde_json::from_value(entry.clone()) {
            Ok(jwk) => jwk,
            Err(error) => {
                debug!(%error, "skipped a JWK that cannot be read");
                continue;
            }
        };
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let algorithm = match jwk.common.key_algorithm {
            None => None,
            Some(named) => match Algorithm::from_str(&named.to_string()) {
                Ok(algorithm) => Some(algorithm),
                // An encryption algorithm (RSA-OAEP…): not a signing key.
                Err(_) => continue,
            },
        };
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(_) => Family::Ec,
            AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
            AlgorithmParameters::OctetKey(_) => Family::Hmac,
        };
        if algorithm.is_some_and(|a| Family::of(a) != family) {
            // A JWK whose `alg` contradicts its key type is a configuration error or an attack.
            warn!(kid = ?jwk.common.key_id, "skipped a JWK whose `alg` does not match its key type");
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            debug!(kid = ?jwk.common.key_id, "skipped a JWK that is not a valid key");
            continue;
        };
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            family,
            algorithm,
            key,
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_A: &str = include_str!("../../testdata/rsa-a.jwk.json");
    const EC_A: &str = include_str!("../../testdata/ec-a.jwk.json");

    fn set(keys: &[&str]) -> String {
        format!("{{\"keys\": [{}]}}", keys.join(","))
    }

    #[test]
    fn keys_are_found_by_kid_and_family() {
        let keys = parse_key_set(&set(&[RSA_A, EC_A])).unwrap();
        let set = KeySet {
            keys,
            loaded_at: Some(Instant::now()),
        };
        assert!(matches!(
            set.find(Some("rsa-a"), Algorithm::RS256),
            Found::Key(_)
        ));
        assert!(matches!(
            set.find(Some("ec-a"), Algorithm::ES256),
            Found::Key(_)
        ));
        // An RSA key never verifies an HMAC or EC token, even by its own kid.
        assert!(matches!(
            set.find(Some("rsa-a"), Algorithm::HS256),
            Found::Missing
        ));
        assert!(matches!(
            set.find(Some("rsa-a"), Algorithm::ES256),
            Found::Missing
        ));
        // The JWK says RS256: not PS256, although the family is the same.
        assert!(matches!(
            set.find(Some("rsa-a"), Algorithm::PS256),
            Found::Missing
        ));
        // Without kid: the only RSA key.
        assert!(matches!(set.find(None, Algorithm::RS256), Found::Key(_)));
    }

    #[test]
    fn bad_and_encryption_keys_are_skipped() {
        let enc = r#"{"kty":"RSA","kid":"e","use":"enc","n":"AQAB","e":"AQAB"}"#;
        let lying = RSA_A.replace("RS256", "HS256");
        let unknown = r#"{"kty":"XYZ","kid":"x"}"#;
        let keys = parse_key_set(&set(&[enc, &lying, unknown, EC_A])).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("ec-a"));
        assert_eq!(parse_key_set("{}").err(), Some(JwksError::NoKeys));
        assert!(matches!(
            parse_key_set("garbage"),
            Err(JwksError::NotJson(_))
        ));
    }
}
