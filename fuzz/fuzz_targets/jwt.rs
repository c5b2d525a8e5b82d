//! Bearer tokens: `jsonwebtoken::decode_header`, `porter_identity::unverified_claims` (read
//! before any verification, to revoke a token) and a full `Verifier::verify` with a fixed HS256
//! secret, with and without a required issuer and audience.
//!
//! The first input byte picks the mode: a raw token as a client could send it, or a header and
//! a payload (split at the first NUL) that the target signs with the secret, so that the claim
//! checks behind the signature are fuzzed too. Invariants: nothing panics; a verified token's
//! header says HS256 and its claims are what `unverified_claims` reads; a verified token has a
//! numeric `exp` not yet past, a `nbf` (when present) that is numeric and reached, and the
//! configured `iss` and `aud` when they are required.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use porter_identity::{JwtSettings, Verifier, now_secs, unverified_claims};
use serde_json::{Map, Value};
use sha2::Sha256;

const SECRET: &[u8] = b"porter-fuzz-secret";
const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "porter";
const LEEWAY: Duration = Duration::from_secs(5);

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let (header, payload) = match rest.iter().position(|&b| b == 0) {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], rest),
        };
        signed(header, payload)
    };
    let _ = jsonwebtoken::decode_header(&token);
    let unverified = unverified_claims(&token);
    for strict in [false, true] {
        if let Ok(claims) = verify(&token, strict) {
            check_verified(&token, &claims, unverified.as_ref(), strict);
        }
    }
});

/// `header.payload.signature`, signed with HS256 and [`SECRET`].
fn signed(header: &[u8], payload: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

fn verify(token: &str, strict: bool) -> Result<Map<String, Value>, porter_identity::IdentityError> {
    let mut settings = JwtSettings {
        secret: Some(SECRET.to_vec()),
        leeway: LEEWAY,
        algorithms: vec![Algorithm::HS256],
        ..JwtSettings::default()
    };
    if strict {
        settings.issuer = Some(ISSUER.to_owned());
        settings.audience = vec![AUDIENCE.to_owned()];
    }
    let verifier = Verifier::new(settings);
    let mut future = pin!(verifier.verify(token));
    // With a secret and no JWKS, verification never waits: a `Pending` would mean it does I/O.
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(result) => result,
        Poll::Pending => panic!("HS256 verification without a JWKS did not finish at once"),
    }
}

fn check_verified(
    token: &str,
    claims: &Map<String, Value>,
    unverified: Option<&Map<String, Value>>,
    strict: bool,
) {
    let header = jsonwebtoken::decode_header(token).expect("a verified token has a header");
    assert_eq!(header.alg, Algorithm::HS256);
    assert_eq!(Some(claims), unverified, "{token}");
    let now = now_secs() as f64;
    let leeway = LEEWAY.as_secs() as f64;
    let exp = claims.get("exp").and_then(Value::as_f64);
    assert!(
        exp.is_some_and(|exp| exp + leeway + 1.0 >= now),
        "verified with exp {:?}",
        claims.get("exp")
    );
    if let Some(nbf) = claims.get("nbf") {
        assert!(
            nbf.as_f64().is_some_and(|nbf| nbf - leeway - 1.0 <= now),
            "verified with nbf {nbf}"
        );
    }
    if strict {
        assert_eq!(claims.get("iss").and_then(Value::as_str), Some(ISSUER));
        let aud_ok = match claims.get("aud") {
            Some(Value::String(aud)) => aud == AUDIENCE,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(AUDIENCE)),
            _ => false,
        };
        assert!(aud_ok, "verified with aud {:?}", claims.get("aud"));
    }
}
