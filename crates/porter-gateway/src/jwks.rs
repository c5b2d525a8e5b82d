//! Verification keys from a JSON Web Key Set (RFC 7517), read from a file or an `http(s)` URL.
//!
//! The set is cached. A token whose `kid` is not in the cache triggers a refresh, but at most
//! one such refresh per configured interval, so a flood of tokens with made-up `kid`s cannot
//! turn the gateway into a load generator against the identity provider. The whole set is
//! also re-read once it is older than its maximum age, so that removed keys stop verifying.
//!
//! Every key remembers its family (RSA, EC, Ed, HMAC) and, when the JWK says so, its one
//! algorithm: a key is only ever used with an algorithm of its own family, which is what rules
//! out algorithm confusion (an RSA public key used as an HMAC secret).
//!
//! A JWKS URL must be `https://` (verified with the system-independent webpki roots of
//! rustls): keys fetched over plain HTTP could be swapped by anyone on the path, who could
//! then mint any token. Plain `http://` is accepted only to a loopback host (127.0.0.0/8,
//! `::1`, `localhost`), e.g. a local sidecar; redirects are held to the same rule. The body
//! is read in chunks and refused as soon as it passes [`MAX_JWKS_BYTES`].

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Most redirects followed when fetching a JWKS URL.
const MAX_REDIRECTS: usize = 5;
/// How long one fetch of a JWKS URL may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
}

impl JwksSource {
    /// `http://…` or `https://…` is a URL, anything else a file path.
    pub fn parse(text: &str) -> JwksSource {
        if text.starts_with("http://") || text.starts_with("https://") {
            JwksSource::Url(text.to_owned())
        } else {
            JwksSource::File(PathBuf::from(text))
        }
    }

    /// Refuses a URL that keys must not be fetched from: anything but `https://`, except
    /// plain `http://` to a loopback host.
    pub fn check(&self) -> Result<(), String> {
        match self {
            JwksSource::File(_) => Ok(()),
            JwksSource::Url(text) => {
                let url = url::Url::parse(text).map_err(|e| format!("not a valid URL: {e}"))?;
                if fetch_allowed(&url) {
                    Ok(())
                } else {
                    Err(
                        "a JWKS URL must be https:// (plain http:// only to a loopback host \
                         such as 127.0.0.1, ::1 or localhost)"
                            .to_owned(),
                    )
                }
            }
        }
    }
}

/// Whether keys may be fetched from this URL: https, or http to a loopback host.
fn fetch_allowed(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => match url.host() {
            Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

/// An error with its causes (reqwest's own text says only which request failed, not why).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        text.push_str(": ");
        text.push_str(&error.to_string());
        cause = error.source();
    }
    text
}

/// The HTTP client of JWKS fetches: TLS by rustls, and redirects only to allowed URLs (a
/// redirect from https to plain http would undo the point of https).
fn http_client() -> Result<reqwest::Client, String> {
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if fetch_allowed(attempt.url()) {
            attempt.follow()
        } else {
            attempt.error("redirected to a URL that is neither https nor loopback")
        }
    });
    reqwest::Client::builder()
        .redirect(redirects)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

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

/// Why no key was found for a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no key with this `kid` for this algorithm")]
    UnknownKey,
    #[error("the token has no `kid` and several keys could verify it")]
    AmbiguousKey,
    #[error("the key set could not be loaded")]
    Unavailable,
}

/// One usable verification key.
struct Key {
    kid: Option<String>,
    family: Family,
    /// The JWK's own `alg`, when it names one.
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Key>,
    /// When the set was read; `None` before the first successful read.
    loaded_at: Option<Instant>,
}

enum Found {
    Key(DecodingKey),
    Missing,
    Ambiguous,
}

