//! Resolution tests: which header counts, how raw values are refused, and that the client id
//! and the verifier's leeway reach sessions.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use porter_store::memory::MemoryStore;
use serde_json::{Map, Value, json};

use super::*;
use crate::clock::now_secs;
use crate::model::token_sha256;

const SECRET: &[u8] = b"resolve-test-secret";

fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn good_token() -> String {
    token(json!({"sub": "u1", "exp": now_secs() + 600, "jti": "j-1", "team": "blue"}))
}

fn tokens_only() -> Resolver {
    Resolver::new(Verifier::hs256(Some(SECRET)))
}

fn with_sessions() -> Resolver {
    let (client, _source) = porter_broker::local::channel(Default::default());
    let sessions = Sessions::new(
        Arc::new(MemoryStore::default()),
        Arc::new(client),
        Duration::from_secs(60),
    );
    tokens_only().with_sessions(sessions)
}

async fn resolve(
    resolver: &Resolver,
    authorization: Option<&[u8]>,
    session_id: Option<&[u8]>,
) -> Result<Caller, IdentityError> {
    resolver
        .resolve(Presented {
            authorization,
            session_id,
            client_id: Some("web-1"),
        })
        .await
}

#[tokio::test]
async fn nobody_is_anonymous_with_the_client_id() {
    let caller = resolve(&tokens_only(), None, None).await.unwrap();
    assert_eq!(caller.identity().client_id.as_deref(), Some("web-1"));
    assert_eq!(caller.identity().user_id, None);
    assert!(caller.revocations().is_empty());
}

#[tokio::test]
async fn a_bearer_token_names_its_user_and_credential() {
    let token = good_token();
    for scheme in ["Bearer ", "bearer "] {
        let header = format!("{scheme} {token} ");
        let caller = resolve(&tokens_only(), Some(header.as_bytes()), None)
            .await
            .unwrap();
        let identity = caller.identity();
        assert_eq!(identity.user_id.as_deref(), Some("u1"));
        assert_eq!(identity.client_id.as_deref(), Some("web-1"));
        assert_eq!(identity.claims["team"], "blue");
        let credential = identity.credential.as_ref().unwrap();
        assert_eq!(credential.token_sha256, token_sha256(&token));
        assert_eq!(credential.jti.as_deref(), Some("j-1"));
        assert!(caller.session_use().is_none());
    }
}

#[tokio::test]
async fn malformed_authorization_headers_are_refused_as_today() {
    let resolver = tokens_only();
    let use_bearer = IdentityError::invalid_token("use `Authorization: Bearer <token>`");
    for header in [
        &b"Basic dTpw"[..],
        b"Bearer ",
        b"Bearer    ",
        b"BEARER x.y.z",
        b"x.y.z",
    ] {
        assert_eq!(
            resolve(&resolver, Some(header), None).await.unwrap_err(),
            use_bearer,
            "{header:?}"
        );
    }
    let not_text = IdentityError::invalid_token("the Authorization header is not text");
    for header in [
        &b"Bearer \xff\xfe"[..],
        b"Bearer caf\xc3\xa9",
        b"Bearer a\x01b",
    ] {
        assert_eq!(
            resolve(&resolver, Some(header), None).await.unwrap_err(),
            not_text,
            "{header:?}"
        );
    }
    let no_subject = format!("Bearer {}", token(json!({"exp": now_secs() + 600})));
    assert_eq!(
        resolve(&resolver, Some(no_subject.as_bytes()), None)
            .await
            .unwrap_err()
            .to_string(),
        "the token has no subject (`sub`)"
    );
}

#[tokio::test]
async fn a_session_and_a_token_together_are_ambiguous() {
    let resolver = with_sessions();
    let token = format!("Bearer {}", good_token());
    // Refused before either value is looked at, even when neither is any good.
    for (authorization, session) in [
        (token.as_bytes(), &b"0123456789abcdef0123456789abcdef"[..]),
        (b"\xff", b"\xff"),
    ] {
        let error = resolve(&resolver, Some(authorization), Some(session))
            .await
            .unwrap_err();
        assert_eq!(error, IdentityError::Ambiguous);
        assert_eq!(error.code(), "ambiguous_identity");
    }
}

#[tokio::test]
async fn bad_or_disabled_session_ids_are_invalid_sessions() {
    let id = b"0123456789abcdef0123456789abcdef";
    // Sessions not enabled: every id is refused alike.
    assert_eq!(
        resolve(&tokens_only(), None, Some(id)).await.unwrap_err(),
        IdentityError::InvalidSession
    );
    let resolver = with_sessions();
    for session in [&id[..], b"\xff\xfe", b"not-a-session", b""] {
        assert_eq!(
            resolve(&resolver, None, Some(session)).await.unwrap_err(),
            IdentityError::InvalidSession,
            "{session:?}"
        );
    }
}

#[tokio::test]
async fn a_session_resumes_with_the_client_id_and_the_verifier_leeway() {
    let resolver = with_sessions();
    assert_eq!(resolver.leeway(), Duration::from_secs(5));
    // The token ended 2 s ago, within the verifier's 5 s leeway: the sessions got it, so
    // the session opens (with no leeway it would be TokenExpired).
    let mut claims = Map::new();
    claims.insert("exp".into(), Value::from(now_secs() - 2));
    let sessions = resolver.sessions().unwrap();
    let id = sessions
        .open("u1".into(), claims, Credential::default())
        .await
        .unwrap();
    let padded = format!("  {id} ");
    let caller = resolve(&resolver, None, Some(padded.as_bytes()))
        .await
        .unwrap();
    assert_eq!(caller.identity().user_id.as_deref(), Some("u1"));
    assert_eq!(caller.identity().client_id.as_deref(), Some("web-1"));
    assert!(caller.session_use().is_some());
}

#[test]
fn header_text_is_visible_ascii_and_tabs() {
    assert_eq!(header_text(b"Bearer a.b\tc ~"), Some("Bearer a.b\tc ~"));
    assert_eq!(header_text(b""), Some(""));
    for bad in [&b"\x7f"[..], b"\n", b"\x00", b"\xc3\xa9", b"\x80"] {
        assert_eq!(header_text(bad), None, "{bad:?}");
    }
}
