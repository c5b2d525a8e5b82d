//! Identity end to end over the real Redis and RabbitMQ: JWT verification (HS256, RS256, ES256,
//! JWKS rotation, the classic attacks), token revocation and sessions with their exchanges. Every
//! test uses its own queue and key prefixes.
//!
//! Over 500 lines on purpose: each `tests/*.rs` file is its own test binary, linked against the
//! whole workspace, and on the 2-core CI machine every extra binary costs a link of tens of
//! seconds, so the end-to-end tests are grouped in a few files.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use redis::AsyncCommands;
use serde_json::{Value, json};
use sha2::Digest;

const RSA_A_KEY: &str = include_str!("../../porter-identity/testdata/rsa-a.key.pem");
const RSA_A_PUB: &str = include_str!("../../porter-identity/testdata/rsa-a.pub.pem");
const RSA_A_JWK: &str = include_str!("../../porter-identity/testdata/rsa-a.jwk.json");
const RSA_B_KEY: &str = include_str!("../../porter-identity/testdata/rsa-b.key.pem");
const RSA_B_JWK: &str = include_str!("../../porter-identity/testdata/rsa-b.jwk.json");
const EC_A_KEY: &str = include_str!("../../porter-identity/testdata/ec-a.key.pem");
const EC_A_JWK: &str = include_str!("../../porter-identity/testdata/ec-a.jwk.json");

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "porter";
const ADMIN_TOKEN: &str = "identity-admin-token";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn jwks(keys: &[&str]) -> String {
    format!("{{\"keys\": [{}]}}", keys.join(","))
}