impl KeySet {
    fn find(&self, kid: Option<&str>, algorithm: Algorithm) -> Found {
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

/// When the key set was last read, for spacing the reads out.
#[derive(Default)]
struct RefreshState {
    /// The last read caused by an unknown `kid`.
    last_on_demand: Option<Instant>,
    /// The last read of any kind, successful or not.
    last_attempt: Option<Instant>,
}

/// Before the first successful read, reads are retried at least this often.
const FIRST_LOAD_RETRY: Duration = Duration::from_secs(5);

/// A cached, refreshable key set.
pub struct Jwks {
    source: JwksSource,
    /// The HTTP client, or why there is none (every fetch then fails with that).
    client: Result<reqwest::Client, String>,
    /// Least time between two refreshes caused by unknown `kid`s.
    refresh_interval: Duration,
    /// Age after which the set is read again on its next use.
    max_age: Duration,
    keys: RwLock<Arc<KeySet>>,
    /// Serializes refreshes, and remembers when they happened.
    refresh: tokio::sync::Mutex<RefreshState>,
    fetches: AtomicU64,
}

impl Jwks {
    pub fn new(source: JwksSource, refresh_interval: Duration, max_age: Duration) -> Jwks {
        Jwks {
            source,
            client: http_client(),
            refresh_interval,
            max_age,
            keys: RwLock::new(Arc::new(KeySet::default())),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            fetches: AtomicU64::new(0),
        }
    }

    /// How many times the set has been read (successfully or not).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the set now (at start-up); on failure the old keys stay.
    pub async fn load(&self) -> Result<usize, String> {
        let mut state = self.refresh.lock().await;
        self.reload(&mut state).await
    }

    /// Least time between two reads after a failed one, so that an unreachable source does
    /// not make every request wait for a fetch.
    fn retry_spacing(&self, set: &KeySet) -> Duration {
        if set.loaded_at.is_none() {
            self.refresh_interval.min(FIRST_LOAD_RETRY)
        } else {
            self.refresh_interval
        }
    }

    /// Reads the set and replaces the cache; the caller holds the refresh lock.
    async fn reload(&self, state: &mut RefreshState) -> Result<usize, String> {
        state.last_attempt = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let text = self.read_source().await?;
        let keys = parse_key_set(&text)?;
        let count = keys.len();
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(KeySet {
            keys,
            loaded_at: Some(Instant::now()),
        });
        debug!(keys = count, "JWKS loaded");
        Ok(count)
    }

    async fn read_source(&self) -> Result<String, String> {
        match &self.source {
            JwksSource::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    std::fs::read_to_string(&path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))
                })
                .await
                .map_err(|_| "the JWKS read was cancelled".to_owned())?
            }
            JwksSource::Url(url) => {
                // Checked at start-up too; again here so no code path fetches over plain
                // http from a remote host.
                self.source.check()?;
                let client = self.client.as_ref().map_err(Clone::clone)?;
                let mut response = client
                    .get(url)
                    .timeout(FETCH_TIMEOUT)
                    .send()
                    .await
                    .map_err(|e| format!("cannot fetch the JWKS: {}", with_causes(&e)))?;
                if !response.status().is_success() {
                    return Err(format!("the JWKS URL answered {}", response.status()));
                }
                let too_large = || format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes");
                // Refused before reading when the length is announced, and cut off once
                // past the limit when it is not: never buffered whole.
                if response
                    .content_length()
                    .is_some_and(|length| length > MAX_JWKS_BYTES as u64)
                {
                    return Err(too_large());
                }
                let mut body = Vec::new();
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .map_err(|e| format!("cannot read the JWKS: {}", with_causes(&e)))?
                {
                    if body.len() + chunk.len() > MAX_JWKS_BYTES {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                String::from_utf8(body).map_err(|_| "the JWKS is not UTF-8".to_owned())
            }
        }
    }

