//! Verification tests: the allowed algorithms and key families, time (every form of the time
//! claims), issuer and audience, and the ES256 signature twin.

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::*;
use crate::jwks::JwksSource;
use crate::model::{Credential, token_sha256};

const SECRET: &[u8] = b"unit-test-secret";
const RSA_A_KEY: &str = include_str!("../../testdata/rsa-a.key.pem");
const RSA_A_PUB: &str = include_str!("../../testdata/rsa-a.pub.pem");
const RSA_A_JWK: &str = include_str!("../../testdata/rsa-a.jwk.json");
const EC_A_KEY: &str = include_str!("../../testdata/ec-a.key.pem");
const EC_A_JWK: &str = include_str!("../../testdata/ec-a.jwk.json");

fn now() -> i64 {
    crate::clock::now_secs()
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
    let path = std::env::temp_dir().join(format!("porter-unit-jwks-{}.json", uuid::Uuid::new_v4()));
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
    verifier.verify(token).await.unwrap_err().code()
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
        let token = jsonwebtoken::encode(&header, &forged, &EncodingKey::from_secret(key)).unwrap();
        assert_eq!(code(&verifier, &token).await, "invalid_token");
    }
    // With only RS256 allowed, HS256 is refused before any key is looked at.
    let (rs_only, path2) = test_verifier(vec![Algorithm::RS256]);
    assert!(
        rs_only
            .verify(&hs(&forged, SECRET))
            .await
            .unwrap_err()
            .to_string()
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
    assert_eq!(
        parse_algorithms(&["none".into()]),
        Err(AlgorithmError {
            name: "none".into()
        })
    );
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
    assert!(error.to_string().contains("not valid yet"), "{error:?}");
    let issuer = claims(json!({"iss": "https://evil"}));
    let error = verifier.verify(&es(&issuer)).await.unwrap_err();
    assert!(error.to_string().contains("issuer"), "{error:?}");
    let audience = claims(json!({"aud": "someone-else"}));
    let error = verifier.verify(&hs(&audience, SECRET)).await.unwrap_err();
    assert!(error.to_string().contains("audience"), "{error:?}");
    let mut no_aud = claims(json!({}));
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        verifier.verify(&hs(&no_aud, SECRET)).await.unwrap_err(),
        IdentityError::invalid_token("the token has no `aud` claim")
    );
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn a_time_claim_that_is_not_a_number_is_refused_not_skipped() {
    let (verifier, path) = test_verifier(Vec::new());
    for (claim, value) in [
        ("nbf", json!("tomorrow")),
        ("nbf", json!(true)),
        ("iat", json!("yesterday")),
        ("exp", json!("never")),
        ("exp", json!(null)),
    ] {
        let token = hs(&claims(json!({ claim: value })), SECRET);
        assert_eq!(
            verifier.verify(&token).await.unwrap_err(),
            IdentityError::invalid_token(format!("the token's `{claim}` is not a number")),
            "{claim}: {value}"
        );
    }
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn exp_and_nbf_hold_for_numbers_jsonwebtoken_cannot_read() {
    let (verifier, path) = test_verifier(Vec::new());
    let verify = async |extra: Value| verifier.verify(&hs(&claims(extra), SECRET)).await;
    // An `nbf` past u64 or negative, and fractions: jsonwebtoken skips or rounds them.
    let error = verify(json!({"nbf": 1e300})).await.unwrap_err();
    assert!(error.to_string().contains("not valid yet"), "{error:?}");
    let error = verify(json!({"nbf": now() as f64 + 600.5}))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not valid yet"), "{error:?}");
    assert_eq!(
        verify(json!({"exp": now() as f64 - 60.5})).await,
        Err(IdentityError::TokenExpired)
    );
    assert!(
        verify(json!({"nbf": -1, "iat": now() as f64 - 0.5}))
            .await
            .is_ok()
    );
    assert!(verify(json!({"exp": now() as f64 + 600.5})).await.is_ok());
    assert!(verify(json!({"exp": u64::MAX})).await.is_ok());
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

#[tokio::test]
async fn an_unreadable_key_set_is_unavailable_not_invalid() {
    let verifier = Verifier::new(JwtSettings {
        jwks: Some(JwksSource::File("/nonexistent/porter-jwks.json".into())),
        leeway: Duration::from_secs(0),
        ..JwtSettings::default()
    });
    assert!(verifier.preload().await.is_err());
    let error = verifier
        .verify(&rs(&claims(json!({})), "rsa-a"))
        .await
        .unwrap_err();
    assert_eq!(error, IdentityError::KeysUnavailable);
    assert_eq!(error.code(), "identity_unavailable");
}

#[test]
fn the_subject_is_a_non_empty_string_or_a_number() {
    let of = |claims: Value| subject(claims.as_object().unwrap());
    assert_eq!(of(json!({"sub": "u1"})), Ok("u1".to_owned()));
    assert_eq!(of(json!({"sub": 42})), Ok("42".to_owned()));
    for bad in [json!({}), json!({"sub": ""}), json!({"sub": true})] {
        assert_eq!(
            of(bad).unwrap_err().to_string(),
            "the token has no subject (`sub`)"
        );
    }
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
    let order =
        hex::decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551").unwrap();
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