/// Claims that the test gateways accept, with `extra` merged over them.
fn claims(sub: &str, extra: Value) -> Value {
    let mut claims = json!({"sub": sub, "exp": now() + 600, "iss": ISSUER, "aud": AUDIENCE});
    for (k, v) in extra.as_object().expect("object") {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
}

fn rs256(kid: &str, pem: &str, claims: &Value) -> String {
    sign(
        Algorithm::RS256,
        Some(kid),
        claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
}

fn es256(claims: &Value) -> String {
    sign(
        Algorithm::ES256,
        Some("ec-a"),
        claims,
        &EncodingKey::from_ec_pem(EC_A_KEY.as_bytes()).unwrap(),
    )
}

/// Serves a JWKS that the test can replace, counting the fetches.
struct JwksServer {
    port: u16,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(initial: String) -> JwksServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = Arc::new(Mutex::new(initial));
        let hits = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (body.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (served, counted) = (served.clone(), counted.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = served.lock().unwrap().clone();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        JwksServer { port, body, hits }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/jwks", self.port)
    }

    fn serve(&self, body: String) {
        *self.body.lock().unwrap() = body;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A deployment whose gateway verifies tokens from `jwks` with the test issuer and audience.
fn deployment(test: &str, jwks: &str, extra: &[(&str, &str)]) -> Deployment {
    let mut deployment = Deployment::new(test);
    deployment.extra_env = [
        ("PORTER_JWKS", jwks),
        ("PORTER_JWT_ISSUER", ISSUER),
        ("PORTER_JWT_AUDIENCE", AUDIENCE),
        ("PORTER_JWT_LEEWAY", "0"),
        ("PORTER_JWT_ALGORITHMS", "HS256,RS256,ES256"),
        ("PORTER_ADMIN_TOKEN", ADMIN_TOKEN),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    deployment
}

fn jwks_file(prefix: &str, keys: &[&str]) -> String {
    let path = std::env::temp_dir().join(format!("{prefix}jwks.json"));
    std::fs::write(&path, jwks(keys)).expect("write jwks");
    path.display().to_string()
}

/// A batch request that needs no worker: a public channel is refused with a reason, so
/// the answer is 200 exactly when the caller's identity is accepted.
async fn identify(deployment: &Deployment, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(deployment.batch_url("1.2", &["public-x"]));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn bearer(deployment: &Deployment, token: &str) -> (u16, Value) {
    identify(deployment, &[("Authorization", &format!("Bearer {token}"))]).await
}

async fn post_json(url: &str, body: Value, admin: bool) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url).json(&body);
    if admin {
        request = request.bearer_auth(ADMIN_TOKEN);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_verified_and_the_classic_attacks_refused() {
    let prefix = unique_prefix("jwt");
    let file = jwks_file(&prefix, &[RSA_A_JWK, EC_A_JWK]);
    let deployment = deployment("jwt", &file, &[]);
    let _gateway = deployment.gateway();
    deployment.wait_ready().await;

    // The three algorithms, each with its own key.
    let good = claims("7", json!({}));
    for token in [hs256(&good), rs256("rsa-a", RSA_A_KEY, &good), es256(&good)] {
        let (status, body) = bearer(&deployment, &token).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["public-x"]["reason"], "public_channel", "{body}");
    }

    // Algorithm confusion: HS256 "signed" with the RSA public key (PEM and JWK text) as
    // the secret, naming the RSA key's kid.
    for secret in [RSA_A_PUB, RSA_A_JWK] {
        let forged = sign(
            Algorithm::HS256,
            Some("rsa-a"),
            &claims("admin", json!({})),
            &EncodingKey::from_secret(secret.as_bytes()),
        );
        let (status, body) = bearer(&deployment, &forged).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_token"))
        );
    }

    // `alg: none`, in any spelling, with an empty signature.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = b64.encode(claims("admin", json!({})).to_string());
    for alg in ["none", "None", "NONE"] {
        let header = b64.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        let (status, body) = bearer(&deployment, &format!("{header}.{payload}.")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_token"))
        );
    }

    // Time, issuer and audience.
    let cases = [
        (json!({"exp": now() - 30}), "token_expired", "expired"),
        (
            json!({"nbf": now() + 600}),
            "invalid_token",
            "not valid yet",
        ),
        (
            json!({"iss": "https://evil.test"}),
            "invalid_token",
            "issuer",
        ),
        (json!({"aud": "another-app"}), "invalid_token", "audience"),
        (json!({"aud": null}), "invalid_token", "aud"),
        (json!({"iss": null}), "invalid_token", "iss"),
    ];
    for (extra, code, words) in cases {
        let token = rs256("rsa-a", RSA_A_KEY, &claims("7", extra.clone()));
        let (status, body) = bearer(&deployment, &token).await;
        assert_eq!(status, 401, "{extra}: {body}");
        assert_eq!(body["error"], code, "{extra}: {body}");
        assert!(
            body["message"].as_str().unwrap_or_default().contains(words),
            "{extra}: {body}"
        );
    }

    // A key of the wrong family for the header's algorithm, an unknown kid, a foreign key.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("rsa-a".into());
    let wrong_family = jsonwebtoken::encode(
        &header,
        &good,
        &EncodingKey::from_ec_pem(EC_A_KEY.as_bytes()).unwrap(),
    )
    .unwrap();
    for token in [
        wrong_family,
        rs256("rsa-zzz", RSA_A_KEY, &good),
        rs256("rsa-a", RSA_B_KEY, &good),
    ] {
        let (status, body) = bearer(&deployment, &token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_token"))
        );
    }
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_refreshes_the_jwks_at_most_once_per_interval() {
    let server = JwksServer::start(jwks(&[RSA_A_JWK])).await;
    let deployment = deployment(
        "jwks",
        &server.url(),
        &[("PORTER_JWKS_REFRESH_INTERVAL", "3600")],
    );
    let _gateway = deployment.gateway();
    deployment.wait_ready().await;
    let loaded = server.hits();
    assert!(loaded >= 1, "the gateway reads the JWKS at start-up");

    let good = claims("7", json!({}));
    assert_eq!(
        bearer(&deployment, &rs256("rsa-a", RSA_A_KEY, &good))
            .await
            .0,
        200
    );
    assert_eq!(server.hits(), loaded, "a known kid fetches nothing");

    // The provider rotates to a new key: the first token with its kid refreshes once.
    server.serve(jwks(&[RSA_A_JWK, RSA_B_JWK]));
    let (status, body) = bearer(&deployment, &rs256("rsa-b", RSA_B_KEY, &good)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.hits(), loaded + 1);
    assert_eq!(
        bearer(&deployment, &rs256("rsa-b", RSA_B_KEY, &good))
            .await
            .0,
        200
    );
    assert_eq!(server.hits(), loaded + 1, "the new key is cached");

    // Another rotation within the interval: unknown kids no longer refresh.
    server.serve(jwks(&[EC_A_JWK]));
    for _ in 0..3 {
        let (status, body) = bearer(&deployment, &es256(&good)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_token"))
        );
        let made_up = rs256("made-up", RSA_A_KEY, &good);
        assert_eq!(bearer(&deployment, &made_up).await.0, 401);
    }
    assert_eq!(server.hits(), loaded + 1, "refreshes are rate limited");
}

fn sha256_hex(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// The hash a revoked token is stored under: of its signed part `header.payload`.
fn revoked_hash(token: &str) -> String {
    sha256_hex(token.rsplit_once('.').expect("a JWT").0)
}

/// The other valid ES256 signature of a token: `(r, s)` → `(r, n - s)`.
fn es256_twin(token: &str) -> String {
    let order =
        hex::decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551").unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let signature = b64.decode(signature).unwrap();
    let (r, s) = signature.split_at(32);
    let mut twin_s = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = order[i] as i16 - s[i] as i16 - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        twin_s[i] = d as u8;
    }
    format!("{signed}.{}", b64.encode([r, &twin_s].concat()))
}

/// Every key of this deployment in Redis, with its value where it is a string.
async fn redis_dump(deployment: &Deployment) -> Vec<(String, Option<String>)> {
    let mut redis = deployment.redis().await;
    let keys: Vec<String> = redis.keys(format!("{}*", deployment.prefix)).await.unwrap();
    let mut dump = Vec::new();
    for key in keys {
        let value: Option<String> = redis.get(&key).await.ok().flatten();
        dump.push((key, value));
    }
    dump
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_and_jtis_get_token_revoked() {
    let prefix = unique_prefix("revoke");
    let file = jwks_file(&prefix, &[RSA_A_JWK, EC_A_JWK]);
    let deployment = deployment("revoke", &file, &[]);
    let _gateway = deployment.gateway();
    deployment.wait_ready().await;
    let revoke_url = deployment.url("/admin/tokens/revoke");
    let mut redis = deployment.redis().await;

    // By token: stored as its SHA-256, with the token's remaining lifetime.
    let by_token = rs256(
        "rsa-a",
        RSA_A_KEY,
        &claims("7", json!({"exp": now() + 300})),
    );
    assert_eq!(bearer(&deployment, &by_token).await.0, 200);
    let (status, _) = post_json(&revoke_url, json!({"token": by_token}), false).await;
    assert_eq!(status, 401, "the admin token is required");
    let (status, body) = post_json(&revoke_url, json!({"token": by_token}), true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked"], true);
    let key = format!(
        "{}blacklist:token:{}",
        deployment.prefix,
        revoked_hash(&by_token)
    );
    let ttl: i64 = redis.ttl(&key).await.unwrap();
    assert!(
        (250..=301).contains(&ttl),
        "TTL is the remaining lifetime (+ leeway 0 + 1 s): {ttl}"
    );
    for (key, value) in redis_dump(&deployment).await {
        assert!(!key.contains(&by_token), "the token is never stored");
        assert!(value.is_none_or(|v| !v.contains(&by_token)));
    }
    let (status, body) = bearer(&deployment, &by_token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_revoked"))
    );

    // An ES256 token stays revoked under its other valid signature (r, n - s).
    let es_token = es256(&claims("17", json!({})));
    let twin = es256_twin(&es_token);
    assert_ne!(twin, es_token);
    assert_eq!(bearer(&deployment, &twin).await.0, 200, "the twin verifies");
    let (status, body) = post_json(&revoke_url, json!({"token": es_token}), true).await;
    assert_eq!((status, body["revoked"].as_bool()), (200, Some(true)));
    for token in [&es_token, &twin] {
        let (status, body) = bearer(&deployment, token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("token_revoked"))
        );
    }

    // By jti: the same user's other tokens with another jti still work.
    let jti = format!("jti-{}", uuid::Uuid::new_v4());
    let by_jti = hs256(&claims("8", json!({"jti": jti})));
    let other = hs256(&claims("8", json!({"jti": "another"})));
    assert_eq!(bearer(&deployment, &by_jti).await.0, 200);
    let (status, body) =
        post_json(&revoke_url, json!({"jti": jti, "exp": now() + 120}), true).await;
    assert_eq!((status, body["revoked"].as_bool()), (200, Some(true)));
    let ttl: i64 = redis
        .ttl(format!("{}blacklist:jti:{jti}", deployment.prefix))
        .await
        .unwrap();
    assert!((60..=121).contains(&ttl), "{ttl}");
    let (status, body) = bearer(&deployment, &by_jti).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_revoked"))
    );
    assert_eq!(bearer(&deployment, &other).await.0, 200);

    // An expired token needs no revocation: nothing is stored.
    let expired = hs256(&claims("9", json!({"exp": now() - 5})));
    let (status, body) = post_json(&revoke_url, json!({"token": expired}), true).await;
    assert_eq!((status, body["revoked"].as_bool()), (200, Some(false)));
    let key = format!(
        "{}blacklist:token:{}",
        deployment.prefix,
        revoked_hash(&expired)
    );
    assert!(!redis.exists::<_, bool>(&key).await.unwrap());

    // Nothing to revoke, or garbage: 400, never 500.
    for body in [
        json!({}),
        json!({"token": "garbage"}),
        json!({"token": "a", "jti": "b"}),
    ] {
        let (status, answer) = post_json(&revoke_url, body.clone(), true).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_claims_of_any_form_are_honoured_and_revoked_for_as_long_as_they_say() {
    let prefix = unique_prefix("timeclaims");
    let file = jwks_file(&prefix, &[RSA_A_JWK]);
    let deployment = deployment("timeclaims", &file, &[]);
    let _gateway = deployment.gateway();
    deployment.wait_ready().await;
    let revoke_url = deployment.url("/admin/tokens/revoke");
    let mut redis = deployment.redis().await;

    // A time claim that is not a number refuses the token; it is not skipped.
    for (claim, value) in [("nbf", "tomorrow"), ("iat", "yesterday")] {
        let token = hs256(&claims("7", json!({ claim: value })));
        let (status, body) = bearer(&deployment, &token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_token"))
        );
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("not a number"),
            "{claim}: {body}"
        );
    }

    // Revocations last until exp (+ leeway 0 + 1 s), whatever form exp takes: a fraction
    // three days out (past the 24 h default), ten years out (past any one-year clamp),
    // and past i64::MAX (kept without expiry: TTL -1).
    let year = 365 * 24 * 3600;
    let cases = [
        (json!(now() as f64 + 3.0 * 86400.0 + 0.5), 3 * 86400),
        (json!(now() + 10 * year), 10 * year),
        (json!(u64::MAX), -1),
    ];
    let mut keys = Vec::new();
    for (exp, expected) in cases {
        let token = hs256(&claims("7", json!({ "exp": exp })));
        assert_eq!(bearer(&deployment, &token).await.0, 200, "{exp}");
        let (status, body) = post_json(&revoke_url, json!({"token": token}), true).await;
        assert_eq!(
            (status, body["revoked"].as_bool()),
            (200, Some(true)),
            "{body}"
        );
        let key = format!(
            "{}blacklist:token:{}",
            deployment.prefix,
            revoked_hash(&token)
        );
        let ttl: i64 = redis.ttl(&key).await.unwrap();
        if expected < 0 {
            assert_eq!(ttl, -1, "{exp}: kept without expiry");
            assert_eq!(body["expires_in"], Value::Null, "{body}");
        } else {
            assert!(
                (expected - 60..=expected + 2).contains(&ttl),
                "{exp}: {ttl}"
            );
        }
        let (status, body) = bearer(&deployment, &token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("token_revoked"))
        );
        keys.push(key);
    }
    // A jti's `exp` may be fractional too.
    let jti = format!("jti-{}", uuid::Uuid::new_v4());
    let exp = now() as f64 + 3.0 * 86400.0 + 0.5;
    let (status, body) = post_json(&revoke_url, json!({"jti": jti, "exp": exp}), true).await;
    assert_eq!(
        (status, body["revoked"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    let key = format!("{}blacklist:jti:{jti}", deployment.prefix);
    let ttl: i64 = redis.ttl(&key).await.unwrap();
    assert!((3 * 86400 - 60..=3 * 86400 + 2).contains(&ttl), "{ttl}");
    keys.push(key);
    let (status, body) = post_json(&revoke_url, json!({"jti": jti, "exp": "soon"}), true).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_exp")));
    let _: () = redis.del(&keys).await.unwrap();
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_taking_tokens_without_iss_or_aud_warns_at_start() {
    // The test gateways take HS256 tokens (PORTER_JWT_SECRET); this one checks neither
    // issuer nor audience.
    let unbound = Deployment::new("unbound").capture_logs();
    let prefix = unique_prefix("bound");
    let file = jwks_file(&prefix, &[RSA_A_JWK]);
    let bound = deployment("bound", &file, &[]).capture_logs();
    let (_unbound_gateway, _bound_gateway) = (unbound.gateway(), bound.gateway());
    unbound.wait_ready().await;
    bound.wait_ready().await;
    let warned = |logs: &str| {
        logs.lines()
            .any(|line| line.contains("WARN") && line.contains("PORTER_JWT_AUDIENCE"))
    };
    let logs = unbound.captured_logs();
    assert!(warned(&logs), "no warning:\n{logs}");
    let logs = bound.captured_logs();
    assert!(!warned(&logs), "warned with both set:\n{logs}");
    let _ = std::fs::remove_file(file);
}

fn rabbitmqctl_names(what: &str) -> Vec<String> {
    let output = Command::new("rabbitmqctl")
        .args([what, "-q", "--no-table-headers", "name"])
        .output()
        .expect("rabbitmqctl");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .collect()
}

async fn open_session(deployment: &Deployment, email: &str, token: &str) -> (u16, Value) {
    post_json(
        &deployment.url("/auth"),
        json!({"email": email, "token": token}),
        false,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_identify_slide_and_expire() {
    let prefix = unique_prefix("session");
    let file = jwks_file(&prefix, &[RSA_A_JWK]);
    let deployment = deployment("session", &file, &[("PORTER_SESSION_TTL", "60")]);
    let _gateway = deployment.gateway();
    let _worker = deployment.worker();
    deployment.wait_ready().await;

    let token = rs256(
        "rsa-a",
        RSA_A_KEY,
        &claims("42", json!({"email": "Ann@Example.com", "name": "Ann"})),
    );
    // Refusals, in the words the sessions feature specifies.
    for (email, token) in [
        ("bob@example.com", token.as_str()),
        ("ann@example.com", "not-a-token"),
        (
            "ann@example.com",
            &rs256(
                "rsa-a",
                RSA_A_KEY,
                &claims("42", json!({"exp": now() - 10})),
            ),
        ),
    ] {
        let (status, body) = open_session(&deployment, email, token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized"))
        );
    }
    let (status, _) = post_json(&deployment.url("/auth"), json!({"email": "x"}), false).await;
    assert_eq!(status, 400);

    // The email is compared case-insensitively.
    let (status, body) = open_session(&deployment, "ann@example.com", &token).await;
    assert_eq!(status, 200, "{body}");
    let session = body["sessionId"].as_str().expect("sessionId").to_owned();
    assert_eq!(session.len(), 32);

    // The session's exchange exists, with its lease queue.
    assert!(
        rabbitmqctl_names("list_exchanges").contains(&format!("data.{session}.published")),
        "the session's fanout exchange is declared"
    );
    // The lease queue is named by a hash of the session id, never the id.
    let queues = rabbitmqctl_names("list_queues");
    assert!(queues.contains(&porter_broker::session::lease_queue_name(&session)));
    assert!(!queues.iter().any(|q| q.contains(&session)));

    // X-Session-ID identifies the user: a presence channel carries the token's subject.
    let client = reqwest::Client::new();
    let response = client
        .get(deployment.batch_url("5.6", &["presence-chat@1"]))
        .header("X-Session-ID", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let data = body["presence-chat@1"]["channel_data"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(
        serde_json::from_str::<Value>(data).unwrap()["user_id"],
        "42"
    );
    // And pusher-js's single-channel POST accepts it too.
    let response = client
        .post(deployment.url("/pusher/auth"))
        .header("X-Session-ID", &session)
        .form(&[("socket_id", "5.6"), ("channel_name", "presence-chat@1")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The session is stored under the hash of its id, never the id itself.
    let key = format!("{}session:{}", deployment.prefix, sha256_hex(&session));
    let mut redis = deployment.redis().await;
    let stored: Option<String> = redis.get(&key).await.unwrap();
    assert!(stored.is_some_and(|s| !s.contains(&session) && !s.contains(&token)));

    // Sliding renewal: shorten the TTL, use the session, the TTL is back to the full 60 s.
    let _: () = redis.pexpire(&key, 5_000).await.unwrap();
    assert_eq!(
        identify(&deployment, &[("X-Session-ID", &session)]).await.0,
        200
    );
    let pttl: i64 = redis.pttl(&key).await.unwrap();
    assert!(pttl > 50_000, "renewed on use: {pttl} ms left");

    // Both identities at once: refused rather than guessed.
    let (status, body) = identify(
        &deployment,
        &[
            ("X-Session-ID", &session),
            ("Authorization", &format!("Bearer {token}")),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("ambiguous_identity"))
    );

    // Revoking the token ends the sessions it opened.
    let (status, _) = post_json(
        &deployment.url("/admin/tokens/revoke"),
        json!({"token": token}),
        true,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = identify(&deployment, &[("X-Session-ID", &session)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_revoked"))
    );
    // …and the use that found the revocation deleted the session: it stays ended once the
    // revocation key itself has expired.
    let exists: bool = redis.exists(&key).await.unwrap();
    assert!(!exists, "a revoked session is deleted");
    let revoked_key = format!(
        "{}blacklist:token:{}",
        deployment.prefix,
        revoked_hash(&token)
    );
    let _: () = redis.del(&revoked_key).await.unwrap();
    let (status, body) = identify(&deployment, &[("X-Session-ID", &session)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_session"))
    );
    let _: () = redis.set_ex(&revoked_key, "1", 60).await.unwrap();
    let (status, body) = open_session(&deployment, "ann@example.com", &token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_revoked"))
    );

    // Expiry: once the key lapses the session is gone.
    let other = rs256(
        "rsa-a",
        RSA_A_KEY,
        &claims("43", json!({"email": "bo@example.com"})),
    );
    let (_, body) = open_session(&deployment, "bo@example.com", &other).await;
    let second = body["sessionId"].as_str().expect("sessionId").to_owned();
    assert_eq!(
        identify(&deployment, &[("X-Session-ID", &second)]).await.0,
        200
    );
    let key = format!("{}session:{}", deployment.prefix, sha256_hex(&second));
    let _: () = redis.pexpire(&key, 1).await.unwrap();
    eventually("the session key to lapse", Duration::from_secs(5), || {
        let mut redis = redis.clone();
        let key = key.clone();
        async move { (!redis.exists::<_, bool>(&key).await.unwrap()).then_some(()) }
    })
    .await;
    let (status, body) = identify(&deployment, &[("X-Session-ID", &second)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_session"))
    );
    // Made-up ids are refused the same way.
    for made_up in ["0123456789abcdef0123456789abcdef", "garbage"] {
        let (status, body) = identify(&deployment, &[("X-Session-ID", made_up)]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_session"))
        );
    }
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_token_expires() {
    let prefix = unique_prefix("sessexp");
    let file = jwks_file(&prefix, &[RSA_A_JWK]);
    let deployment = deployment("sessexp", &file, &[("PORTER_SESSION_TTL", "3600")]);
    let _gateway = deployment.gateway();
    deployment.wait_ready().await;
    let exp = now() + 6;
    let token = rs256(
        "rsa-a",
        RSA_A_KEY,
        &claims("51", json!({"email": "eve@example.com", "exp": exp})),
    );
    let (status, body) = open_session(&deployment, "eve@example.com", &token).await;
    assert_eq!(status, 200, "{body}");
    let session = body["sessionId"].as_str().unwrap().to_owned();
    // Stored for the token's remaining lifetime (leeway 0), not the hour of sliding TTL.
    let key = format!("{}session:{}", deployment.prefix, sha256_hex(&session));
    let mut redis = deployment.redis().await;
    let ttl: i64 = redis.ttl(&key).await.unwrap();
    assert!((1..=6).contains(&ttl), "{ttl}");
    // A use renews the sliding TTL but never past the token's end.
    assert_eq!(
        identify(&deployment, &[("X-Session-ID", &session)]).await.0,
        200
    );
    eventually(
        "the renewed TTL to be capped",
        Duration::from_secs(5),
        || {
            let mut redis = redis.clone();
            let key = key.clone();
            async move {
                let ttl: i64 = redis.ttl(&key).await.unwrap();
                (ttl <= 6).then_some(())
            }
        },
    )
    .await;
    // Keep the key alive as a sliding TTL would, then wait for the token to end: the
    // session is refused all the same, and deleted.
    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _: () = redis.expire(&key, 3600).await.unwrap_or(());
    let (status, body) = identify(&deployment, &[("X-Session-ID", &session)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_session"))
    );
    let exists: bool = redis.exists(&key).await.unwrap();
    assert!(!exists, "an ended session is deleted");
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_lease_declaration_logs_no_session_id() {
    let prefix = unique_prefix("leaselog");
    let file = jwks_file(&prefix, &[RSA_A_JWK]);
    let deployment = deployment("leaselog", &file, &[("PORTER_SESSION_TTL", "60")])
        .with_env("RUST_LOG", "debug")
        .capture_logs();
    let _gateway = deployment.gateway();
    deployment.wait_ready().await;
    let token = rs256(
        "rsa-a",
        RSA_A_KEY,
        &claims("52", json!({"email": "fay@example.com"})),
    );
    let (status, body) = open_session(&deployment, "fay@example.com", &token).await;
    assert_eq!(status, 200, "{body}");
    let session = body["sessionId"].as_str().unwrap().to_owned();
    // A second gateway with another session TTL: its lease renewal declares the lease queue
    // with another `x-expires`, which RabbitMQ refuses (PRECONDITION_FAILED), and lapin logs
    // the server's text, which names the queue.
    let other = deployment.sibling().with_env("PORTER_SESSION_TTL", "120");
    let _other_gateway = other.gateway();
    other.wait_ready().await;
    assert_eq!(identify(&other, &[("X-Session-ID", &session)]).await.0, 200);
    eventually(
        "the refused declaration to be logged",
        Duration::from_secs(20),
        || {
            let logs = deployment.captured_logs();
            async move { logs.contains("PRECONDITION_FAILED").then_some(()) }
        },
    )
    .await;
    let logs = deployment.captured_logs();
    assert!(
        !logs.contains(&session),
        "the session id appears in the logs:\n{logs}"
    );
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_exchange_goes_when_the_session_lapses() {
    let prefix = unique_prefix("lease");
    let file = jwks_file(&prefix, &[RSA_A_JWK]);
    let deployment = deployment("lease", &file, &[("PORTER_SESSION_TTL", "2")]);
    let _gateway = deployment.gateway();
    deployment.wait_ready().await;
    let token = rs256(
        "rsa-a",
        RSA_A_KEY,
        &claims("9", json!({"email": "cy@example.com"})),
    );
    let (status, body) = open_session(&deployment, "cy@example.com", &token).await;
    assert_eq!(status, 200, "{body}");
    let session = body["sessionId"].as_str().unwrap().to_owned();
    let exchange = format!("data.{session}.published");
    assert!(rabbitmqctl_names("list_exchanges").contains(&exchange));

    // Unused, the lease queue expires after 2 s and takes the auto-delete exchange with it.
    eventually(
        "the session's exchange to be deleted",
        Duration::from_secs(30),
        || {
            let exchange = exchange.clone();
            async move { (!rabbitmqctl_names("list_exchanges").contains(&exchange)).then_some(()) }
        },
    )
    .await;
    let (status, body) = identify(&deployment, &[("X-Session-ID", &session)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_session"))
    );
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_checks_revocations_with_the_cache_and_slides_sessions() {
    use porter_store::redis::RedisStore;
    use porter_store::{CacheLookup, Keys, Revocation, Store};

    let prefix = unique_prefix("store");
    let store = RedisStore::new(REDIS_URL, Keys::new(&prefix), 4).expect("store");
    store
        .put_cached("private-a@1", "ANNON", "{\"x\":1}", Duration::from_secs(60))
        .await
        .unwrap();
    let cache = [
        CacheLookup {
            channel: "private-a@1",
            scope: "ANNON",
        },
        CacheLookup {
            channel: "private-b@1",
            scope: "ANNON",
        },
    ];
    let hash = sha256_hex("some.token.here");
    let asked = [Revocation::TokenSha256(&hash), Revocation::Jti("j-1")];
    let found = store.lookup(&cache, &asked).await.unwrap();
    assert_eq!(found.cached, vec![Some("{\"x\":1}".to_owned()), None]);
    assert!(!found.revoked);
    store
        .revoke(Revocation::TokenSha256(&hash), Duration::from_secs(30))
        .await
        .unwrap();
    let found = store.lookup(&cache, &asked).await.unwrap();
    assert!(found.revoked);
    assert_eq!(found.cached.len(), 2, "the cache answers come back too");
    assert!(
        !store
            .lookup(&[], &[Revocation::Jti("j-1")])
            .await
            .unwrap()
            .revoked
    );
    store
        .revoke(Revocation::Jti("j-1"), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        store
            .lookup(&[], &[Revocation::Jti("j-1")])
            .await
            .unwrap()
            .revoked
    );

    // Sessions: GETEX renews the TTL on every read.
    let mut redis = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    store
        .create_session("s-1", "{}", Duration::from_secs(60))
        .await
        .unwrap();
    let key = Keys::new(&prefix).session("s-1");
    assert!(key.ends_with(&sha256_hex("s-1")), "{key}");
    let _: () = redis.pexpire(&key, 3_000).await.unwrap();
    assert_eq!(
        store
            .touch_session("s-1", Duration::from_secs(60))
            .await
            .unwrap()
            .as_deref(),
        Some("{}")
    );
    let pttl: i64 = redis.pttl(&key).await.unwrap();
    assert!(pttl > 50_000, "{pttl}");
    // A cap shortens (a session ends with its token), never lengthens, never creates.
    store
        .cap_session("s-1", Duration::from_secs(20))
        .await
        .unwrap();
    let pttl: i64 = redis.pttl(&key).await.unwrap();
    assert!(pttl > 0 && pttl <= 20_000, "{pttl}");
    store
        .cap_session("s-1", Duration::from_secs(600))
        .await
        .unwrap();
    let pttl: i64 = redis.pttl(&key).await.unwrap();
    assert!(pttl > 0 && pttl <= 20_000, "{pttl}");
    store
        .cap_session("s-3", Duration::from_secs(20))
        .await
        .unwrap();
    let exists: bool = redis
        .exists(Keys::new(&prefix).session("s-3"))
        .await
        .unwrap();
    assert!(!exists);
    store.forget_session("s-1").await.unwrap();
    let exists: bool = redis.exists(&key).await.unwrap();
    assert!(!exists);
    // A revocation whose token expires in 100 years is kept for all of them, not cut short.
    store
        .revoke(
            Revocation::Jti("j-far"),
            Duration::from_secs(100 * 366 * 86_400),
        )
        .await
        .unwrap();
    let far_ttl: i64 = redis
        .ttl(Keys::new(&prefix).revoked_jti("j-far"))
        .await
        .unwrap();
    assert!(
        (100 * 366 * 86_400 - 60..=100 * 366 * 86_400).contains(&far_ttl),
        "{far_ttl}"
    );
    assert!(
        store
            .touch_session("s-2", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none()
    );
    let keys: Vec<String> = redis.keys(format!("{prefix}*")).await.unwrap();
    if !keys.is_empty() {
        let _: () = redis.del(keys).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_minted_by_porter_token_opens_a_session() {
    let prefix = unique_prefix("mint");
    let file = jwks_file(&prefix, &[RSA_A_JWK]);
    let deployment = deployment("mint", &file, &[]);
    let _gateway = deployment.gateway();
    deployment.wait_ready().await;
    let output = Command::new(env!("CARGO_BIN_EXE_porter"))
        .args([
            "token",
            "--sub",
            "77",
            "--email",
            "dee@example.com",
            "--claim",
            &format!("iss={ISSUER}"),
            "--claim",
            &format!("aud={AUDIENCE}"),
            "--claim",
            "team=blue",
            "--jwt-secret",
            JWT_SECRET,
        ])
        .env_clear()
        .output()
        .expect("porter token");
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let (status, body) = open_session(&deployment, "DEE@example.com", &token).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = open_session(&deployment, "dee@example.org", &token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let _ = std::fs::remove_file(file);
}