    /// The key that verifies a token with this `kid` and algorithm.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<DecodingKey, KeyError> {
        let mut set = self.current();
        let stale = set.loaded_at.is_none_or(|at| at.elapsed() >= self.max_age);
        if stale {
            let mut state = self.refresh.lock().await;
            // Another request may have refreshed while this one waited for the lock.
            set = self.current();
            let still_stale = set.loaded_at.is_none_or(|at| at.elapsed() >= self.max_age);
            let tried_recently = state
                .last_attempt
                .is_some_and(|at| at.elapsed() < self.retry_spacing(&set));
            if still_stale && !tried_recently {
                if let Err(error) = self.reload(&mut state).await {
                    warn!(%error, "JWKS refresh failed; keeping the cached keys");
                }
                set = self.current();
            }
        }
        match set.find(kid, algorithm) {
            Found::Key(key) => return Ok(key),
            Found::Ambiguous => return Err(KeyError::AmbiguousKey),
            Found::Missing if kid.is_none() => {
                return Err(if set.loaded_at.is_none() {
                    KeyError::Unavailable
                } else {
                    KeyError::UnknownKey
                });
            }
            Found::Missing => {}
        }

        // An unknown `kid`: the provider may have rotated its keys.
        let mut state = self.refresh.lock().await;
        let latest = self.current();
        if !Arc::ptr_eq(&latest, &set) {
            // Refreshed by someone else meanwhile: look again without fetching.
            return match latest.find(kid, algorithm) {
                Found::Key(key) => Ok(key),
                _ => Err(KeyError::UnknownKey),
            };
        }
        let never_loaded = latest.loaded_at.is_none();
        let allowed = if never_loaded {
            state
                .last_attempt
                .is_none_or(|at| at.elapsed() >= self.retry_spacing(&latest))
        } else {
            state
                .last_on_demand
                .is_none_or(|at| at.elapsed() >= self.refresh_interval)
        };
        if !allowed {
            debug!("unknown kid; JWKS refresh skipped (read recently)");
            return Err(if never_loaded {
                KeyError::Unavailable
            } else {
                KeyError::UnknownKey
            });
        }
        if !never_loaded {
            state.last_on_demand = Some(Instant::now());
        }
        if let Err(error) = self.reload(&mut state).await {
            warn!(%error, "JWKS refresh failed; keeping the cached keys");
            if latest.loaded_at.is_none() {
                return Err(KeyError::Unavailable);
            }
        }
        match self.current().find(kid, algorithm) {
            Found::Key(key) => Ok(key),
            _ => Err(KeyError::UnknownKey),
        }
    }
}

/// Parses a JWKS document. Keys that cannot verify signatures (`use: enc`, encryption
/// algorithms, unsupported types) are skipped rather than failing the whole set.
fn parse_key_set(text: &str) -> Result<Vec<Key>, String> {
    let document: Value =
        serde_json::from_str(text).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
    let entries = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "the JWKS has no `keys` array".to_owned())?;
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

    const RSA_A: &str = include_str!("../testdata/rsa-a.jwk.json");
    const EC_A: &str = include_str!("../testdata/ec-a.jwk.json");

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
        assert!(parse_key_set("{}").is_err());
        assert!(parse_key_set("garbage").is_err());
    }

    #[tokio::test]
    async fn an_unknown_kid_refreshes_at_most_once_per_interval() {
        let path = std::env::temp_dir().join(format!("porter-jwks-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&path, set(&[EC_A])).unwrap();
        let jwks = Jwks::new(
            JwksSource::File(path.clone()),
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        );
        jwks.load().await.unwrap();
        assert_eq!(jwks.fetches(), 1);
        // Rotation: the new key appears; the unknown kid triggers one refresh.
        std::fs::write(&path, set(&[EC_A, RSA_A])).unwrap();
        assert!(jwks.key_for(Some("rsa-a"), Algorithm::RS256).await.is_ok());
        assert_eq!(jwks.fetches(), 2);
        // Another unknown kid within the interval: no new fetch.
        assert_eq!(
            jwks.key_for(Some("nope"), Algorithm::RS256).await.err(),
            Some(KeyError::UnknownKey)
        );
        assert_eq!(jwks.fetches(), 2);
        // Known keys never fetch.
        assert!(jwks.key_for(Some("ec-a"), Algorithm::ES256).await.is_ok());
        assert_eq!(jwks.fetches(), 2);
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test]
    async fn a_missing_source_is_unavailable() {
        let jwks = Jwks::new(
            JwksSource::File(PathBuf::from("/nonexistent/porter-jwks.json")),
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        );
        assert!(jwks.load().await.is_err());
        assert_eq!(jwks.fetches(), 1);
        for kid in [None, Some("k")] {
            assert_eq!(
                jwks.key_for(kid, Algorithm::RS256).await.err(),
                Some(KeyError::Unavailable)
            );
        }
        // Failed reads are spaced out: requests do not each wait for the source.
        assert_eq!(jwks.fetches(), 1);
    }

    #[test]
    fn urls_must_be_https_or_loopback() {
        for good in [
            "https://idp.example.com/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks",
            "http://127.3.4.5/jwks",
            "http://[::1]:9/jwks",
            "http://localhost/jwks",
            "http://LOCALHOST:1/jwks",
        ] {
            assert_eq!(JwksSource::parse(good).check(), Ok(()), "{good}");
        }
        for bad in [
            "http://idp.example.com/jwks",
            "http://127.0.0.1.evil.example/jwks",
            "http://localhost.evil.example/jwks",
            "http://10.0.0.1/jwks",
            "http://[::2]/jwks",
            "http://",
        ] {
            assert!(JwksSource::parse(bad).check().is_err(), "{bad}");
        }
        assert_eq!(JwksSource::parse("/etc/jwks.json").check(), Ok(()));
    }

    #[tokio::test]
    async fn https_urls_are_fetched_with_tls() {
        // Nothing listens on port 1: the fetch fails connecting, which it only tries when
        // the client speaks TLS (a TLS-less reqwest refuses the scheme up front).
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let error = fetch_url(&format!("https://127.0.0.1:{port}/jwks"))
            .await
            .unwrap_err();
        assert!(error.contains("cannot fetch"), "{error}");
        assert!(error.to_lowercase().contains("connect"), "{error}");
        assert!(!error.to_lowercase().contains("scheme"), "{error}");
    }

    #[tokio::test]
    async fn a_remote_http_url_is_never_fetched() {
        let jwks = Jwks::new(
            JwksSource::Url("http://jwks.invalid/keys".into()),
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        );
        let error = jwks.load().await.unwrap_err();
        assert!(error.contains("https"), "{error}");
    }

    /// Serves one HTTP response head, then `body` chunks until the client hangs up.
    async fn serve(
        head: &'static str,
        chunk: Option<Vec<u8>>,
    ) -> (u16, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            match chunk {
                // Endless chunked body: stops when the client closes the connection.
                Some(chunk) => {
                    let frame =
                        [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                    while socket.write_all(&frame).await.is_ok() {}
                }
                // A promised body that never comes: only the announced length can refuse it.
                None => {
                    let _ = socket.read(&mut request).await;
                }
            }
        });
        (port, task)
    }

    async fn fetch_from(port: u16) -> Result<usize, String> {
        fetch_url(&format!("http://127.0.0.1:{port}/jwks")).await
    }

    async fn fetch_url(url: &str) -> Result<usize, String> {
        let jwks = Jwks::new(
            JwksSource::Url(url.to_owned()),
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        );
        jwks.load().await
    }

    #[tokio::test]
    async fn an_announced_oversized_jwks_is_refused_unread() {
        let (port, task) = serve(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n",
            None,
        )
        .await;
        let error = fetch_from(port).await.unwrap_err();
        assert!(error.contains("larger than"), "{error}");
        task.abort();
    }

    #[tokio::test]
    async fn an_endless_jwks_is_cut_off_at_the_limit() {
        let (port, task) = serve(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            Some(vec![b' '; 64 * 1024]),
        )
        .await;
        let error = fetch_from(port).await.unwrap_err();
        assert!(error.contains("larger than"), "{error}");
        task.abort();
    }

    #[test]
    fn sources() {
        assert_eq!(
            JwksSource::parse("http://127.0.0.1:1/jwks"),
            JwksSource::Url("http://127.0.0.1:1/jwks".into())
        );
        assert_eq!(
            JwksSource::parse("/etc/jwks.json"),
            JwksSource::File("/etc/jwks.json".into())
        );
    }
}
